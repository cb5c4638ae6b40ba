//! Runs a study's trials, `parallel` at a time in one process: each worker thread asks the
//! study for a point, runs the objective's process, feeds its intermediate values to the
//! pruner, tells the study how it ended and refreshes the study directory's exports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use attune_search::{Asked, Finish, Study, Summary, TrialState};
use indicatif::{ProgressBar, ProgressStyle};

use super::objective::{Objective, Segment};
use super::protocol::{Tick, run_process};

/// How the driver runs trials.
pub struct DriverOptions {
    /// Stop when the study holds this many trials.
    pub trials: u64,
    /// Trials at a time.
    pub parallel: usize,
    /// Kill and fail a trial after this long.
    pub trial_timeout: Option<Duration>,
    /// How training trials start (threads, launcher).
    pub process: super::objective::TrialProcess,
    /// No progress bar.
    pub quiet: bool,
    /// This process's name in the trials' `worker` field.
    pub worker: String,
    /// Trials are leased to `worker` (shared studies): reports are stored only while it holds
    /// the lease, and a lost lease stops the trial.
    pub leased: bool,
}

/// Runs trials until the study holds `opts.trials` (or the sampler has no points left);
/// `export` refreshes the study directory after each trial.
pub fn run_trials(
    study: &Study,
    objective: &Objective,
    dir: &Path,
    opts: &DriverOptions,
    export: &(dyn Fn(&Study) -> Result<()> + Sync),
) -> Result<Summary> {
    let have = study.trials()?.len() as u64;
    let launched = AtomicU64::new(have);
    let bar = progress_bar(opts.trials, have, opts.quiet);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for w in 0..opts.parallel.max(1) {
            let (launched, bar, first_error) = (&launched, &bar, &first_error);
            let worker = format!("{}/{w}", opts.worker);
            scope.spawn(move || {
                let result = (|| -> Result<()> {
                    loop {
                        if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                            return Ok(());
                        }
                        if launched.fetch_add(1, Ordering::SeqCst) >= opts.trials || study.remaining()? == Some(0) {
                            return Ok(());
                        }
                        one_trial(study, objective, dir, opts, &worker)?;
                        export(study)?;
                        show(bar, &study.summary()?, study.trials()?.len() as u64);
                    }
                })();
                if let Err(e) = result
                    && let Ok(mut slot) = first_error.lock()
                {
                    slot.get_or_insert(e);
                }
            });
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    export(study)?;
    Ok(study.summary()?)
}

fn one_trial(study: &Study, objective: &Objective, dir: &Path, opts: &DriverOptions, worker: &str) -> Result<()> {
    let asked = study.ask(worker)?;
    let finish = run_asked(study, objective, dir, opts, &asked, None, None)?;
    study.tell(asked.number, finish)?;
    Ok(())
}

/// Runs an asked trial's process (a PBT segment when `segment` is given) and says how it
/// ended; intermediate values go to the study and its pruner on the way.
pub fn run_asked(
    study: &Study,
    objective: &Objective,
    dir: &Path,
    opts: &DriverOptions,
    asked: &Asked,
    segment: Option<&Segment>,
    tick: Option<Tick>,
) -> Result<Finish> {
    let trial_dir = trial_dir(dir, asked.number);
    let prepared = match objective.prepare(asked.number, &asked.external, &trial_dir, &opts.process, segment)? {
        Err(finish) => return Ok(finish),
        Ok(p) => p,
    };
    if let Some(run) = &prepared.run_dir {
        let rel = run.strip_prefix(dir).unwrap_or(run);
        study.storage().set_attr(asked.number, "run_dir", &serde_json::json!(rel))?;
    }
    let mut report_error = None;
    let input = Objective::input(asked.number, &asked.external, segment, &trial_dir);
    let end = run_process(prepared.command, &input, opts.trial_timeout, tick, |step, value| {
        let reported = match opts.leased {
            // A lost lease stops the trial like a prune; its result is dropped at the tell.
            true => study.report_leased(asked.number, &opts.worker, step, value).map(|r| r.unwrap_or(true)),
            false => study.report(asked.number, step, value),
        };
        match reported {
            Ok(prune) => prune,
            Err(e) => {
                report_error.get_or_insert(e);
                true
            }
        }
    });
    if let Some(e) = report_error {
        return Err(e.into());
    }
    Ok(objective.finish(end, prepared.run_dir.as_deref()))
}

/// The folder of trial `number` in the study directory.
pub fn trial_dir(dir: &Path, number: u64) -> PathBuf {
    dir.join("trials").join(format!("{number:05}"))
}

/// Runs `jobs` on `parallel` worker threads; the first error stops the rest from starting.
pub fn run_pool<T: Sync>(jobs: &[T], parallel: usize, job: impl Fn(&T, usize) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicU64::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for w in 0..parallel.max(1) {
            let (next, first_error, job) = (&next, &first_error, &job);
            scope.spawn(move || {
                loop {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(item) = jobs.get(i) else { return };
                    if let Err(e) = job(item, w)
                        && let Ok(mut slot) = first_error.lock()
                    {
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(super) fn progress_bar(total: u64, done: u64, quiet: bool) -> Option<ProgressBar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} trials  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(done);
        bar
    })
}

/// The progress line: trials done, running, pruned, failed and the best so far.
pub fn status_line(s: &Summary) -> String {
    let best = s.best_value.map(|v| format!("{v:.6}")).unwrap_or_else(|| "-".into());
    format!("complete {} running {} pruned {} failed {} best {best}", s.n_complete, s.n_running, s.n_pruned, s.n_failed)
}

pub(super) fn show(bar: &Option<ProgressBar>, s: &Summary, trials: u64) {
    if let Some(bar) = bar {
        bar.set_position(trials - s.n_running as u64);
        bar.set_message(status_line(s));
    }
}

/// Marks the trials a previous process left running as failed: their process is gone
/// (docs/search.md: a resume loses at most the trials that were running).
pub fn fail_orphans(study: &Study) -> Result<usize> {
    let orphans: Vec<u64> =
        study.trials()?.iter().filter(|t| t.state == TrialState::Running).map(|t| t.number).collect();
    for &n in &orphans {
        study.tell(n, Finish::failed("lost: the search process stopped while it ran (resumed)"))?;
    }
    Ok(orphans.len())
}
