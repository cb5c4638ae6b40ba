//! Autocast (mixed precision): Linear and fused attention compute in bf16 over f32 parameters,
//! return f32, and send f32 gradients back to the f32 parameters.

mod common;

use attune_nn::{AttentionConfig, Autocast, Ctx, Linear, MultiHeadAttention, ParamBuilder, ParamStore};
use attune_tensor::{DType, Device, Rng, Tensor, Var};
use common::weights_like;

const CPU: Device = Device::Cpu;

fn bf16(x: f64) -> f64 {
    attune_tensor::f64_to_bf16(x).to_f64()
}

fn randn_f32(shape: &[usize], seed: u64) -> Var {
    Rng::new(seed).randn(shape.to_vec(), DType::F32, &CPU).unwrap().to_var().unwrap()
}

/// `sum(w * f())`'s gradients for every parameter, as f64 vectors (checking each is f32).
fn grads(store: &ParamStore, out: &Tensor) -> Vec<(String, Vec<f64>)> {
    let w = weights_like(out).to_dtype(DType::F32).unwrap();
    let g = out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    store
        .named()
        .into_iter()
        .map(|(name, v)| {
            let gv = g.get(&v).unwrap_or_else(|| panic!("{name} got no gradient"));
            assert_eq!(gv.dtype(), DType::F32, "{name}: the gradient of an f32 parameter is f32");
            (name, gv.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap())
        })
        .collect()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-30)
}

#[test]
fn linear_under_autocast_is_the_bf16_product_in_f32() {
    let store = ParamStore::new();
    let lin = Linear::new(&ParamBuilder::new(&store, 3, DType::F32, &CPU).sub("fc"), 40, 24, true).unwrap();
    let x = randn_f32(&[2, 5, 40], 1);
    let plain = lin.forward(&x).unwrap();
    let g32 = grads(&store, &plain);
    let mixed = {
        let _ac = Autocast::enter(DType::BF16).unwrap();
        lin.forward(&x).unwrap()
    };
    assert_eq!(mixed.dtype(), DType::F32);
    // The product of the bf16-rounded operands accumulated in f32 (no 16-bit result), then
    // the f32 bias added.
    let (xs, w, b) = (
        x.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
        lin.weight().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap(),
        lin.bias().unwrap().to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
    );
    let got = mixed.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
    let mut off_f32 = 0.0f64;
    let plain = plain.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
    for r in 0..10 {
        for (o, (wo, bo)) in w.iter().zip(&b).enumerate() {
            let dot: f64 = wo.iter().zip(&xs[r * 40..(r + 1) * 40]).map(|(a, c)| bf16(*a) * bf16(*c)).sum();
            let want = dot + bo;
            let g = got[r * 24 + o];
            assert!((g - want).abs() <= 1e-5, "row {r} out {o}: {g} vs {want}");
            off_f32 = off_f32.max((g - plain[r * 24 + o]).abs());
        }
    }
    assert!(off_f32 > 1e-4, "autocast changed nothing (largest difference to f32 {off_f32})");
    // Outside the guard Linear is f32 again, bit for bit.
    assert_eq!(lin.forward(&x).unwrap().to_vec::<f32>().unwrap(), plain.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let gbf = grads(&store, &{
        let _ac = Autocast::enter(DType::BF16).unwrap();
        lin.forward(&x).unwrap()
    });
    for ((name, a), (_, b)) in gbf.iter().zip(&g32) {
        let e = rel_err(a, b);
        assert!(e < 1e-2, "{name}: bf16 gradient {e:.2e} away from f32's");
    }
}

#[test]
fn attention_under_autocast_runs_the_fused_op_in_bf16() {
    let store = ParamStore::new();
    let cfg = AttentionConfig { causal: true, n_kv_heads: 2, ..AttentionConfig::new(64, 4) };
    let m = MultiHeadAttention::new(&ParamBuilder::new(&store, 5, DType::F32, &CPU).sub("attn"), cfg).unwrap();
    let x = randn_f32(&[2, 33, 64], 2);
    let plain = m.forward(&x, None, &mut Ctx::eval()).unwrap();
    let g32 = grads(&store, &plain);
    let mixed = {
        let _ac = Autocast::enter(DType::BF16).unwrap();
        m.forward(&x, None, &mut Ctx::eval()).unwrap()
    };
    assert_eq!(mixed.dtype(), DType::F32);
    let (a, b) = (
        mixed.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
        plain.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
    );
    let e = rel_err(&a, &b);
    // bf16 keeps 8 bits: a relative error of order 2^-8, and never zero.
    assert!(e > 1e-4 && e < 2e-2, "autocast attention output {e:.2e} away from f32's");
    let gbf = grads(&store, &{
        let _ac = Autocast::enter(DType::BF16).unwrap();
        m.forward(&x, None, &mut Ctx::eval()).unwrap()
    });
    // Relative to the largest gradient: k_proj.bias's is zero in exact arithmetic (a shift of
    // every key's score for a query), so both sides hold rounding noise only.
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = g32.iter().map(|(_, b)| norm(b)).fold(0.0, f64::max);
    for ((name, a), (_, b)) in gbf.iter().zip(&g32) {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let e = norm(&d) / norm(b).max(1e-2 * scale);
        assert!(e < 3e-2, "{name}: bf16 gradient {e:.2e} away from f32's");
    }
}
