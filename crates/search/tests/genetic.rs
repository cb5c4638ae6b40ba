//! The genetic sampler (NSGA-II for several objectives): it beats random search at the same
//! budget on single-objective problems with known optima and on a two-objective problem with
//! a known Pareto front; it is a pure function of the stored trials, the seed and the
//! number; failed and running trials never breed, pruned ones rank behind complete ones.

use std::sync::Arc;

use attune_search::sampler::{GaConfig, GaSampler, RandomSampler, SampleContext, Sampler, SamplerConfig};
use attune_search::storage::{MemoryStorage, Storage, StudyRecord};
use attune_search::{Direction, Finish, Space, Study, Trial, TrialState};
use serde_json::{Map, Value};

/// Seeds per comparison. Each bar below holds with room for the worst of six disjoint blocks
/// of ten seeds (0..60) surveyed while writing these tests, not just for the block used.
const SEEDS: u64 = 10;
const BUDGET: usize = 200;

/// Runs `budget` trials of `objective` (internal values -> objective values) with `sampler`,
/// checking every point it proposes is valid before the study stores it; returns the trials.
fn run(
    space: &Space,
    sampler: &dyn Sampler,
    seed: u64,
    budget: usize,
    objective: &dyn Fn(&[f64]) -> Vec<f64>,
) -> Vec<Trial> {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let record = StudyRecord { space: space.clone(), sampler: Value::Null, pruner: None, seed, driver: Value::Null };
    // The study's own sampler is unused: points come from `sampler` so they are checked raw.
    let study = Study::open(storage.clone(), record, Box::new(RandomSampler), None).unwrap();
    for _ in 0..budget {
        let trials = storage.trials().unwrap();
        let ctx = SampleContext { space, trials: &trials, seed, number: trials.len() as u64 };
        let x = sampler.sample(&ctx).unwrap();
        assert_eq!(x.len(), space.len());
        for (p, &v) in space.params.iter().zip(&x) {
            assert!(p.dist.contains(v), "trial {}: {v} is not a value of {} ({:?})", ctx.number, p.name, p.dist);
        }
        let asked = study.enqueue(x, "test", &Map::new()).unwrap();
        study.tell(asked.number, Finish::complete(objective(&asked.params))).unwrap();
    }
    storage.trials().unwrap()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { 0.5 * (xs[n / 2 - 1] + xs[n / 2]) }
}

fn best(trials: &[Trial]) -> f64 {
    trials.iter().filter_map(|t| t.values.as_ref().map(|v| v[0])).fold(f64::INFINITY, f64::min)
}

/// The median over seeds of the best value after `BUDGET` trials, for GA and for random.
fn medians(space: &Space, objective: &dyn Fn(&[f64]) -> Vec<f64>) -> (f64, f64) {
    let ga = GaSampler::new(GaConfig::default());
    let ga_best: Vec<f64> = (0..SEEDS).map(|s| best(&run(space, &ga, s, BUDGET, objective))).collect();
    let rs_best: Vec<f64> = (0..SEEDS).map(|s| best(&run(space, &RandomSampler, s, BUDGET, objective))).collect();
    (median(ga_best), median(rs_best))
}

fn space(toml: &str) -> Space {
    Space::from_toml(toml, "<test>").unwrap()
}

const CUBE_4D: &str = r#"
[params]
x0 = { type = "float", low = -5.12, high = 5.12 }
x1 = { type = "float", low = -5.12, high = 5.12 }
x2 = { type = "float", low = -5.12, high = 5.12 }
x3 = { type = "float", low = -5.12, high = 5.12 }
"#;

