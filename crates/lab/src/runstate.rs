//! A run directory's checkpoint: `model.safetensors` (PyTorch names), `optimizer.safetensors`,
//! `best.safetensors` (early stopping's best weights) and `state.json` (step, dropout stream,
//! early-stopping and plateau counters), written last so that it names a complete set.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use attune_nn::Model;
use attune_nn::checkpoint::{self, LoadOptions};
use attune_optim::{EarlyStopping, EarlyStoppingState, Optimizer, OptimizerState, PlateauState, ReduceOnPlateau};
use attune_tensor::Rng;
use serde::{Deserialize, Serialize};

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
        }
    }
}

fn step_metadata(step: u64) -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string()), ("step".to_string(), step.to_string())])
}

/// Writes the checkpoint of `state` into `dir`.
pub fn save(
    dir: &Path,
    model: &Model,
    optimizer: &dyn Optimizer,
    early: Option<&EarlyStopping>,
    state: &RunState,
) -> Result<()> {
    let meta = step_metadata(state.step);
    checkpoint::save_params(&dir.join("model.safetensors"), model.store(), Some(meta.clone()))?;
    let opt = optimizer.state_dict()?;
    let tensors: Vec<_> = opt.tensors.into_iter().collect();
    checkpoint::save_tensors(&dir.join("optimizer.safetensors"), &tensors, Some(meta.clone()))?;
    if let Some(best) = early.and_then(|e| e.best_weights()) {
        let tensors: Vec<_> = best.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        checkpoint::save_tensors(&dir.join("best.safetensors"), &tensors, Some(meta))?;
    }
    let mut state = state.clone();
    state.optimizer = opt.scalars;
    checkpoint::write_atomic(&dir.join("state.json"), serde_json::to_string_pretty(&state)?.as_bytes())?;
    Ok(())
}

fn check_step(dir: &Path, file: &str, step: u64) -> Result<BTreeMap<String, attune_tensor::Tensor>> {
    let path = dir.join(file);
    let f = checkpoint::load_tensors(&path)?;
    let saved = f.metadata.get("step").and_then(|s| s.parse::<u64>().ok());
    if saved != Some(step) {
        bail!(
            "{} is from step {saved:?} but state.json is at step {step}; the checkpoint was interrupted while being written — resume from an earlier copy",
            path.display()
        );
    }
    Ok(f.tensors)
}

/// Reads `dir`'s checkpoint into the model, optimizer and stoppers; returns the run state.
pub fn load(
    dir: &Path,
    model: &Model,
    optimizer: &mut dyn Optimizer,
    early: Option<&mut EarlyStopping>,
    plateau: Option<&mut ReduceOnPlateau>,
) -> Result<RunState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} has no state.json; there is no checkpoint to resume", dir.display()))?;
    let state: RunState =
        serde_json::from_str(&text).with_context(|| format!("{} is not a run state", path.display()))?;
    let params = check_step(dir, "model.safetensors", state.step)?;
    checkpoint::load_state_dict(
        &dir.join("model.safetensors"),
        model.store(),
        params,
        LoadOptions { strict: true, convert_dtype: false },
    )?;
    let tensors = check_step(dir, "optimizer.safetensors", state.step)?;
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
        if dir.join("best.safetensors").exists() {
            e.set_best_weights(Some(check_step(dir, "best.safetensors", state.step)?));
        }
    }
    if let (Some(p), Some(s)) = (plateau, &state.plateau) {
        p.load_state(s.clone()).with_context(|| format!("{}: \"plateau\"", path.display()))?;
    }
    Ok(state)
}
