//! `MultiHeadAttention`: q/k/v/o projections, GQA/MQA, causal / sliding-window masks, softcap,
//! RoPE or ALiBi, key padding, attention dropout, self- or cross-attention.
//!
//! Two paths compute the same function. The fused path calls `attune_attention::attention`
//! (flash: no score matrix is stored, backward recomputes it). The materialised path builds
//! the scores from tensor ops; it runs when ALiBi needs an additive bias or when the caller asks
//! for the attention probabilities (for inspection, on small inputs).

use attune_attention::AttentionParams;
use attune_tensor::Tensor;

use crate::autocast;
use crate::ctx::Ctx;
use crate::error::{NnError, Result};
use crate::layers::linear::Linear;
use crate::layers::positions::{MaskSpec, Positions, Rope, alibi_slopes};
use crate::store::ParamBuilder;

/// The shape and behaviour of a [`MultiHeadAttention`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    /// Model width; `head_dim = d_model / n_heads`.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (`n_heads` for MHA, fewer for GQA, 1 for MQA); must divide `n_heads`.
    pub n_kv_heads: usize,
    /// Causal (bottom-right aligned) masking.
    pub causal: bool,
    /// Sliding window `(left, right)`, -1 unbounded.
    pub window: Option<(i64, i64)>,
    /// Softcap `c`: `score = c * tanh(score / c)`.
    pub softcap: Option<f64>,
    /// Position scheme; only `Rope` and `Alibi` act inside attention.
    pub positions: Positions,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest sequence RoPE tables cover.
    pub max_seq_len: usize,
    /// Dropout on the attention probabilities in training.
    pub dropout: f64,
    /// Biases on the four projections.
    pub bias: bool,
}

impl AttentionConfig {
    /// Plain multi-head self-attention with `n_heads` heads and no mask.
    pub fn new(d_model: usize, n_heads: usize) -> AttentionConfig {
        AttentionConfig {
            d_model,
            n_heads,
            n_kv_heads: n_heads,
            causal: false,
            window: None,
            softcap: None,
            positions: Positions::None,
            rope_theta: 10_000.0,
            max_seq_len: 4096,
            dropout: 0.0,
            bias: true,
        }
    }

    /// `d_model / n_heads`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    fn validate(&self) -> Result<()> {
        let err = |m: String| Err(NnError::config("MultiHeadAttention", m));
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.d_model == 0 {
            return err(format!(
                "d_model {}, n_heads {} and n_kv_heads {} must be positive",
                self.d_model, self.n_heads, self.n_kv_heads
            ));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return err(format!("d_model {} is not divisible by n_heads {}", self.d_model, self.n_heads));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return err(format!(
                "n_heads {} is not a multiple of n_kv_heads {}; GQA groups query heads evenly",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("attention dropout {} must be in [0, 1)", self.dropout));
        }
        if let Some(c) = self.softcap
            && !(c > 0.0 && c.is_finite())
        {
            return err(format!("softcap {c} must be positive and finite"));
        }
        Ok(())
    }
}

/// Multi-head attention with PyTorch-style parameter names `q_proj`, `k_proj`, `v_proj`, `o_proj`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    cfg: AttentionConfig,
    rope: Option<Rope>,
    alibi: Option<Vec<f64>>,
}

/// Keys and values from another sequence (cross-attention), with optional padding lengths.
#[derive(Debug, Clone, Copy)]
pub struct Memory<'a> {
    /// `(batch, seq_k, d_model)`.
    pub states: &'a Tensor,
    /// Valid length of each batch entry of `states`.
    pub lengths: Option<&'a [usize]>,
}

