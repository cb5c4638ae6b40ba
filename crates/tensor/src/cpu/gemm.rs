//! A safe wrapper over the `gemm` crate: one matrix product `dst = lhs @ rhs` with each operand
//! given as a slice, an offset and a (row, column) stride pair, so transposed and narrowed
//! views are multiplied in place, and a contiguous row-major destination.
//!
//! f32, f64 and f16 go straight to `gemm` (its f16 kernels widen to f32 inside the
//! micro-kernel). `gemm` has no bf16 kernels: [`gemm_bf16`] runs the CPU's bf16 dot-product
//! instruction where it has one (`crate::cpu::bf16dot`), else converts both operands to
//! contiguous f32 and multiplies in f32; either way it accumulates in f32 and rounds the result
//! to bf16 once (round to nearest even).
//!
//! Every index an operand can touch is checked against its slice before the unsafe call, so
//! no argument can make `gemm` read or write out of bounds.

use std::mem::MaybeUninit;

use crate::cpu::bf16dot::Out;
use crate::{Error, Result};
use gemm::Parallelism;
use half::{bf16, f16};

/// Multiply-adds (`m * n * k`) from which one product is split across rayon threads.
///
/// Measured roughly (f32, AVX-512 kernels, medians of 7, noisy shared host) on the 2-core
/// development machines: two threads lose up to ~1.5x on square products up to ~112^3
/// (waking the pool and the per-thread packing cost more than the product), break even
/// around 128^3 and win from ~192^3 on (1.35-1.5x at 256^3-512^3). 2^21 (= 128^3) is the
/// crossover. Above it `gemm` still decides per block (its own limit is 48*48*256).
pub const GEMM_PAR_THRESHOLD: usize = 1 << 21;

/// One operand: the matrix element `(i, j)` is `data[offset + i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    /// The buffer holding the matrix.
    pub data: &'a [T],
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Distance between consecutive rows, in elements (0 repeats one row).
    pub row_stride: usize,
    /// Distance between consecutive columns, in elements (0 repeats one column).
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// An operand at `offset` with the given strides.
    pub fn new(data: &'a [T], offset: usize, row_stride: usize, col_stride: usize) -> Self {
        MatRef { data, offset, row_stride, col_stride }
    }

    /// A row-major matrix with `cols` columns starting at index 0.
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        MatRef { data, offset: 0, row_stride: cols, col_stride: 1 }
    }

    /// Checks that every element of a `rows x cols` matrix lies inside `data` and returns the
    /// strides as `isize` (size-1 dims get a harmless compact stride, since theirs is unused).
    fn checked(&self, what: &str, rows: usize, cols: usize) -> Result<(isize, isize)> {
        let last = (rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (cols - 1).checked_mul(self.col_stride).and_then(|c| r.checked_add(c)))
            .and_then(|rc| rc.checked_add(self.offset));
        match last {
            Some(last) if last < self.data.len() => {}
            _ => {
                return Err(Error::invalid(
                    "gemm",
                    format!(
                        "{what} of {rows}x{cols} at offset {} with strides ({}, {}) reaches past its buffer of {} elements",
                        self.offset,
                        self.row_stride,
                        self.col_stride,
                        self.data.len()
                    ),
                ));
            }
        }
        // The last index fits in the slice, whose length is at most isize::MAX, so every
        // stride of a dim longer than 1 fits in isize too.
        let rs = if rows > 1 {
            self.row_stride
        } else if self.col_stride == 1 {
            cols
        } else {
            1
        };
        let cs = if cols > 1 {
            self.col_stride
        } else if rs == 1 && rows > 1 {
            rows
        } else {
            1
        };
        Ok((rs as isize, cs as isize))
    }
}

/// How a product may use threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Split across the rayon pool from [`GEMM_PAR_THRESHOLD`] multiply-adds on.
    Auto,
    /// Stay on the calling thread (the caller parallelises over a batch instead).
    Single,
}

impl Threads {
    /// Whether an `m x k @ k x n` product is split across the rayon pool.
    fn splits(self, m: usize, n: usize, k: usize) -> bool {
        let work = m.saturating_mul(n).saturating_mul(k);
        self == Threads::Auto && work >= GEMM_PAR_THRESHOLD && rayon::current_num_threads() > 1
    }

