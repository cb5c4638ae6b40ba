//! The differentiable Tensor-level attention op: plugs the fused kernels into
//! attune-tensor's autograd through its `CustomOp` extension point, dispatching per device.

use crate::error::{AttentionError, Result};
use crate::flash::{self, AttentionOutput};
use crate::gpu;
use crate::oracle;
use crate::params::{AttentionParams, validate};
use attune_tensor::{CustomOp, DType, Tensor, is_grad_enabled};
use std::sync::Arc;

struct AttentionOp {
    params: AttentionParams,
    /// Keep the unrounded f32 output of f16/bf16 inputs as a third output, for the backward's
    /// `D = rowsum(dO * O)` (set when a gradient will be needed; the reason is on
    /// `flash::forward_saving_f32`).
    keep_f32: bool,
}

/// The op's outputs: out and lse, then the f32 output when one was kept.
fn outputs((o, out_f32): (AttentionOutput, Option<Tensor>)) -> Vec<Tensor> {
    let mut v = vec![o.out, o.lse];
    v.extend(out_f32);
    v
}

impl AttentionOp {
    /// The CUDA kernels (on a GPU or the emulator): the dispatcher picks one by dtype, arch
    /// and shape.
    fn gpu_fwd(&self, inputs: &[Tensor]) -> attune_tensor::Result<Vec<Tensor>> {
        Ok(outputs(gpu::forward_saving_f32(&inputs[0], &inputs[1], &inputs[2], &self.params, self.keep_f32)?))
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
        Ok(outputs(flash::forward_saving_f32(&inputs[0], &inputs[1], &inputs[2], &self.params, self.keep_f32)?))
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
        if grad_outputs.iter().skip(1).any(Option::is_some) {
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
        let out = outputs.get(2).unwrap_or(&outputs[0]);
        let g = if q.device().is_cpu() {
            flash::backward(q, k, v, out, &outputs[1], dout, &self.params)?
        } else {
            gpu::backward(q, k, v, out, &outputs[1], dout, &self.params)?
        };
        Ok(vec![Some(g.dq), Some(g.dk), Some(g.dv)])
    }
}

/// Fused attention on the inputs' device (docs/attention.md semantics), differentiable with
/// respect to q, k and v. Returns `out` (input dtype) and `lse` (f32; not differentiable).
/// On the CPU, f32/f16/bf16 run the flash kernels and f64 runs the exact f64 oracle (the
/// dtype of references and finite-difference checks). On `Cuda` and `Emu` the CUDA kernels run
/// (f32/f16/bf16; see [`crate::gpu`]).
///
/// When a gradient will be needed (grad mode on and q, k or v requiring one) and the inputs
/// are f16/bf16, the forward also keeps its output in f32 inside the graph (4 bytes per output
/// element until the backward) so that the backward's `rowsum(dO * O)` carries no rounding of
/// the output.
///
/// q is `(batch, heads_q, seq_q, head_dim)`, k and v `(batch, heads_kv, seq_k, head_dim)`,
/// any strides with a unit stride on head_dim.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, params: &AttentionParams) -> Result<AttentionOutput> {
    validate(q, k, v, params)?;
    let needs_grad = is_grad_enabled() && [q, k, v].iter().any(|t| t.requires_grad());
    let keep_f32 = needs_grad && matches!(q.dtype(), DType::F16 | DType::BF16);
    let op: Arc<dyn CustomOp> = Arc::new(AttentionOp { params: params.clone(), keep_f32 });
    let mut outs = Tensor::apply_custom(op, &[q, k, v])?.into_iter();
    match (outs.next(), outs.next()) {
        // The f32 output stays inside the graph: only the backward reads it.
        (Some(out), Some(lse)) => Ok(AttentionOutput { out, lse }),
        _ => Err(AttentionError::Param("internal error: the attention op returned fewer than 2 outputs".into())),
    }
}
