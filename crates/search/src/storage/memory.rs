//! A study held in memory: for tests, benchmarks and single-process studies that need no disk.

use std::path::PathBuf;
use std::sync::Mutex;

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
        self.with("create trial", |i| {
            let number = i.trials.len() as u64;
            i.trials.push(Trial {
                number,
                state: TrialState::Running,
                params: params.to_vec(),
                values: None,
                intermediate: Vec::new(),
                worker: worker.to_string(),
                started: now(),
                finished: None,
                error: None,
                attrs: attrs.clone(),
            });
            Ok(number)
        })
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.with("report", |i| {
            let t = running(i, number)?;
            match t.intermediate.iter_mut().find(|(s, _)| *s == step) {
                Some(slot) => slot.1 = value,
                None => {
                    t.intermediate.push((step, value));
                    t.intermediate.sort_by_key(|&(s, _)| s);
                }
            }
            Ok(())
        })
    }

    fn set_attr(&self, number: u64, key: &str, value: &Value) -> Result<()> {
        self.with("set attr", |i| {
            let t = i
                .trials
                .get_mut(number as usize)
                .ok_or(SearchError::Trial { number, problem: "no such trial".into() })?;
            t.attrs.insert(key.to_string(), value.clone());
            Ok(())
        })
    }

    fn finish(&self, number: u64, finish: &Finish) -> Result<()> {
        self.with("finish", |i| {
            let t = running(i, number)?;
            t.state = finish.state;
            t.values = finish.values.clone();
            t.error = finish.error.clone();
            t.finished = Some(now());
            Ok(())
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.with("read trials", |i| Ok(i.trials.clone()))
    }
}
