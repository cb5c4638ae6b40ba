//! A run's checkpoints: each one a directory `checkpoints/step-NNNNNNNNN/` committed whole by
//! attune-persist (docs/persistence.md), holding `model.safetensors` (PyTorch names),
//! `optimizer.safetensors`, `best.safetensors` (early stopping's best weights), `state.json`
//! (step, streams, counters, the unfinished train row, the metrics length it covers) and the
//! run's `config.json`. Loading verifies every file's BLAKE3 first; a resume falls back to the
//! previous checkpoint when the newest is damaged.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use attune_nn::checkpoint::{self, LoadOptions};
use attune_optim::{EarlyStopping, EarlyStoppingState, Optimizer, OptimizerState, PlateauState, ReduceOnPlateau};
use attune_persist::{Committed, Staging, link_atomic, remove_committed};
use attune_tensor::Rng;
use serde::{Deserialize, Serialize};

use crate::batch::RlStats;
use crate::metrics::{MetricRow, RlRow};
use crate::net::Net;
use crate::rundir;

/// Counters and streams a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps done.
    pub step: u64,
    /// Dropout stream `(seed, offset)`.
    pub dropout_rng: (u64, u64),
    /// The learning rate schedules scale (lowered by ReduceOnPlateau).
    pub base_lr: f64,
    /// Seconds of training so far.
    pub elapsed_s: f64,
    /// Tokens trained on so far.
    pub tokens_seen: u64,
    /// Early-stopping counters.
    pub early_stopping: Option<EarlyStoppingState>,
    /// ReduceOnPlateau counters.
    pub plateau: Option<PlateauState>,
    /// Best held-out accuracy and its step.
    pub best_accuracy: Option<(u64, f64)>,
    /// The optimizer's scalar state (step counts, lr).
    pub optimizer: serde_json::Value,
    /// Steps dropped for a non-finite loss or gradient norm (`on_nonfinite = skip`).
    #[serde(default)]
    pub skipped_steps: u64,
    /// The training row being accumulated (steps since the last row), so that a resumed run
    /// logs the rows an uninterrupted one would.
    #[serde(default)]
    pub window: Window,
    /// Bytes of `metrics.jsonl` this checkpoint covers; a resume cuts the file back to them.
    #[serde(default)]
    pub metrics_bytes: u64,
    /// Held-out accuracy of the latest evaluation (retention keeps the best checkpoint).
    #[serde(default)]
    pub last_valid_accuracy: Option<f64>,
}

/// Training measurements since the last training row (finite steps only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Sum of the steps' mean losses.
    pub loss: f64,
    /// Correct targets.
    pub correct: usize,
    /// Counted targets.
    pub counted: usize,
    /// Steps added.
    pub steps: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Seconds spent (all steps since the last row, skipped ones too).
    pub time: f64,
    /// Gradient norm of the last step added.
    pub grad_norm: f64,
    /// Sums of the RAM's REINFORCE figures over `rl_steps` steps.
    #[serde(default)]
    pub rl: Option<(RlSums, u64)>,
    /// Seconds of `time` spent in collectives (a distributed run).
    #[serde(default)]
    pub comm_time: f64,
}

/// Sums of [`RlStats`] over steps (serialised with a run's state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RlSums {
    /// Sum of mean rewards.
    pub reward: f64,
    /// Sum of mean baselines.
    pub baseline: f64,
    /// Sum of policy losses.
    pub policy_loss: f64,
    /// Sum of REINFORCE variances.
    pub reinforce_var: f64,
}

impl Window {
    /// Adds one step's REINFORCE figures.
    pub fn add_rl(&mut self, s: &RlStats) {
        let (sums, n) = self.rl.get_or_insert((RlSums::default(), 0));
        sums.reward += s.reward;
        sums.baseline += s.baseline;
        sums.policy_loss += s.policy_loss;
        sums.reinforce_var += s.reinforce_var;
        *n += 1;
    }
}

