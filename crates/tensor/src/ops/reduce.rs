//! Reductions over any set of dims, with `keepdim`: sum, mean, max, min, argmax, argmin,
//! logsumexp, var and std (and their `*_all` forms).
//!
//! Conventions (PyTorch's unless stated):
//! - floats accumulate in f64 (sum, logsumexp, var, std), f16/bf16 compare in f32;
//! - NaN propagates: max/min of a set holding NaN is NaN, and argmax/argmin return the index
//!   of the first NaN (NaN counts as the extremum for both);
//! - ties: argmax/argmin return the first index; the gradient of max/min is split evenly
//!   between all tied elements (like `torch.amax`);
//! - empty sets: sum is 0, mean and var are NaN, logsumexp is -inf, and max, min, argmax and
//!   argmin return an error naming the op.
//!
//! On a GPU device (and the emulator) every reduction is one kernel of kernels/tensor/reduce.cu
//! with the same conventions (f64 accumulation, NaN and tie rules); only the summation order
//! differs, so float results agree to rounding and extrema and indices agree exactly.

use crate::autograd::GradFn;
use crate::cpu::reduce::{CmpElem, Fold, reduce};
use crate::ops::binary::{BinaryKernel, binary_op, broadcast_pair};
use crate::storage::{CpuStorage, Storage};
use crate::{Dims, Error, Layout, Result, Shape, Tensor, WithDType};

/// The output shape of a reduction over `rdims`.
pub(crate) fn reduced_shape(shape: &Shape, rdims: &[usize], keepdim: bool) -> Shape {
    let mut out = Vec::with_capacity(shape.rank());
    for (i, &d) in shape.dims().iter().enumerate() {
        if rdims.contains(&i) {
            if keepdim {
                out.push(1);
            }
        } else {
            out.push(d);
        }
    }
    out.into()
}

/// Number of elements folded into each output.
fn red_count(shape: &Shape, rdims: &[usize]) -> usize {
    rdims.iter().map(|&d| shape.dims()[d]).product()
}

/// Extremum reductions have no value for an empty set.
fn check_nonempty(op: &'static str, shape: &Shape, rdims: &[usize]) -> Result<()> {
    if red_count(shape, rdims) == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "cannot reduce over dims {rdims:?} of shape {shape:?}: they hold no elements and {op} of an empty \
                 set is undefined; check the shape or reduce with sum"
            ),
        ));
    }
    Ok(())
}

/// The gradient reshaped to the keepdim shape, so it broadcasts against the input.
fn keep(g: &Tensor, input: &Shape, rdims: &[usize], keepdim: bool) -> Result<Tensor> {
    if keepdim { Ok(g.clone()) } else { g.reshape(reduced_shape(input, rdims, true)) }
}

// ----- private element-wise kernels used by the backward passes ----------------------------

/// Backward of the private helpers below: they only run inside backward (no graph).
struct NoBack(&'static str);
impl GradFn for NoBack {
    fn name(&self) -> &str {
        self.0
    }
    fn backward(&self, _i: &[Tensor], _o: &Tensor, _g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Err(Error::NoBackward { op: self.0.to_string() })
    }
}

macro_rules! helper_kernel {
    ($name:ident, $s:literal, |$a:ident, $b:ident| $body:expr) => {
        struct $name;
        impl BinaryKernel for $name {
            const NAME: &'static str = $s;
            const INT: bool = false;
            fn f32($a: f32, $b: f32) -> f32 {
                $body
            }
            fn f64($a: f64, $b: f64) -> f64 {
                $body
            }
        }
    };
}
// 1 where x equals the extremum (NaN matching NaN, so a NaN max routes its gradient), else 0.
helper_kernel!(EqMask, "max_backward", |x, m| if x == m || (x.is_nan() && m.is_nan()) { 1.0 } else { 0.0 });
// exp(x - lse), and 0 for sets whose logsumexp is -inf (all -inf), where x - lse is NaN.
helper_kernel!(ExpSubMasked, "logsumexp_backward", |x, l| if l.is_infinite() && l < 0.0 { 0.0 } else { (x - l).exp() });
// a / b, and 0 where b is 0 (std's gradient at zero spread, as in PyTorch).
helper_kernel!(SafeDiv, "std_backward", |a, b| if b == 0.0 { 0.0 } else { a / b });

fn helper<K: BinaryKernel>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.device().is_cpu() {
        return binary_op::<K>(a, b, || Box::new(NoBack(K::NAME)));
    }
    // The GPU kernels of these helpers live with the reductions (reduce.cu).
    let (shape, al, bl) = broadcast_pair(K::NAME, a, b)?;
    let (sa, sb) = (a.storage(), b.storage());
    let (Storage::Gpu(ga), Storage::Gpu(gb)) = (&*sa, &*sb) else { unreachable!("broadcast_pair checked the devices") };
    let out = crate::gpu::reduce_backward_helper(K::NAME, ga, &al, gb, &bl)?;
    Ok(Tensor::from_storage(Storage::Gpu(out), shape))
}

