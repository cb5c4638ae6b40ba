//! `attune search`: decision optimisation of training runs or of any program (docs/search.md).
//!
//! - `protocol`: the JSON-lines protocol between the search and a trial's process;
//!   `lifeline`: a trial's processes die with the worker that started them.
//! - [`objective`]: what a trial runs (a lab training run or a command) and its metrics.
//! - [`driver`]: `--parallel K` worker threads, pruning, the progress bar.
//! - [`pbt`]: population-based training (`--pbt`) as generations of trials.
//! - [`worker`]: `attune worker`, one process of a shared study (`--storage`, `--workers K`).
//! - [`study_cmd`]: `attune study list|show|export` for the people watching a shared study.
//! - `plots`: the study's PNG plots.
//!
//! The study itself (space, samplers, pruners, storage) is crates/search (attune-search);
//! its directory is `attune_search::studydir`.

pub mod driver;
mod lifeline;
pub mod objective;
pub mod pbt;
mod protocol;
mod shared;
pub mod study_cmd;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use attune_search::pbt::PbtConfig;
use attune_search::pruner::PrunerConfig;
use attune_search::sampler::SamplerConfig;
use attune_search::studydir::StudyDir;
use attune_search::{Direction, Space, Storage, Study, StudyRecord};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use driver::{DriverOptions, fail_orphans, run_trials, status_line};
use objective::{Metric, Objective};
use pbt::PbtSettings;

/// Flags of `attune search`.
#[derive(Args, Debug, Clone)]
pub struct SearchFlags {
    /// The search space (TOML, docs/search.md).
    #[arg(long, required_unless_present = "resume")]
    pub space: Option<PathBuf>,
    /// Continue the study in this directory (its stored space, sampler, seed and objective).
    #[arg(long, conflicts_with_all = ["out", "sampler", "pruner", "seed", "command", "config", "set", "metric"])]
    pub resume: Option<PathBuf>,
    /// Study directory (default runs/search-<sampler>-seed<seed>, or the first free -N).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Trials in the study when it stops (a resumed study counts the ones it has).
    #[arg(long, default_value_t = 20)]
    pub trials: u64,
    /// random, grid, tpe, ga, sa or reinforce; or a JSON object with settings,
    /// e.g. '{"kind": "tpe", "n_startup_trials": 5}' (docs/search.md).
    #[arg(long)]
    pub sampler: Option<String>,
    /// median, asha or hyperband (on intermediate values); or a JSON object with settings,
    /// e.g. '{"kind": "asha", "min_resource": 100}'.
    #[arg(long)]
    pub pruner: Option<String>,
    /// The study's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Trials at a time.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Population-based training: --population members train --generations segments of
    /// --interval steps; the bottom quantile copies a top member and perturbs its parameters.
    #[arg(long, conflicts_with = "pruner")]
    pub pbt: bool,
    /// PBT: members.
    #[arg(long, default_value_t = 8)]
    pub population: u64,
    /// PBT: segments per member.
    #[arg(long, default_value_t = 4)]
    pub generations: u64,
    /// PBT: training steps per segment.
    #[arg(long, default_value_t = 250)]
    pub interval: u64,
    /// Objective program (`sh -c`), speaking the trial protocol; without it each trial trains.
    #[arg(long)]
    pub command: Option<String>,
    /// Base run config of training trials (TOML or JSON).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// KEY=JSON overrides of the base run config, e.g. --set train.steps=300.
    #[arg(long)]
    pub set: Vec<String>,
    /// Metric(s) of training trials, one per direction: eval_accuracy, steps_to_target, ...
    #[arg(long, value_delimiter = ',')]
    pub metric: Vec<String>,
    /// Kill and fail a trial after this many seconds.
    #[arg(long)]
    pub trial_timeout: Option<f64>,
    /// CPU threads per training trial (default: the cores shared out over --parallel).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run each training trial under this MPI launcher as a distributed run, e.g.
    /// --launcher "mpirun -np 2" (docs/distributed.md).
    #[arg(long)]
    pub launcher: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// A shared study's storage, sqlite:PATH or postgres://USER@HOST:PORT/DB: trials run in
    /// --workers processes here and in `attune worker` processes anywhere (docs/search.md).
    #[arg(long, requires = "study", conflicts_with = "resume")]
    pub storage: Option<String>,
    /// The study's name in --storage (run the same command again to continue it).
    #[arg(long, requires = "storage")]
    pub study: Option<String>,
    /// Local worker processes of a shared study (0: create or check the study and return; the
    /// trials then run in `attune worker` processes).
    #[arg(long, default_value_t = 1, requires = "storage")]
    pub workers: usize,
    /// Where a shared study's trial folders go, reachable by every worker (default: --out,
    /// or runs/<study>).
    #[arg(long, requires = "storage")]
    pub artifacts: Option<PathBuf>,
    /// Seconds a worker's lease on a trial lasts without renewal (it renews every third).
    #[arg(long, default_value_t = 30.0)]
    pub lease: f64,
    /// Times a trial whose worker died is re-queued before it is failed.
    #[arg(long, default_value_t = 2)]
    pub max_retries: u32,
}

