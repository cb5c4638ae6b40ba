//! Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw ("Parallel
//! random numbers: as easy as 1, 2, 3", SC'11), and the one stream convention every Attune
//! backend (CPU, CUDA emulator, GPU) follows, so that the same `(seed, offset)` gives the same
//! numbers and drops the same elements everywhere (docs/attention.md, "Dropout").
//!
//! # Stream convention
//!
//! A stream is a pair `(seed: u64, offset: u64)`. Element `i` (its row-major index in the
//! tensor being generated) reads one Philox block:
//!
//! - `c = offset + i / 4` (wrapping `u64` addition),
//! - `counter = [lo32(c), hi32(c), 0, 0]`, `key = [lo32(seed), hi32(seed)]`,
//! - `words = philox4x32_10(counter, key)`; element `i` owns word `j = i % 4`.
//!
//! A stream of `n` elements therefore consumes `ceil(n / 4)` counters; [`blocks_for`] gives
//! that number, and a generator advances its offset by it so the next stream is fresh.
//!
//! Derived values (all of them functions of the element's own block only, so any thread
//! split gives identical results):
//!
//! - 24-bit uniform: `k = words[j] >> 8`, `u = k * 2^-24` in `[0, 1)`, exact in f32 and f64.
//!   f16 and bf16 keep the top 11 and 8 bits (`words[j] >> 21` times `2^-11`,
//!   `words[j] >> 24` times `2^-8`), so that rounding can never produce 1.0.
//! - Bernoulli / dropout with probability `p`: `threshold = ceil(p * 2^24)` computed in f64 on
//!   the host ([`threshold_24`]); the element is a success (dropped) iff `k < threshold`,
//!   i.e. iff `u < p`. Kernels compare integers only, so every backend agrees bit for bit.
//! - Normal (Box-Muller on pairs of words): pair `q = j / 2` uses `a = words[2q]`,
//!   `b = words[2q + 1]`; `u1 = ((a >> 8) + 1) * 2^-24` in `(0, 1]` (never 0, so the log is
//!   finite), `u2 = (b >> 8) * 2^-24`; `r = sqrt(-2 ln u1)`, `theta = 2 pi u2`; element `i` is
//!   `r cos(theta)` when `j` is even and `r sin(theta)` when `j` is odd. The CPU computes this
//!   in f64 and rounds once to the output dtype; a device computing in f32 agrees to a few ulps.

use rayon::prelude::*;

/// Multiplier of the first word pair.
pub const M0: u32 = 0xD251_1F53;
/// Multiplier of the second word pair.
pub const M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 (the golden ratio).
pub const W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 (sqrt(3) - 1).
pub const W1: u32 = 0xBB67_AE85;

/// One Philox S-box round: two 32x32->64 multiplies, the high halves mixed with the other
/// words and the round key.
#[inline(always)]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let p0 = (M0 as u64) * (c[0] as u64);
    let p1 = (M1 as u64) * (c[2] as u64);
    let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
    let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x32 with 10 rounds: a bijection of the 128-bit `counter` under the 64-bit `key`.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            // The key schedule bumps the key between rounds (9 bumps for 10 rounds).
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        c = round(c, k);
    }
    c
}

/// The four words of block `block` of the stream seeded with `seed` (the convention above;
/// `block` is `offset + i / 4` for element `i`).
#[inline]
pub fn block(seed: u64, block: u64) -> [u32; 4] {
    philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])
}

/// Number of counters a stream of `n` elements consumes: `ceil(n / 4)`.
pub fn blocks_for(n: usize) -> u64 {
    (n as u64).div_ceil(4)
}

/// `ceil(p * 2^24)` clamped to `[0, 2^24]`: element with 24-bit uniform `k` satisfies
/// `u < p` iff `k < threshold_24(p)`.
pub fn threshold_24(p: f64) -> u32 {
    let t = (p * (1u64 << 24) as f64).ceil();
    t.clamp(0.0, (1u64 << 24) as f64) as u32
}

