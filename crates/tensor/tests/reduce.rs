//! Reductions (sum, mean, max, min, argmax, argmin, logsumexp, var, std) and softmax /
//! log-softmax, checked against naive f64 loops written here: every float dtype, dim sets
//! with negative and non-adjacent dims, keepdim, non-contiguous views, zero-size dims, sizes
//! that take the parallel paths, special values, finite-difference gradients and errors.

use attune_tensor::grad_check::assert_grad;
use attune_tensor::testing::test_device;
use attune_tensor::{AllDims, DType, Error, Result, Tensor};

/// Deterministic values, multiples of 1/64 in [-3, 3): exact in every float dtype, with ties.
fn data(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % 384) as f64 / 64.0 - 3.0
        })
        .collect()
}

/// Distinct values (no ties closer than 1e-3), for gradient checks of max/min.
fn distinct(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37 + 11) % n) as f64 * 0.173 - 0.9 + 0.001 * i as f64).collect()
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_slice(v, shape, &test_device()).unwrap().to_dtype(dtype).unwrap()
}

/// Resolves (possibly negative) dims to sorted indices, like the library must.
fn resolve(dims: &[isize], rank: usize) -> Vec<usize> {
    let mut v: Vec<usize> =
        dims.iter().map(|&d| if d < 0 { (d + rank as isize) as usize } else { d as usize }).collect();
    v.sort_unstable();
    v
}

fn out_shape(shape: &[usize], rdims: &[usize], keepdim: bool) -> Vec<usize> {
    let mut out = vec![];
    for (i, &d) in shape.iter().enumerate() {
        if !rdims.contains(&i) {
            out.push(d);
        } else if keepdim {
            out.push(1);
        }
    }
    out
}

/// For every output (row-major over kept dims), its reduced elements in row-major order.
fn groups(x: &[f64], shape: &[usize], rdims: &[usize]) -> Vec<Vec<f64>> {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !rdims.contains(d)).collect();
    let n_out: usize = kept.iter().map(|&d| shape[d]).product();
    let mut out = vec![vec![]; n_out];
    for (flat, &v) in x.iter().enumerate() {
        let mut coords = vec![0; shape.len()];
        let mut r = flat;
        for d in (0..shape.len()).rev() {
            coords[d] = r % shape[d];
            r /= shape[d];
        }
        let o = kept.iter().fold(0, |acc, &d| acc * shape[d] + coords[d]);
        out[o].push(v);
    }
    out
}

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-12, 1e-12),
        DType::F32 => (2e-6, 1e-9),
        DType::F16 => (1e-3, 1e-6),
        DType::BF16 => (8e-3, 1e-6),
        _ => (0.0, 0.0),
    }
}

fn assert_close(what: &str, got: &[f64], want: &[f64], (rtol, atol): (f64, f64)) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= rtol * w.abs() + atol;
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

// ----- naive references ---------------------------------------------------------------------

fn r_sum(g: &[f64]) -> f64 {
    g.iter().sum()
}
fn r_mean(g: &[f64]) -> f64 {
    r_sum(g) / g.len() as f64
}
fn r_max(g: &[f64]) -> f64 {
    if g.iter().any(|v| v.is_nan()) { f64::NAN } else { g.iter().cloned().fold(f64::NEG_INFINITY, f64::max) }
}
fn r_min(g: &[f64]) -> f64 {
    if g.iter().any(|v| v.is_nan()) { f64::NAN } else { g.iter().cloned().fold(f64::INFINITY, f64::min) }
}
fn r_lse(g: &[f64]) -> f64 {
    let m = r_max(g);
    if m == f64::NEG_INFINITY { m } else { m + g.iter().map(|v| (v - m).exp()).sum::<f64>().ln() }
}
fn r_var(g: &[f64], c: usize) -> f64 {
    let m = r_mean(g);
    g.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (g.len() as f64 - c as f64)
}
/// First index of the max (or min); NaN counts as the extremum.
fn r_arg(g: &[f64], max: bool) -> f64 {
    if let Some(i) = g.iter().position(|v| v.is_nan()) {
        return i as f64;
    }
    let mut best = 0;
    for (i, &v) in g.iter().enumerate() {
        if (max && v > g[best]) || (!max && v < g[best]) {
            best = i;
        }
    }
    best as f64
}