// ----- CPU paths ------------------------------------------------------------------------------

fn sum_float<T: WithDType>(v: &[T], l: &Layout, rdims: &[usize]) -> Vec<T> {
    reduce(
        v,
        l,
        rdims,
        &Fold { init: || 0f64, step: |a, x: T, _| a + x.to_f64(), merge: |a, b| a + b, finish: T::from_f64 },
    )
}

/// Mean in one pass: the f64 sum is divided before rounding, so f16 means of large sets do
/// not overflow through an f16 sum.
fn mean_float<T: WithDType>(v: &[T], l: &Layout, rdims: &[usize], count: usize) -> Vec<T> {
    let n = count as f64;
    let finish = |a: f64| T::from_f64(a / n);
    reduce(v, l, rdims, &Fold { init: || 0f64, step: |a, x: T, _| a + x.to_f64(), merge: |a, b| a + b, finish })
}

fn sum_int<T: WithDType + num_traits::WrappingAdd>(v: &[T], l: &Layout, rdims: &[usize]) -> Vec<T> {
    let add = |a: T, b: T| a.wrapping_add(&b);
    reduce(v, l, rdims, &Fold { init: T::default, step: |a, x: T, _| add(a, x), merge: add, finish: |a| a })
}

fn sum_cpu(s: &CpuStorage, l: &Layout, rdims: &[usize]) -> CpuStorage {
    match s {
        CpuStorage::F16(v) => CpuStorage::F16(sum_float(v, l, rdims)),
        CpuStorage::BF16(v) => CpuStorage::BF16(sum_float(v, l, rdims)),
        CpuStorage::F32(v) => CpuStorage::F32(sum_float(v, l, rdims)),
        CpuStorage::F64(v) => CpuStorage::F64(sum_float(v, l, rdims)),
        CpuStorage::I64(v) => CpuStorage::I64(sum_int(v, l, rdims)),
        CpuStorage::U32(v) => CpuStorage::U32(sum_int(v, l, rdims)),
        CpuStorage::U8(v) => CpuStorage::U8(sum_int(v, l, rdims)),
    }
}

/// Max (`MAX`) or min of every output; NaN wins.
fn extremum<T: CmpElem, const MAX: bool>(v: &[T], l: &Layout, rdims: &[usize]) -> Vec<T> {
    let pick = |a: T::C, x: T::C| {
        let better = if MAX { x > a } else { x < a };
        if better || T::nan(x) { x } else { a }
    };
    let init = || if MAX { T::LOWEST } else { T::HIGHEST };
    reduce(v, l, rdims, &Fold { init, step: |a, x: T, _| pick(a, x.up()), merge: pick, finish: T::down })
}

/// Index (in the reduced index space) of the first max (`MAX`) or min; NaN wins.
fn arg_extremum<T: CmpElem, const MAX: bool>(v: &[T], l: &Layout, rdims: &[usize]) -> Vec<i64> {
    let better = |x: T::C, a: T::C| (if MAX { x > a } else { x < a }) || (T::nan(x) && !T::nan(a));
    // Every lane and chunk starts at (the worst value, index 0). Such a start only survives the
    // merges when no element beats the worst value, i.e. when every element equals it, and then
    // index 0 is the right answer; so no "empty" flag (and branch) is needed.
    let init = || (if MAX { T::LOWEST } else { T::HIGHEST }, 0usize);
    // Elements reach `step` in increasing index order within a lane, so strictly-better keeps
    // the first index; lanes and chunks are merged by value, then by the smaller index.
    let step = |a: (T::C, usize), x: T, i: usize| {
        let x = x.up();
        if better(x, a.0) { (x, i) } else { a }
    };
    let merge = |a: (T::C, usize), b: (T::C, usize)| {
        if better(a.0, b.0) || (!better(b.0, a.0) && a.1 <= b.1) { a } else { b }
    };
    reduce(v, l, rdims, &Fold { init, step, merge, finish: |a: (T::C, usize)| a.1 as i64 })
}

