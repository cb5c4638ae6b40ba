//! A study in one SQLite file: the on-disk store, shared by threads and by worker processes.
//!
//! - WAL mode, so readers (samplers reading every trial) never wait for a writer and a writer
//!   never waits for readers; `synchronous = FULL`, so a trial told complete survives a power
//!   cut, not only a killed process.
//! - Every state change is one `BEGIN IMMEDIATE` transaction: the write lock is taken before
//!   the first read, so `create_trial`'s "largest number + 1" cannot be read by two processes
//!   at once, and no transaction ever has to upgrade a read lock (a deadlock SQLite reports as
//!   `SQLITE_BUSY` without waiting). Writers queue on the lock for up to [`BUSY_TIMEOUT`].
//! - A `schema_version` table says what the file is; opening checks it before touching the
//!   file, so a file that is not a study (another program's database, random bytes, a study
//!   written by a newer attune) is refused with [`SearchError::NotAStudy`] and left unchanged.
//! - Parameters and objective values are stored as little-endian `f64` blobs and intermediate
//!   values as `REAL`: both exact, so a resumed sampler sees bit for bit what was stored.
//! - `heartbeat` is the time of a running trial's last sign of life (its creation, its last
//!   report): what a lease check needs to tell a dead worker's trial from a slow one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{Storage, StudyRecord};
use crate::error::{Result, SearchError};
use crate::trial::{Finish, Trial, TrialState, now};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// The `format` every study database carries in its `schema_version` table.
const FORMAT: &str = "attune-study";

