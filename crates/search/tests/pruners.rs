//! Pruners on hand-worked tables of intermediate values: every expected decision is derived in
//! the comment beside it from the rules in the modules' docs.

use attune_search::pruner::{
    AshaConfig, AshaPruner, HyperbandConfig, HyperbandPruner, MedianConfig, MedianPruner, PruneContext, Pruner,
    PrunerConfig,
};
use attune_search::{Direction, Trial, TrialState};
use serde_json::Map;

/// A trial with intermediate values; `sign` flips every value so one table serves both
/// directions (a maximised curve is the minimised one negated).
fn trial(number: u64, state: TrialState, reports: &[(u64, f64)], sign: f64) -> Trial {
    let intermediate: Vec<(u64, f64)> = reports.iter().map(|&(s, v)| (s, sign * v)).collect();
    let values = (state == TrialState::Complete).then(|| vec![intermediate.last().map_or(0.0, |&(_, v)| v)]);
    Trial {
        number,
        state,
        params: vec![0.5],
        values,
        intermediate,
        worker: "test".into(),
        started: 0.0,
        finished: None,
        error: None,
        attrs: Map::new(),
        retries: 0,
    }
}

/// The two directions with the sign that turns a minimised table into theirs.
const DIRECTIONS: [(Direction, f64); 2] = [(Direction::Minimize, 1.0), (Direction::Maximize, -1.0)];

/// Whether `pruner` stops the last trial of `trials` at its last reported step.
fn decide(pruner: &dyn Pruner, direction: Direction, trials: &[Trial]) -> bool {
    let last = trials.last().expect("a reporting trial");
    let step = last.last_step().expect("a report");
    pruner.should_prune(&PruneContext { direction, trials, number: last.number, step })
}

use TrialState::{Complete, Pruned, Running};

/// Five complete trials reporting at steps 0, 1, 2 (minimised values).
/// Best up to step 2: c0 3, c1 5, c2 4 (its step-2 value is 7), c3 8, c4 2.
/// Sorted bests 2, 3, 4, 5, 8: median 4. (Their values at exactly step 2 are 3, 5, 7, 8, 2,
/// whose median is 5: a trial with best 4.5 separates the two readings.)
fn median_table(sign: f64) -> Vec<Trial> {
    vec![
        trial(0, Complete, &[(0, 5.0), (1, 4.0), (2, 3.0)], sign),
        trial(1, Complete, &[(0, 6.0), (1, 5.0), (2, 5.0)], sign),
        trial(2, Complete, &[(0, 7.0), (1, 4.0), (2, 7.0)], sign),
        trial(3, Complete, &[(0, 8.0), (1, 8.0), (2, 8.0)], sign),
        trial(4, Complete, &[(0, 9.0), (1, 9.0), (2, 2.0)], sign),
    ]
}

fn with_reporter(mut trials: Vec<Trial>, reports: &[(u64, f64)], sign: f64) -> Vec<Trial> {
    trials.push(trial(10, Running, reports, sign));
    trials
}

