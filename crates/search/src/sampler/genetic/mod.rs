//! A generational genetic algorithm, and NSGA-II when the study has several objectives (Deb,
//! Pratap, Agarwal and Meyarivan, 2002), rebuilt from the stored trials at every ask.
//!
//! **Generations.** Trials are grouped by number: with population size `P`, trials
//! `gP .. (g+1)P - 1` are generation `g`. Generation 0 is drawn uniformly at random. A trial
//! of generation `g >= 1` is bred only from trials numbered below `gP` that are finished when
//! it is asked for; trials of its own or later generations are never looked at, even when
//! finished. With parallel workers some trials of generation `g - 1` may still be running
//! when generation `g` starts: they are left out (they are not parents, and do not count
//! towards anything) and join the elite of later generations once finished. So the point of
//! trial `n` is a function of the seed, `n` and the finished trials of earlier generations.
//! When fewer than two trials can be parents (generation 0 failed, or has not finished yet),
//! the trial is drawn at random like generation 0.
//!
//! **Survival and selection.** Every usable earlier trial (complete or pruned; failed trials
//! are never parents) is ranked: by loss for one objective, by non-dominated front and then
//! crowding distance for several; pruned trials rank behind all complete ones. The elite is
//! the best `P` of them, which is (mu + lambda) survival: parents and children compete, so a
//! good point never leaves the population. The mating pool is the elite plus the usable
//! trials of generation `g - 1` (the newest children get to breed even before they beat the
//! elite, which keeps the population from collapsing onto a few old points). Each parent is
//! the winner of a tournament among `tournament_size` members drawn without replacement,
//! compared by rank, then crowding; the second parent is drawn from the pool without the
//! first.
//!
//! **Variation** ([`operators`]): with probability `crossover_prob` the child is a
//! per-parameter crossover of the two parents (SBX for floats in unit coordinates, uniform
//! for ints and categoricals), else a copy of the first parent; then each parameter mutates
//! with probability `mutation_rate` (default `1 / number of parameters`).
//!
//! Ranking reads every earlier trial; with several objectives non-dominated sorting costs
//! O(N^2) comparisons per ask for N trials, which is negligible next to a training run for
//! the thousands of trials a study holds.

mod operators;
mod ranking;

use serde::{Deserialize, Serialize};

use super::{SampleContext, Sampler};
use crate::error::{Result, SearchError};
use crate::trial::Trial;
use ranking::Member;

/// Genetic-algorithm settings. Every field has a default, so a stored config may name only
/// the ones it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GaConfig {
    /// Trials per generation (and the size of the elite), at least 2.
    pub population_size: u64,
    /// Members drawn per tournament, at least 1 (1 is random selection; larger is greedier).
    pub tournament_size: u64,
    /// The probability a child is a crossover of two parents rather than a copy of one.
    pub crossover_prob: f64,
    /// The probability each parameter mutates; `None` for `1 / number of parameters`.
    pub mutation_rate: Option<f64>,
    /// The standard deviation of a numeric mutation, in unit coordinates (0 to 1 spans the
    /// parameter's range).
    pub mutation_scale: f64,
    /// SBX's distribution index: larger keeps children closer to their parents. The NSGA-II
    /// paper's 20 is the default.
    pub sbx_eta: f64,
}

impl Default for GaConfig {
    fn default() -> Self {
        GaConfig {
            population_size: 20,
            tournament_size: 2,
            crossover_prob: 0.9,
            mutation_rate: None,
            mutation_scale: 0.1,
            sbx_eta: 20.0,
        }
    }
}

impl GaConfig {
    /// Checks every setting, naming the first one out of range and its valid range.
    pub fn validate(&self) -> Result<()> {
        let err = |problem: String, fix: &str| Err(SearchError::config("ga", problem, fix));
        if self.population_size < 2 {
            return err(format!("population_size {} is below 2", self.population_size), "use 2 or more (20 is usual)");
        }
        if self.tournament_size < 1 {
            return err("tournament_size is 0".into(), "use 1 or more (2 is usual)");
        }
        if !(0.0..=1.0).contains(&self.crossover_prob) {
            return err(format!("crossover_prob {} is not a probability", self.crossover_prob), "use 0 to 1");
        }
        if let Some(rate) = self.mutation_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return err(format!("mutation_rate {rate} is not a probability"), "use 0 to 1, or leave it out");
        }
        if !(self.mutation_scale.is_finite() && self.mutation_scale > 0.0) {
            return err(format!("mutation_scale {} is not positive", self.mutation_scale), "use e.g. 0.1");
        }
        if !(self.sbx_eta.is_finite() && self.sbx_eta >= 0.0) {
            return err(format!("sbx_eta {} is not a finite non-negative number", self.sbx_eta), "use e.g. 20");
        }
        Ok(())
    }
}

