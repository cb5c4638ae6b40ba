//! `Tensor::matmul` against a naive f64 reference with PyTorch's semantics: every float
//! dtype, 1-D promotion, broadcast batch dims, transposed/narrowed/broadcast views, zero-size
//! dims, products large enough for the parallel paths, finite-difference gradients and the
//! error messages.

use attune_tensor::grad_check::assert_grad;
use attune_tensor::testing::test_device;
use attune_tensor::{DType, Error, Result, Tensor};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn rand(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &test_device()).unwrap().to_dtype(dtype).unwrap()
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The PyTorch matmul of row-major f64 data, written independently of the library: returns
/// the output shape, the values and, per output, the sum of |a||b| over the contraction.
fn naive(a: &[f64], ash: &[usize], b: &[f64], bsh: &[usize]) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let (mut ash, mut bsh) = (ash.to_vec(), bsh.to_vec());
    let (a_vec, b_vec) = (ash.len() == 1, bsh.len() == 1);
    if a_vec {
        ash.insert(0, 1);
    }
    if b_vec {
        bsh.push(1);
    }
    let (ra, rb) = (ash.len(), bsh.len());
    let (m, k, n) = (ash[ra - 2], ash[ra - 1], bsh[rb - 1]);
    assert_eq!(k, bsh[rb - 2]);
    let nb = (ra - 2).max(rb - 2);
    let pad = |s: &[usize], r: usize| -> Vec<usize> {
        let mut v = vec![1; nb - (r - 2)];
        v.extend_from_slice(&s[..r - 2]);
        v
    };
    let (pa, pb) = (pad(&ash, ra), pad(&bsh, rb));
    let batch: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
    let (sa, sb) = (strides(&pa), strides(&pb));
    let count: usize = batch.iter().product();
    let (mut out, mut mag) = (vec![0.0; count * m * n], vec![0.0; count * m * n]);
    for bi in 0..count {
        // Unravel the batch index; size-1 operand dims repeat their only entry.
        let (mut rem, mut oa, mut ob) = (bi, 0, 0);
        for d in (0..nb).rev() {
            let i = rem % batch[d];
            rem /= batch[d];
            oa += if pa[d] == 1 { 0 } else { i * sa[d] };
            ob += if pb[d] == 1 { 0 } else { i * sb[d] };
        }
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut abs) = (0.0, 0.0);
                for p in 0..k {
                    let x = a[(oa * m * k) + i * k + p] * b[(ob * k * n) + p * n + j];
                    acc += x;
                    abs += x.abs();
                }
                out[bi * m * n + i * n + j] = acc;
                mag[bi * m * n + i * n + j] = abs;
            }
        }
    }
    let mut shape = batch;
    if !a_vec {
        shape.push(m);
    }
    if !b_vec {
        shape.push(n);
    }
    (shape, out, mag)
}

/// Unit roundoff of the output dtype.
fn unit(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON / 2.0,
        DType::F32 => f32::EPSILON as f64 / 2.0,
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => unreachable!(),
    }
}

/// Checks `a.matmul(b)` against the naive product of the operands' (already rounded) values.
/// Tolerance: accumulation in at least f32 over k terms, plus for f16/bf16 one rounding of the
/// result and one of a partial sum per 128 terms (gemm's f16 kernel may store a block's sum).
fn check(a: &Tensor, b: &Tensor) -> Result<()> {
    let got = a.matmul(b)?;
    let dtype = a.dtype();
    assert_eq!(got.dtype(), dtype);
    let (shape, want, mag) = naive(&a.to_f64_vec()?, a.dims(), &b.to_f64_vec()?, b.dims());
    assert_eq!(got.dims(), shape.as_slice(), "{:?} @ {:?}", a.shape(), b.shape());
    let k = *a.dims().last().unwrap();
    let acc = if dtype == DType::F64 { unit(DType::F64) } else { unit(DType::F32) };
    let low = matches!(dtype, DType::F16 | DType::BF16);
    let blocks = if low { k.div_ceil(128) as f64 } else { 0.0 };
    for (i, ((&g, &w), &s)) in got.to_f64_vec()?.iter().zip(&want).zip(&mag).enumerate() {
        let tol = 2.0 * (k as f64 + 2.0) * acc * s + unit(dtype) * (2.0 * w.abs() + blocks * s) + 1e-300;
        assert!(
            (g - w).abs() <= tol,
            "{dtype} {:?} @ {:?} (strides {:?}, {:?}) element {i}: got {g}, want {w}, tol {tol}",
            a.shape(),
            b.shape(),
            a.stride(),
            b.stride()
        );
    }
    Ok(())
}

