//! A study held in memory: for tests, benchmarks and single-process studies that need no disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Storage, StudyRecord};
use crate::error::{Result, SearchError};
use crate::trial::{Finish, Trial, TrialState, now};

/// A study in memory, shared between threads.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    record: Option<StudyRecord>,
    trials: Vec<Trial>,
    /// Lease owner and expiry (seconds since the epoch) of each leased running trial.
    leases: HashMap<u64, (String, f64)>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn with<T>(&self, op: &str, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        let mut guard =
            self.inner.lock().map_err(|_| SearchError::storage(op, "a thread panicked while holding the study"))?;
        f(&mut guard)
    }
}

fn running(inner: &mut Inner, number: u64) -> Result<&mut Trial> {
    let trial =
        inner.trials.get_mut(number as usize).ok_or(SearchError::Trial { number, problem: "no such trial".into() })?;
    if trial.state.is_finished() {
        return Err(SearchError::Trial { number, problem: format!("already {}", trial.state.name()) });
    }
    Ok(trial)
}

impl Storage for MemoryStorage {
    fn location(&self) -> PathBuf {
        PathBuf::from(":memory:")
    }

    fn init_study(&self, record: &StudyRecord) -> Result<StudyRecord> {
        self.with("init study", |i| Ok(i.record.get_or_insert_with(|| record.clone()).clone()))
    }

    fn study(&self) -> Result<Option<StudyRecord>> {
        self.with("read study", |i| Ok(i.record.clone()))
    }

    fn create_trial(&self, params: &[f64], worker: &str, attrs: &Map<String, Value>) -> Result<u64> {
        self.with("create trial", |i| Ok(push_trial(i, params, worker, attrs)))
    }

    fn create_leased(
        &self,
        params: &[f64],
        worker: &str,
        attrs: &Map<String, Value>,
        lease: Duration,
        limit: Option<u64>,
    ) -> Result<Option<u64>> {
        self.with("create leased trial", |i| {
            if limit.is_some_and(|l| i.trials.len() as u64 >= l) {
                return Ok(None);
            }
            let number = push_trial(i, params, worker, attrs);
            i.leases.insert(number, (worker.to_string(), now() + lease.as_secs_f64()));
            Ok(Some(number))
        })
    }

    fn renew(&self, number: u64, worker: &str, lease: Duration) -> Result<bool> {
        self.with("renew lease", |i| {
            let running = i.trials.get(number as usize).is_some_and(|t| t.state == TrialState::Running);
            match i.leases.get_mut(&number) {
                Some((owner, expires)) if running && owner == worker => {
                    *expires = now() + lease.as_secs_f64();
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn expire_leases(&self, max_retries: u32) -> Result<Vec<u64>> {
        self.with("expire leases", |i| {
            let t_now = now();
            let expired: Vec<(u64, String)> =
                i.leases.iter().filter(|(_, (_, e))| *e < t_now).map(|(&n, (w, _))| (n, w.clone())).collect();
            let mut touched = Vec::new();
            for (n, owner) in expired {
                i.leases.remove(&n);
                let Some(t) = i.trials.get_mut(n as usize) else { continue };
                if t.state != TrialState::Running {
                    continue;
                }
                if t.retries >= max_retries {
                    t.state = TrialState::Failed;
                    t.error = Some(lease_failure(&owner, t.retries));
                    t.finished = Some(t_now);
                } else {
                    t.state = TrialState::Queued;
                    t.retries += 1;
                    t.intermediate.clear();
                }
                touched.push(n);
            }
            touched.sort_unstable();
            Ok(touched)
        })
    }

    fn claim_queued(&self, worker: &str, lease: Duration) -> Result<Option<Trial>> {
        self.with("claim queued trial", |i| {
            let Some(t) = i.trials.iter_mut().find(|t| t.state == TrialState::Queued) else { return Ok(None) };
            t.state = TrialState::Running;
            t.worker = worker.to_string();
            t.started = now();
            let claimed = t.clone();
            i.leases.insert(claimed.number, (worker.to_string(), now() + lease.as_secs_f64()));
            Ok(Some(claimed))
        })
    }

    fn finish_leased(&self, number: u64, worker: &str, finish: &Finish) -> Result<bool> {
        self.with("finish leased trial", |i| {
            let owns = i.leases.get(&number).is_some_and(|(o, _)| o == worker)
                && i.trials.get(number as usize).is_some_and(|t| t.state == TrialState::Running);
            if !owns {
                return Ok(false);
            }
            i.leases.remove(&number);
            finish_trial(i, number, finish)?;
            Ok(true)
        })
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.with("report", |i| record_value(i, number, step, value))
    }

    fn report_leased(&self, number: u64, worker: &str, step: u64, value: f64) -> Result<bool> {
        self.with("report to a leased trial", |i| {
            let owns = i.leases.get(&number).is_some_and(|(o, _)| o == worker)
                && i.trials.get(number as usize).is_some_and(|t| t.state == TrialState::Running);
            if owns {
                record_value(i, number, step, value)?;
            }
            Ok(owns)
        })
    }

    fn set_attr(&self, number: u64, key: &str, value: &Value) -> Result<()> {
        self.with("set attr", |i| {
            let t = i
                .trials
                .get_mut(number as usize)
                .ok_or(SearchError::Trial { number, problem: "no such trial".into() })?;
            if t.state.is_finished() {
                return Err(SearchError::Trial { number, problem: format!("already {}", t.state.name()) });
            }
            t.attrs.insert(key.to_string(), value.clone());
            Ok(())
        })
    }

    fn finish(&self, number: u64, finish: &Finish) -> Result<()> {
        self.with("finish", |i| {
            i.leases.remove(&number);
            finish_trial(i, number, finish)
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.with("read trials", |i| Ok(i.trials.clone()))
    }
}

/// The error of a trial failed for its lease: whose lease lapsed and after how many retries.
pub fn lease_failure(owner: &str, retries: u32) -> String {
    format!("lease expired: worker {owner} stopped renewing it, after {retries} re-queue(s) (the retry limit)")
}

fn push_trial(i: &mut Inner, params: &[f64], worker: &str, attrs: &Map<String, Value>) -> u64 {
    let number = i.trials.len() as u64;
    i.trials.push(Trial {
        worker: worker.to_string(),
        started: now(),
        attrs: attrs.clone(),
        ..Trial::new(number, TrialState::Running, params.to_vec())
    });
    number
}

fn finish_trial(i: &mut Inner, number: u64, finish: &Finish) -> Result<()> {
    let t = running(i, number)?;
    t.state = finish.state;
    t.values = finish.values.clone();
    t.error = finish.error.clone();
    t.finished = Some(now());
    Ok(())
}

/// Stores `value` at `step` of a running trial, replacing an earlier value at that step.
fn record_value(i: &mut Inner, number: u64, step: u64, value: f64) -> Result<()> {
    let t = running(i, number)?;
    match t.intermediate.iter_mut().find(|(s, _)| *s == step) {
        Some(slot) => slot.1 = value,
        None => {
            t.intermediate.push((step, value));
            t.intermediate.sort_by_key(|&(s, _)| s);
        }
    }
    Ok(())
}
