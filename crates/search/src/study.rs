//! A study: ask for a trial, report intermediate values (and hear whether to stop), tell how
//! it ended, and summarise. The study holds no state of its own beyond its settings: every
//! decision reads the storage, so any number of `Study` values over one storage cooperate.
//! What it keeps is a copy of the trials it has read: finished trials never change, so each
//! read fetches only the trials that were open or new last time (`Storage::trials_since`), and
//! an ask costs what changed, not the whole study.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, SearchError};
use crate::pareto;
use crate::pruner::{PruneContext, Pruner};
use crate::sampler::{SampleContext, Sampler};
use crate::space::{Direction, Space};
use crate::storage::{Storage, StudyRecord};
use crate::trial::{Finish, Trial, TrialState};

/// A study over one storage.
pub struct Study {
    storage: Arc<dyn Storage>,
    record: StudyRecord,
    sampler: Box<dyn Sampler>,
    pruner: Option<Box<dyn Pruner>>,
    intermediate: Direction,
    /// The trials as last read, in number order.
    seen: Mutex<Vec<Trial>>,
}

/// A trial handed out by [`Study::ask`].
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    /// Its number.
    pub number: u64,
    /// Internal values.
    pub params: Vec<f64>,
    /// `{name: value}` as the objective sees them.
    pub external: Map<String, Value>,
    /// The trial's attributes when it was created or claimed (a claimed PBT segment's member,
    /// generation and starting checkpoint).
    pub attrs: Map<String, Value>,
}

/// A study's result: the figures of `summary.json` (docs/search.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The best first-objective value of a complete trial.
    pub best_value: Option<f64>,
    /// That trial's parameters.
    pub best_params: Option<Map<String, Value>>,
    /// That trial's number.
    pub best_trial: Option<u64>,
    /// Trials complete.
    pub n_complete: usize,
    /// Trials pruned.
    pub n_pruned: usize,
    /// Trials failed.
    pub n_failed: usize,
    /// Trials still running.
    pub n_running: usize,
    /// The complete trials no other complete trial dominates (multi-objective studies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pareto_front: Option<Vec<ParetoPoint>>,
}

/// One trial of the Pareto front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParetoPoint {
    /// The trial's number.
    pub number: u64,
    /// Its values.
    pub values: Vec<f64>,
    /// Its parameters.
    pub params: Map<String, Value>,
}

impl Study {
    /// Opens the study in `storage`, creating it from `record` when the storage is empty. An
    /// existing study must have the same space and directions (anything else would mix
    /// incomparable trials); its stored sampler, pruner and seed are kept.
    pub fn open(
        storage: Arc<dyn Storage>,
        record: StudyRecord,
        sampler: Box<dyn Sampler>,
        pruner: Option<Box<dyn Pruner>>,
    ) -> Result<Study> {
        let stored = storage.init_study(&record)?;
        if stored.space != record.space {
            return Err(SearchError::StudyMismatch {
                path: storage.location(),
                what: format!(
                    "its stored space differs from the one given ({})",
                    describe_difference(&stored.space, &record.space)
                ),
                fix: "resume with the study's own space (its study.json), or start a new study in another directory"
                    .into(),
            });
        }
        let intermediate = stored.space.directions[0];
        Ok(Study { storage, record: stored, sampler, pruner, intermediate, seen: Mutex::new(Vec::new()) })
    }

    /// Sets which way intermediate values improve (by default the first objective's): a search
    /// for the fastest run to a target accuracy minimises time but reports accuracy.
    pub fn set_intermediate_direction(&mut self, direction: Direction) {
        self.intermediate = direction;
    }

    /// The stored settings.
    pub fn record(&self) -> &StudyRecord {
        &self.record
    }

    /// The space.
    pub fn space(&self) -> &Space {
        &self.record.space
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Every trial, in number order.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        self.with_trials(|trials| Ok(trials.to_vec()))
    }

    /// Calls `f` with every trial, brought up to date by reading only the trials that were
    /// open (queued or running) or not yet there at the last read.
    fn with_trials<T>(&self, f: impl FnOnce(&[Trial]) -> Result<T>) -> Result<T> {
        // A panic elsewhere cannot leave the copy half-merged: merging is the only writer.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let open: Vec<u64> = seen.iter().filter(|t| !t.state.is_finished()).map(|t| t.number).collect();
        let from = seen.last().map_or(0, |t| t.number + 1);
        for t in self.storage.trials_since(from, &open)? {
            match seen.binary_search_by_key(&t.number, |s| s.number) {
                Ok(i) => seen[i] = t,
                Err(i) => seen.insert(i, t),
            }
        }
        f(&seen)
    }

    /// How many new points the sampler has left (`None`: unlimited).
    pub fn remaining(&self) -> Result<Option<u64>> {
        self.with_trials(|trials| Ok(self.sampler.remaining(&self.context(trials))))
    }

