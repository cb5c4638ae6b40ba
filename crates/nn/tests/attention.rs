//! MultiHeadAttention against a naive reference written here, fused path against the
//! materialised one, and gradients through both.

mod common;

use attune_nn::{AttentionConfig, Ctx, Memory, MultiHeadAttention, ParamBuilder, ParamStore, Positions};
use attune_tensor::{DType, Device, Tensor};
use common::{check_grads, max_diff, randn_var};

fn mha(cfg: AttentionConfig, seed: u64) -> (ParamStore, MultiHeadAttention) {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, seed, DType::F64, &Device::Cpu);
    let m = MultiHeadAttention::new(&pb.sub("attn"), cfg).unwrap();
    (store, m)
}

fn linear(x: &[f64], w: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    w.iter().zip(b).map(|(row, bi)| bi + row.iter().zip(x).map(|(a, c)| a * c).sum::<f64>()).collect()
}

/// Naive attention from the parameters: every mask, softcap, RoPE and ALiBi written out.
fn reference(store: &ParamStore, cfg: &AttentionConfig, x: &Tensor, lens: Option<&[usize]>) -> Vec<f64> {
    let sd: std::collections::HashMap<_, _> = store.state_dict().into_iter().collect();
    let get = |n: &str| {
        (
            sd[&format!("attn.{n}.weight")].to_vec2::<f64>().unwrap(),
            sd[&format!("attn.{n}.bias")].to_vec::<f64>().unwrap(),
        )
    };
    let ((wq, bq), (wk, bk), (wv, bv), (wo, bo)) = (get("q_proj"), get("k_proj"), get("v_proj"), get("o_proj"));
    let (b, s, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let (h, hkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim());
    let xv = x.to_vec::<f64>().unwrap();
    let mut out = vec![0.0; b * s * d];
    let rope = |v: &mut [f64], pos: usize| {
        let half = hd / 2;
        for j in 0..half {
            let a = pos as f64 * cfg.rope_theta.powf(-2.0 * j as f64 / hd as f64);
            let (x1, x2) = (v[j], v[j + half]);
            v[j] = x1 * a.cos() - x2 * a.sin();
            v[j + half] = x2 * a.cos() + x1 * a.sin();
        }
    };
    for bi in 0..b {
        let rows: Vec<&[f64]> = (0..s).map(|i| &xv[(bi * s + i) * d..(bi * s + i + 1) * d]).collect();
        let q: Vec<Vec<f64>> = rows.iter().map(|r| linear(r, &wq, &bq)).collect();
        let k: Vec<Vec<f64>> = rows.iter().map(|r| linear(r, &wk, &bk)).collect();
        let v: Vec<Vec<f64>> = rows.iter().map(|r| linear(r, &wv, &bv)).collect();
        let len = lens.map_or(s, |l| l[bi]);
        let mut merged = vec![vec![0.0; d]; s];
        for hh in 0..h {
            let g = hh / (h / hkv);
            for i in 0..s {
                let mut qi = q[i][hh * hd..(hh + 1) * hd].to_vec();
                if cfg.positions == Positions::Rope {
                    rope(&mut qi, i);
                }
                // Self-attention over a right-padded batch: query i sits at position i (the
                // padding does not shift masks or ALiBi distances; docs/attention.md, "Masks").
                let row = i as i64;
                let mut scores = vec![f64::NEG_INFINITY; s];
                for j in 0..s {
                    let jj = j as i64;
                    let mut vis = j < len && (!cfg.causal || jj <= row);
                    if let Some((l, r)) = cfg.window {
                        vis &= (l < 0 || jj >= row - l) && (r < 0 || jj <= row + r);
                    }
                    if !vis {
                        continue;
                    }
                    let mut kj = k[j][g * hd..(g + 1) * hd].to_vec();
                    if cfg.positions == Positions::Rope {
                        rope(&mut kj, j);
                    }
                    let mut sc = qi.iter().zip(&kj).map(|(a, c)| a * c).sum::<f64>() / (hd as f64).sqrt();
                    if let Some(c) = cfg.softcap {
                        sc = c * (sc / c).tanh();
                    }
                    if cfg.positions == Positions::Alibi {
                        sc -= 2f64.powf(-8.0 * (hh + 1) as f64 / h as f64) * (row - jj).abs() as f64;
                    }
                    scores[j] = sc;
                }
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if mx == f64::NEG_INFINITY {
                    continue;
                }
                let z: f64 = scores.iter().map(|v| (v - mx).exp()).sum();
                for j in 0..s {
                    let p = (scores[j] - mx).exp() / z;
                    for t in 0..hd {
                        merged[i][hh * hd + t] += p * v[j][g * hd + t];
                    }
                }
            }
        }
        for i in 0..s {
            out[(bi * s + i) * d..(bi * s + i + 1) * d].copy_from_slice(&linear(&merged[i], &wo, &bo));
        }
    }
    out
}

fn configs() -> Vec<(&'static str, AttentionConfig)> {
    let base = AttentionConfig::new(16, 4);
    vec![
        ("plain", base.clone()),
        ("causal", AttentionConfig { causal: true, ..base.clone() }),
        ("gqa causal", AttentionConfig { causal: true, n_kv_heads: 2, ..base.clone() }),
        ("mqa window", AttentionConfig { n_kv_heads: 1, window: Some((2, 1)), ..base.clone() }),
        ("softcap", AttentionConfig { softcap: Some(0.7), causal: true, ..base.clone() }),
        ("rope", AttentionConfig { positions: Positions::Rope, causal: true, ..base.clone() }),
        ("alibi", AttentionConfig { positions: Positions::Alibi, causal: true, ..base.clone() }),
        ("alibi bidirectional gqa", AttentionConfig { positions: Positions::Alibi, n_kv_heads: 2, ..base }),
    ]
}

#[test]
fn every_variant_matches_the_naive_reference_on_both_paths() {
    for (name, cfg) in configs() {
        let (store, m) = mha(cfg.clone(), 11);
        let x = randn_var(&[2, 7, 16], 2);
        for lens in [None, Some(&[7usize, 4][..])] {
            let want = reference(&store, &cfg, &x, lens);
            let fused = m.forward(&x, lens, &mut Ctx::eval()).unwrap();
            let (mat, probs) = m.forward_with_probs(&x, lens, &mut Ctx::eval()).unwrap();
            let w = Tensor::from_vec(want, [2, 7, 16], &Device::Cpu).unwrap();
            assert!(max_diff(&fused, &w) < 1e-10, "{name} {lens:?} fused: {}", max_diff(&fused, &w));
            assert!(max_diff(&mat, &w) < 1e-10, "{name} {lens:?} materialised: {}", max_diff(&mat, &w));
            assert_eq!(probs.dims(), &[2, 4, 7, 7]);
            for row in probs.to_vec::<f64>().unwrap().chunks(7) {
                let s: f64 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-12 || s == 0.0, "{name}: a probability row sums to {s}");
            }
        }
    }
}