/// How long a write waits for another process's transaction before it fails. Transactions
/// here take milliseconds, so this only runs out when a process holds the lock and hangs.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The tables of schema version 1.
const SCHEMA: &str = "
CREATE TABLE schema_version (format TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE study (id INTEGER PRIMARY KEY CHECK (id = 0), record TEXT NOT NULL);
CREATE TABLE trials (
    number INTEGER PRIMARY KEY CHECK (number >= 0),
    state TEXT NOT NULL CHECK (state IN ('running', 'complete', 'pruned', 'failed')),
    params BLOB NOT NULL,
    objective_values BLOB,
    worker TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    finished REAL,
    error TEXT
);
CREATE TABLE intermediate (
    trial INTEGER NOT NULL REFERENCES trials (number),
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (trial, step)
) WITHOUT ROWID;
CREATE TABLE attrs (
    trial INTEGER NOT NULL REFERENCES trials (number),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (trial, key)
) WITHOUT ROWID;
";

/// A study in a SQLite file. Any number of handles, in any number of threads and processes on
/// one machine, may share the file.
#[derive(Debug)]
pub struct SqliteStorage {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// How a file is to be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Open,
    OpenOrCreate,
}

/// What a file holds, judged by reading only.
enum Contents {
    /// A study of [`SCHEMA_VERSION`].
    Study,
    /// No tables at all (a new or empty file).
    Empty,
    /// Tables, none of them ours.
    Foreign(Vec<String>),
    /// A `schema_version` table that is not ours, or a version this build cannot read.
    Version { format: String, version: i64 },
}

/// An error inside a transaction: SQLite's (mapped with the operation and the path at the
/// end) or one of ours.
enum Fail {
    Sql(rusqlite::Error),
    Search(SearchError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl From<SearchError> for Fail {
    fn from(e: SearchError) -> Fail {
        Fail::Search(e)
    }
}

impl SqliteStorage {
    /// Creates a new study file at `path`; fails if anything is there already.
    pub fn create(path: &Path) -> Result<SqliteStorage> {
        SqliteStorage::connect(path, Mode::Create)
    }

    /// Opens the study at `path` (for a resume or another worker); fails with
    /// [`SearchError::NotAStudy`] if there is no file or it holds no study.
    pub fn open(path: &Path) -> Result<SqliteStorage> {
        SqliteStorage::connect(path, Mode::Open)
    }

    /// Opens the study at `path`, creating it when there is no file or the file is empty.
    /// Several processes may race here: one creates the tables, the others open them.
    pub fn open_or_create(path: &Path) -> Result<SqliteStorage> {
        SqliteStorage::connect(path, Mode::OpenOrCreate)
    }

    /// The study file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(path: &Path, mode: Mode) -> Result<SqliteStorage> {
        let not_a_study = |why: String| SearchError::NotAStudy { path: path.to_path_buf(), why };
        match mode {
            Mode::Create => {
                // `create_new` is the one atomic "nothing was here" test: two creators cannot
                // both pass it.
                std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
                    let fix = if e.kind() == std::io::ErrorKind::AlreadyExists {
                        "; fix: resume the study there, or choose a new path"
                    } else {
                        ""
                    };
                    SearchError::storage("create study", format!("{}: {e}{fix}", path.display()))
                })?;
            }
            Mode::Open if path.is_dir() => {
                return Err(not_a_study(
                    "it is a directory; fix: give the study's file (study.db inside a study directory)".into(),
                ));
            }
            Mode::Open if !path.exists() => {
                return Err(not_a_study(
                    "there is no such file; fix: check the path, or create the study first".into(),
                ));
            }
            _ => {}
        }
        let result = SqliteStorage::connect_file(path, mode);
        if result.is_err() && mode == Mode::Create {
            // The file is ours and holds nothing yet: leave no half-made study behind.
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
        }
        result
    }

    fn connect_file(path: &Path, mode: Mode) -> Result<SqliteStorage> {
        let not_a_study = |why: String| SearchError::NotAStudy { path: path.to_path_buf(), why };
        let sql_err = |op: &str, e: rusqlite::Error| SearchError::storage(op, format!("{}: {e}", path.display()));
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if mode == Mode::OpenOrCreate {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err("open study", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_err("open study", e))?;
        // Only reads until the file is known to be a study: journal_mode=WAL would rewrite
        // another program's database header.
        let fix = "fix: give the path of an attune study (study.db in a study directory), or a new path to create one";
        let mut contents = inspect(&conn).map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => not_a_study(format!("it is not a SQLite database; {fix}")),
            _ => sql_err("open study", e),
        })?;
        if matches!(contents, Contents::Empty) && mode != Mode::Open {
            set_journal_mode(&conn, path, "create study")?;
            contents = initialize(&mut conn).map_err(|e| sql_err("create study", e))?;
        }
        match contents {
            Contents::Study => {}
            Contents::Empty => {
                return Err(not_a_study(format!("it is an empty file or database with no tables; {fix}")));
            }
            Contents::Foreign(tables) => {
                return Err(not_a_study(format!(
                    "it is a SQLite database without attune's tables (it has {}); {fix}",
                    tables.join(", ")
                )));
            }
            Contents::Version { format, version } if format == FORMAT && version > SCHEMA_VERSION => {
                return Err(not_a_study(format!(
                    "it is a study of schema version {version}, written by a newer attune (this one reads \
                     version {SCHEMA_VERSION}); fix: open it with that attune or a newer one"
                )));
            }
            Contents::Version { format, version } => {
                return Err(not_a_study(format!(
                    "its schema_version table says format '{format}' version {version}, not '{FORMAT}' version \
                     {SCHEMA_VERSION}; {fix}"
                )));
            }
        }
        set_journal_mode(&conn, path, "open study")?;
        // FULL: a WAL commit is fsynced before it returns, so a told trial survives a power cut.
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql_err("open study", e))?;
        Ok(SqliteStorage { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    fn lock(&self, op: &str) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| SearchError::storage(op, "a thread panicked while holding the study's connection"))
    }

    fn sql_error(&self, op: &str, e: rusqlite::Error) -> SearchError {
        let hint = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
                "; another process held the study's write lock for over {} s: is a worker hung?",
                BUSY_TIMEOUT.as_secs()
            ),
            Some(ErrorCode::DiskFull) => "; free disk space and resume the study".into(),
            _ => String::new(),
        };
        SearchError::storage(op, format!("{}: {e}{hint}", self.path.display()))
    }

    /// Runs `f` in one transaction and commits it; any error rolls everything back.
    fn transaction<T>(
        &self,
        op: &str,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        let mut conn = self.lock(op)?;
        let run = |conn: &mut Connection| -> std::result::Result<T, Fail> {
            let tx = conn.transaction_with_behavior(behavior)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(|e| match e {
            Fail::Sql(e) => self.sql_error(op, e),
            Fail::Search(e) => e,
        })
    }

    /// A state change: takes the write lock first (see the module's notes).
    fn write<T>(&self, op: &str, f: impl FnOnce(&Transaction) -> std::result::Result<T, Fail>) -> Result<T> {
        self.transaction(op, TransactionBehavior::Immediate, f)
    }

    /// A consistent snapshot of several tables.
    fn read<T>(&self, op: &str, f: impl FnOnce(&Transaction) -> std::result::Result<T, Fail>) -> Result<T> {
        self.transaction(op, TransactionBehavior::Deferred, f)
    }
}

