//! Creation ops and randomness: Philox known answers, the documented stream convention checked
//! element by element, independence from the thread count, distribution statistics, generator
//! state save/restore, dropout (mask, scale, gradient), arange and linspace against naive loops.

use attune_tensor::cpu::philox::philox4x32_10;
use attune_tensor::grad_check::assert_grad;
use attune_tensor::ops::creation::Rng;
use attune_tensor::testing::test_device;
use attune_tensor::{DType, Device, Error, Result, Tensor, Var};

/// The words of element `i` of stream `(seed, offset)`, straight from the documented convention.
fn word(seed: u64, offset: u64, i: usize) -> (u32, [u32; 4]) {
    let c = offset.wrapping_add((i / 4) as u64);
    let w = philox4x32_10([c as u32, (c >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32]);
    (w[i % 4], w)
}

fn u24(x: u32) -> f64 {
    (x >> 8) as f64 / 16_777_216.0
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0))
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool").install(f)
}

#[test]
fn philox_matches_random123_known_answers() {
    assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(philox4x32_10([0xffffffff; 4], [0xffffffff; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(
        philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn rand_follows_the_stream_convention_per_element() -> Result<()> {
    let seed = 0xDEAD_BEEF_0123_4567;
    let mut rng = Rng::from_state(seed, u64::MAX - 2); // the counter wraps inside the stream
    let got = rng.rand([3, 7], DType::F32, &test_device())?.to_vec::<f32>()?;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g as f64, u24(word(seed, u64::MAX - 2, i).0), "element {i}");
    }
    // 21 elements use ceil(21 / 4) = 6 counters.
    assert_eq!(rng.offset(), (u64::MAX - 2).wrapping_add(6));
    // f64 draws the same 24-bit values; f16 and bf16 keep the top 11 and 8 bits.
    let mut r = Rng::new(3);
    let d64 = r.clone().rand(50, DType::F64, &test_device())?.to_vec::<f64>()?;
    let d16 = r.clone().rand(50, DType::F16, &test_device())?.to_f64_vec()?;
    let db16 = r.rand(50, DType::BF16, &test_device())?.to_f64_vec()?;
    for i in 0..50 {
        let w = word(3, 0, i).0;
        assert_eq!(d64[i], u24(w));
        assert_eq!(d16[i], (w >> 21) as f64 / 2048.0);
        assert_eq!(db16[i], (w >> 24) as f64 / 256.0);
    }
    Ok(())
}

#[test]
fn randn_is_box_muller_on_word_pairs() -> Result<()> {
    let got = Rng::from_state(11, 5).randn(10, DType::F64, &test_device())?.to_vec::<f64>()?;
    for (i, g) in got.iter().enumerate() {
        let (_, w) = word(11, 5, i);
        let q = (i % 4) / 2;
        let u1 = ((w[2 * q] >> 8) as f64 + 1.0) / 16_777_216.0;
        let theta = 2.0 * std::f64::consts::PI * u24(w[2 * q + 1]);
        let r = (-2.0 * u1.ln()).sqrt();
        let want = if i % 2 == 0 { r * theta.cos() } else { r * theta.sin() };
        assert!((g - want).abs() <= 1e-15 * want.abs().max(1.0), "element {i}: {g} vs {want}");
    }
    Ok(())
}

#[test]
fn generation_does_not_depend_on_the_thread_count() -> Result<()> {
    let n = 100_003; // several parallel tasks and a partial last block
    let x = Rng::new(1).randn(n, DType::F32, &test_device())?;
    let run = |threads| {
        in_pool(threads, || -> Result<Vec<Vec<f64>>> {
            let mut rng = Rng::new(42);
            Ok(vec![
                rng.rand(n, DType::F32, &test_device())?.to_f64_vec()?,
                rng.randn(n, DType::BF16, &test_device())?.to_f64_vec()?,
                rng.bernoulli(0.3, n, DType::U8, &test_device())?.to_f64_vec()?,
                rng.uniform(-2.0, 3.0, n, DType::F64, &test_device())?.to_f64_vec()?,
                x.dropout(0.25, true, &mut rng)?.to_f64_vec()?,
            ])
        })
    };
    let (one, two) = (run(1)?, run(2)?);
    for (k, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()), "output {k} differs between 1 and 2 threads");
    }
    Ok(())
}

#[test]
fn uniform_and_normal_statistics() -> Result<()> {
    let n = 100_000;
    let mut rng = Rng::new(2024);
    for (dtype, bits) in [(DType::F32, 24), (DType::F64, 24), (DType::F16, 11), (DType::BF16, 8)] {
        let u = rng.rand(n, dtype, &test_device())?.to_f64_vec()?;
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)), "{dtype}: value outside [0, 1)");
        let (m, v) = mean_var(&u);
        // Uniform on the grid k / 2^bits: mean 1/2 - 2^-(bits+1), variance (1 - 4^-bits) / 12.
        // 5 standard errors: sd(mean) = 0.00091, sd(var) = 0.00024.
        let cell = 2f64.powi(-bits);
        assert!((m - (0.5 - cell / 2.0)).abs() < 0.0046, "{dtype}: mean {m}");
        assert!((v - (1.0 - cell * cell) / 12.0).abs() < 0.0012, "{dtype}: var {v}");
    }
    let z = rng.randn(n, DType::F32, &test_device())?.to_f64_vec()?;
    let (m, v) = mean_var(&z);
    assert!(m.abs() < 0.016 && (v - 1.0).abs() < 0.023, "randn mean {m} var {v}");
    let within1 = z.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
    assert!((within1 - 0.682_689).abs() < 0.0074, "P(|z| < 1) = {within1}");
    // Pairs (cos, sin) share a radius but are uncorrelated.
    let corr = z.chunks_exact(2).map(|p| p[0] * p[1]).sum::<f64>() / (n / 2) as f64;
    assert!(corr.abs() < 0.023, "pair correlation {corr}");
    let g = rng.normal(3.0, 0.5, n, DType::F64, &test_device())?.to_vec::<f64>()?;
    let (m, v) = mean_var(&g);
    assert!((m - 3.0).abs() < 0.008 && (v - 0.25).abs() < 0.006, "normal(3, 0.5) mean {m} var {v}");
    let w = rng.uniform(-2.0, 6.0, n, DType::F32, &test_device())?.to_f64_vec()?;
    let (m, v) = mean_var(&w);
    assert!(w.iter().all(|&x| (-2.0..6.0).contains(&x)));
    assert!((m - 2.0).abs() < 0.037 && (v - 64.0 / 12.0).abs() < 0.08, "uniform(-2, 6) mean {m} var {v}");
    Ok(())
}

