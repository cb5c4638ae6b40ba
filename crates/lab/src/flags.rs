//! `attune train`'s flags and how they become one resolved run config.
//!
//! A new run: defaults, then `--config FILE`, then the flags, each overlaid on one
//! [`RunConfig`] by dotted key ([`crate::overlay`]), then [`RunConfig::resolve`].
//! `--resume DIR`: the run's `config.json`, then the flags, then `resolve`; the result is
//! compared with the saved run and any difference outside [`RESUME_MAY_CHANGE`] is refused.
//! docs/run-config.md describes both.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use attune_nn::StemConv;
use attune_optim::{EarlyStoppingConfig, Mode, OptimizerConfig, ScheduleConfig};
use clap::Args;
use serde_json::{Value, json};

use crate::config::{ResolvedConfig, RunConfig, SavedConfig};
use crate::overlay::{self, Change};
use crate::runstate::OnDamage;
use crate::tasks::{
    ImageTaskConfig, InductionConfig, MqarConfig, RamTaskConfig, RecsysConfig, SelectiveCopyingConfig, TaskConfig,
    TextConfig,
};

/// The settings `--resume` lets a flag change, as dotted keys: when to stop, how often to save,
/// where to run and what to do on a non-finite step. None of them changes the steps already
/// taken, so the resumed run is still the run its checkpoint belongs to (bit for bit on the
/// same device). Thread count, `--quiet` and `--no-plots` are not part of the config at all.
pub const RESUME_MAY_CHANGE: [&str; 8] = [
    "train.steps",
    "train.epochs",
    "train.max_time_s",
    "train.target_accuracy",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.on_nonfinite",
    "device",
];

