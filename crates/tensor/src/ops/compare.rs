//! Comparisons producing u8 masks (1 true, 0 false) with broadcasting, their scalar forms,
//! and `where_cond`, the element-wise select. Comparisons are not differentiable: their
//! output never carries a graph.

use crate::autograd::GradFn;
use crate::cpu::strided::{map1, map2, map3};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Error, Layout, Result, Shape, Tensor};

/// Which comparison a kernel performs (for the exact integer-vs-scalar rewrite).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A comparison, monomorphised per op so the inner loops carry no dispatch.
trait CmpKernel {
    const NAME: &'static str;
    const OP: CmpOp;
    fn cmp<T: PartialOrd>(a: T, b: T) -> bool;
}

macro_rules! cmp_kernel {
    ($name:ident, $s:literal, $op:ident, $sym:tt) => {
        struct $name;
        impl CmpKernel for $name {
            const NAME: &'static str = $s;
            const OP: CmpOp = CmpOp::$op;
            #[inline(always)]
            fn cmp<T: PartialOrd>(a: T, b: T) -> bool {
                a $sym b
            }
        }
    };
}
cmp_kernel!(EqK, "eq", Eq, ==);
cmp_kernel!(NeK, "ne", Ne, !=);
cmp_kernel!(LtK, "lt", Lt, <);
cmp_kernel!(LeK, "le", Le, <=);
cmp_kernel!(GtK, "gt", Gt, >);
cmp_kernel!(GeK, "ge", Ge, >=);

