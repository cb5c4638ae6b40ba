//! The textbook attention run in low precision: the yardstick of the f16/bf16 criterion
//! (docs/attention.md, "Tolerances": "twice the error of the naive implementation in the same precision").
//!
//! It mimics what the composed framework ops produce on f16/bf16 tensors: every op accumulates
//! in f32 or better but rounds its result to the input dtype (scores, scaled scores, the capped
//! scores, the probabilities, the output; in backward dP, dS and each gradient), while softmax
//! and logsumexp run in f32 on the rounded scores. For f32 and f64 inputs rounding goes to that
//! dtype instead.

use crate::error::Result;
use crate::params::{AttentionParams, Problem, Segment, validate};
use attune_tensor::{DType, Device, Tensor};

/// Forward results of the naive low-precision implementation (values stored in f64).
#[derive(Clone)]
pub struct LowpForward {
    /// Output `(batch, heads_q, seq_q, head_dim)`.
    pub out: Tensor,
    /// Logsumexp `(batch, heads_q, seq_q)`, `-inf` for rows with no visible key.
    pub lse: Tensor,
}

fn rounder(dt: DType) -> fn(f64) -> f64 {
    match dt {
        DType::F16 => |x| attune_tensor::f64_to_f16(x).to_f64(),
        DType::BF16 => |x| attune_tensor::f64_to_bf16(x).to_f64(),
        DType::F32 => |x| x as f32 as f64,
        _ => |x| x,
    }
}

