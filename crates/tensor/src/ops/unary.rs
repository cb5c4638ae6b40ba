//! Element-wise unary ops on floats (f16/bf16 computed in f32).

use crate::autograd::GradFn;
use crate::cpu::strided::map1;
use crate::storage::{CpuStorage, Storage};
use crate::{Error, Layout, Result, Tensor};

/// A unary float kernel, in f32 and f64.
pub(crate) trait UnaryKernel {
    const NAME: &'static str;
    fn f32(x: f32) -> f32;
    fn f64(x: f64) -> f64;
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
        _ => {
            return Err(Error::UnsupportedDType {
                op,
                dtype: s.dtype(),
                hint: "this op needs a float dtype; convert with to_dtype",
            });
        }
    })
}

/// Applies kernel `K` to a tensor, recording `grad_fn`.
pub(crate) fn unary_op<K: UnaryKernel>(t: &Tensor, grad_fn: impl FnOnce() -> Box<dyn GradFn>) -> Result<Tensor> {
    unary_op_with(t, K::NAME, K::f32, K::f64, grad_fn)
}

/// Applies closures to a tensor, recording `grad_fn` (for ops with parameters).
pub(crate) fn unary_op_with(
    t: &Tensor,
    op: &'static str,
    f32: impl Fn(f32) -> f32 + Sync,
    f64: impl Fn(f64) -> f64 + Sync,
    grad_fn: impl FnOnce() -> Box<dyn GradFn>,
) -> Result<Tensor> {
    let out = t.with_cpu(op, |s, l| unary_cpu_with(op, s, l, f32, f64))?;
    Ok(Tensor::from_op(Storage::Cpu(out), t.shape().clone(), &[t], grad_fn))
}

macro_rules! kernel {
    ($name:ident, $s:literal, |$x:ident| $body:expr) => {
        pub(crate) struct $name;
        impl UnaryKernel for $name {
            const NAME: &'static str = $s;
            fn f32($x: f32) -> f32 {
                $body
            }
            fn f64($x: f64) -> f64 {
                $body
            }
        }
    };
}

kernel!(Exp, "exp", |x| x.exp());
kernel!(Log, "log", |x| x.ln());

struct NegBack;
impl GradFn for NegBack {
    fn name(&self) -> &str {
        "neg"
    }
    fn backward(&self, _i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.neg()?)])
    }
}
struct ExpBack;
impl GradFn for ExpBack {
    fn name(&self) -> &str {
        "exp"
    }
    fn backward(&self, _i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(out)?)])
    }
}
struct LogBack;
impl GradFn for LogBack {
    fn name(&self) -> &str {
        "log"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.div(&i[0])?)])
    }
}

impl Tensor {
    /// `-self` (also for signed integers).
    pub fn neg(&self) -> Result<Tensor> {
        if self.dtype().is_int() {
            return self.zeros_like()?.sub(self);
        }
        unary_op_with(self, "neg", |x| -x, |x| -x, || Box::new(NegBack))
    }
    /// `e^self`.
    pub fn exp(&self) -> Result<Tensor> {
        unary_op::<Exp>(self, || Box::new(ExpBack))
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary_op::<Log>(self, || Box::new(LogBack))
    }
}
