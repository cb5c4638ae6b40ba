//! The RAM glimpse sensor against crops worked out by hand on small images (docs/ram.md, "The
//! glimpse sensor"): the location convention, the rounding of even and odd windows, zero
//! padding, area downsampling, batch independence, no gradient, typed errors.

use attune_nn::{GlimpseSensor, NnError};
use attune_tensor::{DType, Device, Tensor};

/// A 6x6 image with pixel (r, c) = 6 r + c + 1 (1 to 36, all distinct).
fn six() -> Vec<f32> {
    (0..36).map(|k| (k + 1) as f32).collect()
}

fn glimpse(sensor: GlimpseSensor, image: &[f32], side: [usize; 2], loc: [f32; 2]) -> Vec<f32> {
    let images = Tensor::from_slice(image, [1, side[0], side[1]], &Device::Cpu).unwrap();
    let locs = Tensor::from_slice(&loc, [1, 2], &Device::Cpu).unwrap();
    let out = sensor.forward(&images, &locs).unwrap();
    assert_eq!(out.dims(), [1, sensor.scales(), sensor.size(), sensor.size()]);
    out.to_vec::<f32>().unwrap()
}

#[test]
fn two_scales_on_a_6x6_image_match_hand_computed_crops() {
    let s = GlimpseSensor::new(2, 2).unwrap();
    assert_eq!(s.out_dim(), 8);
    // Centre (y = 3 on both axes): the 2x2 patch is rows/cols 2..4; the 4x4 patch is 1..5,
    // averaged over 2x2 blocks, e.g. (8 + 9 + 14 + 15) / 4 = 11.5.
    assert_eq!(glimpse(s, &six(), [6, 6], [0.0, 0.0]), [15.0, 16.0, 21.0, 22.0, 11.5, 13.5, 23.5, 25.5]);
    // Top-left corner (y = 0): the 2x2 patch is rows/cols -1..1, three quarters padding; the
    // 4x4 patch is -2..2, whose only block inside the image is (1 + 2 + 7 + 8) / 4.
    assert_eq!(glimpse(s, &six(), [6, 6], [-1.0, -1.0]), [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 4.5]);
    // Bottom-right corner (y = 6): rows/cols 5..7 and 4..8.
    assert_eq!(glimpse(s, &six(), [6, 6], [1.0, 1.0]), [36.0, 0.0, 0.0, 0.0, 32.5, 0.0, 0.0, 0.0]);
    // Row and column apart: row -0.25 is y = 2.25 (patches from rows 1 and 0), column 0.6 is
    // y = 4.8 (patches from columns 4 and 3, the larger one reaching past the right edge).
    assert_eq!(glimpse(s, &six(), [6, 6], [-0.25, 0.6]), [11.0, 12.0, 17.0, 18.0, 7.5, 4.5, 19.5, 10.5]);
}

#[test]
fn windows_are_centred_exactly_when_they_can_be_and_ties_go_down_and_right() {
    let one = |g: usize, n: usize| {
        let image: Vec<f32> = (0..n * n).map(|k| k as f32).collect();
        glimpse(GlimpseSensor::new(g, 1).unwrap(), &image, [n, n], [0.0, 0.0])
    };
    // Even window, even image: rows/cols 2 and 3 of 0..6, exactly centred.
    assert_eq!(one(2, 6), [14.0, 15.0, 20.0, 21.0]);
    // Odd window, odd image: rows/cols 1..4 of 0..5, exactly centred.
    assert_eq!(one(3, 5), [6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 16.0, 17.0, 18.0]);
    // Even window, odd image: the centre is the middle of pixel 2; windows 1..3 and 2..4 are
    // equally near and the later one is taken.
    assert_eq!(one(2, 5), [12.0, 13.0, 17.0, 18.0]);
    // Odd window, even image: the centre is the edge between pixels 2 and 3; 2..5 is taken.
    assert_eq!(one(3, 6), [14.0, 15.0, 16.0, 20.0, 21.0, 22.0, 26.0, 27.0, 28.0]);
}

#[test]
fn a_patch_covering_the_whole_image_averages_all_of_its_ink() {
    // Scale 3 of size 2 is a 16x16 patch in 8x8 blocks: wherever it covers the 6x6 image whole,
    // its blocks hold the image's total (666) divided by 64, padding included.
    let s = GlimpseSensor::new(2, 4).unwrap();
    for loc in [[0.0, 0.0], [0.3, -0.2], [-0.1, 0.1]] {
        let out = glimpse(s, &six(), [6, 6], loc);
        let largest: f32 = out[12..16].iter().sum();
        assert!((largest * 64.0 - 666.0).abs() < 1e-3, "{loc:?}: {out:?}");
    }
}

