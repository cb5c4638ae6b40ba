//! Running the `attune` binary on a tiny training run and comparing what run directories hold
//! (the crash-point and kill tests share these).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_attune");

/// The MQAR model and task every binary-driven lab test trains: small enough that a step of a
/// debug build takes milliseconds.
pub const TINY: [&str; 18] = [
    "--vocab",
    "32",
    "--seq-len",
    "16",
    "--kv-pairs",
    "2",
    "--d-model",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--eval-batches",
    "1",
    "--device",
    "cpu",
    "--threads",
    "1",
];

/// [`TINY`]'s model and task as `--set` overlays of a search's training trials (8 steps of 8
/// rows, evaluated every 4), each a `--set` value.
pub const TINY_SETS: [&str; 12] = [
    "task.vocab_size=32",
    "task.seq_len=16",
    "task.num_kv_pairs=2",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "train.steps=8",
    "train.batch_size=8",
    "train.eval_every=4",
    "train.eval_batches=1",
    "train.target_accuracy=null",
    "device=cpu",
];

/// A 12-step run with a checkpoint every 2 steps (6 checkpoints), evaluation every 4, tiny
/// enough that one run takes a fraction of a second.
pub fn run_args(dir: &Path, steps: u64) -> Vec<String> {
    let mut a: Vec<String> = ["train", "--task", "mqar"].iter().chain(&TINY).map(|s| s.to_string()).collect();
    for s in [
        "--batch",
        "8",
        "--eval-every",
        "4",
        "--checkpoint-every",
        "2",
        "--target-accuracy",
        "0",
        "--quiet",
        "--no-plots",
        "--dropout",
        "0.1",
    ] {
        a.push(s.into());
    }
    a.extend(["--steps".into(), steps.to_string(), "--out".into(), dir.display().to_string()]);
    a
}

/// `--resume DIR` with the per-process flags.
pub fn resume_args(dir: &Path) -> Vec<String> {
    ["train", "--resume", &dir.display().to_string(), "--threads", "1", "--quiet", "--no-plots"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `attune train` with `flags`, the settings every short test run shares (no accuracy target,
/// the CPU, one thread, quiet) and `--out dir`.
pub fn short_train(flags: &[&str], dir: &Path) -> Vec<String> {
    let shared = ["--target-accuracy", "0", "--device", "cpu", "--threads", "1", "--quiet"];
    std::iter::once("train")
        .chain(flags.iter().copied())
        .chain(shared)
        .map(str::to_string)
        .chain(["--out".to_string(), dir.display().to_string()])
        .collect()
}

/// `attune eval --checkpoint dir` on one thread, its JSON report parsed (asserting success).
pub fn eval_report(dir: &Path, env: &[(&str, String)]) -> serde_json::Value {
    let out =
        attune(&["eval".into(), "--checkpoint".into(), dir.display().to_string(), "--threads".into(), "1".into()], env);
    assert_ok(&out, "attune eval");
    serde_json::from_slice(&out.stdout).expect("attune eval prints JSON")
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the binary with `args` and extra environment variables.
pub fn attune(args: &[String], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running the attune binary")
}

/// Finishes the run in `dir` after whatever happened to it: `--resume` when its config was
/// written, else the run from the start (nothing of it was committed).
pub fn recover(dir: &Path, steps: u64) -> Output {
    if dir.join("config.json").is_file() { attune(&resume_args(dir), &[]) } else { attune(&run_args(dir, steps), &[]) }
}

/// What must be identical between an uninterrupted run and a crashed-and-recovered one: the
/// metrics rows and the summary without their timing fields, and the final weights bit for bit.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// metrics.jsonl rows, `elapsed_s`, `tokens_per_s` and `comm_fraction` removed.
    pub metrics: Vec<serde_json::Value>,
    /// summary.json, timing fields removed.
    pub summary: serde_json::Value,
    /// Final weights: name -> f32 bit patterns.
    pub weights: BTreeMap<String, Vec<u32>>,
}

fn strip_timing(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("elapsed_s");
        o.remove("tokens_per_s");
        o.remove("comm_fraction");
    }
    v
}

/// Reads a finished run directory.
pub fn outcome(dir: &Path) -> Outcome {
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| strip_timing(serde_json::from_str(l).unwrap_or_else(|e| panic!("bad metrics row {l:?}: {e}"))))
        .collect();
    let summary =
        strip_timing(serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap());
    let file = attune_nn::checkpoint::load_tensors(&dir.join("model.safetensors")).unwrap();
    let weights = file
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()))
        .collect();
    Outcome { metrics, summary, weights }
}

impl Outcome {
    /// What differs from `other`, briefly (metrics rows by index, summary keys, weight names);
    /// empty when equal.
    pub fn diff(&self, other: &Outcome) -> String {
        let mut out = Vec::new();
        if self.metrics.len() != other.metrics.len() {
            out.push(format!("{} metrics rows vs {}", self.metrics.len(), other.metrics.len()));
        }
        for (i, (a, b)) in self.metrics.iter().zip(&other.metrics).enumerate() {
            if a != b {
                out.push(format!("metrics row {i}: {a} vs {b}"));
            }
        }
        if self.summary != other.summary {
            out.push(format!("summary: {} vs {}", self.summary, other.summary));
        }
        for (k, v) in &self.weights {
            if other.weights.get(k) != Some(v) {
                out.push(format!("weights {k} differ"));
            }
        }
        out.join("; ")
    }
}

/// Every path under `dir` whose name marks an uncommitted temporary.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().contains(attune_persist::TEMP_MARKER) {
                found.push(e.path());
            }
            if e.path().is_dir() {
                todo.push(e.path());
            }
        }
    }
    found
}

/// Copies a directory tree (a prepared run directory for each crash point).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Asserts a process succeeded, showing its stderr when not.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
}