    /// The point the sampler gives as trial `number` of a fresh study whose trials `0..number`
    /// were asked in order and are still running: a pure function of the seed and `number`,
    /// whatever order processes ask in (PBT's first generation, where member `m` starts at
    /// `sample_initial(m)` in one process or many). Samplers that look at the earlier trials
    /// (grid, the genetic algorithm) see those points, so members start at distinct points.
    pub fn sample_initial(&self, number: u64) -> Result<Vec<f64>> {
        let mut earlier: Vec<Trial> = Vec::new();
        loop {
            let n = earlier.len() as u64;
            let ctx = SampleContext { space: &self.record.space, trials: &earlier, seed: self.record.seed, number: n };
            let point = self.space().snap(&self.sampler.sample(&ctx)?);
            if n == number {
                return Ok(point);
            }
            earlier.push(Trial::new(n, TrialState::Running, point));
        }
    }

    fn context<'a>(&'a self, trials: &'a [Trial]) -> SampleContext<'a> {
        SampleContext { space: &self.record.space, trials, seed: self.record.seed, number: trials.len() as u64 }
    }

    /// Samples a point and creates a running trial there. Threads of one process asking at
    /// once take turns, so each samples knowing the others' trials.
    pub fn ask(&self, worker: &str) -> Result<Asked> {
        self.with_trials(|trials| {
            let params = self.space().snap(&self.sampler.sample(&self.context(trials))?);
            let number = self.storage.create_trial(&params, worker, &Map::new())?;
            Ok(self.asked(number, params, Map::new()))
        })
    }

    /// Creates a running trial at given internal values (PBT's explored members, a user's
    /// starting point).
    pub fn enqueue(&self, params: Vec<f64>, worker: &str, attrs: &Map<String, Value>) -> Result<Asked> {
        self.check_point(&params)?;
        let number = self.storage.create_trial(&params, worker, attrs)?;
        Ok(self.asked(number, params, attrs.clone()))
    }

    /// [`Study::enqueue`] for a shared study: the trial is leased to `worker`, and it is
    /// created only while the study holds fewer than `limit` trials (else `None`).
    pub fn enqueue_leased(
        &self,
        params: Vec<f64>,
        worker: &str,
        attrs: &Map<String, Value>,
        lease: Duration,
        limit: Option<u64>,
    ) -> Result<Option<Asked>> {
        self.check_point(&params)?;
        let number = self.storage.create_leased(&params, worker, attrs, lease, limit)?;
        Ok(number.map(|n| self.asked(n, params, attrs.clone())))
    }

    /// Samples a point and creates a running trial there leased to `worker` (shared studies),
    /// unless the study already holds `limit` trials: then `None`. The point is sampled for
    /// the number the trial gets: when another worker created a trial in between, it samples
    /// again, so workers never run one point twice and the study samples exactly as a serial
    /// one would.
    pub fn ask_leased(&self, worker: &str, lease: Duration, limit: Option<u64>) -> Result<Option<Asked>> {
        loop {
            let created = self.with_trials(|trials| {
                let context = self.context(trials);
                if limit.is_some_and(|l| context.number >= l) || self.sampler.remaining(&context) == Some(0) {
                    return Ok(Some(None));
                }
                let params = self.space().snap(&self.sampler.sample(&context)?);
                // Only as trial `context.number`: the limit is one past it.
                let next = Some(context.number + 1);
                Ok(self.storage.create_leased(&params, worker, &Map::new(), lease, next)?.map(|number| {
                    debug_assert_eq!(number, context.number);
                    Some(self.asked(number, params, Map::new()))
                }))
            })?;
            if let Some(asked) = created {
                return Ok(asked);
            }
        }
    }

    /// Claims a re-queued trial for `worker` (its worker's lease expired), if there is one.
    pub fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Asked>> {
        Ok(self.storage.claim_queued(worker, lease)?.map(|t| self.asked(t.number, t.params, t.attrs)))
    }

    fn asked(&self, number: u64, params: Vec<f64>, attrs: Map<String, Value>) -> Asked {
        Asked { number, external: self.space().external(&params), params, attrs }
    }

    /// Fails unless `params` is a point of the space.
    fn check_point(&self, params: &[f64]) -> Result<()> {
        if params.len() != self.space().len()
            || params.iter().zip(&self.space().params).any(|(&x, p)| !p.dist.contains(x))
        {
            return Err(SearchError::config(
                "study",
                format!("{params:?} is not a point of the space"),
                "give one valid value per parameter",
            ));
        }
        Ok(())
    }

    /// Records an intermediate value and says whether the trial should stop.
    pub fn report(&self, number: u64, step: u64, value: f64) -> Result<bool> {
        finite_report(number, step, value)?;
        self.storage.report(number, step, value)?;
        self.should_prune(number, step)
    }