type Op = fn(&Tensor, Vec<isize>, bool) -> Result<Tensor>;
type Ref = fn(&[f64]) -> f64;

fn ops() -> Vec<(&'static str, Op, Ref)> {
    vec![
        ("sum", |t, d, k| t.sum(d, k), r_sum),
        ("mean", |t, d, k| t.mean(d, k), r_mean),
        ("max", |t, d, k| t.max(d, k), r_max),
        ("min", |t, d, k| t.min(d, k), r_min),
        ("logsumexp", |t, d, k| t.logsumexp(d, k), r_lse),
        ("var0", |t, d, k| t.var(d, 0, k), |g| r_var(g, 0)),
        ("var1", |t, d, k| t.var(d, 1, k), |g| r_var(g, 1)),
        ("std1", |t, d, k| t.std(d, 1, k), |g| r_var(g, 1).sqrt()),
    ]
}

/// Checks every op on `t` over `dims` (both keepdim settings) against the naive references
/// computed from the values `t` holds.
fn check_all_ops(what: &str, t: &Tensor, dims: &[isize]) {
    let shape = t.dims().to_vec();
    let x = t.to_f64_vec().unwrap();
    let rd = resolve(dims, shape.len());
    let gs = groups(&x, &shape, &rd);
    for (name, op, reference) in ops() {
        for keepdim in [false, true] {
            let ctx = format!("{what} {name} dims {dims:?} keepdim {keepdim} {:?} {}", t.shape(), t.dtype());
            let out = op(t, dims.to_vec(), keepdim).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(out.dims(), out_shape(&shape, &rd, keepdim), "{ctx}: shape");
            assert_eq!(out.dtype(), t.dtype(), "{ctx}: dtype");
            let want: Vec<f64> = gs.iter().map(|g| reference(g)).collect();
            assert_close(&ctx, &out.to_f64_vec().unwrap(), &want, tol(t.dtype()));
        }
    }
    if rd.len() == 1 {
        for (max, name) in [(true, "argmax"), (false, "argmin")] {
            for keepdim in [false, true] {
                let out = if max { t.argmax(dims[0], keepdim) } else { t.argmin(dims[0], keepdim) }.unwrap();
                assert_eq!(out.dtype(), DType::I64);
                assert_eq!(out.dims(), out_shape(&shape, &rd, keepdim), "{what} {name}");
                let want: Vec<i64> = gs.iter().map(|g| r_arg(g, max) as i64).collect();
                assert_eq!(out.to_vec::<i64>().unwrap(), want, "{what} {name} dims {dims:?} {}", t.dtype());
            }
        }
    }
}

const DIM_SETS: &[&[isize]] = &[&[0], &[1], &[2], &[-1], &[-2], &[0, 2], &[-3, -1], &[0, 1], &[1, 2], &[2, 0, 1], &[]];

#[test]
fn every_reduction_matches_naive_over_dim_sets_and_dtypes() {
    for dtype in DType::FLOATS {
        let t = tensor(&data(60, 1), &[3, 4, 5], dtype);
        for dims in DIM_SETS {
            check_all_ops("contiguous", &t, dims);
        }
        // AllDims and the *_all forms.
        let x = t.to_f64_vec().unwrap();
        let all = |r: Tensor| r.to_f64_vec().unwrap();
        assert_close("sum_all", &all(t.sum_all().unwrap()), &[r_sum(&x)], tol(dtype));
        assert_close("max_all", &all(t.max_all().unwrap()), &[r_max(&x)], tol(dtype));
        assert_close("min_all", &all(t.min_all().unwrap()), &[r_min(&x)], tol(dtype));
        assert_close("lse_all", &all(t.logsumexp_all().unwrap()), &[r_lse(&x)], tol(dtype));
        assert_close("var_all", &all(t.var_all(1).unwrap()), &[r_var(&x, 1)], tol(dtype));
        assert_close("std_all", &all(t.std_all(0).unwrap()), &[r_var(&x, 0).sqrt()], tol(dtype));
        assert_close("mean AllDims", &all(t.mean(AllDims, false).unwrap()), &[r_mean(&x)], tol(dtype));
        assert_eq!(t.argmax_all().unwrap().to_scalar::<i64>().unwrap(), r_arg(&x, true) as i64);
        assert_eq!(t.argmin_all().unwrap().to_scalar::<i64>().unwrap(), r_arg(&x, false) as i64);
        assert_eq!(t.max(AllDims, true).unwrap().dims(), &[1, 1, 1]);
    }
}

