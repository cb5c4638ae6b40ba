//! Launch plans of layer norm and RMS norm, forward and backward (kernels/tensor/norm.cu).

use super::softmax::row_schedule;
use super::{GpuStorage, THREADS, dtype_suffix, launch, module};
use crate::{DType, Error, Layout, Result};
use attune_cuda::{Dim3, KernelArg, LaunchPlan};

const FILE: &str = "norm.cu";
/// At most this many row chunks hold partial weight/bias gradients.
const MAX_CHUNKS: usize = 64;
/// Rows per chunk at least (fewer chunks for short inputs).
const MIN_CHUNK_ROWS: usize = 16;

/// A contiguous operand: its storage and the element where its view starts.
pub(crate) type Operand<'a> = (&'a GpuStorage, &'a Layout);

/// The accumulator dtype of the statistics: f32 for f16/bf16/f32, f64 for f64.
pub(crate) fn acc_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 { DType::F64 } else { DType::F32 }
}

/// The kernel argument of a contiguous operand (an error names `op` otherwise).
fn arg(op: &'static str, (s, l): Operand<'_>) -> Result<KernelArg> {
    let (a, _) = l.contiguous_range().ok_or_else(|| {
        Error::invalid(op, format!("expected a contiguous operand, got strides {:?} (internal error)", l.strides()))
    })?;
    Ok(s.arg(a))
}

fn opt_arg(op: &'static str, o: Option<Operand<'_>>) -> Result<KernelArg> {
    o.map_or(Ok(KernelArg::Ptr(0)), |o| arg(op, o))
}

fn check_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype, hint: "normalization needs a float dtype" })
    }
}

/// Forward over `rows` contiguous rows of `d` elements: `(y, mean, rstd)`; `mean` is `None`
/// for RMS norm, the statistics are `[rows]` in the accumulator dtype.
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_forward(
    op: &'static str,
    x: Operand<'_>,
    w: Option<Operand<'_>>,
    b: Option<Operand<'_>>,
    (rows, d): (usize, usize),
    eps: f64,
    rms: bool,
) -> Result<(GpuStorage, Option<GpuStorage>, GpuStorage)> {
    let dtype = x.0.dtype;
    check_float(op, dtype)?;
    let dev = x.0.gpu().clone();
    let y = GpuStorage::alloc(op, &dev, dtype, rows * d)?;
    let mean = (!rms).then(|| GpuStorage::alloc(op, &dev, acc_dtype(dtype), rows)).transpose()?;
    let rstd = GpuStorage::alloc(op, &dev, acc_dtype(dtype), rows)?;
    if rows == 0 || d == 0 {
        return Ok((y, mean, rstd));
    }
    let (mode, threads, blocks) = row_schedule(rows, d, 1);
    let args = vec![
        KernelArg::I32(mode),
        KernelArg::I32(rms as i32),
        KernelArg::I64(rows as i64),
        KernelArg::I64(d as i64),
        KernelArg::F64(eps),
        arg(op, x)?,
        opt_arg(op, w)?,
        opt_arg(op, b)?,
        y.arg(0),
        mean.as_ref().map_or(KernelArg::Ptr(0), |m| m.arg(0)),
        rstd.arg(0),
    ];
    let entry = format!("norm_fwd_{}", dtype_suffix(dtype));
    launch(op, &dev, &LaunchPlan::new(module(FILE), entry, Dim3::x(blocks), Dim3::x(threads), args))?;
    Ok((y, mean, rstd))
}

/// The gradients of a norm: dx, and dweight / dbias when asked for in `need`.
pub(crate) type NormGrads = (GpuStorage, Option<GpuStorage>, Option<GpuStorage>);

/// Backward over `rows` contiguous rows of `d` elements given the saved statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_backward(
    op: &'static str,
    x: Operand<'_>,
    g: Operand<'_>,
    w: Option<Operand<'_>>,
    mean: Option<Operand<'_>>,
    rstd: Operand<'_>,
    (rows, d): (usize, usize),
    need: (bool, bool),
) -> Result<NormGrads> {
    let dtype = x.0.dtype;
    check_float(op, dtype)?;
    let dev = x.0.gpu().clone();
    let rms = mean.is_none();
    let dx = GpuStorage::alloc(op, &dev, dtype, rows * d)?;
    let zeros = |want: bool| want.then(|| GpuStorage::zeros(op, &dev, dtype, d)).transpose();
    if rows == 0 || d == 0 {
        return Ok((dx, zeros(need.0)?, zeros(need.1)?));
    }
    let (mode, threads, blocks) = row_schedule(rows, d, 1);
    let args = vec![
        KernelArg::I32(mode),
        KernelArg::I32(rms as i32),
        KernelArg::I64(rows as i64),
        KernelArg::I64(d as i64),
        arg(op, x)?,
        arg(op, g)?,
        opt_arg(op, w)?,
        opt_arg(op, mean)?,
        arg(op, rstd)?,
        dx.arg(0),
    ];
    let s = dtype_suffix(dtype);
    let plan = LaunchPlan::new(module(FILE), format!("norm_bwd_{s}"), Dim3::x(blocks), Dim3::x(threads), args);
    launch(op, &dev, &plan)?;
    if !(need.0 || need.1) {
        return Ok((dx, None, None));
    }
    // Column sums over rows in two deterministic steps: partials per chunk of rows, then the
    // chunks in order.
    let chunks = rows.div_ceil(MIN_CHUNK_ROWS).clamp(1, MAX_CHUNKS);
    let chunk_rows = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk_rows);
    let acc = acc_dtype(dtype);
    let pw = need.0.then(|| GpuStorage::alloc(op, &dev, acc, chunks * d)).transpose()?;
    let pb = need.1.then(|| GpuStorage::alloc(op, &dev, acc, chunks * d)).transpose()?;
    let args = vec![
        KernelArg::I64(rows as i64),
        KernelArg::I64(d as i64),
        KernelArg::I64(chunk_rows as i64),
        arg(op, x)?,
        arg(op, g)?,
        opt_arg(op, mean)?,
        arg(op, rstd)?,
        pw.as_ref().map_or(KernelArg::Ptr(0), |p| p.arg(0)),
        pb.as_ref().map_or(KernelArg::Ptr(0), |p| p.arg(0)),
    ];
    let grid = Dim3::new(d.div_ceil(THREADS as usize) as u32, chunks as u32, 1);
    let plan = LaunchPlan::new(module(FILE), format!("norm_wb_partial_{s}"), grid, Dim3::x(THREADS), args);
    launch(op, &dev, &plan)?;
    let finish = |p: Option<GpuStorage>| -> Result<Option<GpuStorage>> {
        let Some(p) = p else { return Ok(None) };
        let out = GpuStorage::alloc(op, &dev, dtype, d)?;
        let args = vec![KernelArg::I64(chunks as i64), KernelArg::I64(d as i64), p.arg(0), out.arg(0)];
        launch(op, &dev, &super::grid_plan(module(FILE), format!("norm_wb_final_{s}"), d, args))?;
        Ok(Some(out))
    };
    Ok((dx, finish(pw)?, finish(pb)?))
}

/// Every entry point of norm.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    let mut out = Vec::new();
    for d in [DType::F16, DType::BF16, DType::F32, DType::F64] {
        let s = dtype_suffix(d);
        out.extend(["norm_fwd", "norm_bwd", "norm_wb_partial", "norm_wb_final"].map(|k| format!("{k}_{s}")));
    }
    out
}
