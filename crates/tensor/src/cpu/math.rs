//! Vectorisable elementary functions. libm's `expf` is a scalar call (about 2.6 ns per element
//! here); a polynomial written with plain arithmetic lets the compiler vectorise the loops of
//! exp, sigmoid, silu, GELU and softmax.

/// `a * b + c`: one fused instruction (and one rounding) where the build targets FMA, as
/// Attune's default `target-cpu=native` and the portable `x86-64-v3` do; a multiply and an
/// add on targets without it, where `f32::mul_add` would be a libm call per element. The
/// polynomials of [`exp_f32`] and GELU's erfc run about 1.4x faster fused.
#[inline(always)]
pub fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// `e^x` in f32 without a libm call, so loops over slices vectorise: Cody-Waite range
/// reduction `x = n ln2 + r`, the Cephes degree-6 polynomial for `e^r` on |r| <= ln2 / 2 and
/// `2^n` built from exponent bits (in two halves so n = -126..=128 stays exact). Relative
/// error is within a few ulp for x in [-87.33, 88.72]; below (where e^x is subnormal) it
/// returns 0, above +inf; NaN stays NaN. Uses only operations with SIMD forms on baseline
/// x86-64 (no floor; [`mul_add`] fuses only where the target has FMA).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_54;
    const HI: f32 = 88.722_84;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so n * C1 is exact for |n| <= 128.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer (to nearest) in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let t = mul_add(xc, LOG2E, MAGIC);
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = mul_add(-n, C1, xc);
    let r = mul_add(-n, C2, r);
    let z = r * r;
    let mut p = 1.987_569_1e-4;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = mul_add(p, r, c);
    }
    let e = mul_add(p, z, r) + 1.0;
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    // NaN inputs give garbage exponents here (wrapping, never panicking); the select below
    // returns NaN for them.
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let y = e * s1 * s2;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `e^x` through [`exp_f32`] for f32 and libm for f64, so one kernel body serves both.
pub trait FastExp: Copy {
    /// `e^self`.
    fn fexp(self) -> Self;
}

impl FastExp for f32 {
    #[inline(always)]
    fn fexp(self) -> f32 {
        exp_f32(self)
    }
}

impl FastExp for f64 {
    #[inline(always)]
    fn fexp(self) -> f64 {
        self.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_accurate_over_its_whole_range() {
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.7 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
