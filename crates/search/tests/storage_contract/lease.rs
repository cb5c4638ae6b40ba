//! The lease API of shared studies, as `MemoryStorage` defines it: a trial limit that counts
//! every trial, leases that only their owner renews or finishes, expired leases re-queued with
//! the same number and parameters (and failed after `max_retries`), and claims that never hand
//! one queued trial to two workers.

use std::collections::BTreeSet;
use std::time::Duration;

use attune_search::storage::lease_failure;
use attune_search::{Finish, Storage, TrialState};
use serde_json::{Map, json};

use super::{AWKWARD, Fresh, attrs, bits, on_threads};

/// A lease no test outlives.
const LONG: Duration = Duration::from_secs(600);
/// A lease that has lapsed by the time anyone looks (after [`lapse`]).
const ZERO: Duration = Duration::ZERO;
/// Retries high enough never to fail a trial.
const MANY: u32 = 100;

/// Waits until every lease taken with [`ZERO`] before the call has expired by any clock that
/// ticks at least once a millisecond.
fn lapse() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Creates `count` trials with zero leases and re-queues them all, so they are queued with one
/// retry each; returns their numbers.
fn queue(s: &dyn Storage, count: u64) -> Vec<u64> {
    let numbers: Vec<u64> =
        (0..count).map(|i| s.create_leased(&[i as f64], "first", &Map::new(), ZERO, None).unwrap().unwrap()).collect();
    lapse();
    assert_eq!(s.expire_leases(MANY).unwrap(), numbers);
    numbers
}

pub fn create_leased_counts_queued_running_and_finished_trials_against_the_limit(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    // One trial in each state that must count: finished (0), queued (1), running (2, 3).
    let finished = s.create_leased(&[0.0], "w", &Map::new(), LONG, Some(4)).unwrap();
    let queued = s.create_leased(&[1.0], "w", &Map::new(), ZERO, Some(4)).unwrap();
    assert_eq!((finished, queued), (Some(0), Some(1)));
    assert!(s.finish_leased(0, "w", &Finish::complete(vec![1.0])).unwrap());
    lapse();
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![1]);
    // A trial created without a lease counts too.
    assert_eq!(s.create_trial(&[2.0], "plain", &Map::new()).unwrap(), 2);
    assert_eq!(s.create_leased(&AWKWARD, "w3", &attrs(&[("k", json!("v"))]), LONG, Some(4)).unwrap(), Some(3));
    let states: Vec<TrialState> = s.trials().unwrap().iter().map(|t| t.state).collect();
    use TrialState::{Complete, Queued, Running};
    assert_eq!(states, [Complete, Queued, Running, Running]);

    for limit in [0, 1, 3, 4] {
        assert_eq!(s.create_leased(&[9.0], "late", &Map::new(), LONG, Some(limit)).unwrap(), None, "limit {limit}");
    }
    assert_eq!(s.trials().unwrap().len(), 4, "a refused create writes nothing");
    assert_eq!(s.create_leased(&[5.0], "w", &Map::new(), LONG, Some(5)).unwrap(), Some(4));
    assert_eq!(s.create_leased(&[6.0], "w", &Map::new(), LONG, None).unwrap(), Some(5), "no limit");

    let t = &s.trials().unwrap()[3];
    assert_eq!((t.state, t.worker.as_str(), t.retries), (Running, "w3", 0));
    assert_eq!(bits(&t.params), bits(&AWKWARD));
    assert_eq!(t.attrs, attrs(&[("k", json!("v"))]));
}

pub fn threads_racing_for_the_last_slots_create_exactly_the_limit(make: &dyn Fn() -> Fresh) {
    let fresh = make();
    let (threads, limit, before) = (8, 48u64, 8u64);
    for i in 0..before {
        fresh.store.create_trial(&[-1.0], "before", &Map::new()).unwrap();
        if i % 2 == 0 {
            fresh.store.finish(i, &Finish::pruned()).unwrap();
        }
    }
    // Every thread creates until refused, so the threads race for each of the last slots.
    let created = on_threads(&fresh, threads, move |i, s| {
        let mut mine = Vec::new();
        while let Some(n) = s.create_leased(&[i as f64], &format!("thread{i}"), &Map::new(), LONG, Some(limit)).unwrap()
        {
            mine.push(n);
        }
        mine
    });
    let mut all: Vec<u64> = created.concat();
    all.sort_unstable();
    assert_eq!(all, (before..limit).collect::<Vec<u64>>(), "dense numbers, each handed out once");
    let trials = fresh.store.trials().unwrap();
    assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), (0..limit).collect::<Vec<_>>());
    for (i, mine) in created.iter().enumerate() {
        for &n in mine {
            let t = &trials[n as usize];
            assert_eq!((t.params[0], t.worker.as_str()), (i as f64, format!("thread{i}").as_str()), "trial {n}");
        }
    }
}

