//! The two model families the lab trains, described by a serialisable [`ModelConfig`] whose
//! parameter names and forward pass match the PyTorch peer (benches/peers/torch_train.py):
//! - `lm`: token (+ learned position) embeddings, a decoder stack, a final norm, `lm_head`;
//! - `classifier`: the same front end, an encoder stack over padded byte sequences,
//!   [`AttentionPooling`] (or, with `pooling = "hard"`, [`HardAttentionPooling`] trained by
//!   REINFORCE; `cls`, a class token; `mean`) and a linear `head`.
//!
//! Two variations make the other attention models of docs/model.md:
//! - `patches` set: a Vision Transformer. The input is images `(batch, rows, cols)`, cut into
//!   patches and embedded by [`PatchEmbedding`] instead of looked up in a token table;
//!   `max_seq_len` is the patch count.
//! - `tie_embeddings`: the LM head scores with the token table itself (no bias), as SASRec
//!   scores items with the item embeddings.

use attune_tensor::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::ctx::Ctx;
use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layers::attention::AttentionConfig;
use crate::layers::basic::{Embedding, Norm, NormKind};
use crate::layers::block::{BlockConfig, TransformerStack};
use crate::layers::hard_pooling::HardAttentionPooling;
use crate::layers::linear::Linear;
use crate::layers::mlp::MlpKind;
use crate::layers::patches::{PatchEmbedding, PatchSpec};
use crate::layers::pooling::AttentionPooling;
use crate::layers::positions::Positions;
use crate::layers::stem::StemConv;
use crate::store::{ParamBuilder, ParamStore};

/// Which head sits on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Next-token logits at every position.
    #[default]
    Lm,
    /// One label per sequence via attention pooling.
    Classifier,
}

fn default_theta() -> f64 {
    10_000.0
}

fn default_pool_k() -> usize {
    8
}

/// How a classifier pools its token vectors into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolingKind {
    /// [`AttentionPooling`]: the attention-weighted mean of every token.
    #[default]
    Soft,
    /// [`HardAttentionPooling`]: the mean of `pool_k` positions sampled from the same attention
    /// distribution in training (the `pool_k` most probable in evaluation); the scorer learns
    /// by REINFORCE from the reward of a right answer (docs/ram.md, "Hard attention over tokens").
    Hard,
    /// A learned class token `cls` prepended to the sequence; its final vector is pooled (ViT).
    Cls,
    /// The plain mean of the (valid) token vectors.
    Mean,
}

/// The architecture (the "model" object of a run's config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `lm` or `classifier`.
    #[serde(default)]
    pub kind: ModelKind,
    /// Token vocabulary.
    pub vocab_size: usize,
    /// Longest sequence (learned positions and RoPE tables).
    pub max_seq_len: usize,
    /// Width.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Feed-forward kind.
    #[serde(default)]
    pub mlp: MlpKind,
    /// Normalisation kind.
    #[serde(default)]
    pub norm: NormKind,
    /// Position scheme.
    #[serde(default)]
    pub positions: Positions,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Causal self-attention (language models).
    pub causal: bool,
    /// Sliding window `[left, right]`, -1 unbounded.
    #[serde(default)]
    pub window: Option<[i64; 2]>,
    /// Attention softcap.
    #[serde(default)]
    pub softcap: Option<f64>,
    /// Classes of a classifier.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// A classifier's pooling: `soft` or `hard`.
    #[serde(default)]
    pub pooling: PoolingKind,
    /// Positions a `hard` pooling draws per sequence.
    #[serde(default = "default_pool_k")]
    pub pool_k: usize,
    /// Dropout on attention probabilities and residual branches in training.
    #[serde(default)]
    pub dropout: f64,
    /// A Vision Transformer's patches: the input is images, not token ids.
    #[serde(default)]
    pub patches: Option<PatchSpec>,
    /// A Vision Transformer's convolutional stem before its patches (empty: none).
    #[serde(default)]
    pub stem: Vec<StemConv>,
    /// The LM head is the token table, transposed, without a bias (SASRec's shared item
    /// embeddings); the tables then start at `N(0, 1/d_model)` so the first scores are O(1).
    #[serde(default)]
    pub tie_embeddings: bool,
}

impl ModelConfig {
    /// The feed-forward width when a config leaves it out: `4 d_model` (the one place this
    /// default is stated; the lab's run config and `attune bench-step` call it).
    pub const fn default_d_ff(d_model: usize) -> usize {
        4 * d_model
    }

    /// The key/value heads when a config leaves them out: `n_heads` (no GQA).
    pub const fn default_n_kv_heads(n_heads: usize) -> usize {
        n_heads
    }

