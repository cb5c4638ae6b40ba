//! Dropout multipliers of a score tile from the Philox stream of docs/attention.md, bit-identical
//! to the oracle: element `idx = dropout_index(b, h, i, j)` reads word `idx % 4` of block
//! `offset + idx / 4`; it is kept iff `(word >> 8) >= threshold_24(p)`, and kept values are
//! scaled by `1 / (1 - p)`.
//!
//! Consecutive keys of one query row are consecutive stream elements, so a row of the tile
//! needs `bk / 4` consecutive blocks; those are generated 16 at a time in
//! structure-of-arrays form (the 32x32->64 multiplies vectorise as `vpmuludq`).

use attune_tensor::cpu::philox::{M0, M1, W0, W1};

/// Blocks generated per batch.
const LANES: usize = 16;

/// Philox4x32-10 of 16 counters `[lo[l], hi[l], 0, 0]` under one key, words by lane: the
/// AVX-512 version when compiled in, else the portable one.
#[inline(always)]
fn philox16(lo: &[u32; LANES], hi: &[u32; LANES], key: [u32; 2]) -> [[u32; LANES]; 4] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    return avx512::philox16(lo, hi, key);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    philox16_portable(lo, hi, key)
}

/// Portable structure-of-arrays Philox (LLVM vectorises the 32x32->64 multiplies, with
/// widening and narrowing moves around them).
#[inline(always)]
#[cfg_attr(all(target_arch = "x86_64", target_feature = "avx512f"), allow(dead_code))]
fn philox16_portable(lo: &[u32; LANES], hi: &[u32; LANES], key: [u32; 2]) -> [[u32; LANES]; 4] {
    let (mut c0, mut c1, mut c2, mut c3) = (*lo, *hi, [0u32; LANES], [0u32; LANES]);
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        for l in 0..LANES {
            let p0 = (M0 as u64) * (c0[l] as u64);
            let p1 = (M1 as u64) * (c2[l] as u64);
            let n0 = ((p1 >> 32) as u32) ^ c1[l] ^ k[0];
            let n2 = ((p0 >> 32) as u32) ^ c3[l] ^ k[1];
            c0[l] = n0;
            c1[l] = p1 as u32;
            c2[l] = n2;
            c3[l] = p0 as u32;
        }
    }
    [c0, c1, c2, c3]
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod avx512 {
    use super::LANES;
    use attune_tensor::cpu::philox::{M0, M1, W0, W1};
    use std::arch::x86_64::*;

    /// `(hi, lo)` halves of the 16 products `c[l] * m` (32x32 -> 64 bits): `vpmuludq`
    /// multiplies the even lanes; the odd lanes are shifted down and multiplied too, and the
    /// halves are blended back into lane order.
    #[inline(always)]
    fn mulhilo(c: __m512i, m: __m512i) -> (__m512i, __m512i) {
        // SAFETY: register-only intrinsics; avx512f is enabled at compile time.
        unsafe {
            let even = _mm512_mul_epu32(c, m);
            let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(c), m);
            let hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd);
            let lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64::<32>(odd));
            (hi, lo)
        }
    }

    /// Same contract as the portable `philox16_portable`.
    #[inline(always)]
    pub fn philox16(lo: &[u32; LANES], hi: &[u32; LANES], key: [u32; 2]) -> [[u32; LANES]; 4] {
        // SAFETY: avx512f is enabled at compile time; the loads and stores are of whole
        // 16-lane arrays (unaligned intrinsics).
        unsafe {
            let (m0, m1) = (_mm512_set1_epi32(M0 as i32), _mm512_set1_epi32(M1 as i32));
            let mut c0 = _mm512_loadu_si512(lo.as_ptr().cast());
            let mut c1 = _mm512_loadu_si512(hi.as_ptr().cast());
            let (mut c2, mut c3) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut k = key;
            for round in 0..10 {
                if round > 0 {
                    k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
                }
                let (h0, l0) = mulhilo(c0, m0);
                let (h1, l1) = mulhilo(c2, m1);
                let k0 = _mm512_set1_epi32(k[0] as i32);
                let k1 = _mm512_set1_epi32(k[1] as i32);
                c0 = _mm512_xor_si512(_mm512_xor_si512(h1, c1), k0);
                c2 = _mm512_xor_si512(_mm512_xor_si512(h0, c3), k1);
                c1 = l1;
                c3 = l0;
            }
            let mut out = [[0u32; LANES]; 4];
            for (o, c) in out.iter_mut().zip([c0, c1, c2, c3]) {
                _mm512_storeu_si512(o.as_mut_ptr().cast(), c);
            }
            out
        }
    }
}

