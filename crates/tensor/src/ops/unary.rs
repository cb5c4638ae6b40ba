//! Element-wise unary ops. Floats compute in f32 (f16/bf16/f32, one conversion per element) or
//! f64; abs, neg, sign, relu and clamp also take integers. Activations are in `activation`, the
//! error function in [`special`].
//!
//! Backward passes multiply the output gradient by a derivative. Where the derivative is a
//! kernel of the input or output ([`kernel_back`]), the CPU computes both in one pass; the
//! others (and GPUs) compute it with a graph-free tensor op (see [`pointwise`]), then multiply.

mod activation;
pub mod special;

use crate::autograd::GradFn;
use crate::cpu::math::FastExp;
use crate::cpu::strided::map1;
use crate::ops::binary::{BinaryKernel, binary_nograd};
use crate::storage::{CpuStorage, Storage};
use crate::{Error, Layout, Result, Tensor};

/// A unary float kernel, in f32 and f64.
pub(crate) trait UnaryKernel {
    const NAME: &'static str;
    fn f32(x: f32) -> f32;
    fn f64(x: f64) -> f64;
}

/// The error for an integer tensor given to a float-only op.
pub(crate) fn float_only(op: &'static str, dtype: crate::DType) -> Error {
    Error::UnsupportedDType {
        op,
        dtype,
        hint: "this op needs a float dtype (f16, bf16, f32, f64); convert with to_dtype(DType::F32)",
    }
}

/// Runs `f32`/`f64` closures over any float storage.
pub(crate) fn unary_cpu_with(
    op: &'static str,
    s: &CpuStorage,
    l: &Layout,
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
) -> Result<CpuStorage> {
    use half::{bf16, f16};
    let (d, st, o) = (l.dims(), l.strides(), l.offset());
    Ok(match s {
        CpuStorage::F32(v) => CpuStorage::F32(map1(v, d, st, o, f32)),
        CpuStorage::F64(v) => CpuStorage::F64(map1(v, d, st, o, f64)),
        CpuStorage::F16(v) => CpuStorage::F16(map1(v, d, st, o, |x: f16| f16::from_f32(f32(x.to_f32())))),
        CpuStorage::BF16(v) => CpuStorage::BF16(map1(v, d, st, o, |x: bf16| bf16::from_f32(f32(x.to_f32())))),
        _ => return Err(float_only(op, s.dtype())),
    })
}

/// Runs an integer closure (computed in i64) over integer storage. Results outside u8/u32
/// saturate to the dtype's range.
fn unary_int_cpu(s: &CpuStorage, l: &Layout, f: impl Fn(i64) -> i64 + Sync) -> Option<CpuStorage> {
    let (d, st, o) = (l.dims(), l.strides(), l.offset());
    Some(match s {
        CpuStorage::I64(v) => CpuStorage::I64(map1(v, d, st, o, f)),
        CpuStorage::U32(v) => CpuStorage::U32(map1(v, d, st, o, |x| f(x as i64).clamp(0, u32::MAX as i64) as u32)),
        CpuStorage::U8(v) => CpuStorage::U8(map1(v, d, st, o, |x| f(x as i64).clamp(0, u8::MAX as i64) as u8)),
        _ => return None,
    })
}

/// Applies kernel `K` to a tensor, recording `grad_fn`.
pub(crate) fn unary_op<K: UnaryKernel>(t: &Tensor, grad_fn: impl FnOnce() -> Box<dyn GradFn>) -> Result<Tensor> {
    // Always-inlined closures, not the fn items: see `binary_cpu`.
    unary_op_with(
        t,
        K::NAME,
        #[inline(always)]
        |x| K::f32(x),
        #[inline(always)]
        |x| K::f64(x),
        grad_fn,
    )
}

/// Applies closures to a tensor, recording `grad_fn` (for ops with parameters).
pub(crate) fn unary_op_with(
    t: &Tensor,
    op: &'static str,
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
    grad_fn: impl FnOnce() -> Box<dyn GradFn>,
) -> Result<Tensor> {
    unary_op_params(t, op, [0.0; 2], f32, f64, grad_fn)
}

/// Runs a float map on any device: the closures on the CPU, the GPU kernel named `op` with
/// scalar parameters `params` (the closures' captured values) on Cuda and Emu.
fn unary_dispatch(
    t: &Tensor,
    op: &'static str,
    params: [f64; 2],
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
) -> Result<Storage> {
    match &*t.storage() {
        Storage::Cpu(s) => Ok(Storage::Cpu(unary_cpu_with(op, s, t.layout(), f32, f64)?)),
        Storage::Gpu(g) => {
            if !g.dtype().is_float() {
                return Err(float_only(op, g.dtype()));
            }
            Ok(Storage::Gpu(crate::gpu::unary(op, op, params, g, t.layout())?))
        }
    }
}