#[test]
fn matrix_products_match_the_naive_reference_in_every_float_dtype() -> Result<()> {
    for dtype in DType::FLOATS {
        for (i, &(m, k, n)) in [(1, 1, 1), (3, 5, 4), (17, 33, 9), (64, 128, 48), (2, 300, 3)].iter().enumerate() {
            check(&rand(&[m, k], 2 * i as u64, dtype), &rand(&[k, n], 2 * i as u64 + 1, dtype))?;
        }
    }
    Ok(())
}

#[test]
fn one_dimensional_operands_are_promoted_and_the_dim_removed() -> Result<()> {
    for dtype in DType::FLOATS {
        let v = rand(&[7], 1, dtype);
        let dot = v.matmul(&rand(&[7], 2, dtype))?;
        assert_eq!(dot.rank(), 0);
        check(&v, &rand(&[7], 2, dtype))?;
        check(&v, &rand(&[7, 3], 3, dtype))?;
        check(&rand(&[4, 7], 4, dtype), &v)?;
        check(&v, &rand(&[2, 7, 5], 5, dtype))?;
        check(&rand(&[2, 3, 4, 7], 6, dtype), &v)?;
    }
    assert_eq!(rand(&[2, 3, 4, 7], 6, DType::F32).matmul(&rand(&[7], 1, DType::F32))?.dims(), &[2, 3, 4]);
    assert_eq!(rand(&[7], 1, DType::F32).matmul(&rand(&[2, 7, 5], 5, DType::F32))?.dims(), &[2, 5]);
    Ok(())
}

#[test]
fn batch_dims_broadcast() -> Result<()> {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 1, 3, 4], &[5, 4, 6]),
        (&[3, 4], &[2, 4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[1, 3, 4], &[2, 4, 5]),
        (&[2, 3, 3, 4], &[2, 1, 4, 2]),
        (&[2, 1, 3, 4], &[1, 1, 4, 2]),
        (&[4, 1, 5, 6], &[1, 1, 6, 3]),
    ];
    for dtype in DType::FLOATS {
        for (i, &(sa, sb)) in cases.iter().enumerate() {
            check(&rand(sa, 10 + i as u64, dtype), &rand(sb, 20 + i as u64, dtype))?;
        }
    }
    assert_eq!(rand(&[2, 1, 3, 4], 1, DType::F32).matmul(&rand(&[5, 4, 6], 2, DType::F32))?.dims(), &[2, 5, 3, 6]);
    Ok(())
}

#[test]
fn strided_views_match_their_contiguous_copies() -> Result<()> {
    for dtype in DType::FLOATS {
        let r = |s: &[usize], seed| rand(s, seed, dtype);
        // Column-major operands (transposes) on either side and both.
        check(&r(&[5, 3], 1).t()?, &r(&[5, 4], 2))?;
        check(&r(&[3, 5], 1), &r(&[4, 5], 2).t()?)?;
        check(&r(&[5, 3], 1).t()?, &r(&[4, 5], 2).t()?)?;
        // Narrowed rows and columns (padded row stride, offset start).
        check(&r(&[6, 9], 3).narrow(0usize, 1, 4)?.narrow(1usize, 2, 5)?, &r(&[7, 8], 4).narrow(0usize, 1, 5)?)?;
        // Batched transposes and a permuted batch dim.
        check(&r(&[2, 5, 3], 5).transpose(-1isize, -2isize)?, &r(&[2, 5, 4], 6))?;
        check(&r(&[3, 2, 4], 7).permute([1usize, 0, 2])?, &r(&[4, 6], 8))?;
        check(&r(&[4, 3, 2], 7).permute([2usize, 1, 0])?, &r(&[2, 4, 6], 8))?;
        // Broadcast batch dims (stride 0) and broadcast rows/columns inside the matrices.
        check(&r(&[3, 4], 9).broadcast_as([5, 3, 4])?, &r(&[5, 4, 2], 10))?;
        check(&r(&[1, 4], 11).broadcast_as([3, 4])?, &r(&[4, 1], 12).broadcast_as([4, 5])?)?;
        // Neither matrix dim has a unit stride: copied first.
        check(&r(&[3, 4, 2], 13).select(2usize, 1)?, &r(&[4, 5, 3], 14).select(2usize, 0)?)?;
        check(&r(&[2, 3, 4, 2], 15).select(3usize, 1)?, &r(&[4, 5], 16))?;
        // A product of a tensor with a view of itself (shared storage).
        let x = r(&[4, 6], 17);
        check(&x, &x.t()?)?;
    }
    Ok(())
}

