//! Incremental reads: `Storage::trials_since` and the copy a `Study` keeps of the trials, which
//! must always equal a full read however other handles changed the study in between.

use std::sync::Arc;
use std::time::Duration;

use attune_search::sampler::SamplerConfig;
use attune_search::{Finish, MemoryStorage, Storage, Study, Trial};
use serde_json::{Map, json};

use super::{Fresh, attrs, record};

fn numbers(trials: &[Trial]) -> Vec<u64> {
    trials.iter().map(|t| t.number).collect()
}

pub fn trials_since_gives_the_new_and_the_listed_open_trials(make: &dyn Fn() -> Fresh) {
    let s = make().store;
    s.init_study(&record(1)).unwrap();
    for i in 0..6 {
        let n = s.create_trial(&[1e-3, 2.0, 0.0], "w", &attrs(&[("i", json!(i))])).unwrap();
        s.report(n, 1, i as f64).unwrap();
    }
    s.finish(0, &Finish::complete(vec![0.5])).unwrap();
    s.finish(2, &Finish::pruned()).unwrap();
    let all = s.trials().unwrap();
    let got = s.trials_since(4, &[1, 3, 5, 99]).unwrap();
    assert_eq!(numbers(&got), vec![1, 3, 4, 5], "listed open trials, then every trial from 4; 99 does not exist");
    for t in &got {
        assert_eq!(t, &all[t.number as usize], "trial {} must read as in a full read", t.number);
    }
    assert_eq!(s.trials_since(0, &[]).unwrap(), all);
    assert!(s.trials_since(6, &[]).unwrap().is_empty());
}

pub fn a_study_reading_incrementally_sees_every_change_of_other_handles(make: &dyn Fn() -> Fresh) {
    let fresh = make();
    let writer = fresh.store.clone();
    let (sampler, reader) = (SamplerConfig::by_name("random").unwrap(), (fresh.handle)());
    writer.init_study(&record(3)).unwrap();
    let study = Study::open(reader, record(3), sampler.build(), None).unwrap();
    let point = [1e-3, 2.0, 1.0];
    let check = |what: &str| assert_eq!(study.trials().unwrap(), writer.trials().unwrap(), "after {what}");
    check("nothing");
    let a = writer.create_trial(&point, "w1", &Map::new()).unwrap();
    let b = writer.create_leased(&point, "w2", &Map::new(), Duration::ZERO, None).unwrap().unwrap();
    check("two trials started");
    writer.report(a, 3, 0.25).unwrap();
    writer.set_attr(a, "run_dir", &json!("trials/00000")).unwrap();
    check("a report and an attribute of an open trial");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(writer.expire_leases(5).unwrap(), vec![b]);
    check("a lease expired and its trial re-queued");
    let claimed = writer.claim_queued("w3", Duration::from_secs(600)).unwrap().unwrap();
    assert_eq!(claimed.number, b);
    check("the re-queued trial claimed");
    writer.finish(a, &Finish::complete(vec![0.75])).unwrap();
    let c = writer.create_trial(&point, "w1", &Map::new()).unwrap();
    check("a trial finished and a new one started");
    assert!(writer.finish_leased(b, "w3", &Finish::failed("boom")).unwrap());
    writer.finish(c, &Finish::pruned()).unwrap();
    check("every trial finished");
    let asked = study.ask("w4").unwrap();
    assert_eq!(asked.number, 3, "the study's own trials are numbered after the others'");
    check("the reader's own ask");
}

pub fn threads_asking_on_their_own_handles_sample_as_one_serial_study(make: &dyn Fn() -> Fresh) {
    let fresh = make();
    fresh.store.init_study(&record(5)).unwrap();
    let random = SamplerConfig::by_name("random").unwrap();
    let open = |storage: Arc<dyn Storage>| Study::open(storage, record(5), random.build(), None).unwrap();
    let (threads, each) = (4, 10u64);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let study = open((fresh.handle)());
            scope.spawn(move || {
                for _ in 0..each {
                    let asked = study.ask_leased(&format!("t{t}"), Duration::from_secs(600), Some(40)).unwrap();
                    assert!(asked.is_some(), "the limit leaves room for every ask");
                }
            });
        }
    });
    let serial = open(Arc::new(MemoryStorage::new()));
    let shared = fresh.store.trials().unwrap();
    assert_eq!(numbers(&shared), (0..40).collect::<Vec<u64>>());
    for t in &shared {
        let expected = serial.ask("serial").unwrap();
        assert_eq!(t.params, expected.params, "trial {}: the point a serial study samples at that number", t.number);
    }
    let study = open((fresh.handle)());
    assert_eq!(study.ask_leased("late", Duration::from_secs(600), Some(40)).unwrap(), None, "the limit holds");
}