/// Sphere, minimum 0 at the origin. Random search's best of 200 in [-5.12, 5.12]^4 is
/// about 3 (a 4-ball holding 1/200 of the cube has radius^2 ~ 3.3); a GA that converges
/// must do several times better.
#[test]
fn ga_beats_random_on_the_4d_sphere() {
    let sphere = |x: &[f64]| vec![x.iter().map(|v| v * v).sum()];
    let (ga, rs) = medians(&space(CUBE_4D), &sphere);
    eprintln!("sphere 4-D, median best of {BUDGET} over {SEEDS} seeds: ga {ga:.4}, random {rs:.4}");
    assert!(ga < 0.25 * rs, "ga {ga} is not 4x better than random {rs}");
}

/// Rastrigin, minimum 0 at the origin, a local minimum at every integer point.
#[test]
fn ga_beats_random_on_the_4d_rastrigin() {
    let rastrigin = |x: &[f64]| vec![x.iter().map(|v| 10.0 + v * v - 10.0 * (std::f64::consts::TAU * v).cos()).sum()];
    let (ga, rs) = medians(&space(CUBE_4D), &rastrigin);
    eprintln!("rastrigin 4-D, median best of {BUDGET} over {SEEDS} seeds: ga {ga:.4}, random {rs:.4}");
    assert!(ga < 0.7 * rs, "ga {ga} is not 30% better than random {rs}");
}

const MIXED: &str = r#"
[params]
act = { type = "categorical", choices = ["relu", "tanh", "gelu", "sigmoid", "silu"] }
lr = { type = "float", low = 1e-5, high = 1.0, log = true }
width = { type = "int", low = 1, high = 128 }
dropout = { type = "float", low = 0.0, high = 0.5, step = 0.05 }
x = { type = "float", low = -4.0, high = 4.0 }
"#;

/// A mixed space whose best is 0 at act = gelu, lr = 1e-3, width = 96, dropout = 0.1, x = 1.
fn mixed_objective(space: &Space) -> impl Fn(&[f64]) -> Vec<f64> + '_ {
    move |p: &[f64]| {
        let e = space.external(p);
        let act = if e["act"] == "gelu" { 0.0 } else { 2.0 };
        let lr = (e["lr"].as_f64().unwrap().log10() + 3.0).powi(2);
        let width = ((e["width"].as_f64().unwrap() - 96.0) / 32.0).powi(2);
        let dropout = ((e["dropout"].as_f64().unwrap() - 0.1) / 0.1).powi(2);
        let x = (e["x"].as_f64().unwrap() - 1.0).powi(2);
        vec![act + lr + width + dropout + x]
    }
}

#[test]
fn ga_beats_random_on_a_mixed_space() {
    let s = space(MIXED);
    let objective = mixed_objective(&s);
    let (ga, rs) = medians(&s, &objective);
    eprintln!("mixed space, median best of {BUDGET} over {SEEDS} seeds: ga {ga:.4}, random {rs:.4}");
    assert!(ga < 0.5 * rs, "ga {ga} is not 2x better than random {rs}");
}

const ZDT1_DIMS: usize = 3;

/// ZDT1 (Zitzler, Deb and Thiele, 2000) in 3 dimensions: f1 = x0,
/// g = 1 + 9 (x1 + x2) / 2, f2 = g (1 - sqrt(f1 / g)). The Pareto front is x1 = x2 = 0:
/// f2 = 1 - sqrt(f1), f1 in [0, 1].
fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

/// The mean distance from the study's Pareto front to ZDT1's true front (generational
/// distance), with the true front sampled at 2001 points.
fn generational_distance(front: &[Vec<f64>]) -> f64 {
    let truth: Vec<(f64, f64)> = (0..=2000).map(|k| k as f64 / 2000.0).map(|f1| (f1, 1.0 - f1.sqrt())).collect();
    let dist = |p: &Vec<f64>| truth.iter().map(|&(a, b)| (p[0] - a).hypot(p[1] - b)).fold(f64::INFINITY, f64::min);
    front.iter().map(dist).sum::<f64>() / front.len() as f64
}

