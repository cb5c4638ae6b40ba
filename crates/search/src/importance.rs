//! Parameter importance: which parameters explain the objective's variation across the
//! complete trials. A random forest of regression trees is fitted to (unit coordinates ->
//! first objective) and each parameter's importance is its mean decrease in impurity: the
//! variance its splits remove, summed over every tree and normalised to 1 (Breiman 2001).
//! Categoricals split as their choice index, which a forest handles well enough at these sizes.

use attune_rng::{Rng, tag};

use crate::space::Space;
use crate::trial::{Trial, TrialState};

/// Forest settings.
#[derive(Debug, Clone, Copy)]
pub struct ForestConfig {
    /// Trees.
    pub trees: usize,
    /// Deepest split.
    pub max_depth: usize,
    /// Fewest samples in a leaf.
    pub min_leaf: usize,
    /// Seed of the bootstrap samples.
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        ForestConfig { trees: 64, max_depth: 8, min_leaf: 2, seed: 0 }
    }
}

/// Each parameter's share of the explained variance, `(name, importance)` sorted from most to
/// least important; empty with fewer than 4 complete trials.
pub fn importances(space: &Space, trials: &[Trial], cfg: ForestConfig) -> Vec<(String, f64)> {
    let d = space.directions[0];
    let rows: Vec<(Vec<f64>, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.loss(d).map(|y| (space.to_unit(&t.params), y)))
        .collect();
    if rows.len() < 4 {
        return Vec::new();
    }
    let x: Vec<&[f64]> = rows.iter().map(|(x, _)| x.as_slice()).collect();
    let y: Vec<f64> = rows.iter().map(|&(_, y)| y).collect();
    let scores = forest_importance(&x, &y, space.len(), cfg);
    let mut out: Vec<(String, f64)> = space.params.iter().map(|p| p.name.clone()).zip(scores).collect();
    out.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    out
}

/// Mean decrease in impurity per feature of a bagged forest, normalised to sum 1 (all zero
/// when the target does not vary).
pub fn forest_importance(x: &[&[f64]], y: &[f64], features: usize, cfg: ForestConfig) -> Vec<f64> {
    let mut total = vec![0.0; features];
    for t in 0..cfg.trees {
        let mut rng = Rng::from_key(&[cfg.seed, tag(b"forest"), t as u64]);
        let sample: Vec<usize> = (0..y.len()).map(|_| rng.index(y.len())).collect();
        let mut gain = vec![0.0; features];
        grow(x, y, sample, 0, cfg, &mut gain);
        let sum: f64 = gain.iter().sum();
        if sum > 0.0 {
            for (acc, g) in total.iter_mut().zip(&gain) {
                *acc += g / sum;
            }
        }
    }
    let sum: f64 = total.iter().sum();
    if sum > 0.0 {
        total.iter_mut().for_each(|v| *v /= sum);
    }
    total
}

/// Sum of squared deviations from the mean.
fn sse(y: &[f64], idx: &[usize]) -> f64 {
    let n = idx.len() as f64;
    let mean = idx.iter().map(|&i| y[i]).sum::<f64>() / n;
    idx.iter().map(|&i| (y[i] - mean).powi(2)).sum()
}

/// Grows one node: the best split over every feature (exhaustive thresholds), credited to its
/// feature as the squared error it removes, then recurses.
fn grow(x: &[&[f64]], y: &[f64], idx: Vec<usize>, depth: usize, cfg: ForestConfig, gain: &mut [f64]) {
    if depth >= cfg.max_depth || idx.len() < 2 * cfg.min_leaf {
        return;
    }
    let parent = sse(y, &idx);
    if parent <= 1e-12 {
        return;
    }
    let mut best: Option<(f64, usize, f64)> = None;
    for f in (0..gain.len()).collect::<Vec<_>>() {
        let mut order = idx.clone();
        order.sort_by(|&a, &b| x[a][f].partial_cmp(&x[b][f]).unwrap_or(std::cmp::Ordering::Equal));
        // Prefix sums give each split's squared error in O(1).
        let (mut s, mut s2) = (0.0, 0.0);
        let (tot, tot2): (f64, f64) = order.iter().fold((0.0, 0.0), |(a, b), &i| (a + y[i], b + y[i] * y[i]));
        let n = order.len();
        for k in 0..n - 1 {
            let v = y[order[k]];
            s += v;
            s2 += v * v;
            let (nl, nr) = ((k + 1) as f64, (n - k - 1) as f64);
            if k + 1 < cfg.min_leaf || n - k - 1 < cfg.min_leaf || x[order[k]][f] == x[order[k + 1]][f] {
                continue;
            }
            let left = s2 - s * s / nl;
            let right = (tot2 - s2) - (tot - s) * (tot - s) / nr;
            let split = left + right;
            if best.is_none_or(|(b, _, _)| split < b) {
                best = Some((split, f, 0.5 * (x[order[k]][f] + x[order[k + 1]][f])));
            }
        }
    }
    let Some((split, f, threshold)) = best else { return };
    gain[f] += (parent - split).max(0.0);
    let (l, r): (Vec<usize>, Vec<usize>) = idx.into_iter().partition(|&i| x[i][f] <= threshold);
    grow(x, y, l, depth + 1, cfg, gain);
    grow(x, y, r, depth + 1, cfg, gain);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = Rng::from_key(&[seed]);
        (0..n).map(|_| (0..3).map(|_| rng.unit_f64()).collect()).collect()
    }

    #[test]
    fn the_parameter_that_drives_the_objective_dominates() {
        // y = 10 x0 + 0.5 x1 + 0 x2: x0 explains ~99.75% of the variance (100 : 0.25 : 0).
        let xs = grid(200, 1);
        let x: Vec<&[f64]> = xs.iter().map(|v| v.as_slice()).collect();
        let y: Vec<f64> = xs.iter().map(|v| 10.0 * v[0] + 0.5 * v[1]).collect();
        let imp = forest_importance(&x, &y, 3, ForestConfig::default());
        assert!((imp.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{imp:?}");
        assert!(imp[0] > 0.9, "{imp:?}");
        assert!(imp[1] > imp[2], "x1 matters a little, x2 not at all: {imp:?}");
    }

    #[test]
    fn an_interaction_is_shared_between_its_parameters() {
        // y = (x0 > 0.5) xor (x1 > 0.5): both parameters matter equally, x2 not at all.
        let xs = grid(400, 2);
        let x: Vec<&[f64]> = xs.iter().map(|v| v.as_slice()).collect();
        let y: Vec<f64> = xs.iter().map(|v| f64::from(u8::from((v[0] > 0.5) != (v[1] > 0.5)))).collect();
        let imp = forest_importance(&x, &y, 3, ForestConfig::default());
        assert!(imp[0] > 0.3 && imp[1] > 0.3 && imp[2] < 0.15, "{imp:?}");
    }

    #[test]
    fn a_constant_objective_has_no_important_parameter() {
        let xs = grid(50, 3);
        let x: Vec<&[f64]> = xs.iter().map(|v| v.as_slice()).collect();
        assert_eq!(forest_importance(&x, &[1.0; 50], 3, ForestConfig::default()), vec![0.0; 3]);
    }
}
