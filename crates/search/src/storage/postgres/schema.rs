//! attune's tables in a PostgreSQL database, and the check of what a database holds before
//! anything is written to it.

use std::path::PathBuf;

use ::postgres::{Client, GenericClient};

use super::pg_error;
use crate::error::{Result, SearchError};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// The `format` in attune's `schema_version` table (the same as a SQLite study's).
const FORMAT: &str = "attune-study";

/// The key of the advisory lock that serialises creating the tables: two workers connecting
/// to an empty database at once must not both create them.
const CREATE_LOCK: i64 = 0x6174_7475_6e65_0001;

/// The tables of schema version 1, all in schema `attune`.
///
/// - `studies.trial_count` is the next trial number: creating a trial increments it, which
///   locks the study's row until commit (see the module's notes).
/// - Times are the server's (`timestamptz`), leases included.
/// - The partial indexes serve the hot queries of shared studies: the lowest queued trial of a
///   study (`claim_queued`) and the running trials with a lease (`expire_leases`).
const SCHEMA: &str = "
CREATE SCHEMA attune;
CREATE TABLE attune.schema_version (format text NOT NULL, version bigint NOT NULL);
CREATE TABLE attune.studies (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    record jsonb,
    trial_count bigint NOT NULL DEFAULT 0 CHECK (trial_count >= 0),
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE attune.trials (
    study_id bigint NOT NULL REFERENCES attune.studies (id) ON DELETE CASCADE,
    number bigint NOT NULL CHECK (number >= 0),
    state text NOT NULL CHECK (state IN ('queued', 'running', 'complete', 'pruned', 'failed')),
    params float8[] NOT NULL,
    objective_values float8[],
    worker text NOT NULL,
    started timestamptz NOT NULL,
    finished timestamptz,
    error text,
    retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
    lease_owner text,
    lease_expires timestamptz,
    PRIMARY KEY (study_id, number)
);
CREATE INDEX trials_queued ON attune.trials (study_id, number) WHERE state = 'queued';
CREATE INDEX trials_leased ON attune.trials (study_id, lease_expires)
    WHERE state = 'running' AND lease_expires IS NOT NULL;
CREATE TABLE attune.intermediate (
    study_id bigint NOT NULL,
    number bigint NOT NULL,
    step bigint NOT NULL CHECK (step >= 0),
    value float8 NOT NULL,
    PRIMARY KEY (study_id, number, step),
    FOREIGN KEY (study_id, number) REFERENCES attune.trials (study_id, number) ON DELETE CASCADE
);
CREATE TABLE attune.attrs (
    study_id bigint NOT NULL,
    number bigint NOT NULL,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (study_id, number, key),
    FOREIGN KEY (study_id, number) REFERENCES attune.trials (study_id, number) ON DELETE CASCADE
);
";

/// What a database holds, judged by reading the catalog and `schema_version` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// attune's tables of [`SCHEMA_VERSION`].
    Study,
    /// No `attune` schema.
    Empty,
    /// An `attune` schema that is not attune's (why).
    Foreign(String),
    /// attune's `schema_version` table with a version this build cannot read (or a format
    /// that is not ours).
    Version { format: String, version: String },
}

/// Reads what the database holds; writes nothing, so a database that is not ours, or ours of
/// another version, is never changed.
pub fn inspect(client: &mut impl GenericClient) -> std::result::Result<Contents, ::postgres::Error> {
    let row = client.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'attune'),
                (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'attune'
                    AND table_name = 'schema_version' AND column_name IN ('format', 'version'))",
        &[],
    )?;
    let (schema, version_columns): (bool, i64) = (row.try_get(0)?, row.try_get(1)?);
    if !schema {
        return Ok(Contents::Empty);
    }
    if version_columns != 2 {
        return Ok(Contents::Foreign("it has a schema named attune without attune's schema_version table".into()));
    }
    // Read as text: another program's table may give the columns other types.
    let rows = client.query("SELECT format::text, version::text FROM attune.schema_version", &[])?;
    if rows.len() != 1 {
        return Ok(Contents::Foreign(format!("attune.schema_version holds {} rows, not 1", rows.len())));
    }
    let (format, version): (Option<String>, Option<String>) = (rows[0].try_get(0)?, rows[0].try_get(1)?);
    let (format, version) = (format.unwrap_or_default(), version.unwrap_or_default());
    Ok(if format == FORMAT && version == SCHEMA_VERSION.to_string() {
        Contents::Study
    } else {
        Contents::Version { format, version }
    })
}

/// Makes sure the database holds attune's tables of this version: creates them in an empty
/// database, refuses anything else but them.
pub fn ensure(client: &mut Client, shown: &str) -> Result<()> {
    let fail = |e: ::postgres::Error| pg_error("open study", shown, &e);
    match inspect(client).map_err(fail)? {
        Contents::Study => return Ok(()),
        Contents::Empty => {}
        other => return Err(refusal(shown, other)),
    }
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK]).map_err(fail)?;
    // Another worker may have created the tables while this one waited for the lock.
    match inspect(&mut tx).map_err(fail)? {
        Contents::Empty => {}
        Contents::Study => return Ok(()),
        other => return Err(refusal(shown, other)),
    }
    tx.batch_execute(SCHEMA).map_err(|e| pg_error("create attune's tables", shown, &e))?;
    tx.execute("INSERT INTO attune.schema_version (format, version) VALUES ($1, $2)", &[&FORMAT, &SCHEMA_VERSION])
        .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// The error for a database that holds something else than attune's tables of this version.
pub fn refusal(shown: &str, contents: Contents) -> SearchError {
    let fix = "fix: give the URL of another database (attune creates its tables in an empty one)";
    let why = match contents {
        Contents::Version { format, version } if format == FORMAT => match version.parse::<i64>() {
            Ok(v) if v > SCHEMA_VERSION => format!(
                "its attune tables are of schema version {v}, written by a newer attune (this one reads version \
                 {SCHEMA_VERSION}); they were left unchanged; fix: use that attune or a newer one, or give the \
                 URL of another database"
            ),
            _ => format!(
                "its attune tables are of schema version {version}, which this attune (version {SCHEMA_VERSION}) \
                 cannot read; they were left unchanged; fix: use the attune that wrote them, or give the URL of \
                 another database"
            ),
        },
        Contents::Version { format, version } => format!(
            "attune.schema_version says format '{format}' version {version}, not '{FORMAT}' version \
             {SCHEMA_VERSION}; {fix}"
        ),
        Contents::Foreign(why) => format!("{why}; {fix}"),
        Contents::Study | Contents::Empty => format!("it is not readable as attune's tables; {fix}"),
    };
    SearchError::NotAStudy { path: PathBuf::from(shown), why }
}

/// The id of study `name`, created (with no record and no trials) when there is none.
pub fn study_id(client: &mut Client, name: &str) -> std::result::Result<i64, ::postgres::Error> {
    let mut tx = client.transaction()?;
    // ON CONFLICT DO NOTHING: a worker racing to create the same study waits for the first
    // insert, then finds its row.
    tx.execute("INSERT INTO attune.studies (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", &[&name])?;
    let id: i64 = tx.query_one("SELECT id FROM attune.studies WHERE name = $1", &[&name])?.try_get(0)?;
    tx.commit()?;
    Ok(id)
}
