//! The bf16 tile products of [`super::dot`] on Intel's tile unit (AMX `tdpbf16ps`) where the
//! CPU has it. On such CPUs `vdpbf16ps` runs at half the f32 FMA rate and the tiles at about
//! 15 times it (docs/benchmarks.md, "Intel Xeon with AMX"), so without them bf16 attention
//! is slower than f32.
//!
//! A tile holds 16 rows of 64 bytes: an A tile is 16 rows of 16 word pairs, a B tile 16 pair
//! rows of 16 columns, a result tile 16 x 16 f32, each row `stride` bytes after the last. So
//! the flash kernel's operands are read **in place** wherever their extents are whole tiles: A
//! with its pairs along its rows (`aps = 1`: K, V, `P^T`, `dS^T`), B always (pair rows at
//! `ldb`), C when the product is added at scale 1 or overwritten (the online softmax's row
//! rescale of O is applied to C first). What is not whole is copied into zero-padded
//! per-thread buffers, and an A with its pairs down its columns (`ars = 1`) is packed with
//! 16 x 16 word transposes. `P` and `dS`, which `O += P V` and `dQ += dS K` reduce over their
//! keys, are laid out for the tiles as they are rounded ([`key_pairs`]). The products run on
//! the tensor crate's tile kernel for strided operands (`attune_tensor::cpu::amx::product`).

use super::kernel::Acc;
use attune_tensor::cpu::amx;
use attune_tensor::cpu::math::mul_add;
use std::cell::RefCell;

/// Rows of a tile, word pairs of an A tile row, columns of a B or result tile.
const T: usize = amx::TILE_ROWS;

/// Whether the tile unit runs the bf16 products (AMX-BF16 present and granted to this
/// process, with the AVX-512 the packing uses; `ATTUNE_NO_AMX=1` turns it off, as for the
/// tensor crate's products).
pub fn available() -> bool {
    amx::available() && attune_tensor::cpu::bf16dot::available()
}

/// The padded copies of operands that are not whole tiles, kept per thread so the products
/// of a tile pair allocate nothing.
#[derive(Default)]
struct Buffers {
    a: Vec<u32>,
    b: Vec<u32>,
    c: Vec<f32>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// `C (+)= out_scale * A B` with [`super::dot::gemm`]'s operands and meaning. The caller has
/// checked the bounds (`kernel::check`), that `m, n, kp > 0` and that [`available`] is true.
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
    let whole = |x: usize| x.is_multiple_of(T);
    let (mp, np, kpp) = (m.next_multiple_of(T), n.next_multiple_of(T), kp.next_multiple_of(T));
    BUFFERS.with_borrow_mut(|buf| {
        let (ap, lda) = if aps == 1 && whole(m) && whole(kp) {
            (a.as_ptr(), ars)
        } else {
            pack_a(m, kp, a, ars, aps, &mut buf.a);
            (buf.a.as_ptr(), kpp)
        };
        let (bp, ldb) = if whole(n) && whole(kp) {
            (b.as_ptr(), ldb)
        } else {
            pack_b(n, kp, b, ldb, &mut buf.b);
            (buf.b.as_ptr(), np)
        };
        let in_place = whole(m) && whole(n) && (out_scale == 1.0 || matches!(acc, Acc::Overwrite));
        if in_place {
            // Once the running maxima settle, the online softmax's rescale is 1 for every row.
            if let Acc::ScaleAdd(sc) = acc
                && sc[..m].iter().any(|&f| f != 1.0)
            {
                for (row, &f) in c.chunks_mut(ldc).zip(sc).take(m) {
                    row[..n].iter_mut().for_each(|x| *x *= f);
                }
            }
            // SAFETY: available() was checked by the caller. A and B are either the
            // caller's operands with whole-tile extents (every row and pair read lies inside
            // the checked product) or padded copies of mp x kpp and kpp x np words; C's
            // whole tiles are rows < m, columns < n of the checked result.
            unsafe {
                amx::product(
                    mp / T,
                    np / T,
                    kpp / T,
                    ap,
                    lda,
                    bp,
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                    !matches!(acc, Acc::Overwrite),
                )
            };
            if out_scale != 1.0 {
                for row in c.chunks_mut(ldc).take(m) {
                    row[..n].iter_mut().for_each(|x| *x *= out_scale);
                }
            }
        } else {
            buf.c.resize(mp * np, 0.0);
            // SAFETY: as above, with C the mp x np scratch.
            unsafe { amx::product(mp / T, np / T, kpp / T, ap, lda, bp, ldb, buf.c.as_mut_ptr(), np, false) };
            fold(m, n, &buf.c, np, c, ldc, acc, out_scale);
        }
    });
}