/// [`unary_op_with`] for ops whose closures capture scalars: `params` carries them to the GPU.
pub(crate) fn unary_op_params(
    t: &Tensor,
    op: &'static str,
    params: [f64; 2],
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
    grad_fn: impl FnOnce() -> Box<dyn GradFn>,
) -> Result<Tensor> {
    let out = unary_dispatch(t, op, params, f32, f64)?;
    Ok(Tensor::from_op(out, t.shape().clone(), &[t], grad_fn))
}

/// Like [`unary_op_with`], also accepting integer dtypes through `int` (integer results carry
/// no graph: gradients are only defined for floats).
fn unary_op_any(
    t: &Tensor,
    op: &'static str,
    params: [f64; 2],
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
    int: impl Fn(i64) -> i64 + Sync,
    grad_fn: impl FnOnce() -> Box<dyn GradFn>,
) -> Result<Tensor> {
    if t.dtype().is_int() {
        let out = match &*t.storage() {
            Storage::Cpu(s) => {
                Storage::Cpu(unary_int_cpu(s, t.layout(), int).ok_or_else(|| float_only(op, s.dtype()))?)
            }
            Storage::Gpu(g) => Storage::Gpu(crate::gpu::unary(op, op, params, g, t.layout())?),
        };
        return Ok(Tensor::from_storage(out, t.shape().clone()));
    }
    unary_op_params(t, op, params, f32, f64, grad_fn)
}

/// A graph-free float map: derivative kernels used by backward passes (which run without
/// recording, so a derivative never needs a derivative of its own).
pub(crate) fn pointwise(
    t: &Tensor,
    op: &'static str,
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
) -> Result<Tensor> {
    pointwise_params(t, op, [0.0; 2], f32, f64)
}

/// [`pointwise`] with scalar parameters for the GPU kernel.
pub(crate) fn pointwise_params(
    t: &Tensor,
    op: &'static str,
    params: [f64; 2],
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
) -> Result<Tensor> {
    let out = unary_dispatch(t, op, params, f32, f64)?;
    Ok(Tensor::from_storage(out, t.shape().clone()))
}

/// Backward `grad_in = grad_out * deriv(input, output)` for a one-input op.
pub(crate) struct DerivBack<F> {
    pub(crate) name: &'static str,
    pub(crate) deriv: F,
}
impl<F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync> GradFn for DerivBack<F> {
    fn name(&self) -> &str {
        self.name
    }
    fn backward(&self, i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&(self.deriv)(&i[0], out)?)?)])
    }
}

/// Boxes a [`DerivBack`].
pub(crate) fn deriv_back(
    name: &'static str,
    deriv: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Box<dyn GradFn> {
    Box::new(DerivBack { name, deriv })
}

macro_rules! kernel {
    ($name:ident, $s:literal, |$x:ident| $body:expr) => {
        pub(crate) struct $name;
        impl UnaryKernel for $name {
            const NAME: &'static str = $s;
            #[inline(always)]
            fn f32($x: f32) -> f32 {
                $body
            }
            #[inline(always)]
            fn f64($x: f64) -> f64 {
                $body
            }
        }
    };
}
pub(crate) use kernel;

kernel!(Exp, "exp", |x| x.fexp());
kernel!(Log, "log", |x| x.ln());
kernel!(Sqrt, "sqrt", |x| x.sqrt());
kernel!(Rsqrt, "rsqrt", |x| 1.0 / x.sqrt());
kernel!(Sin, "sin", |x| x.sin());
kernel!(Cos, "cos", |x| x.cos());
kernel!(Tanh, "tanh", |x| x.tanh());
kernel!(Sqr, "sqr", |x| x * x);
kernel!(Recip, "recip", |x| 1.0 / x);
kernel!(Sign, "sign", |x| sign_of(x));

/// -1, 0 or 1 by sign; ±0 and NaN map to themselves, like PyTorch.
#[inline(always)]
fn sign_of<T: PartialOrd + From<i8>>(x: T) -> T {
    if x > T::from(0) {
        T::from(1)
    } else if x < T::from(0) {
        T::from(-1)
    } else {
        x
    }
}

/// Which tensor of a one-input op its derivative kernel reads.
#[derive(Clone, Copy)]
pub(crate) enum Saved {
    /// The op's input `x`.
    Input,
    /// The op's output `y`.
    Output,
}

/// `g * K(s)`: an op's output gradient times its derivative kernel `K`, as one binary kernel.
struct TimesDeriv<K>(std::marker::PhantomData<K>);
impl<K: UnaryKernel> BinaryKernel for TimesDeriv<K> {
    const NAME: &'static str = K::NAME;
    const INT: bool = false;
    #[inline(always)]
    fn f32(g: f32, s: f32) -> f32 {
        g * K::f32(s)
    }
    #[inline(always)]
    fn f64(g: f64, s: f64) -> f64 {
        g * K::f64(s)
    }
}

/// Backward `grad_in = grad_out * K(saved)` of a one-input op whose derivative is the kernel
/// `K` of its input or output. On the CPU it is one pass over the gradient and the saved
/// tensor, with no derivative tensor in between (for GELU, the MLP's activation, that saves
/// a pass and an allocation per layer); on a GPU the derivative kernel `K::NAME`, then a
/// multiply.
struct KernelBack<K> {
    name: &'static str,
    saved: Saved,
    kernel: std::marker::PhantomData<fn() -> K>,
}
impl<K: UnaryKernel + 'static> GradFn for KernelBack<K> {
    fn name(&self) -> &str {
        self.name
    }
    fn backward(&self, i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let s = match self.saved {
            Saved::Input => &i[0],
            Saved::Output => out,
        };
        // `g` and `s` share the op's device and dtype.
        let grad = if s.device().is_cpu() {
            binary_nograd::<TimesDeriv<K>>(g, s)?
        } else {
            g.mul(&pointwise(s, K::NAME, K::f32, K::f64)?)?
        };
        Ok(vec![Some(grad)])
    }
}

