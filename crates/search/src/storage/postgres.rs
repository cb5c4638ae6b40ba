//! Studies in a PostgreSQL database: one server shared by worker processes on many machines
//! (docs/search.md "Shared studies: storage").
//!
//! - Several named studies live in one database, in the `attune` schema (so attune's tables
//!   never collide with another program's `studies` or `trials`): `studies` (one row per name,
//!   its record as `jsonb` and its trial count), `trials` keyed by `(study_id, number)`,
//!   `intermediate` and `attrs`. [`schema`] holds the tables.
//! - Every method is one short transaction on the handle's own connection. Creating a trial
//!   increments the study row's `trial_count` with `UPDATE ... RETURNING`, which locks that row
//!   until commit: creators of one study queue there, so numbers stay dense and unique on any
//!   number of machines, and the trial limit is checked under the same lock. Claiming a queued
//!   trial takes it with `FOR UPDATE SKIP LOCKED`, so two workers never claim the same one and
//!   neither waits for the other.
//! - Leases are measured by the server's clock only (`clock_timestamp()`): the workers' clocks
//!   may disagree by minutes without any effect. `started` and `finished` are the server's too.
//! - Parameters and values are `float8` and `float8[]`, sent in binary: exact to the bit.
//! - [`Storage::trials`] reads the three tables in one REPEATABLE READ, read-only snapshot,
//!   one query per table.
//! - The client is not `Sync`: the connection sits behind a mutex. A connection found broken
//!   (the server restarted, a network blip) is reopened once and the transaction rerun, but
//!   only when the break came before COMMIT was sent, so nothing can be applied twice.

mod schema;
mod trials;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, IsolationLevel, NoTls, Row, Statement};

use crate::error::{Result, SearchError};

pub use schema::SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION;

/// How long connecting waits for the server before it gives up, unless the URL sets
/// `connect_timeout`: an unreachable host fails in seconds, not after the system's minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a statement waits for a row lock another worker holds. Transactions here take
/// milliseconds, so this only runs out when a worker holds a lock and hangs.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of every session, each for a reason:
/// - `idle_in_transaction_session_timeout`: a worker that dies mid-transaction where the
///   server cannot see it (its machine lost power) frees its locks after 60 s instead of never;
/// - `tcp_keepalives_*`: the server notices such a dead client within a minute too;
/// - `lock_timeout`: see [`LOCK_TIMEOUT`].
const SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '60s';
SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3;
SET lock_timeout = '60s'";

/// The fix for a URL that does not connect.
const URL_FIX: &str =
    "start the PostgreSQL server or correct the URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)";

/// One study in a PostgreSQL database. Any number of handles, in any number of threads,
/// processes and machines, may share the study; each handle has its own connection.
#[derive(Debug)]
pub struct PostgresStorage {
    /// The URL without its password, for messages.
    url: String,
    config: Config,
    study: String,
    study_id: i64,
    session: Mutex<Option<Session>>,
}

/// An open connection and the statements prepared on it.
struct Session {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("closed", &self.client.is_closed()).finish()
    }
}

/// An error inside a transaction: the server's (mapped with the operation and the URL at the
/// end) or one of ours.
enum Fail {
    Pg(::postgres::Error),
    Search(SearchError),
}

impl From<::postgres::Error> for Fail {
    fn from(e: ::postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<SearchError> for Fail {
    fn from(e: SearchError) -> Fail {
        Fail::Search(e)
    }
}

type Step<T> = std::result::Result<T, Fail>;

/// What a transaction does: a state change, or a consistent read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Write,
    Snapshot,
}

/// A transaction with the session's statement cache: each SQL text is prepared once per
/// connection, so a call costs one round trip per statement, not two.
struct Tx<'a> {
    tx: ::postgres::Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    fn statement(&mut self, sql: &'static str) -> Step<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Step<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(self.tx.query(&s, params)?)
    }

    fn query_opt(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Step<Option<Row>> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_opt(&s, params)?)
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Step<u64> {
        let s = self.statement(sql)?;
        Ok(self.tx.execute(&s, params)?)
    }
}

/// The names of the studies in the database at `url`, in name order; empty when attune has
/// never written there (nothing is created).
pub fn list_studies(url: &str) -> Result<Vec<String>> {
    let (config, shown) = parse_url(url, "list studies")?;
    let mut client = open_client(&config, &shown, "list studies")?;
    let fail = |e: ::postgres::Error| pg_error("list studies", &shown, &e);
    match schema::inspect(&mut client).map_err(fail)? {
        schema::Contents::Empty => Ok(Vec::new()),
        schema::Contents::Study => {
            let rows = client.query("SELECT name FROM attune.studies ORDER BY name", &[]).map_err(fail)?;
            rows.iter().map(|r| r.try_get(0).map_err(fail)).collect()
        }
        other => Err(schema::refusal(&shown, other)),
    }
}

