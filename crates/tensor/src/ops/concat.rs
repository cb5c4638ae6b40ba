//! Concatenation and zero padding along a dim.

use crate::autograd::GradFn;
use crate::storage::{CpuStorage, Storage};
use crate::{Dim, Error, Layout, Result, Tensor};

struct CatBack {
    dim: usize,
}
impl GradFn for CatBack {
    fn name(&self) -> &str {
        "cat"
    }
    fn backward(&self, inputs: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        inputs
            .iter()
            .map(|t| {
                let len = t.dims()[self.dim];
                let piece = g.narrow(self.dim, start, len)?;
                start += len;
                Ok(t.requires_grad().then_some(piece))
            })
            .collect()
    }
}

impl Tensor {
    /// Concatenates tensors along an existing dim. All other dims, the dtype and the device
    /// must match.
    pub fn cat<T: AsRef<Tensor>>(tensors: &[T], dim: impl Dim) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "needs at least one tensor"))?.as_ref();
        let d = dim.to_index(first.shape(), "cat")?;
        let mut total = 0;
        for t in tensors {
            let t = t.as_ref();
            first.same_dtype_device(t, "cat")?;
            let same_rest =
                t.rank() == first.rank() && (0..first.rank()).all(|i| i == d || t.dims()[i] == first.dims()[i]);
            if !same_rest {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                    hint: format!("all dims except the cat dim {d} must match"),
                });
            }
            total += t.dims()[d];
        }
        let mut dims = first.dims().to_vec();
        dims[d] = total;
        let out_layout = Layout::contiguous(dims.clone());
        let refs: Vec<&Tensor> = tensors.iter().map(|t| t.as_ref()).collect();
        if first.device().is_gpu() {
            let dev = crate::gpu::gpu_device("cat", first.device())?;
            let out = crate::gpu::GpuStorage::alloc("cat", &dev, first.dtype(), out_layout.elem_count())?;
            let mut start = 0;
            for t in &refs {
                let len = t.dims()[d];
                let dst = out_layout.narrow(d, start, len);
                t.with_gpu("cat", |s, l| crate::gpu::copy_into("cat", s, l, &out, &dst))?;
                start += len;
            }
            return Ok(Tensor::from_op(Storage::Gpu(out), dims, &refs, || Box::new(CatBack { dim: d })));
        }
        let mut out = CpuStorage::zeros(first.dtype(), out_layout.elem_count());
        let mut start = 0;
        for t in tensors {
            let t = t.as_ref();
            let len = t.dims()[d];
            let dst = out_layout.narrow(d, start, len);
            t.with_cpu("cat", |s, l| {
                copy_storage(&mut out, &dst, s, l);
                Ok(())
            })?;
            start += len;
        }
        Ok(Tensor::from_op(Storage::Cpu(out), dims, &refs, || Box::new(CatBack { dim: d })))
    }

    /// Pads `dim` with `before` zeros in front and `after` zeros at the end.
    pub fn pad_with_zeros(&self, dim: impl Dim, before: usize, after: usize) -> Result<Tensor> {
        let d = dim.to_index(self.shape(), "pad_with_zeros")?;
        if before == 0 && after == 0 {
            return Ok(self.clone());
        }
        let mut parts = Vec::with_capacity(3);
        let mut zeros_dims = self.dims().to_vec();
        if before > 0 {
            zeros_dims[d] = before;
            parts.push(Tensor::zeros(zeros_dims.clone(), self.dtype(), &self.device())?);
        }
        parts.push(self.clone());
        if after > 0 {
            zeros_dims[d] = after;
            parts.push(Tensor::zeros(zeros_dims, self.dtype(), &self.device())?);
        }
        Tensor::cat(&parts, d)
    }
}

impl AsRef<Tensor> for Tensor {
    fn as_ref(&self) -> &Tensor {
        self
    }
}

/// Copies `src` viewed by `sl` into `dst` at `dl` (same dtype, same shape).
pub(crate) fn copy_storage(dst: &mut CpuStorage, dl: &Layout, src: &CpuStorage, sl: &Layout) {
    use crate::cpu::strided::copy_into;
    match (dst, src) {
        (CpuStorage::U8(d), CpuStorage::U8(s)) => copy_into(d, dl, s, sl),
        (CpuStorage::U32(d), CpuStorage::U32(s)) => copy_into(d, dl, s, sl),
        (CpuStorage::I64(d), CpuStorage::I64(s)) => copy_into(d, dl, s, sl),
        (CpuStorage::F16(d), CpuStorage::F16(s)) => copy_into(d, dl, s, sl),
        (CpuStorage::BF16(d), CpuStorage::BF16(s)) => copy_into(d, dl, s, sl),
        (CpuStorage::F32(d), CpuStorage::F32(s)) => copy_into(d, dl, s, sl),
        (CpuStorage::F64(d), CpuStorage::F64(s)) => copy_into(d, dl, s, sl),
        (d, s) => unreachable!("copy_storage: dtypes checked by the caller ({:?} vs {:?})", d.dtype(), s.dtype()),
    }
}
