//! The [`Storage`] methods of [`PostgresStorage`]: each one transaction (see the module's
//! notes for the locks each takes), with the semantics of `MemoryStorage`.

use std::path::PathBuf;
use std::time::Duration;

use ::postgres::Row;
use ::postgres::types::ToSql;
use serde_json::{Map, Value};

use super::{Access, Fail, PostgresStorage, Step, Tx};
use crate::error::{Result, SearchError};
use crate::storage::memory::lease_failure;
use crate::storage::{Storage, StudyRecord};
use crate::trial::{Finish, Trial, TrialState};

/// The columns of a trial, in the order [`trial_of`] reads them; times as seconds since the
/// Unix epoch. A macro, so that `concat!` can build `'static` statements with it.
macro_rules! trial_columns {
    () => {
        "number, state, params, objective_values, worker, extract(epoch FROM started)::float8, \
         extract(epoch FROM finished)::float8, error, retries"
    };
}

/// The trials of a study numbered `$2` or more or in `$3`, in number order
/// ([`Storage::trials_since`]); both are ranges of the primary key.
const SELECT_TRIALS: &str = concat!(
    "SELECT ",
    trial_columns!(),
    " FROM attune.trials WHERE study_id = $1 AND (number >= $2 OR number = ANY($3)) ORDER BY number"
);

/// Hands a queued trial to a worker with a fresh lease, and returns it.
const CLAIM: &str = concat!(
    "UPDATE attune.trials SET state = 'running', worker = $3, started = clock_timestamp(), lease_owner = $3,
         lease_expires = clock_timestamp() + make_interval(secs => $4::float8)
     WHERE study_id = $1 AND number = $2 AND state = 'queued' RETURNING ",
    trial_columns!()
);

/// `x` as a PostgreSQL `bigint` (which is signed).
fn int(x: u64, what: &str) -> Step<i64> {
    i64::try_from(x).map_err(|_| Fail::Search(SearchError::storage("store", format!("{what} {x} is over 2^63 - 1"))))
}

/// Column `i` of `row` as an unsigned integer.
fn get_u64(row: &Row, i: usize) -> Step<u64> {
    let v: i64 = row.try_get(i)?;
    u64::try_from(v)
        .map_err(|_| SearchError::storage("read trials", format!("a negative number {v} in column {i}")).into())
}

fn trial_of(row: &Row) -> Step<Trial> {
    let number = get_u64(row, 0)?;
    let state: String = row.try_get(1)?;
    let state = TrialState::from_name(&state)
        .ok_or_else(|| SearchError::storage("read trials", format!("trial {number}: unknown state '{state}'")))?;
    let retries: i32 = row.try_get(8)?;
    Ok(Trial {
        number,
        state,
        params: row.try_get(2)?,
        values: row.try_get(3)?,
        intermediate: Vec::new(),
        worker: row.try_get(4)?,
        started: row.try_get(5)?,
        finished: row.try_get(6)?,
        error: row.try_get(7)?,
        attrs: Map::new(),
        retries: u32::try_from(retries).unwrap_or(0),
    })
}

fn parse_json(text: &str, what: impl FnOnce() -> String) -> Step<Value> {
    serde_json::from_str(text).map_err(|e| SearchError::storage("read trials", format!("{}: {e}", what())).into())
}

fn parse_record(text: &str) -> Step<StudyRecord> {
    serde_json::from_str(text)
        .map_err(|e| SearchError::storage("read study", format!("the stored study record: {e}")).into())
}

/// The state of trial `number`, its row locked against a concurrent finish for the rest of
/// the transaction (`FOR SHARE`: reports of one trial do not wait for each other).
fn locked_state(tx: &mut Tx, study: i64, number: u64) -> Step<TrialState> {
    let row = tx.query_opt(
        "SELECT state FROM attune.trials WHERE study_id = $1 AND number = $2 FOR SHARE",
        &[&study, &int(number, "trial number")?],
    )?;
    let Some(row) = row else { return Err(SearchError::Trial { number, problem: "no such trial".into() }.into()) };
    let state: String = row.try_get(0)?;
    TrialState::from_name(&state)
        .ok_or_else(|| SearchError::storage("read trials", format!("trial {number}: unknown state '{state}'")).into())
}

