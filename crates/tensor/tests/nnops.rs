//! Fused neural-network ops (layer_norm, rms_norm, cross_entropy) against naive f64
//! references, their gradients (finite differences and composed primitives), and Display.

use attune_tensor::grad_check::assert_grad;
use attune_tensor::ops::loss::{CrossEntropyOpts, Reduction};
use attune_tensor::testing::test_device;
use attune_tensor::{DType, Device, Error, Result, Tensor, Var};

/// Deterministic values in [lo, hi).
fn rand(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_slice(v, shape, &test_device()).unwrap().to_dtype(dtype).unwrap()
}

/// `|got - want| <= atol + rtol * |want|` element-wise, NaN only where expected.
fn assert_close(got: &[f64], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// (atol, rtol) for results stored in `dtype` with values of magnitude ~1-5.
fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-12, 1e-12),
        DType::F32 => (2e-5, 2e-5),
        DType::F16 => (2e-3, 2e-3),
        _ => (1.6e-2, 8e-3),
    }
}

// ----- layer_norm / rms_norm ------------------------------------------------------------

/// Naive f64 layer norm (or RMS norm) over rows of `d`.
fn naive_norm(x: &[f64], d: usize, w: Option<&[f64]>, b: Option<&[f64]>, eps: f64, rms: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let mean = if rms { 0.0 } else { row.iter().sum::<f64>() / d as f64 };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter().enumerate() {
            out.push((v - mean) * rstd * w.map_or(1.0, |w| w[j]) + b.map_or(0.0, |b| b[j]));
        }
    }
    out
}