#[test]
fn median_prunes_a_best_worse_than_the_median_of_bests_in_both_directions() {
    let pruner = MedianPruner::new(MedianConfig::default());
    for (direction, sign) in DIRECTIONS {
        // Best 4.5 > median 4: pruned (the value-at-step median 5 would have kept it).
        let t = with_reporter(median_table(sign), &[(0, 4.5), (1, 6.0), (2, 6.0)], sign);
        assert!(decide(&pruner, direction, &t), "{direction:?}: best 4.5 vs median 4");
        // Best 3.9 < 4: continues although its latest value 6 is worse than every other.
        let t = with_reporter(median_table(sign), &[(0, 3.9), (1, 6.0), (2, 6.0)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: best 3.9 vs median 4");
        // Best exactly 4: a tie continues.
        let t = with_reporter(median_table(sign), &[(0, 4.0), (1, 6.0), (2, 6.0)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: tie with the median");
        // At step 0 the bests are 5, 6, 7, 8, 9 (median 7): 7.5 is pruned, 6.5 is not.
        let t = with_reporter(median_table(sign), &[(0, 7.5)], sign);
        assert!(decide(&pruner, direction, &t), "{direction:?}: 7.5 vs step-0 median 7");
        let t = with_reporter(median_table(sign), &[(0, 6.5)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: 6.5 vs step-0 median 7");
    }
}

#[test]
fn median_waits_for_its_startup_trials_counting_only_complete_ones() {
    for (direction, sign) in DIRECTIONS {
        // Four complete trials (c4 dropped) plus a running and a pruned one: bests at step 2
        // are 3, 5, 4, 8 (median 4.5), and a best of 100 is far worse.
        let mut t = median_table(sign);
        t.pop();
        t.push(trial(5, Running, &[(0, 0.0), (1, 0.0), (2, 0.0)], sign));
        t.push(trial(6, Pruned, &[(0, 0.0), (1, 0.0), (2, 0.0)], sign));
        let t = with_reporter(t, &[(0, 100.0), (1, 100.0), (2, 100.0)], sign);
        let five = MedianPruner::new(MedianConfig::default());
        assert!(!decide(&five, direction, &t), "{direction:?}: 4 complete < 5 startup trials");
        let four = MedianPruner::new(MedianConfig { n_startup_trials: 4, ..MedianConfig::default() });
        assert!(decide(&four, direction, &t), "{direction:?}: 4 complete >= 4 startup trials");
        // n_min_trials counts the same complete trials: 5 needed, 4 there.
        let strict =
            MedianPruner::new(MedianConfig { n_startup_trials: 4, n_min_trials: 5, ..MedianConfig::default() });
        assert!(!decide(&strict, direction, &t), "{direction:?}: 4 values < n_min_trials 5");
    }
}

#[test]
fn median_respects_warmup_steps() {
    let pruner = MedianPruner::new(MedianConfig { n_warmup_steps: 2, ..MedianConfig::default() });
    for (direction, sign) in DIRECTIONS {
        // 100 is worse than every median; steps 0 and 1 are warm-up, step 2 is checked.
        let t = with_reporter(median_table(sign), &[(0, 100.0), (1, 100.0)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: step 1 is warm-up");
        let t = with_reporter(median_table(sign), &[(0, 100.0), (1, 100.0), (2, 100.0)], sign);
        assert!(decide(&pruner, direction, &t), "{direction:?}: step 2 is past warm-up");
    }
}

#[test]
fn median_check_steps_follow_warmup_and_interval_and_catch_up_on_skipped_checks() {
    // Warm-up 3, interval 5: checks at 3, 8, 13, ...
    let c = MedianConfig { n_warmup_steps: 3, interval_steps: 5, ..MedianConfig::default() };
    let table = [
        (None, 2, false),    // before warm-up
        (None, 3, true),     // the first check
        (Some(3), 7, false), // no check in 4..=7
        (Some(3), 8, true),  // the check at 8
        (Some(7), 9, true),  // 8 was skipped: checked at the first report past it
        (Some(8), 12, false),
        (Some(9), 13, true),
        (None, 4, true), // a first report after 3 catches up the check at 3
    ];
    for (previous, step, expected) in table {
        assert_eq!(c.is_check_step(previous, step), expected, "previous {previous:?}, step {step}");
    }
    // The pruner applies the gate: with interval 2 from 0, a bad report at step 1 after one at
    // step 0 is not checked; the same report at step 2 is.
    let pruner = MedianPruner::new(MedianConfig { interval_steps: 2, ..MedianConfig::default() });
    let t = with_reporter(median_table(1.0), &[(0, 1.0), (1, 100.0)], 1.0);
    assert!(!decide(&pruner, Direction::Minimize, &t));
    let t = with_reporter(median_table(1.0), &[(0, 100.0), (2, 100.0)], 1.0);
    assert!(decide(&pruner, Direction::Minimize, &t));
}

#[test]
fn asha_rungs_are_r_times_eta_to_the_k_plus_s() {
    let asha = |r, eta, s, max| AshaConfig {
        min_resource: r,
        reduction_factor: eta,
        min_early_stopping_rate: s,
        max_resource: max,
    };
    assert_eq!(asha(1, 3, 0, None).rungs(100), vec![1, 3, 9, 27, 81]);
    assert_eq!(asha(1, 3, 1, None).rungs(100), vec![3, 9, 27, 81]);
    assert_eq!(asha(1, 3, 2, None).rungs(100), vec![9, 27, 81]);
    // 2 * 2^(k+1) = 4, 8, 16, 32.
    assert_eq!(asha(2, 2, 1, None).rungs(40), vec![4, 8, 16, 32]);
    // No rung at or past max_resource: a trial that reaches it is done.
    assert_eq!(asha(1, 3, 0, Some(27)).rungs(100), vec![1, 3, 9]);
    assert_eq!(asha(1, 3, 0, Some(28)).rungs(100), vec![1, 3, 9, 27]);
    // The ladder stops at u64's end instead of overflowing.
    assert_eq!(asha(1, 3, 0, None).rungs(u64::MAX).len(), 41); // 3^40 < 2^64 < 3^41
}

/// Rung-1 values (minimised): 0.9, 0.5 (pruned since), 0.7, 0.3, 0.8.
fn asha_table(sign: f64) -> Vec<Trial> {
    vec![
        trial(0, Complete, &[(1, 0.9), (3, 0.9)], sign),
        trial(1, Pruned, &[(1, 0.5)], sign),
        trial(2, Running, &[(1, 0.7)], sign),
        trial(3, Complete, &[(1, 0.3), (3, 0.2)], sign),
        trial(4, Running, &[(1, 0.8)], sign),
    ]
}

#[test]
fn asha_keeps_the_top_third_of_a_rung_in_both_directions() {
    let pruner = AshaPruner::new(AshaConfig::default()); // r = 1, eta = 3, s = 0: rungs 1, 3, 9
    for (direction, sign) in DIRECTIONS {
        // 0.6 at rung 1: n = 6 values, keep 6/3 = 2; 0.5 and 0.3 are better: pruned.
        let t = with_reporter(asha_table(sign), &[(1, 0.6)], sign);
        assert!(decide(&pruner, direction, &t), "{direction:?}: 0.6 is third of six");
        // 0.4: only 0.3 is better (1 < 2): continues.
        let t = with_reporter(asha_table(sign), &[(1, 0.4)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: 0.4 is second of six");
        // 0.5 ties the pruned trial's 0.5; only 0.3 is strictly better: continues.
        let t = with_reporter(asha_table(sign), &[(1, 0.5)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: a tie is kept");
        // Step 2 is no rung: nothing is judged however bad the value.
        let t = with_reporter(asha_table(sign), &[(1, 0.4), (2, 50.0)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: step 2 is no rung");
        // Fewer than eta values: with trial 0 alone, n = 2 < 3 and even 50 continues.
        let t = with_reporter(asha_table(sign)[..1].to_vec(), &[(1, 50.0)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: 2 values < eta");
        // Exactly eta values: 0.9, 0.5 and 0.7: keep 1; 0.5 is better than 0.7: pruned.
        let t = with_reporter(asha_table(sign)[..2].to_vec(), &[(1, 0.7)], sign);
        assert!(decide(&pruner, direction, &t), "{direction:?}: 3 values, second");
        let t = with_reporter(asha_table(sign)[..2].to_vec(), &[(1, 0.4)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: 3 values, first");
    }
}

#[test]
fn asha_reads_a_skipped_rung_from_the_first_report_past_it() {
    let pruner = AshaPruner::new(AshaConfig::default());
    for (direction, sign) in DIRECTIONS {
        // Rung 3: p has 0.4 at step 3, q skipped 3 and has 0.2 at step 5, r has 0.45 at 3.
        // The reporter skipped 3 too and reports 0.3 at step 4, crossing rung 3 (its previous
        // report was at 1). n = 4, keep 1, q's 0.2 is better: pruned. Were q's value ignored
        // (nothing at step 3), n = 3 and nothing beats 0.3: it would continue.
        let t = vec![
            trial(0, Complete, &[(1, 0.5), (3, 0.4)], sign),
            trial(1, Running, &[(1, 0.6), (5, 0.2)], sign),
            trial(2, Running, &[(1, 0.7), (3, 0.45)], sign),
            trial(10, Running, &[(1, 0.55), (4, 0.3)], sign),
        ];
        assert!(decide(&pruner, direction, &t), "{direction:?}: q's step-5 value stands at rung 3");
        // The same reporter at 0.1 beats q: continues.
        let mut t = t;
        t[3] = trial(10, Running, &[(1, 0.55), (4, 0.1)], sign);
        assert!(!decide(&pruner, direction, &t), "{direction:?}: 0.1 is best at rung 3");
    }
}

#[test]
fn asha_min_early_stopping_rate_and_max_resource_move_the_rungs() {
    for (direction, sign) in DIRECTIONS {
        // With s = 1 the first rung is 3: a report of 50 at step 1 is not judged.
        let s1 = AshaPruner::new(AshaConfig { min_early_stopping_rate: 1, ..AshaConfig::default() });
        let t = with_reporter(asha_table(sign), &[(1, 50.0)], sign);
        assert!(!decide(&s1, direction, &t), "{direction:?}: s = 1 has no rung at 1");
        assert!(decide(&AshaPruner::new(AshaConfig::default()), direction, &t), "{direction:?}: s = 0 does");
        // At rung 3 (values 0.9 and 0.2 from trials 0 and 3), s = 1 judges 50: n = 3, keep 1,
        // both better: pruned. With max_resource 3, step 3 is the end and no rung: continues.
        let t = with_reporter(asha_table(sign), &[(1, 0.1), (3, 50.0)], sign);
        assert!(decide(&s1, direction, &t), "{direction:?}: s = 1 judges rung 3");
        let capped = AshaPruner::new(AshaConfig { max_resource: Some(3), ..AshaConfig::default() });
        assert!(!decide(&capped, direction, &t), "{direction:?}: no rung at max_resource");
    }
}

#[test]
fn hyperband_brackets_follow_hyperbands_table() {
    let c = HyperbandConfig::default(); // r = 1, R = 81, eta = 3
    assert_eq!(c.n_brackets(), 5);
    // Li et al. 2018, Table 1 (R = 81, eta = 3): n = 81, 34, 15, 8, 5 for s = 4 .. 0.
    assert_eq!(c.bracket_sizes(), vec![81, 34, 15, 8, 5]);
    // R = 27: s_max = 3, n = ceil(4 * 3^s / (s + 1)) = 27, 12, 6, 4.
    let c27 = HyperbandConfig { max_resource: 27, ..HyperbandConfig::default() };
    assert_eq!(c27.bracket_sizes(), vec![27, 12, 6, 4]);
    // R = 26 < 27: one bracket fewer.
    assert_eq!(HyperbandConfig { max_resource: 26, ..HyperbandConfig::default() }.n_brackets(), 3);
    // Bracket b starts at rung r * eta^b; the last has none below R.
    assert_eq!(c.bracket_config(0).rungs(1000), vec![1, 3, 9, 27]);
    assert_eq!(c.bracket_config(3).rungs(1000), vec![27]);
    assert!(c.bracket_config(4).rungs(1000).is_empty());
}

#[test]
fn hyperband_bracket_of_a_number_is_stable_and_weighted_by_bracket_size() {
    let a = HyperbandConfig::default();
    let b = HyperbandConfig::default();
    let n = 14_300u64; // 100 Hyperband rounds of 143 trials
    let mut counts = [0u64; 5];
    for number in 0..n {
        let bracket = a.bracket_of(number);
        assert_eq!(bracket, b.bracket_of(number), "trial {number}");
        assert_eq!(bracket, a.bracket_of(number), "trial {number} asked twice");
        counts[bracket as usize] += 1;
    }
    for (bracket, (&count, &size)) in counts.iter().zip(&a.bracket_sizes()).enumerate() {
        let p = size as f64 / 143.0;
        let expected = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - expected).abs() < 5.0 * sd,
            "bracket {bracket}: {count} trials, expected {expected:.0} ± {:.0}",
            5.0 * sd
        );
    }
}

/// The first `count` trial numbers in bracket `bracket`.
fn numbers_in(c: &HyperbandConfig, bracket: u32, count: usize) -> Vec<u64> {
    (0..).filter(|&n| c.bracket_of(n) == bracket).take(count).collect()
}

#[test]
fn hyperband_compares_a_trial_only_within_its_bracket() {
    let c = HyperbandConfig::default();
    let pruner = HyperbandPruner::new(c.clone());
    let zero = numbers_in(&c, 0, 3);
    let one = numbers_in(&c, 1, 4);
    for (direction, sign) in DIRECTIONS {
        // Bracket 0 (rungs 1, 3, 9, 27) holds 0.9 and 0.8 at rung 1; bracket 1 holds 0.1, 0.2
        // and 0.3. The reporter (bracket 0) at 0.5: within its bracket n = 3, keep 1, none
        // better: continues. Pooled, n = 6, keep 2, three better: it would be pruned.
        let mut t = vec![
            trial(zero[0], Complete, &[(1, 0.9), (3, 0.01)], sign),
            trial(zero[1], Complete, &[(1, 0.8), (3, 0.02)], sign),
            trial(one[0], Complete, &[(1, 0.1), (3, 0.1)], sign),
            trial(one[1], Complete, &[(1, 0.2), (3, 0.2)], sign),
            trial(one[2], Complete, &[(1, 0.3), (3, 0.3)], sign),
        ];
        t.sort_by_key(|t| t.number);
        let mut with = t.clone();
        with.push(trial(zero[2], Running, &[(1, 0.5)], sign));
        assert!(!decide(&pruner, direction, &with), "{direction:?}: bracket 0 alone keeps 0.5");
        assert!(decide(&AshaPruner::new(c.bracket_config(0)), direction, &with), "{direction:?}: pooled prunes");
        // A bracket-1 reporter is not judged at step 1 (its first rung is 3); at step 3 it
        // meets 0.1, 0.2, 0.3 only: 0.25 is third of four, keep 1: pruned; 0.05 leads and
        // continues (pooled with bracket 0's 0.01 and 0.02, n = 6, keep 2, two better: pruned).
        let mut with = t.clone();
        with.push(trial(one[3], Running, &[(1, 50.0)], sign));
        assert!(!decide(&pruner, direction, &with), "{direction:?}: bracket 1 has no rung 1");
        let mut with = t.clone();
        with.push(trial(one[3], Running, &[(1, 0.5), (3, 0.25)], sign));
        assert!(decide(&pruner, direction, &with), "{direction:?}: 0.25 at bracket 1's rung 3");
        with.pop();
        with.push(trial(one[3], Running, &[(1, 0.5), (3, 0.05)], sign));
        assert!(!decide(&pruner, direction, &with), "{direction:?}: 0.05 leads bracket 1");
        assert!(decide(&AshaPruner::new(c.bracket_config(1)), direction, &with), "{direction:?}: pooled prunes 0.05");
    }
}

#[test]
fn hyperband_decides_as_its_brackets_asha_over_that_bracket_alone() {
    // 60 trials with seeded curves; every report of every trial decided both ways.
    let c = HyperbandConfig { max_resource: 27, ..HyperbandConfig::default() };
    let hyperband = HyperbandPruner::new(c.clone());
    let mut rng = attune_rng::Rng::from_key(&[7]);
    let trials: Vec<Trial> = (0..60)
        .map(|n| {
            let level = rng.unit_f64();
            let reports: Vec<(u64, f64)> = (1..=27).map(|s| (s, level + rng.unit_f64() / s as f64)).collect();
            trial(n, Complete, &reports, 1.0)
        })
        .collect();
    let (mut agreements, mut pruned) = (0, 0);
    for reporter in &trials {
        let bracket = c.bracket_of(reporter.number);
        let own: Vec<Trial> = trials.iter().filter(|t| c.bracket_of(t.number) == bracket).cloned().collect();
        let asha = AshaPruner::new(c.bracket_config(bracket));
        for &(step, _) in &reporter.intermediate {
            let ctx = |trials: &[Trial]| {
                let ctx = PruneContext { direction: Direction::Minimize, trials, number: reporter.number, step };
                (hyperband.should_prune(&ctx), asha.should_prune(&ctx))
            };
            let h = ctx(&trials).0;
            assert_eq!(h, ctx(&own).1, "trial {}, step {step}", reporter.number);
            agreements += 1;
            pruned += u32::from(h);
        }
    }
    assert_eq!(agreements, 60 * 27);
    assert!(pruned > 0, "the comparison must include pruning decisions");
}

#[test]
fn pruner_configs_parse_validate_and_build() {
    for name in PrunerConfig::NAMES {
        let config = PrunerConfig::by_name(name).unwrap();
        config.validate().unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["kind"], *name);
        assert_eq!(serde_json::from_value::<PrunerConfig>(json).unwrap(), config);
    }
    assert!(PrunerConfig::by_name("patient").unwrap_err().to_string().contains("median, asha, hyperband"));
    // Missing fields take their defaults; eta is accepted for reduction_factor.
    let asha: PrunerConfig = serde_json::from_str(r#"{"kind": "asha", "eta": 4}"#).unwrap();
    assert_eq!(asha, PrunerConfig::Asha(AshaConfig { reduction_factor: 4, ..AshaConfig::default() }));
    let typo = serde_json::from_str::<PrunerConfig>(r#"{"kind": "median", "n_warmup": 3}"#);
    assert!(typo.is_err(), "an unknown setting is an error, not ignored");
    // Invalid settings are named; built anyway, they never prune and never hang.
    let invalid = [
        PrunerConfig::Asha(AshaConfig { reduction_factor: 1, ..AshaConfig::default() }),
        PrunerConfig::Asha(AshaConfig { min_resource: 0, ..AshaConfig::default() }),
        PrunerConfig::Hyperband(HyperbandConfig { max_resource: 2, ..HyperbandConfig::default() }),
        PrunerConfig::Median(MedianConfig { interval_steps: 0, n_startup_trials: 0, ..MedianConfig::default() }),
    ];
    let t = with_reporter(asha_table(1.0), &[(0, 50.0), (1, 50.0)], 1.0);
    for config in invalid {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("fix:"), "{err}");
        assert!(!decide(config.build().as_ref(), Direction::Minimize, &t), "{config:?}");
    }
}

/// A study minimising time while its trials report accuracy: the pruner must judge the
/// reports as maximised (`set_intermediate_direction`), not in the objective's direction.
#[test]
fn a_study_prunes_in_the_intermediate_direction_not_the_objectives() {
    use attune_search::sampler::SamplerConfig;
    use attune_search::{Finish, MemoryStorage, Space, Study, StudyRecord};
    use std::sync::Arc;
    let space =
        Space::from_toml("direction = \"minimize\"\n[params]\nx = { type = \"float\", low = 0, high = 1 }", "<t>")
            .unwrap();
    let median = PrunerConfig::Median(MedianConfig { n_startup_trials: 3, ..MedianConfig::default() });
    let record = StudyRecord {
        space,
        sampler: serde_json::json!({"kind": "random"}),
        pruner: Some(serde_json::to_value(&median).unwrap()),
        seed: 0,
        driver: serde_json::Value::Null,
    };
    let open = |intermediate: Option<Direction>| {
        let storage = Arc::new(MemoryStorage::new());
        let sampler = SamplerConfig::by_name("random").unwrap().build();
        let mut study = Study::open(storage, record.clone(), sampler, Some(median.build())).unwrap();
        if let Some(d) = intermediate {
            study.set_intermediate_direction(d);
        }
        // Three finished trials reached 90% accuracy at step 1; a fourth reports 10%.
        for _ in 0..3 {
            let t = study.ask("w").unwrap();
            assert!(!study.report(t.number, 1, 0.9).unwrap());
            study.tell(t.number, Finish::complete(vec![5.0])).unwrap();
        }
        let t = study.ask("w").unwrap();
        study.report(t.number, 1, 0.1).unwrap()
    };
    assert!(open(Some(Direction::Maximize)), "10% accuracy is below the median 90%: pruned");
    assert!(!open(None), "judged as minimised, 10% looks better than 90% (the default direction)");
}
