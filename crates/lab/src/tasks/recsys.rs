//! `recsys`: next-item recommendation on MovieLens-100K by SASRec (Kang & McAuley 2018),
//! a causal transformer over a user's items in time order whose output at each position
//! scores every item against the item embeddings (docs/model.md, `tie_embeddings`).
//!
//! **Items.** Item `i` of the data set (dense ids in first-appearance order) is token `i + 1`;
//! token 0 is padding, never a target. The vocabulary is `num_items + 1`.
//!
//! **Split: leave one out** (as SASRec and RecBole's `LS: valid_and_test`). Each user's
//! interactions, sorted by time (ties keep file order), end with the test item; the one before
//! it is the valid item; the rest train. No test item is ever a training target or input of a
//! training batch. Every user needs at least 3 interactions.
//!
//! **Training batches.** Each user's training items are cut, from the end, into windows of
//! at most `max_len + 1` items that overlap by one, so each training item after the first is
//! the target of exactly one position per epoch (a causal LM over the window: position `t`
//! predicts item `t + 1`), with up to `max_len` items of history. Windows are right-padded;
//! padded positions are not supervised. An epoch visits the windows in a permutation keyed by
//! `(seed, epoch)`; train batch `i` of size `B` holds positions `i B .. i B + B` of that stream.
//!
//! **Evaluation batches.** One row per user, in user order: the last `max_len` items before the
//! held-out one (valid: the training items; test: the training items and the valid item),
//! right-padded, supervised only at the last real position, whose target is the held-out item.
//! The ranking metrics (crate::ranking) score it against every item (full ranking) and against
//! [`SAMPLED_NEGATIVES`] items the user never interacted with, drawn per user from a stream
//! keyed by `(seed, split, user)`.

use attune_data::{DataDir, movielens};
use serde::{Deserialize, Serialize};

use super::rng::{Rng, tag};
use super::{Batch, IGNORE_INDEX, SeqBatch, Split, Task, TaskConfig, TaskError};

const NAME: &str = "recsys";
const TAG: u64 = tag(b"recsys");

/// Negatives per user of the sampled metrics (the SASRec paper's 100).
pub const SAMPLED_NEGATIVES: usize = 100;

/// The padding token.
pub const PAD_ITEM: u32 = 0;

/// Which interaction data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecsysDataset {
    /// MovieLens-100K as shipped in RecBole 1.2.1: 943 users, 1,682 items.
    #[default]
    #[serde(rename = "ml-100k")]
    Ml100k,
}

/// The recommendation task's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecsysConfig {
    /// `ml-100k`.
    pub dataset: RecsysDataset,
    /// Items of history the model reads (RecBole's `MAX_ITEM_LIST_LENGTH`, 50).
    pub max_len: usize,
}

impl Default for RecsysConfig {
    /// MovieLens-100K, 50 items of history.
    fn default() -> Self {
        RecsysConfig { dataset: RecsysDataset::Ml100k, max_len: 50 }
    }
}

/// The leave-one-out split of per-user item sequences (tokens, 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveOneOut {
    /// Each user's training items in time order (all but the last two).
    pub train: Vec<Vec<u32>>,
    /// Each user's valid item (the second last).
    pub valid: Vec<u32>,
    /// Each user's test item (the last).
    pub test: Vec<u32>,
}

impl LeaveOneOut {
    /// Splits `sequences` (item ids from 0, in time order, one per user); errors on a user
    /// with fewer than 3 items, naming the user.
    pub fn new(sequences: &[Vec<u32>], user_tokens: &[String]) -> Result<LeaveOneOut, TaskError> {
        let mut out = LeaveOneOut { train: Vec::new(), valid: Vec::new(), test: Vec::new() };
        for (u, seq) in sequences.iter().enumerate() {
            if seq.len() < 3 {
                let name = user_tokens.get(u).map_or_else(|| u.to_string(), |t| format!("{t:?}"));
                return Err(TaskError::config(
                    NAME,
                    format!(
                        "user {name} has {} interaction(s); leave-one-out needs at least 3 per user (one to \
                         train, one to validate, one to test): drop such users from the file first",
                        seq.len()
                    ),
                ));
            }
            let tokens: Vec<u32> = seq.iter().map(|&i| i + 1).collect();
            let n = tokens.len();
            out.valid.push(tokens[n - 2]);
            out.test.push(tokens[n - 1]);
            out.train.push(tokens[..n - 2].to_vec());
        }
        Ok(out)
    }

