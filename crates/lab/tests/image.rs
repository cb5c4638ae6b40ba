//! `attune train --task image` (the Vision Transformer) end to end on a tiny digits cache the
//! test writes: the splits, the run directory with the rollout plot, `attune eval`, exact
//! resume, augmentation, and the errors for a missing cache, a corrupt file and bad settings.

mod common;

use std::path::Path;

use attune_lab::tasks::{Batch, ImageDataset, ImageTaskConfig, Split, Task, TaskConfig};
use common::run_dir::{assert_ok, attune, eval_report, outcome, read_json, resume_args, short_train};

/// Writes `root/digits/digits.csv.gz` (uncompressed) with 60 8x8 images, six per class: a bar
/// whose row and length are the digit's (so a model can learn them), values 0 to 16, and the
/// bottom-right pixel numbering the image within its class, so no two images are equal.
fn fake_digits(root: &Path) {
    let dir = root.join("digits");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::new();
    for k in 0..60usize {
        let d = k % 10;
        let row: Vec<String> = (0..64usize)
            .map(|p| {
                let (r, c) = (p / 8, p % 8);
                let v = if p == 63 {
                    k / 10 + 1
                } else if r == d % 8 && c < if d < 8 { 7 } else { 4 } {
                    16
                } else {
                    0
                };
                v.to_string()
            })
            .chain([d.to_string()])
            .collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    // The loader tells gzip from plain text by its magic bytes; plain text is enough here.
    std::fs::write(dir.join("digits.csv.gz"), csv).unwrap();
}

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--task",
        "image",
        "--d-model",
        "16",
        "--layers",
        "2",
        "--heads",
        "2",
        "--batch",
        "8",
        "--steps",
        "8",
        "--eval-every",
        "4",
        "--checkpoint-every",
        "2",
    ];
    // The digits in 4x4 patches with a class token, unless the test picks otherwise.
    for (flag, value) in [("--dataset", "digits"), ("--patch", "4"), ("--pooling", "cls")] {
        if !extra.contains(&flag) {
            flags.extend([flag, value]);
        }
    }
    flags.extend(extra);
    short_train(&flags, out)
}

fn with_data<T>(root: &Path, f: impl FnOnce() -> T) -> T {
    // SAFETY: this test binary's tests that read ATTUNE_DATA in-process run only here, one at
    // a time under this lock.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    unsafe { std::env::set_var("ATTUNE_DATA", root) };
    f()
}

fn image_task(root: &Path, cfg: ImageTaskConfig) -> Box<dyn Task> {
    with_data(root, || attune_lab::tasks::build(&TaskConfig::Image(cfg), 3).unwrap())
}

fn images(b: Batch) -> (Vec<f32>, Vec<i64>) {
    match b {
        Batch::Image(b) => (b.pixels, b.labels),
        other => panic!("not an image batch: {other:?}"),
    }
}

#[test]
fn digits_splits_are_disjoint_and_every_image_is_seen_once_an_epoch() {
    let data = tempfile::tempdir().unwrap();
    fake_digits(data.path());
    let digits = ImageTaskConfig { dataset: ImageDataset::Digits, ..ImageTaskConfig::default() };
    let task = image_task(data.path(), digits.clone());
    // 60 images: every fifth (12) is test; of the 48 left every tenth (4) is valid; 44 train.
    assert_eq!(
        (task.split_size(Split::Valid), task.split_size(Split::Test), task.train_size()),
        (Some(4), Some(12), Some(44))
    );
    assert_eq!(task.image_shape(), Some((8, 8)));
    // The varying pixel and the bar identify an image: collect each split's images.
    let set = |split: Split, n: usize| -> Vec<Vec<u32>> {
        let (px, _) = images(task.batch(split, 0, n).unwrap());
        px.chunks(64).map(|c| c.iter().map(|v| (v * 16.0).round() as u32).collect()).collect()
    };
    let (valid, test) = (set(Split::Valid, 4), set(Split::Test, 12));
    let epoch: Vec<Vec<u32>> = (0..11u64)
        .flat_map(|i| {
            let (px, _) = images(task.batch(Split::Train, i, 4).unwrap());
            px.chunks(64).map(|c| c.iter().map(|v| (v * 16.0).round() as u32).collect::<Vec<_>>()).collect::<Vec<_>>()
        })
        .collect();
    let mut sorted = epoch.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 44, "one epoch shows each training image once");
    for img in valid.iter().chain(&test) {
        assert!(!sorted.contains(img), "a held-out image is in the training split");
    }
    // Batches are a pure function of their index; another seed orders the epoch differently.
    assert_eq!(task.batch(Split::Train, 5, 4).unwrap(), task.batch(Split::Train, 5, 4).unwrap());
    let other = with_data(data.path(), || attune_lab::tasks::build(&TaskConfig::Image(digits), 4).unwrap());
    assert_ne!(other.batch(Split::Train, 0, 8).unwrap(), task.batch(Split::Train, 0, 8).unwrap());
    let e = task.batch(Split::Test, 3, 4).unwrap_err().to_string();
    assert!(e.contains("past its 12 images"), "{e}");
}