#[test]
fn norms_match_naive_reference_for_every_dtype_and_size() -> Result<()> {
    // (shape) : one row, a few rows with a ragged length, a rank-3 input, and enough rows
    // for the parallel path.
    let shapes: [&[usize]; 4] = [&[1, 7], &[3, 33], &[2, 3, 17], &[64, 1024]];
    for dtype in DType::FLOATS {
        let (atol, rtol) = tol(dtype);
        for (k, shape) in shapes.iter().enumerate() {
            let d = *shape.last().unwrap();
            let n: usize = shape.iter().product();
            let x = tensor(&rand(n, k as u64, -3.0, 3.0), shape, dtype);
            let w = tensor(&rand(d, 10 + k as u64, 0.5, 1.5), &[d], dtype);
            let b = tensor(&rand(d, 20 + k as u64, -1.0, 1.0), &[d], dtype);
            let (xv, wv, bv) = (x.to_f64_vec()?, w.to_f64_vec()?, b.to_f64_vec()?);
            for (use_w, use_b) in [(false, false), (true, false), (false, true), (true, true)] {
                let (wo, bo) = (use_w.then_some(&w), use_b.then_some(&b));
                let (wr, br) = (use_w.then_some(&wv[..]), use_b.then_some(&bv[..]));
                let what = format!("layer_norm {dtype} {shape:?} w={use_w} b={use_b}");
                let y = x.layer_norm(wo, bo, 1e-5)?;
                assert_eq!((y.dims(), y.dtype()), (&shape[..], dtype), "{what}");
                assert_close(&y.to_f64_vec()?, &naive_norm(&xv, d, wr, br, 1e-5, false), atol, rtol, &what);
                if !use_b {
                    let what = format!("rms_norm {dtype} {shape:?} w={use_w}");
                    let y = x.rms_norm(wo, 1e-6)?;
                    assert_close(&y.to_f64_vec()?, &naive_norm(&xv, d, wr, None, 1e-6, true), atol, rtol, &what);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn norms_accept_views_and_zero_size_inputs() -> Result<()> {
    let (r, d) = (5, 6);
    let base = tensor(&rand(r * d, 3, -2.0, 2.0), &[d, r], DType::F32);
    let xt = base.t()?; // [r, d], not contiguous
    assert!(!xt.is_contiguous());
    let wide = tensor(&rand(2 * d, 4, 0.5, 1.5), &[2 * d], DType::F32);
    let w = wide.narrow(0usize, 3, d)?; // a view with an offset
    let want = naive_norm(&xt.to_f64_vec()?, d, Some(&w.to_f64_vec()?), None, 1e-5, false);
    assert_close(&xt.layer_norm(Some(&w), None, 1e-5)?.to_f64_vec()?, &want, 2e-5, 2e-5, "transposed");
    // A weight broadcast from one value (stride 0).
    let wb = Tensor::full(1.5, 1, DType::F32, &test_device())?.broadcast_as([d])?;
    let want = naive_norm(&xt.to_f64_vec()?, d, Some(&[1.5; 6]), None, 1e-6, true);
    assert_close(&xt.rms_norm(Some(&wb), 1e-6)?.to_f64_vec()?, &want, 2e-5, 2e-5, "broadcast weight");
    // A broadcast input normalises every (identical) row the same way.
    let row = tensor(&rand(d, 5, -2.0, 2.0), &[1, d], DType::F64);
    let y = row.broadcast_as([4, d])?.rms_norm(None, 1e-6)?.to_vec2::<f64>()?;
    let want = naive_norm(&row.to_f64_vec()?, d, None, None, 1e-6, true);
    assert!(y.iter().all(|r| r == &y[0]));
    assert_close(&y[0], &want, 1e-12, 1e-12, "broadcast");
    for shape in [[0usize, 4], [3, 0]] {
        let x = Tensor::zeros(shape, DType::F32, &test_device())?;
        assert_eq!(x.layer_norm(None, None, 1e-5)?.dims(), &shape);
        assert_eq!(x.rms_norm(None, 1e-5)?.dims(), &shape);
    }
    Ok(())
}

#[test]
fn layer_norm_statistics_are_stable_for_large_offsets() -> Result<()> {
    // Values near 1e4 with unit spread: E[x^2] - E[x]^2 would lose everything in f32.
    let v: Vec<f64> = rand(4 * 256, 9, -1.0, 1.0).iter().map(|x| 1e4 + x).collect();
    let x = tensor(&v, &[4, 256], DType::F32);
    let want = naive_norm(&x.to_f64_vec()?, 256, None, None, 1e-5, false);
    assert_close(&x.layer_norm(None, None, 1e-5)?.to_f64_vec()?, &want, 2e-3, 2e-3, "offset");
    Ok(())
}

#[test]
fn norm_errors_name_the_problem() {
    let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32);
    let e = Tensor::from_slice(&[1i64, 2], 2, &test_device()).unwrap().layer_norm(None, None, 1e-5).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { .. }) && e.to_string().contains("layer_norm"), "{e}");
    let w3 = tensor(&[1.0; 3], &[3], DType::F32);
    let e = x.layer_norm(Some(&w3), None, 1e-5).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }) && e.to_string().contains("shape [2]"), "{e}");
    let e = x.rms_norm(Some(&w3.narrow(0usize, 0, 2).unwrap().to_dtype(DType::F64).unwrap()), 1e-5).unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { .. }) && e.to_string().contains("rms_norm"), "{e}");
    let e = Tensor::scalar(1f32, &test_device()).unwrap().rms_norm(None, 1e-5).unwrap_err().to_string();
    assert!(e.contains("rms_norm") && e.contains("scalar"), "{e}");
    let e = x.layer_norm(None, None, -1.0).unwrap_err().to_string();
    assert!(e.contains("eps") && e.contains("-1"), "{e}");
}

#[test]
fn norm_gradients_pass_finite_difference_checks() -> Result<()> {
    let x = tensor(&rand(12, 31, -2.0, 2.0), &[3, 4], DType::F64);
    let w = tensor(&rand(4, 32, 0.5, 1.5), &[4], DType::F64);
    let b = tensor(&rand(4, 33, -1.0, 1.0), &[4], DType::F64);
    let xwb = [x.clone(), w.clone(), b];
    assert_grad("layer_norm", |t| t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5), &xwb, 1e-6)?;
    assert_grad("layer_norm plain", |t| t[0].layer_norm(None, None, 1e-5), std::slice::from_ref(&x), 1e-6)?;
    assert_grad("layer_norm view", |t| t[0].t()?.layer_norm(None, None, 1e-5), std::slice::from_ref(&x), 1e-6)?;
    assert_grad("rms_norm", |t| t[0].rms_norm(Some(&t[1]), 1e-6), &[x.clone(), w], 1e-6)?;
    assert_grad("rms_norm plain", |t| t[0].rms_norm(None, 1e-6), &[x], 1e-6)?;
    Ok(())
}

