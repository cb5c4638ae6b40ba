//! `attune train --task recsys` (SASRec) on a small RecBole `.inter` file the test writes: the
//! leave-one-out split against the file's timestamps, training windows and their epoch
//! coverage, evaluation rows, sampled negatives, the run with its ranking metrics and plot,
//! and the errors for a user with too few interactions and a corrupt file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use attune_lab::tasks::recsys::{RecsysTask, SAMPLED_NEGATIVES};
use attune_lab::tasks::{Batch, IGNORE_INDEX, RecsysConfig, Split, Task};
use common::run_dir::{assert_ok, attune, eval_report, read_json, short_train};
use serde_json::Value;

/// 12 users (tokens "u0".."u11") and 40 items ("i0".."i39"): user `u` rates `8 + 3 u % 13`
/// items in a scrambled file order, with timestamps that tie in pairs; item tokens first seen
/// in a different order than their names.
fn inter_lines() -> Vec<(String, String, i64)> {
    let mut lines = Vec::new();
    for u in 0..12usize {
        let n = 8 + (3 * u) % 13;
        for k in 0..n {
            let item = (u * 7 + k * 11) % 40;
            lines.push((format!("u{u}"), format!("i{item}"), 1_000 + (k / 2) as i64 * 10));
        }
    }
    // Scramble the file order but keep each user's tied pairs in their written order.
    lines.sort_by_key(|(u, i, t)| (t % 3, u.clone(), *t, i.len()));
    lines
}

fn write_inter(root: &Path, lines: &[(String, String, i64)]) {
    let dir = root.join("ml-100k");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    for (u, i, t) in lines {
        text.push_str(&format!("{u}\t{i}\t3\t{t}\n"));
    }
    std::fs::write(dir.join("ml-100k.inter"), text).unwrap();
}

fn task(root: &Path, max_len: usize) -> RecsysTask {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the tests of this binary that set ATTUNE_DATA in-process hold LOCK.
    unsafe { std::env::set_var("ATTUNE_DATA", root) };
    RecsysTask::new(RecsysConfig { max_len, ..RecsysConfig::default() }, 5).unwrap()
}

/// Each user's item tokens in time order by the file (stable for ties), as the test reads it.
fn expected_sequences(lines: &[(String, String, i64)]) -> BTreeMap<String, Vec<String>> {
    let mut by_user: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for (u, i, t) in lines {
        by_user.entry(u.clone()).or_default().push((*t, i.clone()));
    }
    by_user
        .into_iter()
        .map(|(u, mut v)| {
            v.sort_by_key(|p| p.0);
            (u, v.into_iter().map(|p| p.1).collect())
        })
        .collect()
}

fn seq(b: Batch) -> attune_lab::tasks::SeqBatch {
    match b {
        Batch::Seq(s) => s,
        other => panic!("not a sequence batch: {other:?}"),
    }
}

#[test]
fn leave_one_out_follows_time_and_no_test_item_is_trained_on() {
    let data = tempfile::tempdir().unwrap();
    let lines = inter_lines();
    write_inter(data.path(), &lines);
    let t = task(data.path(), 4);
    let want = expected_sequences(&lines);
    // Users are numbered in first-appearance order; name them by their tokens.
    let users: Vec<String> = {
        let mut seen = Vec::new();
        for (u, _, _) in &lines {
            if !seen.contains(u) {
                seen.push(u.clone());
            }
        }
        seen
    };
    let split = t.split();
    for (u, name) in users.iter().enumerate() {
        let items = &want[name];
        let n = items.len();
        let label = |tok: u32| t.token_label(tok);
        assert_eq!(label(split.test[u]), items[n - 1], "{name}: the test item is the latest");
        assert_eq!(label(split.valid[u]), items[n - 2], "{name}: the valid item is the second latest");
        let train: Vec<String> = split.train[u].iter().map(|&i| label(i)).collect();
        assert_eq!(train, items[..n - 2], "{name}");
    }
    // Windows: an epoch of training batches targets each user's training items after the
    // first exactly once, and the inputs never hold a user's test item unless another user
    // trains on the same item.
    let windows = t.train_size().unwrap();
    let mut targets: Vec<i64> =
        (0..windows as u64).flat_map(|i| seq(t.batch(Split::Train, i, 1).unwrap()).targets).collect();
    targets.retain(|&x| x != IGNORE_INDEX);
    targets.sort_unstable();
    let mut want_targets: Vec<i64> = split.train.iter().flat_map(|s| s[1..].iter().map(|&i| i64::from(i))).collect();
    want_targets.sort_unstable();
    assert_eq!(targets, want_targets);
    let trained: std::collections::HashSet<u32> = split.train.iter().flatten().copied().collect();
    let batch = seq(t.batch(Split::Train, 0, windows).unwrap());
    for tok in batch.inputs.iter().copied().chain(batch.targets.iter().filter(|&&x| x >= 0).map(|&x| x as u32)) {
        assert!(tok == 0 || trained.contains(&tok), "a training batch holds {tok}, in no training sequence");
    }
    for (u, s) in split.train.iter().enumerate() {
        assert!(!s.contains(&split.test[u]), "user {u}'s test item is in its training items");
    }
}

