//! Turning task batches into tensors, computing loss and accuracy on them.

use anyhow::{Result, bail};
use attune_nn::{Ctx, HybridLoss, RamMode, hybrid_loss, loss, ram_loss};
use attune_tensor::{CrossEntropyOpts, DType, Device, Tensor};

use crate::net::Net;
use crate::tasks::{Batch, IGNORE_INDEX};

/// A batch on the device: tokens `(B, S)` as i64 or images `(B, rows, cols)`, plus what the
/// loss needs.
pub struct DeviceBatch {
    /// Token ids `(batch, seq)`; `(batch, 0)` for an image batch.
    pub tokens: Tensor,
    /// Images `(batch, rows, cols)` in f32 (image tasks).
    pub images: Option<Tensor>,
    /// Per-position targets `(batch * seq)` (LM) or per-sequence labels `(batch)` (classifier).
    pub targets: Tensor,
    /// Valid lengths of padded sequences (classifier).
    pub lengths: Option<Vec<usize>>,
    /// The targets on the host, for accuracy.
    pub host_targets: Vec<i64>,
    /// Tokens in the batch (for throughput); images for an image batch.
    pub tokens_count: usize,
}

impl DeviceBatch {
    /// What the transformer reads: the images of an image batch, else the tokens.
    pub fn input(&self) -> &Tensor {
        self.images.as_ref().unwrap_or(&self.tokens)
    }

    /// Copies a task batch to `device`.
    pub fn new(batch: &Batch, device: &Device) -> Result<DeviceBatch> {
        Ok(match batch {
            Batch::Seq(b) => {
                let tokens: Vec<i64> = b.inputs.iter().map(|&t| t as i64).collect();
                DeviceBatch {
                    tokens: Tensor::from_vec(tokens, [b.batch, b.seq_len], device)?,
                    images: None,
                    targets: Tensor::from_vec(b.targets.clone(), [b.batch * b.seq_len], device)?,
                    lengths: None,
                    host_targets: b.targets.clone(),
                    tokens_count: b.batch * b.seq_len,
                }
            }
            Batch::Class(b) => {
                let tokens: Vec<i64> = b.tokens.iter().map(|&t| t as i64).collect();
                DeviceBatch {
                    tokens: Tensor::from_vec(tokens, [b.batch, b.seq_len], device)?,
                    images: None,
                    targets: Tensor::from_vec(b.labels.clone(), [b.batch], device)?,
                    lengths: Some(b.lengths.clone()),
                    host_targets: b.labels.clone(),
                    tokens_count: b.lengths.iter().sum(),
                }
            }
            Batch::Image(b) => DeviceBatch {
                tokens: Tensor::from_vec(Vec::<i64>::new(), [b.batch, 0], device)?,
                images: Some(Tensor::from_vec(b.pixels.clone(), [b.batch, b.rows, b.cols], device)?),
                targets: Tensor::from_vec(b.labels.clone(), [b.batch], device)?,
                lengths: None,
                host_targets: b.labels.clone(),
                tokens_count: b.batch,
            },
        })
    }
}

/// What a hybrid loss (the RAM's, a hard pooling's) reports about one training batch
/// (docs/metrics.md).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RlStats {
    /// Mean reward (1 for a right final answer).
    pub reward: f64,
    /// Mean baseline prediction.
    pub baseline: f64,
    /// The REINFORCE term of the loss.
    pub policy_loss: f64,
    /// Variance over the batch of each episode's REINFORCE summand.
    pub reinforce_var: f64,
}

/// Loss (mean over supervised targets) and `(correct, counted)` of one forward pass.
pub struct StepOutput {
    /// The scalar cross-entropy (differentiable when gradients are enabled): what is reported.
    pub loss: Tensor,
    /// What to backpropagate: the loss, plus the REINFORCE and baseline terms for the RAM.
    pub objective: Tensor,
    /// The REINFORCE figures (the RAM's learned policy, a hard pooling; training passes only).
    pub rl: Option<RlStats>,
    /// Correct predictions among supervised targets.
    pub correct: usize,
    /// Supervised targets.
    pub counted: usize,
}

