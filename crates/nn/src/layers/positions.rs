//! Position information inside attention: rotary embeddings (RoPE, rotate-half convention as
//! GPT-NeoX and Llama) and ALiBi's linear biases, plus the dense additive mask the materialised
//! attention path uses. The fused path gets the same masks from `AttentionParams`.

use attune_tensor::{DType, Device, Tensor};

use crate::error::{NnError, Result};

/// How a model encodes token positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned embedding table added to the token embeddings (`pos.weight`).
    #[default]
    Learned,
    /// Rotary embeddings applied to queries and keys in every layer.
    Rope,
    /// ALiBi: a per-head linear distance penalty added to the scores.
    Alibi,
    /// No position information.
    None,
}

/// Precomputed RoPE angles: `cos` and `sin` of `position * theta^(-2j/head_dim)`, each
/// `(max_seq_len, head_dim / 2)`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    half: usize,
}

impl Rope {
    /// Tables for `max_seq_len` positions of an even `head_dim`.
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64, dtype: DType, device: &Device) -> Result<Rope> {
        if !head_dim.is_multiple_of(2) || head_dim == 0 {
            return Err(NnError::config(
                "RoPE",
                format!("head_dim {head_dim} must be even and positive to rotate pairs"),
            ));
        }
        if theta <= 1.0 || !theta.is_finite() {
            return Err(NnError::config("RoPE", format!("rope_theta {theta} must be a finite number above 1")));
        }
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_seq_len * half);
        let mut sin = Vec::with_capacity(max_seq_len * half);
        for p in 0..max_seq_len {
            for j in 0..half {
                let angle = p as f64 * theta.powf(-2.0 * j as f64 / head_dim as f64);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let make =
            |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, [max_seq_len, half], device)?.to_dtype(dtype)?) };
        Ok(Rope { cos: make(cos)?, sin: make(sin)?, half })
    }

    /// Rotates `x (batch, heads, seq, head_dim)` whose row `i` sits at position `start + i`:
    /// `[x1 cos - x2 sin, x2 cos + x1 sin]` with `x1, x2` the two halves of the last dim.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let seq = x.dim(2usize)?;
        let max = self.cos.dims()[0];
        if start + seq > max {
            return Err(NnError::input(
                "RoPE",
                format!("positions {start}..{} exceed max_seq_len {max}; raise max_seq_len", start + seq),
            ));
        }
        let (cos, sin) = (self.cos.narrow(0usize, start, seq)?, self.sin.narrow(0usize, start, seq)?);
        let x1 = x.narrow(3usize, 0, self.half)?;
        let x2 = x.narrow(3usize, self.half, self.half)?;
        let r1 = x1.mul(&cos)?.sub(&x2.mul(&sin)?)?;
        let r2 = x2.mul(&cos)?.add(&x1.mul(&sin)?)?;
        Ok(Tensor::cat(&[r1, r2], 3usize)?)
    }
}

/// ALiBi slopes `2^(-8 (h + 1) / H)` for `H` heads (Press et al.'s geometric sequence; for a
/// head count that is not a power of two, the slopes of the next power of two, interleaved,
/// as in the paper's reference).
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    let pow2 = |n: usize| (0..n).map(|h| 2f64.powf(-8.0 * (h + 1) as f64 / n as f64)).collect::<Vec<_>>();
    if heads.is_power_of_two() {
        return pow2(heads);
    }
    let closest = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    let mut slopes = pow2(closest);
    slopes.extend(pow2(2 * closest).into_iter().step_by(2).take(heads - closest));
    slopes
}

/// What the dense mask must express (docs/attention.md, "Masks").
#[derive(Debug, Clone, Copy)]
pub struct MaskSpec<'a> {
    pub seq_q: usize,
    pub seq_k: usize,
    pub causal: bool,
    pub window: Option<(i64, i64)>,
    pub key_lengths: Option<&'a [usize]>,
    pub alibi: Option<&'a [f64]>,
    /// Queries are padded like the keys (self-attention over a right-padded batch): query `i`
    /// sits at position `i`, so masks and ALiBi distances use `i` rather than the bottom-right
    /// aligned `i + len_k - seq_q`.
    pub top_left: bool,
}

impl MaskSpec<'_> {
    /// True when no mask or bias is needed.
    pub fn is_empty(&self) -> bool {
        !self.causal && self.window.is_none() && self.key_lengths.is_none() && self.alibi.is_none()
    }

    /// The additive mask `(B|1, H|1, seq_q, seq_k)`: 0 or `-inf`, plus `-slope_h * |i' - j|`
    /// with ALiBi, where `i' = i + len_k - seq_q` aligns queries bottom-right to each entry's
    /// key length (FlashAttention's convention, the same as the fused op), or `i' = i` with
    /// `top_left`.
    pub fn build(&self, batch: usize, heads: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let bm = if self.key_lengths.is_some() { batch } else { 1 };
        let slopes: Vec<f64> = self.alibi.map(|s| s.to_vec()).unwrap_or_else(|| vec![0.0]);
        let hm = if self.alibi.is_some() { heads } else { 1 };
        let (sq, sk) = (self.seq_q, self.seq_k);
        let mut m = Vec::with_capacity(bm * hm * sq * sk);
        for b in 0..bm {
            let len = self.key_lengths.map_or(sk, |l| l[b].min(sk));
            for slope in slopes.iter().take(hm) {
                for i in 0..sq {
                    let row = if self.top_left { i as i64 } else { i as i64 + len as i64 - sq as i64 };
                    for j in 0..sk {
                        let jj = j as i64;
                        let mut visible = j < len;
                        if self.causal {
                            visible &= jj <= row;
                        }
                        if let Some((left, right)) = self.window {
                            visible &= left < 0 || jj >= row - left;
                            visible &= right < 0 || jj <= row + right;
                        }
                        m.push(if visible { -slope * (row - jj).abs() as f64 } else { f64::NEG_INFINITY });
                    }
                }
            }
        }
        Ok(Tensor::from_vec(m, [bm, hm, sq, sk], device)?.to_dtype(dtype)?)
    }
}
