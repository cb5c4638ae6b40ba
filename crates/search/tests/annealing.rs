//! Simulated annealing: the acceptance rule and a replay worked by hand, restarts, determinism,
//! validity, and search quality against random search over several seeds.

mod sampler_runs;

use attune_search::sampler::annealing::{
    DeltaScale, RestartFrom, Schedule, metropolis_accept, normalised_delta, rank_delta,
};
use attune_search::sampler::{SaConfig, SaSampler, Sampler, SamplerConfig};
use attune_search::{SearchError, Space};
use sampler_runs::{
    bests, context, every_kind_space, finished, median, mixed_loss, mixed_space, quadratic, rastrigin, rastrigin_space,
    run, run_batched,
};

fn one_float() -> Space {
    Space::from_toml("[params]\nx = { type = \"float\", low = 0.0, high = 1.0 }", "one").unwrap()
}

#[test]
fn metropolis_rule_hand_worked() {
    // Improvements and ties are always accepted, whatever the draw or temperature.
    assert!(metropolis_accept(-1.0, 1.0, 0.999));
    assert!(metropolis_accept(0.0, 0.0, 0.999));
    // One unit worse at T = 1: accepted when u < e^-1 = 0.3679.
    assert!(metropolis_accept(1.0, 1.0, 0.36));
    assert!(!metropolis_accept(1.0, 1.0, 0.37));
    // Two units worse at T = 0.5: e^-4 = 0.01832.
    assert!(metropolis_accept(2.0, 0.5, 0.018));
    assert!(!metropolis_accept(2.0, 0.5, 0.019));
    // At T = 0 only improvements pass.
    assert!(!metropolis_accept(1e-9, 0.0, 0.0));
}

#[test]
fn rank_delta_is_the_share_of_seen_losses_jumped_over() {
    // 3 of 9 seen losses strictly between: (3 + 1) / (9 + 1); the sign says which way.
    assert_eq!(rank_delta(7.0, 2.0, 3, 9), 0.4);
    assert_eq!(rank_delta(2.0, 7.0, 3, 9), -0.4);
    // Adjacent losses: one place of n + 1, however far apart the values are.
    assert_eq!(rank_delta(1e9, 1.0, 0, 19), 0.05);
    assert_eq!(rank_delta(3.0, 3.0, 0, 19), 0.0);
}

#[test]
fn delta_is_normalised_by_the_loss_spread() {
    assert_eq!(normalised_delta(3.0, 1.0, 4.0), 0.5);
    assert_eq!(normalised_delta(1.0, 3.0, 4.0), -2.0);
    // No spread yet: a worsening counts as one unit, an improvement keeps its sign.
    assert_eq!(normalised_delta(3.0, 1.0, 0.0), 1.0);
    assert_eq!(normalised_delta(1.0, 3.0, 0.0), -2.0);
}

/// Losses 5, 3, 4, 2, (failed), 6, 1 on trials 0..=6.
fn hand_trials() -> Vec<attune_search::Trial> {
    [Some(5.0), Some(3.0), Some(4.0), Some(2.0), None, Some(6.0), Some(1.0)]
        .into_iter()
        .enumerate()
        .map(|(i, loss)| finished(i as u64, vec![i as f64 / 10.0], loss))
        .collect()
}

fn constant_temperature(t: f64) -> SaSampler {
    SaSampler::new(SaConfig {
        schedule: Schedule::Geometric { t0: t, alpha: 1.0 },
        restart_after: None,
        ..SaConfig::default()
    })
}

fn constant_temperature_std(t: f64) -> SaSampler {
    SaSampler::new(SaConfig {
        schedule: Schedule::Geometric { t0: t, alpha: 1.0 },
        restart_after: None,
        delta: DeltaScale::Std,
        ..SaConfig::default()
    })
}

#[test]
fn cold_replay_accepts_only_improvements() {
    // At T = 1e-3, trial 2 (4 vs current 3, seen 5, 3: none between) jumps (0 + 1) / (2 + 1)
    // of the seen losses: accepted with probability e^-333; trial 5 (6 vs 2 with 3, 4, 5
    // between, of 4 seen) jumps 4 / 5. The failed trial 4 is a rejected move. So the current
    // state follows the improvements 0, 1, 3, 6.
    let space = one_float();
    let trials = hand_trials();
    let chain = constant_temperature(1e-3).chain(&context(&space, &trials, 7)).unwrap();
    assert_eq!(chain.accepted, vec![0, 1, 3, 6]);
    // The same under the standard-deviation scale: trial 2 is 1 / std(5, 3) = 0.707 units
    // worse, trial 5 is 4 / std(5, 3, 4, 2) = 3.1 units worse.
    let by_std = constant_temperature_std(1e-3).chain(&context(&space, &trials, 7)).unwrap();
    assert_eq!(by_std.accepted, vec![0, 1, 3, 6]);
    assert_eq!(chain.current.as_ref().map(|v| v.number), Some(6));
    assert_eq!(chain.best.as_ref().map(|v| (v.number, v.loss)), Some((6, 1.0)));
    assert_eq!(chain.step, 7);
    // After trial 5: non-improving trials 4 and 5 in a row.
    let prefix = constant_temperature(1e-3).chain(&context(&space, &trials[..6], 7)).unwrap();
    assert_eq!((prefix.stale, prefix.current.map(|v| v.number)), (2, Some(3)));
}

