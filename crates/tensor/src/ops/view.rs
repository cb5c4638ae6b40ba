//! Views: reshape, transpose, permute, narrow, broadcast, squeeze/unsqueeze. They share the
//! storage and only change the layout; `contiguous()` copies only when needed.

use crate::autograd::GradFn;
use crate::{Dim, Error, Layout, Result, Shape, Tensor};

struct ReshapeBack;
impl GradFn for ReshapeBack {
    fn name(&self) -> &str {
        "reshape"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(inputs[0].shape())?)])
    }
}

struct PermuteBack(Vec<usize>);
impl GradFn for PermuteBack {
    fn name(&self) -> &str {
        "permute"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(vec![Some(g.permute(inverse.as_slice())?)])
    }
}

struct NarrowBack {
    dim: usize,
    start: usize,
}
impl GradFn for NarrowBack {
    fn name(&self) -> &str {
        "narrow"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.pad_with_zeros(
            self.dim,
            self.start,
            inputs[0].dims()[self.dim] - self.start - g.dims()[self.dim],
        )?)])
    }
}

struct BroadcastBack;
impl GradFn for BroadcastBack {
    fn name(&self) -> &str {
        "broadcast_as"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(inputs[0].shape())?)])
    }
}

struct IdentityBack;
impl GradFn for IdentityBack {
    fn name(&self) -> &str {
        "contiguous"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

/// Resolves a shape with at most one `-1` ("infer this dim") against an element count.
fn infer_shape(op: &'static str, dims: &[isize], count: usize, from: &Shape) -> Result<Shape> {
    let mut inferred = None;
    let mut known = 1usize;
    for (i, &d) in dims.iter().enumerate() {
        match d {
            -1 if inferred.is_none() => inferred = Some(i),
            -1 => return Err(Error::invalid(op, format!("only one dim may be -1, got {dims:?}"))),
            d if d < 0 => return Err(Error::invalid(op, format!("dims must be >= 0 or -1, got {dims:?}"))),
            d => known *= d as usize,
        }
    }
    let mut out: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = inferred {
        if known == 0 || !count.is_multiple_of(known) {
            return Err(Error::invalid(
                op,
                format!("cannot infer -1 in {dims:?} for {count} elements (shape {from:?})"),
            ));
        }
        out[i] = count / known;
    }
    Ok(out.into())
}

/// A target shape for reshape: a `Shape`-like value, or dims with one `-1`.
pub trait ReshapeArg {
    /// Resolves against the source element count.
    fn resolve(&self, count: usize, from: &Shape) -> Result<Shape>;
}
impl<S: Into<Shape> + Clone> ReshapeArg for S {
    fn resolve(&self, _count: usize, _from: &Shape) -> Result<Shape> {
        Ok(self.clone().into())
    }
}
/// Dims for [`Tensor::reshape`] where one entry may be -1.
#[derive(Debug, Clone)]
pub struct Infer<const N: usize>(pub [isize; N]);
impl<const N: usize> ReshapeArg for Infer<N> {
    fn resolve(&self, count: usize, from: &Shape) -> Result<Shape> {
        infer_shape("reshape", &self.0, count, from)
    }
}

/// A permutation argument: an array, slice or vec of (possibly negative) dims.
pub trait PermArg {
    /// Resolves to dims in `0..rank`, each exactly once.
    fn to_perm(&self, shape: &Shape) -> Result<Vec<usize>>;
}
fn resolve_perm<D: Dim>(dims: &[D], shape: &Shape) -> Result<Vec<usize>> {
    if dims.len() != shape.rank() {
        return Err(Error::invalid(
            "permute",
            format!("got {} dims {dims:?} for a tensor of rank {} (shape {shape:?})", dims.len(), shape.rank()),
        ));
    }
    let perm: Vec<usize> = dims.iter().map(|d| d.to_index(shape, "permute")).collect::<Result<_>>()?;
    let mut seen = vec![false; perm.len()];
    for &p in &perm {
        if std::mem::replace(&mut seen[p], true) {
            return Err(Error::DuplicateDim { op: "permute", dim: p, dims: perm.clone() });
        }
    }
    Ok(perm)
}
impl<D: Dim, const N: usize> PermArg for [D; N] {
    fn to_perm(&self, shape: &Shape) -> Result<Vec<usize>> {
        resolve_perm(self, shape)
    }
}
impl<D: Dim> PermArg for &[D] {
    fn to_perm(&self, shape: &Shape) -> Result<Vec<usize>> {
        resolve_perm(self, shape)
    }
}
impl<D: Dim> PermArg for Vec<D> {
    fn to_perm(&self, shape: &Shape) -> Result<Vec<usize>> {
        resolve_perm(self, shape)
    }
}

impl Tensor {
    /// Same elements with another shape (a view when contiguous, else a copy). Use
    /// `Infer([a, -1])` to infer one dim.
    pub fn reshape(&self, shape: impl ReshapeArg) -> Result<Tensor> {
        let shape = shape.resolve(self.elem_count(), self.shape())?;
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ElementCount {
                op: "reshape",
                got: self.elem_count(),
                expected: shape.elem_count(),
                shape,
            });
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        match self.layout().reshape(shape.clone()) {
            Some(layout) => Ok(self.view_op(layout, || Box::new(ReshapeBack))),
            None => self.contiguous()?.reshape(shape),
        }
    }

    /// Flattens all dims into one.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(self.elem_count())
    }

