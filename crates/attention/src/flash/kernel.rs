//! The one tile product every flash pass is made of:
//!
//! `C[i][j] (+)= sum_p A[i][p] * B[p][j]` for `i < m, j < n, p < k`,
//!
//! where `A` is read element by element at any strides (`A[i][p] = a[i * ars + p * acs]`,
//! each element broadcast to a vector), `B` has unit column stride and row stride `ldb`, and
//! `C` is row-major with row stride `ldc`. Both attention products fit this shape without a
//! transposition of K or V: `S^T = K Q^T` (A = K rows read from the input, B = the transposed
//! query tile), `O += P V` (A = P^T read transposed, B = V rows read from the input), and the
//! five products of the backward pass likewise.
//!
//! With AVX-512 (compiled in when the build enables `avx512f`, as `target-cpu=native` does on
//! the development machines) the product runs a register-blocked micro-kernel without
//! packing: blocks of 6 rows x 4 vectors of 16 columns (8x3, 12x2, 12x1 for narrower
//! edges; 24 zmm accumulators each), the ragged right edge handled by masked loads and
//! stores, so head dims like 40 or 72 need no padding. Without AVX-512 a portable row-axpy
//! loop is compiled instead (LLVM vectorises it for AVX2/SSE; the test suite passes with
//! `RUSTFLAGS="-C target-cpu=x86-64-v3"`).
//!
//! Why not the `gemm` crate: on the attention tile shapes it is slower (single thread, CPU
//! time, `examples/flash_bench.rs --kernels`: ~100-105 GFLOP/s against ~108-115 here on
//! 64x64x64 and 64x128x64 tiles), it packs both operands on every call, and it cannot fold
//! the online softmax's row rescale into the load of C ([`Acc::ScaleAdd`]).

/// What the product does with the C it finds.
#[derive(Debug, Clone, Copy)]
pub enum Acc<'a> {
    /// `C = A B` (with k = 0, zeros).
    Overwrite,
    /// `C += A B`.
    Add,
    /// `C = C * scale[i] + A B` for each row `i` (the online softmax's rescale of the
    /// output, folded into the load of C). `scale` has at least `m` entries.
    ScaleAdd(&'a [f32]),
}

/// Checks that every element the product can touch lies inside its slice. The callers build
/// the shapes from validated tiles, so a failure is a bug in this module, not a user error.
#[allow(clippy::too_many_arguments)]
pub(super) fn check<A, B>(
    m: usize,
    n: usize,
    k: usize,
    a: &[A],
    ars: usize,
    acs: usize,
    b: &[B],
    ldb: usize,
    c: &[f32],
    ldc: usize,
) {
    let fits = |len: usize, last: Option<usize>| last.is_some_and(|l| l < len);
    let a_last = (m - 1).checked_mul(ars).and_then(|x| (k - 1).checked_mul(acs).and_then(|y| x.checked_add(y)));
    let b_last = (k - 1).checked_mul(ldb).and_then(|x| x.checked_add(n - 1));
    let c_last = (m - 1).checked_mul(ldc).and_then(|x| x.checked_add(n - 1));
    assert!(
        fits(a.len(), a_last) && fits(b.len(), b_last) && fits(c.len(), c_last),
        "flash kernel bounds: m {m} n {n} k {k}, a {} ({ars}, {acs}), b {} ({ldb}), c {} ({ldc})",
        a.len(),
        b.len(),
        c.len()
    );
}