#[test]
fn zero_size_dims_give_zeros_or_empty_results() -> Result<()> {
    for dtype in DType::FLOATS {
        let z = rand(&[3, 0], 1, dtype).matmul(&rand(&[0, 4], 2, dtype))?;
        assert_eq!(z.dims(), &[3, 4]);
        assert!(z.to_f64_vec()?.iter().all(|&x| x == 0.0));
        let dot = rand(&[0], 1, dtype).matmul(&rand(&[0], 2, dtype))?;
        assert_eq!((dot.rank(), dot.to_f64_vec()?), (0, vec![0.0]));
        assert_eq!(rand(&[0, 5], 1, dtype).matmul(&rand(&[5, 4], 2, dtype))?.dims(), &[0, 4]);
        assert_eq!(rand(&[3, 5], 1, dtype).matmul(&rand(&[5, 0], 2, dtype))?.dims(), &[3, 0]);
        assert_eq!(rand(&[0, 3, 5], 1, dtype).matmul(&rand(&[5, 2], 2, dtype))?.dims(), &[0, 3, 2]);
        let zb = rand(&[2, 1, 3, 0], 1, dtype).matmul(&rand(&[4, 0, 2], 2, dtype))?;
        assert_eq!(zb.dims(), &[2, 4, 3, 2]);
        assert!(zb.to_f64_vec()?.iter().all(|&x| x == 0.0));
    }
    Ok(())
}

#[test]
fn large_products_take_the_parallel_paths() -> Result<()> {
    // One product above the gemm threading threshold (2^21 multiply-adds).
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        check(&rand(&[150, 170], 1, dtype), &rand(&[170, 160], 2, dtype))?;
    }
    check(&rand(&[170, 150], 1, DType::F32).t()?, &rand(&[160, 170], 2, DType::F32).t()?)?;
    // Many small products: parallel over the batch.
    check(&rand(&[600, 8, 9], 3, DType::F32), &rand(&[600, 9, 7], 4, DType::F32))?;
    check(&rand(&[8, 9], 3, DType::F64), &rand(&[600, 7, 9], 4, DType::F64).transpose(1usize, 2usize)?)?;
    // A shared rhs folded into one large product.
    check(&rand(&[8, 100, 64], 5, DType::F32), &rand(&[64, 80], 6, DType::F32))?;
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let r = |s: &[usize], seed| rand(s, seed, DType::F64);
    let mm = |x: &[Tensor]| x[0].matmul(&x[1]);
    assert_grad("matmul 2d", mm, &[r(&[3, 4], 1), r(&[4, 2], 2)], 1e-6)?;
    assert_grad("dot", mm, &[r(&[5], 1), r(&[5], 2)], 1e-6)?;
    assert_grad("vec @ mat", mm, &[r(&[4], 1), r(&[4, 3], 2)], 1e-6)?;
    assert_grad("mat @ vec", mm, &[r(&[2, 3, 4], 1), r(&[4], 2)], 1e-6)?;
    assert_grad("broadcast batch", mm, &[r(&[2, 1, 3, 4], 3), r(&[3, 4, 2], 4)], 1e-6)?;
    assert_grad("shared rhs", mm, &[r(&[3, 2, 4], 5), r(&[4, 2], 6)], 1e-6)?;
    assert_grad("shared lhs", mm, &[r(&[2, 3], 7), r(&[2, 3, 2], 8)], 1e-6)?;
    assert_grad("size-1 rhs batch", mm, &[r(&[2, 3, 4], 5), r(&[1, 4, 2], 6)], 1e-6)?;
    assert_grad("transposed views", |x| x[0].t()?.matmul(&x[1].t()?), &[r(&[4, 3], 9), r(&[2, 4], 10)], 1e-6)?;
    assert_grad(
        "transposed shared rhs",
        |x| x[0].transpose(1usize, 2usize)?.matmul(&x[1]),
        &[r(&[2, 4, 3], 11), r(&[4, 3], 12)],
        1e-6,
    )?;
    // An empty output: the lhs gradient is a k = 0 product, all zeros.
    assert_grad("empty n", mm, &[r(&[2, 3], 13), r(&[3, 0], 14)], 1e-6)?;
    Ok(())
}

