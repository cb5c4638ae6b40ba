//! Simulated annealing (Kirkpatrick, Gelatt and Vecchi, 1983) as a pure function of the stored
//! trials.
//!
//! The chain is never kept in the process: [`SaSampler::chain`] rebuilds it by replaying the
//! finished trials in number order, each one a candidate move against the chain's current
//! state at that point of the replay:
//!
//! - The first trial with a loss becomes the current state unconditionally.
//! - A later one is accepted by the Metropolis rule: always when it is no worse, otherwise with
//!   probability `exp(-delta / T)` ([`metropolis_accept`]). The uniform draw is keyed by the
//!   study seed and the candidate's trial number, so the replay gives the same decisions
//!   every time, in every process.
//! - `delta` is by default the share of the losses replayed before the candidate that the move
//!   jumps over ([`rank_delta`]): `(k + 1) / (n + 1)` when `k` of the `n` seen losses lie
//!   strictly between the current loss and the candidate's. Losses come in any unit (a
//!   perplexity, an accuracy, seconds) and, in hyperparameter search, with heavy tails (a
//!   diverged run scores thousands of times the median), so the temperature is a share of
//!   what the study has seen: at `T = 0.05` a move worse than 5% more of the seen trials is
//!   accepted with probability `1/e`, whatever the losses' unit or spread. Ties with
//!   the current loss are free and a block of equal losses counts once (it is not jumped
//!   over), so a chain can walk off a plateau of equal losses, such as the runs that
//!   diverged to the same constant predictor.
//! - With [`DeltaScale::Std`] `delta` is instead the loss difference divided by the standard
//!   deviation of the losses replayed before the candidate ([`normalised_delta`]); before
//!   there are two distinct losses a worse move counts as exactly one unit. One outlying loss
//!   inflates that deviation until every move among the good trials looks free, so the chain
//!   wanders instead of descending: use it only for losses without heavy tails.
//! - Pruned and failed trials are rejected moves: a pruned trial's last intermediate value is
//!   not comparable with final values, and a failure has none.
//! - Every replayed trial is one step of the temperature schedule ([`Schedule`]). After
//!   `restart_after` steps in a row without a new best, the chain restarts from the best trial
//!   (or from a random point) and the schedule starts again from `T0` (a reheat).
//!
//! Proposals move one to `max_moved` parameters of the current state (see [`SaSampler`]).
//! Parallel workers: running trials are proposals whose outcome is unknown. The sampler
//! proposes from the current state anyway (a different draw per trial number), and each of
//! those proposals is judged against whatever the current state is when it finishes; waiting
//! for them would idle the workers, and guessing their losses would bias the chain.
//!
//! Several objectives: the chain anneals the first one.

use attune_rng::{Rng, tag};
use serde::{Deserialize, Serialize};

use super::{SampleContext, Sampler};
use crate::error::{Result, SearchError};
use crate::space::Distribution;
use crate::trial::{Trial, TrialState};

/// How the temperature falls with the steps since the last (re)start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// `T0 * alpha^k`.
    Geometric {
        /// The starting temperature.
        t0: f64,
        /// The factor per step, in `(0, 1]`.
        alpha: f64,
    },
    /// `T0 * (1 - k / steps)`, then 0 (only improvements are accepted).
    Linear {
        /// The starting temperature.
        t0: f64,
        /// The step at which the temperature reaches 0.
        steps: u64,
    },
    /// `T0 / ln(k + e)`: the slow schedule of the convergence proofs.
    Logarithmic {
        /// The starting temperature.
        t0: f64,
    },
}

impl Default for Schedule {
    fn default() -> Self {
        // T0 in rank units: a move past 5% of the seen trials is taken with probability 1/e at
        // a (re)start.
        Schedule::Geometric { t0: 0.05, alpha: 0.96 }
    }
}

impl Schedule {
    /// The starting temperature.
    pub fn t0(&self) -> f64 {
        match *self {
            Schedule::Geometric { t0, .. } | Schedule::Linear { t0, .. } | Schedule::Logarithmic { t0 } => t0,
        }
    }

