//! The Tensor-level attention op in attune-tensor's autograd: its gradients equal those
//! through the composed primitives (docs/testing.md) and finite differences, in f64.

use attune_attention::{AttentionParams, attention};
use attune_tensor::grad_check::grad_check;
use attune_tensor::{DType, Device, Rng, Tensor};

fn randn(shape: [usize; 4], seed: u64) -> Tensor {
    Rng::new(seed).randn(shape, DType::F64, &Device::Cpu).unwrap()
}

/// softmax(scale q k^T + causal mask) v with tensor primitives (heads_q == heads_kv).
fn composed(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Tensor {
    let d = q.dims()[3] as f64;
    let mut s = q.matmul(&k.t().unwrap()).unwrap().mul_scalar(1.0 / d.sqrt()).unwrap();
    if causal {
        let (sq, sk) = (q.dims()[2], k.dims()[2]);
        let mask: Vec<f64> = (0..sq * sk)
            .map(|x| if (x % sk) as i64 > (x / sk) as i64 + sk as i64 - sq as i64 { f64::NEG_INFINITY } else { 0.0 })
            .collect();
        s = s.add(&Tensor::from_vec(mask, [sq, sk], &Device::Cpu).unwrap()).unwrap();
    }
    s.softmax(-1isize).unwrap().matmul(v).unwrap()
}

#[test]
fn gradients_through_the_fused_op_equal_the_composed_primitives() {
    for causal in [false, true] {
        let (q, k, v) = (randn([2, 2, 5, 8], 1), randn([2, 2, 7, 8], 2), randn([2, 2, 7, 8], 3));
        let vars: Vec<_> = [&q, &k, &v].iter().map(|t| t.to_var().unwrap()).collect();
        let w = randn([2, 2, 5, 8], 4);
        let p = AttentionParams::new().causal(causal);
        let fused = attention(&vars[0], &vars[1], &vars[2], &p).unwrap().out;
        let reference = composed(&vars[0], &vars[1], &vars[2], causal);
        let gf = fused.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = reference.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        for (a, b) in fused.to_vec::<f64>().unwrap().iter().zip(reference.to_vec::<f64>().unwrap()) {
            assert!((a - b).abs() < 1e-5, "out {a} vs {b}");
        }
        for var in &vars {
            let (a, b) = (gf.get(var).unwrap().to_vec::<f64>().unwrap(), gr.get(var).unwrap().to_vec::<f64>().unwrap());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5 * y.abs().max(1.0), "causal {causal}: grad {x} vs {y}");
            }
        }
    }
}

#[test]
fn fused_op_passes_a_finite_difference_check() {
    let inputs = [randn([1, 4, 3, 8], 5), randn([1, 2, 6, 8], 6), randn([1, 2, 6, 8], 7)];
    let p = AttentionParams::new().softcap(2.0).window(2, 1);
    // The flash path accumulates in f32 even for f64 inputs, so the step is large enough
    // that f32 rounding (~1e-7 of the loss) stays far below the difference it measures.
    let r = grad_check(|x| Ok(attention(&x[0], &x[1], &x[2], &p)?.out), &inputs, 1e-3).unwrap();
    assert!(r.max_rel_err < 2e-3 && r.checked == 4 * 3 * 8 + 2 * (2 * 6 * 8), "{r:?}");
}

#[test]
fn gradient_through_lse_is_a_typed_error() {
    let q = randn([1, 1, 3, 8], 1).to_var().unwrap();
    let (k, v) = (randn([1, 1, 3, 8], 2), randn([1, 1, 3, 8], 3));
    let o = attention(&q, &k, &v, &AttentionParams::new()).unwrap();
    let e = o.lse.sum_all().unwrap().backward().unwrap_err().to_string();
    assert!(e.contains("lse") && e.contains("not supported"), "{e}");
}
