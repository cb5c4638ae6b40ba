//! How good each usable trial of the earlier generations is, as NSGA-II's (rank, crowding)
//! pair: one objective gives every trial its own rank by loss; several objectives give the
//! non-dominated front index and the crowding distance within the front. Pruned trials rank
//! behind every complete one in both cases (their last intermediate value is a worse-founded
//! estimate than a final value).

use std::cmp::Ordering;

use crate::pareto;
use crate::space::Direction;
use crate::trial::{Trial, TrialState};

/// A candidate parent: a trial and its standing among the trials it was ranked with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member<'a> {
    /// The trial.
    pub trial: &'a Trial,
    /// 0 is best.
    pub rank: usize,
    /// Larger is better among equal ranks (0 for one objective).
    pub crowding: f64,
}

impl Member<'_> {
    /// NSGA-II's crowded comparison: lower rank first, then larger crowding distance, then
    /// the lower trial number so the order is total and never depends on input order.
    pub fn cmp_quality(&self, other: &Member) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then(other.crowding.total_cmp(&self.crowding))
            .then(self.trial.number.cmp(&other.trial.number))
    }
}

/// Whether a trial can be a parent: complete with one value per objective, or pruned. Failed
/// trials say nothing about their point's quality and running ones have no value yet.
pub(super) fn usable(trial: &Trial, directions: &[Direction]) -> bool {
    match trial.state {
        TrialState::Complete => trial.values.as_ref().is_some_and(|v| v.len() == directions.len()),
        TrialState::Pruned => true,
        TrialState::Queued | TrialState::Running | TrialState::Failed => false,
    }
}

/// Ranks `trials` (all usable), returning one member per trial in the same order.
pub(super) fn rank<'a>(trials: &[&'a Trial], directions: &[Direction]) -> Vec<Member<'a>> {
    let mut members: Vec<Member<'a>> =
        trials.iter().map(|&trial| Member { trial, rank: usize::MAX, crowding: 0.0 }).collect();
    let (complete, pruned): (Vec<usize>, Vec<usize>) =
        (0..trials.len()).partition(|&i| trials[i].state == TrialState::Complete);
    let next_rank = if directions.len() > 1 {
        let points: Vec<Vec<f64>> = complete.iter().map(|&i| trials[i].values.clone().unwrap_or_default()).collect();
        let fronts = pareto::sort_fronts(&points, directions);
        for (r, front) in fronts.iter().enumerate() {
            for (&k, d) in front.iter().zip(pareto::crowding_distance(&points, front)) {
                members[complete[k]].rank = r;
                members[complete[k]].crowding = d;
            }
        }
        fronts.len()
    } else {
        assign_by_loss(&mut members, &complete, directions[0], 0)
    };
    assign_by_loss(&mut members, &pruned, directions[0], next_rank);
    members
}

/// Gives the members at `indices` consecutive ranks from `first` by their first-objective
/// loss (a pruned trial without a reported value last); returns the next free rank.
fn assign_by_loss(members: &mut [Member], indices: &[usize], direction: Direction, first: usize) -> usize {
    let loss = |i: usize| members[i].trial.loss(direction).unwrap_or(f64::INFINITY);
    let mut order = indices.to_vec();
    order.sort_by(|&a, &b| loss(a).total_cmp(&loss(b)).then(members[a].trial.number.cmp(&members[b].trial.number)));
    for (r, &i) in order.iter().enumerate() {
        members[i].rank = first + r;
    }
    first + order.len()
}
