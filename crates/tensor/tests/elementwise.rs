//! Element-wise ops (unary, binary, comparisons, where_cond) against naive f64 references:
//! every dtype, broadcasting, non-contiguous views, zero-size dims, gradients and errors.

use attune_tensor::grad_check::assert_grad;
use attune_tensor::testing::test_device;
use attune_tensor::{DType, Result, Tensor, Var};
use std::f64::consts::{FRAC_1_SQRT_2, PI};

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &test_device()).unwrap()
}

/// Deterministic values in [lo, hi).
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// (atol, rtol) for results computed from inputs already rounded to `dt`: one rounding of the
/// output (one ulp allowed) plus the f32/f64 math.
fn tol(dt: DType) -> (f64, f64) {
    match dt {
        DType::F64 => (1e-14, 1e-12),
        DType::F32 => (1e-6, 1e-6),
        DType::F16 => (1e-5, 1.0 / 1024.0),
        DType::BF16 => (1e-5, 1.0 / 128.0),
        _ => (0.0, 0.0),
    }
}

fn assert_close(got: &[f64], want: &[f64], dt: DType, what: &str) {
    let (atol, rtol) = tol(dt);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{what} [{dt}] element {i}: got {g}, want {w}");
    }
}

/// `v` (row-major, shape `s`) broadcast to `out` under NumPy rules, by index arithmetic.
fn bcast(v: &[f64], s: &[usize], out: &[usize]) -> Vec<f64> {
    let n: usize = out.iter().product();
    (0..n)
        .map(|mut i| {
            let (mut src, mut stride) = (0, 1);
            for k in (0..out.len()).rev() {
                let c = i % out[k];
                i /= out[k];
                if let Some(sk) = (k + s.len()).checked_sub(out.len()) {
                    if s[sk] != 1 {
                        src += c * stride;
                    }
                    stride *= s[sk];
                }
            }
            v[src]
        })
        .collect()
}

// ----- independent references ---------------------------------------------------------------

/// Composite Simpson rule with `n` (even) intervals.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let h = (b - a) / n as f64;
    let inner: f64 = (1..n).map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
    (f(a) + f(b) + inner) * h / 3.0
}

/// erfc for x >= 1 by quadrature: with t = x + u/(2x),
/// erfc(x) = e^(-x^2) / (x sqrt(pi)) * integral over u >= 0 of e^(-u - u^2/(4x^2)).
fn erfc_ref(x: f64) -> f64 {
    assert!(x >= 1.0);
    let i = simpson(|u| (-u - u * u / (4.0 * x * x)).exp(), 0.0, 45.0, 20_000);
    (-x * x).exp() / (x * PI.sqrt()) * i
}

fn erf_ref(x: f64) -> f64 {
    if x.abs() < 1.0 {
        2.0 / PI.sqrt() * simpson(|t| (-t * t).exp(), 0.0, x, 2_000)
    } else {
        x.signum() * (1.0 - erfc_ref(x.abs()))
    }
}

