//! Launch plans of the Philox kernels (kernels/tensor/random.cu): dropout, Bernoulli draws and
//! uniforms, all bit-identical to the CPU's stream (crates/tensor/src/cpu/philox.rs).

use super::{GpuDevice, GpuStorage, StridedMeta, dtype_suffix, grid_plan, launch, module};
use crate::{DType, Error, Layout, Result};
use attune_cuda::KernelArg;

const FILE: &str = "random.cu";

/// The plan over the `ceil(n / 4)` Philox blocks of an `n`-element stream.
fn stream_plan(entry: String, n: usize, args: Vec<KernelArg>) -> attune_cuda::LaunchPlan {
    grid_plan(module(FILE), entry, n.div_ceil(4), args)
}

/// Dropout of `x` viewed by `l` with the stream `(seed, offset)`: `(output, mask)`, both
/// contiguous; kept elements are `x * scale` (scale rounded to the dtype), dropped ones 0, and
/// the mask holds `scale` or 0.
pub(crate) fn dropout(
    op: &'static str,
    x: &GpuStorage,
    l: &Layout,
    (seed, offset): (u64, u64),
    threshold: u32,
    scale: f64,
) -> Result<(GpuStorage, GpuStorage)> {
    if !x.dtype.is_float() {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype, hint: "dropout needs a float dtype" });
    }
    let meta = StridedMeta::contiguous_out(op, &[l])?;
    let n = meta.n();
    let dev = x.gpu().clone();
    let (out, mask) = (GpuStorage::alloc(op, &dev, x.dtype, n)?, GpuStorage::alloc(op, &dev, x.dtype, n)?);
    if n == 0 {
        return Ok((out, mask));
    }
    let args = vec![
        KernelArg::pod(&meta),
        KernelArg::U64(seed),
        KernelArg::U64(offset),
        KernelArg::U32(threshold),
        KernelArg::F64(scale),
        x.arg(0),
        out.arg(0),
        mask.arg(0),
    ];
    launch(op, &dev, &stream_plan(format!("dropout_{}", dtype_suffix(x.dtype)), n, args))?;
    Ok((out, mask))
}

/// `n` Bernoulli draws (1 iff the 24-bit uniform is below `threshold`) in any dtype.
pub(crate) fn bernoulli(
    op: &'static str,
    dev: &GpuDevice,
    n: usize,
    stream: (u64, u64),
    threshold: u32,
    dtype: DType,
) -> Result<GpuStorage> {
    generate(op, dev, n, stream, "bernoulli", KernelArg::U32(threshold), dtype)
}

/// `n` uniforms in `[0, 1)` on the grid of `bits` significand bits, in float `dtype`.
pub(crate) fn rand(
    op: &'static str,
    dev: &GpuDevice,
    n: usize,
    stream: (u64, u64),
    bits: u32,
    dtype: DType,
) -> Result<GpuStorage> {
    generate(op, dev, n, stream, "rand", KernelArg::I32(bits as i32), dtype)
}

/// Runs the `{family}_{dtype}` stream kernel: `(n, seed, offset, param, out)`.
fn generate(
    op: &'static str,
    dev: &GpuDevice,
    n: usize,
    (seed, offset): (u64, u64),
    family: &str,
    param: KernelArg,
    dtype: DType,
) -> Result<GpuStorage> {
    let out = GpuStorage::alloc(op, dev, dtype, n)?;
    if n > 0 {
        let args = vec![KernelArg::I64(n as i64), KernelArg::U64(seed), KernelArg::U64(offset), param, out.arg(0)];
        launch(op, dev, &stream_plan(format!("{family}_{}", dtype_suffix(dtype)), n, args))?;
    }
    Ok(out)
}

/// Every entry point of random.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    let mut out = Vec::new();
    for d in [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64] {
        let s = dtype_suffix(d);
        out.push(format!("bernoulli_{s}"));
        if d.is_float() {
            out.extend([format!("dropout_{s}"), format!("rand_{s}")]);
        }
    }
    out
}
