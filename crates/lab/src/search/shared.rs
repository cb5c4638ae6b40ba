//! `attune search --storage URL --study NAME --workers K`: a shared study. The study is
//! created (or, when it exists with the same space, continued) in the storage, K local
//! `attune worker` processes run it, and any `attune worker --storage URL --study NAME` on
//! another machine joins. This process only watches: it shows progress, and when the workers
//! are done it exports the study's files and plots to `ARTIFACTS/<study>/` (and, for `--pbt`,
//! the population's `pbt_schedule.json`).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use attune_search::storage::url::{self, Open};
use attune_search::studydir::export_to;

use super::driver::{progress_bar, show, status_line};
use super::worker::open_shared;
use super::{SearchFlags, SharedSettings, new_record};

/// Runs a shared study with `f.workers` local workers.
pub fn run(f: &SearchFlags) -> Result<()> {
    let (location, name) = (f.storage.clone().unwrap_or_default(), f.study.clone().unwrap_or_default());
    let artifacts = f.artifacts.clone().or_else(|| f.out.clone()).unwrap_or_else(|| PathBuf::from("runs"));
    let artifacts = std::path::absolute(&artifacts).with_context(|| format!("resolving {}", artifacts.display()))?;
    // A PBT study's trials are its segments.
    let trials = if f.pbt { f.population.saturating_mul(f.generations) } else { f.trials };
    let settings = SharedSettings { trials, lease_s: f.lease, max_retries: f.max_retries, artifacts };
    if !(settings.lease_s.is_finite() && settings.lease_s >= 1.0) {
        bail!("--lease {} must be at least 1 second", settings.lease_s);
    }
    let (record, _) = new_record(f, Some(settings))?;
    let storage = url::open(&location, &name, Open::CreateOrOpen)?;
    let stored = storage.init_study(&record)?;
    if stored.space != record.space {
        bail!(
            "study '{name}' in {location} was made with another space; use its own space file (attune study show --storage {location} --study {name}) or another --study name"
        );
    }
    if stored != record {
        eprintln!(
            "attune: study '{name}' exists; it continues with its stored settings (sampler, objective, trial count)"
        );
    }
    let (study, driver) = open_shared(storage, &location, &name)?;
    let shared = driver.shared.clone().context("the stored study has no shared settings")?;
    let dir = shared.artifacts.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if f.workers == 0 {
        println!(
            "attune: study '{name}' is ready in {location}; run trials with: attune worker --storage {location} --study {name}"
        );
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = f.threads.unwrap_or((cores / f.workers).max(1));
    let exe = std::env::current_exe().context("finding the attune binary")?;
    let mut children: Vec<Child> = (0..f.workers)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", "--storage", &location, "--study", &name, "--threads", &threads.to_string()])
                .spawn()
                .context("starting a worker")
        })
        .collect::<Result<_>>()?;
    let bar = progress_bar(shared.trials, 0, f.quiet);
    let mut failures = Vec::new();
    while !children.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        let trials = study.trials()?;
        show(&bar, &attune_search::study::summarize(study.space(), &trials), trials.len() as u64);
        children.retain_mut(|c| match c.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    failures.push(status);
                }
                false
            }
            _ => true,
        });
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    export_to(&dir, &study)?;
    // A local worker that died does not stop the others (or joined workers) from finishing the
    // study, so what counts is whether every trial ended, not how each worker did.
    let finished = study.trials()?.iter().filter(|t| t.state.is_finished()).count() as u64;
    let done = finished >= shared.trials;
    if let Some(p) = &driver.pbt {
        if done {
            super::pbt::write_schedule(&dir, &study, &driver.objective, p)?;
            println!("attune: PBT schedule and the best member's lineage: {}/pbt_schedule.json", dir.display());
        } else {
            eprintln!(
                "attune: {finished} of {} PBT segments finished, so no pbt_schedule.json yet; run the same command again to finish the study",
                shared.trials
            );
        }
    }
    let summary = study.summary()?;
    if !f.no_plots {
        crate::plots::search::write_all(&dir, study.space(), &study.trials()?)?;
    }
    println!("attune: study '{name}' in {location}: {}", status_line(&summary));
    if let (Some(v), Some(p)) = (summary.best_value, &summary.best_params) {
        println!(
            "attune: best value {v} (trial {}) at {}",
            summary.best_trial.unwrap_or(0),
            serde_json::Value::Object(p.clone())
        );
    }
    println!("attune: {}/summary.json, trials.jsonl, study.json, plots/", dir.display());
    // A worker killed by a signal (SIGKILL, the OOM killer) is a death the study survives; a
    // worker that exited with an error found something wrong (a missing program, a broken
    // storage), and the command fails however far the study got.
    let (died, erred): (Vec<_>, Vec<_>) = failures.into_iter().partition(|s| s.code().is_none());
    if !erred.is_empty() {
        bail!("{} of the local workers failed ({erred:?}); the study keeps what they finished", erred.len());
    }
    if died.is_empty() {
        return Ok(());
    }
    if !done {
        bail!(
            "{} of the local workers died ({died:?}) and {finished} of {} trials ended; the study keeps them: run the same command again to finish it",
            died.len(),
            shared.trials
        );
    }
    eprintln!("attune: {} of the local workers died ({died:?}); the others finished every trial", died.len());
    Ok(())
}