macro_rules! cmp_dispatch {
    ($s:expr, $f:ident, $max:expr, $l:expr, $rd:expr, $wrap:ident) => {
        match $s {
            CpuStorage::F16(v) => $wrap!(F16, $f::<_, $max>(v, $l, $rd)),
            CpuStorage::BF16(v) => $wrap!(BF16, $f::<_, $max>(v, $l, $rd)),
            CpuStorage::F32(v) => $wrap!(F32, $f::<_, $max>(v, $l, $rd)),
            CpuStorage::F64(v) => $wrap!(F64, $f::<_, $max>(v, $l, $rd)),
            CpuStorage::I64(v) => $wrap!(I64, $f::<_, $max>(v, $l, $rd)),
            CpuStorage::U32(v) => $wrap!(U32, $f::<_, $max>(v, $l, $rd)),
            CpuStorage::U8(v) => $wrap!(U8, $f::<_, $max>(v, $l, $rd)),
        }
    };
}
macro_rules! same_variant {
    ($variant:ident, $e:expr) => {
        CpuStorage::$variant($e)
    };
}
macro_rules! as_i64 {
    ($variant:ident, $e:expr) => {
        CpuStorage::I64($e)
    };
}

/// Online logsumexp accumulator `(m, s)`: the running max and the sum of `e^(x - m)`.
/// Equal values (including two infinities) add 1 directly, so `inf - inf` never appears.
fn lse_float<T: WithDType>(v: &[T], l: &Layout, rdims: &[usize]) -> Vec<T> {
    let rescale = |s: f64, from: f64, to: f64| if from == to { s } else { s * (from - to).exp() };
    reduce(
        v,
        l,
        rdims,
        &Fold {
            init: || (f64::NEG_INFINITY, 0f64),
            step: |(m, s): (f64, f64), x: T, _| {
                let x = x.to_f64();
                if x > m {
                    (x, rescale(s, m, x) + 1.0)
                } else if x == m {
                    (m, s + 1.0)
                } else {
                    (m, s + (x - m).exp())
                }
            },
            merge: |(m1, s1): (f64, f64), (m2, s2): (f64, f64)| {
                let m = m1.max(m2);
                (m, rescale(s1, m1, m) + rescale(s2, m2, m))
            },
            finish: |(m, s): (f64, f64)| T::from_f64(m + s.ln()),
        },
    )
}

/// Welford/Chan accumulator `(count, mean, sum of squared deviations)` in f64: one pass,
/// parallel-mergeable, and free of the cancellation of `E[x^2] - E[x]^2`.
fn moments_float<T: WithDType>(v: &[T], l: &Layout, rdims: &[usize], correction: usize, sqrt: bool) -> Vec<T> {
    let c = correction as f64;
    reduce(
        v,
        l,
        rdims,
        &Fold {
            init: || (0f64, 0f64, 0f64),
            step: |(n, mean, m2): (f64, f64, f64), x: T, _| {
                let x = x.to_f64();
                let n = n + 1.0;
                let d = x - mean;
                let mean = mean + d / n;
                (n, mean, m2 + d * (x - mean))
            },
            merge: |a: (f64, f64, f64), b: (f64, f64, f64)| {
                if a.0 == 0.0 {
                    return b;
                }
                if b.0 == 0.0 {
                    return a;
                }
                let n = a.0 + b.0;
                let d = b.1 - a.1;
                (n, a.1 + d * (b.0 / n), a.2 + b.2 + d * d * (a.0 * b.0 / n))
            },
            finish: |(n, _, m2): (f64, f64, f64)| {
                let var = m2 / (n - c).max(0.0);
                T::from_f64(if sqrt { var.sqrt() } else { var })
            },
        },
    )
}