pub fn renew_is_true_only_for_the_owner_of_a_running_trial(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_leased(&[0.0], "owner", &Map::new(), LONG, None).unwrap().unwrap();
    assert!(s.renew(n, "owner", LONG).unwrap());
    assert!(!s.renew(n, "other", LONG).unwrap());
    assert!(!s.renew(n + 1, "owner", LONG).unwrap(), "no such trial");
    let plain = s.create_trial(&[0.0], "owner", &Map::new()).unwrap();
    assert!(!s.renew(plain, "owner", LONG).unwrap(), "a trial created without a lease has no owner");

    assert!(s.finish_leased(n, "owner", &Finish::complete(vec![1.0])).unwrap());
    assert!(!s.renew(n, "owner", LONG).unwrap(), "after finishing");

    let requeued = s.create_leased(&[0.0], "owner", &Map::new(), ZERO, None).unwrap().unwrap();
    lapse();
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![requeued]);
    assert!(!s.renew(requeued, "owner", LONG).unwrap(), "after its lease expired and it was re-queued");
    let claimed = s.claim_queued("second", LONG).unwrap().unwrap();
    assert_eq!(claimed.number, requeued);
    assert!(!s.renew(requeued, "owner", LONG).unwrap(), "after another worker claimed it");
    assert!(s.renew(requeued, "second", LONG).unwrap());
    let t = &s.trials().unwrap()[requeued as usize];
    assert_eq!((t.state, t.worker.as_str()), (TrialState::Running, "second"), "renewing changes no state");
}

pub fn a_renewed_lease_is_not_expired(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let kept = s.create_leased(&[0.0], "w", &Map::new(), ZERO, None).unwrap().unwrap();
    let lost = s.create_leased(&[1.0], "w", &Map::new(), ZERO, None).unwrap().unwrap();
    // A lapsed lease not yet expired is still its owner's: renewing it keeps the trial.
    lapse();
    assert!(s.renew(kept, "w", LONG).unwrap());
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![lost]);
    assert_eq!(s.trials().unwrap()[kept as usize].state, TrialState::Running);
    assert!(s.expire_leases(MANY).unwrap().is_empty(), "nothing left to expire");
}

pub fn expire_leases_requeues_an_expired_trial_with_its_number_and_params(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let a = attrs(&[("parent", json!(3))]);
    let n = s.create_leased(&AWKWARD, "dead", &a, ZERO, None).unwrap().unwrap();
    s.report(n, 0, 0.5).unwrap();
    s.report(n, 4, 0.25).unwrap();
    let alive = s.create_leased(&[7.0], "alive", &Map::new(), LONG, None).unwrap().unwrap();
    let unleased = s.create_trial(&[8.0], "plain", &Map::new()).unwrap();
    let before = s.trials().unwrap()[n as usize].clone();
    lapse();

    assert_eq!(s.expire_leases(MANY).unwrap(), vec![n], "only the lapsed lease");
    let trials = s.trials().unwrap();
    let t = &trials[n as usize];
    assert_eq!((t.number, t.state, t.retries), (n, TrialState::Queued, 1));
    assert_eq!(bits(&t.params), bits(&AWKWARD), "the same parameters, bit for bit");
    assert!(t.intermediate.is_empty(), "the dead worker's reports are dropped: {:?}", t.intermediate);
    assert_eq!(t.attrs, a);
    assert!(t.values.is_none() && t.finished.is_none() && t.error.is_none());
    assert_eq!(t.started.to_bits(), before.started.to_bits());
    assert_eq!(
        (trials[alive as usize].state, trials[unleased as usize].state),
        (TrialState::Running, TrialState::Running)
    );
    assert_eq!(trials.len(), 3, "re-queueing makes no new trial");
    assert!(s.expire_leases(MANY).unwrap().is_empty(), "a queued trial holds no lease");

    // Each re-queue counts once more.
    let claimed = s.claim_queued("next", ZERO).unwrap().unwrap();
    assert_eq!((claimed.number, claimed.retries), (n, 1));
    lapse();
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![n]);
    let t = &s.trials().unwrap()[n as usize];
    assert_eq!((t.state, t.retries), (TrialState::Queued, 2));
}

