//! A study: ask for a trial, report intermediate values (and hear whether to stop), tell how
//! it ended, and summarise. The study holds no state of its own beyond its settings: every
//! decision reads the storage, so any number of `Study` values over one storage cooperate.

use std::sync::Arc;
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
        Ok(Study { storage, record: stored, sampler, pruner, intermediate })
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

    /// Every trial.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        self.storage.trials()
    }

    /// How many new points the sampler has left (`None`: unlimited).
    pub fn remaining(&self) -> Result<Option<u64>> {
        let trials = self.storage.trials()?;
        Ok(self.sampler.remaining(&self.context(&trials)))
    }

    fn context<'a>(&'a self, trials: &'a [Trial]) -> SampleContext<'a> {
        SampleContext { space: &self.record.space, trials, seed: self.record.seed, number: trials.len() as u64 }
    }

    /// Samples a point and creates a running trial there.
    pub fn ask(&self, worker: &str) -> Result<Asked> {
        let trials = self.storage.trials()?;
        let params = self.space().snap(&self.sampler.sample(&self.context(&trials))?);
        self.enqueue(params, worker, &Map::new())
    }

    /// Creates a running trial at given internal values (PBT's explored members, a user's
    /// starting point).
    pub fn enqueue(&self, params: Vec<f64>, worker: &str, attrs: &Map<String, Value>) -> Result<Asked> {
        if params.len() != self.space().len()
            || params.iter().zip(&self.space().params).any(|(&x, p)| !p.dist.contains(x))
        {
            return Err(SearchError::config(
                "study",
                format!("{params:?} is not a point of the space"),
                "give one valid value per parameter",
            ));
        }
        let number = self.storage.create_trial(&params, worker, attrs)?;
        let external = self.space().external(&params);
        Ok(Asked { number, params, external })
    }

    /// Samples a point and creates a running trial there leased to `worker` (shared studies),
    /// unless the study already holds `limit` trials: then `None`.
    pub fn ask_leased(&self, worker: &str, lease: Duration, limit: Option<u64>) -> Result<Option<Asked>> {
        let trials = self.storage.trials()?;
        if limit.is_some_and(|l| trials.len() as u64 >= l) || self.sampler.remaining(&self.context(&trials)) == Some(0)
        {
            return Ok(None);
        }
        let params = self.space().snap(&self.sampler.sample(&self.context(&trials))?);
        let Some(number) = self.storage.create_leased(&params, worker, &Map::new(), lease, limit)? else {
            return Ok(None);
        };
        let external = self.space().external(&params);
        Ok(Some(Asked { number, params, external }))
    }

    /// Claims a re-queued trial for `worker` (its worker's lease expired), if there is one.
    pub fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Asked>> {
        Ok(self.storage.claim_queued(worker, lease)?.map(|t| Asked {
            number: t.number,
            external: self.space().external(&t.params),
            params: t.params,
        }))
    }

    /// Records an intermediate value and says whether the trial should stop.
    pub fn report(&self, number: u64, step: u64, value: f64) -> Result<bool> {
        if !value.is_finite() {
            return Err(SearchError::Trial {
                number,
                problem: format!("intermediate value {value} at step {step} is not finite"),
            });
        }
        self.storage.report(number, step, value)?;
        let Some(pruner) = &self.pruner else { return Ok(false) };
        let trials = self.storage.trials()?;
        Ok(pruner.should_prune(&PruneContext {
            direction: self.record.space.directions[0],
            trials: &trials,
            number,
            step,
        }))
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
        Ok(summarize(&self.record.space, &self.storage.trials()?))
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
