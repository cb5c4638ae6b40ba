//! The hybrid loss of a classifier that attends by sampled choices (docs/ram.md,
//! "REINFORCE"): the cross-entropy plus, when the choices were sampled, REINFORCE with the
//! learned baseline, rewarding 1 for a correct final answer. The RAM's glimpse locations and
//! [`crate::HardAttentionPooling`]'s token positions are such choices. The sums and what each
//! part trains are those of [`crate::reinforce`].

use attune_tensor::{CrossEntropyOpts, DType, Tensor};

use crate::error::{NnError, Result};
use crate::loss::cross_entropy;
use crate::reinforce::reinforce_loss;

/// The parts of the hybrid loss and what a training log reports about them.
#[derive(Debug, Clone)]
pub struct HybridLoss {
    /// `classifier + policy + baseline`: what to backpropagate.
    pub total: Tensor,
    /// The cross-entropy of the final logits (mean over the batch).
    pub classifier: Tensor,
    /// The REINFORCE term, `mean_b sum_t -(R_b - b_bt) log p_bt`; `None` without sampled
    /// log-probabilities (the RAM's random policy, an evaluation pass).
    pub policy: Option<Tensor>,
    /// The baseline's squared error `mean_bt (b_bt - R_b)^2`; `None` as `policy`.
    pub baseline: Option<Tensor>,
    /// Mean reward: the fraction of episodes classified right.
    pub reward: f64,
    /// Mean baseline prediction over episodes and glimpses; `None` without a baseline.
    pub baseline_mean: Option<f64>,
    /// Variance over the batch of each episode's REINFORCE summand `sum_t (R_b - b_bt) log p_bt`
    /// (unbiased; 0 for one episode): the noise the policy gradient is built from, which the
    /// baseline exists to reduce. `None` without a policy loss.
    pub reinforce_var: Option<f64>,
    /// Episodes classified right (= `reward * batch`).
    pub correct: usize,
}

/// The hybrid loss of `logits (batch, classes)` against `targets (batch,)` (i64 class
/// indices); with `log_probs (batch, choices)` of the sampled choices, also REINFORCE, with
/// the baseline's predictions `baselines (batch, choices)` when given.
///
/// Errors: targets not `(batch,)` of i64, a target outside `0..classes`, or the shapes
/// [`reinforce_loss`] refuses.
pub fn hybrid_loss(
    logits: &Tensor,
    targets: &Tensor,
    log_probs: Option<&Tensor>,
    baselines: Option<&Tensor>,
) -> Result<HybridLoss> {
    const OP: &str = "hybrid_loss";
    let &[batch, classes] = logits.dims() else {
        return Err(NnError::input(OP, format!("logits must be (batch, classes), got {:?}", logits.shape())));
    };
    if targets.dims() != [batch] || targets.dtype() != DType::I64 {
        return Err(NnError::input(
            OP,
            format!(
                "targets must be (batch,) = [{batch}] class indices of dtype I64, got {:?} of {:?}",
                targets.shape(),
                targets.dtype()
            ),
        ));
    }
    let host_targets = targets.to_vec::<i64>()?;
    if let Some(t) = host_targets.iter().find(|&&t| t < 0 || t as usize >= classes) {
        return Err(NnError::input(OP, format!("target {t} is outside 0..{classes}")));
    }
    let classifier = cross_entropy(logits, targets, CrossEntropyOpts::default())?;
    let predicted = logits.detach().argmax(1usize, false)?.to_vec::<i64>()?;
    let rewards: Vec<f64> = predicted.iter().zip(&host_targets).map(|(p, t)| f64::from(u8::from(p == t))).collect();
    let correct = rewards.iter().filter(|&&r| r > 0.0).count();
    let reward = correct as f64 / batch as f64;
    let mut total = classifier.clone();
    let (mut policy, mut baseline, mut baseline_mean, mut reinforce_var) = (None, None, None, None);
    if let Some(log_probs) = log_probs {
        let r = Tensor::from_vec(rewards.clone(), [batch], &logits.device())?.to_dtype(log_probs.dtype())?;
        let parts = reinforce_loss(log_probs, &r, baselines)?;
        total = total.add(&parts.total()?)?;
        let lp = log_probs.detach().to_f64_vec()?;
        let glimpses = log_probs.dims()[1];
        let b = match baselines {
            Some(b) => b.detach().to_f64_vec()?,
            None => vec![0.0; lp.len()],
        };
        let summands: Vec<f64> = (0..batch)
            .map(|e| (0..glimpses).map(|t| (rewards[e] - b[e * glimpses + t]) * lp[e * glimpses + t]).sum())
            .collect();
        let mean = summands.iter().sum::<f64>() / batch as f64;
        let ss: f64 = summands.iter().map(|v| (v - mean) * (v - mean)).sum();
        reinforce_var = Some(if batch > 1 { ss / (batch - 1) as f64 } else { 0.0 });
        baseline_mean = baselines.is_some().then(|| b.iter().sum::<f64>() / b.len() as f64);
        policy = Some(parts.policy);
        baseline = parts.baseline;
    }
    Ok(HybridLoss { total, classifier, policy, baseline, reward, baseline_mean, reinforce_var, correct })
}
