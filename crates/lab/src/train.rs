//! The training loop behind `attune train`: deterministic data by step, gradient
//! accumulation and clipping, schedule and plateau, held-out evaluation, early stopping,
//! checkpoints (also on Ctrl-C), exact resume, and non-finite steps stopped or skipped
//! (docs/run-config.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use attune_nn::Ctx;
use attune_optim::{
    DecaySplit, EarlyStopping, GradAccumulator, Mode, Optimizer, ReduceOnPlateau, clip_grad_norm, grad_norm,
    split_decay,
};
use attune_tensor::Var;
use attune_tensor::{DType, Device, Rng};
use serde::{Deserialize, Serialize};

use crate::batch::{DeviceBatch, forward};
use crate::config::{OnNonFinite, ResolvedConfig, SavedConfig};
use crate::distributed::{Dist, DistOptions, StepSums};
use crate::evaluate::{EvalResult, evaluate, final_split};
use crate::metrics::{MetricRow, MetricsLog};
use crate::net::Net;
use crate::progress::Progress;
use crate::ranking::{SELECTION_METRIC, ranking_metrics};
use crate::rundir::RunDir;
use crate::runstate::{self, CheckpointParts, OnDamage, RunState, Window};
use crate::tasks::{self, Split, Task};

/// `summary.json`: the outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Task name.
    pub task: String,
    /// Accuracy on fresh held-out data at the end (the test split when the task has one).
    pub eval_accuracy: f64,
    /// Loss on the same data (non-finite as `"NaN"`/`"inf"`, see [`crate::jsonfloat`]).
    #[serde(with = "crate::jsonfloat")]
    pub eval_loss: f64,
    /// The split those came from.
    pub eval_split: String,
    /// Supervised targets they were measured on.
    pub eval_targets: usize,
    /// Best validation accuracy seen during training, and its step.
    pub best_valid_accuracy: Option<(u64, f64)>,
    /// Optimizer steps done.
    pub steps: u64,
    /// Seconds of training (excluding the final evaluation and plots).
    pub elapsed_s: f64,
    /// Mean training throughput.
    pub tokens_per_s: f64,
    /// Why training ended.
    pub stopped: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Device trained on.
    pub device: String,
    /// Steps whose update was dropped for a non-finite loss or gradient (`on_nonfinite = skip`).
    #[serde(default)]
    pub skipped_steps: u64,
    /// Further figures on the same data: for the RAM, `error` (the policy's mean path) and
    /// `error_averaged` (class probabilities averaged over the task's `test_paths` sampled
    /// paths); empty, and left out, for other models.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_metrics: std::collections::BTreeMap<String, f64>,
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Finished (or stopped early) and wrote the summary.
    Done(Summary),
    /// Interrupted (Ctrl-C or `interrupt_after`); a checkpoint was written.
    Interrupted { step: u64 },
    /// A distributed run's rank other than 0 finished its part; rank 0 wrote the summary.
    Follower { step: u64 },
}

/// Options that are not part of the run's config.
#[derive(Debug, Clone, Default)]
pub struct LoopOptions {
    /// Continue the run in this directory.
    pub resume: bool,
    /// Pretend Ctrl-C arrived after this many steps (tests of resume).
    pub interrupt_after: Option<u64>,
    /// No progress bar or messages.
    pub quiet: bool,
    /// Skip the PNG plots.
    pub no_plots: bool,
    /// Start a new run in a directory that holds one (its files are removed first).
    pub overwrite: bool,
    /// Print each validation as a JSON line `{"step": k, "value": accuracy, "loss": l}` on
    /// stdout: the intermediate values `attune search` feeds its pruner (docs/search.md).
    pub report_json: bool,
    /// Start this new run from the weights, optimizer state and step of another run's newest
    /// committed checkpoint, with this run's own hyper-parameters (population-based training's
    /// exploit step; the model's shape must match).
    pub init_from: Option<PathBuf>,
    /// Train as one rank of an MPI job (`mpirun -np N attune train --distributed`).
    pub distributed: Option<DistOptions>,
}

