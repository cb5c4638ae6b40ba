//! The oracle: a naive implementation accumulating in f64 that materialises every score row.
//! Every other implementation is tested against it, so it is kept short and obviously right.

use crate::error::Result;
use crate::params::{AttentionParams, Problem, Segment, validate};
use attune_tensor::{DType, Device, Tensor};

/// Forward results of the oracle, in f64.
pub struct OracleForward {
    /// `(batch, heads_q, seq_q, head_dim)`.
    pub out: Tensor,
    /// `(batch, heads_q, seq_q)`; `-inf` for rows with no visible key.
    pub lse: Tensor,
}

/// Gradients from the oracle, in f64, shaped like q, k and v.
pub struct OracleBackward {
    /// Gradient of q.
    pub dq: Tensor,
    /// Gradient of k.
    pub dk: Tensor,
    /// Gradient of v.
    pub dv: Tensor,
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_f64_vec()?)
}

/// Row-major index of (b, h, i, 0) in a (B, H, S, D) buffer.
fn at(b: usize, h: usize, i: usize, heads: usize, seq: usize, d: usize) -> usize {
    ((b * heads + h) * seq + i) * d
}

/// What one query row needs: the probabilities (after softmax, before dropout) over the
/// visible keys `lo..hi` (global key rows), the raw capped scores, the lse, and the dropout
/// multipliers (`keep / (1 - p)` or 1).
struct Row {
    lo: usize,
    probs: Vec<f64>,
    capped: Vec<f64>,
    lse: f64,
    drop_scale: Vec<f64>,
}

fn row(pb: &Problem, seg: &Segment, h: usize, i: usize, q: &[f64], k: &[f64]) -> Row {
    let d = pb.head_dim;
    let (lo, hi) = pb.key_range(seg, i);
    let gi = seg.q_start + i;
    let qi = &q[at(seg.batch, h, gi, pb.heads_q, pb.seq_q, d)..][..d];
    let hk = pb.kv_head(h);
    let capped: Vec<f64> = (lo..hi)
        .map(|j| {
            let kj = &k[at(seg.batch, hk, seg.k_start + j, pb.heads_kv, pb.seq_k, d)..][..d];
            let s = pb.scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>();
            pb.softcap.map_or(s, |c| c * (s / c).tanh())
        })
        .collect();
    let max = capped.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = capped.iter().map(|s| (s - max).exp()).sum();
    let lse = if capped.is_empty() { f64::NEG_INFINITY } else { max + sum.ln() };
    let probs = capped.iter().map(|s| (s - lse).exp()).collect();
    let drop_scale = (lo..hi).map(|j| pb.dropout_scale(seg.batch, h, gi, seg.k_start + j)).collect();
    Row { lo: seg.k_start + lo, probs, capped, lse, drop_scale }
}

/// Forward pass: `out` and `lse` in f64.
pub fn forward(q: &Tensor, k: &Tensor, v: &Tensor, params: &AttentionParams) -> Result<OracleForward> {
    let pb = validate(q, k, v, params)?;
    let (qh, kh, vh) = (host(q)?, host(k)?, host(v)?);
    let d = pb.head_dim;
    let mut out = vec![0.0; pb.batch * pb.heads_q * pb.seq_q * d];
    let mut lse = vec![f64::NEG_INFINITY; pb.batch * pb.heads_q * pb.seq_q];
    for seg in &pb.segments {
        for h in 0..pb.heads_q {
            for i in 0..seg.q_len {
                let r = row(&pb, seg, h, i, &qh, &kh);
                let gi = seg.q_start + i;
                lse[(seg.batch * pb.heads_q + h) * pb.seq_q + gi] = r.lse;
                let o = &mut out[at(seg.batch, h, gi, pb.heads_q, pb.seq_q, d)..][..d];
                for (t, (&p, &m)) in r.probs.iter().zip(&r.drop_scale).enumerate() {
                    let vj = &vh[at(seg.batch, pb.kv_head(h), r.lo + t, pb.heads_kv, pb.seq_k, d)..][..d];
                    for (o, &x) in o.iter_mut().zip(vj) {
                        *o += p * m * x;
                    }
                }
            }
        }
    }
    let dev = Device::Cpu;
    Ok(OracleForward {
        out: Tensor::from_vec(out, [pb.batch, pb.heads_q, pb.seq_q, d], &dev)?,
        lse: Tensor::from_vec(lse, [pb.batch, pb.heads_q, pb.seq_q], &dev)?,
    })
}

/// Backward pass: gradients of q, k, v given the output gradient `dout`, in f64.
pub fn backward(q: &Tensor, k: &Tensor, v: &Tensor, dout: &Tensor, params: &AttentionParams) -> Result<OracleBackward> {
    let pb = validate(q, k, v, params)?;
    let (qh, kh, vh, doh) = (host(q)?, host(k)?, host(v)?, host(&dout.to_dtype(DType::F64)?)?);
    let d = pb.head_dim;
    let mut dq = vec![0.0; qh.len()];
    let mut dk = vec![0.0; kh.len()];
    let mut dv = vec![0.0; vh.len()];
    for seg in &pb.segments {
        for h in 0..pb.heads_q {
            let hk = pb.kv_head(h);
            for i in 0..seg.q_len {
                let r = row(&pb, seg, h, i, &qh, &kh);
                let gi = seg.q_start + i;
                let qoff = at(seg.batch, h, gi, pb.heads_q, pb.seq_q, d);
                let g = &doh[qoff..][..d];
                // dP'_j = dout . v_j; dV_j += P'_j dout; dP_j = dP'_j * dropscale_j.
                let dp: Vec<f64> = (0..r.probs.len())
                    .map(|t| {
                        let voff = at(seg.batch, hk, r.lo + t, pb.heads_kv, pb.seq_k, d);
                        let pd = r.probs[t] * r.drop_scale[t];
                        for (dv, &x) in dv[voff..][..d].iter_mut().zip(g) {
                            *dv += pd * x;
                        }
                        r.drop_scale[t] * vh[voff..][..d].iter().zip(g).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                // Softmax backward, then the softcap's tanh and the scale.
                let dot: f64 = r.probs.iter().zip(&dp).map(|(p, g)| p * g).sum();
                for (t, (&p, &dpt)) in r.probs.iter().zip(&dp).enumerate() {
                    let mut ds = p * (dpt - dot);
                    if let Some(c) = pb.softcap {
                        ds *= 1.0 - (r.capped[t] / c).powi(2);
                    }
                    let ds = ds * pb.scale;
                    let koff = at(seg.batch, hk, r.lo + t, pb.heads_kv, pb.seq_k, d);
                    for x in 0..d {
                        dq[qoff + x] += ds * kh[koff + x];
                        dk[koff + x] += ds * qh[qoff + x];
                    }
                }
            }
        }
    }
    let dev = Device::Cpu;
    Ok(OracleBackward {
        dq: Tensor::from_vec(dq, q.shape().clone(), &dev)?,
        dk: Tensor::from_vec(dk, k.shape().clone(), &dev)?,
        dv: Tensor::from_vec(dv, v.shape().clone(), &dev)?,
    })
}
