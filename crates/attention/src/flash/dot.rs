//! The bf16 tile product on the CPU's bf16 dot-product instruction (`vdpbf16ps`,
//! AVX512_BF16), and the packing of tiles into its operand layout. bf16 inputs take this path
//! where [`available`] says the CPU has the instruction; elsewhere they are widened to f32 and
//! run on [`super::kernel`].
//!
//! `vdpbf16ps` multiplies 16 pairs of bf16 and adds both products of a pair into one f32
//! lane, so the reduction index `p` of a product is taken two at a time: an operand is a
//! matrix of 32-bit **words**, word `(i, p)` holding elements `2p` (low half) and `2p + 1`
//! (high half) of the reduction. The product
//!
//! `C[i][j] (+)= out_scale * sum_p A[i][p] . B[p][j]` (`.`: the two-term dot of a word pair)
//!
//! reads A's words at any strides (`a[i * ars + p * aps]`, each broadcast) and B's with unit
//! column stride (`b[p * ldb + j]`), like the f32 kernel. Which operand is paired along which
//! index is the packing's job: a K row-major tile is already words along head_dim (read in
//! place when aligned), a probability tile `P^T` (keys as rows) becomes words along the
//! queries by plain rounding, and pairs of rows (keys for `P V`, queries for `dK`/`dV`) are
//! interleaved. Products of bf16 are exact in f32; sums are f32. Padding words (an odd head
//! dim, an odd row count) hold zeros on both sides, so no `0 * NaN` from stale scratch enters.

use super::io::{Elem, View};
use super::kernel::{self, Acc};
use super::tiles;
use attune_tensor::cpu::bf16dot::round_bits;
use half::bf16;

/// Whether this CPU runs the bf16 dot-product kernels (the check the tensor crate's bf16
/// matrix multiply uses too).
pub fn available() -> bool {
    attune_tensor::cpu::bf16dot::available()
}

/// The bf16 views the dot-product path reads.
pub struct Views<'a> {
    pub q: View<'a, bf16>,
    pub k: View<'a, bf16>,
    pub v: View<'a, bf16>,
    /// The output gradient (backward only).
    pub dout: Option<View<'a, bf16>>,
}

impl<'a> Views<'a> {
    /// The inputs as bf16 views when they are bf16 and the CPU has the instruction: the one
    /// place that chooses the dot-product path.
    pub fn of<T: Elem>(q: &View<'a, T>, k: &View<'a, T>, v: &View<'a, T>, dout: Option<&View<'a, T>>) -> Option<Self> {
        if !available() {
            return None;
        }
        let dout = match dout {
            Some(g) => Some(g.as_bf16()?),
            None => None,
        };
        Some(Views { q: q.as_bf16()?, k: k.as_bf16()?, v: v.as_bf16()?, dout })
    }
}

/// A scratch buffer of `len` words for the dot-product path, empty when the path is off.
pub fn scratch(len: usize, on: bool) -> Vec<u32> {
    if on { vec![0; len] } else { Vec::new() }
}

/// The word of a pair: `lo` in the low half, as `vdpbf16ps` reads it.
#[inline(always)]
fn word(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

/// Rows `s0 .. s0 + rows` of `(b, h)` as words along head_dim, with their row stride in
/// words: the input itself when the rows are 4-byte aligned with an even head_dim and row
/// stride, else packed into `buf` (`rows * ceil(d / 2)` words, zero-padded).
pub fn row_words<'a: 'b, 'b>(
    view: &View<'a, bf16>,
    b: usize,
    h: usize,
    s0: usize,
    rows: usize,
    buf: &'b mut [u32],
) -> (&'b [u32], usize) {
    let dp = view.head_dim().div_ceil(2);
    if rows == 0 || dp == 0 {
        return (&buf[..0], dp);
    }
    if let Some(words) = words_in_place(view, b, h, s0, rows) {
        return words;
    }
    for r in 0..rows {
        pack_words(view.row(b, h, s0 + r), &mut buf[r * dp..][..dp]);
    }
    (&buf[..rows * dp], dp)
}

/// Rows `s0 .. s0 + rows` (`rows > 0`) of `(b, h)` read as words along head_dim where they
/// are 4-byte aligned with an even head_dim and row stride, with their row stride in words.
fn words_in_place<'a>(view: &View<'a, bf16>, b: usize, h: usize, s0: usize, rows: usize) -> Option<(&'a [u32], usize)> {
    let (span, stride) = view.span(b, h, s0, rows);
    let fits = view.head_dim().is_multiple_of(2) && (stride.is_multiple_of(2) || rows == 1);
    let words = bytemuck::try_cast_slice::<bf16, u32>(span).ok().filter(|_| fits)?;
    Some((words, (stride / 2).max(view.head_dim() / 2)))
}

