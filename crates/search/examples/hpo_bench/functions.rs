//! The continuous test functions of the search benchmark and of the sampler tests (the tests
//! include this file by path): Branin-Hoo and Hartmann-6 with their published minima.

#![allow(dead_code)]

/// Branin's minimum, 5 / (4 pi), reached at (-pi, 12.275), (pi, 2.275) and (9.42478, 2.475).
pub const BRANIN_MIN: f64 = 5.0 / (4.0 * std::f64::consts::PI);

/// Hartmann-6's minimum, reached near (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).
pub const HARTMANN6_MIN: f64 = -3.3223680114155147;

/// Branin-Hoo with the usual constants (a = 1, b = 5.1 / (4 pi^2), c = 5 / pi, r = 6, s = 10,
/// t = 1 / (8 pi)).
pub fn branin(x1: f64, x2: f64) -> f64 {
    use std::f64::consts::PI;
    let b = 5.1 / (4.0 * PI * PI);
    let c = 5.0 / PI;
    let t = 1.0 / (8.0 * PI);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

const H6_ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const H6_A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const H6_P: [[f64; 6]; 4] = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
];

/// Hartmann-6: -sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2) on [0, 1]^6.
pub fn hartmann6(x: &[f64]) -> f64 {
    -(0..4)
        .map(|i| {
            let inner: f64 = (0..6).map(|j| H6_A[i][j] * (x[j] - H6_P[i][j]).powi(2)).sum();
            H6_ALPHA[i] * (-inner).exp()
        })
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branin_is_minimal_at_its_three_published_minimisers() {
        use std::f64::consts::PI;
        // At (pi, 2.275) the squared term is exactly 0 and cos(pi) = -1: f = 10 / (8 pi).
        assert!((branin(PI, 2.275) - BRANIN_MIN).abs() < 1e-12);
        assert!((branin(-PI, 12.275) - BRANIN_MIN).abs() < 1e-12);
        assert!((branin(9.42478, 2.475) - BRANIN_MIN).abs() < 1e-9);
        // The corner (-5, 0): (0 - 5.1*25/(4 pi^2) - 25/pi - 6)^2 + 10 (1 - 1/(8 pi)) cos(-5) + 10 = 308.13.
        assert!((branin(-5.0, 0.0) - 308.1291).abs() < 1e-3);
    }

    #[test]
    fn hartmann6_reaches_its_published_minimum() {
        let x = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((hartmann6(&x) - HARTMANN6_MIN).abs() < 1e-9);
        assert!(hartmann6(&[0.5; 6]) > HARTMANN6_MIN + 2.0);
    }
}
