//! Finite-difference gradient checking in f64, shared by every differentiable op's tests
//! (and by other crates' fused ops).

use crate::{DType, Result, Tensor, Var};

/// Outcome of a gradient check.
#[derive(Debug, Clone)]
pub struct GradCheckReport {
    /// Largest `|analytic - numeric|` over all checked elements.
    pub max_abs_err: f64,
    /// Largest `|analytic - numeric| / max(1, |numeric|)`.
    pub max_rel_err: f64,
    /// Number of elements compared.
    pub checked: usize,
}

/// Deterministic weights in ±[0.5, 1.5] so the upstream gradient is not uniform.
fn weights(n: usize) -> Vec<f64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            let sign = if i % 3 == 1 { -1.0 } else { 1.0 };
            sign * (0.5 + u)
        })
        .collect()
}

/// Compares the gradients of `sum(w * f(inputs))` from backward with central differences
/// of step `eps`, for every element of every input. Inputs are converted to f64 variables.
pub fn grad_check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], eps: f64) -> Result<GradCheckReport> {
    let vars: Vec<Var> = inputs.iter().map(|t| t.to_dtype(DType::F64)?.to_var()).collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    let w = Tensor::from_vec(weights(out.elem_count()), out.shape().clone(), &out.device())?;
    let loss = |ts: &[Tensor]| -> Result<Tensor> { f(ts)?.to_dtype(DType::F64)?.mul(&w)?.sum_all() };
    let grads = loss(&tensors)?.backward()?;
    let mut report = GradCheckReport { max_abs_err: 0.0, max_rel_err: 0.0, checked: 0 };
    for (k, v) in vars.iter().enumerate() {
        let base = v.to_vec::<f64>()?;
        let analytic = match grads.get(v) {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; base.len()],
        };
        for i in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut x = base.clone();
                x[i] += delta;
                let mut ts = tensors.clone();
                ts[k] = Tensor::from_vec(x, v.shape().clone(), &v.device())?;
                crate::with_no_grad(|| loss(&ts))?.to_scalar::<f64>()
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            let err = (analytic[i] - numeric).abs();
            report.max_abs_err = report.max_abs_err.max(err);
            report.max_rel_err = report.max_rel_err.max(err / numeric.abs().max(1.0));
            report.checked += 1;
        }
    }
    Ok(report)
}

/// [`grad_check`] with `eps = 1e-6`, returning an error naming the op when the relative
/// error exceeds `tol`.
pub fn assert_grad(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], tol: f64) -> Result<()> {
    let r = grad_check(f, inputs, 1e-6)?;
    if r.max_rel_err > tol || r.checked == 0 {
        return Err(crate::Error::invalid("grad_check", format!("{name}: gradient mismatch {r:?} (tolerance {tol})")));
    }
    Ok(())
}
