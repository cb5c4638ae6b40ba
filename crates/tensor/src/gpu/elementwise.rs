//! Launch plans of the element-wise kernels (kernels/tensor/elementwise.cu): unary maps,
//! binary ops, comparisons, where, casts and strided copies.

use super::{GpuStorage, StridedMeta, dtype_suffix, grid_plan, launch, module};
use crate::{DType, Error, Layout, Result};
use attune_cuda::KernelArg;

const FILE: &str = "elementwise.cu";

/// The op code of a unary kernel name (the op names the CPU backend uses), or `None` when the
/// GPU has no kernel for it.
fn unary_code(name: &str) -> Option<i32> {
    const NAMES: [&str; 35] = [
        "neg",
        "exp",
        "log",
        "abs",
        "sign",
        "sqrt",
        "rsqrt",
        "sin",
        "cos",
        "tanh",
        "sqr",
        "recip",
        "erf",
        "powf",
        "clamp",
        "relu",
        "sigmoid",
        "silu",
        "gelu",
        "gelu_erf",
        "sqrt_backward",
        "rsqrt_backward",
        "cos_backward",
        "tanh_backward",
        "sqr_backward",
        "recip_backward",
        "erf_backward",
        "powf_backward",
        "clamp_backward",
        "relu_backward",
        "sigmoid_backward",
        "silu_backward",
        "gelu_backward",
        "gelu_erf_backward",
        "affine",
    ];
    NAMES.iter().position(|n| *n == name).map(|p| p as i32)
}

/// The op code of a binary kernel name.
fn binary_code(name: &str) -> Option<i32> {
    Some(match name {
        "add" => 0,
        "sub" => 1,
        "mul" => 2,
        "div" => 3,
        "maximum" => 4,
        "minimum" => 5,
        "pow" => 6,
        "maximum_backward" => 7,
        "minimum_backward" => 8,
        "pow_backward" => 9,
        "pow_backward_exponent" => 10,
        _ => return None,
    })
}

/// The op code of a comparison.
fn compare_code(name: &str) -> Option<i32> {
    ["eq", "ne", "lt", "le", "gt", "ge"].iter().position(|n| *n == name).map(|p| p as i32)
}

fn no_kernel(op: &'static str, what: &str) -> Error {
    Error::invalid(op, format!("no GPU kernel for '{what}'; this is a bug in attune-tensor's GPU backend"))
}

/// `y = f(x)` for the named unary op with scalar parameters `params` (float dtypes; integer
/// dtypes for abs, neg, sign, relu and clamp).
pub(crate) fn unary(op: &'static str, name: &str, params: [f64; 2], x: &GpuStorage, l: &Layout) -> Result<GpuStorage> {
    let code = unary_code(name).ok_or_else(|| no_kernel(op, name))?;
    let meta = StridedMeta::contiguous_out(op, &[l])?;
    let dev = x.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, x.dtype, meta.n())?;
    let args = vec![
        KernelArg::I32(code),
        KernelArg::F64(params[0]),
        KernelArg::F64(params[1]),
        KernelArg::pod(&meta),
        x.arg(0),
        out.arg(0),
    ];
    launch(op, &dev, &grid_plan(module(FILE), format!("unary_{}", dtype_suffix(x.dtype)), meta.n(), args))?;
    Ok(out)
}

/// `y = a (op) b` over two layouts already broadcast to one shape.
pub(crate) fn binary(
    op: &'static str,
    name: &str,
    a: &GpuStorage,
    al: &Layout,
    b: &GpuStorage,
    bl: &Layout,
) -> Result<GpuStorage> {
    let code = binary_code(name).ok_or_else(|| no_kernel(op, name))?;
    if a.dtype.is_int() && code > 5 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: a.dtype,
            hint: "this op needs a float dtype (f16, bf16, f32, f64); convert with to_dtype(DType::F32)",
        });
    }
    let meta = StridedMeta::contiguous_out(op, &[al, bl])?;
    let dev = a.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, a.dtype, meta.n())?;
    let args = vec![KernelArg::I32(code), KernelArg::pod(&meta), a.arg(0), b.arg(0), out.arg(0)];
    launch(op, &dev, &grid_plan(module(FILE), format!("binary_{}", dtype_suffix(a.dtype)), meta.n(), args))?;
    Ok(out)
}