/// Layer norm (or RMS norm) from primitives: mean, sub, mul, exp/log for 1/sqrt.
fn composed_norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let xc = match b {
        Some(_) => x.sub(&x.mean(-1isize, true)?)?,
        None => x.clone(),
    };
    let var = xc.mul(&xc)?.mean(-1isize, true)?;
    let rstd = var.add_scalar(eps)?.log()?.mul_scalar(-0.5)?.exp()?;
    let y = xc.mul(&rstd)?.mul(w)?;
    match b {
        Some(b) => y.add(b),
        None => Ok(y),
    }
}

#[test]
fn fused_norm_gradients_equal_composed_primitives() -> Result<()> {
    // Small and parallel-path sizes; f64 exactly and f32 within rounding.
    for (dtype, (r, d), tol) in
        [(DType::F64, (3, 5), 1e-12), (DType::F64, (96, 512), 1e-10), (DType::F32, (40, 1000), 2e-4)]
    {
        for rms in [false, true] {
            let x = Var::from_tensor(&tensor(&rand(r * d, 41, -2.0, 2.0), &[r, d], dtype))?;
            let w = Var::from_tensor(&tensor(&rand(d, 42, 0.5, 1.5), &[d], dtype))?;
            let b = Var::from_tensor(&tensor(&rand(d, 43, -1.0, 1.0), &[d], dtype))?;
            let up = tensor(&rand(r * d, 44, -1.0, 1.0), &[r, d], dtype);
            let (fused, composed) = if rms {
                (x.rms_norm(Some(&w), 1e-5)?, composed_norm(&x, &w, None, 1e-5)?)
            } else {
                (x.layer_norm(Some(&w), Some(&b), 1e-5)?, composed_norm(&x, &w, Some(&b), 1e-5)?)
            };
            let gf = fused.mul(&up)?.sum_all()?.backward()?;
            let gc = composed.mul(&up)?.sum_all()?.backward()?;
            let params: &[&Var] = if rms { &[&x, &w] } else { &[&x, &w, &b] };
            for (i, p) in params.iter().enumerate() {
                let (a, c) = (gf.get(p).unwrap().to_f64_vec()?, gc.get(p).unwrap().to_f64_vec()?);
                let scale = c.iter().fold(1f64, |m, v| m.max(v.abs()));
                assert_close(&a, &c, tol * scale, tol, &format!("{dtype} rms={rms} [{r}, {d}] input {i}"));
            }
        }
    }
    Ok(())
}

#[test]
fn low_precision_norm_gradients_track_f64() -> Result<()> {
    let (r, d) = (8, 64);
    let xv = rand(r * d, 51, -2.0, 2.0);
    let grads = |dtype: DType| -> Result<Vec<f64>> {
        let x = Var::from_tensor(&tensor(&xv, &[r, d], dtype))?;
        let g = x.layer_norm(None, None, 1e-5)?.mul(&x)?.sum_all()?.backward()?;
        g.get(&x).unwrap().to_f64_vec()
    };
    let want = grads(DType::F64)?;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let (atol, rtol) = tol(dtype);
        assert_close(&grads(dtype)?, &want, 4.0 * atol, 4.0 * rtol, &format!("{dtype}"));
    }
    Ok(())
}

// ----- cross_entropy --------------------------------------------------------------------

/// Naive per-row loss in f64 (None for ignored rows).
fn naive_ce(x: &[f64], c: usize, t: &[i64], ignore: Option<i64>, s: f64) -> Vec<Option<f64>> {
    x.chunks(c)
        .zip(t)
        .map(|(row, &t)| {
            if Some(t) == ignore {
                return None;
            }
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            let logp: Vec<f64> = row.iter().map(|v| v - lse).collect();
            let smooth = -logp.iter().sum::<f64>() / c as f64;
            Some((1.0 - s) * -logp[t as usize] + s * smooth)
        })
        .collect()
}

fn reduce(rows: &[Option<f64>], r: Reduction) -> Vec<f64> {
    let count = rows.iter().flatten().count();
    let sum: f64 = rows.iter().flatten().sum();
    match r {
        Reduction::Mean => vec![if count == 0 { 0.0 } else { sum / count as f64 }],
        Reduction::Sum => vec![sum],
        Reduction::None => rows.iter().map(|v| v.unwrap_or(0.0)).collect(),
    }
}