    /// The temperature `k` steps after the (re)start.
    pub fn temperature(&self, k: u64) -> f64 {
        match *self {
            Schedule::Geometric { t0, alpha } => t0 * alpha.powf(k as f64),
            Schedule::Linear { t0, steps } => t0 * (1.0 - k as f64 / steps.max(1) as f64).max(0.0),
            Schedule::Logarithmic { t0 } => t0 / (k as f64 + std::f64::consts::E).ln(),
        }
    }

    fn validate(&self) -> Result<()> {
        let t0 = self.t0();
        if !(t0.is_finite() && t0 > 0.0) {
            return Err(SearchError::config(
                "sa",
                format!("schedule t0 = {t0} is not positive"),
                "give t0 > 0, e.g. 0.05",
            ));
        }
        match *self {
            Schedule::Geometric { alpha, .. } if !(alpha > 0.0 && alpha <= 1.0) => Err(SearchError::config(
                "sa",
                format!("geometric alpha = {alpha} is outside (0, 1]"),
                "give 0 < alpha <= 1, e.g. 0.96",
            )),
            Schedule::Linear { steps: 0, .. } => {
                Err(SearchError::config("sa", "linear schedule with steps = 0", "give steps >= 1, e.g. 100"))
            }
            _ => Ok(()),
        }
    }
}

/// Where a restart puts the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartFrom {
    /// The best trial so far.
    #[default]
    Best,
    /// A uniformly random point (the next finished trial becomes the current state).
    Random,
}

/// The unit a loss change is measured in before the temperature divides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaScale {
    /// The share of the replayed losses that the move jumps over ([`rank_delta`]): invariant
    /// to the losses' unit and to any monotone rescaling of them.
    #[default]
    Rank,
    /// The change divided by the standard deviation of the replayed losses
    /// ([`normalised_delta`]). Temperatures are then in standard deviations, ten times the
    /// rank scale's or so: give the schedule too (e.g. `t0 = 0.5, alpha = 0.93`).
    Std,
}

/// Simulated-annealing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaConfig {
    /// The temperature schedule.
    pub schedule: Schedule,
    /// The standard deviation of a numeric move in unit coordinates at `T0`; it shrinks with
    /// `sqrt(T / T0)`.
    pub step: f64,
    /// The smallest step standard deviation (keeps a cold chain moving).
    pub min_step: f64,
    /// At most this many parameters change per proposal (at least one always does).
    pub max_moved: u64,
    /// Restart after this many steps in a row without a new best (`None`: never).
    pub restart_after: Option<u64>,
    /// Where a restart goes.
    pub restart_from: RestartFrom,
    /// The unit of a loss change (the temperature is in that unit).
    pub delta: DeltaScale,
}

impl Default for SaConfig {
    fn default() -> Self {
        SaConfig {
            schedule: Schedule::default(),
            step: 0.2,
            min_step: 0.02,
            max_moved: 2,
            restart_after: Some(40),
            restart_from: RestartFrom::Best,
            delta: DeltaScale::default(),
        }
    }
}

impl SaConfig {
    /// Checks every setting, naming the bad one and a fix.
    pub fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        if !(self.step.is_finite() && self.step > 0.0 && self.step <= 1.0) {
            return Err(SearchError::config(
                "sa",
                format!("step = {} is outside (0, 1]", self.step),
                "e.g. step = 0.2",
            ));
        }
        if !(self.min_step.is_finite() && self.min_step > 0.0 && self.min_step <= self.step) {
            return Err(SearchError::config(
                "sa",
                format!("min_step = {} is outside (0, step = {}]", self.min_step, self.step),
                "e.g. min_step = 0.02",
            ));
        }
        if self.max_moved == 0 {
            return Err(SearchError::config("sa", "max_moved = 0", "give max_moved >= 1"));
        }
        if self.restart_after == Some(0) {
            return Err(SearchError::config("sa", "restart_after = 0", "give restart_after >= 1, or leave it out"));
        }
        Ok(())
    }
}