/// A u8 mask `a (cmp) b`.
pub(crate) fn compare(
    op: &'static str,
    a: &GpuStorage,
    al: &Layout,
    b: &GpuStorage,
    bl: &Layout,
) -> Result<GpuStorage> {
    let code = compare_code(op).ok_or_else(|| no_kernel(op, op))?;
    let meta = StridedMeta::contiguous_out(op, &[al, bl])?;
    let dev = a.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, DType::U8, meta.n())?;
    let args = vec![KernelArg::I32(code), KernelArg::pod(&meta), a.arg(0), b.arg(0), out.arg(0)];
    launch(op, &dev, &grid_plan(module(FILE), format!("compare_{}", dtype_suffix(a.dtype)), meta.n(), args))?;
    Ok(out)
}

/// `mask ? t : f` over three layouts broadcast to one shape.
pub(crate) fn where_cond(
    mask: (&GpuStorage, &Layout),
    on_true: (&GpuStorage, &Layout),
    on_false: (&GpuStorage, &Layout),
) -> Result<GpuStorage> {
    const OP: &str = "where_cond";
    let meta = StridedMeta::contiguous_out(OP, &[mask.1, on_true.1, on_false.1])?;
    let dev = on_true.0.gpu().clone();
    let out = GpuStorage::alloc(OP, &dev, on_true.0.dtype, meta.n())?;
    let args = vec![KernelArg::pod(&meta), mask.0.arg(0), on_true.0.arg(0), on_false.0.arg(0), out.arg(0)];
    let entry = format!("where_{}", dtype_suffix(on_true.0.dtype));
    launch(OP, &dev, &grid_plan(module(FILE), entry, meta.n(), args))?;
    Ok(out)
}

/// The viewed elements converted to `dtype`, contiguous.
pub(crate) fn cast(op: &'static str, x: &GpuStorage, l: &Layout, dtype: DType) -> Result<GpuStorage> {
    if dtype == x.dtype {
        return contiguous(op, x, l);
    }
    let meta = StridedMeta::contiguous_out(op, &[l])?;
    let dev = x.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, dtype, meta.n())?;
    let entry = format!("cast_{}_{}", dtype_suffix(x.dtype), dtype_suffix(dtype));
    launch(op, &dev, &grid_plan(module(FILE), entry, meta.n(), vec![KernelArg::pod(&meta), x.arg(0), out.arg(0)]))?;
    Ok(out)
}

/// A contiguous copy of the viewed elements.
pub(crate) fn contiguous(op: &'static str, x: &GpuStorage, l: &Layout) -> Result<GpuStorage> {
    let dev = x.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, x.dtype, l.elem_count())?;
    copy_into(op, x, l, &out, &Layout::contiguous(l.shape().clone()))?;
    Ok(out)
}

/// Copies the elements of `x` viewed by `l` into `dst` viewed by `dl` (same dims).
pub(crate) fn copy_into(op: &'static str, x: &GpuStorage, l: &Layout, dst: &GpuStorage, dl: &Layout) -> Result<()> {
    let meta = StridedMeta::new(op, &[dl, l])?;
    if meta.n() == 0 {
        return Ok(());
    }
    let entry = format!("copy_{}", dtype_suffix(x.dtype));
    let dev = x.gpu().clone();
    launch(op, &dev, &grid_plan(module(FILE), entry, meta.n(), vec![KernelArg::pod(&meta), x.arg(0), dst.arg(0)]))
}

/// Every entry point of elementwise.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    let all = [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];
    let mut out = Vec::new();
    for d in all {
        let s = dtype_suffix(d);
        out.extend([format!("unary_{s}"), format!("binary_{s}"), format!("compare_{s}"), format!("where_{s}")]);
        out.push(format!("copy_{s}"));
        for e in all {
            out.push(format!("cast_{s}_{}", dtype_suffix(e)));
        }
    }
    out
}
