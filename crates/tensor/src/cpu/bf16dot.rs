//! bf16 matrix multiply on the CPU's bf16 dot-product instruction (`vdpbf16ps`, AVX512_BF16):
//! each instruction multiplies 16 pairs of bf16 and adds both products of a pair into an f32
//! lane, twice the multiply-adds of an f32 FMA. Chosen at run time ([`available`]); where the
//! CPU lacks the feature, [`crate::cpu::gemm::gemm_bf16`] widens to f32 instead.
//!
//! Layout ("VNNI" pairs): `k` is taken two at a time. Row `i` of the lhs becomes 32-bit words
//! `a(i, 2p) | a(i, 2p+1) << 16`; the rhs is packed in panels of 16 columns whose word
//! `(p, j)` is `b(2p, j) | b(2p+1, j) << 16`. Broadcasting one lhs word against one panel row
//! adds `a(i,2p) b(2p,j) + a(i,2p+1) b(2p+1,j)` to 16 accumulators. An odd `k` and the
//! columns past `n` are padded with zeros. Products of bf16 are exact in f32; sums are f32.
//!
//! Blocking: `k` in blocks of [`KC`] pairs (the packed rhs block stays in L2); rows in groups
//! of [`MR`], 32 columns (two panels, 2 x 16 f32 accumulators per row) at a time.

use std::mem::MaybeUninit;

use half::bf16;

use super::amx;
use super::gemm::MatRef;

/// Rows of one micro-kernel call.
pub const MR: usize = 8;
/// Columns per panel (one zmm of f32).
const PANEL: usize = 16;
/// k pairs per block.
pub const KC: usize = 256;
/// Rows handed to one rayon task (they share one packed lhs block and reuse each rhs column
/// block from L2).
const ROWS_PER_TASK: usize = 8 * MR;
/// Panels packed by one task of [`pack_rhs`].
const RHS_GROUP: usize = 8;
/// Panels per column block: 16 panels x 256 pairs x 64 bytes = 256 KiB of packed rhs, which
/// stays in L2 while every row group of a task passes over it.
const PANELS_PER_BLOCK: usize = 16;

/// Register-level helpers of the packing loops, for other crates' bf16 kernels (the flash
/// attention's tile path): call only where [`available`] is true.
#[cfg(target_arch = "x86_64")]
pub use x86::{round_bits_x16, transpose16_regs};

/// Whether this CPU runs the bf16 dot-product kernels.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An element the kernels read as bf16: bf16 itself, or f32 rounded to bf16 while packing
/// (autocast's product of f32 tensors, [`crate::cpu::gemm::gemm_f32_bf16_into`], needs no rounded
/// copy of its operands).
pub trait PairElem: Copy + Send + Sync {
    /// The bf16 bits of the element.
    fn bits(self) -> u16;
}

impl PairElem for bf16 {
    #[inline(always)]
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

impl PairElem for f32 {
    #[inline(always)]
    fn bits(self) -> u16 {
        round_bits(self)
    }
}

/// `x` rounded to bf16 (nearest, ties to even; NaN stays NaN), as its bits: the rounding of
/// `half::bf16::from_f32`, written without branches on the common path so loops over it
/// vectorise.
#[inline(always)]
pub fn round_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    // A select rather than an early return, so that the loops over it vectorise.
    let nan = (b >> 16) | 0x40;
    (if b & 0x7fff_ffff > 0x7f80_0000 { nan } else { rounded }) as u16
}

/// One 32-bit word of a pair: `lo` in the low half, as `vdpbf16ps` reads it.
#[inline(always)]
fn pair<T: PairElem>(lo: T, hi: T) -> u32 {
    lo.bits() as u32 | (hi.bits() as u32) << 16
}

