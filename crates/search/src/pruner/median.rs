//! The median stopping rule (Golovin et al. 2017, "Google Vizier", section 3.2.2), with the
//! gates users of Optuna's `MedianPruner` know.
//!
//! When trial `t` reports at step `s`, it is pruned when all of these hold:
//!
//! 1. At least `n_startup_trials` other trials are complete (until then the median is noise).
//! 2. `s >= n_warmup_steps` (early values say little about final ones).
//! 3. `s` is a check step: checks fall at `n_warmup_steps + k * interval_steps`, and a check
//!    whose step the trial skipped happens at its first report past it (so a trial that
//!    reports every 7 steps is still checked once per interval).
//! 4. At least `n_min_trials` complete trials reported at or before `s`.
//! 5. `t`'s best value up to `s` is strictly worse than the median of those complete trials'
//!    best values up to `s` (ties continue; an even count takes the mean of the middle two).
//!
//! "Best up to `s`" is the best of the values reported at steps `<= s`. The reporting trial's
//! side is the rule's own (Vizier and Optuna both take its best so far); for the others Optuna
//! takes their values at exactly step `s` and Vizier the running averages of their values up
//! to `s`. Taking every trial's best makes the comparison symmetric (a noisy curve is judged by
//! the same smoothing as its rivals) and also works when trials report at different steps.
//!
//! Only complete trials make the median: running ones would make the decision depend on which
//! workers happened to have reported, and pruned ones are the curves already judged worse.

use serde::{Deserialize, Serialize};

use super::{PruneContext, Pruner};
use crate::error::{Result, SearchError};
use crate::space::Direction;
use crate::trial::{Trial, TrialState};

/// Median pruner settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MedianConfig {
    /// Complete trials needed before anything is pruned.
    pub n_startup_trials: u64,
    /// No trial is pruned at a step below this.
    pub n_warmup_steps: u64,
    /// Steps between checks, counted from `n_warmup_steps` (at least 1).
    pub interval_steps: u64,
    /// Complete trials with a value at or before the step needed to judge it (at least 1).
    pub n_min_trials: u64,
}

impl Default for MedianConfig {
    fn default() -> Self {
        MedianConfig { n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 }
    }
}

impl MedianConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.interval_steps == 0 {
            return Err(SearchError::config(
                "median",
                "interval_steps is 0",
                "use interval_steps >= 1 (1 checks every step)",
            ));
        }
        if self.n_min_trials == 0 {
            return Err(SearchError::config(
                "median",
                "n_min_trials is 0 (a median of no trials)",
                "use n_min_trials >= 1",
            ));
        }
        Ok(())
    }

    /// Whether a trial whose previous report was at `previous` is checked when it reports at
    /// `step` (gates 2 and 3 of the module docs).
    pub fn is_check_step(&self, previous: Option<u64>, step: u64) -> bool {
        let (warmup, interval) = (self.n_warmup_steps, self.interval_steps.max(1));
        if step < warmup {
            return false;
        }
        let from = match previous {
            Some(p) => p.saturating_add(1).max(warmup),
            None => warmup,
        };
        if from > step {
            return false;
        }
        // The first check point at or after `from`; the trial is checked if it lies no later
        // than this report.
        let first_check = (from - warmup).div_ceil(interval).checked_mul(interval).and_then(|k| k.checked_add(warmup));
        first_check.is_some_and(|c| c <= step)
    }
}

/// The median stopping rule.
#[derive(Debug, Clone)]
pub struct MedianPruner {
    config: MedianConfig,
}

impl MedianPruner {
    /// A median pruner (see [`MedianConfig::validate`] for the settings it expects).
    pub fn new(config: MedianConfig) -> MedianPruner {
        MedianPruner { config }
    }
}

/// The best loss among a trial's finite values reported at steps `<= step`.
pub(crate) fn best_loss_up_to(trial: &Trial, direction: Direction, step: u64) -> Option<f64> {
    trial
        .intermediate
        .iter()
        .filter(|&&(s, v)| s <= step && v.is_finite())
        .map(|&(_, v)| direction.loss(v))
        .min_by(f64::total_cmp)
}

/// The median of `values` (mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) })
}

impl Pruner for MedianPruner {
    fn should_prune(&self, ctx: &PruneContext) -> bool {
        let c = &self.config;
        if c.validate().is_err() {
            return false;
        }
        let Some(trial) = ctx.trial() else { return false };
        let complete: Vec<&Trial> =
            ctx.trials.iter().filter(|t| t.state == TrialState::Complete && t.number != ctx.number).collect();
        if (complete.len() as u64) < c.n_startup_trials {
            return false;
        }
        let previous = trial.intermediate.iter().map(|&(s, _)| s).filter(|&s| s < ctx.step).max();
        if !c.is_check_step(previous, ctx.step) {
            return false;
        }
        let Some(mine) = best_loss_up_to(trial, ctx.direction, ctx.step) else { return false };
        let others: Vec<f64> = complete.iter().filter_map(|t| best_loss_up_to(t, ctx.direction, ctx.step)).collect();
        if (others.len() as u64) < c.n_min_trials {
            return false;
        }
        median(others).is_some_and(|m| mine > m)
    }
}
