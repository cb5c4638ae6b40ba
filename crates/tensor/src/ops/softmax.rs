//! Softmax and log-softmax along one dim: fused and numerically stable.
//!
//! Along the last dim of a contiguous tensor (the attention case) each row is processed while
//! it sits in cache: a max pass, one pass computing `e^(x - max)` (stored, for softmax) and
//! its sum, then a scale pass (`* 1/sum`, or `- ln sum` for log-softmax). Rows go parallel
//! with rayon above [`PAR_THRESHOLD`] elements. f32 uses the vectorisable [`exp_f32`] and the
//! loops are compiled for AVX-512 and AVX2 too, picked at run time; f64 uses `f64::exp`;
//! f16/bf16 rows are widened to f32 scratch and rounded once at the end.
//!
//! Along another dim `[outer, d, inner]` (inner > 1) the same steps run over whole rows of
//! `inner` contiguous elements: a column max (the reduction engine's column path), rows of
//! `e^(x - max)`, a column sum, and a final row pass, so no pass walks strided memory. A
//! non-contiguous input is copied to contiguous memory first.
//!
//! Special rows: a row of only -inf (fully masked) gives softmax 0 everywhere and log-softmax
//! -inf everywhere, never NaN (PyTorch gives NaN); masked (-inf) entries of other rows give
//! exactly 0 (softmax) / -inf (log-softmax). A row holding NaN or +inf gives NaN, as in
//! PyTorch. Sums of exponentials add 128 terms in f32 (16 per lane) before moving to f64.
//!
//! On a GPU device (and the emulator) one kernel (kernels/tensor/softmax.cu) does the same per
//! row, with the same special rows; the backward is composed of tensor ops on every device.

use crate::autograd::GradFn;
use crate::cpu::math::exp_f32;
use crate::cpu::reduce::{Fold, reduce};
use crate::cpu::strided::PAR_THRESHOLD;
use crate::storage::{CpuStorage, Storage};
use crate::{Dim, Error, Layout, Result, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// Independent lanes per row pass (16 f32 fill one AVX-512 register).
const LANES: usize = 16;
/// Elements per rayon task (whole rows; at least one row per task).
const TASK_ELEMS: usize = 1 << 13;

/// The element types with a native row kernel.
trait RowElem: Copy + Send + Sync + PartialOrd {
    const NEG_INF: Self;
    const ZERO: Self;
    fn exp(self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn add(self, o: Self) -> Self;
    fn is_nan(self) -> bool;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}
macro_rules! row_elem {
    ($t:ty, $exp:expr) => {
        impl RowElem for $t {
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            const ZERO: Self = 0.0;
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                self - o
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self * o
            }
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self + o
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}
row_elem!(f32, exp_f32);
row_elem!(f64, f64::exp);

/// The row maximum; NaN wins so a NaN row stays NaN.
#[inline(always)]
fn row_max<T: RowElem>(x: &[T]) -> T {
    let pick = |a: T, v: T| if v > a || v.is_nan() { v } else { a };
    let mut lanes = [T::NEG_INF; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            lanes[k] = pick(lanes[k], c[k]);
        }
    }
    chunks.remainder().iter().chain(&lanes).fold(T::NEG_INF, |a, &v| pick(a, v))
}

/// Elements summed in the element type before the partial sum moves to f64: 16 per lane keeps
/// the f32 rounding error of a block below 1e-6 relative, while the f64 adds (which halve the
/// SIMD width) happen once per block.
const SUM_BLOCK: usize = 16 * LANES;

/// Sum of `e^(x - m)` over the row, storing each term in `y` when `STORE` (else `y` is
/// not touched and may be empty).
#[inline(always)]
fn exp_sum<T: RowElem, const STORE: bool>(x: &[T], y: &mut [T], m: T) -> f64 {
    let mut total = 0f64;
    for (b, xb) in x.chunks(SUM_BLOCK).enumerate() {
        let mut acc = [T::ZERO; LANES];
        let mut xs = xb.chunks_exact(LANES);
        if STORE {
            let yb = &mut y[b * SUM_BLOCK..b * SUM_BLOCK + xb.len()];
            for (xc, yc) in (&mut xs).zip(yb.chunks_exact_mut(LANES)) {
                for k in 0..LANES {
                    let e = xc[k].sub(m).exp();
                    yc[k] = e;
                    acc[k] = acc[k].add(e);
                }
            }
            let tail = xb.len() - xs.remainder().len();
            for (&xv, yv) in xs.remainder().iter().zip(&mut yb[tail..]) {
                *yv = xv.sub(m).exp();
                acc[0] = acc[0].add(*yv);
            }
        } else {
            for xc in &mut xs {
                for k in 0..LANES {
                    acc[k] = acc[k].add(xc[k].sub(m).exp());
                }
            }
            for &xv in xs.remainder() {
                acc[0] = acc[0].add(xv.sub(m).exp());
            }
        }
        total += acc.iter().map(|a| a.to_f64()).sum::<f64>();
    }
    total
}

/// Softmax (or log-softmax) of one row `x` into `y` (same length).
#[inline(always)]
fn row<T: RowElem, const LOG: bool>(x: &[T], y: &mut [T]) {
    let m = row_max(x);
    if m == T::NEG_INF {
        // Fully masked (or empty) row: no mass anywhere.
        y.fill(if LOG { T::NEG_INF } else { T::ZERO });
        return;
    }
    let s = if LOG { exp_sum::<T, false>(x, &mut [], m) } else { exp_sum::<T, true>(x, y, m) };
    if LOG {
        // (x - m) - ln s keeps precision for large logits (x - m is exact near the max).
        let ls = T::from_f64(s.ln());
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = xv.sub(m).sub(ls);
        }
    } else {
        let inv = T::from_f64(1.0 / s);
        for yv in y.iter_mut() {
            *yv = yv.mul(inv);
        }
    }
}

/// A loop nest compiled once per instruction set by [`run_best`].
trait Kernel {
    fn run(self);
}

// The crate is built for baseline x86-64 (SSE2), where the exp loop runs 4 lanes wide; AVX2
// and AVX-512 run it 8 and 16 wide (measured: 3-7x the SSE2 throughput on these machines).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
fn run_avx512<K: Kernel>(k: K) {
    k.run()
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<K: Kernel>(k: K) {
    k.run()
}

/// Runs `k` compiled for the widest instruction set the CPU supports.
fn run_best<K: Kernel>(k: K) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports every feature the function was compiled for.
            return unsafe { run_avx512(k) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { run_avx2(k) };
        }
    }
    k.run()
}