/// The area dominated by `front` (minimising both) and bounded by the reference (1, 1). The
/// true ZDT1 front's is the integral of sqrt(f1) over [0, 1], 2/3.
fn hypervolume(front: &[Vec<f64>]) -> f64 {
    let mut pts: Vec<(f64, f64)> = front.iter().map(|p| (p[0], p[1])).filter(|&(a, b)| a < 1.0 && b < 1.0).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut area, mut ceiling) = (0.0, 1.0);
    for (f1, f2) in pts {
        if f2 < ceiling {
            area += (1.0 - f1) * (ceiling - f2);
            ceiling = f2;
        }
    }
    area
}

fn pareto_values(trials: &[Trial], directions: &[Direction]) -> Vec<Vec<f64>> {
    let points: Vec<Vec<f64>> = trials.iter().filter_map(|t| t.values.clone()).collect();
    attune_search::pareto::front(&points, directions).into_iter().map(|i| points[i].clone()).collect()
}

/// NSGA-II against random search at 200 trials on ZDT1: its front lies closer to the true
/// front (generational distance) and covers more of it (hypervolume, at most 2/3).
#[test]
fn nsga2_gets_closer_to_the_zdt1_front_than_random() {
    let toml: String = std::iter::once("directions = [\"minimize\", \"minimize\"]\n[params]\n".to_string())
        .chain((0..ZDT1_DIMS).map(|i| format!("x{i} = {{ type = \"float\", low = 0.0, high = 1.0 }}\n")))
        .collect();
    let s = space(&toml);
    let ga = GaSampler::new(GaConfig::default());
    let (mut gd, mut hv) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for seed in 0..SEEDS {
        let f = pareto_values(&run(&s, &ga, seed, BUDGET, &zdt1), &s.directions);
        let r = pareto_values(&run(&s, &RandomSampler, seed, BUDGET, &zdt1), &s.directions);
        gd.0.push(generational_distance(&f));
        gd.1.push(generational_distance(&r));
        hv.0.push(hypervolume(&f));
        hv.1.push(hypervolume(&r));
    }
    let (gd_ga, gd_rs, hv_ga, hv_rs) = (median(gd.0), median(gd.1), median(hv.0), median(hv.1));
    eprintln!(
        "zdt1 {ZDT1_DIMS}-D, medians over {SEEDS} seeds: distance ga {gd_ga:.4} random {gd_rs:.4}; hypervolume ga {hv_ga:.4} random {hv_rs:.4} (true 0.6667)"
    );
    assert!(gd_ga < 0.15, "ga front is {gd_ga} from the true front on average, not within 0.15");
    assert!(gd_ga < 0.2 * gd_rs, "ga front distance {gd_ga} is not a fifth of random's {gd_rs}");
    assert!(hv_ga > 0.6 * (2.0 / 3.0), "ga hypervolume {hv_ga} is under 60% of the true front's 2/3");
    assert!(hv_ga > 2.0 * hv_rs, "ga hypervolume {hv_ga} is not twice random's {hv_rs}");
    assert!(hv_ga <= 2.0 / 3.0 + 1e-9, "hypervolume {hv_ga} above the true front's");
}

/// A stored trial built by hand.
fn trial(number: u64, state: TrialState, params: Vec<f64>, values: Option<Vec<f64>>) -> Trial {
    Trial {
        number,
        state,
        params,
        values,
        intermediate: Vec::new(),
        worker: "test".into(),
        started: 0.0,
        finished: state.is_finished().then_some(1.0),
        error: None,
        attrs: Map::new(),
        retries: 0,
    }
}

fn sample(sampler: &dyn Sampler, space: &Space, trials: &[Trial], seed: u64, number: u64) -> Vec<f64> {
    sampler.sample(&SampleContext { space, trials, seed, number }).unwrap()
}

/// A config that copies the best member of the whole pool unchanged: a tournament larger
/// than any pool, no crossover, no mutation. What it returns shows how the pool is ranked.
fn copy_the_best(population_size: u64) -> GaConfig {
    GaConfig {
        population_size,
        tournament_size: 1000,
        crossover_prob: 0.0,
        mutation_rate: Some(0.0),
        ..GaConfig::default()
    }
}

