//! Shapes, dimension arguments (negative dims count from the end) and broadcasting.

use crate::{Error, Result};
use std::fmt;

/// The extent of every dimension of a tensor. Rank is dynamic; rank 0 is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// The dims as a slice.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar).
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }
    /// Number of elements, or an error when the shape cannot be addressed: the product of its
    /// non-zero dims (the largest stride of a contiguous layout, and the element count unless a
    /// dim is 0) must fit in `isize`, as every Rust allocation must. Constructors check this
    /// first, so a corrupt file declaring `[0, 2^40, 2^40]` is an error, not an overflow.
    pub fn checked_elem_count(&self, op: &'static str) -> Result<usize> {
        let nonzero = self.0.iter().filter(|&&d| d != 0).try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match nonzero.filter(|&n| n <= isize::MAX as usize) {
            Some(n) => Ok(if self.0.contains(&0) { 0 } else { n }),
            None => Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "shape {self:?} is too large to address: the product of its non-zero dims exceeds isize::MAX"
                ),
            }),
        }
    }
    /// Row-major strides of a contiguous tensor of this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.rank()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }
    /// Broadcast two shapes with NumPy rules.
    pub fn broadcast(op: &'static str, lhs: &Shape, rhs: &Shape) -> Result<Shape> {
        let rank = lhs.rank().max(rhs.rank());
        let mut out = vec![0; rank];
        for (i, o) in out.iter_mut().enumerate() {
            let l = dim_from_end(lhs, rank - 1 - i);
            let r = dim_from_end(rhs, rank - 1 - i);
            *o = match (l, r) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => return Err(Error::NotBroadcastable { op, lhs: lhs.clone(), rhs: rhs.clone() }),
            };
        }
        Ok(Shape(out))
    }
}

fn dim_from_end(s: &Shape, k: usize) -> usize {
    if k < s.rank() { s.0[s.rank() - 1 - k] } else { 1 }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(v: &Vec<usize>) -> Self {
        Shape(v.clone())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(v: &Shape) -> Self {
        v.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}
impl From<usize> for Shape {
    fn from(v: usize) -> Self {
        Shape(vec![v])
    }
}

/// A dimension argument: `usize` counts from the front, negative `isize`/`i32` from the back.
pub trait Dim: Copy + fmt::Debug {
    /// Resolves to an index in `0..rank`.
    fn to_index(self, shape: &Shape, op: &'static str) -> Result<usize>;
    /// Resolves to an index in `0..=rank` (for inserting a dim).
    fn to_index_plus_one(self, shape: &Shape, op: &'static str) -> Result<usize>;
}

fn resolve(dim: isize, rank: usize, shape: &Shape, op: &'static str) -> Result<usize> {
    let r = rank as isize;
    let d = if dim < 0 { dim + r } else { dim };
    if d < 0 || d >= r {
        return Err(Error::DimOutOfRange { op, dim, rank, shape: shape.clone() });
    }
    Ok(d as usize)
}

macro_rules! impl_dim {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn to_index(self, shape: &Shape, op: &'static str) -> Result<usize> {
                resolve(self as isize, shape.rank(), shape, op)
            }
            fn to_index_plus_one(self, shape: &Shape, op: &'static str) -> Result<usize> {
                resolve(self as isize, shape.rank() + 1, shape, op)
            }
        }
    )*};
}
impl_dim!(usize, isize, i32, i64);

/// A set of dims, for reductions: a single dim, an array, a slice or a vec of dims.
pub trait Dims {
    /// Resolves every dim; errors on out-of-range or duplicate dims.
    fn to_indexes(&self, shape: &Shape, op: &'static str) -> Result<Vec<usize>>;
}

fn resolve_all<D: Dim>(dims: &[D], shape: &Shape, op: &'static str) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = Vec::with_capacity(dims.len());
    for d in dims {
        let i = d.to_index(shape, op)?;
        if out.contains(&i) {
            return Err(Error::DuplicateDim { op, dim: i, dims: out });
        }
        out.push(i);
    }
    out.sort_unstable();
    Ok(out)
}

impl<D: Dim> Dims for D {
    fn to_indexes(&self, shape: &Shape, op: &'static str) -> Result<Vec<usize>> {
        Ok(vec![self.to_index(shape, op)?])
    }
}
impl<D: Dim, const N: usize> Dims for [D; N] {
    fn to_indexes(&self, shape: &Shape, op: &'static str) -> Result<Vec<usize>> {
        resolve_all(self, shape, op)
    }
}
impl<D: Dim> Dims for &[D] {
    fn to_indexes(&self, shape: &Shape, op: &'static str) -> Result<Vec<usize>> {
        resolve_all(self, shape, op)
    }
}
impl<D: Dim> Dims for Vec<D> {
    fn to_indexes(&self, shape: &Shape, op: &'static str) -> Result<Vec<usize>> {
        resolve_all(self, shape, op)
    }
}

/// All dims of the tensor (reduce to a scalar).
#[derive(Debug, Clone, Copy)]
pub struct AllDims;
impl Dims for AllDims {
    fn to_indexes(&self, shape: &Shape, _op: &'static str) -> Result<Vec<usize>> {
        Ok((0..shape.rank()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy_rules() {
        let s = Shape::broadcast("t", &[3, 1, 5].into(), &[4, 1].into()).unwrap();
        assert_eq!(s.dims(), &[3, 4, 5]);
        let s = Shape::broadcast("t", &().into(), &[2, 0].into()).unwrap();
        assert_eq!(s.dims(), &[2, 0]);
        let e = Shape::broadcast("add", &[3, 2].into(), &[4].into()).unwrap_err().to_string();
        assert!(e.contains("add") && e.contains("[3, 2]") && e.contains("[4]") && e.contains("broadcastable"), "{e}");
    }

    #[test]
    fn negative_dims_count_from_the_end() {
        let s: Shape = [2, 3, 4].into();
        assert_eq!((-1isize).to_index(&s, "t").unwrap(), 2);
        assert_eq!((-3i32).to_index(&s, "t").unwrap(), 0);
        assert!((-4isize).to_index(&s, "t").is_err());
        assert!(3usize.to_index(&s, "t").is_err());
        assert_eq!((-1isize).to_index_plus_one(&s, "t").unwrap(), 3);
        assert_eq!([-1isize, 0].to_indexes(&s, "t").unwrap(), vec![0, 2]);
        let e = [1usize, 1].to_indexes(&s, "sum").unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn contiguous_strides_are_row_major() {
        let s: Shape = [2, 3, 4].into();
        assert_eq!(s.contiguous_strides(), vec![12, 4, 1]);
        assert_eq!(Shape::from(()).elem_count(), 1);
    }

    #[test]
    fn shapes_whose_strides_overflow_are_errors_even_when_empty() {
        assert_eq!(Shape::from([2, 3]).checked_elem_count("t").unwrap(), 6);
        assert_eq!(Shape::from([0, 1 << 20, 1 << 20]).checked_elem_count("t").unwrap(), 0);
        for dims in [vec![0, 1 << 40, 1 << 40], vec![1 << 40, 1 << 40], vec![1 << 63]] {
            let e = Shape::from(dims.clone()).checked_elem_count("load").unwrap_err().to_string();
            assert!(e.contains("load") && e.contains(&format!("{dims:?}")) && e.contains("too large"), "{e}");
        }
        let e = crate::Tensor::zeros([0, 1 << 40, 1 << 40], crate::DType::F32, &crate::Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
