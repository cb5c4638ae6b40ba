//! Vectorisable math on score tiles: a polynomial `exp2` (libm's `expf` is a scalar call,
//! ~2.6 ns per element on the development machines, more than the two tile products it sits
//! between), `tanh` for the softcap, and the row sweeps of the online softmax.
//!
//! A score tile is stored transposed, `s[j * ld + r]` for key `j` and query `r`, so every
//! per-query quantity (running max, sum, lse) is a contiguous vector and the sweeps below are
//! plain loops over `r` that LLVM turns into SIMD code.

/// Coefficients of the minimax polynomial (relative error) for `2^f` on `[-0.5, 0.5]`,
/// degree 6, fitted with a Remez exchange in f64 and rounded to f32: the approximation error
/// is 1.9e-9, below the f32 rounding of the Horner evaluation (~1 ulp in all).
const EXP2_C: [f32; 7] = [1.0, 0.693_147_2, 0.240_226_46, 0.055_503_286, 0.009_618_489, 0.001_339_993_1, 0.000_153_458_12];

/// `2^x` to about 1-2 ulp for `x` in `[-126, 127]`; below that it returns exactly 0 (also for
/// `-inf`), above 127 it saturates to `2^127`-ish. Branch-free so loops over it vectorise.
///
/// Range reduction: `n = round(x)` via the `1.5 * 2^23` trick (the low mantissa bits of
/// `x + 1.5 * 2^23` hold `n` in two's complement), `f = x - n` in `[-0.5, 0.5]`, and `2^n`
/// built in the exponent field; `n = -127` gives the bit pattern of `0.0`.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = if x < -127.0 { -127.0 } else { x };
    let x = if x > 127.0 { 127.0 } else { x };
    let t = x + SHIFT;
    let n = t - SHIFT;
    let f = x - n;
    let p = EXP2_C[6];
    let p = p.mul_add(f, EXP2_C[5]);
    let p = p.mul_add(f, EXP2_C[4]);
    let p = p.mul_add(f, EXP2_C[3]);
    let p = p.mul_add(f, EXP2_C[2]);
    let p = p.mul_add(f, EXP2_C[1]);
    let p = p.mul_add(f, EXP2_C[0]);
    // bits(t) = bits(SHIFT) + n; (n + 127) << 23 is the exponent field of 2^n.
    let e = t.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(e)
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)`: absolute error ~1e-7 (relative error grows near 0, where
/// the softcap only needs the absolute one), exactly +-1 in the tails, never NaN for finite x.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp2(x * (2.0 * std::f32::consts::LOG2_E));
    1.0 - 2.0 / (e + 1.0)
}

/// Softcap on raw scores already scaled by `scale / cap`: `s = tanh(s)`, keeping `tanh` in
/// `t` (for the backward) when given, then `s *= cap * log2(e)` (the exp2 domain).
pub fn softcap(s: &mut [f32], mut t: Option<&mut [f32]>, rows: usize, cols: usize, ld: usize, cap_log2: f32) {
    for j in 0..rows {
        let row = &mut s[j * ld..][..cols];
        match t.as_deref_mut() {
            Some(t) => {
                for (x, y) in row.iter_mut().zip(&mut t[j * ld..][..cols]) {
                    let th = tanh(*x);
                    *y = th;
                    *x = th * cap_log2;
                }
            }
            None => {
                for x in row.iter_mut() {
                    *x = tanh(*x) * cap_log2;
                }
            }
        }
    }
}

/// Sets `s[j][r] = -inf` where key `j0 + j` is outside query `r`'s visible range
/// `lo[r]..hi[r]` (an empty range, `lo == hi`, masks the whole column).
pub fn mask(s: &mut [f32], rows: usize, cols: usize, ld: usize, j0: u32, lo: &[u32], hi: &[u32]) {
    let (lo, hi) = (&lo[..cols], &hi[..cols]);
    for j in 0..rows {
        let key = j0 + j as u32;
        let row = &mut s[j * ld..][..cols];
        for ((x, &l), &h) in row.iter_mut().zip(lo).zip(hi) {
            *x = if key >= l && key < h { *x } else { f32::NEG_INFINITY };
        }
    }
}

/// Column maxima: `m[r] = max(m[r], max_j s[j][r])`.
pub fn col_max(s: &[f32], rows: usize, cols: usize, ld: usize, m: &mut [f32]) {
    let m = &mut m[..cols];
    for j in 0..rows {
        for (m, &x) in m.iter_mut().zip(&s[j * ld..][..cols]) {
            *m = if x > *m { x } else { *m };
        }
    }
}

/// `s[j][r] = 2^(s[j][r] - m[r])` and `l[r] += s[j][r]` (the softmax numerators and their
/// sums; a column with `m = 0` and masked `-inf` scores yields zeros).
pub fn exp_sum(s: &mut [f32], rows: usize, cols: usize, ld: usize, m: &[f32], l: &mut [f32]) {
    let (m, l) = (&m[..cols], &mut l[..cols]);
    for j in 0..rows {
        for ((x, &m), l) in s[j * ld..][..cols].iter_mut().zip(m).zip(l.iter_mut()) {
            let p = exp2(*x - m);
            *x = p;
            *l += p;
        }
    }
}

/// `s[j][r] = 2^(s[j][r] - m[r])` (probabilities recomputed from the lse in the backward).
pub fn exp_rows(s: &mut [f32], rows: usize, cols: usize, ld: usize, m: &[f32]) {
    let m = &m[..cols];
    for j in 0..rows {
        for (x, &m) in s[j * ld..][..cols].iter_mut().zip(m) {
            *x = exp2(*x - m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.to_bits() + 1) - b32) as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp2_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -126.0f32;
        while x < 127.0 {
            let got = exp2(x);
            let want = (x as f64).exp2();
            worst = worst.max(ulps(got, want));
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp2(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2(-1000.0), 0.0);
        assert_eq!(exp2(0.0), 1.0);
        assert!(exp2(1e9).is_finite() && exp2(1e9) > 1e38);
    }

    #[test]
    fn tanh_matches_libm_absolutely() {
        for i in -4000..4000 {
            let x = i as f32 * 0.005;
            assert!((tanh(x) as f64 - (x as f64).tanh()).abs() < 2.5e-7, "{x}");
        }
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
    }
}
