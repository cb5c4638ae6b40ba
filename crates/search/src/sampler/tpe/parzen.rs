//! Multivariate Parzen estimators: a weighted mixture with one kernel per observation (the
//! product of one kernel per parameter) and a prior kernel, as in Bergstra et al. (2011) and
//! Watanabe (2023, "Tree-structured Parzen estimator: understanding its algorithm components").
//!
//! Every numeric parameter lives in its unit coordinate ([`Distribution::to_unit`]), which is
//! the logarithm for log parameters, so one bandwidth rule serves all of them:
//!
//! - Continuous floats: a Gaussian truncated to `[0, 1]`.
//! - Ints and stepped floats: the same Gaussian, integrated over the cell of `[0, 1]` that
//!   `from_unit` maps to the value (cells of width `1 / n`; log ints use `[ln(v - 1/2),
//!   ln(v + 1/2)]`), so the kernel is a distribution over the values themselves.
//! - Categoricals: the observed choice gets weight `1 + e` and every choice `e`, normalised,
//!   with `e = prior_weight / observations`: the prior's weight spread over the kernels, so
//!   the kernels sharpen as observations accumulate.
//!
//! The observations' kernels share one bandwidth per numeric axis ([`bandwidth`]: Scott's rule
//! with the magic clip). Each observation has a weight (the caller's: 1, or less for old
//! trials); the prior kernel has `prior_weight`, is centred on the middle of every range with
//! bandwidth 1 (the whole range) and is uniform over choices.

use attune_rng::Rng;

use super::bandwidth;
use super::normal::{LN_SQRT_2PI, interval_mass, truncated_unit_draw};
use crate::space::Distribution;

/// Below this cell width per bandwidth a cell's mass is taken as density times width (relative
/// error about `(width / sigma)^2 / 24`), because the difference of two nearly equal tail
/// probabilities has lost its digits by then.
const MIDPOINT_CELL: f64 = 1e-2;

/// How one parameter is modelled.
#[derive(Debug, Clone)]
pub(super) enum Axis {
    /// A continuous float: a point in `[0, 1]`.
    Continuous(Distribution),
    /// An int or stepped float: a cell of `[0, 1]`.
    Discrete(Distribution),
    /// A categorical with this many choices.
    Categorical(usize),
}

/// Where a point lies on one axis.
#[derive(Debug, Clone, Copy)]
pub(super) enum Coord {
    /// A unit coordinate.
    At(f64),
    /// The unit-coordinate cell `[low, high]` of a discrete value.
    Cell(f64, f64),
    /// A choice's index.
    Choice(usize),
}

impl Axis {
    /// The model of a parameter.
    pub(super) fn of(dist: &Distribution) -> Axis {
        match dist {
            Distribution::Float { step: None, .. } => Axis::Continuous(dist.clone()),
            Distribution::Categorical { choices } => Axis::Categorical(choices.len()),
            _ => Axis::Discrete(dist.clone()),
        }
    }

    /// Where the internal value `x` lies.
    pub(super) fn coord(&self, x: f64) -> Coord {
        match self {
            Axis::Continuous(d) => Coord::At(d.to_unit(x)),
            Axis::Discrete(d) => {
                let (low, high) = cell(d, d.index_of(x));
                Coord::Cell(low, high)
            }
            Axis::Categorical(n) => Coord::Choice((x.round().max(0.0) as usize).min(n.saturating_sub(1))),
        }
    }

    /// A kernel's centre for the internal value `x`: its unit coordinate, or a choice index.
    fn centre(&self, x: f64) -> f64 {
        match self {
            Axis::Continuous(d) | Axis::Discrete(d) => d.to_unit(x),
            Axis::Categorical(_) => match self.coord(x) {
                Coord::Choice(k) => k as f64,
                _ => 0.0,
            },
        }
    }
}

/// The unit-coordinate cell of the `k`-th value of a discrete distribution.
fn cell(dist: &Distribution, k: u64) -> (f64, f64) {
    match dist {
        Distribution::Int { low, high, log: true, .. } => {
            // The same log map as `Distribution::to_unit`, at the half-way points between values.
            let v = dist.value_at(k);
            let (lo, hi) = ((*low as f64 - 0.5).ln(), (*high as f64 + 0.5).ln());
            let unit = |x: f64| ((x.ln() - lo) / (hi - lo)).clamp(0.0, 1.0);
            (unit(v - 0.5), unit(v + 0.5))
        }
        _ => {
            let n = dist.cardinality().unwrap_or(1).max(1) as f64;
            (k as f64 / n, (k as f64 + 1.0) / n)
        }
    }
}