impl MultiHeadAttention {
    /// Creates the projections under `pb`.
    pub fn new(pb: &ParamBuilder, cfg: AttentionConfig) -> Result<MultiHeadAttention> {
        cfg.validate()?;
        let (d, kv) = (cfg.d_model, cfg.n_kv_heads * cfg.head_dim());
        let rope = match cfg.positions {
            Positions::Rope => {
                Some(Rope::new(cfg.head_dim(), cfg.max_seq_len, cfg.rope_theta, pb.dtype(), pb.device())?)
            }
            _ => None,
        };
        let alibi = (cfg.positions == Positions::Alibi).then(|| alibi_slopes(cfg.n_heads));
        Ok(MultiHeadAttention {
            q_proj: Linear::new(&pb.sub("q_proj"), d, d, cfg.bias)?,
            k_proj: Linear::new(&pb.sub("k_proj"), d, kv, cfg.bias)?,
            v_proj: Linear::new(&pb.sub("v_proj"), d, kv, cfg.bias)?,
            o_proj: Linear::new(&pb.sub("o_proj"), d, d, cfg.bias)?,
            cfg,
            rope,
            alibi,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.cfg
    }

    /// Self-attention over `x (batch, seq, d_model)`; `key_lengths[b]` masks keys `>=` it. The
    /// queries are padded like the keys, so masks and ALiBi see query `i` at position `i`.
    pub fn forward(&self, x: &Tensor, key_lengths: Option<&[usize]>, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.run(x, Memory { states: x, lengths: key_lengths }, true, ctx, false)?.0)
    }

    /// Self-attention that also returns the probabilities `(batch, heads, seq, seq)` (after
    /// masking, before dropout). Materialises the scores: meant for small inputs.
    pub fn forward_with_probs(
        &self,
        x: &Tensor,
        key_lengths: Option<&[usize]>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Tensor)> {
        let (out, probs) = self.run(x, Memory { states: x, lengths: key_lengths }, true, ctx, true)?;
        let probs = probs.ok_or_else(|| NnError::config("MultiHeadAttention", "probabilities were not computed"))?;
        Ok((out, probs))
    }

    /// Cross-attention from `x (batch, seq_q, d_model)` to `memory` (never causal).
    pub fn forward_cross(&self, x: &Tensor, memory: Memory<'_>, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.run(x, memory, false, ctx, false)?.0)
    }

    fn run(
        &self,
        x: &Tensor,
        memory: Memory<'_>,
        self_attention: bool,
        ctx: &mut Ctx,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cfg = &self.cfg;
        // Cross-attention is never causal.
        let causal = self_attention && cfg.causal;
        // Self-attention over a right-padded batch pads the queries like the keys, so query i
        // sits at position i: causal / window masks and ALiBi distances must not take the
        // bottom-right shift by `len - seq` that key lengths imply for the fused op. The fused
        // op has no such alignment for padded keys, so those cases take the materialised path.
        let padded_self = self_attention && memory.lengths.is_some();
        let needs_top_left = padded_self && (causal || cfg.window.is_some());
        let (b, sq, sk) = self.check_inputs(x, &memory)?;
        let (h, hkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim());
        // (batch, seq, heads, dim) memory viewed as (batch, heads, seq, dim): no copy.
        let split = |t: Tensor, heads: usize, s: usize| -> Result<Tensor> {
            Ok(t.reshape([b, s, heads, hd])?.transpose(1usize, 2usize)?)
        };
        let mut q = split(self.q_proj.forward(x)?, h, sq)?;
        let mut k = split(self.k_proj.forward(memory.states)?, hkv, sk)?;
        let v = split(self.v_proj.forward(memory.states)?, hkv, sk)?;
        if let Some(rope) = &self.rope {
            q = rope.apply(&q, sk.saturating_sub(sq))?;
            k = rope.apply(&k, 0)?;
        }
        let scale = 1.0 / (hd as f64).sqrt();
        // What the fused op does not take on this device (attune_attention::supports: the GPU
        // kernels' dtypes and head dims) is composed of tensor ops.
        // Under autocast the fused op computes in the autocast dtype (crate::autocast).
        let fused_dtype = autocast::dtype_for(x.dtype());
        let unsupported = attune_attention::supports(x.device(), fused_dtype, hd).is_err();
        let (out, probs) = if want_probs || self.alibi.is_some() || needs_top_left || unsupported {
            let spec = MaskSpec {
                seq_q: sq,
                seq_k: sk,
                causal,
                window: cfg.window,
                key_lengths: memory.lengths,
                alibi: self.alibi.as_deref(),
                top_left: padded_self,
            };
            let (o, p) = self.materialised(&q, &k, &v, scale, &spec, ctx)?;
            (o, Some(p))
        } else {
            let mut params = AttentionParams::new().causal(causal).scale(scale);
            if let Some((l, r)) = cfg.window {
                params = params.window(l, r);
            }
            if let Some(c) = cfg.softcap {
                params = params.softcap(c);
            }
            if let Some(lens) = memory.lengths {
                params = params.seqlens_k(lens.to_vec());
            }
            if ctx.train && cfg.dropout > 0.0 {
                let (seed, offset) = ctx.rng.take_stream(b * h * sq * sk);
                params = params.dropout(cfg.dropout, seed, offset);
            }
            let (q, k, v) = (autocast::cast_in(&q)?, autocast::cast_in(&k)?, autocast::cast_in(&v)?);
            (attune_attention::attention(&q, &k, &v, &params)?.out.to_dtype(x.dtype())?, None)
        };
        let merged = out.transpose(1usize, 2usize)?.reshape([b, sq, cfg.d_model])?;
        Ok((self.o_proj.forward(&merged)?, probs))
    }

    fn check_inputs(&self, x: &Tensor, memory: &Memory<'_>) -> Result<(usize, usize, usize)> {
        let d = self.cfg.d_model;
        let ok = |t: &Tensor| t.rank() == 3 && t.dims()[2] == d;
        if !ok(x) || !ok(memory.states) {
            return Err(NnError::input(
                "MultiHeadAttention",
                format!(
                    "inputs must be (batch, seq, {d}); got queries {:?} and keys/values {:?}",
                    x.shape(),
                    memory.states.shape()
                ),
            ));
        }
        let (b, sq, sk) = (x.dims()[0], x.dims()[1], memory.states.dims()[1]);
        if memory.states.dims()[0] != b {
            return Err(NnError::input(
                "MultiHeadAttention",
                format!("queries have batch {b} but keys/values have batch {}", memory.states.dims()[0]),
            ));
        }
        if let Some(l) = memory.lengths {
            if l.len() != b {
                return Err(NnError::input(
                    "MultiHeadAttention",
                    format!("{} key lengths given for a batch of {b}; give one per entry", l.len()),
                ));
            }
            if let Some(bad) = l.iter().find(|&&n| n > sk) {
                return Err(NnError::input(
                    "MultiHeadAttention",
                    format!("key length {bad} exceeds the key sequence length {sk}"),
                ));
            }
        }
        Ok((b, sq, sk))
    }

    /// Scores from tensor ops: `softmax(cap(scale q k^T) + mask) v`, GQA by repeating kv heads.
    fn materialised(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        spec: &MaskSpec<'_>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Tensor)> {
        let (b, h) = (q.dims()[0], q.dims()[1]);
        let group = h / self.cfg.n_kv_heads;
        let repeat = |t: &Tensor| -> Result<Tensor> {
            if group == 1 {
                return Ok(t.clone());
            }
            let (hkv, s, d) = (t.dims()[1], t.dims()[2], t.dims()[3]);
            Ok(t.unsqueeze(2usize)?.broadcast_as([b, hkv, group, s, d])?.reshape([b, h, s, d])?)
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let mut scores = q.matmul(&k.transpose(2usize, 3usize)?)?.mul_scalar(scale)?;
        if let Some(c) = self.cfg.softcap {
            scores = scores.div_scalar(c)?.tanh()?.mul_scalar(c)?;
        }
        if !spec.is_empty() {
            scores = scores.add(&spec.build(b, h, scores.dtype(), &scores.device())?)?;
        }
        let probs = scores.softmax(3usize)?;
        let dropped = if ctx.train && self.cfg.dropout > 0.0 {
            probs.dropout(self.cfg.dropout, true, &mut ctx.rng)?
        } else {
            probs.clone()
        };
        Ok((dropped.matmul(&v)?, probs))
    }
}