/// The driver's part of the stored study: what a resume or a worker needs to run the same trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverRecord {
    objective: Objective,
    trial_timeout: Option<f64>,
    #[serde(default)]
    pbt: Option<PbtSettings>,
    /// Set for a shared study (`--storage`): what its workers read.
    #[serde(default)]
    shared: Option<SharedSettings>,
}

/// A shared study's settings, stored so every worker on every machine runs the same study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedSettings {
    /// Trials in the study when it is done.
    pub trials: u64,
    /// Seconds a worker's lease on a running trial lasts without renewal.
    pub lease_s: f64,
    /// Times a trial whose worker died is re-queued before it is failed.
    pub max_retries: u32,
    /// Where trial folders go: `ARTIFACTS/<study>/trials/NNNNN`.
    pub artifacts: PathBuf,
}

/// Runs `attune search`.
pub fn run(f: &SearchFlags) -> Result<()> {
    if f.storage.is_some() {
        return shared::run(f);
    }
    let (dir, study_dir, record) = match &f.resume {
        Some(dir) => {
            let sd = StudyDir::open(dir)?;
            let record = sd.storage().study()?.with_context(|| format!("{} holds no study record", dir.display()))?;
            if let Some(space) = &f.space {
                let given = Space::from_file(space)?;
                if given != record.space {
                    bail!(
                        "study {}: its stored space differs from {}; resume without --space (the study keeps its own) or start a new study with --out",
                        dir.display(),
                        space.display()
                    );
                }
            }
            (dir.clone(), sd, record)
        }
        None => {
            let (record, name) = new_record(f, None)?;
            let seed = record.seed;
            let dir = f.out.clone().unwrap_or_else(|| {
                crate::rundir::fresh_default(&PathBuf::from(format!("runs/search-{name}-seed{seed}")))
            });
            (dir.clone(), StudyDir::create(&dir)?, record)
        }
    };
    let sampler: SamplerConfig = serde_json::from_value(record.sampler.clone()).context("the stored sampler")?;
    let pruner: Option<PrunerConfig> =
        record.pruner.clone().map(serde_json::from_value).transpose().context("the stored pruner")?;
    if let Some(p) = &pruner {
        p.validate()?;
    }
    let driver: DriverRecord = serde_json::from_value(record.driver.clone()).context("the stored objective")?;
    let mut study = Study::open(study_dir.storage(), record, sampler.build(), pruner.map(|p| p.build()))?;
    if matches!(driver.objective, Objective::Train { .. }) {
        // Training trials report validation accuracy, whatever the objective.
        study.set_intermediate_direction(Direction::Maximize);
    }
    let orphans = fail_orphans(&study)?;
    if orphans > 0 {
        eprintln!("attune: {orphans} trial(s) were running when the study last stopped; recorded as failed");
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let opts = DriverOptions {
        trials: f.trials,
        parallel: f.parallel.max(1),
        trial_timeout: driver.trial_timeout.map(Duration::from_secs_f64),
        process: objective::TrialProcess {
            threads: f.threads.unwrap_or((cores / f.parallel.max(1)).max(1)),
            launcher: launcher_words(f.launcher.as_deref(), &driver.objective)?,
        },
        quiet: f.quiet,
        worker: format!("{}:{}", hostname(), std::process::id()),
        leased: false,
    };
    let export = |s: &Study| -> Result<()> { Ok(study_dir.export(s)?) };
    let summary = match &driver.pbt {
        Some(settings) => pbt::run_pbt(&study, &driver.objective, &dir, &opts, settings, &export)?,
        None => run_trials(&study, &driver.objective, &dir, &opts, &export)?,
    };
    if driver.pbt.is_some() {
        println!("attune: PBT schedule and the best member's lineage: {}/pbt_schedule.json", dir.display());
    }
    println!("attune: study {}: {}", dir.display(), status_line(&summary));
    if let (Some(v), Some(p)) = (summary.best_value, &summary.best_params) {
        println!(
            "attune: best value {v} (trial {}) at {}",
            summary.best_trial.unwrap_or(0),
            serde_json::Value::Object(p.clone())
        );
    }
    if let Some(front) = &summary.pareto_front {
        println!(
            "attune: Pareto front of {} trial(s): {:?}",
            front.len(),
            front.iter().map(|p| p.number).collect::<Vec<_>>()
        );
    }
    if !f.no_plots {
        crate::plots::search::write_all(&dir, study.space(), &study.trials()?)?;
        println!("attune: plots {}/plots/{{history,parallel,importance,intermediate}}.png", dir.display());
    }
    println!("attune: {}/summary.json, trials.jsonl, study.json", dir.display());
    Ok(())
}

/// A new study's record from the flags (space, sampler, pruner, seed, objective, PBT and the
/// shared settings), and a short name for its default directory.
pub(crate) fn new_record(f: &SearchFlags, shared: Option<SharedSettings>) -> Result<(StudyRecord, String)> {
    let space_path = f.space.as_ref().context("--space FILE is needed for a new study")?;
    let space = Space::from_file(space_path)?;
    // PBT's first generation is a random population unless a sampler is named.
    let default_sampler = if f.pbt { "random" } else { "tpe" };
    let sampler = settings(f.sampler.as_deref().unwrap_or(default_sampler), "--sampler", SamplerConfig::by_name)?;
    let pruner = f.pruner.as_deref().map(|p| settings(p, "--pruner", PrunerConfig::by_name)).transpose()?;
    let objective = objective_from_flags(f)?;
    objective.check(&space, &space_path.display().to_string())?;
    let kind = serde_json::to_value(&sampler)?["kind"].as_str().unwrap_or("search").to_string();
    let name = if f.pbt { "pbt".to_string() } else { kind };
    let pbt = f.pbt.then(|| PbtSettings {
        population: f.population,
        generations: f.generations,
        config: PbtConfig { interval: f.interval, ..PbtConfig::default() },
    });
    let driver = DriverRecord { objective, trial_timeout: f.trial_timeout, pbt, shared };
    let record = StudyRecord {
        space,
        sampler: serde_json::to_value(&sampler)?,
        pruner: pruner.as_ref().map(serde_json::to_value).transpose()?,
        seed: f.seed.unwrap_or(0),
        driver: serde_json::to_value(&driver)?,
    };
    Ok((record, name))
}

/// A sampler's or pruner's settings: a name (its defaults) or a JSON object with `kind`.
fn settings<T: serde::de::DeserializeOwned>(
    text: &str,
    flag: &str,
    by_name: impl Fn(&str) -> attune_search::Result<T>,
) -> Result<T> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .with_context(|| format!("{flag} {text}: not valid settings (docs/search.md lists them)"))
    } else {
        Ok(by_name(text)?)
    }
}

