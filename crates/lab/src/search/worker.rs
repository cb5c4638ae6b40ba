//! `attune worker`: one process of a shared study (docs/search.md "Shared studies"). It joins
//! the study in a storage (`sqlite:PATH` or `postgres://...`), and until the study holds its
//! trial count and none is left running or queued, it re-queues trials whose worker's lease
//! expired, claims a queued trial or samples a new one (or, in a PBT study, takes the next
//! member's segment), runs it while renewing its lease, and finishes it only if it still holds
//! the lease. Everything it needs (space, sampler,
//! objective, trial count, lease) comes from the stored study.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use attune_search::pruner::PrunerConfig;
use attune_search::sampler::SamplerConfig;
use attune_search::storage::url::{self, Open};
use attune_search::{Asked, Direction, Storage, Study, TrialState};
use clap::Args;

use super::driver::{DriverOptions, run_asked};
use super::objective::{Objective, Segment};
use super::protocol::Tick;
use super::{DriverRecord, pbt};

/// Flags of `attune worker`.
#[derive(Args, Debug, Clone)]
pub struct WorkerFlags {
    /// The study's storage: sqlite:PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    pub storage: String,
    /// The study's name in the storage.
    #[arg(long)]
    pub study: String,
    /// Where trial folders go (a path every worker can reach; default: the study's).
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// CPU threads per training trial.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run each training trial under this MPI launcher, e.g. --launcher "mpirun -np 2".
    #[arg(long)]
    pub launcher: Option<String>,
    /// This worker's name in the trials (default host:pid).
    #[arg(long)]
    pub name: Option<String>,
}

/// How often an idle worker looks for work again (trials of dead workers come back when their
/// leases expire).
const POLL: Duration = Duration::from_millis(200);

/// Opens the stored study as a worker sees it: the stored sampler, pruner and objective.
pub fn open_shared(storage: Arc<dyn Storage>, location: &str, study: &str) -> Result<(Study, DriverRecord)> {
    let record = storage
        .study()?
        .with_context(|| format!("{location} has no study named '{study}'; create it with attune search --storage {location} --study {study} ..."))?;
    let sampler: SamplerConfig = serde_json::from_value(record.sampler.clone()).context("the stored sampler")?;
    let pruner: Option<PrunerConfig> =
        record.pruner.clone().map(serde_json::from_value).transpose().context("the stored pruner")?;
    let driver: DriverRecord = serde_json::from_value(record.driver.clone()).context("the stored objective")?;
    let mut s = Study::open(storage, record, sampler.build(), pruner.map(|p| p.build()))?;
    if matches!(driver.objective, Objective::Train { .. }) {
        s.set_intermediate_direction(Direction::Maximize);
    }
    Ok((s, driver))
}

/// Runs `attune worker`.
pub fn run(f: &WorkerFlags) -> Result<()> {
    let storage = url::open(&f.storage, &f.study, Open::Existing)?;
    let (study, driver) = open_shared(storage, &f.storage, &f.study)?;
    let shared =
        driver.shared.clone().context("this study was not made for workers (no --storage when it was created)")?;
    check_program(&driver.objective)?;
    let artifacts = f.artifacts.clone().unwrap_or_else(|| shared.artifacts.clone());
    let dir = artifacts.join(&f.study);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating the artifacts folder {}", dir.display()))?;
    let worker = f.name.clone().unwrap_or_else(|| format!("{}:{}", super::hostname(), std::process::id()));
    let opts = DriverOptions {
        trials: shared.trials,
        parallel: 1,
        trial_timeout: driver.trial_timeout.map(Duration::from_secs_f64),
        process: super::objective::TrialProcess {
            threads: f.threads.max(1),
            launcher: super::launcher_words(f.launcher.as_deref(), &driver.objective)?,
        },
        quiet: true,
        worker: worker.clone(),
        leased: true,
    };
    let lease = Duration::from_secs_f64(shared.lease_s);
    loop {
        study.storage().expire_leases(shared.max_retries)?;
        let next = match study.claim(&worker, lease)? {
            Some(asked) => {
                let segment = driver.pbt.as_ref().map(|p| pbt::claimed_segment(&asked, p, &dir)).transpose()?;
                Next::Run(asked, segment)
            }
            None => match &driver.pbt {
                Some(p) => pbt::next_segment(&study, &driver.objective, &dir, p, &worker, lease)?,
                None => match study.ask_leased(&worker, lease, Some(shared.trials))? {
                    Some(asked) => Next::Run(asked, None),
                    None if open_trials(&study)? => Next::Wait,
                    None => Next::Done,
                },
            },
        };
        let (asked, segment) = match next {
            Next::Run(asked, segment) => (asked, segment),
            Next::Wait => {
                std::thread::sleep(POLL);
                continue;
            }
            Next::Done => return Ok(()),
        };
        let number = asked.number;
        let mut renew = || !study.storage().renew(number, &worker, lease).unwrap_or(true);
        let tick = Tick { every: lease / 3, check: &mut renew };
        let finish = run_asked(&study, &driver.objective, &dir, &opts, &asked, segment.as_ref(), Some(tick))?;
        if !study.tell_leased(number, &worker, finish)? {
            eprintln!(
                "attune worker {worker}: trial {number} was re-queued while it ran (lease lost); its result is dropped"
            );
        }
    }
}

/// What a worker does next.
pub enum Next {
    /// Run this trial (a PBT segment when the segment is given).
    Run(Asked, Option<Segment>),
    /// Nothing to run yet: trials are running elsewhere (their leases may still expire, or a
    /// PBT generation is finishing).
    Wait,
    /// The study is done.
    Done,
}

/// Whether a trial is still running or queued somewhere.
pub fn open_trials(study: &Study) -> Result<bool> {
    Ok(study.trials()?.iter().any(|t| matches!(t.state, TrialState::Running | TrialState::Queued)))
}

/// A worker whose objective program is missing on its machine refuses to start, rather than
/// failing every trial it claims.
fn check_program(objective: &Objective) -> Result<()> {
    let Objective::Command { command } = objective else { return Ok(()) };
    let Some(program) = command.split_whitespace().next() else { bail!("the study's --command is empty") };
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
    };
    if !found {
        bail!(
            "the study's objective program '{program}' (from --command \"{command}\") is not on this machine (PATH or path); install it here or start this worker where it is"
        );
    }
    Ok(())
}