/// A point the chain has visited: a finished trial and its loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    /// The trial's number.
    pub number: u64,
    /// Its internal parameter values.
    pub params: Vec<f64>,
    /// Its loss (first objective, smaller is better).
    pub loss: f64,
}

/// The chain after replaying the finished trials.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The current state (`None` before any trial finished, or after a random restart).
    pub current: Option<Visit>,
    /// The best trial so far.
    pub best: Option<Visit>,
    /// The temperature of the next step.
    pub temperature: f64,
    /// Steps since the last (re)start: the schedule's index.
    pub step: u64,
    /// Steps in a row without a new best.
    pub stale: u64,
    /// How many restarts happened.
    pub restarts: u64,
    /// The trials accepted as the current state, in replay order.
    pub accepted: Vec<u64>,
}

/// Whether a move of normalised loss change `delta` is accepted at `temperature`, given a
/// uniform draw `u` in `[0, 1)`: always when `delta <= 0`, otherwise when
/// `u < exp(-delta / temperature)` (never at temperature 0).
pub fn metropolis_accept(delta: f64, temperature: f64, u: f64) -> bool {
    if delta <= 0.0 {
        return true;
    }
    temperature > 0.0 && u < (-delta / temperature).exp()
}

/// `(candidate - current) / scale`, where `scale` is the spread of the losses seen so far; a
/// scale that is not positive (fewer than two distinct losses) makes any worsening one unit.
pub fn normalised_delta(candidate: f64, current: f64, scale: f64) -> f64 {
    let delta = candidate - current;
    if delta <= 0.0 {
        delta
    } else if scale.is_finite() && scale > 0.0 {
        delta / scale
    } else {
        1.0
    }
}

/// The share of the seen losses that a move from `current` to `candidate` jumps over, when
/// `between` of the `seen` losses lie strictly between the two: `(between + 1) / (seen + 1)`,
/// negative for an improvement, 0 for a tie. The `+ 1`s count the candidate itself, so every
/// worsening is positive (and refused at temperature 0) however few losses were seen.
pub fn rank_delta(candidate: f64, current: f64, between: u64, seen: u64) -> f64 {
    let share = (between + 1) as f64 / (seen + 1) as f64;
    if candidate > current {
        share
    } else if candidate < current {
        -share
    } else {
        0.0
    }
}

/// The losses replayed so far, as counts over the sorted distinct losses of the whole replay
/// (a Fenwick tree), so each insertion and count costs `O(log n)` and a replay `O(n log n)`.
#[derive(Debug)]
struct SeenLosses {
    /// The distinct losses the replay will meet, ascending.
    values: Vec<f64>,
    /// Fenwick tree over `values`: how many of each have been seen.
    tree: Vec<u64>,
    len: u64,
}

impl SeenLosses {
    fn new(mut values: Vec<f64>) -> SeenLosses {
        values.sort_by(f64::total_cmp);
        values.dedup();
        SeenLosses { tree: vec![0; values.len() + 1], values, len: 0 }
    }

    fn insert(&mut self, loss: f64) {
        // Every replayed loss was given to `new`, so it is found; a miss is only skipped.
        if let Ok(k) = self.values.binary_search_by(|v| v.total_cmp(&loss)) {
            let mut i = k + 1;
            while i < self.tree.len() {
                self.tree[i] += 1;
                i += i & i.wrapping_neg();
            }
            self.len += 1;
        }
    }

    /// How many seen losses are among the first `k` distinct values.
    fn prefix(&self, k: usize) -> u64 {
        let (mut i, mut sum) = (k, 0);
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// How many seen losses lie strictly between `a` and `b` (in either order).
    fn between(&self, a: f64, b: f64) -> u64 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let below_hi = self.prefix(self.values.partition_point(|&v| v < hi));
        let up_to_lo = self.prefix(self.values.partition_point(|&v| v <= lo));
        below_hi.saturating_sub(up_to_lo)
    }
}