/// Words of a pair of rows: `pair(lo[i], hi[i])`, or `lo[i]` alone where there is no `hi`
/// row (the last, odd index of the reduction).
#[inline(always)]
fn row_pair_words<T: PairElem>(dst: &mut [u32], lo: &[T], hi: Option<&[T]>) {
    match hi {
        Some(hi) => {
            for ((w, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                *w = pair(l, h);
            }
        }
        None => {
            for (w, &l) in dst.iter_mut().zip(lo) {
                *w = l.bits() as u32;
            }
        }
    }
}

/// Element `(i, j)` of a checked operand.
#[inline(always)]
fn at<T: Copy>(m: &MatRef<'_, T>, i: usize, j: usize) -> T {
    m.data[m.offset + i * m.row_stride + j * m.col_stride]
}

/// Packs pairs `p0..p1` of the rhs (`k x n`) into panels of `stride` (at least `p1 - p0`)
/// pair rows: panel `q` holds words `[(p - p0) * 16 + lane]` for columns `16q + lane`, zeros
/// past `p1`; the panel count is even (a zero panel pads an odd one) so the kernels always
/// read two. Groups of [`RHS_GROUP`] panels are packed in parallel when `parallel`. A
/// row-major rhs is read a row pair at a time, a column-major one (a transposed weight) a
/// column at a time, each as contiguous slices.
fn pack_rhs<T: PairElem>(
    b: &MatRef<'_, T>,
    k: usize,
    n: usize,
    (p0, p1): (usize, usize),
    stride: usize,
    parallel: bool,
) -> Vec<u32> {
    let panels = n.div_ceil(PANEL).next_multiple_of(2);
    let mut out = vec![0u32; panels * stride * PANEL];
    let (rs, cs) = (b.row_stride, b.col_stride);
    let panel_len = stride * PANEL;
    // A task packs RHS_GROUP panels, so a row-major rhs is read RHS_GROUP * 64 contiguous
    // bytes of a row at a time rather than 64 (a new page per row for a wide matrix).
    let pack_group = |(g, dst): (usize, &mut [u32])| {
        let q0 = g * RHS_GROUP;
        let cols = q0 * PANEL..(q0 * PANEL + dst.len() / stride).min(n);
        if cols.is_empty() {
            return;
        }
        if cs == 1 && n > 1 {
            for p in p0..p1 {
                let lo = &b.data[b.offset + 2 * p * rs + cols.start..][..cols.len()];
                let hi = (2 * p + 1 < k).then(|| &b.data[b.offset + (2 * p + 1) * rs + cols.start..][..cols.len()]);
                for (panel, (dst, lo)) in dst.chunks_mut(panel_len).zip(lo.chunks(PANEL)).enumerate() {
                    let hi = hi.map(|hi| &hi[panel * PANEL..][..lo.len()]);
                    row_pair_words(&mut dst[(p - p0) * PANEL..], lo, hi);
                }
            }
            return;
        }
        for (qq, dst) in dst.chunks_mut(panel_len).enumerate() {
            let q = q0 + qq;
            let cols = q * PANEL..((q + 1) * PANEL).min(n);
            if rs == 1 && k > 1 {
                for (lane, j) in cols.enumerate() {
                    let col = &b.data[b.offset + j * cs + 2 * p0..][..(2 * p1).min(k) - 2 * p0];
                    let mut words = col.chunks_exact(2);
                    for (p, w) in words.by_ref().enumerate() {
                        dst[p * PANEL + lane] = pair(w[0], w[1]);
                    }
                    if let [last] = words.remainder() {
                        dst[(col.len() / 2) * PANEL + lane] = last.bits() as u32;
                    }
                }
            } else {
                for p in p0..p1 {
                    let row = &mut dst[(p - p0) * PANEL..(p - p0 + 1) * PANEL];
                    for (lane, j) in cols.clone().enumerate() {
                        let hi = if 2 * p + 1 < k { at(b, 2 * p + 1, j).bits() } else { 0 };
                        row[lane] = at(b, 2 * p, j).bits() as u32 | (hi as u32) << 16;
                    }
                }
            }
        }
    };
    if parallel {
        use rayon::prelude::*;
        out.par_chunks_mut(RHS_GROUP * panel_len).enumerate().for_each(pack_group);
    } else {
        out.chunks_mut(RHS_GROUP * panel_len).enumerate().for_each(pack_group);
    }
    out
}

/// Packs rows `rows` of the lhs (`m x k`), pairs `p0..p1`: word `[r * stride + p - p0]`,
/// zeros past `p1` and in the `padded_rows - rows.len()` rows after the last. A row-major lhs
/// is read as row slices, a column-major one (a transposed activation in a weight gradient) as
/// slices of a column pair.
fn pack_lhs<T: PairElem>(
    a: &MatRef<'_, T>,
    k: usize,
    rows: std::ops::Range<usize>,
    (p0, p1): (usize, usize),
    (stride, padded_rows): (usize, usize),
) -> Vec<u32> {
    let mut out = vec![0u32; padded_rows * stride];
    if a.col_stride == 1 && k > 1 {
        for (r, i) in rows.enumerate() {
            let start = a.offset + i * a.row_stride;
            let row = &a.data[start + 2 * p0..start + (2 * p1).min(k)];
            let dst = &mut out[r * stride..(r + 1) * stride];
            let mut words = row.chunks_exact(2);
            for (d, w) in dst.iter_mut().zip(words.by_ref()) {
                *d = pair(w[0], w[1]);
            }
            if let [last] = words.remainder() {
                dst[row.len() / 2] = last.bits() as u32;
            }
        }
    } else if a.row_stride == 1 && rows.len() > 1 {
        // Blocks of 16 pairs x 16 rows: each pair's words of 16 rows are formed from two
        // contiguous stretches of the source, then the block is transposed so every row gets
        // its 16 pairs as one 64-byte store.
        let mut block = [[0u32; PANEL]; PANEL];
        for pb in (p0..p1).step_by(PANEL) {
            let np = (p1 - pb).min(PANEL);
            for r0 in (0..rows.len()).step_by(PANEL) {
                let w = (rows.len() - r0).min(PANEL);
                for (j, words) in block.iter_mut().enumerate() {
                    let p = pb + j;
                    if j >= np {
                        *words = [0; PANEL];
                        continue;
                    }
                    let lo = &a.data[a.offset + 2 * p * a.col_stride + rows.start + r0..][..w];
                    let hi = (2 * p + 1 < k)
                        .then(|| &a.data[a.offset + (2 * p + 1) * a.col_stride + rows.start + r0..][..w]);
                    row_pair_words(words, lo, hi);
                }
                // SAFETY: the products that pack run only where available() (AVX-512) holds.
                unsafe { x86::transpose16(&mut block) };
                for (r, words) in block[..w].iter().enumerate() {
                    out[(r0 + r) * stride + pb - p0..][..np].copy_from_slice(&words[..np]);
                }
            }
        }
    } else {
        for (r, i) in rows.enumerate() {
            for p in p0..p1 {
                let hi = if 2 * p + 1 < k { at(a, i, 2 * p + 1).bits() } else { 0 };
                out[r * stride + p - p0] = at(a, i, 2 * p).bits() as u32 | (hi as u32) << 16;
            }
        }
    }
    out
}

/// Where [`gemm`] puts the row-major f32 product `c` (`m * n` elements).
pub enum Out<'a> {
    /// `c += a @ b`.
    Add(&'a mut [f32]),
    /// `c = a @ b`; `c` may be uninitialised (a fresh output): every element is written, none
    /// read first (the first k block stores).
    Store(&'a mut [MaybeUninit<f32>]),
}

/// Which instruction multiplies the packed pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `vdpbf16ps` (AVX512_BF16).
    Dot,
    /// The AMX tiles (`tdpbf16ps`, [`amx`]).
    Tiles,
}

impl Kernel {
    /// The fastest this CPU has (call only where [`available`] is true).
    fn best() -> Self {
        if amx::available() { Kernel::Tiles } else { Kernel::Dot }
    }
}

/// The product of an `m x k` lhs and `k x n` rhs (bf16, or f32 rounded to bf16 as it is
/// packed), both already bounds-checked by the caller, into `out`, on the AMX tiles where the
/// CPU has them, else the bf16 dot-product instruction. `parallel` splits rows across the
/// rayon pool. Call only where [`available`] is true.
pub fn gemm<T: PairElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    out: Out<'_>,
    parallel: bool,
) {
    gemm_on(Kernel::best(), m, n, k, a, b, out, parallel)
}