#[test]
fn non_contiguous_views_reduce_like_their_values() {
    for dtype in DType::FLOATS {
        let base = tensor(&data(120, 2), &[4, 5, 6], dtype);
        let views = [
            ("permute", base.permute([2, 0, 1]).unwrap()),
            ("transpose", base.transpose(0, 2).unwrap()),
            ("narrow", base.narrow(2, 1, 4).unwrap().narrow(0, 1, 2).unwrap()),
            ("broadcast", tensor(&data(6, 3), &[1, 6], dtype).broadcast_as([3, 4, 6]).unwrap()),
            ("broadcast-mid", tensor(&data(12, 4), &[3, 1, 4], dtype).broadcast_as([3, 5, 4]).unwrap()),
        ];
        for (name, v) in &views {
            assert!(!v.is_contiguous(), "{name}");
            for dims in DIM_SETS {
                check_all_ops(name, v, dims);
            }
        }
    }
}

#[test]
fn integer_dtypes_support_sum_max_min_and_arg_reductions() {
    let vals: Vec<f64> = (0..60).map(|i| ((i * 7 + 3) % 23) as f64).collect();
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let t = tensor(&vals, &[3, 4, 5], dtype);
        for dims in [[0isize].as_slice(), &[-1], &[0, 2]] {
            let rd = resolve(dims, 3);
            let gs = groups(&vals, &[3, 4, 5], &rd);
            for (name, out, r) in [
                ("sum", t.sum(dims, false).unwrap(), r_sum as Ref),
                ("max", t.max(dims, false).unwrap(), r_max),
                ("min", t.min(dims, true).unwrap(), r_min),
            ] {
                assert_eq!(out.dtype(), dtype, "{name}");
                let want: Vec<f64> = gs.iter().map(|g| r(g)).collect();
                assert_eq!(out.to_f64_vec().unwrap(), want, "{name} {dims:?} {dtype}");
            }
        }
        let gs = groups(&vals, &[3, 4, 5], &[1]);
        let want: Vec<i64> = gs.iter().map(|g| r_arg(g, true) as i64).collect();
        assert_eq!(t.argmax(1, false).unwrap().to_vec::<i64>().unwrap(), want);
        let want: Vec<i64> = gs.iter().map(|g| r_arg(g, false) as i64).collect();
        assert_eq!(t.argmin(-2, false).unwrap().to_vec::<i64>().unwrap(), want);
        for (name, e) in [
            ("mean", t.mean(0, false).unwrap_err()),
            ("logsumexp", t.logsumexp(0, false).unwrap_err()),
            ("var", t.var(0, 1, false).unwrap_err()),
            ("softmax", t.softmax(0).unwrap_err()),
            ("log_softmax", t.log_softmax(-1).unwrap_err()),
        ] {
            assert!(matches!(e, Error::UnsupportedDType { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name) && e.to_string().contains(dtype.as_str()), "{e}");
        }
    }
    // Integer sums wrap in their dtype.
    let t = Tensor::from_vec(vec![200u8, 100], 2, &test_device()).unwrap();
    assert_eq!(t.sum_all().unwrap().to_scalar::<u8>().unwrap(), 200u8.wrapping_add(100));
}

