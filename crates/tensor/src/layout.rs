//! Layout: shape, strides (in elements) and offset of a view into storage. Views (transpose,
//! narrow, broadcast, ...) only change the layout; no data moves.

use crate::{Error, Result, Shape};

/// Where the elements of a tensor live inside its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major contiguous layout starting at 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }

    /// A layout from explicit parts (no validation beyond rank).
    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        assert_eq!(shape.rank(), strides.len(), "layout rank");
        Layout { shape, strides, offset }
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The dims.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// Offset of the first element in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// Whether elements are laid out row-major without gaps (dims of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// The storage range `[start, end)` when contiguous.
    pub fn contiguous_range(&self) -> Option<(usize, usize)> {
        self.is_contiguous().then(|| (self.offset, self.offset + self.elem_count()))
    }

    /// One past the largest storage index this layout touches (0 when empty).
    pub fn storage_extent(&self) -> usize {
        if self.elem_count() == 0 {
            return self.offset;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Swaps two dims.
    pub fn transpose(&self, d0: usize, d1: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.swap(d0, d1);
        strides.swap(d0, d1);
        Layout { shape: dims.into(), strides, offset: self.offset }
    }

    /// Reorders dims; `perm` must be a permutation (checked by the caller).
    pub fn permute(&self, perm: &[usize]) -> Layout {
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        Layout { shape: dims.into(), strides, offset: self.offset }
    }

    /// Keeps `len` entries of `dim` starting at `start` (checked by the caller).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        dims[dim] = len;
        Layout { shape: dims.into(), strides: self.strides.clone(), offset: self.offset + start * self.strides[dim] }
    }

    /// Broadcasts to `shape` by adding leading dims and stretching size-1 dims with stride 0.
    pub fn broadcast_as(&self, op: &'static str, shape: &Shape) -> Result<Layout> {
        let rank = shape.rank();
        if rank < self.shape.rank() {
            return Err(Error::NotBroadcastable { op, lhs: self.shape.clone(), rhs: shape.clone() });
        }
        let extra = rank - self.shape.rank();
        let mut strides = vec![0; rank];
        for i in 0..self.shape.rank() {
            let (src, dst) = (self.dims()[i], shape.dims()[i + extra]);
            strides[i + extra] = if src == dst {
                self.strides[i]
            } else if src == 1 {
                0
            } else {
                return Err(Error::NotBroadcastable { op, lhs: self.shape.clone(), rhs: shape.clone() });
            };
        }
        Ok(Layout { shape: shape.clone(), strides, offset: self.offset })
    }

    /// Reinterprets a contiguous layout with another shape of the same size.
    pub fn reshape(&self, shape: Shape) -> Option<Layout> {
        self.is_contiguous().then(|| Layout { strides: shape.contiguous_strides(), shape, offset: self.offset })
    }

    /// Inserts a dim of size 1 at `dim` (0..=rank).
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        let stride = if dim < dims.len() { dims[dim] * strides[dim] } else { 1 };
        dims.insert(dim, 1);
        strides.insert(dim, stride);
        Layout { shape: dims.into(), strides, offset: self.offset }
    }

    /// Removes a dim of size 1 (checked by the caller).
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.remove(dim);
        strides.remove(dim);
        Layout { shape: dims.into(), strides, offset: self.offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_storage_positions() {
        let l = Layout::contiguous([2, 3, 4]);
        assert!(l.is_contiguous());
        let t = l.transpose(0, 2);
        assert_eq!(t.dims(), &[4, 3, 2]);
        assert_eq!(t.strides(), &[1, 4, 12]);
        assert!(!t.is_contiguous());
        let n = l.narrow(1, 1, 2);
        assert_eq!(n.offset(), 4);
        assert!(!n.is_contiguous());
        assert!(l.narrow(0, 1, 1).is_contiguous());
        let b = Layout::contiguous([3, 1]).broadcast_as("t", &[2, 3, 5].into()).unwrap();
        assert_eq!(b.strides(), &[0, 1, 0]);
        assert!(Layout::contiguous([3, 2]).broadcast_as("t", &[3, 4].into()).is_err());
        assert_eq!(l.storage_extent(), 24);
        assert_eq!(l.unsqueeze(3).dims(), &[2, 3, 4, 1]);
        assert!(l.unsqueeze(1).is_contiguous());
    }
}
