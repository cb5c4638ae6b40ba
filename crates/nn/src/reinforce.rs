//! Hard attention trained by REINFORCE (Williams 1992), as in the Recurrent Attention Model
//! (Mnih et al. 2014; docs/ram.md, "REINFORCE"): the location network outputs a mean, the
//! location is sampled from `N(mean, sigma^2 I)` with a fixed `sigma`, and the policy is
//! trained through the log-probability of the sample it drew.
//!
//! What carries gradients, and what does not:
//!
//! - the **sample** is a constant ([`sample_gaussian`] returns it detached, and
//!   [`gaussian_log_prob`] detaches it again): no gradient flows through the sampled location,
//!   neither from the classifier (the glimpse sensor passes none) nor from its own log-prob;
//! - the **log-probability** is differentiable in the mean only: `d log p / d mean =
//!   (sample - mean) / sigma^2`;
//! - the **advantage** `R - b` is detached in the policy loss, so the policy loss moves the
//!   policy and never the baseline; the **reward** `R` is a constant everywhere (detached in the
//!   baseline loss too), so the baseline loss moves the baseline and nothing else.

use attune_tensor::{Reduction, Rng, Tensor};

use crate::error::{NnError, Result};
use crate::loss::mse;

/// `ln(2 pi) / 2`, the per-dimension constant of a Gaussian log-density.
const HALF_LN_TAU: f64 = 0.918_938_533_204_672_8;

fn check_sigma(op: &'static str, sigma: f64) -> Result<()> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(NnError::input(
            op,
            format!(
                "sigma must be finite and > 0, got {sigma}; the RAM uses a fixed standard deviation such as 0.05 to 0.2"
            ),
        ));
    }
    Ok(())
}

/// Draws `mean + sigma * z` with `z ~ N(0, I)` from `rng`, in `mean`'s shape, dtype and device,
/// **detached**: the sample is an action, not a function of the mean for autograd.
///
/// Compute the log-probability of this sample, unclamped, with [`gaussian_log_prob`]; clamp a
/// copy to `[-1, 1]` for the glimpse sensor (`sample.clamp(-1.0, 1.0)`).
pub fn sample_gaussian(mean: &Tensor, sigma: f64, rng: &mut Rng) -> Result<Tensor> {
    check_sigma("sample_gaussian", sigma)?;
    let mean = mean.detach();
    Ok(mean.add(&mean.randn_like(rng)?.mul_scalar(sigma)?)?)
}

/// The log-density of `sample` under `N(mean, sigma^2 I)` over the last dim:
/// `sum_d [-(sample_d - mean_d)^2 / (2 sigma^2) - ln sigma - ln(2 pi) / 2]`, shape `mean`'s
/// without its last dim (for locations `(batch, 2)`: `(batch,)`).
///
/// Differentiable in `mean` only; `sample` is detached (no gradient through the sampled
/// location) and converted to `mean`'s dtype. Errors: `sigma` not finite and positive,
/// `mean` of rank 0 or not floating point, `sample` of another shape.
pub fn gaussian_log_prob(mean: &Tensor, sample: &Tensor, sigma: f64) -> Result<Tensor> {
    const OP: &str = "gaussian_log_prob";
    check_sigma(OP, sigma)?;
    if mean.rank() == 0 || !mean.dtype().is_float() {
        return Err(NnError::input(
            OP,
            format!(
                "mean must be a float tensor (..., dims) with the location in its last dim, got {:?} of {:?}",
                mean.shape(),
                mean.dtype()
            ),
        ));
    }
    if sample.shape() != mean.shape() {
        return Err(NnError::input(
            OP,
            format!("sample {:?} and mean {:?} must have the same shape", sample.shape(), mean.shape()),
        ));
    }
    let diff = sample.detach().to_dtype(mean.dtype())?.sub(mean)?;
    let per_dim = diff.sqr()?.mul_scalar(-0.5 / (sigma * sigma))?.add_scalar(-(sigma.ln() + HALF_LN_TAU))?;
    Ok(per_dim.sum(mean.rank() - 1, false)?)
}

