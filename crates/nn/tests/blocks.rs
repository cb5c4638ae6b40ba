//! TransformerBlock and TransformerStack: parameter names and shapes, the pre-norm residual
//! wiring against the same sub-layers composed by hand, causality, key padding, gradients and
//! input errors.

mod common;

use attune_nn::{
    AttentionConfig, BlockConfig, Ctx, Memory, Mlp, MlpKind, MultiHeadAttention, Norm, NormKind, ParamBuilder,
    ParamStore, Positions, TransformerBlock, TransformerStack,
};
use attune_tensor::{DType, Device, Tensor};
use common::{check_grads, max_diff, randn_var};

const D: usize = 16;
const F: usize = 24;

fn block_cfg(n_heads: usize, n_kv_heads: usize, mlp: MlpKind, norm: NormKind, positions: Positions) -> BlockConfig {
    BlockConfig {
        attn: AttentionConfig { n_kv_heads, positions, max_seq_len: 32, ..AttentionConfig::new(D, n_heads) },
        mlp,
        d_ff: F,
        norm,
        dropout: 0.0,
        cross_attention: false,
    }
}

fn builder(seed: u64, dtype: DType) -> (ParamStore, ParamBuilder) {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, seed, dtype, &Device::Cpu);
    (store, pb)
}

/// The names and shapes one block must create under `layers.{i}.`, written from docs/model.md
/// (and `norm_cross` / `cross_attn`, laid out like `norm1` / `attn`, for cross-attention).
fn expected_block(i: usize, cfg: &BlockConfig) -> Vec<(String, Vec<usize>)> {
    let dk = cfg.attn.n_kv_heads * (D / cfg.attn.n_heads);
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |n: String, s: Vec<usize>| v.push((format!("layers.{i}.{n}"), s));
    let norm = |p: &str, push: &mut dyn FnMut(String, Vec<usize>)| {
        push(format!("{p}.weight"), vec![D]);
        if cfg.norm == NormKind::LayerNorm {
            push(format!("{p}.bias"), vec![D]);
        }
    };
    let attn = |p: &str, push: &mut dyn FnMut(String, Vec<usize>)| {
        for (proj, out) in [("q_proj", D), ("k_proj", dk), ("v_proj", dk), ("o_proj", D)] {
            push(format!("{p}.{proj}.weight"), vec![out, D]);
            push(format!("{p}.{proj}.bias"), vec![out]);
        }
    };
    norm("norm1", &mut push);
    attn("attn", &mut push);
    if cfg.cross_attention {
        norm("norm_cross", &mut push);
        attn("cross_attn", &mut push);
    }
    norm("norm2", &mut push);
    match cfg.mlp {
        MlpKind::Gelu => {
            push("mlp.fc1.weight".into(), vec![F, D]);
            push("mlp.fc1.bias".into(), vec![F]);
            push("mlp.fc2.weight".into(), vec![D, F]);
            push("mlp.fc2.bias".into(), vec![D]);
        }
        MlpKind::SwiGlu => {
            push("mlp.gate_proj.weight".into(), vec![F, D]);
            push("mlp.up_proj.weight".into(), vec![F, D]);
            push("mlp.down_proj.weight".into(), vec![D, F]);
        }
    }
    v
}

fn names_and_shapes(store: &ParamStore) -> Vec<(String, Vec<usize>)> {
    store.named().into_iter().map(|(n, v)| (n, v.dims().to_vec())).collect()
}