    /// A causal language model with PyTorch-like defaults: [`default_n_kv_heads`](Self::default_n_kv_heads),
    /// [`default_d_ff`](Self::default_d_ff), GELU MLP, LayerNorm, learned positions, no dropout.
    pub fn lm(vocab_size: usize, max_seq_len: usize, d_model: usize, n_layers: usize, n_heads: usize) -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Lm,
            vocab_size,
            max_seq_len,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads: Self::default_n_kv_heads(n_heads),
            d_ff: Self::default_d_ff(d_model),
            mlp: MlpKind::Gelu,
            norm: NormKind::LayerNorm,
            positions: Positions::Learned,
            rope_theta: default_theta(),
            causal: true,
            window: None,
            softcap: None,
            num_classes: None,
            pooling: PoolingKind::Soft,
            pool_k: default_pool_k(),
            dropout: 0.0,
            patches: None,
            stem: Vec::new(),
            tie_embeddings: false,
        }
    }

    /// A Vision Transformer classifier over images cut by `patches`, with a class token.
    pub fn vit(patches: PatchSpec, d_model: usize, n_layers: usize, n_heads: usize, num_classes: usize) -> ModelConfig {
        ModelConfig {
            patches: Some(patches),
            pooling: PoolingKind::Cls,
            ..ModelConfig::classifier(1, patches.count(), d_model, n_layers, n_heads, num_classes)
        }
    }

    /// Positions the stack sees: the input's, plus the class token's.
    pub fn positions_with_cls(&self) -> usize {
        self.max_seq_len + usize::from(self.has_cls())
    }

    /// Whether a class token is prepended.
    pub fn has_cls(&self) -> bool {
        self.kind == ModelKind::Classifier && self.pooling == PoolingKind::Cls
    }

    /// A bidirectional classifier over `num_classes` labels.
    pub fn classifier(
        vocab_size: usize,
        max_seq_len: usize,
        d_model: usize,
        n_layers: usize,
        n_heads: usize,
        num_classes: usize,
    ) -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Classifier,
            causal: false,
            num_classes: Some(num_classes),
            ..ModelConfig::lm(vocab_size, max_seq_len, d_model, n_layers, n_heads)
        }
    }

    fn block(&self) -> BlockConfig {
        BlockConfig {
            attn: AttentionConfig {
                d_model: self.d_model,
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
                causal: self.causal,
                window: self.window.map(|[l, r]| (l, r)),
                softcap: self.softcap,
                positions: self.positions,
                rope_theta: self.rope_theta,
                max_seq_len: self.positions_with_cls(),
                dropout: self.dropout,
                bias: true,
            },
            mlp: self.mlp,
            d_ff: self.d_ff,
            norm: self.norm,
            dropout: self.dropout,
            cross_attention: false,
        }
    }
}

enum Pool {
    Soft(AttentionPooling),
    /// The class token's final vector (position 0).
    Cls,
    /// The mean over valid positions.
    Mean,
    /// The hard pooling and its baseline, a linear map of the attention-weighted mean of the
    /// (detached) tokens: a function of the sequence, never of the positions drawn, so it
    /// leaves the REINFORCE estimate unbiased.
    Hard {
        pool: HardAttentionPooling,
        baseline: Linear,
    },
}

enum Head {
    Lm(Linear),
    Classifier { pool: Pool, head: Linear },
}

/// What a hard-pooling classifier's training pass sampled: the inputs of REINFORCE
/// ([`crate::hybrid_loss`]).
#[derive(Debug, Clone)]
pub struct PoolingPolicy {
    /// `log p` of the positions drawn, `(batch, 1)`: one choice of `pool_k` positions.
    pub log_prob: Tensor,
    /// The baseline's reward prediction, `(batch, 1)`; trains the baseline only.
    pub baseline: Tensor,
}

/// How inputs become vectors.
enum Input {
    /// Token ids looked up in `embed`.
    Tokens(Embedding),
    /// Images cut into patches and embedded by `patch_embed`.
    Patches(PatchEmbedding),
}

/// A model built from a [`ModelConfig`], owning its [`ParamStore`].
pub struct Model {
    cfg: ModelConfig,
    store: ParamStore,
    input: Input,
    cls: Option<Var>,
    pos: Option<Embedding>,
    stack: TransformerStack,
    norm_f: Norm,
    head: Head,
}

/// Logits plus what a model can show about itself.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `(batch, seq, vocab)` for `lm`, `(batch, classes)` for `classifier`.
    pub logits: Tensor,
    /// Self-attention probabilities of each layer, `(batch, heads, seq, seq)`.
    pub attention: Vec<Tensor>,
    /// The classifier's pooling weights `(batch, seq)` (`soft`, `hard`, `mean`).
    pub pooling: Option<Tensor>,
    /// Whether position 0 of `attention` is a class token before the input's positions.
    pub cls: bool,
}

