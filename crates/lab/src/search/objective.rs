//! What a trial runs: the lab's own training (space keys are run-config keys, the objective
//! is a `summary.json` metric) or any program speaking the trial protocol (`protocol`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use attune_search::{Finish, Space};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::protocol::ProcessEnd;
use crate::config::RunConfig;
use crate::overlay;
use crate::train::Summary;

/// A metric of a training trial, read from its `summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Held-out accuracy at the end.
    EvalAccuracy,
    /// Held-out loss at the end.
    EvalLoss,
    /// The best validation accuracy seen.
    BestValidAccuracy,
    /// Optimizer steps until `train.target_accuracy` was reached.
    StepsToTarget,
    /// Seconds of training until `train.target_accuracy` was reached.
    TimeToTarget,
    /// Seconds of training.
    ElapsedS,
    /// Trainable parameters.
    Parameters,
    /// Training throughput.
    TokensPerS,
    /// One of the task's own figures in `eval_metrics` (`--metric eval_metrics.ndcg@10`); NaN
    /// when the task does not report it.
    EvalMetric(String),
}

impl Metric {
    /// Every metric with its name, for parsing and messages.
    pub const ALL: [(&'static str, Metric); 8] = [
        ("eval_accuracy", Metric::EvalAccuracy),
        ("eval_loss", Metric::EvalLoss),
        ("best_valid_accuracy", Metric::BestValidAccuracy),
        ("steps_to_target", Metric::StepsToTarget),
        ("time_to_target", Metric::TimeToTarget),
        ("elapsed_s", Metric::ElapsedS),
        ("parameters", Metric::Parameters),
        ("tokens_per_s", Metric::TokensPerS),
    ];

    /// The metric called `name`: one of [`Metric::ALL`] or `eval_metrics.<key>`.
    pub fn parse(name: &str) -> Result<Metric> {
        if let Some(key) = name.strip_prefix("eval_metrics.").filter(|k| !k.is_empty()) {
            return Ok(Metric::EvalMetric(key.to_string()));
        }
        match Metric::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, m)) => Ok(m.clone()),
            None => bail!(
                "unknown metric '{name}'; choose from {}, or eval_metrics.<key> for a task's own figure \
                 (e.g. eval_metrics.ndcg@10)",
                Metric::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn needs_target(&self) -> bool {
        matches!(self, Metric::StepsToTarget | Metric::TimeToTarget)
    }

    /// The metric's value in a summary; `None` when the run did not reach its target.
    fn value(&self, s: &Summary) -> Option<f64> {
        let reached = s.stopped.starts_with("reached target accuracy");
        Some(match self {
            Metric::EvalAccuracy => s.eval_accuracy,
            Metric::EvalLoss => s.eval_loss,
            Metric::BestValidAccuracy => s.best_valid_accuracy.map(|(_, a)| a).unwrap_or(f64::NAN),
            Metric::StepsToTarget => return reached.then_some(s.steps as f64),
            Metric::TimeToTarget => return reached.then_some(s.elapsed_s),
            Metric::ElapsedS => s.elapsed_s,
            Metric::Parameters => s.parameters as f64,
            Metric::TokensPerS => s.tokens_per_s,
            Metric::EvalMetric(key) => s.eval_metrics.get(key).copied().unwrap_or(f64::NAN),
        })
    }
}

/// What each trial runs, as stored with the study (so `--resume` runs the same thing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// A program speaking the trial protocol, run with `sh -c`.
    Command {
        /// The command line.
        command: String,
    },
    /// A training run of the lab per trial.
    Train {
        /// The run config the space's keys are overlaid on (boxed: it is large).
        base: Box<RunConfig>,
        /// The objectives, one per direction of the space.
        metrics: Vec<Metric>,
    },
}

/// How a training trial's process is started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialProcess {
    /// CPU threads per trial (per rank under a launcher).
    pub threads: usize,
    /// A launcher command each trial runs under, e.g. `["mpirun", "-np", "2"]`: the trial is
    /// then a distributed run (docs/distributed.md). Empty: one process.
    pub launcher: Vec<String>,
}

/// One PBT segment of a member: where its weights come from and how far it trains.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The member.
    pub member: u64,
    /// The generation (0: the start).
    pub generation: u64,
    /// Train until this step (training trials) or for this many steps more (`interval`).
    pub until_step: u64,
    /// Steps per generation.
    pub interval: u64,
    /// The run directory (or, for a program, the folder it saved into) to start from.
    pub restore_from: Option<PathBuf>,
    /// A re-queued segment (its worker died): continue from what the segment itself last
    /// saved, when it saved anything, rather than from `restore_from`.
    pub resume: bool,
}

