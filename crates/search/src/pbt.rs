//! Population-based training's decisions (Jaderberg et al. 2017, "Population Based Training
//! of Neural Networks"): truncation selection to exploit, perturbation to explore. The lab
//! trains the population; this module only says, at each ready point, which members copy whom
//! and with which hyper-parameters, as a pure function of the members, the seed and the
//! generation.
//!
//! At generation `g` (the `g`-th ready point, every [`PbtConfig::interval`] steps; generation 0
//! is the start) the `P` members are ranked by their latest value, best first; members without
//! a finite value (failed, diverged) rank last, ties go to the smaller id. With
//! `k = min(⌈P · quantile⌉, ⌊P / 2⌋)`:
//!
//! - the bottom `k`, and every member without a value, **exploit**: each copies the checkpoint
//!   and hyper-parameters of a member drawn uniformly from the top `k` (the best `k` members
//!   with values, never one that exploits; at least one), then **explores**: every numeric
//!   parameter is multiplied by a factor drawn uniformly from [`PbtConfig::factors`] and
//!   moved back into the space (clamped; ints and stepped floats rounded to the nearest valid
//!   value and, if rounding undid the move, one step in the factor's direction so small ints
//!   still move); every categorical is redrawn uniformly from its choices (possibly the same
//!   one) with probability [`PbtConfig::resample_probability`] and kept otherwise;
//! - everyone else continues with its own weights and hyper-parameters.
//!
//! Multiplying is the natural move in a log parameter's own scale (a factor 1.2 is a step of
//! `ln 1.2` in `ln x`) and the paper's move for linear ones; a linear float at exactly 0 stays 0.
//!
//! Each exploiting member's draws (donor, then each parameter in the space's order) come from
//! the stream keyed by `(seed, "pbt", generation, member id)`, so a resumed population decides
//! exactly as an uninterrupted one. [`Schedule`] turns the decisions into each final member's
//! hyper-parameter schedule.

mod schedule;

pub use schedule::{LineageStep, Schedule, ScheduleEntry};

use attune_rng::{Rng, tag};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};
use crate::space::{Direction, Distribution, Space};

/// PBT settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PbtConfig {
    /// Training steps between ready points (at least 1).
    pub interval: u64,
    /// The fraction of the population in the top and in the bottom, in (0, 0.5].
    pub quantile: f64,
    /// The factors a numeric parameter is multiplied by, one drawn per parameter (finite,
    /// positive, at least one).
    pub factors: Vec<f64>,
    /// The chance a categorical parameter is redrawn, in [0, 1].
    pub resample_probability: f64,
}

impl Default for PbtConfig {
    fn default() -> Self {
        PbtConfig { interval: 1000, quantile: 0.25, factors: vec![0.8, 1.2], resample_probability: 0.25 }
    }
}

impl PbtConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |problem: String, fix: &str| Err(SearchError::config("pbt", problem, fix));
        if self.interval == 0 {
            return bad("interval is 0".into(), "use interval >= 1 (training steps between ready points)");
        }
        if !(self.quantile > 0.0 && self.quantile <= 0.5) {
            return bad(
                format!("quantile {} is outside (0, 0.5]", self.quantile),
                "use e.g. 0.25 (Jaderberg et al.: 0.2)",
            );
        }
        if self.factors.is_empty() || self.factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return bad(format!("factors {:?} are not finite positive numbers", self.factors), "use e.g. [0.8, 1.2]");
        }
        if !(0.0..=1.0).contains(&self.resample_probability) {
            return bad(
                format!("resample_probability {} is outside [0, 1]", self.resample_probability),
                "use e.g. 0.25",
            );
        }
        Ok(())
    }

    /// Whether `step` is a ready point (a positive multiple of the interval).
    pub fn is_ready(&self, step: u64) -> bool {
        step > 0 && step.is_multiple_of(self.interval.max(1))
    }

    /// The generation a ready point at `step` starts.
    pub fn generation_at(&self, step: u64) -> u64 {
        step / self.interval.max(1)
    }
}

/// One member of the population as the lab sees it at a ready point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Its id, unique in the population.
    pub id: u64,
    /// Its current internal parameter values, in the space's order.
    pub params: Vec<f64>,
    /// Its latest value of the objective; `None` when it failed.
    pub value: Option<f64>,
    /// Where its latest weights are saved.
    pub checkpoint: String,
}

/// What one member does at a ready point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Keep training with its own weights and parameters.
    Continue,
    /// Load `checkpoint` (member `from`'s weights) and train on with `params`.
    Exploit {
        /// The donor member.
        from: u64,
        /// The donor's checkpoint.
        checkpoint: String,
        /// The donor's parameters after exploring.
        params: Vec<f64>,
    },
}

/// One member's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The member.
    pub member: u64,
    /// What it does.
    pub action: Action,
}