/// `C (+)= A B` as described in the module docs, C treated as `acc` says.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ars: usize,
    acs: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    acc: Acc<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if let Acc::ScaleAdd(sc) = acc {
        assert!(sc.len() >= m, "flash kernel: {} row scales for {m} rows", sc.len());
    }
    if k == 0 {
        for i in 0..m {
            let row = &mut c[i * ldc..][..n];
            match acc {
                Acc::Overwrite => row.fill(0.0),
                Acc::Add => {}
                Acc::ScaleAdd(sc) => row.iter_mut().for_each(|x| *x *= sc[i]),
            }
        }
        return;
    }
    check(m, n, k, a, ars, acs, b, ldb, c, ldc);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    // SAFETY: the avx512f feature is enabled at compile time, and `check` proved every index
    // the kernel forms (rows < m, columns < n, p < k; masked lanes are never accessed) in bounds.
    unsafe {
        let (load, scale) = match acc {
            Acc::Overwrite => (false, std::ptr::null()),
            Acc::Add => (true, std::ptr::null()),
            Acc::ScaleAdd(sc) => (true, sc.as_ptr()),
        };
        avx512::gemm(m, n, k, a.as_ptr(), ars, acs, b.as_ptr(), ldb, c.as_mut_ptr(), ldc, load, scale)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    portable(m, n, k, a, ars, acs, b, ldb, c, ldc, acc)
}

