//! Asynchronous successive halving, ASHA (Li et al. 2020, "A System for Massively Parallel
//! Hyperparameter Tuning", MLSys; Algorithm 2), as a stopping rule.
//!
//! With minimum resource `r` (`min_resource`), reduction factor `η` (`reduction_factor`, also
//! accepted as `eta`) and minimum early-stopping rate `s` (`min_early_stopping_rate`), rung `k`
//! (k = 0, 1, ...) sits at step `r * η^(k + s)`. With `max_resource = R`, only rungs strictly
//! below `R` exist: a trial that reaches `R` is done, there is nothing left to decide. For
//! `r = 1, η = 3`: `s = 0` gives rungs 1, 3, 9, 27, ...; `s = 1` gives 3, 9, 27, ...
//!
//! A trial's value at a rung is the value it reported at the rung's step or, when it skipped
//! that step, at its first report past it. When a trial's report crosses a rung (the rung lies
//! after its previous report and at or before this one; one report may cross several), it is
//! judged there against every other trial with a value at that rung, in any state (ASHA's rung
//! keeps everyone who reached it, the stopped included). With `n` values at the rung counting
//! its own:
//!
//! - `n < η`: it continues. In the paper a rung promotes its top `⌊n/η⌋` trials, so a rung
//!   with fewer than `η` trials has promoted nobody yet and has not judged this one either;
//!   a stopping rule cannot make the trial wait, so it lets it run on.
//! - otherwise it continues only if fewer than `⌊n/η⌋` of the others are strictly better,
//!   i.e. it is in the top `⌊n/η⌋` (ties in its favour); else it is pruned.
//!
//! Ray Tune and Optuna judge even with fewer than `η` values: Ray stops a trial below the
//! `1 − 1/η` quantile of the values recorded before it, Optuna keeps it only if it is the best
//! so far, so in both a trial worse than the only earlier one stops. This rule keeps such early
//! trials instead, as the paper's not-yet-full rungs would.
//!
//! Nothing is remembered between calls: the rung values are read from the stored
//! intermediate values, so any worker reading the same store decides alike and a resumed
//! study needs nothing else.

use serde::{Deserialize, Serialize};

use super::{PruneContext, Pruner};
use crate::error::{Result, SearchError};
use crate::trial::Trial;

/// ASHA settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AshaConfig {
    /// The first rung's resource `r`, in steps (at least 1).
    pub min_resource: u64,
    /// `η`: rungs are `η` times apart and keep the top `1/η` (at least 2).
    #[serde(alias = "eta")]
    pub reduction_factor: u64,
    /// `s`: the ladder starts `s` rungs up, at `r * η^s`.
    pub min_early_stopping_rate: u32,
    /// `R`: no rung at or past it (`None`: the ladder goes on).
    pub max_resource: Option<u64>,
}

impl Default for AshaConfig {
    fn default() -> Self {
        AshaConfig { min_resource: 1, reduction_factor: 3, min_early_stopping_rate: 0, max_resource: None }
    }
}

impl AshaConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        Ladder::from(self).validate("asha")
    }

    /// The rung steps up to and including `up_to`, ascending.
    pub fn rungs(&self, up_to: u64) -> Vec<u64> {
        Ladder::from(self).rungs_in(None, up_to)
    }
}

/// A ladder of rungs: `min_resource * eta^(k + rate)` for k = 0, 1, ..., below `max_resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ladder {
    pub min_resource: u64,
    pub eta: u64,
    pub rate: u32,
    pub max_resource: Option<u64>,
}

impl From<&AshaConfig> for Ladder {
    fn from(c: &AshaConfig) -> Ladder {
        Ladder {
            min_resource: c.min_resource,
            eta: c.reduction_factor,
            rate: c.min_early_stopping_rate,
            max_resource: c.max_resource,
        }
    }
}

impl Ladder {
    pub fn validate(&self, component: &str) -> Result<()> {
        if self.min_resource == 0 {
            return Err(SearchError::config(
                component,
                "min_resource is 0 (every rung would sit at step 0)",
                "use min_resource >= 1, in the steps the objective reports",
            ));
        }
        if self.eta < 2 {
            return Err(SearchError::config(
                component,
                format!("reduction_factor is {} (rungs would not grow)", self.eta),
                "use reduction_factor >= 2 (3 or 4 are usual)",
            ));
        }
        Ok(())
    }

    /// The first rung's step, `None` when it overflows or the settings are invalid.
    fn first_rung(&self) -> Option<u64> {
        if self.validate("").is_err() {
            return None;
        }
        self.eta.checked_pow(self.rate).and_then(|p| p.checked_mul(self.min_resource))
    }

    /// The rung steps in `(after, up_to]`, ascending.
    pub fn rungs_in(&self, after: Option<u64>, up_to: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut rung = self.first_rung();
        while let Some(r) = rung {
            if r > up_to || self.max_resource.is_some_and(|m| r >= m) {
                break;
            }
            if after.is_none_or(|a| r > a) {
                out.push(r);
            }
            rung = r.checked_mul(self.eta);
        }
        out
    }

    /// Whether the reporting trial of `ctx` is pruned by this ladder, judged against the
    /// trials `rivals` accepts (see the module docs).
    pub fn should_prune(&self, ctx: &PruneContext, rivals: impl Fn(&Trial) -> bool) -> bool {
        let Some(trial) = ctx.trial() else { return false };
        let Some(mine) = trial.value_at(ctx.step).filter(|v| v.is_finite()) else { return false };
        let mine = ctx.direction.loss(mine);
        let previous = trial.intermediate.iter().map(|&(s, _)| s).filter(|&s| s < ctx.step).max();
        self.rungs_in(previous, ctx.step).into_iter().any(|rung| {
            let others: Vec<f64> = ctx
                .trials
                .iter()
                .filter(|t| t.number != ctx.number && rivals(t))
                .filter_map(|t| value_at_rung(t, rung))
                .map(|v| ctx.direction.loss(v))
                .collect();
            let n = others.len() as u64 + 1;
            if n < self.eta {
                return false;
            }
            let keep = n / self.eta;
            let better = others.iter().filter(|&&o| o < mine).count() as u64;
            better >= keep
        })
    }
}

/// A trial's value at the rung at `step`: its report there or its first one past it.
fn value_at_rung(trial: &Trial, step: u64) -> Option<f64> {
    trial
        .intermediate
        .iter()
        .filter(|&&(s, _)| s >= step)
        .min_by_key(|&&(s, _)| s)
        .map(|&(_, v)| v)
        .filter(|v| v.is_finite())
}

/// Asynchronous successive halving.
#[derive(Debug, Clone)]
pub struct AshaPruner {
    ladder: Ladder,
}

impl AshaPruner {
    /// An ASHA pruner (see [`AshaConfig::validate`] for the settings it expects).
    pub fn new(config: AshaConfig) -> AshaPruner {
        AshaPruner { ladder: Ladder::from(&config) }
    }
}

impl Pruner for AshaPruner {
    fn should_prune(&self, ctx: &PruneContext) -> bool {
        self.ladder.should_prune(ctx, |_| true)
    }
}