/// One mixture component.
#[derive(Debug, Clone)]
struct Kernel {
    /// Unit coordinates (numeric axes) or choice indices (categorical axes).
    centre: Vec<f64>,
    /// Each axis's bandwidth, in unit coordinates (1 on categorical axes, where it is unused).
    sigma: Vec<f64>,
    /// ln of the Gaussian's mass inside `[0, 1]` per axis (0 on categorical axes).
    ln_inside: Vec<f64>,
    /// The prior component (uniform over choices).
    prior: bool,
    /// ln of the component's share of the mixture.
    ln_weight: f64,
}

/// A Parzen estimator over the whole space.
#[derive(Debug, Clone)]
pub(super) struct Parzen<'a> {
    axes: &'a [Axis],
    kernels: Vec<Kernel>,
    /// Each component's probability, for choosing one to draw from.
    shares: Vec<f64>,
    /// The categorical kernels' smoothing `e` (see the module's notes).
    choice_smoothing: f64,
}

impl<'a> Parzen<'a> {
    /// The estimator of `observations` (internal values, one per axis) with their `weights`
    /// (one each, positive) and the prior with `prior_weight`.
    pub(super) fn new(axes: &'a [Axis], observations: &[&[f64]], weights: &[f64], prior_weight: f64) -> Parzen<'a> {
        let total = weights.iter().sum::<f64>() + prior_weight;
        let centres: Vec<Vec<f64>> =
            observations.iter().map(|x| axes.iter().zip(x.iter()).map(|(a, &v)| a.centre(v)).collect()).collect();
        let sigma: Vec<f64> = axes
            .iter()
            .enumerate()
            .map(|(j, axis)| {
                let column: Vec<f64> = centres.iter().map(|c| c[j]).collect();
                match axis {
                    Axis::Continuous(_) => bandwidth::numeric(&column, axes.len(), false),
                    Axis::Discrete(_) => bandwidth::numeric(&column, axes.len(), true),
                    // Unused: categorical kernels have no bandwidth.
                    Axis::Categorical(_) => 1.0,
                }
            })
            .collect();
        let mut kernels: Vec<Kernel> = centres
            .into_iter()
            .zip(weights)
            .map(|(centre, &w)| Kernel {
                ln_inside: ln_inside(axes, &centre, &sigma),
                centre,
                sigma: sigma.clone(),
                prior: false,
                ln_weight: (w / total).ln(),
            })
            .collect();
        let centre = vec![0.5; axes.len()];
        let whole = vec![1.0; axes.len()];
        kernels.push(Kernel {
            ln_inside: ln_inside(axes, &centre, &whole),
            centre,
            sigma: whole,
            prior: true,
            ln_weight: (prior_weight / total).ln(),
        });
        let shares = kernels.iter().map(|k| k.ln_weight.exp()).collect();
        let choice_smoothing = if observations.is_empty() { 1.0 } else { prior_weight / observations.len() as f64 };
        Parzen { axes, kernels, shares, choice_smoothing }
    }

    /// (observed choice, each other choice) probabilities of an observation's categorical
    /// kernel over `n` choices.
    fn choice_probabilities(&self, n: usize) -> (f64, f64) {
        let e = self.choice_smoothing;
        let z = 1.0 + n as f64 * e;
        ((1.0 + e) / z, e / z)
    }

    /// ln of the mixture's density (mass for discrete axes) at `coords`.
    pub(super) fn ln_density(&self, coords: &[Coord]) -> f64 {
        let terms: Vec<f64> = self.kernels.iter().map(|k| k.ln_weight + self.ln_kernel(k, coords)).collect();
        log_sum_exp(&terms)
    }

    fn ln_kernel(&self, kernel: &Kernel, coords: &[Coord]) -> f64 {
        let mut total = 0.0;
        for (axis, (((&coord, &mu), &ln_inside), &s)) in
            self.axes.iter().zip(coords.iter().zip(&kernel.centre).zip(&kernel.ln_inside).zip(&kernel.sigma))
        {
            total += match (coord, axis) {
                (Coord::At(u), _) => {
                    let z = (u - mu) / s;
                    -0.5 * z * z - s.ln() - LN_SQRT_2PI - ln_inside
                }
                (Coord::Cell(a, b), _) if b - a < MIDPOINT_CELL * s => {
                    let z = (0.5 * (a + b) - mu) / s;
                    -0.5 * z * z - s.ln() - LN_SQRT_2PI + (b - a).ln() - ln_inside
                }
                (Coord::Cell(a, b), _) => interval_mass((a - mu) / s, (b - mu) / s).ln() - ln_inside,
                (Coord::Choice(_), Axis::Categorical(n)) if kernel.prior => -(*n as f64).ln(),
                (Coord::Choice(k), Axis::Categorical(n)) => {
                    let (observed, other) = self.choice_probabilities(*n);
                    if k as f64 == mu { observed.ln() } else { other.ln() }
                }
                (Coord::Choice(_), _) => 0.0,
            };
        }
        total
    }

    /// A draw from the mixture: internal values, valid for the space.
    pub(super) fn draw(&self, rng: &mut Rng) -> Vec<f64> {
        let kernel = &self.kernels[pick(rng, &self.shares)];
        self.axes
            .iter()
            .zip(kernel.centre.iter().zip(&kernel.sigma))
            .map(|(axis, (&mu, &sigma))| match axis {
                Axis::Continuous(d) => d.from_unit(truncated_unit_draw(rng, mu, sigma)),
                Axis::Discrete(d) => {
                    let u = truncated_unit_draw(rng, mu, sigma);
                    d.value_at(d.index_of(d.from_unit(u)))
                }
                Axis::Categorical(n) if kernel.prior => rng.index(*n) as f64,
                Axis::Categorical(n) => {
                    let (observed, _) = self.choice_probabilities(*n);
                    let own = mu as usize;
                    if *n <= 1 || rng.chance(observed) {
                        own as f64
                    } else {
                        // One of the other n - 1 choices, uniformly.
                        let k = rng.index(n - 1);
                        (if k >= own { k + 1 } else { k }) as f64
                    }
                }
            })
            .collect()
    }
}

/// ln of the Gaussian's mass inside `[0, 1]` on each numeric axis.
fn ln_inside(axes: &[Axis], centre: &[f64], sigma: &[f64]) -> Vec<f64> {
    axes.iter()
        .zip(centre.iter().zip(sigma))
        .map(|(axis, (&mu, &sigma))| match axis {
            Axis::Categorical(_) => 0.0,
            _ => interval_mass(-mu / sigma, (1.0 - mu) / sigma).ln(),
        })
        .collect()
}

/// An index drawn with probability proportional to `shares`.
fn pick(rng: &mut Rng, shares: &[f64]) -> usize {
    let mut target = rng.unit_f64() * shares.iter().sum::<f64>();
    for (i, &s) in shares.iter().enumerate() {
        if target < s {
            return i;
        }
        target -= s;
    }
    shares.len() - 1
}

/// ln(sum(exp(terms))) without overflow; `-inf` for no terms or all `-inf`.
fn log_sum_exp(terms: &[f64]) -> f64 {
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return top;
    }
    top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(low: i64, high: i64, log: bool) -> Distribution {
        Distribution::Int { low, high, step: 1, log }
    }