fn at(b: usize, h: usize, i: usize, heads: usize, seq: usize, d: usize) -> usize {
    ((b * heads + h) * seq + i) * d
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One query row: visible global keys from `lo`, rounded probabilities before and after
/// dropout, the capped score's tanh (for the softcap derivative) and the f32 lse.
struct Row {
    lo: usize,
    probs: Vec<f64>,
    dropped: Vec<f64>,
    keep: Vec<f64>,
    tanh: Vec<f64>,
    lse: f64,
}

fn row(pb: &Problem, seg: &Segment, h: usize, i: usize, q: &[f64], k: &[f64], r: fn(f64) -> f64) -> Row {
    let d = pb.head_dim;
    let (lo, hi) = pb.key_range(seg, i);
    let gi = seg.q_start + i;
    let qi = &q[at(seg.batch, h, gi, pb.heads_q, pb.seq_q, d)..][..d];
    let hk = pb.kv_head(h);
    let mut tanh = Vec::with_capacity(hi - lo);
    let scores: Vec<f64> = (lo..hi)
        .map(|j| {
            let kj = &k[at(seg.batch, hk, seg.k_start + j, pb.heads_kv, pb.seq_k, d)..][..d];
            let s = r(r(dot(qi, kj)) * pb.scale);
            match pb.softcap {
                Some(c) => {
                    let t = r((r(s / c)).tanh());
                    tanh.push(t);
                    r(c * t)
                }
                None => s,
            }
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let f32r = |x: f64| x as f32 as f64;
    let sum: f64 = scores.iter().map(|s| f32r((s - max).exp())).sum();
    let lse = if scores.is_empty() { f64::NEG_INFINITY } else { f32r(max + f32r(sum).ln()) };
    let probs: Vec<f64> = scores.iter().map(|s| r(f32r((s - max).exp()) / f32r(sum))).collect();
    let keep: Vec<f64> = (lo..hi).map(|j| pb.dropout_scale(seg.batch, h, gi, seg.k_start + j)).collect();
    let dropped = probs.iter().zip(&keep).map(|(p, m)| r(p * m)).collect();
    Row { lo: seg.k_start + lo, probs, dropped, keep, tanh, lse }
}

/// Naive forward in the precision of the inputs' dtype.
pub fn lowp_forward(q: &Tensor, k: &Tensor, v: &Tensor, params: &AttentionParams) -> Result<LowpForward> {
    let pb = validate(q, k, v, params)?;
    let r = rounder(q.dtype());
    let (qh, kh, vh) = (q.to_f64_vec()?, k.to_f64_vec()?, v.to_f64_vec()?);
    let d = pb.head_dim;
    let mut out = vec![0.0; pb.batch * pb.heads_q * pb.seq_q * d];
    let mut lse = vec![f64::NEG_INFINITY; pb.batch * pb.heads_q * pb.seq_q];
    for seg in &pb.segments {
        for h in 0..pb.heads_q {
            for i in 0..seg.q_len {
                let row = row(&pb, seg, h, i, &qh, &kh, r);
                let gi = seg.q_start + i;
                lse[(seg.batch * pb.heads_q + h) * pb.seq_q + gi] = row.lse;
                let o = &mut out[at(seg.batch, h, gi, pb.heads_q, pb.seq_q, d)..][..d];
                for (t, &p) in row.dropped.iter().enumerate() {
                    let vj = &vh[at(seg.batch, pb.kv_head(h), row.lo + t, pb.heads_kv, pb.seq_k, d)..][..d];
                    for (o, &x) in o.iter_mut().zip(vj) {
                        *o += p * x;
                    }
                }
                o.iter_mut().for_each(|x| *x = r(*x));
            }
        }
    }
    let dev = Device::Cpu;
    Ok(LowpForward {
        out: Tensor::from_vec(out, [pb.batch, pb.heads_q, pb.seq_q, d], &dev)?,
        lse: Tensor::from_vec(lse, [pb.batch, pb.heads_q, pb.seq_q], &dev)?,
    })
}

/// Naive backward in the precision of the inputs' dtype: `[dq, dk, dv]` (values in f64).
/// With GQA the framework repeats kv heads, so each query head's dk/dv is rounded before the
/// group is summed.
pub fn lowp_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dout: &Tensor,
    params: &AttentionParams,
) -> Result<[Tensor; 3]> {
    let pb = validate(q, k, v, params)?;
    let r = rounder(q.dtype());
    let (qh, kh, vh) = (q.to_f64_vec()?, k.to_f64_vec()?, v.to_f64_vec()?);
    let doh = dout.to_dtype(q.dtype())?.to_f64_vec()?;
    let d = pb.head_dim;
    let mut dq = vec![0.0; qh.len()];
    let mut dk = vec![0.0; kh.len()];
    let mut dv = vec![0.0; vh.len()];
    for seg in &pb.segments {
        for h in 0..pb.heads_q {
            let hk = pb.kv_head(h);
            // This head's contributions to its kv head, over the segment's keys.
            let mut dk_h = vec![0.0; seg.k_len * d];
            let mut dv_h = vec![0.0; seg.k_len * d];
            for i in 0..seg.q_len {
                let row = row(&pb, seg, h, i, &qh, &kh, r);
                let qoff = at(seg.batch, h, seg.q_start + i, pb.heads_q, pb.seq_q, d);
                let g = &doh[qoff..][..d];
                let n = row.probs.len();
                let mut dp = Vec::with_capacity(n);
                for t in 0..n {
                    let voff = at(seg.batch, hk, row.lo + t, pb.heads_kv, pb.seq_k, d);
                    let local = (row.lo - seg.k_start + t) * d;
                    for (acc, &x) in dv_h[local..][..d].iter_mut().zip(g) {
                        *acc += row.dropped[t] * x;
                    }
                    dp.push(r(r(dot(&vh[voff..][..d], g)) * row.keep[t]));
                }
                let dotp: f64 = row.probs.iter().zip(&dp).map(|(p, g)| p * g).sum::<f64>() as f32 as f64;
                let dq_row = &mut dq[qoff..][..d];
                for (t, (&p, &dpt)) in row.probs.iter().zip(&dp).enumerate() {
                    let mut ds = r(p * (dpt - dotp));
                    if pb.softcap.is_some() {
                        ds = r(ds * (1.0 - row.tanh[t] * row.tanh[t]));
                    }
                    let ds = r(ds * pb.scale);
                    let koff = at(seg.batch, hk, row.lo + t, pb.heads_kv, pb.seq_k, d);
                    let local = (row.lo - seg.k_start + t) * d;
                    for x in 0..d {
                        dq_row[x] += ds * kh[koff + x];
                        dk_h[local + x] += ds * qh[qoff + x];
                    }
                }
                dq_row.iter_mut().for_each(|x| *x = r(*x));
            }
            for j in 0..seg.k_len {
                let koff = at(seg.batch, hk, seg.k_start + j, pb.heads_kv, pb.seq_k, d);
                for x in 0..d {
                    dk[koff + x] = r(dk[koff + x] + r(dk_h[j * d + x]));
                    dv[koff + x] = r(dv[koff + x] + r(dv_h[j * d + x]));
                }
            }
        }
    }
    let dev = Device::Cpu;
    Ok([
        Tensor::from_vec(dq, q.shape().clone(), &dev)?,
        Tensor::from_vec(dk, k.shape().clone(), &dev)?,
        Tensor::from_vec(dv, v.shape().clone(), &dev)?,
    ])
}
