//! Cross-validation: `attune train` on a text task with `folds = k` and no `fold` trains one
//! run per fold, `<dir>/fold-<i>` with `fold = i` (each an ordinary run directory that
//! `--resume` continues), then writes `<dir>/summary.json`: the mean and standard deviation of
//! the folds' test accuracies and each fold's figures, and `<dir>/folds.json`, which text lands
//! in which fold (its name in the source, its label), for peers to score the same folds. A fold
//! whose run directory already holds a finished run is read back, not trained again; an
//! interrupted fold is continued with `attune train --resume <dir>/fold-<i>`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::ResolvedConfig;
use crate::tasks::TaskConfig;
use crate::train::{Ending, LoopOptions, Summary, train};

/// `summary.json` of a cross-validated run: a [`Summary`] of the whole (so `attune search`
/// reads it as it reads any run's) plus the folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    /// The folds taken together: `eval_accuracy` and `eval_loss` are the means over the folds,
    /// `eval_targets`, `steps` and `elapsed_s` the sums, `eval_split` is `"test"`, and
    /// `eval_metrics` holds `accuracy_std` (the sample standard deviation of the folds' test
    /// accuracies) and each fold's accuracy as `accuracy_fold<i>`.
    #[serde(flatten)]
    pub total: Summary,
    /// Folds.
    pub folds: usize,
    /// Each fold's summary, in fold order.
    pub per_fold: Vec<Summary>,
}

/// The folds to run when `cfg` asks for every fold of a cross-validation, else `None`.
pub fn folds_to_run(cfg: &ResolvedConfig) -> Option<usize> {
    match &cfg.task {
        TaskConfig::TextClassification(t) if t.fold.is_none() => t.folds,
        _ => None,
    }
}

/// Trains every fold of `cfg` under `dir` and writes the cross-validation summary; `None`
/// when a fold was interrupted (its directory resumes with `attune train --resume`).
pub fn cross_validate(cfg: &ResolvedConfig, folds: usize, dir: &Path, opts: &LoopOptions) -> Result<Option<CvSummary>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let TaskConfig::TextClassification(t) = &cfg.task {
        let listing: Vec<serde_json::Value> = crate::tasks::text::fold_listing(t, folds)?
            .into_iter()
            .map(|(name, label, fold)| serde_json::json!({"text": name, "label": label, "fold": fold}))
            .collect();
        let doc = serde_json::json!({"folds": folds, "texts": listing});
        attune_persist::write_atomic(&dir.join("folds.json"), serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    let mut per_fold = Vec::with_capacity(folds);
    for i in 0..folds {
        let mut run = cfg.clone().into_inner();
        if let TaskConfig::TextClassification(t) = &mut run.task {
            t.fold = Some(i);
        }
        let run = run.resolve()?;
        let fold_dir = dir.join(format!("fold-{i}"));
        let done = fold_dir.join("summary.json");
        if !opts.overwrite && done.is_file() {
            let s: Summary = serde_json::from_slice(&std::fs::read(&done)?)
                .with_context(|| format!("reading the finished fold {}", done.display()))?;
            per_fold.push(s);
            continue;
        }
        if !opts.quiet {
            eprintln!("attune: fold {i} of {folds} → {}", fold_dir.display());
        }
        if !opts.overwrite && fold_dir.join("config.json").is_file() {
            bail!(
                "{} holds an unfinished run: continue it with `attune train --resume {}`, then run this command \
                 again (finished folds are read back), or start over with --overwrite",
                fold_dir.display(),
                fold_dir.display()
            );
        }
        match train(run, &fold_dir, opts).with_context(|| format!("fold {i} of {folds}"))? {
            Ending::Done(s) => per_fold.push(s),
            Ending::Interrupted { .. } => return Ok(None),
            Ending::Follower { .. } => bail!("cross-validation does not run distributed; give each job one --fold"),
        }
    }
    let summary = CvSummary { total: combine(&per_fold)?, folds, per_fold };
    attune_persist::write_atomic(&dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(Some(summary))
}

/// The folds' summaries taken together (see [`CvSummary::total`]).
fn combine(per_fold: &[Summary]) -> Result<Summary> {
    let first = per_fold.first().context("cross-validation ran no fold")?;
    let n = per_fold.len() as f64;
    let accs: Vec<f64> = per_fold.iter().map(|s| s.eval_accuracy).collect();
    let mean = accs.iter().sum::<f64>() / n;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let mut eval_metrics: std::collections::BTreeMap<String, f64> =
        accs.iter().enumerate().map(|(i, a)| (format!("accuracy_fold{i}"), *a)).collect();
    eval_metrics.insert("accuracy_std".into(), var.sqrt());
    let elapsed_s = per_fold.iter().map(|s| s.elapsed_s).sum::<f64>();
    Ok(Summary {
        task: first.task.clone(),
        eval_accuracy: mean,
        eval_loss: per_fold.iter().map(|s| s.eval_loss).sum::<f64>() / n,
        eval_split: "test".into(),
        eval_targets: per_fold.iter().map(|s| s.eval_targets).sum(),
        best_valid_accuracy: None,
        steps: per_fold.iter().map(|s| s.steps).sum(),
        elapsed_s,
        tokens_per_s: per_fold.iter().map(|s| s.tokens_per_s * s.elapsed_s).sum::<f64>() / elapsed_s.max(1e-9),
        stopped: format!("{} folds", per_fold.len()),
        parameters: first.parameters,
        device: first.device.clone(),
        skipped_steps: per_fold.iter().map(|s| s.skipped_steps).sum(),
        eval_metrics,
    })
}
