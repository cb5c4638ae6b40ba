//! Test support shared by the sampler tests: a study driven to completion on a test
//! objective, the objectives with known optima, and the median used to compare samplers over
//! seeds.

#![allow(dead_code)]

use std::sync::Arc;

use attune_search::sampler::{SampleContext, SamplerConfig};
use attune_search::{Finish, MemoryStorage, Space, Study, StudyRecord, Trial};

/// A fresh in-memory study of `space` sampled by `config` with `seed`.
pub fn study(config: &SamplerConfig, space: &Space, seed: u64) -> Study {
    let record = StudyRecord {
        space: space.clone(),
        sampler: serde_json::to_value(config).expect("a sampler config serialises"),
        pruner: None,
        seed,
        driver: serde_json::Value::Null,
    };
    Study::open(Arc::new(MemoryStorage::new()), record, config.build(), None).expect("a new study opens")
}

/// Runs `trials` trials, `workers` asked at a time before any of them is told (as parallel
/// workers would), each scored by `objective(number, internal params)`; returns every trial.
pub fn run_batched(
    config: &SamplerConfig,
    space: &Space,
    seed: u64,
    trials: usize,
    workers: usize,
    objective: impl Fn(u64, &[f64]) -> f64,
) -> Vec<Trial> {
    let study = study(config, space, seed);
    let mut done = 0;
    while done < trials {
        let batch: Vec<_> = (0..workers.min(trials - done)).map(|_| study.ask("test").expect("ask succeeds")).collect();
        for asked in &batch {
            let loss = objective(asked.number, &asked.params);
            study.tell(asked.number, Finish::complete(vec![loss])).expect("tell succeeds");
        }
        done += batch.len();
    }
    study.trials().expect("trials are readable")
}

/// Runs `trials` trials one after another; returns every trial.
pub fn run(
    config: &SamplerConfig,
    space: &Space,
    seed: u64,
    trials: usize,
    objective: impl Fn(u64, &[f64]) -> f64,
) -> Vec<Trial> {
    run_batched(config, space, seed, trials, 1, objective)
}

/// The smallest first value of the complete trials.
pub fn best(trials: &[Trial]) -> f64 {
    trials.iter().filter_map(|t| t.values.as_ref().map(|v| v[0])).fold(f64::INFINITY, f64::min)
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The best value found by `config` on each of `seeds`, `trials` trials each.
pub fn bests(
    config: &SamplerConfig,
    space: &Space,
    seeds: std::ops::Range<u64>,
    trials: usize,
    objective: impl Fn(u64, &[f64]) -> f64 + Copy,
) -> Vec<f64> {
    seeds.map(|seed| best(&run(config, space, seed, trials, objective))).collect()
}

/// A sampling context over `trials`, asking for the next number.
pub fn context<'a>(space: &'a Space, trials: &'a [Trial], seed: u64) -> SampleContext<'a> {
    SampleContext { space, trials, seed, number: trials.len() as u64 }
}

/// A finished trial built by hand: `loss` `Some` for complete, `None` for failed.
pub fn finished(number: u64, params: Vec<f64>, loss: Option<f64>) -> Trial {
    let state = if loss.is_some() { attune_search::TrialState::Complete } else { attune_search::TrialState::Failed };
    Trial {
        values: loss.map(|l| vec![l]),
        worker: "test".into(),
        finished: Some(0.0),
        error: loss.is_none().then(|| "failed by the test".to_string()),
        ..Trial::new(number, state, params)
    }
}

/// A four-dimensional Rastrigin space, `x0..x3` in `[-5.12, 5.12]`.
pub fn rastrigin_space() -> Space {
    let params: String = (0..4).map(|i| format!("x{i} = {{ type = \"float\", low = -5.12, high = 5.12 }}\n")).collect();
    Space::from_toml(&format!("[params]\n{params}"), "rastrigin").expect("the Rastrigin space parses")
}

/// Rastrigin's function, `10 d + sum (x^2 - 10 cos(2 pi x))`: minimum 0 at the origin, a
/// local minimum near every integer point.
pub fn rastrigin(x: &[f64]) -> f64 {
    10.0 * x.len() as f64 + x.iter().map(|v| v * v - 10.0 * (std::f64::consts::TAU * v).cos()).sum::<f64>()
}

/// A four-dimensional quadratic on the Rastrigin space, minimum 0 at `(1, -2, 0.5, 3)`.
pub fn quadratic(x: &[f64]) -> f64 {
    const CENTRE: [f64; 4] = [1.0, -2.0, 0.5, 3.0];
    x.iter().zip(CENTRE).map(|(v, c)| (v - c) * (v - c)).sum()
}

/// A space with every kind of parameter (parameters sort by name: act, dropout, layers, lr, width).
pub fn mixed_space() -> Space {
    Space::from_toml(
        r#"
        [params]
        lr = { type = "float", low = 1e-5, high = 1e-1, log = true }
        dropout = { type = "float", low = 0.0, high = 0.5, step = 0.05 }
        layers = { type = "int", low = 1, high = 12 }
        width = { type = "int", low = 16, high = 1024, log = true }
        act = { type = "categorical", choices = ["relu", "gelu", "tanh", "sigmoid", "silu"] }
        "#,
        "mixed",
    )
    .expect("the mixed space parses")
}

/// A loss on [`mixed_space`] with its minimum 0 at act = "gelu", dropout = 0.1, layers = 6,
/// lr = 1e-3, width = 256.
pub fn mixed_loss(x: &[f64]) -> f64 {
    let act = [1.0, 0.0, 2.0, 3.0, 0.5][x[0] as usize];
    let dropout = ((x[1] - 0.1) / 0.1).powi(2);
    let layers = ((x[2] - 6.0) / 2.0).powi(2);
    let lr = (x[3].log10() + 3.0).powi(2);
    let width = (x[4].log2() - 8.0).powi(2) / 2.0;
    act + dropout + layers + lr + width
}

/// A space with every kind of parameter (a single-choice categorical, stepped and log floats,
/// log and stepped ints, a boolean categorical, a plain float), for validity tests.
pub fn every_kind_space() -> Space {
    Space::from_toml(
        r#"
        [params]
        a = { type = "categorical", choices = ["only"] }
        b = { type = "float", low = 0.5, high = 2.0, step = 0.5 }
        c = { type = "int", low = 2, high = 64, log = true }
        d = { type = "int", low = 0, high = 100, step = 10 }
        e = { type = "float", low = 1e-4, high = 1.0, log = true }
        f = { type = "categorical", choices = [true, false] }
        g = { type = "float", low = -3.0, high = 3.0 }
        "#,
        "validity",
    )
    .unwrap()
}
