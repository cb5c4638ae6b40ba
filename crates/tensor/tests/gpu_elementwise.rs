//! Element-wise ops, casts, copies, cat and matmul on every GPU device (the emulator always,
//! a GPU when present) against the CPU backend, forward and backward.

use attune_tensor::testing::{check, input, param};
use attune_tensor::{DType, Device, Result, Tensor};

const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

/// Each unary op forward and, through autograd, backward; 1000 elements (not a multiple of
/// the 256-thread block) read through a transpose.
#[test]
fn unary_ops_and_their_gradients() {
    type Op = fn(&Tensor) -> Result<Tensor>;
    let ops: [(&str, Op); 20] = [
        ("neg", |x| x.neg()),
        ("exp", |x| x.exp()),
        ("log", |x| x.abs()?.add_scalar(0.1)?.log()),
        ("abs", |x| x.abs()),
        ("sqrt", |x| x.abs()?.add_scalar(0.1)?.sqrt()),
        ("rsqrt", |x| x.abs()?.add_scalar(0.1)?.rsqrt()),
        ("sin", |x| x.sin()),
        ("cos", |x| x.cos()),
        ("tanh", |x| x.tanh()),
        ("sqr", |x| x.sqr()),
        ("recip", |x| x.abs()?.add_scalar(0.5)?.recip()),
        ("erf", |x| x.erf()),
        ("powf 3.5", |x| x.abs()?.powf(3.5)),
        ("powf 2", |x| x.powf(2.0)),
        ("clamp", |x| x.clamp(-0.5, 0.7)),
        ("relu", |x| x.relu()),
        ("sigmoid", |x| x.sigmoid()),
        ("silu", |x| x.silu()),
        ("gelu", |x| x.gelu()),
        ("gelu_erf", |x| x.gelu_erf()),
    ];
    for dtype in FLOATS {
        for (name, op) in ops {
            // Halves round differently through f32 libm vs CUDA's math; one extra ulp is fair.
            let scale = if matches!(dtype, DType::F16 | DType::BF16) { 2.0 } else { 1.0 };
            check(&format!("{name} {dtype}"), scale, |dev| {
                let x = param(1, &[40, 25], dtype, dev)?;
                let y = op(&x.t()?)?;
                let grads = y.sum_all()?.backward()?;
                Ok(vec![y.clone(), grads.get(&x).expect("x has a gradient").clone()])
            });
        }
    }
}

#[test]
fn binary_ops_broadcast_and_their_gradients() {
    type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let ops: [(&str, Op); 7] = [
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(&b.abs()?.add_scalar(0.5)?)),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
        ("pow", |a, b| a.abs()?.add_scalar(0.1)?.pow(b)),
    ];
    for dtype in FLOATS {
        for (name, op) in ops {
            check(&format!("{name} {dtype}"), 2.0, |dev| {
                let a = param(2, &[3, 1, 17], dtype, dev)?;
                let b = param(3, &[5, 1], dtype, dev)?;
                let y = op(&a, &b)?;
                let grads = y.sum_all()?.backward()?;
                Ok(vec![y.clone(), grads.get(&a).expect("a").clone(), grads.get(&b).expect("b").clone()])
            });
        }
    }
}

#[test]
fn integer_ops_are_exact() {
    for dtype in [DType::I64, DType::U32, DType::U8] {
        check(&format!("integer ops {dtype}"), 1.0, |dev| {
            let a = Tensor::from_vec((0..60i64).map(|v| (v * 37) % 251).collect::<Vec<_>>(), [6, 10], dev)?
                .to_dtype(dtype)?;
            let b = Tensor::from_vec((0..10i64).map(|v| v % 4).collect::<Vec<_>>(), 10, dev)?.to_dtype(dtype)?;
            Ok(vec![
                a.add(&b)?,
                a.sub(&b)?,
                a.mul(&b)?,
                a.div(&b)?,
                a.maximum(&b)?,
                a.minimum(&b)?,
                a.abs()?,
                a.clamp(3.5, 200.2)?,
                a.lt(&b)?,
                a.ge_scalar(100.5)?,
                a.eq_scalar(37.0)?,
                a.lt_scalar(1e30)?,
            ])
        });
    }
}

