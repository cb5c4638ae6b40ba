//! `cargo xtask parity --backend emu|cuda`: every tensor op family on that backend against the
//! CPU backend (attune_tensor::testing), one row per case, ending with `N passed, M failed`.

use anyhow::Result;
use attune_tensor::Device;
use attune_tensor::testing::{op_cases, run_case};
use std::io::Write;
use std::process::ExitCode;

/// Runs the op table on `device`; `keep` filters case names. Returns (passed, failed).
pub fn run(device: Device, keep: &dyn Fn(&str) -> bool, out: &mut impl Write) -> Result<(usize, usize)> {
    let cases: Vec<_> = op_cases().into_iter().filter(|c| keep(&c.name)).collect();
    writeln!(out, "\ntensor ops on {device} vs the CPU backend: {} cases", cases.len())?;
    writeln!(out, "{:<36} {:>12} {:>9}  result", "case", "max |err|", "ms")?;
    let (mut passed, mut failed) = (0, 0);
    let workers = crate::parity::device_workers(device);
    crate::parity::map_ordered(
        &cases,
        workers,
        |case| (case, run_case(case, device)),
        |(case, r), secs| {
            let ms = secs * 1e3;
            match r {
                Ok(o) if o.passed => {
                    passed += 1;
                    writeln!(out, "{:<36} {:>12.3e} {:>9.1}  PASS", case.name, o.max_abs_err, ms)?;
                }
                Ok(o) => {
                    failed += 1;
                    let why = o.detail.unwrap_or_default();
                    writeln!(out, "{:<36} {:>12.3e} {:>9.1}  FAIL  {why}", case.name, o.max_abs_err, ms)?;
                }
                Err(e) => {
                    failed += 1;
                    writeln!(out, "{:<36} {:>12} {:>9.1}  FAIL  {e}", case.name, "-", ms)?;
                }
            }
            Ok(())
        },
    )?;
    Ok((passed, failed))
}

/// The whole `--backend cuda` run when no GPU is present: says so and succeeds.
pub fn no_gpu() -> ExitCode {
    println!(
        "parity --backend cuda: skipped, no CUDA driver or GPU on this machine (Device::cuda_is_available() is false)"
    );
    println!("0 passed, 0 failed");
    ExitCode::SUCCESS
}