/// `dst[p] = (x[2p], x[2p + 1])`, the last high half zero for an odd length.
fn pack_words(x: &[bf16], dst: &mut [u32]) {
    let mut it = x.chunks_exact(2);
    for (d, w) in dst.iter_mut().zip(it.by_ref()) {
        *d = word(w[0].to_bits(), w[1].to_bits());
    }
    if let [last] = it.remainder() {
        dst[x.len() / 2] = word(last.to_bits(), 0);
    }
}

/// Rows `s0 .. s0 + rows` transposed into words along head_dim: `dst[p * ld + r]` holds
/// elements `2p, 2p + 1` of row `r` (the B operand of `S^T = K Q^T` and `dP^T = V dO^T`).
#[allow(clippy::too_many_arguments)]
pub fn words_t(view: &View<'_, bf16>, b: usize, h: usize, s0: usize, rows: usize, dst: &mut [u32], ld: usize) {
    let d = view.head_dim();
    if rows > 0
        && let Some((w, wl)) = words_in_place(view, b, h, s0, rows)
    {
        // 16 x 16 blocks transposed in registers.
        let dp = d / 2;
        assert!(
            available() && dst.len() >= (dp - 1) * ld + rows.next_multiple_of(16) && ld >= rows.next_multiple_of(16),
            "flash dot: transposed words of {rows} rows of {dp} words into {} words at stride {ld}",
            dst.len()
        );
        for p0 in (0..dp).step_by(16) {
            for r0 in (0..rows).step_by(16) {
                let (nr, np) = ((rows - r0).min(16), (dp - p0).min(16));
                // SAFETY: available() (asserted); the block reads words p0..p0+np of rows
                // r0..r0+nr inside `w`, and writes rows p0..p0+np, columns r0..r0+16 of `dst`
                // (asserted above).
                unsafe {
                    tiles::transpose_block(w[r0 * wl + p0..].as_ptr(), wl, nr, np, dst[p0 * ld + r0..].as_mut_ptr(), ld)
                };
            }
        }
        return;
    }
    for r in 0..rows {
        let row = view.row(b, h, s0 + r);
        for p in 0..d / 2 {
            dst[p * ld + r] = word(row[2 * p].to_bits(), row[2 * p + 1].to_bits());
        }
        if d % 2 == 1 {
            dst[(d / 2) * ld + r] = word(row[d - 1].to_bits(), 0);
        }
    }
}

/// Pairs of consecutive rows interleaved: `dst[i * ld + x]` holds element `x` of rows
/// `s0 + 2i` and `s0 + 2i + 1` (zero past `rows`) — the B operand of a product that reduces
/// over rows (`P V` over keys, `dK`/`dV` over queries, `dQ` over keys).
pub fn row_pairs(view: &View<'_, bf16>, b: usize, h: usize, s0: usize, rows: usize, dst: &mut [u32], ld: usize) {
    let d = view.head_dim();
    for i in 0..rows.div_ceil(2) {
        let lo = view.row(b, h, s0 + 2 * i);
        let out = &mut dst[i * ld..][..d];
        if 2 * i + 1 < rows {
            let hi = view.row(b, h, s0 + 2 * i + 1);
            for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
                *o = word(l.to_bits(), h.to_bits());
            }
        } else {
            for (o, l) in out.iter_mut().zip(lo) {
                *o = word(l.to_bits(), 0);
            }
        }
    }
}

/// An f32 tile `s[j * lds + r]` (`j < rows`, `r < cols`) rounded to bf16 as words along `r`:
/// `dst[j * ld + i]` holds `s[j][2i], s[j][2i + 1]` (zero past `cols`). For `P^T` and `dS^T`
/// (keys as rows) this is the A operand of `dV += P^T dO` and `dK += dS^T Q`.
pub fn tile_words(s: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [u32], ld: usize) {
    let half = cols / 2;
    for j in 0..rows {
        let (src, out) = (&s[j * lds..][..cols], &mut dst[j * ld..][..cols.div_ceil(2)]);
        for (o, w) in out.iter_mut().zip(src.chunks_exact(2)) {
            *o = word(round_bits(w[0]), round_bits(w[1]));
        }
        if cols % 2 == 1 {
            out[half] = word(round_bits(src[cols - 1]), 0);
        }
    }
}