/// The 24-bit uniform in `[0, 1)` of one word, as f32 (exact).
#[inline(always)]
pub fn uniform_f32(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// The 24-bit uniform in `[0, 1)` of one word, as f64 (exact, same value as [`uniform_f32`]).
#[inline(always)]
pub fn uniform_f64(x: u32) -> f64 {
    (x >> 8) as f64 * (1.0 / (1u32 << 24) as f64)
}

/// Box-Muller of one word pair: `(r cos theta, r sin theta)` per the convention above.
#[inline]
pub fn box_muller(a: u32, b: u32) -> (f64, f64) {
    let u1 = ((a >> 8) + 1) as f64 * (1.0 / (1u32 << 24) as f64);
    let u2 = uniform_f64(b);
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
    (r * c, r * s)
}

/// The four standard normals of one block (elements `4b .. 4b + 4`).
#[inline]
pub fn normals(w: &[u32; 4]) -> [f64; 4] {
    let (n0, n1) = box_muller(w[0], w[1]);
    let (n2, n3) = box_muller(w[2], w[3]);
    [n0, n1, n2, n3]
}

/// Elements per parallel task (a multiple of 4, so tasks start on block boundaries).
const PAR_CHUNK: usize = 1 << 13;
/// Elements above which generation is split across rayon threads (Philox costs ~20 multiplies
/// per block, so parallelism pays off earlier than for plain copies).
const PAR_THRESHOLD: usize = 1 << 14;

/// Fills `out` from the stream `(seed, offset)`: `f(words)` maps block `b`'s words to the values
/// of elements `4b .. 4b + 4` (the tail block writes only what fits). Every element depends on
/// its own index only, so the result is the same for any number of threads.
pub fn fill_blocks<T: Send>(out: &mut [T], seed: u64, offset: u64, f: impl Fn(&[u32; 4]) -> [T; 4] + Sync) {
    let work = |start: usize, chunk: &mut [T]| {
        // `start` is a multiple of 4, so block numbers line up with element indices.
        let first = offset.wrapping_add((start / 4) as u64);
        for (b, piece) in chunk.chunks_mut(4).enumerate() {
            let vals = f(&block(seed, first.wrapping_add(b as u64)));
            for (d, v) in piece.iter_mut().zip(vals) {
                *d = v;
            }
        }
    };
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| work(i * PAR_CHUNK, c));
    } else {
        work(0, out);
    }
}

/// A fresh vector of `n` values generated by [`fill_blocks`].
pub fn generate<T: Send + Copy + Default>(
    n: usize,
    seed: u64,
    offset: u64,
    f: impl Fn(&[u32; 4]) -> [T; 4] + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); n];
    fill_blocks(&mut out, seed, offset, f);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        // Random123 tests/kat_vectors, philox4x32 R=10: counter words then key words.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn fill_matches_per_element_definition_at_any_size() {
        for n in [0, 1, 3, 4, 5, PAR_CHUNK - 1, PAR_THRESHOLD + 7, 3 * PAR_CHUNK + 2] {
            let (seed, offset) = (0x1234_5678_9abc_def0, u64::MAX - 3);
            let got = generate(n, seed, offset, |w| *w);
            for (i, g) in got.iter().enumerate() {
                let c = offset.wrapping_add((i / 4) as u64);
                let key = [seed as u32, (seed >> 32) as u32];
                assert_eq!(*g, philox4x32_10([c as u32, (c >> 32) as u32, 0, 0], key)[i % 4], "n {n} i {i}");
            }
        }
    }

    #[test]
    fn thresholds_agree_with_float_comparison() {
        for p in [0.0, 1e-9, 0.1, 0.25, 0.5, 1.0 / 3.0, 0.999_999_99, 1.0] {
            let t = threshold_24(p);
            for k in [0u32, 1, t.saturating_sub(1), t, t + 1, (1 << 24) - 1] {
                let k = k.min((1 << 24) - 1);
                assert_eq!(k < t, uniform_f64(k << 8) < p, "p {p} k {k} t {t}");
            }
        }
        assert_eq!(threshold_24(0.0), 0);
        assert_eq!(threshold_24(1.0), 1 << 24);
    }

    #[test]
    fn uniforms_stay_below_one_and_normals_are_finite() {
        assert_eq!(uniform_f32(u32::MAX), 1.0 - 2f32.powi(-24));
        assert_eq!(uniform_f32(0), 0.0);
        let (a, b) = box_muller(u32::MAX, 0);
        assert_eq!((a, b), (0.0, 0.0));
        let (a, b) = box_muller(0, 0);
        assert!(a.is_finite() && a > 5.0 && b == 0.0, "{a} {b}");
    }
}
