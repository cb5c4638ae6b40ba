//! The Vision Transformer: patch layout against hand-written indices, patchify against a
//! hand-cut image, the model's names, shapes and gradients, and its input errors.

mod common;

use attune_nn::{Ctx, Model, ModelConfig, PatchSpec, PoolingKind};
use attune_tensor::{DType, Device, Tensor};
use common::{check_grads, max_diff};

fn spec(rows: usize, cols: usize, size: usize, stride: usize) -> PatchSpec {
    PatchSpec { rows, cols, size, stride }
}

/// `(batch, rows, cols)` images whose pixel values are their flat indices plus 1000 per image.
fn numbered(b: usize, rows: usize, cols: usize) -> Tensor {
    let v: Vec<f64> = (0..b * rows * cols).map(|i| (i / (rows * cols) * 1000 + i % (rows * cols)) as f64).collect();
    Tensor::from_vec(v, [b, rows, cols], &Device::Cpu).unwrap()
}

#[test]
fn patch_indices_follow_the_documented_layout() {
    // A 4x6 image in 2x2 patches: 2 rows of 3 patches, each read row by row.
    let s = spec(4, 6, 2, 2);
    assert_eq!((s.per_col(), s.per_row(), s.count(), s.pixels()), (2, 3, 6, 4));
    #[rustfmt::skip]
    let want = [
        0, 1, 6, 7,     2, 3, 8, 9,     4, 5, 10, 11,
        12, 13, 18, 19, 14, 15, 20, 21, 16, 17, 22, 23,
    ];
    assert_eq!(s.indices(), want);
    // Overlapping: 3x3 patches every 1 pixel of a 4x4 image: 2x2 patches sharing pixels.
    let o = spec(4, 4, 3, 1);
    assert_eq!(o.count(), 4);
    assert_eq!(&o.indices()[..9], &[0, 1, 2, 4, 5, 6, 8, 9, 10]);
    assert_eq!(&o.indices()[27..], &[5, 6, 7, 9, 10, 11, 13, 14, 15]);
    assert_eq!((o.origin(3), spec(28, 28, 7, 3).count()), ((1, 1), 64));
}

#[test]
fn patchify_cuts_each_image_into_its_patches() {
    let s = spec(4, 6, 2, 2);
    let p = s.patchify(&numbered(2, 4, 6)).unwrap();
    assert_eq!(p.dims(), &[2, 6, 4]);
    let v = p.to_vec::<f64>().unwrap();
    // Image 1, patch 4 (second row of patches, middle): pixels (2,2) (2,3) (3,2) (3,3).
    assert_eq!(&v[(6 + 4) * 4..(6 + 5) * 4], &[1014.0, 1015.0, 1020.0, 1021.0]);
}

#[test]
fn patch_specs_that_do_not_tile_are_errors() {
    for (bad, needle) in [
        (spec(28, 28, 5, 5), "do not tile"),
        (spec(28, 28, 0, 1), "positive"),
        (spec(4, 4, 5, 1), "at most"),
        (spec(4, 4, 2, 0), "positive"),
    ] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{bad:?}: {e}");
        assert!(Model::new(&ModelConfig::vit(bad, 8, 1, 2, 3), 0, DType::F32, &Device::Cpu).is_err());
    }
}

#[test]
fn vit_params_shapes_and_gradients() {
    let s = spec(6, 6, 3, 3);
    for pooling in [PoolingKind::Cls, PoolingKind::Mean, PoolingKind::Soft] {
        let cfg = ModelConfig { pooling, d_ff: 8, ..ModelConfig::vit(s, 4, 2, 2, 3) };
        let model = Model::new(&cfg, 3, DType::F64, &Device::Cpu).unwrap();
        let names: Vec<String> = model.store().named().into_iter().map(|(n, _)| n).collect();
        assert_eq!(&names[..2], ["patch_embed.weight", "patch_embed.bias"], "{pooling:?}");
        assert_eq!(model.store().get("patch_embed.weight").unwrap().dims(), &[4, 9]);
        let pos = model.store().get("pos.weight").unwrap();
        assert_eq!(pos.dims()[0], 4 + usize::from(pooling == PoolingKind::Cls), "{pooling:?}");
        assert!(!names.iter().any(|n| n.starts_with("embed.")), "{names:?}");
        let images = numbered(2, 6, 6).mul_scalar(1e-3).unwrap();
        let logits = model.forward(&images, None, &mut Ctx::eval()).unwrap();
        assert_eq!(logits.dims(), &[2, 3]);
        let insp = model.inspect(&images, None, &mut Ctx::eval()).unwrap();
        assert!(max_diff(&insp.logits, &logits) < 1e-12);
        let seq = 4 + usize::from(insp.cls);
        assert_eq!(insp.attention[1].dims(), &[2, 2, seq, seq], "{pooling:?}");
        check_grads(
            &format!("vit {pooling:?}"),
            model.store(),
            &[],
            || model.forward(&images, None, &mut Ctx::eval()).unwrap(),
            3,
            1e-6,
        );
    }
}

