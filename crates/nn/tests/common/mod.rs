//! Shared test helpers: finite differences over a module's parameters and inputs.
#![allow(dead_code)]

use attune_nn::ParamStore;
use attune_tensor::{DType, Device, Rng, Tensor, Var};

/// Deterministic upstream weights so the checked scalar is not a plain sum.
pub fn weights_like(t: &Tensor) -> Tensor {
    let n = t.elem_count();
    let w: Vec<f64> =
        (0..n).map(|i| 0.5 + ((i * 7919) % 13) as f64 / 13.0 * if i % 3 == 1 { -1.0 } else { 1.0 }).collect();
    Tensor::from_vec(w, t.shape().clone(), &Device::Cpu).unwrap()
}

/// Checks d(sum(w * f()))/d(theta) from backward against central differences for every
/// parameter of `store` and every extra variable in `inputs`, on up to `per_tensor` elements
/// of each (spread over the tensor). Everything must be f64.
pub fn check_grads(
    name: &str,
    store: &ParamStore,
    inputs: &[Var],
    f: impl Fn() -> Tensor,
    per_tensor: usize,
    tol: f64,
) {
    let out = f();
    let w = weights_like(&out);
    let loss = || f().mul(&w).unwrap().sum_all().unwrap();
    let grads = loss().backward().unwrap();
    let mut vars: Vec<(String, Var)> = store.named();
    vars.extend(inputs.iter().enumerate().map(|(i, v)| (format!("input{i}"), v.clone())));
    let eps = 1e-6;
    let mut worst = (0.0f64, String::new());
    for (pname, v) in &vars {
        assert_eq!(v.dtype(), DType::F64, "{name}: {pname} must be f64 for a gradient check");
        let base = v.to_vec::<f64>().unwrap();
        let analytic = grads.get(v).map(|g| g.to_vec::<f64>().unwrap()).unwrap_or_else(|| vec![0.0; base.len()]);
        let step = (base.len() / per_tensor).max(1);
        for i in (0..base.len()).step_by(step) {
            let eval = |d: f64| {
                let mut x = base.clone();
                x[i] += d;
                v.set(&Tensor::from_vec(x, v.shape().clone(), &Device::Cpu).unwrap()).unwrap();
                let r = attune_tensor::with_no_grad(|| loss().to_scalar::<f64>().unwrap());
                v.set(&Tensor::from_vec(base.clone(), v.shape().clone(), &Device::Cpu).unwrap()).unwrap();
                r
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let err = (analytic[i] - numeric).abs() / numeric.abs().max(1.0);
            if err > worst.0 {
                worst = (err, format!("{pname}[{i}]: analytic {} numeric {numeric}", analytic[i]));
            }
        }
    }
    assert!(worst.0 < tol, "{name}: gradient error {} at {}", worst.0, worst.1);
}

/// A random f64 variable.
pub fn randn_var(shape: &[usize], seed: u64) -> Var {
    Rng::new(seed).randn(shape.to_vec(), DType::F64, &Device::Cpu).unwrap().to_var().unwrap()
}

/// Max |a - b| of two tensors of equal shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The names of the parameters of `store` that `loss` sends a nonzero gradient to (the graph
/// is kept, so one forward pass can be asked about each of its losses).
pub fn grad_names(loss: &Tensor, store: &ParamStore) -> Vec<String> {
    let g = loss.backward_retain_graph().unwrap();
    store
        .named()
        .into_iter()
        .filter(|(_, v)| {
            g.get(v).is_some_and(|t| {
                t.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap() > 0.0
            })
        })
        .map(|(n, _)| n)
        .collect()
}