/// An f32 tile `s[j * lds + r]` rounded to bf16 with pairs of rows interleaved:
/// `dst[i * ld + r]` holds `s[2i][r], s[2i + 1][r]` (zero past `rows`). For `P^T` and `dS^T`
/// this is the A operand of `O += P V` and `dQ += dS K`, read with `ars = 1, aps = ld`.
pub fn tile_pairs(s: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [u32], ld: usize) {
    for i in 0..rows.div_ceil(2) {
        let lo = &s[2 * i * lds..][..cols];
        let out = &mut dst[i * ld..][..cols];
        if 2 * i + 1 < rows {
            let hi = &s[(2 * i + 1) * lds..][..cols];
            for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
                *o = word(round_bits(l), round_bits(h));
            }
        } else {
            for (o, &l) in out.iter_mut().zip(lo) {
                *o = word(round_bits(l), 0);
            }
        }
    }
}

/// The bf16 A operand of a product reducing over the rows (keys) of the f32 tile
/// `s[j * lds + r]` (`P` in `O += P V`, `dS` in `dQ += dS K`), laid out for the kernel that
/// runs: queries as rows of key-pair words for the tile unit ([`tiles::key_pairs`]), else
/// [`tile_pairs`] (words along the queries, `ld = lds`). Returns the operand's `(ars, aps)`
/// for [`gemm`]. `dst` holds `BK / 2 * BQ` words (`rows <= BK`, `cols <= BQ = lds`).
pub fn key_pairs(s: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [u32]) -> (usize, usize) {
    if tiles::available() {
        (tiles::key_pairs(s, rows, cols, lds, dst), 1)
    } else {
        tile_pairs(s, rows, cols, lds, dst, lds);
        (1, lds)
    }
}

/// `C (+)= out_scale * A B` over `kp` word pairs, as the module docs describe, C treated as
/// `acc` says (a row scale applies to the C found, not to the product): on the tile unit
/// where the CPU has one ([`super::tiles`]), else on `vdpbf16ps`. Call only where
/// [`available`] is true.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    kp: usize,
    a: &[u32],
    ars: usize,
    aps: usize,
    b: &[u32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    acc: Acc<'_>,
    out_scale: f32,
) {
    gemm_on(tiles::available(), m, n, kp, a, ars, aps, b, ldb, c, ldc, acc, out_scale)
}