/// Boxes a [`KernelBack`]: the backward of an op whose derivative is kernel `K` of `saved`.
pub(crate) fn kernel_back<K: UnaryKernel + 'static>(name: &'static str, saved: Saved) -> Box<dyn GradFn> {
    Box::new(KernelBack::<K> { name, saved, kernel: std::marker::PhantomData })
}

kernel!(SqrtGrad, "sqrt_backward", |y| 0.5 / y);
kernel!(RsqrtGrad, "rsqrt_backward", |y| -0.5 * y * y * y);
kernel!(CosGrad, "cos_backward", |x| -x.sin());
kernel!(TanhGrad, "tanh_backward", |y| 1.0 - y * y);
kernel!(SqrGrad, "sqr_backward", |x| 2.0 * x);
kernel!(RecipGrad, "recip_backward", |y| -(y * y));

struct NegBack;
impl GradFn for NegBack {
    fn name(&self) -> &str {
        "neg"
    }
    fn backward(&self, _i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.neg()?)])
    }
}

/// `x` limited to `[lo, hi]`; NaN compares false both ways and passes through.
#[inline(always)]
fn clip<T: PartialOrd>(x: T, lo: T, hi: T) -> T {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// Integer clamp bounds as f64 for the GPU kernel, kept inside the range where the kernel's
/// f64 -> i64 conversion is exact and defined (±(2^63 - 1024)).
fn int_bounds(lo: i64, hi: i64) -> [f64; 2] {
    const LIMIT: i64 = i64::MAX - 1023;
    [lo.clamp(-LIMIT, LIMIT) as f64, hi.clamp(-LIMIT, LIMIT) as f64]
}

/// Rejects NaN bounds and `min > max` for clamp.
fn check_clamp_bounds(min: f64, max: f64) -> Result<()> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(Error::invalid(
            "clamp",
            format!(
                "bounds must satisfy min <= max and not be NaN, got min {min} and max {max}; \
                 use f64::NEG_INFINITY or f64::INFINITY for a one-sided clamp"
            ),
        ));
    }
    Ok(())
}