/// Each patch is one token: changing one pixel moves the logits, and (without positions or a
/// class token, with mean pooling) swapping two whole patches leaves them exactly as they were.
#[test]
fn patches_are_tokens() {
    let s = spec(4, 4, 2, 2);
    let cfg = ModelConfig {
        pooling: PoolingKind::Mean,
        positions: attune_nn::Positions::None,
        ..ModelConfig::vit(s, 8, 2, 2, 3)
    };
    let model = Model::new(&cfg, 5, DType::F64, &Device::Cpu).unwrap();
    let img = numbered(1, 4, 4).mul_scalar(0.01).unwrap();
    let run = |t: &Tensor| model.forward(t, None, &mut Ctx::eval()).unwrap();
    let mut v = img.to_vec::<f64>().unwrap();
    // Swap patch 0 (rows 0-1, cols 0-1) with patch 3 (rows 2-3, cols 2-3).
    for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        v.swap(r * 4 + c, (r + 2) * 4 + c + 2);
    }
    let swapped = Tensor::from_vec(v.clone(), [1, 4, 4], &Device::Cpu).unwrap();
    assert!(max_diff(&run(&img), &run(&swapped)) < 1e-12);
    v[5] += 0.5;
    let nudged = Tensor::from_vec(v, [1, 4, 4], &Device::Cpu).unwrap();
    assert!(max_diff(&run(&swapped), &run(&nudged)) > 1e-6);
}

#[test]
fn bad_images_are_errors() {
    let model = Model::new(&ModelConfig::vit(spec(4, 4, 2, 2), 8, 1, 2, 3), 0, DType::F32, &Device::Cpu).unwrap();
    let wrong = Tensor::zeros([2, 4, 5], DType::F32, &Device::Cpu).unwrap();
    let e = model.forward(&wrong, None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("(batch, 4, 4)") && e.contains("[2, 4, 5]"), "{e}");
    let ints = Tensor::zeros([2, 4, 4], DType::I64, &Device::Cpu).unwrap();
    let e = model.forward(&ints, None, &mut Ctx::eval()).unwrap_err().to_string();
    assert!(e.contains("floating point"), "{e}");
    let ok = Tensor::zeros([2, 4, 4], DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward(&ok, Some(&[4, 4]), &mut Ctx::eval()).is_err(), "images take no lengths");
    // An lm cannot read patches; a tied head needs a token table.
    let lm_patches = ModelConfig { kind: attune_nn::ModelKind::Lm, ..ModelConfig::vit(spec(4, 4, 2, 2), 8, 1, 2, 3) };
    assert!(Model::new(&lm_patches, 0, DType::F32, &Device::Cpu).is_err());
    let tied_cls = ModelConfig { tie_embeddings: true, ..ModelConfig::classifier(10, 4, 8, 1, 2, 2) };
    assert!(Model::new(&tied_cls, 0, DType::F32, &Device::Cpu).is_err());
}

#[test]
fn stem_neighbourhoods_follow_the_documented_layout() {
    use attune_nn::layers::stem::neighbourhoods;
    // A 3x3 map at stride 1: position 0 (corner) sees 4 pixels, the centre sees all 9; 9 is
    // the appended zero position.
    let n = neighbourhoods(3, 3, 1);
    assert_eq!(n.len(), 9 * 9);
    assert_eq!(&n[..9], &[9, 9, 9, 9, 0, 1, 9, 3, 4]);
    assert_eq!(&n[4 * 9..5 * 9], &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    // A 4x4 map at stride 2: outputs at (0,0) (0,2) (2,0) (2,2); the last one's neighbourhood
    // is rows 1-3, cols 1-3.
    let n = neighbourhoods(4, 4, 2);
    assert_eq!(n.len(), 4 * 9);
    assert_eq!(&n[3 * 9..], &[5, 6, 7, 9, 10, 11, 13, 14, 15]);
    assert_eq!(&n[9..18], &[16, 16, 16, 1, 2, 3, 5, 6, 7]);
}

/// A direct convolution (3x3, zero padding 1, stride `stride`) of `x (rows, cols, cin)` by
/// `w (cout, 9 cin)` in the stem's `(ky, kx, channel)` order, then exact GELU.
fn conv_gelu(x: &[f64], rows: usize, cols: usize, cin: usize, w: &[f64], b: &[f64], stride: usize) -> Vec<f64> {
    let cout = b.len();
    let mut out = Vec::new();
    for r in (0..rows).step_by(stride) {
        for c in (0..cols).step_by(stride) {
            for o in 0..cout {
                let mut acc = b[o];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (y, xx) = (r as i64 + ky as i64 - 1, c as i64 + kx as i64 - 1);
                        if y < 0 || xx < 0 || y >= rows as i64 || xx >= cols as i64 {
                            continue;
                        }
                        for ch in 0..cin {
                            let v = x[(y as usize * cols + xx as usize) * cin + ch];
                            acc += w[o * 9 * cin + (ky * 3 + kx) * cin + ch] * v;
                        }
                    }
                }
                // GELU(a) = a Phi(a) = a (1 + erf(a / sqrt 2)) / 2.
                out.push(0.5 * acc * (1.0 + erf(acc / std::f64::consts::SQRT_2)));
            }
        }
    }
    out
}