    /// [`Study::report`] for a leased trial: `None` (nothing stored) when `worker` no longer
    /// holds its lease; the worker should stop the trial, as someone else runs it now.
    pub fn report_leased(&self, number: u64, worker: &str, step: u64, value: f64) -> Result<Option<bool>> {
        finite_report(number, step, value)?;
        if !self.storage.report_leased(number, worker, step, value)? {
            return Ok(None);
        }
        self.should_prune(number, step).map(Some)
    }

    fn should_prune(&self, number: u64, step: u64) -> Result<bool> {
        let Some(pruner) = &self.pruner else { return Ok(false) };
        self.with_trials(|trials| {
            Ok(pruner.should_prune(&PruneContext { direction: self.intermediate, trials, number, step }))
        })
    }

    /// Finishes a trial. A complete trial needs one finite value per direction; anything else
    /// is stored as failed with the reason, so a bad objective never loses the study.
    pub fn tell(&self, number: u64, finish: Finish) -> Result<()> {
        let finish = self.checked(number, finish)?;
        self.storage.finish(number, &finish)
    }

    /// [`Study::tell`] for a leased trial: `false` (nothing stored) when `worker` no longer
    /// holds its lease, because the trial was re-queued and someone else runs it now.
    pub fn tell_leased(&self, number: u64, worker: &str, finish: Finish) -> Result<bool> {
        let finish = self.checked(number, finish)?;
        self.storage.finish_leased(number, worker, &finish)
    }

    /// The finish a study stores: values checked against the directions.
    fn checked(&self, number: u64, finish: Finish) -> Result<Finish> {
        let n = self.record.space.directions.len();
        let finish = match (&finish.state, &finish.values) {
            (TrialState::Running | TrialState::Queued, _) => {
                let problem = format!("cannot finish as {}", finish.state.name());
                return Err(SearchError::Trial { number, problem });
            }
            (TrialState::Complete, Some(v)) if v.len() != n => {
                Finish::failed(format!("the objective gave {} values for {n} objectives", v.len()))
            }
            (TrialState::Complete, Some(v)) if v.iter().any(|x| !x.is_finite()) => {
                Finish::failed(format!("the objective gave a non-finite value {v:?}"))
            }
            (TrialState::Complete, None) => Finish::failed("the objective gave no value"),
            _ => finish,
        };
        Ok(finish)
    }

    /// The study's figures.
    pub fn summary(&self) -> Result<Summary> {
        self.with_trials(|trials| Ok(summarize(&self.record.space, trials)))
    }
}

/// The figures of a list of trials (see [`Summary`]).
pub fn summarize(space: &Space, trials: &[Trial]) -> Summary {
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    let complete: Vec<&Trial> =
        trials.iter().filter(|t| t.state == TrialState::Complete && t.values.is_some()).collect();
    let d0 = space.directions[0];
    let best = complete.iter().min_by(|a, b| a.loss(d0).partial_cmp(&b.loss(d0)).unwrap_or(std::cmp::Ordering::Equal));
    let pareto_front = (space.directions.len() > 1).then(|| {
        let points: Vec<Vec<f64>> = complete.iter().map(|t| t.values.clone().unwrap_or_default()).collect();
        pareto::front(&points, &space.directions)
            .into_iter()
            .map(|i| ParetoPoint {
                number: complete[i].number,
                values: points[i].clone(),
                params: space.external(&complete[i].params),
            })
            .collect()
    });
    Summary {
        best_value: best.and_then(|t| t.values.as_ref().map(|v| v[0])),
        best_params: best.map(|t| space.external(&t.params)),
        best_trial: best.map(|t| t.number),
        n_complete: count(TrialState::Complete),
        n_pruned: count(TrialState::Pruned),
        n_failed: count(TrialState::Failed),
        n_running: count(TrialState::Running),
        pareto_front,
    }
}

/// An intermediate value must be finite: pruners compare them.
fn finite_report(number: u64, step: u64, value: f64) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    Err(SearchError::Trial { number, problem: format!("intermediate value {value} at step {step} is not finite") })
}

fn describe_difference(stored: &Space, given: &Space) -> String {
    if stored.directions != given.directions {
        return format!("directions {:?} stored, {:?} given", stored.directions, given.directions);
    }
    for p in &given.params {
        match stored.params.iter().find(|s| s.name == p.name) {
            None => return format!("parameter '{}' is not in the stored space", p.name),
            Some(s) if s.dist != p.dist => {
                return format!("parameter '{}' is {:?} in the stored space, {:?} in the file", p.name, s.dist, p.dist);
            }
            _ => {}
        }
    }
    match stored.params.iter().find(|s| !given.params.iter().any(|p| p.name == s.name)) {
        Some(s) => format!("stored parameter '{}' is missing from the file", s.name),
        None => "the parameters differ".into(),
    }
}
