//! `metrics.jsonl`: one JSON object per line for training and held-out measurements, mirrored
//! into a TensorBoard event file in the same directory ([`crate::tensorboard`]; docs/metrics.md).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use attune_persist::AppendLog;
use serde::{Deserialize, Serialize};

use crate::tensorboard::{EventWriter, scalars_of, unix_now};

/// One measurement. Non-finite values are written as `"NaN"`, `"inf"` or `"-inf"`
/// ([`crate::jsonfloat`]), so every line is valid JSON that reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Optimizer steps done.
    pub step: u64,
    /// `train` (mean over the last logged steps), `valid` or `test`.
    pub split: String,
    /// Mean cross-entropy.
    #[serde(with = "crate::jsonfloat")]
    pub loss: f64,
    /// Accuracy on supervised targets.
    #[serde(with = "crate::jsonfloat")]
    pub accuracy: f64,
    /// Learning rate of the last step.
    #[serde(with = "crate::jsonfloat")]
    pub lr: f64,
    /// Global gradient norm before clipping (training rows).
    #[serde(default, with = "crate::jsonfloat::option")]
    pub grad_norm: Option<f64>,
    /// Training throughput in tokens per second (training rows).
    #[serde(default, with = "crate::jsonfloat::option")]
    pub tokens_per_s: Option<f64>,
    /// Seconds of training so far.
    #[serde(with = "crate::jsonfloat")]
    pub elapsed_s: f64,
    /// The RAM's REINFORCE figures (training rows of the learned policy), written as four more
    /// keys of the row; absent for every other model.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub rl: Option<RlRow>,
    /// A ranking task's figures on the valid split (`hr@10`, `ndcg@10`, ...; crate::ranking);
    /// absent for every other task and row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_metrics: Option<std::collections::BTreeMap<String, f64>>,
    /// The share of the row's step time spent in collectives (a distributed run's training
    /// rows; docs/distributed.md); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_fraction: Option<f64>,
}

/// The REINFORCE keys of a RAM training row, each the mean over the row's steps
/// (docs/metrics.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RlRow {
    /// Mean reward: the fraction of training episodes answered right.
    #[serde(with = "crate::jsonfloat")]
    pub reward: f64,
    /// Mean baseline prediction of the reward.
    #[serde(with = "crate::jsonfloat")]
    pub baseline: f64,
    /// The REINFORCE term of the loss.
    #[serde(with = "crate::jsonfloat")]
    pub policy_loss: f64,
    /// Variance over a batch of each episode's REINFORCE summand `sum_t (R - b_t) log p_t`.
    #[serde(with = "crate::jsonfloat")]
    pub reinforce_var: f64,
}

/// Appends rows to `metrics.jsonl` (an attune-persist [`AppendLog`]: a checkpoint records the
/// length it covers, and a resume cuts the file back to exactly that; docs/persistence.md) and
/// mirrors them into the run's TensorBoard event file.
pub struct MetricsLog {
    log: AppendLog,
    events: EventWriter,
    /// Wall-clock time of `elapsed_s == 0`: an event's wall time is this plus the row's
    /// `elapsed_s`, so a resumed run's curves continue without the pause in between.
    wall_base: f64,
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`: a new empty log, or (`committed = Some(bytes)`, a resume) the
    /// log cut back to the bytes its checkpoint covers, so rows the interrupted run wrote after
    /// that checkpoint are gone and the log matches an uninterrupted run. The event file is
    /// rewritten from the kept rows, so TensorBoard shows exactly what `metrics.jsonl` holds.
    pub fn open(dir: &Path, committed: Option<u64>) -> Result<MetricsLog> {
        let path = dir.join("metrics.jsonl");
        let log = match committed {
            Some(bytes) => AppendLog::open_at(&path, bytes)?,
            None => AppendLog::create(&path)?,
        };
        let kept = read(&path)?;
        let wall_base = unix_now() - kept.last().map_or(0.0, |r| r.elapsed_s);
        let mut events = EventWriter::create(dir)?;
        for r in &kept {
            events.write_scalars(r.step, wall_base + r.elapsed_s, &scalars_of(r))?;
        }
        Ok(MetricsLog { log, events, wall_base })
    }

    /// Appends one row to both files.
    pub fn write(&mut self, row: &MetricRow) -> Result<()> {
        let mut line = serde_json::to_string(row)?;
        line.push('\n');
        self.log.append(line.as_bytes())?;
        self.events.write_scalars(row.step, self.wall_base + row.elapsed_s, &scalars_of(row))
    }

    /// The TensorBoard event file the rows are mirrored into.
    pub fn events_path(&self) -> &Path {
        self.events.path()
    }

    /// Makes every row durable and returns the file's length (what a checkpoint records).
    pub fn sync(&self) -> Result<u64> {
        Ok(self.log.sync()?)
    }

    /// Every row written so far.
    pub fn rows(&self) -> Result<Vec<MetricRow>> {
        read(self.log.path())
    }
}

/// Reads a metrics file.
pub fn read(path: &Path) -> Result<Vec<MetricRow>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    BufReader::new(f)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, l)| {
            let l = l.with_context(|| format!("{}:{}: cannot read the line", path.display(), i + 1))?;
            serde_json::from_str(&l).with_context(|| format!("{}:{}: not a metrics row", path.display(), i + 1))
        })
        .collect()
}