impl Model {
    /// Builds the model with parameters drawn from `seed`.
    pub fn new(cfg: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> Result<Model> {
        if cfg.kind == ModelKind::Classifier && cfg.num_classes.unwrap_or(0) < 2 {
            return Err(NnError::config(
                "Model",
                format!("a classifier needs num_classes >= 2, got {:?}", cfg.num_classes),
            ));
        }
        if cfg.max_seq_len == 0 || cfg.n_layers == 0 {
            return Err(NnError::config(
                "Model",
                format!("max_seq_len {} and n_layers {} must be positive", cfg.max_seq_len, cfg.n_layers),
            ));
        }
        if cfg.kind == ModelKind::Lm && (cfg.patches.is_some() || matches!(cfg.pooling, PoolingKind::Cls)) {
            return Err(NnError::config(
                "Model",
                "patches and class tokens belong to classifiers; an lm reads token ids".to_string(),
            ));
        }
        if cfg.tie_embeddings && (cfg.kind != ModelKind::Lm || cfg.patches.is_some()) {
            return Err(NnError::config(
                "Model",
                "tie_embeddings shares the token table with an lm head; this model has no such pair".to_string(),
            ));
        }
        if let Some(p) = &cfg.patches
            && p.count() != cfg.max_seq_len
        {
            return Err(NnError::config(
                "Model",
                format!("max_seq_len {} must equal the patch count {} of {p:?}", cfg.max_seq_len, p.count()),
            ));
        }
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, seed, dtype, device);
        // Tied tables score items by dot products: unit-variance rows would start the logits
        // at a standard deviation of sqrt(d_model).
        let table_init = if cfg.tie_embeddings {
            Init::Normal { mean: 0.0, std: 1.0 / (cfg.d_model as f64).sqrt() }
        } else {
            Embedding::DEFAULT_INIT
        };
        let input = match &cfg.patches {
            Some(spec) => Input::Patches(PatchEmbedding::new(&pb.sub("patch_embed"), *spec, &cfg.stem, cfg.d_model)?),
            None => Input::Tokens(Embedding::with_init(&pb.sub("embed"), cfg.vocab_size, cfg.d_model, table_init)?),
        };
        let cls = if cfg.has_cls() {
            Some(pb.param("cls", [1, 1, cfg.d_model], Init::Normal { mean: 0.0, std: 0.02 })?)
        } else {
            None
        };
        let pos = match cfg.positions {
            Positions::Learned => {
                Some(Embedding::with_init(&pb.sub("pos"), cfg.positions_with_cls(), cfg.d_model, table_init)?)
            }
            _ => None,
        };
        let stack = TransformerStack::build(&pb, cfg.n_layers, &cfg.block())?;
        let norm_f = Norm::new(&pb.sub("norm_f"), cfg.norm, cfg.d_model)?;
        let head = match cfg.kind {
            ModelKind::Lm => Head::Lm(match &input {
                Input::Tokens(table) if cfg.tie_embeddings => Linear::from_vars(table.weight().clone(), None),
                _ => Linear::new(&pb.sub("lm_head"), cfg.d_model, cfg.vocab_size, true)?,
            }),
            ModelKind::Classifier => Head::Classifier {
                pool: match cfg.pooling {
                    PoolingKind::Soft => Pool::Soft(AttentionPooling::new(&pb.sub("pool"), cfg.d_model)?),
                    PoolingKind::Hard => Pool::Hard {
                        pool: HardAttentionPooling::new(&pb.sub("pool"), cfg.d_model, cfg.pool_k)?,
                        baseline: Linear::new(&pb.sub("pool_baseline"), cfg.d_model, 1, true)?,
                    },
                    PoolingKind::Cls => Pool::Cls,
                    PoolingKind::Mean => Pool::Mean,
                },
                head: Linear::new(&pb.sub("head"), cfg.d_model, cfg.num_classes.unwrap_or(2), true)?,
            },
        };
        Ok(Model { cfg: cfg.clone(), store, input, cls, pos, stack, norm_f, head })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Every parameter by name.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The input's vectors `(batch, seq, d_model)` with the class token in front and the
    /// learned positions added, and the lengths the stack masks with (one more with a class
    /// token).
    fn embed(&self, input: &Tensor, lengths: Option<&[usize]>) -> Result<(Tensor, Option<Vec<usize>>)> {
        let mut x = match &self.input {
            Input::Tokens(table) => {
                if input.rank() != 2 {
                    return Err(NnError::input(
                        "Model",
                        format!("tokens must be (batch, seq), got {:?}", input.shape()),
                    ));
                }
                table.forward(input)?
            }
            Input::Patches(patches) => {
                if lengths.is_some() {
                    return Err(NnError::input("Model", "images have no lengths; pass None".to_string()));
                }
                patches.forward(input)?
            }
        };
        let (b, s) = (x.dims()[0], x.dims()[1]);
        if s > self.cfg.max_seq_len {
            return Err(NnError::input(
                "Model",
                format!("sequence length {s} exceeds max_seq_len {}; raise max_seq_len", self.cfg.max_seq_len),
            ));
        }
        if let Some(l) = lengths
            && l.len() != b
        {
            return Err(NnError::input("Model", format!("{} lengths for a batch of {b}", l.len())));
        }
        let mut lengths = lengths.map(<[usize]>::to_vec);
        if let Some(cls) = &self.cls {
            let d = self.cfg.d_model;
            x = Tensor::cat(&[cls.broadcast_as([b, 1, d])?.contiguous()?, x], 1usize)?;
            lengths = lengths.map(|l| l.iter().map(|n| n + 1).collect());
        }
        if let Some(pos) = &self.pos {
            x = x.add(&pos.weight().narrow(0usize, 0, x.dims()[1])?)?;
        }
        Ok((x, lengths))
    }

    /// Logits for `input`: token ids `(batch, seq)`, or images `(batch, rows, cols)` for a
    /// model with `patches`; `lengths` marks the valid prefix of each sequence (classifier).
    pub fn forward(&self, input: &Tensor, lengths: Option<&[usize]>, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.forward_policy(input, lengths, ctx)?.0)
    }

