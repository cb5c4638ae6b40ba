//! The Gaussian location policy and the REINFORCE estimator (docs/ram.md, "REINFORCE"): the
//! log-density against its closed form and finite differences, unbiasedness and variance
//! reduction on a bandit whose expected reward is known, convergence with Adam, and which
//! parts receive no gradient.

use attune_nn::reinforce::{gaussian_log_prob, reinforce_loss, sample_gaussian};
use attune_nn::{GlimpseSensor, NnError};
use attune_optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use attune_tensor::grad_check::assert_grad;
use attune_tensor::{CrossEntropyOpts, DType, Device, Rng, Tensor};

const CPU: Device = Device::Cpu;

fn f64s(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape.to_vec(), &CPU).unwrap()
}

#[test]
fn log_prob_is_the_gaussian_log_density_summed_over_the_location() {
    // The standard normal at its mean: -ln(2 pi) / 2 per dimension.
    let lp = gaussian_log_prob(&f64s(&[0.0], &[1, 1]), &f64s(&[0.0], &[1, 1]), 1.0).unwrap();
    assert!((lp.to_vec::<f64>().unwrap()[0] + 0.918_938_533_204_672_7).abs() < 1e-15);

    let mean = [0.1, -0.4, 0.7, 0.0, -1.0, 0.25];
    let sample = [0.3, -0.35, 0.2, 0.9, -1.2, 0.25];
    for sigma in [0.05, 0.2, 1.7] {
        let lp = gaussian_log_prob(&f64s(&mean, &[3, 2]), &f64s(&sample, &[3, 2]), sigma).unwrap();
        assert_eq!(lp.dims(), [3]);
        let lp = lp.to_vec::<f64>().unwrap();
        for b in 0..3 {
            // The log of the product of the two densities exp(-z^2 / 2) / (sigma sqrt(2 pi)).
            let density: f64 = (0..2)
                .map(|d| {
                    let z = (sample[2 * b + d] - mean[2 * b + d]) / sigma;
                    (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
                })
                .product();
            assert!((lp[b] - density.ln()).abs() < 1e-12 * density.ln().abs().max(1.0), "sigma {sigma} row {b}");
        }
    }
}

#[test]
fn log_prob_gradient_matches_finite_differences_in_the_mean_only() {
    let sample = f64s(&[0.3, -0.35, 0.2, 0.9, -1.2, 0.25], &[3, 2]);
    let mean = f64s(&[0.1, -0.4, 0.7, 0.0, -1.0, 0.3], &[3, 2]);
    let f = |ts: &[Tensor]| {
        gaussian_log_prob(&ts[0], &sample, 0.3).map_err(|e| match e {
            NnError::Tensor(t) => t,
            other => panic!("{other}"),
        })
    };
    assert_grad("gaussian_log_prob", f, std::slice::from_ref(&mean), 1e-7).unwrap();

    // d log p / d mean = (sample - mean) / sigma^2; a sample built from the mean (here
    // mean + noise, still attached to the graph) is taken as a constant all the same.
    let m = mean.to_var().unwrap();
    let noise = f64s(&[0.2, 0.05, -0.5, 0.9, -0.2, -0.05], &[3, 2]);
    let attached_sample = m.add(&noise).unwrap();
    let grads = gaussian_log_prob(&m, &attached_sample, 0.3).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(&m).unwrap().to_vec::<f64>().unwrap();
    for (gi, ni) in g.iter().zip(noise.to_vec::<f64>().unwrap()) {
        assert!((gi - ni / 0.09).abs() < 1e-12, "{g:?}");
    }
}

/// `n` REINFORCE estimates of `d E[R] / d mu` for the bandit `a ~ N(mu, sigma^2)`,
/// `R = -(a - 3)^2`, each from its own action: the mean is a `(n, 1)` variable holding `mu`
/// in every row, so row `i`'s gradient is sample `i`'s estimate (times `-1 / n`, undone here).
fn bandit_estimates(mu: f64, sigma: f64, baseline: Option<f64>, n: usize, seed: u64) -> Vec<f64> {
    let mean = Tensor::full(mu, [n, 1], DType::F64, &CPU).unwrap().to_var().unwrap();
    let a = sample_gaussian(&mean, sigma, &mut Rng::new(seed)).unwrap();
    assert!(!a.requires_grad(), "the sample must be a constant");
    let rewards: Vec<f64> = a.to_vec::<f64>().unwrap().iter().map(|a| -(a - 3.0) * (a - 3.0)).collect();
    let log_probs = gaussian_log_prob(&mean, &a, sigma).unwrap().unsqueeze(1usize).unwrap();
    let b = baseline.map(|b| Tensor::full(b, [n, 1], DType::F64, &CPU).unwrap());
    let loss = reinforce_loss(&log_probs, &f64s(&rewards, &[n]), b.as_ref()).unwrap();
    let grads = loss.policy.backward().unwrap();
    grads.get(&mean).unwrap().to_vec::<f64>().unwrap().iter().map(|g| -g * n as f64).collect()
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    (m, x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64)
}

#[test]
fn reinforce_is_unbiased_on_a_bandit_and_a_baseline_reduces_its_variance() {
    let (sigma, n) = (1.0, 20_000);
    for (mu, seed) in [(0.5, 1), (4.0, 2), (3.0, 3)] {
        // With a = mu + z (sigma = 1) and d = mu - 3: E[R] = -(d^2 + 1), so d E[R] / d mu = -2d.
        let d: f64 = mu - 3.0;
        let want = -2.0 * d;
        let expected_reward = -((mu - 3.0) * (mu - 3.0) + sigma * sigma);
        let (plain_mean, plain_var) = mean_var(&bandit_estimates(mu, sigma, None, n, seed));
        let (base_mean, base_var) = mean_var(&bandit_estimates(mu, sigma, Some(expected_reward), n, seed + 100));
        for (what, m, v) in [("no baseline", plain_mean, plain_var), ("baseline", base_mean, base_var)] {
            let se = (v / n as f64).sqrt();
            assert!((m - want).abs() < 4.0 * se, "mu {mu} {what}: mean estimate {m} vs {want} (standard error {se})");
        }
        // The estimates are -(d + z)^2 z and -(2 d z + z^2 - 1) z; their variances, from the
        // normal moments E z^2 = 1, E z^4 = 3, E z^6 = 15, are d^4 + 14 d^2 + 15 and 8 d^2 + 10.
        let (plain_theory, base_theory) = (d.powi(4) + 14.0 * d * d + 15.0, 8.0 * d * d + 10.0);
        for (what, got, theory) in [("no baseline", plain_var, plain_theory), ("baseline", base_var, base_theory)] {
            assert!((got / theory - 1.0).abs() < 0.15, "mu {mu} {what}: variance {got}, theory {theory}");
        }
        assert!(base_var < plain_var, "mu {mu}: variance {base_var} with the baseline vs {plain_var} without");
    }
}

#[test]
fn adam_on_reinforce_and_a_learned_baseline_finds_the_bandit_optimum() {
    let (sigma, batch) = (0.5, 64);
    let mu = Tensor::zeros([1, 1], DType::F64, &CPU).unwrap().to_var().unwrap();
    let b = Tensor::zeros([1, 1], DType::F64, &CPU).unwrap().to_var().unwrap();
    let group = ParamGroup::new(vec![("mu".into(), mu.clone()), ("baseline".into(), b.clone())]);
    let mut adam = Adam::new(vec![group], AdamConfig { lr: 0.05, ..AdamConfig::default() }).unwrap();
    let mut rng = Rng::new(7);
    let mut tail = Vec::new();
    for step in 0..400 {
        let mean = mu.broadcast_as([batch, 1]).unwrap();
        let a = sample_gaussian(&mean, sigma, &mut rng).unwrap();
        let rewards: Vec<f64> = a.to_vec::<f64>().unwrap().iter().map(|a| -(a - 3.0) * (a - 3.0)).collect();
        let log_probs = gaussian_log_prob(&mean, &a, sigma).unwrap().unsqueeze(1usize).unwrap();
        let baselines = b.broadcast_as([batch, 1]).unwrap();
        let loss = reinforce_loss(&log_probs, &f64s(&rewards, &[batch]), Some(&baselines)).unwrap();
        adam.step(&loss.total().unwrap().backward().unwrap()).unwrap();
        if step >= 300 {
            tail.push((mu.to_vec::<f64>().unwrap()[0], b.to_vec::<f64>().unwrap()[0]));
        }
    }
    let mu_end = tail.iter().map(|t| t.0).sum::<f64>() / tail.len() as f64;
    let b_end = tail.iter().map(|t| t.1).sum::<f64>() / tail.len() as f64;
    assert!((mu_end - 3.0).abs() < 0.1, "mu ended near {mu_end}, not 3");
    // At the optimum E[R] = -sigma^2 = -0.25, which the baseline learns to predict.
    assert!((b_end + 0.25).abs() < 0.15, "baseline ended near {b_end}, not -0.25");
}

#[test]
fn policy_loss_moves_only_the_policy_and_baseline_loss_only_the_baseline() {
    let mean = f64s(&[0.1, -0.2, 0.3, 0.4], &[2, 2]).to_var().unwrap();
    let sample = sample_gaussian(&mean, 0.2, &mut Rng::new(3)).unwrap();
    let log_probs = gaussian_log_prob(&mean, &sample, 0.2).unwrap().unsqueeze(1usize).unwrap();
    let baselines = f64s(&[0.3, 0.6], &[2, 1]).to_var().unwrap();
    let rewards = f64s(&[1.0, 0.0], &[2]).to_var().unwrap();
    let loss = reinforce_loss(&log_probs, &rewards, Some(&baselines)).unwrap();

    let g = loss.policy.backward().unwrap();
    assert!(g.get(&mean).is_some());
    assert!(g.get(&baselines).is_none() && g.get(&rewards).is_none(), "the advantage must be detached");

    let g = loss.baseline.as_ref().unwrap().backward().unwrap();
    // d/db mean((b - R)^2) = 2 (b - R) / 2 entries.
    let gb = g.get(&baselines).unwrap().to_vec::<f64>().unwrap();
    assert!((gb[0] - (0.3 - 1.0)).abs() < 1e-12 && (gb[1] - 0.6).abs() < 1e-12, "{gb:?}");
    assert!(g.get(&mean).is_none() && g.get(&rewards).is_none(), "the baseline loss must train only the baseline");

    // The policy loss value: mean over episodes of -(R - b) log p.
    let lp = log_probs.to_vec::<f64>().unwrap();
    let want = (-(1.0 - 0.3) * lp[0] - (0.0 - 0.6) * lp[1]) / 2.0;
    assert!((loss.policy.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    let no_baseline = reinforce_loss(&log_probs, &rewards, None).unwrap();
    assert!(no_baseline.baseline.is_none());
    assert!((no_baseline.policy.to_scalar::<f64>().unwrap() + lp[0] / 2.0).abs() < 1e-12);
}

#[test]
fn the_classifier_loss_sends_no_gradient_to_the_location_policy() {
    // A one-glimpse RAM in miniature: a location network (weights `loc_w`) proposes a mean,
    // the location is sampled and clamped, the sensor looks there, and a linear classifier
    // (weights `cls_w`) reads the glimpse.
    let (batch, classes) = (3, 4);
    let sensor = GlimpseSensor::new(2, 2).unwrap();
    let images: Vec<f64> = (0..batch * 36).map(|k| ((k * 7) % 11) as f64 / 10.0).collect();
    let images = f64s(&images, &[batch, 6, 6]);
    let hidden = f64s(&[0.5, -1.0, 0.2, 0.3, 0.8, -0.6], &[batch, 2]);
    let loc_w = f64s(&[0.4, -0.3, 0.2, 0.9], &[2, 2]).to_var().unwrap();
    let cls_w = Rng::new(5).randn([sensor.out_dim(), classes], DType::F64, &CPU).unwrap().to_var().unwrap();
    let targets = Tensor::from_slice(&[0i64, 2, 3], [batch], &CPU).unwrap();

    let mean = hidden.matmul(&loc_w).unwrap().tanh().unwrap();
    let sample = sample_gaussian(&mean, 0.1, &mut Rng::new(9)).unwrap();
    let glimpse = sensor.forward(&images, &sample.clamp(-1.0, 1.0).unwrap()).unwrap();
    let logits = glimpse.reshape([batch, sensor.out_dim()]).unwrap().matmul(&cls_w).unwrap();
    let ce = logits.cross_entropy(&targets, CrossEntropyOpts::default()).unwrap();

    let g = ce.backward_retain_graph().unwrap();
    assert!(g.get(&cls_w).is_some_and(|t| t.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0));
    assert!(g.get(&loc_w).is_none(), "the classifier loss reached the location network through the sample");

    // The location network learns from REINFORCE alone, and that loss leaves the classifier be.
    let rewards = f64s(&[1.0, 0.0, 1.0], &[batch]);
    let log_probs = gaussian_log_prob(&mean, &sample, 0.1).unwrap().unsqueeze(1usize).unwrap();
    let g = reinforce_loss(&log_probs, &rewards, None).unwrap().policy.backward().unwrap();
    assert!(g.get(&loc_w).is_some_and(|t| t.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0));
    assert!(g.get(&cls_w).is_none());
}

#[test]
fn bad_shapes_and_sigmas_are_typed_errors() {
    let m = f64s(&[0.0, 0.0], &[1, 2]);
    for sigma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = gaussian_log_prob(&m, &m, sigma).unwrap_err();
        assert!(matches!(e, NnError::Input { .. }) && e.to_string().contains("sigma"), "{e}");
        assert!(sample_gaussian(&m, sigma, &mut Rng::new(0)).is_err());
    }
    let e = gaussian_log_prob(&m, &f64s(&[0.0, 0.0], &[2, 1]), 1.0).unwrap_err();
    assert!(e.to_string().contains("[2, 1]") && e.to_string().contains("[1, 2]"), "{e}");
    let e = gaussian_log_prob(&Tensor::scalar(0.0f64, &CPU).unwrap(), &Tensor::scalar(0.0f64, &CPU).unwrap(), 1.0)
        .unwrap_err();
    assert!(matches!(e, NnError::Input { .. }), "{e}");

    let lp = f64s(&[0.0; 6], &[2, 3]);
    let r = f64s(&[1.0, 0.0], &[2]);
    let cases: [(Tensor, Tensor, Option<Tensor>, &str); 5] = [
        (f64s(&[0.0; 2], &[2]), r.clone(), None, "(batch, glimpses)"),
        (f64s(&[], &[0, 3]), f64s(&[], &[0]), None, "at least one episode"),
        (lp.clone(), f64s(&[1.0; 3], &[3]), None, "rewards must be (batch,) = [2]"),
        (lp.clone(), r.clone(), Some(f64s(&[0.0; 2], &[2, 1])), "baselines [2, 1]"),
        (lp.clone(), r.to_dtype(DType::F32).unwrap(), None, "F32"),
    ];
    for (lp, r, b, want) in cases {
        let e = reinforce_loss(&lp, &r, b.as_ref()).unwrap_err();
        assert!(matches!(e, NnError::Input { .. }) && e.to_string().contains(want), "want {want:?}: {e}");
    }
}
