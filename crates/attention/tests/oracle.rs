//! The oracle against first principles: masks against the formulas of docs/attention.md, the forward
//! against composed tensor ops, the backward against finite differences of the forward, and
//! every invalid input as a typed error.

use attune_attention::{AttentionParams, Segment, oracle, validate};
use attune_tensor::{DType, Device, Rng, Tensor};

fn randn(shape: [usize; 4], seed: u64) -> Tensor {
    Rng::new(seed).randn(shape, DType::F64, &Device::Cpu).unwrap()
}

fn qkv(b: usize, hq: usize, hk: usize, sq: usize, sk: usize, d: usize) -> (Tensor, Tensor, Tensor) {
    (randn([b, hq, sq, d], 1), randn([b, hk, sk, d], 2), randn([b, hk, sk, d], 3))
}

#[test]
fn key_ranges_match_the_guide_formulas() {
    let (q, k, v) = qkv(1, 1, 1, 5, 9, 4);
    for (causal, window) in
        [(false, None), (true, None), (false, Some((2, 1))), (true, Some((3, -1))), (false, Some((-1, 0)))]
    {
        let mut p = AttentionParams::new().causal(causal);
        p.window = window;
        let pb = validate(&q, &k, &v, &p).unwrap();
        for k_len in [9usize, 4, 0] {
            let seg = Segment { batch: 0, q_start: 0, q_len: 5, k_start: 0, k_len };
            for i in 0..5i64 {
                let shift = k_len as i64 - 5;
                let visible: Vec<usize> = (0..k_len as i64)
                    .filter(|&j| {
                        let (l, r) = window.unwrap_or((-1, -1));
                        let r = if causal { if r < 0 { 0 } else { r.min(0) } } else { r };
                        (l < 0 || j >= i + shift - l) && (r < 0 || j <= i + shift + r)
                    })
                    .map(|j| j as usize)
                    .collect();
                let (lo, hi) = pb.key_range(&seg, i as usize);
                assert_eq!(
                    (lo..hi).collect::<Vec<_>>(),
                    visible,
                    "causal {causal} window {window:?} k_len {k_len} i {i}"
                );
            }
        }
    }
}

