//! The small layers: `Embedding`, `LayerNorm`, `RmsNorm` (and the `Norm` choice), `Dropout`.

use attune_tensor::{DType, Tensor, Var};

use crate::ctx::Ctx;
use crate::error::{NnError, Result};
use crate::init::Init;
use crate::store::ParamBuilder;

/// A lookup table `weight (num_embeddings, dim)` initialised `N(0, 1)` (`nn.Embedding`).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Var,
}

impl Embedding {
    /// `nn.Embedding`'s initialisation, `N(0, 1)`.
    pub const DEFAULT_INIT: Init = Init::Normal { mean: 0.0, std: 1.0 };

    /// Creates the table under `pb` as `weight`, initialised [`Self::DEFAULT_INIT`].
    pub fn new(pb: &ParamBuilder, num_embeddings: usize, dim: usize) -> Result<Embedding> {
        Self::with_init(pb, num_embeddings, dim, Self::DEFAULT_INIT)
    }

    /// Creates the table under `pb` as `weight`, initialised by `init`.
    pub fn with_init(pb: &ParamBuilder, num_embeddings: usize, dim: usize, init: Init) -> Result<Embedding> {
        if num_embeddings == 0 || dim == 0 {
            return Err(NnError::config(
                "Embedding",
                format!("num_embeddings {num_embeddings} and dim {dim} must both be positive"),
            ));
        }
        Ok(Embedding { weight: pb.param("weight", [num_embeddings, dim], init)? })
    }

    /// The table.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// Rows of the table for integer `ids` (u32 or i64) of any shape: `ids.shape + [dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !matches!(ids.dtype(), DType::U32 | DType::I64 | DType::U8) {
            return Err(NnError::input(
                "Embedding",
                format!("ids must be integers (u32 or i64), got {} with shape {:?}", ids.dtype(), ids.shape()),
            ));
        }
        Ok(self.weight.embedding(ids)?)
    }
}

/// Layer normalisation over the last dim with affine `weight` (ones) and `bias` (zeros).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Var,
    bias: Var,
    eps: f64,
}

impl LayerNorm {
    /// Creates `weight` and `bias` of length `dim`.
    pub fn new(pb: &ParamBuilder, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: pb.param("weight", dim, Init::Ones)?, bias: pb.param("bias", dim, Init::Zeros)?, eps })
    }

    /// Normalises `x (..., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

/// Root-mean-square normalisation over the last dim with a `weight` (ones) and no bias.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Var,
    eps: f64,
}

impl RmsNorm {
    /// Creates `weight` of length `dim`.
    pub fn new(pb: &ParamBuilder, dim: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: pb.param("weight", dim, Init::Ones)?, eps })
    }

    /// Normalises `x (..., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.rms_norm(Some(&self.weight), self.eps)?)
    }
}

/// Which normalisation a block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// [`LayerNorm`].
    #[default]
    LayerNorm,
    /// [`RmsNorm`].
    RmsNorm,
}

/// A normalisation layer of either kind.
#[derive(Debug, Clone)]
pub enum Norm {
    /// Layer norm.
    Layer(LayerNorm),
    /// RMS norm.
    Rms(RmsNorm),
}

impl Norm {
    /// Creates a norm of `kind` over `dim` with eps 1e-5.
    pub fn new(pb: &ParamBuilder, kind: NormKind, dim: usize) -> Result<Norm> {
        Ok(match kind {
            NormKind::LayerNorm => Norm::Layer(LayerNorm::new(pb, dim, 1e-5)?),
            NormKind::RmsNorm => Norm::Rms(RmsNorm::new(pb, dim, 1e-5)?),
        })
    }

    /// Normalises `x (..., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Layer(n) => n.forward(x),
            Norm::Rms(n) => n.forward(x),
        }
    }
}

/// Inverted dropout with probability `p`, active only in training mode.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    /// A dropout layer; `p` must be in `[0, 1)`.
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::config("Dropout", format!("p = {p} must be in [0, 1)")));
        }
        Ok(Dropout { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// `x` with elements dropped and the rest scaled by `1/(1-p)` in training, `x` in eval.
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(x.dropout(self.p, ctx.train, &mut ctx.rng)?)
    }
}