/// logsumexp: over trailing dims of a contiguous tensor (the cross-entropy case) the fused,
/// vectorised row kernel of softmax; elsewhere the online fold above.
fn lse_cpu<T: WithDType>(v: &[T], l: &Layout, rdims: &[usize]) -> Vec<T> {
    let rank = l.dims().len();
    let trailing = rdims.iter().enumerate().all(|(i, &d)| d == rank - rdims.len() + i);
    let d: usize = rdims.iter().map(|&d| l.dims()[d]).product();
    match l.contiguous_range() {
        Some((a, b)) if trailing && d > 0 => {
            crate::ops::softmax::logsumexp_rows(&v[a..b], d).into_iter().map(T::from_f64).collect()
        }
        _ => lse_float(v, l, rdims),
    }
}

macro_rules! float_dispatch {
    ($op:expr, $s:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F16($v) => CpuStorage::F16($body),
            CpuStorage::BF16($v) => CpuStorage::BF16($body),
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F64($v) => CpuStorage::F64($body),
            other => {
                return Err(Error::UnsupportedDType {
                    op: $op,
                    dtype: other.dtype(),
                    hint: "convert to a float dtype first",
                })
            }
        }
    };
}

// ----- backward passes ------------------------------------------------------------------------

struct SumBack {
    rdims: Vec<usize>,
    keepdim: bool,
}
impl GradFn for SumBack {
    fn name(&self) -> &str {
        "sum"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = keep(g, i[0].shape(), &self.rdims, self.keepdim)?;
        Ok(vec![Some(g.broadcast_as(i[0].shape())?.contiguous()?)])
    }
}

/// d mean / dx = 1 / count.
struct MeanBack {
    rdims: Vec<usize>,
    keepdim: bool,
}
impl GradFn for MeanBack {
    fn name(&self) -> &str {
        "mean"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let count = red_count(i[0].shape(), &self.rdims);
        let g = keep(g, i[0].shape(), &self.rdims, self.keepdim)?.div_scalar(count as f64)?;
        Ok(vec![Some(g.broadcast_as(i[0].shape())?.contiguous()?)])
    }
}

/// Routes the gradient to the elements equal to the extremum, split evenly between ties.
struct ExtremumBack {
    name: &'static str,
    rdims: Vec<usize>,
    keepdim: bool,
}
impl GradFn for ExtremumBack {
    fn name(&self) -> &str {
        self.name
    }
    fn backward(&self, i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &i[0];
        let out = keep(out, x.shape(), &self.rdims, self.keepdim)?;
        let g = keep(g, x.shape(), &self.rdims, self.keepdim)?;
        let mask = helper::<EqMask>(x, &out)?;
        let count = mask.sum(self.rdims.clone(), true)?;
        Ok(vec![Some(mask.mul(&g.div(&count)?)?)])
    }
}

/// d lse / dx = e^(x - lse).
struct LogSumExpBack {
    rdims: Vec<usize>,
    keepdim: bool,
}
impl GradFn for LogSumExpBack {
    fn name(&self) -> &str {
        "logsumexp"
    }
    fn backward(&self, i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &i[0];
        let out = keep(out, x.shape(), &self.rdims, self.keepdim)?;
        let g = keep(g, x.shape(), &self.rdims, self.keepdim)?;
        Ok(vec![Some(helper::<ExpSubMasked>(x, &out)?.mul(&g)?)])
    }
}

/// d var / dx = 2 (x - mean) / (n - correction); d std / dx = (x - mean) / ((n - correction) std).
struct MomentBack {
    rdims: Vec<usize>,
    keepdim: bool,
    correction: usize,
    std: bool,
}
impl GradFn for MomentBack {
    fn name(&self) -> &str {
        if self.std { "std" } else { "var" }
    }
    fn backward(&self, i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &i[0];
        let dof = red_count(x.shape(), &self.rdims) as f64 - self.correction as f64;
        let g = keep(g, x.shape(), &self.rdims, self.keepdim)?;
        let centered = x.sub(&x.mean(self.rdims.clone(), true)?)?;
        let coef = if self.std {
            let out = keep(out, x.shape(), &self.rdims, self.keepdim)?;
            helper::<SafeDiv>(&g, &out.mul_scalar(dof)?)?
        } else {
            g.mul_scalar(2.0 / dof)?
        };
        Ok(vec![Some(centered.mul(&coef)?)])
    }
}

// ----- the Tensor API -------------------------------------------------------------------------

