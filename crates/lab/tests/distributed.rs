//! Data-parallel training with real MPI ranks (docs/distributed.md): `mpirun -np 2` of the
//! test's own `attune` binary. Built with `--features mpi`, which `.ci/run` runs
//! (`cargo test -p attune-lab --features mpi --test distributed`); mpirun missing is a failure,
//! not a skip.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::run_dir::{BIN, TINY, TINY_SETS, assert_ok, attune, outcome, read_json, resume_args, run_args};

/// `mpirun -np N` of the attune binary with `args` per rank (or `apps`, one argument list
/// per rank, as MPMD `:`-separated apps), ended as a failure if it runs past `limit`.
fn mpirun(apps: &[Vec<String>], limit: Duration) -> Output {
    let mut cmd = mpirun_command();
    for (i, app) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", "1", BIN]).args(app);
    }
    let mut child = cmd.spawn().expect("mpirun (Debian's openmpi-bin; .ci/run installs it) must be on PATH");
    let started = Instant::now();
    while child.try_wait().expect("waiting for mpirun").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("mpirun still running after {limit:?}: a rank hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn ranks(n: usize, args: &[String]) -> Vec<Vec<String>> {
    vec![args.to_vec(); n]
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `‖a - b‖ / ‖a‖` over every weight of two checkpoints.
fn relative_distance(a: &Path, b: &Path) -> f64 {
    let (a, b) = (outcome(a).weights, outcome(b).weights);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (k, wa) in &a {
        for (x, y) in wa.iter().zip(&b[k]) {
            let (x, y) = (f32::from_bits(*x) as f64, f32::from_bits(*y) as f64);
            num += (x - y).powi(2);
            den += x * x;
        }
    }
    (num / den).sqrt()
}

fn train_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["split"] == "train")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

/// The equivalence: 100 steps of the default MQAR model, 2 ranks of 32 rows against
/// one process of 64, same seed; the ranks' weights compared bit for bit after every step.
#[test]
fn two_ranks_of_32_rows_train_as_one_process_of_64() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let common = strings(&["train", "--steps", "100", "--batch", "64", "--threads", "1", "--quiet", "--no-plots"]);
    let common = [common, strings(&["--target-accuracy", "0", "--eval-every", "100"])].concat();
    let single = [common.clone(), strings(&["--out", &one.display().to_string()])].concat();
    assert_ok(&attune(&single, &[]), "the single-process run");
    let dist = [common, strings(&["--distributed", "--verify-ranks", "--out", &two.display().to_string()])].concat();
    let out = mpirun(&ranks(2, &dist), Duration::from_secs(600));
    assert!(out.status.success(), "the 2-rank run failed:\n{}", text(&out));

    let (a, b) = (train_losses(&one), train_losses(&two));
    assert_eq!(a.len(), 10);
    let worst = a.iter().zip(&b).map(|((_, x), (_, y))| (x - y).abs() / x.abs()).fold(0.0, f64::max);
    eprintln!("equivalence: train losses within {worst:e} relative, weights {:e}", relative_distance(&one, &two));
    assert_eq!(a.iter().map(|r| r.0).collect::<Vec<_>>(), b.iter().map(|r| r.0).collect::<Vec<_>>());
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step {step}: loss {x} (1 process) vs {y} (2 ranks)");
    }
    let d = relative_distance(&one, &two);
    assert!(d <= 1e-5, "weights after 100 steps differ by {d:e} relative");
    // The first step's gradients are the same numbers summed in another order: not bit-equal,
    // so a distance of exactly 0 would mean the ranks never trained on their own rows.
    assert!(d > 0.0, "bit-equal weights: did each rank train on the whole batch?");
    let s = read_json(&two.join("summary.json"));
    assert_eq!(s["steps"], 100);
    let rows = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    let share = first["comm_fraction"].as_f64().expect("a distributed training row has comm_fraction");
    assert!(share > 0.0 && share < 1.0, "comm_fraction {share}");
}