fn targets(n: usize, c: usize, seed: u64, ignore_every: usize) -> Vec<i64> {
    let v = rand(n, seed, 0.0, c as f64);
    v.iter()
        .enumerate()
        .map(|(i, &x)| if ignore_every > 0 && i % ignore_every == 1 { -100 } else { x as i64 })
        .collect()
}

#[test]
fn cross_entropy_matches_naive_reference() -> Result<()> {
    let shapes: [&[usize]; 4] = [&[1, 3], &[5, 7], &[2, 3, 11], &[512, 100]];
    for dtype in DType::FLOATS {
        let (atol, rtol) = tol(dtype);
        for (k, shape) in shapes.iter().enumerate() {
            let (&c, lead) = shape.split_last().unwrap();
            let n = lead.iter().product();
            let x = tensor(&rand(n * c, 60 + k as u64, -4.0, 4.0), shape, dtype);
            let xv = x.to_f64_vec()?;
            for (ignore_every, smoothing) in [(0, 0.0), (3, 0.0), (0, 0.1), (3, 0.25)] {
                let t = targets(n, c, 70 + k as u64, ignore_every);
                let ti64 = Tensor::from_slice(&t, lead, &test_device())?;
                let rows = naive_ce(&xv, c, &t, Some(-100), smoothing);
                for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                    let opts = CrossEntropyOpts { label_smoothing: smoothing, reduction, ..Default::default() };
                    let what = format!("{dtype} {shape:?} ignore_every={ignore_every} s={smoothing} {reduction:?}");
                    let loss = x.cross_entropy(&ti64, opts)?;
                    assert_eq!(loss.dtype(), dtype);
                    assert_eq!(loss.dims(), if reduction == Reduction::None { lead } else { &[] }, "{what}");
                    let want = reduce(&rows, reduction);
                    let scale = if reduction == Reduction::Sum { n as f64 } else { 1.0 };
                    assert_close(&loss.to_f64_vec()?, &want, atol * scale, rtol, &what);
                }
                // u32 targets have no -100: ignore class 0 instead.
                let tu: Vec<u32> = targets(n, c, 80 + k as u64, 0).iter().map(|&v| v as u32).collect();
                let rows = naive_ce(&xv, c, &tu.iter().map(|&v| v as i64).collect::<Vec<_>>(), Some(0), smoothing);
                let opts =
                    CrossEntropyOpts { ignore_index: Some(0), label_smoothing: smoothing, reduction: Reduction::Mean };
                let loss = x.cross_entropy(&Tensor::from_slice(&tu, lead, &test_device())?, opts)?;
                assert_close(&loss.to_f64_vec()?, &reduce(&rows, Reduction::Mean), atol, rtol, "u32 targets");
            }
        }
    }
    Ok(())
}

