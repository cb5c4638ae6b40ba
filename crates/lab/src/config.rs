//! Run configuration: what `attune train` reads from flags or a TOML/JSON file, and what a
//! run directory's `config.json` records (with the model resolved to a full `ModelConfig`,
//! the object PyTorch's peer script reads).
//!
//! One [`RunConfig`] is built by overlays in a fixed order — defaults, then a config file, then
//! flags ([`crate::flags`]), each a set of dotted keys ([`crate::overlay`]) — and then
//! [`RunConfig::resolve`] derives the dependent values once (steps from epochs, the schedule's
//! length, `d_ff`, `n_kv_heads`). Training takes only a [`ResolvedConfig`].

use std::path::Path;

use anyhow::{Context, Result, bail};
use attune_nn::{Autocast, MlpKind, ModelConfig, ModelKind, NormKind, PatchSpec, PoolingKind, Positions, StemConv};
use attune_optim::{EarlyStoppingConfig, OptimizerConfig, PlateauConfig, ScheduleConfig};
use attune_tensor::DType;
use serde::{Deserialize, Serialize};

use crate::runstate::{self, OnDamage};

use crate::tasks::{self, MqarConfig, Task, TaskConfig};

/// Model settings; the vocabulary, sequence length and classes come from the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// Width.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (unset: [`ModelConfig::default_n_kv_heads`], filled in by `resolve`).
    pub n_kv_heads: Option<usize>,
    /// Feed-forward width (unset: [`ModelConfig::default_d_ff`], filled in by `resolve`).
    pub d_ff: Option<usize>,
    /// `gelu` or `swiglu`.
    pub mlp: MlpKind,
    /// `layernorm` or `rmsnorm`.
    pub norm: NormKind,
    /// `learned`, `rope`, `alibi` or `none`.
    pub positions: Positions,
    /// RoPE base.
    pub rope_theta: f64,
    /// Sliding window `[left, right]`.
    pub window: Option<[i64; 2]>,
    /// Attention softcap.
    pub softcap: Option<f64>,
    /// Dropout in training.
    pub dropout: f64,
    /// A classifier's pooling: `soft` (attention-weighted mean) or `hard` (`pool_k` sampled
    /// positions, trained by REINFORCE; docs/ram.md).
    pub pooling: PoolingKind,
    /// Positions a `hard` pooling draws per sequence.
    pub pool_k: usize,
    /// The Vision Transformer's patch side in pixels (image tasks).
    pub patch: usize,
    /// Pixels between neighbouring patches (unset: `patch`, no overlap).
    // Written as `null` when unset so that `model.patch_stride` is a key a flag can set.
    pub patch_stride: Option<usize>,
    /// A convolutional stem before the patches (image tasks; empty: plain patches).
    pub stem: Vec<StemConv>,
}

impl Default for ModelSpec {
    /// The default model of the issue: 2 layers, d_model 128, 2 heads, learned positions.
    fn default() -> Self {
        ModelSpec {
            d_model: 128,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: None,
            d_ff: None,
            mlp: MlpKind::Gelu,
            norm: NormKind::LayerNorm,
            positions: Positions::Learned,
            rope_theta: 10_000.0,
            window: None,
            softcap: None,
            dropout: 0.0,
            pooling: PoolingKind::Soft,
            pool_k: 8,
            patch: 4,
            patch_stride: None,
            stem: Vec::new(),
        }
    }
}

impl ModelSpec {
    /// The full architecture for `task`: an LM for sequence tasks, a classifier for labels,
    /// a Vision Transformer over patches for images.
    pub fn resolve(&self, task: &dyn Task) -> ModelConfig {
        let kind = if task.num_classes().is_some() { ModelKind::Classifier } else { ModelKind::Lm };
        let patches = task.image_shape().map(|(rows, cols)| PatchSpec {
            rows,
            cols,
            size: self.patch,
            stride: self.patch_stride.unwrap_or(self.patch),
        });
        ModelConfig {
            kind,
            vocab_size: task.vocab_size(),
            max_seq_len: patches.map_or(task.seq_len(), |p| p.count()),
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads.unwrap_or(ModelConfig::default_n_kv_heads(self.n_heads)),
            d_ff: self.d_ff.unwrap_or(ModelConfig::default_d_ff(self.d_model)),
            mlp: self.mlp,
            norm: self.norm,
            positions: self.positions,
            rope_theta: self.rope_theta,
            causal: kind == ModelKind::Lm,
            window: self.window,
            softcap: self.softcap,
            num_classes: task.num_classes(),
            pooling: self.pooling,
            pool_k: self.pool_k,
            dropout: self.dropout,
            stem: if patches.is_some() { self.stem.clone() } else { Vec::new() },
            patches,
            tie_embeddings: task.tied_output(),
        }
    }
}