/// Ctrl-C (here `--interrupt-after`) and `--resume` of a distributed run continue it exactly:
/// the same rows, summary and weights as the run that was never stopped, with dropout on (each
/// rank's own mask stream survives the resume).
#[test]
fn an_interrupted_distributed_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, resumed) = (tmp.path().join("straight"), tmp.path().join("resumed"));
    let dist = |dir: &Path, extra: &[&str]| {
        let mut a = run_args(dir, 12);
        a.extend(strings(&["--distributed", "--verify-ranks"]));
        a.extend(strings(extra));
        a
    };
    let out = mpirun(&ranks(2, &dist(&straight, &[])), Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    let out = mpirun(&ranks(2, &dist(&resumed, &["--interrupt-after", "5"])), Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!resumed.join("summary.json").exists(), "the interrupted run finished");
    let mut again = resume_args(&resumed);
    again.push("--distributed".into());
    let out = mpirun(&ranks(2, &again), Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    let diff = outcome(&straight).diff(&outcome(&resumed));
    assert!(diff.is_empty(), "resumed distributed run differs: {diff}");
}

/// Bad launches end every rank with the fix named, instead of a hang.
#[test]
fn bad_launches_are_clear_errors_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = |dir: &str, extra: &[&str]| {
        let mut a = strings(&["train", "--task", "mqar", "--steps", "3", "--quiet", "--no-plots", "--distributed"]);
        a.extend(strings(&TINY));
        a.extend(strings(extra));
        a.extend(["--out".into(), tmp.path().join(dir).display().to_string()]);
        a
    };
    // A batch that does not split over the ranks.
    let out = mpirun(&ranks(2, &tiny("odd", &["--batch", "9"])), Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(text(&out).contains("multiple of the world size 2"), "{}", text(&out));
    // Ranks started with different flags.
    let out = mpirun(&[tiny("mixed", &["--lr", "1e-3"]), tiny("mixed", &["--lr", "2e-3"])], Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(text(&out).contains("rank(s) [1] resolved a different run config"), "{}", text(&out));
    // --distributed without mpirun.
    let out = attune(&tiny("alone", &[]), &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("mpirun -np N attune train --distributed"), "{}", text(&out));
    assert!(!tmp.path().join("alone").exists(), "a refused run wrote its directory");
}

/// A 2-rank run of the tiny model that would go on for ever, once rank 1 is up and rank 0 has
/// written its metrics: the launcher's process and rank 1's pid.
fn long_job(dir: &Path, extra: &[&str]) -> (std::process::Child, i32) {
    let mut args = run_args(dir, 100_000_000);
    args.push("--distributed".into());
    args.extend(strings(extra));
    let mut child = spawn_mpirun(&args);
    match rank1_pid(dir) {
        Some(pid) => (child, pid),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rank 1 never started");
        }
    }
}

/// The pid of rank 1 of the job training into `dir`, once rank 0 has written its metrics
/// (None after a minute).
fn rank1_pid(dir: &Path) -> Option<i32> {
    // Rank 1 is the process of this run whose environment says so.
    let marker = dir.display().to_string();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let found = std::fs::read_dir("/proc").into_iter().flatten().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            let mine = String::from_utf8_lossy(&cmdline).contains(&marker) && cmdline.starts_with(BIN.as_bytes());
            let is_rank1 = environ.split(|&b| b == 0).any(|v| v == b"OMPI_COMM_WORLD_RANK=1");
            (mine && is_rank1).then_some(pid)
        });
        if found.is_some() && dir.join("metrics.jsonl").is_file() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `mpirun -np 2` of the binary with `args`, its output piped.
fn spawn_mpirun(args: &[String]) -> std::process::Child {
    mpirun_command()
        .args(["-np", "2", BIN])
        .args(args)
        .spawn()
        .expect("mpirun (Debian's openmpi-bin; .ci/run installs it) must be on PATH")
}

/// `mpirun` as root, with more ranks than cores allowed, its output piped.
fn mpirun_command() -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Waits for the launcher to end (a failure past `limit`: some rank hangs).
fn finished(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: the job still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill sends a signal to a process of this test's own job.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// A rank that dies ends the job: the launcher stops the other rank, which would otherwise
/// wait in its next all-reduce forever.
#[test]
fn a_dead_rank_ends_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, rank1) = long_job(&tmp.path().join("run"), &[]);
    signal(rank1, libc::SIGKILL);
    let out = finished(child, Duration::from_secs(60), "rank 1 killed");
    assert!(!out.status.success());
    assert!(text(&out).contains("rank 1"), "mpirun did not name the dead rank:\n{}", text(&out));
}

/// A rank that hangs (stopped, so its connections stay open) ends the job through rank 0's
/// watchdog after --collective-timeout, naming what it waited on.
#[test]
fn a_hung_rank_ends_the_job_after_the_collective_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, rank1) = long_job(&tmp.path().join("run"), &["--collective-timeout", "2"]);
    signal(rank1, libc::SIGSTOP);
    let out = finished(child, Duration::from_secs(60), "rank 1 stopped");
    let _ = unsafe { libc::kill(rank1, libc::SIGKILL) };
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("rank 0: the") && t.contains("did not complete in 2 s"), "no watchdog message:\n{t}");
}

