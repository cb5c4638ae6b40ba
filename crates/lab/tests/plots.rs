//! The plots a run leaves: a classifier gets `pooling.png` beside the attention maps, and a
//! sequence task run in the same directory afterwards removes it (it would describe the
//! other model).
#![allow(clippy::field_reassign_with_default)] // configs read best as defaults plus the fields a test changes

use std::path::Path;

use attune_lab::config::RunConfig;
use attune_lab::tasks::{MqarConfig, TaskConfig, TextConfig};
use attune_lab::train::{Ending, LoopOptions, train};

fn tiny(task: TaskConfig) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.task = task;
    cfg.model.d_model = 16;
    cfg.model.n_layers = 1;
    cfg.model.n_heads = 2;
    cfg.train.steps = 2;
    cfg.train.batch_size = 8;
    cfg.train.eval_every = 2;
    cfg.train.eval_batches = 1;
    cfg.train.target_accuracy = None;
    cfg.device = "cpu".into();
    cfg
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n") && &b[12..16] == b"IHDR", "{} is not a PNG", path.display());
    let be = |r: std::ops::Range<usize>| u32::from_be_bytes(b[r].try_into().unwrap());
    (be(16..20), be(20..24))
}

#[test]
fn a_classifier_run_plots_its_pooling_and_a_later_sequence_run_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample_sentiment.jsonl");
    let mut text = TextConfig::new(data);
    text.max_len = 32;
    let opts = LoopOptions { quiet: true, ..Default::default() };
    let Ending::Done(_) =
        train(tiny(TaskConfig::TextClassification(text)).resolve().unwrap(), dir.path(), &opts).unwrap()
    else {
        panic!("interrupted")
    };
    for p in ["loss.png", "accuracy.png", "attention.png", "pooling.png"] {
        let (w, h) = png_size(&plots.join(p));
        assert!(w >= 300 && h >= 300, "{p} is {w}x{h}");
    }
    let mqar = MqarConfig { vocab_size: 64, seq_len: 32, num_kv_pairs: 4, power_a: 0.01 };
    let again = LoopOptions { overwrite: true, ..opts };
    let Ending::Done(_) = train(tiny(TaskConfig::Mqar(mqar)).resolve().unwrap(), dir.path(), &again).unwrap() else {
        panic!("interrupted")
    };
    png_size(&plots.join("attention.png"));
    assert!(!plots.join("pooling.png").exists(), "a stale pooling.png survived the MQAR run");
}

#[test]
fn a_machine_without_fonts_still_gets_every_plot() {
    // A bare GPU image has no fonts; ATTUNE_FONT=none makes this machine look like one.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["train", "--d-model", "16", "--layers", "1", "--steps", "2", "--eval-every", "2", "--batch", "8"])
        .args(["--device", "cpu", "--quiet", "--out"])
        .arg(&run)
        .env("ATTUNE_FONT", "none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("warning"), "{stderr}");
    for png in ["loss.png", "accuracy.png", "attention.png"] {
        let (w, h) = png_size(&run.join("plots").join(png));
        assert!(w > 100 && h > 100, "{png}: {w}x{h}");
    }
}