/// A trial made ready to run: the process to start and how to read its end.
pub struct Prepared {
    /// The process.
    pub command: Command,
    /// The training run's directory (train objectives).
    pub run_dir: Option<PathBuf>,
}

impl Objective {
    /// Checks the objective against the space before any trial runs: every key of a training
    /// search must be a run-config key taking the space's values, and there must be one metric
    /// per direction. Errors name the space file and the parameter.
    pub fn check(&self, space: &Space, space_name: &str) -> Result<()> {
        let Objective::Train { base, metrics } = self else { return Ok(()) };
        if metrics.len() != space.directions.len() {
            bail!(
                "{space_name}: the space has {} direction(s) but --metric names {} metric(s); give one metric per direction",
                space.directions.len(),
                metrics.len()
            );
        }
        if metrics.iter().any(|m| m.needs_target()) && base.train.target_accuracy.is_none() {
            bail!(
                "steps_to_target and time_to_target need a target: set train.target_accuracy in --config or with --set"
            );
        }
        for p in &space.params {
            for u in [0.0, 1.0] {
                let mut cfg = base.clone();
                overlay::set(&mut cfg, &p.name, p.dist.external(p.dist.from_unit(u)))
                    .with_context(|| format!("{space_name}: parameter '{}' is not a train-config key that takes its values (docs/run-config.md lists the keys)", p.name))?;
            }
        }
        Ok(())
    }

