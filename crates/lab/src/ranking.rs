//! Ranking metrics of a recommendation task: each held-out row's target item is ranked by the
//! model's scores at the row's supervised position, against every item (full ranking,
//! Krichene & Rendle 2020) and against the task's sampled negatives (the SASRec paper's 100).
//!
//! `rank` is the number of candidates scored at least as high as the target (ties count
//! against it, so a constant model ranks last); `HR@k` is the fraction of rows with
//! `rank < k` and `NDCG@k` the mean of `1 / log2(rank + 2)` over them (one relevant item, so
//! the ideal DCG is 1). The padding token is never a candidate. As RecBole does for sequential
//! models, items the user saw before are candidates too.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use attune_nn::Ctx;
use attune_tensor::{DType, Device, Tensor};

use crate::batch::DeviceBatch;
use crate::net::Net;
use crate::tasks::{IGNORE_INDEX, Split, Task};

/// The cut-off of the reported metrics.
pub const K: usize = 10;

/// The valid figure a ranking task's early stopping and plateau follow (in place of accuracy).
pub const SELECTION_METRIC: &str = "ndcg@10";

/// Whether `task` is a ranking task: one whose held-out rows come with sampled negatives.
pub fn is_ranking(task: &dyn Task) -> bool {
    task.sampled_negatives(Split::Test, 0, 1).is_some()
}

/// The rank (0 = best) of `scores[target]` among `candidates`, or among every id but 0
/// (padding) when `candidates` is `None`; the target itself is never counted.
pub fn rank_of(scores: &[f32], target: usize, candidates: Option<&[u32]>) -> usize {
    let t = scores[target];
    // At least as high, or incomparable (a NaN score counts against the target too).
    let above = |j: usize| j != target && j != 0 && scores[j].partial_cmp(&t) != Some(std::cmp::Ordering::Less);
    match candidates {
        None => (1..scores.len()).filter(|&j| above(j)).count(),
        Some(c) => c.iter().filter(|&&j| above(j as usize)).count(),
    }
}

/// Sums of hits and gains at [`K`] over ranked rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankTally {
    /// Rows ranked.
    pub rows: usize,
    /// Rows with rank < K.
    pub hits: usize,
    /// Sum of `1 / log2(rank + 2)` over the hits.
    pub gain: f64,
}

impl RankTally {
    /// Counts one row of rank `rank`.
    pub fn add(&mut self, rank: usize) {
        self.rows += 1;
        if rank < K {
            self.hits += 1;
            self.gain += 1.0 / ((rank + 2) as f64).log2();
        }
    }

    /// `(HR@K, NDCG@K)`.
    pub fn rates(&self) -> (f64, f64) {
        let n = self.rows.max(1) as f64;
        (self.hits as f64 / n, self.gain / n)
    }
}

/// `hr@10`, `ndcg@10` (full ranking) and `hr@10_sampled`, `ndcg@10_sampled` over every row
/// of `split`, for a task with sampled negatives; empty for every other task.
pub fn ranking_metrics(
    net: &Net,
    task: &dyn Task,
    split: Split,
    batch_size: usize,
    device: &Device,
) -> Result<BTreeMap<String, f64>> {
    let Some(model) = net.transformer() else { return Ok(BTreeMap::new()) };
    if !is_ranking(task) {
        return Ok(BTreeMap::new());
    }
    let _guard = attune_tensor::no_grad();
    let rows = task.split_size(split).context("a ranking task's held-out split must be finite")?;
    let (mut full, mut sampled) = (RankTally::default(), RankTally::default());
    for index in 0..rows.div_ceil(batch_size) as u64 {
        let batch = task.batch(split, index, batch_size)?;
        let Some(seq) = batch.as_seq() else { bail!("a ranking task must yield sequence batches") };
        let negatives = task.sampled_negatives(split, index, batch_size).context("negatives vanished")?;
        let db = DeviceBatch::new(&batch, device)?;
        let logits = model.forward(db.input(), None, &mut Ctx::eval())?;
        let vocab = *logits.dims().last().unwrap_or(&0);
        // One supervised position per row: read back only those rows of scores.
        let at: Vec<(usize, usize)> = seq
            .targets
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t != IGNORE_INDEX)
            .map(|(i, &t)| (i, t as usize))
            .collect();
        if at.len() != seq.batch || negatives.len() != seq.batch {
            bail!("a ranking batch needs one target and one negative list per row");
        }
        let idx = Tensor::from_vec(at.iter().map(|&(i, _)| i as i64).collect::<Vec<_>>(), [at.len()], device)?;
        let scores = logits.reshape([seq.batch * seq.seq_len, vocab])?.index_select(0usize, &idx)?;
        let scores = scores.to_dtype(DType::F32)?.to_vec::<f32>()?;
        for (r, &(_, target)) in at.iter().enumerate() {
            let row = &scores[r * vocab..(r + 1) * vocab];
            full.add(rank_of(row, target, None));
            sampled.add(rank_of(row, target, Some(&negatives[r])));
        }
    }
    let (hr, ndcg) = full.rates();
    let (shr, sndcg) = sampled.rates();
    Ok([
        (format!("hr@{K}"), hr),
        (format!("ndcg@{K}"), ndcg),
        (format!("hr@{K}_sampled"), shr),
        (format!("ndcg@{K}_sampled"), sndcg),
    ]
    .into_iter()
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_the_candidates_at_or_above_the_target_and_skip_padding() {
        // Item 0 is padding (its huge score is ignored); the target 3 scores 0.5.
        let scores = [9.0, 0.9, 0.1, 0.5, 0.5, 0.7];
        // Above or tied: items 1, 4 (tie), 5.
        assert_eq!(rank_of(&scores, 3, None), 3);
        assert_eq!(rank_of(&scores, 1, None), 0);
        // Against the candidates 2 and 4 only: the tie counts.
        assert_eq!(rank_of(&scores, 3, Some(&[2, 4])), 1);
        assert_eq!(rank_of(&scores, 3, Some(&[2])), 0);
    }

    #[test]
    fn the_selection_metric_is_one_of_the_reported_keys() {
        assert_eq!(SELECTION_METRIC, format!("ndcg@{K}"));
    }

    #[test]
    fn hr_and_ndcg_follow_their_definitions() {
        let mut t = RankTally::default();
        for rank in [0, 1, 9, 10, 500] {
            t.add(rank);
        }
        let (hr, ndcg) = t.rates();
        assert!((hr - 3.0 / 5.0).abs() < 1e-12);
        // 1/log2(2) + 1/log2(3) + 1/log2(11), over 5 rows.
        let want = (1.0 + 1.0 / 3f64.log2() + 1.0 / 11f64.log2()) / 5.0;
        assert!((ndcg - want).abs() < 1e-12, "{ndcg} vs {want}");
        assert_eq!(RankTally::default().rates(), (0.0, 0.0));
    }
}
