//! CPU flash attention: tiled, online softmax, f32 accumulation, forward and backward, with
//! every feature of docs/attention.md (scale, causal, sliding window, softcap, GQA/MQA without
//! copying K/V, key padding, packed variable-length sequences, Philox dropout).
//!
//! # Design
//!
//! - Inputs are read in place from their storage at any strides with unit stride on
//!   head_dim (other tensors are made contiguous first). f32 K/V rows feed the tile products
//!   directly; f16/bf16/f64 rows are converted to f32 per tile, except bf16 on a CPU with
//!   AVX512_BF16, whose products run on bf16 dot products ([`dot`]: P and dS rounded to bf16,
//!   f32 accumulation), on the AMX tile unit where the CPU has one ([`tiles`]), else on
//!   `vdpbf16ps`. **f64 inputs are computed in
//!   f32** (use [`crate::oracle`] for f64-accurate values). Outputs are in the input dtype.
//! - Score tiles are stored transposed (`S^T`, keys as rows, `BQ = 64` query columns), so
//!   `S^T = K Q^T` reads K rows as broadcasts and the transposed query tile as vectors, and
//!   the online softmax's per-query max/sum/rescale are plain vector loops. `scale * log2(e)`
//!   is folded into the query tile so the softmax uses a polynomial `exp2` ([`vmath`]).
//! - Every product is one micro-kernel ([`kernel`]): AVX-512 6x64 register blocks with
//!   masked edges, or a portable loop without AVX-512. The online softmax's rescale of O is
//!   folded into the PV product's load of O.
//! - Forward: one rayon task per (batch, head, 64-row query tile); key tiles of `BK = 128`
//!   cover only the union of the tile rows' visible key intervals (fully masked tiles are
//!   never computed), and only tiles crossing a row's interval boundary are masked. Memory
//!   per thread: a few tiles (one score tile, its dropout multipliers, Q^T, the O
//!   accumulator), nothing proportional to the sequence length.
//! - Backward (FlashAttention-2): `D = rowsum(dO * O)`, P recomputed from the lse, five tile
//!   products per (query tile, key tile). A task owns a (segment, kv head, query chunk):
//!   it walks its query tiles for every query head of the GQA group in a fixed order,
//!   writes their dQ (each dQ tile has one owner) and accumulates dK/dV of the kv head in
//!   f32 (in place in the output for f32 when the chunk is the only one). With few
//!   (segment, kv head) units the queries are split into chunks whose dK/dV partials are
//!   summed in chunk order. The chunk count depends on the shape only, so the results are
//!   bit-identical for any thread count, without atomics and without recomputing P for a
//!   separate dQ pass (5 products per tile pair, not 7).
//! - Tile sizes: `BQ = 64` queries; `BK = 128` keys, which beat 64 on both paths (2 threads,
//!   `bench-attn --shape 1,8,1024,64 --bwd`: f32 forward 179-192 against 175-177 GFLOP/s, bf16
//!   319-331 against 262-311): the bf16 `P V` product reduces over 64 key pairs instead of 32.
//!   The score tile is 32 KiB.
//! - Dropout: the keep decisions are the oracle's (same Philox element index), generated
//!   16 blocks at a time with AVX-512 and packed into per-query bit masks; `lse` ignores
//!   dropout, kept probabilities are scaled by `1 / (1 - p)`.

#[macro_use]
mod blocks;
mod bwd;
mod dot;
mod dropout;
mod fwd;
mod io;
mod tiles;
// The tile micro-kernel: public with the test-only `testing` feature (the flash_bench example
// times it), crate-private otherwise.
#[cfg(feature = "testing")]
pub mod kernel;
#[cfg(not(feature = "testing"))]
mod kernel;
mod vmath;

use crate::error::{AttentionError, Result};
use crate::params::{AttentionParams, Problem, Segment, validate};
use attune_tensor::cpu::philox;
use attune_tensor::storage::{CpuStorage, Storage};
use attune_tensor::{DType, Device, Tensor, WithDType};
use half::{bf16, f16};
use io::{Elem, View};
use std::sync::RwLockReadGuard;

/// Query rows per tile (the columns of a transposed score tile).
pub const BQ: usize = 64;
/// Key rows per tile.
pub const BK: usize = 128;

/// Forward results.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `(batch, heads_q, seq_q, head_dim)`, contiguous, in the input dtype.
    pub out: Tensor,
    /// `(batch, heads_q, seq_q)` f32 natural-log logsumexp of the scaled, capped, masked
    /// scores (unaffected by dropout); `-inf` for rows with no visible key.
    pub lse: Tensor,
}