impl PostgresStorage {
    /// Connects to the database at `url` and opens the study `study` there, creating attune's
    /// tables (when the database has none) and the study (when it has no such name). Fails
    /// within [`CONNECT_TIMEOUT`] when the server cannot be reached, and refuses a database
    /// whose `attune` schema is not of [`POSTGRES_SCHEMA_VERSION`] without changing it.
    ///
    /// `url` is a libpq URL or key/value string (`postgresql://user:secret@host:5432/db`);
    /// TLS is not supported (connect over a trusted network or a tunnel).
    pub fn connect(url: &str, study: &str) -> Result<PostgresStorage> {
        if study.is_empty() || study.len() > 200 || study.chars().any(char::is_control) {
            return Err(SearchError::storage(
                "open study",
                format!(
                    "study name {study:?}: must be 1 to 200 characters without control characters; fix: choose another name"
                ),
            ));
        }
        let (config, shown) = parse_url(url, "open study")?;
        let mut client = open_client(&config, &shown, "open study")?;
        schema::ensure(&mut client, &shown)?;
        let study_id = schema::study_id(&mut client, study).map_err(|e| pg_error("open study", &shown, &e))?;
        let session = Session { client, statements: HashMap::new() };
        Ok(PostgresStorage {
            url: shown,
            config,
            study: study.to_string(),
            study_id,
            session: Mutex::new(Some(session)),
        })
    }

    /// The database's URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The study's name.
    pub fn study_name(&self) -> &str {
        &self.study
    }

    fn lock(&self, op: &str) -> Result<MutexGuard<'_, Option<Session>>> {
        self.session
            .lock()
            .map_err(|_| SearchError::storage(op, "a thread panicked while holding the study's connection"))
    }

    fn error(&self, op: &str, e: Fail) -> SearchError {
        match e {
            Fail::Pg(e) => pg_error(op, &self.where_(), &e),
            Fail::Search(e) => e,
        }
    }

    fn where_(&self) -> String {
        format!("{} study '{}'", self.url, self.study)
    }

    /// Runs `f` in one transaction and commits it; any error rolls everything back. A broken
    /// connection is reopened and `f` rerun once, when the break came before the commit.
    fn transaction<T>(&self, op: &str, access: Access, f: impl Fn(&mut Tx) -> Step<T>) -> Result<T> {
        let mut guard = self.lock(op)?;
        let mut retried = false;
        loop {
            // Taken out of the mutex while in use; put back unless it turned out broken.
            let mut session = match guard.take() {
                Some(s) if !s.client.is_closed() => s,
                _ => Session { client: open_client(&self.config, &self.url, op)?, statements: HashMap::new() },
            };
            match run_once(&mut session, access, &f) {
                Ok(out) => {
                    *guard = Some(session);
                    return Ok(out);
                }
                Err(Failed::BeforeCommit(Fail::Pg(e))) if e.is_closed() || session.client.is_closed() => {
                    // Nothing was committed, so running the whole transaction again is safe.
                    if retried {
                        return Err(self.error(op, Fail::Pg(e)));
                    }
                    retried = true;
                }
                Err(Failed::BeforeCommit(e)) => {
                    *guard = Some(session);
                    return Err(self.error(op, e));
                }
                Err(Failed::AtCommit(e)) if e.is_closed() || session.client.is_closed() => {
                    return Err(SearchError::storage(
                        op,
                        format!(
                            "{}: the connection broke while committing, so the change may or may not be stored \
                             ({}); fix: check the server, then read the study's trials before retrying",
                            self.where_(),
                            describe(&e)
                        ),
                    ));
                }
                Err(Failed::AtCommit(e)) => {
                    *guard = Some(session);
                    return Err(self.error(op, Fail::Pg(e)));
                }
            }
        }
    }
}

/// Where a transaction failed: a failure before COMMIT left nothing behind.
enum Failed {
    BeforeCommit(Fail),
    AtCommit(::postgres::Error),
}

/// Begins, runs `f` and commits, once.
fn run_once<T>(
    session: &mut Session,
    access: Access,
    f: &impl Fn(&mut Tx) -> Step<T>,
) -> std::result::Result<T, Failed> {
    let begun = match access {
        Access::Write => session.client.transaction(),
        Access::Snapshot => {
            session.client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()
        }
    };
    let mut tx = Tx { tx: begun.map_err(|e| Failed::BeforeCommit(Fail::Pg(e)))?, statements: &mut session.statements };
    let out = f(&mut tx).map_err(Failed::BeforeCommit)?;
    tx.tx.commit().map_err(Failed::AtCommit)?;
    Ok(out)
}

/// Parses `url` and returns it with the settings attune adds, and its form for messages.
fn parse_url(url: &str, op: &str) -> Result<(Config, String)> {
    let shown = redact(url);
    let mut config = Config::from_str(url)
        .map_err(|e| SearchError::storage(op, format!("{shown}: {}; fix: {URL_FIX}", describe(&e))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true).keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("attune-search");
    }
    Ok((config, shown))
}

