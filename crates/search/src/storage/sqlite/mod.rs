//! Studies in one SQLite file: the on-disk store, shared by threads and by worker processes on
//! one machine.
//!
//! - A file holds any number of named studies (`studies`), each with its own trials numbered
//!   from 0; a [`SqliteStorage`] is a handle on one of them. Study directories use the study
//!   [`DEFAULT_STUDY`]; [`SqliteStorage::list_studies`] says what a file holds.
//! - WAL mode, so readers (samplers reading every trial) never wait for a writer and a writer
//!   never waits for readers; `synchronous = FULL`, so a trial told complete survives a power
//!   cut, not only a killed process.
//! - Every state change, claims and lease expiry included, is one short `BEGIN IMMEDIATE`
//!   transaction: the write lock is taken before the first read, so "largest number + 1", "is
//!   the limit reached" or "which trial is queued lowest" cannot be read by two processes at
//!   once, and no transaction ever has to upgrade a read lock (a deadlock SQLite reports as
//!   `SQLITE_BUSY` without waiting). Writers queue on the lock for up to [`BUSY_TIMEOUT`].
//!   Reads (`trials`, `study`) are deferred transactions: one consistent snapshot that never
//!   waits for a writer.
//! - Leases expire by the process clock ([`crate::trial::now`], seconds since the Unix epoch),
//!   the clock `started` and `finished` use too. SQLite serves one machine (its locks do not
//!   work across network file systems), so every worker reads the same system clock, and
//!   SQLite's own `julianday('now')` would read that same clock: there is no clock of the
//!   database to prefer. A step of the system clock (an NTP jump) shortens or lengthens the
//!   leases running across it by the step.
//! - A `schema_version` table says what the file is; opening checks it before touching the
//!   file, so a file that is not a study (another program's database, random bytes, a study
//!   file of another schema version) is refused with [`SearchError::NotAStudy`] and left
//!   unchanged.
//! - Parameters and objective values are stored as little-endian `f64` blobs and intermediate
//!   values as `REAL`: both exact, so a resumed sampler sees bit for bit what was stored.
//! - `heartbeat` is the time of a running trial's last sign of life (its creation or claim,
//!   its last report or renewal), kept for people reading the file; leases decide liveness.

mod ops;
mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use self::rows::{Fail, Step, get_u64};
pub use self::schema::SCHEMA_VERSION;
use self::schema::{Contents, initialize, inspect, refusal};
use crate::error::{Result, SearchError};

/// How long a write waits for another process's transaction before it fails. Transactions
/// here take milliseconds, so this only runs out when a process holds the lock and hangs.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The study a study directory's `study.db` holds, and the name to use when a file holds one.
pub const DEFAULT_STUDY: &str = "default";

/// One study in a SQLite file. Any number of handles, in any number of threads and processes
/// on one machine, may share the file and the study.
#[derive(Debug)]
pub struct SqliteStorage {
    path: PathBuf,
    study: String,
    /// The study's row in `studies`: every query of its trials is keyed by it.
    study_id: i64,
    conn: Mutex<Connection>,
}

/// How a file and a study in it are to be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new study; the file may be new (created) or hold other studies.
    Create,
    /// An existing study in an existing file.
    Open,
    /// Either.
    OpenOrCreate,
}

/// The fix every refusal of a file that is not a study file ends with.
const FIX: &str =
    "fix: give the path of an attune study file (study.db in a study directory), or a new path to create one";

impl SqliteStorage {
    /// Creates the study `study` in the file at `path`, creating the file when there is none;
    /// fails if the file already holds a study of that name.
    pub fn create(path: &Path, study: &str) -> Result<SqliteStorage> {
        SqliteStorage::connect(path, study, Mode::Create)
    }

    /// Opens the study `study` at `path` (for a resume or another worker); fails with
    /// [`SearchError::NotAStudy`] if there is no file, it is not a study file, or it holds no
    /// study of that name.
    pub fn open(path: &Path, study: &str) -> Result<SqliteStorage> {
        SqliteStorage::connect(path, study, Mode::Open)
    }

