//! `cargo xtask bench-train`: one training step of Attune against the same model trained in
//! PyTorch on the CPU, in the same run with the same threads: the transformer presets (the
//! Vision Transformer and SASRec of the real-data tasks among them) against
//! benches/peers/torch_train.py, the Recurrent Attention Model's (`ram-centred`,
//! `ram-cluttered`, docs/ram.md) against benches/peers/torch_ram.py.
//!
//! For each preset, `attune bench-step` and the peer's `bench` run alternately for `--rounds`
//! rounds (docs/benchmarks.md: a core's speed drifts over minutes, so both sides see the same
//! drift; the order flips every round). Each run reports the median of its timed steps; the
//! table shows the median over rounds of each side and the ratio torch / attune (> 1: Attune
//! is faster). PyTorch runs with jemalloc preloaded when it is installed (glibc malloc costs
//! it up to 2-3x on fresh buffers, docs/benchmarks.md) and the table says which allocator it had.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
const TRANSFORMER_PEER: &str = "benches/peers/torch_train.py";
const RAM_PEER: &str = "benches/peers/torch_ram.py";

/// Options of `cargo xtask bench-train`.
#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    /// Threads of both sides (rayon for Attune, torch.set_num_threads for PyTorch).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Alternating rounds per model; the median over rounds is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Timed steps per run (at least 10).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps per run.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Batch of the `large` preset (sequence 256); `mqar-default` runs batch 64, sequence 64.
    #[arg(long, default_value_t = 8)]
    large_batch: usize,
    /// Images per step of the RAM presets (28x28 for ram-centred, 60x60 for ram-cluttered).
    #[arg(long, default_value_t = 64)]
    ram_batch: usize,
    /// Only these presets (comma-separated: mqar-default, large, vit-fashion, vit-stem, sasrec-ml100k,
    /// ram-centred, ram-cluttered).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// An `attune` binary to time instead of building one (`cargo build --release`).
    #[arg(long)]
    attune: Option<PathBuf>,
    /// Also write the per-round numbers and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// f32, or bf16: Attune's mixed precision (`--precision bf16`) against PyTorch's CPU
    /// autocast to bf16; transformer presets only (the RAM's peer has no bf16 mode).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    precision: String,
}

/// One benchmark case.
struct Case {
    model: &'static str,
    batch: usize,
    /// Tokens per sequence; the image side for the RAM.
    seq: usize,
    /// The PyTorch script whose `bench` is the peer.
    peer: &'static str,
}

/// The repository root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Builds `attune` in release and returns its path (from cargo's own artifact messages, so
/// CARGO_TARGET_DIR and the workspace layout are respected).
fn build_attune() -> Result<PathBuf> {
    eprintln!("bench-train: building attune (cargo build --release -p attune-lab --bin attune)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--release", "-p", "attune-lab", "--bin", "attune", "--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build --release -p attune-lab failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "attune")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo build did not report the attune executable")
}

