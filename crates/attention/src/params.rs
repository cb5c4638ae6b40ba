//! Attention parameters (docs/attention.md) and their validation against the inputs' shapes.

use crate::error::{AttentionError, Result};
use attune_tensor::Tensor;

/// Attention dropout: probability `p` and the Philox stream `(seed, offset)` (docs/attention.md, "Dropout").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of dropping a probability entry, in `[0, 1)`.
    pub p: f64,
    /// Philox key.
    pub seed: u64,
    /// First Philox counter of the stream.
    pub offset: u64,
}

/// Everything besides q, k and v that defines an attention call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionParams {
    /// Score scale; `None` means `1/sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Causal mask, aligned bottom-right (query i sees key j iff `j <= i + seq_k - seq_q`).
    pub causal: bool,
    /// Sliding window `(left, right)`, -1 meaning unbounded. Combined with `causal` by
    /// taking the tighter right bound.
    pub window: Option<(i64, i64)>,
    /// Softcap `c > 0`: `score = c * tanh(scale * q.k / c)`.
    pub softcap: Option<f64>,
    /// Dropout on the attention probabilities.
    pub dropout: Option<Dropout>,
    /// Key padding: the number of valid keys of each batch entry (`<= seq_k`).
    pub seqlens_k: Option<Vec<usize>>,
    /// Packed variable-length sequences: with batch 1, queries `cu_seqlens_q[s]..cu_seqlens_q[s+1]`
    /// attend to keys `cu_seqlens_k[s]..cu_seqlens_k[s+1]`.
    pub cu_seqlens: Option<(Vec<usize>, Vec<usize>)>,
    /// Deterministic backward on GPU devices: dQ without atomics, so two runs give bitwise-equal
    /// gradients (a little slower). The CPU backward is always deterministic.
    pub deterministic: bool,
}

impl AttentionParams {
    /// Default parameters: full (non-causal) attention with the default scale.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets causal masking.
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }
    /// Sets the score scale.
    pub fn scale(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }
    /// Sets a sliding window `(left, right)`, -1 unbounded.
    pub fn window(mut self, left: i64, right: i64) -> Self {
        self.window = Some((left, right));
        self
    }
    /// Sets the softcap.
    pub fn softcap(mut self, cap: f64) -> Self {
        self.softcap = Some(cap);
        self
    }
    /// Sets dropout with a Philox stream.
    pub fn dropout(mut self, p: f64, seed: u64, offset: u64) -> Self {
        self.dropout = Some(Dropout { p, seed, offset });
        self
    }
    /// Sets key padding lengths, one per batch entry.
    pub fn seqlens_k(mut self, lens: Vec<usize>) -> Self {
        self.seqlens_k = Some(lens);
        self
    }
    /// Asks for a deterministic backward (GPU devices; the CPU always is).
    pub fn deterministic(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }
    /// Sets packed variable-length sequences.
    pub fn cu_seqlens(mut self, q: Vec<usize>, k: Vec<usize>) -> Self {
        self.cu_seqlens = Some((q, k));
        self
    }
}

/// One independent attention problem: queries `q_start..q_start+q_len` of batch entry
/// `batch` attend to keys `k_start..k_start+k_len` (indices along the seq dims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Batch index.
    pub batch: usize,
    /// First query row.
    pub q_start: usize,
    /// Number of query rows.
    pub q_len: usize,
    /// First key row.
    pub k_start: usize,
    /// Number of visible key rows before masking.
    pub k_len: usize,
}

/// Validated geometry of a call: every implementation works from this.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Batch size.
    pub batch: usize,
    /// Query heads.
    pub heads_q: usize,
    /// Key/value heads (divides `heads_q`).
    pub heads_kv: usize,
    /// Query sequence length (packed total for varlen).
    pub seq_q: usize,
    /// Key sequence length (packed total for varlen).
    pub seq_k: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Score scale.
    pub scale: f64,
    /// Window `(left, right)` with causal folded in; `None` bounds are unbounded.
    pub left: Option<usize>,
    /// Right bound of the window (0 when causal).
    pub right: Option<usize>,
    /// Softcap.
    pub softcap: Option<f64>,
    /// Dropout.
    pub dropout: Option<Dropout>,
    /// The independent problems.
    pub segments: Vec<Segment>,
}

