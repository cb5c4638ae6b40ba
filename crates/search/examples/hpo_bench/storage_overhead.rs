//! Storage overhead on a shared store (`--overhead --storage URL`): ask + tell on Branin, a
//! trivially cheap objective, with a fresh study per sampler and size in the storage at URL
//! (`sqlite:PATH` or `postgres://...`, opened through `storage::url::open`), so what is timed
//! is the storage's reads and writes plus the sampler. benches/peers/bench_storage.sh runs
//! it against Optuna's RDBStorage on the same PostgreSQL and SQLite.

use std::time::Instant;

use attune_search::Finish;
use attune_search::sampler::SamplerConfig;
use attune_search::storage::url::{self, Open, StorageUrl};
use serde_json::json;

use crate::tasks::Task;

/// The trials the "last" figure averages over: the cost per trial once a study has reached
/// its size, which the whole-run average understates when the cost grows with the trials.
const TAIL: usize = 1000;

/// Seconds per trial over the whole run and over its last `TAIL` trials (all of them when
/// the run is shorter).
pub fn per_trial(secs: &[f64]) -> (f64, f64) {
    let mean = |s: &[f64]| if s.is_empty() { 0.0 } else { s.iter().sum::<f64>() / s.len() as f64 };
    (mean(secs), mean(&secs[secs.len().saturating_sub(TAIL)..]))
}

/// `postgres` or `sqlite`: the storage column of the result lines.
fn kind(storage_url: &str) -> Result<&'static str, String> {
    Ok(match url::parse(storage_url).map_err(|e| e.to_string())? {
        StorageUrl::Sqlite(_) => "sqlite",
        StorageUrl::Postgres(_) => "postgres",
    })
}

/// Runs `trials` ask + tell rounds of each sampler for each size in `sizes`, each in its own
/// new study `overhead-SAMPLER-SIZE` of the storage at `storage_url`, printing one JSON line
/// per run: `{"impl": "attune", "mode": "storage", "sampler", "storage", "trials",
/// "secs_per_trial", "secs_per_trial_last"}`.
pub fn run(storage_url: &str, configs: &[(String, SamplerConfig)], sizes: &[u64], task: &Task) -> Result<(), String> {
    let storage_kind = kind(storage_url)?;
    for (name, config) in configs {
        for &size in sizes {
            let study_name = format!("overhead-{name}-{size}");
            let storage = url::open(storage_url, &study_name, Open::CreateOrOpen).map_err(|e| e.to_string())?;
            let study = crate::open_study(task, config, 0, storage)?;
            let existing = study.trials().map_err(|e| e.to_string())?.len();
            if existing > 0 {
                return Err(format!(
                    "study '{study_name}' at {storage_url} already has {existing} trials; time on a fresh database or file"
                ));
            }
            let mut secs = Vec::with_capacity(size as usize);
            for _ in 0..size {
                let start = Instant::now();
                let asked = study.ask("bench").map_err(|e| e.to_string())?;
                let value = task.evaluate(&asked.params);
                study.tell(asked.number, Finish::complete(vec![value])).map_err(|e| e.to_string())?;
                secs.push(start.elapsed().as_secs_f64());
            }
            let (whole, last) = per_trial(&secs);
            let line = json!({
                "impl": "attune", "mode": "storage", "sampler": name, "storage": storage_kind, "trials": size,
                "secs_per_trial": whole, "secs_per_trial_last": last,
            });
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_trial_averages_the_whole_run_and_its_last_thousand() {
        // 1000 trials at 1 s then 1000 at 3 s: the run averages 2 s, its last thousand 3 s.
        let secs: Vec<f64> = (0..2000).map(|i| if i < 1000 { 1.0 } else { 3.0 }).collect();
        assert_eq!(per_trial(&secs), (2.0, 3.0));
        // Shorter than the tail: both are the whole run.
        assert_eq!(per_trial(&[1.0, 2.0]), (1.5, 1.5));
    }

    #[test]
    fn storage_kinds_come_from_the_url() {
        assert_eq!(kind("sqlite:/tmp/x.db").unwrap(), "sqlite");
        assert_eq!(kind("postgresql://u@h:5432/db").unwrap(), "postgres");
        assert!(kind("memory").is_err());
    }
}
