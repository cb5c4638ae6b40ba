//! Splitting the trials into the good ("below") and the rest ("above").
//!
//! The finished trials are ranked best first, and the first `gamma(n)` of the `n` ranked
//! trials are below:
//!
//! 1. Complete trials. One objective: by loss, then trial number. Several: by non-dominated
//!    front ([`pareto::sort_fronts`]); the front that straddles the cut keeps its most spread
//!    members, by repeatedly dropping the member of smallest NSGA-II crowding distance
//!    (recomputed after each drop, ties dropping the later trial). The extremes of the front
//!    have infinite distance, so the below set spans the front instead of one crowded corner.
//! 2. Pruned trials with an intermediate value: behind every complete trial (a complete trial
//!    went the whole way; a pruned one was stopped because it looked worse), those stopped at a
//!    later step ahead of those stopped earlier, and at the same step by the last value
//!    (through the first objective's direction). With the default `gamma` they reach below only
//!    while fewer than `gamma(n)` trials are complete.
//! 3. Pruned trials that reported nothing, by number.
//!
//! Failed trials are ignored. Running trials are not ranked (they say nothing about what is
//! good, so they do not grow `gamma(n)`); with the constant liar they join above, as if they
//! had the worst value, so parallel asks are pushed away from points still being evaluated.
//!
//! The above trials are weighted by age ([`age_weights`]; Bergstra et al. 2013, "Making a
//! science of model search", and Optuna's documented default): the newest 25 weigh 1 and
//! older ones ramp linearly down to `1 / n`, so `g(x)` follows where the search has been
//! lately rather than the random start-up points. The good trials all weigh 1: there are at
//! most `gamma_max` of them, and an old good trial is still among the best found.

use crate::pareto;
use crate::space::Direction;
use crate::trial::{Trial, TrialState};

/// The trials behind `l(x)` and `g(x)`.
#[derive(Debug, Clone)]
pub(super) struct Split<'a> {
    /// The good trials.
    pub below: Vec<&'a Trial>,
    /// The rest (and, with the constant liar, the running trials).
    pub above: Vec<&'a Trial>,
    /// How many finished trials were ranked (the `n` of `gamma(n)`).
    pub ranked: usize,
}

/// Splits `trials`, putting `gamma(n)` of the `n` ranked ones below.
pub(super) fn split<'a>(
    trials: &'a [Trial],
    directions: &[Direction],
    gamma: impl Fn(usize) -> usize,
    constant_liar: bool,
) -> Split<'a> {
    let complete: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter(|t| t.values.as_ref().is_some_and(|v| v.len() == directions.len() && v.iter().all(|x| x.is_finite())))
        .collect();
    let mut pruned: Vec<(&Trial, u64, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .filter_map(|t| {
            let &(step, value) = t.intermediate.last()?;
            Some((t, step, directions.first().map_or(value, |d| d.loss(value))))
        })
        .collect();
    pruned.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.total_cmp(&b.2)).then(a.0.number.cmp(&b.0.number)));
    let silent = trials.iter().filter(|t| t.state == TrialState::Pruned && t.intermediate.is_empty());

    let ranked = complete.len() + pruned.len() + silent.clone().count();
    let n_below = gamma(ranked).min(ranked);
    let mut order = if directions.len() > 1 {
        rank_fronts(&complete, directions, n_below)
    } else {
        rank_single(complete, directions.first().copied().unwrap_or(Direction::Minimize))
    };
    order.extend(pruned.into_iter().map(|(t, _, _)| t));
    order.extend(silent);
    let mut above = order.split_off(n_below);
    if constant_liar {
        // A queued trial (its worker died) will run at its stored point: a lie as much as a running one.
        above.extend(trials.iter().filter(|t| matches!(t.state, TrialState::Running | TrialState::Queued)));
    }
    Split { below: order, above, ranked }
}

/// How many of the newest above trials weigh 1.
const FULL_WEIGHT_NEWEST: usize = 25;

/// The weights of `trials` by age (trial number): the newest [`FULL_WEIGHT_NEWEST`] weigh 1;
/// the `m` older ones, oldest first, ramp linearly from `1 / n` to 1 for `n` trials in all.
pub(super) fn age_weights(trials: &[&Trial]) -> Vec<f64> {
    let n = trials.len();
    let mut weights = vec![1.0; n];
    let older = n.saturating_sub(FULL_WEIGHT_NEWEST);
    let mut by_age: Vec<usize> = (0..n).collect();
    by_age.sort_by_key(|&i| trials[i].number);
    let first = 1.0 / n as f64;
    for (rank, &i) in by_age.iter().take(older).enumerate() {
        weights[i] = if older == 1 { first } else { first + (1.0 - first) * rank as f64 / (older - 1) as f64 };
    }
    weights
}

