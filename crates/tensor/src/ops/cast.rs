//! dtype conversion.

use crate::autograd::GradFn;
use crate::storage::Storage;
use crate::{DType, Result, Tensor};

struct ToDTypeBack(DType);
impl GradFn for ToDTypeBack {
    fn name(&self) -> &str {
        "to_dtype"
    }
    fn backward(&self, _i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.0)?)])
    }
}

impl Tensor {
    /// Converts to `dtype` (a no-op returning self when equal). Float to integer truncates
    /// toward zero and saturates. Differentiable between float dtypes.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(s.to_dtype(self.layout(), dtype)),
            Storage::Gpu(g) => Storage::Gpu(crate::gpu::cast("to_dtype", g, self.layout(), dtype)?),
        };
        let src = self.dtype();
        let inputs: &[&Tensor] = if src.is_float() && dtype.is_float() { &[self] } else { &[] };
        Ok(Tensor::from_op(out, self.shape().clone(), inputs, || Box::new(ToDTypeBack(src))))
    }
}