/// Flags of `attune train`; each one that is given overrides the config file's value.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainFlags {
    /// Settings file (TOML or JSON); flags override it.
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory exactly where its checkpoint left off.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Run directory (default runs/<task>-seed<seed>, or the first free runs/<task>-seed<seed>-N).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Start over in an --out directory that already holds a run (its checkpoints and metrics
    /// are deleted); without it such a directory is refused.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Task: mqar, induction, selective-copying, text, ram-centred, ram-translated,
    /// ram-cluttered, image or recsys.
    #[arg(long)]
    pub task: Option<String>,
    /// Data set: mnist or fashion-mnist (ram-* tasks); fashion-mnist or digits (image);
    /// ml-100k (recsys); bbc-news (text).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Largest random shift in pixels of a training image (image task).
    #[arg(long)]
    pub shift: Option<usize>,
    /// Mirror training images left to right at random (image task): true or false.
    #[arg(long)]
    pub flip: Option<bool>,
    /// Glimpses per image (ram-* tasks; default 6 on ram-centred, 8 on 60x60).
    #[arg(long)]
    pub glimpses: Option<usize>,
    /// Glimpse locations of the ram-* tasks: learned (REINFORCE) or random (uniform).
    #[arg(long)]
    pub policy: Option<String>,
    /// JSONL file of {"text", "label"} lines (task text).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Separate JSONL test file (task text).
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Stratified cross-validation folds (task text); without --fold every fold is trained.
    #[arg(long)]
    pub folds: Option<usize>,
    /// The one fold to test on (task text, with --folds).
    #[arg(long)]
    pub fold: Option<usize>,
    /// Text tokens: bytes or words (task text).
    #[arg(long)]
    pub tokens: Option<String>,
    /// Probability of leaving each token of a training text out of its batch (task text).
    #[arg(long)]
    pub token_dropout: Option<f64>,
    /// Vocabulary size (synthetic tasks; the most words of a text task's word vocabulary).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Sequence length (mqar, induction; max_len for text and recsys).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Key-value pairs per MQAR sequence.
    #[arg(long)]
    pub kv_pairs: Option<usize>,
    /// Model width.
    #[arg(long)]
    pub d_model: Option<usize>,
    /// Transformer blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads (GQA; default: --heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Feed-forward width (default: 4 d_model).
    #[arg(long)]
    pub d_ff: Option<usize>,
    /// gelu or swiglu.
    #[arg(long)]
    pub mlp: Option<String>,
    /// layernorm or rmsnorm.
    #[arg(long)]
    pub norm: Option<String>,
    /// learned, rope, alibi or none.
    #[arg(long)]
    pub positions: Option<String>,
    /// Sliding window LEFT,RIGHT (-1 unbounded).
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    pub window: Option<[i64; 2]>,
    /// Attention softcap.
    #[arg(long)]
    pub softcap: Option<f64>,
    /// Dropout in training.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// A classifier's pooling: soft (attention-weighted mean), hard (sampled positions,
    /// trained by REINFORCE), cls (a class token) or mean.
    #[arg(long)]
    pub pooling: Option<String>,
    /// Positions a hard pooling draws per sequence.
    #[arg(long)]
    pub pool_k: Option<usize>,
    /// Patch side in pixels of the Vision Transformer (image task).
    #[arg(long)]
    pub patch: Option<usize>,
    /// Pixels between neighbouring patches (default: the patch side, no overlap).
    #[arg(long)]
    pub patch_stride: Option<usize>,
    /// Share of the training texts held out as the valid split (text task; 0: all train, and
    /// nothing is evaluated before the test split).
    #[arg(long)]
    pub valid_fraction: Option<f64>,
    /// A convolutional stem before the patches (image task): 3x3 convolutions written
    /// CHANNELS[:STRIDE], comma-separated, e.g. 32,64:2; `none` removes a file's stem.
    #[arg(long, value_parser = parse_stem)]
    pub stem: Option<Stem>,
    /// sgd, adam, adamw or adafactor (its defaults; the learning rate carries over except to adafactor).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay (decoupled for adamw, L2 otherwise).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// constant, warmup, cosine, linear or step; decay schedules span the run's final steps.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Warm-up steps (warmup, cosine and linear schedules).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Optimizer steps.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Epochs over the training split (text task); sets the steps.
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Micro-batches per step (gradient accumulation).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Seed of model, data and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Held-out batches per evaluation.
    #[arg(long)]
    pub eval_batches: Option<usize>,
    /// Stop when held-out accuracy reaches this (0 disables).
    #[arg(long)]
    pub target_accuracy: Option<f64>,
    /// Early stopping: evaluations without improvement of held-out accuracy.
    #[arg(long)]
    pub patience: Option<u64>,
    /// Early stopping: smallest improvement that counts.
    #[arg(long)]
    pub min_delta: Option<f64>,
    /// Clip gradients to this global norm (0 disables).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Label smoothing of the training cross-entropy (0 disables; 0.1 is usual).
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Committed checkpoints to keep (the newest N, plus the best; default 2).
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub max_time: Option<f64>,
    /// On a NaN or infinite loss or gradient norm: stop (default) or skip that step's update.
    #[arg(long)]
    pub on_nonfinite: Option<String>,
    /// f32, or bf16: mixed precision (Linear products and attention in bf16 over f32 weights).
    #[arg(long)]
    pub precision: Option<String>,
    /// auto, cpu, cuda, cuda:N or emu.
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Start from another run's newest checkpoint (weights, optimizer state, step) with this
    /// run's hyper-parameters: population-based training's exploit step.
    #[arg(long, conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Print each validation as a JSON line on stdout (the `attune search` trial protocol).
    #[arg(long, hide = true)]
    pub report_json: bool,
    /// Act as if Ctrl-C arrived after N steps (for testing resume).
    #[arg(long, hide = true)]
    pub interrupt_after: Option<u64>,
    /// Train as one rank of an MPI job: `mpirun -np N attune train --distributed ...`; each rank
    /// trains on 1/N of every batch (docs/distributed.md). Needs a build with `--features mpi`.
    #[arg(long)]
    pub distributed: bool,
    /// Largest gradient bucket of an all-reduce, in MiB (--distributed).
    #[arg(long, default_value_t = 25.0, requires = "distributed")]
    pub bucket_mb: f64,
    /// Seconds a rank waits in a collective for the others before ending the job (--distributed).
    #[arg(long, default_value_t = 300.0, requires = "distributed")]
    pub collective_timeout: f64,
    /// Check after every step that all ranks hold bitwise the same weights (--distributed).
    #[arg(long, requires = "distributed")]
    pub verify_ranks: bool,
}