/// The genetic algorithm (NSGA-II for several objectives). Trial `n` belongs to generation
/// `n / population_size`; generation 0 is random, later ones breed from the trials of earlier
/// generations finished at the ask (failed and running ones never breed, pruned ones rank
/// behind complete ones): tournament selection over the elite (the best `population_size`
/// so far) and the previous generation, SBX or uniform crossover, Gaussian or categorical
/// mutation.
#[derive(Debug, Clone)]
pub struct GaSampler {
    config: GaConfig,
}

impl GaSampler {
    /// A GA sampler; its settings are checked at the first ask.
    pub fn new(config: GaConfig) -> GaSampler {
        GaSampler { config }
    }

    /// The usable trials of generations below `generation`, ranked, and the mating pool
    /// drawn from them (in trial-number order).
    fn mating_pool<'a>(&self, ctx: &SampleContext<'a>, generation: u64) -> Vec<Member<'a>> {
        let p = self.config.population_size;
        let start = generation * p;
        let directions = ctx.directions();
        let earlier: Vec<&'a Trial> =
            ctx.trials.iter().filter(|t| t.number < start && ranking::usable(t, directions)).collect();
        let members = ranking::rank(&earlier, directions);
        let mut by_quality: Vec<usize> = (0..members.len()).collect();
        by_quality.sort_by(|&a, &b| members[a].cmp_quality(&members[b]));
        let mut in_pool = vec![false; members.len()];
        for &i in by_quality.iter().take(p as usize) {
            in_pool[i] = true;
        }
        for (i, m) in members.iter().enumerate() {
            in_pool[i] |= m.trial.number >= start - p;
        }
        members.into_iter().zip(in_pool).filter(|&(_, keep)| keep).map(|(m, _)| m).collect()
    }

    /// The index in `pool` of a tournament's winner: `tournament_size` distinct members
    /// other than `exclude`, the best by rank then crowding.
    fn tournament(&self, pool: &[Member], exclude: Option<usize>, rng: &mut attune_rng::Rng) -> usize {
        let mut candidates: Vec<usize> = (0..pool.len()).filter(|&i| Some(i) != exclude).collect();
        let k = (self.config.tournament_size as usize).min(candidates.len());
        // A partial Fisher-Yates shuffle: the first k entries are a uniform draw without
        // replacement.
        for i in 0..k {
            let j = i + rng.index(candidates.len() - i);
            candidates.swap(i, j);
        }
        candidates[..k].iter().copied().min_by(|&a, &b| pool[a].cmp_quality(&pool[b])).unwrap_or(0)
    }
}

impl Sampler for GaSampler {
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>> {
        self.config.validate()?;
        let mut rng = ctx.rng(b"ga");
        let generation = ctx.number / self.config.population_size;
        if generation == 0 {
            return Ok(ctx.random_point(&mut rng));
        }
        let pool = self.mating_pool(ctx, generation);
        if pool.len() < 2 {
            return Ok(ctx.random_point(&mut rng));
        }
        let a = self.tournament(&pool, None, &mut rng);
        let b = self.tournament(&pool, Some(a), &mut rng);
        let (pa, pb) = (&pool[a].trial.params, &pool[b].trial.params);
        let child = if rng.chance(self.config.crossover_prob) {
            operators::crossover(ctx.space, pa, pb, self.config.sbx_eta, &mut rng)
        } else {
            pa.clone()
        };
        let rate = self.config.mutation_rate.unwrap_or(1.0 / ctx.space.len().max(1) as f64);
        let child = operators::mutate(ctx.space, &child, rate, self.config.mutation_scale, &mut rng);
        Ok(ctx.space.snap(&child))
    }
}