/// Ctrl-C on the launcher reaches every rank; they stop at the same step and rank 0 commits a
/// checkpoint that `--resume --distributed` continues.
#[test]
fn ctrl_c_on_mpirun_checkpoints_and_stops_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let (child, _) = long_job(&dir, &[]);
    signal(child.id() as i32, libc::SIGINT);
    let out = finished(child, Duration::from_secs(60), "Ctrl-C");
    let t = text(&out);
    let committed = attune_lab::rundir::checkpoints(&dir).unwrap_or_default();
    assert!(!committed.is_empty(), "no committed checkpoint after Ctrl-C:\n{t}");
    assert!(!dir.join("summary.json").exists(), "an interrupted run wrote its summary");
    // The checkpoint continues: a resume of it runs (here for 2 more steps than it holds).
    let step: u64 = read_json(&committed.last().unwrap().join("state.json"))["step"].as_u64().unwrap();
    let mut again = resume_args(&dir);
    again.extend(strings(&["--distributed", "--steps", &(step + 2).to_string()]));
    let out = mpirun(&ranks(2, &again), Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_json(&dir.join("summary.json"))["steps"], step + 2);
}

/// `attune search --launcher "mpirun -np 2"`: each training trial is a 2-rank job, whose rank 0
/// reports the protocol's values and writes the summary the study reads.
#[test]
fn search_trials_run_as_mpi_jobs_under_a_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let space = tmp.path().join("space.toml");
    std::fs::write(
        &space,
        "direction = \"maximize\"\n[params]\n\"optimizer.lr\" = { type = \"float\", low = 1e-3, high = 1e-2, log = true }\n",
    )
    .unwrap();
    let study = tmp.path().join("study");
    let mut args = strings(&["search", "--space", space.to_str().unwrap(), "--trials", "2", "--sampler", "random"]);
    for s in TINY_SETS {
        args.extend(strings(&["--set", s]));
    }
    args.extend(strings(&["--metric", "eval_accuracy", "--quiet", "--no-plots", "--threads", "1"]));
    args.extend(strings(&["--launcher", "mpirun --allow-run-as-root --oversubscribe -np 2"]));
    args.extend(["--out".into(), study.display().to_string()]);
    let out = attune(&args, &[]);
    assert_ok(&out, "attune search --launcher");
    let rows = std::fs::read_to_string(study.join("trials.jsonl")).unwrap();
    let trials: Vec<serde_json::Value> = rows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(t["state"], "complete", "{t}");
        let run = study.join(t["attrs"]["run_dir"].as_str().unwrap());
        let summary = read_json(&run.join("summary.json"));
        assert_eq!(t["values"][0], summary["eval_accuracy"]);
        // The run was distributed: its training rows carry the collectives' share.
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        assert!(metrics.contains("comm_fraction"), "trial {} did not run distributed", t["number"]);
    }
    // A --command objective names its own launcher.
    let mut bad = strings(&["search", "--space", space.to_str().unwrap(), "--trials", "1", "--command", "true"]);
    bad.extend(strings(&["--launcher", "mpirun -np 2", "--out", &tmp.path().join("bad").display().to_string()]));
    let out = attune(&bad, &[]);
    assert!(!out.status.success() && text(&out).contains("put mpirun in it"), "{}", text(&out));
}

/// On the CUDA emulator the gradients are device buffers staged through the host for MPI:
/// the GPU code path of a distributed run, tested without a GPU. It matches the same run on the
/// CPU device to f32 tolerance.
#[test]
fn the_emulator_device_trains_distributed_like_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |device: &str| {
        let dir = tmp.path().join(device);
        let mut a = strings(&["train", "--task", "mqar", "--steps", "4", "--batch", "8", "--quiet", "--no-plots"]);
        // TINY without its device pair.
        let tiny: Vec<&str> = TINY.chunks(2).filter(|p| p[0] != "--device").flatten().copied().collect();
        a.extend(strings(&tiny));
        a.extend(strings(&["--target-accuracy", "0", "--distributed", "--verify-ranks", "--device", device]));
        a.extend(["--out".into(), dir.display().to_string()]);
        let out = mpirun(&ranks(2, &a), Duration::from_secs(600));
        assert!(out.status.success(), "{device}: {}", text(&out));
        assert_eq!(read_json(&dir.join("summary.json"))["device"], if device == "emu" { "emu" } else { "cpu" });
        dir
    };
    let (cpu, emu) = (run("cpu"), run("emu"));
    let d = relative_distance(&cpu, &emu);
    assert!(d < 1e-4, "emulator and CPU distributed runs differ by {d:e}");
}