    /// Opens the study `study` at `path`, creating the file (when there is none or it is
    /// empty) and the study as needed. Several processes may race here: one creates, the
    /// others open.
    pub fn open_or_create(path: &Path, study: &str) -> Result<SqliteStorage> {
        SqliteStorage::connect(path, study, Mode::OpenOrCreate)
    }

    /// The studies in the file at `path` and how many trials each holds, by name.
    pub fn list_studies(path: &Path) -> Result<Vec<(String, u64)>> {
        check_path(path, Mode::Open)?;
        let conn = open_file(path, Mode::Open)?;
        list(&conn).map_err(|e| file_error(path, "list studies", e))
    }

    /// The study file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The study's name in its file.
    pub fn study_name(&self) -> &str {
        &self.study
    }

    fn connect(path: &Path, study: &str, mode: Mode) -> Result<SqliteStorage> {
        if study.is_empty() {
            return Err(SearchError::config(
                "sqlite study",
                format!("an empty study name for {}", path.display()),
                format!("name the study ('{DEFAULT_STUDY}' when the file holds one)"),
            ));
        }
        let created = check_path(path, mode)?;
        let mut conn = open_file(path, mode).inspect_err(|_| {
            if created {
                // The file is ours and holds nothing yet: leave no half-made study behind.
                // (Once it is a study file, another process may be using it: it stays.)
                remove_with_companions(path);
            }
        })?;
        let study_id = select_study(&mut conn, path, study, mode)?;
        Ok(SqliteStorage { path: path.to_path_buf(), study: study.to_string(), study_id, conn: Mutex::new(conn) })
    }

    fn lock(&self, op: &str) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| SearchError::storage(op, "a thread panicked while holding the study's connection"))
    }

    /// Runs `f` in one transaction and commits it; any error rolls everything back.
    fn transaction<T>(
        &self,
        op: &str,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction) -> Step<T>,
    ) -> Result<T> {
        let mut conn = self.lock(op)?;
        let run = |conn: &mut Connection| -> Step<T> {
            let tx = conn.transaction_with_behavior(behavior)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(|e| match e {
            Fail::Sql(e) => file_error(&self.path, op, e),
            // A damaged row (a record or blob that does not decode) is named by its file.
            Fail::Search(SearchError::Storage { op, detail }) => {
                SearchError::Storage { op, detail: format!("{}: {detail}", self.path.display()) }
            }
            Fail::Search(e) => e,
        })
    }

    /// A state change: takes the write lock first (see the module's notes).
    fn write<T>(&self, op: &str, f: impl FnOnce(&Transaction) -> Step<T>) -> Result<T> {
        self.transaction(op, TransactionBehavior::Immediate, f)
    }

    /// A consistent snapshot of several tables.
    fn read<T>(&self, op: &str, f: impl FnOnce(&Transaction) -> Step<T>) -> Result<T> {
        self.transaction(op, TransactionBehavior::Deferred, f)
    }
}

/// An SQLite error of `op` on the file at `path`, with the fix where one is known.
fn file_error(path: &Path, op: &str, e: rusqlite::Error) -> SearchError {
    let hint = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "; another process held the study's write lock for over {} s: is a worker hung?",
            BUSY_TIMEOUT.as_secs()
        ),
        Some(ErrorCode::DiskFull) => "; free disk space and resume the study".into(),
        _ => String::new(),
    };
    SearchError::storage(op, format!("{}: {e}{hint}", path.display()))
}

/// Refuses what cannot be a study file before SQLite touches `path`; returns whether this call
/// created the (empty) file.
fn check_path(path: &Path, mode: Mode) -> Result<bool> {
    let not_a_study = |why: &str| SearchError::NotAStudy { path: path.to_path_buf(), why: why.to_string() };
    if path.is_dir() {
        return Err(not_a_study("it is a directory; fix: give the study's file (study.db inside a study directory)"));
    }
    match mode {
        Mode::Open if !path.exists() => {
            Err(not_a_study("there is no such file; fix: check the path, or create the study first"))
        }
        // `create_new` is the one atomic "nothing was here" test: of several creators, exactly
        // one learns that the file is its own to remove if it cannot be made a study file.
        Mode::Create => match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SearchError::storage("create study", format!("{}: {e}", path.display()))),
        },
        _ => Ok(false),
    }
}