#[test]
fn errors_name_the_shapes_and_the_fix() {
    let f = |s: &[usize]| rand(s, 1, DType::F32);
    let e = f(&[2, 3]).matmul(&f(&[4, 5])).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    assert!(e.contains("last dim of lhs (3)") && e.contains("second-to-last dim of rhs (4)"), "{e}");
    let e = f(&[2, 3]).matmul(&f(&[4])).unwrap_err().to_string();
    assert!(e.contains("(3)") && e.contains("only dim of rhs (4)"), "{e}");
    let e = f(&[2, 3, 4]).matmul(&f(&[3, 4, 5])).unwrap_err().to_string();
    assert!(e.contains("batch dims") && e.contains("[2]") && e.contains("[3]") && e.contains("broadcastable"), "{e}");
    let s = Tensor::scalar(1f32, &test_device()).unwrap();
    for e in [s.matmul(&f(&[3])).unwrap_err(), f(&[3]).matmul(&s).unwrap_err()] {
        assert!(e.to_string().contains("matmul") && e.to_string().contains("rank >= 1"), "{e}");
    }
    let e = f(&[2, 3]).matmul(&rand(&[3, 2], 1, DType::F64)).unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { op: "matmul", .. }), "{e}");
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let e = rand(&[2, 3], 1, dtype).matmul(&rand(&[3, 2], 2, dtype)).unwrap_err();
        assert!(matches!(e, Error::UnsupportedDType { op: "matmul", .. }), "{e}");
        assert!(e.to_string().contains("float"), "{e}");
    }
}

/// `matmul_in(.., BF16)` on f32: the product of the operands rounded to bf16, in f32, on every
/// device (the CPU rounds while packing; other devices convert), batched and transposed
/// operands included; its gradients are the rounded products of the chain rule.
#[test]
fn products_in_bf16_multiply_the_roundings_and_differentiate_in_bf16() -> Result<()> {
    let r = |x: f64| attune_tensor::f64_to_bf16(x).to_f64();
    let fused = test_device() == attune_tensor::Device::Cpu;
    for (ash, bsh, bt) in
        [(vec![3, 5, 40], vec![40, 7], false), (vec![9, 33], vec![12, 33], true), (vec![1, 1], vec![1, 1], false)]
    {
        let a = rand(&ash, 1, DType::F32).to_var()?;
        let b0 = rand(&bsh, 2, DType::F32).to_var()?;
        let b = if bt { b0.t()? } else { b0.as_tensor().clone() };
        let c = a.matmul_in(&b, DType::BF16)?;
        assert_eq!(c.dtype(), DType::F32);
        let round = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(DType::F64)?.to_vec::<f64>()?.into_iter().map(r).collect())
        };
        let (av, bv) = (round(&a)?, round(&b.contiguous()?)?);
        let (shape, want, mag) = naive(&av, &ash, &bv, b.dims());
        assert_eq!(c.dims(), &shape[..]);
        let got = c.to_dtype(DType::F64)?.to_vec::<f64>()?;
        for ((g, w), m) in got.iter().zip(&want).zip(&mag) {
            // f32 accumulation on the CPU; a bf16-rounded result elsewhere.
            let tol = if fused { 1e-6 * (1.0 + m) } else { m * 2f64.powi(-8) + 1e-6 };
            assert!((g - w).abs() <= tol, "{ash:?} @ {bsh:?}: {g} vs {w}");
        }
        // d sum(w * c) / da = round(w) @ round(b)^T (and likewise for b).
        let wgt = rand(c.dims(), 3, DType::F32);
        let grads = c.mul(&wgt)?.sum_all()?.backward()?;
        let gw = round(&wgt)?;
        let (m, k, n) =
            (av.len() / ash[ash.len() - 1], ash[ash.len() - 1], want.len() / (av.len() / ash[ash.len() - 1]));
        let ga = grads.get(&a).expect("a's gradient").to_dtype(DType::F64)?.to_vec::<f64>()?;
        let gb = grads.get(&b0).expect("b's gradient");
        let gb = if bt { gb.t()?.contiguous()? } else { gb.clone() }.to_dtype(DType::F64)?.to_vec::<f64>()?;
        // Within f32 accumulation on the CPU; elsewhere the gradient is a bf16 result too.
        let close = |got: f64, terms: &mut dyn Iterator<Item = f64>, what: String| {
            let (w, mag) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
            let tol = if fused { 1e-5 * (1.0 + mag) } else { mag * 2f64.powi(-7) + 1e-5 };
            assert!((got - w).abs() <= tol, "{what}: {got} vs {w}");
        };
        for i in 0..m {
            for p in 0..k {
                close(ga[i * k + p], &mut (0..n).map(|j| gw[i * n + j] * bv[p * n + j]), format!("da[{i},{p}]"));
            }
        }
        for p in 0..k {
            for j in 0..n {
                close(gb[p * n + j], &mut (0..m).map(|i| av[i * k + p] * gw[i * n + j]), format!("db[{p},{j}]"));
            }
        }
    }
    // compute = the operands' dtype is plain matmul; a non-float compute dtype is refused.
    let (a, b) = (rand(&[4, 6], 4, DType::F32), rand(&[6, 2], 5, DType::F32));
    assert_eq!(a.matmul_in(&b, DType::F32)?.to_vec::<f32>()?, a.matmul(&b)?.to_vec::<f32>()?);
    assert!(a.matmul_in(&b, DType::I64).is_err());
    Ok(())
}