    fn parallelism(self, m: usize, n: usize, k: usize) -> Parallelism {
        if self.splits(m, n, k) { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::f16 {}
}

/// Element types `gemm` multiplies natively: f32, f64 and f16.
pub trait GemmElem: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
}
impl GemmElem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmElem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmElem for f16 {
    const ZERO: Self = f16::ZERO;
    const ONE: Self = f16::ONE;
}

/// A product's destination: `m * n` row-major elements, which may be uninitialised (a fresh
/// output). The `*_into` products write every element and read none.
pub type Dst<'a, T> = &'a mut [MaybeUninit<T>];

/// A fresh vector of `len` elements, unzeroed, filled by `write`: one of the `*_into` products,
/// or several over chunks that cover it.
///
/// # Safety
/// When `write` returns `Ok`, it must have written every element of the slice it was given.
pub(crate) unsafe fn product_vec<T>(len: usize, write: impl FnOnce(Dst<'_, T>) -> Result<()>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(len);
    write(&mut out.spare_capacity_mut()[..len])?;
    // SAFETY: the caller promises `write` initialised all `len` elements.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// An initialised slice as a [`Dst`], for the public products over `&mut [T]`.
fn dst_of<T>(s: &mut [T]) -> Dst<'_, T> {
    // SAFETY: same layout; the `*_into` products only write initialised values through it.
    unsafe { &mut *(s as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// Checks the destination length and handles empty products. Returns false when nothing is
/// left to compute (an empty output, or `k == 0` whose output is all zeros, already written).
fn prepare_dst<T: Copy>(m: usize, n: usize, k: usize, dst: &mut [MaybeUninit<T>], zero: T) -> Result<bool> {
    if m.checked_mul(n) != Some(dst.len()) {
        return Err(Error::invalid(
            "gemm",
            format!("destination has {} elements but the {m}x{n} product needs {}", dst.len(), m.saturating_mul(n)),
        ));
    }
    if dst.is_empty() {
        return Ok(false);
    }
    if k == 0 {
        dst.fill(MaybeUninit::new(zero));
        return Ok(false);
    }
    Ok(true)
}

/// `dst = lhs @ rhs` for an `m x k` lhs and a `k x n` rhs; `dst` is the row-major `m x n`
/// result (`m * n` elements, overwritten). Errors, without touching memory, when an operand
/// reaches past its slice or `dst` has the wrong length.
pub fn gemm<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    dst: &mut [T],
    threads: Threads,
) -> Result<()> {
    gemm_into(m, n, k, lhs, rhs, dst_of(dst), threads)
}

/// [`gemm()`] into a possibly uninitialised destination (a fresh output needs no zeroing).
pub fn gemm_into<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    dst: Dst<'_, T>,
    threads: Threads,
) -> Result<()> {
    if !prepare_dst(m, n, k, dst, T::ZERO)? {
        return Ok(());
    }
    let (lrs, lcs) = lhs.checked("lhs", m, k)?;
    let (rrs, rcs) = rhs.checked("rhs", k, n)?;
    let (drs, dcs) = if n > 1 { (n as isize, 1) } else { (1, 1) };
    // SAFETY: m, n, k >= 1. Every lhs index offset + i*lrs + p*lcs (i < m, p < k) and rhs
    // index offset + p*rrs + j*rcs (p < k, j < n) is at most the maximum checked above to be
    // inside its slice (strides of size-1 dims are never multiplied by a non-zero index), and
    // dst is a distinct, exclusively borrowed slice of exactly m*n elements addressed
    // row-major. `read_dst` is false, so dst's prior (possibly uninitialised) contents are
    // never read; alpha is then unused and beta = 1 makes dst = lhs @ rhs, every element
    // written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr() as *mut T,
            dcs,
            drs,
            false,
            lhs.data.as_ptr().add(lhs.offset),
            lcs,
            lrs,
            rhs.data.as_ptr().add(rhs.offset),
            rcs,
            rrs,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            threads.parallelism(m, n, k),
        );
    }
    Ok(())
}

/// Copies a strided `rows x cols` matrix into a contiguous row-major f32 buffer through `f`.
fn to_f32_copy<T: Copy + Sync>(mat: &MatRef<'_, T>, rows: usize, cols: usize, f: impl Fn(T) -> f32 + Sync) -> Vec<f32> {
    crate::cpu::strided::map1(mat.data, &[rows, cols], &[mat.row_stride, mat.col_stride], mat.offset, f)
}

/// `dst = lhs @ rhs` in bf16 with f32 accumulation, the result rounded to bf16 once (round to
/// nearest even). On a CPU with AVX512_BF16 the products run on its bf16 dot-product
/// instruction ([`crate::cpu::bf16dot`]); elsewhere both operands are widened to f32 for the
/// f32 kernel ([`gemm_bf16_widened`]). Same contract as [`gemm()`].
pub fn gemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, bf16>,
    rhs: MatRef<'_, bf16>,
    dst: &mut [bf16],
    threads: Threads,
) -> Result<()> {
    gemm_bf16_into(m, n, k, lhs, rhs, dst_of(dst), threads)
}

