//! Shared-study helpers: worker processes, a loop that SIGKILLs them at random while the study
//! runs, and the study's export.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::run_dir::BIN;

/// `attune ARGS`, waited for.
pub fn attune(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("running attune")
}

/// An `attune worker` process named `name` on the study.
pub fn worker(storage: &str, study: &str, name: &str) -> Child {
    Command::new(BIN)
        .args(["worker", "--storage", storage, "--study", study, "--name", name])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `workers` worker processes on the study, SIGKILLs a random one every `kill_every` and
/// starts a replacement, until every worker has exited (the study is done). Returns (seconds,
/// kills).
pub fn kill_at_random(storage: &str, study: &str, workers: usize, kill_every: Duration) -> (f64, usize) {
    let start = Instant::now();
    let mut pool: Vec<Child> = (0..workers).map(|i| worker(storage, study, &format!("w{i}"))).collect();
    let mut kills = 0;
    let mut seed = 12345u64;
    let mut next_name = workers;
    loop {
        std::thread::sleep(kill_every);
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
    (start.elapsed().as_secs_f64(), kills)
}

/// The study's trials as `attune study export --format json` gives them.
pub fn exported(storage: &str, study: &str) -> Vec<Value> {
    let export = attune(&["study", "export", "--storage", storage, "--study", study, "--format", "json"]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    String::from_utf8_lossy(&export.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