#[test]
fn stacks_create_pytorch_names_and_shapes() {
    let mut gelu = block_cfg(4, 2, MlpKind::Gelu, NormKind::LayerNorm, Positions::None);
    // A decoder with cross-attention: norm_cross / cross_attn between attn and norm2.
    let (store, pb) = builder(1, DType::F32);
    let dec = TransformerStack::decoder(&pb, 2, &gelu, true).unwrap();
    gelu.cross_attention = true;
    let want: Vec<_> = (0..2).flat_map(|i| expected_block(i, &gelu)).collect();
    assert_eq!(names_and_shapes(&store), want);
    assert_eq!(dec.layers().len(), 2);
    assert!(dec.layers().iter().all(|l| l.attn().config().causal), "a decoder is causal");

    // An encoder ignores cross_attention and causal from the config.
    let mut swiglu = block_cfg(4, 1, MlpKind::SwiGlu, NormKind::RmsNorm, Positions::Rope);
    swiglu.attn.causal = true;
    swiglu.cross_attention = true;
    let (store, pb) = builder(1, DType::F32);
    let enc = TransformerStack::encoder(&pb, 3, &swiglu).unwrap();
    swiglu.cross_attention = false;
    let want: Vec<_> = (0..3).flat_map(|i| expected_block(i, &swiglu)).collect();
    assert_eq!(names_and_shapes(&store), want);
    assert!(enc.layers().iter().all(|l| !l.attn().config().causal), "an encoder is bidirectional");
    let x = randn_var(&[2, 5, D], 1).as_tensor().to_dtype(DType::F32).unwrap();
    assert_eq!(enc.forward(&x, None, None, &mut Ctx::eval()).unwrap().dims(), &[2, 5, D]);

    // Decoder queries of length 5 against a memory of length 9.
    let (_, pb) = builder(2, DType::F32);
    let dec =
        TransformerStack::decoder(&pb, 1, &block_cfg(2, 2, MlpKind::Gelu, NormKind::LayerNorm, Positions::None), true)
            .unwrap();
    let mem = Tensor::ones([2, 9, D], DType::F32, &Device::Cpu).unwrap();
    let y = dec.forward(&x, None, Some(Memory { states: &mem, lengths: None }), &mut Ctx::eval()).unwrap();
    assert_eq!(y.dims(), &[2, 5, D]);
}

/// The block's output equals `x + attn(norm1 x)`, `+ cross(norm_cross x, memory)`,
/// `+ mlp(norm2 x)` computed from separately built sub-layers holding the same values.
#[test]
fn block_is_the_pre_norm_residual_composition_of_its_sublayers() {
    for (mlp, norm, cross) in [(MlpKind::Gelu, NormKind::LayerNorm, false), (MlpKind::SwiGlu, NormKind::RmsNorm, true)]
    {
        let mut cfg = block_cfg(4, 2, mlp, norm, Positions::Rope);
        cfg.attn.causal = true;
        cfg.cross_attention = cross;
        let (store, pb) = builder(3, DType::F64);
        let block = TransformerBlock::new(&pb.sub("blk"), &cfg).unwrap();
        // Non-trivial norm parameters, so a swapped norm1/norm2 would show.
        for (i, (name, v)) in store.named().into_iter().enumerate() {
            if name.contains("norm") {
                v.set(
                    &randn_var(v.dims(), 100 + i as u64).as_tensor().mul_scalar(0.3).unwrap().add_scalar(1.0).unwrap(),
                )
                .unwrap();
            }
        }
        let (parts_store, ppb) = builder(99, DType::F64);
        let ppb = ppb.sub("blk");
        let norm1 = Norm::new(&ppb.sub("norm1"), norm, D).unwrap();
        let attn = MultiHeadAttention::new(&ppb.sub("attn"), cfg.attn.clone()).unwrap();
        let cross_parts = cross.then(|| {
            let c = AttentionConfig { causal: false, window: None, ..cfg.attn.clone() };
            (
                Norm::new(&ppb.sub("norm_cross"), norm, D).unwrap(),
                MultiHeadAttention::new(&ppb.sub("cross_attn"), c).unwrap(),
            )
        });
        let norm2 = Norm::new(&ppb.sub("norm2"), norm, D).unwrap();
        let ff = Mlp::new(&ppb.sub("mlp"), mlp, D, F).unwrap();
        // Same names in the same order; copy the block's values over.
        let (a, b) = (store.named(), parts_store.named());
        assert_eq!(a.iter().map(|p| &p.0).collect::<Vec<_>>(), b.iter().map(|p| &p.0).collect::<Vec<_>>());
        for ((_, src), (_, dst)) in a.iter().zip(&b) {
            dst.set(src.as_tensor()).unwrap();
        }
        let x = randn_var(&[2, 6, D], 7);
        let mem = randn_var(&[2, 4, D], 8);
        let lens = [4usize, 2];
        let memory = cross.then_some(Memory { states: &mem, lengths: Some(&lens) });
        let ctx = &mut Ctx::eval();
        let got = block.forward(&x, None, memory, ctx).unwrap();
        let mut h = x.add(&attn.forward(&norm1.forward(&x).unwrap(), None, ctx).unwrap()).unwrap();
        if let Some((nc, ca)) = &cross_parts {
            h = h.add(&ca.forward_cross(&nc.forward(&h).unwrap(), memory.unwrap(), ctx).unwrap()).unwrap();
        }
        let want = h.add(&ff.forward(&norm2.forward(&h).unwrap()).unwrap()).unwrap();
        assert!(max_diff(&got, &want) < 1e-12, "{mlp:?} cross {cross}: {}", max_diff(&got, &want));
        // forward_with_probs computes the same output.
        let (got2, probs) = block.forward_with_probs(&x, None, memory, ctx).unwrap();
        assert!(max_diff(&got, &got2) < 1e-10);
        assert_eq!(probs.dims(), &[2, 4, 6, 6]);
        let p = probs.to_vec::<f64>().unwrap();
        for (r, row) in p.chunks(6).enumerate() {
            let i = r % 6;
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(row[i + 1..].iter().all(|&v| v == 0.0), "causal block attends to the future at row {i}");
        }
    }
}

