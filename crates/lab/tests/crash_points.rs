//! Every file-system step of a training run and of its resume, crashed at and recovered from
//! (docs/persistence.md). Built only with `--features failpoints` (`.ci/run` runs it):
//! `cargo test -p attune-lab --features failpoints --test crash_points -- --nocapture`.
//!
//! For each step K of a 12-step run with 6 checkpoints (and of a resume of it), the process is
//! aborted on entering step K, then the run is resumed (or, where nothing was committed yet,
//! started over) and its metrics, summary and final weights are compared with an uninterrupted
//! run's, bit for bit. The same for ENOSPC and EIO injected at each write and fsync.
#![cfg(feature = "failpoints")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::run_dir::{Outcome, assert_ok, attune, copy_tree, outcome, recover, resume_args, run_args, temporaries};

const STEPS: u64 = 12;

/// The steps a command takes: `(kind, path)` per line of the fault trace.
fn trace(args: &[String], scratch: &Path) -> Vec<(String, String)> {
    let file = scratch.join("trace.txt");
    let _ = std::fs::remove_file(&file);
    let out = attune(args, &[("ATTUNE_FAULT_TRACE", file.display().to_string())]);
    assert_ok(&out, "the traced run");
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let _n = parts.next();
            (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string())
        })
        .collect()
}

fn reference(scratch: &Path) -> Outcome {
    let dir = scratch.join("reference");
    assert_ok(&attune(&run_args(&dir, STEPS), &[]), "the uninterrupted run");
    outcome(&dir)
}

