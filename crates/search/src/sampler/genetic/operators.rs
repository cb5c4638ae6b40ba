//! The variation operators, per parameter on internal values:
//!
//! - crossover: floats (linear, log or stepped) blend by simulated binary crossover (SBX: Deb
//!   and Agrawal, "Simulated binary crossover for continuous search space", 1995) in the
//!   parameter's unit coordinate, so log parameters blend in the logarithm; ints and
//!   categoricals take either parent's value with probability 1/2 (uniform crossover), since
//!   a blend of two choices means nothing and a blend of two small ints mostly rounds back.
//! - mutation: numbers (floats and ints) take a Gaussian step in the unit coordinate, clamped
//!   to `[0, 1]` (so bounds stay reachable); a categorical moves to another choice, uniformly.

use attune_rng::Rng;

use crate::space::{Distribution, Space};

/// SBX's spread factor for one uniform draw `r`: `(2r)^(1/(eta+1))` below 1/2, else
/// `(1 / (2(1 - r)))^(1/(eta+1))`. Its density is polynomial and peaks at 1 (children at the
/// parents); larger `eta` keeps children closer.
fn sbx_beta(r: f64, eta: f64) -> f64 {
    let e = 1.0 / (eta + 1.0);
    if r <= 0.5 { (2.0 * r).powf(e) } else { (1.0 / (2.0 * (1.0 - r))).powf(e) }
}

/// One SBX child of unit coordinates `a` and `b`: the two children are
/// `((1 + beta) a + (1 - beta) b) / 2` and `((1 - beta) a + (1 + beta) b) / 2`, and either is
/// taken with probability 1/2 (a trial is one child; this also swaps which parent it is near).
fn sbx_child(a: f64, b: f64, eta: f64, rng: &mut Rng) -> f64 {
    let beta = sbx_beta(rng.unit_f64(), eta);
    let (c1, c2) = (0.5 * ((1.0 + beta) * a + (1.0 - beta) * b), 0.5 * ((1.0 - beta) * a + (1.0 + beta) * b));
    let c = if rng.chance(0.5) { c1 } else { c2 };
    c.clamp(0.0, 1.0)
}

/// The child of parents `a` and `b` (internal values) by per-parameter crossover.
pub(super) fn crossover(space: &Space, a: &[f64], b: &[f64], eta: f64, rng: &mut Rng) -> Vec<f64> {
    space
        .params
        .iter()
        .zip(a.iter().zip(b))
        .map(|(p, (&x, &y))| match p.dist {
            Distribution::Float { .. } => p.dist.from_unit(sbx_child(p.dist.to_unit(x), p.dist.to_unit(y), eta, rng)),
            Distribution::Int { .. } | Distribution::Categorical { .. } => {
                if rng.chance(0.5) {
                    x
                } else {
                    y
                }
            }
        })
        .collect()
}

/// `x` with each parameter mutated with probability `rate`: a numeric step of standard
/// deviation `scale` in the unit coordinate, or another categorical choice.
pub(super) fn mutate(space: &Space, x: &[f64], rate: f64, scale: f64, rng: &mut Rng) -> Vec<f64> {
    space
        .params
        .iter()
        .zip(x)
        .map(|(p, &v)| {
            if !rng.chance(rate) {
                return v;
            }
            match &p.dist {
                Distribution::Categorical { choices } if choices.len() > 1 => {
                    // Draw among the other choices, so a mutation always changes something.
                    let current = p.dist.index_of(v);
                    let k = rng.below(choices.len() as u64 - 1);
                    (if k >= current { k + 1 } else { k }) as f64
                }
                Distribution::Categorical { .. } => v,
                _ => p.dist.from_unit(p.dist.to_unit(v) + scale * rng.normal()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SBX's spread factor at hand-worked draws: r = 1/2 gives 1 (children at the parents);
    /// with eta = 1, r = 1/8 gives sqrt(1/4) = 1/2 and r = 7/8 gives sqrt(4) = 2.
    #[test]
    fn sbx_beta_at_worked_draws() {
        assert!((sbx_beta(0.5, 20.0) - 1.0).abs() < 1e-12);
        assert!((sbx_beta(0.125, 1.0) - 0.5).abs() < 1e-12);
        assert!((sbx_beta(0.875, 1.0) - 2.0).abs() < 1e-12);
    }

    /// The children are symmetric about the parents' midpoint, so their mean over many draws
    /// is the midpoint (away from the clamp), and equal parents give the parent.
    #[test]
    fn sbx_children_centre_on_the_parents() {
        let mut rng = Rng::from_key(&[7]);
        let n = 20_000;
        let mean = (0..n).map(|_| sbx_child(0.4, 0.6, 2.0, &mut rng)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        assert_eq!(sbx_child(0.3, 0.3, 2.0, &mut rng), 0.3);
    }
}
