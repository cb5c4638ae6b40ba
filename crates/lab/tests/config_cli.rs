//! The run config as the `attune` binary builds it: overlay order (defaults, file, flags),
//! values derived once after every overlay, and what `--resume` refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use attune_lab::config::{RunConfig, SavedConfig};
use attune_lab::flags::TrainFlags;
use attune_lab::runstate::OnDamage;
use attune_lab::tasks::{self, TaskConfig};
use attune_optim::ScheduleConfig;
use common::run_dir::TINY;

mod common;

fn attune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attune")).args(args).output().expect("running attune")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sample_text() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample_sentiment.jsonl")
}

/// Trains a tiny run of `steps` steps into a fresh directory.
fn tiny_run(steps: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let mut args = vec!["train", "--out", out, "--steps", steps, "--eval-every", "2", "--quiet", "--no-plots"];
    args.extend(TINY);
    args.extend(["--batch", "4"]);
    let run = attune(&args);
    assert!(run.status.success(), "tiny run failed: {}", stderr(&run));
    dir
}

#[test]
fn a_flag_beats_the_config_file_which_beats_the_default() {
    let (_keep, run) = tiny_run_with_file();
    let saved = SavedConfig::load(&run, OnDamage::FallBack).unwrap();
    let defaults = RunConfig::default();
    assert_eq!(saved.model_spec.d_model, 16, "--d-model overrides the file's d_model 48");
    assert_eq!(saved.optimizer.lr(), 0.002, "the file's lr stays when no flag sets it");
    assert_eq!(saved.train.seed, 5, "the file's seed stays");
    assert_eq!(saved.train.grad_accum, defaults.train.grad_accum, "neither sets grad_accum: the default");
    assert_eq!(saved.model_spec.positions, defaults.model.positions, "neither sets positions: the default");
    // Derived once, from the final values: d_ff from the flag's d_model, not the file's.
    assert_eq!((saved.model.d_ff, saved.model.n_kv_heads), (64, 2));
    assert_eq!((saved.model_spec.d_ff, saved.model_spec.n_kv_heads), (Some(64), Some(2)), "config.json says it");
}

