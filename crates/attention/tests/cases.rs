//! The case-file loader and checker: round trip of a file written here with the safetensors
//! crate, defaults by dtype, `-inf` lse matching, and the errors of malformed files.

use attune_attention::cases::{Backend, Bound, check_case, compare, load_cases};
use attune_tensor::{DType, Device, Tensor};
use safetensors::{Dtype, serialize, tensor::TensorView};
use std::collections::HashMap;
use std::path::PathBuf;

/// A stored tensor: dtype, shape and little-endian bytes.
struct Raw(Dtype, Vec<usize>, Vec<u8>);

fn f32s(shape: &[usize], v: &[f64]) -> Raw {
    Raw(Dtype::F32, shape.to_vec(), v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect())
}

fn f16s(shape: &[usize], v: &[f64]) -> Raw {
    Raw(Dtype::F16, shape.to_vec(), v.iter().flat_map(|x| attune_tensor::f64_to_f16(*x).to_le_bytes()).collect())
}

fn i32s(v: &[i32]) -> Raw {
    Raw(Dtype::I32, vec![v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes a file to a fresh temp path and returns it.
fn write(tag: &str, tensors: &[(String, Raw)], meta: &[(&str, &str)]) -> PathBuf {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, Raw(dt, shape, bytes))| (n.clone(), TensorView::new(*dt, shape.clone(), bytes).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bytes = serialize(views, Some(meta)).unwrap();
    let path = std::env::temp_dir().join(format!("attune_cases_{}_{tag}.safetensors", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Naive single-head attention (batch 1, heads 1) in f64 with plain loops: out, lse and the
/// gradients for `dout`. `causal` is bottom-right aligned.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn naive(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
    sq: usize,
    sk: usize,
    d: usize,
    scale: f64,
    causal: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut out, mut lse) = (vec![0.0; sq * d], vec![f64::NEG_INFINITY; sq]);
    let (mut dq, mut dk, mut dv) = (vec![0.0; sq * d], vec![0.0; sk * d], vec![0.0; sk * d]);
    for i in 0..sq {
        let vis: Vec<usize> = (0..sk).filter(|&j| !causal || j as i64 <= i as i64 + sk as i64 - sq as i64).collect();
        if vis.is_empty() {
            continue;
        }
        let s: Vec<f64> =
            vis.iter().map(|&j| scale * (0..d).map(|x| q[i * d + x] * k[j * d + x]).sum::<f64>()).collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lse[i] = m + s.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let p: Vec<f64> = s.iter().map(|x| (x - lse[i]).exp()).collect();
        for (t, &j) in vis.iter().enumerate() {
            for x in 0..d {
                out[i * d + x] += p[t] * v[j * d + x];
                dv[j * d + x] += p[t] * dout[i * d + x];
            }
        }
        let dp: Vec<f64> = vis.iter().map(|&j| (0..d).map(|x| dout[i * d + x] * v[j * d + x]).sum()).collect();
        let pdp: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
        for (t, &j) in vis.iter().enumerate() {
            let ds = p[t] * (dp[t] - pdp) * scale;
            for x in 0..d {
                dq[i * d + x] += ds * k[j * d + x];
                dk[j * d + x] += ds * q[i * d + x];
            }
        }
    }
    (out, lse, dq, dk, dv)
}

const SQ: usize = 5;
const SK: usize = 3;
const D: usize = 4;

/// A full causal case `c` with seq_q > seq_k (so rows 0 and 1 see no key), f32 inputs.
fn full_case(name: &str, meta_extra: &str) -> (Vec<(String, Raw)>, String, Vec<f64>) {
    let (q, k, v, g) = (values(SQ * D, 1), values(SK * D, 2), values(SK * D, 3), values(SQ * D, 4));
    let scale = 0.7;
    let (out, lse, dq, dk, dv) = naive(&q, &k, &v, &g, SQ, SK, D, scale, true);
    let (qs, ks) = ([1, 1, SQ, D], [1, 1, SK, D]);
    let t = vec![
        (format!("{name}.q"), f32s(&qs, &q)),
        (format!("{name}.k"), f32s(&ks, &k)),
        (format!("{name}.v"), f32s(&ks, &v)),
        (format!("{name}.out"), f32s(&qs, &out)),
        (format!("{name}.lse"), f32s(&[1, 1, SQ], &lse)),
        (format!("{name}.dout"), f32s(&qs, &g)),
        (format!("{name}.dq"), f32s(&qs, &dq)),
        (format!("{name}.dk"), f32s(&ks, &dk)),
        (format!("{name}.dv"), f32s(&ks, &dv)),
    ];
    (t, format!("{{\"causal\": true, \"scale\": {scale}{meta_extra}}}"), out)
}

#[test]
fn round_trip_parses_tensors_params_and_tolerances() {
    let (t, meta, out) = full_case("c", ", \"window\": [4, -1], \"atol_dk\": 3e-5, \"future_key\": [1, 2]");
    let path = write("round_trip", &t, &[("c", &meta)]);
    let cases = load_cases(&path).unwrap();
    assert_eq!(cases.len(), 1);
    let c = &cases[0];
    assert_eq!(c.name, "c");
    assert_eq!((c.q.dims(), c.k.dims(), c.q.dtype()), (&[1, 1, SQ, D][..], &[1, 1, SK, D][..], DType::F32));
    assert!(c.params.causal);
    assert_eq!(c.params.scale, Some(0.7));
    assert_eq!(c.params.window, Some((4, -1)));
    assert_eq!(c.params.softcap, None);
    assert_eq!((c.tol.atol, c.tol.rtol, c.tol.atol_dk, c.tol.atol_dq), (None, None, Some(3e-5), None));
    let loaded = c.out.to_f64_vec().unwrap();
    assert!(loaded.iter().zip(&out).all(|(a, b)| *a == *b as f32 as f64), "out round-trips through f32");
    for backend in [Backend::Oracle, Backend::Flash] {
        let r = check_case(c, backend);
        assert!(r.passed(), "{backend}: {r:?}");
        let names: Vec<&str> = r.metrics.iter().map(|m| m.tensor).collect();
        assert_eq!(names, ["out", "lse", "dq", "dk", "dv"]);
        // atol_dk replaces atol for dk only.
        let dk = r.metric("dk").unwrap();
        assert!(dk.worst_tol >= 3e-5 && dk.worst_tol < 3e-5 + 1e-3, "dk bound {}", dk.worst_tol);
    }
    std::fs::remove_file(path).ok();
}

#[test]
fn defaults_f32_are_atol_2e5_rtol_2e4() {
    let (mut t, _, out) = full_case("d", "");
    // Metadata "{}": not causal, default scale 1/sqrt(D). Recompute the expected values so.
    let (q, k, v, g) = (values(SQ * D, 1), values(SK * D, 2), values(SK * D, 3), values(SQ * D, 4));
    let (out2, lse, ..) = naive(&q, &k, &v, &g, SQ, SK, D, 1.0 / (D as f64).sqrt(), false);
    assert_ne!(out, out2);
    let qs = [1, 1, SQ, D];
    t.retain(|(n, _)| !n.ends_with(".dq") && !n.ends_with(".dk") && !n.ends_with(".dv") && !n.ends_with(".dout"));
    let tol0 = 2e-5 + 2e-4 * out2[0].abs();
    let mut run = |delta: f64| {
        let mut o = out2.clone();
        o[0] += delta;
        t.retain(|(n, _)| n != "d.out" && n != "d.lse");
        t.push(("d.out".into(), f32s(&qs, &o)));
        t.push(("d.lse".into(), f32s(&[1, 1, SQ], &lse)));
        let path = write("defaults", &t, &[("d", "{}")]);
        let c = load_cases(&path).unwrap().remove(0);
        std::fs::remove_file(path).ok();
        assert!(!c.params.causal && c.params.scale.is_none() && c.params.window.is_none());
        assert!(!c.has_backward());
        check_case(&c, Backend::Oracle)
    };
    // f32 storage of the expected value costs up to half an ulp, far below the margins here.
    assert!(run(0.8 * tol0).passed());
    let r = run(1.25 * tol0);
    assert!(!r.passed());
    assert!(!r.metric("out").unwrap().pass && r.metric("lse").unwrap().pass);
    assert!(r.metric("out").unwrap().note.as_deref().unwrap().contains("flat index 0"));
}

#[test]
fn low_precision_defaults_use_the_naive_error_and_explicit_tolerances_override() {
    let (q, k, v) = (values(SQ * D, 5), values(SK * D, 6), values(SK * D, 7));
    let round = |x: &[f64]| x.iter().map(|v| attune_tensor::f64_to_f16(*v).to_f64()).collect::<Vec<_>>();
    let (q, k, v) = (round(&q), round(&k), round(&v));
    let (out, lse, ..) = naive(&q, &k, &v, &[0.0; SQ * D], SQ, SK, D, 0.5, false);
    let (qs, ks) = ([1, 1, SQ, D], [1, 1, SK, D]);
    let t = vec![
        ("h.q".to_string(), f16s(&qs, &q)),
        ("h.k".to_string(), f16s(&ks, &k)),
        ("h.v".to_string(), f16s(&ks, &v)),
        ("h.out".to_string(), f32s(&qs, &out)),
        ("h.lse".to_string(), f32s(&[1, 1, SQ], &lse)),
    ];
    let path = write("lowp", &t, &[("h", "{\"scale\": 0.5}")]);
    let c = load_cases(&path).unwrap().remove(0);
    assert_eq!(c.dtype(), DType::F16);
    let r = check_case(&c, Backend::Flash);
    assert!(r.passed(), "{r:?}");
    // The bound is one number (2 * naive error + 1e-5): at least the slack, at most a few f16 ulps.
    let m = r.metric("out").unwrap();
    assert!(m.worst_tol >= 1e-5 && m.worst_tol < 1e-2, "{m:?}");
    // An explicit atol switches to the elementwise bound.
    let path2 = write("lowp2", &t, &[("h", "{\"scale\": 0.5, \"atol\": 0.25, \"rtol\": 0}")]);
    let c2 = load_cases(&path2).unwrap().remove(0);
    let m2 = check_case(&c2, Backend::Flash).metric("out").unwrap().clone();
    assert_eq!(m2.worst_tol, 0.25);
    for p in [path, path2] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn expected_neg_inf_lse_matches_only_neg_inf() {
    let dev = Device::Cpu;
    let t = |v: Vec<f64>| Tensor::from_vec(v, [3], &dev).unwrap();
    let want = t(vec![f64::NEG_INFINITY, 1.0, f64::NEG_INFINITY]);
    let b = Bound::Elementwise { atol: 1e-3, rtol: 0.0 };
    assert!(compare("lse", &t(vec![f64::NEG_INFINITY, 1.0, f64::NEG_INFINITY]), &want, b).unwrap().pass);
    for bad in [
        vec![-1e30, 1.0, f64::NEG_INFINITY],
        vec![f64::NAN, 1.0, f64::NEG_INFINITY],
        vec![f64::INFINITY, 1.0, f64::NEG_INFINITY],
        vec![f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY],
    ] {
        let m = compare("lse", &t(bad.clone()), &want, b).unwrap();
        assert!(!m.pass && m.max_err.is_infinite(), "{bad:?} must not match: {m:?}");
    }
    // NaN never matches, not even NaN.
    let nan = t(vec![f64::NAN, 1.0, 1.0]);
    assert!(!compare("out", &nan, &nan, b).unwrap().pass);

    // Through a file: the causal case's rows 0 and 1 have -inf lse; a finite expected value fails.
    let (mut tensors, meta, _) = full_case("m", "");
    let path = write("neg_inf_ok", &tensors, &[("m", &meta)]);
    let c = load_cases(&path).unwrap().remove(0);
    assert_eq!(c.lse.as_ref().unwrap().to_f64_vec().unwrap()[0], f64::NEG_INFINITY);
    assert!(check_case(&c, Backend::Flash).passed());
    let (q, k, v, g) = (values(SQ * D, 1), values(SK * D, 2), values(SK * D, 3), values(SQ * D, 4));
    let mut lse = naive(&q, &k, &v, &g, SQ, SK, D, 0.7, true).1;
    lse[0] = -1e4;
    tensors.retain(|(n, _)| n != "m.lse");
    tensors.push(("m.lse".into(), f32s(&[1, 1, SQ], &lse)));
    let path2 = write("neg_inf_bad", &tensors, &[("m", &meta)]);
    let r = check_case(&load_cases(&path2).unwrap().remove(0), Backend::Flash);
    assert!(!r.passed() && !r.metric("lse").unwrap().pass && r.metric("out").unwrap().pass);
    for p in [path, path2] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn seqlens_k_is_read_as_key_padding() {
    let (mut t, meta, _) = full_case("p", "");
    t.push(("p.seqlens_k".into(), i32s(&[2])));
    let path = write("seqlens", &t, &[("p", &meta)]);
    let c = load_cases(&path).unwrap().remove(0);
    assert_eq!(c.params.seqlens_k, Some(vec![2]));
    // The expected values were made without padding, so the check must now fail.
    assert!(!check_case(&c, Backend::Oracle).passed());
    std::fs::remove_file(path).ok();
}

fn load_err(tag: &str, t: &[(String, Raw)], meta: &[(&str, &str)]) -> String {
    let path = write(tag, t, meta);
    let e = load_cases(&path).err().map(|e| e.to_string()).unwrap_or_default();
    std::fs::remove_file(path).ok();
    e
}

#[test]
fn malformed_files_are_errors_that_name_the_problem() {
    let (t, meta, _) = full_case("e", "");
    let without = |suffix: &str| {
        t.iter()
            .filter(|(n, _)| !n.ends_with(suffix))
            .map(|(n, r)| (n.clone(), Raw(r.0, r.1.clone(), r.2.clone())))
            .collect::<Vec<_>>()
    };
    let e = load_err("no_meta", &t, &[]);
    assert!(e.contains("'e'") && e.contains("no metadata entry"), "{e}");
    let e = load_err("bad_json", &t, &[("e", "{causal: yes")]);
    assert!(e.contains("not JSON"), "{e}");
    let e = load_err("bad_window", &t, &[("e", "{\"window\": [1]}")]);
    assert!(e.contains("'window' must be"), "{e}");
    let e = load_err("bad_causal", &t, &[("e", "{\"causal\": 1}")]);
    assert!(e.contains("'causal' must be"), "{e}");
    let e = load_err("bad_atol", &t, &[("e", "{\"atol\": \"big\"}")]);
    assert!(e.contains("'atol' must be a number"), "{e}");
    let e = load_err("no_out", &without(".out"), &[("e", &meta)]);
    assert!(e.contains("e.out") && e.contains("missing"), "{e}");
    let e = load_err("no_dout", &without(".dout"), &[("e", &meta)]);
    assert!(e.contains("needs dout"), "{e}");
    let mut bad_shape = without(".lse");
    bad_shape.push(("e.lse".into(), f32s(&[1, SQ], &[0.0; SQ])));
    let e = load_err("bad_lse", &bad_shape, &[("e", &meta)]);
    assert!(e.contains("lse has shape [1, 5]") && e.contains("[1, 1, 5]"), "{e}");
    let mut neg = without(".zzz");
    neg.push(("e.seqlens_k".into(), i32s(&[-1])));
    let e = load_err("neg_len", &neg, &[("e", &meta)]);
    assert!(e.contains("negative"), "{e}");
    let e = load_err("empty", &[("x.w".into(), f32s(&[1], &[0.0]))], &[]);
    assert!(e.contains("no case"), "{e}");
    let missing = load_cases("/nonexistent/dir/cases.safetensors").err().unwrap().to_string();
    assert!(missing.contains("/nonexistent/dir/cases.safetensors") && missing.contains("cannot read"), "{missing}");
}