/// `--stem`'s layers (a newtype, so clap takes the list as one value).
#[derive(Debug, Clone)]
pub struct Stem(Vec<StemConv>);

fn parse_stem(s: &str) -> Result<Stem, String> {
    attune_nn::parse_stem(s).map(Stem).map_err(|e| e.to_string())
}

fn parse_window(s: &str) -> Result<[i64; 2], String> {
    let parts: Vec<&str> = s.split(',').collect();
    match parts.as_slice() {
        [l, r] => Ok([l.trim().parse().map_err(|e| format!("{e}"))?, r.trim().parse().map_err(|e| format!("{e}"))?]),
        _ => Err(format!("window '{s}' must be LEFT,RIGHT, e.g. 32,0")),
    }
}

/// A positive value, or `null` for 0 (flags where 0 means "off").
fn zero_is_off(v: f64) -> Value {
    if v > 0.0 { json!(v) } else { Value::Null }
}

impl TrainFlags {
    /// The distributed options, when --distributed was given.
    pub fn distributed_options(&self) -> Option<crate::distributed::DistOptions> {
        self.distributed.then_some(crate::distributed::DistOptions {
            bucket_mb: self.bucket_mb,
            timeout_s: self.collective_timeout,
            verify_ranks: self.verify_ranks,
        })
    }

    /// The config this invocation trains: a new run's, or the resumed run's after checking
    /// that the flags change only what [`RESUME_MAY_CHANGE`] allows.
    pub fn run_config(&self) -> Result<ResolvedConfig> {
        match &self.resume {
            Some(dir) => self.resume_config(&SavedConfig::load(dir, OnDamage::FallBack)?),
            None => {
                let mut cfg = match &self.config {
                    Some(p) => RunConfig::from_file(p)?,
                    None => RunConfig::default(),
                };
                self.overlay(&mut cfg)?;
                cfg.resolve()
            }
        }
    }

    /// The run directory: `--resume`'s, `--out`, or `runs/<task>-seed<seed>`.
    pub fn run_dir(&self, cfg: &RunConfig) -> PathBuf {
        match (&self.resume, &self.out) {
            (Some(dir), _) | (None, Some(dir)) => dir.clone(),
            (None, None) => {
                crate::rundir::fresh_default(&PathBuf::from(format!("runs/{}-seed{}", cfg.task.name(), cfg.train.seed)))
            }
        }
    }

    /// The saved run with these flags overlaid, refused when they change anything outside
    /// [`RESUME_MAY_CHANGE`]; the error lists each such setting with its old and new value.
    pub fn resume_config(&self, saved: &SavedConfig) -> Result<ResolvedConfig> {
        let old = saved.run().resolve().context("the saved config.json no longer resolves")?;
        let mut cfg = saved.run();
        self.overlay(&mut cfg)?;
        let new = cfg.resolve()?;
        let refused: Vec<Change> = overlay::changes(&*old, &*new)?
            .into_iter()
            .filter(|c| !RESUME_MAY_CHANGE.iter().any(|k| c.key == *k || c.key.starts_with(&format!("{k}."))))
            .collect();
        if !refused.is_empty() {
            let list: Vec<String> = refused.iter().map(|c| format!("  {c}")).collect();
            bail!(
                "--resume continues a run exactly as it was configured, but these flags change it:\n{}\n\
                 only {} may change on resume; start a new run (--out DIR) to train with other settings",
                list.join("\n"),
                RESUME_MAY_CHANGE.join(", ")
            );
        }
        Ok(new)
    }

