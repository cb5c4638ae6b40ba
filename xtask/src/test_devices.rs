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
        cmd.args(["test", "-p", "attune-tensor", "--tests"]).env("ATTUNE_TEST_DEVICE", dev);
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