#[test]
fn cross_entropy_is_stable_and_handles_edge_cases() -> Result<()> {
    // Huge logits: a naive exp would overflow.
    let xv: Vec<f64> = rand(4 * 6, 90, -1.0, 1.0).iter().map(|v| v * 1000.0).collect();
    let x = tensor(&xv, &[4, 6], DType::F32);
    let t = [0i64, 5, 2, 3];
    let loss = x.cross_entropy(&Tensor::from_slice(&t, 4, &test_device())?, Default::default())?;
    let want = reduce(&naive_ce(&x.to_f64_vec()?, 6, &t, None, 0.0), Reduction::Mean);
    assert_close(&loss.to_f64_vec()?, &want, 1e-3, 1e-6, "large logits");
    // Non-contiguous logits give the same loss as their contiguous copy.
    let xt = tensor(&xv, &[6, 4], DType::F64).t()?;
    let tt = Tensor::from_slice(&t, 4, &test_device())?;
    let a = xt.cross_entropy(&tt, Default::default())?.to_scalar::<f64>()?;
    let b = xt.contiguous()?.cross_entropy(&tt, Default::default())?.to_scalar::<f64>()?;
    assert_eq!(a, b);
    // Unbatched logits [C] with a scalar target.
    let l =
        tensor(&xv[..6], &[6], DType::F64).cross_entropy(&Tensor::scalar(2i64, &test_device())?, Default::default())?;
    assert_close(&[l.to_scalar::<f64>()?], &[naive_ce(&xv[..6], 6, &[2], None, 0.0)[0].unwrap()], 1e-12, 1e-12, "[C]");
    // Every target ignored: mean is 0 (PyTorch: NaN) and the gradient is zero.
    let x = Var::from_tensor(&tensor(&xv, &[4, 6], DType::F64))?;
    let all_ignored = Tensor::from_slice(&[-100i64; 4], 4, &test_device())?;
    let loss = x.cross_entropy(&all_ignored, Default::default())?;
    assert_eq!(loss.to_scalar::<f64>()?, 0.0);
    assert!(loss.backward()?.get(&x).unwrap().to_f64_vec()?.iter().all(|&g| g == 0.0));
    // No rows at all.
    let empty = Tensor::zeros([0, 5], DType::F32, &test_device())?;
    let none = Tensor::zeros(0, DType::I64, &test_device())?;
    assert_eq!(empty.cross_entropy(&none, Default::default())?.to_scalar::<f32>()?, 0.0);
    let opts = CrossEntropyOpts { reduction: Reduction::None, ..Default::default() };
    assert_eq!(empty.cross_entropy(&none, opts)?.dims(), &[0]);
    Ok(())
}

#[test]
fn cross_entropy_errors_name_the_problem() {
    let x = tensor(&rand(10, 1, -1.0, 1.0), &[2, 5], DType::F32);
    let ce = |t: Tensor| x.cross_entropy(&t, Default::default()).unwrap_err();
    let e = ce(Tensor::from_slice(&[1i64, 5], 2, &test_device()).unwrap());
    assert!(matches!(e, Error::IndexOutOfRange { index: 5, size: 5, .. }), "{e}");
    assert!(e.to_string().contains("cross_entropy"), "{e}");
    let e = ce(Tensor::from_slice(&[-1i64, 0], 2, &test_device()).unwrap());
    assert!(matches!(e, Error::IndexOutOfRange { index: -1, .. }), "{e}");
    let e = ce(Tensor::from_slice(&[1u32, 2, 3], 3, &test_device()).unwrap());
    assert!(matches!(e, Error::ShapeMismatch { .. }) && e.to_string().contains("[2]"), "{e}");
    let e = ce(Tensor::from_slice(&[1f32, 2.0], 2, &test_device()).unwrap());
    assert!(matches!(e, Error::UnsupportedDType { dtype: DType::F32, .. }) && e.to_string().contains("integer"), "{e}");
    let t = Tensor::from_slice(&[1i64, 2], 2, &test_device()).unwrap();
    let e =
        Tensor::zeros([2, 5], DType::I64, &test_device()).unwrap().cross_entropy(&t, Default::default()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { dtype: DType::I64, .. }), "{e}");
    let opts = CrossEntropyOpts { label_smoothing: 1.5, ..Default::default() };
    let e = x.cross_entropy(&t, opts).unwrap_err().to_string();
    assert!(e.contains("label_smoothing") && e.contains("1.5"), "{e}");
}

#[test]
fn cross_entropy_gradients_pass_finite_difference_checks() -> Result<()> {
    let x = tensor(&rand(4 * 2 * 5, 100, -2.0, 2.0), &[4, 2, 5], DType::F64);
    let t = Tensor::from_slice(&[0i64, 4, -100, 2, 1, 3, 3, -100], [4, 2], &test_device())?;
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for s in [0.0, 0.2] {
            let opts = CrossEntropyOpts { label_smoothing: s, reduction, ..Default::default() };
            let name = format!("cross_entropy {reduction:?} s={s}");
            assert_grad(&name, |v| v[0].cross_entropy(&t, opts), std::slice::from_ref(&x), 1e-6)?;
            assert_grad(
                &name,
                |v| v[0].transpose(0usize, 1usize)?.cross_entropy(&t.t()?, opts),
                std::slice::from_ref(&x),
                1e-6,
            )?;
        }
    }
    Ok(())
}