#[test]
fn bernoulli_rate_and_dtypes() -> Result<()> {
    let n = 100_000;
    let mut rng = Rng::new(9);
    for (p, dtype) in [(0.3, DType::F32), (0.9, DType::U8), (0.05, DType::I64), (0.5, DType::BF16)] {
        let b = rng.bernoulli(p, n, dtype, &test_device())?.to_f64_vec()?;
        assert!(b.iter().all(|&x| x == 0.0 || x == 1.0));
        let rate = b.iter().sum::<f64>() / n as f64;
        assert!((rate - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(), "p {p} rate {rate}");
    }
    assert!(rng.bernoulli(0.0, 100, DType::F32, &test_device())?.to_vec::<f32>()?.iter().all(|&x| x == 0.0));
    assert!(rng.bernoulli(1.0, 100, DType::F32, &test_device())?.to_vec::<f32>()?.iter().all(|&x| x == 1.0));
    Ok(())
}

#[test]
fn uniform_stays_below_hi_in_low_precision() -> Result<()> {
    // A range narrower than the dtype's spacing: values round to the ends and those that
    // round up to (or past) hi must be stepped below it.
    let mut rng = Rng::new(5);
    for (dtype, lo, hi) in [(DType::F16, 1.0, 1.0009), (DType::BF16, -2.0, -1.99), (DType::F32, 1.0, 1.0 + 1e-7)] {
        let v = rng.uniform(lo, hi, 1000, dtype, &test_device())?.to_f64_vec()?;
        assert!(v.iter().all(|&x| x < hi && x >= lo - 1e-2), "{dtype}: {:?}", v.iter().find(|&&x| x >= hi));
    }
    for dtype in [DType::F16, DType::BF16, DType::F32] {
        let v = rng.uniform(0.0, 1.0, 50_000, dtype, &test_device())?.to_f64_vec()?;
        assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)), "{dtype}");
        let v = rng.uniform(-1.0, -0.25, 50_000, dtype, &test_device())?.to_f64_vec()?;
        assert!(v.iter().all(|&x| (-1.0..-0.25).contains(&x)), "{dtype}");
    }
    assert!(rng.uniform(2.0, 2.0, 10, DType::F32, &test_device())?.to_vec::<f32>()?.iter().all(|&x| x == 2.0));
    Ok(())
}

