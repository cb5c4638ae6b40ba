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
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(map2(x, sa, oa, y, sb, ob, d, K::f32)),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(map2(x, sa, oa, y, sb, ob, d, K::f64)),
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
            return Err(Error::UnsupportedDType { op: K::NAME, dtype: a.dtype(), hint: "this op needs a float dtype" });
        }
    })
}

/// Broadcasts both operands, checks dtype/device and runs `K`, recording `grad_fn`.
pub(crate) fn binary_op<K: BinaryKernel>(
    lhs: &Tensor,
    rhs: &Tensor,
    grad_fn: impl FnOnce() -> Box<dyn GradFn>,
) -> Result<Tensor> {
    lhs.same_dtype_device(rhs, K::NAME)?;
    let shape = Shape::broadcast(K::NAME, lhs.shape(), rhs.shape())?;
    let ll = lhs.layout().broadcast_as(K::NAME, &shape)?;
    let rl = rhs.layout().broadcast_as(K::NAME, &shape)?;
    let out = {
        let (a, b) = (lhs.storage(), rhs.storage());
        match (&*a, &*b) {
            (Storage::Cpu(a), Storage::Cpu(b)) => binary_cpu::<K>(a, &ll, b, &rl)?,
        }
    };
    Ok(Tensor::from_op(Storage::Cpu(out), shape, &[lhs, rhs], grad_fn))
}

macro_rules! kernel {
    ($name:ident, $s:literal, int: $int:expr, |$a:ident, $b:ident| $body:expr, int |$ia:ident, $ib:ident| $ibody:expr) => {
        pub(crate) struct $name;
        impl BinaryKernel for $name {
            const NAME: &'static str = $s;
            const INT: bool = $int;
            fn f32($a: f32, $b: f32) -> f32 {
                $body
            }
            fn f64($a: f64, $b: f64) -> f64 {
                $body
            }
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
}
