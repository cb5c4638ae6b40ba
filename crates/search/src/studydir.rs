//! A study's directory: the database every worker writes, the lock of the process that owns
//! the directory, and plain-file exports for people and other programs.
//!
//! ```text
//! DIR/.attune.lock   the flock of the owning process (attune-persist's DirLock)
//! DIR/study.db       the study (SqliteStorage, study DEFAULT_STUDY): the one source of truth
//! DIR/study.json     the study's record: space, sampler, pruner, seed, driver settings
//! DIR/trials.jsonl   one JSON object per trial (see ExportedTrial)
//! DIR/summary.json   the study's figures (crate::study::Summary)
//! ```
//!
//! The exports are rewritten whole with `write_atomic` after every finished trial, so a reader
//! sees the previous export or the next one, never a torn file; they are derived from
//! `study.db` and a resume never reads them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attune_persist::{DirLock, LOCK_FILE, TEMP_MARKER, remove_temporaries, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, SearchError};
use crate::space::Space;
use crate::storage::{DEFAULT_STUDY, SqliteStorage};
use crate::study::{Study, summarize};
use crate::trial::{Trial, TrialState};

/// The study database's name inside a study directory.
pub const STUDY_DB: &str = "study.db";
/// The exported study record.
pub const STUDY_JSON: &str = "study.json";
/// The exported trials, one JSON object a line.
pub const TRIALS_JSONL: &str = "trials.jsonl";
/// The exported summary.
pub const SUMMARY_JSON: &str = "summary.json";

/// An open study directory, locked against other processes until dropped.
#[derive(Debug)]
pub struct StudyDir {
    dir: PathBuf,
    storage: Arc<SqliteStorage>,
    _lock: DirLock,
}

/// One line of `trials.jsonl`: a trial with its parameters as the objective saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedTrial {
    /// The trial's number.
    pub number: u64,
    /// `{name: value}` in external form (numbers, integers, the categorical choices).
    pub params: Map<String, Value>,
    /// Its state.
    pub state: TrialState,
    /// The objective values of a complete trial.
    pub values: Option<Vec<f64>>,
    /// `[[step, value], ...]`, ascending in step.
    pub intermediate: Vec<(u64, f64)>,
    /// Who ran it.
    pub worker: String,
    /// When it was asked for (seconds since the Unix epoch).
    pub started: f64,
    /// When it finished.
    pub finished: Option<f64>,
    /// `finished - started`, in seconds.
    pub duration: Option<f64>,
    /// Why a failed trial failed.
    pub error: Option<String>,
    /// Free-form attributes.
    pub attrs: Map<String, Value>,
}

impl ExportedTrial {
    /// The export of `trial` of a study over `space`.
    pub fn new(space: &Space, trial: &Trial) -> ExportedTrial {
        ExportedTrial {
            number: trial.number,
            params: space.external(&trial.params),
            state: trial.state,
            values: trial.values.clone(),
            intermediate: trial.intermediate.clone(),
            worker: trial.worker.clone(),
            started: trial.started,
            finished: trial.finished,
            duration: trial.duration(),
            error: trial.error.clone(),
            attrs: trial.attrs.clone(),
        }
    }
}

impl StudyDir {
    /// Starts a new study in `dir`, which must be missing or empty; a directory holding
    /// anything else (a study included) is refused untouched.
    pub fn create(dir: &Path) -> Result<StudyDir> {
        let op = "create study directory";
        refuse_non_empty(dir, op)?;
        let lock = DirLock::acquire(dir).map_err(|e| SearchError::storage(op, e))?;
        // Another process may have filled it between the look and the lock.
        refuse_non_empty(dir, op)?;
        let storage = SqliteStorage::create(&dir.join(STUDY_DB), DEFAULT_STUDY)?;
        Ok(StudyDir { dir: dir.to_path_buf(), storage: Arc::new(storage), _lock: lock })
    }

