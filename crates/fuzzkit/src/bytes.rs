//! Format-blind mutations of a byte string: what a disk, a partial copy or a hex editor does.

use crate::Rng;

/// Sequences that are not UTF-8 (a stray continuation byte, an overlong encoding, a lone
/// surrogate, a truncated 4-byte sequence, bytes never valid).
pub const INVALID_UTF8: &[&[u8]] = &[b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xff\xfe", b"\xc3\x28"];

/// Little-endian u64 values that break length and size fields.
pub const HUGE_U64: &[u64] = &[u64::MAX, 1 << 63, 1 << 40, 1 << 32, u32::MAX as u64, 100_000_001];

/// Applies one random format-blind mutation and names it.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>) -> &'static str {
    let len = data.len();
    match rng.below(8) {
        0 => {
            data.truncate(rng.below(len.max(1)));
            "truncate"
        }
        1 => {
            for _ in 0..1 + rng.below(4) {
                if !data.is_empty() {
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
            }
            "flip bits"
        }
        2 => {
            let at = rng.below(len + 1);
            data.splice(at..at, rng.pick(INVALID_UTF8).iter().copied());
            "invalid utf-8"
        }
        3 => {
            // A huge little-endian integer over 8 bytes anywhere (a length, a count, an offset).
            let at = rng.below(len.max(1));
            let v = rng.pick(HUGE_U64).to_le_bytes();
            for (k, b) in v.iter().enumerate() {
                if let Some(d) = data.get_mut(at + k) {
                    *d = *b;
                }
            }
            "huge u64 in place"
        }
        4 => {
            let (a, b) = (rng.below(len + 1), rng.below(len + 1));
            data.drain(a.min(b)..a.max(b));
            "delete range"
        }
        5 => {
            let (a, b) = (rng.below(len + 1), rng.below(len + 1));
            let chunk = data[a.min(b)..a.max(b)].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
            "duplicate range"
        }
        6 => {
            let at = rng.below(len + 1);
            let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, junk);
            "insert random bytes"
        }
        _ => {
            data.clear();
            "empty"
        }
    }
}
