//! 16-bit floats in the emulator against the `half` crate: conversions bit for bit (round to
//! nearest even; NaN compared as NaN), and arithmetic against the exactly rounded result.

mod emu_util;

use attune_cuda::{KernelArg, LaunchPlan};
use emu_util::*;
use half::{bf16, f16};

fn same16(got: u16, want: u16, is_nan: impl Fn(u16) -> bool) -> bool {
    got == want || (is_nan(got) && is_nan(want))
}
fn f16_nan(b: u16) -> bool {
    f16::from_bits(b).is_nan()
}
fn bf16_nan(b: u16) -> bool {
    bf16::from_bits(b).is_nan()
}

#[test]
fn conversions_round_to_nearest_even_like_the_half_crate() {
    let d = dev();
    // Every 16-bit pattern decides the ties: midpoints between neighbours, and one float ulp
    // either side, plus a sweep over all float exponents.
    let mut xs: Vec<f32> = Vec::new();
    for h in 0..=u16::MAX {
        let lo = f16::from_bits(h).to_f32();
        let hi = f16::from_bits(h.wrapping_add(1)).to_f32();
        if lo.is_finite() && hi.is_finite() && (h & 0x7fff) != 0x7bff {
            let mid = ((lo as f64 + hi as f64) / 2.0) as f32;
            xs.extend([lo, mid, f32::from_bits(mid.to_bits() + 1), f32::from_bits(mid.to_bits() - 1)]);
        }
        let b = bf16::from_bits(h).to_f32();
        xs.extend([b, f32::from_bits(b.to_bits() | 0x8000), f32::from_bits(b.to_bits() | 0x7fff)]);
    }
    let mut bits = 0u32;
    while let Some(next) = bits.checked_add(40_503) {
        xs.push(f32::from_bits(next));
        bits = next;
    }
    xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 65504.0, 65519.99, 65520.0, 1e-8, -3e-8]);
    let n = xs.len().max(65536);
    xs.resize(n, 0.0);
    let xb = upload(&d, &xs);
    let (h, b) = (zeros::<u16>(&d, n), zeros::<u16>(&d, n));
    let (hf, bf) = (zeros::<f32>(&d, n), zeros::<f32>(&d, n));
    let args = vec![ptr(&xb), ptr(&h), ptr(&b), ptr(&hf), ptr(&bf), KernelArg::I32(n as i32)];
    d.launch(&LaunchPlan::linear(test_module("test/runtime.cu"), "convert16", n, 256, args)).unwrap();
    let (h, b): (Vec<u16>, Vec<u16>) = (download(&h), download(&b));
    let (hf, bf): (Vec<f32>, Vec<f32>) = (download(&hf), download(&bf));
    for (i, &x) in xs.iter().enumerate() {
        let want = f16::from_f32(x).to_bits();
        assert!(
            same16(h[i], want, f16_nan),
            "__float2half_rn({x:e} = {:#010x}) = {:#06x}, want {want:#06x}",
            x.to_bits(),
            h[i]
        );
        let want = bf16::from_f32(x).to_bits();
        assert!(same16(b[i], want, bf16_nan), "__float2bfloat16_rn({x:e}) = {:#06x}, want {want:#06x}", b[i]);
    }
    for i in 0..65536usize {
        let (wh, wb) = (f16::from_bits(i as u16).to_f32(), bf16::from_bits(i as u16).to_f32());
        assert!(hf[i].to_bits() == wh.to_bits() || (hf[i].is_nan() && wh.is_nan()), "__half2float({i:#06x})");
        assert!(bf[i].to_bits() == wb.to_bits() || (bf[i].is_nan() && wb.is_nan()), "__bfloat162float({i:#06x})");
    }
}