/// Gradients of q, k and v, in the input dtype, contiguous, with their shapes.
#[derive(Debug, Clone)]
pub struct AttentionGrads {
    /// Gradient of q.
    pub dq: Tensor,
    /// Gradient of k.
    pub dk: Tensor,
    /// Gradient of v.
    pub dv: Tensor,
}

/// The visible key intervals of the rows of one query tile, and their union.
pub(crate) struct Ranges {
    lo: Vec<u32>,
    hi: Vec<u32>,
    /// Union of the non-empty intervals (`ulo >= uhi` when every row is empty).
    ulo: usize,
    uhi: usize,
    /// Intersection bounds, for deciding which key tiles need no mask.
    max_lo: usize,
    min_hi: usize,
    any_empty: bool,
}

impl Ranges {
    fn new() -> Self {
        Ranges { lo: vec![0; BQ], hi: vec![0; BQ], ulo: 0, uhi: 0, max_lo: 0, min_hi: 0, any_empty: false }
    }

    /// Rows `t0 .. t0 + rows` of `seg`; with `lse`, rows whose lse is `-inf` count as empty.
    fn compute(&mut self, pb: &Problem, seg: &Segment, t0: usize, rows: usize, lse: Option<&[f32]>) {
        (self.ulo, self.uhi, self.max_lo, self.min_hi, self.any_empty) = (usize::MAX, 0, 0, usize::MAX, false);
        for r in 0..rows {
            let (mut lo, mut hi) = pb.key_range(seg, t0 + r);
            if lse.is_some_and(|l| l[r] == f32::NEG_INFINITY) {
                (lo, hi) = (0, 0);
            }
            if hi > lo {
                self.ulo = self.ulo.min(lo);
                self.uhi = self.uhi.max(hi);
                self.max_lo = self.max_lo.max(lo);
                self.min_hi = self.min_hi.min(hi);
            } else {
                (lo, hi) = (0, 0);
                self.any_empty = true;
            }
            (self.lo[r], self.hi[r]) = (lo as u32, hi as u32);
        }
    }

    /// Whether every row sees all of keys `kt0 .. kt0 + bk`.
    fn is_full(&self, kt0: usize, bk: usize) -> bool {
        !self.any_empty && kt0 >= self.max_lo && kt0 + bk <= self.min_hi
    }
}

/// The CPU buffers of several tensors, one read guard per distinct storage (views of one
/// buffer, like q, k and v split from a fused projection, share a guard: taking a second
/// read lock of one RwLock on one thread can deadlock behind a waiting writer).
struct Guards<'t> {
    guards: Vec<RwLockReadGuard<'t, Storage>>,
    which: Vec<usize>,
}