/// erf by its Taylor series, exact to f64 rounding for |x| < 3 (the tests stay there),
/// independent of the tensor crate's erf.
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..60 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn a_stem_is_a_convolution_then_patches_of_its_map() {
    use attune_nn::{ParamBuilder, ParamStore, PatchEmbedding, StemConv};
    let s = spec(4, 4, 2, 2);
    let stem = [StemConv { channels: 3, stride: 1 }, StemConv { channels: 2, stride: 2 }];
    let store = ParamStore::new();
    let embed = PatchEmbedding::new(&ParamBuilder::new(&store, 7, DType::F64, &Device::Cpu), s, &stem, 4).unwrap();
    let get = |n: &str| store.get(n).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(store.get("stem.0.weight").unwrap().dims(), &[3, 9]);
    assert_eq!(store.get("stem.1.weight").unwrap().dims(), &[2, 27]);
    // Patches of 2 pixels over a map at stride 2: one map position per patch, 2 channels.
    assert_eq!(store.get("weight").unwrap().dims(), &[4, 2]);
    // Pixels below 1.02, so the pre-activations stay where the erf series below is exact.
    let images = numbered(2, 4, 4).mul_scalar(1e-3).unwrap();
    let img = images.to_vec::<f64>().unwrap();
    let (w, bias) = (get("weight"), get("bias"));
    let mut want = Vec::new();
    for i in 0..2 {
        let h = conv_gelu(&img[i * 16..(i + 1) * 16], 4, 4, 1, &get("stem.0.weight"), &get("stem.0.bias"), 1);
        let map = conv_gelu(&h, 4, 4, 3, &get("stem.1.weight"), &get("stem.1.bias"), 2);
        for p in 0..4 {
            want.extend((0..4).map(|o| bias[o] + w[o * 2] * map[p * 2] + w[o * 2 + 1] * map[p * 2 + 1]));
        }
    }
    let got = embed.forward(&images).unwrap();
    assert_eq!(got.dims(), &[2, 4, 4]);
    let diff = got.to_vec::<f64>().unwrap().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-12, "stem + patches differ from the direct convolution by {diff}");
}

#[test]
fn vit_with_a_stem_names_and_gradients() {
    use attune_nn::StemConv;
    // 4x4 pixel patches over a map at stride 2: each patch is 2x2 map positions of 2 channels.
    let cfg = ModelConfig {
        stem: vec![StemConv { channels: 2, stride: 1 }, StemConv { channels: 2, stride: 2 }],
        d_ff: 8,
        ..ModelConfig::vit(spec(8, 8, 4, 4), 4, 1, 2, 3)
    };
    let model = Model::new(&cfg, 3, DType::F64, &Device::Cpu).unwrap();
    let names: Vec<String> = model.store().named().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"patch_embed.stem.1.bias".to_string()), "{names:?}");
    assert_eq!(model.store().get("patch_embed.weight").unwrap().dims(), &[4, 8]);
    let images = numbered(2, 8, 8).mul_scalar(1e-2).unwrap();
    assert_eq!(model.forward(&images, None, &mut Ctx::eval()).unwrap().dims(), &[2, 3]);
    check_grads("vit stem", model.store(), &[], || model.forward(&images, None, &mut Ctx::eval()).unwrap(), 3, 1e-6);
}

#[test]
fn bad_stems_are_errors() {
    use attune_nn::{StemConv, parse_stem};
    assert_eq!(
        parse_stem("32,64:2").unwrap(),
        [StemConv { channels: 32, stride: 1 }, StemConv { channels: 64, stride: 2 }]
    );
    assert!(parse_stem("none").unwrap().is_empty());
    for bad in ["32,", "x", "0", "8:0", "8:2:1"] {
        let e = parse_stem(bad).unwrap_err().to_string();
        assert!(e.contains("CHANNELS:STRIDE"), "{bad}: {e}");
    }
    let vit = |stem: Vec<StemConv>, size: usize| ModelConfig {
        stem,
        ..ModelConfig::vit(spec(28, 28, size, size), 8, 1, 2, 3)
    };
    // Strides multiplying to 4 do not divide a 2-pixel patch; a stride of 3 does not divide 28.
    let e = Model::new(&vit(parse_stem("4:2,4:2").unwrap(), 2), 0, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("multiply to 4") && e.contains("patch size 2"), "{e}");
    let e = Model::new(&vit(parse_stem("4:3").unwrap(), 7), 0, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("stride 3)") && e.contains("dividing its 28x28"), "{e}");
}