/// `matmul_bias` (Linear's op) is `matmul_in` then `add` bit for bit, forward and gradients,
/// fused (CPU f32/f64, bf16 products included) or composed, and has finite-difference
/// gradients.
#[test]
fn matmul_bias_is_the_product_plus_bias_bit_for_bit() -> Result<()> {
    for (dt, compute) in [(DType::F32, DType::F32), (DType::F32, DType::BF16), (DType::F64, DType::F64)] {
        for (m, k, n) in [(70, 33, 130), (1, 5, 1), (600, 16, 128)] {
            let a = rand(&[m, k], 1, dt).to_var()?;
            let w = rand(&[n, k], 2, dt).to_var()?;
            let bias = rand(&[n], 3, dt).to_var()?;
            let wgt = rand(&[m, n], 4, dt);
            let fused = a.matmul_bias(&w.t()?, &bias, compute)?;
            let plain = a.matmul_in(&w.t()?, compute)?.add(&bias)?;
            assert_eq!(fused.to_dtype(DType::F64)?.to_vec::<f64>()?, plain.to_dtype(DType::F64)?.to_vec::<f64>()?);
            let gf = fused.mul(&wgt)?.sum_all()?.backward()?;
            let gp = plain.mul(&wgt)?.sum_all()?.backward()?;
            for v in [&a, &w, &bias] {
                let f = gf.get(v).expect("a gradient").to_dtype(DType::F64)?.to_vec::<f64>()?;
                assert_eq!(f, gp.get(v).expect("a gradient").to_dtype(DType::F64)?.to_vec::<f64>()?, "{dt} {compute}");
            }
        }
    }
    let r = |s: &[usize], seed| rand(s, seed, DType::F64);
    assert_grad(
        "matmul_bias",
        |x| x[0].matmul_bias(&x[1], &x[2], DType::F64),
        &[r(&[3, 4], 5), r(&[4, 2], 6), r(&[2], 7)],
        1e-6,
    )?;
    // Not a Linear's shapes: the composition, with its own broadcasting and errors.
    let (a, b) = (rand(&[2, 3, 4], 8, DType::F32), rand(&[4, 5], 9, DType::F32));
    let want = a.matmul(&b)?.add(&rand(&[5], 10, DType::F32))?.to_vec::<f32>()?;
    assert_eq!(a.matmul_bias(&b, &rand(&[5], 10, DType::F32), DType::F32)?.to_vec::<f32>()?, want);
    assert!(a.matmul_bias(&b, &rand(&[6], 10, DType::F32), DType::F32).is_err());
    Ok(())
}
