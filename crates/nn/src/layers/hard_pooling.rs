//! `HardAttentionPooling`: hard attention over tokens, the sequence counterpart of the RAM's
//! glimpses (docs/ram.md, "Hard attention over tokens"). The layer scores every position as
//! [`AttentionPooling`] does (the same parameters, so the soft and the hard layer are one
//! model family), **samples** `k` positions from `softmax(scores)` with replacement and
//! averages the token vectors it drew. The draw is a discrete choice with no gradient, so the
//! scorer learns only through REINFORCE ([`crate::reinforce::reinforce_loss`]) from
//! [`HardPooled::log_prob`]; the pooled vector carries gradients to the tokens, so the
//! encoder below and the classifier above train by backpropagation as usual.

use attune_tensor::{DType, Device, Rng, Tensor};

use crate::error::{NnError, Result};
use crate::layers::pooling::AttentionPooling;
use crate::store::ParamBuilder;

const OP: &str = "HardAttentionPooling";

/// Samples `k` positions per sequence from the attention distribution and averages them.
#[derive(Debug, Clone)]
pub struct HardAttentionPooling {
    scorer: AttentionPooling,
    k: usize,
}

/// What one pass of [`HardAttentionPooling`] chose.
#[derive(Debug, Clone)]
pub struct HardPooled {
    /// The mean of the chosen token vectors, `(batch, dim)`; differentiable in the tokens.
    pub pooled: Tensor,
    /// The chosen positions per sequence (`k` each, in draw order; repeats possible when sampled).
    pub positions: Vec<Vec<usize>>,
    /// `sum_j log p(position_j)`, `(batch,)`: differentiable in the scorer's parameters (and
    /// the tokens through the scores), the policy term REINFORCE multiplies by the advantage.
    pub log_prob: Tensor,
    /// The attention distribution `(batch, seq)` the positions were drawn from.
    pub weights: Tensor,
}

impl HardAttentionPooling {
    /// A layer of width `dim` drawing `k` positions; its parameters are [`AttentionPooling`]'s
    /// (`proj`, `alpha`) under `pb`.
    pub fn new(pb: &ParamBuilder, dim: usize, k: usize) -> Result<HardAttentionPooling> {
        if k == 0 {
            return Err(NnError::input(OP, "k must be at least 1 (the positions drawn per sequence)"));
        }
        Ok(HardAttentionPooling { scorer: AttentionPooling::new(pb, dim)?, k })
    }

    /// Positions drawn per sequence.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Training: draws `k` positions per sequence of `x (batch, seq, dim)` from the attention
    /// distribution with replacement (positions `>= lengths[b]` have probability 0), with
    /// uniforms from `rng`.
    pub fn sample(&self, x: &Tensor, lengths: Option<&[usize]>, rng: &mut Rng) -> Result<HardPooled> {
        let log_weights = self.scorer.scores(x, lengths)?.log_softmax(1usize)?;
        let probs = log_weights.detach().exp()?.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let (b, s) = (x.dims()[0], x.dims()[1]);
        let uniforms = rng.rand([b, self.k], DType::F64, &Device::Cpu)?.to_vec::<f64>()?;
        let positions = (0..b)
            .map(|row| {
                let p = &probs[row * s..(row + 1) * s];
                uniforms[row * self.k..(row + 1) * self.k].iter().map(|&u| inverse_cdf(p, u)).collect()
            })
            .collect();
        self.pool(x, log_weights, positions)
    }

    /// Evaluation: the `k` most probable distinct positions of each sequence (at most its
    /// length), ties to the earlier position; `log_prob` is theirs under the distribution.
    pub fn greedy(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<HardPooled> {
        let log_weights = self.scorer.scores(x, lengths)?.log_softmax(1usize)?;
        let probs = log_weights.detach().exp()?.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let (b, s) = (x.dims()[0], x.dims()[1]);
        let positions = (0..b)
            .map(|row| {
                let p = &probs[row * s..(row + 1) * s];
                let valid = lengths.map_or(s, |l| l[row]);
                let mut order: Vec<usize> = (0..valid).collect();
                order.sort_by(|&i, &j| p[j].total_cmp(&p[i]).then(i.cmp(&j)));
                // A sequence shorter than k repeats its best positions, so every row pools k.
                (0..self.k).map(|j| order[j % order.len()]).collect()
            })
            .collect();
        self.pool(x, log_weights, positions)
    }

    /// Averages the tokens at `positions` and sums their log-probabilities.
    fn pool(&self, x: &Tensor, log_weights: Tensor, positions: Vec<Vec<usize>>) -> Result<HardPooled> {
        let (b, d) = (x.dims()[0], x.dims()[2]);
        let flat: Vec<i64> = positions.iter().flatten().map(|&p| p as i64).collect();
        let index = Tensor::from_vec(flat, [b, self.k], &x.device())?;
        let log_prob = log_weights.gather(1usize, &index)?.sum(1usize, false)?;
        let token_index = index.unsqueeze(2usize)?.broadcast_as([b, self.k, d])?.contiguous()?;
        let pooled = x.gather(1usize, &token_index)?.mean(1usize, false)?;
        Ok(HardPooled { pooled, positions, log_prob, weights: log_weights.exp()? })
    }
}

/// The first position whose cumulative probability exceeds `u`; rounding that leaves `u` past
/// the total picks the last position of positive probability (never a masked one).
fn inverse_cdf(p: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, &pi) in p.iter().enumerate() {
        acc += pi;
        if u < acc {
            return i;
        }
    }
    p.iter().rposition(|&pi| pi > 0.0).unwrap_or(0)
}
