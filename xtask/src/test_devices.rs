//! `cargo xtask test-devices [--release]`: runs attune-tensor's op test suite once per GPU-side
//! device (`ATTUNE_TEST_DEVICE=emu`, then `cuda` when a GPU is present; otherwise it prints that
//! Cuda was skipped and why). `cargo test` already covers the CPU.

use anyhow::{Context, Result, bail};
use std::process::Command;

/// Options of `cargo xtask test-devices`.
#[derive(clap::Args)]
pub struct TestDevicesArgs {
    /// Build the tests in release mode.
    #[arg(long)]
    release: bool,
}

/// The test targets of attune-tensor's op suite (crates/tensor/tests/*.rs). The gpu_* files
/// compare Emu with the CPU on their own and already run in `cargo test`.
fn suite_targets() -> Result<Vec<String>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/tensor/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if let (Some(stem), Some("rs")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
            && !stem.starts_with("gpu_")
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Runs the suite per device; fails when any run fails.
pub fn run(args: &TestDevicesArgs) -> Result<()> {
    let mut devices = vec!["emu"];
    if attune_tensor::Device::cuda_is_available() {
        devices.push("cuda");
    } else {
        println!("test-devices: Cuda skipped: no CUDA driver or GPU on this machine");
    }
    for dev in devices {
        println!("== attune-tensor tests on ATTUNE_TEST_DEVICE={dev}");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // `--workspace` with the suite's test targets named, rather than `-p attune-tensor`:
        // features unify over the same package set as `cargo test --workspace`, so the
        // dependencies CI just built are reused instead of rebuilt (about 3 minutes).
        cmd.args(["test", "--workspace"]).env("ATTUNE_TEST_DEVICE", dev);
        for t in suite_targets()? {
            cmd.args(["--test", &t]);
        }
        if args.release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo test")?;
        if !status.success() {
            bail!("attune-tensor tests failed on {dev}");
        }
    }
    Ok(())
}