/// The precision a run's forward and backward compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: Linear products and fused attention in bf16 over f32 master weights
    /// ([`attune_nn::autocast`]).
    Bf16,
}

impl Precision {
    /// The autocast guard this precision runs under while it lives (`None` for f32).
    pub fn enter(self) -> Result<Option<Autocast>> {
        Ok(match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(Autocast::enter(DType::BF16)?),
        })
    }
}

/// What the loop does when a step's loss or gradient norm is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// End the run with an error naming the step; the last checkpoint stays as it was.
    #[default]
    Stop,
    /// Drop that step's update (the optimizer and its state are untouched) and count it.
    Skip,
}

/// How long and how to train, evaluate, stop and checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// Optimizer steps (upper bound when stopping early); derived from `epochs` when set.
    pub steps: u64,
    /// Passes over the training split (tasks with a finite one); `resolve` sets `steps` from it.
    pub epochs: Option<f64>,
    /// Examples per step (per micro-batch times `grad_accum`).
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged per step.
    pub grad_accum: usize,
    /// Seed of the model, data and dropout streams.
    pub seed: u64,
    /// Evaluate on held-out data every this many steps.
    pub eval_every: u64,
    /// Held-out batches per evaluation (finite splits: at most the whole split).
    pub eval_batches: usize,
    /// Stop once held-out accuracy reaches this.
    pub target_accuracy: Option<f64>,
    /// Stop when held-out accuracy has not improved for `patience` evaluations.
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// With early stopping, end with the best weights seen.
    pub restore_best: bool,
    /// Lower the learning rate when held-out loss plateaus.
    pub plateau: Option<PlateauConfig>,
    /// Clip gradients to this global L2 norm.
    pub clip_grad_norm: Option<f64>,
    /// Label smoothing of the training cross-entropy (0: none; 0.1 is usual for a ViT): the
    /// target puts `1 - s` on the label and `s` spread over all classes. Training batches
    /// only; held-out loss is the plain cross-entropy (docs/metrics.md).
    pub label_smoothing: f64,
    /// Log training metrics every this many steps.
    pub log_every: u64,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: u64,
    /// Committed checkpoints kept: the newest this many, plus the best (docs/persistence.md).
    pub keep_checkpoints: usize,
    /// Stop after this many seconds of training.
    pub max_time_s: Option<f64>,
    /// A non-finite loss or gradient norm stops the run or skips the step.
    pub on_nonfinite: OnNonFinite,
    /// The dtype of the forward's matrix multiplies and attention (docs/model.md, "Mixed
    /// precision"); weights, optimizer state and everything else stay f32.
    pub precision: Precision,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            steps: 3000,
            epochs: None,
            batch_size: 64,
            grad_accum: 1,
            seed: 0,
            eval_every: 50,
            eval_batches: 8,
            target_accuracy: Some(0.99),
            early_stopping: None,
            restore_best: true,
            plateau: None,
            clip_grad_norm: Some(1.0),
            label_smoothing: 0.0,
            log_every: 10,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            max_time_s: None,
            on_nonfinite: OnNonFinite::Stop,
            precision: Precision::F32,
        }
    }
}

/// Everything a run needs, as given by the user (model not yet resolved against the task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The task and its parameters.
    pub task: TaskConfig,
    /// Model settings.
    pub model: ModelSpec,
    /// Optimizer and hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Training loop settings.
    pub train: TrainSpec,
    /// `auto`, `cpu`, `cuda`, `cuda:N` or `emu`.
    pub device: String,
}

impl Default for RunConfig {
    /// MQAR (V 128, S 64, 8 pairs), the default model, AdamW at 1e-3 with a short warm-up.
    fn default() -> Self {
        let mut optimizer = OptimizerConfig::from_name("adamw").unwrap_or_else(|_| unreachable!("adamw is built in"));
        optimizer.set_lr(1e-3);
        RunConfig {
            task: TaskConfig::Mqar(MqarConfig::default()),
            model: ModelSpec::default(),
            optimizer,
            schedule: ScheduleConfig::LinearWarmup { warmup_steps: 50 },
            train: TrainSpec::default(),
            device: "auto".into(),
        }
    }
}