/// Compares two same-dtype layouts already broadcast to one shape. f16/bf16 compare as f32
/// (exact: the conversion is exact and keeps the order and NaN).
fn compare_cpu<K: CmpKernel>(a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Vec<u8> {
    let d = al.dims();
    let (sa, oa, sb, ob) = (al.strides(), al.offset(), bl.strides(), bl.offset());
    macro_rules! run {
        ($x:expr, $y:expr, $conv:expr) => {
            map2($x, sa, oa, $y, sb, ob, d, |p, q| K::cmp($conv(p), $conv(q)) as u8)
        };
    }
    match (a, b) {
        (CpuStorage::U8(x), CpuStorage::U8(y)) => run!(x, y, |v: u8| v),
        (CpuStorage::U32(x), CpuStorage::U32(y)) => run!(x, y, |v: u32| v),
        (CpuStorage::I64(x), CpuStorage::I64(y)) => run!(x, y, |v: i64| v),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => run!(x, y, |v: half::f16| v.to_f32()),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => run!(x, y, |v: half::bf16| v.to_f32()),
        (CpuStorage::F32(x), CpuStorage::F32(y)) => run!(x, y, |v: f32| v),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => run!(x, y, |v: f64| v),
        // Operands were checked to share a dtype.
        _ => unreachable!("compare_cpu: dtypes checked by the caller"),
    }
}

/// A u8 mask with no graph.
fn mask_tensor(data: Vec<u8>, shape: Shape) -> Tensor {
    Tensor::from_storage(Storage::Cpu(CpuStorage::U8(data)), shape)
}

fn compare_op<K: CmpKernel>(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    let (shape, ll, rl) = crate::ops::binary::broadcast_pair(K::NAME, lhs, rhs)?;
    let (a, b) = (lhs.storage(), rhs.storage());
    let out = match (&*a, &*b) {
        (Storage::Cpu(a), Storage::Cpu(b)) => Storage::Cpu(CpuStorage::U8(compare_cpu::<K>(a, &ll, b, &rl))),
        (Storage::Gpu(a), Storage::Gpu(b)) => Storage::Gpu(crate::gpu::compare(K::NAME, a, &ll, b, &rl)?),
        _ => unreachable!("broadcast_pair checked the devices"),
    };
    Ok(Tensor::from_storage(out, shape))
}

/// How an integer tensor compares with a real scalar, exactly: `x < v` is `x < ceil(v)`,
/// `x <= v` is `x <= floor(v)` (and mirrored), `x == v` needs an integral `v`.
enum IntScalar {
    /// Every element gives this answer (NaN scalars, non-integral equality).
    Const(bool),
    /// Compare every element with this bound (i128 holds any rounded f64 below 1.7e38 exactly
    /// and saturates beyond, which keeps every comparison with an i64 right).
    Bound(i128),
}

fn int_scalar(op: CmpOp, v: f64) -> IntScalar {
    if v.is_nan() {
        return IntScalar::Const(op == CmpOp::Ne);
    }
    match op {
        CmpOp::Eq | CmpOp::Ne if v.fract() != 0.0 => IntScalar::Const(op == CmpOp::Ne),
        CmpOp::Eq | CmpOp::Ne => IntScalar::Bound(v as i128),
        CmpOp::Lt | CmpOp::Ge => IntScalar::Bound(v.ceil() as i128),
        CmpOp::Le | CmpOp::Gt => IntScalar::Bound(v.floor() as i128),
    }
}

/// Compares with a scalar. Floats convert `value` to the tensor's dtype first (so
/// `x.eq_scalar(0.1)` holds for an f16 `x` made from 0.1); integers compare exactly with the
/// real `value` (`x.lt_scalar(2.5)` holds for 2, `x.ge_scalar(-1.0)` holds for every u8).
fn compare_scalar<K: CmpKernel>(t: &Tensor, value: f64) -> Result<Tensor> {
    if t.dtype().is_float() {
        return compare_op::<K>(t, &t.scalar_like(value)?);
    }
    if t.device().is_gpu() {
        // The bound may not fit the dtype (u8 < 300): compare as i64, folding bounds beyond
        // i64's range to constant answers.
        return match int_scalar(K::OP, value) {
            IntScalar::Const(c) => Tensor::full(c as u8 as f64, t.shape().clone(), DType::U8, &t.device()),
            IntScalar::Bound(b) if b > i64::MAX as i128 || b < i64::MIN as i128 => {
                // Every element lies on the same side of the bound.
                let c = if b > 0 { K::cmp(0i128, 1) } else { K::cmp(1i128, 0) };
                Tensor::full(c as u8 as f64, t.shape().clone(), DType::U8, &t.device())
            }
            IntScalar::Bound(b) => {
                let wide = t.to_dtype(DType::I64)?;
                compare_op::<K>(&wide, &Tensor::from_vec(vec![b as i64], (), &t.device())?)
            }
        };
    }
    let out = t.with_cpu(K::NAME, |s, l| {
        let (d, st, o) = (l.dims(), l.strides(), l.offset());
        Ok(match int_scalar(K::OP, value) {
            IntScalar::Const(c) => vec![c as u8; l.elem_count()],
            IntScalar::Bound(b) => match s {
                CpuStorage::U8(v) => map1(v, d, st, o, |x| K::cmp(x as i128, b) as u8),
                CpuStorage::U32(v) => map1(v, d, st, o, |x| K::cmp(x as i128, b) as u8),
                CpuStorage::I64(v) => map1(v, d, st, o, |x| K::cmp(x as i128, b) as u8),
                _ => unreachable!("compare_scalar: floats handled above"),
            },
        })
    })?;
    Ok(mask_tensor(out, t.shape().clone()))
}

/// Backward of `where_cond`: the selected side gets the gradient, the other side zero.
struct WhereBack;
impl GradFn for WhereBack {
    fn name(&self) -> &str {
        "where_cond"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (mask, t, f) = (&i[0], &i[1], &i[2]);
        let zero = Tensor::zeros((), g.dtype(), &g.device())?;
        let gt = t.requires_grad().then(|| mask.where_cond(g, &zero)?.sum_to(t.shape())).transpose()?;
        let gf = f.requires_grad().then(|| mask.where_cond(&zero, g)?.sum_to(f.shape())).transpose()?;
        Ok(vec![None, gt, gf])
    }
}

macro_rules! compare_methods {
    ($($name:ident, $scalar:ident, $k:ident, $doc:literal;)*) => {
        impl Tensor {
            $(
                #[doc = concat!("Element-wise `self ", $doc, " rhs` with broadcasting, as a u8 mask ",
                    "(1 true, 0 false). Any dtype, both sides the same; NaN compares unequal to ",
                    "everything. No gradient.")]
                pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                    compare_op::<$k>(self, rhs)
                }
                #[doc = concat!("Element-wise `self ", $doc, " value` as a u8 mask. Float tensors compare ",
                    "with `value` converted to their dtype; integer tensors compare exactly with the ",
                    "real `value`. No gradient.")]
                pub fn $scalar(&self, value: f64) -> Result<Tensor> {
                    compare_scalar::<$k>(self, value)
                }
            )*
        }
    };
}
compare_methods! {
    eq, eq_scalar, EqK, "==";
    ne, ne_scalar, NeK, "!=";
    lt, lt_scalar, LtK, "<";
    le, le_scalar, LeK, "<=";
    gt, gt_scalar, GtK, ">";
    ge, ge_scalar, GeK, ">=";
}