/// Fails unless trial `number` exists and is not finished (queued or running, as in memory).
fn require_unfinished(tx: &mut Tx, study: i64, number: u64) -> Step<()> {
    match locked_state(tx, study, number)? {
        s if s.is_finished() => Err(SearchError::Trial { number, problem: format!("already {}", s.name()) }.into()),
        _ => Ok(()),
    }
}

/// Stores `value` at `step` of trial `number` (replacing an earlier value at that step).
fn write_value(tx: &mut Tx, study: i64, number: u64, step: u64, value: f64) -> Step<()> {
    tx.execute(
        "INSERT INTO attune.intermediate (study_id, number, step, value) VALUES ($1, $2, $3, $4)
         ON CONFLICT (study_id, number, step) DO UPDATE SET value = excluded.value",
        &[&study, &int(number, "trial number")?, &int(step, "step")?, &value],
    )?;
    Ok(())
}

/// Fails for a `Finish` that does not finish (running or queued).
fn check_finish(number: u64, finish: &Finish) -> Result<()> {
    if finish.state.is_finished() {
        Ok(())
    } else {
        Err(SearchError::Trial { number, problem: format!("cannot finish as {}", finish.state.name()) })
    }
}

impl PostgresStorage {
    /// Inserts a running trial with the next number, unless the study holds `limit` trials.
    fn insert_trial(
        &self,
        tx: &mut Tx,
        params: &[f64],
        worker: &str,
        attrs: &Map<String, Value>,
        lease: Option<(&str, f64)>,
        limit: Option<u64>,
    ) -> Step<Option<u64>> {
        let limit = limit.map(|l| int(l, "trial limit")).transpose()?;
        // Locks the study's row until commit: the one point where creators queue.
        let row = tx.query_opt(
            "UPDATE attune.studies SET trial_count = trial_count + 1
             WHERE id = $1 AND ($2::bigint IS NULL OR trial_count < $2) RETURNING trial_count - 1",
            &[&self.study_id, &limit],
        )?;
        let Some(row) = row else { return Ok(None) };
        let number: i64 = row.try_get(0)?;
        let (owner, seconds) = lease.unzip();
        tx.execute(
            "INSERT INTO attune.trials (study_id, number, state, params, worker, started, lease_owner, lease_expires)
             VALUES ($1, $2, 'running', $3, $4, clock_timestamp(), $5,
                     clock_timestamp() + make_interval(secs => $6::float8))",
            &[&self.study_id, &number, &params, &worker, &owner, &seconds],
        )?;
        for (key, value) in attrs {
            tx.execute(
                "INSERT INTO attune.attrs (study_id, number, key, value) VALUES ($1, $2, $3, $4::text::jsonb)",
                &[&self.study_id, &number, key, &value.to_string()],
            )?;
        }
        Ok(Some(number as u64))
    }

    /// Reads the intermediate values and attributes of `trials` (sorted by number) from the
    /// rows of a query on `intermediate` and `attrs`.
    fn fill(trials: &mut [Trial], intermediate: &[Row], attrs: &[Row]) -> Step<()> {
        let index = |trials: &[Trial], number: u64| trials.binary_search_by_key(&number, |t| t.number).ok();
        for r in intermediate {
            if let Some(i) = index(trials, get_u64(r, 0)?) {
                trials[i].intermediate.push((get_u64(r, 1)?, r.try_get(2)?));
            }
        }
        for r in attrs {
            let (number, key, text): (u64, String, String) = (get_u64(r, 0)?, r.try_get(1)?, r.try_get(2)?);
            let value = parse_json(&text, || format!("trial {number}: attribute '{key}'"))?;
            if let Some(i) = index(trials, number) {
                trials[i].attrs.insert(key, value);
            }
        }
        Ok(())
    }
}

impl Storage for PostgresStorage {
    fn location(&self) -> PathBuf {
        PathBuf::from(self.where_())
    }

    fn init_study(&self, record: &StudyRecord) -> Result<StudyRecord> {
        let text = serde_json::to_string(record).map_err(|e| SearchError::storage("init study", e))?;
        self.transaction("init study", Access::Write, |tx| {
            // Only a study without a record takes this one; the row lock makes racing callers
            // agree on the first.
            tx.execute(
                "UPDATE attune.studies SET record = $2::text::jsonb WHERE id = $1 AND record IS NULL",
                &[&self.study_id, &text],
            )?;
            let row = tx.query_opt("SELECT record::text FROM attune.studies WHERE id = $1", &[&self.study_id])?;
            let stored: Option<String> = row.map(|r| r.try_get(0)).transpose()?.flatten();
            match stored {
                Some(stored) => parse_record(&stored),
                None => Err(SearchError::storage("init study", format!("study '{}' was deleted", self.study)).into()),
            }
        })
    }

