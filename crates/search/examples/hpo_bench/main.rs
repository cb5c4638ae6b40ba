//! Attune's side of the search benchmark against Optuna (docs/benchmarks-search.md).
//!
//! ```text
//! cargo run --release -p attune-search --example hpo_bench -- [--tables DIR] [--tasks LIST]
//!     [--samplers random,tpe,ga,sa,reinforce] [--seeds 10] [--first-seed 0] [--trials 200]
//! cargo run --release -p attune-search --example hpo_bench -- --overhead [--samplers LIST]
//!     [--trials-list 1000] [--storages memory,sqlite | --storage sqlite:PATH|postgres://URL]
//! cargo run --release -p attune-search --example hpo_bench -- --report ours.jsonl optuna.jsonl
//! ```
//!
//! The first form runs each sampler (`SamplerConfig::by_name`) through `Study` ask / tell on a
//! `MemoryStorage`, for each task and seed, and prints one JSON line per study in the same
//! shape as benches/peers/optuna_hpo.py. `--overhead` times ask + tell on Branin (with
//! `--storage URL`: in new studies of that shared store, see storage_overhead.rs), and
//! `--report` reads both sides' lines and prints the markdown report.

mod functions;
mod report;
mod storage_overhead;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use attune_search::sampler::SamplerConfig;
use attune_search::{Finish, MemoryStorage, SqliteStorage, Storage, Study, StudyRecord};
use serde_json::json;

use tasks::{ALL_TASKS, Task};

/// The trial counts at which best-so-far is reported (plus the run's own trial count).
const CHECKPOINTS: &[u64] = &[50, 100, 200];

/// The storages this build can time.
const STORAGES: &[&str] = &["memory", "sqlite"];

struct Args {
    tables: PathBuf,
    tasks: Vec<String>,
    samplers: Vec<String>,
    seeds: u64,
    first_seed: u64,
    trials: u64,
    overhead: bool,
    /// The trial counts `--overhead` times, each a fresh study.
    overhead_trials: Vec<u64>,
    storages: Vec<String>,
    /// A shared store (`sqlite:PATH`, `postgres://...`) `--overhead` times instead of `storages`.
    storage: Option<String>,
    report: Option<Vec<PathBuf>>,
}

