//! Rows to trials and back: exact encodings of floats, and the errors of a transaction.

use std::ops::RangeInclusive;

use rusqlite::{Transaction, params};
use serde_json::Map;

use crate::error::SearchError;
use crate::storage::StudyRecord;
use crate::trial::{Trial, TrialState};

/// An error inside a transaction: SQLite's (mapped with the operation and the path at the
/// end) or one of ours.
pub(super) enum Fail {
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

/// The result of a step inside a transaction.
pub(super) type Step<T> = std::result::Result<T, Fail>;

/// `x` as an SQLite integer (which is signed).
pub(super) fn int(x: u64, what: &str) -> Step<i64> {
    i64::try_from(x).map_err(|_| Fail::Search(SearchError::storage("store", format!("{what} {x} is over 2^63 - 1"))))
}

/// Column `i` of `row` as an unsigned integer.
pub(super) fn get_u64(row: &rusqlite::Row, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

/// `xs` as little-endian bytes: exact, unlike any decimal text.
pub(super) fn encode(xs: &[f64]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: &[u8], number: u64, column: &str) -> Step<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Fail::Search(SearchError::storage(
            "read trials",
            format!("trial {number}: {column} holds {} bytes, not a list of 8-byte floats", bytes.len()),
        )));
    }
    Ok(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect())
}

pub(super) fn parse_record(text: &str) -> Step<StudyRecord> {
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
    retries: u32,
}

impl TrialRow {
    fn into_trial(self) -> Step<Trial> {
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
            retries: self.retries,
        })
    }
}

/// The trials of study `study` numbered in `numbers`, in number order, with their
/// intermediate values and attributes. Every query is a range of the tables' primary keys.
pub(super) fn read_trials(tx: &Transaction, study: i64, numbers: RangeInclusive<i64>) -> Step<Vec<Trial>> {
    let (first, last) = (*numbers.start(), *numbers.end());
    let mut stmt = tx.prepare_cached(
        "SELECT number, state, params, objective_values, worker, started, finished, error, retries FROM trials
         WHERE study_id = ?1 AND number BETWEEN ?2 AND ?3 ORDER BY number",
    )?;
    let rows = stmt
        .query_map(params![study, first, last], |r| {
            Ok(TrialRow {
                number: get_u64(r, 0)?,
                state: r.get(1)?,
                params: r.get(2)?,
                values: r.get(3)?,
                worker: r.get(4)?,
                started: r.get(5)?,
                finished: r.get(6)?,
                error: r.get(7)?,
                retries: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<TrialRow>>>()?;
    let mut trials = rows.into_iter().map(TrialRow::into_trial).collect::<Step<Vec<Trial>>>()?;
    let index = |trials: &[Trial], number: u64| trials.binary_search_by_key(&number, |t| t.number).ok();

    let mut stmt = tx.prepare_cached(
        "SELECT trial, step, value FROM intermediate WHERE study_id = ?1 AND trial BETWEEN ?2 AND ?3
         ORDER BY trial, step",
    )?;
    let mut rows = stmt.query(params![study, first, last])?;
    while let Some(r) = rows.next()? {
        if let Some(i) = index(&trials, get_u64(r, 0)?) {
            trials[i].intermediate.push((get_u64(r, 1)?, r.get(2)?));
        }
    }
    let mut stmt =
        tx.prepare_cached("SELECT trial, key, value FROM attrs WHERE study_id = ?1 AND trial BETWEEN ?2 AND ?3")?;
    let mut rows = stmt.query(params![study, first, last])?;
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
