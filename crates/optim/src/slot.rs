//! Per-parameter plumbing shared by the optimizers: gathering and checking gradients, the
//! dtype updates compute in, f32 master weights for f16/bf16 parameters, and small tensor
//! helpers (PyTorch's `lerp`, sums of squares).
//!
//! Low-precision parameters: an f16/bf16 parameter is updated through an f32 master copy kept
//! in the optimizer (saved as `"{name}.master"`), and the parameter receives the rounded
//! master after each step, so updates smaller than the parameter's resolution accumulate
//! instead of being lost. Optimizer state is f32 for them. When the parameter was changed
//! outside the optimizer (say, restored from a checkpoint), the master no longer rounds to it
//! and is re-read from the parameter.

use crate::error::{Error, Result};
use crate::group::ParamGroup;
use attune_tensor::{DType, GradStore, Tensor, Var};

/// The dtype updates and state use for a parameter of dtype `dtype`.
pub(crate) fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 { DType::F64 } else { DType::F32 }
}

/// Whether a parameter of this dtype is updated through an f32 master copy.
pub(crate) fn needs_master(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// One parameter to update this step: its group, name, variable and gradient (already in the
/// compute dtype and negated when maximizing).
pub(crate) struct Work<'a> {
    pub group: &'a ParamGroup,
    pub name: &'a str,
    pub var: &'a Var,
    pub grad: Tensor,
}

/// The parameters that have a gradient in `grads`, checked before any parameter changes so a
/// bad gradient leaves every parameter untouched. Parameters without a gradient are skipped
/// (PyTorch's `grad is None`).
pub(crate) fn gather<'a>(
    op: &'static str,
    groups: &'a [ParamGroup],
    grads: &GradStore,
    maximize: bool,
) -> Result<Vec<Work<'a>>> {
    let mut out = Vec::new();
    for group in groups {
        for (name, var) in &group.params {
            let Some(g) = grads.get(var) else { continue };
            let bad = |msg: String| Error::BadGradient { op, param: name.clone(), msg };
            if g.shape() != var.shape() {
                return Err(bad(format!(
                    "has shape {:?} but the parameter has shape {:?}; gradients must come from backward() on this parameter",
                    g.shape(),
                    var.shape()
                )));
            }
            if !g.dtype().is_float() {
                return Err(bad(format!("has dtype {}; gradients must be float", g.dtype())));
            }
            if g.device() != var.device() {
                return Err(bad(format!(
                    "is on {} but the parameter is on {}; move it with to_device",
                    g.device(),
                    var.device()
                )));
            }
            let g = g.detach().to_dtype(compute_dtype(var.dtype()))?;
            let grad = if maximize { g.neg()? } else { g };
            out.push(Work { group, name, var, grad });
        }
    }
    Ok(out)
}

/// The parameter's value in the compute dtype: the parameter itself, or for f16/bf16 the
/// master copy (created, or re-read when the parameter was changed outside the optimizer).
pub(crate) fn read_param(var: &Var, master: &mut Option<Tensor>) -> Result<Tensor> {
    let p = var.as_tensor().detach();
    if !needs_master(p.dtype()) {
        return Ok(p);
    }
    if let Some(m) = master {
        // Any element where the rounded master differs from the parameter means someone else
        // wrote the parameter; their value wins.
        let changed = m.to_dtype(p.dtype())?.ne(&p)?.max_all()?.to_scalar::<u8>()? != 0;
        if !changed {
            return Ok(m.clone());
        }
    }
    let m = p.to_dtype(DType::F32)?;
    *master = Some(m.clone());
    Ok(m)
}

/// Writes the updated value (compute dtype) into the parameter, keeping it as the master
/// copy for f16/bf16 parameters.
pub(crate) fn write_param(var: &Var, value: Tensor, master: &mut Option<Tensor>) -> Result<()> {
    var.set(&value)?;
    if needs_master(var.dtype()) {
        *master = Some(value);
    }
    Ok(())
}

/// `a + w (b - a)` evaluated the way `torch.lerp` does: from `a` when `|w| < 0.5`, from `b`
/// otherwise (so `w = 1` gives exactly `b`). For f32 tensors the weight is rounded to f32
/// first, as PyTorch does with a Python-float weight.
pub(crate) fn lerp(a: &Tensor, b: &Tensor, w: f64) -> Result<Tensor> {
    let LerpWeights { w, one_minus, from_a } = LerpWeights::new(w, a.dtype());
    let diff = b.sub(a)?;
    if from_a { Ok(a.add(&diff.mul_scalar(w)?)?) } else { Ok(b.sub(&diff.mul_scalar(one_minus)?)?) }
}

/// [`lerp`]'s numbers for weight `w` on tensors of `dtype`: `w` and `1 - w` as it computes them
/// (for f32, `w` rounded to f32 first and `1 - w` taken in f32), and whether it starts from
/// `a` (`|w| < 0.5`) or from `b`. The fused Adam pass (`adam_fused.rs`) uses the same numbers.
pub(crate) struct LerpWeights {
    pub w: f64,
    pub one_minus: f64,
    pub from_a: bool,
}

impl LerpWeights {
    pub(crate) fn new(w: f64, dtype: DType) -> Self {
        let (w, one_minus) = if dtype == DType::F64 {
            (w, 1.0 - w)
        } else {
            let w32 = w as f32;
            (w32 as f64, (1.0f32 - w32) as f64)
        };
        LerpWeights { w, one_minus, from_a: w.abs() < 0.5 }
    }
}

/// The sum of squares of `t` as an f64 (f16/bf16 squared in f32 so they cannot overflow).
pub(crate) fn sum_sq(t: &Tensor) -> Result<f64> {
    let t = t.detach().to_dtype(compute_dtype(t.dtype()))?;
    Ok(t.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A copy of `t`'s values in fresh storage (a later `Var::set` on the source does not reach it).
pub(crate) fn deep_copy(t: &Tensor) -> Result<Tensor> {
    Ok(Var::from_tensor(t)?.as_tensor().detach())
}