/// [`gemm`] on the tile unit (`on_tiles`) or on `vdpbf16ps`.
#[allow(clippy::too_many_arguments)]
fn gemm_on(
    on_tiles: bool,
    m: usize,
    n: usize,
    kp: usize,
    a: &[u32],
    ars: usize,
    aps: usize,
    b: &[u32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    acc: Acc<'_>,
    out_scale: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    if let Acc::ScaleAdd(sc) = acc {
        assert!(sc.len() >= m, "flash dot kernel: {} row scales for {m} rows", sc.len());
    }
    if kp == 0 {
        // Nothing to add: reuse the f32 kernel's handling of an empty reduction.
        return kernel::gemm(m, n, 0, &[], 1, 1, &[], n, c, ldc, acc);
    }
    kernel::check(m, n, kp, a, ars, aps, b, ldb, c, ldc);
    assert!(available(), "flash dot kernel called on a CPU without avx512_bf16");
    if on_tiles {
        return tiles::gemm(m, n, kp, a, ars, aps, b, ldb, c, ldc, acc, out_scale);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the features (checked above) and `check` proved every index the
    // kernel forms (rows < m, columns < n, p < kp; masked lanes are never accessed) in bounds.
    unsafe {
        let (load, scale) = match acc {
            Acc::Overwrite => (false, std::ptr::null()),
            Acc::Add => (true, std::ptr::null()),
            Acc::ScaleAdd(sc) => (true, sc.as_ptr()),
        };
        x86::gemm(m, n, kp, a.as_ptr(), ars, aps, b.as_ptr(), ldb, c.as_mut_ptr(), ldc, load, scale, out_scale)
    }
}

/// The product element by element in f32 (both products of a pair added, in the order the
/// instruction's documentation gives: the high halves first): the reference of the tests.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn reference(m: usize, n: usize, kp: usize, a: &[u32], ars: usize, aps: usize, b: &[u32], ldb: usize) -> Vec<f64> {
    let f = |w: u32, hi: bool| bf16::from_bits(if hi { (w >> 16) as u16 } else { w as u16 }).to_f64();
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..kp)
                .map(|p| {
                    let (x, y) = (a[i * ars + p * aps], b[p * ldb + j]);
                    f(x, false) * f(y, false) + f(x, true) * f(y, true)
                })
                .sum();
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Most vectors (of 16 f32) per register block.
    const NV: usize = 4;

    /// One `R x (16 * V)` block of C, the last vectors masked by `masks`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize, const V: usize>(
        kp: usize,
        a: *const u32,
        ars: usize,
        aps: usize,
        b: *const u32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        load: bool,
        scale: *const f32,
        out_scale: f32,
        masks: &[__mmask16; NV],
    ) {
        // SAFETY (whole body): the caller guarantees rows < R, vectors < V, p < kp address
        // words inside the operands; masked-off lanes are not accessed. Pointers advance with
        // wrapping_add, so the step past the last p is never dereferenced.
        unsafe {
            let mut r = [[_mm512_setzero_ps(); V]; R];
            let (mut ap, mut bp) = (a, b);
            for _ in 0..kp {
                let mut bv = [_mm512_setzero_si512(); V];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_epi32(masks[v], bp.add(v * 16) as *const i32);
                }
                for (i, row) in r.iter_mut().enumerate() {
                    let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i * ars) as i32));
                    for (x, &bb) in row.iter_mut().zip(&bv) {
                        *x = _mm512_dpbf16_ps(*x, w, std::mem::transmute::<__m512i, __m512bh>(bb));
                    }
                }
                ap = ap.wrapping_add(aps);
                bp = bp.wrapping_add(ldb);
            }
            let os = _mm512_set1_ps(out_scale);
            for (i, row) in r.iter().enumerate() {
                let f = if scale.is_null() { _mm512_set1_ps(1.0) } else { _mm512_set1_ps(*scale.add(i)) };
                for (v, &x) in row.iter().enumerate() {
                    let dst = c.add(i * ldc + v * 16);
                    let y = if load {
                        let old = _mm512_mul_ps(_mm512_maskz_loadu_ps(masks[v], dst), f);
                        _mm512_fmadd_ps(x, os, old)
                    } else {
                        _mm512_mul_ps(x, os)
                    };
                    _mm512_mask_storeu_ps(dst, masks[v], y);
                }
            }
        }
    }

    /// See [`super::gemm`]; the caller has checked the bounds and the CPU features.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        m: usize,
        n: usize,
        kp: usize,
        a: *const u32,
        ars: usize,
        aps: usize,
        b: *const u32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        load: bool,
        scale: *const f32,
        out_scale: f32,
    ) {
        for_register_blocks!(m, n, |i0, j0, masks, rows, nv| {
            // SAFETY: block (i0.., j0..) of the checked product.
            unsafe {
                let (a, b, c) = (a.add(i0 * ars), b.add(j0), c.add(i0 * ldc + j0));
                let scale = if scale.is_null() { scale } else { scale.add(i0) };
                macro_rules! go {
                    ($r:literal, $v:literal) => {
                        block::<$r, $v>(kp, a, ars, aps, b, ldb, c, ldc, load, scale, out_scale, &masks)
                    };
                }
                dispatch_block!(go, rows, nv)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip() -> bool {
        if !available() {
            eprintln!("skipped: this CPU has no avx512_bf16 (bf16 attention widens to f32 there)");
        }
        !available()
    }

    /// Words of pseudo-random bf16 pairs; small integers (exact products and sums) or not.
    fn words(len: usize, seed: u32, int: bool) -> Vec<u32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let u = s as f32 / u32::MAX as f32;
            bf16::from_f32(if int { (u * 9.0).floor() - 4.0 } else { (u - 0.5) * 4.0 }).to_bits()
        };
        (0..len).map(|_| word(next(), next())).collect()
    }

    /// Every register-block shape and ragged edge, broadcast A at both stride orders, each
    /// accumulation mode and a scale: exact where the arithmetic is exact.
    #[test]
    fn kernel_matches_the_reference_at_ragged_shapes() {
        if skip() {
            return;
        }
        for on_tiles in kernels() {
            products_match_the_reference(on_tiles);
        }
    }

    /// The kernels this CPU runs: `vdpbf16ps`, and the tile unit where it has one.
    fn kernels() -> Vec<bool> {
        if !tiles::available() {
            eprintln!("tile unit (AMX) not available: only the vdpbf16ps kernel is tested");
        }
        [false, true].into_iter().filter(|&t| !t || tiles::available()).collect()
    }

    fn products_match_the_reference(on_tiles: bool) {
        let gemm = |m, n, kp, a: &[u32], ars, aps, b: &[u32], ldb, c: &mut [f32], ldc, acc: Acc<'_>, os| {
            gemm_on(on_tiles, m, n, kp, a, ars, aps, b, ldb, c, ldc, acc, os)
        };
        for &(m, n, kp) in &[(1, 1, 1), (7, 17, 3), (64, 64, 32), (13, 72, 20), (6, 200, 9), (65, 33, 65), (5, 48, 0)] {
            for &(ars, aps) in &[(kp.max(1), 1), (1, m + 3)] {
                let a = words(m * ars.max(1) + kp * aps + 4, 1, true);
                let b = words(kp * (n + 5) + 8, 2, true);
                let (ldb, ldc) = (n + 5, n + 2);
                let want = reference(m, n, kp, &a, ars, aps, &b, ldb);
                let mut c = vec![f32::NAN; m * ldc];
                gemm(m, n, kp, &a, ars, aps, &b, ldb, &mut c, ldc, Acc::Overwrite, 0.5);
                let before: Vec<f32> = (0..m * ldc).map(|i| (i % 7) as f32).collect();
                let scales: Vec<f32> = (0..m).map(|i| 0.5 + i as f32 * 0.25).collect();
                let mut ca = before.clone();
                gemm(m, n, kp, &a, ars, aps, &b, ldb, &mut ca, ldc, Acc::Add, 1.0);
                let mut cs = before.clone();
                gemm(m, n, kp, &a, ars, aps, &b, ldb, &mut cs, ldc, Acc::ScaleAdd(&scales), 2.0);
                // At scale 1 the tile kernel rescales C in place and adds into it.
                let mut c1 = before.clone();
                gemm(m, n, kp, &a, ars, aps, &b, ldb, &mut c1, ldc, Acc::ScaleAdd(&scales), 1.0);
                for i in 0..m {
                    for j in 0..n {
                        let (w, y, at) = (want[i * n + j], before[i * ldc + j] as f64, i * ldc + j);
                        assert_eq!(c[at] as f64, 0.5 * w, "overwrite ({m},{n},{kp}) [{i},{j}]");
                        assert_eq!(ca[at] as f64, y + w, "add ({m},{n},{kp}) [{i},{j}]");
                        assert_eq!(cs[at] as f64, y * scales[i] as f64 + 2.0 * w, "scale ({m},{n},{kp}) [{i},{j}]");
                        assert_eq!(c1[at] as f64, y * scales[i] as f64 + w, "scale 1 ({m},{n},{kp}) [{i},{j}]");
                    }
                    for j in n..ldc {
                        assert!(c[i * ldc + j].is_nan(), "wrote past n at ({m},{n},{kp}) [{i},{j}]");
                    }
                }
            }
        }
        // On inexact values the error is that of f32 accumulation.
        let (m, n, kp) = (20, 40, 300);
        let (a, b) = (words(m * kp, 3, false), words(kp * n, 4, false));
        let want = reference(m, n, kp, &a, kp, 1, &b, n);
        let mut c = vec![0.0; m * n];
        gemm(m, n, kp, &a, kp, 1, &b, n, &mut c, n, Acc::Overwrite, 1.0);
        let err = c.iter().zip(&want).map(|(&g, w)| (g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(err < 1e-3, "f32 accumulation error {err}");
    }

    #[test]
    fn packing_pairs_the_reduction_index() {
        // A 5 x 3 tile: words along columns pad the odd column, pairs of rows pad the odd row.
        let s: Vec<f32> = (0..5 * 4).map(|i| i as f32).collect();
        let mut w = vec![u32::MAX; 5 * 2];
        tile_words(&s, 5, 3, 4, &mut w, 2);
        let bits = |x: f32| bf16::from_f32(x).to_bits();
        assert_eq!(w[2 * 2], word(bits(8.0), bits(9.0)));
        assert_eq!(w[2 * 2 + 1], word(bits(10.0), 0));
        let mut p = vec![u32::MAX; 3 * 3];
        tile_pairs(&s, 5, 3, 4, &mut p, 3);
        assert_eq!(p[3 + 1], word(bits(9.0), bits(13.0)));
        assert_eq!(p[2 * 3 + 2], word(bits(18.0), 0));
    }
}
