//! Random search: each parameter drawn independently, uniform in its unit coordinate (so
//! log-uniform for log parameters).

use super::{SampleContext, Sampler};
use crate::error::Result;

/// Independent uniform draws.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomSampler;

impl Sampler for RandomSampler {
    fn sample(&self, ctx: &SampleContext) -> Result<Vec<f64>> {
        Ok(ctx.random_point(&mut ctx.rng(b"random")))
    }
}
