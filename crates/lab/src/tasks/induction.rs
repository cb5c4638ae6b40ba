//! Induction heads: the synthetic of the H3 paper (Fu, Dao et al., "Hungry Hungry Hippos",
//! 2022, §3.1; `generate_induction_head` in HazyResearch/safari `src/dataloaders/synthetics.py`)
//! that the Mamba paper (Gu and Dao, 2023, §4.1.2 and appendix E.1) trains with vocabulary 16
//! and sequence length 256.
//!
//! With vocabulary V and sequence length S, token `V - 1` is the trigger (H3's "copy prefix")
//! and `0..V-1` are ordinary tokens. One example:
//!
//! * positions `0..S-1` hold ordinary tokens drawn uniformly;
//! * one of them, at position `p` drawn uniformly from `0..=S-4`, is replaced by the trigger,
//!   so the token at `p + 1` is the one "following the trigger";
//! * position `S - 1` holds the trigger again, and its target is the token at `p + 1`.
//!
//! Only that last position is supervised: the model must find the earlier trigger and copy
//! what followed it. The trigger therefore appears exactly twice.
//!
//! Choices against the H3 generator: H3 reserves a second special token ("noop") that this
//! task never uses, so all `V - 1` non-trigger tokens are ordinary here; H3 draws `p` from the
//! same range (`0..=S-4` in terms of the model's input length S), which keeps the copied token
//! at least one position away from the final trigger; H3 supervises every next-token target
//! on its training split but only the last on its test split, while this task supervises only
//! the last on every split (the others are uniform noise, which adds loss but no signal). H3's
//! option of several triggers (`num_triggers`) is not offered: with the default of one trigger
//! the example is the one above.

use super::config::InductionConfig;
use super::rng::{Rng, tag};
use super::synthetic::{MAX_SEQ_LEN, MAX_VOCAB, Synthetic};
use super::{TaskConfig, TaskError};

/// The induction heads task; build it with [`super::build`] or [`InductionHeads::new`].
#[derive(Debug, Clone)]
pub struct InductionHeads {
    config: InductionConfig,
    seed: u64,
}

impl InductionHeads {
    /// Validates `config` (V >= 3, so the answer is not forced; S >= 4, so there is room for
    /// the trigger, its follower, one more token and the final trigger) and builds the task.
    pub fn new(config: InductionConfig, seed: u64) -> Result<InductionHeads, TaskError> {
        let InductionConfig { vocab_size: v, seq_len: s } = config;
        let err = |msg: String| Err(TaskError::config(Self::NAME, msg));
        if !(3..=MAX_VOCAB).contains(&v) {
            return err(format!(
                "vocab_size {v} must be in 3..={MAX_VOCAB}: the trigger is V - 1 and at least two ordinary tokens are needed"
            ));
        }
        if !(4..=MAX_SEQ_LEN).contains(&s) {
            return err(format!(
                "seq_len {s} must be in 4..={MAX_SEQ_LEN}: trigger, follower, one token and the final trigger"
            ));
        }
        Ok(InductionHeads { config, seed })
    }

    /// The trigger token, `vocab_size - 1`.
    pub fn trigger(&self) -> u32 {
        (self.config.vocab_size - 1) as u32
    }
}

impl Synthetic for InductionHeads {
    const NAME: &'static str = "induction";
    const TAG: u64 = tag(b"induct");

    fn seed(&self) -> u64 {
        self.seed
    }

    fn sizes(&self) -> (usize, usize) {
        (self.config.vocab_size, self.config.seq_len)
    }

    fn task_config(&self) -> TaskConfig {
        TaskConfig::InductionHeads(self.config.clone())
    }

    /// Fills one example; `x` is zeroed and `y` all ignored on entry.
    fn fill(&self, rng: &mut Rng, x: &mut [u32], y: &mut [i64]) {
        let s = x.len();
        let ordinary = (self.config.vocab_size - 1) as u64;
        for tok in x.iter_mut() {
            *tok = rng.below(ordinary) as u32;
        }
        let p = rng.index(s - 3);
        x[p] = self.trigger();
        x[s - 1] = self.trigger();
        y[s - 1] = i64::from(x[p + 1]);
    }

    /// The first trigger and the token after it (the answer).
    fn sources(&self, x: &[u32], _y: &[i64]) -> (Vec<usize>, &'static str) {
        let last = x.len().saturating_sub(1);
        let first = x[..last].iter().position(|&t| t == self.trigger());
        (first.map_or(Vec::new(), |p| vec![p, p + 1]), "first trigger and the token after it")
    }
}
