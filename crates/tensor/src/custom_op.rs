//! The extension point for ops defined in other crates (fused attention, for one): a forward
//! per device and an optional backward, plugged into the same autograd as built-in ops.

use crate::autograd::{GradFn, GradLink};
use crate::{Device, Error, Result, Tensor};
use std::sync::Arc;

/// An op implemented outside attune-tensor. Forwards receive detached inputs that all live on
/// one device and run without graph recording; outputs are wired into the graph by
/// [`Tensor::apply_custom`].
pub trait CustomOp: Send + Sync {
    /// The op name, used in errors.
    fn name(&self) -> &str;

    /// Forward on the CPU.
    fn cpu_fwd(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;

    /// Forward on a CUDA device. Defaults to a "not available" error.
    fn cuda_fwd(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Err(no_device_impl(self.name(), inputs))
    }

    /// Forward on the CUDA emulator. Defaults to a "not available" error.
    fn emu_fwd(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Err(no_device_impl(self.name(), inputs))
    }

    /// Gradients of the inputs given the gradients of the outputs (`None` for outputs that
    /// received none). The default has no backward: it errors when a gradient is needed.
    fn backward(
        &self,
        _inputs: &[Tensor],
        _outputs: &[Tensor],
        _grad_outputs: &[Option<Tensor>],
    ) -> Result<Vec<Option<Tensor>>> {
        Err(Error::NoBackward { op: self.name().to_string() })
    }
}

fn no_device_impl(name: &str, inputs: &[Tensor]) -> Error {
    let device = inputs.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    Error::Custom {
        op: name.to_string(),
        source: format!("no forward implementation for device {device}; move the inputs to the CPU").into(),
    }
}

/// Gradient of one output of a custom op. Each output has its own node; the gradient of the
/// op is linear in the output gradients, so per-output backward calls sum to the joint one.
struct CustomGrad {
    op: Arc<dyn CustomOp>,
    name: String,
    index: usize,
    outputs: Vec<Tensor>,
}

impl GradFn for CustomGrad {
    fn name(&self) -> &str {
        &self.name
    }
    fn backward(&self, inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut grads = vec![None; self.outputs.len()];
        grads[self.index] = Some(grad.clone());
        let detached: Vec<Tensor> = inputs.iter().map(Tensor::detach).collect();
        self.op.backward(&detached, &self.outputs, &grads)
    }
}

impl Tensor {
    /// Runs a custom op on the inputs' device and records it for autograd.
    pub fn apply_custom(op: Arc<dyn CustomOp>, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let device = inputs.first().map(|t| t.device()).unwrap_or(Device::Cpu);
        for t in inputs {
            if t.device() != device {
                return Err(Error::DeviceMismatch { op: "apply_custom", lhs: device, rhs: t.device() });
            }
        }
        let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
        let outputs = crate::with_no_grad(|| match device {
            Device::Cpu => op.cpu_fwd(&detached),
            Device::Cuda(_) => op.cuda_fwd(&detached),
            Device::Emu => op.emu_fwd(&detached),
        })?;
        let name = op.name().to_string();
        let kept: Vec<Tensor> = outputs.iter().map(Tensor::detach).collect();
        Ok(outputs
            .iter()
            .enumerate()
            .map(|(index, out)| {
                let grad = GradLink::for_op(inputs, || {
                    Box::new(CustomGrad { op: op.clone(), name: name.clone(), index, outputs: kept.clone() })
                });
                Tensor::from_parts(out.0.storage.clone(), out.layout().clone(), grad)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// out0 = x * y, out1 = x + y; backward given by hand.
    struct MulAndAdd {
        with_backward: bool,
    }
    impl CustomOp for MulAndAdd {
        fn name(&self) -> &str {
            "mul_and_add"
        }
        fn cpu_fwd(&self, i: &[Tensor]) -> Result<Vec<Tensor>> {
            Ok(vec![i[0].mul(&i[1])?, i[0].add(&i[1])?])
        }
        fn backward(&self, i: &[Tensor], _o: &[Tensor], g: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
            if !self.with_backward {
                return Err(Error::NoBackward { op: self.name().into() });
            }
            let mut gx = i[0].zeros_like()?;
            let mut gy = i[1].zeros_like()?;
            if let Some(g0) = &g[0] {
                gx = gx.add(&g0.mul(&i[1])?)?;
                gy = gy.add(&g0.mul(&i[0])?)?;
            }
            if let Some(g1) = &g[1] {
                gx = gx.add(g1)?;
                gy = gy.add(g1)?;
            }
            Ok(vec![Some(gx), Some(gy)])
        }
    }

    fn vars() -> (crate::Var, crate::Var) {
        let x = Tensor::from_slice(&[1.0f64, 2.0], [2], &Device::Cpu).unwrap().to_var().unwrap();
        let y = Tensor::from_slice(&[3.0f64, 5.0], [2], &Device::Cpu).unwrap().to_var().unwrap();
        (x, y)
    }

    #[test]
    fn custom_op_gradients_match_the_composed_ops() -> Result<()> {
        let (x, y) = vars();
        let op: Arc<dyn CustomOp> = Arc::new(MulAndAdd { with_backward: true });
        let outs = Tensor::apply_custom(op, &[&x, &y])?;
        let loss = outs[0].sum_all()?.add(&outs[1].mul_scalar(2.0)?.sum_all()?)?;
        let g = loss.backward()?;
        let composed = x.mul(&y)?.sum_all()?.add(&x.add(&y)?.mul_scalar(2.0)?.sum_all()?)?.backward()?;
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>()?, composed.get(&x).unwrap().to_vec::<f64>()?);
        assert_eq!(g.get(&y).unwrap().to_vec::<f64>()?, composed.get(&y).unwrap().to_vec::<f64>()?);
        Ok(())
    }

    #[test]
    fn custom_op_without_backward_errors_only_when_a_gradient_is_needed() -> Result<()> {
        let (x, y) = vars();
        let op: Arc<dyn CustomOp> = Arc::new(MulAndAdd { with_backward: false });
        let outs = Tensor::apply_custom(op.clone(), &[&x, &y])?;
        let e = outs[0].sum_all()?.backward().unwrap_err().to_string();
        assert!(e.contains("mul_and_add") && e.contains("no backward"), "{e}");
        // Without variables no graph is recorded, so no error arises.
        let outs = Tensor::apply_custom(op, &[&x.detach(), &y.detach()])?;
        assert!(!outs[0].requires_grad());
        Ok(())
    }
}
