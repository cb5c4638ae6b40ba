//! The per-device harness (GUIDE.md §3: write a test once, run it for every device). A case
//! builds its inputs on the CPU from a seed, moves them to the device under test, runs the op
//! (and its backward), and returns the tensors to compare; the CPU run is the reference.
//! `Emu` always runs; `Cuda` runs when a GPU is present and otherwise prints that it skipped.

#![allow(dead_code)]

use attune_tensor::{DType, Device, Result, Tensor};

/// The GPU-side devices to check against the CPU.
pub fn gpu_devices() -> Vec<Device> {
    let mut out = vec![Device::Emu];
    if Device::cuda_is_available() {
        out.push(Device::Cuda(0));
    } else {
        eprintln!("skipped Device::Cuda(0): no CUDA driver or GPU on this machine");
    }
    out
}

/// Tolerances by dtype, the ones `cargo xtask parity` uses (GUIDE.md §3 for f32; about one
/// ulp for halves, which both sides round to the same dtype).
pub use attune_tensor::gpu::parity::tolerance;

/// Compares two tensors element-wise (shape, dtype and values).
pub fn assert_close(case: &str, what: usize, dev: Device, got: &Tensor, want: &Tensor, scale: f64) {
    assert_eq!(got.dims(), want.dims(), "{case} output {what} on {dev}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{case} output {what} on {dev}: dtype");
    assert_eq!(got.device(), dev, "{case} output {what}: stays on the device");
    let (atol, rtol) = tolerance(want.dtype());
    let (atol, rtol) = (atol * scale, rtol * scale);
    let g = got.to_f64_vec().expect("download");
    let w = want.to_f64_vec().expect("reference");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let same_special = (a.is_nan() && b.is_nan()) || (a.is_infinite() && a == b);
        assert!(
            same_special || (a - b).abs() <= atol + rtol * b.abs(),
            "{case} output {what} on {dev}: element {i} is {a}, the CPU gives {b} (atol {atol}, rtol {rtol})"
        );
    }
}

/// Runs `f` on the CPU and on every GPU device and compares each output; `scale` widens the
/// tolerances for ops whose CPU and GPU formulas legitimately differ in rounding.
pub fn check(case: &str, scale: f64, f: impl Fn(&Device) -> Result<Vec<Tensor>>) {
    let want = f(&Device::Cpu).unwrap_or_else(|e| panic!("{case} on the CPU: {e}"));
    for dev in gpu_devices() {
        let got = f(&dev).unwrap_or_else(|e| panic!("{case} on {dev}: {e}"));
        assert_eq!(got.len(), want.len(), "{case} on {dev}: number of outputs");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(case, i, dev, g, w, scale);
        }
    }
}

/// A seeded input built on the CPU (so every device sees the same values), then moved.
pub fn input(seed: u64, dims: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    let mut rng = attune_tensor::Rng::new(seed);
    rng.randn(dims.to_vec(), DType::F64, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
}

/// Like [`input`] but a leaf that requires a gradient (on the device).
pub fn param(seed: u64, dims: &[usize], dtype: DType, dev: &Device) -> Result<attune_tensor::Var> {
    attune_tensor::Var::from_tensor(&input(seed, dims, dtype, dev)?)
}
