//! Trials: one evaluation of the objective at one point of the space, with its state,
//! final values, intermediate values and bookkeeping.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::space::Direction;

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Waiting for a worker: a trial whose worker's lease expired, re-queued with the same
    /// number and parameters (shared studies, docs/search.md).
    Queued,
    /// Asked for and not yet finished (or its worker died: see docs/search.md).
    Running,
    /// Finished with its values.
    Complete,
    /// Stopped early by the pruner; its last intermediate value stands for it.
    Pruned,
    /// The objective failed (non-zero exit, non-finite value, timeout).
    Failed,
}

impl TrialState {
    /// Whether the trial will not change any more.
    pub fn is_finished(self) -> bool {
        !matches!(self, TrialState::Running | TrialState::Queued)
    }

    /// The state's name as stored (`running`, `complete`, `pruned`, `failed`).
    pub fn name(self) -> &'static str {
        match self {
            TrialState::Queued => "queued",
            TrialState::Running => "running",
            TrialState::Complete => "complete",
            TrialState::Pruned => "pruned",
            TrialState::Failed => "failed",
        }
    }

    /// The state of a stored name.
    pub fn from_name(name: &str) -> Option<TrialState> {
        Some(match name {
            "queued" => TrialState::Queued,
            "running" => TrialState::Running,
            "complete" => TrialState::Complete,
            "pruned" => TrialState::Pruned,
            "failed" => TrialState::Failed,
            _ => return None,
        })
    }
}

/// One trial as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Its number, 0, 1, 2, ... in the order trials were asked for.
    pub number: u64,
    /// Its state.
    pub state: TrialState,
    /// Internal parameter values, in the space's order (see `space`).
    pub params: Vec<f64>,
    /// The objective values of a complete trial, one per direction.
    pub values: Option<Vec<f64>>,
    /// `(step, value)` reports, ascending in step.
    pub intermediate: Vec<(u64, f64)>,
    /// Who ran it (`host:pid` or a worker name).
    pub worker: String,
    /// When it was asked for (seconds since the Unix epoch).
    pub started: f64,
    /// When it finished.
    pub finished: Option<f64>,
    /// Why a failed trial failed (e.g. the tail of the program's stderr).
    pub error: Option<String>,
    /// Free-form attributes (PBT lineage, run directory, ...).
    pub attrs: Map<String, Value>,
    /// How many times the trial was re-queued after its worker's lease expired.
    #[serde(default)]
    pub retries: u32,
}

impl Trial {
    /// A trial with `number`, `state` and `params` and nothing else yet: no values, reports,
    /// worker, times, error or attributes (a trial being asked for, or one a test builds).
    pub fn new(number: u64, state: TrialState, params: Vec<f64>) -> Trial {
        Trial {
            number,
            state,
            params,
            values: None,
            intermediate: Vec::new(),
            worker: String::new(),
            started: 0.0,
            finished: None,
            error: None,
            attrs: Map::new(),
            retries: 0,
        }
    }

    /// The first objective as a loss (smaller is better): the final value of a complete trial,
    /// the last intermediate value of a pruned one, `None` otherwise.
    pub fn loss(&self, direction: Direction) -> Option<f64> {
        match self.state {
            TrialState::Complete => self.values.as_ref().and_then(|v| v.first()).map(|&v| direction.loss(v)),
            TrialState::Pruned => self.intermediate.last().map(|&(_, v)| direction.loss(v)),
            _ => None,
        }
    }

    /// The intermediate value reported at exactly `step`.
    pub fn value_at(&self, step: u64) -> Option<f64> {
        self.intermediate.iter().find(|&&(s, _)| s == step).map(|&(_, v)| v)
    }

    /// The latest step reported.
    pub fn last_step(&self) -> Option<u64> {
        self.intermediate.last().map(|&(s, _)| s)
    }

    /// Wall time from ask to finish.
    pub fn duration(&self) -> Option<f64> {
        self.finished.map(|f| f - self.started)
    }
}

/// How a trial ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// Complete, pruned or failed.
    pub state: TrialState,
    /// The values of a complete trial.
    pub values: Option<Vec<f64>>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Finish {
    /// A complete trial with `values`.
    pub fn complete(values: Vec<f64>) -> Finish {
        Finish { state: TrialState::Complete, values: Some(values), error: None }
    }

    /// A pruned trial.
    pub fn pruned() -> Finish {
        Finish { state: TrialState::Pruned, values: None, error: None }
    }

    /// A failed trial and why.
    pub fn failed(error: impl Into<String>) -> Finish {
        Finish { state: TrialState::Failed, values: None, error: Some(error.into()) }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