/// The A operand of a product reducing over the rows (keys) of the f32 tile `s[j * lds + r]`
/// (`P` in `O += P V`, `dS` in `dQ += dS K`) for the tile unit: rounded to bf16, rows paired
/// into words, queries as rows, `dst[r * ld + i]` with `ld` returned (whole tiles, so the
/// product reads it in place). `dst` holds `cols.next_multiple_of(16) * ld` words. Call only
/// where [`available`] is true.
pub fn key_pairs(s: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [u32]) -> usize {
    let ld = rows.div_ceil(2).next_multiple_of(T);
    assert!(
        available() && dst.len() >= cols.next_multiple_of(T) * ld && s.len() >= (rows.max(1) - 1) * lds + cols,
        "flash tiles: key pairs of a {rows} x {cols} tile (stride {lds}) into {} words",
        dst.len()
    );
    // SAFETY: available() (asserted) and the lengths are as `pairs` asks.
    unsafe { transpose::pairs(s, rows, cols, lds, dst, ld) };
    ld
}

/// Writes the transpose of the `rows x cols` word block at `src` (row stride `lds`, both at
/// most 16) to `dst` (row stride `ldd`): `cols` rows of 16 words, zeros past `rows`.
///
/// # Safety
/// `attune_tensor::cpu::bf16dot::available()`; `src` readable at `r * lds + c` for
/// `r < rows`, `c < cols`; `dst` writable at `cols` rows of 16 words.
pub unsafe fn transpose_block(src: *const u32, lds: usize, rows: usize, cols: usize, dst: *mut u32, ldd: usize) {
    // SAFETY: as promised by the caller.
    unsafe { transpose::block(src, lds, rows, cols, dst, ldd) }
}

/// `C = acc(C) + out_scale * prod` row by row: the epilogue of the `vdpbf16ps` kernel
/// (`C * scale[i]` for [`Acc::ScaleAdd`], then one fused multiply-add).
#[allow(clippy::too_many_arguments)]
fn fold(m: usize, n: usize, prod: &[f32], ldp: usize, c: &mut [f32], ldc: usize, acc: Acc<'_>, os: f32) {
    for i in 0..m {
        let (src, dst) = (&prod[i * ldp..][..n], &mut c[i * ldc..][..n]);
        match acc {
            Acc::Overwrite => dst.iter_mut().zip(src).for_each(|(d, &x)| *d = x * os),
            Acc::Add => dst.iter_mut().zip(src).for_each(|(d, &x)| *d = mul_add(x, os, *d)),
            Acc::ScaleAdd(sc) => {
                let f = sc[i];
                dst.iter_mut().zip(src).for_each(|(d, &x)| *d = mul_add(x, os, *d * f));
            }
        }
    }
}

/// A as `m.next_multiple_of(16)` rows of `kp.next_multiple_of(16)` words: row `i` holds
/// `a[i * ars + p * aps]` for `p < kp`, zeros after it and in the padding rows.
fn pack_a(m: usize, kp: usize, a: &[u32], ars: usize, aps: usize, out: &mut Vec<u32>) {
    let stride = kp.next_multiple_of(T);
    out.clear();
    out.resize(m.next_multiple_of(T) * stride, 0);
    if aps == 1 {
        for (i, row) in out.chunks_exact_mut(stride).take(m).enumerate() {
            row[..kp].copy_from_slice(&a[i * ars..][..kp]);
        }
    } else if ars == 1 {
        // A[i][p] = a[p * aps + i]: the word matrix `a` (kp rows of stride aps) transposed.
        for p0 in (0..kp).step_by(T) {
            for i0 in (0..m).step_by(T) {
                // SAFETY: available() checked the CPU; the block reads a[p * aps + i] for
                // p < kp, i < m (in bounds by the caller's check) and writes rows i0..i0+16,
                // words p0..p0+16 of `out` (inside the padded rows and stride).
                unsafe {
                    transpose::block(
                        a.as_ptr().add(p0 * aps + i0),
                        aps,
                        (kp - p0).min(T),
                        (m - i0).min(T),
                        out.as_mut_ptr().add(i0 * stride + p0),
                        stride,
                    )
                }
            }
        }
    } else {
        for (i, row) in out.chunks_exact_mut(stride).take(m).enumerate() {
            for (p, w) in row[..kp].iter_mut().enumerate() {
                *w = a[i * ars + p * aps];
            }
        }
    }
}

