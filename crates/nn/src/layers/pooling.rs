//! `AttentionPooling`: `a_i = softmax_i(alpha . tanh(W x_i + b))`, `pooled = sum_i a_i x_i`,
//! the attention-weighted pooling of a sequence into one vector, which returns its weights for
//! interpretation (which tokens the classifier looked at).

use attune_tensor::Tensor;

use crate::error::{NnError, Result};
use crate::layers::linear::Linear;
use crate::layers::positions::MaskSpec;
use crate::store::ParamBuilder;

/// Attention-weighted pooling with parameters `proj` (W, b: d x d) and `alpha` (1 x d, no bias).
#[derive(Debug, Clone)]
pub struct AttentionPooling {
    proj: Linear,
    alpha: Linear,
}

impl AttentionPooling {
    /// Creates `proj` and `alpha` under `pb` for width `dim`.
    pub fn new(pb: &ParamBuilder, dim: usize) -> Result<AttentionPooling> {
        Ok(AttentionPooling {
            proj: Linear::new(&pb.sub("proj"), dim, dim, true)?,
            alpha: Linear::new(&pb.sub("alpha"), dim, 1, false)?,
        })
    }

    /// Pools `x (batch, seq, dim)` into `(batch, dim)`; positions `>= lengths[b]` get weight 0.
    /// Returns the pooled vectors and the weights `(batch, seq)` (each row sums to 1).
    pub fn forward(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<(Tensor, Tensor)> {
        let weights = self.scores(x, lengths)?.softmax(1usize)?;
        let pooled = weights.unsqueeze(1usize)?.matmul(x)?.squeeze(1usize)?;
        Ok((pooled, weights))
    }

    /// The scores `alpha . tanh(W x_i + b)` of `x (batch, seq, dim)` as `(batch, seq)`, minus
    /// infinity at positions `>= lengths[b]`: the logits of the weights, which the soft pooling
    /// averages with and [`crate::HardAttentionPooling`] samples from.
    pub fn scores(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<Tensor> {
        if x.rank() != 3 {
            return Err(NnError::input(
                "AttentionPooling",
                format!("input must be (batch, seq, dim), got {:?}", x.shape()),
            ));
        }
        let (b, s) = (x.dims()[0], x.dims()[1]);
        if let Some(l) = lengths
            && (l.len() != b || l.iter().any(|&n| n == 0 || n > s))
        {
            return Err(NnError::input(
                "AttentionPooling",
                format!("lengths {l:?} must give one value in 1..={s} per batch entry (batch {b})"),
            ));
        }
        let mut scores = self.alpha.forward(&self.proj.forward(x)?.tanh()?)?.squeeze(2usize)?;
        if lengths.is_some() {
            let spec = MaskSpec {
                seq_q: 1,
                seq_k: s,
                causal: false,
                window: None,
                key_lengths: lengths,
                alibi: None,
                top_left: false,
            };
            let mask = spec.build(b, 1, scores.dtype(), &scores.device())?.reshape([b, s])?;
            scores = scores.add(&mask)?;
        }
        Ok(scores)
    }
}
