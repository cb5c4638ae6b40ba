//! attune-rng: a small counter-based random number generator, shared by the lab's task
//! generators and the search samplers (crates/search).
//!
//! Every example is drawn from its own stream, keyed by a hash of
//! `(seed, task tag, split, example index, ...)` (see [`Rng::from_key`]). Nothing is carried
//! from one example to the next, so any batch can be regenerated from its coordinates alone:
//! a resumed run needs only the step number, and train / valid / test never share a stream.
//!
//! Within a stream the generator is splitmix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", 2014): a Weyl sequence with increment `GOLDEN` passed
//! through the `mix64` finaliser. It is not cryptographic; it is fast, has a full 2^64
//! period per stream and passes BigCrush, which is plenty for generating training data.

/// The Weyl increment of splitmix64: 2^64 / golden ratio, rounded to odd.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser: a bijection on `u64` with full avalanche (every input bit flips
/// each output bit with probability close to 1/2).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A splitmix64 stream. Construct it with [`Rng::from_key`] from the coordinates of what is
/// being generated, never carry one across examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The stream keyed by `parts`, e.g. `[seed, TASK_TAG, split_tag, example_index]`.
    ///
    /// The parts are folded in order through [`mix64`], so permuting them, or changing any
    /// one, gives an unrelated stream (`[1, 2]` and `[2, 1]` differ).
    pub fn from_key(parts: &[u64]) -> Rng {
        let mut h = GOLDEN;
        for &p in parts {
            // Mixing `p` before combining keeps nearby counters (index 7 vs 8) far apart, and
            // mixing the combination makes the fold order-sensitive.
            h = mix64(h ^ mix64(p.wrapping_add(GOLDEN)));
        }
        Rng { state: h }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's multiply-and-reject).
    /// Returns 0 when `n == 0`, so callers never divide by zero; they validate `n` first.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // The high word of x * n is uniform on 0..n once the low words that would make some
        // outcomes more likely (those below 2^64 mod n) are rejected.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform index in `0..n` as `usize` (see [`Rng::below`]).
    pub fn index(&mut self, n: usize) -> usize {
        // usize is at most 64 bits on every supported target, so both casts are lossless.
        self.below(n as u64) as usize
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box-Muller on two uniforms; the second variate is dropped so
    /// the stream position depends only on the number of draws).
    pub fn normal(&mut self) -> f64 {
        // 1 - u keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - self.unit_f64();
        let u2 = self.unit_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// True with probability `p` (clamped to [0, 1]).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit_f64() < p
    }

    /// Shuffles `items` in place (Fisher-Yates), every permutation equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// The permutation `0..n` shuffled by [`Rng::shuffle`].
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

/// A readable 64-bit tag from up to 8 ASCII bytes (`tag(b"mqar")`), used to separate the
/// streams of different tasks and purposes under the same seed.
pub const fn tag(name: &[u8]) -> u64 {
    let mut out = 0u64;
    let mut i = 0;
    while i < name.len() && i < 8 {
        out |= (name[i] as u64) << (8 * i);
        i += 1;
    }
    out
}