#[test]
fn gradients_through_fused_and_materialised_paths() {
    for (name, cfg) in configs() {
        let (store, m) = mha(cfg, 12);
        let x = randn_var(&[1, 5, 16], 4);
        let lens = [4usize];
        check_grads(
            name,
            &store,
            std::slice::from_ref(&x),
            || m.forward(&x, Some(&lens), &mut Ctx::eval()).unwrap(),
            6,
            1e-5,
        );
        check_grads(
            &format!("{name} materialised"),
            &store,
            std::slice::from_ref(&x),
            || m.forward_with_probs(&x, Some(&lens), &mut Ctx::eval()).unwrap().0,
            6,
            1e-5,
        );
    }
}

#[test]
fn rope_scores_depend_only_on_relative_position() {
    let rope = attune_nn::Rope::new(8, 32, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let q = randn_var(&[1, 1, 1, 8], 1);
    let k = randn_var(&[1, 1, 1, 8], 2);
    let score = |pq: usize, pk: usize| {
        let a = rope.apply(&q, pq).unwrap().to_vec::<f64>().unwrap();
        let b = rope.apply(&k, pk).unwrap().to_vec::<f64>().unwrap();
        a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>()
    };
    assert!((score(5, 2) - score(13, 10)).abs() < 1e-10);
    assert!((score(5, 2) - score(5, 3)).abs() > 1e-6);
    let n = |t: &Tensor| t.to_vec::<f64>().unwrap().iter().map(|v| v * v).sum::<f64>();
    assert!((n(&rope.apply(&q, 9).unwrap()) - n(&q)).abs() < 1e-10, "rotation must keep the norm");
    assert!(rope.apply(&q, 32).is_err());
}

#[test]
fn training_dropout_changes_outputs_reproducibly() {
    let cfg = AttentionConfig { dropout: 0.3, causal: true, ..AttentionConfig::new(16, 4) };
    let (_, m) = mha(cfg, 3);
    let x = randn_var(&[2, 6, 16], 5);
    let a = m.forward(&x, None, &mut Ctx::train(7)).unwrap();
    let b = m.forward(&x, None, &mut Ctx::train(7)).unwrap();
    let c = m.forward(&x, None, &mut Ctx::train(8)).unwrap();
    let e = m.forward(&x, None, &mut Ctx::eval()).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    assert!(max_diff(&a, &c) > 1e-3 && max_diff(&a, &e) > 1e-3);
}

#[test]
fn cross_attention_reads_the_memory_and_checks_shapes() {
    let (store, m) = mha(AttentionConfig::new(16, 2), 6);
    let x = randn_var(&[2, 3, 16], 1);
    let mem = randn_var(&[2, 5, 16], 2);
    let lens = [5usize, 2];
    let out = m.forward_cross(&x, Memory { states: &mem, lengths: Some(&lens) }, &mut Ctx::eval()).unwrap();
    assert_eq!(out.dims(), &[2, 3, 16]);
    // Padded memory rows must not matter.
    let mut mv = mem.to_vec::<f64>().unwrap();
    for v in &mut mv[(5 + 2) * 16..(5 + 5) * 16] {
        *v = 100.0;
    }
    let mem2 = Tensor::from_vec(mv, [2, 5, 16], &Device::Cpu).unwrap();
    let out2 = m.forward_cross(&x, Memory { states: &mem2, lengths: Some(&lens) }, &mut Ctx::eval()).unwrap();
    assert!(max_diff(&out, &out2) < 1e-12);
    check_grads(
        "cross",
        &store,
        &[x.clone(), mem.clone()],
        || m.forward_cross(&x, Memory { states: &mem, lengths: Some(&lens) }, &mut Ctx::eval()).unwrap(),
        6,
        1e-5,
    );
    let bad = randn_var(&[3, 5, 16], 2);
    let err = m.forward_cross(&x, Memory { states: &bad, lengths: None }, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(err.contains("batch"), "{err}");
}

#[test]
fn bad_configs_are_errors() {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
    let e = MultiHeadAttention::new(&pb, AttentionConfig::new(10, 4)).unwrap_err().to_string();
    assert!(e.contains("divisible"), "{e}");
    let e = MultiHeadAttention::new(&pb, AttentionConfig { n_kv_heads: 3, ..AttentionConfig::new(16, 4) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_kv_heads"), "{e}");
}

#[test]
fn alibi_slopes_follow_press_et_al() {
    use attune_nn::layers::positions::alibi_slopes;
    let p = |k: i32| 2f64.powi(-k);
    assert_eq!(alibi_slopes(8), (1..=8).map(p).collect::<Vec<_>>());
    // Six heads: the four slopes of H = 4, then every other slope of H = 8 (2^-1, 2^-3).
    assert_eq!(alibi_slopes(6), vec![p(2), p(4), p(6), p(8), p(1), p(3)]);
}

/// f32 parameters and inputs on `device`, forward and the gradient of x through `sum(out * w)`.
fn mha_f32_on(cfg: &AttentionConfig, device: Device, lens: Option<&[usize]>) -> (Vec<f64>, Vec<f64>) {
    let d = cfg.d_model;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 21, DType::F32, &device);
    let m = MultiHeadAttention::new(&pb.sub("attn"), cfg.clone()).unwrap();
    let x = attune_tensor::Rng::new(5).randn([2, 9, d], DType::F32, &Device::Cpu).unwrap();
    let x = x.to_device(&device).unwrap().to_var().unwrap();
    let w = attune_tensor::Rng::new(6).randn([2, 9, d], DType::F32, &Device::Cpu).unwrap();
    let out = m.forward(&x, lens, &mut Ctx::eval()).unwrap();
    let g = out.mul(&w.to_device(&device).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    (out.to_f64_vec().unwrap(), g.get(&x).unwrap().to_f64_vec().unwrap())
}

#[test]
fn the_fused_cuda_kernels_serve_mha_on_the_emulator() {
    // On Device::Emu the fused path runs kernels/attention/ (SIMT in f32) for head dims that
    // are multiples of 8; others (head_dim 4 here) are composed of tensor ops. Both must agree
    // with the CPU flash path to f32 accuracy, masks, GQA and RoPE included.
    let base = AttentionConfig::new(32, 4);
    for (name, cfg) in [
        (
            "causal gqa rope",
            AttentionConfig { causal: true, n_kv_heads: 2, positions: Positions::Rope, ..base.clone() },
        ),
        ("mqa window softcap", AttentionConfig { n_kv_heads: 1, window: Some((3, 1)), softcap: Some(2.0), ..base }),
        ("head_dim 4 (unfused)", AttentionConfig { causal: true, ..AttentionConfig::new(16, 4) }),
    ] {
        for lens in [None, Some(&[9usize, 5][..])] {
            let (cpu_out, cpu_dx) = mha_f32_on(&cfg, Device::Cpu, lens);
            let (emu_out, emu_dx) = mha_f32_on(&cfg, Device::Emu, lens);
            let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(diff(&cpu_out, &emu_out) < 1e-5, "{name} {lens:?}: out differs by {}", diff(&cpu_out, &emu_out));
            assert!(diff(&cpu_dx, &emu_dx) < 1e-4, "{name} {lens:?}: dx differs by {}", diff(&cpu_dx, &emu_dx));
        }
    }
}