impl Tensor {
    /// Runs a CPU reduction and wraps its result (of the keepdim-aware output shape).
    /// Runs a reduction (the CPU fold `f`, or the GPU kernel `gpu = (name, param)`) and wraps
    /// its result (of the keepdim-aware output shape).
    fn reduce_op(
        &self,
        op: &'static str,
        rdims: &[usize],
        keepdim: bool,
        f: impl FnOnce(&CpuStorage, &Layout) -> Result<CpuStorage>,
        gpu: (&str, f64),
        grad_fn: impl FnOnce() -> Box<dyn GradFn>,
    ) -> Result<Tensor> {
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(f(s, self.layout())?),
            Storage::Gpu(g) => Storage::Gpu(crate::gpu::reduce(op, gpu.0, gpu.1, g, self.layout(), rdims)?),
        };
        let shape = reduced_shape(self.shape(), rdims, keepdim);
        let inputs: &[&Tensor] = if out.dtype().is_float() { &[self] } else { &[] };
        Ok(Tensor::from_op(out, shape, inputs, grad_fn))
    }

    /// Sum over `dims`; `keepdim` keeps them as size 1. Floats accumulate in f64; integers
    /// wrap in their own dtype. An empty set sums to 0.
    pub fn sum(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), "sum")?;
        let rd = rdims.clone();
        self.reduce_op(
            "sum",
            &rd,
            keepdim,
            |s, l| Ok(sum_cpu(s, l, &rd)),
            ("sum", 0.0),
            || Box::new(SumBack { rdims, keepdim }),
        )
    }

    /// Sum of all elements (rank 0).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(crate::AllDims, false)
    }

    /// Mean over `dims` (floats only; NaN for an empty set). Accumulates in f64 and divides
    /// before rounding to the dtype.
    pub fn mean(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), "mean")?;
        let count = red_count(self.shape(), &rdims);
        let rd = rdims.clone();
        self.reduce_op(
            "mean",
            &rd,
            keepdim,
            |s, l| Ok(float_dispatch!("mean", s, |v| mean_float(v, l, &rd, count))),
            ("mean", 0.0),
            || Box::new(MeanBack { rdims, keepdim }),
        )
    }

    /// Mean of all elements (rank 0).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(crate::AllDims, false)
    }

    fn extremum_op<const MAX: bool>(&self, op: &'static str, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), op)?;
        check_nonempty(op, self.shape(), &rdims)?;
        let rd = rdims.clone();
        self.reduce_op(
            op,
            &rd,
            keepdim,
            |s, l| Ok(cmp_dispatch!(s, extremum, MAX, l, &rd, same_variant)),
            (if MAX { "max" } else { "min" }, 0.0),
            || Box::new(ExtremumBack { name: op, rdims, keepdim }),
        )
    }

    /// Maximum over `dims` (values only; see [`argmax`](Self::argmax) for indices). NaN
    /// propagates. The gradient goes to the maximal elements, split evenly between ties.
    /// Errors when the reduced dims hold no element.
    pub fn max(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.extremum_op::<true>("max", dims, keepdim)
    }

    /// Minimum over `dims`; like [`max`](Self::max).
    pub fn min(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.extremum_op::<false>("min", dims, keepdim)
    }

    /// Maximum of all elements (rank 0).
    pub fn max_all(&self) -> Result<Tensor> {
        self.max(crate::AllDims, false)
    }

    /// Minimum of all elements (rank 0).
    pub fn min_all(&self) -> Result<Tensor> {
        self.min(crate::AllDims, false)
    }

    fn arg_op<const MAX: bool>(&self, op: &'static str, dim: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dim.to_indexes(self.shape(), op)?;
        if rdims.len() != 1 {
            return Err(Error::invalid(
                op,
                format!(
                    "reduces over exactly one dim, got dims {rdims:?} of shape {:?}; flatten them into one first, \
                     or use {op}_all for the index into the flattened tensor",
                    self.shape()
                ),
            ));
        }
        check_nonempty(op, self.shape(), &rdims)?;
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cmp_dispatch!(s, arg_extremum, MAX, self.layout(), &rdims, as_i64)),
            Storage::Gpu(g) => {
                let name = if MAX { "argmax" } else { "argmin" };
                Storage::Gpu(crate::gpu::reduce(op, name, 0.0, g, self.layout(), &rdims)?)
            }
        };
        Ok(Tensor::from_storage(out, reduced_shape(self.shape(), &rdims, keepdim)))
    }

    /// Index of the maximum along one dim, as i64 (not differentiable). Ties give the first
    /// index; a NaN counts as the maximum (the first NaN's index is returned). Errors for
    /// several dims or an empty dim.
    pub fn argmax(&self, dim: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.arg_op::<true>("argmax", dim, keepdim)
    }

    /// Index of the minimum along one dim; like [`argmax`](Self::argmax) (NaN also wins).
    pub fn argmin(&self, dim: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.arg_op::<false>("argmin", dim, keepdim)
    }

    /// Index of the maximum in the row-major flattened tensor (rank 0, i64).
    pub fn argmax_all(&self) -> Result<Tensor> {
        self.detach().flatten_all()?.argmax(0usize, false)
    }

    /// Index of the minimum in the row-major flattened tensor (rank 0, i64).
    pub fn argmin_all(&self) -> Result<Tensor> {
        self.detach().flatten_all()?.argmin(0usize, false)
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably (floats; f64 accumulation). A set of
    /// only -inf (or an empty set) gives -inf, and its gradient is 0.
    pub fn logsumexp(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), "logsumexp")?;
        let rd = rdims.clone();
        self.reduce_op(
            "logsumexp",
            &rd,
            keepdim,
            |s, l| Ok(float_dispatch!("logsumexp", s, |v| lse_cpu(v, l, &rd))),
            ("logsumexp", 0.0),
            || Box::new(LogSumExpBack { rdims, keepdim }),
        )
    }

    /// logsumexp of all elements (rank 0).
    pub fn logsumexp_all(&self) -> Result<Tensor> {
        self.logsumexp(crate::AllDims, false)
    }

    fn moment_op(
        &self,
        op: &'static str,
        dims: impl Dims,
        correction: usize,
        keepdim: bool,
        std: bool,
    ) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), op)?;
        let rd = rdims.clone();
        self.reduce_op(
            op,
            &rd,
            keepdim,
            |s, l| Ok(float_dispatch!(op, s, |v| moments_float(v, l, &rd, correction, std))),
            (if std { "std" } else { "var" }, correction as f64),
            || Box::new(MomentBack { rdims, keepdim, correction, std }),
        )
    }

    /// Variance over `dims`: `sum((x - mean)^2) / (n - correction)` (PyTorch's `correction`:
    /// 1 is the unbiased estimator, 0 the population variance). Floats only; one pass in f64
    /// (Welford). When `n <= correction` the divisor is 0, giving NaN (or inf), as in PyTorch.
    pub fn var(&self, dims: impl Dims, correction: usize, keepdim: bool) -> Result<Tensor> {
        self.moment_op("var", dims, correction, keepdim, false)
    }

    /// Standard deviation: the square root of [`var`](Self::var). Where it is 0 its gradient
    /// is 0 (as in PyTorch) rather than NaN.
    pub fn std(&self, dims: impl Dims, correction: usize, keepdim: bool) -> Result<Tensor> {
        self.moment_op("std", dims, correction, keepdim, true)
    }

    /// Variance of all elements (rank 0).
    pub fn var_all(&self, correction: usize) -> Result<Tensor> {
        self.var(crate::AllDims, correction, false)
    }

    /// Standard deviation of all elements (rank 0).
    pub fn std_all(&self, correction: usize) -> Result<Tensor> {
        self.std(crate::AllDims, correction, false)
    }

    /// Sums broadcast dims away so the result has `shape` (the adjoint of `broadcast_as`).
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self.rank().checked_sub(shape.rank()).ok_or_else(|| Error::NotBroadcastable {
            op: "sum_to",
            lhs: self.shape().clone(),
            rhs: shape.clone(),
        })?;
        let mut rdims: Vec<usize> = (0..extra).collect();
        for (i, &d) in shape.dims().iter().enumerate() {
            let src = self.dims()[i + extra];
            if d == 1 && src != 1 {
                rdims.push(i + extra);
            } else if d != src {
                return Err(Error::NotBroadcastable { op: "sum_to", lhs: self.shape().clone(), rhs: shape.clone() });
            }
        }
        self.sum(rdims, true)?.reshape(shape.clone())
    }
}
