//! The tree-structured Parzen estimator (TPE; Bergstra et al., "Algorithms for
//! hyper-parameter optimization", 2011), multivariate as described by Watanabe (2023,
//! "Tree-structured Parzen estimator: understanding its algorithm components"), with the
//! defaults a user of Optuna's TPE sampler expects.
//!
//! Until `n_startup_trials` trials have finished (complete or pruned), points are random, and
//! the very same points random search would give (the same `random` stream). After that the
//! finished trials are split into the good `gamma(n) = min(ceil(0.1 n), 25)` and the rest
//! ([`split`] says how pruned trials, running trials and several objectives are ranked, and
//! how the rest are weighted by age); a Parzen estimator `l(x)` is fitted to the good and
//! `g(x)` to the rest ([`parzen`], with the bandwidths of [`bandwidth`]);
//! `n_ei_candidates` points are drawn from `l`, and the one with the largest
//! `ln l(x) - ln g(x)` (the expected improvement's monotone proxy) is returned.
//!
//! Everything is drawn from `SampleContext::rng`, so the same trials, seed and trial number
//! always give the same point, and a resumed or shared study samples like an uninterrupted one.

mod bandwidth;
mod normal;
mod parzen;
mod split;

use serde::{Deserialize, Serialize};

use super::{SampleContext, Sampler};
use crate::error::{Result, SearchError};
use crate::trial::TrialState;
use parzen::{Axis, Coord, Parzen};

/// TPE settings. Every field has a default, so a stored config may give only some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TpeConfig {
    /// Finished trials sampled at random before the estimators take over.
    pub n_startup_trials: u64,
    /// Points drawn from `l(x)` per ask; the best of them by `l / g` is taken.
    pub n_ei_candidates: u64,
    /// The share of the finished trials that counts as good: `gamma(n) = ceil(gamma_fraction * n)`...
    pub gamma_fraction: f64,
    /// ...capped at `gamma_max`.
    pub gamma_max: u64,
    /// The prior component's weight, against 1 per observation.
    pub prior_weight: f64,
    /// Whether running trials count as bad ("above") observations, so parallel workers asking
    /// at the same time are pushed apart instead of all sampling the same spot.
    pub constant_liar: bool,
}

impl Default for TpeConfig {
    fn default() -> Self {
        TpeConfig {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            gamma_fraction: 0.1,
            gamma_max: 25,
            prior_weight: 1.0,
            constant_liar: true,
        }
    }
}

impl TpeConfig {
    /// How many of `n` ranked trials are good: `min(ceil(gamma_fraction * n), gamma_max)`.
    pub fn gamma(&self, n: usize) -> usize {
        let share = (self.gamma_fraction * n as f64).ceil();
        (share.max(0.0) as usize).min(usize::try_from(self.gamma_max).unwrap_or(usize::MAX))
    }

    /// Checks the settings, naming the bad one and its fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |problem: String, fix: &str| Err(SearchError::config("tpe", problem, fix));
        if self.n_ei_candidates == 0 {
            return bad("n_ei_candidates is 0".into(), "draw at least 1 candidate (24 is the default)");
        }
        if !(self.gamma_fraction > 0.0 && self.gamma_fraction <= 1.0) {
            return bad(
                format!("gamma_fraction {} is not in (0, 1]", self.gamma_fraction),
                "give the share of trials counted as good, e.g. 0.1",
            );
        }
        if self.gamma_max == 0 {
            return bad(
                "gamma_max is 0, so no trial would count as good".into(),
                "give at least 1 (25 is the default)",
            );
        }
        if !(self.prior_weight > 0.0 && self.prior_weight.is_finite()) {
            return bad(
                format!("prior_weight {} is not a positive number", self.prior_weight),
                "give a positive weight, e.g. 1.0",
            );
        }
        Ok(())
    }
}

/// The TPE sampler.
#[derive(Debug, Clone)]
pub struct TpeSampler {
    config: TpeConfig,
}

impl TpeSampler {
    /// A TPE sampler; the settings are checked on every `sample` (where errors can be returned).
    pub fn new(config: TpeConfig) -> TpeSampler {
        TpeSampler { config }
    }

    /// The settings.
    pub fn config(&self) -> &TpeConfig {
        &self.config
    }
}

impl Sampler for TpeSampler {
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>> {
        self.config.validate()?;
        if ctx.directions().is_empty() {
            return Err(SearchError::config("tpe", "the space has no objective", "declare direction or directions"));
        }
        check_params(ctx)?;
        let split = split::split(ctx.trials, ctx.directions(), |n| self.config.gamma(n), self.config.constant_liar);
        if (split.ranked as u64) < self.config.n_startup_trials {
            return Ok(ctx.random_point(&mut ctx.rng(b"random")));
        }
        let axes: Vec<Axis> = ctx.space.params.iter().map(|p| Axis::of(&p.dist)).collect();
        let below: Vec<&[f64]> = split.below.iter().map(|t| t.params.as_slice()).collect();
        let above: Vec<&[f64]> = split.above.iter().map(|t| t.params.as_slice()).collect();
        let good = Parzen::new(&axes, &below, &vec![1.0; below.len()], self.config.prior_weight);
        let bad = Parzen::new(&axes, &above, &split::age_weights(&split.above), self.config.prior_weight);

        let mut rng = ctx.rng(b"tpe");
        let mut best: Option<(f64, Vec<f64>)> = None;
        for _ in 0..self.config.n_ei_candidates {
            let x = good.draw(&mut rng);
            let coords: Vec<Coord> = axes.iter().zip(&x).map(|(a, &v)| a.coord(v)).collect();
            let score = good.ln_density(&coords) - bad.ln_density(&coords);
            // NaN never wins; the first of equal scores does.
            let score = if score.is_nan() { f64::NEG_INFINITY } else { score };
            if best.as_ref().is_none_or(|(top, _)| score > *top) {
                best = Some((score, x));
            }
        }
        Ok(best.map(|(_, x)| x).unwrap_or_else(|| ctx.random_point(&mut rng)))
    }
}

/// Every trial the estimators may use must have one value per parameter.
fn check_params(ctx: &SampleContext) -> Result<()> {
    match ctx.trials.iter().find(|t| t.state != TrialState::Failed && t.params.len() != ctx.space.len()) {
        Some(t) => Err(SearchError::Trial {
            number: t.number,
            problem: format!(
                "has {} parameter values but the space has {} parameters; the stored study is damaged \
                 (fix: mark the trial failed, or start a new study)",
                t.params.len(),
                ctx.space.len()
            ),
        }),
        None => Ok(()),
    }
}