/// One intermediate-value line of the search protocol on stdout, flushed at once so the
/// search sees it while the run goes on (a non-finite loss is written as null).
fn report_json_line(step: u64, accuracy: f64, loss: f64) {
    use std::io::Write;
    let line = serde_json::json!({"step": step, "value": accuracy, "loss": loss.is_finite().then_some(loss)});
    let mut out = std::io::stdout().lock();
    // A closed pipe means the search stopped this trial; training ends when it is killed.
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Picks the device named in the config.
pub fn resolve_device(name: &str) -> Result<Device> {
    Ok(match name {
        "auto" => Device::best(),
        "cpu" => Device::Cpu,
        // The CUDA emulator: the GPU kernels run on the host (slow; for testing GPU code paths).
        "emu" => Device::Emu,
        n if n == "cuda" || n.starts_with("cuda:") => {
            if !Device::cuda_is_available() {
                bail!("device {n} requested but no CUDA GPU is available on this machine; use --device cpu or auto");
            }
            let ordinal = n.strip_prefix("cuda:").map(str::parse).transpose().context("cuda:N needs an integer N")?;
            Device::Cuda(ordinal.unwrap_or(0))
        }
        other => bail!("unknown device '{other}'; use auto, cpu, cuda, cuda:N or emu"),
    })
}

/// Sets up a Ctrl-C flag once per process.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // Without a handler (e.g. one is already installed) Ctrl-C just ends the process.
        let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

/// Everything the loop holds.
struct Run<'d> {
    cfg: ResolvedConfig,
    dir: PathBuf,
    /// The run directory, locked for this process (None on a distributed run's other ranks,
    /// which write nothing).
    _rundir: Option<RunDir>,
    /// `config.json` as written, copied into every checkpoint.
    config_json: Vec<u8>,
    task: Box<dyn Task>,
    model: Net,
    optimizer: Box<dyn Optimizer>,
    early: Option<EarlyStopping>,
    plateau: Option<ReduceOnPlateau>,
    state: RunState,
    device: Device,
    /// metrics.jsonl (None on a distributed run's other ranks).
    metrics: Option<MetricsLog>,
    /// The step of the newest checkpoint on disk (None before the first).
    checkpointed: Option<u64>,
    /// This process's rank of a distributed run.
    dist: Option<&'d mut Dist>,
}

/// What one optimizer step measured.
#[derive(Default)]
struct StepOutcome {
    /// Mean loss over the micro-batches.
    loss: f64,
    /// Correct and counted targets.
    correct: usize,
    counted: usize,
    /// Tokens trained on.
    tokens: u64,
    /// Global gradient norm before clipping.
    grad_norm: f64,
    /// The RAM's REINFORCE figures, averaged over the micro-batches.
    rl: Option<crate::batch::RlStats>,
    /// Seconds in collectives (a distributed run).
    comm_s: f64,
}

impl StepOutcome {
    fn is_finite(&self) -> bool {
        self.loss.is_finite() && self.grad_norm.is_finite()
    }
}

impl Window {
    fn add(&mut self, out: &StepOutcome) {
        self.loss += out.loss;
        self.correct += out.correct;
        self.counted += out.counted;
        self.steps += 1;
        self.tokens += out.tokens;
        self.grad_norm = out.grad_norm;
        if let Some(rl) = &out.rl {
            self.add_rl(rl);
        }
    }
}

/// Trains as `cfg` says into `dir` (or continues the run there with `opts.resume`); with
/// `opts.distributed`, as one rank of an MPI job (crate::distributed).
pub fn train(cfg: ResolvedConfig, dir: &Path, opts: &LoopOptions) -> Result<Ending> {
    // Every forward of the run (steps, evaluations, rankings, plots) runs on this thread
    // under the run's precision.
    let _precision = cfg.train.precision.enter()?;
    let Some(d) = &opts.distributed else {
        return Run::setup(cfg, dir, opts, None)?.run_loop(opts);
    };
    let mut dist = Dist::open(d)?;
    let result =
        dist.check_start(&cfg, opts.resume).and_then(|_| Run::setup(cfg, dir, opts, Some(&mut dist))?.run_loop(opts));
    if let Err(e) = &result
        && dist.world() > 1
    {
        // The other ranks would wait for this one in their next collective forever.
        eprintln!("attune: rank {} of {}: {e:#}", dist.rank(), dist.world());
        dist.abort(1);
    }
    result
}

