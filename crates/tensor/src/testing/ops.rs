//! The op parity table behind `cargo xtask parity --backend emu|cuda`: one case per op family
//! and dtype, each run (forward and, where differentiable, backward through autograd) on the
//! CPU and on a GPU device from the same seeded inputs by [`super::run_case`].

use super::{OpCase, input, param, with_grads};
use crate::{DType, Device, Result, Tensor};

pub(super) type Build = fn(&Device, DType) -> Result<Vec<Tensor>>;

/// Every op family in every float dtype (integer families in the integer dtypes).
pub fn op_cases() -> Vec<OpCase> {
    let floats = [DType::F32, DType::F16, DType::BF16, DType::F64];
    let float_families: [(&str, f64, Build); 6] = [
        ("unary+grad", 2.0, |d, t| {
            let x = param(1, &[33, 31], t, d)?;
            let y = x.t()?.gelu_erf()?.add(&x.t()?.tanh()?)?.add(&x.t()?.exp()?.mul(&x.t()?.sigmoid()?)?)?;
            with_grads(y, &[&x])
        }),
        ("binary+grad (broadcast)", 2.0, |d, t| {
            let a = param(2, &[4, 1, 19], t, d)?;
            let b = param(3, &[7, 1], t, d)?;
            let y = a.mul(&b)?.sub(&a.div(&b.abs()?.add_scalar(1.0)?)?)?.maximum(&b)?;
            with_grads(y, &[&a, &b])
        }),
        ("where/compare", 1.0, |d, t| {
            let a = param(4, &[9, 17], t, d)?;
            let b = input(5, &[17], t, d)?;
            let y = a.gt(&b)?.where_cond(&a, &b)?;
            let mut out = with_grads(y, &[&a])?;
            out.push(a.le(&b)?);
            Ok(out)
        }),
        ("cast+copy", 1.0, |d, t| {
            let x = input(6, &[5, 6, 7], t, d)?.mul_scalar(50.0)?;
            Ok(vec![x.permute([2, 0, 1])?.contiguous()?, x.to_dtype(DType::F32)?, x.to_dtype(DType::I64)?])
        }),
        ("cat+narrow", 1.0, |d, t| {
            let x = param(7, &[3, 8, 5], t, d)?;
            let y = Tensor::cat(&[&x.narrow(1, 1, 3)?, &x.t()?.t()?], 1)?;
            with_grads(y, &[&x])
        }),
        ("matmul+grad", 2.0, |d, t| {
            let a = param(8, &[2, 17, 40], t, d)?;
            let b = param(9, &[40, 9], t, d)?;
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
    cases.extend(super::ops_more::op_cases());
    cases
}
