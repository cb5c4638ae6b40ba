//! Model: parameter names and shapes exactly as docs/model.md lists them, initialisation,
//! determinism, logits shapes, causality, padding, inspection, gradients and input errors.

mod common;

use attune_nn::{Ctx, MlpKind, Model, ModelConfig, ModelKind, NormKind, PoolingKind, Positions, hybrid_loss};
use attune_tensor::{DType, Device, Tensor};
use common::{check_grads, grad_names, max_diff};

/// `(name, shape)` of every parameter, in the order docs/model.md lists them (PyTorch's
/// `state_dict` order for the peer's module tree), written from the spec's table.
fn spec_params(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f, v) = (c.d_model, c.d_ff, c.vocab_size);
    let dk = c.n_kv_heads * (d / c.n_heads);
    let mut p: Vec<(String, Vec<usize>)> = match &c.patches {
        Some(spec) => {
            vec![("patch_embed.weight".into(), vec![d, spec.size * spec.size]), ("patch_embed.bias".into(), vec![d])]
        }
        None => vec![("embed.weight".into(), vec![v, d])],
    };
    let cls = c.pooling == PoolingKind::Cls;
    if cls {
        p.push(("cls".into(), vec![1, 1, d]));
    }
    if c.positions == Positions::Learned {
        p.push(("pos.weight".into(), vec![c.max_seq_len + usize::from(cls), d]));
    }
    let norm = |p: &mut Vec<(String, Vec<usize>)>, name: String| {
        p.push((format!("{name}.weight"), vec![d]));
        if c.norm == NormKind::LayerNorm {
            p.push((format!("{name}.bias"), vec![d]));
        }
    };
    for i in 0..c.n_layers {
        let l = format!("layers.{i}");
        norm(&mut p, format!("{l}.norm1"));
        for (proj, out) in [("q_proj", d), ("k_proj", dk), ("v_proj", dk), ("o_proj", d)] {
            p.push((format!("{l}.attn.{proj}.weight"), vec![out, d]));
            p.push((format!("{l}.attn.{proj}.bias"), vec![out]));
        }
        norm(&mut p, format!("{l}.norm2"));
        match c.mlp {
            MlpKind::Gelu => {
                p.push((format!("{l}.mlp.fc1.weight"), vec![f, d]));
                p.push((format!("{l}.mlp.fc1.bias"), vec![f]));
                p.push((format!("{l}.mlp.fc2.weight"), vec![d, f]));
                p.push((format!("{l}.mlp.fc2.bias"), vec![d]));
            }
            MlpKind::SwiGlu => {
                p.push((format!("{l}.mlp.gate_proj.weight"), vec![f, d]));
                p.push((format!("{l}.mlp.up_proj.weight"), vec![f, d]));
                p.push((format!("{l}.mlp.down_proj.weight"), vec![d, f]));
            }
        }
    }
    norm(&mut p, "norm_f".into());
    match c.kind {
        ModelKind::Lm if c.tie_embeddings => {}
        ModelKind::Lm => {
            p.push(("lm_head.weight".into(), vec![v, d]));
            p.push(("lm_head.bias".into(), vec![v]));
        }
        ModelKind::Classifier => {
            let k = c.num_classes.unwrap();
            if matches!(c.pooling, PoolingKind::Soft | PoolingKind::Hard) {
                p.push(("pool.proj.weight".into(), vec![d, d]));
                p.push(("pool.proj.bias".into(), vec![d]));
                p.push(("pool.alpha.weight".into(), vec![1, d]));
            }
            if c.pooling == PoolingKind::Hard {
                p.push(("pool_baseline.weight".into(), vec![1, d]));
                p.push(("pool_baseline.bias".into(), vec![1]));
            }
            p.push(("head.weight".into(), vec![k, d]));
            p.push(("head.bias".into(), vec![k]));
        }
    }
    p
}