    /// Opens the study in `dir` to resume it; a directory without `study.db` is refused
    /// untouched with [`SearchError::NotAStudy`].
    pub fn open(dir: &Path) -> Result<StudyDir> {
        let op = "open study directory";
        let db = dir.join(STUDY_DB);
        if !db.is_file() {
            let why =
                if dir.is_dir() { format!("it has no {STUDY_DB}") } else { "there is no such directory".to_string() };
            return Err(SearchError::NotAStudy {
                path: dir.to_path_buf(),
                why: format!(
                    "{why}; fix: give the directory a study was started in, or start a new study there \
                     (without --resume)"
                ),
            });
        }
        let lock = DirLock::acquire(dir).map_err(|e| SearchError::storage(op, e))?;
        // A crashed export leaves its temporary behind; the lock makes them ours to remove.
        remove_temporaries(dir).map_err(|e| SearchError::storage(op, e))?;
        let storage = SqliteStorage::open(&db, DEFAULT_STUDY)?;
        Ok(StudyDir { dir: dir.to_path_buf(), storage: Arc::new(storage), _lock: lock })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The study database, for [`Study::open`] (it coerces to `Arc<dyn Storage>`).
    pub fn storage(&self) -> Arc<SqliteStorage> {
        Arc::clone(&self.storage)
    }

    /// Rewrites `study.json`, `trials.jsonl` and `summary.json` from one snapshot of the
    /// study's trials. `study` must be the study in this directory.
    pub fn export(&self, study: &Study) -> Result<()> {
        if study.storage().location() != self.storage.path() {
            return Err(SearchError::config(
                "study directory",
                format!(
                    "asked to export the study at {} into {}",
                    study.storage().location().display(),
                    self.dir.display()
                ),
                "export a study opened on this directory's storage (StudyDir::storage)",
            ));
        }
        export_to(&self.dir, study)
    }
}

/// Writes `study.json`, `trials.jsonl` and `summary.json` of `study` into `dir`, each replaced
/// whole (`write_atomic`), from one snapshot of the trials: the study directory's exports, and
/// a shared study's (any storage) in its artifacts folder.
pub fn export_to(dir: &Path, study: &Study) -> Result<()> {
    let op = "export study";
    let trials = study.trials()?;
    let record = to_json(study.record(), true)?;
    let mut lines = Vec::new();
    for trial in &trials {
        lines.extend(to_json(&ExportedTrial::new(study.space(), trial), false)?);
    }
    let summary = to_json(&summarize(study.space(), &trials), true)?;
    let write = |name: &str, bytes: &[u8]| write_atomic(&dir.join(name), bytes);
    write(STUDY_JSON, &record)
        .and_then(|()| write(TRIALS_JSONL, &lines))
        .and_then(|()| write(SUMMARY_JSON, &summary))
        .map_err(|e| SearchError::storage(op, e))
}

/// `value` as JSON text ending in a newline: indented for the files people read, one line for
/// the rows of `trials.jsonl`.
fn to_json<T: Serialize>(value: &T, pretty: bool) -> Result<Vec<u8>> {
    let bytes = if pretty { serde_json::to_vec_pretty(value) } else { serde_json::to_vec(value) };
    let mut bytes = bytes.map_err(|e| SearchError::storage("export study", e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Fails unless `dir` is missing or holds nothing but a lock file and temporaries.
fn refuse_non_empty(dir: &Path, op: &str) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SearchError::storage(op, format!("{}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE && !n.contains(TEMP_MARKER))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let detail = if names.iter().any(|n| n == STUDY_DB) {
        format!("{} already holds a study; fix: resume it (--resume), or choose a new directory", dir.display())
    } else {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
        format!(
            "{} is not empty and holds no study (it has {}{more}); fix: choose a new or empty directory",
            dir.display(),
            shown.join(", ")
        )
    };
    Err(SearchError::storage(op, detail))
}
