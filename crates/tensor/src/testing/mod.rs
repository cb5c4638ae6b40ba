//! The device test harness (test-only: behind the `testing` feature, which release builds
//! leave off): how a test checks that an op gives the same results on every device
//! (docs/testing.md, per-device tests).
//!
//! - The op suite (crates/tensor/tests) builds its tensors on [`test_device`], which reads
//!   `ATTUNE_TEST_DEVICE` (`cpu`, the default; `emu`; `cuda` or `cuda:N`), so `cargo test`
//!   checks the CPU and `ATTUNE_TEST_DEVICE=emu cargo test -p attune-tensor` runs the same
//!   assertions on the CUDA emulator (`cargo xtask test-devices` runs every device, printing
//!   why Cuda is skipped when there is no GPU).
//! - Parity: a case builds seeded inputs ([`input`], [`param`]) on a device, runs the op (and
//!   its backward, [`with_grads`]) and returns the tensors to compare; [`run_case`] runs it on
//!   the CPU (the reference) and on a GPU device and compares with [`tolerance`]; [`check`]
//!   does so on every [`gpu_devices`] entry and panics on a difference (tests); [`op_cases`] is
//!   the table of every op family that `cargo xtask parity --backend emu|cuda` runs.

mod ops;
mod ops_more;

pub use ops::op_cases;

use crate::{DType, Device, Result, Rng, Tensor, Var};

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

/// The GPU-side devices parity checks against the CPU: `Emu` always, `Cuda(0)` when a GPU is
/// present (otherwise it prints that it skipped).
pub fn gpu_devices() -> Vec<Device> {
    let mut out = vec![Device::Emu];
    if Device::cuda_is_available() {
        out.push(Device::Cuda(0));
    } else {
        eprintln!("skipped Device::Cuda(0): no CUDA driver or GPU on this machine");
    }
    out
}

/// Builds a case's inputs on a device, runs the op and returns the tensors to compare.
pub type CaseFn = Box<dyn Fn(&Device) -> Result<Vec<Tensor>> + Send + Sync>;

/// One op case: a name, a tolerance multiplier and the computation, run once per device.
pub struct OpCase {
    /// `family dtype`, e.g. `softmax bf16`.
    pub name: String,
    /// Multiplies the dtype's tolerances (for ops whose CPU and GPU formulas round differently).
    pub scale: f64,
    /// Builds inputs on `device`, runs the op, returns the tensors to compare.
    pub run: CaseFn,
}

/// The comparison of one case on one device.
#[derive(Debug, Clone)]
pub struct OpOutcome {
    /// Largest `|got - want|` over all outputs.
    pub max_abs_err: f64,
    /// Whether every element is within tolerance.
    pub passed: bool,
    /// The first failure, when any.
    pub detail: Option<String>,
}

/// Tolerances `(atol, rtol)` by dtype: f32 as docs/attention.md's tolerances; halves at about two ulp of the
/// dtype; integers exact. Op parity compares two backends that both compute 16-bit ops in f32
/// and round once, so this is tighter than the attention rule of "twice the naive low-precision error" rule,
/// which the attention grid uses because fused kernels sum in another order than the oracle.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-10, 1e-9),
        DType::F32 => (2e-5, 2e-4),
        DType::F16 => (1e-3, 2e-3),
        DType::BF16 => (8e-3, 1.6e-2),
        _ => (0.0, 0.0),
    }
}

/// Runs `case` on the CPU and on `device` and compares.
pub fn run_case(case: &OpCase, device: Device) -> Result<OpOutcome> {
    let want = (case.run)(&Device::Cpu)?;
    let got = (case.run)(&device)?;
    compare(&got, &want, device, case.scale)
}

/// Compares the outputs `got` on `device` with the CPU's `want`: count, shape, dtype, device
/// and every value within [`tolerance`] times `scale` (NaN matches only NaN, an infinity only
/// itself).
pub fn compare(got: &[Tensor], want: &[Tensor], device: Device, scale: f64) -> Result<OpOutcome> {
    let mut out = OpOutcome { max_abs_err: 0.0, passed: got.len() == want.len(), detail: None };
    if !out.passed {
        out.detail = Some(format!("{} outputs vs {} on the CPU", got.len(), want.len()));
        return Ok(out);
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        if g.dims() != w.dims() || g.dtype() != w.dtype() || g.device() != device {
            out.passed = false;
            out.detail.get_or_insert(format!(
                "output {k}: {:?} {} on {} vs {:?} {} on the CPU",
                g.dims(),
                g.dtype(),
                g.device(),
                w.dims(),
                w.dtype()
            ));
            continue;
        }
        let (atol, rtol) = tolerance(w.dtype());
        let (atol, rtol) = (atol * scale, rtol * scale);
        for (i, (a, b)) in g.to_f64_vec()?.iter().zip(w.to_f64_vec()?).enumerate() {
            if (a.is_nan() && b.is_nan()) || (a.is_infinite() && *a == b) {
                continue;
            }
            let err = (a - b).abs();
            out.max_abs_err = out.max_abs_err.max(if err.is_nan() { f64::INFINITY } else { err });
            // NaN errors (one side NaN, the other not) fail too.
            let within = err <= atol + rtol * b.abs();
            if !within {
                out.passed = false;
                out.detail.get_or_insert(format!("output {k} element {i}: {a} vs {b} on the CPU"));
            }
        }
    }
    Ok(out)
}

/// Runs `f` on the CPU and on every [`gpu_devices`] entry and panics unless each output
/// matches ([`compare`]); `scale` widens the tolerances for ops whose CPU and GPU formulas
/// legitimately differ in rounding.
pub fn check(case: &str, scale: f64, f: impl Fn(&Device) -> Result<Vec<Tensor>>) {
    let want = f(&Device::Cpu).unwrap_or_else(|e| panic!("{case} on the CPU: {e}"));
    for dev in gpu_devices() {
        let got = f(&dev).unwrap_or_else(|e| panic!("{case} on {dev}: {e}"));
        let o = compare(&got, &want, dev, scale).unwrap_or_else(|e| panic!("{case} on {dev}: {e}"));
        assert!(o.passed, "{case} on {dev}: {} (max abs error {:e})", o.detail.unwrap_or_default(), o.max_abs_err);
    }
}

/// A seeded normal input built on the CPU in f64 (so every device sees the same values),
/// rounded to `dtype` and moved to `dev`.
pub fn input(seed: u64, dims: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Rng::new(seed).randn(dims.to_vec(), DType::F64, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
}

/// Like [`input`] but a leaf that requires a gradient (on the device).
pub fn param(seed: u64, dims: &[usize], dtype: DType, dev: &Device) -> Result<Var> {
    Var::from_tensor(&input(seed, dims, dtype, dev)?)
}

/// `[y, dL/dx for each x]` with `L = sum(y * w)` for a fixed random `w`, so every gradient
/// element is exercised with a distinct weight.
pub fn with_grads(y: Tensor, xs: &[&Var]) -> Result<Vec<Tensor>> {
    let w = input(99, y.dims(), y.dtype(), &y.device())?;
    let grads = y.mul(&w)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for x in xs {
        out.push(grads.get(x).cloned().unwrap_or(x.zeros_like()?));
    }
    Ok(out)
}