impl<'t> Guards<'t> {
    fn new(ts: &[&'t Tensor]) -> Self {
        let (mut guards, mut which) = (Vec::new(), Vec::new());
        for (i, t) in ts.iter().enumerate() {
            match ts[..i].iter().position(|u| u.same_storage(t)) {
                Some(p) => which.push(which[p]),
                None => {
                    guards.push(t.storage());
                    which.push(guards.len() - 1);
                }
            }
        }
        Guards { guards, which }
    }

    fn slice<T: WithDType>(&self, i: usize) -> Result<&[T]> {
        #[allow(unreachable_patterns)]
        let cpu: &CpuStorage = match &*self.guards[self.which[i]] {
            Storage::Cpu(c) => c,
            other => return Err(unavailable(other.device())),
        };
        cpu.as_slice::<T>().ok_or_else(|| {
            AttentionError::Shape(format!(
                "flash attention: storage holds {} but {} was expected",
                cpu.dtype(),
                T::DTYPE
            ))
        })
    }
}

fn unavailable(device: Device) -> AttentionError {
    AttentionError::Tensor(attune_tensor::Error::DeviceNotAvailable {
        op: "flash attention",
        device,
        why: format!("flash::forward/backward run on the CPU; move the tensors to Device::Cpu (got {device})"),
    })
}

/// The tensor itself when its head_dim stride is 1 (or head_dim <= 1), else a contiguous copy.
fn unit_inner(t: &Tensor) -> Result<Tensor> {
    let d = t.dims().last().copied().unwrap_or(1);
    if d > 1 && t.stride().last() != Some(&1) { Ok(t.contiguous()?) } else { Ok(t.clone()) }
}

fn check_cpu(ts: &[&Tensor]) -> Result<()> {
    match ts.iter().find(|t| t.device() != Device::Cpu) {
        Some(t) => Err(unavailable(t.device())),
        None => Ok(()),
    }
}

fn check_keys(pb: &Problem) -> Result<()> {
    if pb.seq_k >= u32::MAX as usize {
        return Err(AttentionError::Shape(format!(
            "flash attention supports seq_k < 2^32, got {}; split the keys",
            pb.seq_k
        )));
    }
    Ok(())
}

/// Scale constants folded into the tiles: `(qscale, cap_log2)`.
fn scales(pb: &Problem) -> (f32, Option<f32>) {
    let log2e = std::f64::consts::LOG2_E;
    match pb.softcap {
        None => ((pb.scale * log2e) as f32, None),
        Some(c) => ((pb.scale / c) as f32, Some((c * log2e) as f32)),
    }
}

fn drop_tile(pb: &Problem) -> Option<dropout::DropTile> {
    pb.dropout.map(|d| dropout::DropTile {
        seed: d.seed,
        offset: d.offset,
        threshold: philox::threshold_24(d.p),
        inv_keep: (1.0 / (1.0 - d.p)) as f32,
    })
}

/// Forward pass: `out` and `lse`. See the module docs.
pub fn forward(q: &Tensor, k: &Tensor, v: &Tensor, params: &AttentionParams) -> Result<AttentionOutput> {
    Ok(forward_saving_f32(q, k, v, params, false)?.0)
}

/// [`forward`]; with `keep_f32` and f16/bf16 inputs it also returns the output before rounding,
/// in f32: what the differentiable [`crate::attention`] (when a gradient will be needed) and the
/// case checker give the backward as `out`. It makes `D = rowsum(dO * O)` free of the output's
/// rounding: otherwise a row whose probabilities sit on one key gets a dS of the order of that
/// rounding (about 1e-3 relative in bf16) instead of zero.
pub(crate) fn forward_saving_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    params: &AttentionParams,
    keep_f32: bool,
) -> Result<(AttentionOutput, Option<Tensor>)> {
    check_cpu(&[q, k, v])?;
    let pb = validate(q, k, v, params)?;
    check_keys(&pb)?;
    let (q, k, v) = (unit_inner(q)?, unit_inner(k)?, unit_inner(v)?);
    let low = matches!(q.dtype(), DType::F16 | DType::BF16);
    if low && keep_f32 {
        let o = match q.dtype() {
            DType::F16 => forward_t::<f16, f32>(&pb, &q, &k, &v)?,
            _ => forward_t::<bf16, f32>(&pb, &q, &k, &v)?,
        };
        // Rounded by the same round-to-nearest-even as the kernel's own output conversion.
        let out = o.out.to_dtype(q.dtype())?;
        return Ok((AttentionOutput { out, lse: o.lse }, Some(o.out)));
    }
    let o = match q.dtype() {
        DType::F32 => forward_t::<f32, f32>(&pb, &q, &k, &v),
        DType::F16 => forward_t::<f16, f16>(&pb, &q, &k, &v),
        DType::BF16 => forward_t::<bf16, bf16>(&pb, &q, &k, &v),
        DType::F64 => forward_t::<f64, f64>(&pb, &q, &k, &v),
        other => Err(AttentionError::Shape(format!("dtype {other} is not supported; use f32, f16, bf16 or f64"))),
    }?;
    Ok((o, None))
}

