//! The Recurrent Attention Model (docs/ram.md): output shapes, determinism from its seeds,
//! which loss trains which network, the core cell against finite differences, and a task
//! that only a policy that learns where to look can solve.

mod common;

use attune_nn::{
    GlimpsePolicy, NnError, ParamBuilder, ParamStore, RamConfig, RamMode, RecurrentAttentionModel, RnnCell, ram_loss,
};
use attune_optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use attune_tensor::{DType, Device, Rng, Tensor};
use common::{check_grads, grad_names, randn_var};

const CPU: Device = Device::Cpu;

fn tiny(policy: GlimpsePolicy) -> RamConfig {
    RamConfig {
        glimpse_size: 3,
        scales: 2,
        glimpses: 3,
        // Wide enough that some rectifiers of every layer are live at initialisation.
        what_hidden: 16,
        where_hidden: 8,
        glimpse_features: 16,
        hidden: 12,
        num_classes: 4,
        sigma: 0.2,
        policy,
        policy_trains_core: false,
    }
}

fn images(batch: usize, side: usize, seed: u64) -> Tensor {
    Rng::new(seed).rand([batch, side, side], DType::F32, &CPU).unwrap()
}

fn in_unit_box(t: &Tensor) -> bool {
    t.to_f64_vec().unwrap().iter().all(|v| (-1.0..=1.0).contains(v))
}

#[test]
fn outputs_have_one_location_log_prob_and_baseline_per_glimpse() {
    let x = images(5, 12, 1);
    let model = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Learned), 0, DType::F32, &CPU).unwrap();
    let out = model.forward(&x, RamMode::Sample, &mut Rng::new(2)).unwrap();
    assert_eq!(out.logits.dims(), [5, 4]);
    assert_eq!(out.locations.dims(), [5, 3, 2]);
    assert!(in_unit_box(&out.locations) && !out.locations.requires_grad());
    assert_eq!(out.log_probs.as_ref().unwrap().dims(), [5, 3]);
    assert_eq!(out.baselines.as_ref().unwrap().dims(), [5, 3]);

    // The mean path samples nothing, so it has no log-probabilities.
    let mean = model.forward(&x, RamMode::Mean, &mut Rng::new(2)).unwrap();
    assert!(mean.log_probs.is_none() && mean.baselines.is_some());

    let random = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Random), 0, DType::F32, &CPU).unwrap();
    let out = random.forward(&x, RamMode::Sample, &mut Rng::new(2)).unwrap();
    assert_eq!(out.locations.dims(), [5, 3, 2]);
    assert!(in_unit_box(&out.locations) && out.log_probs.is_none() && out.baselines.is_none());
    // The same network either way: the same parameters under the same names.
    let names = |m: &RecurrentAttentionModel| m.store().named().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&model), names(&random));
    assert!(names(&model).contains(&"core.hidden.weight".to_string()));
    assert_eq!(model.store().get("locator.weight").unwrap().dims(), [2, 12]);
}

#[test]
fn a_model_and_its_locations_are_determined_by_their_seeds() {
    let x = images(4, 10, 3);
    let run = |model_seed, path_seed| {
        let m = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Learned), model_seed, DType::F32, &CPU).unwrap();
        let out = m.forward(&x, RamMode::Sample, &mut Rng::new(path_seed)).unwrap();
        (out.logits.to_vec::<f32>().unwrap(), out.locations.to_vec::<f32>().unwrap())
    };
    assert_eq!(run(7, 1), run(7, 1));
    assert_ne!(run(7, 1).1, run(7, 2).1, "another path seed must sample other locations");
    assert_ne!(run(7, 1).0, run(8, 1).0, "another model seed must draw other weights");

    // The mean path is the same whatever the stream.
    let m = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Learned), 7, DType::F32, &CPU).unwrap();
    let a = m.forward(&x, RamMode::Mean, &mut Rng::new(1)).unwrap();
    let b = m.forward(&x, RamMode::Mean, &mut Rng::new(99)).unwrap();
    assert_eq!(a.logits.to_vec::<f32>().unwrap(), b.logits.to_vec::<f32>().unwrap());
    // Its first location is tanh(locator bias): the state starts at zero.
    let bias = m.store().get("locator.bias").unwrap().to_vec::<f32>().unwrap();
    let first = a.locations.narrow(1usize, 0, 1).unwrap().to_vec::<f32>().unwrap();
    for (k, v) in first.iter().enumerate() {
        assert!((v - bias[k % 2].tanh()).abs() < 1e-6, "{first:?} vs tanh({bias:?})");
    }
}