impl Window {
    /// The training row for `step`, or None when every step since the last row was skipped.
    pub fn row(&self, step: u64, lr: f64, elapsed_s: f64) -> Option<MetricRow> {
        (self.steps > 0).then(|| MetricRow {
            step,
            split: "train".into(),
            loss: self.loss / self.steps as f64,
            accuracy: self.correct as f64 / self.counted.max(1) as f64,
            lr,
            grad_norm: Some(self.grad_norm),
            tokens_per_s: Some(self.tokens as f64 / self.time.max(1e-9)),
            elapsed_s,
            rl: self.rl.map(|(s, n)| {
                let n = n.max(1) as f64;
                RlRow {
                    reward: s.reward / n,
                    baseline: s.baseline / n,
                    policy_loss: s.policy_loss / n,
                    reinforce_var: s.reinforce_var / n,
                }
            }),
            eval_metrics: None,
            comm_fraction: (self.comm_time > 0.0).then(|| self.comm_time / self.time.max(1e-9)),
        })
    }
}

impl RunState {
    /// The state before the first step.
    pub fn fresh(seed: u64, base_lr: f64) -> RunState {
        // The dropout stream is keyed apart from the parameter-init stream of the same seed.
        let rng = Rng::new(seed ^ 0x5eed_d0d0_5eed_d0d0);
        RunState {
            step: 0,
            dropout_rng: (rng.seed(), rng.offset()),
            base_lr,
            elapsed_s: 0.0,
            tokens_seen: 0,
            early_stopping: None,
            plateau: None,
            best_accuracy: None,
            optimizer: serde_json::Value::Null,
            skipped_steps: 0,
            window: Window::default(),
            metrics_bytes: 0,
            last_valid_accuracy: None,
        }
    }
}

fn step_metadata(step: u64) -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string()), ("step".to_string(), step.to_string())])
}

/// What a checkpoint's manifest records for retention.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    step: u64,
    valid_accuracy: Option<f64>,
}

/// The pieces a checkpoint is made of.
pub struct CheckpointParts<'a> {
    /// The model.
    pub model: &'a Net,
    /// The optimizer.
    pub optimizer: &'a dyn Optimizer,
    /// Early stopping (its best weights).
    pub early: Option<&'a EarlyStopping>,
    /// Counters and streams.
    pub state: &'a RunState,
    /// The run's `config.json` bytes.
    pub config_json: &'a [u8],
}

/// Commits the checkpoint of `parts.state.step` into run directory `dir`, points
/// `dir/model.safetensors` at its weights, and keeps the newest `keep` checkpoints plus the one
/// with the best held-out accuracy.
pub fn save(dir: &Path, parts: &CheckpointParts<'_>, keep: usize) -> Result<PathBuf> {
    let step = parts.state.step;
    let meta = step_metadata(step);
    let target = rundir::checkpoint_dir(dir, step);
    let mut stage = Staging::begin(&target)?;
    let model_path = target.join("model.safetensors");
    stage.add(
        "model.safetensors",
        &checkpoint::serialize_tensors(&model_path, &parts.model.store().state_dict(), Some(meta.clone()))?,
    )?;
    let opt = parts.optimizer.state_dict()?;
    let tensors: Vec<_> = opt.tensors.into_iter().collect();
    stage.add(
        "optimizer.safetensors",
        &checkpoint::serialize_tensors(&target.join("optimizer.safetensors"), &tensors, Some(meta.clone()))?,
    )?;
    if let Some(best) = parts.early.and_then(|e| e.best_weights()) {
        let tensors: Vec<_> = best.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        stage.add(
            "best.safetensors",
            &checkpoint::serialize_tensors(&target.join("best.safetensors"), &tensors, Some(meta))?,
        )?;
    }
    let mut state = parts.state.clone();
    state.optimizer = opt.scalars;
    stage.add("state.json", &serde_json::to_vec_pretty(&state)?)?;
    stage.add("config.json", parts.config_json)?;
    let record = CheckpointMeta { step, valid_accuracy: state.last_valid_accuracy };
    let committed = stage.commit(serde_json::to_value(&record)?)?;
    link_atomic(&committed.path("model.safetensors"), &dir.join("model.safetensors"))?;
    prune(dir, keep)?;
    Ok(target)
}

