//! Shared studies through the binary (docs/search.md "Shared studies"): K worker processes on
//! one SQLite study while worker processes are killed with SIGKILL and replaced; every trial
//! must end exactly once. The short form (4 workers, 100 trials, SQLite and PostgreSQL) runs in
//! CI; the full form (16 workers on PostgreSQL and 8 on SQLite, 1,000 trials each) is
//! `cargo test -p attune-lab --test shared_study -- --ignored --nocapture`.

mod common;
// The one throwaway-PostgreSQL helper of the workspace's tests.
#[path = "../../search/tests/pg_cluster/mod.rs"]
mod pg_cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::run_dir::BIN;
use common::shared::{attune, exported, kill_at_random};
use serde_json::Value;

const SPACE: &str = "direction = \"minimize\"\n[params]\nx = { type = \"float\", low = 0.0, high = 1.0 }\n";

/// A cheap objective that takes a little while, so kills land mid-trial.
const OBJECTIVE: &str = r#"
import json, sys, time
x = json.loads(sys.stdin.readline())["params"]["x"]
time.sleep(0.05)
print(json.dumps({"value": (x - 0.3) ** 2}))
"#;

/// Writes the space and the objective program into `dir`; returns the space file and the
/// `--command` line.
fn study_files(dir: &Path) -> (PathBuf, String) {
    let space = dir.join("space.toml");
    std::fs::write(&space, SPACE).unwrap();
    let obj = dir.join("obj.py");
    std::fs::write(&obj, OBJECTIVE).unwrap();
    (space, format!("python3 {}", obj.display()))
}

/// The SQLite storage in `dir` and the `attune search` arguments of study "s": `trials` trials
/// of the cheap objective run by two local workers with a one-second lease.
fn two_local_workers(dir: &Path, trials: u64) -> (String, Vec<String>) {
    let storage = format!("sqlite:{}", dir.join("s.db").display());
    let (space, cmd) = study_files(dir);
    let args = [
        "search",
        "--space",
        space.to_str().unwrap(),
        "--command",
        &cmd,
        "--trials",
        &trials.to_string(),
        "--storage",
        &storage,
        "--study",
        "s",
        "--workers",
        "2",
        "--lease",
        "1",
        "--quiet",
        "--no-plots",
        "--artifacts",
        dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    (storage, args)
}

struct Chaos {
    workers: usize,
    trials: u64,
    kill_every: Duration,
}

/// Creates the study with no local workers, runs `workers` worker processes, SIGKILLs a random
/// one every `kill_every` and starts a replacement, until the study is done; then checks that
/// every trial ended exactly once. Returns (trials/s, kills).
fn chaos(dir: &Path, storage: &str, study: &str, c: &Chaos) -> (f64, usize) {
    let (space, cmd) = study_files(dir);
    // --workers 0 creates the study and runs nothing; the chaos workers do every trial.
    let trials = c.trials.to_string();
    let create = attune(&[
        "search",
        "--space",
        space.to_str().unwrap(),
        "--command",
        &cmd,
        "--sampler",
        "random",
        "--trials",
        &trials,
        "--storage",
        storage,
        "--study",
        study,
        "--workers",
        "0",
        "--lease",
        "1",
        "--max-retries",
        "100",
        "--artifacts",
        dir.to_str().unwrap(),
        "--quiet",
        "--no-plots",
    ]);
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    let (secs, kills) = kill_at_random(storage, study, c.workers, c.kill_every);
    let rows = exported(storage, study);
    assert_eq!(rows.len() as u64, c.trials, "trials in the study");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["number"], i as u64, "numbers are dense");
        assert_eq!(r["state"], "complete", "every trial ends once, complete: {r}");
        let x = r["params"]["x"].as_f64().unwrap();
        assert!((r["values"][0].as_f64().unwrap() - (x - 0.3f64).powi(2)).abs() < 1e-12, "{r}");
    }
    (c.trials as f64 / secs, kills)
}

/// The CI form of the chaos run: 4 workers, 100 trials, a kill every 0.7 s.
fn short_chaos(storage: &str, dir: &Path, label: &str) {
    let (rate, kills) =
        chaos(dir, storage, "chaos", &Chaos { workers: 4, trials: 100, kill_every: Duration::from_millis(700) });
    eprintln!("shared study ({label}, 4 workers, 100 trials): {rate:.1} trials/s with {kills} kills");
    assert!(kills >= 2, "the test killed too few workers to mean anything ({kills})");
}

#[test]
fn workers_killed_at_random_lose_no_trial_and_run_none_twice() {
    let tmp = tempfile::tempdir().unwrap();
    short_chaos(&format!("sqlite:{}", tmp.path().join("shared.db").display()), tmp.path(), "sqlite");
}

#[test]
fn workers_killed_at_random_on_postgresql_lose_no_trial_and_run_none_twice() {
    let tmp = tempfile::tempdir().unwrap();
    short_chaos(&pg_cluster::shared().database("chaos"), tmp.path(), "postgresql");
}

#[test]
fn a_killed_coordinator_leaves_its_workers_running_and_the_same_command_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, args) = two_local_workers(tmp.path(), 40);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut coordinator = Command::new(BIN).args(&args).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = || {
        let out = attune(&["study", "list", "--storage", &storage]);
        String::from_utf8_lossy(&out.stdout)
            .split('\t')
            .nth(1)
            .and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    while count() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    // The same command again: it joins the study it finds and brings it to 40 trials.
    let again = attune(&args);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let rows = exported(&storage, "s");
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r["state"] == "complete"), "{rows:?}");
    let summary: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("s/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["n_complete"], 40);
}