impl Problem {
    /// The kv head read by query head `h`.
    pub fn kv_head(&self, h: usize) -> usize {
        h / (self.heads_q / self.heads_kv)
    }

    /// Visible keys of local query `i` in a segment, as a half-open range of local key
    /// indices (every mask of docs/attention.md leaves an interval). Empty when none is visible.
    pub fn key_range(&self, seg: &Segment, i: usize) -> (usize, usize) {
        // Bottom-right alignment: the diagonal of query i is key i + k_len - q_len.
        let diag = i as i64 + seg.k_len as i64 - seg.q_len as i64;
        let lo = self.left.map_or(0, |l| (diag - l as i64).max(0));
        let hi = self.right.map_or(seg.k_len as i64, |r| (diag + r as i64 + 1).min(seg.k_len as i64));
        let lo = lo.min(seg.k_len as i64);
        if hi <= lo { (0, 0) } else { (lo as usize, hi as usize) }
    }

    /// Index of the dropout stream element of (batch, head, query row, key row), all
    /// global along the tensors' dims: `((b * heads_q + h) * seq_q + i) * seq_k + j`.
    pub fn dropout_index(&self, b: usize, h: usize, i: usize, j: usize) -> u64 {
        (((b * self.heads_q + h) * self.seq_q + i) as u64) * self.seq_k as u64 + j as u64
    }

    /// The dropout multiplier of (batch, head, query row, key row), global indices: 0 when
    /// the Philox stream drops the element, `1 / (1 - p)` when it keeps it, 1 without dropout.
    /// Keep iff `(word >> 8) >= threshold_24(p)` (attune_tensor::cpu::philox conventions).
    pub fn dropout_scale(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        use attune_tensor::cpu::philox;
        let Some(dr) = self.dropout else { return 1.0 };
        let idx = self.dropout_index(b, h, i, j);
        let w = philox::block(dr.seed, dr.offset.wrapping_add(idx / 4))[(idx % 4) as usize];
        if (w >> 8) < philox::threshold_24(dr.p) { 0.0 } else { 1.0 / (1.0 - dr.p) }
    }

    /// Forward FLOPs by docs/benchmarks.md (`4 * b * hq * sq * sk * d`, halved when causal).
    pub fn fwd_flops(&self, causal: bool) -> f64 {
        let f = 4.0 * (self.batch * self.heads_q) as f64 * self.seq_q as f64 * self.seq_k as f64 * self.head_dim as f64;
        if causal { f / 2.0 } else { f }
    }
}

fn dims4(name: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        d => Err(AttentionError::Shape(format!(
            "{name} must have 4 dims (batch, heads, seq, head_dim), got shape {d:?}; reshape or unsqueeze it"
        ))),
    }
}

