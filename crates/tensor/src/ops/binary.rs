//! Element-wise binary ops with NumPy broadcasting, and their scalar forms.

use crate::autograd::GradFn;
use crate::cpu::strided::map2;
use crate::storage::{CpuStorage, Storage};
use crate::{Error, Layout, Result, Shape, Tensor};

/// A binary element-wise kernel. Floats compute in f32 (f16/bf16/f32) or f64; integers in i64.
pub(crate) trait BinaryKernel {
    const NAME: &'static str;
    /// Whether integer dtypes are accepted.
    const INT: bool;
    fn f32(a: f32, b: f32) -> f32;
    fn f64(a: f64, b: f64) -> f64;
    fn i64(_a: i64, _b: i64) -> i64 {
        0
    }
}

/// Runs kernel `K` over two layouts already broadcast to one shape.
pub(crate) fn binary_cpu<K: BinaryKernel>(
    a: &CpuStorage,
    al: &Layout,
    b: &CpuStorage,
    bl: &Layout,
) -> Result<CpuStorage> {
    use half::{bf16, f16};
    let d = al.dims();
    let (sa, oa, sb, ob) = (al.strides(), al.offset(), bl.strides(), bl.offset());
    Ok(match (a, b) {
        // Closures, always inlined, rather than the fn items `K::f32`: a large kernel body
        // (an activation's derivative) is otherwise called per element through its `Fn`
        // shim, and the loop does not vectorise.
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(map2(
            x,
            sa,
            oa,
            y,
            sb,
            ob,
            d,
            #[inline(always)]
            |p, q| K::f32(p, q),
        )),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(map2(
            x,
            sa,
            oa,
            y,
            sb,
            ob,
            d,
            #[inline(always)]
            |p, q| K::f64(p, q),
        )),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => CpuStorage::F16(map2(x, sa, oa, y, sb, ob, d, |p: f16, q: f16| {
            f16::from_f32(K::f32(p.to_f32(), q.to_f32()))
        })),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => {
            CpuStorage::BF16(map2(x, sa, oa, y, sb, ob, d, |p: bf16, q: bf16| {
                bf16::from_f32(K::f32(p.to_f32(), q.to_f32()))
            }))
        }
        (CpuStorage::I64(x), CpuStorage::I64(y)) if K::INT => CpuStorage::I64(map2(x, sa, oa, y, sb, ob, d, K::i64)),
        (CpuStorage::U32(x), CpuStorage::U32(y)) if K::INT => {
            CpuStorage::U32(map2(x, sa, oa, y, sb, ob, d, |p, q| K::i64(p as i64, q as i64) as u32))
        }
        (CpuStorage::U8(x), CpuStorage::U8(y)) if K::INT => {
            CpuStorage::U8(map2(x, sa, oa, y, sb, ob, d, |p, q| K::i64(p as i64, q as i64) as u8))
        }
        _ => {
            return Err(Error::UnsupportedDType {
                op: K::NAME,
                dtype: a.dtype(),
                hint: "this op needs a float dtype (f16, bf16, f32, f64); convert with to_dtype(DType::F32)",
            });
        }
    })
}

/// Checks dtype/device of two operands and broadcasts them: the common shape and each
/// operand's layout stretched to it.
pub(crate) fn broadcast_pair(op: &'static str, lhs: &Tensor, rhs: &Tensor) -> Result<(Shape, Layout, Layout)> {
    lhs.same_dtype_device(rhs, op)?;
    let shape = Shape::broadcast(op, lhs.shape(), rhs.shape())?;
    let ll = lhs.layout().broadcast_as(op, &shape)?;
    let rl = rhs.layout().broadcast_as(op, &shape)?;
    Ok((shape, ll, rl))
}

/// Broadcasts both operands, checks dtype/device and runs `K`, returning the result storage
/// and the broadcast shape.
fn binary_map<K: BinaryKernel>(lhs: &Tensor, rhs: &Tensor) -> Result<(Storage, Shape)> {
    let (shape, ll, rl) = broadcast_pair(K::NAME, lhs, rhs)?;
    let (a, b) = (lhs.storage(), rhs.storage());
    let out = match (&*a, &*b) {
        (Storage::Cpu(a), Storage::Cpu(b)) => Storage::Cpu(binary_cpu::<K>(a, &ll, b, &rl)?),
        (Storage::Gpu(a), Storage::Gpu(b)) => {
            if a.dtype().is_int() && !K::INT {
                return Err(Error::UnsupportedDType {
                    op: K::NAME,
                    dtype: a.dtype(),
                    hint: "this op needs a float dtype (f16, bf16, f32, f64); convert with to_dtype(DType::F32)",
                });
            }
            Storage::Gpu(crate::gpu::binary(K::NAME, K::NAME, a, &ll, b, &rl)?)
        }
        _ => unreachable!("broadcast_pair checked the devices"),
    };
    Ok((out, shape))
}

