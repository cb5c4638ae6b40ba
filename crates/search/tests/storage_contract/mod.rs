//! The storage contract: what every `Storage` must do, written once and run against each store
//! (memory and SQLite in tests/sqlite.rs; PostgreSQL in tests/postgres.rs).
//!
//! A test file declares `mod storage_contract;` at its root and instantiates the contract once
//! per store with [`contract!`]:
//!
//! ```ignore
//! mod storage_contract;
//! use storage_contract::Fresh;
//! fn sqlite() -> Fresh { ... }
//! storage_contract::contract!(sqlite_store, sqlite);
//! // A store that is not always reachable skips every test when `available()` is false:
//! storage_contract::contract!(postgres_store, postgres, if available);
//! ```
//!
//! Each contract function takes `make: &dyn Fn() -> Fresh`, a constructor of a new, empty
//! study. [`Fresh::handle`] opens further handles on the same study, so the racing tests give
//! each thread its own connection where the store has connections; a store whose handles
//! shared one connection would pass them without showing that its transactions exclude each
//! other.
//!
//! - the basics (create, report, set_attr, finish, trials, init_study): this file;
//! - incremental reads (`trials_since`, a `Study`'s copy of the trials): reads.rs;
//! - the lease API of shared studies (create_leased, renew, expire_leases, claim_queued,
//!   finish_leased): lease.rs.

// Each test binary that includes the contract uses its own subset of the helpers.
#![allow(dead_code)]

pub mod lease;
pub mod reads;

pub use reads::*;

use std::any::Any;
use std::sync::Arc;

use attune_search::{Finish, SearchError, Space, Storage, StudyRecord, TrialState};
use serde_json::{Map, Value, json};

/// A new, empty study for one contract test.
pub struct Fresh {
    /// The study.
    pub store: Arc<dyn Storage>,
    /// Opens another handle on the same study (a new connection where the store has them;
    /// the same object for the memory store).
    pub handle: Box<dyn Fn() -> Arc<dyn Storage> + Send + Sync>,
    /// Whatever must live as long as the study: a temporary directory, a database to drop.
    pub guard: Box<dyn Any>,
}

impl Fresh {
    /// A store whose every handle is the store itself (memory).
    pub fn shared(store: Arc<dyn Storage>) -> Fresh {
        let same = Arc::clone(&store);
        Fresh { store, handle: Box::new(move || Arc::clone(&same)), guard: Box::new(()) }
    }
}

/// Instantiates every contract test for one store: `contract!(module, constructor)` makes a
/// module of `#[test]`s, each calling the contract function of its name with `&constructor`
/// (a `fn() -> Fresh`). `contract!(module, constructor, if available)` skips them all (with
/// a note on stderr) when `available()` is false. The including file must declare the contract
/// as `mod storage_contract;` at its root.
macro_rules! contract {
    ($module:ident, $make:path) => {
        $crate::storage_contract::contract!($module, $make, if $crate::storage_contract::always);
    };
    ($module:ident, $make:path, if $available:path) => {
        $crate::storage_contract::contract!(@tests $module, $make, $available, [
            creates_running_trials_numbered_from_zero,
            report_keeps_steps_ascending_and_a_repeated_step_replaces,
            set_attr_adds_and_replaces,
            finish_records_state_values_and_error,
            finishing_twice_is_a_trial_error,
            trials_come_in_number_order,
            init_study_keeps_the_first_record,
            threads_on_their_own_handles_get_distinct_dense_numbers,
            trials_since_gives_the_new_and_the_listed_open_trials,
            a_study_reading_incrementally_sees_every_change_of_other_handles,
            threads_asking_on_their_own_handles_sample_as_one_serial_study,
        ], [
            create_leased_counts_queued_running_and_finished_trials_against_the_limit,
            threads_racing_for_the_last_slots_create_exactly_the_limit,
            renew_is_true_only_for_the_owner_of_a_running_trial,
            a_renewed_lease_is_not_expired,
            expire_leases_requeues_an_expired_trial_with_its_number_and_params,
            expire_leases_fails_a_trial_after_max_retries,
            claim_queued_gives_the_lowest_queued_trial_to_a_new_owner,
            threads_claiming_concurrently_never_get_the_same_trial,
            finish_leased_writes_only_for_the_owner,
            report_leased_writes_only_for_the_owner,
            queued_trials_are_not_finished,
        ]);
    };
    (@tests $module:ident, $make:path, $available:path, [$($basic:ident),* $(,)?], [$($lease:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $basic() {
                    if $crate::storage_contract::skip(stringify!($module), $available) {
                        return;
                    }
                    $crate::storage_contract::$basic(&$make);
                }
            )*
            $(
                #[test]
                fn $lease() {
                    if $crate::storage_contract::skip(stringify!($module), $available) {
                        return;
                    }
                    $crate::storage_contract::lease::$lease(&$make);
                }
            )*
        }
    };
}
pub(crate) use contract;