/// Same stored trials, seed and number give the same point, from separately built samplers
/// (one through the stored JSON config, as a resumed study builds it); trials of the asking
/// generation or later, finished or not, change nothing; another seed gives another point.
#[test]
fn ga_is_a_pure_function_of_earlier_generations_seed_and_number() {
    let s = space(MIXED);
    let objective = mixed_objective(&s);
    let config = GaConfig { population_size: 10, ..GaConfig::default() };
    let trials = run(&s, &GaSampler::new(config.clone()), 3, 35, &objective);
    let stored = serde_json::to_value(SamplerConfig::Ga(config.clone())).unwrap();
    let resumed = serde_json::from_value::<SamplerConfig>(stored).unwrap().build();
    let fresh = GaSampler::new(config);
    for number in [0, 9, 10, 19, 20, 29, 30, 34] {
        let start = (number / 10 * 10) as usize;
        let a = sample(&fresh, &s, &trials, 3, number);
        assert_eq!(a, sample(resumed.as_ref(), &s, &trials, 3, number), "trial {number}");
        // Only the earlier generations' trials: the same point.
        assert_eq!(a, sample(&fresh, &s, &trials[..start], 3, number), "trial {number}");
        // The current generation still running: the same point.
        let mut running = trials.clone();
        for t in &mut running[start..] {
            t.state = TrialState::Running;
            t.values = None;
        }
        assert_eq!(a, sample(&fresh, &s, &running, 3, number), "trial {number}");
    }
    let differs = (0..35).filter(|&n| sample(&fresh, &s, &trials, 3, n) != sample(&fresh, &s, &trials, 4, n)).count();
    assert!(differs >= 33, "only {differs} of 35 points change with the seed");
}

/// Generation 0 of four: trials 0 and 1 complete with choice a or b, trial 2 failed with c,
/// trial 3 still running with d. With random selection (tournaments of one, so any pool
/// member may be a parent) and no mutation, no child of any later trial number may carry c
/// or d: failed and running trials are not in the pool.
#[test]
fn failed_and_running_trials_never_breed() {
    let s = space(
        r#"
[params]
choice = { type = "categorical", choices = ["a", "b", "c", "d"] }
x = { type = "float", low = 0.0, high = 1.0 }
"#,
    );
    let config = GaConfig { population_size: 4, tournament_size: 1, mutation_rate: Some(0.0), ..GaConfig::default() };
    let ga = GaSampler::new(config);
    let trials = vec![
        trial(0, TrialState::Complete, vec![0.0, 0.2], Some(vec![1.0])),
        trial(1, TrialState::Complete, vec![1.0, 0.8], Some(vec![2.0])),
        trial(2, TrialState::Failed, vec![2.0, 0.5], None),
        trial(3, TrialState::Running, vec![3.0, 0.5], None),
    ];
    let mut seen = [0usize; 4];
    for number in 4..400 {
        seen[sample(&ga, &s, &trials, 11, number)[0] as usize] += 1;
    }
    assert_eq!(&seen[2..], &[0, 0], "choices bred from failed/running trials: {seen:?}");
    assert!(seen[0] > 50 && seen[1] > 50, "both complete parents should pass their choice on: {seen:?}");

    // With no usable parent at all the trial is drawn at random, still a valid point.
    let all_failed: Vec<Trial> = (0..4).map(|n| trial(n, TrialState::Failed, vec![0.0, 0.5], None)).collect();
    let x = sample(&ga, &s, &all_failed, 11, 4);
    assert!(s.params.iter().zip(&x).all(|(p, &v)| p.dist.contains(v)), "{x:?}");
}

