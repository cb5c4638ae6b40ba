//! A run that diverges (`--lr 1e9`) ends with an error naming the step and the cause, keeps
//! metrics.jsonl valid and its last good checkpoint; `--on-nonfinite skip` finishes and counts.

use std::path::Path;
use std::process::{Command, Output};

use attune_lab::metrics;
use common::run_dir::TINY;

mod common;

fn diverging_run(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--lr", "1e9", "--steps", "30", "--eval-every", "10", "--batch", "4", "--quiet"];
    args.extend(TINY);
    args.extend(["--out", dir.to_str().unwrap()]);
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_attune")).args(&args).output().expect("running attune")
}

/// Every line of metrics.jsonl is a JSON object whose numbers are finite.
fn assert_valid_metrics(dir: &Path) {
    let path = dir.join("metrics.jsonl");
    let rows = metrics::read(&path).unwrap();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.is_object(), "{line}");
        assert!(!line.contains("null,") || !line.contains("\"loss\":null"), "a loss written as null: {line}");
    }
    for r in rows.iter().filter(|r| r.split == "train") {
        assert!(r.loss.is_finite() && r.grad_norm.is_some_and(f64::is_finite), "a non-finite step was logged: {r:?}");
    }
}

#[test]
fn a_diverging_run_stops_with_the_step_and_the_cause_and_keeps_valid_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = diverging_run(dir.path(), &["--checkpoint-every", "1", "--no-plots"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lr 1e9 trained to the end: {err}");
    let step: u64 = err
        .split("diverged at step ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {err}"));
    assert!(err.contains("learning rate") && err.contains("--clip") && err.contains("--on-nonfinite skip"), "{err}");
    assert!(!err.contains("not a metrics row"), "{err}");
    assert_valid_metrics(dir.path());
    // The newest checkpoint is the step before the bad one: the bad step was not saved.
    let newest = attune_lab::rundir::checkpoints(dir.path()).unwrap().pop().expect("a checkpoint");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], step - 1, "{err}");
    assert!(err.contains(&format!("checkpoint (step {})", step - 1)), "{err}");
    let model = attune_nn::checkpoint::load_tensors(&dir.path().join("model.safetensors")).unwrap();
    assert_eq!(model.metadata.get("step").map(String::as_str), Some((step - 1).to_string().as_str()));
    assert!(!dir.path().join("summary.json").exists(), "a diverged run has no summary");
}

#[test]
fn without_clipping_the_error_says_to_clip() {
    let dir = tempfile::tempdir().unwrap();
    let out = diverging_run(dir.path(), &["--clip", "0", "--no-plots"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not clipped") && err.contains("--clip 1.0"), "{err}");
    assert!(err.contains("no checkpoint was written"), "{err}");
    assert_valid_metrics(dir.path());
}

#[test]
fn skip_mode_finishes_and_counts_the_skipped_steps() {
    let dir = tempfile::tempdir().unwrap();
    let out = diverging_run(dir.path(), &["--on-nonfinite", "skip"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    let skipped = summary["skipped_steps"].as_u64().unwrap();
    assert_eq!(summary["steps"], 30);
    assert!(skipped > 0 && skipped < 30, "skipped {skipped}: at least the first step is finite");
    assert!(stdout.contains(&format!("{skipped} steps skipped")), "{stdout}");
    assert_valid_metrics(dir.path());
    // Skipped steps drop the update but not the step: train rows still reach step 30's window.
    let rows = metrics::read(&dir.path().join("metrics.jsonl")).unwrap();
    assert!(rows.iter().any(|r| r.split == "valid" && r.step == 30), "{rows:?}");
}