#[test]
fn ties_and_nan_follow_the_documented_rules() {
    for dtype in DType::FLOATS {
        let t = tensor(&[1.0, 3.0, 3.0, 2.0, f64::NAN, 5.0, f64::NAN, -1.0], &[2, 4], dtype);
        assert_eq!(t.argmax(1, false).unwrap().to_vec::<i64>().unwrap(), vec![1, 0]);
        assert_eq!(t.argmin(1, false).unwrap().to_vec::<i64>().unwrap(), vec![0, 0]);
        let m = t.max(1, false).unwrap().to_f64_vec().unwrap();
        assert!(m[0] == 3.0 && m[1].is_nan(), "{m:?}");
        assert!(t.min(-1, false).unwrap().to_f64_vec().unwrap()[1].is_nan());
        assert!(t.sum(1, false).unwrap().to_f64_vec().unwrap()[1].is_nan());
        // Long rows go through the lane-split path: ties across lanes keep the first index.
        let mut long = vec![0.0; 100];
        for i in [17, 33, 90] {
            long[i] = 2.0;
        }
        long[5] = -2.0;
        long[70] = -2.0;
        let t = tensor(&long, &[100], dtype);
        assert_eq!(t.argmax(0, false).unwrap().to_scalar::<i64>().unwrap(), 17);
        assert_eq!(t.argmin(0, false).unwrap().to_scalar::<i64>().unwrap(), 5);
        long[40] = f64::NAN;
        long[80] = f64::NAN;
        let t = tensor(&long, &[100], dtype);
        assert_eq!(t.argmax(0, false).unwrap().to_scalar::<i64>().unwrap(), 40);
        assert_eq!(t.argmin(0, false).unwrap().to_scalar::<i64>().unwrap(), 40);
        assert!(t.max_all().unwrap().to_f64_vec().unwrap()[0].is_nan());
    }
    // logsumexp with infinities: -inf rows give -inf, +inf gives +inf, never NaN.
    let t = tensor(
        &[f64::NEG_INFINITY, f64::NEG_INFINITY, f64::INFINITY, 1.0, 0.0, f64::NEG_INFINITY],
        &[3, 2],
        DType::F32,
    );
    let l = t.logsumexp(1, false).unwrap().to_f64_vec().unwrap();
    assert_eq!(l[0], f64::NEG_INFINITY);
    assert_eq!(l[1], f64::INFINITY);
    assert_close("lse with -inf", &l[2..], &[0.0], tol(DType::F32));
}

