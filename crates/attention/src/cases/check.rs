//! Running a [`Case`] on a backend and comparing every expected tensor (docs/attention.md, "Tolerances").
//!
//! Tolerances, per compared tensor:
//! - f32/f64 inputs, or any tensor whose case sets `atol`/`rtol` (`atol_dX` for gradient X):
//!   elementwise `|got - ref| <= atol + rtol * |ref|`, defaults atol 2e-5, rtol 2e-4.
//! - f16/bf16 inputs without explicit tolerances (the FlashAttention criterion):
//!   `max |got - ref| <= 2 * max |naive - ref| + 1e-5`, where `naive` is the textbook
//!   implementation run in the same low precision ([`super::lowp_forward`]).
//!
//! Non-finite values match only themselves: an expected `-inf` lse (a row with no visible key)
//! passes only for `-inf`, and a NaN never passes.

use super::{Case, lowp_backward, lowp_forward};
use crate::error::{AttentionError, Result};
use crate::flash;
use crate::oracle;
use crate::params::AttentionParams;
use crate::{AttentionGrads, AttentionOutput};
use attune_tensor::{DType, Device, Tensor};

/// Default absolute tolerance of f32 results.
pub const DEFAULT_ATOL: f64 = 2e-5;
/// Default relative tolerance of f32 results.
pub const DEFAULT_RTOL: f64 = 2e-4;
/// Slack added to twice the naive low-precision error.
pub const LOWP_SLACK: f64 = 1e-5;

/// An attention implementation that cases run on. Each maps onto forward/backward calls with
/// the same signatures; the GPU backends move the inputs to their device first and the results
/// back to the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The naive f64 oracle (checks the case file itself against Attune's semantics).
    Oracle,
    /// The CPU flash implementation, [`crate::flash`].
    Flash,
    /// The CUDA kernels on the emulator ([`crate::gpu`] on `Device::Emu`).
    Emu,
    /// The CUDA kernels on GPU 0.
    Cuda,
}

impl Backend {
    /// Short lower-case name for tables and flags.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Oracle => "oracle",
            Backend::Flash => "flash",
            Backend::Emu => "emu",
            Backend::Cuda => "cuda",
        }
    }

    /// The tensor device of a GPU backend.
    fn gpu_device(self) -> Option<Device> {
        match self {
            Backend::Emu => Some(Device::Emu),
            Backend::Cuda => Some(Device::Cuda(0)),
            _ => None,
        }
    }

    /// Forward pass on this backend.
    pub fn forward(self, q: &Tensor, k: &Tensor, v: &Tensor, p: &AttentionParams) -> Result<AttentionOutput> {
        Ok(self.forward_saving_f32(q, k, v, p, false)?.0)
    }

    /// [`Backend::forward`]; with `keep_f32` and f16/bf16 inputs it also returns the f32 output
    /// that the differentiable op keeps for the backward.
    fn forward_saving_f32(
        self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttentionParams,
        keep_f32: bool,
    ) -> Result<(AttentionOutput, Option<Tensor>)> {
        match self {
            Backend::Oracle => {
                let f = oracle::forward(q, k, v, p)?;
                Ok((AttentionOutput { out: f.out, lse: f.lse }, None))
            }
            Backend::Flash => flash::forward_saving_f32(q, k, v, p, keep_f32),
            Backend::Emu | Backend::Cuda => {
                let dev = self.gpu_device().unwrap_or(Device::Emu);
                let on = |t: &Tensor| t.to_device(&dev);
                let (o, o32) = crate::gpu::forward_saving_f32(&on(q)?, &on(k)?, &on(v)?, p, keep_f32)?;
                let cpu = |t: Tensor| t.to_device(&Device::Cpu);
                Ok((AttentionOutput { out: cpu(o.out)?, lse: cpu(o.lse)? }, o32.map(cpu).transpose()?))
            }
        }
    }

    /// Backward pass on this backend, from the forward's `out` and `lse`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        p: &AttentionParams,
    ) -> Result<AttentionGrads> {
        match self {
            Backend::Oracle => {
                let g = oracle::backward(q, k, v, dout, p)?;
                Ok(AttentionGrads { dq: g.dq, dk: g.dk, dv: g.dv })
            }
            Backend::Flash => flash::backward(q, k, v, out, lse, dout, p),
            Backend::Emu | Backend::Cuda => {
                let dev = self.gpu_device().unwrap_or(Device::Emu);
                let on = |t: &Tensor| t.to_device(&dev);
                let g = crate::gpu::backward(&on(q)?, &on(k)?, &on(v)?, &on(out)?, &on(lse)?, &on(dout)?, p)?;
                let cpu = |t: Tensor| t.to_device(&Device::Cpu);
                Ok(AttentionGrads { dq: cpu(g.dq)?, dk: cpu(g.dk)?, dv: cpu(g.dv)? })
            }
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "oracle" => Ok(Backend::Oracle),
            "flash" | "cpu" => Ok(Backend::Flash),
            "emu" => Ok(Backend::Emu),
            "cuda" => Ok(Backend::Cuda),
            other => Err(format!("unknown backend '{other}'; expected oracle, flash (cpu), emu or cuda")),
        }
    }
}

