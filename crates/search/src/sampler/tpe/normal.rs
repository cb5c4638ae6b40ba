//! The normal distribution pieces the Parzen estimators need: the complementary error function,
//! interval masses that keep their precision in the tails, and truncated draws.

use attune_rng::Rng;

/// ln(sqrt(2 pi)), the log normaliser of the standard normal density.
pub(super) const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The complementary error function, from the Chebyshev fit in Press et al., "Numerical
/// Recipes" (2nd ed., section 6.2): fractional error below 1.2e-7 for every argument, which
/// also holds far in the tail, where `1 - erf` would have lost every digit.
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let tail = t * poly.exp();
    if x >= 0.0 { tail } else { 2.0 - tail }
}

/// The standard normal probability of `[a, b]` (`a <= b`). Both ends on one side of 0 are
/// taken as a difference of upper tails, so a cell far from the mean keeps its relative
/// precision instead of becoming `1 - 1`.
pub(super) fn interval_mass(a: f64, b: f64) -> f64 {
    let upper_tail = |z: f64| 0.5 * erfc(z * std::f64::consts::FRAC_1_SQRT_2);
    let mass = if a >= 0.0 {
        upper_tail(a) - upper_tail(b)
    } else if b <= 0.0 {
        upper_tail(-b) - upper_tail(-a)
    } else {
        1.0 - upper_tail(-a) - upper_tail(b)
    };
    mass.max(0.0)
}

/// A draw from N(mu, sigma) truncated to `[0, 1]`, by rejection. The callers keep `mu` in
/// `[0, 1]` and `sigma <= 1`, so at least a third of the mass lies inside and 64 tries fail
/// with probability below 1e-11; the rare miss falls back to the clamped draw, still valid.
pub(super) fn truncated_unit_draw(rng: &mut Rng, mu: f64, sigma: f64) -> f64 {
    let mut last = mu;
    for _ in 0..64 {
        last = mu + sigma * rng.normal();
        if (0.0..=1.0).contains(&last) {
            return last;
        }
    }
    last.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_tabulated_values() {
        // Abramowitz and Stegun, table 7.1: erf(0.5), erf(1), erf(2); erfc(5) = 1.5375e-12.
        for (x, erf) in [(0.5, 0.520_499_877_8), (1.0, 0.842_700_792_9), (2.0, 0.995_322_265_0)] {
            assert!((1.0 - erfc(x) - erf).abs() < 2e-7, "erf({x})");
            assert!((erfc(-x) - (1.0 + erf)).abs() < 2e-7, "erfc(-{x})");
        }
        assert!((erfc(5.0) / 1.537_459_794_4e-12 - 1.0).abs() < 1e-6);
        assert!((erfc(0.0) - 1.0).abs() < 1.2e-7);
    }

    #[test]
    fn interval_masses_are_the_normal_probabilities() {
        // P(-1 < Z < 1) = 0.682689492, P(1 < Z < 2) = 0.135905122, P(Z > 0) = 0.5.
        assert!((interval_mass(-1.0, 1.0) - 0.682_689_492).abs() < 1e-7);
        assert!((interval_mass(1.0, 2.0) - 0.135_905_122).abs() < 1e-7);
        assert!((interval_mass(-2.0, -1.0) - 0.135_905_122).abs() < 1e-7);
        assert!((interval_mass(0.0, 40.0) - 0.5).abs() < 1e-7);
        // Far tail: P(8 < Z < 9) = 6.2210e-16 - 1.1286e-19 = 6.2198e-16, lost entirely by 1 - Phi.
        let far = interval_mass(8.0, 9.0);
        assert!((far / 6.219_832e-16 - 1.0).abs() < 1e-3, "{far}");
    }

    #[test]
    fn truncated_draws_stay_inside_and_follow_the_kernel() {
        let mut rng = Rng::from_key(&[7]);
        let draws: Vec<f64> = (0..4000).map(|_| truncated_unit_draw(&mut rng, 0.0, 0.2)).collect();
        assert!(draws.iter().all(|u| (0.0..=1.0).contains(u)));
        // Half-normal with sigma 0.2: mean 0.2 * sqrt(2 / pi) = 0.1596 (standard error 0.002).
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.1596).abs() < 0.01, "{mean}");
    }
}