const USAGE: &str = "usage: hpo_bench [--tables DIR] [--tasks LIST] [--samplers LIST] [--seeds N] [--first-seed N] \
[--trials N] | --overhead [--samplers LIST] [--trials-list N,...] [--storages LIST | --storage URL] | --report FILE...";

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let list = |s: String| s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect::<Vec<_>>();
    let mut a = Args {
        tables: PathBuf::from("target/bench-search/tables"),
        tasks: ALL_TASKS.iter().map(|s| s.to_string()).collect(),
        samplers: list("random,tpe,ga,sa,reinforce".into()),
        seeds: 10,
        first_seed: 0,
        trials: 200,
        overhead: false,
        overhead_trials: vec![1000],
        storages: STORAGES.iter().map(|s| s.to_string()).collect(),
        storage: None,
        report: None,
    };
    while let Some(flag) = argv.next() {
        if let Some(files) = a.report.as_mut() {
            files.push(PathBuf::from(flag));
            continue;
        }
        let mut value = || argv.next().ok_or(format!("{flag} needs a value; {USAGE}"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag} {v}: not a whole number"));
        match flag.as_str() {
            "--tables" => a.tables = PathBuf::from(value()?),
            "--tasks" => a.tasks = list(value()?),
            "--samplers" => a.samplers = list(value()?),
            "--seeds" => a.seeds = number(value()?)?,
            "--first-seed" => a.first_seed = number(value()?)?,
            "--trials" => a.trials = number(value()?)?,
            "--overhead" => a.overhead = true,
            "--overhead-trials" => a.overhead_trials = vec![number(value()?)?],
            "--trials-list" => a.overhead_trials = list(value()?).into_iter().map(number).collect::<Result<_, _>>()?,
            "--storages" => a.storages = list(value()?),
            "--storage" => a.storage = Some(value()?),
            "--report" => a.report = Some(Vec::new()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument '{other}'; {USAGE}")),
        }
    }
    if a.trials == 0 || a.overhead_trials.is_empty() || a.overhead_trials.contains(&0) {
        return Err("--trials and each of --trials-list must be at least 1".into());
    }
    Ok(a)
}

/// The sampler configurations, all checked before anything runs (an unknown name is an error
/// that lists the known ones).
fn sampler_configs(names: &[String]) -> Result<Vec<(String, SamplerConfig)>, String> {
    names.iter().map(|n| SamplerConfig::by_name(n).map(|c| (n.clone(), c)).map_err(|e| e.to_string())).collect()
}

fn open_study(task: &Task, config: &SamplerConfig, seed: u64, storage: Arc<dyn Storage>) -> Result<Study, String> {
    let record = StudyRecord {
        space: task.space.clone(),
        sampler: serde_json::to_value(config).map_err(|e| e.to_string())?,
        pruner: None,
        seed,
        driver: json!({ "bench": task.name }),
    };
    Study::open(storage, record, config.build(), None).map_err(|e| e.to_string())
}

/// Runs `trials` ask / tell rounds; returns every value and the wall seconds.
fn optimize(study: &Study, task: &Task, trials: u64) -> Result<(Vec<f64>, f64), String> {
    let start = Instant::now();
    let mut values = Vec::with_capacity(trials as usize);
    for _ in 0..trials {
        let asked = study.ask("bench").map_err(|e| e.to_string())?;
        let value = task.evaluate(&asked.params);
        study.tell(asked.number, Finish::complete(vec![value])).map_err(|e| e.to_string())?;
        values.push(value);
    }
    Ok((values, start.elapsed().as_secs_f64()))
}

fn best_after(values: &[f64], trials: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut points: Vec<u64> = CHECKPOINTS.iter().copied().filter(|&n| n <= trials).collect();
    if !points.contains(&trials) {
        points.push(trials);
    }
    points
        .into_iter()
        .map(|n| (n.to_string(), json!(values[..n as usize].iter().copied().fold(f64::INFINITY, f64::min))))
        .collect()
}

fn run_benchmark(a: &Args) -> Result<(), String> {
    let configs = sampler_configs(&a.samplers)?;
    let tasks = a.tasks.iter().map(|t| Task::load(t, &a.tables)).collect::<Result<Vec<_>, _>>()?;
    for task in &tasks {
        for (name, config) in &configs {
            for seed in a.first_seed..a.first_seed + a.seeds {
                let study = open_study(task, config, seed, Arc::new(MemoryStorage::new()))?;
                let (values, secs) = optimize(&study, task, a.trials)?;
                let line = json!({
                    "impl": "attune", "sampler": name, "task": task.name, "seed": seed, "trials": a.trials,
                    "optimum": task.optimum, "best_after": best_after(&values, a.trials), "secs": secs,
                });
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// A fresh, empty storage of `kind`; SQLite's file is `path`.
fn open_storage(kind: &str, path: &Path) -> Result<Arc<dyn Storage>, String> {
    match kind {
        "memory" => Ok(Arc::new(MemoryStorage::new())),
        "sqlite" => {
            Ok(Arc::new(SqliteStorage::create(path, attune_search::storage::DEFAULT_STUDY).map_err(|e| e.to_string())?))
        }
        other => Err(format!("storage '{other}' is not in this build; use some of {}", STORAGES.join(","))),
    }
}

fn run_overhead(a: &Args) -> Result<(), String> {
    let configs = sampler_configs(&a.samplers)?;
    let task = Task::load("branin", &a.tables)?;
    // The system's temporary directory, as Optuna's side uses: SQLite's cost is mostly the
    // file system's syncs, so both must write to the same one.
    if let Some(url) = &a.storage {
        return storage_overhead::run(url, &configs, &a.overhead_trials, &task);
    }
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    for storage_kind in &a.storages {
        for (name, config) in &configs {
            for &trials in &a.overhead_trials {
                let path = dir.path().join(format!("overhead-{name}-{trials}.db"));
                let study = open_study(&task, config, 0, open_storage(storage_kind, &path)?)?;
                let (_, secs) = optimize(&study, &task, trials)?;
                let line = json!({
                    "impl": "attune", "mode": "overhead", "sampler": name, "storage": storage_kind,
                    "trials": trials, "secs_per_trial": secs / trials as f64,
                });
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn run_report(files: &[PathBuf]) -> Result<(), String> {
    if files.is_empty() {
        return Err(format!("--report needs the result files; {USAGE}"));
    }
    let mut records = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            records.push(report::parse_line(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?);
        }
    }
    print!("{}", report::render(&records));
    Ok(())
}

fn main() {
    let result = parse_args(std::env::args().skip(1)).and_then(|a| match &a.report {
        Some(files) => run_report(files),
        None if a.overhead => run_overhead(&a),
        None => run_benchmark(&a),
    });
    if let Err(e) = result {
        eprintln!("hpo_bench: {e}");
        std::process::exit(2);
    }
}