#[test]
fn hot_replay_accepts_worse_moves_and_keeps_the_best_apart() {
    // At T = 1e6 trial 2 (a 1/3 jump) is accepted with probability e^(-3.3e-7) and trial 5
    // (4/5) with e^(-8e-7): both are taken, the failed trial is not.
    let space = one_float();
    let trials = hand_trials();
    let chain = constant_temperature(1e6).chain(&context(&space, &trials, 7)).unwrap();
    assert_eq!(chain.accepted, vec![0, 1, 2, 3, 5, 6]);
    let prefix = constant_temperature(1e6).chain(&context(&space, &trials[..6], 7)).unwrap();
    assert_eq!(prefix.current.as_ref().map(|v| (v.number, v.loss)), Some((5, 6.0)));
    assert_eq!(prefix.best.as_ref().map(|v| (v.number, v.loss)), Some((3, 2.0)));
}

#[test]
fn one_outlier_makes_the_std_scale_accept_what_the_rank_scale_refuses() {
    // Losses 1, 2, 3, 1e6, 4 at T = 0.01. Trials 1-3 are refused by both scales (trial 1: one
    // unit or a 1/2 jump; trial 2: 2 / std(1, 2) = 2.8 units or a 2/3 jump; trial 3 is huge).
    // Trial 4 (4 vs current 1): the outlier makes std(1, 2, 3, 1e6) = 5e5, so the move is
    // 6e-6 units worse and taken with probability e^-6e-4; by rank it jumps over 2 and 3,
    // (2 + 1) / (4 + 1) = 0.6 of the seen losses, taken with probability e^-60.
    let space = one_float();
    let trials: Vec<_> = [1.0, 2.0, 3.0, 1e6, 4.0]
        .iter()
        .enumerate()
        .map(|(i, &l)| finished(i as u64, vec![i as f64 / 10.0], Some(l)))
        .collect();
    let by_std = constant_temperature_std(0.01).chain(&context(&space, &trials, 7)).unwrap();
    assert_eq!(by_std.accepted, vec![0, 4]);
    let by_rank = constant_temperature(0.01).chain(&context(&space, &trials, 7)).unwrap();
    assert_eq!(by_rank.accepted, vec![0]);
}

#[test]
fn temperature_follows_the_schedule_through_the_replay() {
    let space = one_float();
    let trials = hand_trials();
    let sa = SaSampler::new(SaConfig {
        schedule: Schedule::Geometric { t0: 2.0, alpha: 0.5 },
        restart_after: None,
        ..SaConfig::default()
    });
    let chain = sa.chain(&context(&space, &trials, 1)).unwrap();
    assert_eq!(chain.temperature, 2.0 * 0.5f64.powi(7));
    let empty = sa.chain(&context(&space, &[], 1)).unwrap();
    assert_eq!((empty.temperature, empty.current), (2.0, None));
}

#[test]
fn restarts_after_the_configured_count() {
    // Restart after 3 steps without a new best. Trial 0 (5) is the best until trial 7 (1):
    // trials 1-3 and 4-6 make two restarts, trials 8-10 a third.
    let space = one_float();
    let losses = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 1.0, 2.0, 2.0, 2.0];
    let trials: Vec<_> =
        losses.iter().enumerate().map(|(i, &l)| finished(i as u64, vec![i as f64 / 20.0], Some(l))).collect();
    let config = |from| SaConfig {
        schedule: Schedule::Geometric { t0: 1.0, alpha: 0.5 },
        restart_after: Some(3),
        restart_from: from,
        ..SaConfig::default()
    };
    let sa = SaSampler::new(config(RestartFrom::Best));
    let chain = |n: usize| sa.chain(&context(&space, &trials[..n], 3)).unwrap();
    assert_eq!(chain(3).restarts, 0);
    let first = chain(4);
    assert_eq!((first.restarts, first.step, first.stale, first.temperature), (1, 0, 0, 1.0));
    assert_eq!(first.current.map(|v| v.number), Some(0));
    assert_eq!(chain(7).restarts, 2);
    assert_eq!(chain(10).restarts, 2);
    let all = chain(11);
    assert_eq!((all.restarts, all.current.map(|v| v.number)), (3, Some(7)));

    // From a random point the chain has no current state until the next trial finishes, and
    // that trial becomes the current one whatever its loss.
    let random = SaSampler::new(config(RestartFrom::Random));
    assert_eq!(random.chain(&context(&space, &trials[..4], 3)).unwrap().current, None);
    let after = random.chain(&context(&space, &trials[..5], 3)).unwrap();
    assert_eq!(after.current.map(|v| v.number), Some(4));
}