/// B as `kp.next_multiple_of(16)` pair rows of `n.next_multiple_of(16)` words, zeros past
/// `kp` and `n`.
fn pack_b(n: usize, kp: usize, b: &[u32], ldb: usize, out: &mut Vec<u32>) {
    let np = n.next_multiple_of(T);
    out.clear();
    out.resize(kp.next_multiple_of(T) * np, 0);
    for (p, row) in out.chunks_exact_mut(np).take(kp).enumerate() {
        row[..n].copy_from_slice(&b[p * ldb..][..n]);
    }
}

/// The packing loops on 16 x 16 blocks of words, transposed in registers with the tensor
/// crate's butterfly (`attune_tensor::cpu::bf16dot::transpose16_regs`).
mod transpose {
    /// Writes the transpose of the `rows x cols` word block at `src` (row stride `lds`) to
    /// `dst` (row stride `ldd`) as `cols` rows of 16 words, zeros past `rows`: `dst[c * ldd +
    /// r] = src[r * lds + c]`.
    ///
    /// # Safety
    /// AVX-512F (`attune_tensor::cpu::bf16dot::available`); `src` readable at `r * lds + c`
    /// for `r < rows`, `c < cols`; `dst` writable at `cols` rows of 16 words.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block(src: *const u32, lds: usize, rows: usize, cols: usize, dst: *mut u32, ldd: usize) {
        use attune_tensor::cpu::bf16dot::transpose16_regs;
        use std::arch::x86_64::*;
        let mask = ((1u32 << cols) - 1) as __mmask16;
        let mut r = [_mm512_setzero_si512(); 16];
        for (i, x) in r.iter_mut().enumerate().take(rows) {
            // SAFETY: row i < rows, its first `cols` words (the mask) are readable.
            *x = unsafe { _mm512_maskz_loadu_epi32(mask, src.add(i * lds) as *const i32) };
        }
        // SAFETY: AVX-512F is enabled for this function.
        unsafe { transpose16_regs(&mut r) };
        for (c, x) in r.iter().enumerate().take(cols) {
            // SAFETY: the caller's `cols` writable rows of 16 words.
            unsafe { _mm512_storeu_si512(dst.add(c * ldd) as *mut _, *x) };
        }
    }

    /// Writes the rows of the f32 tile `s[j * lds + r]` (`j < rows`, `r < cols`) rounded to
    /// bf16 and paired into words, transposed: `dst[r * ld + i]` holds `s[2i][r]` (low half)
    /// and `s[2i + 1][r]` for `i < rows.div_ceil(2)`, zeros past the tile up to whole 16 x 16
    /// blocks. The rounding is the tensor crate's `round_bits`.
    ///
    /// # Safety
    /// [`super::available`]; `s` holds the tile; `dst` holds `cols.next_multiple_of(16)`
    /// rows of `ld >= rows.div_ceil(2).next_multiple_of(16)` words.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pairs(s: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [u32], ld: usize) {
        use attune_tensor::cpu::bf16dot::{round_bits_x16, transpose16_regs};
        use std::arch::x86_64::*;
        let kp = rows.div_ceil(2);
        for r0 in (0..cols).step_by(16) {
            let mask = ((1u32 << (cols - r0).min(16)) - 1) as __mmask16;
            // Row j's columns r0.. rounded (zeros past the tile).
            let load = |j: usize| {
                if j < rows {
                    // SAFETY: row j < rows of the tile, its columns r0.. under the mask; AVX-512F
                    // is enabled for the enclosing function.
                    unsafe { round_bits_x16(_mm512_maskz_loadu_epi32(mask, s[j * lds + r0..].as_ptr() as *const i32)) }
                } else {
                    _mm512_setzero_si512()
                }
            };
            for i0 in (0..kp).step_by(16) {
                let mut w = [_mm512_setzero_si512(); 16];
                for (ii, x) in w.iter_mut().enumerate().take(kp - i0) {
                    let j = 2 * (i0 + ii);
                    *x = _mm512_or_si512(load(j), _mm512_slli_epi32::<16>(load(j + 1)));
                }
                // SAFETY: AVX-512F is enabled for this function.
                unsafe { transpose16_regs(&mut w) };
                for (rr, x) in w.iter().enumerate() {
                    let at = &mut dst[(r0 + rr) * ld + i0..][..16];
                    // SAFETY: 16 words inside `dst` (the slice above).
                    unsafe { _mm512_storeu_si512(at.as_mut_ptr() as *mut _, *x) };
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn block(_: *const u32, _: usize, _: usize, _: usize, _: *mut u32, _: usize) {
        unreachable!("tiles::available() is false off x86_64")
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn pairs(_: &[f32], _: usize, _: usize, _: usize, _: &mut [u32], _: usize) {
        unreachable!("tiles::available() is false off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_blocks_swap_rows_and_columns_and_write_only_the_block_rows() {
        if !available() {
            eprintln!("skipped: this CPU has no tile unit (AMX)");
            return;
        }
        let src: Vec<u32> = (0..20 * 21).collect();
        for &(rows, cols) in &[(16, 16), (5, 16), (16, 3), (1, 1), (9, 13)] {
            let mut dst = vec![u32::MAX; 16 * 18];
            // SAFETY: AVX-512F checked; rows, cols <= 16 inside the 20 x 21 source; 16 rows of
            // 18 words written.
            unsafe { transpose::block(src.as_ptr().add(21 + 2), 21, rows, cols, dst.as_mut_ptr(), 18) };
            for c in 0..16 {
                for r in 0..16 {
                    let want = match (r < rows, c < cols) {
                        (_, false) => u32::MAX,
                        (true, true) => src[(1 + r) * 21 + 2 + c],
                        (false, true) => 0,
                    };
                    assert_eq!(dst[c * 18 + r], want, "({rows}x{cols}) dst[{c}][{r}]");
                }
                assert_eq!(dst[c * 18 + 16], u32::MAX, "wrote past 16 words in row {c}");
            }
        }
    }

    #[test]
    fn key_pairs_are_the_transpose_of_the_dot_products_pairs() {
        if !available() {
            eprintln!("skipped: this CPU has no tile unit (AMX)");
            return;
        }
        let lds = 64;
        // Values that round up, down and to even, and a NaN that must stay a NaN.
        let s: Vec<f32> =
            (0..128 * lds).map(|i| if i == 77 { f32::NAN } else { (i as f32 * 0.377).sin() * 3.1 }).collect();
        for &(rows, cols) in &[(128, 64), (127, 64), (5, 3), (1, 1), (40, 50)] {
            let mut dst = vec![u32::MAX; 64 * 64];
            let ld = key_pairs(&s, rows, cols, lds, &mut dst);
            assert_eq!(ld, rows.div_ceil(2).next_multiple_of(16));
            let mut want = vec![0u32; 64 * lds];
            super::super::dot::tile_pairs(&s, rows, cols, lds, &mut want, lds);
            for r in 0..cols.next_multiple_of(16) {
                for i in 0..ld {
                    let expect = if r < cols && i < rows.div_ceil(2) { want[i * lds + r] } else { 0 };
                    assert_eq!(dst[r * ld + i], expect, "({rows}x{cols}) A[{r}][{i}]");
                }
            }
        }
    }

    #[test]
    fn packed_operands_pad_with_zeros() {
        if !available() {
            eprintln!("skipped: this CPU has no tile unit (AMX)");
            return;
        }
        // A 3 x 5 A read transposed (aps = 4, ars = 1) and a 5 x 20 B.
        let a: Vec<u32> = (1..=5 * 4).collect();
        let mut pa = Vec::new();
        pack_a(3, 5, &a, 1, 4, &mut pa);
        assert_eq!(pa.len(), 16 * 16);
        for i in 0..16 {
            for p in 0..16 {
                let want = if i < 3 && p < 5 { a[p * 4 + i] } else { 0 };
                assert_eq!(pa[i * 16 + p], want, "A[{i}][{p}]");
            }
        }
        let b: Vec<u32> = (1..=5 * 21).collect();
        let mut pb = Vec::new();
        pack_b(20, 5, &b, 21, &mut pb);
        assert_eq!(pb.len(), 16 * 32);
        for p in 0..16 {
            for j in 0..32 {
                let want = if p < 5 && j < 20 { b[p * 21 + j] } else { 0 };
                assert_eq!(pb[p * 32 + j], want, "B[{p}][{j}]");
            }
        }
    }
}