#[test]
fn the_classifier_trains_no_location_network_and_reinforce_no_classifier() {
    let x = images(6, 12, 4);
    let model = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Learned), 5, DType::F64, &CPU).unwrap();
    let out = model.forward(&x, RamMode::Sample, &mut Rng::new(6)).unwrap();
    let targets = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1], [6], &CPU).unwrap();
    let loss = ram_loss(&out, &targets).unwrap();
    let store = model.store();

    let ce = grad_names(&loss.classifier, store);
    assert!(ce.iter().all(|n| !n.starts_with("locator") && !n.starts_with("baseline")), "{ce:?}");
    for part in ["classifier.", "core.hidden.", "core.input.", "glimpse.what.", "glimpse.where."] {
        assert!(ce.iter().any(|n| n.starts_with(part)), "the cross-entropy must train {part}: {ce:?}");
    }
    let policy = grad_names(loss.policy.as_ref().unwrap(), store);
    assert_eq!(policy, ["locator.weight", "locator.bias"], "REINFORCE must train the location network only");
    let baseline = grad_names(loss.baseline.as_ref().unwrap(), store);
    assert_eq!(baseline, ["baseline.weight", "baseline.bias"], "the baseline loss must train the baseline only");

    // The reported figures follow their definitions.
    let predicted = out.logits.argmax(1usize, false).unwrap().to_vec::<i64>().unwrap();
    let right = predicted.iter().zip(targets.to_vec::<i64>().unwrap()).filter(|(p, t)| **p == *t).count();
    assert_eq!(loss.correct, right);
    assert!((loss.reward - right as f64 / 6.0).abs() < 1e-12);
    let b = out.baselines.as_ref().unwrap().to_vec::<f64>().unwrap();
    assert!((loss.baseline_mean.unwrap() - b.iter().sum::<f64>() / 18.0).abs() < 1e-12);
    assert!(loss.reinforce_var.unwrap() >= 0.0);
    let sum = loss.classifier.add(loss.policy.as_ref().unwrap()).unwrap().add(loss.baseline.as_ref().unwrap()).unwrap();
    assert!((loss.total.to_scalar::<f64>().unwrap() - sum.to_scalar::<f64>().unwrap()).abs() < 1e-12);

    // The random policy has only the classifier's loss.
    let random = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Random), 5, DType::F64, &CPU).unwrap();
    let out = random.forward(&x, RamMode::Sample, &mut Rng::new(6)).unwrap();
    let loss = ram_loss(&out, &targets).unwrap();
    assert!(loss.policy.is_none() && loss.baseline.is_none() && loss.reinforce_var.is_none());
    let bad = Tensor::from_slice(&[0i64, 1, 2, 4, 0, 1], [6], &CPU).unwrap();
    let e = ram_loss(&out, &bad).unwrap_err();
    assert!(matches!(e, NnError::Input { .. }) && e.to_string().contains("target 4"), "{e}");
}

#[test]
fn with_policy_trains_core_reinforce_reaches_the_core_and_glimpse_network_but_not_the_baseline() {
    let x = images(6, 12, 4);
    let cfg = RamConfig { policy_trains_core: true, ..tiny(GlimpsePolicy::Learned) };
    let model = RecurrentAttentionModel::new(&cfg, 5, DType::F64, &CPU).unwrap();
    let out = model.forward(&x, RamMode::Sample, &mut Rng::new(6)).unwrap();
    let targets = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1], [6], &CPU).unwrap();
    let loss = ram_loss(&out, &targets).unwrap();
    let policy = grad_names(loss.policy.as_ref().unwrap(), model.store());
    for part in ["locator.", "core.hidden.", "core.input.", "glimpse.what.", "glimpse.where."] {
        assert!(policy.iter().any(|n| n.starts_with(part)), "REINFORCE must reach {part}: {policy:?}");
    }
    assert!(policy.iter().all(|n| !n.starts_with("classifier") && !n.starts_with("baseline")), "{policy:?}");
    let baseline = grad_names(loss.baseline.as_ref().unwrap(), model.store());
    assert_eq!(baseline, ["baseline.weight", "baseline.bias"], "the baseline loss must train the baseline only");
    // The same seed samples the same path whichever way the gradient flows.
    let detached = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Learned), 5, DType::F64, &CPU).unwrap();
    let again = detached.forward(&x, RamMode::Sample, &mut Rng::new(6)).unwrap();
    assert_eq!(out.locations.to_vec::<f64>().unwrap(), again.locations.to_vec::<f64>().unwrap());
}

#[test]
fn the_rectifier_core_matches_finite_differences() {
    let store = ParamStore::new();
    let cell = RnnCell::new(&ParamBuilder::new(&store, 3, DType::F64, &CPU), 4, 5).unwrap();
    let (h, x) = (randn_var(&[3, 5], 1), randn_var(&[3, 4], 2));
    let f = || cell.forward(h.as_tensor(), x.as_tensor()).unwrap();
    check_grads("RnnCell", &store, &[h.clone(), x.clone()], f, 40, 1e-6);
}

