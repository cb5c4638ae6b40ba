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
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::run_dir::BIN;
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

fn attune(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("running attune")
}

fn worker(storage: &str, study: &str, name: &str) -> Child {
    Command::new(BIN)
        .args(["worker", "--storage", storage, "--study", study, "--name", name])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
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
    let start = Instant::now();
    let mut pool: Vec<Child> = (0..c.workers).map(|i| worker(storage, study, &format!("w{i}"))).collect();
    let mut kills = 0;
    let mut seed = 12345u64;
    let mut next_name = c.workers;
    loop {
        std::thread::sleep(c.kill_every);
        pool.retain_mut(|ch| ch.try_wait().map(|s| s.is_none()).unwrap_or(false));
        if pool.is_empty() {
            break;
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim = (seed >> 33) as usize % pool.len();
        let mut killed = pool.remove(victim);
        let _ = killed.kill();
        let _ = killed.wait();
        kills += 1;
        pool.push(worker(storage, study, &format!("w{next_name}")));
        next_name += 1;
        assert!(start.elapsed() < Duration::from_secs(600), "the study did not finish in 10 minutes");
    }
    let secs = start.elapsed().as_secs_f64();
    let export = attune(&["study", "export", "--storage", storage, "--study", study, "--format", "json"]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let rows: Vec<Value> =
        String::from_utf8_lossy(&export.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
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
    let storage = format!("sqlite:{}", tmp.path().join("s.db").display());
    let (space, cmd) = study_files(tmp.path());
    let args = [
        "search",
        "--space",
        space.to_str().unwrap(),
        "--command",
        &cmd,
        "--trials",
        "40",
        "--storage",
        &storage,
        "--study",
        "s",
        "--workers",
        "2",
        "--quiet",
        "--no-plots",
        "--artifacts",
        tmp.path().to_str().unwrap(),
    ];
    let mut coordinator = Command::new(BIN).args(args).stderr(std::process::Stdio::null()).spawn().unwrap();
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
    let export = attune(&["study", "export", "--storage", &storage, "--study", "s", "--format", "json"]);
    let rows: Vec<Value> =
        String::from_utf8_lossy(&export.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
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