/// f64 -> bfloat16 rounded once to nearest even. (`half::bf16::from_f64` goes through f32,
/// which rounds twice.) Scaling by the grid spacing is exact, so ties are exact ties.
fn bf16_rne(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    if a == 0.0 {
        return sign;
    }
    let exp = (((a.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(-126);
    let ulp = 2f64.powi(exp - 7);
    let v = (a / ulp).round_ties_even() * ulp;
    if v >= 2f64.powi(128) {
        return sign | 0x7f80;
    }
    sign | ((v as f32).to_bits() >> 16) as u16
}

/// CUDA's __hmax/__hmin: a NaN input yields the other input; +0 is greater than -0.
fn max_min(a: f64, b: f64, max: bool) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            let a_neg = a.is_sign_negative();
            if a_neg == max { b } else { a }
        }
        _ => {
            if (a > b) == max {
                a
            } else {
                b
            }
        }
    }
}

/// The exactly rounded results of [add, sub, mul, div, fma, max, min, a+b (pair lane 0)] from
/// f64 arithmetic (exact for sums and products of 16-bit values in these ranges; fma cases
/// whose f64 sum is inexact are skipped), rounded once by `round`.
fn reference(a: f64, b: f64, c: f64, round: impl Fn(f64) -> u16) -> Option<[u16; 8]> {
    let p = a * b;
    let s = p + c;
    let bb = s - p;
    let err = (p - (s - bb)) + (c - bb);
    // NaN: an infinity or NaN is involved, and nothing is rounded.
    if err != 0.0 && !err.is_nan() {
        return None;
    }
    Some([
        round(a + b),
        round(a - b),
        round(p),
        round(a / b),
        round(s),
        round(max_min(a, b, true)),
        round(max_min(a, b, false)),
        round(a + b),
    ])
}

#[test]
fn arithmetic_is_exactly_rounded() {
    let d = dev();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 40_000usize;
    let mut pick = |i: usize| -> u16 {
        // Mostly moderate magnitudes, some of every pattern (subnormals, inf, NaN, zeros).
        let r = rng.next_u32();
        if i.is_multiple_of(4) { r as u16 } else { (r as u16 & 0x87ff) | 0x3000 }
    };
    let a: Vec<u16> = (0..n).map(&mut pick).collect();
    let b: Vec<u16> = (0..n).map(&mut pick).collect();
    let c: Vec<u16> = (0..n).map(&mut pick).collect();
    let (ab, bb, cb) = (upload(&d, &a), upload(&d, &b), upload(&d, &c));
    let (ho, bo) = (zeros::<u16>(&d, 8 * n), zeros::<u16>(&d, 8 * n));
    let args = vec![ptr(&ab), ptr(&bb), ptr(&cb), ptr(&ho), ptr(&bo), KernelArg::I32(n as i32)];
    d.launch(&LaunchPlan::linear(test_module("test/runtime.cu"), "arith16", n, 128, args)).unwrap();
    let (ho, bo): (Vec<u16>, Vec<u16>) = (download(&ho), download(&bo));
    let names = ["add", "sub", "mul", "div", "fma", "max", "min", "half2 add"];
    let mut checked = 0;
    for i in 0..n {
        let (fa, fb, fc) = (f16::from_bits(a[i]), f16::from_bits(b[i]), f16::from_bits(c[i]));
        if let Some(want) = reference(fa.to_f64(), fb.to_f64(), fc.to_f64(), |x| f16::from_f64(x).to_bits()) {
            for k in 0..8 {
                let got = ho[8 * i + k];
                assert!(
                    same16(got, want[k], f16_nan),
                    "half {}({fa}, {fb}, {fc}) = {:#06x}, want {:#06x}",
                    names[k],
                    got,
                    want[k]
                );
            }
            checked += 1;
        }
        let (ga, gb, gc) = (bf16::from_bits(a[i]), bf16::from_bits(b[i]), bf16::from_bits(c[i]));
        if let Some(mut want) = reference(ga.to_f64(), gb.to_f64(), gc.to_f64(), bf16_rne) {
            want[7] = b[i]; // the pair test round-trips b
            for k in 0..8 {
                let got = bo[8 * i + k];
                assert!(
                    same16(got, want[k], bf16_nan),
                    "bf16 {}({ga}, {gb}, {gc}) = {:#06x}, want {:#06x}",
                    names[k],
                    got,
                    want[k]
                );
            }
        }
    }
    assert!(checked > n * 9 / 10, "most cases are exact in f64 ({checked} of {n})");
}
