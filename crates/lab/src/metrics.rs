//! `metrics.jsonl`: one JSON object per line for training and held-out measurements.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Optimizer steps done.
    pub step: u64,
    /// `train` (mean over the last logged steps), `valid` or `test`.
    pub split: String,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy on supervised targets.
    pub accuracy: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Global gradient norm before clipping (training rows).
    pub grad_norm: Option<f64>,
    /// Training throughput in tokens per second (training rows).
    pub tokens_per_s: Option<f64>,
    /// Seconds of training so far.
    pub elapsed_s: f64,
}

/// Appends rows to `metrics.jsonl`, flushing each so a crash loses nothing.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`, keeping only rows up to `keep_through_step` (a resumed run
    /// drops what the interrupted run logged after its checkpoint, so the log matches an
    /// uninterrupted run).
    pub fn open(dir: &Path, keep_through_step: Option<u64>) -> Result<MetricsLog> {
        let path = dir.join("metrics.jsonl");
        let kept = match keep_through_step {
            Some(step) if path.exists() => read(&path)?.into_iter().filter(|r| r.step <= step).collect(),
            _ => Vec::new(),
        };
        let mut file = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        for r in &kept {
            writeln!(file, "{}", serde_json::to_string(r)?)?;
        }
        drop(file);
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(MetricsLog { path, file })
    }

    /// Appends one row.
    pub fn write(&mut self, row: &MetricRow) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(row)?)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }

    /// Every row written so far.
    pub fn rows(&self) -> Result<Vec<MetricRow>> {
        read(&self.path)
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