/// Configurations covering every choice of positions, mlp, norm and head, GQA/MQA, windows
/// and softcaps.
fn configs() -> Vec<(&'static str, ModelConfig)> {
    let lm = ModelConfig::lm(40, 12, 16, 2, 4);
    let cls = ModelConfig::classifier(40, 12, 16, 2, 4, 3);
    vec![
        ("lm learned gelu layernorm", lm.clone()),
        (
            "lm rope gqa swiglu rmsnorm",
            ModelConfig {
                positions: Positions::Rope,
                n_kv_heads: 2,
                mlp: MlpKind::SwiGlu,
                norm: NormKind::RmsNorm,
                d_ff: 24,
                ..lm.clone()
            },
        ),
        (
            "lm alibi mqa window softcap",
            ModelConfig {
                positions: Positions::Alibi,
                n_kv_heads: 1,
                window: Some([3, -1]),
                softcap: Some(5.0),
                ..lm.clone()
            },
        ),
        ("lm tied embeddings (SASRec)", ModelConfig { tie_embeddings: true, ..lm.clone() }),
        ("lm no positions", ModelConfig { positions: Positions::None, n_layers: 1, ..lm }),
        ("classifier learned", cls.clone()),
        (
            "classifier rope swiglu rmsnorm gqa",
            ModelConfig {
                positions: Positions::Rope,
                mlp: MlpKind::SwiGlu,
                norm: NormKind::RmsNorm,
                n_kv_heads: 2,
                ..cls.clone()
            },
        ),
        ("classifier alibi", ModelConfig { positions: Positions::Alibi, ..cls.clone() }),
        ("classifier hard pooling", ModelConfig { pooling: PoolingKind::Hard, pool_k: 3, ..cls.clone() }),
        ("classifier class token", ModelConfig { pooling: PoolingKind::Cls, ..cls.clone() }),
        ("classifier mean rope", ModelConfig { pooling: PoolingKind::Mean, positions: Positions::Rope, ..cls.clone() }),
        ("classifier window none", ModelConfig { positions: Positions::None, window: Some([1, 2]), ..cls }),
    ]
}

fn tokens(rows: &[Vec<i64>]) -> Tensor {
    let s = rows[0].len();
    Tensor::from_vec(rows.concat(), [rows.len(), s], &Device::Cpu).unwrap()
}

/// Deterministic pseudo-random tokens below `vocab`.
fn token_rows(b: usize, s: usize, vocab: usize, salt: usize) -> Vec<Vec<i64>> {
    (0..b).map(|r| (0..s).map(|i| ((r * 31 + i * 17 + salt * 7 + 3) % vocab) as i64).collect()).collect()
}

#[test]
fn parameter_names_and_shapes_follow_the_spec() {
    for (name, cfg) in configs() {
        let model = Model::new(&cfg, 0, DType::F32, &Device::Cpu).unwrap();
        let got: Vec<(String, Vec<usize>)> =
            model.store().named().into_iter().map(|(n, v)| (n, v.dims().to_vec())).collect();
        let want = spec_params(&cfg);
        assert_eq!(got, want, "{name}");
        let count: usize = want.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(model.store().num_elements(), count, "{name}");
        assert_eq!(model.config(), &cfg);
    }
}