#[test]
fn augmentation_shifts_and_mirrors_training_images_only() {
    let data = tempfile::tempdir().unwrap();
    fake_digits(data.path());
    let plain = image_task(data.path(), ImageTaskConfig { dataset: ImageDataset::Digits, ..Default::default() });
    let aug = image_task(data.path(), ImageTaskConfig { dataset: ImageDataset::Digits, shift: 2, flip: true });
    let (p, lp) = images(plain.batch(Split::Train, 0, 16).unwrap());
    let (a, la) = images(aug.batch(Split::Train, 0, 16).unwrap());
    assert_eq!(lp, la, "augmentation keeps the order and the labels");
    assert_ne!(p, a);
    let ink = |v: &[f32]| v.iter().sum::<f32>();
    for (x, y) in p.chunks(64).zip(a.chunks(64)) {
        // A shift may push ink off the 8x8 canvas but never adds any.
        assert!(ink(y) <= ink(x) + 1e-5);
    }
    assert_eq!(plain.batch(Split::Test, 0, 12).unwrap(), aug.batch(Split::Test, 0, 12).unwrap());
    let e = attune_lab::tasks::build(
        &TaskConfig::Image(ImageTaskConfig { dataset: ImageDataset::Digits, shift: 8, flip: false }),
        0,
    );
    let e = with_data(data.path(), || e.err().map(|e| e.to_string()));
    assert!(e.is_some_and(|e| e.contains("shift 8")));
}

#[test]
fn a_short_vit_run_writes_its_run_directory_rollout_plot_and_evaluates() {
    let data = tempfile::tempdir().unwrap();
    fake_digits(data.path());
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("vit");
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    assert_ok(&attune(&args(&dir, &[]), &env), "image run");
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!((summary["task"].as_str(), summary["eval_split"].as_str()), (Some("image"), Some("test")));
    assert_eq!(summary["eval_targets"], 12);
    let config = read_json(&dir.join("config.json"));
    let model = &config["model"];
    assert_eq!(model["patches"], serde_json::json!({"rows": 8, "cols": 8, "size": 4, "stride": 4}));
    assert_eq!((model["max_seq_len"].as_u64(), model["pooling"].as_str()), (Some(4), Some("cls")));
    let weights = attune_nn::checkpoint::load_tensors(&dir.join("model.safetensors")).unwrap();
    assert_eq!(weights.tensors["patch_embed.weight"].dims(), &[16, 16]);
    assert_eq!(weights.tensors["pos.weight"].dims(), &[5, 16]);
    let png = std::fs::read(dir.join("plots/attention.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 1000);
    assert!(!dir.join("plots/pooling.png").exists());
    let report = eval_report(&dir, &env);
    assert_eq!(report["accuracy"], summary["eval_accuracy"], "{report}");
}

#[test]
fn an_interrupted_vit_run_resumes_to_the_uninterrupted_one() {
    let data = tempfile::tempdir().unwrap();
    fake_digits(data.path());
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    let run = tempfile::tempdir().unwrap();
    let (whole, cut) = (run.path().join("whole"), run.path().join("cut"));
    let extra = ["--no-plots", "--shift", "1", "--patch", "3", "--patch-stride", "1", "--pooling", "mean"];
    assert_ok(&attune(&args(&whole, &extra), &env), "uninterrupted run");
    let cut_extra: Vec<&str> = extra.iter().copied().chain(["--interrupt-after", "3"]).collect();
    assert_ok(&attune(&args(&cut, &cut_extra), &env), "interrupted run");
    assert_ok(&attune(&resume_args(&cut), &env), "resume");
    let (a, b) = (outcome(&whole), outcome(&cut));
    assert!(a == b, "{}", a.diff(&b));
}

#[test]
fn missing_or_corrupt_data_and_bad_settings_are_clear_errors() {
    let run = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let env = [("ATTUNE_DATA", empty.path().display().to_string())];
    for dataset in ["digits", "fashion-mnist"] {
        let out = attune(&args(&run.path().join(dataset), &["--dataset", dataset]), &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("cargo xtask data") && err.contains(dataset), "{dataset}: {err}");
    }
    let bad = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bad.path().join("digits")).unwrap();
    std::fs::write(bad.path().join("digits/digits.csv.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
    let env = [("ATTUNE_DATA", bad.path().display().to_string())];
    let out = attune(&args(&run.path().join("corrupt"), &[]), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("digits.csv.gz"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let data = tempfile::tempdir().unwrap();
    fake_digits(data.path());
    let env = [("ATTUNE_DATA", data.path().display().to_string())];
    for (extra, needle) in [
        (&["--patch", "3"][..], "do not tile"),
        (&["--dataset", "cifar"][..], "cifar"),
        (&["--pooling", "max"][..], "max"),
    ] {
        let out = attune(&args(&run.path().join("bad"), extra), &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle) && !err.contains("panicked"), "{extra:?}: {err}");
    }
}