/// Broadcasts both operands, checks dtype/device and runs `K`, recording `grad_fn`.
pub(crate) fn binary_op<K: BinaryKernel>(
    lhs: &Tensor,
    rhs: &Tensor,
    grad_fn: impl FnOnce() -> Box<dyn GradFn>,
) -> Result<Tensor> {
    let (out, shape) = binary_map::<K>(lhs, rhs)?;
    Ok(Tensor::from_op(out, shape, &[lhs, rhs], grad_fn))
}

/// Runs `K` without recording a graph: derivative kernels of backward passes.
pub(crate) fn binary_nograd<K: BinaryKernel>(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    let (out, shape) = binary_map::<K>(lhs, rhs)?;
    Ok(Tensor::from_storage(out, shape))
}

macro_rules! kernel {
    ($name:ident, $s:literal, int: $int:expr, |$a:ident, $b:ident| $body:expr, int |$ia:ident, $ib:ident| $ibody:expr) => {
        pub(crate) struct $name;
        impl BinaryKernel for $name {
            const NAME: &'static str = $s;
            const INT: bool = $int;
            #[inline(always)]
            fn f32($a: f32, $b: f32) -> f32 {
                $body
            }
            #[inline(always)]
            fn f64($a: f64, $b: f64) -> f64 {
                $body
            }
            #[inline(always)]
            fn i64($ia: i64, $ib: i64) -> i64 {
                $ibody
            }
        }
    };
}

kernel!(Add, "add", int: true, |a, b| a + b, int |a, b| a.wrapping_add(b));
kernel!(Sub, "sub", int: true, |a, b| a - b, int |a, b| a.wrapping_sub(b));
kernel!(Mul, "mul", int: true, |a, b| a * b, int |a, b| a.wrapping_mul(b));
kernel!(Div, "div", int: true, |a, b| a / b, int |a, b| if b == 0 { 0 } else { a.wrapping_div(b) });
// NaN in either operand gives NaN (PyTorch's maximum/minimum), unlike f32::max which drops it.
kernel!(Maximum, "maximum", int: true,
    |a, b| if a > b || a.is_nan() { a } else { b }, int |a, b| a.max(b));
kernel!(Minimum, "minimum", int: true,
    |a, b| if a < b || a.is_nan() { a } else { b }, int |a, b| a.min(b));
kernel!(Pow, "pow", int: false, |a, b| a.powf(b), int |_a, _b| 0);

// Derivative kernels (float only). Ties of maximum/minimum split the gradient 0.5/0.5.
kernel!(MaxWeight, "maximum_backward", int: false,
    |a, b| if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 }, int |_a, _b| 0);
kernel!(MinWeight, "minimum_backward", int: false,
    |a, b| if a < b { 1.0 } else if a == b { 0.5 } else { 0.0 }, int |_a, _b| 0);
// d(a^b)/da = b a^(b-1), taken as 0 where b == 0 (so 0^0 gives 0, not NaN), like PyTorch.
kernel!(PowGradBase, "pow_backward", int: false,
    |a, b| if b == 0.0 { 0.0 } else { b * a.powf(b - 1.0) }, int |_a, _b| 0);
// d(a^b)/db = a^b ln a, taken as 0 where a == 0 and b >= 0 (the one-sided limit), like PyTorch.
kernel!(PowGradExp, "pow_backward_exponent", int: false,
    |a, b| if a == 0.0 && b >= 0.0 { 0.0 } else { a.powf(b) * a.ln() }, int |_a, _b| 0);

struct AddBack;
impl GradFn for AddBack {
    fn name(&self) -> &str {
        "add"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(i[0].shape())?), Some(g.sum_to(i[1].shape())?)])
    }
}
struct SubBack;
impl GradFn for SubBack {
    fn name(&self) -> &str {
        "sub"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(i[0].shape())?), Some(g.neg()?.sum_to(i[1].shape())?)])
    }
}
struct MulBack;
impl GradFn for MulBack {
    fn name(&self) -> &str {
        "mul"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let ga = i[0].requires_grad().then(|| g.mul(&i[1])?.sum_to(i[0].shape())).transpose()?;
        let gb = i[1].requires_grad().then(|| g.mul(&i[0])?.sum_to(i[1].shape())).transpose()?;
        Ok(vec![ga, gb])
    }
}
struct DivBack;
impl GradFn for DivBack {
    fn name(&self) -> &str {
        "div"
    }
    fn backward(&self, i: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // d(a/b)/da = 1/b; d(a/b)/db = -(a/b)/b
        let ga = i[0].requires_grad().then(|| g.div(&i[1])?.sum_to(i[0].shape())).transpose()?;
        let gb = i[1].requires_grad().then(|| g.mul(out)?.div(&i[1])?.neg()?.sum_to(i[1].shape())).transpose()?;
        Ok(vec![ga, gb])
    }
}

