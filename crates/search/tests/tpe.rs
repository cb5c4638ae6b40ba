//! The TPE sampler: better than random search on known problems (median over seeds, with a
//! margin), reproducible and resumable, spread out by the constant liar, convergent on a
//! categorical choice, and always inside the space.

// The benchmark's test functions, one definition for the example and the tests.
#[path = "../examples/hpo_bench/functions.rs"]
mod functions;

use std::sync::Arc;

use attune_search::sampler::{SampleContext, Sampler, SamplerConfig, TpeConfig, TpeSampler};
use attune_search::{Finish, MemoryStorage, SearchError, Space, Storage, Study, StudyRecord};
use serde_json::{Map, Value};

type Objective<'a> = &'a dyn Fn(&Map<String, Value>) -> f64;

fn space(toml: &str) -> Space {
    Space::from_toml(toml, "<test>").unwrap()
}

fn record(space: &Space, config: &SamplerConfig, seed: u64) -> StudyRecord {
    StudyRecord {
        space: space.clone(),
        sampler: serde_json::to_value(config).unwrap(),
        pruner: None,
        seed,
        driver: Value::Null,
    }
}

fn open(storage: &Arc<MemoryStorage>, space: &Space, config: &SamplerConfig, seed: u64) -> Study {
    Study::open(storage.clone(), record(space, config, seed), config.build(), None).unwrap()
}

fn study(space: &Space, config: &SamplerConfig, seed: u64) -> Study {
    open(&Arc::new(MemoryStorage::new()), space, config, seed)
}

fn tpe() -> SamplerConfig {
    SamplerConfig::Tpe(TpeConfig::default())
}

fn num(p: &Map<String, Value>, key: &str) -> f64 {
    p[key].as_f64().unwrap()
}

