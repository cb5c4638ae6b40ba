//! Held-out evaluation: mean loss and accuracy over fresh batches of a split.

use anyhow::Result;
use attune_nn::Ctx;
use attune_tensor::Device;

use crate::batch::{DeviceBatch, forward};
use crate::net::Net;
use crate::tasks::{Split, Task};

/// Loss and accuracy over held-out data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy per supervised target.
    pub loss: f64,
    /// Fraction of supervised targets predicted correctly.
    pub accuracy: f64,
    /// Supervised targets counted.
    pub targets: usize,
}

/// Evaluates on `batches` batches of `split` (all of a finite split, at most `batches`).
pub fn evaluate(
    model: &Net,
    task: &dyn Task,
    split: Split,
    batches: usize,
    batch_size: usize,
    device: &Device,
) -> Result<EvalResult> {
    let _guard = attune_tensor::no_grad();
    let n = match task.split_size(split) {
        Some(examples) => examples.div_ceil(batch_size).min(batches),
        None => batches,
    };
    let (mut loss_sum, mut correct, mut counted) = (0.0, 0, 0);
    let mut ctx = Ctx::eval();
    for i in 0..n {
        let batch = DeviceBatch::new(&task.batch(split, i as u64, batch_size)?, device)?;
        let out = forward(model, &batch, &mut ctx, 0.0)?;
        loss_sum += out.loss.to_dtype(attune_tensor::DType::F64)?.to_scalar::<f64>()? * out.counted as f64;
        correct += out.correct;
        counted += out.counted;
    }
    let c = counted.max(1) as f64;
    Ok(EvalResult { loss: loss_sum / c, accuracy: correct as f64 / c, targets: counted })
}

/// The task's own figures for summary.json's `eval_metrics`: the RAM's errors
/// ([`ram_errors`]) or a recommendation task's ranking metrics
/// ([`crate::ranking::ranking_metrics`], over the whole split); empty for other tasks.
pub fn task_metrics(
    net: &Net,
    task: &dyn Task,
    split: Split,
    (batches, micro): (usize, usize),
    accuracy: f64,
    (seed, device): (u64, &Device),
) -> Result<std::collections::BTreeMap<String, f64>> {
    let mut m = ram_errors(net, task, split, (batches, micro), accuracy, (seed, device))?;
    m.extend(crate::ranking::ranking_metrics(net, task, split, micro, device)?);
    Ok(m)
}

/// The RAM's final errors on the `batches` batches of `micro` examples of `split` that
/// [`evaluate`] measured: `error` from the policy's mean path (its `accuracy`) and
/// `error_averaged` from class probabilities averaged over the task's sampled glimpse paths
/// (test-time averaging), drawn from a stream keyed by the run's seed so the figure is
/// reproducible. Empty for the transformer.
pub(crate) fn ram_errors(
    net: &Net,
    task: &dyn Task,
    split: Split,
    (batches, micro): (usize, usize),
    accuracy: f64,
    (seed, device): (u64, &Device),
) -> Result<std::collections::BTreeMap<String, f64>> {
    use anyhow::Context;
    let Net::Ram { model, test_paths } = net else {
        return Ok(Default::default());
    };
    let n = match task.split_size(split) {
        Some(examples) => examples.div_ceil(micro).min(batches),
        None => batches,
    };
    let mut rng = attune_tensor::Rng::new(seed ^ attune_rng::tag(b"test_paths"));
    let (mut right, mut counted) = (0, 0);
    for i in 0..n {
        let batch = DeviceBatch::new(&task.batch(split, i as u64, micro)?, device)?;
        let images = batch.images.as_ref().context("the RAM task yielded a batch without images")?;
        let probs = model.predict_averaged(images, *test_paths, &mut rng)?;
        let (c, k) = crate::batch::accuracy_counts(&probs, &batch.host_targets)?;
        right += c;
        counted += k;
    }
    let averaged = 1.0 - right as f64 / counted.max(1) as f64;
    Ok([("error".to_string(), 1.0 - accuracy), ("error_averaged".to_string(), averaged)].into_iter().collect())
}

/// The held-out split for final numbers: `test` when the task has one, else `valid`.
pub fn final_split(task: &dyn Task) -> Split {
    if task.split_size(Split::Test) == Some(0) { Split::Valid } else { Split::Test }
}

/// What `attune eval` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    /// Task name.
    pub task: String,
    /// Split measured.
    pub split: String,
    /// Mean loss.
    pub loss: f64,
    /// Accuracy.
    pub accuracy: f64,
    /// Supervised targets counted.
    pub targets: usize,
    /// Step of the checkpoint.
    pub step: Option<u64>,
    /// The task's own figures, as summary.json's `eval_metrics` (the RAM's `error` and
    /// `error_averaged`, recommendation's `hr@10`, `ndcg@10` and their sampled forms); absent
    /// when the task has none.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_metrics: std::collections::BTreeMap<String, f64>,
}

/// Loads a run directory's model and measures it on `batches` fresh held-out batches.
pub fn evaluate_checkpoint(
    dir: &std::path::Path,
    saved: &crate::config::SavedConfig,
    batches: usize,
) -> Result<EvalReport> {
    use anyhow::Context;
    let _precision = saved.train.precision.enter()?;
    let device = crate::train::resolve_device(&saved.device)?;
    let task = crate::tasks::build(&saved.task, saved.train.seed).context("rebuilding the task")?;
    let model = Net::build(task.as_ref(), &saved.model, saved.train.seed, &device)?;
    let (newest, _) = crate::runstate::newest_valid(dir, crate::runstate::OnDamage::Refuse)?;
    let c = newest.with_context(|| format!("{} has no committed checkpoint to evaluate", dir.display()))?;
    let path = c.path("model.safetensors");
    let bytes = c.read("model.safetensors")?;
    let file = attune_nn::checkpoint::parse_tensors(&path, &bytes)?;
    let step = file.metadata.get("step").and_then(|s| s.parse().ok());
    attune_nn::checkpoint::load_state_dict(
        &path,
        model.store(),
        file.tensors,
        attune_nn::LoadOptions { strict: true, convert_dtype: true },
    )?;
    let split = final_split(task.as_ref());
    let bs = saved.train.batch_size / saved.train.grad_accum.max(1);
    let ev = evaluate(&model, task.as_ref(), split, batches, bs, &device)?;
    let eval_metrics =
        task_metrics(&model, task.as_ref(), split, (batches, bs), ev.accuracy, (saved.train.seed, &device))?;
    Ok(EvalReport {
        task: task.name().into(),
        split: split.name().into(),
        loss: ev.loss,
        accuracy: ev.accuracy,
        targets: ev.targets,
        step,
        eval_metrics,
    })
}
