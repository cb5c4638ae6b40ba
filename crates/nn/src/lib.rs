//! attune-nn: modules, losses, initialisers and safetensors checkpoints.
//!
//! - Parameters live in a [`ParamStore`] under dotted PyTorch names
//!   (`layers.0.attn.q_proj.weight`); modules create them through a [`ParamBuilder`] whose
//!   seeded stream makes initialisation reproducible ([`Init`] has PyTorch's definitions).
//! - Layers: [`Linear`], [`Embedding`], [`LayerNorm`], [`RmsNorm`], [`Dropout`],
//!   [`MultiHeadAttention`] (GQA, causal/window/softcap, RoPE or ALiBi, probabilities on
//!   request), [`TransformerBlock`] (pre-norm, GELU MLP or SwiGLU), [`TransformerStack`]
//!   (encoder / decoder, optional cross-attention), [`AttentionPooling`], its sampling
//!   counterpart [`HardAttentionPooling`] (hard attention over tokens) and the RAM's
//!   [`GlimpseSensor`]; the Vision Transformer's [`PatchEmbedding`] of a [`PatchSpec`].
//! - [`reinforce`]: the Gaussian location policy's log-probability and the REINFORCE and
//!   baseline losses of hard attention (docs/ram.md).
//! - [`ram`]: the Recurrent Attention Model ([`RecurrentAttentionModel`]) and its hybrid
//!   loss of cross-entropy and REINFORCE with a baseline ([`ram_loss`]).
//! - [`Model`]: the language model and classifier the lab trains, from a [`ModelConfig`].
//! - Train/eval mode and the dropout stream travel in a [`Ctx`].
//! - [`autocast`]: bf16/f16 matrix multiplies and attention over f32 parameters, while an
//!   [`Autocast`] guard is alive.
//! - [`checkpoint`]: atomic safetensors save, load with a missing/unexpected/mis-shaped report.

pub mod autocast;
pub mod checkpoint;
mod ctx;
mod error;
mod hybrid_loss;
pub mod init;
pub mod layers;
pub mod loss;
mod model;
pub mod ram;
pub mod reinforce;
mod store;

pub use autocast::Autocast;
pub use checkpoint::{LoadOptions, LoadReport};
pub use ctx::Ctx;
pub use error::{NnError, Result};
pub use hybrid_loss::{HybridLoss, hybrid_loss};
pub use init::Init;
pub use layers::attention::{AttentionConfig, Memory, MultiHeadAttention};
pub use layers::basic::{Dropout, Embedding, LayerNorm, Norm, NormKind, RmsNorm};
pub use layers::block::{BlockConfig, TransformerBlock, TransformerStack};
pub use layers::glimpse::GlimpseSensor;
pub use layers::hard_pooling::{HardAttentionPooling, HardPooled};
pub use layers::linear::Linear;
pub use layers::mlp::{Mlp, MlpKind};
pub use layers::patches::{PatchEmbedding, PatchSpec};
pub use layers::pooling::AttentionPooling;
pub use layers::positions::{Positions, Rope};
pub use layers::stem::{ConvStem, StemConv, parse_list as parse_stem};
pub use model::{Inspection, Model, ModelConfig, ModelKind, PoolingKind, PoolingPolicy};
pub use ram::{GlimpsePolicy, RamConfig, RamMode, RamOutput, RecurrentAttentionModel, RnnCell, ram_loss};
pub use store::{ParamBuilder, ParamStore};