/// Softmax of whole rows of length `d` (`x` and `y` hold the same number of rows).
struct Rows<'a, T, const LOG: bool> {
    x: &'a [T],
    y: &'a mut [T],
    d: usize,
}
impl<T: RowElem, const LOG: bool> Kernel for Rows<'_, T, LOG> {
    #[inline(always)]
    fn run(self) {
        for (x, y) in self.x.chunks_exact(self.d).zip(self.y.chunks_exact_mut(self.d)) {
            row::<T, LOG>(x, y);
        }
    }
}

/// logsumexp of whole rows of length `d`, one output per row.
struct RowsLse<'a, T> {
    x: &'a [T],
    out: &'a mut [f64],
    d: usize,
}
impl<T: RowElem> Kernel for RowsLse<'_, T> {
    #[inline(always)]
    fn run(self) {
        for (x, o) in self.x.chunks_exact(self.d).zip(self.out.iter_mut()) {
            let m = row_max(x);
            // -inf rows give -inf, rows holding +inf give +inf (and NaN stays NaN).
            *o = if m == T::NEG_INF || m.to_f64() == f64::INFINITY {
                m.to_f64()
            } else {
                m.to_f64() + exp_sum::<T, false>(x, &mut [], m).ln()
            };
        }
    }
}

/// logsumexp over each contiguous row of length `d` (`d > 0`) of `x`: the fast path of
/// [`Tensor::logsumexp`] over trailing dims. f32 sums use [`exp_f32`] (a few ulp), f16/bf16
/// are widened to f32, f64 uses `f64::exp`.
pub(crate) fn logsumexp_rows<T: crate::WithDType>(x: &[T], d: usize) -> Vec<f64> {
    let mut out = vec![0f64; x.len() / d.max(1)];
    if d == 0 {
        return out;
    }
    let rows = (TASK_ELEMS / d).max(1);
    let work = |x: &[T], out: &mut [f64]| {
        // Same-type casts (checked by dtype), so f32 and f64 run natively.
        if T::DTYPE == crate::DType::F32 {
            run_best(RowsLse { x: bytemuck::cast_slice::<T, f32>(x), out, d })
        } else if T::DTYPE == crate::DType::F64 {
            run_best(RowsLse { x: bytemuck::cast_slice::<T, f64>(x), out, d })
        } else {
            let xf: Vec<f32> = x.iter().map(|v| v.to_f64() as f32).collect();
            run_best(RowsLse { x: &xf, out, d })
        }
    };
    if x.len() < PAR_THRESHOLD {
        work(x, &mut out);
    } else {
        out.par_chunks_mut(rows).zip(x.par_chunks(rows * d)).for_each(|(o, x)| work(x, o));
    }
    out
}

