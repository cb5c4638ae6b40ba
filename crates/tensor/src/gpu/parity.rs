//! The op parity table behind `cargo xtask parity --backend emu|cuda`: each case runs an op
//! (forward and, where differentiable, backward through autograd) on the CPU and on a GPU
//! device from the same seeded inputs, and compares with GUIDE.md §3's tolerances.

use crate::{DType, Device, Result, Rng, Tensor, Var};

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

/// Tolerances `(atol, rtol)` by dtype: f32 per GUIDE.md §3; halves at about two ulp of the
/// dtype; integers exact. Op parity compares two backends that both compute 16-bit ops in f32
/// and round once, so this is tighter than §3's "twice the naive low-precision error" rule,
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
    let mut out = OpOutcome { max_abs_err: 0.0, passed: got.len() == want.len(), detail: None };
    if !out.passed {
        out.detail = Some(format!("{} outputs vs {} on the CPU", got.len(), want.len()));
        return Ok(out);
    }
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
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
        let (atol, rtol) = (atol * case.scale, rtol * case.scale);
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

pub(super) fn seeded(seed: u64, dims: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Rng::new(seed).randn(dims.to_vec(), DType::F64, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
}

pub(super) fn leaf(seed: u64, dims: &[usize], dtype: DType, dev: &Device) -> Result<Var> {
    Var::from_tensor(&seeded(seed, dims, dtype, dev)?)
}

/// `[y, dL/dx for each x]` with `L = sum(y * w)` for a fixed random `w`, so every gradient
/// element is exercised with a distinct weight.
pub(super) fn with_grads(y: Tensor, xs: &[&Var]) -> Result<Vec<Tensor>> {
    let w = seeded(99, y.dims(), y.dtype(), &y.device())?;
    let grads = y.mul(&w)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for x in xs {
        out.push(grads.get(x).cloned().unwrap_or(x.zeros_like()?));
    }
    Ok(out)
}

pub(super) type Build = fn(&Device, DType) -> Result<Vec<Tensor>>;

/// Every op family in every float dtype (integer families in the integer dtypes).
pub fn op_cases() -> Vec<OpCase> {
    let floats = [DType::F32, DType::F16, DType::BF16, DType::F64];
    let float_families: [(&str, f64, Build); 6] = [
        ("unary+grad", 2.0, |d, t| {
            let x = leaf(1, &[33, 31], t, d)?;
            let y = x.t()?.gelu_erf()?.add(&x.t()?.tanh()?)?.add(&x.t()?.exp()?.mul(&x.t()?.sigmoid()?)?)?;
            with_grads(y, &[&x])
        }),
        ("binary+grad (broadcast)", 2.0, |d, t| {
            let a = leaf(2, &[4, 1, 19], t, d)?;
            let b = leaf(3, &[7, 1], t, d)?;
            let y = a.mul(&b)?.sub(&a.div(&b.abs()?.add_scalar(1.0)?)?)?.maximum(&b)?;
            with_grads(y, &[&a, &b])
        }),
        ("where/compare", 1.0, |d, t| {
            let a = leaf(4, &[9, 17], t, d)?;
            let b = seeded(5, &[17], t, d)?;
            let y = a.gt(&b)?.where_cond(&a, &b)?;
            let mut out = with_grads(y, &[&a])?;
            out.push(a.le(&b)?);
            Ok(out)
        }),
        ("cast+copy", 1.0, |d, t| {
            let x = seeded(6, &[5, 6, 7], t, d)?.mul_scalar(50.0)?;
            Ok(vec![x.permute([2, 0, 1])?.contiguous()?, x.to_dtype(DType::F32)?, x.to_dtype(DType::I64)?])
        }),
        ("cat+narrow", 1.0, |d, t| {
            let x = leaf(7, &[3, 8, 5], t, d)?;
            let y = crate::Tensor::cat(&[&x.narrow(1, 1, 3)?, &x.t()?.t()?], 1)?;
            with_grads(y, &[&x])
        }),
        ("matmul+grad", 2.0, |d, t| {
            let a = leaf(8, &[2, 17, 40], t, d)?;
            let b = leaf(9, &[40, 9], t, d)?;
            with_grads(a.matmul(&b)?, &[&a, &b])
        }),
    ];
    let mut cases = Vec::new();
    for (name, scale, build) in float_families {
        for t in floats {
            cases.push(OpCase { name: format!("{name} {t}"), scale, run: Box::new(move |d| build(d, t)) });
        }
    }
    for t in [DType::U8, DType::U32, DType::I64] {
        cases.push(OpCase {
            name: format!("integer ops {t}"),
            scale: 1.0,
            run: Box::new(move |d| {
                let a = Tensor::from_vec((0..60i64).map(|v| (v * 37) % 251).collect::<Vec<_>>(), [6, 10], d)?
                    .to_dtype(t)?;
                let b = Tensor::from_vec((0..10i64).map(|v| v % 4).collect::<Vec<_>>(), [10], d)?.to_dtype(t)?;
                Ok(vec![a.add(&b)?, a.mul(&b)?, a.div(&b)?, a.clamp(3.5, 200.2)?, a.ge_scalar(100.5)?])
            }),
        });
    }
    cases.extend(super::parity_more::op_cases());
    cases
}