/// Removes all but the newest `keep` checkpoints and the best one.
fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = rundir::checkpoints(dir)?;
    if all.len() <= keep {
        return Ok(());
    }
    let accuracy = |p: &PathBuf| {
        Committed::open(p)
            .ok()
            .and_then(|c| serde_json::from_value::<CheckpointMeta>(c.meta().clone()).ok())
            .and_then(|m| m.valid_accuracy)
    };
    // The best: highest accuracy, the newest of equals (a damaged manifest counts as none).
    let best = all
        .iter()
        .filter_map(|p| accuracy(p).map(|a| (a, p)))
        .fold(None::<(f64, &PathBuf)>, |acc, (a, p)| match acc {
            Some((b, _)) if b > a => acc,
            _ => Some((a, p)),
        })
        .map(|(_, p)| p.clone());
    for old in &all[..all.len() - keep] {
        if Some(old) != best.as_ref() {
            remove_committed(old)?;
        }
    }
    Ok(())
}

/// Which checkpoint a loader takes when the newest is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDamage {
    /// Fall back to the previous committed checkpoint, with a warning (`--resume`).
    FallBack,
    /// Refuse with an error naming the damaged file (`eval`).
    Refuse,
}

/// The newest committed checkpoint of `dir` whose every file verifies, with one warning per
/// newer damaged checkpoint skipped. `None` when there is no checkpoint at all.
pub fn newest_valid(dir: &Path, on_damage: OnDamage) -> Result<(Option<Committed>, Vec<String>)> {
    let mut warnings = Vec::new();
    for path in rundir::checkpoints(dir)?.iter().rev() {
        let verified = Committed::open(path).and_then(|c| c.verify().map(|()| c));
        match verified {
            Ok(c) => return Ok((Some(c), warnings)),
            Err(e) if on_damage == OnDamage::FallBack => {
                warnings.push(format!("attune: warning: skipping damaged checkpoint {}: {e}", path.display()));
            }
            Err(e) => return Err(e).with_context(|| format!("checkpoint {} cannot be loaded", path.display())),
        }
    }
    if !warnings.is_empty() {
        bail!("every checkpoint in {} is damaged:\n{}", dir.display(), warnings.join("\n"));
    }
    Ok((None, warnings))
}

/// The tensors of committed file `name`, verified.
pub fn committed_tensors(c: &Committed, name: &str) -> Result<BTreeMap<String, attune_tensor::Tensor>> {
    let bytes = c.read(name)?;
    Ok(checkpoint::parse_tensors(&c.path(name), &bytes)?.tensors)
}

/// Reads checkpoint `c` into the model, optimizer and stoppers; returns the run state.
pub fn load(
    c: &Committed,
    model: &Net,
    optimizer: &mut dyn Optimizer,
    early: Option<&mut EarlyStopping>,
    plateau: Option<&mut ReduceOnPlateau>,
) -> Result<RunState> {
    let path = c.path("state.json");
    let state: RunState = serde_json::from_slice(&c.read("state.json")?)
        .with_context(|| format!("{} is not a run state", path.display()))?;
    let params = committed_tensors(c, "model.safetensors")?;
    checkpoint::load_state_dict(
        &c.path("model.safetensors"),
        model.store(),
        params,
        LoadOptions { strict: true, convert_dtype: false },
    )?;
    let tensors = committed_tensors(c, "optimizer.safetensors")?;
    optimizer.load_state_dict(&OptimizerState { tensors, scalars: state.optimizer.clone() }).with_context(|| {
        format!(
            "{} (\"optimizer\") and optimizer.safetensors do not hold a state this optimizer can load",
            path.display()
        )
    })?;
    if let Some(e) = early {
        if let Some(s) = &state.early_stopping {
            e.load_state(s.clone()).with_context(|| format!("{}: \"early_stopping\"", path.display()))?;
        }
        if c.has("best.safetensors") {
            e.set_best_weights(Some(committed_tensors(c, "best.safetensors")?));
        }
    }
    if let (Some(p), Some(s)) = (plateau, &state.plateau) {
        p.load_state(s.clone()).with_context(|| format!("{}: \"plateau\"", path.display()))?;
    }
    Ok(state)
}
