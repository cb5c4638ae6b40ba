//! The bandwidths of the observations' kernels, one per numeric axis, in unit coordinates.
//!
//! Scott's rule (Scott 1992, "Multivariate density estimation"): `sigma = scale * n^(-1 / (d +
//! 4))` for `n` observations in `d` dimensions (every parameter counts, as the product kernel
//! spans them all), clipped below by hyperopt's "magic clip" `1 / min(100, n + 2)` (one more
//! than the mixture's components, observations and prior; Bergstra et al. 2011), so one
//! point never becomes a spike while few are known, and above by 1, the whole range. The scale
//! depends on the axis:
//!
//! - Continuous: the observations' standard deviation on the axis. As the good trials gather
//!   near an optimum the kernels shrink with them, so candidates refine it. (A fixed scale
//!   kept the kernels at 12-15% of the range however tight the good trials were, and lost 6 to
//!   20 times on Branin and Hartmann-6 to TPEs with data-driven bandwidths.)
//! - Discrete (ints, stepped floats): a fixed 0.2 of the range, the magnitude Watanabe (2023)
//!   gives for the multivariate TPE. The good trials of a small grid often share a value, a
//!   zero spread that would clip every kernel to a sliver of one cell, and TPE would then only
//!   redraw values already tried: measured worse on the HPOLib tables (docs/benchmarks-search.md).

/// Scott's scale for discrete axes, as a share of the unit range.
const DISCRETE_SCALE: f64 = 0.2;

/// The smallest bandwidth for `observations` kernels: `1 / min(100, observations + 2)`.
pub(super) fn magic_clip(observations: usize) -> f64 {
    1.0 / (observations as f64 + 2.0).min(100.0)
}

/// The bandwidth on a numeric axis where the observations' kernels are centred at `centres`
/// (unit coordinates), in a space of `dims` parameters.
pub(super) fn numeric(centres: &[f64], dims: usize, discrete: bool) -> f64 {
    let n = centres.len().max(1) as f64;
    let scale = if discrete { DISCRETE_SCALE } else { standard_deviation(centres) };
    (scale * n.powf(-1.0 / (dims as f64 + 4.0))).clamp(magic_clip(centres.len()), 1.0)
}

/// The population standard deviation (0 for no values).
fn standard_deviation(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_axes_scale_with_the_spread() {
        // 0.0, 0.1, ..., 0.9: mean 0.45, variance 0.285 - 0.2025 = 0.0825, sd 0.287228; in 2-D,
        // 10^(-1/6) = 0.681292, so 0.195686; the clip 1/12 is below it.
        let spread: Vec<f64> = (0..10).map(|k| k as f64 / 10.0).collect();
        assert!((numeric(&spread, 2, false) - 0.195_686).abs() < 1e-6);
        // Half the spread, half the bandwidth.
        let tight: Vec<f64> = spread.iter().map(|c| 0.3 + c / 2.0).collect();
        assert!((numeric(&tight, 2, false) - 0.195_686 / 2.0).abs() < 1e-6);
        // All at one point: no spread, so the clip 1 / (10 + 2).
        assert!((numeric(&[0.7; 10], 2, false) - 1.0 / 12.0).abs() < 1e-12);
        // One observation: the clip 1/3; none: the clip 1/2.
        assert!((numeric(&[0.2], 6, false) - 1.0 / 3.0).abs() < 1e-12);
        assert!((numeric(&[], 6, false) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn discrete_axes_use_a_fixed_scale_with_the_magic_clip() {
        // 10 observations in 2-D: 0.2 * 10^(-1/6) = 0.13626 whatever the values; the clip 1/12
        // = 0.0833 is below it.
        assert!((numeric(&[0.5; 10], 2, true) - 0.136_26).abs() < 1e-5);
        assert!((numeric(&[0.1, 0.9, 0.1, 0.9, 0.5, 0.5, 0.3, 0.3, 0.7, 0.7], 2, true) - 0.136_26).abs() < 1e-5);
        // 1 observation in 1-D: 0.2, raised to the clip 1/3.
        assert!((numeric(&[0.5], 1, true) - 1.0 / 3.0).abs() < 1e-12);
        // 1000 observations in 1-D: 0.2 * 1000^(-1/5) = 0.0502; the clip stops at 1/100.
        let many = vec![0.5; 1000];
        assert!((numeric(&many, 1, true) - 0.050_24).abs() < 1e-4);
        // 5000 in 1-D: 0.2 * 5000^(-1/5) = 0.0364; the clip 1/100 is still below.
        let more = vec![0.5; 5000];
        assert!((numeric(&more, 1, true) - 0.036_41).abs() < 1e-4);
    }
}
