//! A run directory's ownership and layout: one process at a time (an `flock` that the kernel
//! drops when the process dies), no silent overwrite of a run, temporaries of a crashed writer
//! cleared, and committed checkpoints under `checkpoints/step-NNNNNNNNN/` (attune-persist; the
//! protocol is in docs/persistence.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use attune_persist::{DirLock, list_committed, remove_temporaries};

/// The folder of committed checkpoints inside a run directory.
pub const CHECKPOINTS: &str = "checkpoints";

/// The prefix of a checkpoint directory's name.
const STEP_PREFIX: &str = "step-";

/// What a run writes at the top of its directory: `--overwrite` removes these and nothing else,
/// so pointing `--out` at a folder with other files never deletes them.
const RUN_ENTRIES: &[&str] = &[
    "config.json",
    "metrics.jsonl",
    "model.safetensors",
    "summary.json",
    "probe.safetensors",
    "plots",
    CHECKPOINTS,
    // The layout before committed checkpoint directories.
    "state.json",
    "optimizer.safetensors",
    "best.safetensors",
];

/// The prefix of TensorBoard event files, which a run also owns.
const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// A run directory this process holds.
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    _lock: DirLock,
}

impl RunDir {
    /// Takes `dir` for a new run: refuses one that holds a run unless `overwrite`, in which case
    /// the old run's files are removed first.
    pub fn create(dir: &Path, overwrite: bool) -> Result<RunDir> {
        let lock = DirLock::acquire(dir)?;
        if holds_run(dir) {
            if !overwrite {
                bail!(
                    "{} already holds a run; continue it with `attune train --resume {}`, start over in it with --overwrite (its checkpoints and metrics are deleted), or choose another --out",
                    dir.display(),
                    dir.display()
                );
            }
            for entry in run_entries(dir)? {
                let res = if entry.is_dir() { std::fs::remove_dir_all(&entry) } else { std::fs::remove_file(&entry) };
                res.with_context(|| format!("--overwrite: cannot remove {}", entry.display()))?;
            }
        }
        Self::clear_temporaries(dir)?;
        Ok(RunDir { dir: dir.to_path_buf(), _lock: lock })
    }

    /// Takes `dir` to continue its run (`--resume`).
    pub fn open(dir: &Path) -> Result<RunDir> {
        if !dir.join("config.json").is_file() {
            bail!(
                "{} holds no run to resume (no config.json); start one with `attune train --out {}`",
                dir.display(),
                dir.display()
            );
        }
        let lock = DirLock::acquire(dir)?;
        Self::clear_temporaries(dir)?;
        Ok(RunDir { dir: dir.to_path_buf(), _lock: lock })
    }

    fn clear_temporaries(dir: &Path) -> Result<()> {
        remove_temporaries(dir)?;
        remove_temporaries(&dir.join(CHECKPOINTS))?;
        remove_temporaries(&dir.join("plots"))?;
        Ok(())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the checkpoint of `step` is committed.
    pub fn checkpoint_dir(&self, step: u64) -> PathBuf {
        checkpoint_dir(&self.dir, step)
    }

    /// The committed checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<PathBuf>> {
        checkpoints(&self.dir)
    }
}

/// Where the checkpoint of `step` is committed in run directory `dir`.
pub fn checkpoint_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(CHECKPOINTS).join(format!("{STEP_PREFIX}{step:09}"))
}

/// The committed checkpoints of run directory `dir`, oldest first (read-only: no lock needed).
pub fn checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_committed(&dir.join(CHECKPOINTS), STEP_PREFIX)?)
}

/// Whether `dir` holds (part of) a run.
pub fn holds_run(dir: &Path) -> bool {
    run_entries(dir).is_ok_and(|e| !e.is_empty())
}

fn run_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(found) };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if RUN_ENTRIES.contains(&name.as_str()) || name.starts_with(EVENTS_PREFIX) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// `base` when it holds no run, else the first of `base-2`, `base-3`, ... that holds none (the
/// default run directory never replaces an earlier run).
pub fn fresh_default(base: &Path) -> PathBuf {
    if !holds_run(base) {
        return base.to_path_buf();
    }
    let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (2u64..)
        .map(|i| base.with_file_name(format!("{name}-{i}")))
        .find(|p| !holds_run(p))
        .unwrap_or_else(|| base.to_path_buf())
}
