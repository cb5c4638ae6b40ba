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