#[test]
fn generator_state_saves_and_resumes_exactly() -> Result<()> {
    let mut rng = Rng::new(77);
    let a = rng.rand([5, 5], DType::F32, &test_device())?.to_vec::<f32>()?;
    let (seed, offset) = (rng.seed(), rng.offset());
    assert_eq!(offset, 7); // ceil(25 / 4)
    let b = rng.randn(13, DType::F64, &test_device())?.to_vec::<f64>()?;
    assert_ne!(rng.clone().rand([5, 5], DType::F32, &test_device())?.to_vec::<f32>()?, a, "successive calls repeat");
    let mut resumed = Rng::from_state(seed, offset);
    assert_eq!(resumed.randn(13, DType::F64, &test_device())?.to_vec::<f64>()?, b);
    assert_eq!(resumed, rng);
    let mut other = Rng::new(1);
    other.set_seed(seed);
    other.set_offset(offset);
    assert_eq!(other.randn(13, DType::F64, &test_device())?.to_vec::<f64>()?, b);
    assert_eq!(Rng::new(77).take_stream(9), (77, 0));
    // A different seed gives a different stream.
    assert_ne!(Rng::new(78).rand([5, 5], DType::F32, &test_device())?.to_vec::<f32>()?, a);
    let like = Tensor::zeros([2, 3], DType::BF16, &test_device())?;
    assert_eq!(like.rand_like(&mut Rng::new(1))?.dtype(), DType::BF16);
    assert_eq!(like.randn_like(&mut Rng::new(1))?.dims(), &[2, 3]);
    Ok(())
}

#[test]
fn random_ops_reject_bad_arguments() {
    let mut rng = Rng::new(0);
    let e = rng.rand(3, DType::I64, &test_device()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { .. }) && e.to_string().contains("rand"), "{e}");
    let e = rng.bernoulli(1.5, 3, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("bernoulli") && e.contains("1.5"), "{e}");
    let e = rng.uniform(1.0, 0.0, 3, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("uniform") && e.contains("lo 1") && e.contains("hi 0"), "{e}");
    let e = rng.normal(0.0, -1.0, 3, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("normal") && e.contains("std -1"), "{e}");
    // A missing device is an error (only checkable where there is no GPU).
    if !Device::cuda_is_available() {
        let e = rng.rand(3, DType::F32, &Device::Cuda(0)).unwrap_err();
        assert!(matches!(e, Error::DeviceNotAvailable { .. }) && e.to_string().contains("rand"), "{e}");
    }
    assert_eq!(rng.offset(), 0, "failed calls must not consume the stream");
}