    /// Flattens dims `start..=end` into one.
    pub fn flatten(&self, start: impl Dim, end: impl Dim) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(1);
        }
        let s = start.to_index(self.shape(), "flatten")?;
        let e = end.to_index(self.shape(), "flatten")?;
        if s > e {
            return Err(Error::invalid("flatten", format!("start dim {s} is after end dim {e}")));
        }
        let d = self.dims();
        let mut dims = d[..s].to_vec();
        dims.push(d[s..=e].iter().product());
        dims.extend_from_slice(&d[e + 1..]);
        self.reshape(dims)
    }

    /// Swaps two dims (a view).
    pub fn transpose(&self, d0: impl Dim, d1: impl Dim) -> Result<Tensor> {
        let a = d0.to_index(self.shape(), "transpose")?;
        let b = d1.to_index(self.shape(), "transpose")?;
        if a == b {
            return Ok(self.clone());
        }
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        let layout = self.layout().transpose(a, b);
        Ok(self.view_op(layout, || Box::new(PermuteBack(perm))))
    }

    /// Transposes the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid("t", format!("needs at least 2 dims, got shape {:?}", self.shape())));
        }
        self.transpose(-2isize, -1isize)
    }

    /// Reorders dims (a view): output dim i is input dim `perm[i]`.
    pub fn permute(&self, perm: impl PermArg) -> Result<Tensor> {
        let perm = perm.to_perm(self.shape())?;
        let layout = self.layout().permute(&perm);
        Ok(self.view_op(layout, || Box::new(PermuteBack(perm))))
    }

    /// Keeps `len` entries of `dim` from `start` (a view).
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Tensor> {
        let d = dim.to_index(self.shape(), "narrow")?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} is outside dim {d} of size {size} (shape {:?})",
                    start.saturating_add(len),
                    self.shape()
                ),
            ));
        }
        if len == size {
            return Ok(self.clone());
        }
        let layout = self.layout().narrow(d, start, len);
        Ok(self.view_op(layout, || Box::new(NarrowBack { dim: d, start })))
    }

    /// Index `index` of `dim`, removing the dim (a view).
    pub fn select(&self, dim: impl Dim, index: usize) -> Result<Tensor> {
        let d = dim.to_index(self.shape(), "select")?;
        if index >= self.dims()[d] {
            return Err(Error::IndexOutOfRange { op: "select", index: index as i64, dim: d, size: self.dims()[d] });
        }
        self.narrow(d, index, 1)?.squeeze(d)
    }

    /// Broadcasts to `shape` under NumPy rules (a view with zero strides).
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as("broadcast_as", &shape)?;
        Ok(self.view_op(layout, || Box::new(BroadcastBack)))
    }

    /// PyTorch's `expand`: like `broadcast_as`, with `-1` keeping a dim.
    pub fn expand(&self, dims: &[isize]) -> Result<Tensor> {
        let extra = dims.len().checked_sub(self.rank()).ok_or_else(|| {
            Error::invalid("expand", format!("target {dims:?} has fewer dims than shape {:?}", self.shape()))
        })?;
        let shape: Vec<usize> = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| match d {
                -1 if i >= extra => Ok(self.dims()[i - extra]),
                d if d >= 0 => Ok(d as usize),
                _ => Err(Error::invalid("expand", format!("bad target dim {d} at {i} in {dims:?}"))),
            })
            .collect::<Result<_>>()?;
        self.broadcast_as(shape)
    }

    /// Removes a dim of size 1.
    pub fn squeeze(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.to_index(self.shape(), "squeeze")?;
        if self.dims()[d] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "dim {d} has size {} (shape {:?}); only size-1 dims can be squeezed",
                    self.dims()[d],
                    self.shape()
                ),
            ));
        }
        let layout = self.layout().squeeze(d);
        Ok(self.view_op(layout, || Box::new(ReshapeBack)))
    }

    /// Inserts a dim of size 1 at `dim` (`-1` appends).
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.to_index_plus_one(self.shape(), "unsqueeze")?;
        let layout = self.layout().unsqueeze(d);
        Ok(self.view_op(layout, || Box::new(ReshapeBack)))
    }

    /// A contiguous tensor with the same values (self when already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let storage = self.contiguous_copy()?;
        Ok(Tensor::from_op(storage, self.shape().clone(), &[self], || Box::new(IdentityBack)))
    }

    /// A view with an explicit layout over the same storage (advanced; checked against the
    /// storage size). Not differentiable.
    pub fn as_strided(&self, shape: impl Into<Shape>, strides: Vec<usize>, offset: usize) -> Result<Tensor> {
        let shape = shape.into();
        if strides.len() != shape.rank() {
            return Err(Error::invalid("as_strided", format!("{} strides for shape {shape:?}", strides.len())));
        }
        let layout = Layout::new(shape, strides, offset);
        let len = self.storage_len();
        if layout.storage_extent() > len {
            return Err(Error::invalid(
                "as_strided",
                format!("layout {layout:?} reaches past the storage of {len} elements"),
            ));
        }
        Ok(Tensor::from_parts(self.0.storage.clone(), layout, crate::autograd::GradLink::None))
    }

    fn storage_len(&self) -> usize {
        match &*self.storage() {
            crate::storage::Storage::Cpu(s) => s.len(),
            crate::storage::Storage::Gpu(g) => g.len(),
        }
    }
}
