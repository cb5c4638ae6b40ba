//! The [`Storage`] methods on one study of a file: each one transaction (see the module's
//! notes), with the semantics of `MemoryStorage`, the reference.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Map, Value};

use super::SqliteStorage;
use super::rows::{Step, encode, get_u64, int, parse_record, read_trials};
use crate::error::{Result, SearchError};
use crate::storage::{Storage, StudyRecord, lease_failure};
use crate::trial::{Finish, Trial, TrialState, now};

/// A lease's owner and its expiry by the process clock.
type Lease<'a> = (&'a str, f64);

/// The expiry of a lease of `lease` taken at `t`.
fn expiry(t: f64, lease: Duration) -> f64 {
    t + lease.as_secs_f64()
}

/// The number the next trial of `study` gets. Trials are numbered densely from 0 and never
/// deleted, so this is also how many trials the study holds.
fn next_number(tx: &Transaction, study: i64) -> Step<u64> {
    Ok(tx
        .query_row("SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?1", [study], |r| get_u64(r, 0))?)
}

/// Inserts a running trial, leased when `lease` is given.
fn insert_trial(
    tx: &Transaction,
    study: i64,
    number: u64,
    params: &[f64],
    worker: &str,
    attrs: &Map<String, Value>,
    lease: Option<Lease>,
) -> Step<()> {
    let row = int(number, "trial number")?;
    let t = now();
    tx.prepare_cached(
        "INSERT INTO trials (study_id, number, state, params, worker, started, heartbeat, lease_owner, lease_expires)
         VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?5, ?6, ?7)",
    )?
    .execute(params![study, row, encode(params), worker, t, lease.map(|l| l.0), lease.map(|l| l.1)])?;
    let mut insert = tx.prepare_cached("INSERT INTO attrs (study_id, trial, key, value) VALUES (?1, ?2, ?3, ?4)")?;
    for (key, value) in attrs {
        insert.execute(params![study, row, key, value.to_string()])?;
    }
    Ok(())
}

/// Fails unless trial `number` exists and is not finished (queued or running).
fn require_unfinished(tx: &Transaction, study: i64, number: u64) -> Step<()> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM trials WHERE study_id = ?1 AND number = ?2",
            params![study, int(number, "trial number")?],
            |r| r.get(0),
        )
        .optional()?;
    match state.as_deref().map(TrialState::from_name) {
        None => Err(SearchError::Trial { number, problem: "no such trial".into() }.into()),
        Some(Some(s)) if !s.is_finished() => Ok(()),
        Some(_) => Err(SearchError::Trial { number, problem: format!("already {}", state.unwrap_or_default()) }.into()),
    }
}