/// Opens a connection with the session settings applied, within the connect timeout.
///
/// The client's own `connect_timeout` bounds only the TCP connect; a host that accepts the
/// connection and then says nothing (a hung server, a proxy with no server behind it) would
/// hold the handshake for ever. So the whole connect runs on a helper thread, and the caller
/// stops waiting at the deadline; the thread ends when the connection finally fails, or
/// stays blocked on that dead socket, costing nothing but a thread.
fn open_client(config: &Config, shown: &str, op: &str) -> Result<Client> {
    let timeout = config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
    let (send, receive) = std::sync::mpsc::channel();
    let config_copy = config.clone();
    std::thread::Builder::new()
        .name("attune-pg-connect".into())
        .spawn(move || {
            let connected = config_copy.connect(NoTls).and_then(|mut client| {
                client.batch_execute(SESSION_SETTINGS)?;
                Ok(client)
            });
            let _ = send.send(connected);
        })
        .map_err(|e| SearchError::storage(op, format!("{shown}: cannot start a thread to connect: {e}")))?;
    match receive.recv_timeout(timeout) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(connect_error(op, shown, &e)),
        Err(_) => Err(SearchError::storage(
            op,
            format!(
                "cannot connect to {shown}: no answer from the server within {} s; fix: check that the host \
                 and port are those of a running PostgreSQL server reachable from here (firewall, VPN), or \
                 set connect_timeout=SECONDS in the URL for a slow network",
                timeout.as_secs_f64()
            ),
        )),
    }
}

/// A connection error with the fix that fits its cause.
fn connect_error(op: &str, shown: &str, e: &::postgres::Error) -> SearchError {
    let fix = match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            "check the user and password in the URL, and the server's pg_hba.conf".to_string()
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "create the database first (createdb NAME, or CREATE DATABASE name)".to_string()
        }
        _ => URL_FIX.to_string(),
    };
    SearchError::storage(op, format!("cannot connect to {shown}: {}; fix: {fix}", describe(e)))
}

/// A server error of `op`, with a hint where one helps.
fn pg_error(op: &str, shown: &str, e: &::postgres::Error) -> SearchError {
    let hint = match e.code() {
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => format!(
            "; another worker held a lock of the study for over {} s: is a worker hung?",
            LOCK_TIMEOUT.as_secs()
        ),
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            "; fix: grant the user CREATE on the database (for the first connection) and USAGE on schema attune \
             with SELECT, INSERT, UPDATE, DELETE on its tables"
                .into()
        }
        _ if e.is_closed() => "; the connection to the server is closed: is the server running?".into(),
        _ => String::new(),
    };
    SearchError::storage(op, format!("{shown}: {}{hint}", describe(e)))
}

/// An error and its causes, in one line (the client's own message names only the kind).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// `url` with any password replaced by `***`: in the URL's user information
/// (`user:secret@`), as a query parameter (`?password=secret`) or as a key/value setting
/// (`password=secret` or `password='a secret'`).
pub(crate) fn redact(url: &str) -> String {
    let trimmed = url.trim();
    // Any URL form (`postgres://`, or a wrong scheme in an error message about it).
    if let Some(scheme_end) = trimmed.find("://").map(|i| i + 3) {
        let rest = &trimmed[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (userinfo, hosts) = authority.split_at(at);
                match userinfo.find(':') {
                    Some(colon) => format!("{}:***{hosts}", &userinfo[..colon]),
                    None => authority.to_string(),
                }
            }
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k == "password" => format!("{k}=***"),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_string(),
        };
        return format!("{}{authority}{tail}", &trimmed[..scheme_end]);
    }
    redact_key_values(trimmed)
}

/// The key/value form's `password=...` replaced, quoted values included.
fn redact_key_values(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("password") {
        let before_ok = i == 0 || rest[..i].ends_with(char::is_whitespace);
        let after = rest[i + "password".len()..].trim_start();
        if !(before_ok && after.starts_with('=')) {
            out.push_str(&rest[..i + "password".len()]);
            rest = &rest[i + "password".len()..];
            continue;
        }
        out.push_str(&rest[..i]);
        out.push_str("password=***");
        let value = after[1..].trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            // A quoted value ends at the first unescaped quote.
            let mut escaped = false;
            let close = quoted.char_indices().find(|&(_, c)| {
                let end = c == '\'' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            });
            close.map(|(j, _)| j + 2).unwrap_or(value.len())
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_every_form_of_password() {
        assert_eq!(redact("postgresql://ann:s3cr@t@db.example:5432/lab"), "postgresql://ann:***@db.example:5432/lab");
        assert_eq!(
            redact("postgres://ann@db/lab?password=x&sslmode=disable"),
            "postgres://ann@db/lab?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgresql://db:5432/lab"), "postgresql://db:5432/lab");
        assert_eq!(redact("host=db user=ann password=hunter2 dbname=lab"), "host=db user=ann password=*** dbname=lab");
        assert_eq!(redact("host=db password = 'a \\' b' dbname=lab"), "host=db password=*** dbname=lab");
        assert_eq!(redact("host=db user=password_owner"), "host=db user=password_owner");
    }
}