#[allow(clippy::too_many_arguments)]
fn gemm_on<T: PairElem>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    out: Out<'_>,
    parallel: bool,
) {
    assert!(available(), "bf16dot::gemm without AVX512_BF16");
    assert!(kernel == Kernel::Dot || amx::available(), "bf16dot::gemm on tiles this process may not use");
    let (c, accumulate) = match out {
        // SAFETY: initialised f32 viewed as MaybeUninit, written only with f32 values.
        Out::Add(c) => (unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) }, true),
        Out::Store(c) => (c, false),
    };
    assert_eq!(c.len(), m * n, "bf16dot: destination length");
    if k == 0 {
        if !accumulate {
            c.fill(MaybeUninit::new(0.0));
        }
        return;
    }
    // The tile kernel wants whole tiles: pairs padded to 16 and lhs rows to 16 (zeros).
    let tiles = kernel == Kernel::Tiles;
    let pairs_total = k.div_ceil(2);
    for p0 in (0..pairs_total).step_by(KC) {
        let p1 = (p0 + KC).min(pairs_total);
        let stride = if tiles { (p1 - p0).next_multiple_of(amx::K_PAIRS) } else { p1 - p0 };
        let packed_b = pack_rhs(b, k, n, (p0, p1), stride, parallel);
        let task = |(t, rows_c): (usize, &mut [MaybeUninit<f32>])| {
            let r0 = t * ROWS_PER_TASK;
            let rows = r0..r0 + rows_c.len() / n;
            let padded = if tiles { rows.len().next_multiple_of(amx::TILE_ROWS) } else { rows.len() };
            let packed_a = pack_lhs(a, k, rows.clone(), (p0, p1), (stride, padded));
            // SAFETY: available() (and amx::available() for the tiles) was checked above; the
            // packed buffers have the lengths the kernels index (padded rows x stride, and an
            // even number of 16-wide panels x stride); the kernels read `c` only where they add,
            // after the first block (or the caller) wrote it.
            let store = !accumulate && p0 == 0;
            unsafe {
                if tiles {
                    amx::block(&packed_a, &packed_b, rows.len(), n, stride, rows_c, store);
                } else {
                    x86::block(&packed_a, &packed_b, rows.len(), n, stride, rows_c, store);
                }
            }
        };
        if parallel {
            use rayon::prelude::*;
            c.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(task);
        } else {
            c.chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(task);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{MR, PANEL, PANELS_PER_BLOCK};

    /// Transposes a 16 x 16 block of words in place ([`transpose16_regs`] between a load and
    /// a store of the rows).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose16(block: &mut [[u32; PANEL]; PANEL]) {
        // SAFETY: each row is 16 u32 (64 bytes), loaded and stored unaligned.
        unsafe {
            let mut v: [__m512i; PANEL] = std::array::from_fn(|r| _mm512_loadu_si512(block[r].as_ptr() as *const _));
            transpose16_regs(&mut v);
            for (row, x) in block.iter_mut().zip(v) {
                _mm512_storeu_si512(row.as_mut_ptr() as *mut _, x);
            }
        }
    }

    /// Transposes 16 rows of 16 words held in registers: four butterfly stages, stage `d`
    /// swapping the upper-right and lower-left `d x d` sub-blocks of every `2d x 2d` block
    /// (each element whose row and column differ in bit `d` has both bits flipped), each stage
    /// two two-source permutes per pair of rows `d` apart.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn transpose16_regs(v: &mut [__m512i; PANEL]) {
        // SAFETY: AVX-512F is enabled for this function.
        unsafe {
            stage::<8>(v);
            stage::<4>(v);
            stage::<2>(v);
            stage::<1>(v);
        }
    }

    /// The two-source permute indices of butterfly stage `d`: lane c of row r takes row r's
    /// lane c where bit d of c is clear, else row r + d's lane c - d (`PANEL +` selects the
    /// second source); row r + d takes row r's lane c + d, else its own lane c.
    const fn stage_indices(d: usize) -> [[i32; PANEL]; 2] {
        let mut out = [[0i32; PANEL]; 2];
        let mut c = 0;
        while c < PANEL {
            let clear = c & d == 0;
            out[0][c] = if clear { c as i32 } else { (PANEL + c - d) as i32 };
            out[1][c] = if clear { (c + d) as i32 } else { (PANEL + c) as i32 };
            c += 1;
        }
        out
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn stage<const D: usize>(v: &mut [__m512i; PANEL]) {
        let idx: [[i32; PANEL]; 2] = const { stage_indices(D) };
        // SAFETY: loads of 16 i32 from a local array.
        let (upper, lower) = unsafe {
            (_mm512_loadu_si512(idx[0].as_ptr() as *const _), _mm512_loadu_si512(idx[1].as_ptr() as *const _))
        };
        for r in 0..PANEL {
            if r & D == 0 {
                let (a, b) = (v[r], v[r + D]);
                v[r] = _mm512_permutex2var_epi32(a, upper, b);
                v[r + D] = _mm512_permutex2var_epi32(a, lower, b);
            }
        }
    }

    /// [`super::round_bits`] of 16 f32 given as their bits, in the low halves of the lanes
    /// (high halves zero): the same rounding, for packing loops written with intrinsics.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn round_bits_x16(x: __m512i) -> __m512i {
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))));
        let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }

    /// `c` (rows x n, row-major) += packed_a (rows x pairs) @ packed_b (panels x pairs x 16).
    /// With `store`, C is overwritten (the first k block of a product that does not
    /// accumulate) and may be uninitialised; else it is read and added to.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn block(
        packed_a: &[u32],
        packed_b: &[u32],
        rows: usize,
        n: usize,
        pairs: usize,
        c: &mut [MaybeUninit<f32>],
        store: bool,
    ) {
        let panels = n.div_ceil(PANEL).next_multiple_of(2);
        for qb in (0..panels).step_by(PANELS_PER_BLOCK) {
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(MR);
                for q in (qb..(qb + PANELS_PER_BLOCK).min(panels)).step_by(2) {
                    // SAFETY: as promised by the caller; each call stays inside rows r..r+take.
                    unsafe {
                        match take {
                            8 => micro::<8>(packed_a, packed_b, r, q, n, pairs, c, store),
                            7 => micro::<7>(packed_a, packed_b, r, q, n, pairs, c, store),
                            6 => micro::<6>(packed_a, packed_b, r, q, n, pairs, c, store),
                            5 => micro::<5>(packed_a, packed_b, r, q, n, pairs, c, store),
                            4 => micro::<4>(packed_a, packed_b, r, q, n, pairs, c, store),
                            3 => micro::<3>(packed_a, packed_b, r, q, n, pairs, c, store),
                            2 => micro::<2>(packed_a, packed_b, r, q, n, pairs, c, store),
                            _ => micro::<1>(packed_a, packed_b, r, q, n, pairs, c, store),
                        }
                    }
                }
                r += take;
            }
        }
    }

    /// R rows x panels q and q+1 (32 columns, masked past n).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro<const R: usize>(
        packed_a: &[u32],
        packed_b: &[u32],
        r0: usize,
        q: usize,
        n: usize,
        pairs: usize,
        c: &mut [MaybeUninit<f32>],
        store: bool,
    ) {
        let col0 = q * PANEL;
        let mask = |col: usize| -> __mmask16 {
            let valid = n.saturating_sub(col).min(PANEL);
            ((1u32 << valid) - 1) as __mmask16
        };
        let (m0, m1) = (mask(col0), mask(col0 + PANEL));
        // SAFETY: the caller promises packed_a holds (r0 + R) x pairs words, packed_b the
        // panels q and q + 1 of pairs x 16 words each, and c rows r0..r0 + R of n columns; the
        // masks keep the stores inside each row.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let b0 = packed_b.as_ptr().add(q * pairs * PANEL);
            let b1 = packed_b.as_ptr().add((q + 1) * pairs * PANEL);
            let a = packed_a.as_ptr().add(r0 * pairs);
            for p in 0..pairs {
                let v0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(p * PANEL) as *const __m512i));
                let v1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(p * PANEL) as *const __m512i));
                for (r, row) in acc.iter_mut().enumerate() {
                    let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], w, v0);
                    row[1] = _mm512_dpbf16_ps(row[1], w, v1);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let dst = c.as_mut_ptr().add((r0 + r) * n + col0) as *mut f32;
                for (v, mk) in [(0, m0), (1, m1)] {
                    if mk != 0 {
                        let d = dst.add(v * PANEL);
                        let x = if store { row[v] } else { _mm512_add_ps(_mm512_maskz_loadu_ps(mk, d), row[v]) };
                        _mm512_mask_storeu_ps(d, mk, x);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub unsafe fn transpose16(_: &mut [[u32; super::PANEL]; super::PANEL]) {
        unreachable!("no AVX-512 off x86_64")
    }

    pub unsafe fn block(
        _: &[u32],
        _: &[u32],
        _: usize,
        _: usize,
        _: usize,
        _: &mut [std::mem::MaybeUninit<f32>],
        _: bool,
    ) {
        unreachable!("bf16dot::available() is false off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::{Threads, gemm_bf16, gemm_bf16_widened};

    /// Skips (with the reason printed) where the CPU has no AVX512_BF16.
    fn skip() -> bool {
        if !available() {
            eprintln!("skipped: this CPU has no avx512_bf16 (the widened path serves it)");
        }
        !available()
    }

    /// The kernels this CPU runs (the tiles only where it has AMX, said when it has not).
    fn kernels() -> Vec<Kernel> {
        if amx::available() {
            vec![Kernel::Dot, Kernel::Tiles]
        } else {
            eprintln!("the AMX tile kernel is not tested: this CPU (or its kernel) gives no AMX-BF16");
            vec![Kernel::Dot]
        }
    }

    fn values(len: usize, seed: u64, int: bool) -> Vec<bf16> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                // Small integers multiply and sum exactly in f32; the others test rounding.
                bf16::from_f64(if int { (u * 9.0).floor() - 4.0 } else { (u - 0.5) * 4.0 })
            })
            .collect()
    }

    /// A product stored into fresh memory (filled with NaN first, so an element the kernel
    /// skipped shows).
    fn stored(m: usize, n: usize, f: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
        let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
        f(&mut c);
        // SAFETY: every element was initialised (with NaN) before the kernel ran.
        c.iter().map(|x| unsafe { x.assume_init() }).collect()
    }

    fn reference(m: usize, n: usize, k: usize, a: &MatRef<'_, bf16>, b: &MatRef<'_, bf16>) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| at(a, i, p).to_f64() * at(b, p, j).to_f64()).sum();
            }
        }
        out
    }

    #[test]
    fn vector_rounding_is_round_bits() {
        if skip() {
            return;
        }
        // Ties to even both ways, just off a tie, the largest finite, infinities, a quiet and
        // a signalling NaN, subnormals, zeros.
        let xs: [u32; 16] = [
            0x3f80_8000,
            0x3f81_8000,
            0x3f80_8001,
            0x3f80_7fff,
            0x7f7f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0001,
            0x7f80_0001,
            0x0000_8000,
            0x0001_8000,
            0x8000_0000,
            0x0000_0000,
            0xbf80_8000,
            0x4049_0fdb,
            0xc2f6_e979,
        ];
        // SAFETY: available() (AVX-512) holds past skip(); 16 u32 loaded and stored.
        let got: [u32; 16] = unsafe {
            use std::arch::x86_64::*;
            let mut out = [0u32; 16];
            let v = round_bits_x16(_mm512_loadu_si512(xs.as_ptr() as *const _));
            _mm512_storeu_si512(out.as_mut_ptr() as *mut _, v);
            out
        };
        for (&x, &g) in xs.iter().zip(&got) {
            assert_eq!(g, round_bits(f32::from_bits(x)) as u32, "{x:#010x}");
        }
    }

    #[test]
    fn transpose16_swaps_rows_and_columns() {
        if skip() {
            return;
        }
        let mut block: [[u32; PANEL]; PANEL] = std::array::from_fn(|i| std::array::from_fn(|j| (i * 100 + j) as u32));
        // SAFETY: available() (AVX-512) holds past skip().
        unsafe { x86::transpose16(&mut block) };
        for (i, row) in block.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                assert_eq!(x, (j * 100 + i) as u32, "({i}, {j})");
            }
        }
    }

    /// Ragged shapes around every block edge (MR rows, 16/32 columns, odd k, KC pairs; for
    /// the tiles 16/32-row tiles, 16-pair tiles and a 64-row task with a ragged tail),
    /// row-major, strided and transposed operands, on every kernel: exact where the
    /// arithmetic is exact.
    #[test]
    fn exact_products_match_at_ragged_shapes_and_strides() {
        if skip() {
            return;
        }
        let shapes = [
            (1, 1, 1),
            (5, 17, 3),
            (7, 33, 2 * KC + 3),
            (13, 16, 64),
            (6, 32, 1),
            (2, 47, 513),
            (45, 40, 100),
            (70, 18, 2 * KC + 40),
            (48, 64, 4 * KC + 7),
        ];
        for kernel in kernels() {
            for &(m, n, k) in &shapes {
                let a = values(3 * m * k + 5, 1, true);
                let b = values(3 * k * n + 3, 2, true);
                // lhs row-major at offset 5, rhs transposed at offset 3; then lhs transposed
                // (a weight gradient's activation), rhs row-major; then both spread out.
                let layouts = [((5, k, 1), (3, 1, k)), ((5, 1, m), (3, n, 1)), ((1, 2 * k + 1, 2), (4, 3, 3 * k))];
                for ((ao, ars, acs), (bo, brs, bcs)) in layouts {
                    let (lhs, rhs) = (MatRef::new(&a, ao, ars, acs), MatRef::new(&b, bo, brs, bcs));
                    let mut got = vec![0f32; m * n];
                    gemm_on(kernel, m, n, k, &lhs, &rhs, Out::Add(&mut got), false);
                    let want = reference(m, n, k, &lhs, &rhs);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(*g as f64, *w, "{kernel:?} ({m},{n},{k}) lhs ({ao},{ars},{acs}) element {i}");
                    }
                }
            }
        }
    }

    /// f32 operands are rounded to bf16 as they are packed: the product equals, bit for bit,
    /// the product of their rounded copies, for every packing path (row-major, column-major
    /// and general strides on both sides, odd k, k past one block).
    #[test]
    fn f32_operands_multiply_as_their_bf16_roundings() {
        if skip() {
            return;
        }
        let f = |len: usize, seed: u64| -> Vec<f32> {
            values(len, seed, false).iter().map(|x| x.to_f32() * 1.37).collect()
        };
        for (kernel, &(m, n, k)) in kernels().into_iter().flat_map(|kn| {
            [(9, 37, 2 * KC + 5), (1, 20, 7), (17, 1, 6), (5, 33, 1), (40, 35, 70)].iter().map(move |s| (kn, s))
        }) {
            let (a, b) = (f(m * k * 3 + 7, 5), f(k * n * 3 + 7, 6));
            let (ar, br): (Vec<bf16>, Vec<bf16>) =
                (a.iter().map(|&x| bf16::from_f32(x)).collect(), b.iter().map(|&x| bf16::from_f32(x)).collect());
            // (offset, row stride, col stride) of lhs and rhs: row-major, column-major, spread.
            let layouts = [((0, k, 1), (0, n, 1)), ((3, 1, m), (2, 1, k)), ((1, 2 * k + 1, 2), (4, 3, 3 * k))];
            for ((ao, ars, acs), (bo, brs, bcs)) in layouts {
                let (la, lb) = (MatRef::new(&a, ao, ars, acs), MatRef::new(&b, bo, brs, bcs));
                let got = stored(m, n, |c| gemm_on(kernel, m, n, k, &la, &lb, Out::Store(c), true));
                let mut want = vec![0f32; m * n];
                let (ra, rb) = (MatRef::new(&ar, ao, ars, acs), MatRef::new(&br, bo, brs, bcs));
                gemm_on(kernel, m, n, k, &ra, &rb, Out::Add(&mut want), false);
                assert_eq!(got, want, "{kernel:?} ({m},{n},{k}) lhs ({ao},{ars},{acs}) rhs ({bo},{brs},{bcs})");
                let exact = reference(m, n, k, &ra, &rb);
                let err = got.iter().zip(&exact).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
                assert!(err < 1e-2, "({m},{n},{k}): error {err} against the f64 product of the roundings");
            }
        }
        let mut s = 0x1234_5678u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            let got = round_bits(x);
            if x.is_nan() {
                assert!(bf16::from_bits(got).is_nan(), "{x:e}");
            } else {
                assert_eq!(got, bf16::from_f32(x).to_bits(), "{x:e} ({s:#x})");
            }
        }
    }

    /// On random inputs the error against the f64 product is within twice that of the
    /// widened f32 path (the project's accuracy rule), and splitting rows over threads changes
    /// no bit.
    #[test]
    fn rounding_error_is_that_of_f32_accumulation() {
        if skip() {
            return;
        }
        let (m, n, k) = (37, 70, 1100);
        let a = values(m * k, 3, false);
        let b = values(k * n, 4, false);
        let (lhs, rhs) = (MatRef::row_major(&a, k), MatRef::row_major(&b, n));
        let want = reference(m, n, k, &lhs, &rhs);
        let err = |got: &mut dyn Iterator<Item = f64>| got.zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
        for kernel in kernels() {
            let mut serial = vec![0f32; m * n];
            gemm_on(kernel, m, n, k, &lhs, &rhs, Out::Add(&mut serial), false);
            let parallel = stored(m, n, |c| gemm_on(kernel, m, n, k, &lhs, &rhs, Out::Store(c), true));
            assert_eq!(serial, parallel, "{kernel:?}");
            let e_dot = err(&mut serial.iter().map(|&x| x as f64));
            assert!(e_dot < 1e-3, "{kernel:?}: f32 accumulation error {e_dot}");
        }
        let mut widened = vec![bf16::ZERO; m * n];
        gemm_bf16_widened(m, n, k, lhs, rhs, &mut widened, Threads::Single).unwrap();
        let mut rounded = vec![bf16::ZERO; m * n];
        gemm_bf16(m, n, k, lhs, rhs, &mut rounded, Threads::Auto).unwrap();
        let e_wide = err(&mut widened.iter().map(|x| x.to_f64()));
        let e_rounded = err(&mut rounded.iter().map(|x| x.to_f64()));
        assert!(e_rounded <= 2.0 * e_wide, "bf16 result error {e_rounded} against the widened path's {e_wide}");
    }
}
