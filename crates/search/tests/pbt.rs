//! Population-based training decisions: who exploits whom on hand-ranked populations, the
//! explore moves value by value, the resampling rate over many seeds, lineages of a
//! hand-worked history, and the members' starting points.

use std::sync::Arc;

use attune_search::pbt::{Action, Decision, LineageStep, Member, PbtConfig, Schedule, decide, truncation_selection};
use attune_search::sampler::SamplerConfig;
use attune_search::{Direction, MemoryStorage, Space, Study, StudyRecord};

fn space(toml: &str) -> Space {
    Space::from_toml(toml, "<test>").unwrap()
}

fn member(id: u64, params: Vec<f64>, value: Option<f64>) -> Member {
    Member { id, params, value, checkpoint: format!("ckpt/{id}") }
}

/// (donor, params) of an exploit, `None` for continue.
fn exploit(d: &Decision) -> Option<(u64, &[f64])> {
    match &d.action {
        Action::Exploit { from, params, .. } => Some((*from, params.as_slice())),
        Action::Continue => None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
}

/// Eight members with lr = 0.001 * (id + 1) and values (minimised or maximised):
/// id:    0    1    2    3    4    5    6    7
/// value: 0.5  0.2  0.9  0.4  0.1  0.7  0.3  0.8
/// Ranked for minimising: 4, 1, 6, 3, 0, 5, 7, 2. k = ceil(8 * 0.25) = 2, so 7 and 2 exploit,
/// copying 4 or 1. Maximising reverses the ranking: 1 and 4 exploit, copying 2 or 7.
fn population() -> Vec<Member> {
    let values = [0.5, 0.2, 0.9, 0.4, 0.1, 0.7, 0.3, 0.8];
    (0..8).map(|id| member(id, vec![0.001 * (id + 1) as f64], Some(values[id as usize]))).collect()
}

#[test]
fn the_bottom_quarter_copies_the_top_quarter_in_both_directions() {
    let s = space("[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }");
    let members = population();
    let config = PbtConfig::default();
    for (direction, bottom, top) in [(Direction::Minimize, [2, 7], [4, 1]), (Direction::Maximize, [1, 4], [2, 7])] {
        let selection = truncation_selection(direction, &members, 0.25).unwrap();
        assert_eq!(selection.top, top.to_vec(), "{direction:?}");
        let mut sorted_bottom = selection.bottom.clone();
        sorted_bottom.sort_unstable();
        assert_eq!(sorted_bottom, bottom.to_vec(), "{direction:?}");
        let mut donor_counts = [0u32; 2];
        let seeds = 200;
        for seed in 0..seeds {
            let decisions = decide(&s, direction, &members, 1, seed, &config).unwrap();
            assert_eq!(decisions.iter().map(|d| d.member).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
            for d in &decisions {
                match (&d.action, bottom.contains(&d.member)) {
                    (Action::Continue, false) => {}
                    (Action::Exploit { from, checkpoint, params }, true) => {
                        let slot = top.iter().position(|t| t == from).expect("donor in the top two");
                        donor_counts[slot] += 1;
                        assert_eq!(checkpoint, &format!("ckpt/{from}"));
                        // The donor's lr times 0.8 or 1.2.
                        let lr = 0.001 * (*from + 1) as f64;
                        assert!(close(params[0], lr * 0.8) || close(params[0], lr * 1.2), "{params:?} from {lr}");
                    }
                    (action, _) => panic!("{direction:?} seed {seed}: member {} got {action:?}", d.member),
                }
            }
        }
        // Donors are uniform over the top two: 400 draws, each near 200 (sd 10).
        for count in donor_counts {
            assert!((160..=240).contains(&count), "{direction:?}: donor counts {donor_counts:?}");
        }
    }
}

#[test]
fn explore_multiplies_by_a_factor_and_snaps_to_the_space() {
    // Sorted by name: a_lin, b_int, c_log, d_step.
    let s = space(
        "[params]\n\
         a_lin = { type = \"float\", low = 0.0, high = 1.0 }\n\
         b_int = { type = \"int\", low = 1, high = 100 }\n\
         c_log = { type = \"float\", low = 1e-4, high = 0.1, log = true }\n\
         d_step = { type = \"float\", low = 0.0, high = 1.0, step = 0.1 }",
    );
    // (donor params, the two outcomes per parameter for factors 0.8 and 1.2), by hand:
    let cases: [([f64; 4], [[f64; 2]; 4]); 3] = [
        // 0.01 -> 0.008 | 0.012; 10 -> 8 | 12; 0.01 -> 0.008 | 0.012; 0.5 -> 0.4 | 0.6.
        ([0.01, 10.0, 0.01, 0.5], [[0.008, 0.012], [8.0, 12.0], [0.008, 0.012], [0.4, 0.6]]),
        // 0.9 -> 0.72 | 1.08 clamped to 1; 7 -> 5.6 ~ 6 | 8.4 ~ 8; 0.1 (high) -> 0.08 | 0.1
        // clamped; 1.0 -> 0.8 | 1.2 clamped to 1.0.
        ([0.9, 7.0, 0.1, 1.0], [[0.72, 1.0], [6.0, 8.0], [0.08, 0.1], [0.8, 1.0]]),
        // Rounding would undo these moves, so each goes one step: 2 -> 1.6 ~ 2 so 1 | 2.4 ~ 2
        // so 3; 0.1 -> 0.08 ~ 0.1 so 0.0 | 0.12 ~ 0.1 so 0.2. 1e-4 (low) -> 0.8e-4 clamped.
        ([0.5, 2.0, 1e-4, 0.1], [[0.4, 0.6], [1.0, 3.0], [1e-4, 1.2e-4], [0.0, 0.2]]),
    ];
    let config = PbtConfig::default();
    for (donor, outcomes) in cases {
        // Two members: 0 donates, 1 (worse) exploits.
        let members = vec![member(0, donor.to_vec(), Some(1.0)), member(1, vec![0.5, 50.0, 0.01, 0.5], Some(2.0))];
        let mut seen = [[false; 2]; 4];
        for seed in 0..64 {
            let decisions = decide(&s, Direction::Minimize, &members, 3, seed, &config).unwrap();
            assert_eq!(decisions[0].action, Action::Continue);
            let (from, params) = exploit(&decisions[1]).expect("member 1 exploits");
            assert_eq!(from, 0);
            for (i, (&x, options)) in params.iter().zip(&outcomes).enumerate() {
                let hit = options.iter().position(|&o| close(x, o) || (o == 0.0 && x.abs() < 1e-15));
                let hit = hit.unwrap_or_else(|| panic!("param {i}: {x} from {} is none of {options:?}", donor[i]));
                seen[i][hit] = true;
                assert!(s.params[i].dist.contains(x), "param {i}: {x} is not a value of the space");
            }
        }
        assert_eq!(seen, [[true; 2]; 4], "donor {donor:?}: both factors drawn for every parameter");
    }
}

#[test]
fn categoricals_are_redrawn_at_the_configured_rate() {
    let s = space(
        "[params]\n\
         act = { type = \"categorical\", choices = [\"relu\", \"gelu\", \"silu\", \"tanh\"] }\n\
         lr = { type = \"float\", low = 1e-4, high = 1.0, log = true }",
    );
    let members = vec![member(0, vec![1.0, 0.01], Some(1.0)), member(1, vec![3.0, 0.01], Some(2.0))];
    let draws = 4000u64;
    let run = |p: f64| {
        let config = PbtConfig { resample_probability: p, ..PbtConfig::default() };
        let mut counts = [0u64; 4];
        let mut up = 0u64;
        for seed in 0..draws {
            let decisions = decide(&s, Direction::Minimize, &members, 1, seed, &config).unwrap();
            let (_, params) = exploit(&decisions[1]).unwrap();
            counts[params[0] as usize] += 1;
            up += u64::from(params[1] > 0.01);
        }
        (counts, up)
    };
    // p = 0.25 over 4 choices: the value changes with probability 0.25 * 3/4 = 0.1875
    // (sd over 4000 draws 0.0062); the lr factor is 1.2 half the time (sd 0.0079).
    let (counts, up) = run(0.25);
    let changed = (draws - counts[1]) as f64 / draws as f64;
    assert!((changed - 0.1875).abs() < 0.025, "changed {changed}, expected 0.1875");
    assert!((up as f64 / draws as f64 - 0.5).abs() < 0.032, "lr up {up} of {draws}");
    // p = 1: a uniform redraw, each choice near 1000 (sd 27).
    let (counts, _) = run(1.0);
    assert!(counts.iter().all(|&c| (c as f64 - 1000.0).abs() < 110.0), "{counts:?}");
    // p = 0: never.
    assert_eq!(run(0.0).0, [0, draws, 0, 0]);
}

#[test]
fn failed_members_always_exploit_and_a_dead_population_is_an_error() {
    let s = space("[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }");
    // Values by id: 0.5, failed, 0.2, NaN, 0.9, 0.4, failed, 0.1. Ranked (minimising): 7, 2, 5,
    // 0, 4, then 1, 3, 6 without values. k = 2: the last two (3, 6) and every member without a
    // value (1, 3, 6) exploit; 7 and 2 donate; 4, the worst with a value, continues.
    let values = [Some(0.5), None, Some(0.2), Some(f64::NAN), Some(0.9), Some(0.4), None, Some(0.1)];
    let members: Vec<Member> = (0..8).map(|id| member(id, vec![0.01], values[id as usize])).collect();
    let selection = truncation_selection(Direction::Minimize, &members, 0.25).unwrap();
    assert_eq!(selection.top, vec![7, 2]);
    assert_eq!(selection.bottom, vec![1, 3, 6]);
    let decisions = decide(&s, Direction::Minimize, &members, 1, 0, &PbtConfig::default()).unwrap();
    let exploiting: Vec<u64> = decisions.iter().filter(|d| exploit(d).is_some()).map(|d| d.member).collect();
    assert_eq!(exploiting, vec![1, 3, 6]);
    assert!(decisions.iter().filter_map(exploit).all(|(from, _)| from == 7 || from == 2));
    // Nobody to copy from.
    let dead: Vec<Member> = (0..3).map(|id| member(id, vec![0.01], None)).collect();
    let err = decide(&s, Direction::Minimize, &dead, 1, 0, &PbtConfig::default()).unwrap_err().to_string();
    assert!(err.contains("no member of 3 has a value"), "{err}");
}

#[test]
fn decisions_are_keyed_by_seed_generation_and_member_id() {
    let s = space("[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }");
    let members = population();
    let config = PbtConfig::default();
    let base = decide(&s, Direction::Minimize, &members, 5, 11, &config).unwrap();
    assert_eq!(base, decide(&s, Direction::Minimize, &members, 5, 11, &config).unwrap());
    // The order members are passed in does not matter: the draws follow ids.
    let mut reversed = members.clone();
    reversed.reverse();
    let mut again = decide(&s, Direction::Minimize, &reversed, 5, 11, &config).unwrap();
    again.reverse();
    assert_eq!(base, again);
    // Other generations and seeds draw afresh: over 50 of each, the exploits differ somewhere.
    let differs = |g: u64, seed: u64| decide(&s, Direction::Minimize, &members, g, seed, &config).unwrap() != base;
    assert!((6..56).filter(|&g| differs(g, 11)).count() > 25);
    assert!((12..62).filter(|&seed| differs(5, seed)).count() > 25);
}

#[test]
fn invalid_settings_and_members_are_named() {
    let s = space("[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }");
    let members = population();
    let bad_configs = [
        PbtConfig { quantile: 0.6, ..PbtConfig::default() },
        PbtConfig { quantile: 0.0, ..PbtConfig::default() },
        PbtConfig { factors: vec![], ..PbtConfig::default() },
        PbtConfig { factors: vec![0.8, -1.0], ..PbtConfig::default() },
        PbtConfig { resample_probability: 1.5, ..PbtConfig::default() },
        PbtConfig { interval: 0, ..PbtConfig::default() },
    ];
    for config in bad_configs {
        let err = decide(&s, Direction::Minimize, &members, 1, 0, &config).unwrap_err().to_string();
        assert!(err.starts_with("pbt:") && err.contains("fix:"), "{err}");
    }
    let mut twice = members.clone();
    twice[1].id = 0;
    let err = decide(&s, Direction::Minimize, &twice, 1, 0, &PbtConfig::default()).unwrap_err().to_string();
    assert!(err.contains("member id 0 appears twice"), "{err}");
    let mut outside = members.clone();
    outside[3].params = vec![2.0];
    let err = decide(&s, Direction::Minimize, &outside, 1, 0, &PbtConfig::default()).unwrap_err().to_string();
    assert!(err.contains("member 3's params [2.0]"), "{err}");
    let config: PbtConfig = serde_json::from_str(r#"{"quantile": 0.2}"#).unwrap();
    assert_eq!(config, PbtConfig { quantile: 0.2, ..PbtConfig::default() });
    assert!(serde_json::from_str::<PbtConfig>(r#"{"quantil": 0.2}"#).is_err());
    let c = PbtConfig { interval: 500, ..PbtConfig::default() };
    assert_eq!((c.is_ready(0), c.is_ready(499), c.is_ready(500), c.is_ready(1500)), (false, false, true, true));
    assert_eq!(c.generation_at(1500), 3);
}

fn exploit_of(member: u64, from: u64, params: f64) -> Decision {
    Decision { member, action: Action::Exploit { from, checkpoint: format!("ckpt/{from}"), params: vec![params] } }
}

fn keep(member: u64) -> Decision {
    Decision { member, action: Action::Continue }
}

fn step(generation: u64, member: u64, params: f64) -> LineageStep {
    LineageStep { generation, member, params: vec![params] }
}

#[test]
fn lineage_follows_copies_back_through_a_hand_worked_history() {
    // Members A=0, B=1, C=2, D=3 start with lr 1, 2, 3, 4.
    // Generation 1: D copies A, explores to 1.2.
    // Generation 2: A copies D, explores to 0.96.
    // Generation 3: C copies A, explores to 1.152.
    let start: Vec<Member> = (0..4).map(|id| member(id, vec![(id + 1) as f64], Some(0.0))).collect();
    let mut schedule = Schedule::new(&start).unwrap();
    schedule.record(1, &[keep(0), keep(1), keep(2), exploit_of(3, 0, 1.2)]).unwrap();
    schedule.record(2, &[exploit_of(0, 3, 0.96), keep(1), keep(2), keep(3)]).unwrap();
    schedule.record(3, &[keep(0), keep(1), exploit_of(2, 0, 1.152), keep(3)]).unwrap();
    assert_eq!(schedule.last_generation(), 3);
    assert_eq!(schedule.entries().len(), 16);
    // C's weights at 3 are A's at 3, trained in generation 2 by A with 0.96 from D's weights,
    // trained in generation 1 by D with 1.2 from A's weights, trained in generation 0 with 1.
    assert_eq!(
        schedule.lineage(2).unwrap(),
        vec![step(0, 0, 1.0), step(1, 3, 1.2), step(2, 0, 0.96), step(3, 2, 1.152)]
    );
    // A (copied D at 2): A 1, D 1.2, A 0.96, A 0.96.
    assert_eq!(
        schedule.lineage(0).unwrap(),
        vec![step(0, 0, 1.0), step(1, 3, 1.2), step(2, 0, 0.96), step(3, 0, 0.96)]
    );
    // D copied A once, at 1; B never copied anyone.
    assert_eq!(schedule.lineage(3).unwrap(), vec![step(0, 0, 1.0), step(1, 3, 1.2), step(2, 3, 1.2), step(3, 3, 1.2)]);
    assert_eq!(schedule.lineage(1).unwrap(), (0..4).map(|g| step(g, 1, 2.0)).collect::<Vec<_>>());
    assert_eq!(schedule.entry(2, 3).unwrap().parent, Some(0));
    assert_eq!(schedule.entry(1, 3).unwrap().parent, None);

    // Malformed histories are refused and leave the schedule as it was.
    let all = [keep(0), keep(1), keep(2), keep(3)];
    assert!(schedule.record(5, &all).unwrap_err().to_string().contains("record generation 4 next"));
    assert!(schedule.record(4, &all[..3]).unwrap_err().to_string().contains("member 3 0 times"));
    assert!(schedule.record(4, &[keep(0), keep(1), keep(2), exploit_of(3, 9, 1.0)]).is_err());
    assert!(schedule.record(4, &[keep(0), keep(1), keep(2), keep(3), keep(7)]).is_err());
    assert_eq!(schedule.last_generation(), 3);
    assert!(schedule.lineage(9).is_err());
}

#[test]
fn a_driven_population_ends_with_each_members_params_last_in_its_lineage() {
    // Three generations of decide + record on population(): each lineage ends with the
    // member's current params, and every step's params were some member's params then.
    let s = space("[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }");
    let mut members = population();
    let mut schedule = Schedule::new(&members).unwrap();
    for generation in 1..=3 {
        let decisions = decide(&s, Direction::Minimize, &members, generation, 42, &PbtConfig::default()).unwrap();
        schedule.record(generation, &decisions).unwrap();
        for (m, d) in members.iter_mut().zip(&decisions) {
            if let Some((_, params)) = exploit(d) {
                m.params = params.to_vec();
            }
            // A made-up objective: a smaller lr is better.
            m.value = Some(m.params[0]);
        }
    }
    for m in &members {
        let lineage = schedule.lineage(m.id).unwrap();
        assert_eq!(lineage.len(), 4);
        assert_eq!(lineage.last().unwrap().params, m.params);
        for st in &lineage {
            assert_eq!(schedule.entry(st.member, st.generation).unwrap().params, st.params);
        }
    }
}

#[test]
fn sample_initial_gives_the_points_a_fresh_study_asks_in_order_whatever_order_it_is_called_in() {
    // PBT's member m starts at sample_initial(m) in one process or many: it must be the point
    // the m-th ask of a fresh study gives, for every sampler, when members ask out of order.
    let space = space(
        "direction = \"maximize\"\n[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }\n\
         layers = { type = \"int\", low = 1, high = 4 }\nact = { type = \"categorical\", choices = [\"relu\", \"gelu\"] }\n",
    );
    for name in SamplerConfig::NAMES {
        let cfg = SamplerConfig::by_name(name).unwrap();
        let record = StudyRecord {
            space: space.clone(),
            sampler: serde_json::to_value(&cfg).unwrap(),
            pruner: None,
            seed: 3,
            driver: serde_json::json!({}),
        };
        let open = || Study::open(Arc::new(MemoryStorage::new()), record.clone(), cfg.build(), None).unwrap();
        let asked = open();
        let want: Vec<Vec<f64>> = (0..4).map(|_| asked.ask("w").unwrap().params).collect();
        let fresh = open();
        for m in [3u64, 1, 0, 2] {
            assert_eq!(fresh.sample_initial(m).unwrap(), want[m as usize], "{name}: member {m}");
        }
        assert!(fresh.trials().unwrap().is_empty(), "{name}: sample_initial created a trial");
        if *name == "grid" {
            let distinct: std::collections::BTreeSet<String> = want.iter().map(|p| format!("{p:?}")).collect();
            assert_eq!(distinct.len(), 4, "grid members must start at distinct points: {want:?}");
        }
    }
}