#[test]
fn fused_cross_entropy_equals_composed_primitives() -> Result<()> {
    let (n, c) = (6, 9);
    let xv = rand(n * c, 110, -3.0, 3.0);
    let t = [3i64, -100, 0, 8, 8, 1];
    let mut onehot = vec![0.0; n * c];
    let mut valid = vec![0.0; n];
    for (i, &ti) in t.iter().enumerate() {
        if ti >= 0 {
            onehot[i * c + ti as usize] = 1.0;
            valid[i] = 1.0;
        }
    }
    let (onehot, valid) = (tensor(&onehot, &[n, c], DType::F64), tensor(&valid, &[n], DType::F64));
    for s in [0.0, 0.3] {
        let x = Var::from_tensor(&tensor(&xv, &[n, c], DType::F64))?;
        let opts = CrossEntropyOpts { label_smoothing: s, ..Default::default() };
        let fused = x.cross_entropy(&Tensor::from_slice(&t, n, &test_device())?, opts)?;
        let logp = x.sub(&x.exp()?.sum(-1isize, true)?.log()?)?;
        let nll = logp.mul(&onehot)?.sum(-1isize, false)?.neg()?;
        let smooth = logp.mean(-1isize, false)?.neg()?;
        let rows = nll.mul_scalar(1.0 - s)?.add(&smooth.mul_scalar(s)?)?.mul(&valid)?;
        let composed = rows.sum_all()?.div_scalar(5.0)?;
        assert_close(&[fused.to_scalar::<f64>()?], &[composed.to_scalar::<f64>()?], 1e-12, 1e-12, "loss");
        let (gf, gc) = (fused.backward()?, composed.backward()?);
        let (a, b) = (gf.get(&x).unwrap().to_f64_vec()?, gc.get(&x).unwrap().to_f64_vec()?);
        assert_close(&a, &b, 1e-12, 1e-10, &format!("grad s={s}"));
    }
    Ok(())
}

#[test]
fn cross_entropy_parallel_gradient_matches_naive_softmax() -> Result<()> {
    // 512 x 100 runs the parallel kernels; the gradient is (softmax - onehot) / count.
    let (n, c) = (512, 100);
    let xv = rand(n * c, 120, -4.0, 4.0);
    let t = targets(n, c, 121, 4);
    let x = Var::from_tensor(&tensor(&xv, &[n, c], DType::F32))?;
    let g = x.cross_entropy(&Tensor::from_slice(&t, n, &test_device())?, Default::default())?.backward()?;
    let count = t.iter().filter(|&&v| v != -100).count() as f64;
    let mut want = vec![0.0; n * c];
    for (i, row) in xv.chunks(c).enumerate() {
        if t[i] == -100 {
            continue;
        }
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for j in 0..c {
            let p = (row[j] - m).exp() / z;
            want[i * c + j] = (p - if j as i64 == t[i] { 1.0 } else { 0.0 }) / count;
        }
    }
    assert_close(&g.get(&x).unwrap().to_f64_vec()?, &want, 1e-8, 1e-4, "parallel grad");
    Ok(())
}

// ----- Display --------------------------------------------------------------------------

/// [`tensor`] moved to the CPU, for the formatting tests (their expected strings say cpu).
fn tensor_on_cpu(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    tensor(v, shape, dtype).to_device(&Device::Cpu).expect("to the CPU")
}

#[test]
// Formatting is device-independent (GPU tensors are shown from a host copy; see
// gpu_elementwise.rs), so these build on the CPU under every ATTUNE_TEST_DEVICE.
fn display_aligns_columns_like_pytorch() -> Result<()> {
    let x = tensor_on_cpu(&[1.0, -2.5, 3.0, 4.0], &[2, 2], DType::F32);
    assert_eq!(x.to_string(), "tensor([[ 1.0000, -2.5000],\n        [ 3.0000,  4.0000]], dtype=f32, device=cpu)");
    assert_eq!(format!("{x:.2}"), "tensor([[ 1.00, -2.50],\n        [ 3.00,  4.00]], dtype=f32, device=cpu)");
    let i = Tensor::from_slice(&[1i64, -20, 300, 4], [2, 2], &Device::Cpu)?;
    assert_eq!(i.to_string(), "tensor([[  1, -20],\n        [300,   4]], dtype=i64, device=cpu)");
    let u = Tensor::from_slice(&[7u8, 255], 2, &Device::Cpu)?;
    assert_eq!(u.to_string(), "tensor([  7, 255], dtype=u8, device=cpu)");
    // The transposed view prints its own (logical) order.
    assert_eq!(i.t()?.to_string(), "tensor([[  1, 300],\n        [-20,   4]], dtype=i64, device=cpu)");
    let cube = Tensor::from_slice(&[0u32, 1, 2, 3, 4, 5, 6, 7], [2, 2, 2], &Device::Cpu)?;
    assert_eq!(
        cube.to_string(),
        "tensor([[[0, 1],\n         [2, 3]],\n\n        [[4, 5],\n         [6, 7]]], dtype=u32, device=cpu)"
    );
    Ok(())
}