/// Welford's running mean and variance of the losses replayed so far.
#[derive(Debug, Default)]
struct Spread {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Spread {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn std(&self) -> f64 {
        if self.n < 2 { 0.0 } else { (self.m2 / (self.n - 1) as f64).sqrt() }
    }
}

/// Simulated annealing over the stored trials (see the module documentation).
#[derive(Debug, Clone)]
pub struct SaSampler {
    config: SaConfig,
}

impl SaSampler {
    /// A simulated-annealing sampler.
    pub fn new(config: SaConfig) -> SaSampler {
        SaSampler { config }
    }

    /// The chain rebuilt from the finished trials of `ctx`, in number order.
    pub fn chain(&self, ctx: &SampleContext) -> Result<Chain> {
        self.config.validate()?;
        let schedule = self.config.schedule;
        let direction = ctx.directions().first().copied().unwrap_or(crate::space::Direction::Minimize);
        let mut finished: Vec<&Trial> =
            ctx.trials.iter().filter(|t| t.state.is_finished() && t.params.len() == ctx.space.len()).collect();
        finished.sort_by_key(|t| t.number);

        let mut chain = Chain {
            current: None,
            best: None,
            temperature: schedule.temperature(0),
            step: 0,
            stale: 0,
            restarts: 0,
            accepted: Vec::new(),
        };
        let loss_of = |trial: &Trial| match trial.state {
            TrialState::Complete => trial.loss(direction).filter(|l| l.is_finite()),
            _ => None,
        };
        let mut spread = Spread::default();
        let mut seen = SeenLosses::new(finished.iter().filter_map(|t| loss_of(t)).collect());
        for trial in finished {
            let loss = loss_of(trial);
            let mut improved = false;
            if let Some(loss) = loss {
                let visit = Visit { number: trial.number, params: trial.params.clone(), loss };
                let accept = match &chain.current {
                    None => true,
                    Some(current) => {
                        let delta = match self.config.delta {
                            DeltaScale::Std => normalised_delta(loss, current.loss, spread.std()),
                            DeltaScale::Rank => {
                                rank_delta(loss, current.loss, seen.between(loss, current.loss), seen.len)
                            }
                        };
                        let u = Rng::from_key(&[ctx.seed, tag(b"sa-acc"), trial.number]).unit_f64();
                        metropolis_accept(delta, chain.temperature, u)
                    }
                };
                improved = chain.best.as_ref().is_none_or(|b| loss < b.loss);
                if improved {
                    chain.best = Some(visit.clone());
                }
                if accept {
                    chain.accepted.push(trial.number);
                    chain.current = Some(visit);
                }
                spread.push(loss);
                seen.insert(loss);
            }
            chain.step += 1;
            chain.stale = if improved { 0 } else { chain.stale + 1 };
            if self.config.restart_after.is_some_and(|n| chain.stale >= n) {
                chain.restarts += 1;
                chain.stale = 0;
                chain.step = 0;
                chain.current = match self.config.restart_from {
                    RestartFrom::Best => chain.best.clone(),
                    RestartFrom::Random => None,
                };
            }
            chain.temperature = schedule.temperature(chain.step);
        }
        Ok(chain)
    }

    /// The standard deviation of a numeric move at `temperature`, in unit coordinates.
    fn step_size(&self, temperature: f64) -> f64 {
        let ratio = (temperature / self.config.schedule.t0()).max(0.0);
        (self.config.step * ratio.sqrt()).max(self.config.min_step)
    }

