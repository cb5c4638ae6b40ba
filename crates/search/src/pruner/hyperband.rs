//! Hyperband (Li et al. 2018, "Hyperband: A Novel Bandit-Based Approach to Hyperparameter
//! Optimization", JMLR) over asynchronous successive-halving brackets, the asynchronous
//! Hyperband of Li et al. 2020 and Optuna's `HyperbandPruner`.
//!
//! With minimum resource `r`, maximum resource `R` and reduction factor `η`, there are
//! `n = s_max + 1` brackets where `s_max = ⌊log_η(R / r)⌋` (the largest `k` with
//! `r * η^k <= R`). Bracket `b` (0 ≤ b < n) is an ASHA ladder ([`super::AshaPruner`]) with
//! `min_early_stopping_rate = b` and `max_resource = R`: bracket 0 judges from step `r`, the
//! last has no rung below `R` and never prunes (Hyperband's plain full-budget bracket).
//!
//! A trial's bracket is a keyed hash of its number alone, so every worker and every resume
//! puts it in the same one. The hash lands in bracket `b` in proportion to the number of
//! configurations Hyperband's bracket `s = s_max − b` starts, `⌈(s_max + 1) η^s / (s + 1)⌉`
//! (for r = 1, R = 81, η = 3: 81, 34, 15, 8, 5), so each bracket gets about the same share of
//! the total budget, as in Hyperband. A trial is judged only against trials of its own bracket.

use attune_rng::{Rng, tag};
use serde::{Deserialize, Serialize};

use super::asha::{AshaConfig, Ladder};
use super::{PruneContext, Pruner};
use crate::error::{Result, SearchError};

/// Hyperband settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HyperbandConfig {
    /// `r`: the most aggressive bracket's first rung, in steps (at least 1).
    pub min_resource: u64,
    /// `R`: the steps a trial runs when never stopped (at least `r * η`). Set it to the last
    /// step the objective reports.
    pub max_resource: u64,
    /// `η`: rungs are `η` times apart and keep the top `1/η` (at least 2).
    #[serde(alias = "eta")]
    pub reduction_factor: u64,
}

impl Default for HyperbandConfig {
    fn default() -> Self {
        HyperbandConfig { min_resource: 1, max_resource: 81, reduction_factor: 3 }
    }
}

impl HyperbandConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.bracket_config(0).validate().map_err(|e| match e {
            SearchError::Config { problem, fix, .. } => SearchError::config("hyperband", problem, fix),
            other => other,
        })?;
        if self.n_brackets() < 2 {
            return Err(SearchError::config(
                "hyperband",
                format!(
                    "max_resource {} is below min_resource {} * reduction_factor {}: one bracket with no rung",
                    self.max_resource, self.min_resource, self.reduction_factor
                ),
                "raise max_resource to the last step the objective reports, or lower min_resource",
            ));
        }
        Ok(())
    }

    /// The number of brackets, `⌊log_η(R / r)⌋ + 1` (0 for invalid settings).
    pub fn n_brackets(&self) -> u32 {
        if self.min_resource == 0 || self.reduction_factor < 2 {
            return 0;
        }
        let mut count = 0;
        let mut rung = Some(self.min_resource);
        while let Some(r) = rung.filter(|&r| r <= self.max_resource) {
            count += 1;
            rung = r.checked_mul(self.reduction_factor);
        }
        count
    }

    /// The ASHA settings of bracket `bracket`.
    pub fn bracket_config(&self, bracket: u32) -> AshaConfig {
        AshaConfig {
            min_resource: self.min_resource,
            reduction_factor: self.reduction_factor,
            min_early_stopping_rate: bracket,
            max_resource: Some(self.max_resource),
        }
    }

    /// Each bracket's weight: the configurations Hyperband's bracket starts (module docs).
    pub fn bracket_sizes(&self) -> Vec<u64> {
        let n = self.n_brackets();
        let s_max = n.saturating_sub(1);
        (0..n)
            .map(|b| {
                let s = s_max - b;
                // eta^s <= R / r fits in u64; the product with n needs more room.
                let eta_s = u128::from(self.reduction_factor.checked_pow(s).unwrap_or(u64::MAX));
                let size = (u128::from(n) * eta_s).div_ceil(u128::from(s) + 1);
                u64::try_from(size).unwrap_or(u64::MAX)
            })
            .collect()
    }

    /// The bracket of trial `number` (0 for invalid settings).
    pub fn bracket_of(&self, number: u64) -> u32 {
        let sizes = self.bracket_sizes();
        let total = sizes.iter().fold(0u64, |a, &s| a.saturating_add(s));
        let mut draw = Rng::from_key(&[tag(b"hyperbnd"), number]).below(total);
        for (b, &size) in sizes.iter().enumerate() {
            if draw < size {
                return b as u32;
            }
            draw -= size;
        }
        0
    }
}

/// Hyperband over ASHA brackets.
#[derive(Debug, Clone)]
pub struct HyperbandPruner {
    config: HyperbandConfig,
}

impl HyperbandPruner {
    /// A Hyperband pruner (see [`HyperbandConfig::validate`] for the settings it expects).
    pub fn new(config: HyperbandConfig) -> HyperbandPruner {
        HyperbandPruner { config }
    }
}

impl Pruner for HyperbandPruner {
    fn should_prune(&self, ctx: &PruneContext) -> bool {
        if self.config.validate().is_err() {
            return false;
        }
        let bracket = self.config.bracket_of(ctx.number);
        let ladder = Ladder::from(&self.config.bracket_config(bracket));
        ladder.should_prune(ctx, |t| self.config.bracket_of(t.number) == bracket)
    }
}