impl<'d> Run<'d> {
    fn setup(cfg: ResolvedConfig, dir: &Path, opts: &LoopOptions, mut dist: Option<&'d mut Dist>) -> Result<Run<'d>> {
        let leader = dist.as_ref().is_none_or(|d| d.is_leader());
        let device = match (resolve_device(&cfg.device)?, &dist) {
            // One GPU per rank: plain `cuda` means the GPU of this rank's place on its host.
            (Device::Cuda(0), Some(_)) if cfg.device == "cuda" => Device::Cuda(crate::distributed::local_rank()),
            (d, _) => d,
        };
        let seed = cfg.train.seed;
        let task = tasks::build(&cfg.task, seed).context("building the task")?;
        if task.split_size(Split::Valid) == Some(0) {
            let needs = [
                ("early stopping", cfg.train.early_stopping.is_some()),
                ("a plateau schedule", cfg.train.plateau.is_some()),
                ("a target accuracy", cfg.train.target_accuracy.is_some()),
            ];
            if let Some((what, _)) = needs.iter().find(|(_, set)| *set) {
                bail!(
                    "the task has no valid split (valid_fraction 0), and {what} follows one: leave it out \
                     (--target-accuracy 0 turns the target off) or raise valid_fraction"
                );
            }
        }
        let model_cfg = cfg.model.resolve(task.as_ref());
        let model = Net::build(task.as_ref(), &model_cfg, seed, &device)?;
        let groups = split_decay(model.store().named(), &DecaySplit::default());
        let mut optimizer = cfg.optimizer.build(groups)?;
        let mut early = cfg.train.early_stopping.clone().map(EarlyStopping::new).transpose()?;
        let mut plateau = cfg.train.plateau.clone().map(ReduceOnPlateau::new).transpose()?;
        let (rundir, mut state, committed) = if !leader {
            // Rank 0's state arrives below; this rank keeps no files.
            (None, RunState::fresh(seed, cfg.optimizer.lr()), None)
        } else if opts.resume {
            let rundir = RunDir::open(dir)?;
            let (newest, warnings) = runstate::newest_valid(dir, OnDamage::FallBack)?;
            for w in &warnings {
                eprintln!("{w}");
            }
            match newest {
                Some(c) => {
                    let state = runstate::load(&c, &model, optimizer.as_mut(), early.as_mut(), plateau.as_mut())?;
                    // A crash between a commit and its link leaves DIR/model.safetensors one
                    // checkpoint behind; it names the newest committed weights again from here.
                    attune_persist::link_atomic(&c.path("model.safetensors"), &dir.join("model.safetensors"))?;
                    let committed = (state.step, state.metrics_bytes);
                    (Some(rundir), state, Some(committed))
                }
                None => {
                    if !opts.quiet {
                        eprintln!(
                            "attune: {} has no committed checkpoint yet; starting its run from step 0",
                            dir.display()
                        );
                    }
                    (Some(rundir), RunState::fresh(seed, cfg.optimizer.lr()), None)
                }
            }
        } else {
            let rundir = RunDir::create(dir, opts.overwrite)?;
            let state = match &opts.init_from {
                None => RunState::fresh(seed, cfg.optimizer.lr()),
                Some(src) => {
                    let (newest, _) = runstate::newest_valid(src, OnDamage::Refuse)?;
                    let c = newest
                        .with_context(|| format!("--init-from {}: no committed checkpoint there", src.display()))?;
                    let mut state = runstate::load(&c, &model, optimizer.as_mut(), None, None).with_context(|| {
                        format!("--init-from {}: its checkpoint does not fit this model", src.display())
                    })?;
                    // This run's own learning rate, metrics and stopping state; the donor's
                    // weights, moments and step.
                    state.base_lr = cfg.optimizer.lr();
                    state.metrics_bytes = 0;
                    (state.early_stopping, state.plateau, state.best_accuracy) = (None, None, None);
                    state
                }
            };
            (Some(rundir), state, None)
        };
        if let Some(d) = dist.as_deref_mut() {
            d.attach_device(&device)?;
            d.broadcast_start(&model, optimizer.as_mut(), &mut state)?;
        }
        // Written on resume too: config.json records what --resume was allowed to change.
        let saved = SavedConfig {
            task: task.config(),
            model: model_cfg,
            model_spec: cfg.model.clone(),
            ram: model.ram_config(),
            optimizer: cfg.optimizer.clone(),
            schedule: cfg.schedule.clone(),
            train: cfg.train.clone(),
            device: cfg.device.clone(),
        };
        let config_json = serde_json::to_vec_pretty(&saved)?;
        let metrics = if leader {
            attune_persist::write_atomic(&dir.join("config.json"), &config_json)?;
            Some(MetricsLog::open(dir, committed.map(|(_, bytes)| bytes))?)
        } else {
            None
        };
        let checkpointed = committed.map(|(step, _)| step);
        Ok(Run {
            cfg,
            dir: dir.to_path_buf(),
            _rundir: rundir,
            config_json,
            task,
            model,
            optimizer,
            early,
            plateau,
            state,
            device,
            metrics,
            checkpointed,
            dist,
        })
    }

    /// Whether this process writes the run directory and evaluates.
    fn is_leader(&self) -> bool {
        self.dist.as_ref().is_none_or(|d| d.is_leader())
    }

    /// One optimizer step: forward and backward over the micro-batches, the gradient norm
    /// (clipped when configured), and the update — only when loss and norm are finite, so a
    /// non-finite step leaves the weights and the optimizer state untouched.
    fn step(&mut self, ctx: &mut Ctx, params: &[Var]) -> Result<StepOutcome> {
        let t = self.cfg.train.clone();
        let micro = t.batch_size / t.grad_accum;
        let mut out = StepOutcome::default();
        let mut acc = GradAccumulator::new(params);
        let mut single = None;
        for m in 0..t.grad_accum as u64 {
            let index = self.state.step * t.grad_accum as u64 + m;
            let global = self.task.batch(Split::Train, index, micro)?;
            let rows = match self.dist.as_deref() {
                Some(d) => d.shard(&global)?,
                None => global,
            };
            let batch = DeviceBatch::new(&rows, &self.device)?;
            let fwd = forward(&self.model, &batch, ctx, t.label_smoothing)?;
            out.loss += fwd.loss.to_dtype(DType::F64)?.to_scalar::<f64>()? / t.grad_accum as f64;
            out.correct += fwd.correct;
            out.counted += fwd.counted;
            out.tokens += batch.tokens_count as u64;
            if let Some(rl) = fwd.rl {
                let s = out.rl.get_or_insert_default();
                let k = t.grad_accum as f64;
                s.reward += rl.reward / k;
                s.baseline += rl.baseline / k;
                s.policy_loss += rl.policy_loss / k;
                s.reinforce_var += rl.reinforce_var / k;
            }
            let grads = fwd.objective.backward()?;
            // One micro-batch needs no averaging copy.
            if t.grad_accum == 1 {
                single = Some(grads);
            } else {
                acc.add(&grads)?;
            }
        }
        let mut grads = match single {
            Some(g) => g,
            None => acc.take_mean()?,
        };
        if self.dist.is_some() {
            self.all_reduce(&mut grads, params, &mut out)?;
        }
        out.grad_norm = match t.clip_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, params, max)?,
            None => grad_norm(&grads, params)?,
        };
        if out.is_finite() {
            self.optimizer.step(&grads)?;
        }
        Ok(out)
    }

    /// Turns this rank's step (gradients and figures of its rows) into the global batch's.
    fn all_reduce(
        &mut self,
        grads: &mut attune_tensor::GradStore,
        params: &[Var],
        out: &mut StepOutcome,
    ) -> Result<()> {
        let Some(d) = self.dist.as_deref_mut() else { return Ok(()) };
        let step = self.state.step + 1;
        let with: Vec<&Var> = params.iter().filter(|v| grads.get(v.as_tensor()).is_some()).collect();
        let with_grad = with.len();
        let rl = out.rl.map_or([0.0; 4], |r| [r.reward, r.baseline, r.policy_loss, r.reinforce_var]);
        let local = StepSums {
            weighted_loss: out.loss * out.counted as f64,
            correct: out.correct as f64,
            counted: out.counted as f64,
            tokens: out.tokens as f64,
            with_grad: with_grad as f64,
            rl,
        };
        let sums = d.sum_step(step, local)?;
        let world = d.world() as f64;
        if sums.with_grad != world * with_grad as f64 {
            bail!(
                "step {step}: the ranks' gradients cover different parameters ({} here, {} in all)",
                with_grad,
                sums.with_grad
            );
        }
        // Each rank's mean weighted by its share of the counted targets: the global mean.
        let share = if sums.counted > 0.0 { out.counted as f64 / sums.counted } else { 1.0 / world };
        d.all_reduce_grads(step, grads, &with, share as f32)?;
        out.loss = if sums.counted > 0.0 { sums.weighted_loss / sums.counted } else { out.loss };
        (out.correct, out.counted, out.tokens) = (sums.correct as usize, sums.counted as usize, sums.tokens as u64);
        if let Some(r) = &mut out.rl {
            [r.reward, r.baseline, r.policy_loss, r.reinforce_var] = sums.rl.map(|x| x / world);
        }
        out.comm_s = d.take_comm_seconds();
        Ok(())
    }

    /// The error that ends a run at a non-finite step: the step, what was not finite, the likely
    /// cause and what was kept.
    fn divergence(&self, step: u64, out: &StepOutcome, lr: f64) -> anyhow::Error {
        let t = &self.cfg.train;
        let clip = match t.clip_grad_norm {
            Some(c) => format!("clipping at --clip {c} did not contain it; lower --lr or clip tighter"),
            None => "gradients are not clipped; lower --lr or clip them (--clip 1.0)".into(),
        };
        let kept = match self.checkpointed {
            Some(k) => format!(
                "the last good checkpoint (step {k}) in {} is kept; `attune train --resume {} --on-nonfinite skip` continues from it",
                self.dir.display(),
                self.dir.display()
            ),
            None => format!("no checkpoint was written before it (checkpoint_every {})", t.checkpoint_every),
        };
        anyhow::anyhow!(
            "training diverged at step {step}: loss {} and gradient norm {} (learning rate {lr:e}). \
             The learning rate is likely too high and {clip}; or pass --on-nonfinite skip to drop such steps. \
             Nothing after step {} was checkpointed: {kept}; metrics.jsonl holds the finite rows before it.",
            out.loss,
            out.grad_norm,
            step - 1
        )
    }

    fn run_loop(&mut self, opts: &LoopOptions) -> Result<Ending> {
        let t = self.cfg.train.clone();
        let leader = self.is_leader();
        let interrupted = interrupt_flag();
        let mut progress = Progress::new(t.steps, self.state.step, opts.quiet || !leader);
        let ranks = self
            .dist
            .as_deref()
            .map_or(String::new(), |d| format!(" on {} ranks ({})", d.world(), d.gradient_backend()));
        progress.message(&format!(
            "attune: {} on {}{ranks}, {} parameters, {} steps of batch {} → {}",
            self.task.name(),
            self.device,
            self.model.store().num_elements(),
            t.steps,
            t.batch_size,
            self.dir.display()
        ));
        let micro = t.batch_size / t.grad_accum;
        let (seed, offset) = self.state.dropout_rng;
        let seed = self.dist.as_deref().map_or(seed, |d| d.dropout_seed(seed));
        let mut ctx = Ctx::train_with(Rng::from_state(seed, offset));
        let params = self.model.store().vars();
        let mut stopped = "max steps".to_string();
        // Without a valid split (valid_fraction 0: every training example trains) there is
        // nothing to evaluate until the test split at the end.
        let validates = self.task.split_size(Split::Valid) != Some(0);
        while self.state.step < t.steps {
            let lr = self.cfg.schedule.lr_at(self.state.step, self.state.base_lr);
            self.optimizer.set_lr(lr)?;
            let started = Instant::now();
            let out = self.step(&mut ctx, &params)?;
            self.state.step += 1;
            let step = self.state.step;
            if let Some(d) = self.dist.as_deref_mut() {
                d.verify_identical(step, &self.model)?;
            }
            let dt = started.elapsed().as_secs_f64();
            self.state.elapsed_s += dt;
            self.state.tokens_seen += out.tokens;
            self.state.window.time += dt;
            self.state.window.comm_time += out.comm_s;
            if out.is_finite() {
                self.state.window.add(&out);
            } else if t.on_nonfinite == OnNonFinite::Skip {
                self.state.skipped_steps += 1;
                progress.message(&format!(
                    "step {step:>6}  skipped: loss {} gradient norm {} (--on-nonfinite skip)",
                    out.loss, out.grad_norm
                ));
            } else {
                progress.finish();
                return Err(self.divergence(step, &out, lr));
            }
            if step.is_multiple_of(t.log_every) || step == t.steps {
                if let Some(row) = self.state.window.row(step, lr, self.state.elapsed_s)
                    && let Some(m) = &mut self.metrics
                {
                    m.write(&row)?;
                    progress.update(step, row.loss, row.accuracy, row.tokens_per_s.unwrap_or(0.0));
                }
                self.state.window = Window::default();
            }
            let mut stop = None;
            if leader && validates && (step.is_multiple_of(t.eval_every) || step == t.steps) {
                stop = self.validate(step, lr, micro, opts, &mut progress)?;
            }
            if let Some(max) = t.max_time_s
                && leader
                && stop.is_none()
                && self.state.elapsed_s >= max
            {
                stop = Some(format!("time limit {max} s"));
            }
            let mut interrupt = interrupted.load(Ordering::SeqCst) || opts.interrupt_after == Some(step);
            if let Some(d) = self.dist.as_deref_mut() {
                // Rank 0 alone evaluates and keeps time; everyone hears its verdict and its
                // learning rate (a plateau may have lowered it), and anyone's Ctrl-C.
                let decided = d.decide(step, interrupt, stop.is_some(), self.state.base_lr)?;
                interrupt = decided.interrupt;
                self.state.base_lr = decided.base_lr;
                if decided.stop && stop.is_none() {
                    stop = Some("stopped by rank 0".into());
                }
            }
            if let Some(s) = stop {
                stopped = s;
                break;
            }
            if step.is_multiple_of(t.checkpoint_every) || interrupt {
                self.state.dropout_rng = (ctx.rng.seed(), ctx.rng.offset());
                if leader {
                    self.checkpoint()?;
                }
            }
            if interrupt {
                progress.finish();
                if !opts.quiet && leader {
                    eprintln!(
                        "attune: interrupted at step {step}; checkpoint written to {}. Continue with: attune train --resume {}",
                        self.dir.display(),
                        self.dir.display()
                    );
                }
                return Ok(Ending::Interrupted { step });
            }
        }
        progress.finish();
        self.state.dropout_rng = (ctx.rng.seed(), ctx.rng.offset());
        if !leader {
            return Ok(Ending::Follower { step: self.state.step });
        }
        self.finish(stopped, opts).map(Ending::Done)
    }

    /// The validation of `step` (rank 0's alone in a distributed run): its metrics row, the
    /// search protocol's line, and the stopping rules; `Some(reason)` stops.
    fn validate(
        &mut self,
        step: u64,
        lr: f64,
        micro: usize,
        opts: &LoopOptions,
        progress: &mut Progress,
    ) -> Result<Option<String>> {
        let t = &self.cfg.train;
        let ev = evaluate(&self.model, self.task.as_ref(), Split::Valid, t.eval_batches, micro, &self.device)?;
        // A ranking task selects its model by NDCG@10 over every valid user (crate::ranking).
        let ranking = ranking_metrics(&self.model, self.task.as_ref(), Split::Valid, micro, &self.device)?;
        let selected = ranking.get(SELECTION_METRIC).copied().unwrap_or(ev.accuracy);
        if let Some(m) = &mut self.metrics {
            m.write(&MetricRow {
                step,
                split: "valid".into(),
                loss: ev.loss,
                accuracy: ev.accuracy,
                lr,
                grad_norm: None,
                tokens_per_s: None,
                elapsed_s: self.state.elapsed_s,
                rl: None,
                eval_metrics: (!ranking.is_empty()).then_some(ranking),
                comm_fraction: None,
            })?;
        }
        progress.message(&format!(
            "step {step:>6}  valid loss {:.4}  accuracy {:.2}%  ({:.1}s)",
            ev.loss,
            100.0 * ev.accuracy,
            self.state.elapsed_s
        ));
        if opts.report_json {
            report_json_line(step, ev.accuracy, ev.loss);
        }
        self.observe(step, &ev, selected)
    }

    /// Target accuracy, early stopping and plateau after an evaluation; `Some(reason)` stops.
    /// `selected` is the figure early stopping and a plateau in `max` mode follow: the
    /// accuracy, or a ranking task's NDCG@10.
    fn observe(&mut self, step: u64, ev: &EvalResult, selected: f64) -> Result<Option<String>> {
        self.state.last_valid_accuracy = Some(ev.accuracy);
        if self.state.best_accuracy.is_none_or(|(_, a)| ev.accuracy > a) {
            self.state.best_accuracy = Some((step, ev.accuracy));
        }
        if let Some(p) = &mut self.plateau {
            let metric = if p.config().mode == Mode::Max { selected } else { ev.loss };
            self.state.base_lr = p.observe(metric, self.state.base_lr);
            self.state.plateau = Some(p.state().clone());
        }
        let mut stop = None;
        if let Some(e) = &mut self.early {
            let metric = if e.config().mode == Mode::Max { selected } else { ev.loss };
            let obs = e.observe_and_snapshot(step, metric, &self.model.store().named())?;
            self.state.early_stopping = Some(e.state().clone());
            if obs.should_stop {
                stop = Some(format!("early stopping (no improvement in {} evaluations)", e.config().patience));
            }
        }
        if let Some(target) = self.cfg.train.target_accuracy
            && ev.accuracy >= target
        {
            stop = Some(format!("reached target accuracy {:.2}%", 100.0 * target));
        }
        Ok(stop)
    }

    /// Commits a checkpoint of the current state (metrics.jsonl made durable first, so the
    /// length the checkpoint records is on disk).
    fn checkpoint(&mut self) -> Result<()> {
        self.state.metrics_bytes = match &mut self.metrics {
            Some(m) => m.sync()?,
            None => bail!("only rank 0 writes checkpoints"),
        };
        let parts = CheckpointParts {
            model: &self.model,
            optimizer: self.optimizer.as_ref(),
            early: self.early.as_ref(),
            state: &self.state,
            config_json: &self.config_json,
        };
        runstate::save(&self.dir, &parts, self.cfg.train.keep_checkpoints)
            .with_context(|| format!("saving the checkpoint of step {}", self.state.step))?;
        self.checkpointed = Some(self.state.step);
        Ok(())
    }

    fn finish(&mut self, stopped: String, opts: &LoopOptions) -> Result<Summary> {
        let mut restored = false;
        if self.cfg.train.restore_best
            && let Some(e) = &self.early
            && stopped.starts_with("early stopping")
        {
            e.restore_best(&self.model.store().named())?;
            restored = true;
        }
        // The loop's checkpoint of this step already holds this state unless the best weights
        // were just restored.
        if self.checkpointed != Some(self.state.step) || restored {
            self.checkpoint()?;
        }
        let split = final_split(self.task.as_ref());
        let t = &self.cfg.train;
        let micro = t.batch_size / t.grad_accum;
        // The final figures cover a finite split whole (Fashion-MNIST's 10,000 test images).
        let batches = if self.task.split_size(split).is_some() { usize::MAX } else { 2 * t.eval_batches };
        let ev = evaluate(&self.model, self.task.as_ref(), split, batches, micro, &self.device)?;
        let summary = Summary {
            task: self.task.name().into(),
            eval_accuracy: ev.accuracy,
            eval_loss: ev.loss,
            eval_split: split.name().into(),
            eval_targets: ev.targets,
            best_valid_accuracy: self.state.best_accuracy,
            steps: self.state.step,
            elapsed_s: self.state.elapsed_s,
            tokens_per_s: self.state.tokens_seen as f64 / self.state.elapsed_s.max(1e-9),
            stopped,
            parameters: self.model.store().num_elements(),
            device: self.device.to_string(),
            skipped_steps: self.state.skipped_steps,
            eval_metrics: crate::evaluate::task_metrics(
                &self.model,
                self.task.as_ref(),
                split,
                (batches, micro),
                ev.accuracy,
                (t.seed, &self.device),
            )?,
        };
        attune_persist::write_atomic(
            &self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        crate::probe::write(&self.dir, &self.model, self.task.as_ref(), &self.device)?;
        if !opts.no_plots {
            // The run is done and saved by now: a plot that cannot be drawn is reported, not fatal.
            let drawn = self.metrics.as_ref().context("rank 0's metrics")?.rows().and_then(|rows| {
                crate::plots::write_all(&self.dir, &rows, &self.model, self.task.as_ref(), &self.device)
            });
            if let Err(e) = drawn {
                eprintln!("attune: warning: the plots in {}/plots could not be drawn: {e:#}", self.dir.display());
            }
        }
        Ok(summary)
    }
}