#[test]
fn zero_size_dims_give_identities_or_errors_naming_the_op() {
    for dtype in DType::FLOATS {
        let t = Tensor::zeros([3, 0, 4], dtype, &test_device()).unwrap();
        let s = t.sum(1, false).unwrap();
        assert_eq!(s.dims(), &[3, 4]);
        assert!(s.to_f64_vec().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(t.sum(0, true).unwrap().dims(), &[1, 0, 4]);
        assert_eq!(t.sum_all().unwrap().to_f64_vec().unwrap(), vec![0.0]);
        assert!(t.mean(1, false).unwrap().to_f64_vec().unwrap().iter().all(|v| v.is_nan()));
        assert!(t.var(1, 0, false).unwrap().to_f64_vec().unwrap().iter().all(|v| v.is_nan()));
        let l = t.logsumexp(1, false).unwrap().to_f64_vec().unwrap();
        assert!(l.len() == 12 && l.iter().all(|&v| v == f64::NEG_INFINITY));
        // Reducing a non-empty dim of an empty tensor gives an empty result, not an error.
        assert_eq!(t.max(0, false).unwrap().dims(), &[0, 4]);
        assert_eq!(t.argmax(2, false).unwrap().dims(), &[3, 0]);
        for (op, e) in [
            ("max", t.max(1, false).unwrap_err()),
            ("min", t.min([0, 1], true).unwrap_err()),
            ("max", t.max_all().unwrap_err()),
            ("argmax", t.argmax(1, false).unwrap_err()),
            ("argmin", t.argmin(-2, true).unwrap_err()),
        ] {
            let msg = e.to_string();
            assert!(msg.starts_with(op) && msg.contains("no elements") && msg.contains("[3, 0, 4]"), "{msg}");
        }
        let sm = t.softmax(1).unwrap();
        assert_eq!(sm.dims(), &[3, 0, 4]);
        assert_eq!(t.log_softmax(-1).unwrap().dims(), &[3, 0, 4]);
    }
}

#[test]
fn large_inputs_take_the_parallel_paths_and_stay_exact() {
    // (shape, dims): few long rows (reduced range split), many rows, the bias-gradient
    // column case, columns with a leading outer dim, non-adjacent dims, transposed memory.
    let cases: Vec<(Vec<usize>, Vec<isize>, bool)> = vec![
        (vec![3, 70_001], vec![-1], false),
        (vec![70_001, 3], vec![0], false),
        (vec![2048, 96], vec![0], false),
        (vec![300, 257], vec![1], false),
        (vec![300, 257], vec![0], false),
        (vec![5, 3000, 7], vec![0, 2], false),
        (vec![5, 3000, 7], vec![1], false),
        (vec![700, 500], vec![0], true),
        (vec![700, 500], vec![1], true),
        (vec![210_011], vec![0], false),
        (vec![40, 3000], vec![0], false),
        (vec![6, 20, 2100], vec![1], false),
        (vec![6, 20, 2100], vec![0, 1], false),
    ];
    for (shape, dims, transpose) in cases {
        let n: usize = shape.iter().product();
        let mut t = tensor(&data(n, 7), &shape, DType::F32);
        if transpose {
            t = t.t().unwrap();
        }
        let tshape = t.dims().to_vec();
        let x = t.to_f64_vec().unwrap();
        let rd = resolve(&dims, tshape.len());
        let gs = groups(&x, &tshape, &rd);
        let ctx = format!("{tshape:?} dims {dims:?}");
        let got = |r: Result<Tensor>| r.unwrap().to_f64_vec().unwrap();
        let want = |f: Ref| gs.iter().map(|g| f(g)).collect::<Vec<f64>>();
        // f64 accumulation: the f32 sum is the exact sum rounded once.
        assert_close(&format!("sum {ctx}"), &got(t.sum(dims.clone(), false)), &want(r_sum), (1e-6, 1e-6));
        assert_close(&format!("max {ctx}"), &got(t.max(dims.clone(), false)), &want(r_max), (0.0, 0.0));
        assert_close(&format!("min {ctx}"), &got(t.min(dims.clone(), false)), &want(r_min), (0.0, 0.0));
        assert_close(&format!("lse {ctx}"), &got(t.logsumexp(dims.clone(), false)), &want(r_lse), (1e-6, 1e-9));
        let var = |g: &[f64]| r_var(g, 1);
        assert_close(&format!("var {ctx}"), &got(t.var(dims.clone(), 1, false)), &want(var), (1e-6, 1e-9));
        if rd.len() == 1 {
            let a = t.argmax(dims[0], false).unwrap().to_vec::<i64>().unwrap();
            let w: Vec<i64> = gs.iter().map(|g| r_arg(g, true) as i64).collect();
            assert_eq!(a, w, "argmax {ctx}");
        }
    }
}

#[test]
fn f16_means_do_not_overflow_through_the_sum() {
    // The sum (80000) is beyond f16's range (65504); the mean (2) is not.
    for dtype in [DType::F16, DType::BF16] {
        let t = Tensor::full(2.0, [40_000, 2], dtype, &test_device()).unwrap();
        assert_eq!(t.mean_all().unwrap().to_f64_vec().unwrap(), vec![2.0], "{dtype}");
        assert_eq!(t.mean(0, false).unwrap().to_f64_vec().unwrap(), vec![2.0, 2.0], "{dtype}");
    }
}

#[test]
fn f32_sums_of_many_elements_keep_f64_accuracy() {
    // 1 + many tiny values: naive f32 accumulation would drop every tiny term.
    let mut v = vec![1e-8f32; 1 << 20];
    v[0] = 1.0;
    let t = Tensor::from_vec(v.clone(), [1 << 10, 1 << 10], &test_device()).unwrap();
    let want = 1.0 + 1e-8f32 as f64 * ((1 << 20) - 1) as f64;
    let got = t.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() <= 1e-7 * want, "{got} vs {want}");
    let col = t.sum(0, false).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!((col - want).abs() <= 1e-6 * want, "{col} vs {want}");
}

// ----- softmax ------------------------------------------------------------------------------

/// Naive softmax (or log-softmax) along `dim` of row-major `x` with `shape`.
fn r_softmax(x: &[f64], shape: &[usize], dim: usize, log: bool) -> Vec<f64> {
    let inner: usize = shape[dim + 1..].iter().product();
    let d = shape[dim];
    let outer: usize = shape[..dim].iter().product();
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |k: usize| (o * d + k) * inner + i;
            let row: Vec<f64> = (0..d).map(|k| x[idx(k)]).collect();
            let m = r_max(&row);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for (k, &v) in row.iter().enumerate() {
                y[idx(k)] = match (m == f64::NEG_INFINITY, log) {
                    (true, false) => 0.0,
                    (true, true) => f64::NEG_INFINITY,
                    (false, false) => (v - m).exp() / s,
                    (false, true) => v - m - s.ln(),
                };
            }
        }
    }
    y
}

