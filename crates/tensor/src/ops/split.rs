//! Stacking and splitting along a dim (PyTorch semantics). Splits are views (`narrow`).

use crate::{Dim, Error, Result, Tensor};

impl Tensor {
    /// Stacks tensors of one shape along a new dim `dim` (in `-(rank + 1)..=rank`), via
    /// `unsqueeze` and `cat`. Differentiable.
    pub fn stack<T: AsRef<Tensor>>(tensors: &[T], dim: impl Dim) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "needs at least one tensor"))?.as_ref();
        let d = dim.to_index_plus_one(first.shape(), "stack")?;
        let parts = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t.as_ref();
                if t.shape() != first.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "stack",
                        lhs: first.shape().clone(),
                        rhs: t.shape().clone(),
                        hint: format!("every tensor must have the shape of the first; tensor {i} differs"),
                    });
                }
                t.unsqueeze(d)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, d)
    }

    /// Splits `dim` into `n` views of `ceil(size / n)` entries each, the last one shorter (so
    /// fewer than `n` chunks may come back, as in PyTorch). A dim of size 0 gives `n` empty views.
    pub fn chunk(&self, n: usize, dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.to_index(self.shape(), "chunk")?;
        if n == 0 {
            return Err(Error::invalid("chunk", format!("needs at least one chunk, got 0 (shape {:?})", self.shape())));
        }
        let size = self.dims()[d];
        if size == 0 {
            return Ok(vec![self.clone(); n]);
        }
        self.split_size(size.div_ceil(n), d)
    }

    /// Splits `dim` into views of `size` entries, the last one shorter when `size` does not
    /// divide the dim. A dim of size 0 gives one empty view; `size == 0` is an error otherwise.
    pub fn split_size(&self, size: usize, dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.to_index(self.shape(), "split_size")?;
        let total = self.dims()[d];
        if total == 0 {
            return Ok(vec![self.clone()]);
        }
        if size == 0 {
            return Err(Error::invalid(
                "split_size",
                format!("split size must be positive to split dim {d} of size {total} (shape {:?})", self.shape()),
            ));
        }
        (0..total).step_by(size).map(|start| self.narrow(d, start, size.min(total - start))).collect()
    }

    /// Splits `dim` into consecutive views of the given `sizes`, which must sum to its size.
    pub fn split(&self, sizes: &[usize], dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.to_index(self.shape(), "split")?;
        let total = self.dims()[d];
        let sum = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if sum != Some(total) {
            return Err(Error::invalid(
                "split",
                format!("sizes {sizes:?} must sum to the size {total} of dim {d} (shape {:?})", self.shape()),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let piece = self.narrow(d, start, len);
                start += len;
                piece
            })
            .collect()
    }
}
