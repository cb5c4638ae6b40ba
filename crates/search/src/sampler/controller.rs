//! A REINFORCE controller (Williams 1992; used for architecture search by Zoph and Le, 2017):
//! a policy over the parameters, trained from the trials' rewards with a moving-average
//! baseline. Zoph and Le's policy is an RNN that emits one decision after another; here it is
//! factorised, one independent softmax per parameter, which is what a fixed search space needs.
//!
//! Each parameter has logits over cells ([`Cells`]): its choices for a categorical, its values
//! for an int or stepped float with at most `bins` of them, otherwise `bins` equal cells of
//! the unit interval (log-aware), sampled as a cell and then uniformly inside it.
//!
//! [`ReinforceSampler::policy`] rebuilds the policy from the stored trials, never from state in
//! the process: starting from zero logits and a zero baseline, each finished trial in number
//! order is one policy-gradient step
//!
//! ```text
//! advantage = reward - baseline
//! logits   += learning_rate * (advantage * (onehot(cell) - softmax(logits)) + entropy_weight * dH/dlogits)
//! baseline  = decay * baseline + (1 - decay) * reward
//! ```
//!
//! The reward is `-loss` normalised by rank ([`rank_reward`]): the fraction of the earlier
//! finished losses this trial beats (ties count half), minus one half, so it lies in
//! `[-0.5, 0.5]` whatever the loss's unit or outliers; the first trial's reward is 0. A
//! pruned or failed trial gets the worst reward, -0.5 (its last intermediate value is not
//! comparable with final values; a failure has none), and adds nothing to the ranking.
//! Because a policy that improves keeps beating its own history, the rewards drift upward;
//! the baseline follows that drift, so only trials better than recent ones push the policy.
//!
//! Running trials are ignored: every worker samples the current policy, with draws keyed by
//! the trial number. Several objectives: the reward ranks the first one.

use attune_rng::Rng;
use serde::{Deserialize, Serialize};

use super::{SampleContext, Sampler};
use crate::error::{Result, SearchError};
use crate::space::{Direction, Distribution};
use crate::trial::{Trial, TrialState};

/// REINFORCE controller settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReinforceConfig {
    /// Cells of a continuous (or many-valued) parameter's unit interval.
    pub bins: u64,
    /// The policy-gradient step size.
    pub learning_rate: f64,
    /// The baseline's moving-average decay in `[0, 1)`.
    pub baseline_decay: f64,
    /// The weight of the entropy bonus (0: none); it keeps the policy from collapsing early.
    pub entropy_weight: f64,
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        ReinforceConfig { bins: 10, learning_rate: 0.5, baseline_decay: 0.9, entropy_weight: 0.0 }
    }
}

/// The largest `bins` accepted (more cells than this learn too slowly to be useful).
const MAX_BINS: u64 = 1024;

impl ReinforceConfig {
    /// Checks every setting, naming the bad one and a fix.
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_BINS).contains(&self.bins) {
            return Err(SearchError::config(
                "reinforce",
                format!("bins = {} is outside 2..={MAX_BINS}", self.bins),
                "e.g. bins = 10",
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(SearchError::config(
                "reinforce",
                format!("learning_rate = {} is not positive", self.learning_rate),
                "e.g. learning_rate = 0.5",
            ));
        }
        if !(0.0..1.0).contains(&self.baseline_decay) {
            return Err(SearchError::config(
                "reinforce",
                format!("baseline_decay = {} is outside [0, 1)", self.baseline_decay),
                "e.g. baseline_decay = 0.9",
            ));
        }
        if !(self.entropy_weight.is_finite() && self.entropy_weight >= 0.0) {
            return Err(SearchError::config(
                "reinforce",
                format!("entropy_weight = {} is negative or not finite", self.entropy_weight),
                "give entropy_weight >= 0 (0 turns the bonus off)",
            ));
        }
        Ok(())
    }
}

/// What a parameter's logits range over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cells {
    /// One cell per value: categoricals, and ints or stepped floats with at most `bins` values.
    Values(u64),
    /// `n` equal cells of the unit interval.
    Bins(u64),
}

impl Cells {
    /// The cells of `dist` with `bins` cells for a continuous parameter.
    pub fn of(dist: &Distribution, bins: u64) -> Cells {
        match dist.cardinality() {
            Some(n) if dist.is_categorical() || n <= bins => Cells::Values(n),
            _ => Cells::Bins(bins),
        }
    }

    /// How many cells.
    pub fn len(self) -> usize {
        match self {
            Cells::Values(n) | Cells::Bins(n) => n as usize,
        }
    }

    /// Whether there are none (never for a valid space).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The cell holding the internal value `x`.
    pub fn cell_of(self, dist: &Distribution, x: f64) -> usize {
        match self {
            Cells::Values(_) => dist.index_of(x) as usize,
            Cells::Bins(n) => ((dist.to_unit(x) * n as f64).floor() as usize).min(n as usize - 1),
        }
    }

    /// The internal value for `cell`, with `u` in `[0, 1)` placing it inside a bin.
    pub fn value_in(self, dist: &Distribution, cell: usize, u: f64) -> f64 {
        match self {
            Cells::Values(_) => dist.value_at(cell as u64),
            Cells::Bins(n) => dist.from_unit((cell as f64 + u) / n as f64),
        }
    }
}

/// The policy after replaying the finished trials.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The cells of each parameter, in the space's order.
    pub cells: Vec<Cells>,
    /// The logits of each parameter.
    pub logits: Vec<Vec<f64>>,
    /// The reward baseline.
    pub baseline: f64,
    /// How many finished trials were replayed.
    pub updates: u64,
}