fn check_softmax(what: &str, t: &Tensor, dim: isize) {
    let shape = t.dims().to_vec();
    let d = resolve(&[dim], shape.len())[0];
    let x = t.to_f64_vec().unwrap();
    let (rtol, atol) = tol(t.dtype());
    for log in [false, true] {
        let out = if log { t.log_softmax(dim) } else { t.softmax(dim) }.unwrap();
        assert_eq!(out.dims(), shape.as_slice());
        assert_eq!(out.dtype(), t.dtype());
        let ctx = format!("{what} log={log} dim {dim} {shape:?} {}", t.dtype());
        // Values near 1 or large |log p| dominate f32's error; exp_f32 adds a few ulp.
        let tol = if t.dtype() == DType::F32 { (1e-5, 1e-7) } else { (rtol, atol) };
        assert_close(&ctx, &out.to_f64_vec().unwrap(), &r_softmax(&x, &shape, d, log), tol);
    }
}

#[test]
fn softmax_matches_naive_for_every_dim_dtype_and_view() {
    for dtype in DType::FLOATS {
        let t = tensor(&data(120, 5), &[4, 5, 6], dtype);
        for dim in [0, 1, 2, -1, -3] {
            check_softmax("contiguous", &t, dim);
            check_softmax("permuted", &t.permute([1, 2, 0]).unwrap(), dim);
            check_softmax("narrowed", &t.narrow(2, 1, 3).unwrap(), dim);
        }
        check_softmax("broadcast", &tensor(&data(5, 6), &[5], dtype).broadcast_as([3, 5]).unwrap(), -1);
        // Long rows (lane tails) and many rows (parallel), plus a single-element dim.
        check_softmax("long rows", &tensor(&data(3 * 5001, 8), &[3, 5001], dtype), -1);
        check_softmax("many rows", &tensor(&data(130 * 257, 9), &[130, 257], dtype), 1);
        check_softmax("many rows dim 0", &tensor(&data(130 * 257, 9), &[130, 257], dtype), 0);
        check_softmax("size-1 dim", &tensor(&data(7, 9), &[7, 1], dtype), 1);
    }
}

#[test]
fn softmax_rows_sum_to_one_even_for_huge_logits() {
    for dtype in DType::FLOATS {
        for scale in [1.0, 1000.0] {
            let x: Vec<f64> = data(64 * 1000, 11).iter().map(|v| v * scale).collect();
            let t = tensor(&x, &[64, 1000], dtype);
            let y = t.softmax(-1).unwrap();
            let sums = y.to_dtype(DType::F64).unwrap().sum(-1, false).unwrap().to_vec::<f64>().unwrap();
            let eps = if dtype == DType::F64 {
                1e-12
            } else if dtype == DType::F32 {
                1e-5
            } else {
                2e-2
            };
            assert!(sums.iter().all(|s| (s - 1.0).abs() < eps), "{dtype} x{scale}: {:?}", &sums[..4]);
            let ls = t.log_softmax(-1).unwrap().to_f64_vec().unwrap();
            assert!(ls.iter().all(|v| v.is_finite() && *v <= 1e-6), "{dtype} x{scale}");
            if dtype == DType::F32 || dtype == DType::F64 {
                check_softmax(&format!("x{scale}"), &t, -1);
            }
        }
    }
}