/// The two ends of a ranked population, as member ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The donors, best first.
    pub top: Vec<u64>,
    /// The members that exploit, best first (the bottom `k` and every member without a value).
    pub bottom: Vec<u64>,
}

/// Truncation selection over `members` (module docs): who donates, who exploits.
pub fn truncation_selection(direction: Direction, members: &[Member], quantile: f64) -> Result<Selection> {
    let mut ranked: Vec<&Member> = members.iter().collect();
    let loss = |m: &Member| m.value.filter(|v| v.is_finite()).map(|v| direction.loss(v));
    // Members without a value sort after every value.
    ranked.sort_by(|a, b| match (loss(a), loss(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y).then(a.id.cmp(&b.id)),
        (x, y) => y.is_some().cmp(&x.is_some()).then(a.id.cmp(&b.id)),
    });
    let p = ranked.len();
    // The small epsilon keeps P * q = 2.0000000000000004 from rounding up to 3.
    let k = (((p as f64 * quantile) - 1e-9).ceil().max(0.0) as usize).min(p / 2);
    let bottom: Vec<u64> =
        ranked.iter().enumerate().filter(|&(i, m)| i >= p - k || loss(m).is_none()).map(|(_, m)| m.id).collect();
    let top: Vec<u64> =
        ranked.iter().filter(|m| loss(m).is_some() && !bottom.contains(&m.id)).take(k.max(1)).map(|m| m.id).collect();
    if top.is_empty() && !bottom.is_empty() {
        return Err(SearchError::config(
            "pbt",
            format!("no member of {p} has a value to copy, and {} must exploit", bottom.len()),
            "restart the population from new samples (every member failed)",
        ));
    }
    Ok(Selection { top, bottom })
}

/// The decisions of generation `generation` for `members`, in their order (module docs).
pub fn decide(
    space: &Space,
    direction: Direction,
    members: &[Member],
    generation: u64,
    seed: u64,
    config: &PbtConfig,
) -> Result<Vec<Decision>> {
    config.validate()?;
    check_members(space, members)?;
    let selection = truncation_selection(direction, members, config.quantile)?;
    members
        .iter()
        .map(|m| {
            let action = if selection.bottom.contains(&m.id) {
                let mut rng = Rng::from_key(&[seed, tag(b"pbt"), generation, m.id]);
                let from = selection.top[rng.index(selection.top.len())];
                let donor = members.iter().find(|d| d.id == from).ok_or_else(|| missing(from))?;
                Action::Exploit {
                    from,
                    checkpoint: donor.checkpoint.clone(),
                    params: explore(space, &donor.params, config, &mut rng),
                }
            } else {
                Action::Continue
            };
            Ok(Decision { member: m.id, action })
        })
        .collect()
}

fn missing(id: u64) -> SearchError {
    SearchError::config("pbt", format!("member {id} is not in the population"), "pass every member")
}

fn check_members(space: &Space, members: &[Member]) -> Result<()> {
    if members.is_empty() {
        return Err(SearchError::config("pbt", "the population is empty", "pass at least two members"));
    }
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.id == m.id) {
            return Err(SearchError::config("pbt", format!("member id {} appears twice", m.id), "give ids once each"));
        }
        let valid =
            m.params.len() == space.len() && m.params.iter().zip(&space.params).all(|(&x, p)| p.dist.contains(x));
        if !valid {
            return Err(SearchError::config(
                "pbt",
                format!("member {}'s params {:?} are not a point of the space", m.id, m.params),
                "give one valid internal value per parameter, in the space's order",
            ));
        }
    }
    Ok(())
}

/// The donor's `params` perturbed (module docs), drawing from `rng` in the space's order.
fn explore(space: &Space, params: &[f64], config: &PbtConfig, rng: &mut Rng) -> Vec<f64> {
    space
        .params
        .iter()
        .zip(params)
        .map(|(p, &x)| match &p.dist {
            Distribution::Categorical { choices } => {
                if rng.chance(config.resample_probability) {
                    rng.index(choices.len()) as f64
                } else {
                    x
                }
            }
            dist => scale(dist, x, config.factors[rng.index(config.factors.len())]),
        })
        .collect()
}

/// `x * factor` moved back into a numeric distribution; a discrete value that rounding would
/// leave in place moves one step towards the product instead.
fn scale(dist: &Distribution, x: f64, factor: f64) -> f64 {
    let target = x * factor;
    let snapped = dist.snap(target);
    let discrete = dist.cardinality().is_some();
    if !discrete || snapped != x || target == x {
        return snapped;
    }
    let (k, n) = (dist.index_of(x), dist.cardinality().unwrap_or(1));
    let k = if target > x { (k + 1).min(n.saturating_sub(1)) } else { k.saturating_sub(1) };
    dist.value_at(k)
}