/// What the file holds, by reading `sqlite_master` and `schema_version` only.
fn inspect(conn: &Connection) -> rusqlite::Result<Contents> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let tables = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    if tables.is_empty() {
        return Ok(Contents::Empty);
    }
    if !tables.iter().any(|t| t == "schema_version") {
        return Ok(Contents::Foreign(tables));
    }
    // Another program's `schema_version` may have other columns or rows: that is "foreign",
    // not an error of ours.
    let rows = conn.prepare("SELECT format, version FROM schema_version").and_then(|mut s| {
        s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()
    });
    Ok(match rows {
        Ok(rows) if rows.len() == 1 => {
            let (format, version) = rows.into_iter().next().unwrap_or_default();
            if format == FORMAT && version == SCHEMA_VERSION {
                Contents::Study
            } else {
                Contents::Version { format, version }
            }
        }
        _ => Contents::Foreign(tables),
    })
}

/// Creates the tables unless a racing process already has, and says what the file holds now.
fn initialize(conn: &mut Connection) -> rusqlite::Result<Contents> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let contents = inspect(&tx)?;
    if !matches!(contents, Contents::Empty) {
        return Ok(contents);
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute("INSERT INTO schema_version (format, version) VALUES (?1, ?2)", params![FORMAT, SCHEMA_VERSION])?;
    tx.commit()?;
    Ok(Contents::Study)
}

/// Switches the file to WAL (a no-op when it is already; the mode is stored in the file).
fn set_journal_mode(conn: &Connection, path: &Path, op: &str) -> Result<()> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| SearchError::storage(op, format!("{}: {e}", path.display())))?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(SearchError::storage(
            op,
            format!(
                "{}: SQLite kept journal mode '{mode}' instead of WAL; fix: put the study on a local file system",
                path.display()
            ),
        ))
    }
}

/// `x` as an SQLite integer (which is signed).
fn int(x: u64, what: &str) -> std::result::Result<i64, Fail> {
    i64::try_from(x).map_err(|_| Fail::Search(SearchError::storage("store", format!("{what} {x} is over 2^63 - 1"))))
}

/// Column `i` of `row` as an unsigned integer.
fn get_u64(row: &rusqlite::Row, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

/// `xs` as little-endian bytes: exact, unlike any decimal text.
fn encode(xs: &[f64]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: &[u8], number: u64, column: &str) -> std::result::Result<Vec<f64>, Fail> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Fail::Search(SearchError::storage(
            "read trials",
            format!("trial {number}: {column} holds {} bytes, not a list of 8-byte floats", bytes.len()),
        )));
    }
    Ok(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect())
}