#[test]
fn masked_entries_get_zero_and_fully_masked_rows_stay_finite() {
    let ninf = f64::NEG_INFINITY;
    for dtype in DType::FLOATS {
        // Row 0 partly masked, row 1 fully masked, row 2 long with a masked tail.
        let mut x = vec![0.5, ninf, 2.0, ninf, ninf, ninf, ninf, ninf];
        let t = tensor(&x, &[2, 4], dtype);
        let y = t.softmax(1).unwrap().to_f64_vec().unwrap();
        assert!(y[1] == 0.0 && y[3] == 0.0 && (y[0] + y[2] - 1.0).abs() < 1e-2, "{y:?}");
        assert_eq!(&y[4..], &[0.0; 4], "fully masked row: {dtype}");
        let l = t.log_softmax(1).unwrap().to_f64_vec().unwrap();
        assert!(l[1] == ninf && l[0].is_finite() && l[4..].iter().all(|&v| v == ninf), "{l:?}");
        x = data(300, 12);
        for v in &mut x[200..] {
            *v = ninf;
        }
        let y = tensor(&x, &[300], dtype).softmax(0).unwrap().to_f64_vec().unwrap();
        assert!(y[200..].iter().all(|&v| v == 0.0) && y.iter().all(|v| !v.is_nan()));
        // Along a non-last dim too.
        let t = tensor(&[ninf, 1.0, ninf, 2.0], &[2, 2], dtype);
        let y = t.softmax(0).unwrap().to_f64_vec().unwrap();
        assert_eq!((y[0], y[2]), (0.0, 0.0));
        assert!((y[1] + y[3] - 1.0).abs() < 1e-2);
        let l = t.log_softmax(0).unwrap().to_f64_vec().unwrap();
        assert!(l[0] == ninf && l[2] == ninf && l[1].is_finite() && l[3].is_finite(), "{l:?}");
    }
    // NaN or +inf in a row makes that row NaN (as in PyTorch); other rows are untouched.
    let t = tensor(&[1.0, f64::NAN, 0.0, 0.0], &[2, 2], DType::F32);
    let y = t.softmax(1).unwrap().to_f64_vec().unwrap();
    assert!(y[0].is_nan() && y[1].is_nan() && y[2] == 0.5 && y[3] == 0.5, "{y:?}");
}

// ----- gradients ----------------------------------------------------------------------------