/// Column layout, rows `first..` of `[outer, d, inner]`: `e = e^(x - m)` for each row, with
/// `m` the column maxima (`[outer, inner]`); 0 where a column is fully masked.
struct ColExp<'a, T> {
    x: &'a [T],
    e: &'a mut [T],
    m: &'a [T],
    first: usize,
    d: usize,
    inner: usize,
}
impl<T: RowElem> Kernel for ColExp<'_, T> {
    #[inline(always)]
    fn run(self) {
        let w = self.inner;
        for (r, (x, e)) in self.x.chunks_exact(w).zip(self.e.chunks_exact_mut(w)).enumerate() {
            let o = (self.first + r) / self.d;
            for ((ev, &xv), &mv) in e.iter_mut().zip(x).zip(&self.m[o * w..o * w + w]) {
                let v = xv.sub(mv).exp();
                *ev = if mv == T::NEG_INF { T::ZERO } else { v };
            }
        }
    }
}

/// Column layout, final pass: softmax `y = e * k` with `k = 1/sum` (in place over `e`), or
/// log-softmax `y = (x - m) - k` with `k = ln(sum)`; masked columns give 0 / -inf.
struct ColOut<'a, T, const LOG: bool> {
    x: &'a [T],
    y: &'a mut [T],
    m: &'a [T],
    k: &'a [T],
    first: usize,
    d: usize,
    inner: usize,
}
impl<T: RowElem, const LOG: bool> Kernel for ColOut<'_, T, LOG> {
    #[inline(always)]
    fn run(self) {
        let w = self.inner;
        for (r, (x, y)) in self.x.chunks_exact(w).zip(self.y.chunks_exact_mut(w)).enumerate() {
            let o = (self.first + r) / self.d;
            let (m, k) = (&self.m[o * w..o * w + w], &self.k[o * w..o * w + w]);
            for (((yv, &xv), &mv), &kv) in y.iter_mut().zip(x).zip(m).zip(k) {
                let v = if LOG { xv.sub(mv).sub(kv) } else { yv.mul(kv) };
                let masked = if LOG { T::NEG_INF } else { T::ZERO };
                *yv = if mv == T::NEG_INF { masked } else { v };
            }
        }
    }
}

/// Runs `f(first_row, rows_in, rows_out)` over blocks of whole rows of length `w`, in
/// parallel for large inputs.
fn for_row_blocks<T: Sync, U: Send>(x: &[T], y: &mut [U], w: usize, f: impl Fn(usize, &[T], &mut [U]) + Sync) {
    if w == 0 || x.is_empty() {
        return;
    }
    if x.len() < PAR_THRESHOLD {
        f(0, x, y);
    } else {
        let rows = (TASK_ELEMS / w).max(1);
        y.par_chunks_mut(rows * w).zip(x.par_chunks(rows * w)).enumerate().for_each(|(i, (o, s))| f(i * rows, s, o));
    }
}

/// Softmax along the last dim (length `d`) of contiguous `x`.
fn rows_native<T: RowElem + Default, const LOG: bool>(x: &[T], d: usize) -> Vec<T> {
    let mut out = vec![T::default(); x.len()];
    for_row_blocks(x, &mut out, d, |_, x, y| run_best(Rows::<T, LOG> { x, y, d }));
    out
}

/// Softmax along the middle dim of contiguous `x` viewed as `[outer, d, inner]`.
fn cols_native<T: RowElem + Default, const LOG: bool>(x: &[T], outer: usize, d: usize, inner: usize) -> Vec<T> {
    let layout = Layout::contiguous([outer, d, inner]);
    let pick = |a: T, v: T| if v > a || v.is_nan() { v } else { a };
    let max = Fold { init: || T::NEG_INF, step: |a, v: T, _| pick(a, v), merge: pick, finish: |a| a };
    let m = reduce(x, &layout, &[1], &max);
    let mut e = vec![T::default(); x.len()];
    for_row_blocks(x, &mut e, inner, |first, x, e| run_best(ColExp { x, e, m: &m, first, d, inner }));
    let sum = Fold { init: || 0f64, step: |a, v: T, _| a + v.to_f64(), merge: |a, b| a + b, finish: |s: f64| s };
    let k: Vec<T> =
        reduce(&e, &layout, &[1], &sum).into_iter().map(|s| T::from_f64(if LOG { s.ln() } else { 1.0 / s })).collect();
    let mut y = e;
    for_row_blocks(x, &mut y, inner, |first, x, y| run_best(ColOut::<T, LOG> { x, y, m: &m, k: &k, first, d, inner }));
    y
}

