//! `attune train` with `--folds k` and no `--fold`: one run per fold, the cross-validation
//! summary and the fold listing peers read, finished folds read back, an interrupted fold
//! named with the command that continues it; and word dropout on training texts only.

mod common;

use std::path::Path;

use attune_lab::tasks::{Split, TaskConfig, TextConfig, TextTokens, build};
use common::run_dir::{assert_ok, attune, read_json, short_train};

/// 24 texts of 3 classes, interleaved, each naming its class twice among filler words.
fn write_texts(path: &Path) {
    let names = ["sport", "money", "film"];
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let c = names[i % 3];
            format!("{{\"text\": \"the {c} story {i} about {c} today\", \"label\": \"{c}\"}}")
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let data = data.display().to_string();
    let mut flags = vec!["--task", "text", "--data", &data, "--tokens", "words", "--folds", "3", "--no-plots"];
    flags.extend([
        "--d-model",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--batch",
        "4",
        "--steps",
        "4",
        "--eval-every",
        "2",
    ]);
    flags.extend(extra);
    short_train(&flags, out)
}

#[test]
fn every_fold_is_trained_and_summarised_and_the_listing_names_the_folds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("texts.jsonl");
    write_texts(&data);
    let out = tmp.path().join("cv");
    let run = attune(&args(&data, &out, &[]), &[]);
    assert_ok(&run, "cross-validation");
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["folds"], 3);
    let per_fold = s["per_fold"].as_array().unwrap();
    assert_eq!(per_fold.len(), 3);
    // 8 texts per class, text j of a class in fold j % 3: folds of 3 + 3 + 2 per class, so
    // 9, 9 and 6 texts; all 24 tested once.
    let sizes: Vec<u64> = per_fold.iter().map(|f| f["eval_targets"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [9, 9, 6], "{s}");
    assert!(per_fold.iter().all(|f| f["eval_split"] == "test"), "{s}");
    assert_eq!(s["eval_targets"], 24);
    let accs: Vec<f64> = per_fold.iter().map(|f| f["eval_accuracy"].as_f64().unwrap()).collect();
    let mean = accs.iter().sum::<f64>() / 3.0;
    assert!((s["eval_accuracy"].as_f64().unwrap() - mean).abs() < 1e-12);
    let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!((s["eval_metrics"]["accuracy_std"].as_f64().unwrap() - sd).abs() < 1e-12);
    assert_eq!(s["eval_metrics"]["accuracy_fold2"], per_fold[2]["eval_accuracy"]);
    // The whole reads as any run's summary (what attune search scores).
    let whole: attune_lab::train::Summary = serde_json::from_value(s.clone()).unwrap();
    assert_eq!((whole.eval_split.as_str(), whole.eval_targets), ("test", 24));
    for i in 0..3 {
        let cfg = read_json(&out.join(format!("fold-{i}/config.json")));
        assert_eq!(cfg["task"]["fold"], i, "fold-{i} tests fold {i}");
    }
    let listing = read_json(&out.join("folds.json"));
    let texts = listing["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 24);
    // Line 4 is the second "sport" text: fold 1 (within a class, text j goes to fold j % 3).
    assert_eq!(texts[3], serde_json::json!({"text": "line 4", "label": "sport", "fold": 1}));
    assert_eq!(texts.iter().filter(|t| t["fold"] == 2).count(), 6);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("3-fold cross-validation: test accuracy"), "{stdout}");

    // Run again: the finished folds are read back, and the summary is the same.
    let again = attune(&args(&data, &out, &[]), &[]);
    assert_ok(&again, "cross-validation read back");
    assert_eq!(read_json(&out.join("summary.json")), s);
}

#[test]
fn an_interrupted_fold_is_named_with_the_command_that_continues_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("texts.jsonl");
    write_texts(&data);
    let out = tmp.path().join("cv");
    assert_ok(&attune(&args(&data, &out, &["--interrupt-after", "2"]), &[]), "interrupted fold 0");
    assert!(!out.join("summary.json").exists());
    let again = attune(&args(&data, &out, &[]), &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("--resume") && err.contains("fold-0"), "{err}");
    assert_ok(&attune(&common::run_dir::resume_args(&out.join("fold-0")), &[]), "resume fold 0");
    assert_ok(&attune(&args(&data, &out, &[]), &[]), "the other folds");
    assert_eq!(read_json(&out.join("summary.json"))["per_fold"].as_array().unwrap().len(), 3);
}

#[test]
fn token_dropout_thins_training_texts_only_and_is_keyed_by_position() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("texts.jsonl");
    write_texts(&data);
    let task = |p: f64| {
        let mut c = TextConfig::new(&data);
        (c.tokens, c.token_dropout, c.folds, c.fold) = (TextTokens::Words, p, Some(3), Some(0));
        build(&TaskConfig::TextClassification(c), 1).unwrap()
    };
    let (whole, thin) = (task(0.0), task(0.5));
    let count = |t: &dyn attune_lab::tasks::Task, split: Split, n: usize| -> usize {
        t.batch(split, 0, n).unwrap().as_class().unwrap().lengths.iter().sum()
    };
    let (a, b) = (count(whole.as_ref(), Split::Train, 12), count(thin.as_ref(), Split::Train, 12));
    // 12 texts of 6 words: about half stay, and every text keeps at least one.
    assert!(b < a && b >= 12 && (b as f64) > 0.25 * a as f64, "{b} of {a} tokens kept");
    assert_eq!(count(whole.as_ref(), Split::Test, 8), count(thin.as_ref(), Split::Test, 8));
    assert_eq!(thin.batch(Split::Train, 3, 4).unwrap(), thin.batch(Split::Train, 3, 4).unwrap());
    let mut bad = TextConfig::new(&data);
    bad.token_dropout = 1.0;
    let e = build(&TaskConfig::TextClassification(bad), 0).err().unwrap().to_string();
    assert!(e.contains("token_dropout 1 must be in [0, 1)"), "{e}");
}

/// `--valid-fraction 0`: every training text trains, nothing is evaluated before the test
/// split, and what follows a valid split (a target accuracy here) is refused up front.
#[test]
fn without_a_valid_split_every_training_text_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("texts.jsonl");
    write_texts(&data);
    let mut c = TextConfig::new(&data);
    (c.tokens, c.valid_fraction, c.folds, c.fold) = (TextTokens::Words, 0.0, Some(3), Some(0));
    let task = build(&TaskConfig::TextClassification(c), 1).unwrap();
    // Fold 0 tests 9 of the 24 texts; the other 15 all train.
    let sizes = (task.train_size(), task.split_size(Split::Valid), task.split_size(Split::Test));
    assert_eq!(sizes, (Some(15), Some(0), Some(9)));

    let out = tmp.path().join("all");
    let run = attune(&args(&data, &out, &["--fold", "0", "--valid-fraction", "0"]), &[]);
    assert_ok(&run, "a run without a valid split");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!((summary["eval_split"].as_str(), summary["eval_targets"].as_u64()), (Some("test"), Some(9)));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!metrics.contains("\"valid\""), "no valid rows: {metrics}");

    let (data, dir) = (data.display().to_string(), tmp.path().join("refused").display().to_string());
    #[rustfmt::skip]
    let with_target = [
        "train", "--task", "text", "--data", &data, "--tokens", "words", "--folds", "3", "--fold", "0",
        "--valid-fraction", "0", "--target-accuracy", "0.9", "--steps", "4", "--threads", "1", "--out", &dir,
    ]
    .map(String::from);
    let refused = attune(&with_target, &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("no valid split") && err.contains("target accuracy"), "{err}");
}