/// The forward over inputs of element type `T`, writing the output as `O`.
fn forward_t<T: Elem, O: Elem>(pb: &Problem, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<AttentionOutput> {
    let g = Guards::new(&[q, k, v]);
    let (qv, kv, vv) =
        (View::new("q", q, g.slice::<T>(0)?)?, View::new("k", k, g.slice(1)?)?, View::new("v", v, g.slice(2)?)?);
    let (qscale, cap_log2) = scales(pb);
    let dot = dot::Views::of(&qv, &kv, &vv, None);
    let f = fwd::Fwd { pb, q: qv, k: kv, v: vv, qscale, cap_log2, drop: drop_tile(pb), dot };
    let rows = pb.batch * pb.heads_q * pb.seq_q;
    let mut out = vec![O::from_f32(0.0); rows * pb.head_dim];
    let mut lse = vec![f32::NEG_INFINITY; rows];
    f.run(&mut out, &mut lse);
    let dev = Device::Cpu;
    Ok(AttentionOutput {
        out: Tensor::from_vec(out, [pb.batch, pb.heads_q, pb.seq_q, pb.head_dim], &dev)?,
        lse: Tensor::from_vec(lse, [pb.batch, pb.heads_q, pb.seq_q], &dev)?,
    })
}

fn same_as_q(name: &str, t: &Tensor, q: &Tensor) -> Result<()> {
    if t.dims() != q.dims() {
        return Err(AttentionError::Shape(format!(
            "{name} has shape {:?} but q has {:?}; {name} must have q's shape",
            t.dims(),
            q.dims()
        )));
    }
    if t.dtype() != q.dtype() {
        return Err(AttentionError::Shape(format!(
            "{name} is {} but q is {}; convert it with to_dtype({})",
            t.dtype(),
            q.dtype(),
            q.dtype()
        )));
    }
    Ok(())
}

/// Backward pass: gradients of q, k and v given the forward's `out` and `lse` and the output
/// gradient `dout` (shape and dtype of q). `out` has q's dtype, or is f32: the output of an
/// f16/bf16 forward before rounding, which [`crate::attention`] keeps for its backward (more
/// accurate `rowsum(dO * O)`). The module docs describe the scheme.
pub fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    params: &AttentionParams,
) -> Result<AttentionGrads> {
    check_cpu(&[q, k, v, out, lse, dout])?;
    let pb = validate(q, k, v, params)?;
    check_keys(&pb)?;
    if out.dtype() == DType::F32 && out.dims() == q.dims() {
        // the unrounded output of an f16/bf16 forward (or plain f32)
    } else {
        same_as_q("out", out, q)?;
    }
    same_as_q("dout", dout, q)?;
    if lse.dims() != [pb.batch, pb.heads_q, pb.seq_q] {
        return Err(AttentionError::Shape(format!(
            "lse has shape {:?}, expected (batch, heads_q, seq_q) = {:?}; pass the lse returned by forward",
            lse.dims(),
            [pb.batch, pb.heads_q, pb.seq_q]
        )));
    }
    let lse = lse.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let (q, k, v) = (unit_inner(q)?, unit_inner(k)?, unit_inner(v)?);
    let (out, dout) = (unit_inner(out)?, unit_inner(dout)?);
    let ts = [&q, &k, &v, &out, &dout];
    match q.dtype() {
        DType::F32 => backward_t::<f32>(&pb, ts, &lse),
        DType::F16 => backward_t::<f16>(&pb, ts, &lse),
        DType::BF16 => backward_t::<bf16>(&pb, ts, &lse),
        DType::F64 => backward_t::<f64>(&pb, ts, &lse),
        other => Err(AttentionError::Shape(format!("dtype {other} is not supported; use f32, f16, bf16 or f64"))),
    }
}

fn backward_t<T: Elem>(pb: &Problem, ts: [&Tensor; 5], lse: &[f32]) -> Result<AttentionGrads> {
    let g = Guards::new(&ts);
    let view = |i: usize, name: &str| -> Result<View<'_, T>> { View::new(name, ts[i], g.slice(i)?) };
    let (qscale, cap_log2) = scales(pb);
    let dout = view(4, "dout")?;
    let delta = if ts[3].dtype() == T::DTYPE {
        bwd::row_deltas(pb, &view(3, "out")?, &dout)
    } else {
        bwd::row_deltas(pb, &View::<f32>::new("out", ts[3], g.slice(3)?)?, &dout)
    };
    let (q, k, v) = (view(0, "q")?, view(1, "k")?, view(2, "v")?);
    let dot = dot::Views::of(&q, &k, &v, Some(&dout));
    let b = bwd::Bwd {
        pb,
        q,
        k,
        v,
        dout,
        delta: &delta,
        lse,
        qscale,
        cap_log2,
        scale: pb.scale as f32,
        drop: drop_tile(pb),
        dot,
    };
    let zero = T::from_f32(0.0);
    let mut dq = vec![zero; ts[0].elem_count()];
    let mut dk = vec![zero; ts[1].elem_count()];
    let mut dv = vec![zero; ts[2].elem_count()];
    b.run(&mut dq, &mut dk, &mut dv);
    let dev = Device::Cpu;
    Ok(AttentionGrads {
        dq: Tensor::from_vec(dq, ts[0].shape().clone(), &dev)?,
        dk: Tensor::from_vec(dk, ts[1].shape().clone(), &dev)?,
        dv: Tensor::from_vec(dv, ts[2].shape().clone(), &dev)?,
    })
}