    /// The training windows `(user, start, end)` into `train[user]`: from the end of each
    /// sequence back, `max_len + 1` items that overlap the next window by one.
    pub fn windows(&self, max_len: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (u, seq) in self.train.iter().enumerate() {
            let mut end = seq.len();
            while end >= 2 {
                let start = end.saturating_sub(max_len + 1);
                out.push((u, start, end));
                end = start + 1;
                if start == 0 {
                    break;
                }
            }
        }
        out
    }
}

/// The recommendation task with its split built.
pub struct RecsysTask {
    cfg: RecsysConfig,
    seed: u64,
    num_items: usize,
    split: LeaveOneOut,
    windows: Vec<(usize, usize, usize)>,
    item_tokens: Vec<String>,
}

impl RecsysTask {
    /// Loads the interactions from the cache (`$ATTUNE_DATA`; `cargo xtask data` fills it).
    pub fn new(cfg: RecsysConfig, seed: u64) -> Result<RecsysTask, TaskError> {
        let data = match cfg.dataset {
            RecsysDataset::Ml100k => movielens::load(&DataDir::from_env())?,
        };
        let mut task = Self::from_sequences(cfg, seed, &data.sequences(), data.num_items(), &data.user_tokens)?;
        task.item_tokens = data.item_tokens;
        Ok(task)
    }

    /// The task over given per-user sequences of item ids in `0..num_items` (tests use this).
    pub fn from_sequences(
        cfg: RecsysConfig,
        seed: u64,
        sequences: &[Vec<u32>],
        num_items: usize,
        user_tokens: &[String],
    ) -> Result<RecsysTask, TaskError> {
        if cfg.max_len == 0 {
            return Err(TaskError::config(NAME, "max_len must be at least 1 (RecBole uses 50)"));
        }
        if sequences.is_empty() {
            return Err(TaskError::config(NAME, "the data holds no users"));
        }
        if let Some(bad) = sequences.iter().flatten().find(|&&i| i as usize >= num_items) {
            return Err(TaskError::config(NAME, format!("item id {bad} is not below num_items {num_items}")));
        }
        let split = LeaveOneOut::new(sequences, user_tokens)?;
        let windows = split.windows(cfg.max_len);
        Ok(RecsysTask { cfg, seed, num_items, split, windows, item_tokens: Vec::new() })
    }

    /// The split, for tests and the peer's check.
    pub fn split(&self) -> &LeaveOneOut {
        &self.split
    }

    /// Users (one evaluation row each).
    pub fn users(&self) -> usize {
        self.split.train.len()
    }

    /// The history of `user` before the held-out item of `split`, its last `max_len` items.
    fn history(&self, split: Split, user: usize) -> Vec<u32> {
        let mut items = self.split.train[user].clone();
        if split == Split::Test {
            items.push(self.split.valid[user]);
        }
        let skip = items.len().saturating_sub(self.cfg.max_len);
        items.split_off(skip)
    }

    fn held_out(&self, split: Split, user: usize) -> u32 {
        if split == Split::Test { self.split.test[user] } else { self.split.valid[user] }
    }

    /// The items (tokens) `user` interacted with anywhere in the data.
    fn seen(&self, user: usize) -> Vec<u32> {
        let mut s = self.split.train[user].clone();
        s.extend([self.split.valid[user], self.split.test[user]]);
        s.sort_unstable();
        s.dedup();
        s
    }