#[test]
fn replaying_the_stored_trials_reproduces_every_proposal() {
    // A resumed study sees only the stored trials: the proposal for trial n, rebuilt from
    // trials 0..n, must be what the uninterrupted study asked for.
    let space = mixed_space();
    let config = SaConfig { restart_after: Some(8), ..SaConfig::default() };
    let trials = run(&SamplerConfig::Sa(config.clone()), &space, 11, 60, |_, x| mixed_loss(x));
    let sa = SaSampler::new(config);
    for n in 0..trials.len() {
        let proposal = space.snap(&sa.sample(&context(&space, &trials[..n], 11)).unwrap());
        assert_eq!(proposal, trials[n].params, "trial {n}");
    }
    assert!(sa.chain(&context(&space, &trials, 11)).unwrap().restarts >= 1);
}

#[test]
fn same_seed_same_study_other_seed_other_study() {
    let space = rastrigin_space();
    let sa = SamplerConfig::by_name("sa").unwrap();
    let a = run_batched(&sa, &space, 5, 40, 4, |_, x| rastrigin(x));
    let b = run_batched(&sa, &space, 5, 40, 4, |_, x| rastrigin(x));
    let c = run_batched(&sa, &space, 6, 40, 4, |_, x| rastrigin(x));
    let params = |t: &[attune_search::Trial]| t.iter().map(|t| t.params.clone()).collect::<Vec<_>>();
    assert_eq!(params(&a), params(&b));
    assert_ne!(params(&a), params(&c));
    // Four workers asking from the same state get four different proposals.
    for batch in a.chunks(4) {
        for i in 0..batch.len() {
            for j in i + 1..batch.len() {
                assert_ne!(batch[i].params, batch[j].params);
            }
        }
    }
}

#[test]
fn proposals_are_valid_and_move_one_to_max_moved_parameters() {
    let space = every_kind_space();
    for from in [RestartFrom::Best, RestartFrom::Random] {
        let config = SaConfig { max_moved: 3, restart_after: Some(5), restart_from: from, ..SaConfig::default() };
        let sa = SaSampler::new(config.clone());
        // Every fifth trial fails (a NaN objective is stored as failed).
        let trials = run_batched(&SamplerConfig::Sa(config), &space, 2, 120, 3, |n, x| {
            if n % 5 == 4 { f64::NAN } else { x.iter().map(|v| v.abs().ln_1p()).sum() }
        });
        for n in 0..=trials.len() {
            let ctx = context(&space, &trials[..n], 2);
            let point = sa.sample(&ctx).unwrap();
            for (p, &x) in space.params.iter().zip(&point) {
                assert!(p.dist.contains(x), "{} = {x} is not valid", p.name);
            }
            if let Some(current) = sa.chain(&ctx).unwrap().current {
                let moved = point.iter().zip(&current.params).filter(|(a, b)| a != b).count();
                assert!((1..=3).contains(&moved), "{moved} parameters moved");
            }
        }
    }
}

#[test]
fn bad_settings_are_named() {
    let space = one_float();
    let bad = [
        SaConfig { schedule: Schedule::Geometric { t0: 0.0, alpha: 0.9 }, ..SaConfig::default() },
        SaConfig { schedule: Schedule::Geometric { t0: 1.0, alpha: 1.5 }, ..SaConfig::default() },
        SaConfig { schedule: Schedule::Linear { t0: 1.0, steps: 0 }, ..SaConfig::default() },
        SaConfig { step: 0.0, ..SaConfig::default() },
        SaConfig { min_step: 0.5, step: 0.2, ..SaConfig::default() },
        SaConfig { max_moved: 0, ..SaConfig::default() },
        SaConfig { restart_after: Some(0), ..SaConfig::default() },
    ];
    for config in bad {
        let err = SaSampler::new(config.clone()).sample(&context(&space, &[], 0)).unwrap_err();
        assert!(matches!(&err, SearchError::Config { component, .. } if component == "sa"), "{config:?}: {err}");
    }
}