#[test]
fn display_scalars_empty_and_special_values() -> Result<()> {
    assert_eq!(Tensor::scalar(3.5f64, &Device::Cpu)?.to_string(), "tensor(3.5000, dtype=f64, device=cpu)");
    assert_eq!(Tensor::scalar(-7i64, &Device::Cpu)?.to_string(), "tensor(-7, dtype=i64, device=cpu)");
    assert_eq!(Tensor::zeros(0, DType::F32, &Device::Cpu)?.to_string(), "tensor([], dtype=f32, device=cpu)");
    assert_eq!(
        Tensor::zeros([0, 3], DType::BF16, &Device::Cpu)?.to_string(),
        "tensor([], shape=[0, 3], dtype=bf16, device=cpu)"
    );
    let s = tensor_on_cpu(&[f64::NAN, f64::INFINITY, -1.5, f64::NEG_INFINITY], &[4], DType::F16);
    assert_eq!(s.to_string(), "tensor([    nan,     inf, -1.5000,    -inf], dtype=f16, device=cpu)");
    // A wide range switches to scientific notation, as in PyTorch.
    let s = tensor_on_cpu(&[1e-5, 1.0, -250.0], &[3], DType::F64);
    assert_eq!(s.to_string(), "tensor([ 1.0000e-05,  1.0000e+00, -2.5000e+02], dtype=f64, device=cpu)");
    Ok(())
}

#[test]
fn display_elides_large_tensors_and_wraps_long_rows() -> Result<()> {
    let v: Vec<i64> = (0..2000).collect();
    let x = Tensor::from_slice(&v, [2, 1000], &Device::Cpu)?;
    assert_eq!(
        x.to_string(),
        "tensor([[   0,    1,    2,  ...,  997,  998,  999],\n        [1000, 1001, 1002,  ..., 1997, 1998, 1999]], dtype=i64, device=cpu)"
    );
    let y = Tensor::from_slice(&v, [100, 20], &Device::Cpu)?.to_string();
    let lines: Vec<&str> = y.lines().collect();
    assert_eq!(lines.len(), 7, "{y}");
    assert_eq!(lines[0], "tensor([[   0,    1,    2,  ...,   17,   18,   19],");
    assert_eq!(lines[3], "        ...,");
    assert!(lines[6].starts_with("        [1980, 1981, 1982,  ..., 1997, 1998, 1999]]"), "{y}");
    // Exactly 1000 elements are shown in full; rows longer than 80 columns wrap.
    let f = Tensor::from_slice(&(0..1000).map(|i| i as f32).collect::<Vec<_>>(), 1000, &Device::Cpu)?.to_string();
    assert!(!f.contains("...") && f.contains("999.0000"), "{f}");
    assert!(f.lines().all(|l| l.len() <= 80), "{f}");
    let w = Tensor::from_slice(&(0..30).map(|i| i as f32).collect::<Vec<_>>(), 30, &Device::Cpu)?.to_string();
    let lines: Vec<&str> = w.lines().collect();
    assert_eq!(lines.len(), 5, "{w}");
    assert_eq!(lines[1], "         8.0000,  9.0000, 10.0000, 11.0000, 12.0000, 13.0000, 14.0000, 15.0000,");
    // As in PyTorch, a suffix that would overflow the line starts a new one.
    assert_eq!(lines[3], "        24.0000, 25.0000, 26.0000, 27.0000, 28.0000, 29.0000], dtype=f32,");
    assert_eq!(lines[4], "       device=cpu)");
    Ok(())
}
