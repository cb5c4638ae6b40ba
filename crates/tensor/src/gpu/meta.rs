//! The strided indexing descriptor passed by value to element-wise kernels (mirrors
//! `StridedMeta` in kernels/tensor/tensor_common.cuh).

use crate::{Error, Layout, Result};

/// Maximum rank after merging dims; higher ranks are rejected with a clear error.
pub(crate) const MAX_RANK: usize = 8;

/// Row-major iteration over `dims` with up to four operands' strides (0: output, 1..: inputs).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StridedMeta {
    n: i64,
    rank: i32,
    pad: i32,
    dims: [i64; MAX_RANK],
    strides: [[i64; MAX_RANK]; 4],
    offsets: [i64; 4],
}

impl StridedMeta {
    /// Operand 0 is the output written contiguously; `inputs` are layouts of the same dims.
    pub(crate) fn contiguous_out(op: &'static str, inputs: &[&Layout]) -> Result<StridedMeta> {
        let dims = inputs.first().map(|l| l.dims().to_vec()).unwrap_or_default();
        let out = Layout::contiguous(dims);
        let mut all = vec![&out];
        all.extend_from_slice(inputs);
        StridedMeta::new(op, &all)
    }

    /// Operands with explicit layouts (all with the same dims); operand 0 is the output.
    pub(crate) fn new(op: &'static str, layouts: &[&Layout]) -> Result<StridedMeta> {
        assert!(!layouts.is_empty() && layouts.len() <= 4, "StridedMeta takes 1 to 4 operands");
        let dims = layouts[0].dims();
        // Merge adjacent dims that are contiguous with each other in every operand, and drop
        // dims of size 1: fewer dims means cheaper index arithmetic and fewer rank limits.
        let mut merged: Vec<(usize, Vec<usize>)> = Vec::new();
        for (d, &size) in dims.iter().enumerate() {
            if size == 1 {
                continue;
            }
            let strides: Vec<usize> = layouts.iter().map(|l| l.strides()[d]).collect();
            if let Some((psize, pstrides)) = merged.last_mut()
                && pstrides.iter().zip(&strides).all(|(&ps, &s)| ps == s * size)
            {
                *psize *= size;
                *pstrides = strides;
                continue;
            }
            merged.push((size, strides));
        }
        if merged.len() > MAX_RANK {
            return Err(Error::invalid(
                op,
                format!(
                    "the GPU kernels index at most {MAX_RANK} non-mergeable dims, got dims {dims:?}; make the tensor contiguous first"
                ),
            ));
        }
        let mut meta = StridedMeta {
            n: dims.iter().product::<usize>() as i64,
            rank: merged.len() as i32,
            pad: 0,
            dims: [1; MAX_RANK],
            strides: [[0; MAX_RANK]; 4],
            offsets: [0; 4],
        };
        for (d, (size, strides)) in merged.iter().enumerate() {
            meta.dims[d] = *size as i64;
            for (k, &s) in strides.iter().enumerate() {
                meta.strides[k][d] = s as i64;
            }
        }
        for (k, l) in layouts.iter().enumerate() {
            meta.offsets[k] = l.offset() as i64;
        }
        Ok(meta)
    }

    /// Number of elements visited.
    pub(crate) fn n(&self) -> usize {
        self.n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;

    /// The flat offsets the kernel would visit, computed the way strided_offset does.
    fn offsets(m: &StridedMeta, which: usize) -> Vec<i64> {
        (0..m.n)
            .map(|mut i| {
                let mut off = m.offsets[which];
                for d in (0..m.rank as usize).rev() {
                    off += (i % m.dims[d]) * m.strides[which][d];
                    i /= m.dims[d];
                }
                off
            })
            .collect()
    }

    #[test]
    fn merging_keeps_every_offset() {
        // A transposed input against a contiguous output: nothing merges across the swap.
        let a = Layout::new(Shape::from(vec![2, 3, 4]), vec![1, 8, 2], 5);
        let m = StridedMeta::contiguous_out("test", &[&a]).unwrap();
        let expect: Vec<i64> =
            (0..2).flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| 5 + i + 8 * j + 2 * k))).collect();
        assert_eq!(offsets(&m, 1), expect);
        assert_eq!(offsets(&m, 0), (0..24).collect::<Vec<_>>());
        // Fully contiguous operands collapse to one dim.
        let c = Layout::contiguous(vec![2, 3, 4]);
        assert_eq!(StridedMeta::contiguous_out("test", &[&c]).unwrap().rank, 1);
    }
}