#[test]
fn reductions_pass_finite_difference_checks() -> Result<()> {
    let a = tensor(&distinct(24), &[2, 3, 4], DType::F64);
    let dims_sets: [Vec<isize>; 4] = [vec![0], vec![-1], vec![0, 2], vec![0, 1, 2]];
    for dims in &dims_sets {
        for keepdim in [false, true] {
            let d = dims.clone();
            let ctx = |op: &str| format!("{op} {dims:?} keepdim {keepdim}");
            assert_grad(&ctx("sum"), |x| x[0].sum(d.clone(), keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("mean"), |x| x[0].mean(d.clone(), keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("max"), |x| x[0].max(d.clone(), keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("min"), |x| x[0].min(d.clone(), keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("logsumexp"), |x| x[0].logsumexp(d.clone(), keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("var0"), |x| x[0].var(d.clone(), 0, keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("var1"), |x| x[0].var(d.clone(), 1, keepdim), std::slice::from_ref(&a), 1e-6)?;
            assert_grad(&ctx("std1"), |x| x[0].std(d.clone(), 1, keepdim), std::slice::from_ref(&a), 1e-6)?;
        }
    }
    // Through a non-contiguous view, and composed with another op.
    assert_grad("lse of transpose", |x| x[0].transpose(0, 2)?.logsumexp(1, false), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("var of exp", |x| x[0].exp()?.var([0, 2], 1, true), std::slice::from_ref(&a), 1e-6)?;
    Ok(())
}

#[test]
fn softmax_and_log_softmax_pass_finite_difference_checks() -> Result<()> {
    let a = tensor(&data(24, 13), &[2, 3, 4], DType::F64);
    for dim in [0isize, 1, -1] {
        assert_grad(&format!("softmax {dim}"), |x| x[0].softmax(dim), std::slice::from_ref(&a), 1e-6)?;
        assert_grad(&format!("log_softmax {dim}"), |x| x[0].log_softmax(dim), std::slice::from_ref(&a), 1e-6)?;
    }
    assert_grad("softmax of view", |x| x[0].permute([2, 0, 1])?.softmax(-1), std::slice::from_ref(&a), 1e-6)?;
    Ok(())
}

/// Loss `sum(w * f(x))` for a fixed weight pattern; returns d loss / dx.
fn grad_of(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Vec<f64> {
    let v = x.to_var().unwrap();
    let y = f(&v).unwrap();
    let w: Vec<f64> = (0..y.elem_count()).map(|i| 1.0 + i as f64).collect();
    let w = Tensor::from_vec(w, y.shape().clone(), &test_device()).unwrap().to_dtype(y.dtype()).unwrap();
    let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    g.get(&v).unwrap().to_f64_vec().unwrap()
}

#[test]
fn max_gradient_is_split_evenly_between_ties() {
    for dtype in DType::FLOATS {
        let x = tensor(&[1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 0.0], &[2, 4], dtype);
        // Row weights are 1 and 2: ties share them.
        let want = [0.0, 0.5, 0.5, 0.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 0.0];
        assert_close(&format!("max ties {dtype}"), &grad_of(&x, |t| t.max(1, false)), &want, tol(dtype));
        let g = grad_of(&x, |t| t.min(AllDims, false));
        assert_eq!(g, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "{dtype}");
    }
}

#[test]
fn masked_rows_get_zero_gradients_not_nan() {
    let ninf = f64::NEG_INFINITY;
    let x = tensor(&[ninf, ninf, ninf, 0.5, ninf, 1.5], &[2, 3], DType::F64);
    let g = grad_of(&x, |t| t.softmax(1));
    assert!(g[..3].iter().all(|&v| v == 0.0) && g.iter().all(|v| v.is_finite()), "{g:?}");
    let g = grad_of(&x, |t| t.logsumexp(1, false));
    assert_eq!(&g[..3], &[0.0; 3]);
    // Row 1: weight 2 times softmax over the unmasked entries.
    let (e1, e2) = (0.5f64.exp(), 1.5f64.exp());
    assert_close("lse grad", &g[3..], &[2.0 * e1 / (e1 + e2), 0.0, 2.0 * e2 / (e1 + e2)], (1e-12, 1e-12));
    // std where the spread is 0: gradient 0 (PyTorch's convention), not NaN.
    let c = tensor(&[2.0, 2.0, 2.0], &[3], DType::F64);
    assert_eq!(grad_of(&c, |t| t.std(0, 1, false)), vec![0.0; 3]);
}

// ----- errors -------------------------------------------------------------------------------

#[test]
fn user_mistakes_return_errors_naming_the_problem() {
    let t = tensor(&data(24, 14), &[2, 3, 4], DType::F32);
    let msg = |e: Error| e.to_string();
    let e = msg(t.sum(3, false).unwrap_err());
    assert!(e.starts_with("sum") && e.contains("dim 3") && e.contains("out of range"), "{e}");
    let e = msg(t.max([-4isize], false).unwrap_err());
    assert!(e.starts_with("max") && e.contains("-4") && e.contains("[2, 3, 4]"), "{e}");
    let e = msg(t.logsumexp([1, -2], false).unwrap_err());
    assert!(e.starts_with("logsumexp") && e.contains("more than once"), "{e}");
    let e = msg(t.var([0, 0], 1, false).unwrap_err());
    assert!(e.starts_with("var") && e.contains("more than once"), "{e}");
    let e = msg(t.argmax([0, 2], false).unwrap_err());
    assert!(e.starts_with("argmax") && e.contains("exactly one dim") && e.contains("[0, 2]"), "{e}");
    let e = msg(t.argmin(AllDims, false).unwrap_err());
    assert!(e.starts_with("argmin") && e.contains("argmin_all"), "{e}");
    let e = msg(t.softmax(3).unwrap_err());
    assert!(e.starts_with("softmax") && e.contains("out of range"), "{e}");
    let e = msg(t.log_softmax(-4).unwrap_err());
    assert!(e.starts_with("log_softmax") && e.contains("-4"), "{e}");
    let e = msg(Tensor::scalar(1.0f32, &test_device()).unwrap().softmax(0).unwrap_err());
    assert!(e.contains("rank 0"), "{e}");
    // Scalars reduce over AllDims (no dims) to themselves.
    let s = Tensor::scalar(4.0f64, &test_device()).unwrap();
    assert_eq!(s.max_all().unwrap().to_scalar::<f64>().unwrap(), 4.0);
    assert_eq!(s.argmax_all().unwrap().to_scalar::<i64>().unwrap(), 0);
}