    /// [`forward`](Self::forward), plus what a hard pooling sampled in a training pass
    /// (`ctx.train`, positions drawn from `ctx.rng`); `None` for every other model and pass.
    pub fn forward_policy(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<PoolingPolicy>)> {
        let (x, lengths) = self.embed(input, lengths)?;
        let h = self.norm_f.forward(&self.stack.forward(&x, lengths.as_deref(), None, ctx)?)?;
        let (logits, _, policy) = self.head(&h, lengths.as_deref(), ctx)?;
        Ok((logits, policy))
    }

    /// Logits plus every layer's attention probabilities and the pooling weights; materialises
    /// the scores, so keep inputs small.
    pub fn inspect(&self, input: &Tensor, lengths: Option<&[usize]>, ctx: &mut Ctx) -> Result<Inspection> {
        let (x, lengths) = self.embed(input, lengths)?;
        let (h, attention) = self.stack.forward_with_probs(&x, lengths.as_deref(), None, ctx)?;
        let (logits, pooling, _) = self.head(&self.norm_f.forward(&h)?, lengths.as_deref(), ctx)?;
        Ok(Inspection { logits, attention, pooling, cls: self.cls.is_some() })
    }

    /// Logits, the pooling weights (classifiers) and a hard pooling's policy (training).
    fn head(
        &self,
        h: &Tensor,
        lengths: Option<&[usize]>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>, Option<PoolingPolicy>)> {
        match &self.head {
            Head::Lm(lm) => Ok((lm.forward(h)?, None, None)),
            Head::Classifier { pool: Pool::Soft(pool), head } => {
                let (pooled, w) = pool.forward(h, lengths)?;
                Ok((head.forward(&pooled)?, Some(w), None))
            }
            Head::Classifier { pool: Pool::Cls, head } => {
                Ok((head.forward(&h.narrow(1usize, 0, 1)?.squeeze(1usize)?)?, None, None))
            }
            Head::Classifier { pool: Pool::Mean, head } => {
                let w = mean_weights(h, lengths)?;
                let pooled = w.unsqueeze(1usize)?.matmul(h)?.squeeze(1usize)?;
                Ok((head.forward(&pooled)?, Some(w), None))
            }
            Head::Classifier { pool: Pool::Hard { pool, baseline }, head } => {
                let chosen = if ctx.train { pool.sample(h, lengths, &mut ctx.rng)? } else { pool.greedy(h, lengths)? };
                let logits = head.forward(&chosen.pooled)?;
                let policy = if ctx.train {
                    let state = chosen.weights.detach().unsqueeze(1usize)?.matmul(&h.detach())?.squeeze(1usize)?;
                    Some(PoolingPolicy {
                        log_prob: chosen.log_prob.unsqueeze(1usize)?,
                        baseline: baseline.forward(&state)?,
                    })
                } else {
                    None
                };
                Ok((logits, Some(chosen.weights), policy))
            }
        }
    }
}

/// The weights `(batch, seq)` of a mean over each row's first `lengths[b]` positions (all of
/// them without lengths).
fn mean_weights(h: &Tensor, lengths: Option<&[usize]>) -> Result<Tensor> {
    let (b, s) = (h.dims()[0], h.dims()[1]);
    let mut w = vec![0f64; b * s];
    for (row, chunk) in w.chunks_mut(s).enumerate() {
        let n = lengths.map_or(s, |l| l[row]).clamp(1, s);
        chunk[..n].fill(1.0 / n as f64);
    }
    Ok(Tensor::from_vec(w, [b, s], &h.device())?.to_dtype(h.dtype())?)
}
