//! A shared study under fire: eight worker processes on one SQLite file run its trials through
//! the lease API while the test kills one of them with SIGKILL every ~100 ms and starts a
//! replacement. Every trial must end finished exactly once, by the worker that held it, with
//! the killed workers' trials re-queued (same number, same parameters) and retried.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use attune_search::{Finish, SqliteStorage, Storage, TrialState};
use serde_json::Map;

/// Names the study file when this test binary runs as a worker.
const CHILD_ENV: &str = "ATTUNE_SQLITE_SHARED_CHILD";
/// The shared study, and a bystander in the same file that nobody may touch.
const STUDY: &str = "shared";
const BYSTANDER: &str = "bystander";
/// Trials in the study (the limit every worker passes to `create_leased`).
const LIMIT: u64 = 200;
/// Workers alive at any time.
const WORKERS: usize = 8;
/// Each worker's lease: long against a step, short against the test.
const LEASE: Duration = Duration::from_millis(300);
/// High enough that no trial runs out of retries here: a failed trial is a failure.
const MAX_RETRIES: u32 = 50;
/// Steps per trial, each a sleep, a report and a renewal.
const STEPS: u64 = 2;
const STEP_TIME: Duration = Duration::from_millis(40);
/// How often the test kills a worker.
const KILL_EVERY: Duration = Duration::from_millis(100);

/// The value trial `n` at parameter `x` finishes with: a function of what the store holds, so
/// a re-run trial finishes with the same value and any mix-up of rows shows.
fn final_value(n: u64, x: f64) -> f64 {
    n as f64 + x
}

fn step_value(n: u64, step: u64) -> f64 {
    1.0 / (n + step + 1) as f64
}

/// The worker role (a no-op in a normal run). Each loop: expire lapsed leases, claim a queued
/// trial or create one under the limit, run it (steps with renewals), finish it if it still
/// holds the lease. Prints `start N`, `finished N` or `lost N` as each happens; exits once every
/// trial is finished (or a bound runs out, so an orphan cannot run forever).
#[test]
fn shared_worker_role() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let worker = format!("pid{}", std::process::id());
    let s = SqliteStorage::open(Path::new(&path), STUDY).unwrap();
    let mut rng = attune_rng::Rng::from_key(&[u64::from(std::process::id())]);
    let mut out = std::io::stdout().lock();
    let mut say = |what: &str, n: u64| {
        writeln!(out, "{what} {n}").unwrap();
        out.flush().unwrap();
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        s.expire_leases(MAX_RETRIES).unwrap();
        let (n, x) = match s.claim_queued(&worker, LEASE).unwrap() {
            Some(t) => (t.number, t.params[0]),
            None => {
                let x = rng.unit_f64();
                match s.create_leased(&[x], &worker, &Map::new(), LEASE, Some(LIMIT)).unwrap() {
                    Some(n) => (n, x),
                    None if s.trials().unwrap().iter().all(|t| t.state.is_finished()) => return,
                    // Every trial exists and some run elsewhere (or ran on a worker since killed,
                    // whose lease has yet to lapse).
                    None => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
        };
        say("start", n);
        let mut held = true;
        for step in 0..STEPS {
            std::thread::sleep(STEP_TIME);
            // Renew before reporting: a worker whose lease lapsed (a stall) must not write into
            // a trial that someone else may now run.
            held = s.renew(n, &worker, LEASE).unwrap() && s.report(n, step, step_value(n, step)).is_ok();
            if !held {
                break;
            }
        }
        if held && s.finish_leased(n, &worker, &Finish::complete(vec![final_value(n, x)])).unwrap() {
            say("finished", n);
        } else {
            say("lost", n);
        }
    }
}

/// A running worker and the pid it names itself by.
struct Worker {
    child: Child,
    pid: u32,
}

/// Starts a worker on `path` whose lines go to `lines` as `(pid, line)`.
fn spawn(path: &Path, lines: &mpsc::Sender<(u32, String)>) -> Worker {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["shared_worker_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send((pid, line));
        }
    });
    Worker { child, pid }
}

/// What the workers said, by trial.
#[derive(Default)]
struct Said {
    /// The pids that printed `start N`, in order.
    starts: BTreeMap<u64, Vec<u32>>,
    /// The pids that printed `finished N`.
    finishes: BTreeMap<u64, Vec<u32>>,
    /// Each pid's trials started and not yet ended (finished or lost) in its output.
    open: BTreeMap<u32, BTreeSet<u64>>,
    /// How many trials workers abandoned because they had lost the lease.
    lost: usize,
}