/// The Python to run the peer with: `ATTUNE_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("ATTUNE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Checks that the Python has torch, numpy and safetensors; returns torch's version.
fn check_python(py: &str) -> Result<String> {
    let fix = "make one with `python3 -m venv /work/pyenv && /work/pyenv/bin/pip install torch numpy safetensors` \
               and point ATTUNE_PYTHON at its python (ATTUNE_PYTHON=/work/pyenv/bin/python)";
    let out = Command::new(py)
        .args(["-c", "import torch, numpy, safetensors; print(torch.__version__)"])
        .output()
        .with_context(|| format!("cannot run Python '{py}' (ATTUNE_PYTHON): {fix}"))?;
    if !out.status.success() {
        bail!(
            "Python '{py}' (ATTUNE_PYTHON) lacks torch, numpy or safetensors: {}\n{fix}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cmd` and parses the last JSON line it prints.
fn run_json(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd.current_dir(root()).output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let v: Value = serde_json::from_str(line.with_context(|| format!("{what} printed no JSON line:\n{stdout}"))?)
        .with_context(|| format!("{what}: bad JSON"))?;
    if v["median_ms"].as_f64().is_none() {
        bail!("{what}: no median_ms in {v}");
    }
    Ok(v)
}

/// The 1-minute load average (Linux), if readable.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Warns when other work shares the cores: PyTorch's OpenMP threads spin-wait and lose several
/// times over under contention (measured here: 390 ms against 2650 ms per mqar-default step at
/// load 6), far more than Attune's rayon pool, so the ratio would say little.
fn warn_if_busy(threads: usize) -> Option<f64> {
    let load = load_average()?;
    let cores = std::thread::available_parallelism().map_or(threads, |n| n.get());
    if load > 0.75 * cores as f64 {
        eprintln!(
            "bench-train: warning: load average {load:.2} on {cores} cores; other work competes for the cores and \
             PyTorch's spinning OpenMP threads suffer most: wait for a quiet machine (uptime) for ratios that mean something"
        );
    }
    Some(load)
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// The presets `--models` selects (all when unset), in table order.
fn cases(a: &BenchTrainArgs) -> Result<Vec<Case>> {
    let all = vec![
        Case { model: "mqar-default", batch: 64, seq: 64, peer: TRANSFORMER_PEER },
        Case { model: "large", batch: a.large_batch, seq: 256, peer: TRANSFORMER_PEER },
        // The README's real-data models: 28x28 images (the sequence is their 49 patches) and
        // 50-item histories, at their training batch.
        Case { model: "vit-fashion", batch: 128, seq: 49, peer: TRANSFORMER_PEER },
        Case { model: "vit-stem", batch: 128, seq: 49, peer: TRANSFORMER_PEER },
        Case { model: "sasrec-ml100k", batch: 128, seq: 50, peer: TRANSFORMER_PEER },
        Case { model: "ram-centred", batch: a.ram_batch, seq: 28, peer: RAM_PEER },
        Case { model: "ram-cluttered", batch: a.ram_batch, seq: 60, peer: RAM_PEER },
    ];
    let bf16 = a.precision == "bf16";
    let Some(names) = &a.models else {
        return Ok(all.into_iter().filter(|c| !bf16 || c.peer == TRANSFORMER_PEER).collect());
    };
    if bf16 && let Some(ram) = names.iter().find(|n| n.starts_with("ram-")) {
        bail!(
            "--precision bf16: {ram} has no bf16 peer (benches/peers/torch_ram.py runs f32); leave it out of --models"
        );
    }
    if let Some(bad) = names.iter().find(|n| !all.iter().any(|c| c.model == n.as_str())) {
        let known: Vec<&str> = all.iter().map(|c| c.model).collect();
        bail!("--models: unknown preset '{bad}'; choose from {}", known.join(", "));
    }
    Ok(all.into_iter().filter(|c| names.iter().any(|n| n == c.model)).collect())
}

/// `cargo xtask bench-train`.
pub fn run(a: &BenchTrainArgs) -> Result<()> {
    if a.steps < 10 {
        bail!("--steps {} is too few: report medians of at least 10 timed steps, docs/benchmarks.md", a.steps);
    }
    if a.rounds == 0 || a.threads == 0 {
        bail!("--rounds and --threads must be positive");
    }
    let cases = cases(a)?;
    let py = python();
    let torch_version = check_python(&py)?;
    let jemalloc = std::env::var("ATTUNE_JEMALLOC").unwrap_or_else(|_| JEMALLOC.into());
    let jemalloc = Path::new(&jemalloc).is_file().then_some(jemalloc);
    if jemalloc.is_none() {
        eprintln!(
            "bench-train: warning: {JEMALLOC} not found (apt-get install libjemalloc2, or set ATTUNE_JEMALLOC); \
             PyTorch runs on glibc malloc, which can cost it 2-3x (docs/benchmarks.md)"
        );
    }
    let attune = match &a.attune {
        Some(p) => p.clone(),
        None => build_attune()?,
    };
    let load_before = warn_if_busy(a.threads);
    let common = |c: &Case| {
        let (b, s, n, w, t) = (c.batch, c.seq, a.steps, a.warmup, a.threads);
        ["--model".to_string(), c.model.into(), "--batch".into(), b.to_string(), "--seq".into(), s.to_string()]
            .into_iter()
            .chain([
                "--steps".into(),
                n.to_string(),
                "--warmup".into(),
                w.to_string(),
                "--threads".into(),
                t.to_string(),
            ])
            // Only bf16 is passed on: torch_ram.py (f32 only) has no --precision.
            .chain((a.precision == "bf16").then(|| ["--precision".to_string(), "bf16".into()]).into_iter().flatten())
            .chain(["--json".to_string()])
            .collect::<Vec<String>>()
    };
    let mut results = Vec::new();
    for c in &cases {
        let (mut att, mut tor) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            // Flip the order every round so neither side always runs first.
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let mut cmd = Command::new(&attune);
                    cmd.arg("bench-step").args(common(c));
                    att.push(
                        run_json(cmd, &format!("attune bench-step --model {}", c.model))?["median_ms"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                    );
                } else {
                    let mut cmd = Command::new(&py);
                    cmd.arg(c.peer).arg("bench").args(common(c));
                    if let Some(j) = &jemalloc {
                        cmd.env("LD_PRELOAD", j);
                    }
                    tor.push(
                        run_json(cmd, &format!("{} bench --model {}", c.peer, c.model))?["median_ms"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                    );
                }
            }
            eprintln!(
                "bench-train: {} round {}/{}: attune {:.2} ms, torch {:.2} ms",
                c.model,
                round + 1,
                a.rounds,
                att[round],
                tor[round]
            );
        }
        let (am, tm) = (median(att.clone()), median(tor.clone()));
        results.push(json!({
            "model": c.model, "batch": c.batch, "seq": c.seq,
            "attune_ms": att, "torch_ms": tor,
            "attune_median_ms": am, "torch_median_ms": tm, "torch_over_attune": tm / am,
        }));
    }
    println!(
        "training step in {}, {} threads, median over {} alternating rounds of per-run medians ({} steps after {} warm-up); \
         torch {torch_version} with {}",
        a.precision,
        a.threads,
        a.rounds,
        a.steps,
        a.warmup,
        if jemalloc.is_some() { "jemalloc (LD_PRELOAD)" } else { "glibc malloc" }
    );
    println!(
        "{:<14} {:>5} {:>5} {:>12} {:>12} {:>14}",
        "model", "batch", "seq", "attune ms", "torch ms", "torch/attune"
    );
    for r in &results {
        println!(
            "{:<14} {:>5} {:>5} {:>12.2} {:>12.2} {:>14.2}",
            r["model"].as_str().unwrap_or(""),
            r["batch"],
            r["seq"],
            r["attune_median_ms"].as_f64().unwrap_or(f64::NAN),
            r["torch_median_ms"].as_f64().unwrap_or(f64::NAN),
            r["torch_over_attune"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let load_after = warn_if_busy(a.threads);
    let fmt_load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    println!(
        "(torch/attune > 1: Attune is faster; seq is the image side for ram-*; 1-minute load average {} before, {} \
         after)",
        fmt_load(load_before),
        fmt_load(load_after)
    );
    if let Some(path) = &a.json {
        let doc = json!({
            "precision": a.precision, "threads": a.threads, "rounds": a.rounds, "steps": a.steps, "warmup": a.warmup,
            "torch_version": torch_version, "torch_allocator": if jemalloc.is_some() { "jemalloc" } else { "glibc" },
            "load_before": load_before, "load_after": load_after,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn models_select_presets_and_name_the_choices() {
        let args = |models: Option<&[&str]>| BenchTrainArgs {
            threads: 2,
            rounds: 3,
            steps: 20,
            warmup: 3,
            large_batch: 8,
            ram_batch: 16,
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            attune: None,
            json: None,
            precision: "f32".into(),
        };
        let all: Vec<&str> = cases(&args(None)).unwrap().iter().map(|c| c.model).collect();
        assert_eq!(
            all,
            ["mqar-default", "large", "vit-fashion", "vit-stem", "sasrec-ml100k", "ram-centred", "ram-cluttered"]
        );
        let ram = cases(&args(Some(&["ram-cluttered", "ram-centred"]))).unwrap();
        let got: Vec<_> = ram.iter().map(|c| (c.model, c.batch, c.seq, c.peer)).collect();
        assert_eq!(got, [("ram-centred", 16, 28, RAM_PEER), ("ram-cluttered", 16, 60, RAM_PEER)]);
        let e = format!("{:#}", cases(&args(Some(&["nope"]))).err().unwrap());
        assert!(e.contains("nope") && e.contains("ram-cluttered") && e.contains("large"), "{e}");
        // bf16 has no RAM peer: left out by default, refused when named.
        let bf16 = |models: Option<&[&str]>| BenchTrainArgs { precision: "bf16".into(), ..args(models) };
        let all: Vec<&str> = cases(&bf16(None)).unwrap().iter().map(|c| c.model).collect();
        assert_eq!(all, ["mqar-default", "large", "vit-fashion", "vit-stem", "sasrec-ml100k"]);
        let e = format!("{:#}", cases(&bf16(Some(&["large", "ram-centred"]))).err().unwrap());
        assert!(e.contains("ram-centred") && e.contains("bf16"), "{e}");
    }

    #[test]
    fn a_missing_python_says_how_to_make_one() {
        let e = check_python("/nonexistent/python").unwrap_err();
        assert!(format!("{e:#}").contains("python3 -m venv"), "{e:#}");
    }
}