/// Fails unless trial `number` exists and is running.
fn require_running(tx: &Transaction, number: u64) -> std::result::Result<(), Fail> {
    let state: Option<String> = tx
        .query_row("SELECT state FROM trials WHERE number = ?1", [int(number, "trial number")?], |r| r.get(0))
        .optional()?;
    match state {
        None => Err(SearchError::Trial { number, problem: "no such trial".into() }.into()),
        Some(s) if s != TrialState::Running.name() => {
            Err(SearchError::Trial { number, problem: format!("already {s}") }.into())
        }
        Some(_) => Ok(()),
    }
}

fn parse_record(text: &str) -> std::result::Result<StudyRecord, Fail> {
    serde_json::from_str(text)
        .map_err(|e| Fail::Search(SearchError::storage("read study", format!("the stored study record: {e}"))))
}

/// One row of `trials` before its blobs are decoded.
struct TrialRow {
    number: u64,
    state: String,
    params: Vec<u8>,
    values: Option<Vec<u8>>,
    worker: String,
    started: f64,
    finished: Option<f64>,
    error: Option<String>,
}

impl TrialRow {
    fn into_trial(self) -> std::result::Result<Trial, Fail> {
        let number = self.number;
        let state = TrialState::from_name(&self.state).ok_or_else(|| {
            SearchError::storage("read trials", format!("trial {number}: unknown state '{}'", self.state))
        })?;
        Ok(Trial {
            number,
            state,
            params: decode(&self.params, number, "params")?,
            values: self.values.map(|v| decode(&v, number, "objective_values")).transpose()?,
            intermediate: Vec::new(),
            worker: self.worker,
            started: self.started,
            finished: self.finished,
            error: self.error,
            attrs: Map::new(),
            retries: 0,
        })
    }
}

fn read_trials(tx: &Transaction) -> std::result::Result<Vec<Trial>, Fail> {
    let mut stmt = tx.prepare(
        "SELECT number, state, params, objective_values, worker, started, finished, error FROM trials ORDER BY number",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TrialRow {
                number: get_u64(r, 0)?,
                state: r.get(1)?,
                params: r.get(2)?,
                values: r.get(3)?,
                worker: r.get(4)?,
                started: r.get(5)?,
                finished: r.get(6)?,
                error: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<TrialRow>>>()?;
    let mut trials = rows.into_iter().map(TrialRow::into_trial).collect::<std::result::Result<Vec<Trial>, Fail>>()?;
    let index = |trials: &[Trial], number: u64| trials.binary_search_by_key(&number, |t| t.number).ok();

    let mut stmt = tx.prepare("SELECT trial, step, value FROM intermediate ORDER BY trial, step")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(i) = index(&trials, get_u64(r, 0)?) {
            trials[i].intermediate.push((get_u64(r, 1)?, r.get(2)?));
        }
    }
    let mut stmt = tx.prepare("SELECT trial, key, value FROM attrs")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (number, key, text): (u64, String, String) = (get_u64(r, 0)?, r.get(1)?, r.get(2)?);
        let value = serde_json::from_str(&text).map_err(|e| {
            SearchError::storage("read trials", format!("trial {number}: attribute '{key}' is not JSON: {e}"))
        })?;
        if let Some(i) = index(&trials, number) {
            trials[i].attrs.insert(key, value);
        }
    }
    Ok(trials)
}

impl Storage for SqliteStorage {
    fn location(&self) -> PathBuf {
        self.path.clone()
    }

    fn init_study(&self, record: &StudyRecord) -> Result<StudyRecord> {
        let text = serde_json::to_string(record).map_err(|e| SearchError::storage("init study", e))?;
        self.write("init study", |tx| {
            let stored: Option<String> =
                tx.query_row("SELECT record FROM study WHERE id = 0", [], |r| r.get(0)).optional()?;
            match stored {
                Some(stored) => parse_record(&stored),
                None => {
                    tx.execute("INSERT INTO study (id, record) VALUES (0, ?1)", [&text])?;
                    Ok(record.clone())
                }
            }
        })
    }