    #[test]
    fn log_int_cells_tile_the_unit_interval() {
        let d = int(1, 100, true);
        let mut previous_high = 0.0;
        for k in 0..100 {
            let (a, b) = cell(&d, k);
            assert!((a - previous_high).abs() < 1e-12 && b > a, "cell {k}: [{a}, {b}]");
            // The value's own unit coordinate lies in its cell.
            let u = d.to_unit(d.value_at(k));
            assert!(a <= u && u <= b);
            previous_high = b;
        }
        assert!((previous_high - 1.0).abs() < 1e-12);
    }

    #[test]
    fn discrete_and_categorical_kernels_are_distributions() {
        for (dist, n) in [(int(0, 9, false), 10), (int(1, 1000, true), 1000), (int(-3, 3, false), 7)] {
            let axes = [Axis::of(&dist)];
            let obs = [dist.value_at(n / 3)];
            let parzen = Parzen::new(&axes, &[&obs[..]], &[1.0], 1.0);
            let total: f64 = (0..n).map(|k| parzen.ln_density(&[axes[0].coord(dist.value_at(k))]).exp()).sum();
            assert!((total - 1.0).abs() < 1e-5, "{dist:?}: {total}");
        }
        let axes = [Axis::Categorical(4)];
        let parzen = Parzen::new(&axes, &[&[2.0][..], &[2.0][..]], &[1.0, 1.0], 1.0);
        let p: Vec<f64> = (0..4).map(|k| parzen.ln_density(&[Coord::Choice(k)]).exp()).collect();
        // Two kernels with e = 1/2: observed 1.5 / 3 = 0.5, others 0.5 / 3; prior 1/4 each;
        // mixture weights 2/3 and 1/3.
        assert!((p[2] - (2.0 / 3.0 * 0.5 + 1.0 / 12.0)).abs() < 1e-12);
        assert!((p[0] - (2.0 / 3.0 / 6.0 + 1.0 / 12.0)).abs() < 1e-12);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn continuous_density_integrates_to_one_and_draws_are_valid() {
        let dist = Distribution::Float { low: 1e-4, high: 1.0, log: true, step: None };
        let axes = [Axis::of(&dist)];
        let parzen = Parzen::new(&axes, &[&[1e-4][..], &[0.01][..]], &[1.0, 1.0], 1.0);
        // The density in unit coordinates, by the midpoint rule over 2000 cells.
        let total: f64 =
            (0..2000).map(|i| parzen.ln_density(&[Coord::At((i as f64 + 0.5) / 2000.0)]).exp() / 2000.0).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        let mut rng = Rng::from_key(&[3]);
        assert!((0..500).all(|_| dist.contains(parzen.draw(&mut rng)[0])));
    }
}