/// Stores `value` at `step` of trial `number` (replacing an earlier value at that step).
fn write_value(tx: &Transaction, study: i64, number: u64, step: u64, value: f64) -> Step<()> {
    let row = int(number, "trial number")?;
    tx.prepare_cached(
        "INSERT INTO intermediate (study_id, trial, step, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (study_id, trial, step) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![study, row, int(step, "step")?, value])?;
    tx.prepare_cached("UPDATE trials SET heartbeat = ?3 WHERE study_id = ?1 AND number = ?2")?.execute(params![
        study,
        row,
        now()
    ])?;
    Ok(())
}

/// Fails unless `finish` ends a trial (complete, pruned or failed).
fn require_final(number: u64, finish: &Finish) -> Result<()> {
    if finish.state.is_finished() {
        Ok(())
    } else {
        Err(SearchError::Trial { number, problem: format!("cannot finish as {}", finish.state.name()) })
    }
}

/// Writes `finish` into trial `number` and drops its lease; `only_owner` restricts the write to
/// the running trial leased to that worker. Returns whether a row was written.
fn write_finish(tx: &Transaction, study: i64, number: u64, finish: &Finish, only_owner: Option<&str>) -> Step<bool> {
    let sql = match only_owner {
        None => {
            "UPDATE trials SET state = ?3, objective_values = ?4, error = ?5, finished = ?6, lease_owner = NULL,
             lease_expires = NULL WHERE study_id = ?1 AND number = ?2"
        }
        Some(_) => {
            "UPDATE trials SET state = ?3, objective_values = ?4, error = ?5, finished = ?6, lease_owner = NULL,
             lease_expires = NULL WHERE study_id = ?1 AND number = ?2 AND state = 'running' AND lease_owner = ?7"
        }
    };
    let values = finish.values.as_deref().map(encode);
    let row = int(number, "trial number")?;
    let state = finish.state.name();
    let changed = match only_owner {
        None => tx.execute(sql, params![study, row, state, values, finish.error, now()])?,
        Some(owner) => tx.execute(sql, params![study, row, state, values, finish.error, now(), owner])?,
    };
    Ok(changed == 1)
}

impl Storage for SqliteStorage {
    fn location(&self) -> PathBuf {
        self.path.clone()
    }

    fn init_study(&self, record: &StudyRecord) -> Result<StudyRecord> {
        let text = serde_json::to_string(record).map_err(|e| SearchError::storage("init study", e))?;
        self.write("init study", |tx| {
            tx.execute(
                "UPDATE studies SET record = ?2 WHERE id = ?1 AND record IS NULL",
                params![self.study_id, text],
            )?;
            let stored: String =
                tx.query_row("SELECT record FROM studies WHERE id = ?1", [self.study_id], |r| r.get(0))?;
            parse_record(&stored)
        })
    }

    fn study(&self) -> Result<Option<StudyRecord>> {
        self.read("read study", |tx| {
            let stored: Option<String> =
                tx.query_row("SELECT record FROM studies WHERE id = ?1", [self.study_id], |r| r.get(0))?;
            stored.map(|s| parse_record(&s)).transpose()
        })
    }

    fn create_trial(&self, params: &[f64], worker: &str, attrs: &Map<String, Value>) -> Result<u64> {
        self.write("create trial", |tx| {
            let number = next_number(tx, self.study_id)?;
            insert_trial(tx, self.study_id, number, params, worker, attrs, None)?;
            Ok(number)
        })
    }

    fn create_leased(
        &self,
        params: &[f64],
        worker: &str,
        attrs: &Map<String, Value>,
        lease: Duration,
        limit: Option<u64>,
    ) -> Result<Option<u64>> {
        self.write("create leased trial", |tx| {
            let number = next_number(tx, self.study_id)?;
            if limit.is_some_and(|l| number >= l) {
                return Ok(None);
            }
            insert_trial(tx, self.study_id, number, params, worker, attrs, Some((worker, expiry(now(), lease))))?;
            Ok(Some(number))
        })
    }

    fn renew(&self, number: u64, worker: &str, lease: Duration) -> Result<bool> {
        self.write("renew lease", |tx| {
            let t = now();
            let changed = tx
                .prepare_cached(
                    "UPDATE trials SET lease_expires = ?4, heartbeat = ?5
                 WHERE study_id = ?1 AND number = ?2 AND state = 'running' AND lease_owner = ?3",
                )?
                .execute(params![self.study_id, int(number, "trial number")?, worker, expiry(t, lease), t])?;
            Ok(changed == 1)
        })
    }

    fn expire_leases(&self, max_retries: u32) -> Result<Vec<u64>> {
        self.write("expire leases", |tx| {
            let t = now();
            // `state = 'running'` literally, so SQLite reads the partial index trials_lease_expiry.
            let expired: Vec<(u64, String, u32)> = tx
                .prepare_cached(
                    "SELECT number, lease_owner, retries FROM trials
                     WHERE study_id = ?1 AND state = 'running' AND lease_expires < ?2 ORDER BY number",
                )?
                .query_map(params![self.study_id, t], |r| Ok((get_u64(r, 0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (number, owner, retries) in &expired {
                let row = int(*number, "trial number")?;
                if *retries >= max_retries {
                    tx.prepare_cached(
                        "UPDATE trials SET state = 'failed', error = ?3, finished = ?4, lease_owner = NULL,
                         lease_expires = NULL WHERE study_id = ?1 AND number = ?2",
                    )?
                    .execute(params![self.study_id, row, lease_failure(owner, *retries), t])?;
                } else {
                    tx.prepare_cached(
                        "UPDATE trials SET state = 'queued', retries = retries + 1, lease_owner = NULL,
                         lease_expires = NULL WHERE study_id = ?1 AND number = ?2",
                    )?
                    .execute(params![self.study_id, row])?;
                    // The next worker starts the trial over: the dead one's reports would mix
                    // two runs' curves under one trial (and mislead the pruner).
                    tx.prepare_cached("DELETE FROM intermediate WHERE study_id = ?1 AND trial = ?2")?
                        .execute(params![self.study_id, row])?;
                }
            }
            Ok(expired.into_iter().map(|(n, _, _)| n).collect())
        })
    }

    fn claim_queued(&self, worker: &str, lease: Duration) -> Result<Option<Trial>> {
        self.write("claim queued trial", |tx| {
            // `state = 'queued'` literally, so SQLite reads the partial index trials_queued.
            let number: Option<i64> = tx
                .prepare_cached(
                    "SELECT number FROM trials WHERE study_id = ?1 AND state = 'queued' ORDER BY number LIMIT 1",
                )?
                .query_row([self.study_id], |r| r.get(0))
                .optional()?;
            let Some(number) = number else { return Ok(None) };
            let t = now();
            tx.prepare_cached(
                "UPDATE trials SET state = 'running', worker = ?3, started = ?4, heartbeat = ?4, lease_owner = ?3,
                 lease_expires = ?5 WHERE study_id = ?1 AND number = ?2",
            )?
            .execute(params![self.study_id, number, worker, t, expiry(t, lease)])?;
            Ok(read_trials(tx, self.study_id, number..=number)?.pop())
        })
    }

    fn finish_leased(&self, number: u64, worker: &str, finish: &Finish) -> Result<bool> {
        require_final(number, finish)?;
        self.write("finish leased trial", |tx| write_finish(tx, self.study_id, number, finish, Some(worker)))
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.write("report", |tx| {
            require_unfinished(tx, self.study_id, number)?;
            write_value(tx, self.study_id, number, step, value)
        })
    }

    fn report_leased(&self, number: u64, worker: &str, step: u64, value: f64) -> Result<bool> {
        self.write("report to a leased trial", |tx| {
            let owns = tx
                .prepare_cached(
                    "SELECT 1 FROM trials WHERE study_id = ?1 AND number = ?2 AND state = 'running' AND lease_owner = ?3",
                )?
                .query_row(params![self.study_id, int(number, "trial number")?, worker], |_| Ok(()))
                .optional()?
                .is_some();
            if owns {
                write_value(tx, self.study_id, number, step, value)?;
            }
            Ok(owns)
        })
    }

    fn set_attr(&self, number: u64, key: &str, value: &Value) -> Result<()> {
        self.write("set attr", |tx| {
            let row = int(number, "trial number")?;
            require_unfinished(tx, self.study_id, number)?;
            tx.execute(
                "INSERT INTO attrs (study_id, trial, key, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (study_id, trial, key) DO UPDATE SET value = excluded.value",
                params![self.study_id, row, key, value.to_string()],
            )?;
            Ok(())
        })
    }

    fn finish(&self, number: u64, finish: &Finish) -> Result<()> {
        require_final(number, finish)?;
        self.write("finish", |tx| {
            require_unfinished(tx, self.study_id, number)?;
            write_finish(tx, self.study_id, number, finish, None)?;
            Ok(())
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.read("read trials", |tx| read_trials(tx, self.study_id, 0..=i64::MAX))
    }

    fn trials_since(&self, from: u64, open: &[u64]) -> Result<Vec<Trial>> {
        self.read("read trials", |tx| {
            let first = int(from, "trial number")?;
            let mut trials = Vec::new();
            // The open trials are few (one per worker, plus the queued): a key lookup each.
            for &n in open.iter().filter(|&&n| n < from) {
                let n = int(n, "trial number")?;
                trials.extend(read_trials(tx, self.study_id, n..=n)?);
            }
            trials.extend(read_trials(tx, self.study_id, first..=i64::MAX)?);
            trials.sort_by_key(|t| t.number);
            Ok(trials)
        })
    }
}