/// The two losses of REINFORCE with a baseline; train on their sum (plus the classifier's).
#[derive(Debug, Clone)]
pub struct ReinforceLoss {
    /// `mean_b sum_t -(R_b - b_bt) * log p_bt`, with `R - b` detached: its gradient is the
    /// REINFORCE estimate of `-d E[R] / d theta` for the policy's parameters only.
    pub policy: Tensor,
    /// `mean_bt (b_bt - R_b)^2` with `R` detached, training the baseline to predict the
    /// reward; `None` without a baseline.
    pub baseline: Option<Tensor>,
}

impl ReinforceLoss {
    /// `policy + baseline` (just `policy` without a baseline).
    pub fn total(&self) -> Result<Tensor> {
        Ok(match &self.baseline {
            Some(b) => self.policy.add(b)?,
            None => self.policy.clone(),
        })
    }
}

/// The REINFORCE losses of an episode batch: `log_probs (batch, glimpses)` of the locations
/// sampled (from [`gaussian_log_prob`]), `rewards (batch,)` (the RAM's: 1 when the final
/// classification is right, else 0), and optionally `baselines (batch, glimpses)`, one
/// prediction of the reward per glimpse (the RAM's `b_t`, a function of the core state).
///
/// Without a baseline the advantage is `R` itself. Rewards are constants: they are detached
/// wherever they appear. The policy loss sums over glimpses (every location of an episode
/// earns the episode's reward) and averages over the batch.
///
/// Errors: `log_probs` not rank 2 or empty, `rewards` not `(batch,)`, `baselines` not the shape of
/// `log_probs`, or dtypes that differ.
pub fn reinforce_loss(log_probs: &Tensor, rewards: &Tensor, baselines: Option<&Tensor>) -> Result<ReinforceLoss> {
    const OP: &str = "reinforce_loss";
    let &[batch, glimpses] = log_probs.dims() else {
        return Err(NnError::input(
            OP,
            format!("log_probs must be (batch, glimpses), got {:?}; unsqueeze a single glimpse", log_probs.shape()),
        ));
    };
    if batch == 0 || glimpses == 0 {
        return Err(NnError::input(
            OP,
            format!(
                "log_probs is {:?}; an episode batch needs at least one episode and one glimpse",
                log_probs.shape()
            ),
        ));
    }
    if rewards.dims() != [batch] {
        return Err(NnError::input(
            OP,
            format!("rewards must be (batch,) = [{batch}] (one per episode), got {:?}", rewards.shape()),
        ));
    }
    if let Some(b) = baselines
        && b.shape() != log_probs.shape()
    {
        return Err(NnError::input(
            OP,
            format!(
                "baselines {:?} must have the shape of log_probs {:?} (one per glimpse)",
                b.shape(),
                log_probs.shape()
            ),
        ));
    }
    for (what, t) in [Some(("rewards", rewards)), baselines.map(|b| ("baselines", b))].into_iter().flatten() {
        if t.dtype() != log_probs.dtype() {
            return Err(NnError::input(
                OP,
                format!("{what} have dtype {:?} but log_probs {:?}; convert one", t.dtype(), log_probs.dtype()),
            ));
        }
    }
    let reward = rewards.detach().unsqueeze(1usize)?.broadcast_as([batch, glimpses])?;
    let advantage = match baselines {
        Some(b) => reward.sub(&b.detach())?,
        None => reward.clone(),
    };
    let policy = advantage.mul(log_probs)?.neg()?.sum(1usize, false)?.mean_all()?;
    let baseline = match baselines {
        Some(b) => Some(mse(b, &reward.contiguous()?, Reduction::Mean)?),
        None => None,
    };
    Ok(ReinforceLoss { policy, baseline })
}