pub fn expire_leases_fails_a_trial_after_max_retries(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_leased(&[0.5], "w0", &Map::new(), ZERO, None).unwrap().unwrap();
    // max_retries = 2: two re-queues, and the third expiry fails the trial.
    for (round, worker) in ["w1", "w2"].iter().enumerate() {
        lapse();
        assert_eq!(s.expire_leases(2).unwrap(), vec![n]);
        let t = &s.trials().unwrap()[n as usize];
        assert_eq!((t.state, t.retries), (TrialState::Queued, round as u32 + 1));
        assert_eq!(s.claim_queued(worker, ZERO).unwrap().map(|t| t.number), Some(n));
    }
    s.report(n, 1, 0.75).unwrap();
    let before = attune_search::trial::now();
    lapse();
    assert_eq!(s.expire_leases(2).unwrap(), vec![n]);
    let t = &s.trials().unwrap()[n as usize];
    assert_eq!((t.state, t.retries), (TrialState::Failed, 2));
    assert_eq!(t.error.as_deref(), Some(lease_failure("w2", 2).as_str()), "names the last owner and the count");
    assert!(t.finished.is_some_and(|f| f >= before), "a failed trial has its finish time: {:?}", t.finished);
    assert!(s.claim_queued("w3", LONG).unwrap().is_none());
    assert!(!s.finish_leased(n, "w2", &Finish::complete(vec![1.0])).unwrap());
    assert!(s.expire_leases(2).unwrap().is_empty());

    // With no retries allowed, the first expiry fails the trial.
    let m = s.create_leased(&[0.5], "w", &Map::new(), ZERO, None).unwrap().unwrap();
    lapse();
    assert_eq!(s.expire_leases(0).unwrap(), vec![m]);
    let t = &s.trials().unwrap()[m as usize];
    assert_eq!((t.state, t.retries, t.error.as_deref()), (TrialState::Failed, 0, Some(lease_failure("w", 0).as_str())));
}

pub fn claim_queued_gives_the_lowest_queued_trial_to_a_new_owner(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    assert!(s.claim_queued("idle", LONG).unwrap().is_none(), "an empty study");
    s.create_leased(&[0.0], "w", &Map::new(), LONG, None).unwrap();
    assert!(s.claim_queued("idle", LONG).unwrap().is_none(), "a running trial is not queued");

    // Queue 1, 3 and 4 and keep 2 running, so the lowest queued trial is not the lowest trial.
    let q = |x: f64| s.create_leased(&[x], "dead", &attrs(&[("x", json!(x))]), ZERO, None).unwrap().unwrap();
    let (one, two, three, four) =
        (q(1.0), s.create_leased(&[2.0], "w", &Map::new(), LONG, None).unwrap().unwrap(), q(3.0), q(4.0));
    lapse();
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![one, three, four]);

    let before = attune_search::trial::now();
    let claimed = s.claim_queued("new", LONG).unwrap().expect("a queued trial");
    assert_eq!((claimed.number, claimed.state, claimed.worker.as_str()), (one, TrialState::Running, "new"));
    assert_eq!((claimed.params.clone(), claimed.retries), (vec![1.0], 1));
    assert_eq!(claimed.attrs, attrs(&[("x", json!(1.0))]));
    assert!(claimed.started >= before, "a claim restarts the trial's clock");
    assert_eq!(s.trials().unwrap()[one as usize], claimed, "the returned trial is the stored one");
    assert!(s.renew(one, "new", LONG).unwrap() && !s.renew(one, "dead", LONG).unwrap());

    assert_eq!(s.claim_queued("new2", LONG).unwrap().map(|t| (t.number, t.worker)), Some((three, "new2".into())));
    assert_eq!(s.claim_queued("new3", LONG).unwrap().map(|t| t.number), Some(four));
    assert!(s.claim_queued("new4", LONG).unwrap().is_none(), "all claimed");
    assert_eq!(s.trials().unwrap()[two as usize].worker, "w", "the running trial was not touched");
}

pub fn threads_claiming_concurrently_never_get_the_same_trial(make: &dyn Fn() -> Fresh) {
    let fresh = make();
    let queued = queue(fresh.store.as_ref(), 40);
    let claimed = on_threads(&fresh, 8, |i, s| {
        let mut mine = Vec::new();
        while let Some(t) = s.claim_queued(&format!("thread{i}"), LONG).unwrap() {
            mine.push(t.number);
        }
        mine
    });
    let mut all: Vec<u64> = claimed.concat();
    all.sort_unstable();
    assert_eq!(all, queued, "every queued trial claimed exactly once");
    let trials = fresh.store.trials().unwrap();
    for (i, mine) in claimed.iter().enumerate() {
        for &n in mine {
            let t = &trials[n as usize];
            assert_eq!((t.state, t.worker.as_str()), (TrialState::Running, format!("thread{i}").as_str()), "trial {n}");
        }
    }
}