/// Softmax of contiguous `x` viewed as `[outer, d, inner]`, natively (f32, f64).
fn native<T: RowElem + Default>(x: &[T], [outer, d, inner]: [usize; 3], log: bool) -> Vec<T> {
    match (inner == 1, log) {
        (true, false) => rows_native::<T, false>(x, d),
        (true, true) => rows_native::<T, true>(x, d),
        (false, false) => cols_native::<T, false>(x, outer, d, inner),
        (false, true) => cols_native::<T, true>(x, outer, d, inner),
    }
}

/// f16/bf16: computed in f32 and rounded once. Rows are widened one at a time (scratch stays
/// in cache); the column layout widens the whole tensor.
fn half<T: crate::FloatElem + Default>(x: &[T], dims: [usize; 3], log: bool) -> Vec<T> {
    let d = dims[1];
    if dims[2] != 1 {
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        return native(&xf, dims, log).into_iter().map(T::from_f32).collect();
    }
    let mut out = vec![T::default(); x.len()];
    for_row_blocks(x, &mut out, d, |_, xs, ys| {
        let (mut xf, mut yf) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        for (a, &b) in xf.iter_mut().zip(xs) {
            *a = b.to_f32();
        }
        if log {
            run_best(Rows::<f32, true> { x: &xf, y: &mut yf, d })
        } else {
            run_best(Rows::<f32, false> { x: &xf, y: &mut yf, d })
        }
        for (a, &b) in ys.iter_mut().zip(&yf) {
            *a = T::from_f32(b);
        }
    });
    out
}

fn softmax_cpu(s: &CpuStorage, l: &Layout, dim: usize, log: bool, op: &'static str) -> Result<CpuStorage> {
    let dims = l.dims();
    let shape = [dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product()];
    let copy;
    let (s, (a, b)) = match l.contiguous_range() {
        Some(range) => (s, range),
        None => {
            copy = s.copy_strided(l);
            (&copy, (0, copy.len()))
        }
    };
    Ok(match s {
        CpuStorage::F32(v) => CpuStorage::F32(native(&v[a..b], shape, log)),
        CpuStorage::F64(v) => CpuStorage::F64(native(&v[a..b], shape, log)),
        CpuStorage::F16(v) => CpuStorage::F16(half::<f16>(&v[a..b], shape, log)),
        CpuStorage::BF16(v) => CpuStorage::BF16(half::<bf16>(&v[a..b], shape, log)),
        other => {
            return Err(Error::UnsupportedDType {
                op,
                dtype: other.dtype(),
                hint: "softmax needs a float dtype; convert with to_dtype",
            });
        }
    })
}

/// dx = y * (g - sum(g * y)).
struct SoftmaxBack(usize);
impl GradFn for SoftmaxBack {
    fn name(&self) -> &str {
        "softmax"
    }
    fn backward(&self, _i: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dot = g.mul(y)?.sum(self.0, true)?;
        Ok(vec![Some(y.mul(&g.sub(&dot)?)?)])
    }
}

/// dx = g - e^y * sum(g).
struct LogSoftmaxBack(usize);
impl GradFn for LogSoftmaxBack {
    fn name(&self) -> &str {
        "log_softmax"
    }
    fn backward(&self, _i: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let total = g.sum(self.0, true)?;
        Ok(vec![Some(g.sub(&y.exp()?.mul(&total)?)?)])
    }
}

impl Tensor {
    fn softmax_op(&self, op: &'static str, dim: impl Dim, log: bool) -> Result<Tensor> {
        let d = dim.to_index(self.shape(), op)?;
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(softmax_cpu(s, self.layout(), d, log, op)?),
            Storage::Gpu(g) => Storage::Gpu(crate::gpu::softmax(op, g, self.layout(), d, log)?),
        };
        Ok(Tensor::from_op(out, self.shape().clone(), &[self], || {
            if log { Box::new(LogSoftmaxBack(d)) } else { Box::new(SoftmaxBack(d)) }
        }))
    }

    /// `e^x / sum(e^x)` along `dim` (negative counts from the end), stable for any logits.
    /// A row of only -inf gives zeros (not NaN). Floats only.
    pub fn softmax(&self, dim: impl Dim) -> Result<Tensor> {
        self.softmax_op("softmax", dim, false)
    }

    /// `x - logsumexp(x)` along `dim`, fused and stable. A row of only -inf gives -inf (its
    /// gradient passes the incoming gradient through unchanged). Floats only.
    pub fn log_softmax(&self, dim: impl Dim) -> Result<Tensor> {
        self.softmax_op("log_softmax", dim, true)
    }
}