/// The standard normal CDF without cancellation for negative x.
fn phi_cdf_ref(x: f64) -> f64 {
    let z = -x * FRAC_1_SQRT_2;
    if z >= 1.0 { 0.5 * erfc_ref(z) } else { 0.5 * (1.0 + erf_ref(-z)) }
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gelu_tanh_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

type UnaryCase = (&'static str, fn(&Tensor) -> Result<Tensor>, fn(f64) -> f64, f64, f64);

fn unary_cases() -> Vec<UnaryCase> {
    vec![
        ("neg", |t| t.neg(), |x| -x, -3.0, 3.0),
        ("abs", |t| t.abs(), f64::abs, -3.0, 3.0),
        (
            "sign",
            |t| t.sign(),
            |x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            },
            -3.0,
            3.0,
        ),
        ("exp", |t| t.exp(), f64::exp, -4.0, 4.0),
        ("log", |t| t.log(), f64::ln, 0.05, 6.0),
        ("sqrt", |t| t.sqrt(), f64::sqrt, 0.0, 9.0),
        ("rsqrt", |t| t.rsqrt(), |x| 1.0 / x.sqrt(), 0.05, 9.0),
        ("sin", |t| t.sin(), f64::sin, -7.0, 7.0),
        ("cos", |t| t.cos(), f64::cos, -7.0, 7.0),
        ("tanh", |t| t.tanh(), f64::tanh, -5.0, 5.0),
        ("sigmoid", |t| t.sigmoid(), sigmoid_ref, -9.0, 9.0),
        ("relu", |t| t.relu(), |x| x.max(0.0), -3.0, 3.0),
        ("gelu", |t| t.gelu(), gelu_tanh_ref, -5.0, 5.0),
        ("gelu_erf", |t| t.gelu_erf(), |x| x * phi_cdf_ref(x), -6.0, 6.0),
        ("erf", |t| t.erf(), erf_ref, -4.0, 4.0),
        ("silu", |t| t.silu(), |x| x * sigmoid_ref(x), -7.0, 7.0),
        ("sqr", |t| t.sqr(), |x| x * x, -4.0, 4.0),
        ("recip", |t| t.recip(), |x| 1.0 / x, 0.2, 4.0),
        ("powf 2.5", |t| t.powf(2.5), |x| x.powf(2.5), 0.0, 4.0),
        ("powf -1.5", |t| t.powf(-1.5), |x| x.powf(-1.5), 0.2, 3.0),
        ("powf 2", |t| t.powf(2.0), |x| x * x, -3.0, 3.0),
        ("pow_scalar 3", |t| t.pow_scalar(3.0), |x| x * x * x, -2.0, 2.0),
        ("clamp", |t| t.clamp(-0.5, 1.25), |x| x.clamp(-0.5, 1.25), -3.0, 3.0),
        ("clamp negative", |t| t.clamp(-2.0, -1.0), |x| x.clamp(-2.0, -1.0), -3.0, 3.0),
        ("add_scalar -2.5", |t| t.add_scalar(-2.5), |x| x - 2.5, -3.0, 3.0),
        ("mul_scalar -3", |t| t.mul_scalar(-3.0), |x| -3.0 * x, -3.0, 3.0),
        ("maximum_scalar -0.5", |t| t.maximum_scalar(-0.5), |x| x.max(-0.5), -3.0, 3.0),
        ("minimum_scalar 0.25", |t| t.minimum_scalar(0.25), |x| x.min(0.25), -3.0, 3.0),
    ]
}

#[test]
fn unary_ops_match_the_f64_reference_for_every_float_dtype() -> Result<()> {
    for (k, (name, op, reference, lo, hi)) in unary_cases().into_iter().enumerate() {
        let mut x = values(40, k as u64, lo, hi);
        x[0] = lo; // the domain's edge (0 for sqrt and powf 2.5, exact bounds elsewhere)
        for dt in DType::FLOATS {
            let input = t64(&x, &[5, 8]).to_dtype(dt)?;
            let xr = input.to_f64_vec()?; // the values the op sees, rounded to dt
            let out = op(&input)?;
            assert_eq!((out.dtype(), out.dims()), (dt, &[5usize, 8][..]), "{name}");
            let want: Vec<f64> = xr.iter().map(|&v| reference(v)).collect();
            assert_close(&out.to_f64_vec()?, &want, dt, name);
        }
    }
    Ok(())
}

#[test]
fn unary_ops_read_strided_views_and_zero_size_tensors() -> Result<()> {
    let views = |base: Tensor| -> Result<Vec<Tensor>> {
        Ok(vec![base.t()?, base.narrow(1, 2, 5)?.narrow(0, 1, 4)?, base.narrow(0, 2, 1)?.broadcast_as([3, 8])?])
    };
    let any = views(t64(&values(48, 7, -2.0, 2.0), &[6, 8]))?;
    let pos = views(t64(&values(48, 8, 0.1, 3.0), &[6, 8]))?;
    for (name, op, reference, lo, _) in unary_cases() {
        for v in if lo >= 0.0 { &pos } else { &any } {
            assert!(!v.is_contiguous());
            let want: Vec<f64> = v.to_f64_vec()?.iter().map(|&x| reference(x)).collect();
            assert_close(&op(v)?.to_f64_vec()?, &want, DType::F64, name);
        }
        let out = op(&Tensor::zeros([2, 0, 3], DType::F32, &test_device())?)?;
        assert_eq!(out.dims(), &[2, 0, 3], "{name}");
    }
    Ok(())
}

#[test]
fn erf_is_accurate_in_f64_and_gelu_erf_keeps_relative_accuracy_in_the_tail() -> Result<()> {
    let mut xs = values(300, 11, -6.0, 6.0);
    xs.extend([1e-300, -1e-12, 3e-7, 0.999_999, 1.0, 2.0, 3.5, -3.499_999, 5.9, 7.0, 27.0]);
    let got = t64(&xs, &[xs.len()]).erf()?.to_vec::<f64>()?;
    for (&x, &g) in xs.iter().zip(&got) {
        let r = erf_ref(x);
        assert!((g - r).abs() <= 1e-13 * r.abs(), "erf({x}) = {g}, reference {r}");
    }
    let special = t64(&[f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.0], &[4]).erf()?.to_vec::<f64>()?;
    assert_eq!(&special[..2], &[1.0, -1.0]);
    assert!(special[2].is_nan() && special[3] == 0.0);
    // x Phi(x) for x down to -30 (values near 1e-197): relative, not absolute, accuracy.
    let xs: Vec<f64> = (0..60).map(|i| -0.5 * i as f64).collect();
    let got = t64(&xs, &[60]).gelu_erf()?.to_vec::<f64>()?;
    for (&x, &g) in xs.iter().zip(&got) {
        let r = x * phi_cdf_ref(x);
        assert!((g - r).abs() <= 1e-12 * r.abs(), "gelu_erf({x}) = {g}, reference {r}");
    }
    // f32 rounds the f64 result once.
    let x32: Vec<f32> = values(100, 12, -5.0, 5.0).iter().map(|&v| v as f32).collect();
    let got = Tensor::from_slice(&x32, 100, &test_device())?.erf()?.to_vec::<f32>()?;
    for (&x, &g) in x32.iter().zip(&got) {
        let r = erf_ref(x as f64);
        assert!((g as f64 - r).abs() <= 0.5 * f32::EPSILON as f64 * r.abs() * 1.01, "erf_f32({x}) = {g}, ref {r}");
    }
    Ok(())
}

#[test]
fn unary_gradients_pass_finite_difference_checks() -> Result<()> {
    // Inputs keep 0.05 away from kinks (0 for relu/abs/sign, the clamp bounds).
    let any = t64(&[0.3, -1.2, 0.7, 2.1, -0.45, 1.1, -2.6, 0.05], &[2, 4]);
    let pos = t64(&[0.3, 1.2, 0.7, 2.1, 0.45, 1.1, 2.6, 0.15], &[2, 4]);
    let g = |name: &str, f: fn(&Tensor) -> Result<Tensor>, x: &Tensor| {
        assert_grad(name, |v| f(&v[0]), std::slice::from_ref(x), 1e-6)
    };
    for (name, f) in [
        ("neg", (|t: &Tensor| t.neg()) as fn(&Tensor) -> Result<Tensor>),
        ("abs", |t| t.abs()),
        ("sign", |t| t.sign()),
        ("sin", |t| t.sin()),
        ("cos", |t| t.cos()),
        ("tanh", |t| t.tanh()),
        ("sigmoid", |t| t.sigmoid()),
        ("relu", |t| t.relu()),
        ("gelu", |t| t.gelu()),
        ("gelu_erf", |t| t.gelu_erf()),
        ("erf", |t| t.erf()),
        ("silu", |t| t.silu()),
        ("sqr", |t| t.sqr()),
        ("powf 2", |t| t.powf(2.0)),
        ("powf 3", |t| t.powf(3.0)),
        ("powf 0", |t| t.powf(0.0)),
        ("clamp", |t| t.clamp(-0.5, 1.0)),
        ("gelu far tail", |t| t.mul_scalar(4.0)?.gelu()),
        ("gelu_erf far tail", |t| t.mul_scalar(4.0)?.gelu_erf()),
    ] {
        g(name, f, &any)?;
    }
    for (name, f) in [
        ("log", (|t: &Tensor| t.log()) as fn(&Tensor) -> Result<Tensor>),
        ("sqrt", |t| t.sqrt()),
        ("rsqrt", |t| t.rsqrt()),
        ("recip", |t| t.recip()),
        ("powf 2.5", |t| t.powf(2.5)),
        ("powf -1.5", |t| t.powf(-1.5)),
    ] {
        g(name, f, &pos)?;
    }
    // Through a strided view, in a chain.
    g("chain on a transposed view", |t| t.t()?.silu()?.mul(&t.t()?.tanh()?)?.sqrt(), &pos)?;
    Ok(())
}

/// The gradient of `sum(f(x))` for a variable `x`.
fn grad_of(x: &[f64], f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Vec<f64>> {
    let v = Var::from_tensor(&t64(x, &[x.len()]))?;
    let g = f(v.as_tensor())?.sum_all()?.backward()?;
    g.get(&v).unwrap().to_vec::<f64>()
}

#[test]
fn gradients_at_kinks_follow_pytorch() -> Result<()> {
    assert_eq!(grad_of(&[-1.0, 0.0, 1.0], |t| t.relu())?, [0.0, 0.0, 1.0]);
    assert_eq!(grad_of(&[-1.0, 0.0, 1.0], |t| t.abs())?, [-1.0, 0.0, 1.0]);
    // clamp passes the gradient at the bounds (inclusive), not outside.
    assert_eq!(grad_of(&[-2.0, -1.0, 0.0, 1.0, 2.0], |t| t.clamp(-1.0, 1.0))?, [0.0, 1.0, 1.0, 1.0, 0.0]);
    // maximum/minimum split ties 0.5/0.5.
    let a = Var::from_tensor(&t64(&[1.0, 2.0, 3.0], &[3]))?;
    let b = Var::from_tensor(&t64(&[2.0, 2.0, 2.0], &[3]))?;
    for (name, mx) in [("maximum", true), ("minimum", false)] {
        let y = if mx { a.maximum(&b)? } else { a.minimum(&b)? };
        let g = y.sum_all()?.backward()?;
        let (ga, gb) = (g.get(&a).unwrap().to_vec::<f64>()?, g.get(&b).unwrap().to_vec::<f64>()?);
        let (win, lose) =
            if mx { (vec![0.0, 0.5, 1.0], vec![1.0, 0.5, 0.0]) } else { (vec![1.0, 0.5, 0.0], vec![0.0, 0.5, 1.0]) };
        assert_eq!((ga, gb), (win, lose), "{name}");
    }
    // x^0 has gradient 0 even at x = 0; 0^b has exponent gradient 0 for b >= 0.
    assert_eq!(grad_of(&[0.0, 2.0], |t| t.powf(0.0))?, [0.0, 0.0]);
    let base = t64(&[0.0, 0.0], &[2]);
    assert_eq!(grad_of(&[2.0, 0.0], |e| base.pow(e))?, [0.0, 0.0]);
    Ok(())
}

#[test]
fn backward_runs_in_every_float_dtype_and_matches_f64() -> Result<()> {
    let x = values(12, 81, -3.0, 3.0);
    let ops: [fn(&Tensor) -> Result<Tensor>; 6] =
        [|t| t.gelu_erf(), |t| t.gelu(), |t| t.silu(), |t| t.tanh(), |t| t.clamp(-1.0, 1.0), |t| t.maximum(&t.sin()?)];
    for (k, op) in ops.iter().enumerate() {
        for dt in DType::FLOATS {
            let v = Var::from_tensor(&t64(&x, &[12]).to_dtype(dt)?)?;
            let g = op(v.as_tensor())?.sum_all()?.backward()?;
            let got = g.get(&v).unwrap();
            assert_eq!(got.dtype(), dt);
            let want = grad_of(&v.to_f64_vec()?, op)?;
            // Absolute at the gradients' unit scale: tanh' = 1 - y^2 from a rounded output
            // (PyTorch's formula too) loses relative accuracy where y is near ±1.
            let (_, rtol) = tol(dt);
            for (g, w) in got.to_f64_vec()?.iter().zip(&want) {
                assert!((g - w).abs() <= 4.0 * rtol * w.abs().max(1.0), "op {k} [{dt}]: {g} vs {w}");
            }
        }
    }
    Ok(())
}

// ----- binary ----------------------------------------------------------------------------------

type BinaryCase = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>, fn(f64, f64) -> f64);

fn binary_cases() -> Vec<BinaryCase> {
    vec![
        ("add", |a, b| a.add(b), |a, b| a + b),
        ("sub", |a, b| a.sub(b), |a, b| a - b),
        ("mul", |a, b| a.mul(b), |a, b| a * b),
        ("div", |a, b| a.div(b), |a, b| a / b),
        ("maximum", |a, b| a.maximum(b), f64::max),
        ("minimum", |a, b| a.minimum(b), f64::min),
        ("pow", |a, b| a.pow(b), f64::powf),
    ]
}

#[test]
fn binary_ops_broadcast_for_every_float_dtype() -> Result<()> {
    let shapes: [(&[usize], &[usize], &[usize]); 4] = [
        (&[2, 1, 3], &[4, 1], &[2, 4, 3]),
        (&[3], &[2, 3], &[2, 3]),
        (&[], &[2, 2], &[2, 2]),
        (&[0, 3], &[3], &[0, 3]),
    ];
    for (k, (name, op, reference)) in binary_cases().into_iter().enumerate() {
        for &(sa, sb, so) in &shapes {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            // Positive operands (pow's base, div's divisor) with mixed signs elsewhere.
            let (lo, hi) = if name == "pow" || name == "div" { (0.3, 2.5) } else { (-2.5, 2.5) };
            let (a, b) = (values(na, 3 * k as u64, lo, hi), values(nb, 3 * k as u64 + 1, lo, hi));
            for dt in DType::FLOATS {
                let (ta, tb) = (t64(&a, sa).to_dtype(dt)?, t64(&b, sb).to_dtype(dt)?);
                let out = op(&ta, &tb)?;
                assert_eq!((out.dtype(), out.dims()), (dt, so), "{name}");
                let (ar, br) = (bcast(&ta.to_f64_vec()?, sa, so), bcast(&tb.to_f64_vec()?, sb, so));
                let want: Vec<f64> = ar.iter().zip(&br).map(|(&x, &y)| reference(x, y)).collect();
                assert_close(&out.to_f64_vec()?, &want, dt, &format!("{name} {sa:?} {sb:?}"));
                // The operands swapped broadcast the other way.
                let want: Vec<f64> = ar.iter().zip(&br).map(|(&x, &y)| reference(y, x)).collect();
                assert_close(&op(&tb, &ta)?.to_f64_vec()?, &want, dt, &format!("{name} swapped"));
            }
        }
    }
    Ok(())
}

#[test]
fn binary_ops_read_strided_views() -> Result<()> {
    let a = t64(&values(12, 21, 0.5, 2.0), &[4, 3]).t()?; // [3, 4], transposed
    let b = t64(&values(18, 22, 0.5, 2.0), &[3, 6]).narrow(1, 1, 4)?; // [3, 4], narrowed
    let c = t64(&values(4, 23, 0.5, 2.0), &[4]).broadcast_as([3, 4])?; // stride-0 rows
    for (name, op, reference) in binary_cases() {
        for (x, y) in [(&a, &b), (&b, &c), (&c, &a)] {
            let (xr, yr) = (x.to_f64_vec()?, y.to_f64_vec()?);
            let want: Vec<f64> = xr.iter().zip(&yr).map(|(&p, &q)| reference(p, q)).collect();
            assert_close(&op(x, y)?.to_f64_vec()?, &want, DType::F64, name);
        }
    }
    Ok(())
}

#[test]
fn binary_gradients_pass_finite_difference_checks_with_broadcasting() -> Result<()> {
    let a = t64(&values(6, 31, 0.4, 2.0), &[2, 1, 3]);
    let b = t64(&[0.45, 1.7, 0.9, 1.3], &[4, 1]);
    assert_grad("maximum", |x| x[0].maximum(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("minimum", |x| x[0].minimum(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("pow", |x| x[0].pow(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("pow negative exponent", |x| x[0].pow(&x[1].neg()?), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("maximum_scalar", |x| x[0].maximum_scalar(0.8), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("minimum_scalar", |x| x[0].minimum_scalar(-0.8), &[a.neg()?], 1e-6)?;
    assert_grad("pow_scalar", |x| x[0].pow_scalar(-0.5), std::slice::from_ref(&a), 1e-6)?;
    Ok(())
}

#[test]
fn integer_ops_compute_exactly() -> Result<()> {
    let x: Vec<i64> = vec![-7, -1, 0, 3, 250, 9, i64::MAX, -300];
    let t = Tensor::from_slice(&x, 8, &test_device())?;
    let i = |t: Tensor| t.to_vec::<i64>().unwrap();
    assert_eq!(i(t.abs()?), x.iter().map(|v| v.abs()).collect::<Vec<_>>());
    assert_eq!(i(t.neg()?), x.iter().map(|v| -v).collect::<Vec<_>>());
    assert_eq!(i(t.sign()?), x.iter().map(|v| v.signum()).collect::<Vec<_>>());
    assert_eq!(i(t.relu()?), x.iter().map(|&v| v.max(0)).collect::<Vec<_>>());
    // Fractional bounds clamp to the integers inside them.
    assert_eq!(i(t.clamp(-2.5, 8.9)?), x.iter().map(|&v| v.clamp(-2, 8)).collect::<Vec<_>>());
    let u = Tensor::from_slice(&[0u8, 3, 200, 255], 4, &test_device())?;
    assert_eq!(u.clamp(-10.0, 100.0)?.to_vec::<u8>()?, [0, 3, 100, 100]);
    assert_eq!(u.clamp(-10.0, -5.0)?.to_vec::<u8>()?, [0, 0, 0, 0]); // saturates to the u8 range
    assert_eq!(u.abs()?.to_vec::<u8>()?, [0, 3, 200, 255]);
    let w = Tensor::from_slice(&[5u32, 1, 4_000_000_000], [3, 1], &test_device())?;
    let v = Tensor::from_slice(&[2u32, 7], 2, &test_device())?;
    assert_eq!(w.maximum(&v)?.to_vec2::<u32>()?, [[5, 7], [2, 7], [4_000_000_000, 4_000_000_000]]);
    assert_eq!(w.minimum(&v)?.to_vec2::<u32>()?, [[2, 5], [1, 1], [2, 7]]);
    assert_eq!(i(t.maximum_scalar(-3.0)?), x.iter().map(|&v| v.max(-3)).collect::<Vec<_>>());
    assert_eq!(i(t.minimum_scalar(-3.0)?), x.iter().map(|&v| v.min(-3)).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn std_operators_build_the_same_tensors() -> Result<()> {
    let a = t64(&[1.0, -2.0, 3.0], &[3]);
    let b = t64(&[0.5, 4.0], &[2, 1]);
    assert_eq!((&a + &b)?.to_vec2::<f64>()?, a.add(&b)?.to_vec2::<f64>()?);
    assert_eq!((&a - 1.5)?.to_vec::<f64>()?, [-0.5, -3.5, 1.5]);
    assert_eq!((a.clone() * 2.0)?.to_vec::<f64>()?, [2.0, -4.0, 6.0]);
    assert_eq!((-&a)?.to_vec::<f64>()?, [-1.0, 2.0, -3.0]);
    let chained = ((&a * &a) / &b - a.clone())?;
    assert_eq!(chained.to_vec2::<f64>()?, a.mul(&a)?.div(&b)?.sub(&a)?.to_vec2::<f64>()?);
    let e = ((&a + &t64(&[1.0, 2.0], &[2])) * &a).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("[3]") && e.contains("[2]"), "{e}");
    Ok(())
}

// ----- comparisons and where_cond ---------------------------------------------------------------

type CmpCase =
    (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>, fn(&Tensor, f64) -> Result<Tensor>, fn(f64, f64) -> bool);

fn cmp_cases() -> Vec<CmpCase> {
    vec![
        ("eq", |a, b| a.eq(b), |a, v| a.eq_scalar(v), |a, b| a == b),
        ("ne", |a, b| a.ne(b), |a, v| a.ne_scalar(v), |a, b| a != b),
        ("lt", |a, b| a.lt(b), |a, v| a.lt_scalar(v), |a, b| a < b),
        ("le", |a, b| a.le(b), |a, v| a.le_scalar(v), |a, b| a <= b),
        ("gt", |a, b| a.gt(b), |a, v| a.gt_scalar(v), |a, b| a > b),
        ("ge", |a, b| a.ge(b), |a, v| a.ge_scalar(v), |a, b| a >= b),
    ]
}

fn mask(bits: Vec<bool>) -> Vec<u8> {
    bits.into_iter().map(u8::from).collect()
}

#[test]
fn comparisons_broadcast_for_every_dtype_and_give_u8_masks() -> Result<()> {
    // Small integers (exact in every dtype) so equal pairs occur; NaN for the floats.
    let a: Vec<f64> = values(6, 41, 0.0, 4.0).iter().map(|v| v.floor()).collect();
    let mut b: Vec<f64> = values(4, 42, 0.0, 4.0).iter().map(|v| v.floor()).collect();
    for (name, op, _, reference) in cmp_cases() {
        for dt in DType::ALL {
            b[3] = if dt.is_float() { f64::NAN } else { 2.0 };
            let (ta, tb) = (t64(&a, &[2, 1, 3]).to_dtype(dt)?, t64(&b, &[4, 1]).to_dtype(dt)?);
            let out = op(&ta, &tb)?;
            assert_eq!((out.dtype(), out.dims()), (DType::U8, &[2usize, 4, 3][..]), "{name} {dt}");
            let (ar, br) = (bcast(&a, &[2, 1, 3], &[2, 4, 3]), bcast(&b, &[4, 1], &[2, 4, 3]));
            let want = mask(ar.iter().zip(&br).map(|(&x, &y)| reference(x, y)).collect());
            assert_eq!(out.to_vec::<u8>()?, want, "{name} {dt}");
            // A transposed view compares by logical position.
            let tt = ta.reshape([2, 3])?.t()?;
            let got = op(&tt, &tt.narrow(0, 1, 1)?)?.to_vec::<u8>()?;
            let v = tt.to_f64_vec()?;
            let want = mask((0..6).map(|i| reference(v[i], v[2 + i % 2])).collect());
            assert_eq!(got, want, "{name} {dt} strided");
        }
    }
    Ok(())
}

#[test]
fn scalar_comparisons_convert_for_floats_and_are_exact_for_integers() -> Result<()> {
    let scalars = [2.0, 2.5, -1.0, -1.5, 0.1, 1e30, -1e30, f64::INFINITY, f64::NAN];
    for (name, _, op, reference) in cmp_cases() {
        for dt in DType::ALL {
            let vals: &[f64] =
                if dt == DType::I64 { &[-3.0, -1.0, 0.0, 2.0, 3.0, 7.0] } else { &[0.0, 1.0, 2.0, 3.0, 7.0, 0.1] };
            let t = t64(vals, &[2, 3]).to_dtype(dt)?;
            let xr = t.to_f64_vec()?;
            for &s in &scalars {
                // Floats compare with the scalar rounded to their dtype; integers with the real value.
                let sv = if dt.is_float() { Tensor::full(s, (), dt, &test_device())?.to_f64_vec()?[0] } else { s };
                let want = mask(xr.iter().map(|&x| reference(x, sv)).collect());
                let out = op(&t, s)?;
                assert_eq!((out.dtype(), out.to_vec::<u8>()?), (DType::U8, want), "{name}_scalar({s}) on {dt}");
            }
        }
    }
    // 0.1 rounded to f16 equals an f16 made from 0.1; an integer never equals 2.5.
    let h = t64(&[0.1], &[1]).to_dtype(DType::F16)?;
    assert_eq!(h.eq_scalar(0.1)?.to_vec::<u8>()?, [1]);
    let big = Tensor::from_slice(&[i64::MAX, i64::MIN, 2], 3, &test_device())?;
    // 2^63 as f64: i64::MAX is below it, though `i64::MAX as f64` rounds up to it.
    assert_eq!(big.lt_scalar(9_223_372_036_854_775_808.0)?.to_vec::<u8>()?, [1, 1, 1]);
    assert_eq!(big.ge_scalar(9.2e18)?.to_vec::<u8>()?, [1, 0, 0]);
    assert_eq!(big.le_scalar(-9_223_372_036_854_775_808.0)?.to_vec::<u8>()?, [0, 1, 0]);
    assert_eq!(big.eq_scalar(2.5)?.to_vec::<u8>()?, [0, 0, 0]);
    Ok(())
}

#[test]
fn comparisons_carry_no_graph() -> Result<()> {
    let x = Var::from_tensor(&t64(&[1.0, -1.0], &[2]))?;
    assert!(x.requires_grad());
    assert!(!x.gt_scalar(0.0)?.requires_grad());
    assert!(!x.eq(&x.exp()?)?.requires_grad());
    Ok(())
}

#[test]
fn where_cond_broadcasts_three_ways_for_every_mask_and_value_dtype() -> Result<()> {
    let m: Vec<f64> = vec![1.0, 0.0, 3.0, 0.0, f64::NAN, -2.0];
    let (t, f) = (values(4, 51, -5.0, 5.0), values(3, 52, -5.0, 5.0));
    let out_shape = [2, 4, 3];
    for mdt in DType::ALL {
        let mut mv = m.clone();
        if mdt.is_int() {
            mv[4] = 1.0;
            mv[5] = 2.0;
        }
        let mt = t64(&mv, &[2, 1, 3]).to_dtype(mdt)?;
        for vdt in DType::ALL {
            let (tt, ft) = (t64(&t, &[4, 1]).to_dtype(vdt)?, t64(&f, &[3]).to_dtype(vdt)?);
            let out = mt.where_cond(&tt, &ft)?;
            assert_eq!((out.dtype(), out.dims()), (vdt, &out_shape[..]));
            let (mb, tb, fb) = (
                bcast(&mv, &[2, 1, 3], &out_shape),
                bcast(&tt.to_f64_vec()?, &[4, 1], &out_shape),
                bcast(&ft.to_f64_vec()?, &[3], &out_shape),
            );
            let want: Vec<f64> = (0..24).map(|i| if mb[i] != 0.0 { tb[i] } else { fb[i] }).collect();
            assert_eq!(out.to_f64_vec()?, want, "mask {mdt}, values {vdt}");
        }
    }
    // Strided and zero-size operands.
    let mt = t64(&m, &[2, 3]).gt_scalar(0.5)?.t()?;
    let tt = t64(&t, &[2, 2]).narrow(0, 1, 1)?.broadcast_as([3, 2])?;
    let got = mt.where_cond(&tt, &Tensor::zeros((), DType::F64, &test_device())?)?.to_vec2::<f64>()?;
    assert_eq!(got, [[t[2], 0.0], [0.0, 0.0], [t[2], 0.0]]);
    let empty = Tensor::zeros([0, 3], DType::U8, &test_device())?.where_cond(&t64(&f, &[3]), &t64(&[0.0], &[]))?;
    assert_eq!(empty.dims(), &[0, 3]);
    Ok(())
}

#[test]
fn where_cond_gradients_reach_both_branches() -> Result<()> {
    let m = t64(&[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], &[2, 1, 3]).gt_scalar(0.5)?;
    let t = t64(&values(4, 61, -2.0, 2.0), &[4, 1]);
    let f = t64(&values(3, 62, -2.0, 2.0), &[3]);
    assert_grad("where_cond", |x| m.where_cond(&x[0], &x[1]), &[t.clone(), f.clone()], 1e-6)?;
    assert_grad("where_cond chain", |x| m.where_cond(&x[0].exp()?, &x[1].sin()?)?.sqr(), &[t, f], 1e-6)?;
    // A relu built from where_cond and gt matches relu's gradient.
    let x = [-1.5, 0.5, 2.0, -0.25];
    let via_where = grad_of(&x, |v| v.gt_scalar(0.0)?.where_cond(v, &v.zeros_like()?))?;
    assert_eq!(via_where, grad_of(&x, |v| v.relu())?);
    Ok(())
}

#[test]
fn large_tensors_take_the_parallel_paths() -> Result<()> {
    let n = 70_000; // above the parallel threshold
    let a = t64(&values(n, 71, -3.0, 3.0), &[n / 10, 10]);
    let b = t64(&values(10, 72, -3.0, 3.0), &[10]);
    let (ar, br) = (a.to_f64_vec()?, bcast(&b.to_f64_vec()?, &[10], &[n / 10, 10]));
    let m = a.gt(&b)?;
    assert_eq!(m.to_vec::<u8>()?, mask(ar.iter().zip(&br).map(|(x, y)| x > y).collect()));
    let w = m.where_cond(&a.gelu()?, &b.maximum(&a.t()?.t()?)?)?.to_vec::<f64>()?;
    let want: Vec<f64> = ar.iter().zip(&br).map(|(&x, &y)| if x > y { gelu_tanh_ref(x) } else { y.max(x) }).collect();
    assert_close(&w, &want, DType::F64, "parallel where_cond");
    Ok(())
}

// ----- errors -----------------------------------------------------------------------------------

fn err(r: Result<Tensor>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn mistakes_return_errors_that_name_the_problem() -> Result<()> {
    let f32v = Tensor::zeros([2, 3], DType::F32, &test_device())?;
    let f64v = Tensor::zeros([2, 3], DType::F64, &test_device())?;
    let i64v = Tensor::zeros([2, 3], DType::I64, &test_device())?;
    let short = Tensor::zeros([4], DType::F32, &test_device())?;
    for (name, op, _) in binary_cases() {
        let e = err(op(&f32v, &f64v));
        assert!(e.contains(name) && e.contains("f32") && e.contains("f64") && e.contains("to_dtype"), "{e}");
        let e = err(op(&f32v, &short));
        assert!(e.contains(name) && e.contains("[2, 3]") && e.contains("[4]") && e.contains("broadcast"), "{e}");
    }
    for (name, op, _, _) in cmp_cases() {
        let e = err(op(&i64v, &f64v));
        assert!(e.contains(name) && e.contains("i64") && e.contains("f64"), "{e}");
    }
    let e = err(i64v.pow(&i64v));
    assert!(e.contains("pow") && e.contains("i64") && e.contains("float"), "{e}");
    for (name, op, _, _, _) in unary_cases() {
        let ints_ok =
            ["neg", "abs", "sign", "relu", "clamp", "add_scalar", "mul_scalar", "maximum_scalar", "minimum_scalar"];
        if ints_ok.iter().any(|p| name.starts_with(p)) {
            assert_eq!(op(&i64v)?.dtype(), DType::I64, "{name}");
        } else {
            let e = err(op(&i64v));
            let op_name = name.split(' ').next().unwrap().replace("pow_scalar", "powf");
            assert!(e.contains(&op_name) && e.contains("i64") && e.contains("float"), "{name}: {e}");
        }
    }
    let e = err(f32v.clamp(1.0, -1.0));
    assert!(e.contains("clamp") && e.contains("min 1") && e.contains("max -1"), "{e}");
    assert!(err(f32v.clamp(f64::NAN, 1.0)).contains("NaN"));
    let e = err(f32v.where_cond(&f32v, &f64v));
    assert!(e.contains("where_cond") && e.contains("f32") && e.contains("f64"), "{e}");
    let e = err(f32v.where_cond(&short, &short));
    assert!(e.contains("where_cond") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    Ok(())
}