/// [`gemm_bf16`] into a possibly uninitialised destination.
pub fn gemm_bf16_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, bf16>,
    rhs: MatRef<'_, bf16>,
    dst: Dst<'_, bf16>,
    threads: Threads,
) -> Result<()> {
    if !crate::cpu::bf16dot::available() {
        return widened_into(m, n, k, lhs, rhs, dst, threads);
    }
    if !prepare_checked(m, n, k, &lhs, &rhs, dst, bf16::ZERO)? {
        return Ok(());
    }
    // SAFETY: a stored bf16dot product writes all of its destination.
    let out = unsafe {
        product_vec(m * n, |c| {
            crate::cpu::bf16dot::gemm(m, n, k, &lhs, &rhs, Out::Store(c), threads.splits(m, n, k));
            Ok(())
        })
    }?;
    round_to_bf16(&out, dst);
    Ok(())
}

/// `dst = round(lhs) @ round(rhs)` for f32 operands rounded to bf16 (nearest even), with f32
/// accumulation and an f32 result: autocast's matrix multiply (`Tensor::matmul_in`).
/// On a CPU with AVX512_BF16 the operands are rounded while they are packed for the bf16
/// dot-product kernel, so no rounded copy is made; elsewhere rounded f32 copies go to the f32
/// kernel. `dst` may be uninitialised; every element is written.
pub fn gemm_f32_bf16_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
    dst: Dst<'_, f32>,
    threads: Threads,
) -> Result<()> {
    if !prepare_checked(m, n, k, &lhs, &rhs, dst, 0.0)? {
        return Ok(());
    }
    if crate::cpu::bf16dot::available() {
        crate::cpu::bf16dot::gemm(m, n, k, &lhs, &rhs, Out::Store(dst), threads.splits(m, n, k));
        return Ok(());
    }
    let round = |x: f32| bf16::from_f32(x).to_f32();
    let (a, b) = (to_f32_copy(&lhs, m, k, round), to_f32_copy(&rhs, k, n, round));
    gemm_into(m, n, k, MatRef::row_major(&a, k), MatRef::row_major(&b, n), dst, threads)
}

/// [`prepare_dst`], then both operands checked (before anything indexes them directly): the
/// start of the products that do not hand their operands to the `gemm` crate.
fn prepare_checked<T, D: Copy>(
    m: usize,
    n: usize,
    k: usize,
    lhs: &MatRef<'_, T>,
    rhs: &MatRef<'_, T>,
    dst: &mut [MaybeUninit<D>],
    zero: D,
) -> Result<bool> {
    if !prepare_dst(m, n, k, dst, zero)? {
        return Ok(false);
    }
    lhs.checked("lhs", m, k)?;
    rhs.checked("rhs", k, n)?;
    Ok(true)
}

/// The f32 product rounded once to bf16 (round to nearest even).
fn round_to_bf16(out: &[f32], dst: Dst<'_, bf16>) {
    for (d, &x) in dst.iter_mut().zip(out) {
        d.write(bf16::from_f32(x));
    }
}