pub fn finish_leased_writes_only_for_the_owner(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_leased(&[0.0], "stale", &Map::new(), ZERO, None).unwrap().unwrap();
    s.report(n, 0, 1.5).unwrap();
    lapse();
    // Until someone expires it, a lapsed lease is still its owner's to finish.
    let late = s.create_leased(&[1.0], "slow", &Map::new(), ZERO, None).unwrap().unwrap();
    lapse();
    assert!(s.finish_leased(late, "slow", &Finish::pruned()).unwrap());
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![n]);
    s.claim_queued("owner", LONG).unwrap().unwrap();
    s.report(n, 0, 2.5).unwrap();
    let before = s.trials().unwrap();

    for finish in [Finish::complete(vec![9.0]), Finish::failed("stale"), Finish::pruned()] {
        assert!(!s.finish_leased(n, "stale", &finish).unwrap(), "{finish:?} by a stale owner");
    }
    assert_eq!(s.trials().unwrap(), before, "a stale owner's finish writes nothing");
    assert!(s.renew(n, "owner", LONG).unwrap(), "and leaves the owner's lease alone");

    assert!(s.finish_leased(n, "owner", &Finish::complete(vec![AWKWARD[1]])).unwrap());
    let t = &s.trials().unwrap()[n as usize];
    assert_eq!((t.state, t.worker.as_str(), t.intermediate.clone()), (TrialState::Complete, "owner", vec![(0, 2.5)]));
    assert_eq!(t.values.as_deref().map(bits), Some(bits(&[AWKWARD[1]])));
    assert!(t.finished.is_some());
    assert!(!s.finish_leased(n, "owner", &Finish::failed("twice")).unwrap(), "finishing twice");
    assert_eq!(s.trials().unwrap()[n as usize].state, TrialState::Complete);

    let plain = s.create_trial(&[0.0], "owner", &Map::new()).unwrap();
    assert!(!s.finish_leased(plain, "owner", &Finish::pruned()).unwrap(), "a trial without a lease");
    assert!(!s.finish_leased(99, "owner", &Finish::pruned()).unwrap(), "no such trial");
    assert_eq!(s.trials().unwrap()[plain as usize].state, TrialState::Running);
}

pub fn report_leased_writes_only_for_the_owner(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    let n = s.create_leased(&[0.0], "stale", &Map::new(), ZERO, None).unwrap().unwrap();
    assert!(s.report_leased(n, "stale", 0, 1.5).unwrap(), "its owner reports");
    assert!(!s.report_leased(n, "other", 1, 9.0).unwrap(), "a worker that does not hold the lease");
    lapse();
    assert_eq!(s.expire_leases(MANY).unwrap(), vec![n]);
    assert!(!s.report_leased(n, "stale", 1, 9.0).unwrap(), "the stale owner of a queued trial");
    s.claim_queued("owner", LONG).unwrap().unwrap();
    assert!(!s.report_leased(n, "stale", 1, 9.0).unwrap(), "the stale owner of a trial someone else runs");
    assert!(s.report_leased(n, "owner", 2, 0.5).unwrap());
    assert_eq!(s.trials().unwrap()[n as usize].intermediate, vec![(2, 0.5)], "only the new owner's value");
    s.finish_leased(n, "owner", &Finish::pruned()).unwrap();
    assert!(!s.report_leased(n, "owner", 3, 0.5).unwrap(), "a finished trial");
    let plain = s.create_trial(&[0.0], "owner", &Map::new()).unwrap();
    assert!(!s.report_leased(plain, "owner", 0, 0.5).unwrap(), "a trial without a lease");
    assert!(!s.report_leased(99, "owner", 0, 0.5).unwrap(), "no such trial");
}

pub fn queued_trials_are_not_finished(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    assert!(!TrialState::Queued.is_finished() && !TrialState::Running.is_finished());
    assert!([TrialState::Complete, TrialState::Pruned, TrialState::Failed].iter().all(|s| s.is_finished()));
    let queued = queue(s.as_ref(), 3);
    let trials = s.trials().unwrap();
    let states: BTreeSet<&str> = trials.iter().map(|t| t.state.name()).collect();
    assert_eq!(states, BTreeSet::from(["queued"]));
    assert!(trials.iter().all(|t| !t.state.is_finished() && t.finished.is_none() && t.duration().is_none()));
    // A queued trial can still be finished like any unfinished one (a driver giving up on it).
    s.finish(queued[0], &Finish::failed("given up")).unwrap();
    assert_eq!(s.trials().unwrap()[0].state, TrialState::Failed);
    assert!(s.claim_queued("w", LONG).unwrap().is_some_and(|t| t.number == queued[1]));
}