fn rank_single(mut complete: Vec<&Trial>, direction: Direction) -> Vec<&Trial> {
    let loss = |t: &Trial| t.values.as_ref().map_or(f64::INFINITY, |v| direction.loss(v[0]));
    complete.sort_by(|a, b| loss(a).total_cmp(&loss(b)).then(a.number.cmp(&b.number)));
    complete
}

/// The complete trials front by front, the front that straddles position `cut` reordered so
/// its kept members come first.
fn rank_fronts<'a>(complete: &[&'a Trial], directions: &[Direction], cut: usize) -> Vec<&'a Trial> {
    let losses: Vec<Vec<f64>> = complete
        .iter()
        .map(|t| {
            let values = t.values.as_deref().unwrap_or_default();
            values.iter().zip(directions).map(|(&v, d)| d.loss(v)).collect()
        })
        .collect();
    let minimize = vec![Direction::Minimize; directions.len()];
    let mut order: Vec<usize> = Vec::with_capacity(complete.len());
    for front in pareto::sort_fronts(&losses, &minimize) {
        let room = cut.saturating_sub(order.len());
        if room > 0 && room < front.len() {
            let kept = most_spread(&front, &losses, room, complete);
            order.extend(&kept);
            order.extend(front.iter().filter(|i| !kept.contains(i)));
        } else {
            order.extend(&front);
        }
    }
    order.into_iter().map(|i| complete[i]).collect()
}

/// `keep` members of `front` (indices into `losses`), dropping the most crowded one at a time.
fn most_spread(front: &[usize], losses: &[Vec<f64>], keep: usize, trials: &[&Trial]) -> Vec<usize> {
    let mut members = front.to_vec();
    while members.len() > keep {
        let distance = crowding_distances(&members, losses);
        let drop = (0..members.len())
            .min_by(|&a, &b| {
                distance[a].total_cmp(&distance[b]).then(trials[members[b]].number.cmp(&trials[members[a]].number))
            })
            .unwrap_or(0);
        members.remove(drop);
    }
    members
}

