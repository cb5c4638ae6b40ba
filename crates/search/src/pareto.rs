//! Pareto dominance for multi-objective studies: the front a study reports, and the
//! non-dominated sorting and crowding distance NSGA-II ranks by (Deb, Pratap, Agarwal and
//! Meyarivan, "A fast and elitist multiobjective genetic algorithm: NSGA-II", 2002).

use crate::space::Direction;

/// Whether `a` dominates `b`: no worse in every objective and better in one.
pub fn dominates(a: &[f64], b: &[f64], directions: &[Direction]) -> bool {
    let mut better = false;
    for ((&x, &y), d) in a.iter().zip(b).zip(directions) {
        let (lx, ly) = (d.loss(x), d.loss(y));
        if lx > ly {
            return false;
        }
        better |= lx < ly;
    }
    better
}

/// The indices of the points no other point dominates, in input order.
pub fn front(points: &[Vec<f64>], directions: &[Direction]) -> Vec<usize> {
    (0..points.len()).filter(|&i| !points.iter().any(|q| dominates(q, &points[i], directions))).collect()
}

/// Non-dominated sorting: rank 0 is the front, rank 1 the front of the rest, and so on. Returns
/// the fronts as lists of indices.
pub fn sort_fronts(points: &[Vec<f64>], directions: &[Direction]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&points[i], &points[j], directions) {
                dominates_list[i].push(j);
                dominated_by[j] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(current);
        current = next;
    }
    fronts
}

/// NSGA-II's crowding distance of each member of one front, in the order of `front` (indices
/// into `points`): per objective, the members are sorted by value; the two extremes get
/// infinity, every other member adds the gap between its two neighbours divided by the
/// objective's range over the front. Large means isolated, so preferring it keeps the front
/// spread out.
///
/// Directions do not matter (gaps are symmetric). An objective on which the whole front is
/// equal adds nothing (no range to normalise by, and no extreme to keep). Fronts of one or
/// two members are all extremes: every distance is infinite.
///
/// # Panics
/// When an index of `front` is not an index of `points` (as with slice indexing; fronts from
/// [`sort_fronts`] over the same points always are).
pub fn crowding_distance(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let n_objectives = front.iter().map(|&i| points[i].len()).min().unwrap_or(0);
    let mut distance = vec![0.0; n];
    let mut order: Vec<usize> = (0..n).collect();
    let columns = (0..n_objectives).map(|m| front.iter().map(|&i| points[i][m]).collect::<Vec<f64>>());
    for values in columns {
        // Ties broken by position keep the result independent of the sort's internals.
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
        let (low, high) = (values[order[0]], values[order[n - 1]]);
        let range = high - low;
        if range <= 0.0 || !range.is_finite() {
            continue;
        }
        distance[order[0]] = f64::INFINITY;
        distance[order[n - 1]] = f64::INFINITY;
        for w in order.windows(3) {
            distance[w[1]] += (values[w[2]] - values[w[0]]) / range;
        }
    }
    distance
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand. f1 sorted: 0, 2, 3, 7, 10 (range 10); f2 sorted: 0, 100, 400, 500, 1000
    /// (range 1000, so the scale of f2 must not matter).
    /// - (2, 500): f1 neighbours 0 and 3 -> 0.3; f2 neighbours 400 and 1000 -> 0.6; sum 0.9
    /// - (3, 400): f1 neighbours 2 and 7 -> 0.5; f2 neighbours 100 and 500 -> 0.4; sum 0.9
    /// - (7, 100): f1 neighbours 3 and 10 -> 0.7; f2 neighbours 0 and 400 -> 0.4; sum 1.1
    /// - (0, 1000) and (10, 0) are extremes: infinite.
    #[test]
    fn crowding_distance_of_a_hand_worked_front() {
        let points = vec![
            vec![7.0, 100.0],
            vec![99.0, 99.0], // not in the front: must be ignored
            vec![0.0, 1000.0],
            vec![3.0, 400.0],
            vec![10.0, 0.0],
            vec![2.0, 500.0],
        ];
        let front = [0, 2, 3, 4, 5];
        let d = crowding_distance(&points, &front);
        let expected = [1.1, f64::INFINITY, 0.9, f64::INFINITY, 0.9];
        for (k, (&got, &want)) in d.iter().zip(&expected).enumerate() {
            if want.is_infinite() {
                assert!(got.is_infinite(), "member {k}: {got} should be infinite");
            } else {
                assert!((got - want).abs() < 1e-12, "member {k}: {got} != {want}");
            }
        }
    }

    #[test]
    fn crowding_distance_of_small_and_flat_fronts() {
        let points = vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![0.5, 0.5]];
        assert!(crowding_distance(&points, &[0, 1]).iter().all(|d| d.is_infinite()));
        assert!(crowding_distance(&points, &[2]).iter().all(|d| d.is_infinite()));
        assert!(crowding_distance(&points, &[]).is_empty());
        // f2 constant: only f1 counts. f1 sorted 0, 1, 3 -> middle (1) gets (3 - 0) / 3 = 1.
        let flat = vec![vec![3.0, 5.0], vec![0.0, 5.0], vec![1.0, 5.0]];
        let d = crowding_distance(&flat, &[0, 1, 2]);
        assert!(d[0].is_infinite() && d[1].is_infinite());
        assert!((d[2] - 1.0).abs() < 1e-12, "{d:?}");
    }
}