/// The stream words of elements `first .. first + out.len()` of `(seed, offset)`.
pub fn words(seed: u64, offset: u64, first: u64, out: &mut [u32]) {
    let key = [seed as u32, (seed >> 32) as u32];
    let skip = (first % 4) as usize;
    let mut block = first / 4;
    // Position in `out` of word 0 of `block` (negative for the first block when `skip > 0`).
    let mut pos = -(skip as isize);
    while pos < out.len() as isize {
        let (mut lo, mut hi) = ([0u32; LANES], [0u32; LANES]);
        for l in 0..LANES {
            let c = offset.wrapping_add(block.wrapping_add(l as u64));
            lo[l] = c as u32;
            hi[l] = (c >> 32) as u32;
        }
        let w = philox16(&lo, &hi, key);
        // Interleave the four words of each block into stream order.
        let mut run = [0u32; 4 * LANES];
        for l in 0..LANES {
            for (word, wl) in w.iter().enumerate() {
                run[4 * l + word] = wl[l];
            }
        }
        // Copy the part of the run that falls inside `out`.
        let start = pos.max(0) as usize;
        let end = ((pos + (4 * LANES) as isize) as usize).min(out.len());
        out[start..end].copy_from_slice(&run[(start as isize - pos) as usize..(end as isize - pos) as usize]);
        block = block.wrapping_add(LANES as u64);
        pos += (4 * LANES) as isize;
    }
}

/// Dropout parameters of one call, with the host-side threshold.
#[derive(Debug, Clone, Copy)]
pub struct DropTile {
    /// Philox key.
    pub seed: u64,
    /// First counter of the stream.
    pub offset: u64,
    /// `threshold_24(p)`: a word is dropped iff `word >> 8 < threshold`.
    pub threshold: u32,
    /// `1 / (1 - p)`.
    pub inv_keep: f32,
}

impl DropTile {
    /// `(kept, after)`: the multiplier of a kept probability in the tile, and the scale applied
    /// to the product after it. The f32 path keeps `1 / (1 - p)` in the tile. The bf16
    /// dot-product path keeps an exact 0/1 mask before it rounds P to bf16 and applies
    /// `1 / (1 - p)` in f32 afterwards: a kept probability of 1 then stays 1, so the backward's
    /// `D = rowsum(dO * O)` matches its `dP` with no bf16 rounding of `1 / (1 - p)` between
    /// them (a row that sees one key gets exactly zero dQ and dK, as in f32).
    pub fn scales(drop: Option<&DropTile>, dot: bool) -> (f32, f32) {
        match drop {
            Some(d) if dot => (1.0, d.inv_keep),
            Some(d) => (d.inv_keep, 1.0),
            None => (1.0, 1.0),
        }
    }

    /// Fills `mult[j * ld + r]` (keys `j < rows`, queries `r < cols`) with the multiplier of
    /// element `first(r) + j`: `kept` if kept (`inv_keep`, or 1 where the caller applies the
    /// scale itself), 0 if dropped. `words` is scratch of at least `rows` entries.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &self,
        kept: f32,
        mult: &mut [f32],
        rows: usize,
        cols: usize,
        ld: usize,
        first: impl Fn(usize) -> u64,
        words_buf: &mut [u32],
    ) {
        // The stream runs along the keys of one query, the tile along the queries of one key:
        // pack each query's keep decisions into a bit mask first (rows <= 128), then write the
        // multipliers key row by key row, contiguous along the queries (no scattered stores).
        assert!(rows <= 128, "dropout tiles have at most 128 keys, got {rows}");
        let mut bits = [0u128; 256];
        let wb = &mut words_buf[..rows];
        for c0 in (0..cols).step_by(bits.len()) {
            let n = bits.len().min(cols - c0);
            for (r, b) in bits[..n].iter_mut().enumerate() {
                words(self.seed, self.offset, first(c0 + r), wb);
                *b = wb
                    .iter()
                    .enumerate()
                    .fold(0u128, |acc, (j, &w)| acc | ((((w >> 8) >= self.threshold) as u128) << j));
            }
            for j in 0..rows {
                for (m, &b) in mult[j * ld + c0..][..n].iter_mut().zip(&bits[..n]) {
                    *m = if (b >> j) & 1 == 1 { kept } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_tensor::cpu::philox::block;

    #[test]
    fn both_philox_versions_match_the_reference() {
        let lo: [u32; LANES] = std::array::from_fn(|l| (l as u32).wrapping_mul(0x9E37_79B9) ^ 0xFFFF_FFF0);
        let hi: [u32; LANES] = std::array::from_fn(|l| l as u32 * 7 + u32::MAX / 3);
        let key = [0x1234_5678, 0xFEDC_BA98];
        for got in [philox16(&lo, &hi, key), philox16_portable(&lo, &hi, key)] {
            for l in 0..LANES {
                let want = attune_tensor::cpu::philox::philox4x32_10([lo[l], hi[l], 0, 0], key);
                assert_eq!([got[0][l], got[1][l], got[2][l], got[3][l]], want, "lane {l}");
            }
        }
    }

    #[test]
    fn words_follow_the_stream_convention() {
        let (seed, offset) = (0xDEAD_BEEF_0123_4567u64, u64::MAX - 5);
        for first in [0u64, 1, 2, 3, 5, 1 << 40, u64::MAX / 2 + 3] {
            for n in [0usize, 1, 3, 4, 63, 64, 65, 130] {
                let mut out = vec![0u32; n];
                words(seed, offset, first, &mut out);
                for (t, &w) in out.iter().enumerate() {
                    let i = first + t as u64;
                    assert_eq!(w, block(seed, offset.wrapping_add(i / 4))[(i % 4) as usize], "first {first} t {t}");
                }
            }
        }
    }
}
