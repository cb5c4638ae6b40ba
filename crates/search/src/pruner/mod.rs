//! Pruners: stop unpromising trials early from their intermediate values. Like samplers they
//! decide from the stored trials alone, so every worker of a shared study agrees.
//!
//! - [`MedianPruner`]: the median stopping rule (Golovin et al. 2017, "Google Vizier"), with
//!   Optuna's startup, warm-up and interval gates.
//! - [`AshaPruner`]: asynchronous successive halving (Li et al. 2020, "A System for Massively
//!   Parallel Hyperparameter Tuning").
//! - [`HyperbandPruner`]: several ASHA brackets of different aggressiveness (Li et al. 2018,
//!   "Hyperband"), each trial in one bracket chosen from its number.
//!
//! Steps are whatever the objective reports (optimizer steps, epochs); every resource below is
//! counted in those steps.

mod asha;
mod hyperband;
mod median;

pub use asha::{AshaConfig, AshaPruner};
pub use hyperband::{HyperbandConfig, HyperbandPruner};
pub use median::{MedianConfig, MedianPruner};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};
use crate::space::Direction;
use crate::trial::Trial;

/// What a pruner sees when a trial reports a value.
#[derive(Debug, Clone, Copy)]
pub struct PruneContext<'a> {
    /// The direction of the (first) objective, which intermediate values share.
    pub direction: Direction,
    /// Every trial, the reporting one included with its new value.
    pub trials: &'a [Trial],
    /// The reporting trial's number.
    pub number: u64,
    /// The step it just reported.
    pub step: u64,
}

impl<'a> PruneContext<'a> {
    /// The reporting trial.
    pub fn trial(&self) -> Option<&'a Trial> {
        self.trials.iter().find(|t| t.number == self.number)
    }
}

/// Decides whether a trial stops.
pub trait Pruner: Send + Sync {
    /// Whether the trial of `ctx` should stop now.
    fn should_prune(&self, ctx: &PruneContext) -> bool;
}

/// A pruner and its settings, as stored with the study and named on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PrunerConfig {
    /// The median stopping rule.
    Median(MedianConfig),
    /// Asynchronous successive halving.
    Asha(AshaConfig),
    /// Hyperband over ASHA brackets.
    Hyperband(HyperbandConfig),
}

impl PrunerConfig {
    /// The default settings of the pruner called `name` on the command line.
    pub fn by_name(name: &str) -> Result<PrunerConfig> {
        Ok(match name {
            "median" => PrunerConfig::Median(MedianConfig::default()),
            "asha" => PrunerConfig::Asha(AshaConfig::default()),
            "hyperband" => PrunerConfig::Hyperband(HyperbandConfig::default()),
            other => {
                return Err(SearchError::config(
                    "pruner",
                    format!("unknown pruner '{other}'"),
                    format!("use one of {}", PrunerConfig::NAMES.join(", ")),
                ));
            }
        })
    }

    /// The names `by_name` accepts.
    pub const NAMES: &'static [&'static str] = &["median", "asha", "hyperband"];

    /// Checks the settings (a reduction factor of at least 2, a resource of at least 1, ...).
    /// `build` cannot fail, so a caller holding settings from a file checks them here first;
    /// `by_name`'s defaults are always valid.
    pub fn validate(&self) -> Result<()> {
        match self {
            PrunerConfig::Median(c) => c.validate(),
            PrunerConfig::Asha(c) => c.validate(),
            PrunerConfig::Hyperband(c) => c.validate(),
        }
    }

    /// The pruner. Settings that [`PrunerConfig::validate`] rejects give a pruner that never
    /// prunes (rather than one that loops or panics).
    pub fn build(&self) -> Box<dyn Pruner> {
        match self {
            PrunerConfig::Median(c) => Box::new(MedianPruner::new(c.clone())),
            PrunerConfig::Asha(c) => Box::new(AshaPruner::new(c.clone())),
            PrunerConfig::Hyperband(c) => Box::new(HyperbandPruner::new(c.clone())),
        }
    }
}
