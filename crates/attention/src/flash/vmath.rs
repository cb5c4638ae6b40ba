//! Vectorisable math on score tiles: a polynomial `exp2` (libm's `expf` is a scalar call,
//! ~2.6 ns per element on the development machines, more than the two tile products it sits
//! between), `tanh` for the softcap, and the row sweeps of the online softmax.
//!
//! A score tile is stored transposed, `s[j * ld + r]` for key `j` and query `r`, so every
//! per-query quantity (running max, sum, lse) is a contiguous vector and the sweeps below are
//! plain loops over `r` that LLVM turns into SIMD code.

/// Coefficients of the minimax polynomial (relative error) for `2^f` on `[-0.5, 0.5]`,
/// degree 6, fitted with a Remez exchange in f64 and rounded to f32 (the linear coefficient
/// rounds to `ln 2`): the approximation error is 1.9e-9, below the f32 rounding of the
/// Horner evaluation (~1 ulp in all).
const EXP2_C: [f32; 7] =
    [1.0, std::f32::consts::LN_2, 0.240_226_46, 0.055_503_286, 0.009_618_489, 0.001_339_993_1, 0.000_153_458_12];

/// `2^x` to about 1-2 ulp for `x` in `[-126, 127]`; below that it returns exactly 0 (also for
/// `-inf`), above 127 it saturates to `2^127`-ish. Branch-free so loops over it vectorise.
///
/// Range reduction: `n = round(x)` via the `1.5 * 2^23` trick (the low mantissa bits of
/// `x + 1.5 * 2^23` hold `n` in two's complement), `f = x - n` in `[-0.5, 0.5]`, and `2^n`
/// built in the exponent field; `n = -127` gives the bit pattern of `0.0`.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let x = if x > 127.0 { 127.0 } else { x };
    exp2_nonpos(x)
}

/// [`exp2`] for arguments known to be at most 127 (the softmax's `s - max <= 0`): one
/// comparison less per element.
#[inline(always)]
pub fn exp2_nonpos(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = if x < -127.0 { -127.0 } else { x };
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

/// One online-softmax step over `W` query columns starting at `c0`. The running max and sum
/// of the columns stay in registers across the rows (`W = 64` is four AVX-512 vectors, so
/// four independent max/add chains per row instead of one).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_chunk<const W: usize>(
    s: &mut [f32],
    rows: usize,
    ld: usize,
    c0: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let mut mx: [f32; W] = m[c0..c0 + W].try_into().expect("chunk");
    for j in 0..rows {
        let row: &[f32; W] = s[j * ld + c0..][..W].try_into().expect("chunk");
        for (a, &x) in mx.iter_mut().zip(row) {
            *a = if x > *a { x } else { *a };
        }
    }
    let mut ms = [0f32; W];
    let mut acc = [0f32; W];
    for i in 0..W {
        ms[i] = if mx[i] == f32::NEG_INFINITY { 0.0 } else { mx[i] };
        let a = exp2(m[c0 + i] - ms[i]);
        alpha[c0 + i] = a;
        acc[i] = l[c0 + i] * a;
    }
    for j in 0..rows {
        let row: &mut [f32; W] = (&mut s[j * ld + c0..][..W]).try_into().expect("chunk");
        for ((x, &mm), a) in row.iter_mut().zip(&ms).zip(acc.iter_mut()) {
            // x <= max, so the argument is <= 0 (or -inf for masked entries).
            let p = exp2_nonpos(*x - mm);
            *x = p;
            *a += p;
        }
    }
    m[c0..c0 + W].copy_from_slice(&mx);
    l[c0..c0 + W].copy_from_slice(&acc);
}

/// One online-softmax step over a score tile (exp2 domain): for each query column `r`,
/// `m' = max(m, max_j s[j][r])`, `alpha[r] = 2^(m - m')`, `s[j][r] = 2^(s[j][r] - m')`,
/// `l = l * alpha + sum_j s[j][r]`, `m = m'`. A column with no finite score keeps `m = -inf`
/// and gets zeros (its exponent base is taken as 0 so nothing is NaN).
pub fn online_step(
    s: &mut [f32],
    rows: usize,
    cols: usize,
    ld: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let mut c0 = 0;
    while c0 + 64 <= cols {
        step_chunk::<64>(s, rows, ld, c0, m, l, alpha);
        c0 += 64;
    }
    if c0 + 48 <= cols {
        step_chunk::<48>(s, rows, ld, c0, m, l, alpha);
        c0 += 48;
    }
    while c0 + 16 <= cols {
        step_chunk::<16>(s, rows, ld, c0, m, l, alpha);
        c0 += 16;
    }
    // Ragged last chunk (query tiles shorter than a multiple of 16).
    for r in c0..cols {
        let mut mx = m[r];
        for j in 0..rows {
            let x = s[j * ld + r];
            mx = if x > mx { x } else { mx };
        }
        let ms = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
        alpha[r] = exp2(m[r] - ms);
        let mut acc = l[r] * alpha[r];
        for j in 0..rows {
            let p = exp2(s[j * ld + r] - ms);
            s[j * ld + r] = p;
            acc += p;
        }
        m[r] = mx;
        l[r] = acc;
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
    fn online_step_matches_a_two_pass_softmax() {
        // Two steps over two key tiles, 37 query columns (two full chunks and a ragged one),
        // some columns fully masked in the first tile or in both.
        let (cols, ld, rows) = (37, 40, 5);
        let score = |t: usize, j: usize, r: usize| {
            if r == 3 || r == 33 || (r == 20 && t == 0) {
                f32::NEG_INFINITY
            } else {
                ((t * 31 + j * 7 + r * 13) % 17) as f32 * 0.7 - 5.0
            }
        };
        let (mut m, mut l, mut alpha) = (vec![f32::NEG_INFINITY; cols], vec![0f32; cols], vec![0f32; cols]);
        let mut o = vec![0f64; cols]; // sum_j p * value_j, rescaled like an output row
        for t in 0..2 {
            let mut s = vec![f32::NAN; rows * ld];
            for j in 0..rows {
                for r in 0..cols {
                    s[j * ld + r] = score(t, j, r);
                }
            }
            online_step(&mut s, rows, cols, ld, &mut m, &mut l, &mut alpha);
            for r in 0..cols {
                let add: f64 = (0..rows).map(|j| s[j * ld + r] as f64 * (t * rows + j) as f64).sum();
                o[r] = o[r] * alpha[r] as f64 + add;
            }
        }
        for r in 0..cols {
            let all: Vec<f64> = (0..2).flat_map(|t| (0..rows).map(move |j| score(t, j, r) as f64)).collect();
            let mx = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if mx == f64::NEG_INFINITY {
                assert_eq!((m[r], l[r], o[r]), (f32::NEG_INFINITY, 0.0, 0.0), "column {r}");
                continue;
            }
            let z: f64 = all.iter().map(|x| (x - mx).exp2()).sum();
            let want: f64 = all.iter().enumerate().map(|(i, x)| (x - mx).exp2() / z * i as f64).sum();
            assert_eq!(m[r] as f64, mx, "column {r}");
            assert!((l[r] as f64 - z).abs() < 1e-5 * z, "column {r}");
            assert!((o[r] / l[r] as f64 - want).abs() < 1e-5 * (1.0 + want), "column {r}");
        }
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