#[test]
fn forward_matches_composed_tensor_ops() {
    // No mask: out = softmax(scale q k^T) v, computed with matmul/exp/sum (GQA 2:1 by
    // repeating kv heads).
    let (q, k, v) = qkv(2, 4, 2, 5, 7, 8);
    let f = oracle::forward(&q, &k, &v, &AttentionParams::new()).unwrap();
    let rep = |t: &Tensor| {
        Tensor::cat(
            &[
                t.narrow(1usize, 0, 1).unwrap(),
                t.narrow(1usize, 0, 1).unwrap(),
                t.narrow(1usize, 1, 1).unwrap(),
                t.narrow(1usize, 1, 1).unwrap(),
            ],
            1usize,
        )
        .unwrap()
    };
    let (kr, vr) = (rep(&k), rep(&v));
    let s = q.matmul(&kr.t().unwrap()).unwrap().mul_scalar(1.0 / 8f64.sqrt()).unwrap();
    let e = s.exp().unwrap();
    let z = e.sum(-1isize, true).unwrap();
    let want = e.div(&z).unwrap().matmul(&vr).unwrap().to_vec::<f64>().unwrap();
    let lse = z.log().unwrap().to_vec::<f64>().unwrap();
    for (a, b) in f.out.to_vec::<f64>().unwrap().iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    for (a, b) in f.lse.to_vec::<f64>().unwrap().iter().zip(&lse) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

/// Central differences of `sum(w * out)` against the oracle backward, for every element.
fn check_backward(p: &AttentionParams, dims: (usize, usize, usize, usize, usize, usize)) {
    let (b, hq, hk, sq, sk, d) = dims;
    let (q, k, v) = qkv(b, hq, hk, sq, sk, d);
    let w = randn([b, hq, sq, d], 9);
    let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> f64 {
        oracle::forward(q, k, v, p).unwrap().out.mul(&w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let g = oracle::backward(&q, &k, &v, &w, p).unwrap();
    let eps = 1e-6;
    for (which, t, grad) in [(0, &q, &g.dq), (1, &k, &g.dk), (2, &v, &g.dv)] {
        let base = t.to_vec::<f64>().unwrap();
        let analytic = grad.to_vec::<f64>().unwrap();
        for i in 0..base.len() {
            let eval = |delta: f64| {
                let mut x = base.clone();
                x[i] += delta;
                let x = Tensor::from_vec(x, t.shape().clone(), &Device::Cpu).unwrap();
                match which {
                    0 => loss(&x, &k, &v),
                    1 => loss(&q, &x, &v),
                    _ => loss(&q, &k, &x),
                }
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < 1e-6 * numeric.abs().max(1.0),
                "{p:?} input {which} elem {i}: {numeric} vs {}",
                analytic[i]
            );
        }
    }
}

#[test]
fn backward_matches_finite_differences_for_every_feature() {
    let dims = (2, 2, 1, 4, 6, 3);
    check_backward(&AttentionParams::new(), dims);
    check_backward(&AttentionParams::new().causal(true), dims);
    check_backward(&AttentionParams::new().window(1, 1).scale(0.7), dims);
    check_backward(&AttentionParams::new().softcap(0.8), dims);
    check_backward(&AttentionParams::new().seqlens_k(vec![6, 3]).causal(true), dims);
    // Dropout is a fixed mask for a fixed stream, so the function stays differentiable.
    check_backward(&AttentionParams::new().dropout(0.3, 7, 11), dims);
    check_backward(&AttentionParams::new().cu_seqlens(vec![0, 1, 4], vec![0, 4, 6]).causal(true), (1, 2, 2, 4, 6, 3));
}

#[test]
fn rows_without_visible_keys_give_zero_output_minus_inf_lse_and_zero_gradients() {
    let (q, k, v) = qkv(1, 1, 1, 4, 4, 3);
    // Window (0, 0) sees only the diagonal key; with 2 valid keys and 4 queries the
    // bottom-right alignment puts the diagonals of rows 0 and 1 before the first key.
    let p = AttentionParams::new().seqlens_k(vec![2]).window(0, 0);
    let f = oracle::forward(&q, &k, &v, &p).unwrap();
    let lse = f.lse.to_vec::<f64>().unwrap();
    let pb = validate(&q, &k, &v, &p).unwrap();
    let seg = pb.segments[0];
    let out = f.out.to_vec::<f64>().unwrap();
    let g = oracle::backward(&q, &k, &v, &q.ones_like().unwrap(), &p).unwrap();
    let dq = g.dq.to_vec::<f64>().unwrap();
    let mut empty_rows = 0;
    for i in 0..4 {
        let (lo, hi) = pb.key_range(&seg, i);
        if lo == hi {
            empty_rows += 1;
            assert_eq!(lse[i], f64::NEG_INFINITY);
            assert!(out[i * 3..i * 3 + 3].iter().all(|&x| x == 0.0));
            assert!(dq[i * 3..i * 3 + 3].iter().all(|&x| x == 0.0));
        } else {
            assert!(lse[i].is_finite());
        }
    }
    assert_eq!(empty_rows, 2);
}

#[test]
fn dropout_drops_about_p_and_rescales() {
    let (q, k, v) = qkv(1, 2, 2, 64, 64, 4);
    let v1 = v.ones_like().unwrap();
    // With v = 1, each output element is sum_j P_j * keep_j / (1 - p): its mean over rows is 1.
    let out = oracle::forward(&q, &k, &v1, &AttentionParams::new().dropout(0.25, 3, 0)).unwrap().out;
    let mean = out.mean_all().unwrap().to_scalar::<f64>().unwrap();
    assert!((mean - 1.0).abs() < 0.05, "{mean}");
    let other = oracle::forward(&q, &k, &v1, &AttentionParams::new().dropout(0.25, 4, 0)).unwrap().out;
    assert_ne!(out.to_vec::<f64>().unwrap(), other.to_vec::<f64>().unwrap(), "another seed drops other elements");
}

#[test]
fn invalid_inputs_are_typed_errors_with_the_fix() {
    let (q, k, v) = qkv(2, 4, 2, 5, 7, 8);
    let err = |q: &Tensor, k: &Tensor, v: &Tensor, p: &AttentionParams| validate(q, k, v, p).unwrap_err().to_string();
    let k80 = randn([2, 2, 7, 80], 1);
    let v80 = randn([2, 2, 7, 80], 1);
    let e = err(&q, &k80, &v80, &AttentionParams::new());
    assert!(e.contains("q has head_dim 8 but k has 80") && e.contains("share head_dim"), "{e}");
    let k3 = randn([2, 3, 7, 8], 1);
    let e = err(&q, &k3, &k3, &AttentionParams::new());
    assert!(e.contains("multiple of heads_kv"), "{e}");
    let e = err(&q, &k, &v.narrow(2usize, 0, 6).unwrap(), &AttentionParams::new());
    assert!(e.contains("same shape"), "{e}");
    let e = err(&q, &k, &v, &AttentionParams::new().window(-2, 0));
    assert!(e.contains("window left") && e.contains("-1 for unbounded"), "{e}");
    let e = err(&q, &k, &v, &AttentionParams::new().seqlens_k(vec![7, 8]));
    assert!(e.contains("seqlens_k[1] = 8 exceeds seq_k 7"), "{e}");
    let e = err(&q, &k, &v, &AttentionParams::new().cu_seqlens(vec![0, 5], vec![0, 7]));
    assert!(e.contains("batch 1"), "{e}");
    let (q1, k1, v1) = qkv(1, 2, 2, 5, 7, 8);
    let e = err(&q1, &k1, &v1, &AttentionParams::new().cu_seqlens(vec![0, 3, 2, 5], vec![0, 2, 4, 7]));
    assert!(e.contains("never decrease"), "{e}");
    let e = err(&q1, &k1, &v1, &AttentionParams::new().cu_seqlens(vec![0, 3, 4], vec![0, 2, 7]));
    assert!(e.contains("packed length is 5"), "{e}");
    let e = err(&q, &k, &v, &AttentionParams::new().softcap(0.0));
    assert!(e.contains("softcap"), "{e}");
    let e = err(&q, &k, &v, &AttentionParams::new().dropout(1.0, 0, 0));
    assert!(e.contains("dropout p"), "{e}");
    let e = err(&q, &k.to_dtype(DType::F32).unwrap(), &v, &AttentionParams::new());
    assert!(e.contains("to_dtype"), "{e}");
    let e = err(&q.reshape([2, 4, 40]).unwrap(), &k, &v, &AttentionParams::new());
    assert!(e.contains("4 dims"), "{e}");
}