    /// [`SAMPLED_NEGATIVES`] distinct item tokens `user` never interacted with, drawn uniformly
    /// (all of them when fewer exist), from a stream keyed by `(seed, split, user)`.
    pub fn negatives(&self, split: Split, user: usize) -> Vec<u32> {
        let seen = self.seen(user);
        let unseen = self.num_items - seen.len();
        let mut rng = Rng::from_key(&[self.seed, TAG, tag(b"negatives"), split.stream_tag(), user as u64]);
        let mut out: Vec<u32> = Vec::with_capacity(SAMPLED_NEGATIVES.min(unseen));
        if unseen <= SAMPLED_NEGATIVES {
            out.extend((1..=self.num_items as u32).filter(|t| seen.binary_search(t).is_err()));
            return out;
        }
        while out.len() < SAMPLED_NEGATIVES {
            let t = rng.below(self.num_items as u64) as u32 + 1;
            if seen.binary_search(&t).is_err() && !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }
}

impl Task for RecsysTask {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Items plus the padding token.
    fn vocab_size(&self) -> usize {
        self.num_items + 1
    }

    fn seq_len(&self) -> usize {
        self.cfg.max_len
    }

    fn num_classes(&self) -> Option<usize> {
        None
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::Recsys(self.cfg.clone())
    }

    fn split_size(&self, split: Split) -> Option<usize> {
        match split {
            Split::Train => None,
            _ => Some(self.users()),
        }
    }

    fn train_size(&self) -> Option<usize> {
        Some(self.windows.len())
    }

    fn tied_output(&self) -> bool {
        true
    }

    fn token_label(&self, token: u32) -> String {
        let i = (token as usize).wrapping_sub(1);
        self.item_tokens.get(i).cloned().unwrap_or_else(|| token.to_string())
    }

    fn sampled_negatives(&self, split: Split, index: u64, batch_size: usize) -> Option<Vec<Vec<u32>>> {
        let start = (index as usize).checked_mul(batch_size)?;
        Some((start..(start + batch_size).min(self.users())).map(|u| self.negatives(split, u)).collect())
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> Result<Batch, TaskError> {
        if batch_size == 0 {
            return Err(TaskError::config(NAME, "batch_size must be at least 1"));
        }
        let s = self.cfg.max_len;
        let mut rows: Vec<(Vec<u32>, Vec<i64>)> = Vec::with_capacity(batch_size);
        if split == Split::Train {
            let n = self.windows.len() as u64;
            let first = index * batch_size as u64;
            let mut order: Option<(u64, Vec<usize>)> = None;
            for p in first..first + batch_size as u64 {
                let epoch = p / n;
                if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let perm = Rng::from_key(&[self.seed, TAG, tag(b"epoch"), epoch]).permutation(self.windows.len());
                    order = Some((epoch, perm));
                }
                let w = order.as_ref().map_or(0, |(_, perm)| perm[(p % n) as usize]);
                let (u, start, end) = self.windows[w];
                let items = &self.split.train[u][start..end];
                let inputs = items[..items.len() - 1].to_vec();
                let targets = items[1..].iter().map(|&t| i64::from(t)).collect();
                rows.push((inputs, targets));
            }
        } else {
            let start = index as usize * batch_size;
            if start >= self.users() {
                return Err(TaskError::BadBatch {
                    task: NAME,
                    split,
                    msg: format!("{split} batch {index} of size {batch_size} starts past the {} users", self.users()),
                });
            }
            for u in start..(start + batch_size).min(self.users()) {
                let inputs = self.history(split, u);
                let mut targets = vec![IGNORE_INDEX; inputs.len()];
                if let Some(last) = targets.last_mut() {
                    *last = i64::from(self.held_out(split, u));
                }
                rows.push((inputs, targets));
            }
        }
        let batch = rows.len();
        let mut out =
            SeqBatch { inputs: vec![PAD_ITEM; batch * s], targets: vec![IGNORE_INDEX; batch * s], batch, seq_len: s };
        for (b, (inputs, targets)) in rows.iter().enumerate() {
            out.inputs[b * s..b * s + inputs.len()].copy_from_slice(inputs);
            out.targets[b * s..b * s + targets.len()].copy_from_slice(targets);
        }
        Ok(Batch::Seq(out))
    }
}