/// The availability of a store that is always there.
pub fn always() -> bool {
    true
}

/// Whether to skip a contract test of `module` because its store is not available (said on
/// stderr, so a skipped run is visible with `--nocapture`).
pub fn skip(module: &str, available: fn() -> bool) -> bool {
    let skip = !available();
    if skip {
        eprintln!("{module}: store not available, contract test skipped");
    }
    skip
}

pub fn attrs(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

pub fn bits(xs: &[f64]) -> Vec<u64> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// Values whose shortest decimal forms are long or extreme, so an inexact store shows.
pub const AWKWARD: [f64; 4] = [0.1 + 0.2, 1.0 / 3.0, f64::MIN_POSITIVE, -1.234_567_890_123_456_7e300];

pub fn creates_running_trials_numbered_from_zero(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let before = attune_search::trial::now();
    let n0 = s.create_trial(&AWKWARD, "host:1", &attrs(&[("seed", json!(7))])).unwrap();
    let n1 = s.create_trial(&[2.5], "host:2", &Map::new()).unwrap();
    let after = attune_search::trial::now();
    assert_eq!((n0, n1), (0, 1));
    let trials = s.trials().unwrap();
    assert_eq!(trials.len(), 2);
    let t = &trials[0];
    assert_eq!((t.number, t.state, t.worker.as_str(), t.retries), (0, TrialState::Running, "host:1", 0));
    assert_eq!(bits(&t.params), bits(&AWKWARD), "params must come back bit for bit");
    assert_eq!(t.attrs, attrs(&[("seed", json!(7))]));
    assert!(t.values.is_none() && t.finished.is_none() && t.error.is_none() && t.intermediate.is_empty());
    assert!(before <= t.started && t.started <= after, "started {} not in [{before}, {after}]", t.started);
    assert_eq!((trials[1].params.as_slice(), trials[1].worker.as_str()), ([2.5].as_slice(), "host:2"));
}

pub fn report_keeps_steps_ascending_and_a_repeated_step_replaces(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_trial(&[0.0], "w", &Map::new()).unwrap();
    for (step, value) in [(5, 0.5), (1, 0.9), (5, 0.4), (3, AWKWARD[1])] {
        s.report(n, step, value).unwrap();
    }
    let t = &s.trials().unwrap()[0];
    assert_eq!(t.intermediate, vec![(1, 0.9), (3, AWKWARD[1]), (5, 0.4)]);
    assert_eq!(t.state, TrialState::Running);
    assert!(matches!(s.report(9, 0, 1.0), Err(SearchError::Trial { number: 9, .. })));
}

pub fn set_attr_adds_and_replaces(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_trial(&[0.0], "w", &attrs(&[("a", json!(1))])).unwrap();
    s.set_attr(n, "b", &json!("x")).unwrap();
    s.set_attr(n, "a", &json!([1, {"k": null}])).unwrap();
    s.set_attr(n, "run_dir", &json!("runs/t0")).unwrap();
    s.finish(n, &Finish::pruned()).unwrap();
    // A finished trial never changes (so readers may keep it): its attributes are final too.
    assert!(matches!(s.set_attr(n, "late", &json!(1)), Err(SearchError::Trial { number: 0, .. })));
    let t = &s.trials().unwrap()[0];
    assert_eq!(t.attrs, attrs(&[("a", json!([1, {"k": null}])), ("b", json!("x")), ("run_dir", json!("runs/t0"))]));
    assert!(matches!(s.set_attr(4, "a", &json!(1)), Err(SearchError::Trial { number: 4, .. })));
}

pub fn finish_records_state_values_and_error(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    for _ in 0..3 {
        s.create_trial(&[0.0], "w", &Map::new()).unwrap();
    }
    s.finish(0, &Finish::complete(vec![AWKWARD[0], AWKWARD[3]])).unwrap();
    s.finish(1, &Finish::pruned()).unwrap();
    s.finish(2, &Finish::failed("exit status 3: out of memory")).unwrap();
    let trials = s.trials().unwrap();
    assert_eq!(trials[0].state, TrialState::Complete);
    assert_eq!(bits(trials[0].values.as_ref().unwrap()), bits(&[AWKWARD[0], AWKWARD[3]]));
    assert_eq!((trials[1].state, &trials[1].values), (TrialState::Pruned, &None));
    assert_eq!(trials[2].state, TrialState::Failed);
    assert_eq!(trials[2].error.as_deref(), Some("exit status 3: out of memory"));
    for t in &trials {
        let d = t.duration().expect("a finished trial has a duration");
        assert!((0.0..60.0).contains(&d), "trial {} took {d} s", t.number);
    }
}

pub fn finishing_twice_is_a_trial_error(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_trial(&[0.0], "w", &Map::new()).unwrap();
    s.report(n, 0, 2.0).unwrap();
    s.finish(n, &Finish::complete(vec![1.0])).unwrap();
    let again = s.finish(n, &Finish::failed("late"));
    assert!(
        matches!(&again, Err(SearchError::Trial { number: 0, problem }) if problem.contains("complete")),
        "{again:?}"
    );
    assert!(matches!(s.report(n, 1, 3.0), Err(SearchError::Trial { number: 0, .. })));
    assert!(matches!(s.finish(7, &Finish::pruned()), Err(SearchError::Trial { number: 7, .. })));
    let t = &s.trials().unwrap()[0];
    assert_eq!((t.state, t.values.clone(), t.error.clone()), (TrialState::Complete, Some(vec![1.0]), None));
    assert_eq!(t.intermediate, vec![(0, 2.0)], "the refused report left no trace");
}

pub fn trials_come_in_number_order(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    for i in 0..5 {
        s.create_trial(&[i as f64], "w", &Map::new()).unwrap();
    }
    for n in [3, 0, 4] {
        s.finish(n, &Finish::complete(vec![n as f64])).unwrap();
    }
    let trials = s.trials().unwrap();
    assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(trials.iter().map(|t| t.params[0]).collect::<Vec<_>>(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    let complete: Vec<u64> = trials.iter().filter(|t| t.state == TrialState::Complete).map(|t| t.number).collect();
    assert_eq!(complete, vec![0, 3, 4]);
}

/// A record with floats whose decimal forms are long, so an inexact JSON round trip shows.
pub fn record(seed: u64) -> StudyRecord {
    let space = Space::from_toml(
        r#"
        direction = "maximize"
        [params]
        lr = { type = "float", low = 1.1e-5, high = 0.030000000000000002, log = true }
        layers = { type = "int", low = 1, high = 8 }
        act = { type = "categorical", choices = ["relu", "gelu", 0.7] }
        "#,
        "<test>",
    )
    .unwrap();
    StudyRecord {
        space,
        sampler: json!({"kind": "random"}),
        pruner: Some(json!({"kind": "median", "warmup": 3})),
        seed,
        driver: json!({"metric": "valid_acc", "budget": 0.1}),
    }
}

pub fn init_study_keeps_the_first_record(make: &dyn Fn() -> Fresh) {
    let fresh = make();
    let s = &fresh.store;
    assert_eq!(s.study().unwrap(), None);
    assert_eq!(s.init_study(&record(1)).unwrap(), record(1));
    assert_eq!(s.init_study(&record(2)).unwrap(), record(1), "a second init returns the stored record");
    assert_eq!(s.study().unwrap(), Some(record(1)));
    assert_eq!((fresh.handle)().study().unwrap(), Some(record(1)), "another handle sees the record");
}

/// Runs `work(thread, handle)` on `threads` threads at once, each with its own handle from
/// `fresh`, and returns what each returned, in thread order.
pub fn on_threads<T: Send + 'static>(
    fresh: &Fresh,
    threads: usize,
    work: impl Fn(usize, Arc<dyn Storage>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    // Every thread opens its handle first and then waits, so that the work itself overlaps.
    let start = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (s, work, start) = ((fresh.handle)(), Arc::clone(&work), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                work(i, s)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

pub fn threads_on_their_own_handles_get_distinct_dense_numbers(make: &dyn Fn() -> Fresh) {
    let fresh = make();
    let per_thread = 50;
    let numbers: Vec<Vec<u64>> = on_threads(&fresh, 4, move |i, s| {
        (0..per_thread).map(|_| s.create_trial(&[i as f64], &format!("thread{i}"), &Map::new()).unwrap()).collect()
    });
    let mut all: Vec<u64> = numbers.concat();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<u64>>());
    let trials = fresh.store.trials().unwrap();
    assert_eq!(trials.len(), 200);
    // Each thread's trials carry its own params: no row was written by the wrong creator.
    for (i, mine) in numbers.iter().enumerate() {
        for &n in mine {
            let t = &trials[n as usize];
            assert_eq!((t.params[0], t.worker.as_str()), (i as f64, format!("thread{i}").as_str()), "trial {n}");
        }
    }
}