/// [`gemm_bf16`] by widening both operands to contiguous f32 and multiplying with the f32
/// kernel: the path of CPUs without AVX512_BF16, and the reference its kernel is checked and
/// benchmarked against.
pub fn gemm_bf16_widened(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, bf16>,
    rhs: MatRef<'_, bf16>,
    dst: &mut [bf16],
    threads: Threads,
) -> Result<()> {
    widened_into(m, n, k, lhs, rhs, dst_of(dst), threads)
}

/// [`gemm_bf16_widened`] into a possibly uninitialised destination.
fn widened_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, bf16>,
    rhs: MatRef<'_, bf16>,
    dst: Dst<'_, bf16>,
    threads: Threads,
) -> Result<()> {
    if !prepare_checked(m, n, k, &lhs, &rhs, dst, bf16::ZERO)? {
        return Ok(());
    }
    let a = to_f32_copy(&lhs, m, k, bf16::to_f32);
    let b = to_f32_copy(&rhs, k, n, bf16::to_f32);
    // SAFETY: gemm_into writes all of its destination when it returns Ok.
    let out = unsafe {
        product_vec(m * n, |c| gemm_into(m, n, k, MatRef::row_major(&a, k), MatRef::row_major(&b, n), c, threads))
    }?;
    round_to_bf16(&out, dst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &MatRef<'_, f64>, b: &MatRef<'_, f64>) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[a.offset + i * a.row_stride + p * a.col_stride]
                            * b.data[b.offset + p * b.row_stride + j * b.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_operands_match_a_naive_product() {
        let data: Vec<f64> = (0..200).map(|i| ((i * 37) % 23) as f64 - 11.0).collect();
        let (m, n, k) = (5, 4, 3);
        // lhs column-major at offset 7, rhs with a padded row stride and a broadcast (0) row.
        let cases = [
            (MatRef::new(&data, 7, 1, m), MatRef::new(&data, 3, 6, 1)),
            (MatRef::new(&data, 0, k, 1), MatRef::new(&data, 11, 0, 1)),
            (MatRef::new(&data, 2, 9, 1), MatRef::new(&data, 0, 1, k)),
        ];
        for (a, b) in cases {
            let mut got = vec![f64::NAN; m * n];
            gemm(m, n, k, a, b, &mut got, Threads::Auto).unwrap();
            assert_eq!(got, naive(m, n, k, &a, &b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn out_of_bounds_operands_are_errors_not_ub() {
        let data = vec![1f32; 12];
        let mut dst = vec![0f32; 4];
        let ok = MatRef::row_major(&data, 3);
        let e = gemm(2, 2, 3, MatRef::new(&data, 7, 3, 1), ok, &mut dst, Threads::Auto).unwrap_err().to_string();
        assert!(e.contains("lhs") && e.contains("past its buffer"), "{e}");
        let e = gemm(2, 2, 3, ok, MatRef::new(&data, 0, usize::MAX, 1), &mut dst, Threads::Auto).unwrap_err();
        assert!(e.to_string().contains("rhs"), "{e}");
        let e = gemm(2, 3, 3, ok, ok, &mut dst, Threads::Single).unwrap_err().to_string();
        assert!(e.contains("destination has 4"), "{e}");
        // k = 0 writes zeros and needs no operand element.
        let mut dst = vec![f16::ONE; 4];
        gemm::<f16>(2, 2, 0, MatRef::new(&[], 0, 0, 0), MatRef::new(&[], 0, 0, 0), &mut dst, Threads::Auto).unwrap();
        assert!(dst.iter().all(|x| *x == f16::ZERO));
    }

    #[test]
    fn bf16_multiplies_in_f32() {
        let a: Vec<bf16> = (0..6).map(|i| bf16::from_f32(i as f32 * 0.5)).collect();
        let mut dst = vec![bf16::ZERO; 4];
        // a as 2x3 times its transpose (3x2): a column-major view of the same buffer.
        gemm_bf16(2, 2, 3, MatRef::row_major(&a, 3), MatRef::new(&a, 0, 1, 3), &mut dst, Threads::Auto).unwrap();
        let f: Vec<f32> = dst.iter().map(|x| x.to_f32()).collect();
        assert_eq!(f, vec![1.25, 3.5, 3.5, 12.5]);
    }
}