/// Checks q, k, v and the parameters together and builds the [`Problem`].
pub fn validate(q: &Tensor, k: &Tensor, v: &Tensor, p: &AttentionParams) -> Result<Problem> {
    let [b, hq, sq, d] = dims4("q", q)?;
    let [bk, hk, sk, dk] = dims4("k", k)?;
    let vd = dims4("v", v)?;
    if k.dims() != v.dims() {
        return Err(AttentionError::Shape(format!(
            "k has shape {:?} but v has {:?}; k and v must have the same shape",
            k.dims(),
            v.dims()
        )));
    }
    let _ = vd;
    if dk != d {
        return Err(AttentionError::Shape(format!(
            "q has head_dim {d} but k has {dk}; q, k and v must share head_dim"
        )));
    }
    if bk != b {
        return Err(AttentionError::Shape(format!("q has batch {b} but k and v have {bk}; they must match")));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(AttentionError::Shape(format!(
            "q has {hq} heads and k/v have {hk}; heads_q must be a multiple of heads_kv (GQA/MQA)"
        )));
    }
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != q.dtype() {
            return Err(AttentionError::Shape(format!(
                "q is {} but {name} is {}; convert with to_dtype so q, k and v share a dtype",
                q.dtype(),
                t.dtype()
            )));
        }
        if t.device() != q.device() {
            return Err(AttentionError::Shape(format!(
                "q is on {} but {name} is on {}; move them to one device",
                q.device(),
                t.device()
            )));
        }
    }
    if !q.dtype().is_float() {
        return Err(AttentionError::Shape(format!("dtype {} is not supported; use f32, f16, bf16 or f64", q.dtype())));
    }
    let scale = p.scale.unwrap_or(1.0 / (d.max(1) as f64).sqrt());
    if !scale.is_finite() {
        return Err(AttentionError::Param(format!("scale must be finite, got {scale}")));
    }
    let (mut left, mut right) = (None, None);
    if let Some((l, r)) = p.window {
        for (name, x) in [("left", l), ("right", r)] {
            if x < -1 {
                return Err(AttentionError::Param(format!(
                    "window {name} bound is {x}; use a value >= 0, or -1 for unbounded"
                )));
            }
        }
        left = (l >= 0).then_some(l as usize);
        right = (r >= 0).then_some(r as usize);
    }
    if p.causal {
        // Causal caps the right bound at the diagonal; any right bound is >= 0.
        right = Some(0);
    }
    if let Some(c) = p.softcap.filter(|c| !(*c > 0.0 && c.is_finite())) {
        return Err(AttentionError::Param(format!("softcap must be > 0 and finite, got {c}; omit it to disable")));
    }
    if let Some(dr) = p.dropout.filter(|d| !(0.0..1.0).contains(&d.p)) {
        return Err(AttentionError::Param(format!("dropout p must be in [0, 1), got {}", dr.p)));
    }
    let segments = match (&p.seqlens_k, &p.cu_seqlens) {
        (Some(_), Some(_)) => {
            return Err(AttentionError::Param(
                "seqlens_k and cu_seqlens are exclusive; packed sequences already carry their key lengths".into(),
            ));
        }
        (Some(lens), None) => {
            if lens.len() != b {
                return Err(AttentionError::Param(format!("seqlens_k has {} entries for batch {b}", lens.len())));
            }
            if let Some((i, &l)) = lens.iter().enumerate().find(|&(_, &l)| l > sk) {
                return Err(AttentionError::Param(format!("seqlens_k[{i}] = {l} exceeds seq_k {sk}")));
            }
            lens.iter()
                .enumerate()
                .map(|(i, &l)| Segment { batch: i, q_start: 0, q_len: sq, k_start: 0, k_len: l })
                .collect()
        }
        (None, Some((cq, ck))) => varlen_segments(b, sq, sk, cq, ck)?,
        (None, None) => (0..b).map(|i| Segment { batch: i, q_start: 0, q_len: sq, k_start: 0, k_len: sk }).collect(),
    };
    Ok(Problem {
        batch: b,
        heads_q: hq,
        heads_kv: hk,
        seq_q: sq,
        seq_k: sk,
        head_dim: d,
        scale,
        left,
        right,
        softcap: p.softcap,
        dropout: p.dropout.filter(|d| d.p > 0.0),
        segments,
    })
}

fn varlen_segments(b: usize, sq: usize, sk: usize, cq: &[usize], ck: &[usize]) -> Result<Vec<Segment>> {
    if b != 1 {
        return Err(AttentionError::Param(format!(
            "cu_seqlens needs packed inputs with batch 1 (sequences along the seq dim), got batch {b}"
        )));
    }
    if cq.len() != ck.len() || cq.len() < 2 {
        return Err(AttentionError::Param(format!(
            "cu_seqlens_q has {} entries and cu_seqlens_k {}; both need (sequences + 1) >= 2 entries",
            cq.len(),
            ck.len()
        )));
    }
    for (name, cu, total) in [("cu_seqlens_q", cq, sq), ("cu_seqlens_k", ck, sk)] {
        if cu[0] != 0 || cu.windows(2).any(|w| w[1] < w[0]) {
            return Err(AttentionError::Param(format!("{name} {cu:?} must start at 0 and never decrease")));
        }
        if *cu.last().unwrap_or(&0) != total {
            return Err(AttentionError::Param(format!(
                "{name} ends at {} but the packed length is {total}; the last entry must equal it",
                cu.last().unwrap_or(&0)
            )));
        }
    }
    Ok((0..cq.len() - 1)
        .map(|s| Segment {
            batch: 0,
            q_start: cq[s],
            q_len: cq[s + 1] - cq[s],
            k_start: ck[s],
            k_len: ck[s + 1] - ck[s],
        })
        .collect())
}