#[test]
fn dropout_masks_scales_and_differentiates() -> Result<()> {
    let p = 0.3;
    // A transposed view: the element index is the row-major index of the logical tensor.
    let base = Rng::new(4).randn([33, 64], DType::F64, &test_device())?;
    let x = base.t()?;
    let xv = x.to_vec::<f64>()?;
    let state = (123, 40);
    let mut rng = Rng::from_state(state.0, state.1);
    let y = x.dropout(p, true, &mut rng)?.to_vec::<f64>()?;
    assert_eq!(rng.offset(), 40 + (33 * 64 / 4) as u64);
    let scale = 1.0 / (1.0 - p);
    let mut dropped = 0;
    for (i, (&yi, &xi)) in y.iter().zip(&xv).enumerate() {
        let keep = u24(word(state.0, state.1, i).0) >= p;
        assert_eq!(yi, if keep { xi * scale } else { 0.0 }, "element {i}");
        dropped += !keep as usize;
    }
    let rate = dropped as f64 / y.len() as f64;
    assert!((rate - p).abs() < 5.0 * (p * (1.0 - p) / y.len() as f64).sqrt(), "drop rate {rate}");
    // Dropped elements are exactly bernoulli(p) successes of the same stream.
    let b = Rng::from_state(state.0, state.1).bernoulli(p, [64, 33], DType::U8, &test_device())?.to_vec::<u8>()?;
    assert!(y.iter().zip(&b).all(|(&yi, &bi)| (yi == 0.0) == (bi == 1)));
    // The same state drops the same elements in every float dtype.
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let yd = x.to_dtype(dtype)?.dropout(p, true, &mut Rng::from_state(state.0, state.1))?.to_f64_vec()?;
        assert!(yd.iter().zip(&y).all(|(a, b)| (*a == 0.0) == (*b == 0.0)), "{dtype}");
    }
    // Gradient: the upstream gradient times the same mask.
    let v = Var::from_tensor(&x)?;
    let out = v.dropout(p, true, &mut Rng::from_state(state.0, state.1))?;
    let g = out.sum_all()?.backward()?;
    let gv = g.get(&v).expect("gradient").to_vec::<f64>()?;
    assert!(gv.iter().zip(&y).all(|(&gi, &yi)| gi == if yi == 0.0 { 0.0 } else { scale }));
    let small = Rng::new(8).randn([3, 5], DType::F64, &test_device())?;
    assert_grad("dropout", |t| t[0].dropout(0.4, true, &mut Rng::new(3)), &[small], 1e-6)?;
    Ok(())
}

#[test]
fn dropout_edge_cases_and_errors() -> Result<()> {
    let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 4.0, 5.0], 5, &test_device())?;
    let mut rng = Rng::new(1);
    for (p, train) in [(0.5, false), (0.0, true)] {
        let y = x.dropout(p, train, &mut rng)?;
        assert!(y.same_storage(&x) && y.to_vec::<f32>()? == x.to_vec::<f32>()?);
    }
    assert_eq!(rng.offset(), 0, "eval and p = 0 draw nothing");
    let v = Var::from_tensor(&x)?;
    let y = v.dropout(1.0, true, &mut rng)?;
    assert_eq!(y.to_vec::<f32>()?, vec![0.0; 5]);
    assert_eq!(rng.offset(), 2, "p = 1 still takes its stream");
    let g = y.sum_all()?.backward()?;
    assert_eq!(g.get(&v).expect("gradient").to_vec::<f32>()?, vec![0.0; 5]);
    let e = Tensor::zeros(0, DType::F32, &test_device())?.dropout(0.5, true, &mut rng)?;
    assert_eq!(e.dims(), &[0]);
    for p in [-0.1, 1.5, f64::NAN] {
        let e = x.dropout(p, true, &mut rng).unwrap_err().to_string();
        assert!(e.contains("dropout") && e.contains("outside [0, 1]"), "{e}");
    }
    let e = Tensor::zeros(3, DType::I64, &test_device())?.dropout(0.5, true, &mut rng).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { op: "dropout", .. }), "{e}");
    Ok(())
}

#[test]
fn arange_matches_a_naive_loop() -> Result<()> {
    let cases =
        [(0.0, 10.0, 1.0), (1.0, 2.0, 0.1), (5.0, -3.0, -2.0), (0.0, 0.0, 1.0), (0.5, 3.7, 0.7), (-4.0, 4.0, 2.5)];
    for (start, end, step) in cases {
        let mut want = vec![];
        let mut i = 0;
        loop {
            let v: f64 = start + i as f64 * step;
            if (step > 0.0 && v >= end) || (step < 0.0 && v <= end) {
                break;
            }
            want.push(v);
            i += 1;
        }
        for dtype in [DType::F64, DType::F32] {
            let got = Tensor::arange(start, end, step, dtype, &test_device())?.to_f64_vec()?;
            assert_eq!(got.len(), want.len(), "arange({start}, {end}, {step}) {dtype}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "arange({start}, {end}, {step}): {g} vs {w}");
            }
        }
    }
    assert_eq!(Tensor::arange(2.0, 7.0, 2.0, DType::I64, &test_device())?.to_vec::<i64>()?, vec![2, 4, 6]);
    assert_eq!(
        Tensor::arange(250.0, 256.0, 1.0, DType::U8, &test_device())?.to_vec::<u8>()?,
        vec![250, 251, 252, 253, 254, 255]
    );
    assert_eq!(Tensor::arange_n(4, DType::U32, &test_device())?.to_vec::<u32>()?, vec![0, 1, 2, 3]);
    assert_eq!(Tensor::arange(0.0, 3.0, 1.0, DType::F16, &test_device())?.to_f64_vec()?, vec![0.0, 1.0, 2.0]);
    Ok(())
}

