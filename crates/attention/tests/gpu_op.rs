//! The Tensor-level attention op on the CUDA emulator: `attention()` on `Device::Emu` runs the
//! CUDA kernels under attune-tensor's autograd, and its output and gradients equal the CPU's
//! (whose gradients equal the composed primitives', tests/op.rs). Deterministic mode gives
//! bitwise-equal gradients across runs.

use attune_attention::gpu::{FwdKernel, choose_forward};
use attune_attention::{AttentionParams, attention, validate};
use attune_tensor::{DType, Device, Rng, Tensor};

fn randn(shape: [usize; 4], seed: u64, dtype: DType) -> Tensor {
    Rng::new(seed).randn(shape, DType::F32, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Output and q/k/v gradients of `sum(out * w)` on `device`, as f64 vectors.
fn run(inputs: &[Tensor; 4], p: &AttentionParams, device: Device) -> Vec<Vec<f64>> {
    let on = |t: &Tensor| t.to_device(&device).unwrap();
    let vars: Vec<_> = inputs[..3].iter().map(|t| on(t).to_var().unwrap()).collect();
    let o = attention(&vars[0], &vars[1], &vars[2], p).unwrap();
    assert_eq!(o.out.device(), device, "the output stays on the inputs' device");
    let loss = o.out.to_dtype(DType::F32).unwrap().mul(&on(&inputs[3])).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let mut res = vec![o.out.to_f64_vec().unwrap()];
    for v in &vars {
        res.push(g.get(v).unwrap().to_f64_vec().unwrap());
    }
    res
}

fn max_err(a: &[f64], b: &[f64]) -> (f64, f64) {
    let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    (err, b.iter().map(|y| y.abs()).fold(0.0, f64::max))
}

#[test]
fn emulated_kernels_match_the_cpu_through_autograd() {
    let cases = [
        (DType::F32, AttentionParams::new().causal(true), 3e-5),
        (DType::F32, AttentionParams::new().window(4, 2).softcap(3.0), 3e-5),
        // 16-bit: both devices round to the dtype, in different orders; a few ulps of bf16/f16
        // relative to the largest value.
        (DType::F16, AttentionParams::new().causal(true), 4e-3),
        (DType::BF16, AttentionParams::new().seqlens_k(vec![13, 5]), 3e-2),
    ];
    for (i, (dt, p, tol)) in cases.into_iter().enumerate() {
        let s = 10 * i as u64;
        let inputs = [
            randn([2, 4, 11, 40], s + 1, dt),
            randn([2, 2, 13, 40], s + 2, dt),
            randn([2, 2, 13, 40], s + 3, dt),
            randn([2, 4, 11, 40], s + 4, DType::F32),
        ];
        let (cpu, emu) = (run(&inputs, &p, Device::Cpu), run(&inputs, &p, Device::Emu));
        for (name, (e, c)) in ["out", "dq", "dk", "dv"].iter().zip(emu.iter().zip(&cpu)) {
            let (err, scale) = max_err(e, c);
            assert!(err <= tol * scale.max(1.0), "case {i} {dt} {name}: max error {err:e} (scale {scale})");
        }
    }
}

#[test]
fn deterministic_backward_is_bitwise_repeatable_and_the_dispatcher_picks_by_dtype() {
    let p = AttentionParams::new().causal(true).deterministic(true);
    let inputs = [
        randn([1, 4, 70, 64], 1, DType::BF16),
        randn([1, 1, 90, 64], 2, DType::BF16),
        randn([1, 1, 90, 64], 3, DType::BF16),
        randn([1, 4, 70, 64], 4, DType::F32),
    ];
    let (a, b) = (run(&inputs, &p, Device::Emu), run(&inputs, &p, Device::Emu));
    assert_eq!(a, b, "two deterministic runs differ");

    let kernel = |dt: DType, sq: usize, sk: usize| {
        let e = |s: usize, h: usize| randn([1, h, s, 64], 0, dt).to_device(&Device::Emu).unwrap();
        let (q, k, v) = (e(sq, 4), e(sk, 2), e(sk, 2));
        let pb = validate(&q, &k, &v, &AttentionParams::new()).unwrap();
        choose_forward(&attune_attention::gpu::GpuCall::new(&q, &k, &v, &pb).unwrap()).unwrap()
    };
    assert_eq!(kernel(DType::F16, 64, 64), FwdKernel::Mma);
    assert_eq!(kernel(DType::F32, 64, 64), FwdKernel::Simt);
    assert!(matches!(kernel(DType::BF16, 1, 4096), FwdKernel::Split(n) if n > 1));
}

#[test]
fn window_bounds_beyond_i32_behave_as_unbounded() {
    let inputs = [
        randn([1, 2, 9, 16], 7, DType::F32),
        randn([1, 2, 12, 16], 8, DType::F32),
        randn([1, 2, 12, 16], 9, DType::F32),
        randn([1, 2, 9, 16], 10, DType::F32),
    ];
    let huge = AttentionParams::new().window(1 << 40, 1 << 40);
    let (a, b) = (run(&inputs, &huge, Device::Emu), run(&inputs, &AttentionParams::new(), Device::Emu));
    assert_eq!(a, b, "a window wider than both sequences must equal full attention");
}

#[test]
fn one_key_rows_with_dropout_have_exactly_zero_q_and_k_gradients_in_16_bit() {
    // window(0, 0): each query sees only its diagonal key, so P = 1 and dS = P (dP - D) is
    // exactly zero when D = rowsum(dO * O) is taken of the unrounded output. Taken of the
    // f16/bf16 output (with the 1/(1-p) keep scale, O = V / (1 - p) is not representable) it
    // would be off by the output's rounding, about 2^-9 relative in bf16.
    let p = AttentionParams::new().window(0, 0).dropout(0.3, 11, 0);
    for dt in [DType::F16, DType::BF16] {
        let inputs = [
            randn([1, 2, 9, 64], 21, dt),
            randn([1, 2, 9, 64], 22, dt),
            randn([1, 2, 9, 64], 23, dt),
            randn([1, 2, 9, 64], 24, DType::F32),
        ];
        for device in [Device::Cpu, Device::Emu] {
            let r = run(&inputs, &p, device);
            let scale = r[3].iter().map(|x| x.abs()).fold(0.0, f64::max);
            assert!(scale > 0.1, "{dt} {device}: some keys must be kept (dv scale {scale})");
            for (name, g) in [("dq", &r[1]), ("dk", &r[2])] {
                let m = g.iter().map(|x| x.abs()).fold(0.0, f64::max);
                assert!(m <= 2e-5 * scale, "{dt} on {device}: max |{name}| = {m:e} against max |dv| = {scale:e}");
            }
        }
    }
}