    /// Overlays every given flag onto `cfg`, in an order where a flag that replaces a whole
    /// table (`--task`, `--optimizer`, `--schedule`) comes before the flags that set its fields.
    pub fn overlay(&self, cfg: &mut RunConfig) -> Result<()> {
        if let Some(name) = &self.task {
            cfg.task = self.task_defaults(name)?;
        }
        if let Some(name) = &self.optimizer {
            let lr = cfg.optimizer.lr();
            cfg.optimizer = OptimizerConfig::from_name(name)?;
            // Adafactor's rate is relative (its own default), so an absolute rate does not carry over.
            if name != "adafactor" {
                cfg.optimizer.set_lr(lr);
            }
        }
        if let Some(name) = &self.schedule {
            cfg.schedule = schedule_named(name)?;
        }
        if (self.patience.is_some() || self.min_delta.is_some()) && cfg.train.early_stopping.is_none() {
            cfg.train.early_stopping = Some(EarlyStoppingConfig { mode: Mode::Max, ..Default::default() });
        }
        for (flag, key, value) in self.settings(&cfg.task) {
            overlay::set(cfg, key, value).with_context(|| format!("--{flag}"))?;
        }
        Ok(())
    }

    /// A task with its defaults, for `--task NAME`.
    fn task_defaults(&self, name: &str) -> Result<TaskConfig> {
        Ok(match name {
            "mqar" => TaskConfig::Mqar(MqarConfig::default()),
            "induction" => TaskConfig::InductionHeads(InductionConfig::default()),
            "selective-copying" => TaskConfig::SelectiveCopying(SelectiveCopyingConfig::default()),
            "text" => match (&self.data, &self.dataset) {
                (Some(path), _) => TaskConfig::TextClassification(TextConfig::new(path.clone())),
                // --dataset sets task.dataset with the other flags.
                (None, Some(_)) => TaskConfig::TextClassification(TextConfig::dataset(None)),
                (None, None) => bail!("--task text needs --data FILE.jsonl or --dataset bbc-news"),
            },
            "ram-centred" => TaskConfig::RamCentred(RamTaskConfig::default()),
            "ram-translated" => TaskConfig::RamTranslated(RamTaskConfig::default()),
            "ram-cluttered" => TaskConfig::RamCluttered(RamTaskConfig::default()),
            "image" => TaskConfig::Image(ImageTaskConfig::default()),
            "recsys" => TaskConfig::Recsys(RecsysConfig::default()),
            other => bail!(
                "unknown task '{other}'; choose mqar, induction, selective-copying, text, ram-centred, ram-translated, \
                 ram-cluttered, image or recsys"
            ),
        })
    }