/// Recovers `dir` and checks it against the reference; returns a failure description.
fn recovered_exactly(dir: &Path, reference: &Outcome) -> Result<(), String> {
    let out = recover(dir, STEPS);
    if !out.status.success() {
        return Err(format!("recovery failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let got = outcome(dir);
    if got != *reference {
        return Err(format!("recovered run differs from the uninterrupted one: {}", got.diff(reference)));
    }
    let temps = temporaries(dir);
    if !temps.is_empty() {
        return Err(format!("temporaries left: {temps:?}"));
    }
    Ok(())
}

/// The abort signal `ATTUNE_FAULT_CRASH_AT` ends the process with.
const SIGABRT: i32 = 6;

/// One fault per selected step of `steps`: a fresh directory from `prepare`, the binary run with
/// the fault's environment, `check` on how it ended, then recovery compared with the reference.
/// Returns (recovered exactly, faults injected, failures).
#[allow(clippy::too_many_arguments)]
fn inject_each(
    name: &str,
    fault: &str,
    steps: &[(String, String)],
    select: &dyn Fn(&str) -> bool,
    env: &dyn Fn(usize) -> Vec<(&'static str, String)>,
    check: &dyn Fn(&std::process::Output, &str) -> Result<(), String>,
    reference: &Outcome,
    prepare: &dyn Fn(&Path) -> Vec<String>,
    scratch: &Path,
) -> (usize, usize, Vec<String>) {
    let (mut failures, mut total) = (Vec::new(), 0);
    for (k, (kind, path)) in steps.iter().enumerate().map(|(i, s)| (i + 1, s)) {
        if !select(kind) {
            continue;
        }
        total += 1;
        let dir = scratch.join(format!("{name}-{fault}-{k}"));
        let out = attune(&prepare(&dir), &env(k));
        let label = format!("{name} {fault} at step {k} ({kind} {path})");
        if let Err(e) = check(&out, path).and_then(|()| recovered_exactly(&dir, reference)) {
            failures.push(format!("{label}: {e}"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    (total - failures.len(), total, failures)
}

/// Aborts the process on entering each step of `steps`; each must recover exactly.
fn crash_every_step(
    name: &str,
    steps: &[(String, String)],
    reference: &Outcome,
    prepare: &dyn Fn(&Path) -> Vec<String>,
    scratch: &Path,
) -> (usize, usize, Vec<String>) {
    let check = |out: &std::process::Output, _: &str| match out.status.signal() {
        Some(SIGABRT) => Ok(()),
        _ => Err(format!("the process was not aborted ({})", out.status)),
    };
    let env = |k: usize| vec![("ATTUNE_FAULT_CRASH_AT", k.to_string())];
    inject_each(name, "crash", steps, &|_| true, &env, &check, reference, prepare, scratch)
}

/// The file a step's path stands for, as an error message names it: a temporary's name ends
/// with the file it replaces; an event file's name holds the second it was created, which
/// differs between runs.
fn named_file(path: &str) -> String {
    let file = Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let file = file.rsplit_once(attune_persist::TEMP_MARKER).map_or(file.as_str(), |(_, rest)| rest);
    let file = file.split_once('.').filter(|_| file.starts_with(|c: char| c.is_ascii_digit())).map_or(file, |(_, f)| f);
    if file.starts_with("events.out.tfevents.") { "events.out.tfevents." } else { file }.to_string()
}

/// Injects `errno` at every write and fsync of `steps`; each must fail with a clear error and
/// recover exactly afterwards.
fn fail_every_write(
    name: &str,
    errno: &str,
    steps: &[(String, String)],
    reference: &Outcome,
    prepare: &dyn Fn(&Path) -> Vec<String>,
    scratch: &Path,
) -> (usize, usize, Vec<String>) {
    let expected = if errno == "eio" { "Input/output error" } else { "No space left on device" };
    let check = |out: &std::process::Output, path: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let file = named_file(path);
        if out.status.success() || out.status.signal().is_some() {
            Err(format!("expected a clean error exit, got {}", out.status))
        } else if !stderr.contains(expected) || !stderr.contains(&file) {
            Err(format!("the error does not name the fault and the file {file:?}: {stderr}"))
        } else {
            Ok(())
        }
    };
    let env = |k: usize| vec![("ATTUNE_FAULT_FAIL_AT", k.to_string()), ("ATTUNE_FAULT_ERRNO", errno.to_string())];
    let writes = |kind: &str| matches!(kind, "write" | "fsync" | "append");
    inject_each(name, errno, steps, &writes, &env, &check, reference, prepare, scratch)
}

#[test]
fn every_crash_point_and_write_fault_of_a_run_and_its_resume_recovers_exactly() {
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let reference = reference(scratch);

    // Scenario 1: a new run, interrupted at step 6 (as Ctrl-C would) — every step until then.
    let fresh = |dir: &Path| {
        let mut a = run_args(dir, STEPS);
        a.extend(["--interrupt-after".into(), "6".into()]);
        a
    };
    let fresh_steps = trace(&fresh(&scratch.join("trace-fresh")), scratch);
    // Scenario 2: the resume of that run to the end (prepared once, copied per crash point).
    let prepared = scratch.join("prepared");
    assert_ok(&attune(&fresh(&prepared), &[]), "preparing the interrupted run");
    let resume = |dir: &Path| {
        copy_tree(&prepared, dir);
        resume_args(dir)
    };
    let resume_steps = trace(&resume(&scratch.join("trace-resume")), scratch);
    let checkpoints =
        fresh_steps.iter().chain(&resume_steps).filter(|(k, p)| k == "rename" && p.contains("step-")).count();
    assert!(checkpoints >= 6, "the scenarios commit {checkpoints} checkpoints; the test needs at least 6");

    let mut all_failures = Vec::new();
    let mut report = |what: &str, (ok, total, failures): (usize, usize, Vec<String>)| {
        println!("{what}: {ok}/{total} recovered exactly");
        all_failures.extend(failures);
        (ok, total)
    };
    let a = report("crash points of a new run", crash_every_step("fresh", &fresh_steps, &reference, &fresh, scratch));
    let b = report("crash points of a resume", crash_every_step("resume", &resume_steps, &reference, &resume, scratch));
    println!("{}/{} crash points recovered exactly", a.0 + b.0, a.1 + b.1);
    for errno in ["enospc", "eio"] {
        let c = report(
            &format!("{errno} at each write of a new run"),
            fail_every_write("fresh", errno, &fresh_steps, &reference, &fresh, scratch),
        );
        let d = report(
            &format!("{errno} at each write of a resume"),
            fail_every_write("resume", errno, &resume_steps, &reference, &resume, scratch),
        );
        println!("{}/{} {errno} faults gave a clear error and recovered exactly", c.0 + d.0, c.1 + d.1);
    }
    assert!(all_failures.is_empty(), "{} failures:\n{}", all_failures.len(), all_failures.join("\n"));
}
