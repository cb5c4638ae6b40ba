//! The tables of a study file, and what a file holds judged by reading only.

use rusqlite::{Connection, TransactionBehavior, params};

/// The schema version this build writes and understands.
///
/// - 1: one study per file, no leases (development builds only; refused, see [`Contents`]).
/// - 2: named studies in one file, leases, queued trials and retries.
pub const SCHEMA_VERSION: i64 = 2;

/// The `format` every study database carries in its `schema_version` table.
pub(super) const FORMAT: &str = "attune-study";

/// The tables of schema version 2.
///
/// - `trials` is clustered on `(study_id, number)` (WITHOUT ROWID): reading a study's trials
///   in order, the next number (`MAX(number)` of a study) and every per-trial update are
///   lookups in that one b-tree, with no separate index.
/// - `trials_queued` holds only queued trials, so a claim finds the lowest one without
///   scanning the finished ones; `trials_lease_expiry` holds only running trials ordered by
///   expiry, so `expire_leases`, run by every worker on every loop, reads only the expired.
/// - A lease is `lease_owner` and `lease_expires` (seconds since the Unix epoch by the
///   process clock, see the module's notes), both set or both NULL, and only on a running
///   trial: the CHECKs make a half-written lease impossible whatever a writer does.
pub(super) const SCHEMA: &str = "
CREATE TABLE schema_version (format TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT
);
CREATE TABLE trials (
    study_id INTEGER NOT NULL REFERENCES studies (id),
    number INTEGER NOT NULL CHECK (number >= 0),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'complete', 'pruned', 'failed')),
    params BLOB NOT NULL,
    objective_values BLOB,
    worker TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    finished REAL,
    error TEXT,
    retries INTEGER NOT NULL DEFAULT 0 CHECK (retries >= 0),
    lease_owner TEXT,
    lease_expires REAL,
    PRIMARY KEY (study_id, number),
    CHECK ((lease_owner IS NULL) = (lease_expires IS NULL)),
    CHECK (lease_owner IS NULL OR state = 'running')
) WITHOUT ROWID;
CREATE INDEX trials_queued ON trials (study_id, number) WHERE state = 'queued';
CREATE INDEX trials_lease_expiry ON trials (study_id, lease_expires) WHERE state = 'running';
CREATE TABLE intermediate (
    study_id INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (study_id, trial, step),
    FOREIGN KEY (study_id, trial) REFERENCES trials (study_id, number)
) WITHOUT ROWID;
CREATE TABLE attrs (
    study_id INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (study_id, trial, key),
    FOREIGN KEY (study_id, trial) REFERENCES trials (study_id, number)
) WITHOUT ROWID;
";

/// What a file holds, judged by reading only.
pub(super) enum Contents {
    /// A study file of [`SCHEMA_VERSION`].
    Study,
    /// No tables at all (a new or empty file).
    Empty,
    /// Tables, none of them ours.
    Foreign(Vec<String>),
    /// A `schema_version` table that is not ours, or a version this build cannot read
    /// (an older one included: version 1 files are refused, not converted).
    Version { format: String, version: i64 },
}

/// What the file holds, by reading `sqlite_master` and `schema_version` only.
pub(super) fn inspect(conn: &Connection) -> rusqlite::Result<Contents> {
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
pub(super) fn initialize(conn: &mut Connection) -> rusqlite::Result<Contents> {
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

/// Why a file holding `contents` (anything but a study of this version) is refused; `fix`
/// ends each reason.
pub(super) fn refusal(contents: Contents, fix: &str) -> String {
    match contents {
        Contents::Study => "it is a study file".into(),
        Contents::Empty => format!("it is an empty file or database with no tables; {fix}"),
        Contents::Foreign(tables) => {
            format!("it is a SQLite database without attune's tables (it has {}); {fix}", tables.join(", "))
        }
        Contents::Version { format, version } if format == FORMAT && version > SCHEMA_VERSION => format!(
            "it is a study of schema version {version}, written by a newer attune (this one reads version \
             {SCHEMA_VERSION}); fix: open it with that attune or a newer one"
        ),
        Contents::Version { format, version } if format == FORMAT => format!(
            "it is a study of schema version {version}, written by a development build of attune that kept one \
             study per file and had no leases (this one reads version {SCHEMA_VERSION} only, and converts no \
             older file); fix: run the study again into a new file, or read this one with the build that wrote it"
        ),
        Contents::Version { format, version } => format!(
            "its schema_version table says format '{format}' version {version}, not '{FORMAT}' version \
             {SCHEMA_VERSION}; {fix}"
        ),
    }
}