/// A run whose file sets d_model 48, lr 0.002 and seed 5, and whose flags set d_model 16.
fn tiny_run_with_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "[model]\nd_model = 48\n\n[optimizer]\nname = \"adamw\"\nlr = 0.002\n\n[train]\nseed = 5\n")
        .unwrap();
    let out = dir.path().join("run");
    let mut args = vec!["train", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--steps", "2", "--eval-every", "2", "--quiet", "--no-plots"]);
    args.extend(TINY);
    args.extend(["--batch", "4"]);
    let run = attune(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    (dir, out)
}

#[test]
fn epochs_set_the_steps_before_the_cosine_schedule_takes_its_length() {
    let data = sample_text();
    let flags = TrainFlags {
        task: Some("text".into()),
        data: Some(data.clone()),
        epochs: Some(5.0),
        batch: Some(16),
        schedule: Some("cosine".into()),
        ..Default::default()
    };
    let mut cfg = RunConfig::default();
    cfg.train.steps = 3; // a file's steps, replaced by --epochs
    flags.overlay(&mut cfg).unwrap();
    let cfg = cfg.resolve().unwrap();
    let n = tasks::build(&cfg.task, 0).unwrap().train_size().unwrap();
    let steps = (5 * n).div_ceil(16) as u64;
    assert!(steps > 3, "the sample file has {n} training examples");
    assert_eq!(cfg.train.steps, steps);
    let ScheduleConfig::Cosine { total_steps, .. } = cfg.schedule else { panic!("{:?}", cfg.schedule) };
    assert_eq!(total_steps, steps, "the cosine decays over the run's final length");
    let base = cfg.optimizer.lr();
    assert!(cfg.schedule.lr_at(steps - 1, base) > 0.0 && cfg.schedule.lr_at(steps, base) == 0.0);

    // The same through the binary: the schedule in config.json spans the run.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "train",
        "--task",
        "text",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "0.5",
        "--batch",
        "16",
        "--schedule",
        "cosine",
        "--seq-len",
        "32",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--eval-every",
        "100",
        "--eval-batches",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        "--no-plots",
        "--out",
        dir.path().to_str().unwrap(),
    ];
    let run = attune(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let saved = SavedConfig::load(dir.path(), OnDamage::FallBack).unwrap();
    assert_eq!(saved.train.steps, n.div_ceil(32) as u64, "half an epoch of batch 16");
    assert!(matches!(saved.schedule, ScheduleConfig::Cosine { total_steps, .. } if total_steps == saved.train.steps));
}

#[test]
fn resume_refuses_each_change_to_the_run_and_names_old_and_new_values() {
    let dir = tiny_run("2");
    let d = dir.path().to_str().unwrap();
    for (flag, value, says) in [
        ("--seed", "1", "train.seed: 0 -> 1"),
        ("--batch", "8", "train.batch_size: 4 -> 8"),
        ("--dropout", "0.1", "model.dropout: 0.0 -> 0.1"),
        ("--d-model", "32", "model.d_model: 16 -> 32"),
        ("--lr", "0.5", "optimizer.lr: 0.001 -> 0.5"),
    ] {
        let out = attune(&["train", "--resume", d, flag, value, "--quiet", "--no-plots"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{flag} {value} was accepted on resume");
        assert!(err.contains(says), "{flag}: {err}");
        assert!(err.contains("train.steps") && err.contains("device"), "the error names what may change: {err}");
    }
    // Every refused setting is listed, not just the first.
    let out = attune(&["train", "--resume", d, "--seed", "1", "--heads", "4", "--quiet"]);
    let err = stderr(&out);
    assert!(err.contains("train.seed: 0 -> 1") && err.contains("model.n_heads: 2 -> 4"), "{err}");
    // Refused before anything is written.
    assert_eq!(SavedConfig::load(dir.path(), OnDamage::FallBack).unwrap().train.seed, 0);
}

#[test]
fn resume_accepts_what_it_names_and_records_it() {
    let dir = tiny_run("2");
    let d = dir.path().to_str().unwrap();
    let args = [
        "train",
        "--resume",
        d,
        "--steps",
        "4",
        "--max-time",
        "600",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--checkpoint-every",
        "1",
        "--target-accuracy",
        "0",
        "--on-nonfinite",
        "skip",
        "--quiet",
        "--no-plots",
    ];
    let out = attune(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = SavedConfig::load(dir.path(), OnDamage::FallBack).unwrap();
    assert_eq!((saved.train.steps, saved.train.max_time_s, saved.train.target_accuracy), (4, Some(600.0), None));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 4);
    // --out and --config describe a new run; with --resume they are usage errors.
    let out = attune(&["train", "--resume", d, "--out", d]);
    assert!(!out.status.success() && stderr(&out).contains("--out"), "{}", stderr(&out));
}

#[test]
fn flags_that_do_not_apply_to_the_task_are_errors_not_ignored() {
    let mut cfg = RunConfig { task: TaskConfig::SelectiveCopying(Default::default()), ..Default::default() };
    let flags = TrainFlags { seq_len: Some(64), ..Default::default() };
    let err = format!("{:#}", flags.overlay(&mut cfg).unwrap_err());
    assert!(err.contains("--seq-len") && err.contains("task.seq_len") && err.contains("region_len"), "{err}");
    let flags = TrainFlags { schedule: Some("constant".into()), warmup: Some(10), ..Default::default() };
    let err = format!("{:#}", flags.overlay(&mut RunConfig::default()).unwrap_err());
    assert!(err.contains("--warmup") && err.contains("schedule.warmup_steps"), "{err}");
    let flags = TrainFlags { on_nonfinite: Some("ignore".into()), ..Default::default() };
    let err = format!("{:#}", flags.overlay(&mut RunConfig::default()).unwrap_err());
    assert!(err.contains("--on-nonfinite") && err.contains("skip"), "{err}");
}

#[test]
fn precision_is_part_of_the_run_and_refused_on_resume() {
    let mut cfg = RunConfig::default();
    TrainFlags { precision: Some("BF16".into()), ..Default::default() }.overlay(&mut cfg).unwrap();
    assert_eq!(cfg.train.precision, attune_lab::config::Precision::Bf16);
    let flags = TrainFlags { precision: Some("fp8".into()), ..Default::default() };
    let err = format!("{:#}", flags.overlay(&mut RunConfig::default()).unwrap_err());
    assert!(err.contains("--precision") && err.contains("bf16"), "{err}");
    // A resumed run keeps the precision its checkpoints were trained in.
    let dir = tiny_run("2");
    let d = dir.path().to_str().unwrap();
    let out = attune(&["train", "--resume", d, "--precision", "bf16", "--quiet"]);
    assert!(!out.status.success() && stderr(&out).contains("train.precision: \"f32\" -> \"bf16\""), "{}", stderr(&out));
}

#[test]
fn label_smoothing_is_a_training_setting_below_one() {
    let mut cfg = RunConfig::default();
    TrainFlags { label_smoothing: Some(0.1), ..Default::default() }.overlay(&mut cfg).unwrap();
    assert_eq!(cfg.train.label_smoothing, 0.1);
    for bad in [1.0, -0.1] {
        let mut cfg = RunConfig::default();
        TrainFlags { label_smoothing: Some(bad), ..Default::default() }.overlay(&mut cfg).unwrap();
        let err = format!("{:#}", cfg.resolve().unwrap_err());
        assert!(err.contains("label_smoothing") && err.contains("[0, 1)"), "{bad}: {err}");
    }
    // Hard pooling's reward is the unsmoothed answer: smoothing its classifier is refused, not
    // ignored (the RAM takes the same path in attune_lab::batch::forward).
    let out = tempfile::tempdir().unwrap();
    let (o, data) = (out.path().join("hard"), sample_text());
    let mut args: Vec<&str> =
        "train --task text --pooling hard --steps 1 --label-smoothing 0.1 --quiet --no-plots --data"
            .split(' ')
            .collect();
    args.extend([data.to_str().unwrap(), "--out", o.to_str().unwrap()]);
    let run = attune(&args);
    assert!(!run.status.success() && stderr(&run).contains("hybrid loss"), "{}", stderr(&run));
}