    /// A neighbour of `current`: one to `max_moved` of its movable parameters changed.
    fn neighbour(&self, ctx: &SampleContext, current: &[f64], temperature: f64) -> Vec<f64> {
        let mut rng = ctx.rng(b"sa-move");
        let movable: Vec<usize> =
            (0..ctx.space.len()).filter(|&i| ctx.space.params[i].dist.cardinality() != Some(1)).collect();
        let mut point = current.to_vec();
        if movable.is_empty() {
            return point;
        }
        let most = (self.config.max_moved as usize).min(movable.len());
        let count = 1 + rng.index(most);
        let sigma = self.step_size(temperature);
        for &k in &rng.permutation(movable.len())[..count] {
            let i = movable[k];
            point[i] = move_param(&ctx.space.params[i].dist, current[i], sigma, &mut rng);
        }
        point
    }
}

/// One parameter's move: another choice for a categorical; a Gaussian step of standard
/// deviation `sigma` in unit coordinates (so in `ln x` for log parameters) for numbers, at
/// least one value along for discrete ones.
fn move_param(dist: &Distribution, x: f64, sigma: f64, rng: &mut Rng) -> f64 {
    let n = dist.cardinality();
    if let Distribution::Categorical { .. } = dist {
        let n = n.unwrap_or(1);
        let here = dist.index_of(x);
        let other = rng.below(n - 1);
        return (if other >= here { other + 1 } else { other }) as f64;
    }
    let z = rng.normal();
    let moved = dist.from_unit(reflect_unit(dist.to_unit(x) + sigma * z));
    match n {
        Some(n) if dist.index_of(moved) == dist.index_of(x) => {
            // The step fell inside the same value: take one value in the step's direction,
            // turning back at the ends, so every proposal is a real move.
            let here = dist.index_of(x) as i64;
            let dir = if z >= 0.0 { 1 } else { -1 };
            let next = if here + dir < 0 || here + dir >= n as i64 { here - dir } else { here + dir };
            dist.value_at(next as u64)
        }
        _ => moved,
    }
}

/// `u` folded back into `[0, 1]` by reflection at the ends (a clamp would pile proposals on
/// the bounds).
fn reflect_unit(u: f64) -> f64 {
    if !u.is_finite() {
        return 0.5;
    }
    let folded = u.rem_euclid(2.0);
    if folded > 1.0 { 2.0 - folded } else { folded }
}

impl Sampler for SaSampler {
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>> {
        let chain = self.chain(ctx)?;
        Ok(match &chain.current {
            None => ctx.random_point(&mut ctx.rng(b"sa-init")),
            Some(current) => self.neighbour(ctx, &current.params, chain.temperature),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_folds_into_the_unit_interval() {
        assert_eq!(reflect_unit(0.25), 0.25);
        assert!((reflect_unit(1.25) - 0.75).abs() < 1e-12);
        assert!((reflect_unit(-0.25) - 0.25).abs() < 1e-12);
        assert!((reflect_unit(2.5) - 0.5).abs() < 1e-12);
        assert_eq!(reflect_unit(f64::NAN), 0.5);
    }

    #[test]
    fn schedules_follow_their_formulas() {
        let g = Schedule::Geometric { t0: 2.0, alpha: 0.5 };
        assert_eq!((g.temperature(0), g.temperature(3)), (2.0, 0.25));
        let l = Schedule::Linear { t0: 1.0, steps: 4 };
        assert_eq!((l.temperature(1), l.temperature(4), l.temperature(9)), (0.75, 0.0, 0.0));
        let ln = Schedule::Logarithmic { t0: 1.0 };
        assert!((ln.temperature(0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn seen_losses_count_only_inserted_losses_strictly_between() {
        let mut seen = SeenLosses::new(vec![5.0, 2.0, 1.0, 2.0, 3.0, 9.0]);
        for x in [1.0, 2.0, 2.0, 3.0, 5.0] {
            seen.insert(x);
        }
        assert_eq!(seen.len, 5);
        // Strictly between 1 and 5: 2, 2, 3 (either order); 9 was never inserted.
        assert_eq!((seen.between(1.0, 5.0), seen.between(5.0, 1.0)), (3, 3));
        assert_eq!((seen.between(2.0, 3.0), seen.between(2.0, 2.0)), (0, 0));
        assert_eq!((seen.between(0.0, 10.0), seen.between(1.5, 2.5)), (5, 2));
        assert_eq!(seen.between(5.0, 9.0), 0);
    }

    #[test]
    fn spread_is_the_sample_standard_deviation() {
        let mut s = Spread::default();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            s.push(x);
        }
        // Sum of squared deviations from the mean 5 is 32; 32 / 7.
        assert!((s.std() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }
}