/// Runs `n` sequential trials and returns the best value.
fn best_after(space: &Space, config: &SamplerConfig, seed: u64, n: usize, f: Objective) -> f64 {
    let s = study(space, config, seed);
    let mut best = f64::INFINITY;
    for _ in 0..n {
        let asked = s.ask("w").unwrap();
        let value = f(&asked.external);
        best = best.min(value);
        s.tell(asked.number, Finish::complete(vec![value])).unwrap();
    }
    best
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

const SEEDS: u64 = 30;

/// The medians over `SEEDS` seeds of the best value after `trials` trials, TPE and random.
fn medians(space: &Space, f: Objective, trials: usize) -> (f64, f64) {
    let run = |c: &SamplerConfig| median((0..SEEDS).map(|seed| best_after(space, c, 100 + seed, trials, f)).collect());
    (run(&tpe()), run(&SamplerConfig::Random))
}

/// TPE's median best must be at least this many times smaller than random search's. Random
/// search's best after n draws near a smooth 2-D minimum shrinks like 1/n, so a factor 3 is
/// what random search would need about 3 times the trials for.
const MARGIN: f64 = 3.0;

#[test]
fn beats_random_search_on_a_quadratic() {
    let s = space(
        "[params]\nx = { type = \"float\", low = -5.0, high = 5.0 }\ny = { type = \"float\", low = -5.0, high = 5.0 }",
    );
    let f = |p: &Map<String, Value>| (num(p, "x") - 1.0).powi(2) + (num(p, "y") + 2.0).powi(2);
    let (tpe, random) = medians(&s, &f, 60);
    eprintln!("quadratic, median best of {SEEDS}: tpe {tpe:.4}, random {random:.4}");
    assert!(tpe * MARGIN < random, "median best: tpe {tpe:.4}, random {random:.4}");
}

/// Branin (Dixon and Szego, 1978), shifted so its global minimum 0.397887 is 0.
fn branin(p: &Map<String, Value>) -> f64 {
    functions::branin(num(p, "x1"), num(p, "x2")) - functions::BRANIN_MIN
}

#[test]
fn beats_random_search_on_branin() {
    let s = space(
        "[params]\nx1 = { type = \"float\", low = -5.0, high = 10.0 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }",
    );
    // The shifted function's minima are 0 at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475).
    let at = |x1: f64, x2: f64| {
        let mut p = Map::new();
        p.insert("x1".into(), Value::from(x1));
        p.insert("x2".into(), Value::from(x2));
        branin(&p)
    };
    assert!(at(std::f64::consts::PI, 2.275).abs() < 1e-5 && at(9.42478, 2.475).abs() < 1e-5);
    let (tpe, random) = medians(&s, &branin, 100);
    eprintln!("branin, median regret of {SEEDS}: tpe {tpe:.4}, random {random:.4}");
    assert!(tpe * MARGIN < random, "median regret: tpe {tpe:.4}, random {random:.4}");
}

/// Optuna 5's TPE (multivariate, its defaults) reaches a median Branin regret of 3.3e-3 after
/// 200 trials (docs/benchmarks-search.md); ours must stay within 3 times that over 10 seeds.
/// Kernels of a fixed width (12-15% of the range) left 1.8e-2 on these seeds (6.3e-2 on the
/// benchmark's); they must shrink as the good trials gather.
#[test]
fn refines_a_continuous_optimum_like_optuna_on_branin() {
    let s = space(
        "[params]\nx1 = { type = \"float\", low = -5.0, high = 10.0 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }",
    );
    let regret = median((0..10).map(|seed| best_after(&s, &tpe(), 100 + seed, 200, &branin)).collect());
    eprintln!("branin, median regret of 10 after 200 trials: {regret:.2e}");
    assert!(regret < 1e-2, "median regret {regret:.2e}");
}

/// Hartmann-6 (Dixon and Szego, 1978) on [0, 1]^6, minimum -3.32237.
fn hartmann6(p: &Map<String, Value>) -> f64 {
    let x: Vec<f64> = (1..=6).map(|j| num(p, &format!("x{j}"))).collect();
    functions::hartmann6(&x)
}

/// As on Branin: Optuna 5 reaches a median regret of 0.031 on Hartmann-6 after 200 trials; ours
/// must stay within 3 times that (the fixed-width kernels left 0.15 on these seeds, 0.19 on
/// the benchmark's).
#[test]
fn refines_a_continuous_optimum_like_optuna_on_hartmann6() {
    let params: String = (1..=6).map(|j| format!("x{j} = {{ type = \"float\", low = 0.0, high = 1.0 }}\n")).collect();
    let s = space(&format!("[params]\n{params}"));
    let mut at_minimum = Map::new();
    for (j, v) in [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573].iter().enumerate() {
        at_minimum.insert(format!("x{}", j + 1), Value::from(*v));
    }
    const MINIMUM: f64 = functions::HARTMANN6_MIN;
    assert!((hartmann6(&at_minimum) - MINIMUM).abs() < 1e-9);
    let regret = median((0..10).map(|seed| best_after(&s, &tpe(), 100 + seed, 200, &hartmann6) - MINIMUM).collect());
    eprintln!("hartmann6, median regret of 10 after 200 trials: {regret:.3}");
    assert!(regret < 0.093, "median regret {regret:.3}");
}

/// A float, a log int and a categorical: 0 at x = 1, n = 8, c = "b"; every other choice costs
/// at least 1.
fn mixed(p: &Map<String, Value>) -> f64 {
    let offset = match p["c"].as_str().unwrap() {
        "a" => 1.0,
        "b" => 0.0,
        "c" => 2.0,
        _ => 1.5,
    };
    (num(p, "x") - 1.0).powi(2) + (num(p, "n").log2() - 3.0).powi(2) + offset
}

#[test]
fn beats_random_search_on_a_mixed_space_and_finds_its_category() {
    let s = space(
        "[params]\nx = { type = \"float\", low = -3.0, high = 3.0 }\n\
         n = { type = \"int\", low = 1, high = 64, log = true }\n\
         c = { type = \"categorical\", choices = [\"a\", \"b\", \"c\", \"d\"] }",
    );
    let (tpe, random) = medians(&s, &mixed, 60);
    eprintln!("mixed, median best of {SEEDS}: tpe {tpe:.4}, random {random:.4}");
    assert!(tpe * MARGIN < random, "median best: tpe {tpe:.4}, random {random:.4}");
    // A best below 1 can only have c = "b": the median run found the right category.
    assert!(tpe < 1.0, "{tpe}");
}

#[test]
fn a_categorical_only_space_converges_to_the_best_choice() {
    let s = space("[params]\nc = { type = \"categorical\", choices = [\"a\", \"b\", \"c\", \"d\", \"e\"] }");
    let values = [3.0, 1.0, 4.0, 0.5, 2.0];
    let mut late_best = 0;
    for seed in 0..10 {
        let st = study(&s, &tpe(), seed);
        let mut counts = [0usize; 5];
        for i in 0..40 {
            let asked = st.ask("w").unwrap();
            let k = asked.params[0] as usize;
            if i >= 20 {
                counts[k] += 1;
            }
            st.tell(asked.number, Finish::complete(vec![values[k]])).unwrap();
        }
        let most = (0..5).max_by_key(|&k| counts[k]).unwrap();
        assert_eq!(most, 3, "seed {seed}: trials 20..40 chose {counts:?}");
        late_best += counts[3];
    }
    eprintln!("categorical: 'd' in {late_best} of 200 late trials");
    // Random search picks "d" a fifth of the time; TPE should pick it in most late trials.
    assert!(late_best * 2 > 10 * 20, "'d' in {late_best} of 200 late trials");
}

/// The points of `n` trials asked and told in pairs (two workers), so running trials matter.
fn run_pairs(st: &Study, n: usize) -> Vec<Vec<f64>> {
    let mut points = Vec::new();
    while points.len() < n {
        let (a, b) = (st.ask("w1").unwrap(), st.ask("w2").unwrap());
        for asked in [a, b] {
            st.tell(asked.number, Finish::complete(vec![mixed(&asked.external)])).unwrap();
            points.push(asked.params);
        }
    }
    points
}

fn mixed_space() -> Space {
    space(
        "[params]\nx = { type = \"float\", low = -3.0, high = 3.0 }\n\
         n = { type = \"int\", low = 1, high = 64, log = true }\n\
         c = { type = \"categorical\", choices = [\"a\", \"b\", \"c\", \"d\"] }",
    )
}

#[test]
fn the_same_inputs_give_the_same_point_and_a_resumed_study_matches_an_uninterrupted_one() {
    let s = mixed_space();
    let first = run_pairs(&study(&s, &tpe(), 5), 30);
    let again = run_pairs(&study(&s, &tpe(), 5), 30);
    assert_eq!(first, again);
    assert_ne!(first, run_pairs(&study(&s, &tpe(), 6), 30), "another seed must give other points");

    // Interrupted after 16 trials: a new Study (new sampler) over the same storage goes on.
    let storage = Arc::new(MemoryStorage::new());
    let mut resumed = run_pairs(&open(&storage, &s, &tpe(), 5), 16);
    resumed.extend(run_pairs(&open(&storage, &s, &tpe(), 5), 14));
    assert_eq!(first, resumed);

    // One context, two samplers: the same point; the next trial number: another point.
    let trials = storage.trials().unwrap();
    let ctx = SampleContext { space: &s, trials: &trials, seed: 5, number: trials.len() as u64 };
    let a = TpeSampler::new(TpeConfig::default()).sample(&ctx).unwrap();
    let b = tpe().build().sample(&ctx).unwrap();
    assert_eq!(a, b);
    let next = TpeSampler::new(TpeConfig::default()).sample(&SampleContext { number: ctx.number + 1, ..ctx }).unwrap();
    assert_ne!(a, next);
}

#[test]
fn the_startup_trials_are_random_search_points() {
    let s = mixed_space();
    let st_tpe = study(&s, &tpe(), 9);
    let st_random = study(&s, &SamplerConfig::Random, 9);
    for _ in 0..10 {
        let (a, b) = (st_tpe.ask("w").unwrap(), st_random.ask("w").unwrap());
        assert_eq!(a.params, b.params);
        st_tpe.tell(a.number, Finish::complete(vec![mixed(&a.external)])).unwrap();
        st_random.tell(b.number, Finish::complete(vec![mixed(&b.external)])).unwrap();
    }
}

/// With 20 told trials, asks 5 points in a row without telling (4 running when the last is
/// asked); returns them and their mean pairwise distance in unit coordinates.
fn parallel_asks(s: &Space, liar: bool, seed: u64) -> (Vec<Vec<f64>>, f64) {
    let st = study(s, &SamplerConfig::Tpe(TpeConfig { constant_liar: liar, ..TpeConfig::default() }), seed);
    for _ in 0..20 {
        let asked = st.ask("w").unwrap();
        let v = (num(&asked.external, "x") - 3.0).powi(2) + (num(&asked.external, "y") - 6.0).powi(2);
        st.tell(asked.number, Finish::complete(vec![v])).unwrap();
    }
    let points: Vec<Vec<f64>> = (0..5).map(|_| st.ask("w").unwrap().params).collect();
    let (mut total, mut pairs) = (0.0, 0);
    for i in 0..points.len() {
        for j in i + 1..points.len() {
            let (u, v) = (s.to_unit(&points[i]), s.to_unit(&points[j]));
            total += u.iter().zip(&v).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
            pairs += 1;
        }
    }
    (points, total / pairs as f64)
}

#[test]
fn the_constant_liar_spreads_parallel_asks() {
    // A grid of 121 points, where asks that ignore each other do land on the same point.
    let s = space("[params]\nx = { type = \"int\", low = 0, high = 10 }\ny = { type = \"int\", low = 0, high = 10 }");
    let (mut spread_liar, mut spread_plain, mut repeats_plain) = (0.0, 0.0, 0);
    for seed in 0..10 {
        let (points, spread) = parallel_asks(&s, true, seed);
        for i in 0..points.len() {
            for j in i + 1..points.len() {
                assert_ne!(points[i], points[j], "seed {seed}: asks {i} and {j} gave the same point");
            }
        }
        spread_liar += spread / 10.0;
        let (points, spread) = parallel_asks(&s, false, seed);
        repeats_plain +=
            (0..5).flat_map(|i| (i + 1..5).map(move |j| (i, j))).filter(|&(i, j)| points[i] == points[j]).count();
        spread_plain += spread / 10.0;
    }
    eprintln!(
        "parallel asks: spread {spread_liar:.3} with the liar, {spread_plain:.3} without ({repeats_plain} repeats)"
    );
    // Without the liar the check above would fail: the asks repeat points.
    assert!(repeats_plain > 0);
    assert!(
        spread_liar > 1.25 * spread_plain,
        "mean pairwise distance: liar {spread_liar:.3}, without {spread_plain:.3}"
    );
}

#[test]
fn every_sampled_point_is_inside_the_space() {
    let s = space(
        "directions = [\"minimize\", \"maximize\"]\n[params]\n\
         a = { type = \"float\", low = -1.0, high = 1.0 }\n\
         b = { type = \"float\", low = 1e-5, high = 10.0, log = true }\n\
         c = { type = \"float\", low = 0.0, high = 1.0, step = 0.3 }\n\
         d = { type = \"int\", low = -4, high = 9, step = 3 }\n\
         e = { type = \"int\", low = 1, high = 100000, log = true }\n\
         f = { type = \"categorical\", choices = [\"x\", 2, true] }\n\
         g = { type = \"categorical\", choices = [\"only\"] }",
    );
    let sampler = TpeSampler::new(TpeConfig { n_startup_trials: 5, ..TpeConfig::default() });
    let st = study(&s, &tpe(), 3);
    for i in 0..60u64 {
        let trials = st.trials().unwrap();
        let ctx = SampleContext { space: &s, trials: &trials, seed: 3, number: trials.len() as u64 };
        let point = sampler.sample(&ctx).unwrap();
        for (p, &x) in s.params.iter().zip(&point) {
            assert!(p.dist.contains(x), "trial {i}: {} = {x} is not in {:?}", p.name, p.dist);
        }
        let asked = st.enqueue(point, "w", &Map::new()).unwrap();
        let (u, v) = (num(&asked.external, "a"), num(&asked.external, "b"));
        // A mix of outcomes: complete, pruned after a report, pruned silently, failed, running.
        match i % 6 {
            0..=2 => st.tell(asked.number, Finish::complete(vec![u * u, v.ln() - u])).unwrap(),
            3 => {
                st.report(asked.number, 1, u).unwrap();
                st.tell(asked.number, Finish::pruned()).unwrap();
            }
            4 if i % 12 == 4 => st.tell(asked.number, Finish::pruned()).unwrap(),
            4 => st.tell(asked.number, Finish::failed("crashed")).unwrap(),
            _ => {}
        }
    }
}

#[test]
fn bad_settings_are_named_and_the_config_round_trips() {
    let s = mixed_space();
    let trials = Vec::new();
    let ctx = SampleContext { space: &s, trials: &trials, seed: 0, number: 0 };
    for (bad, field) in [
        (TpeConfig { gamma_fraction: 0.0, ..TpeConfig::default() }, "gamma_fraction"),
        (TpeConfig { n_ei_candidates: 0, ..TpeConfig::default() }, "n_ei_candidates"),
        (TpeConfig { prior_weight: f64::NAN, ..TpeConfig::default() }, "prior_weight"),
        (TpeConfig { gamma_max: 0, ..TpeConfig::default() }, "gamma_max"),
    ] {
        match TpeSampler::new(bad).sample(&ctx) {
            Err(e @ SearchError::Config { .. }) => assert!(e.to_string().contains(field), "{e}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(SamplerConfig::NAMES.contains(&"tpe"));
    assert_eq!(SamplerConfig::by_name("tpe").unwrap(), tpe());
    let partial: SamplerConfig = serde_json::from_str(r#"{"kind": "tpe", "constant_liar": false}"#).unwrap();
    assert_eq!(partial, SamplerConfig::Tpe(TpeConfig { constant_liar: false, ..TpeConfig::default() }));
    let stored: SamplerConfig = serde_json::from_value(serde_json::to_value(tpe()).unwrap()).unwrap();
    assert_eq!(stored, tpe());
    // gamma(n) = min(ceil(n / 10), 25).
    let c = TpeConfig::default();
    assert_eq!([c.gamma(10), c.gamma(11), c.gamma(100), c.gamma(251), c.gamma(1000)], [1, 2, 10, 25, 25]);
}

/// The area dominated by `points` (two losses) up to `reference`.
fn hypervolume_2d(points: &[[f64; 2]], reference: [f64; 2]) -> f64 {
    let mut inside: Vec<[f64; 2]> =
        points.iter().copied().filter(|p| p[0] < reference[0] && p[1] < reference[1]).collect();
    inside.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut area, mut ceiling) = (0.0, reference[1]);
    for p in inside {
        if p[1] < ceiling {
            area += (reference[0] - p[0]) * (ceiling - p[1]);
            ceiling = p[1];
        }
    }
    area
}

/// Two objectives, f1 = x^2 + y^2 and f2 = (x - 2)^2 + y^2: the Pareto set is y = 0, 0 <= x <= 2,
/// whose front (t^2, (2 - t)^2) dominates 16 + 64/3 - 8 + 32 = 61.333 of the box up to (8, 8).
#[test]
fn several_objectives_get_closer_to_the_pareto_front_than_random_search() {
    let s = space(
        "directions = [\"minimize\", \"minimize\"]\n[params]\n\
         x = { type = \"float\", low = -4.0, high = 4.0 }\ny = { type = \"float\", low = -4.0, high = 4.0 }",
    );
    let ideal = 16.0 + 64.0 / 3.0 - 8.0 + 32.0;
    let gap = |config: &SamplerConfig| {
        let gaps = (0..SEEDS).map(|seed| {
            let st = study(&s, config, 100 + seed);
            let mut points = Vec::new();
            for _ in 0..60 {
                let asked = st.ask("w").unwrap();
                let (x, y) = (num(&asked.external, "x"), num(&asked.external, "y"));
                let v = [x * x + y * y, (x - 2.0).powi(2) + y * y];
                points.push(v);
                st.tell(asked.number, Finish::complete(v.to_vec())).unwrap();
            }
            ideal - hypervolume_2d(&points, [8.0, 8.0])
        });
        median(gaps.collect())
    };
    let (tpe_gap, random_gap) = (gap(&tpe()), gap(&SamplerConfig::Random));
    eprintln!("hypervolume gap, median of {SEEDS}: tpe {tpe_gap:.3}, random {random_gap:.3}");
    assert!(tpe_gap > 0.0 && 2.0 * tpe_gap < random_gap, "tpe {tpe_gap:.3}, random {random_gap:.3}");
}