/// NSGA-II crowding distance of each member: per objective, the gap between its neighbours
/// over the front's range, summed; the extremes of each objective get infinity.
pub(super) fn crowding_distances(members: &[usize], losses: &[Vec<f64>]) -> Vec<f64> {
    let mut distance = vec![0.0; members.len()];
    let objectives = members.first().map_or(0, |&i| losses[i].len());
    let columns = (0..objectives).map(|m| members.iter().map(|&i| losses[i][m]).collect::<Vec<f64>>());
    for column in columns {
        let mut by_value: Vec<usize> = (0..members.len()).collect();
        by_value.sort_by(|&a, &b| column[a].total_cmp(&column[b]));
        let (first, last) = (by_value[0], by_value[by_value.len() - 1]);
        let range = column[last] - column[first];
        distance[first] = f64::INFINITY;
        distance[last] = f64::INFINITY;
        if range > 0.0 {
            for w in by_value.windows(3) {
                distance[w[1]] += (column[w[2]] - column[w[0]]) / range;
            }
        }
    }
    distance
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(number: u64, state: TrialState, values: Option<Vec<f64>>, intermediate: Vec<(u64, f64)>) -> Trial {
        Trial { values, intermediate, ..Trial::new(number, state, vec![number as f64]) }
    }

    fn numbers(ts: &[&Trial]) -> Vec<u64> {
        ts.iter().map(|t| t.number).collect()
    }

    #[test]
    fn single_objective_ranks_complete_then_pruned_by_step_then_value() {
        use TrialState::*;
        let trials = vec![
            trial(0, Complete, Some(vec![0.5]), vec![]),
            trial(1, Pruned, Some(vec![]), vec![(1, 0.1)]),
            trial(2, Failed, None, vec![]),
            trial(3, Complete, Some(vec![0.9]), vec![]),
            trial(4, Pruned, None, vec![(1, 0.2), (3, 0.7)]),
            trial(5, Pruned, None, vec![(3, 0.6)]),
            trial(6, Running, None, vec![]),
            trial(7, Pruned, None, vec![]),
            trial(8, Complete, Some(vec![0.2]), vec![]),
            trial(9, Queued, None, vec![]),
        ];
        // Maximizing: 3 (0.9) > 0 (0.5) > 8 (0.2); then the step-3 prunes 4 (0.7) > 5 (0.6);
        // then the step-1 prune 1; then 7, which reported nothing. Failed 2 is ignored.
        let all = split(&trials, &[Direction::Maximize], |n| n, false);
        assert_eq!(numbers(&all.below), [3, 0, 8, 4, 5, 1, 7]);
        assert_eq!(all.ranked, 7);
        let two = split(&trials, &[Direction::Maximize], |_| 2, true);
        assert_eq!(numbers(&two.below), [3, 0]);
        assert_eq!(numbers(&two.above), [8, 4, 5, 1, 7, 6, 9], "the liar counts running and queued trials");
        let minimizing = split(&trials, &[Direction::Minimize], |_| 4, false);
        // Minimizing turns each group's order around, but not the groups' order or the steps'.
        assert_eq!(numbers(&minimizing.below), [8, 0, 3, 5]);
        assert!(!numbers(&minimizing.above).contains(&6) && !numbers(&minimizing.above).contains(&9));
    }

    #[test]
    fn several_objectives_keep_the_front_spread_when_it_is_cut() {
        use TrialState::Complete;
        // Front (min, min): (0, 4), (1, 3), (1.2, 2.8), (3, 1), (4, 0); behind it (5, 5).
        let points = [[0.0, 4.0], [1.0, 3.0], [1.2, 2.8], [3.0, 1.0], [4.0, 0.0], [5.0, 5.0]];
        let trials: Vec<Trial> =
            points.iter().enumerate().map(|(i, p)| trial(i as u64, Complete, Some(p.to_vec()), vec![])).collect();
        let dirs = [Direction::Minimize, Direction::Minimize];
        // Crowding (range 4 on both objectives): 1 has 1.2/4 + 1.2/4 = 0.6, 2 has 2/4 + 2/4 =
        // 1.0, 3 has 2.8/4 + 2.8/4 = 1.4: drop 1. Then 2 has 3/4 + 3/4 = 1.5, 3 still 1.4: drop 3.
        let three = split(&trials, &dirs, |_| 3, false);
        assert_eq!(numbers(&three.below), [0, 2, 4]);
        // Cut to 2, the front (0, 2), (1, 1), (2, 0) keeps its extremes (infinite distance).
        let ties: Vec<Trial> = [[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]]
            .iter()
            .enumerate()
            .map(|(i, p)| trial(i as u64, Complete, Some(p.to_vec()), vec![]))
            .collect();
        assert_eq!(numbers(&split(&ties, &dirs, |_| 2, false).below), [0, 2]);
        let five = split(&trials, &dirs, |_| 5, false);
        assert_eq!(numbers(&five.below), [0, 1, 2, 3, 4]);
        assert_eq!(numbers(&five.above), [5]);
    }

    #[test]
    fn older_above_trials_weigh_less() {
        let make = |numbers: &[u64]| -> Vec<Trial> {
            numbers.iter().map(|&n| trial(n, TrialState::Complete, Some(vec![0.0]), vec![])).collect()
        };
        // Up to 25 trials all weigh 1.
        let few = make(&(0..25).collect::<Vec<_>>());
        assert_eq!(age_weights(&few.iter().collect::<Vec<_>>()), vec![1.0; 25]);
        // 30 trials, listed newest first: the 5 oldest (numbers 0..5) ramp 1/30, 0.275, 0.51667,
        // 0.75833, 1 (steps of (1 - 1/30) / 4 = 0.241667); the 25 newest weigh 1.
        let trials = make(&(0..30).rev().collect::<Vec<_>>());
        let w = age_weights(&trials.iter().collect::<Vec<_>>());
        let expected = [1.0 / 30.0, 0.275, 0.516_667, 0.758_333, 1.0];
        for (number, want) in expected.iter().enumerate() {
            assert!((w[29 - number] - want).abs() < 1e-6, "trial {number}: {} vs {want}", w[29 - number]);
        }
        assert!(w[..25].iter().all(|&x| x == 1.0));
        // 26 trials: the single older one weighs 1/26.
        let w = age_weights(&make(&(0..26).collect::<Vec<_>>()).iter().collect::<Vec<_>>());
        assert!((w[0] - 1.0 / 26.0).abs() < 1e-12 && w[1..].iter().all(|&x| x == 1.0));
    }

    #[test]
    fn crowding_distance_is_the_normalised_neighbour_gap() {
        let losses = vec![vec![0.0, 2.0], vec![1.0, 1.0], vec![2.0, 0.0]];
        let d = crowding_distances(&[0, 1, 2], &losses);
        assert!(d[0].is_infinite() && d[2].is_infinite());
        assert!((d[1] - 2.0).abs() < 1e-12);
    }
}