/// Runs the model on `batch` and computes the loss and accuracy counts.
///
/// `label_smoothing` (`train.label_smoothing`) smooths the cross-entropy of training passes
/// (`ctx.train`); evaluation always scores the plain one. The RAM samples its glimpse paths
/// from `ctx.rng` in training and looks at the policy's mean in evaluation (`ctx.train ==
/// false`); a classifier with hard pooling samples its positions in training and takes the
/// most probable ones in evaluation.
pub fn forward(net: &Net, batch: &DeviceBatch, ctx: &mut Ctx, label_smoothing: f64) -> Result<StepOutput> {
    let smoothing = if ctx.train { label_smoothing } else { 0.0 };
    let model = match net {
        Net::Transformer(m) => m,
        Net::Ram { model, .. } => {
            let Some(images) = &batch.images else {
                bail!("the recurrent attention model needs an image batch; this task yields tokens")
            };
            let mode = if ctx.train { RamMode::Sample } else { RamMode::Mean };
            let out = model.forward(images, mode, &mut ctx.rng)?;
            return rewarded(ram_loss(&out, &batch.targets)?, batch.host_targets.len(), smoothing);
        }
    };
    let (logits, policy) = model.forward_policy(batch.input(), batch.lengths.as_deref(), ctx)?;
    if let Some(policy) = policy {
        let l = hybrid_loss(&logits, &batch.targets, Some(&policy.log_prob), Some(&policy.baseline))?;
        return rewarded(l, batch.host_targets.len(), smoothing);
    }
    let classes = *logits.dims().last().unwrap_or(&0);
    let flat = logits.reshape([logits.elem_count() / classes.max(1), classes])?;
    let opts = CrossEntropyOpts { label_smoothing: smoothing, ..CrossEntropyOpts::default() };
    let loss = loss::cross_entropy(&flat, &batch.targets, opts)?;
    let (correct, counted) = accuracy_counts(&flat, &batch.host_targets)?;
    Ok(StepOutput { objective: loss.clone(), loss, rl: None, correct, counted })
}

/// The step output of a hybrid loss (the RAM's, a hard pooling's): the cross-entropy is
/// reported, the whole hybrid loss trained, and the REINFORCE figures logged when it has them.
/// Label smoothing is refused here, the one place every hybrid loss passes: its reward is the
/// unsmoothed answer.
fn rewarded(l: HybridLoss, counted: usize, label_smoothing: f64) -> Result<StepOutput> {
    if label_smoothing > 0.0 {
        bail!(
            "label_smoothing {label_smoothing} applies to the plain cross-entropy; the RAM and hard pooling train a \
             hybrid loss whose reward is the unsmoothed answer (set label_smoothing to 0)"
        );
    }
    let rl = match (&l.policy, l.reinforce_var) {
        (Some(p), Some(var)) => Some(RlStats {
            reward: l.reward,
            baseline: l.baseline_mean.unwrap_or(0.0),
            policy_loss: p.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            reinforce_var: var,
        }),
        _ => None,
    };
    Ok(StepOutput { loss: l.classifier, objective: l.total, rl, correct: l.correct, counted })
}

/// Argmax accuracy of `logits (n, classes)` against targets, skipping ignored ones.
pub fn accuracy_counts(logits: &Tensor, targets: &[i64]) -> Result<(usize, usize)> {
    let classes = logits.dims()[1];
    if logits.dims()[0] != targets.len() {
        bail!("{} logit rows for {} targets", logits.dims()[0], targets.len());
    }
    // Only supervised rows are read back (MQAR supervises 8 of 64 positions).
    let rows: Vec<usize> = (0..targets.len()).filter(|&i| targets[i] != IGNORE_INDEX).collect();
    let values = logits.detach().to_dtype(DType::F32)?.to_vec::<f32>()?;
    let correct = rows
        .iter()
        .filter(|&&i| {
            let row = &values[i * classes..(i + 1) * classes];
            let best =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (j, &v)| if v > b.1 { (j, v) } else { b });
            best.0 as i64 == targets[i]
        })
        .count();
    Ok((correct, rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelSpec;
    use crate::tasks::{self, Split, TaskConfig};

    fn loss_of(out: StepOutput) -> f64 {
        out.loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// The smoothed cross-entropy is `(1 - s) CE + s U` (U: the mean over classes of
    /// `-log p`), affine in `s`: equal steps in `s` move the loss by equal, non-zero amounts,
    /// and evaluation ignores `s`.
    #[test]
    fn label_smoothing_is_affine_in_s_and_only_in_training() {
        let task = tasks::build(&TaskConfig::Mqar(Default::default()), 0).unwrap();
        let spec = ModelSpec { d_model: 32, n_layers: 1, n_heads: 2, ..ModelSpec::default() };
        let net = Net::build(task.as_ref(), &spec.resolve(task.as_ref()), 0, &Device::Cpu).unwrap();
        let batch = DeviceBatch::new(&task.batch(Split::Train, 0, 4).unwrap(), &Device::Cpu).unwrap();
        let train = |s: f64| loss_of(forward(&net, &batch, &mut Ctx::train(1), s).unwrap());
        let (l0, l3, l6) = (train(0.0), train(0.3), train(0.6));
        assert!((l3 - l0).abs() > 1e-3, "smoothing changes the training loss: {l0} vs {l3}");
        assert!(((l6 - l3) - (l3 - l0)).abs() < 1e-4, "affine in s: {l0}, {l3}, {l6}");
        let eval = loss_of(forward(&net, &batch, &mut Ctx::eval(), 0.3).unwrap());
        assert!((eval - l0).abs() < 1e-6, "evaluation scores the plain loss: {eval} vs {l0}");
    }
}
