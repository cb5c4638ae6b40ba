//! `Linear`: `y = x W^T + b` with PyTorch's layout (W is `(out, in)`) and initialisation.

use attune_tensor::{Tensor, Var};

use crate::autocast;
use crate::error::{NnError, Result};
use crate::init::Init;
use crate::store::ParamBuilder;

/// A fully connected layer over the last dim.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// Creates `weight (out, in)` with Kaiming-uniform(a = sqrt 5), i.e. `U(±1/sqrt(in))`, and,
    /// with `bias`, `bias (out)` from the same range: `nn.Linear`'s defaults.
    pub fn new(pb: &ParamBuilder, in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(NnError::config(
                "Linear",
                format!("in_features {in_features} and out_features {out_features} must both be positive"),
            ));
        }
        let weight = pb.param("weight", [out_features, in_features], Init::KaimingUniform { a: 5f64.sqrt() })?;
        let bias =
            if bias { Some(pb.param("bias", out_features, Init::FanInUniform { fan_in: in_features })?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// A layer around existing parameters (e.g. tied weights).
    pub fn from_vars(weight: Var, bias: Option<Var>) -> Linear {
        Linear { weight, bias }
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias `(out)`, if any.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// Applies the layer to `x (..., in)`, giving `(..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out_f, in_f) = (self.weight.dims()[0], self.weight.dims()[1]);
        let last = x.dims().last().copied();
        if last != Some(in_f) {
            return Err(NnError::input(
                "Linear",
                format!(
                    "input has shape {:?} but the layer expects a last dim of {in_f} (weight {out_f}x{in_f})",
                    x.shape()
                ),
            ));
        }
        // One gemm over all leading dims: (rows, in) @ (in, out) with W^T read in place.
        let mut out_dims = x.dims().to_vec();
        *out_dims.last_mut().unwrap_or(&mut 0) = out_f;
        let rows: usize = x.dims()[..x.rank() - 1].iter().product();
        let x2 = if x.rank() == 2 { x.clone() } else { x.reshape([rows, in_f])? };
        // Under autocast the products run in its dtype and the result stays in x's (the bias
        // is added in x's dtype, like every other non-matmul op).
        let (wt, compute) = (self.weight.t()?, autocast::dtype_for(x.dtype()));
        let y = match &self.bias {
            Some(b) => x2.matmul_bias(&wt, b, compute)?,
            None => x2.matmul_in(&wt, compute)?,
        };
        Ok(if x.rank() == 2 { y } else { y.reshape(out_dims)? })
    }
}