#[test]
fn each_glimpse_depends_only_on_its_own_image_and_location() {
    let s = GlimpseSensor::new(3, 3).unwrap();
    let (n, side) = (4, [9, 7]);
    let image = |b: usize| -> Vec<f32> { (0..63).map(|k| ((k * 13 + b * 29) % 17) as f32 - 8.0).collect() };
    let locs = [[0.0, 0.0], [-0.7, 0.9], [1.0, -1.0], [0.33, 0.21]];
    let batch: Vec<f32> = (0..n).flat_map(image).collect();
    let flat_locs: Vec<f32> = locs.iter().flatten().copied().collect();
    let images = Tensor::from_slice(&batch, [n, side[0], side[1]], &Device::Cpu).unwrap();
    let l = Tensor::from_slice(&flat_locs, [n, 2], &Device::Cpu).unwrap();
    let out = s.forward(&images, &l).unwrap();
    assert_eq!(out.dims(), [n, 3, 3, 3]);
    let out = out.to_vec::<f32>().unwrap();
    for b in 0..n {
        assert_eq!(out[b * 27..(b + 1) * 27], glimpse(s, &image(b), side, locs[b])[..], "entry {b}");
    }
    // Same in f64, and the output keeps the input dtype.
    let out64 = s.forward(&images.to_dtype(DType::F64).unwrap(), &l).unwrap();
    assert_eq!(out64.dtype(), DType::F64);
    let out64: Vec<f32> = out64.to_vec::<f64>().unwrap().iter().map(|&v| v as f32).collect();
    assert_eq!(out64, out);
}

#[test]
fn no_gradient_reaches_the_location() {
    let s = GlimpseSensor::new(2, 2).unwrap();
    let images = Tensor::from_slice(&six(), [1, 6, 6], &Device::Cpu).unwrap();
    let loc = Tensor::from_slice(&[0.1f32, -0.2], [1, 2], &Device::Cpu).unwrap().to_var().unwrap();
    let w = Tensor::ones([1, 2, 2, 2], DType::F32, &Device::Cpu).unwrap().to_var().unwrap();
    let out = s.forward(&images, &loc).unwrap();
    assert!(!out.requires_grad());
    let grads = out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&w).is_some());
    assert!(grads.get(&loc).is_none());
}

fn input_error(r: attune_nn::Result<Tensor>) -> String {
    match r {
        Err(e @ NnError::Input { .. }) => e.to_string(),
        other => panic!("expected NnError::Input, got {other:?}"),
    }
}

#[test]
fn bad_sizes_shapes_and_locations_are_typed_errors() {
    for (g, k) in [(0, 2), (2, 0), (8, 40), (usize::MAX, 1)] {
        match GlimpseSensor::new(g, k) {
            Err(e @ NnError::Config { .. }) => assert!(e.to_string().contains(&format!("{g}")), "{e}"),
            other => panic!("size {g} scales {k}: expected NnError::Config, got {other:?}"),
        }
    }
    let s = GlimpseSensor::new(2, 2).unwrap();
    let cpu = Device::Cpu;
    let images = Tensor::from_slice(&six(), [1, 6, 6], &cpu).unwrap();
    let loc = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape.to_vec(), &cpu).unwrap();
    let centre = loc(&[0.0, 0.0], &[1, 2]);

    let msg = input_error(s.forward(&images.reshape([6, 6]).unwrap(), &centre));
    assert!(msg.contains("(batch, rows, cols)") && msg.contains("[6, 6]"), "{msg}");
    let msg = input_error(s.forward(&images.reshape([1, 1, 6, 6]).unwrap(), &centre));
    assert!(msg.contains("[1, 1, 6, 6]"), "{msg}");
    let msg = input_error(s.forward(&Tensor::zeros([1, 0, 6], DType::F32, &cpu).unwrap(), &centre));
    assert!(msg.contains("0x6"), "{msg}");
    let msg = input_error(s.forward(&images.to_dtype(DType::U8).unwrap(), &centre));
    assert!(msg.contains("U8"), "{msg}");
    let msg = input_error(s.forward(&images.to_var().unwrap(), &centre));
    assert!(msg.contains("detach"), "{msg}");

    let msg = input_error(s.forward(&images, &loc(&[0.0, 0.0, 0.0], &[1, 3])));
    assert!(msg.contains("[1, 2]") && msg.contains("[1, 3]"), "{msg}");
    let msg = input_error(s.forward(&images, &loc(&[0.0; 4], &[2, 2])));
    assert!(msg.contains("[1, 2]") && msg.contains("[2, 2]"), "{msg}");
    let msg = input_error(s.forward(&images, &loc(&[0.0, 1.5], &[1, 2])));
    assert!(msg.contains("[0][1] is 1.5") && msg.contains("clamp"), "{msg}");
    let msg = input_error(s.forward(&images, &loc(&[f32::NAN, 0.0], &[1, 2])));
    assert!(msg.contains("[0][0] is NaN"), "{msg}");
    // The edges themselves are inside.
    assert!(s.forward(&images, &loc(&[-1.0, 1.0], &[1, 2])).is_ok());
}