impl Said {
    fn take(&mut self, pid: u32, line: &str) {
        let Some((what, n)) = line.split_once(' ') else { return };
        let Ok(n) = n.trim().parse::<u64>() else { return };
        match what {
            "start" => {
                self.starts.entry(n).or_default().push(pid);
                self.open.entry(pid).or_default().insert(n);
            }
            "finished" | "lost" => {
                if what == "finished" {
                    self.finishes.entry(n).or_default().push(pid);
                } else {
                    self.lost += 1;
                }
                self.open.entry(pid).or_default().remove(&n);
            }
            _ => {}
        }
    }
}

#[test]
fn workers_killed_at_random_leave_every_trial_finished_exactly_once() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let bystander = SqliteStorage::create(&path, BYSTANDER).unwrap();
    for i in 0..5 {
        bystander.create_leased(&[i as f64], "bystander", &Map::new(), Duration::ZERO, None).unwrap();
    }
    let bystander_before = bystander.trials().unwrap();
    let store = SqliteStorage::create(&path, STUDY).unwrap();

    let (send, receive) = mpsc::channel();
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| spawn(&path, &send)).collect();
    let mut killed: BTreeSet<u32> = BTreeSet::new();
    let mut rng = attune_rng::Rng::from_key(&[2024]);
    let elapsed = loop {
        std::thread::sleep(KILL_EVERY);
        let trials = store.trials().unwrap();
        if trials.len() as u64 == LIMIT && trials.iter().all(|t| t.state.is_finished()) {
            break started.elapsed();
        }
        let running = trials.iter().filter(|t| !t.state.is_finished()).count();
        assert!(started.elapsed() < Duration::from_secs(40), "stuck: {} trials, {running} unfinished", trials.len());
        // A worker that found nothing to do may have left; every slot is refilled.
        let victim = workers.swap_remove(rng.index(workers.len()));
        let mut child = victim.child;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(status.signal() == Some(9) || status.success(), "worker {} ended {status:?}", victim.pid);
            if status.signal() == Some(9) {
                killed.insert(victim.pid);
            }
        }
        workers.push(spawn(&path, &send));
    };
    for mut w in workers {
        let status = w.child.wait().unwrap();
        assert!(status.success(), "worker {} ended {status:?} once the study was done", w.pid);
    }
    drop(send);
    let mut said = Said::default();
    // The readers end when their pipes close, and every child has exited.
    for (pid, line) in receive {
        said.take(pid, &line);
    }

    let trials = store.trials().unwrap();
    assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), (0..LIMIT).collect::<Vec<_>>());
    let mut retried = 0;
    for t in &trials {
        let n = t.number;
        assert_eq!(t.state, TrialState::Complete, "trial {n}: {:?}", t.error);
        assert_eq!(t.values, Some(vec![final_value(n, t.params[0])]), "trial {n} finished with its own params");
        let steps: Vec<(u64, f64)> = (0..STEPS).map(|s| (s, step_value(n, s))).collect();
        assert_eq!(t.intermediate, steps, "trial {n}: one run's reports");
        let finishers = said.finishes.get(&n).cloned().unwrap_or_default();
        assert!(finishers.len() <= 1, "trial {n} finished by {finishers:?}");
        match finishers.first() {
            Some(pid) => assert_eq!(t.worker, format!("pid{pid}"), "trial {n}: the finisher holds it"),
            // Killed between its commit and its print.
            None => assert!(killed.iter().any(|p| t.worker == format!("pid{p}")), "trial {n} by {}", t.worker),
        }
        let starts = said.starts.get(&n).map_or(0, Vec::len);
        assert!(starts as u32 <= t.retries + 1, "trial {n}: {starts} starts, {} retries", t.retries);
        retried += usize::from(t.retries > 0);
    }
    // A worker killed while it ran a trial lost it: the trial was re-queued and retried, unless
    // the worker had finished it just before the kill.
    let mut interrupted = 0;
    for pid in &killed {
        for &n in said.open.get(pid).into_iter().flatten() {
            let t = &trials[n as usize];
            assert!(t.retries >= 1 || t.worker == format!("pid{pid}"), "trial {n} lost by killed pid{pid}");
            interrupted += 1;
        }
    }
    assert!(killed.len() >= 10, "only {} workers were killed", killed.len());
    assert!(interrupted >= 5 && retried >= 5, "{interrupted} trials interrupted, {retried} retried");
    assert_eq!(bystander.trials().unwrap(), bystander_before, "the other study in the file is untouched");
    let check: String =
        rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let retries: u32 = trials.iter().map(|t| t.retries).sum();
    eprintln!(
        "{LIMIT} trials in {:.2} s ({:.1} trials/s) by {WORKERS} workers; {} killed, {interrupted} trials \
         interrupted, {retried} retried ({retries} retries), {} abandoned on a lost lease",
        elapsed.as_secs_f64(),
        LIMIT as f64 / elapsed.as_secs_f64(),
        killed.len(),
        said.lost
    );
}