impl Tensor {
    /// Element-wise select: `on_true` where `self` (the mask) is nonzero, else `on_false`.
    /// The mask may have any dtype (NaN counts as nonzero); `on_true` and `on_false` share a
    /// dtype, which the result has. All three broadcast together. Differentiable with respect
    /// to `on_true` and `on_false` (each gets the gradient where it was selected), not the mask.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        on_true.same_dtype_device(on_false, OP)?;
        if self.device() != on_true.device() {
            return Err(Error::DeviceMismatch { op: OP, lhs: self.device(), rhs: on_true.device() });
        }
        let mask = if self.dtype() == DType::U8 { self.detach() } else { self.ne_scalar(0.0)? };
        let shape = Shape::broadcast(OP, &Shape::broadcast(OP, mask.shape(), on_true.shape())?, on_false.shape())?;
        let ml = mask.layout().broadcast_as(OP, &shape)?;
        let tl = on_true.layout().broadcast_as(OP, &shape)?;
        let fl = on_false.layout().broadcast_as(OP, &shape)?;
        let out = {
            let (m, t, f) = (mask.storage(), on_true.storage(), on_false.storage());
            let (m, t, f) = match (&*m, &*t, &*f) {
                (Storage::Cpu(m), Storage::Cpu(t), Storage::Cpu(f)) => (m, t, f),
                (Storage::Gpu(m), Storage::Gpu(t), Storage::Gpu(f)) => {
                    let out = crate::gpu::where_cond((m, &ml), (t, &tl), (f, &fl))?;
                    return Ok(Tensor::from_op(Storage::Gpu(out), shape, &[&mask, on_true, on_false], || {
                        Box::new(WhereBack)
                    }));
                }
                _ => unreachable!("where_cond: devices checked above"),
            };
            let CpuStorage::U8(m) = m else { unreachable!("where_cond: the mask was converted to u8") };
            let d = shape.dims();
            let ms = (m.as_slice(), ml.strides(), ml.offset());
            macro_rules! select {
                ($($v:ident),*) => {
                    match (t, f) {
                        $((CpuStorage::$v(t), CpuStorage::$v(f)) => CpuStorage::$v(map3(
                            ms,
                            (t.as_slice(), tl.strides(), tl.offset()),
                            (f.as_slice(), fl.strides(), fl.offset()),
                            d,
                            |c, x, y| if c != 0 { x } else { y },
                        )),)*
                        _ => unreachable!("where_cond: dtypes checked above"),
                    }
                };
            }
            select!(U8, U32, I64, F16, BF16, F32, F64)
        };
        Ok(Tensor::from_op(Storage::Cpu(out), shape, &[&mask, on_true, on_false], || Box::new(WhereBack)))
    }
}
