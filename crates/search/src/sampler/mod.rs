//! Samplers: where the next trial goes. Each is a pure function of the study's stored trials,
//! its seed and the trial number, so a resumed or shared study samples exactly as an
//! uninterrupted one would (no state lives in the process).

pub mod annealing;
pub mod controller;
mod genetic;
mod grid;
mod random;
mod tpe;

pub use annealing::{SaConfig, SaSampler};
pub use controller::{ReinforceConfig, ReinforceSampler};
pub use genetic::{GaConfig, GaSampler};
pub use grid::GridSampler;
pub use random::RandomSampler;
pub use tpe::{TpeConfig, TpeSampler};

use attune_rng::{Rng, tag};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::space::{Direction, Space};
use crate::trial::Trial;

/// What a sampler sees when it is asked for a point.
#[derive(Debug, Clone, Copy)]
pub struct SampleContext<'a> {
    /// The space.
    pub space: &'a Space,
    /// Every trial so far, running ones included (TPE's constant liar uses them).
    pub trials: &'a [Trial],
    /// The study's seed.
    pub seed: u64,
    /// The number the new trial will most likely get (the number of trials so far).
    pub number: u64,
}

impl SampleContext<'_> {
    /// The stream for `purpose` at this trial: the same seed, number and purpose always give
    /// the same draws.
    pub fn rng(&self, purpose: &[u8]) -> Rng {
        Rng::from_key(&[self.seed, tag(purpose), self.number])
    }

    /// The objectives' directions.
    pub fn directions(&self) -> &[Direction] {
        &self.space.directions
    }

    /// A uniformly random point of the space.
    pub fn random_point(&self, rng: &mut Rng) -> Vec<f64> {
        self.space.params.iter().map(|p| p.dist.from_unit(rng.unit_f64())).collect()
    }
}

/// Picks the next point.
pub trait Sampler: Send + Sync {
    /// The internal parameter values of the next trial (valid for the space).
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>>;

    /// How many new points the sampler has left (`None`: unlimited). Grid search ends.
    fn remaining(&self, _ctx: &SampleContext) -> Option<u64> {
        None
    }
}

/// A sampler and its settings, as stored with the study and named on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SamplerConfig {
    /// Independent uniform draws (log-uniform for log parameters).
    Random,
    /// Every combination once, in a seeded order.
    Grid(grid::GridConfig),
    /// The tree-structured Parzen estimator (multivariate, constant liar).
    Tpe(tpe::TpeConfig),
    /// Simulated annealing, replayed from the finished trials.
    Sa(SaConfig),
    /// A REINFORCE controller: a factorised policy trained from the trials' rewards.
    Reinforce(ReinforceConfig),
    /// A generational genetic algorithm; NSGA-II for several objectives.
    Ga(GaConfig),
}

impl SamplerConfig {
    /// The default settings of the sampler called `name` on the command line.
    pub fn by_name(name: &str) -> Result<SamplerConfig> {
        Ok(match name {
            "random" => SamplerConfig::Random,
            "grid" => SamplerConfig::Grid(grid::GridConfig::default()),
            "tpe" => SamplerConfig::Tpe(tpe::TpeConfig::default()),
            "sa" => SamplerConfig::Sa(SaConfig::default()),
            "reinforce" => SamplerConfig::Reinforce(ReinforceConfig::default()),
            "ga" => SamplerConfig::Ga(GaConfig::default()),
            other => {
                return Err(crate::error::SearchError::config(
                    "sampler",
                    format!("unknown sampler '{other}'"),
                    format!("use one of {}", SamplerConfig::NAMES.join(", ")),
                ));
            }
        })
    }

    /// The names `by_name` accepts.
    pub const NAMES: &'static [&'static str] = &["random", "grid", "tpe", "ga", "sa", "reinforce"];

    /// The sampler.
    pub fn build(&self) -> Box<dyn Sampler> {
        match self {
            SamplerConfig::Random => Box::new(RandomSampler),
            SamplerConfig::Grid(c) => Box::new(GridSampler::new(c.clone())),
            SamplerConfig::Tpe(c) => Box::new(TpeSampler::new(c.clone())),
            SamplerConfig::Sa(c) => Box::new(SaSampler::new(c.clone())),
            SamplerConfig::Reinforce(c) => Box::new(ReinforceSampler::new(c.clone())),
            SamplerConfig::Ga(c) => Box::new(GaSampler::new(c.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_sampler_round_trips_through_json_and_unknown_names_list_the_known() {
        for name in SamplerConfig::NAMES {
            let config = SamplerConfig::by_name(name).unwrap();
            let json = serde_json::to_value(&config).unwrap();
            assert_eq!(json["kind"], *name, "{json}");
            assert_eq!(serde_json::from_value::<SamplerConfig>(json).unwrap(), config, "{name}");
        }
        let err = SamplerConfig::by_name("cma").unwrap_err().to_string();
        assert!(SamplerConfig::NAMES.iter().all(|n| err.contains(n)), "{err}");
    }
}