    /// The process of trial `number` at `params` (external values), with `dir` its folder.
    /// A training config the parameters make invalid (e.g. heads not dividing the width) is
    /// a failed trial, returned as `Err(Finish)`.
    pub fn prepare(
        &self,
        number: u64,
        params: &Map<String, Value>,
        dir: &Path,
        process: &TrialProcess,
        segment: Option<&Segment>,
    ) -> Result<Result<Prepared, Finish>> {
        match self {
            Objective::Command { command } => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(command).env("ATTUNE_TRIAL", number.to_string()).env("ATTUNE_TRIAL_DIR", dir);
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                Ok(Ok(Prepared { command: c, run_dir: None }))
            }
            Objective::Train { base, .. } => {
                let mut cfg: RunConfig = (**base).clone();
                for (k, v) in params {
                    if let Err(e) = overlay::set(&mut cfg, k, v.clone()) {
                        return Ok(Err(Finish::failed(format!("{k} = {v}: {e:#}"))));
                    }
                }
                if let Some(seg) = segment {
                    overlay::set(&mut cfg, "train.steps", json!(seg.until_step))?;
                    overlay::set(&mut cfg, "train.epochs", Value::Null)?;
                }
                if let Err(e) = cfg.clone().resolve() {
                    return Ok(Err(Finish::failed(format!("the trial's config is invalid: {e:#}"))));
                }
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let config = dir.join("config.json");
                attune_persist::write_atomic(&config, serde_json::to_string_pretty(&cfg)?.as_bytes())?;
                let run_dir = dir.join("run");
                let exe = std::env::current_exe().context("finding the attune binary")?;
                // Under a launcher each trial is an MPI job of `attune train --distributed`.
                let mut c = match process.launcher.split_first() {
                    None => Command::new(exe),
                    Some((program, args)) => {
                        let mut c = Command::new(program);
                        c.args(args).arg(exe);
                        c
                    }
                };
                c.arg("train");
                if !process.launcher.is_empty() {
                    c.arg("--distributed");
                }
                // A re-queued segment continues its own run from its newest committed
                // checkpoint; one that died before committing any starts over.
                let own_checkpoint = segment.is_some_and(|s| s.resume)
                    && crate::rundir::checkpoints(&run_dir).is_ok_and(|c| !c.is_empty());
                if own_checkpoint {
                    c.arg("--resume").arg(&run_dir);
                } else {
                    c.arg("--config").arg(&config).arg("--out").arg(&run_dir).arg("--overwrite");
                    if let Some(from) = segment.and_then(|s| s.restore_from.as_ref()) {
                        c.arg("--init-from").arg(from);
                    }
                }
                c.args(["--quiet", "--no-plots", "--report-json", "--threads", &process.threads.to_string()]);
                Ok(Ok(Prepared { command: c, run_dir: Some(run_dir) }))
            }
        }
    }

    /// The trial's input line on the protocol's stdin; a PBT segment adds
    /// `"pbt": {"member", "generation", "interval", "until_step", "restore_from", "save_to",
    /// "resume"}`. `save_to` is the trial's folder (also in `ATTUNE_TRIAL_DIR`), where a program
    /// saves the state the next segment restores; `resume` is true for a re-queued segment
    /// (its worker died), whose program should continue from what it finds in `save_to`.
    pub fn input(number: u64, params: &Map<String, Value>, segment: Option<&Segment>, save_to: &Path) -> String {
        match segment {
            None => json!({"trial": number, "params": params}).to_string(),
            Some(s) => json!({"trial": number, "params": params, "pbt": {
                "member": s.member,
                "generation": s.generation,
                "interval": s.interval,
                "until_step": s.until_step,
                "restore_from": s.restore_from,
                "save_to": save_to,
                "resume": s.resume,
            }})
            .to_string(),
        }
    }

    /// How the trial ends, from how its process ended.
    pub fn finish(&self, end: ProcessEnd, run_dir: Option<&Path>) -> Finish {
        match (self, end) {
            (_, ProcessEnd::Pruned) => Finish::pruned(),
            (_, ProcessEnd::Failed(why)) => Finish::failed(why),
            (_, ProcessEnd::Abandoned) => Finish::failed("abandoned: this worker lost the trial's lease"),
            (Objective::Command { .. }, ProcessEnd::Exited(Some(values))) => Finish::complete(values),
            (Objective::Command { .. }, ProcessEnd::Exited(None)) => {
                Finish::failed("exited 0 without a final {\"value\": v} or {\"values\": [..]} line")
            }
            (Objective::Train { metrics, .. }, ProcessEnd::Exited(_)) => {
                let Some(dir) = run_dir else { return Finish::failed("no run directory") };
                let path = dir.join("summary.json");
                let summary: Summary = match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(s) => s,
                    Err(e) => return Finish::failed(format!("cannot read {}: {e}", path.display())),
                };
                let values: Option<Vec<f64>> = metrics.iter().map(|m| m.value(&summary)).collect();
                match values {
                    Some(v) => Finish::complete(v),
                    None => Finish {
                        error: Some(format!("did not reach the target accuracy ({})", summary.stopped)),
                        ..Finish::pruned()
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_figure_is_named_by_its_eval_metrics_key() {
        assert_eq!(Metric::parse("eval_metrics.ndcg@10").unwrap(), Metric::EvalMetric("ndcg@10".into()));
        assert_eq!(Metric::parse("eval_loss").unwrap(), Metric::EvalLoss);
        let e = Metric::parse("eval_metrics.").unwrap_err().to_string();
        assert!(e.contains("eval_metrics.<key>"), "{e}");
        let summary: Summary = serde_json::from_value(serde_json::json!({
            "task": "recsys", "eval_accuracy": 0.1, "eval_loss": 5.0, "eval_split": "test", "eval_targets": 9,
            "best_valid_accuracy": null, "steps": 3, "elapsed_s": 1.0, "tokens_per_s": 2.0, "stopped": "max steps",
            "parameters": 4, "device": "cpu", "eval_metrics": {"ndcg@10": 0.25}
        }))
        .unwrap();
        assert_eq!(Metric::EvalMetric("ndcg@10".into()).value(&summary), Some(0.25));
        assert!(Metric::EvalMetric("hr@5".into()).value(&summary).is_some_and(f64::is_nan));
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// A re-queued training segment continues its own run when that run committed a
    /// checkpoint, and starts over from the donor's when it had not.
    #[test]
    fn a_requeued_training_segment_resumes_only_from_its_own_committed_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let objective = Objective::Train { base: Box::default(), metrics: vec![Metric::EvalAccuracy] };
        let donor = tmp.path().join("donor/run");
        let segment = |resume| Segment {
            member: 1,
            generation: 2,
            until_step: 30,
            interval: 10,
            restore_from: Some(donor.clone()),
            resume,
        };
        let trial = tmp.path().join("trials/00009");
        let prepare = |resume| {
            let seg = segment(resume);
            let Ok(Ok(p)) =
                objective.prepare(9, &Map::new(), &trial, &TrialProcess { threads: 1, launcher: vec![] }, Some(&seg))
            else {
                panic!("prepare")
            };
            args(&p.command)
        };
        let fresh = prepare(false);
        assert!(fresh.contains(&"--init-from".to_string()) && fresh.contains(&"--overwrite".to_string()), "{fresh:?}");
        assert_eq!(prepare(true), fresh, "no checkpoint of its own yet: start over from the donor");
        let checkpoint = trial.join("run/checkpoints/step-000000025");
        std::fs::create_dir_all(&checkpoint).unwrap();
        std::fs::write(checkpoint.join(attune_persist::MANIFEST), "{}").unwrap();
        let resumed = prepare(true);
        let at = resumed.iter().position(|a| a == "--resume").expect("--resume");
        assert_eq!(resumed[at + 1], trial.join("run").display().to_string());
        assert!(!resumed.iter().any(|a| a == "--init-from" || a == "--overwrite" || a == "--config"), "{resumed:?}");
        assert_eq!(prepare(false), fresh, "a first attempt never resumes, whatever the folder holds");
    }
}