    fn study(&self) -> Result<Option<StudyRecord>> {
        self.transaction("read study", Access::Snapshot, |tx| {
            let row = tx.query_opt("SELECT record::text FROM attune.studies WHERE id = $1", &[&self.study_id])?;
            let stored: Option<String> = row.map(|r| r.try_get(0)).transpose()?.flatten();
            stored.map(|s| parse_record(&s)).transpose()
        })
    }

    fn create_trial(&self, params: &[f64], worker: &str, attrs: &Map<String, Value>) -> Result<u64> {
        self.transaction("create trial", Access::Write, |tx| {
            self.insert_trial(tx, params, worker, attrs, None, None)?.ok_or_else(|| {
                SearchError::storage("create trial", format!("study '{}' was deleted", self.study)).into()
            })
        })
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.transaction("report", Access::Write, |tx| {
            require_unfinished(tx, self.study_id, number)?;
            write_value(tx, self.study_id, number, step, value)
        })
    }

    fn report_leased(&self, number: u64, worker: &str, step: u64, value: f64) -> Result<bool> {
        self.transaction("report to a leased trial", Access::Write, |tx| {
            // FOR SHARE: the lease cannot be expired between this check and the insert.
            let owns = tx
                .query_opt(
                    "SELECT 1 FROM attune.trials
                     WHERE study_id = $1 AND number = $2 AND state = 'running' AND lease_owner = $3 FOR SHARE",
                    &[&self.study_id, &int(number, "trial number")?, &worker],
                )?
                .is_some();
            if owns {
                write_value(tx, self.study_id, number, step, value)?;
            }
            Ok(owns)
        })
    }

    fn set_attr(&self, number: u64, key: &str, value: &Value) -> Result<()> {
        let text = value.to_string();
        self.transaction("set attr", Access::Write, |tx| {
            require_unfinished(tx, self.study_id, number)?;
            tx.execute(
                "INSERT INTO attune.attrs (study_id, number, key, value) VALUES ($1, $2, $3, $4::text::jsonb)
                 ON CONFLICT (study_id, number, key) DO UPDATE SET value = excluded.value",
                &[&self.study_id, &int(number, "trial number")?, &key, &text],
            )?;
            Ok(())
        })
    }