#[test]
fn defaults_by_name_and_partial_settings_from_json() {
    // The name and the JSON round trip of every sampler: sampler/mod.rs's unit test.
    assert_eq!(SamplerConfig::by_name("sa").unwrap(), SamplerConfig::Sa(SaConfig::default()));
    let partial: SamplerConfig =
        serde_json::from_str(r#"{"kind": "sa", "schedule": {"type": "linear", "t0": 2.0, "steps": 50}}"#).unwrap();
    let expected = SaConfig { schedule: Schedule::Linear { t0: 2.0, steps: 50 }, ..SaConfig::default() };
    assert_eq!(partial, SamplerConfig::Sa(expected));
}

/// Median best of SA and of random search over seeds 0..10 at 150 trials, and how many seeds
/// SA beat random on.
fn against_random(space: &Space, objective: fn(&[f64]) -> f64) -> (f64, f64, usize) {
    let sa = bests(&SamplerConfig::by_name("sa").unwrap(), space, 0..10, 150, |_, x| objective(x));
    let random = bests(&SamplerConfig::Random, space, 0..10, 150, |_, x| objective(x));
    let wins = sa.iter().zip(&random).filter(|(s, r)| s < r).count();
    eprintln!("SA median {} random median {} SA wins {wins}/10", median(&sa), median(&random));
    (median(&sa), median(&random), wins)
}

#[test]
fn beats_random_on_rastrigin() {
    // Measured: SA median 5.56, random 25.2, SA better on 10 of 10 seeds.
    let (sa, random, wins) = against_random(&rastrigin_space(), rastrigin);
    assert!(sa < 0.7 * random, "SA median {sa} vs random {random}");
    assert!(wins >= 7, "SA won on {wins} of 10 seeds");
}

#[test]
fn beats_random_on_a_quadratic() {
    // Measured: SA median 0.0055, random 2.54, 10 of 10.
    let (sa, random, wins) = against_random(&rastrigin_space(), quadratic);
    assert!(sa < 0.25 * random, "SA median {sa} vs random {random}");
    assert!(wins >= 8, "SA won on {wins} of 10 seeds");
}

#[test]
fn beats_random_on_a_mixed_space_and_finds_its_best() {
    let (sa, random, wins) = against_random(&mixed_space(), mixed_loss);
    assert!(sa < 0.25 * random, "SA median {sa} vs random {random}");
    assert!(wins >= 8, "SA won on {wins} of 10 seeds");
    // Measured: SA median 0.0087, random 1.77, 10 of 10. The known best (gelu, 0.1, 6, 1e-3,
    // 256) has loss 0, and the next-best activation alone costs 0.5.
    assert!(sa < 0.5, "SA median {sa}");
}

/// [`mixed_loss`] as a training run would report it: with lr above 0.02 the run diverges to
/// the constant predictor's loss (a plateau of equal values), and above 0.05 it blows up to
/// huge values that grow with the depth, the heavy tail of real hyperparameter tables.
fn diverging_loss(x: &[f64]) -> f64 {
    let lr = x[3];
    if lr > 0.05 {
        1e4 * x[2]
    } else if lr > 0.02 {
        50.0
    } else {
        mixed_loss(x)
    }
}

#[test]
fn rank_scale_beats_the_std_scale_and_random_on_a_heavy_tailed_loss() {
    let space = mixed_space();
    // The std scale with the settings it was tuned with before the rank scale was the default.
    let std_config = SamplerConfig::Sa(SaConfig {
        delta: DeltaScale::Std,
        schedule: Schedule::Geometric { t0: 0.5, alpha: 0.93 },
        restart_after: Some(25),
        ..SaConfig::default()
    });
    let rank = bests(&SamplerConfig::by_name("sa").unwrap(), &space, 0..10, 150, |_, x| diverging_loss(x));
    let by_std = bests(&std_config, &space, 0..10, 150, |_, x| diverging_loss(x));
    let random = bests(&SamplerConfig::Random, &space, 0..10, 150, |_, x| diverging_loss(x));
    let wins = rank.iter().zip(&by_std).filter(|(r, s)| r < s).count();
    let (rank, by_std, random) = (median(&rank), median(&by_std), median(&random));
    eprintln!("rank-scale SA median {rank}, std-scale SA median {by_std}, random {random}, rank wins {wins}/10");
    // Measured: rank 0.0087, std 0.83, random 1.77; the rank scale better on 9 of 10 seeds.
    // The std scale's chain wanders: once a blown-up run is seen, every move among the
    // working runs is a tiny fraction of a standard deviation.
    assert!(rank < 0.1 * by_std, "rank-scale median {rank} vs std-scale {by_std}");
    assert!(rank < 0.05 * random, "rank-scale median {rank} vs random {random}");
    assert!(wins >= 7, "the rank scale won on {wins} of 10 seeds");
}