/// Removes `path` and the files SQLite keeps beside it.
fn remove_with_companions(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A connection to the study file at `path`, which holds a study file of [`SCHEMA_VERSION`]
/// when this returns (made one from nothing unless `mode` is [`Mode::Open`]).
fn open_file(path: &Path, mode: Mode) -> Result<Connection> {
    let not_a_study = |why: String| SearchError::NotAStudy { path: path.to_path_buf(), why };
    let sql_err = |op: &str, e: rusqlite::Error| file_error(path, op, e);
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if mode == Mode::OpenOrCreate {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err("open study", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_err("open study", e))?;
    // Only reads until the file is known to be a study file: journal_mode=WAL would rewrite
    // another program's database header.
    let mut contents = inspect(&conn).map_err(|e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_a_study(format!("it is not a SQLite database; {FIX}")),
        _ => sql_err("open study", e),
    })?;
    if matches!(contents, Contents::Empty) && mode != Mode::Open {
        set_journal_mode(&conn, path, "create study")?;
        contents = initialize(&mut conn).map_err(|e| sql_err("create study", e))?;
    }
    if !matches!(contents, Contents::Study) {
        return Err(not_a_study(refusal(contents, FIX)));
    }
    set_journal_mode(&conn, path, "open study")?;
    // FULL: a WAL commit is fsynced before it returns, so a told trial survives a power cut.
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql_err("open study", e))?;
    Ok(conn)
}

/// The id of study `name` in the file, creating the study as `mode` allows (under the write
/// lock, so two processes creating one name make one study).
fn select_study(conn: &mut Connection, path: &Path, name: &str, mode: Mode) -> Result<i64> {
    let op = if mode == Mode::Open { "open study" } else { "create study" };
    let behavior = if mode == Mode::Open { TransactionBehavior::Deferred } else { TransactionBehavior::Immediate };
    let run = |conn: &mut Connection| -> Step<i64> {
        let tx = conn.transaction_with_behavior(behavior)?;
        let id: Option<i64> =
            tx.query_row("SELECT id FROM studies WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        let id = match (id, mode) {
            (Some(_), Mode::Create) => {
                let why = format!(
                    "{} already holds a study named '{name}'; fix: open it to resume it, or choose another study \
                     name",
                    path.display()
                );
                return Err(SearchError::storage(op, why).into());
            }
            (Some(id), _) => id,
            (None, Mode::Open) => {
                let held: Vec<String> = list(&tx)?.into_iter().map(|(n, t)| format!("'{n}' ({t} trials)")).collect();
                let held = if held.is_empty() { "no study".to_string() } else { held.join(", ") };
                let why = format!(
                    "it holds no study named '{name}' (it holds {held}); fix: name one of those, or create the \
                     study first"
                );
                return Err(SearchError::NotAStudy { path: path.to_path_buf(), why }.into());
            }
            (None, _) => {
                tx.execute("INSERT INTO studies (name) VALUES (?1)", [name])?;
                tx.last_insert_rowid()
            }
        };
        tx.commit()?;
        Ok(id)
    };
    run(conn).map_err(|e| match e {
        Fail::Sql(e) => file_error(path, op, e),
        Fail::Search(e) => e,
    })
}

/// Every study in the file with its number of trials, by name.
fn list(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT s.name, COUNT(t.number) FROM studies s LEFT JOIN trials t ON t.study_id = s.id
         GROUP BY s.id ORDER BY s.name",
    )?;
    stmt.query_map([], |r| Ok((r.get(0)?, get_u64(r, 1)?)))?.collect()
}

/// Switches the file to WAL (a no-op when it is already; the mode is stored in the file).
fn set_journal_mode(conn: &Connection, path: &Path, op: &str) -> Result<()> {
    let mode: String =
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| file_error(path, op, e))?;
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
