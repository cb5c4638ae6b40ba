//! Launch plans of cross-entropy, forward and backward (kernels/tensor/loss.cu).

use super::norm::{Operand, acc_dtype};
use super::softmax::row_schedule;
use super::{GpuStorage, THREADS, dtype_suffix, grid_plan, launch, module};
use crate::{DType, Error, Result};
use attune_cuda::{Dim3, KernelArg, LaunchPlan};

const FILE: &str = "loss.cu";

/// How the row losses are combined (the kernel's codes for mean, sum, none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CeReduction {
    /// Divided by the number of counted targets (at least 1).
    Mean = 0,
    /// Summed.
    Sum = 1,
    /// One loss per row.
    None = 2,
}

fn contiguous_arg(op: &'static str, (s, l): Operand<'_>) -> Result<KernelArg> {
    let (a, _) = l.contiguous_range().ok_or_else(|| {
        Error::invalid(op, format!("expected a contiguous operand, got strides {:?} (internal error)", l.strides()))
    })?;
    Ok(s.arg(a))
}

/// Forward over `rows` contiguous rows of `c` logits with i64 `targets` (-1 = ignored):
/// `(loss, lse)` where `loss` is the reduced loss (one element of x's dtype) for mean/sum or
/// the per-row losses (x's dtype) for none, and `lse` the per-row log-sum-exp in the
/// accumulator dtype.
pub(crate) fn cross_entropy(
    op: &'static str,
    x: Operand<'_>,
    targets: &GpuStorage,
    (rows, c): (usize, usize),
    smoothing: f64,
    reduction: CeReduction,
    count: usize,
) -> Result<(GpuStorage, GpuStorage)> {
    let dtype = x.0.dtype;
    if !dtype.is_float() {
        return Err(Error::UnsupportedDType { op, dtype, hint: "logits must be floats" });
    }
    let dev = x.0.gpu().clone();
    let s = dtype_suffix(dtype);
    let (loss, lse) =
        (GpuStorage::alloc(op, &dev, acc_dtype(dtype), rows)?, GpuStorage::alloc(op, &dev, acc_dtype(dtype), rows)?);
    if rows > 0 {
        let (mode, threads, blocks) = row_schedule(rows, c, 1);
        let args = vec![
            KernelArg::I32(mode),
            KernelArg::I64(rows as i64),
            KernelArg::I64(c as i64),
            KernelArg::F64(smoothing),
            contiguous_arg(op, x)?,
            targets.arg(0),
            loss.arg(0),
            lse.arg(0),
        ];
        launch(
            op,
            &dev,
            &LaunchPlan::new(module(FILE), format!("ce_fwd_{s}"), Dim3::x(blocks), Dim3::x(threads), args),
        )?;
    }
    let out = match reduction {
        CeReduction::None => super::cast(op, &loss, &crate::Layout::contiguous(rows), dtype)?,
        _ => {
            let out = GpuStorage::alloc(op, &dev, dtype, 1)?;
            let args = vec![
                KernelArg::I64(rows as i64),
                KernelArg::I32((reduction == CeReduction::Mean) as i32),
                KernelArg::I64(count as i64),
                loss.arg(0),
                out.arg(0),
            ];
            let plan = LaunchPlan::new(module(FILE), format!("ce_reduce_{s}"), Dim3::x(1), Dim3::x(THREADS), args);
            launch(op, &dev, &plan)?;
            out
        }
    };
    Ok((out, lse))
}

/// Backward: `dx` (contiguous `[rows, c]`) from the loss gradient `g` (contiguous; one
/// element for mean/sum, one per row for none) and the saved `lse`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cross_entropy_backward(
    op: &'static str,
    x: Operand<'_>,
    g: Operand<'_>,
    targets: &GpuStorage,
    lse: &GpuStorage,
    (rows, c): (usize, usize),
    smoothing: f64,
    reduction: CeReduction,
    count: usize,
) -> Result<GpuStorage> {
    let dtype = x.0.dtype;
    let dev = x.0.gpu().clone();
    let dx = GpuStorage::alloc(op, &dev, dtype, rows * c)?;
    if rows * c == 0 {
        return Ok(dx);
    }
    let args = vec![
        KernelArg::I64(rows as i64),
        KernelArg::I64(c as i64),
        KernelArg::F64(smoothing),
        KernelArg::I32(reduction as i32),
        KernelArg::I64(count as i64),
        contiguous_arg(op, g)?,
        targets.arg(0),
        contiguous_arg(op, x)?,
        lse.arg(0),
        dx.arg(0),
    ];
    launch(op, &dev, &grid_plan(module(FILE), format!("ce_bwd_{}", dtype_suffix(dtype)), rows * c, args))?;
    Ok(dx)
}

/// Every entry point of loss.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    let mut out = Vec::new();
    for d in [DType::F16, DType::BF16, DType::F32, DType::F64] {
        let s = dtype_suffix(d);
        out.extend(["ce_fwd", "ce_reduce", "ce_bwd"].map(|k| format!("{k}_{s}")));
    }
    out
}
