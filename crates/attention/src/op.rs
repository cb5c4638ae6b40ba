//! The differentiable Tensor-level attention op: plugs the fused kernels into
//! attune-tensor's autograd through its `CustomOp` extension point, dispatching per device.

use crate::error::{AttentionError, Result};
use crate::flash::{self, AttentionOutput};
use crate::gpu;
use crate::oracle;
use crate::params::{AttentionParams, validate};
use attune_tensor::{CustomOp, DType, Tensor};
use std::sync::Arc;

struct AttentionOp {
    params: AttentionParams,
}

impl AttentionOp {
    /// The CUDA kernels (on a GPU or the emulator): the dispatcher picks one by dtype, arch
    /// and shape.
    fn gpu_fwd(&self, inputs: &[Tensor]) -> attune_tensor::Result<Vec<Tensor>> {
        let o = gpu::forward(&inputs[0], &inputs[1], &inputs[2], &self.params)?;
        Ok(vec![o.out, o.lse])
    }
}

impl CustomOp for AttentionOp {
    fn name(&self) -> &str {
        "attention"
    }

    fn cpu_fwd(&self, inputs: &[Tensor]) -> attune_tensor::Result<Vec<Tensor>> {
        if inputs[0].dtype() == DType::F64 {
            // f64 is the dtype of references and gradient checks: the flash kernels compute
            // it in f32, so f64 goes to the exact oracle instead.
            let o = oracle::forward(&inputs[0], &inputs[1], &inputs[2], &self.params)?;
            return Ok(vec![o.out, o.lse.to_dtype(DType::F32)?]);
        }
        let o = flash::forward(&inputs[0], &inputs[1], &inputs[2], &self.params)?;
        Ok(vec![o.out, o.lse])
    }

    fn cuda_fwd(&self, inputs: &[Tensor]) -> attune_tensor::Result<Vec<Tensor>> {
        self.gpu_fwd(inputs)
    }

    fn emu_fwd(&self, inputs: &[Tensor]) -> attune_tensor::Result<Vec<Tensor>> {
        self.gpu_fwd(inputs)
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        outputs: &[Tensor],
        grad_outputs: &[Option<Tensor>],
    ) -> attune_tensor::Result<Vec<Option<Tensor>>> {
        if grad_outputs.get(1).is_some_and(Option::is_some) {
            return Err(AttentionError::Param(
                "a gradient through lse is not supported; use lse only detached (e.g. for logging or combining splits)"
                    .into(),
            )
            .into());
        }
        let Some(dout) = grad_outputs.first().and_then(Option::as_ref) else {
            return Ok(vec![None, None, None]);
        };
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        if q.dtype() == DType::F64 {
            let g = oracle::backward(q, k, v, dout, &self.params)?;
            return Ok(vec![Some(g.dq), Some(g.dk), Some(g.dv)]);
        }
        let g = if q.device().is_cpu() {
            flash::backward(q, k, v, &outputs[0], &outputs[1], dout, &self.params)?
        } else {
            gpu::backward(q, k, v, &outputs[0], &outputs[1], dout, &self.params)?
        };
        Ok(vec![Some(g.dq), Some(g.dk), Some(g.dv)])
    }
}

/// Fused attention on the inputs' device (GUIDE.md §2 semantics), differentiable with
/// respect to q, k and v. Returns `out` (input dtype) and `lse` (f32; not differentiable).
/// On the CPU, f32/f16/bf16 run the flash kernels and f64 runs the exact f64 oracle (the
/// dtype of references and finite-difference checks). On `Cuda` and `Emu` the CUDA kernels run
/// (f32/f16/bf16; see [`crate::gpu`]).
///
/// q is `(batch, heads_q, seq_q, head_dim)`, k and v `(batch, heads_kv, seq_k, head_dim)`,
/// any strides with a unit stride on head_dim.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, params: &AttentionParams) -> Result<AttentionOutput> {
    validate(q, k, v, params)?;
    let op: Arc<dyn CustomOp> = Arc::new(AttentionOp { params: params.clone() });
    let mut outs = Tensor::apply_custom(op, &[q, k, v])?.into_iter();
    match (outs.next(), outs.next()) {
        (Some(out), Some(lse)) => Ok(AttentionOutput { out, lse }),
        _ => Err(AttentionError::Param("internal error: the attention op returned fewer than 2 outputs".into())),
    }
}