/// How a tensor's error is bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// `|got - ref| <= atol + rtol * |ref|` for every element.
    Elementwise {
        /// Absolute part.
        atol: f64,
        /// Relative part.
        rtol: f64,
    },
    /// `max |got - ref| <= bound` (the low-precision criterion, bound precomputed).
    MaxAbs(f64),
}

/// The comparison of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Which tensor: out, lse, dq, dk or dv.
    pub tensor: &'static str,
    /// Largest `|got - ref|` (infinite for a non-finite mismatch).
    pub max_err: f64,
    /// Error at the element that came closest to (or furthest past) its bound.
    pub worst_err: f64,
    /// The bound at that element.
    pub worst_tol: f64,
    /// Whether every element is within its bound.
    pub pass: bool,
    /// Where it failed first, when it did (flat row-major index and the two values).
    pub note: Option<String>,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Input dtype.
    pub dtype: DType,
    /// Backend that ran it.
    pub backend: Backend,
    /// One entry per compared tensor, in the order out, lse, dq, dk, dv.
    pub metrics: Vec<Metric>,
    /// Set when the backend (or the reference) returned an error instead of results.
    pub error: Option<String>,
}

impl CaseResult {
    /// Whether the backend ran and every compared tensor is within tolerance.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.metrics.iter().all(|m| m.pass)
    }

    /// The metric of one tensor, if it was compared.
    pub fn metric(&self, tensor: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.tensor == tensor)
    }
}

/// Compares `got` against the expected `want` under `bound` (both converted to f64).
pub fn compare(tensor: &'static str, got: &Tensor, want: &Tensor, bound: Bound) -> Result<Metric> {
    if got.dims() != want.dims() {
        return Ok(Metric {
            tensor,
            max_err: f64::INFINITY,
            worst_err: f64::INFINITY,
            worst_tol: 0.0,
            pass: false,
            note: Some(format!("shape {:?}, expected {:?}", got.dims(), want.dims())),
        });
    }
    let (g, w) = (got.to_f64_vec()?, want.to_f64_vec()?);
    let mut m = Metric { tensor, max_err: 0.0, worst_err: 0.0, worst_tol: 0.0, pass: true, note: None };
    let mut worst_ratio = -1.0;
    for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
        let (err, tol) = if g.is_finite() && w.is_finite() {
            let tol = match bound {
                Bound::Elementwise { atol, rtol } => atol + rtol * w.abs(),
                Bound::MaxAbs(b) => b,
            };
            ((g - w).abs(), tol)
        } else if g == w {
            continue; // the same infinity: a fully masked row's -inf lse matches
        } else {
            (f64::INFINITY, 0.0)
        };
        let ratio = if err == 0.0 {
            0.0
        } else if tol > 0.0 {
            err / tol
        } else {
            f64::INFINITY
        };
        m.max_err = m.max_err.max(err);
        if ratio > worst_ratio {
            worst_ratio = ratio;
            m.worst_err = err;
            m.worst_tol = tol;
        }
        if ratio > 1.0 && m.pass {
            m.pass = false;
            m.note = Some(format!("first failure at flat index {i}: got {g}, expected {w}"));
        }
    }
    Ok(m)
}

/// Low-precision inputs without explicit tolerances use the FlashAttention criterion.
fn is_lowp(dt: DType) -> bool {
    matches!(dt, DType::F16 | DType::BF16)
}