/// Backward of maximum/minimum: the left input gets `g * W(a, b)`, the right one the rest.
struct SelectBack<W>(&'static str, std::marker::PhantomData<W>);
impl<W: BinaryKernel + Send + Sync> GradFn for SelectBack<W> {
    fn name(&self) -> &str {
        self.0
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let ga = g.mul(&binary_nograd::<W>(&i[0], &i[1])?)?;
        let gb = i[1].requires_grad().then(|| g.sub(&ga)?.sum_to(i[1].shape())).transpose()?;
        Ok(vec![Some(ga.sum_to(i[0].shape())?), gb])
    }
}
struct PowBack;
impl GradFn for PowBack {
    fn name(&self) -> &str {
        "pow"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let d = |k: fn(&Tensor, &Tensor) -> Result<Tensor>, t: &Tensor| -> Result<Option<Tensor>> {
            t.requires_grad().then(|| g.mul(&k(&i[0], &i[1])?)?.sum_to(t.shape())).transpose()
        };
        Ok(vec![d(binary_nograd::<PowGradBase>, &i[0])?, d(binary_nograd::<PowGradExp>, &i[1])?])
    }
}

impl Tensor {
    /// Element-wise `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Add>(self, rhs, || Box::new(AddBack))
    }
    /// Element-wise `self - rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Sub>(self, rhs, || Box::new(SubBack))
    }
    /// Element-wise `self * rhs` with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Mul>(self, rhs, || Box::new(MulBack))
    }
    /// Element-wise `self / rhs` with broadcasting (integer division truncates; x/0 is 0 for integers).
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Div>(self, rhs, || Box::new(DivBack))
    }

    /// Element-wise maximum with broadcasting (NaN if either side is NaN; also for integers).
    /// Where both sides are equal the gradient is split 0.5/0.5, like PyTorch.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Maximum>(self, rhs, || Box::new(SelectBack::<MaxWeight>("maximum", Default::default())))
    }
    /// Element-wise minimum with broadcasting (NaN if either side is NaN; also for integers).
    /// Where both sides are equal the gradient is split 0.5/0.5, like PyTorch.
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Minimum>(self, rhs, || Box::new(SelectBack::<MinWeight>("minimum", Default::default())))
    }
    /// Element-wise `self^rhs` with broadcasting (floats only), differentiable in both. The
    /// base gradient is 0 where the exponent is 0; the exponent gradient `self^rhs ln(self)` is
    /// 0 where the base is 0 and the exponent >= 0 (PyTorch's conventions).
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        binary_op::<Pow>(self, rhs, || Box::new(PowBack))
    }

    /// A scalar tensor of this dtype and device, for scalar forms of binary ops.
    pub(crate) fn scalar_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(value, (), self.dtype(), &self.device())
    }

    /// `self + value`.
    pub fn add_scalar(&self, value: f64) -> Result<Tensor> {
        self.add(&self.scalar_like(value)?)
    }
    /// `self - value`.
    pub fn sub_scalar(&self, value: f64) -> Result<Tensor> {
        self.sub(&self.scalar_like(value)?)
    }
    /// `self * value`.
    pub fn mul_scalar(&self, value: f64) -> Result<Tensor> {
        self.mul(&self.scalar_like(value)?)
    }
    /// `self / value`.
    pub fn div_scalar(&self, value: f64) -> Result<Tensor> {
        self.div(&self.scalar_like(value)?)
    }
    /// `maximum(self, value)`; `value` is converted to the dtype first (integers truncate).
    pub fn maximum_scalar(&self, value: f64) -> Result<Tensor> {
        self.maximum(&self.scalar_like(value)?)
    }
    /// `minimum(self, value)`; `value` is converted to the dtype first (integers truncate).
    pub fn minimum_scalar(&self, value: f64) -> Result<Tensor> {
        self.minimum(&self.scalar_like(value)?)
    }
    /// `self^exponent`, the same as [`powf`](Self::powf).
    pub fn pow_scalar(&self, exponent: f64) -> Result<Tensor> {
        self.powf(exponent)
    }
}

/// `std::ops` for tensors: `&a + &b`, `a * 2.0`, `-&a`, ... Each returns `Result<Tensor>` (the
/// op can fail on shapes or dtypes); a `Result<Tensor>` on the left chains, as in
/// `(&a + &b) * &c`, keeping the first error.
macro_rules! std_binary_op {
    ($trait:ident, $method:ident, $scalar:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$method(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$method(self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$method(&self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$method(&self, &rhs)
            }
        }
        impl std::ops::$trait<f64> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                Tensor::$scalar(self, rhs)
            }
        }
        impl std::ops::$trait<f64> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                Tensor::$scalar(&self, rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Result<Tensor> {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$method(&self?, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Result<Tensor> {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$method(&self?, &rhs)
            }
        }
    };
}
std_binary_op!(Add, add, add_scalar);
std_binary_op!(Sub, sub, sub_scalar);
std_binary_op!(Mul, mul, mul_scalar);
std_binary_op!(Div, div, div_scalar);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}
impl std::ops::Neg for Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(&self)
    }
}