    fn finish(&self, number: u64, finish: &Finish) -> Result<()> {
        check_finish(number, finish)?;
        self.transaction("finish", Access::Write, |tx| {
            require_unfinished(tx, self.study_id, number)?;
            tx.execute(
                "UPDATE attune.trials SET state = $3, objective_values = $4, error = $5, finished = clock_timestamp(),
                     lease_owner = NULL, lease_expires = NULL
                 WHERE study_id = $1 AND number = $2",
                &[&self.study_id, &int(number, "trial number")?, &finish.state.name(), &finish.values, &finish.error],
            )?;
            Ok(())
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.trials_since(0, &[])
    }

    fn trials_since(&self, from: u64, open: &[u64]) -> Result<Vec<Trial>> {
        self.transaction("read trials", Access::Snapshot, |tx| {
            let from = int(from, "trial number")?;
            let open = open.iter().map(|&n| int(n, "trial number")).collect::<Step<Vec<i64>>>()?;
            let keys: [&(dyn ToSql + Sync); 3] = [&self.study_id, &from, &open];
            let rows = tx.query(SELECT_TRIALS, &keys)?;
            let mut trials = rows.iter().map(trial_of).collect::<Step<Vec<Trial>>>()?;
            let intermediate = tx.query(
                "SELECT number, step, value FROM attune.intermediate
                 WHERE study_id = $1 AND (number >= $2 OR number = ANY($3)) ORDER BY number, step",
                &keys,
            )?;
            let attrs = tx.query(
                "SELECT number, key, value::text FROM attune.attrs
                 WHERE study_id = $1 AND (number >= $2 OR number = ANY($3))",
                &keys,
            )?;
            PostgresStorage::fill(&mut trials, &intermediate, &attrs)?;
            Ok(trials)
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
        self.transaction("create leased trial", Access::Write, |tx| {
            self.insert_trial(tx, params, worker, attrs, Some((worker, lease.as_secs_f64())), limit)
        })
    }

    fn renew(&self, number: u64, worker: &str, lease: Duration) -> Result<bool> {
        self.transaction("renew lease", Access::Write, |tx| {
            let renewed = tx.execute(
                "UPDATE attune.trials SET lease_expires = clock_timestamp() + make_interval(secs => $4::float8)
                 WHERE study_id = $1 AND number = $2 AND state = 'running' AND lease_owner = $3",
                &[&self.study_id, &int(number, "trial number")?, &worker, &lease.as_secs_f64()],
            )?;
            Ok(renewed == 1)
        })
    }

    fn expire_leases(&self, max_retries: u32) -> Result<Vec<u64>> {
        let max_retries = i32::try_from(max_retries).unwrap_or(i32::MAX);
        self.transaction("expire leases", Access::Write, |tx| {
            // SKIP LOCKED: a trial a worker is reporting to or finishing right now is left for
            // the next sweep rather than waited for.
            let expired = tx.query(
                "SELECT number, lease_owner, retries FROM attune.trials
                 WHERE study_id = $1 AND state = 'running' AND lease_expires IS NOT NULL
                     AND lease_expires < clock_timestamp()
                 ORDER BY number FOR UPDATE SKIP LOCKED",
                &[&self.study_id],
            )?;
            let mut touched = Vec::with_capacity(expired.len());
            for row in &expired {
                let (number, owner, retries): (i64, String, i32) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                if retries >= max_retries {
                    let error = lease_failure(&owner, u32::try_from(retries).unwrap_or(0));
                    tx.execute(
                        "UPDATE attune.trials SET state = 'failed', error = $3, finished = clock_timestamp(),
                             lease_owner = NULL, lease_expires = NULL
                         WHERE study_id = $1 AND number = $2",
                        &[&self.study_id, &number, &error],
                    )?;
                } else {
                    tx.execute(
                        "UPDATE attune.trials SET state = 'queued', retries = retries + 1,
                             lease_owner = NULL, lease_expires = NULL
                         WHERE study_id = $1 AND number = $2",
                        &[&self.study_id, &number],
                    )?;
                    tx.execute(
                        "DELETE FROM attune.intermediate WHERE study_id = $1 AND number = $2",
                        &[&self.study_id, &number],
                    )?;
                }
                touched.push(number as u64);
            }
            Ok(touched)
        })
    }

    fn claim_queued(&self, worker: &str, lease: Duration) -> Result<Option<Trial>> {
        self.transaction("claim queued trial", Access::Write, |tx| {
            // SKIP LOCKED: a trial another worker is claiming is passed over, never claimed
            // twice and never waited for.
            let Some(row) = tx.query_opt(
                "SELECT number FROM attune.trials WHERE study_id = $1 AND state = 'queued'
                 ORDER BY number LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&self.study_id],
            )?
            else {
                return Ok(None);
            };
            let number: i64 = row.try_get(0)?;
            let row = tx.query_opt(CLAIM, &[&self.study_id, &number, &worker, &lease.as_secs_f64()])?;
            let Some(row) = row else { return Ok(None) };
            let mut trial = [trial_of(&row)?];
            let intermediate = tx.query(
                "SELECT number, step, value FROM attune.intermediate WHERE study_id = $1 AND number = $2 ORDER BY step",
                &[&self.study_id, &number],
            )?;
            let attrs = tx.query(
                "SELECT number, key, value::text FROM attune.attrs WHERE study_id = $1 AND number = $2",
                &[&self.study_id, &number],
            )?;
            PostgresStorage::fill(&mut trial, &intermediate, &attrs)?;
            let [trial] = trial;
            Ok(Some(trial))
        })
    }

    fn finish_leased(&self, number: u64, worker: &str, finish: &Finish) -> Result<bool> {
        check_finish(number, finish)?;
        self.transaction("finish leased trial", Access::Write, |tx| {
            // One conditional UPDATE: the owner check and the write see the same row version.
            let finished = tx.execute(
                "UPDATE attune.trials SET state = $4, objective_values = $5, error = $6, finished = clock_timestamp(),
                     lease_owner = NULL, lease_expires = NULL
                 WHERE study_id = $1 AND number = $2 AND state = 'running' AND lease_owner = $3",
                &[
                    &self.study_id,
                    &int(number, "trial number")?,
                    &worker,
                    &finish.state.name(),
                    &finish.values,
                    &finish.error,
                ],
            )?;
            Ok(finished == 1)
        })
    }
}