/// The error bound of one tensor: explicit or f32 defaults elementwise, else the naive
/// low-precision error (computed lazily by `naive_err`).
fn bound_for(case: &Case, atol: Option<f64>, naive_err: impl FnOnce() -> Result<f64>) -> Result<Bound> {
    if !is_lowp(case.dtype()) || atol.is_some() || case.tol.rtol.is_some() {
        return Ok(Bound::Elementwise {
            atol: atol.unwrap_or(DEFAULT_ATOL),
            rtol: case.tol.rtol.unwrap_or(DEFAULT_RTOL),
        });
    }
    Ok(Bound::MaxAbs(2.0 * naive_err()? + LOWP_SLACK))
}

/// Largest finite `|a - b|` (non-finite pairs are judged by [`compare`] itself).
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.to_f64_vec()?, b.to_f64_vec()?);
    Ok(a.iter().zip(&b).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
}

/// Runs `case` on `backend` (forward, and backward when the case has `dout`) and compares
/// every expected tensor. Backend errors are reported in [`CaseResult::error`], not returned,
/// so one broken case does not hide the others.
pub fn check_case(case: &Case, backend: Backend) -> CaseResult {
    let mut res =
        CaseResult { name: case.name.clone(), dtype: case.dtype(), backend, metrics: Vec::new(), error: None };
    if let Err(e) = run_checks(case, backend, &mut res.metrics) {
        res.error = Some(e.to_string());
    }
    res
}

fn run_checks(case: &Case, backend: Backend, metrics: &mut Vec<Metric>) -> Result<()> {
    let (q, k, v, p) = (&case.q, &case.k, &case.v, &case.params);
    let (fwd, out_f32) = backend.forward_saving_f32(q, k, v, p, true)?;
    // The naive low-precision results, computed at most once and only when a bound needs them.
    let mut naive_fwd = None;
    let mut naive = |case: &Case| -> Result<_> {
        if naive_fwd.is_none() {
            naive_fwd = Some(lowp_forward(&case.q, &case.k, &case.v, &case.params)?);
        }
        naive_fwd.clone().ok_or_else(|| AttentionError::Param("naive forward unavailable".into()))
    };
    let b = bound_for(case, case.tol.atol, || max_abs_diff(&naive(case)?.out, &case.out))?;
    metrics.push(compare("out", &fwd.out, &case.out, b)?);
    if let Some(lse) = &case.lse {
        let b = bound_for(case, case.tol.atol, || max_abs_diff(&naive(case)?.lse, lse))?;
        metrics.push(compare("lse", &fwd.lse, lse, b)?);
    }
    let Some(dout) = &case.dout else { return Ok(()) };
    let dout = dout.to_dtype(q.dtype())?;
    // The backward gets what the differentiable op gives it: the f32 output when there is one,
    // which must be exactly the output before rounding.
    if let Some(o32) = &out_f32 {
        let rounded = o32.to_dtype(q.dtype())?.to_f64_vec()?;
        if rounded != fwd.out.to_f64_vec()? {
            return Err(AttentionError::Param(format!(
                "{backend}: the f32 output does not round to the output ({}); the kernels wrote two different results",
                q.dtype()
            )));
        }
    }
    let g = backend.backward(q, k, v, out_f32.as_ref().unwrap_or(&fwd.out), &fwd.lse, &dout, p)?;
    let mut naive_bwd = None;
    let mut naive_grads = || -> Result<_> {
        if naive_bwd.is_none() {
            naive_bwd = Some(lowp_backward(q, k, v, &dout, p)?);
        }
        naive_bwd.clone().ok_or_else(|| AttentionError::Param("naive backward unavailable".into()))
    };
    let grads = [
        ("dq", &g.dq, case.dq.as_ref(), case.tol.atol_dq),
        ("dk", &g.dk, case.dk.as_ref(), case.tol.atol_dk),
        ("dv", &g.dv, case.dv.as_ref(), case.tol.atol_dv),
    ];
    for (idx, (name, got, want, atol)) in grads.into_iter().enumerate() {
        if let Some(want) = want {
            let b = bound_for(case, atol.or(case.tol.atol), || {
                let n: [Tensor; 3] = naive_grads()?;
                max_abs_diff(&n[idx], want)
            })?;
            metrics.push(compare(name, got, want, b)?);
        }
    }
    Ok(())
}