/// `x` with every feature of sequence positions `positions` of batch entries `batches` shifted.
fn perturb(x: &Tensor, batches: &[usize], positions: std::ops::Range<usize>) -> Tensor {
    let (b, s, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let mut v = x.to_vec::<f64>().unwrap();
    for &bi in batches {
        for i in positions.clone() {
            for (k, e) in v[(bi * s + i) * d..(bi * s + i + 1) * d].iter_mut().enumerate() {
                *e += 1.0 + 0.1 * k as f64;
            }
        }
    }
    Tensor::from_vec(v, [b, s, d], &Device::Cpu).unwrap()
}

/// Max |a - b| over each sequence position of batch entry `bi`.
fn position_diffs(a: &Tensor, b: &Tensor, bi: usize) -> Vec<f64> {
    let (s, d) = (a.dims()[1], a.dims()[2]);
    let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    (0..s)
        .map(|i| (0..d).map(|k| (a[(bi * s + i) * d + k] - b[(bi * s + i) * d + k]).abs()).fold(0.0, f64::max))
        .collect()
}

fn position_variants() -> Vec<(&'static str, BlockConfig)> {
    let base = block_cfg(4, 2, MlpKind::Gelu, NormKind::LayerNorm, Positions::None);
    let with =
        |p: Positions| BlockConfig { attn: AttentionConfig { positions: p, ..base.attn.clone() }, ..base.clone() };
    vec![
        ("none", base.clone()),
        ("rope", with(Positions::Rope)),
        ("alibi", with(Positions::Alibi)),
        (
            "softcap swiglu",
            BlockConfig {
                attn: AttentionConfig { softcap: Some(2.0), ..base.attn.clone() },
                mlp: MlpKind::SwiGlu,
                ..base.clone()
            },
        ),
    ]
}

#[test]
fn decoder_outputs_never_depend_on_later_positions_and_encoder_outputs_do() {
    for (name, cfg) in position_variants() {
        let (_, pb) = builder(4, DType::F64);
        let dec = TransformerStack::decoder(&pb.sub("dec"), 2, &cfg, false).unwrap();
        let enc = TransformerStack::encoder(&pb.sub("enc"), 2, &cfg).unwrap();
        let x = randn_var(&[2, 7, D], 5);
        for t in [0usize, 3, 6] {
            let x2 = perturb(&x, &[0, 1], t..t + 1);
            for bi in 0..2 {
                let d = position_diffs(
                    &dec.forward(&x, None, None, &mut Ctx::eval()).unwrap(),
                    &dec.forward(&x2, None, None, &mut Ctx::eval()).unwrap(),
                    bi,
                );
                assert!(d[..t].iter().all(|&e| e < 1e-12), "{name}: decoder position < {t} changed: {d:?}");
                assert!(d[t..].iter().all(|&e| e > 1e-6), "{name}: decoder position >= {t} did not change: {d:?}");
                let e = position_diffs(
                    &enc.forward(&x, None, None, &mut Ctx::eval()).unwrap(),
                    &enc.forward(&x2, None, None, &mut Ctx::eval()).unwrap(),
                    bi,
                );
                assert!(e.iter().all(|&v| v > 1e-6), "{name}: encoder output ignores position {t}: {e:?}");
            }
        }
    }
}

/// With key lengths, padded positions are invisible: changing them leaves every valid output
/// unchanged, and the valid outputs equal those of the unpadded sequence alone (right padding
/// shifts neither masks nor ALiBi distances), for encoders and decoders.
#[test]
fn valid_outputs_ignore_padding() {
    let mut variants = position_variants();
    let base = block_cfg(4, 2, MlpKind::Gelu, NormKind::LayerNorm, Positions::None);
    variants
        .push(("window", BlockConfig { attn: AttentionConfig { window: Some((1, 2)), ..base.attn.clone() }, ..base }));
    let stacks = variants.into_iter().flat_map(|(name, cfg)| {
        let (_, pb) = builder(6, DType::F64);
        let enc = TransformerStack::encoder(&pb.sub("enc"), 2, &cfg).unwrap();
        let dec = TransformerStack::decoder(&pb.sub("dec"), 2, &cfg, false).unwrap();
        [(format!("encoder {name}"), enc), (format!("decoder {name}"), dec)]
    });
    for (name, enc) in stacks {
        let (s, len) = (7usize, 4usize);
        let x = randn_var(&[2, s, D], 9);
        let lens = [s, len];
        let run = |x: &Tensor| enc.forward(x, Some(&lens), None, &mut Ctx::eval()).unwrap();
        let y = run(&x);
        let y2 = run(&perturb(&x, &[1], len..s));
        let d0 = position_diffs(&y, &y2, 0);
        let d1 = position_diffs(&y, &y2, 1);
        assert!(d0.iter().all(|&e| e < 1e-12), "{name}: the full entry changed: {d0:?}");
        assert!(d1[..len].iter().all(|&e| e < 1e-12), "{name}: valid outputs changed with padding: {d1:?}");
        // Without lengths an encoder sees the padding, so the same change shows (a decoder's
        // valid positions never see later ones anyway).
        let free = |x: &Tensor| enc.forward(x, None, None, &mut Ctx::eval()).unwrap();
        let d = position_diffs(&free(&x), &free(&perturb(&x, &[1], len..s)), 1);
        let causal = enc.layers()[0].attn().config().causal;
        assert!(causal || d[..len].iter().any(|&e| e > 1e-6), "{name}: padding had no effect even unmasked");
        // The padded entry's valid rows equal the entry cut to its length.
        let alone =
            enc.forward(&x.narrow(0usize, 1, 1).unwrap().narrow(1usize, 0, len).unwrap(), None, None, &mut Ctx::eval());
        let alone = alone.unwrap();
        let valid = y.narrow(0usize, 1, 1).unwrap().narrow(1usize, 0, len).unwrap();
        assert!(max_diff(&valid, &alone) < 1e-10, "{name}: padded vs cut: {}", max_diff(&valid, &alone));
    }
}

#[test]
fn block_gradients_match_finite_differences() {
    let cases = [
        ("gelu layernorm", MlpKind::Gelu, NormKind::LayerNorm, Positions::None, 4, false),
        ("swiglu rmsnorm rope gqa", MlpKind::SwiGlu, NormKind::RmsNorm, Positions::Rope, 2, false),
        ("gelu cross-attention", MlpKind::Gelu, NormKind::LayerNorm, Positions::None, 4, true),
        ("swiglu cross-attention alibi", MlpKind::SwiGlu, NormKind::RmsNorm, Positions::Alibi, 1, true),
    ];
    for (name, mlp, norm, positions, kv, cross) in cases {
        let mut cfg = block_cfg(4, kv, mlp, norm, positions);
        cfg.attn.causal = true;
        cfg.cross_attention = cross;
        let (store, pb) = builder(8, DType::F64);
        let block = TransformerBlock::new(&pb.sub("b"), &cfg).unwrap();
        let x = randn_var(&[2, 5, D], 10);
        let mem = randn_var(&[2, 3, D], 11);
        let mlens = [3usize, 2];
        let mut inputs = vec![x.clone()];
        if cross {
            inputs.push(mem.clone());
        }
        let f = || {
            let memory = cross.then_some(Memory { states: &mem, lengths: Some(&mlens) });
            block.forward(&x, None, memory, &mut Ctx::eval()).unwrap()
        };
        check_grads(name, &store, &inputs, f, 5, 1e-6);
    }
}

#[test]
fn memory_must_match_the_presence_of_cross_attention() {
    let cfg = block_cfg(2, 2, MlpKind::Gelu, NormKind::LayerNorm, Positions::None);
    let (_, pb) = builder(1, DType::F64);
    let plain = TransformerBlock::new(&pb.sub("plain"), &cfg).unwrap();
    let crossing =
        TransformerBlock::new(&pb.sub("cross"), &BlockConfig { cross_attention: true, ..cfg.clone() }).unwrap();
    let x = randn_var(&[1, 3, D], 1);
    let mem = randn_var(&[1, 4, D], 2);
    let memory = Some(Memory { states: &mem, lengths: None });
    let e = plain.forward(&x, None, memory, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("TransformerBlock") && e.contains("cross_attention"), "{e}");
    let e = crossing.forward(&x, None, None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("TransformerBlock") && e.contains("memory"), "{e}");
    // The same through a stack.
    let (_, pb) = builder(1, DType::F64);
    let dec = TransformerStack::decoder(&pb, 2, &cfg, true).unwrap();
    assert!(dec.forward(&x, None, None, &mut Ctx::eval()).is_err());
    let enc = TransformerStack::encoder(&pb.sub("enc"), 1, &cfg).unwrap();
    assert!(enc.forward(&x, None, memory, &mut Ctx::eval()).is_err());
    // A memory of the wrong width or batch.
    let narrow = randn_var(&[1, 4, D / 2], 3);
    let e = crossing.forward(&x, None, Some(Memory { states: &narrow, lengths: None }), &mut Ctx::eval()).unwrap_err();
    assert!(e.to_string().contains(&format!("{D}")), "{e}");
    let wide_batch = randn_var(&[2, 4, D], 3);
    let e =
        crossing.forward(&x, None, Some(Memory { states: &wide_batch, lengths: None }), &mut Ctx::eval()).unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
    // Too many key lengths for the batch.
    let e = plain.forward(&x, Some(&[3, 3]), None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("key lengths"), "{e}");
}

#[test]
fn residual_dropout_acts_only_in_training_and_follows_the_seed() {
    let mut cfg = block_cfg(2, 2, MlpKind::Gelu, NormKind::LayerNorm, Positions::None);
    cfg.dropout = 0.5;
    let (_, pb) = builder(1, DType::F64);
    let block = TransformerBlock::new(&pb, &cfg).unwrap();
    let x = randn_var(&[2, 4, D], 1);
    let eval = |_| block.forward(&x, None, None, &mut Ctx::eval()).unwrap();
    let train = |seed| block.forward(&x, None, None, &mut Ctx::train(seed)).unwrap();
    assert_eq!(max_diff(&eval(0), &eval(1)), 0.0);
    assert_eq!(max_diff(&train(3), &train(3)), 0.0);
    assert!(max_diff(&train(3), &train(4)) > 1e-3);
    assert!(max_diff(&train(3), &eval(0)) > 1e-3);
}
