//! The longer cases of tests/postgres.rs: a script of every Storage method run on MemoryStorage
//! (the reference) and on PostgresStorage with the answers compared, and a worker killed with
//! SIGKILL, in its own process, while it holds a transaction open.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attune_search::storage::PostgresStorage;
use attune_search::{Finish, MemoryStorage, SearchError, Storage, Trial, TrialState};
use serde_json::{Map, Value, json};

use crate::storage_contract::record;

fn attrs(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// One call of the script.
enum Op {
    Init(u64),
    Study,
    Create(Vec<f64>, &'static str, Map<String, Value>),
    Leased(Vec<f64>, &'static str, Duration, Option<u64>),
    Report(u64, u64, f64),
    SetAttr(u64, &'static str, Value),
    Finish(u64, Finish),
    Renew(u64, &'static str, Duration),
    Expire(u32),
    Claim(&'static str, Duration),
    FinishLeased(u64, &'static str, Finish),
    Sleep(Duration),
    Trials,
}

/// A trial with its clock readings replaced by whether it has them: the two stores' clocks
/// differ (the process's, the server's).
fn timeless(mut t: Trial) -> Trial {
    assert!(t.started > 1.6e9, "trial {}: started {}", t.number, t.started);
    t.started = 0.0;
    t.finished = t.finished.map(|_| 0.0);
    t
}

fn outcome<T: std::fmt::Debug>(r: Result<T, SearchError>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(SearchError::Trial { number, problem }) => format!("trial error {number}: {problem}"),
        Err(e) => format!("error: {e}"),
    }
}

fn apply(s: &dyn Storage, op: &Op) -> String {
    match op {
        Op::Init(seed) => outcome(s.init_study(&record(*seed)).map(|r| r.seed)),
        Op::Study => outcome(s.study().map(|r| r.map(|r| r.seed))),
        Op::Create(p, w, a) => outcome(s.create_trial(p, w, a)),
        Op::Leased(p, w, lease, limit) => outcome(s.create_leased(p, w, &Map::new(), *lease, *limit)),
        Op::Report(n, step, v) => outcome(s.report(*n, *step, *v)),
        Op::SetAttr(n, k, v) => outcome(s.set_attr(*n, k, v)),
        Op::Finish(n, f) => outcome(s.finish(*n, f)),
        Op::Renew(n, w, lease) => outcome(s.renew(*n, w, *lease)),
        Op::Expire(max) => outcome(s.expire_leases(*max)),
        Op::Claim(w, lease) => outcome(s.claim_queued(w, *lease).map(|t| t.map(timeless))),
        Op::FinishLeased(n, w, f) => outcome(s.finish_leased(*n, w, f)),
        Op::Sleep(_) => String::new(),
        Op::Trials => outcome(s.trials().map(|ts| ts.into_iter().map(timeless).collect::<Vec<_>>())),
    }
}

/// Runs the script on a fresh MemoryStorage and on `pg` (a fresh study), asserting that every
/// call answers the same and that the answers are the hand-worked ones where the script's
/// point lies.
pub fn run_against_memory(pg: &PostgresStorage) {
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(60);
    let awkward = vec![0.1 + 0.2, 1.0 / 3.0, -1.234_567_890_123_456_7e300];
    let script = vec![
        Op::Study,
        Op::Init(1),
        Op::Init(2),
        Op::Study,
        Op::Create(awkward.clone(), "w0", attrs(&[("seed", json!(7)), ("nested", json!({"a": [1, null]}))])),
        Op::Leased(vec![1.5], "a", long, Some(5)),
        Op::Leased(vec![2.5], "b", short, Some(5)),
        Op::Leased(vec![3.5], "c", short, Some(5)),
        Op::Report(2, 5, 0.5),
        Op::Report(2, 1, 0.25),
        Op::Report(2, 5, 0.75),
        Op::Report(1, 3, 0.1),
        Op::Report(9, 0, 1.0),
        Op::SetAttr(2, "lineage", json!([0, 1])),
        Op::SetAttr(9, "x", json!(1)),
        Op::Renew(2, "b", short),
        Op::Renew(2, "x", short),
        Op::Renew(0, "w0", short),
        Op::Renew(9, "b", short),
        Op::Leased(vec![4.5], "d", long, Some(5)),
        Op::Leased(vec![5.5], "d", long, Some(5)),
        Op::Finish(0, Finish::complete(awkward.clone())),
        Op::Finish(0, Finish::failed("late")),
        Op::FinishLeased(1, "zz", Finish::complete(vec![9.0])),
        Op::FinishLeased(1, "a", Finish::complete(vec![1.0, 2.0])),
        Op::FinishLeased(1, "a", Finish::complete(vec![3.0])),
        Op::Sleep(Duration::from_millis(600)),
        Op::Expire(1),
        Op::Trials,
        Op::Claim("e", short),
        Op::Report(2, 0, 9.0),
        Op::Claim("f", long),
        Op::Claim("g", long),
        Op::FinishLeased(2, "b", Finish::pruned()),
        Op::Sleep(Duration::from_millis(600)),
        Op::Expire(1),
        Op::Renew(2, "e", long),
        Op::Report(2, 1, 1.0),
        Op::FinishLeased(3, "f", Finish::pruned()),
        Op::Finish(4, Finish::failed("exit status 3")),
        Op::Create(vec![6.5], "w1", Map::new()),
        Op::Expire(1),
        Op::Trials,
    ];
    let memory = MemoryStorage::new();
    let mut answers = Vec::new();
    for (i, op) in script.iter().enumerate() {
        if let Op::Sleep(d) = op {
            std::thread::sleep(*d);
            answers.push(String::new());
            continue;
        }
        let (m, p) = (apply(&memory, op), apply(pg, op));
        assert_eq!(p, m, "call {i}: PostgreSQL answered otherwise than memory");
        answers.push(m);
    }
    // The hand-worked answers the script exists for, by the call's place in the script.
    let expect = [
        (0, "None"),
        (2, "1"),
        (5, "Some(1)"),
        (7, "Some(3)"),
        (12, "trial error 9: no such trial"),
        (14, "trial error 9: no such trial"),
        (15, "true"),
        (16, "false"),
        (17, "false"),
        (18, "false"),
        (19, "Some(4)"),
        (20, "None"),
        (22, "trial error 0: already complete"),
        (23, "false"),
        (24, "true"),
        (25, "false"),
        (27, "[2, 3]"),
        (32, "None"),
        (33, "false"),
        (35, "[2]"),
        (36, "false"),
        (37, "trial error 2: already failed"),
        (38, "true"),
        (40, "5"),
        (41, "[]"),
    ];
    for (i, e) in expect {
        assert_eq!(answers[i], e, "answer {i}");
    }
    let claimed = &answers[29];
    assert!(claimed.starts_with("Some(Trial { number: 2, state: Running"), "{claimed}");
    assert!(claimed.contains("intermediate: [], worker: \"e\"") && claimed.contains("retries: 1"), "{claimed}");
    let last = pg.trials().unwrap();
    assert_eq!(last.iter().map(|t| t.state).collect::<Vec<_>>(), {
        use TrialState::*;
        vec![Complete, Complete, Failed, Pruned, Failed, Running]
    });
    assert_eq!(
        last[2].error.as_deref(),
        Some("lease expired: worker e stopped renewing it, after 1 re-queue(s) (the retry limit)")
    );
}

/// The killed worker's role, by the `MODE URL` its parent gave: `hold` ([`held_transaction`])
/// or `busy` ([`busy_worker`]).
pub fn killed_worker(spec: &str) {
    match spec.split_once(' ') {
        Some(("hold", url)) => held_transaction(url),
        Some(("busy", url)) => busy_worker(url),
        _ => panic!("unknown worker role {spec:?}"),
    }
}

/// Steps each busy worker trial reports before it is finished.
const STEPS: u64 = 4;

fn expected_value(n: u64) -> f64 {
    (n as f64 + 2.0).sqrt() / 3.0
}

fn expected_step(n: u64, step: u64) -> f64 {
    1.0 / (n + step + 1) as f64
}

/// Leases, reports and finishes trials as fast as it can, printing `told N` after each
/// finish returns, so that a kill lands inside one of PostgresStorage's transactions.
fn busy_worker(url: &str) {
    let s = PostgresStorage::connect(url, "busy").unwrap();
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let lease = Duration::from_millis(400);
        let n = s.create_leased(&[0.5], "busy", &Map::new(), lease, None).unwrap().unwrap();
        for step in 0..STEPS {
            s.report(n, step, expected_step(n, step)).unwrap();
        }
        assert!(s.finish_leased(n, "busy", &Finish::complete(vec![expected_value(n)])).unwrap());
        writeln!(out, "\ntold {n}").unwrap();
        out.flush().unwrap();
    }
}

/// Leases a trial, reports two steps, then opens a transaction that writes to the trial (as
/// `finish` would: state, values, a report) and never commits it; prints `mid N` and waits.
fn held_transaction(url: &str) {
    let s = PostgresStorage::connect(url, "killed").unwrap();
    let lease = Duration::from_millis(1500);
    let n = s.create_leased(&[0.25, 4.0], "doomed", &attrs(&[("role", json!("child"))]), lease, None).unwrap();
    let n = n.unwrap() as i64;
    s.report(n as u64, 0, 1.0).unwrap();
    s.report(n as u64, 1, 0.5).unwrap();
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut tx = client.transaction().unwrap();
    tx.execute(
        "UPDATE attune.trials SET state = 'complete', objective_values = ARRAY[0.125::float8] WHERE number = $1",
        &[&n],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO attune.intermediate SELECT study_id, number, 2, 0.25 FROM attune.trials WHERE number = $1",
        &[&n],
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "mid {n}").unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

/// Runs the worker role and kills it with SIGKILL once it is mid-transaction; then checks
/// that the server dropped the uncommitted writes and released the row, and that the trial,
/// once its lease lapses, is re-queued, claimed by another worker with its number, parameters
/// and attributes, and finished by it; the dead worker can no longer finish it.
pub fn kill_worker_mid_transaction(url: &str, env: &str) {
    let s = PostgresStorage::connect(url, "killed").unwrap();
    for _ in 0..2 {
        let n = s.create_leased(&[1.0], "survivor", &Map::new(), Duration::from_secs(60), None).unwrap().unwrap();
        s.finish_leased(n, "survivor", &Finish::complete(vec![n as f64])).unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill_child_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(env, format!("hold {url}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let number = lines
        .by_ref()
        .map_while(|l| l.ok())
        // The harness may have printed `test kill_child_role ... ` on the same line.
        .find_map(|l| l.rsplit_once("mid ").map(|(_, n)| n.trim().parse::<u64>().unwrap()))
        .expect("the worker reached the middle of its transaction");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the worker died of SIGKILL: {status:?}");
    assert_eq!(number, 2);

    // The server ends the dead client's session: the row's lock goes and its writes with it.
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let start = Instant::now();
    loop {
        let mut tx = admin.transaction().unwrap();
        tx.batch_execute("SET LOCAL lock_timeout = '100ms'").unwrap();
        if tx.query("SELECT 1 FROM attune.trials WHERE number = 2 FOR UPDATE", &[]).is_ok() {
            break;
        }
        drop(tx);
        assert!(start.elapsed() < Duration::from_secs(10), "the dead worker's lock was never released");
    }
    eprintln!("the dead worker's row lock was released {:.2?} after the kill", start.elapsed());
    let t = &s.trials().unwrap()[2];
    assert_eq!((t.state, t.values.clone(), t.worker.as_str()), (TrialState::Running, None, "doomed"));
    assert_eq!(t.intermediate, vec![(0, 1.0), (1, 0.5)], "the uncommitted report is gone");

    // Until the lease lapses the trial stays the dead worker's; then it is re-queued.
    let lapsed = Instant::now();
    let requeued = loop {
        let touched = s.expire_leases(3).unwrap();
        if !touched.is_empty() {
            break touched;
        }
        assert!(lapsed.elapsed() < Duration::from_secs(5), "the 1.5 s lease never lapsed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(requeued, vec![2]);
    let trials = s.trials().unwrap();
    assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), vec![0, 1, 2], "numbers stay dense");
    let t = &trials[2];
    assert_eq!((t.state, t.retries, t.intermediate.len()), (TrialState::Queued, 1, 0));
    let claimed = s.claim_queued("rescuer", Duration::from_secs(60)).unwrap().expect("the re-queued trial");
    assert_eq!((claimed.number, claimed.params.as_slice()), (2, [0.25, 4.0].as_slice()));
    assert_eq!((claimed.worker.as_str(), claimed.attrs.clone()), ("rescuer", attrs(&[("role", json!("child"))])));
    assert!(!s.finish_leased(2, "doomed", &Finish::complete(vec![0.0])).unwrap(), "the dead worker's lease is gone");
    assert!(s.finish_leased(2, "rescuer", &Finish::complete(vec![0.5])).unwrap());
    let trials = s.trials().unwrap();
    assert!(trials.iter().all(|t| t.state == TrialState::Complete), "{trials:?}");
    let t = &trials[2];
    assert_eq!((t.state, t.values.clone(), t.retries), (TrialState::Complete, Some(vec![0.5]), 1));
}

/// Runs the busy worker and kills it with SIGKILL after it has told `kill_after` trials and
/// `delay` more; returns the numbers it told.
fn run_and_kill(url: &str, env: &str, kill_after: usize, delay: Duration) -> BTreeSet<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill_child_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(env, format!("busy {url}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut told = BTreeSet::new();
    let mut killed = false;
    if kill_after == 0 {
        std::thread::sleep(delay);
        child.kill().unwrap();
        killed = true;
    }
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(|l| l.ok()) {
        if let Some(n) = line.strip_prefix("told ") {
            told.insert(n.trim().parse::<u64>().unwrap());
        }
        if !killed && told.len() >= kill_after {
            std::thread::sleep(delay);
            child.kill().unwrap();
            killed = true;
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the worker died of SIGKILL: {status:?}");
    told
}

/// Kills a busy worker at several moments (before it connects, between and inside its
/// transactions) and checks after each kill: numbers dense, every told trial complete with
/// its exact values and reports, at most the one trial in flight left running, and that one
/// re-queued when its lease lapses, claimed and finished by another worker.
pub fn kill_busy_worker_at_random_moments(url: &str, env: &str) {
    let s = PostgresStorage::connect(url, "busy").unwrap();
    let mut told_all: BTreeSet<u64> = BTreeSet::new();
    for (round, (kill_after, delay_us)) in [(0usize, 30_000u64), (2, 0), (5, 700), (9, 1500)].into_iter().enumerate() {
        let told = run_and_kill(url, env, kill_after, Duration::from_micros(delay_us));
        told_all.extend(&told);
        // Wait out the dead worker's lease (0.4 s), then sweep.
        std::thread::sleep(Duration::from_millis(450));
        let requeued = s.expire_leases(3).unwrap();
        let trials = s.trials().unwrap();
        assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), (0..trials.len() as u64).collect::<Vec<_>>());
        assert!(requeued.len() <= 1, "round {round}: more than the trial in flight was running: {requeued:?}");
        for t in &trials {
            let n = t.number;
            if requeued.contains(&n) {
                assert_eq!((t.state, t.retries, t.intermediate.len()), (TrialState::Queued, 1, 0), "round {round}");
                continue;
            }
            assert_eq!(t.state, TrialState::Complete, "round {round}: trial {n}");
            let expect_steps: Vec<(u64, f64)> = (0..STEPS).map(|st| (st, expected_step(n, st))).collect();
            if t.worker == "busy" {
                assert_eq!(t.values.clone(), Some(vec![expected_value(n)]), "round {round}: trial {n}");
                assert_eq!(t.intermediate, expect_steps, "round {round}: trial {n}");
            }
        }
        for &n in &told_all {
            assert_eq!(trials[n as usize].state, TrialState::Complete, "round {round}: told trial {n}");
        }
        if let Some(t) = s.claim_queued("rescuer", Duration::from_secs(60)).unwrap() {
            assert!(s.finish_leased(t.number, "rescuer", &Finish::complete(vec![-1.0])).unwrap());
        }
        eprintln!(
            "round {round}: told {} (kill after {kill_after}), stored {}, re-queued {requeued:?}",
            told.len(),
            trials.len()
        );
    }
    assert!(told_all.len() >= 16, "the worker told {} trials over all rounds", told_all.len());
}
