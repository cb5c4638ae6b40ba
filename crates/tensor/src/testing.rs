//! Support for running one test suite on every device (GUIDE.md §3).
//!
//! The op tests build their tensors on [`test_device`], which reads `ATTUNE_TEST_DEVICE`
//! (`cpu`, the default; `emu`; `cuda` or `cuda:N`), so `cargo test` checks the CPU and
//! `ATTUNE_TEST_DEVICE=emu cargo test -p attune-tensor` runs the same assertions on the CUDA
//! emulator (`cargo xtask test-devices` runs every device, printing why Cuda is skipped when
//! there is no GPU).

use crate::Device;

/// The device named by `ATTUNE_TEST_DEVICE`, the CPU when unset. Panics on an unknown name or
/// an unusable device: a test run that asked for a device must not silently use another.
pub fn test_device() -> Device {
    match std::env::var("ATTUNE_TEST_DEVICE") {
        Err(_) => Device::Cpu,
        Ok(name) if name.is_empty() => Device::Cpu,
        Ok(name) => {
            let dev: Device = name.parse().unwrap_or_else(|e| panic!("ATTUNE_TEST_DEVICE: {e}"));
            assert!(dev.is_available(), "ATTUNE_TEST_DEVICE={name}: device {dev} is not usable on this machine");
            dev
        }
    }
}