#[test]
fn comparisons_and_where() {
    for dtype in FLOATS {
        check(&format!("compare/where {dtype}"), 1.0, |dev| {
            let a = param(4, &[7, 9], dtype, dev)?;
            let b = input(5, &[9], dtype, dev)?;
            let mask = a.gt(&b)?;
            let y = mask.where_cond(&a, &b)?;
            let g = y.sum_all()?.backward()?;
            Ok(vec![
                a.eq(&b)?,
                a.ne(&b)?,
                a.lt(&b)?,
                a.le(&b)?,
                mask,
                a.ge_scalar(0.25)?,
                y,
                g.get(&a).unwrap().clone(),
            ])
        });
    }
}

#[test]
fn casts_between_every_pair_of_dtypes() {
    let all = [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];
    for from in all {
        for to in all {
            check(&format!("cast {from} -> {to}"), 1.0, |dev| {
                // Values cover negatives, fractions, and out-of-range for u8 (saturation).
                let x = Tensor::from_vec(
                    vec![-3.7f64, -0.5, 0.0, 0.49, 1.5, 2.5, 255.9, 300.0, 65504.0, 1e6],
                    10,
                    &Device::Cpu,
                )?
                .to_dtype(from)?
                .to_device(dev)?;
                Ok(vec![x.to_dtype(to)?])
            });
        }
    }
}

#[test]
fn copies_views_and_cat() {
    for dtype in [DType::F32, DType::BF16, DType::I64] {
        check(&format!("views {dtype}"), 1.0, |dev| {
            let x = input(6, &[4, 5, 6], DType::F32, dev)?.mul_scalar(10.0)?.to_dtype(dtype)?;
            let p = x.permute([2, 0, 1])?.contiguous()?;
            let n = x.narrow(2, 1, 3)?.contiguous()?;
            let c = Tensor::cat(&[&x, &x.narrow(1, 2, 2)?], 1)?;
            let s = Tensor::stack(&[&x.t()?, &x.t()?], 0)?;
            Ok(vec![p, n, c, s])
        });
    }
}

#[test]
fn matmul_forward_and_backward() {
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        check(&format!("matmul {dtype}"), 2.0, |dev| {
            let a = param(7, &[2, 17, 33], dtype, dev)?;
            let b = param(8, &[33, 9], dtype, dev)?;
            let y = a.matmul(&b)?;
            let g = y.sum_all()?.backward()?;
            Ok(vec![y.clone(), g.get(&a).unwrap().clone(), g.get(&b).unwrap().clone()])
        });
    }
}

#[test]
fn transfers_round_trip_and_report_the_device() {
    let x = Tensor::from_vec((0..24).map(|v| v as f32 * 0.5).collect::<Vec<_>>(), [2, 3, 4], &Device::Cpu).unwrap();
    let e = x.to_device(&Device::Emu).unwrap();
    assert_eq!(e.device(), Device::Emu);
    assert_eq!(e.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    // A strided view downloads in logical order.
    assert_eq!(e.t().unwrap().to_vec::<f32>().unwrap(), x.t().unwrap().to_vec::<f32>().unwrap());
    let s = Tensor::from_vec(vec![1.5f32, -2.0], [2], &Device::Emu).unwrap().to_string();
    assert_eq!(s, "tensor([ 1.5000, -2.0000], dtype=f32, device=emu)");
    let back = e.to_device(&Device::Cpu).unwrap();
    assert_eq!(back.device(), Device::Cpu);
    // Mixing devices is an error that names both.
    let err = x.add(&e).unwrap_err().to_string();
    assert!(err.contains("cpu") && err.contains("emu"), "{err}");
}