    /// The flags that set one field each: (flag, dotted key, value).
    fn settings(&self, task: &TaskConfig) -> Vec<(&'static str, &'static str, Value)> {
        let seq_key = match task {
            TaskConfig::TextClassification(_) | TaskConfig::Recsys(_) => "task.max_len",
            _ => "task.seq_len",
        };
        let lower = |s: &String| json!(s.to_ascii_lowercase());
        let given: [(&str, &str, Option<Value>); 53] = [
            ("data", "task.path", self.data.as_ref().map(|p| json!(p))),
            ("test-data", "task.test_path", self.test_data.as_ref().map(|p| json!(p))),
            ("folds", "task.folds", self.folds.map(|v| json!(v))),
            ("fold", "task.fold", self.fold.map(|v| json!(v))),
            ("tokens", "task.tokens", self.tokens.as_ref().map(lower)),
            ("token-dropout", "task.token_dropout", self.token_dropout.map(|v| json!(v))),
            ("valid-fraction", "task.valid_fraction", self.valid_fraction.map(|v| json!(v))),
            ("vocab", "task.vocab_size", self.vocab.map(|v| json!(v))),
            ("seq-len", seq_key, self.seq_len.map(|v| json!(v))),
            ("kv-pairs", "task.num_kv_pairs", self.kv_pairs.map(|v| json!(v))),
            ("dataset", "task.dataset", self.dataset.as_ref().map(lower)),
            ("glimpses", "task.glimpses", self.glimpses.map(|v| json!(v))),
            ("policy", "task.policy", self.policy.as_ref().map(lower)),
            ("shift", "task.shift", self.shift.map(|v| json!(v))),
            ("flip", "task.flip", self.flip.map(|v| json!(v))),
            ("d-model", "model.d_model", self.d_model.map(|v| json!(v))),
            ("layers", "model.n_layers", self.layers.map(|v| json!(v))),
            ("heads", "model.n_heads", self.heads.map(|v| json!(v))),
            ("kv-heads", "model.n_kv_heads", self.kv_heads.map(|v| json!(v))),
            ("d-ff", "model.d_ff", self.d_ff.map(|v| json!(v))),
            ("mlp", "model.mlp", self.mlp.as_ref().map(lower)),
            ("norm", "model.norm", self.norm.as_ref().map(lower)),
            ("positions", "model.positions", self.positions.as_ref().map(lower)),
            ("window", "model.window", self.window.map(|v| json!(v))),
            ("softcap", "model.softcap", self.softcap.map(|v| json!(v))),
            ("dropout", "model.dropout", self.dropout.map(|v| json!(v))),
            ("pooling", "model.pooling", self.pooling.as_ref().map(lower)),
            ("pool-k", "model.pool_k", self.pool_k.map(|v| json!(v))),
            ("patch", "model.patch", self.patch.map(|v| json!(v))),
            ("patch-stride", "model.patch_stride", self.patch_stride.map(|v| json!(v))),
            ("stem", "model.stem", self.stem.as_ref().map(|v| json!(v.0))),
            ("lr", "optimizer.lr", self.lr.map(|v| json!(v))),
            ("weight-decay", "optimizer.weight_decay", self.weight_decay.map(|v| json!(v))),
            ("warmup", "schedule.warmup_steps", self.warmup.map(|v| json!(v))),
            // A flag beats the file: --steps drops a file's epochs, --epochs replaces its steps.
            ("steps", "train.steps", self.steps.map(|v| json!(v))),
            ("steps", "train.epochs", self.steps.map(|_| Value::Null)),
            ("epochs", "train.epochs", self.epochs.map(|v| json!(v))),
            ("batch", "train.batch_size", self.batch.map(|v| json!(v))),
            ("grad-accum", "train.grad_accum", self.grad_accum.map(|v| json!(v))),
            ("seed", "train.seed", self.seed.map(|v| json!(v))),
            ("eval-every", "train.eval_every", self.eval_every.map(|v| json!(v))),
            ("eval-batches", "train.eval_batches", self.eval_batches.map(|v| json!(v))),
            ("target-accuracy", "train.target_accuracy", self.target_accuracy.map(zero_is_off)),
            ("patience", "train.early_stopping.patience", self.patience.map(|v| json!(v))),
            ("min-delta", "train.early_stopping.min_delta", self.min_delta.map(|v| json!(v))),
            ("clip", "train.clip_grad_norm", self.clip.map(zero_is_off)),
            ("label-smoothing", "train.label_smoothing", self.label_smoothing.map(|v| json!(v))),
            ("checkpoint-every", "train.checkpoint_every", self.checkpoint_every.map(|v| json!(v))),
            ("keep-checkpoints", "train.keep_checkpoints", self.keep_checkpoints.map(|v| json!(v))),
            ("max-time", "train.max_time_s", self.max_time.map(|v| json!(v))),
            ("on-nonfinite", "train.on_nonfinite", self.on_nonfinite.as_ref().map(lower)),
            ("precision", "train.precision", self.precision.as_ref().map(lower)),
            ("device", "device", self.device.as_ref().map(|d| json!(d))),
        ];
        given.into_iter().filter_map(|(f, k, v)| v.map(|v| (f, k, v))).collect()
    }
}

/// The schedule `--schedule NAME` asks for; lengths are left to `resolve` (the run's steps).
fn schedule_named(name: &str) -> Result<ScheduleConfig> {
    Ok(match name {
        "constant" => ScheduleConfig::Constant,
        "warmup" => ScheduleConfig::LinearWarmup { warmup_steps: 100 },
        "cosine" => ScheduleConfig::Cosine { warmup_steps: 0, total_steps: 0, min_lr: 0.0 },
        "linear" => ScheduleConfig::Linear { warmup_steps: 0, total_steps: 0, min_lr: 0.0 },
        "step" => ScheduleConfig::Step { step_size: 0, gamma: 0.1 },
        other => bail!("unknown schedule '{other}'; choose constant, warmup, cosine, linear or step"),
    })
}
