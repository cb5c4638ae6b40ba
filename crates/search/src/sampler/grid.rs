//! Grid search: every combination of the parameters' values once. Continuous floats get
//! `points` evenly spaced values (log-spaced for log parameters). The order is a seeded
//! permutation, so a study cut short still covers the grid evenly; a combination is skipped
//! when any stored trial already has it, so resumed and shared studies never repeat one.

use serde::{Deserialize, Serialize};

use super::{SampleContext, Sampler};
use crate::error::{Result, SearchError};
use crate::space::{Distribution, Space};

/// Grid settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridConfig {
    /// Values per continuous float parameter.
    pub points: u64,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig { points: 5 }
    }
}

/// Every combination once.
#[derive(Debug, Clone)]
pub struct GridSampler {
    config: GridConfig,
}

/// The largest grid enumerated (beyond it, random search is the better tool).
const MAX_GRID: u64 = 1 << 24;

impl GridSampler {
    /// A grid sampler.
    pub fn new(config: GridConfig) -> GridSampler {
        GridSampler { config }
    }

    fn axes(&self, space: &Space) -> Vec<Vec<f64>> {
        space
            .params
            .iter()
            .map(|p| match (&p.dist, p.dist.cardinality()) {
                (Distribution::Float { .. }, None) => {
                    let n = self.config.points.max(1);
                    (0..n).map(|k| p.dist.from_unit(if n == 1 { 0.5 } else { k as f64 / (n - 1) as f64 })).collect()
                }
                (_, n) => (0..n.unwrap_or(1)).map(|k| p.dist.value_at(k)).collect(),
            })
            .collect()
    }

    fn size(axes: &[Vec<f64>]) -> Result<u64> {
        axes.iter().try_fold(1u64, |acc, a| {
            acc.checked_mul(a.len() as u64).filter(|&n| n <= MAX_GRID).ok_or_else(|| {
                SearchError::config(
                    "grid",
                    format!("the grid has more than {MAX_GRID} points"),
                    "use fewer values per parameter (step) or another sampler",
                )
            })
        })
    }

    fn point(axes: &[Vec<f64>], mut index: u64) -> Vec<f64> {
        axes.iter()
            .map(|a| {
                let v = a[(index % a.len() as u64) as usize];
                index /= a.len() as u64;
                v
            })
            .collect()
    }
}

impl Sampler for GridSampler {
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>> {
        let axes = self.axes(ctx.space);
        let n = Self::size(&axes)?;
        let used: Vec<&[f64]> = ctx.trials.iter().map(|t| t.params.as_slice()).collect();
        // A seeded visiting order: index i goes to (a * i + b) mod n with a coprime to n.
        let mut rng = attune_rng::Rng::from_key(&[ctx.seed, attune_rng::tag(b"grid")]);
        let mut a = rng.below(n.max(1)) | 1;
        while gcd(a, n) != 1 {
            a += 2;
        }
        let b = rng.below(n.max(1));
        for i in 0..n {
            let p = Self::point(&axes, (a.wrapping_mul(i % n) % n + b) % n);
            if !used.contains(&p.as_slice()) {
                return Ok(p);
            }
        }
        Err(SearchError::config(
            "grid",
            format!("all {n} grid points have been tried"),
            "stop the study (the driver does this) or use another sampler",
        ))
    }

    fn remaining(&self, ctx: &SampleContext) -> Option<u64> {
        let axes = self.axes(ctx.space);
        let n = Self::size(&axes).ok()?;
        let mut seen: Vec<&[f64]> = ctx.trials.iter().map(|t| t.params.as_slice()).collect();
        seen.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        seen.dedup();
        Some(n.saturating_sub(seen.len() as u64))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}