/// The words of `--launcher`, refused for a `--command` objective (its command line can name
/// its own launcher).
pub fn launcher_words(launcher: Option<&str>, objective: &Objective) -> Result<Vec<String>> {
    let words: Vec<String> = launcher.unwrap_or("").split_whitespace().map(str::to_string).collect();
    if !words.is_empty() && matches!(objective, Objective::Command { .. }) {
        bail!("--launcher starts training trials; a --command objective starts its own processes (put mpirun in it)");
    }
    Ok(words)
}

fn objective_from_flags(f: &SearchFlags) -> Result<Objective> {
    if let Some(command) = &f.command {
        if f.config.is_some() || !f.set.is_empty() || !f.metric.is_empty() {
            bail!("--config, --set and --metric describe training trials; a --command objective prints its own values");
        }
        return Ok(Objective::Command { command: command.clone() });
    }
    let mut base = match &f.config {
        Some(p) => RunConfig::from_file(p)?,
        None => RunConfig::default(),
    };
    for kv in &f.set {
        let (k, v) =
            kv.split_once('=').with_context(|| format!("--set {kv}: write KEY=VALUE, e.g. train.steps=300"))?;
        // A bare word is a string (--set model.positions=rope); anything else is JSON.
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        crate::overlay::set(&mut base, k, value).with_context(|| format!("--set {kv}"))?;
    }
    base.clone().resolve().context("the base run config (--config/--set) is invalid")?;
    let metrics = if f.metric.is_empty() {
        vec![Metric::EvalAccuracy]
    } else {
        f.metric.iter().map(|m| Metric::parse(m)).collect::<Result<_>>()?
    };
    Ok(Objective::Train { base: Box::new(base), metrics })
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether `dir` holds a study (for messages of other commands).
pub fn is_study(dir: &Path) -> bool {
    dir.join("study.db").is_file()
}
