//! Gradients all-reduced in buckets: many small tensors packed into a few buffers of bounded
//! size, so a model of hundreds of parameters makes a handful of collective calls (each call
//! costs a latency), and no buffer is larger than the bound (a second copy of every gradient
//! at once is not needed).

use std::ops::Range;

use crate::{Collective, DistError};

/// Which consecutive tensors travel together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    /// Per bucket, the indices of its tensors.
    pub buckets: Vec<Range<usize>>,
    lengths: Vec<usize>,
}

/// What one [`BucketPlan::all_reduce_mean`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceStats {
    /// Collective calls made.
    pub calls: usize,
    /// f32 elements reduced (each rank's contribution).
    pub elements: usize,
}

impl BucketPlan {
    /// Packs tensors of `lengths` elements, in order, into buckets of at most `max_elements`
    /// (a tensor larger than that travels alone). A `max_elements` of 0 is taken as 1.
    pub fn new(lengths: &[usize], max_elements: usize) -> BucketPlan {
        let max = max_elements.max(1);
        let mut buckets = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, &len) in lengths.iter().enumerate() {
            if i > start && size + len > max {
                buckets.push(start..i);
                (start, size) = (i, 0);
            }
            size += len;
        }
        if start < lengths.len() {
            buckets.push(start..lengths.len());
        }
        BucketPlan { buckets, lengths: lengths.to_vec() }
    }

    /// Sums `parts` (shaped as the plan's lengths) over the ranks and multiplies by `scale`
    /// (`1 / world` for a mean), bucket by bucket. Every rank ends with the same bits.
    pub fn all_reduce_scaled(
        &self,
        coll: &dyn Collective,
        parts: &mut [Vec<f32>],
        scale: f32,
    ) -> Result<ReduceStats, DistError> {
        if parts.len() != self.lengths.len() {
            return Err(DistError::Length {
                op: "bucketed all-reduce (tensors)",
                expected: self.lengths.len(),
                got: parts.len(),
            });
        }
        for (p, &len) in parts.iter().zip(&self.lengths) {
            if p.len() != len {
                return Err(DistError::Length { op: "bucketed all-reduce", expected: len, got: p.len() });
            }
        }
        let mut stats = ReduceStats::default();
        let mut flat = Vec::new();
        for bucket in &self.buckets {
            flat.clear();
            for p in &parts[bucket.clone()] {
                flat.extend_from_slice(p);
            }
            coll.all_reduce_sum_f32(&mut flat)?;
            stats.calls += 1;
            stats.elements += flat.len();
            let mut at = 0;
            for p in &mut parts[bucket.clone()] {
                let len = p.len();
                for (dst, &src) in p.iter_mut().zip(&flat[at..at + len]) {
                    *dst = src * scale;
                }
                at += len;
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_to_the_bound_and_large_tensors_go_alone() {
        let plan = BucketPlan::new(&[3, 3, 3, 10, 1, 1], 6);
        assert_eq!(plan.buckets, vec![0..2, 2..3, 3..4, 4..6]);
        assert_eq!(BucketPlan::new(&[], 6).buckets, Vec::<Range<usize>>::new());
        assert_eq!(BucketPlan::new(&[5, 5], 0).buckets, vec![0..1, 1..2]);
        // Every tensor lands in exactly one bucket, in order.
        let plan = BucketPlan::new(&[7, 1, 2, 9, 4, 4, 4], 8);
        let flat: Vec<usize> = plan.buckets.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(flat, (0..7).collect::<Vec<_>>());
    }
}