/// Pruned trials rank behind complete ones, however good their last intermediate value:
/// the best of the pool is the best complete trial. With no complete trial, the best pruned
/// one (by its last intermediate value) leads.
#[test]
fn pruned_trials_rank_behind_complete_ones() {
    let s = space("[params]\nx = { type = \"float\", low = 0.0, high = 1.0 }\n");
    let ga = GaSampler::new(copy_the_best(4));
    let pruned = |number: u64, x: f64, last: f64| {
        let mut t = trial(number, TrialState::Pruned, vec![x], None);
        t.intermediate = vec![(1, last + 10.0), (2, last)];
        t
    };
    let trials = vec![
        trial(0, TrialState::Complete, vec![0.1], Some(vec![5.0])),
        pruned(1, 0.2, -100.0),
        trial(2, TrialState::Complete, vec![0.3], Some(vec![3.0])),
        pruned(3, 0.4, -50.0),
    ];
    for number in 4..12 {
        assert_eq!(sample(&ga, &s, &trials, 5, number), vec![0.3], "trial {number}");
    }
    let only_pruned = vec![pruned(0, 0.1, 7.0), pruned(1, 0.2, 2.0), pruned(2, 0.3, 9.0), pruned(3, 0.4, 4.0)];
    assert_eq!(sample(&ga, &s, &only_pruned, 5, 4), vec![0.2]);
}

/// Several objectives (f1 minimised, f2 maximised): the front is (1, 5), (3, 7), (2, 6),
/// where (2, 4) and (4, 6) are dominated; its extremes (1, 5) and (3, 7) have infinite
/// crowding and the lower-numbered, trial 1, leads. Were f2 minimised, (2, 4) (trial 0)
/// would be on the front and lead.
#[test]
fn nsga2_prefers_the_first_front_and_its_extremes() {
    let s = space(
        "directions = [\"minimize\", \"maximize\"]\n[params]\nx = { type = \"float\", low = 0.0, high = 10.0 }\n",
    );
    let ga = GaSampler::new(copy_the_best(6));
    let points = [(2.0, 4.0), (3.0, 7.0), (1.0, 5.0), (2.0, 6.0), (4.0, 6.0)];
    let mut trials: Vec<Trial> = points
        .iter()
        .enumerate()
        .map(|(n, &(f1, f2))| trial(n as u64, TrialState::Complete, vec![n as f64], Some(vec![f1, f2])))
        .collect();
    trials.push(trial(5, TrialState::Failed, vec![5.0], None));
    for number in 6..12 {
        assert_eq!(sample(&ga, &s, &trials, 2, number), vec![1.0], "trial {number}");
    }
}

#[test]
fn ga_config_by_name_defaults_and_validation() {
    assert!(SamplerConfig::NAMES.contains(&"ga"));
    assert_eq!(SamplerConfig::by_name("ga").unwrap(), SamplerConfig::Ga(GaConfig::default()));
    // A stored config may give only what it changes.
    let partial: SamplerConfig = serde_json::from_str(r#"{"kind": "ga", "population_size": 8}"#).unwrap();
    assert_eq!(partial, SamplerConfig::Ga(GaConfig { population_size: 8, ..GaConfig::default() }));

    let s = space(CUBE_4D);
    let bad = [
        (GaConfig { population_size: 1, ..GaConfig::default() }, "population_size"),
        (GaConfig { tournament_size: 0, ..GaConfig::default() }, "tournament_size"),
        (GaConfig { crossover_prob: 1.5, ..GaConfig::default() }, "crossover_prob"),
        (GaConfig { mutation_rate: Some(-0.1), ..GaConfig::default() }, "mutation_rate"),
        (GaConfig { mutation_scale: 0.0, ..GaConfig::default() }, "mutation_scale"),
        (GaConfig { sbx_eta: f64::NAN, ..GaConfig::default() }, "sbx_eta"),
    ];
    for (config, field) in bad {
        let err = GaSampler::new(config).sample(&SampleContext { space: &s, trials: &[], seed: 0, number: 0 });
        let message = err.expect_err(field).to_string();
        assert!(message.starts_with("ga: ") && message.contains(field) && message.contains("fix:"), "{message}");
    }
}