#[test]
fn arange_rejects_bad_steps_and_ranges() -> Result<()> {
    let e = Tensor::arange(0.0, 5.0, 0.0, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("arange") && e.contains("nonzero"), "{e}");
    let e = Tensor::arange(0.0, 5.0, -1.0, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("step -1") && e.contains("end 5"), "{e}");
    let e = Tensor::arange(0.0, 300.0, 1.0, DType::U8, &test_device()).unwrap_err().to_string();
    assert!(e.contains("u8") && e.contains("299"), "{e}");
    let e = Tensor::arange(0.0, -3.0, -1.0, DType::U32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("-2"), "{e}");
    let e = Tensor::arange(0.0, f64::INFINITY, 1.0, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("finite"), "{e}");
    let e = Tensor::arange(0.0, 1e300, 1.0, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("too many"), "{e}");
    // The emulator builds it like the CPU; a GPU that is not there is a typed error.
    let e = Tensor::arange(0.0, 3.0, 1.0, DType::F32, &Device::Emu)?;
    assert_eq!(e.to_vec::<f32>()?, vec![0.0, 1.0, 2.0]);
    if !Device::cuda_is_available() {
        let e = Tensor::arange(0.0, 3.0, 1.0, DType::F32, &Device::Cuda(0)).unwrap_err();
        assert!(matches!(e, Error::DeviceNotAvailable { op: "arange", .. }), "{e}");
    }
    Ok(())
}

#[test]
fn linspace_matches_the_formula_with_exact_ends() -> Result<()> {
    for (start, end, steps) in [(0.0, 1.0, 5), (-3.0, 7.5, 11), (2.0, -2.0, 4), (1.0, 1.0, 3), (0.1, 0.7, 100)] {
        let got = Tensor::linspace(start, end, steps, DType::F64, &test_device())?.to_vec::<f64>()?;
        assert_eq!(got.len(), steps);
        let delta = (end - start) / (steps - 1) as f64;
        for (i, g) in got.iter().enumerate() {
            let want = start + i as f64 * delta;
            assert!((g - want).abs() <= 1e-12 * want.abs().max(1.0), "linspace({start}, {end}, {steps})[{i}]");
        }
        assert_eq!((got[0], got[steps - 1]), (start, end));
        let f = Tensor::linspace(start, end, steps, DType::F32, &test_device())?.to_vec::<f32>()?;
        assert!(f.iter().zip(&got).all(|(a, b)| *a == *b as f32));
    }
    assert_eq!(Tensor::linspace(3.0, 9.0, 1, DType::F32, &test_device())?.to_vec::<f32>()?, vec![3.0]);
    assert_eq!(Tensor::linspace(3.0, 9.0, 0, DType::F32, &test_device())?.dims(), &[0]);
    assert_eq!(Tensor::linspace(0.0, 10.0, 6, DType::I64, &test_device())?.to_vec::<i64>()?, vec![0, 2, 4, 6, 8, 10]);
    let e = Tensor::linspace(0.0, f64::NAN, 3, DType::F32, &test_device()).unwrap_err().to_string();
    assert!(e.contains("linspace") && e.contains("finite"), "{e}");
    let e = Tensor::linspace(-1.0, 1.0, 3, DType::U8, &test_device()).unwrap_err().to_string();
    assert!(e.contains("u8"), "{e}");
    Ok(())
}