#[test]
fn initialisation_follows_pytorch_defaults() {
    // Large enough for the statistics: vocab 256 x d 64 embedding entries.
    let cfg = ModelConfig::classifier(256, 32, 64, 1, 4, 5);
    let model = Model::new(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    for (name, v) in model.store().named() {
        let x: Vec<f64> = v.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect();
        if name.contains("norm") {
            let want = if name.ends_with("weight") { 1.0 } else { 0.0 };
            assert!(x.iter().all(|&e| e == want), "{name} must start at {want}");
        } else if name == "embed.weight" || name == "pos.weight" {
            let m = x.iter().sum::<f64>() / x.len() as f64;
            let sd = (x.iter().map(|e| (e - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            assert!(m.abs() < 0.05 && (sd - 1.0).abs() < 0.05, "{name}: N(0, 1) gave mean {m}, std {sd}");
        } else {
            // Linear weight and bias: U(-1/sqrt(in), 1/sqrt(in)), in = the weight's second dim.
            let lin = name.rsplit_once('.').unwrap().0;
            let fan_in = model.store().get(&format!("{lin}.weight")).unwrap().dims()[1];
            let bound = 1.0 / (fan_in as f64).sqrt();
            assert!(x.iter().all(|e| e.abs() <= bound), "{name} exceeds 1/sqrt({fan_in})");
            if x.len() >= 1000 {
                let var = x.iter().map(|e| e * e).sum::<f64>() / x.len() as f64;
                assert!(
                    (var / (bound * bound) - 1.0 / 3.0).abs() < 0.05,
                    "{name}: variance ratio {}",
                    var / (bound * bound)
                );
            }
        }
    }
    // Tied tables start at N(0, 1/d) (the scores are dot products of two of their rows).
    let tied = ModelConfig { tie_embeddings: true, ..ModelConfig::lm(256, 32, 64, 1, 4) };
    let model = Model::new(&tied, 7, DType::F32, &Device::Cpu).unwrap();
    for name in ["embed.weight", "pos.weight"] {
        let x = model.store().get(name).unwrap().to_vec::<f32>().unwrap();
        let sd = (x.iter().map(|&e| f64::from(e) * f64::from(e)).sum::<f64>() / x.len() as f64).sqrt();
        assert!((sd - 0.125).abs() < 0.01, "{name}: std {sd}, want 1/sqrt(64)");
    }
    assert!(model.store().get("lm_head.weight").is_none(), "a tied head has no table of its own");
}

#[test]
fn same_seed_same_model_different_seed_different() {
    let cfg = &configs()[1].1;
    let values = |seed| {
        let m = Model::new(cfg, seed, DType::F32, &Device::Cpu).unwrap();
        let params: Vec<Vec<f32>> =
            m.store().state_dict().into_iter().map(|(_, t)| t.to_vec::<f32>().unwrap()).collect();
        let logits =
            m.forward(&tokens(&token_rows(2, 5, 40, 0)), None, &mut Ctx::eval()).unwrap().to_vec::<f32>().unwrap();
        (params, logits)
    };
    let (a, b, c) = (values(11), values(11), values(12));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_ne!(a.1, c.1);
}

#[test]
fn logits_have_the_documented_shapes() {
    for (name, cfg) in configs() {
        let model = Model::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        for s in [1usize, 5, cfg.max_seq_len] {
            let t = tokens(&token_rows(3, s, cfg.vocab_size, s));
            let y = model.forward(&t, None, &mut Ctx::eval()).unwrap();
            let want = match cfg.kind {
                ModelKind::Lm => vec![3, s, cfg.vocab_size],
                ModelKind::Classifier => vec![3, cfg.num_classes.unwrap()],
            };
            assert_eq!(y.dims(), &want[..], "{name} seq {s}");
            assert!(y.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()), "{name}");
        }
    }
}

/// Logits at positions before `t` must not move when token `t` changes.
#[test]
fn lm_is_causal() {
    for (name, cfg) in configs().into_iter().filter(|(_, c)| c.kind == ModelKind::Lm) {
        let model = Model::new(&cfg, 2, DType::F64, &Device::Cpu).unwrap();
        let (s, v) = (9usize, cfg.vocab_size);
        let rows = token_rows(2, s, v, 1);
        let base = model.forward(&tokens(&rows), None, &mut Ctx::eval()).unwrap().to_vec::<f64>().unwrap();
        for t in [0usize, 4, 8] {
            let mut changed = rows.clone();
            for r in &mut changed {
                r[t] = (r[t] + 5) % v as i64;
            }
            let y = model.forward(&tokens(&changed), None, &mut Ctx::eval()).unwrap().to_vec::<f64>().unwrap();
            for (b, pos) in (0..2).flat_map(|b| (0..s).map(move |p| (b, p))) {
                let at = |x: &[f64]| x[(b * s + pos) * v..(b * s + pos + 1) * v].to_vec();
                let d = at(&y).iter().zip(at(&base)).map(|(a, c)| (a - c).abs()).fold(0.0, f64::max);
                if pos < t {
                    assert!(d < 1e-12, "{name}: position {pos} moved by {d} when token {t} changed");
                } else if pos == t {
                    assert!(d > 1e-6, "{name}: position {t} ignored its own token");
                }
            }
        }
    }
}

/// A padded row's logits depend only on its valid prefix and equal those of the prefix alone.
#[test]
fn classifier_ignores_padded_tokens() {
    for (name, cfg) in configs().into_iter().filter(|(_, c)| c.kind == ModelKind::Classifier) {
        let model = Model::new(&cfg, 3, DType::F64, &Device::Cpu).unwrap();
        let (s, len, v) = (8usize, 3usize, cfg.vocab_size);
        let rows = token_rows(2, s, v, 2);
        let lens = [s, len];
        let y = model.forward(&tokens(&rows), Some(&lens), &mut Ctx::eval()).unwrap();
        let mut padded = rows.clone();
        for tok in &mut padded[1][len..] {
            *tok = (*tok + 11) % v as i64;
        }
        let y2 = model.forward(&tokens(&padded), Some(&lens), &mut Ctx::eval()).unwrap();
        assert!(max_diff(&y, &y2) < 1e-12, "{name}: padded tokens changed the logits by {}", max_diff(&y, &y2));
        let alone = model.forward(&tokens(&[rows[1][..len].to_vec()]), None, &mut Ctx::eval()).unwrap();
        let row1 = y.narrow(0usize, 1, 1).unwrap();
        assert!(max_diff(&row1, &alone) < 1e-10, "{name}: padded vs cut row differ by {}", max_diff(&row1, &alone));
        // Without lengths the same tokens are visible.
        let free = |r: &[Vec<i64>]| model.forward(&tokens(r), None, &mut Ctx::eval()).unwrap();
        assert!(max_diff(&free(&rows), &free(&padded)) > 1e-6, "{name}: unmasked tokens had no effect");
        // A valid token does matter.
        let mut valid = rows.clone();
        valid[1][len - 1] = (valid[1][len - 1] + 1) % v as i64;
        let y3 = model.forward(&tokens(&valid), Some(&lens), &mut Ctx::eval()).unwrap();
        assert!(max_diff(&y, &y3) > 1e-6, "{name}");
    }
}

#[test]
fn inspect_returns_probabilities_and_pooling_weights() {
    for (name, cfg) in configs() {
        let model = Model::new(&cfg, 4, DType::F64, &Device::Cpu).unwrap();
        let (b, s) = (2usize, 6usize);
        let t = tokens(&token_rows(b, s, cfg.vocab_size, 4));
        let lens = [s, 4];
        let lengths = (cfg.kind == ModelKind::Classifier).then_some(&lens[..]);
        let insp = model.inspect(&t, lengths, &mut Ctx::eval()).unwrap();
        let logits = model.forward(&t, lengths, &mut Ctx::eval()).unwrap();
        assert!(max_diff(&insp.logits, &logits) < 1e-10, "{name}: inspect and forward logits differ");
        assert_eq!(insp.attention.len(), cfg.n_layers, "{name}");
        assert_eq!(insp.cls, cfg.pooling == PoolingKind::Cls && cfg.kind == ModelKind::Classifier, "{name}");
        // A class token is one more position, in front, and is never padding.
        let (s, lens) = if insp.cls { (s + 1, [s + 1, 5]) } else { (s, lens) };
        let lengths = lengths.map(|_| &lens[..]);
        for p in &insp.attention {
            assert_eq!(p.dims(), &[b, cfg.n_heads, s, s], "{name}");
            let v = p.to_vec::<f64>().unwrap();
            for (r, row) in v.chunks(s).enumerate() {
                let (bi, i) = (r / (cfg.n_heads * s), r % s);
                let valid = lengths.map_or(s, |l| l[bi]);
                // A padded query may see no key at all (window), then its row is all zeros.
                let sum = row.iter().sum::<f64>();
                assert!((sum - 1.0).abs() < 1e-12 || (i >= valid && sum == 0.0), "{name}: row {r} sums to {sum}");
                assert!(row.iter().all(|&x| (0.0..=1.0).contains(&x)));
                assert!(row[valid..].iter().all(|&x| x == 0.0), "{name}: padded keys got probability");
                if cfg.causal {
                    assert!(row[i + 1..].iter().all(|&x| x == 0.0), "{name}: future keys got probability");
                }
                if let Some([l, _]) = cfg.window
                    && cfg.causal
                    && l >= 0
                {
                    assert!(
                        row[..i.saturating_sub(l as usize)].iter().all(|&x| x == 0.0),
                        "{name}: outside the window"
                    );
                }
            }
        }
        match cfg.kind {
            ModelKind::Lm => assert!(insp.pooling.is_none(), "{name}"),
            ModelKind::Classifier if insp.cls => assert!(insp.pooling.is_none(), "{name}"),
            ModelKind::Classifier => {
                let w = insp.pooling.as_ref().unwrap().to_vec2::<f64>().unwrap();
                assert_eq!(w.len(), b);
                for (bi, row) in w.iter().enumerate() {
                    assert_eq!(row.len(), s);
                    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{name}");
                    assert!(row[lens[bi]..].iter().all(|&x| x == 0.0), "{name}: pooling weight on padding");
                    assert!(row[..lens[bi]].iter().all(|&x| x > 0.0));
                }
            }
        }
    }
}

#[test]
fn tiny_model_gradients_match_finite_differences() {
    let lm = ModelConfig { d_ff: 12, ..ModelConfig::lm(7, 6, 8, 2, 2) };
    let cases = [
        ("lm learned gelu", lm.clone()),
        (
            "lm rope gqa swiglu rmsnorm",
            ModelConfig {
                positions: Positions::Rope,
                n_kv_heads: 1,
                mlp: MlpKind::SwiGlu,
                norm: NormKind::RmsNorm,
                ..lm.clone()
            },
        ),
        (
            "classifier alibi",
            ModelConfig {
                kind: ModelKind::Classifier,
                causal: false,
                num_classes: Some(3),
                positions: Positions::Alibi,
                ..lm
            },
        ),
    ];
    for (name, cfg) in cases {
        let model = Model::new(&cfg, 5, DType::F64, &Device::Cpu).unwrap();
        let t = tokens(&token_rows(2, 5, cfg.vocab_size, 5));
        let lens = [5usize, 3];
        let lengths = (cfg.kind == ModelKind::Classifier).then_some(&lens[..]);
        check_grads(name, model.store(), &[], || model.forward(&t, lengths, &mut Ctx::eval()).unwrap(), 4, 1e-6);
    }
}

#[test]
fn bad_inputs_and_configs_are_errors() {
    let cfg = ModelConfig::lm(20, 6, 8, 1, 2);
    let model = Model::new(&cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let e = model.forward(&tokens(&token_rows(1, 7, 20, 0)), None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains('7') && e.contains("max_seq_len 6"), "{e}");
    let flat = Tensor::from_vec(vec![1i64, 2, 3], [3], &Device::Cpu).unwrap();
    let e = model.forward(&flat, None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("(batch, seq)") && e.contains("[3]"), "{e}");
    let cube = Tensor::from_vec(vec![1i64; 8], [2, 2, 2], &Device::Cpu).unwrap();
    assert!(model.forward(&cube, None, &mut Ctx::eval()).is_err());
    let floats = Tensor::zeros([1, 3], DType::F32, &Device::Cpu).unwrap();
    let e = model.forward(&floats, None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("integers"), "{e}");
    let e = model.forward(&tokens(&token_rows(2, 3, 20, 0)), Some(&[3]), &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("lengths"), "{e}");
    for k in [Some(1), Some(0), None] {
        let c = ModelConfig { num_classes: k, ..ModelConfig::classifier(20, 6, 8, 1, 2, 2) };
        let e = Model::new(&c, 0, DType::F32, &Device::Cpu).err().expect("classifier with < 2 classes").to_string();
        assert!(e.contains("num_classes >= 2"), "{e}");
    }
    let e =
        Model::new(&ModelConfig { n_layers: 0, ..cfg.clone() }, 0, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("n_layers"), "{e}");
    let e = Model::new(&ModelConfig { n_heads: 3, n_kv_heads: 3, ..cfg }, 0, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("divisible"), "{e}");
}

#[test]
fn config_json_uses_the_spec_field_names() {
    let (_, cfg) = &configs()[2];
    let json = serde_json::to_value(cfg).unwrap();
    assert_eq!(json["kind"], "lm");
    assert_eq!(json["positions"], "alibi");
    assert_eq!(json["window"], serde_json::json!([3, -1]));
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(&back, cfg);
    // The spec's spellings of every enum, with optional fields left out.
    let text = r#"{"kind": "classifier", "vocab_size": 10, "max_seq_len": 4, "d_model": 8, "n_layers": 1,
        "n_heads": 2, "n_kv_heads": 1, "d_ff": 16, "mlp": "swiglu", "norm": "rmsnorm",
        "positions": "rope", "causal": false, "num_classes": 2}"#;
    let c: ModelConfig = serde_json::from_str(text).unwrap();
    assert_eq!(
        (c.kind, c.mlp, c.norm, c.positions),
        (ModelKind::Classifier, MlpKind::SwiGlu, NormKind::RmsNorm, Positions::Rope)
    );
    assert_eq!((c.rope_theta, c.window, c.softcap, c.dropout), (10_000.0, None, None, 0.0));
    assert!(Model::new(&c, 0, DType::F32, &Device::Cpu).is_ok());
}

#[test]
fn hard_pooling_samples_in_training_and_reinforce_trains_its_scorer_and_baseline_apart() {
    let cfg = ModelConfig { pooling: PoolingKind::Hard, pool_k: 2, ..ModelConfig::classifier(40, 12, 16, 2, 4, 3) };
    let model = Model::new(&cfg, 6, DType::F64, &Device::Cpu).unwrap();
    let t = tokens(&token_rows(4, 6, cfg.vocab_size, 6));
    let lens = [6usize, 4, 5, 2];
    let run = |ctx: &mut Ctx| model.forward_policy(&t, Some(&lens), ctx).unwrap();

    // Evaluation takes the most probable positions: deterministic, no policy.
    let (eval, policy) = run(&mut Ctx::eval());
    assert!(policy.is_none());
    assert_eq!(max_diff(&eval, &run(&mut Ctx::eval()).0), 0.0);
    // Training draws from ctx.rng: the same seed draws the same positions, another seed others.
    let (logits, policy) = run(&mut Ctx::train(1));
    let policy = policy.expect("a training pass of hard pooling returns its policy");
    assert_eq!((policy.log_prob.dims(), policy.baseline.dims()), (&[4usize, 1][..], &[4usize, 1][..]));
    assert!(policy.log_prob.to_vec::<f64>().unwrap().iter().all(|&l| l <= 0.0));
    assert_eq!(max_diff(&logits, &run(&mut Ctx::train(1)).0), 0.0);
    assert!(max_diff(&logits, &run(&mut Ctx::train(2)).0) > 1e-9, "another seed drew the same positions");

    let targets = Tensor::from_slice(&[0i64, 1, 2, 0], [4], &Device::Cpu).unwrap();
    let loss = hybrid_loss(&logits, &targets, Some(&policy.log_prob), Some(&policy.baseline)).unwrap();
    let store = model.store();
    // The cross-entropy reaches the tokens through the chosen vectors, never the scorer.
    let ce = grad_names(&loss.classifier, store);
    assert!(ce.iter().all(|n| !n.starts_with("pool")), "{ce:?}");
    assert!(ce.iter().any(|n| n.starts_with("head.")) && ce.iter().any(|n| n.starts_with("embed.")), "{ce:?}");
    // REINFORCE trains the scorer (and the encoder below it), not the head or the baseline.
    let reinforce = grad_names(loss.policy.as_ref().unwrap(), store);
    assert!(reinforce.iter().any(|n| n.starts_with("pool.proj.")) && reinforce.contains(&"pool.alpha.weight".into()));
    assert!(reinforce.iter().all(|n| !n.starts_with("head.") && !n.starts_with("pool_baseline")), "{reinforce:?}");
    let baseline = grad_names(loss.baseline.as_ref().unwrap(), store);
    assert_eq!(baseline, ["pool_baseline.weight", "pool_baseline.bias"]);
}