impl Policy {
    /// The probabilities of each parameter's cells.
    pub fn probabilities(&self) -> Vec<Vec<f64>> {
        self.logits.iter().map(|l| softmax(l)).collect()
    }
}

/// The softmax of `logits` (shifted by their maximum, so large logits cannot overflow).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (l - top).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// The gradient of `ln softmax(logits)[chosen]` with respect to the logits: `onehot(chosen) -
/// softmax(logits)`.
pub fn log_prob_gradient(logits: &[f64], chosen: usize) -> Vec<f64> {
    let mut g: Vec<f64> = softmax(logits).iter().map(|p| -p).collect();
    if let Some(slot) = g.get_mut(chosen) {
        *slot += 1.0;
    }
    g
}

/// The gradient of the entropy `H = -sum p ln p` of `softmax(logits)`: `-p_k (ln p_k + H)`.
pub fn entropy_gradient(logits: &[f64]) -> Vec<f64> {
    let p = softmax(logits);
    let h: f64 = -p.iter().filter(|&&q| q > 0.0).map(|q| q * q.ln()).sum::<f64>();
    p.iter().map(|&q| if q > 0.0 { -q * (q.ln() + h) } else { 0.0 }).collect()
}

/// The baseline after seeing `reward`: `decay * baseline + (1 - decay) * reward`.
pub fn baseline_update(baseline: f64, reward: f64, decay: f64) -> f64 {
    decay * baseline + (1.0 - decay) * reward
}

/// The rank reward of `loss` among the `earlier` losses (sorted ascending): the fraction of
/// them it beats, ties counting half, minus one half; 0 when there are none.
pub fn rank_reward(loss: f64, earlier: &[f64]) -> f64 {
    if earlier.is_empty() {
        return 0.0;
    }
    let below = earlier.partition_point(|&e| e < loss);
    let not_above = earlier.partition_point(|&e| e <= loss);
    let worse = earlier.len() - not_above;
    let ties = not_above - below;
    (worse as f64 + 0.5 * ties as f64) / earlier.len() as f64 - 0.5
}

/// The worst reward, given to pruned and failed trials.
const WORST_REWARD: f64 = -0.5;

/// The REINFORCE controller (see the module documentation).
#[derive(Debug, Clone)]
pub struct ReinforceSampler {
    config: ReinforceConfig,
}

impl ReinforceSampler {
    /// A REINFORCE controller.
    pub fn new(config: ReinforceConfig) -> ReinforceSampler {
        ReinforceSampler { config }
    }

    /// The policy rebuilt from the finished trials of `ctx`, in number order.
    pub fn policy(&self, ctx: &SampleContext) -> Result<Policy> {
        self.config.validate()?;
        let c = &self.config;
        let space = ctx.space;
        let cells: Vec<Cells> = space.params.iter().map(|p| Cells::of(&p.dist, c.bins)).collect();
        let mut policy =
            Policy { logits: cells.iter().map(|k| vec![0.0; k.len()]).collect(), cells, baseline: 0.0, updates: 0 };
        let direction = ctx.directions().first().copied().unwrap_or(Direction::Minimize);
        let mut finished: Vec<&Trial> =
            ctx.trials.iter().filter(|t| t.state.is_finished() && t.params.len() == space.len()).collect();
        finished.sort_by_key(|t| t.number);

        let mut seen: Vec<f64> = Vec::new();
        for trial in finished {
            let loss = match trial.state {
                TrialState::Complete => trial.loss(direction).filter(|l| l.is_finite()),
                _ => None,
            };
            let reward = match loss {
                Some(loss) => {
                    let r = rank_reward(loss, &seen);
                    seen.insert(seen.partition_point(|&e| e < loss), loss);
                    r
                }
                None => WORST_REWARD,
            };
            let advantage = reward - policy.baseline;
            for (((param, cells), logits), &x) in
                space.params.iter().zip(&policy.cells).zip(&mut policy.logits).zip(&trial.params)
            {
                let chosen = cells.cell_of(&param.dist, x);
                let grad = log_prob_gradient(logits, chosen);
                let bonus = if c.entropy_weight > 0.0 { entropy_gradient(logits) } else { vec![0.0; logits.len()] };
                for ((l, g), b) in logits.iter_mut().zip(grad).zip(bonus) {
                    *l += c.learning_rate * (advantage * g + c.entropy_weight * b);
                }
            }
            policy.baseline = baseline_update(policy.baseline, reward, c.baseline_decay);
            policy.updates += 1;
        }
        Ok(policy)
    }
}

impl Sampler for ReinforceSampler {
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>> {
        let policy = self.policy(ctx)?;
        let mut rng = ctx.rng(b"reinforc");
        Ok(ctx
            .space
            .params
            .iter()
            .zip(&policy.cells)
            .zip(&policy.logits)
            .map(|((param, cells), logits)| {
                let cell = draw(&softmax(logits), &mut rng);
                cells.value_in(&param.dist, cell, rng.unit_f64())
            })
            .collect())
    }
}

/// A cell drawn from `probs` by inverting the cumulative sum.
fn draw(probs: &[f64], rng: &mut Rng) -> usize {
    let mut u = rng.unit_f64();
    for (i, &p) in probs.iter().enumerate() {
        if u < p {
            return i;
        }
        u -= p;
    }
    // Rounding can leave u just above the last probability.
    probs.len().saturating_sub(1)
}
