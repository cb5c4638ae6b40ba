//! Pareto dominance for multi-objective studies: the front a study reports and the
//! non-dominated sorting NSGA-II ranks by.

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