impl Tensor {
    /// `-self` (also for integers; unsigned integers wrap).
    pub fn neg(&self) -> Result<Tensor> {
        if self.dtype().is_int() {
            return self.zeros_like()?.sub(self);
        }
        unary_op_with(self, "neg", |x| -x, |x| -x, || Box::new(NegBack))
    }
    /// `e^self`.
    pub fn exp(&self) -> Result<Tensor> {
        unary_op::<Exp>(self, || deriv_back("exp", |_x, y| Ok(y.clone())))
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary_op::<Log>(self, || deriv_back("log", |x, _y| x.recip()))
    }
    /// Absolute value (also for integers; `i64::MIN` wraps to itself). The gradient at 0 is 0.
    pub fn abs(&self) -> Result<Tensor> {
        unary_op_any(self, "abs", [0.0; 2], f32::abs, f64::abs, i64::wrapping_abs, || {
            kernel_back::<Sign>("abs", Saved::Input)
        })
    }
    /// -1, 0 or 1 by sign (±0 and NaN map to themselves; also for integers). Its gradient is 0.
    pub fn sign(&self) -> Result<Tensor> {
        unary_op_any(self, "sign", [0.0; 2], Sign::f32, Sign::f64, i64::signum, || {
            deriv_back("sign", |x, _y| x.zeros_like())
        })
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        unary_op::<Sqrt>(self, || kernel_back::<SqrtGrad>("sqrt", Saved::Output))
    }
    /// `1 / sqrt(self)`.
    pub fn rsqrt(&self) -> Result<Tensor> {
        unary_op::<Rsqrt>(self, || kernel_back::<RsqrtGrad>("rsqrt", Saved::Output))
    }
    /// Sine (radians).
    pub fn sin(&self) -> Result<Tensor> {
        unary_op::<Sin>(self, || deriv_back("sin", |x, _y| x.cos()))
    }
    /// Cosine (radians).
    pub fn cos(&self) -> Result<Tensor> {
        unary_op::<Cos>(self, || kernel_back::<CosGrad>("cos", Saved::Input))
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        unary_op::<Tanh>(self, || kernel_back::<TanhGrad>("tanh", Saved::Output))
    }
    /// `self * self`.
    pub fn sqr(&self) -> Result<Tensor> {
        unary_op::<Sqr>(self, || kernel_back::<SqrGrad>("sqr", Saved::Input))
    }
    /// `1 / self`.
    pub fn recip(&self) -> Result<Tensor> {
        unary_op::<Recip>(self, || kernel_back::<RecipGrad>("recip", Saved::Output))
    }
    /// The error function (see [`special::erf`] for its accuracy).
    pub fn erf(&self) -> Result<Tensor> {
        unary_op_with(self, "erf", special::erf_f32, special::erf, || {
            deriv_back("erf", |x, _y| {
                use std::f64::consts::FRAC_2_SQRT_PI as C;
                pointwise(x, "erf_backward", |x| C as f32 * (-x * x).exp(), |x| C * (-x * x).exp())
            })
        })
    }
    /// `self^exponent` element-wise (NaN for negative bases with a non-integer exponent). The
    /// gradient `exponent * self^(exponent - 1)` is taken as 0 everywhere when the exponent is
    /// 0, like PyTorch.
    pub fn powf(&self, exponent: f64) -> Result<Tensor> {
        let p = exponent;
        let back = move || {
            deriv_back("powf", move |x, _y| {
                if p == 0.0 {
                    return x.zeros_like();
                }
                let (q, pf) = ((p - 1.0) as f32, p as f32);
                pointwise_params(x, "powf_backward", [p, 0.0], move |x| pf * x.powf(q), move |x| p * x.powf(p - 1.0))
            })
        };
        if p == 2.0 {
            // The common case (variances, squared errors) avoids the libm call.
            return unary_op_params(self, "powf", [2.0, 0.0], |x| x * x, |x| x * x, back);
        }
        let pf = p as f32;
        unary_op_params(self, "powf", [p, 0.0], move |x| x.powf(pf), move |x| x.powf(p), back)
    }
    /// Limits every element to `[min, max]` (NaN stays NaN). Integer tensors clamp to the
    /// integers inside the bounds (`ceil(min)`, `floor(max)`), saturating to the dtype's range.
    /// The gradient passes where `min <= self <= max`, bounds included, like PyTorch; it is 0
    /// strictly outside. Errors when `min > max` or a bound is NaN.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        check_clamp_bounds(min, max)?;
        let (lo32, hi32) = (min as f32, max as f32);
        // Saturating float-to-int casts; an empty integer range (e.g. [0.2, 0.8]) gives floor(max).
        let (lo_i, hi_i) = (min.ceil() as i64, max.floor() as i64);
        unary_op_any(
            self,
            "clamp",
            if self.dtype().is_int() { int_bounds(lo_i, hi_i) } else { [min, max] },
            move |x| clip(x, lo32, hi32),
            move |x| clip(x, min, max),
            move |x| x.max(lo_i).min(hi_i),
            move || {
                deriv_back("clamp", move |x, _y| {
                    let step = |x: f64| if x >= min && x <= max { 1.0 } else { 0.0 };
                    pointwise_params(x, "clamp_backward", [min, max], move |x| step(x as f64) as f32, step)
                })
            },
        )
    }
}