impl RunConfig {
    /// Reads a TOML (`.toml`) or JSON file; missing fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<RunConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let cfg = if is_toml {
            toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML for a run", path.display()))?
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("config file {} is not valid JSON for a run", path.display()))?
        };
        Ok(cfg)
    }

    /// Derives the values that depend on others, once, after every overlay: `train.steps`
    /// from `train.epochs`, the schedule's length (cosine/linear `total_steps`, step
    /// `step_size = steps / 3`) where it is unset, `model.n_kv_heads` and `model.d_ff`; then
    /// validates. A value set explicitly is kept.
    pub fn resolve(mut self) -> Result<ResolvedConfig> {
        if let Some(epochs) = self.train.epochs {
            if !(epochs.is_finite() && epochs > 0.0) {
                bail!("epochs {epochs} must be a positive number");
            }
            let task = tasks::build(&self.task, self.train.seed).context("building the task to count its examples")?;
            let n = task.train_size().with_context(|| {
                format!("epochs needs a task with a finite training set (text), not {}; set steps instead", task.name())
            })?;
            let batch = self.train.batch_size.max(1);
            self.train.steps = ((epochs * n as f64) / batch as f64).ceil().max(1.0) as u64;
        }
        let steps = self.train.steps;
        match &mut self.schedule {
            ScheduleConfig::Cosine { total_steps, .. } | ScheduleConfig::Linear { total_steps, .. }
                if *total_steps == 0 =>
            {
                *total_steps = steps
            }
            ScheduleConfig::Step { step_size, .. } if *step_size == 0 => *step_size = (steps / 3).max(1),
            _ => {}
        }
        let m = &mut self.model;
        m.n_kv_heads.get_or_insert(ModelConfig::default_n_kv_heads(m.n_heads));
        m.d_ff.get_or_insert(ModelConfig::default_d_ff(m.d_model));
        self.validate()?;
        Ok(ResolvedConfig(self))
    }

    /// Checks the values no type can express.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if t.batch_size == 0 || t.grad_accum == 0 || !t.batch_size.is_multiple_of(t.grad_accum) {
            bail!(
                "batch_size {} must be positive and divisible by grad_accum {} (each micro-batch has batch_size / grad_accum examples)",
                t.batch_size,
                t.grad_accum
            );
        }
        if t.eval_every == 0
            || t.eval_batches == 0
            || t.log_every == 0
            || t.checkpoint_every == 0
            || t.keep_checkpoints == 0
        {
            bail!("eval_every, eval_batches, log_every, checkpoint_every and keep_checkpoints must be positive");
        }
        if let Some(a) = t.target_accuracy
            && !(0.0..=1.0).contains(&a)
        {
            bail!("target_accuracy {a} must be in [0, 1]");
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!("label_smoothing {} must be in [0, 1) (0.1 is usual)", t.label_smoothing);
        }
        self.optimizer.validate().context("optimizer settings")?;
        self.schedule.validate().context("schedule settings")?;
        Ok(())
    }
}

/// A [`RunConfig`] after [`RunConfig::resolve`]: every derived value filled in and checked.
/// Only this type trains, so no value is derived twice or from a stale input.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig(RunConfig);

impl ResolvedConfig {
    /// The config itself.
    pub fn into_inner(self) -> RunConfig {
        self.0
    }
}

impl std::ops::Deref for ResolvedConfig {
    type Target = RunConfig;
    fn deref(&self) -> &RunConfig {
        &self.0
    }
}

/// What a run directory's `config.json` holds: the run with its model resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedConfig {
    /// The task with defaults and class mapping filled in.
    pub task: TaskConfig,
    /// The architecture (read by benches/peers/torch_train.py).
    pub model: ModelConfig,
    /// The settings the model was resolved from.
    pub model_spec: ModelSpec,
    /// The Recurrent Attention Model a `ram-*` task trains instead of `model` (derived from
    /// the task config; docs/ram.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<attune_nn::RamConfig>,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Schedule.
    pub schedule: ScheduleConfig,
    /// Training loop.
    pub train: TrainSpec,
    /// Device asked for.
    pub device: String,
}

impl SavedConfig {
    /// The config of run directory `dir`: the verified copy in its newest committed checkpoint
    /// (the previous one when that is damaged and `on_damage` falls back), else `dir/config.json`
    /// for a run that has not committed a checkpoint yet.
    pub fn load(dir: &Path, on_damage: OnDamage) -> Result<SavedConfig> {
        let (newest, _) = runstate::newest_valid(dir, on_damage)?;
        if let Some(c) = newest {
            let path = c.path("config.json");
            return serde_json::from_slice(&c.read("config.json")?)
                .with_context(|| format!("{} is not a valid run config", path.display()));
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{} has no config.json; is it a directory written by `attune train`?", dir.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid run config", path.display()))
    }

    /// The run config to continue with.
    pub fn run(&self) -> RunConfig {
        RunConfig {
            task: self.task.clone(),
            model: self.model_spec.clone(),
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            train: self.train.clone(),
            device: self.device.clone(),
        }
    }
}