#[test]
fn evaluation_rows_read_the_last_items_before_the_held_out_one() {
    let data = tempfile::tempdir().unwrap();
    write_inter(data.path(), &inter_lines());
    let t = task(data.path(), 4);
    let split = t.split();
    assert_eq!((t.split_size(Split::Valid), t.split_size(Split::Test)), (Some(12), Some(12)));
    for (which, held) in [(Split::Valid, &split.valid), (Split::Test, &split.test)] {
        let b = seq(t.batch(which, 0, 12).unwrap());
        for (u, &held_item) in held.iter().enumerate() {
            let (inputs, targets) = b.row(u).unwrap();
            let mut history = split.train[u].clone();
            if which == Split::Test {
                history.push(split.valid[u]);
            }
            let tail = &history[history.len() - 4..];
            assert_eq!(&inputs[..4], tail, "{which} user {u}");
            assert_eq!(targets.iter().filter(|&&x| x != IGNORE_INDEX).count(), 1);
            assert_eq!(targets[3], i64::from(held_item));
        }
    }
    let e = t.batch(Split::Test, 3, 4).unwrap_err().to_string();
    assert!(e.contains("past the 12 users"), "{e}");
}

#[test]
fn negatives_are_distinct_unseen_items_drawn_per_user() {
    let data = tempfile::tempdir().unwrap();
    write_inter(data.path(), &inter_lines());
    let t = task(data.path(), 4);
    let split = t.split();
    for u in 0..12 {
        let seen: Vec<u32> = split.train[u].iter().copied().chain([split.valid[u], split.test[u]]).collect();
        let neg = t.negatives(Split::Test, u);
        // 40 items: fewer unseen than SAMPLED_NEGATIVES, so every unseen item is a negative.
        const { assert!(SAMPLED_NEGATIVES > 40) };
        let mut unseen: Vec<u32> = (1..=40).filter(|i| !seen.contains(i)).collect();
        let mut sorted = neg.clone();
        sorted.sort_unstable();
        unseen.sort_unstable();
        assert_eq!(sorted, unseen, "user {u}");
    }
    let from_batch = t.sampled_negatives(Split::Test, 1, 5).unwrap();
    assert_eq!(from_batch.len(), 5);
    assert_eq!(from_batch[0], t.negatives(Split::Test, 5));
}

#[test]
fn a_short_sasrec_run_reports_ranking_metrics_and_plots_item_attention() {
    let data = tempfile::tempdir().unwrap();
    write_inter(data.path(), &inter_lines());
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("sasrec");
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    let mut flags = vec!["--task", "recsys", "--dataset", "ml-100k", "--seq-len", "6", "--dropout", "0.2"];
    flags.extend([
        "--d-model",
        "16",
        "--layers",
        "2",
        "--heads",
        "2",
        "--batch",
        "4",
        "--steps",
        "6",
        "--eval-every",
        "3",
    ]);
    assert_ok(&attune(&short_train(&flags, &dir), &env), "recsys run");
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!((summary["task"].as_str(), summary["eval_targets"].as_u64()), (Some("recsys"), Some(12)));
    let m = &summary["eval_metrics"];
    let get = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {summary}"));
    for k in ["hr@10", "ndcg@10", "hr@10_sampled", "ndcg@10_sampled"] {
        assert!((0.0..=1.0).contains(&get(k)), "{k}: {summary}");
    }
    // NDCG@10 weighs each hit by at most 1; HR@1 (the accuracy) is at most HR@10; twelve users.
    assert!(get("ndcg@10") <= get("hr@10") && summary["eval_accuracy"].as_f64().unwrap() <= get("hr@10"));
    assert_eq!((get("hr@10") * 12.0).fract(), 0.0);
    // Every valid row carries the ranking figures early stopping follows.
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let valid: Vec<Value> =
        metrics.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["split"] == "valid").collect();
    assert_eq!(valid.len(), 2);
    assert!(valid.iter().all(|r| r["eval_metrics"]["ndcg@10"].is_number()), "{valid:?}");
    let config = read_json(&dir.join("config.json"));
    assert_eq!(
        (config["model"]["tie_embeddings"].as_bool(), config["model"]["vocab_size"].as_u64()),
        (Some(true), Some(41))
    );
    let weights = attune_nn::checkpoint::load_tensors(&dir.join("model.safetensors")).unwrap();
    assert!(!weights.tensors.contains_key("lm_head.weight"), "the item table scores the items");
    let png = std::fs::read(dir.join("plots/attention.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 1000);
    let report = eval_report(&dir, &env);
    assert_eq!(report["eval_metrics"], summary["eval_metrics"], "{report}");
}

#[test]
fn too_few_interactions_and_corrupt_files_are_clear_errors() {
    let run = tempfile::tempdir().unwrap();
    let args = |out: &str| short_train(&["--task", "recsys", "--steps", "1"], &run.path().join(out));
    let mut lines = inter_lines();
    lines.push(("lonely".into(), "i3".into(), 5));
    let short = tempfile::tempdir().unwrap();
    write_inter(short.path(), &lines);
    let out = attune(&args("short"), &[("ATTUNE_DATA", short.path().display().to_string())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"lonely\" has 1 interaction") && err.contains("at least 3"),
        "{err}"
    );

    let corrupt = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(corrupt.path().join("ml-100k")).unwrap();
    std::fs::write(corrupt.path().join("ml-100k/ml-100k.inter"), "user_id:token\titem_id:token\nu1\ti1\n").unwrap();
    let out = attune(&args("corrupt"), &[("ATTUNE_DATA", corrupt.path().display().to_string())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ml-100k.inter") && err.contains("rating"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let out = attune(&args("missing"), &[("ATTUNE_DATA", empty.path().display().to_string())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cargo xtask data") && err.contains("ml-100k"), "{err}");
}