    fn study(&self) -> Result<Option<StudyRecord>> {
        self.read("read study", |tx| {
            let stored: Option<String> =
                tx.query_row("SELECT record FROM study WHERE id = 0", [], |r| r.get(0)).optional()?;
            stored.map(|s| parse_record(&s)).transpose()
        })
    }

    fn create_trial(&self, params: &[f64], worker: &str, attrs: &Map<String, Value>) -> Result<u64> {
        self.write("create trial", |tx| {
            let number = tx.query_row("SELECT COALESCE(MAX(number) + 1, 0) FROM trials", [], |r| get_u64(r, 0))?;
            let row = int(number, "trial number")?;
            tx.execute(
                "INSERT INTO trials (number, state, params, worker, started, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![row, TrialState::Running.name(), encode(params), worker, now()],
            )?;
            for (key, value) in attrs {
                tx.execute(
                    "INSERT INTO attrs (trial, key, value) VALUES (?1, ?2, ?3)",
                    params![row, key, value.to_string()],
                )?;
            }
            Ok(number)
        })
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.write("report", |tx| {
            require_running(tx, number)?;
            tx.execute(
                "INSERT INTO intermediate (trial, step, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (trial, step) DO UPDATE SET value = excluded.value",
                params![int(number, "trial number")?, int(step, "step")?, value],
            )?;
            tx.execute(
                "UPDATE trials SET heartbeat = ?2 WHERE number = ?1",
                params![int(number, "trial number")?, now()],
            )?;
            Ok(())
        })
    }

    fn set_attr(&self, number: u64, key: &str, value: &Value) -> Result<()> {
        self.write("set attr", |tx| {
            let exists = tx
                .query_row("SELECT 1 FROM trials WHERE number = ?1", [int(number, "trial number")?], |_| Ok(()))
                .optional()?;
            if exists.is_none() {
                return Err(SearchError::Trial { number, problem: "no such trial".into() }.into());
            }
            tx.execute(
                "INSERT INTO attrs (trial, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (trial, key) DO UPDATE SET value = excluded.value",
                params![int(number, "trial number")?, key, value.to_string()],
            )?;
            Ok(())
        })
    }

    fn finish(&self, number: u64, finish: &Finish) -> Result<()> {
        if finish.state == TrialState::Running {
            return Err(SearchError::Trial { number, problem: "cannot finish as running".into() });
        }
        self.write("finish", |tx| {
            require_running(tx, number)?;
            tx.execute(
                "UPDATE trials SET state = ?2, objective_values = ?3, error = ?4, finished = ?5 WHERE number = ?1",
                params![
                    int(number, "trial number")?,
                    finish.state.name(),
                    finish.values.as_deref().map(encode),
                    finish.error,
                    now()
                ],
            )?;
            Ok(())
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.read("read trials", read_trials)
    }

    // Schema v1 has no lease columns: these are placeholders until schema v2.
    fn create_leased(
        &self,
        _params: &[f64],
        _worker: &str,
        _attrs: &Map<String, Value>,
        _lease: Duration,
        _limit: Option<u64>,
    ) -> Result<Option<u64>> {
        Err(SearchError::storage("create leased trial", "not yet implemented in schema v1"))
    }

    fn renew(&self, _number: u64, _worker: &str, _lease: Duration) -> Result<bool> {
        Err(SearchError::storage("renew lease", "not yet implemented in schema v1"))
    }

    fn expire_leases(&self, _max_retries: u32) -> Result<Vec<u64>> {
        Err(SearchError::storage("expire leases", "not yet implemented in schema v1"))
    }

    fn claim_queued(&self, _worker: &str, _lease: Duration) -> Result<Option<Trial>> {
        Err(SearchError::storage("claim queued trial", "not yet implemented in schema v1"))
    }

    fn finish_leased(&self, _number: u64, _worker: &str, _finish: &Finish) -> Result<bool> {
        Err(SearchError::storage("finish leased trial", "not yet implemented in schema v1"))
    }
}