#[test]
#[ignore = "the full chaos run: cargo test -p attune-lab --test shared_study -- --ignored --nocapture"]
fn full_chaos_run_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = format!("sqlite:{}", tmp.path().join("shared.db").display());
    let (rate, kills) = chaos(
        tmp.path(),
        &storage,
        "chaos-full",
        &Chaos { workers: 8, trials: 1000, kill_every: Duration::from_secs(2) },
    );
    eprintln!("shared study (sqlite, 8 workers, 1000 trials): {rate:.1} trials/s with {kills} kills");
}

#[test]
#[ignore = "the full chaos run: cargo test -p attune-lab --test shared_study -- --ignored --nocapture"]
fn full_chaos_run_on_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = pg_cluster::shared().database("chaos_full");
    let (rate, kills) = chaos(
        tmp.path(),
        &storage,
        "chaos-full",
        &Chaos { workers: 16, trials: 1000, kill_every: Duration::from_secs(2) },
    );
    eprintln!("shared study (postgresql, 16 workers, 1000 trials): {rate:.1} trials/s with {kills} kills");
}

#[test]
fn a_second_search_with_another_space_is_refused_and_the_study_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = format!("sqlite:{}", tmp.path().join("s.db").display());
    let (space, cmd) = study_files(tmp.path());
    let base = [
        "search",
        "--command",
        &cmd,
        "--storage",
        &storage,
        "--study",
        "s",
        "--quiet",
        "--no-plots",
        "--artifacts",
        tmp.path().to_str().unwrap(),
    ];
    let first = attune(&[&base[..], &["--space", space.to_str().unwrap(), "--trials", "3", "--workers", "2"]].concat());
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, SPACE.replace("high = 1.0", "high = 5.0")).unwrap();
    let second = attune(&[&base[..], &["--space", other.to_str().unwrap(), "--trials", "6"]].concat());
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another space"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let list = attune(&["study", "list", "--storage", &storage]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("s\t3 trials"), "{}", String::from_utf8_lossy(&list.stdout));
}

#[test]
fn a_worker_without_the_objective_program_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = format!("sqlite:{}", tmp.path().join("s.db").display());
    let (space, _) = study_files(tmp.path());
    let made = attune(&[
        "search",
        "--space",
        space.to_str().unwrap(),
        "--command",
        "no-such-objective-program --x",
        "--trials",
        "0",
        "--storage",
        &storage,
        "--study",
        "s",
        "--quiet",
        "--no-plots",
        "--artifacts",
        tmp.path().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&made.stderr);
    assert!(!made.status.success(), "a study whose program is missing should not run: {text}");
    let w = attune(&["worker", "--storage", &storage, "--study", "s"]);
    let text = String::from_utf8_lossy(&w.stderr);
    assert!(
        !w.status.success() && text.contains("no-such-objective-program") && text.contains("not on this machine"),
        "{text}"
    );
}

#[test]
fn an_unreachable_storage_fails_fast_with_the_url() {
    let start = Instant::now();
    let out = attune(&["study", "list", "--storage", "postgres://attune@127.0.0.1:9/none"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("127.0.0.1:9"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(20), "it hung for {:?}", start.elapsed());
}

/// A worker killed with SIGKILL takes its trial's processes with it, even the children of the
/// objective's shell (tests the lifeline of src/search/lifeline.rs): an orphan would otherwise
/// keep writing into the trial's folder while another worker continues the trial there.
#[test]
fn a_killed_workers_trial_processes_die_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = format!("sqlite:{}", tmp.path().join("s.db").display());
    let (space, _) = study_files(tmp.path());
    // The shell starts a grandchild and waits; no signal to the shell would reach it.
    let cmd = "sleep 120 & echo $! > \"$ATTUNE_TRIAL_DIR/sleep.pid\"; wait";
    let made = attune(&[
        "search",
        "--space",
        space.to_str().unwrap(),
        "--command",
        cmd,
        "--trials",
        "1",
        "--storage",
        &storage,
        "--study",
        "s",
        "--workers",
        "0",
        "--artifacts",
        tmp.path().to_str().unwrap(),
        "--quiet",
        "--no-plots",
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut w = common::shared::worker(&storage, "s", "doomed");
    let pid_file = tmp.path().join("s/trials/00000/sleep.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the trial never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    // A dead process may linger as a zombie where nothing reaps orphans; it runs no more.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
    };
    assert!(alive(), "the trial's grandchild runs while its worker does");
    w.kill().unwrap();
    w.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(), "the trial's grandchild {pid} outlived its killed worker");
}

/// A local worker that dies does not fail a study the other workers finish: the coordinator
/// reports the death, exits 0 and writes the study's files, as for a study without deaths.
#[test]
fn a_coordinator_whose_local_worker_dies_still_finishes_the_study() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, args) = two_local_workers(tmp.path(), 30);
    let coordinator = Command::new(BIN).args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let children = format!("/proc/{0}/task/{0}/children", coordinator.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        let pids = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = pids.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the coordinator started no worker");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on a child of the coordinator this test started.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let out = coordinator.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 of the local workers died"), "{stderr}");
    let rows = exported(&storage, "s");
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r["state"] == "complete"), "{rows:?}");
    let summary: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("s/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["n_complete"], 30);
}