// The kernel of builds without AVX-512 (a portable `-C target-cpu=x86-64-v3` build), and the
// reference of the unit tests and of the `testing` feature's benchmarks.
#[cfg(any(feature = "testing", test, not(all(target_arch = "x86_64", target_feature = "avx512f"))))]
/// The portable product: one C row at a time, `C[i] += A[i][p] * B[p]` as contiguous axpys
/// that LLVM vectorises for whatever the target has. Also the reference in the unit tests.
#[allow(clippy::too_many_arguments)]
pub fn portable(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ars: usize,
    acs: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    acc: Acc<'_>,
) {
    for i in 0..m {
        let crow = &mut c[i * ldc..][..n];
        match acc {
            Acc::Overwrite => crow.fill(0.0),
            Acc::Add => {}
            Acc::ScaleAdd(sc) => crow.iter_mut().for_each(|x| *x *= sc[i]),
        }
        for p in 0..k {
            let x = a[i * ars + p * acs];
            let brow = &b[p * ldb..][..n];
            for (c, &b) in crow.iter_mut().zip(brow) {
                *c = x.mul_add(b, *c);
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod avx512 {
    use std::arch::x86_64::*;

    /// Most vectors (of 16 f32) per register block.
    const NV: usize = 4;

    /// One `R x (16 * V)` block of C, the last vectors masked by `masks`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize, const V: usize>(
        k: usize,
        a: *const f32,
        ars: usize,
        acs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        scale: *const f32,
        masks: &[__mmask16; NV],
    ) {
        // SAFETY (whole body): the caller guarantees rows < R, vectors < V, p < k address
        // elements inside the operands; masked-off lanes are not accessed by masked loads
        // and stores. Pointers advance with wrapping_add, so the one-past-the-end step after
        // the last p is never dereferenced.
        unsafe {
            let mut r = [[_mm512_setzero_ps(); V]; R];
            if acc {
                for (i, row) in r.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm512_maskz_loadu_ps(masks[v], c.add(i * ldc + v * 16));
                    }
                    if !scale.is_null() {
                        let f = _mm512_set1_ps(*scale.add(i));
                        for x in row.iter_mut() {
                            *x = _mm512_mul_ps(*x, f);
                        }
                    }
                }
            }
            let (mut ap, mut bp) = (a, b);
            for _ in 0..k {
                let mut bv = [_mm512_setzero_ps(); V];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[v], bp.add(v * 16));
                }
                for (i, row) in r.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(i * ars));
                    for (x, &bb) in row.iter_mut().zip(&bv) {
                        *x = _mm512_fmadd_ps(av, bb, *x);
                    }
                }
                ap = ap.wrapping_add(acs);
                bp = bp.wrapping_add(ldb);
            }
            for (i, row) in r.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(c.add(i * ldc + v * 16), masks[v], x);
                }
            }
        }
    }

    /// See [`super::gemm`]; the caller has checked the bounds. `acc` loads C; a non-null
    /// `scale` (m entries) then scales row i of C by `scale[i]`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        ars: usize,
        acs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        scale: *const f32,
    ) {
        for_register_blocks!(m, n, |i0, j0, masks, rows, nv| {
            // SAFETY: block (i0.., j0..) of the checked product.
            unsafe {
                let (a, b, c) = (a.add(i0 * ars), b.add(j0), c.add(i0 * ldc + j0));
                let scale = if scale.is_null() { scale } else { scale.add(i0) };
                macro_rules! go {
                    ($r:literal, $v:literal) => {
                        block::<$r, $v>(k, a, ars, acs, b, ldb, c, ldc, acc, scale, &masks)
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

    #[allow(clippy::too_many_arguments)]
    fn naive(m: usize, n: usize, k: usize, a: &[f32], ars: usize, acs: usize, b: &[f32], ldb: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * ars + p * acs] as f64 * b[p * ldb + j] as f64).sum();
            }
        }
        out
    }

    #[test]
    fn kernel_matches_naive_at_ragged_shapes_and_strides() {
        let data: Vec<f32> = (0..40_000).map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5).collect();
        for &(m, n, k) in &[(1, 1, 1), (7, 17, 3), (64, 64, 64), (13, 72, 40), (6, 200, 9), (65, 33, 130), (5, 48, 0)] {
            for &(ars, acs) in &[(k.max(1), 1), (1, m + 3)] {
                let ldb = n + 5;
                let ldc = n + 2;
                let mut c = vec![f32::NAN; m * ldc];
                gemm(m, n, k, &data[3..], ars, acs, &data[100..], ldb, &mut c, ldc, Acc::Overwrite);
                let mut cp = vec![1.0f32; m * ldc];
                portable(m, n, k, &data[3..], ars, acs, &data[100..], ldb, &mut cp, ldc, Acc::Add);
                let want = naive(m, n, k, &data[3..], ars, acs, &data[100..], ldb);
                for i in 0..m {
                    for j in 0..n {
                        let w = want[i * n + j];
                        let tol = 1e-5 * (1.0 + k as f64);
                        assert!((c[i * ldc + j] as f64 - w).abs() < tol, "({m},{n},{k}) [{i},{j}]");
                        assert!((cp[i * ldc + j] as f64 - 1.0 - w).abs() < tol, "portable ({m},{n},{k}) [{i},{j}]");
                    }
                    // Padding columns of C are never written.
                    for j in n..ldc {
                        assert!(c[i * ldc + j].is_nan(), "wrote past n at ({m},{n},{k}) [{i},{j}]");
                    }
                }
                // Accumulating adds to what is there, after scaling each row when asked.
                let before = c.clone();
                gemm(m, n, k, &data[3..], ars, acs, &data[100..], ldb, &mut c, ldc, Acc::Add);
                let scales: Vec<f32> = (0..m).map(|i| 0.5 + i as f32 * 0.25).collect();
                let mut cs = before.clone();
                gemm(m, n, k, &data[3..], ars, acs, &data[100..], ldb, &mut cs, ldc, Acc::ScaleAdd(&scales));
                let mut csp = before.clone();
                portable(m, n, k, &data[3..], ars, acs, &data[100..], ldb, &mut csp, ldc, Acc::ScaleAdd(&scales));
                for i in 0..m {
                    for j in 0..n {
                        let (x, y) = (c[i * ldc + j] as f64, before[i * ldc + j] as f64);
                        let tol = 1e-5 * (1.0 + k as f64);
                        assert!((x - 2.0 * y).abs() < tol, "acc ({m},{n},{k}) [{i},{j}]");
                        let want = y * scales[i] as f64 + y;
                        assert!((cs[i * ldc + j] as f64 - want).abs() < tol, "scale ({m},{n},{k}) [{i},{j}]");
                        assert!((csp[i * ldc + j] as f64 - want).abs() < tol, "portable scale ({m},{n},{k}) [{i},{j}]");
                    }
                }
            }
        }
    }
}