#[test]
fn bad_configs_and_inputs_are_typed_errors() {
    for (cfg, want) in [
        (RamConfig { glimpses: 0, ..tiny(GlimpsePolicy::Learned) }, "glimpses 0"),
        (RamConfig { num_classes: 1, ..tiny(GlimpsePolicy::Learned) }, "num_classes"),
        (RamConfig { sigma: 0.0, ..tiny(GlimpsePolicy::Learned) }, "sigma"),
        (RamConfig { glimpse_size: 0, ..tiny(GlimpsePolicy::Learned) }, "size 0"),
    ] {
        let e = RecurrentAttentionModel::new(&cfg, 0, DType::F32, &CPU).unwrap_err();
        assert!(matches!(e, NnError::Config { .. }) && e.to_string().contains(want), "want {want}: {e}");
    }
    let m = RecurrentAttentionModel::new(&tiny(GlimpsePolicy::Learned), 0, DType::F32, &CPU).unwrap();
    let e = m.forward(&images(2, 4, 0).reshape([2, 16]).unwrap(), RamMode::Sample, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("(batch, rows, cols)"), "{e}");
    assert!(m.predict_averaged(&images(2, 4, 0), 0, &mut Rng::new(0)).is_err());
}

/// 16x16 images whose class shows only in the top-left 8x8 quadrant (ink there for class 1,
/// none for class 0), with the same ink in the other three quadrants for both classes.
fn corner_task(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::new(seed);
    let labels: Vec<i64> =
        rng.rand([n], DType::F64, &CPU).unwrap().to_vec::<f64>().unwrap().iter().map(|u| i64::from(*u < 0.5)).collect();
    let mut px = vec![0f32; n * 256];
    for (i, &label) in labels.iter().enumerate() {
        for r in 0..16 {
            for c in 0..16 {
                let corner = r < 8 && c < 8;
                if !corner || label == 1 {
                    px[i * 256 + r * 16 + c] = 1.0;
                }
            }
        }
    }
    (Tensor::from_vec(px, [n, 16, 16], &CPU).unwrap(), Tensor::from_vec(labels, [n], &CPU).unwrap())
}

fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    let p = logits.argmax(1usize, false).unwrap().to_vec::<i64>().unwrap();
    let t = labels.to_vec::<i64>().unwrap();
    p.iter().zip(&t).filter(|(a, b)| a == b).count() as f64 / t.len() as f64
}

/// Trains a one-glimpse 4x4 model on [`corner_task`] and returns its held-out accuracy.
fn train_corner(policy: GlimpsePolicy) -> (f64, RecurrentAttentionModel) {
    let cfg = RamConfig {
        glimpse_size: 4,
        scales: 1,
        glimpses: 1,
        what_hidden: 16,
        where_hidden: 8,
        glimpse_features: 16,
        hidden: 16,
        num_classes: 2,
        sigma: 0.4,
        policy,
        policy_trains_core: false,
    };
    let model = RecurrentAttentionModel::new(&cfg, 1, DType::F32, &CPU).unwrap();
    let group = ParamGroup::new(model.store().named());
    let mut adam = Adam::new(vec![group], AdamConfig { lr: 0.02, ..AdamConfig::default() }).unwrap();
    let mut rng = Rng::new(2);
    for step in 0..150 {
        let (x, y) = corner_task(32, 100 + step);
        let out = model.forward(&x, RamMode::Sample, &mut rng).unwrap();
        adam.step(&ram_loss(&out, &y).unwrap().total.backward().unwrap()).unwrap();
    }
    let (x, y) = corner_task(400, 7);
    let out = model.forward(&x, RamMode::Mean, &mut Rng::new(3)).unwrap();
    (accuracy(&out.logits, &y), model)
}

#[test]
fn a_learned_policy_finds_the_informative_corner_that_random_glimpses_mostly_miss() {
    let (learned, model) = train_corner(GlimpsePolicy::Learned);
    let (random, _) = train_corner(GlimpsePolicy::Random);
    // A 4x4 patch overlaps the top-left quadrant only when it starts before pixel 8 on both
    // axes, i.e. for locations below about 0.25: uniform locations do so with probability
    // (1.25 / 2)^2 = 0.39, so no classifier behind random glimpses exceeds 0.5 + 0.39 / 2 = 0.70.
    assert!(random < 0.8, "random glimpses reached {random}, above what they can see");
    assert!(learned > 0.95, "the learned policy reached only {learned} (random glimpses: {random})");
    let mean = model.forward(&corner_task(1, 0).0, RamMode::Mean, &mut Rng::new(0)).unwrap().locations;
    assert!(mean.to_vec::<f32>().unwrap().iter().all(|&l| l < 0.25), "the mean location {mean:?} is not in the corner");

    // Averaging sampled paths gives probabilities, and classifies at least as the paths do.
    let (x, y) = corner_task(200, 8);
    let p = model.predict_averaged(&x, 4, &mut Rng::new(4)).unwrap();
    let rows = p.sum(1usize, false).unwrap().to_vec::<f32>().unwrap();
    assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-5));
    assert!(accuracy(&p, &y) > 0.9, "averaged accuracy {}", accuracy(&p, &y));
}
