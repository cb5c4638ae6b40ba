//! Selective copying, the synthetic of the Mamba paper (Gu and Dao, 2023, §3.1 figure 2 and
//! §4.1.1; appendix E.1 trains it with sequence length 4096, a vocabulary of 16 tokens
//! including the noise token, and 16 data tokens to memorise).
//!
//! With vocabulary V, region length L and N data tokens, token 0 is noise, `V - 1` the marker
//! and `1..V-1` the data tokens. One example, of length `L + N`:
//!
//! * **Region**, positions `0..L`: noise, except N distinct positions (drawn uniformly, every
//!   set of N positions equally likely) that hold data tokens drawn uniformly, with
//!   replacement, from `1..V-1`;
//! * **Answer**, positions `L..L+N`: N markers; the target at position `L + i` is the `i`-th
//!   data token of the region (in position order). These N positions are the only ones
//!   supervised.
//!
//! Unlike plain copying, the data sit at random places among the noise, so a model must
//! decide from content which tokens to keep; the fixed-spacing version is solvable by a
//! time-invariant convolution.
//!
//! The Mamba paper draws the figure with one marker per answer slot, which is what this
//! follows; the MAD benchmark's variant instead has one copy token followed by noise tokens
//! as inputs of the answer slots, a detail with no bearing on what must be learned. The
//! default L = 256 (so S = 272) instead of 4096 keeps the task trainable on a CPU.

use super::config::SelectiveCopyingConfig;
use super::rng::{Rng, tag};
use super::synthetic::{MAX_SEQ_LEN, MAX_VOCAB, Synthetic};
use super::{TaskConfig, TaskError};

/// The noise token.
pub const NOISE: u32 = 0;

/// The selective copying task; build it with [`super::build`] or [`SelectiveCopying::new`].
#[derive(Debug, Clone)]
pub struct SelectiveCopying {
    config: SelectiveCopyingConfig,
    seed: u64,
}

impl SelectiveCopying {
    /// Validates `config` (V >= 3 so there is at least one data token; `1 <= N <= L`) and
    /// builds the task.
    pub fn new(config: SelectiveCopyingConfig, seed: u64) -> Result<SelectiveCopying, TaskError> {
        let SelectiveCopyingConfig { vocab_size: v, region_len: l, num_tokens: n } = config;
        let err = |msg: String| Err(TaskError::config(Self::NAME, msg));
        if !(3..=MAX_VOCAB).contains(&v) {
            return err(format!(
                "vocab_size {v} must be in 3..={MAX_VOCAB}: 0 is noise, V - 1 the marker, and data tokens need at least one id"
            ));
        }
        if n == 0 {
            return err("num_tokens is 0; copy at least one data token".into());
        }
        if n > l {
            return err(format!("num_tokens {n} exceeds region_len {l}: each data token needs its own position"));
        }
        if l.checked_add(n).is_none_or(|s| s > MAX_SEQ_LEN) {
            return err(format!("region_len {l} + num_tokens {n} exceeds the sequence limit {MAX_SEQ_LEN}"));
        }
        Ok(SelectiveCopying { config, seed })
    }

    /// The marker token, `vocab_size - 1`.
    pub fn marker(&self) -> u32 {
        (self.config.vocab_size - 1) as u32
    }
}

/// `n` distinct positions of `0..l`, uniformly among all such sets, in increasing order.
///
/// Selection sampling (Knuth's Algorithm S): walk the positions once, keeping each with
/// probability (still needed) / (still left). O(l) and no allocation beyond the output.
fn sorted_positions(rng: &mut Rng, l: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    for pos in 0..l {
        let needed = n - out.len();
        if needed == 0 {
            break;
        }
        if rng.index(l - pos) < needed {
            out.push(pos);
        }
    }
    out
}

impl Synthetic for SelectiveCopying {
    const NAME: &'static str = "selective-copying";
    const TAG: u64 = tag(b"selcopy");

    fn seed(&self) -> u64 {
        self.seed
    }

    fn sizes(&self) -> (usize, usize) {
        (self.config.vocab_size, self.config.region_len + self.config.num_tokens)
    }

    fn task_config(&self) -> TaskConfig {
        TaskConfig::SelectiveCopying(self.config.clone())
    }

    /// Fills one example; `x` is zeroed (all noise) and `y` all ignored on entry.
    fn fill(&self, rng: &mut Rng, x: &mut [u32], y: &mut [i64]) {
        let l = self.config.region_len;
        let n = self.config.num_tokens;
        let data_ids = (self.config.vocab_size - 2) as u64;
        let positions = sorted_positions(rng, l, n);
        for (i, &pos) in positions.iter().enumerate() {
            let tok = 1 + rng.below(data_ids) as u32;
            x[pos] = tok;
            x[l + i] = self.marker();
            y[l + i] = i64::from(tok);
        }
    }

    /// The data tokens of the region.
    fn sources(&self, x: &[u32], _y: &[i64]) -> (Vec<usize>, &'static str) {
        let l = self.config.region_len.min(x.len());
        ((0..l).filter(|&p| x[p] != NOISE).collect(), "data tokens")
    }
}
