//! Reductions over any set of dims, with `keepdim`.

use crate::autograd::GradFn;
use crate::cpu::reduce::{reduce_layout, sum_piece};
use crate::storage::{CpuStorage, Storage};
use crate::{Dims, Error, Result, Shape, Tensor};

/// The output shape of a reduction over `rdims`.
pub(crate) fn reduced_shape(shape: &Shape, rdims: &[usize], keepdim: bool) -> Shape {
    let mut out = Vec::with_capacity(shape.rank());
    for (i, &d) in shape.dims().iter().enumerate() {
        if rdims.contains(&i) {
            if keepdim {
                out.push(1);
            }
        } else {
            out.push(d);
        }
    }
    out.into()
}

struct SumBack {
    rdims: Vec<usize>,
    keepdim: bool,
}
impl GradFn for SumBack {
    fn name(&self) -> &str {
        "sum"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = if self.keepdim { g.clone() } else { g.reshape(reduced_shape(i[0].shape(), &self.rdims, true))? };
        Ok(vec![Some(g.broadcast_as(i[0].shape())?.contiguous()?)])
    }
}

fn sum_cpu(s: &CpuStorage, l: &crate::Layout, rdims: &[usize]) -> CpuStorage {
    use half::{bf16, f16};
    let init = || 0f64;
    match s {
        CpuStorage::F32(v) => CpuStorage::F32(reduce_layout(
            l,
            rdims,
            init,
            |a, o, n, st| a + sum_piece(v, o, n, st, |x| x as f64),
            |a| a as f32,
        )),
        CpuStorage::F64(v) => {
            CpuStorage::F64(reduce_layout(l, rdims, init, |a, o, n, st| a + sum_piece(v, o, n, st, |x| x), |a| a))
        }
        CpuStorage::F16(v) => CpuStorage::F16(reduce_layout(
            l,
            rdims,
            init,
            |a, o, n, st| a + sum_piece(v, o, n, st, |x| x.to_f64()),
            f16::from_f64,
        )),
        CpuStorage::BF16(v) => CpuStorage::BF16(reduce_layout(
            l,
            rdims,
            init,
            |a, o, n, st| a + sum_piece(v, o, n, st, |x| x.to_f64()),
            bf16::from_f64,
        )),
        CpuStorage::I64(v) => CpuStorage::I64(reduce_layout(
            l,
            rdims,
            || 0i64,
            |a, o, n, st| (0..n).fold(a, |a, i| a.wrapping_add(v[o + i * st])),
            |a| a,
        )),
        CpuStorage::U32(v) => CpuStorage::U32(reduce_layout(
            l,
            rdims,
            || 0u32,
            |a, o, n, st| (0..n).fold(a, |a, i| a.wrapping_add(v[o + i * st])),
            |a| a,
        )),
        CpuStorage::U8(v) => CpuStorage::U8(reduce_layout(
            l,
            rdims,
            || 0u8,
            |a, o, n, st| (0..n).fold(a, |a, i| a.wrapping_add(v[o + i * st])),
            |a| a,
        )),
    }
}

impl Tensor {
    /// Sum over `dims`; `keepdim` keeps them as size 1. Floats accumulate in f64.
    pub fn sum(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), "sum")?;
        let out = self.with_cpu("sum", |s, l| Ok(sum_cpu(s, l, &rdims)))?;
        let shape = reduced_shape(self.shape(), &rdims, keepdim);
        Ok(Tensor::from_op(Storage::Cpu(out), shape, &[self], || Box::new(SumBack { rdims, keepdim })))
    }

    /// Sum of all elements (rank 0).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(crate::AllDims, false)
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let rdims = dims.to_indexes(self.shape(), "mean")?;
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "mean",
                dtype: self.dtype(),
                hint: "convert to a float dtype first",
            });
        }
        let count: usize = rdims.iter().map(|&d| self.dims()[d]).product();
        self.sum(rdims, keepdim)?.div_scalar(count as f64)
    }

    /// Mean of all elements (rank 0).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(crate::AllDims, false)
    }

    /// Sums broadcast dims away so the result has `shape` (the adjoint of `broadcast_as`).
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self.rank().checked_sub(shape.rank()).ok_or_else(|| Error::NotBroadcastable {
            op: "sum_to",
            lhs: self.shape().clone(),
            rhs: shape.clone(),
        })?;
        let mut rdims: Vec<usize> = (0..extra).collect();
        for (i, &d) in shape.dims().iter().enumerate() {
            let src = self.dims()[i + extra];
            if d == 1 && src != 1 {
                rdims.push(i + extra);
            } else if d != src {
                return Err(Error::NotBroadcastable { op: "sum_to", lhs: self.shape().clone(), rhs: shape.clone() });
            }
        }
        self.sum(rdims, true)?.reshape(shape.clone())
    }
}
