//! The backward pass, FlashAttention-2 style: `D = rowsum(dO * O)` per query row, P
//! recomputed from the lse, and all five tile products per (query tile, key tile) pair.
//!
//! Determinism without atomics: a task owns one (segment, kv head, query chunk) and walks, in
//! a fixed order, the query tiles of its chunk for every query head of the GQA group. It
//! writes dQ of those tiles directly (each dQ tile has exactly one owner) and accumulates dK
//! and dV of the kv head into its own f32 buffers; the chunks' buffers are then summed in
//! chunk order. The chunk count depends on the shape only ([`chunks`]), never on the thread
//! count, so results are bit-identical for any pool size.

use super::dot;
use super::dropout::DropTile;
use super::io::{Elem, View, split_segments, tiles};
use super::kernel::Acc;
use super::{BK, BQ, Ranges, kernel, vmath};
use crate::params::{Problem, Segment};
use rayon::prelude::*;

/// `D = rowsum(dO * O)` for every `(batch, heads_q, seq_q)` row, in f32, from the stored
/// output (of the input dtype, or the f32 output of an f16/bf16 forward).
pub fn row_deltas<O: Elem, T: Elem>(pb: &Problem, out: &View<'_, O>, dout: &View<'_, T>) -> Vec<f32> {
    let mut delta = vec![0.0f32; pb.batch * pb.heads_q * pb.seq_q];
    delta.par_chunks_mut(pb.seq_q.max(1)).enumerate().for_each(|(bh, rows)| {
        let (b, h) = (bh / pb.heads_q, bh % pb.heads_q);
        for (i, d) in rows.iter_mut().enumerate() {
            *d = dout.row(b, h, i).iter().zip(out.row(b, h, i)).map(|(g, o)| g.to_f32() * o.to_f32()).sum();
        }
    });
    delta
}

/// Tasks the chunking aims for when there are few (segment, kv head) units: enough to keep
/// 16 threads busy with some balance. A constant, so the result is the same on any machine.
const TARGET_TASKS: usize = 16;
/// Cap on the f32 memory of the per-chunk dK/dV partial buffers.
const PARTIAL_BYTES: usize = 1 << 29;

/// Everything a backward tile reads.
pub struct Bwd<'a, T> {
    pub pb: &'a Problem,
    pub q: View<'a, T>,
    pub k: View<'a, T>,
    pub v: View<'a, T>,
    pub dout: View<'a, T>,
    /// `D = rowsum(dO * O)` per `(batch, heads_q, seq_q)` row (see [`row_deltas`]).
    pub delta: &'a [f32],
    /// `(batch, heads_q, seq_q)` row-major, natural log.
    pub lse: &'a [f32],
    /// As in the forward: `scale * log2(e)`, or `scale / cap` with a softcap.
    pub qscale: f32,
    pub cap_log2: Option<f32>,
    /// The score scale (dS carries it into dQ and dK).
    pub scale: f32,
    pub drop: Option<DropTile>,
    /// The bf16 views when the tile products run on bf16 dot products ([`dot`]).
    pub dot: Option<dot::Views<'a>>,
}

struct Scratch {
    qt: Vec<f32>,
    dot_t: Vec<f32>,
    qbuf: Vec<f32>,
    dobuf: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    s: Vec<f32>,
    dp: Vec<f32>,
    t: Vec<f32>,
    mult: Vec<f32>,
    dq: Vec<f32>,
    lse2: Vec<f32>,
    words: Vec<u32>,
    ranges: Ranges,
    dot: DotBufs,
}

/// The bf16 dot-product path's operands (empty on the f32 path).
struct DotBufs {
    /// `Q^T` and `dO^T` as words along head_dim.
    qtw: Vec<u32>,
    dotw: Vec<u32>,
    /// Q and dO as pairs of query rows.
    qw: Vec<u32>,
    dow: Vec<u32>,
    /// K and V rows as words along head_dim (when not read in place), K as pairs of keys.
    kw: Vec<u32>,
    vw: Vec<u32>,
    kpw: Vec<u32>,
    /// `P^T` or `dS^T` as words along the queries; `dS^T` as pairs of keys.
    tw: Vec<u32>,
    sw: Vec<u32>,
}

impl DotBufs {
    fn new(d: usize, dot: bool) -> Self {
        let words = |n: usize| dot::scratch(n, dot);
        let dp = d.div_ceil(2);
        DotBufs {
            qtw: words(dp * BQ),
            dotw: words(dp * BQ),
            qw: words(BQ / 2 * d),
            dow: words(BQ / 2 * d),
            kw: words(BK * dp),
            vw: words(BK * dp),
            kpw: words(BK / 2 * d),
            tw: words(BK * BQ / 2),
            sw: words(BK / 2 * BQ),
        }
    }
}

impl Scratch {
    fn new(d: usize, dot: bool) -> Self {
        Scratch {
            dot: DotBufs::new(d, dot),
            qt: vec![0.0; d * BQ],
            dot_t: vec![0.0; d * BQ],
            qbuf: vec![0.0; BQ * d],
            dobuf: vec![0.0; BQ * d],
            kbuf: vec![0.0; BK * d],
            vbuf: vec![0.0; BK * d],
            s: vec![0.0; BK * BQ],
            dp: vec![0.0; BK * BQ],
            t: vec![0.0; BK * BQ],
            mult: vec![0.0; BK * BQ],
            dq: vec![0.0; BQ * d],
            lse2: vec![0.0; BQ],
            words: vec![0; BK],
            ranges: Ranges::new(),
        }
    }
}

/// One dQ tile a task owns: query head, first local row, rows, output slice.
type DqTile<'a, T> = (usize, usize, usize, &'a mut [T]);

/// The work of one (segment, kv head, chunk): its dQ tiles and, when the segment has a single
/// chunk, the kv head's dK/dV rows of the segment.
struct Task<'a, T> {
    seg: usize,
    tiles: Vec<DqTile<'a, T>>,
    dk: Option<&'a mut [T]>,
    dv: Option<&'a mut [T]>,
}

/// Number of query chunks per (segment, kv head): 1 when there are enough units to spread
/// over threads, more (at most the number of query tiles) for small batches and head counts,
/// fewer when the partial buffers would need more than [`PARTIAL_BYTES`].
fn chunks(pb: &Problem) -> usize {
    let units = pb.segments.iter().filter(|s| s.q_len > 0 && s.k_len > 0).count() * pb.heads_kv;
    if units == 0 {
        return 1;
    }
    let max_tiles = pb.segments.iter().map(|s| s.q_len.div_ceil(BQ)).max().unwrap_or(1).max(1);
    let keys: usize = pb.segments.iter().map(|s| s.k_len).sum::<usize>() * pb.heads_kv;
    let per_chunk = (keys * pb.head_dim * 2 * 4).max(1);
    TARGET_TASKS.div_ceil(units).min(max_tiles).min((PARTIAL_BYTES / per_chunk).max(1))
}

impl<T: Elem> Bwd<'_, T> {
    /// One dQ tile: recomputes P and dS against every visible key tile, writes dQ, and adds
    /// into `dk`/`dv` (the segment's keys, `k_len * head_dim`, f32).
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        seg: &Segment,
        h: usize,
        t0: usize,
        rows: usize,
        dq_out: &mut [T],
        dk: &mut [f32],
        dv: &mut [f32],
        sc: &mut Scratch,
    ) {
        let pb = self.pb;
        let (d, b, hk) = (pb.head_dim, seg.batch, pb.kv_head(h));
        let gq0 = seg.q_start + t0;
        let row0 = (b * pb.heads_q + h) * pb.seq_q + gq0;
        let lse_row = &self.lse[row0..][..rows];
        let rg = &mut sc.ranges;
        rg.compute(pb, seg, t0, rows, Some(lse_row));
        if rg.ulo >= rg.uhi {
            dq_out.iter_mut().for_each(|x| *x = T::from_f32(0.0));
            return;
        }
        for (r, &l) in lse_row.iter().enumerate() {
            sc.lse2[r] = if l == f32::NEG_INFINITY { 0.0 } else { (l as f64 * std::f64::consts::LOG2_E) as f32 };
        }
        let dp = d.div_ceil(2);
        let (mut qa, mut qld, mut da, mut dld): (&[f32], _, &[f32], _) = (&[], 0, &[], 0);
        match &self.dot {
            Some(x) => {
                let g = x.dout.as_ref().expect("the backward's views carry dout");
                dot::words_t(&x.q, b, h, gq0, rows, &mut sc.dot.qtw, BQ);
                dot::words_t(g, b, h, gq0, rows, &mut sc.dot.dotw, BQ);
                dot::row_pairs(&x.q, b, h, gq0, rows, &mut sc.dot.qw, d);
                dot::row_pairs(g, b, h, gq0, rows, &mut sc.dot.dow, d);
            }
            None => {
                self.q.load_t(b, h, gq0, rows, self.qscale, &mut sc.qt, BQ);
                self.dout.load_t(b, h, gq0, rows, 1.0, &mut sc.dot_t, BQ);
                (qa, qld) = self.q.rows(b, h, gq0, rows, &mut sc.qbuf);
                (da, dld) = self.dout.rows(b, h, gq0, rows, &mut sc.dobuf);
            }
        }
        sc.dq[..rows * d].fill(0.0);

        let mut kt0 = rg.ulo;
        while kt0 < rg.uhi {
            let bk = BK.min(rg.uhi - kt0);
            let gk0 = seg.k_start + kt0;
            // S^T = K Q^T and dP^T = V dO^T; K's f32 rows are kept for dQ.
            let (mut ka, mut kld): (&[f32], _) = (&[], 0);
            match &self.dot {
                Some(x) => {
                    let (kw, kwl) = dot::row_words(&x.k, b, hk, gk0, bk, &mut sc.dot.kw);
                    dot::gemm(bk, rows, dp, kw, kwl, 1, &sc.dot.qtw, BQ, &mut sc.s, BQ, Acc::Overwrite, self.qscale);
                    let (vw, vwl) = dot::row_words(&x.v, b, hk, gk0, bk, &mut sc.dot.vw);
                    dot::gemm(bk, rows, dp, vw, vwl, 1, &sc.dot.dotw, BQ, &mut sc.dp, BQ, Acc::Overwrite, 1.0);
                }
                None => {
                    (ka, kld) = self.k.rows(b, hk, gk0, bk, &mut sc.kbuf);
                    let (va, vld) = self.v.rows(b, hk, gk0, bk, &mut sc.vbuf);
                    kernel::gemm(bk, rows, d, ka, kld, 1, &sc.qt, BQ, &mut sc.s, BQ, Acc::Overwrite);
                    kernel::gemm(bk, rows, d, va, vld, 1, &sc.dot_t, BQ, &mut sc.dp, BQ, Acc::Overwrite);
                }
            }
            // P^T = exp2(S^T - lse), masked entries 0.
            if let Some(c) = self.cap_log2 {
                vmath::softcap(&mut sc.s, Some(&mut sc.t), bk, rows, BQ, c);
            }
            if !rg.is_full(kt0, bk) {
                vmath::mask(&mut sc.s, bk, rows, BQ, kt0 as u32, &rg.lo, &rg.hi);
            }
            vmath::exp_rows(&mut sc.s, bk, rows, BQ, &sc.lse2);
            // dV += (P * dropout)^T dO, with dP scaled by the same multipliers.
            let dk_t = &mut dk[kt0 * d..][..bk * d];
            let dv_t = &mut dv[kt0 * d..][..bk * d];
            let (kept, inv_keep) = DropTile::scales(self.drop.as_ref(), self.dot.is_some());
            if let Some(dr) = &self.drop {
                let base = |r: usize| pb.dropout_index(b, h, gq0 + r, gk0);
                dr.fill(kept, &mut sc.mult, bk, rows, BQ, base, &mut sc.words);
                for j in 0..bk {
                    let (m, p) = (&mut sc.mult[j * BQ..][..rows], &sc.s[j * BQ..][..rows]);
                    for ((m, p), g) in m.iter_mut().zip(p).zip(&mut sc.dp[j * BQ..][..rows]) {
                        *g *= *m * inv_keep;
                        *m *= *p;
                    }
                }
            }
            let pt = if self.drop.is_some() { &sc.mult } else { &sc.s };
            if self.dot.is_some() {
                dot::tile_words(pt, bk, rows, BQ, &mut sc.dot.tw, BQ / 2);
                let rp = rows.div_ceil(2);
                dot::gemm(bk, d, rp, &sc.dot.tw, BQ / 2, 1, &sc.dot.dow, d, dv_t, d, Acc::Add, inv_keep);
            } else {
                kernel::gemm(bk, d, rows, pt, BQ, 1, da, dld, dv_t, d, Acc::Add);
            }
            // dS = P (dP - D) [(1 - tanh^2)] scale, in place of dP.
            let delta = &self.delta[row0..][..rows];
            for j in 0..bk {
                let (p, g) = (&sc.s[j * BQ..][..rows], &mut sc.dp[j * BQ..][..rows]);
                match self.cap_log2 {
                    None => {
                        for ((g, &p), &dl) in g.iter_mut().zip(p).zip(delta) {
                            *g = p * (*g - dl) * self.scale;
                        }
                    }
                    Some(_) => {
                        let t = &sc.t[j * BQ..][..rows];
                        for (((g, &p), &dl), &t) in g.iter_mut().zip(p).zip(delta).zip(t) {
                            *g = p * (*g - dl) * (1.0 - t * t) * self.scale;
                        }
                    }
                }
            }
            // dK += dS^T Q; dQ += dS K.
            match &self.dot {
                Some(x) => {
                    dot::tile_words(&sc.dp, bk, rows, BQ, &mut sc.dot.tw, BQ / 2);
                    let rp = rows.div_ceil(2);
                    dot::gemm(bk, d, rp, &sc.dot.tw, BQ / 2, 1, &sc.dot.qw, d, dk_t, d, Acc::Add, 1.0);
                    let (ars, aps) = dot::key_pairs(&sc.dp, bk, rows, BQ, &mut sc.dot.sw);
                    dot::row_pairs(&x.k, b, hk, gk0, bk, &mut sc.dot.kpw, d);
                    let kp = bk.div_ceil(2);
                    dot::gemm(rows, d, kp, &sc.dot.sw, ars, aps, &sc.dot.kpw, d, &mut sc.dq, d, Acc::Add, 1.0);
                }
                None => {
                    kernel::gemm(bk, d, rows, &sc.dp, BQ, 1, qa, qld, dk_t, d, Acc::Add);
                    kernel::gemm(rows, d, bk, &sc.dp, 1, BQ, ka, kld, &mut sc.dq, d, Acc::Add);
                }
            }
            kt0 += bk;
        }
        for r in 0..rows {
            T::narrow(&sc.dq[r * d..][..d], &mut dq_out[r * d..][..d]);
        }
    }

    /// Computes dq (like q) and dk, dv (like k) into zero-initialised row-major buffers.
    pub fn run(&self, dq: &mut [T], dk: &mut [T], dv: &mut [T]) {
        let pb = self.pb;
        let (d, hkv) = (pb.head_dim, pb.heads_kv);
        let nchunks = chunks(pb);
        let group = pb.heads_q / hkv;
        let ntasks = pb.segments.len() * hkv * nchunks;
        let mut tasks: Vec<Task<'_, T>> =
            (0..ntasks).map(|i| Task { seg: i / (hkv * nchunks), tiles: Vec::new(), dk: None, dv: None }).collect();
        // Task (segment, kv head, chunk) owns its dQ tiles, in (head, tile) order.
        let span_q = |s: &Segment| (s.q_start, s.q_len);
        for (h, si, part) in split_segments(dq, pb.batch, pb.heads_q, pb.seq_q, d, &pb.segments, span_q) {
            if pb.segments[si].k_len == 0 {
                continue; // no visible key: dq stays zero
            }
            for (t, (t0, rows, slice)) in tiles(part, pb.segments[si].q_len, d, BQ).into_iter().enumerate() {
                tasks[(si * hkv + h / group) * nchunks + t % nchunks].tiles.push((h, t0, rows, slice));
            }
        }
        let span_k = |s: &Segment| (s.k_start, s.k_len);
        let dks = split_segments(dk, pb.batch, hkv, pb.seq_k, d, &pb.segments, span_k);
        let dvs = split_segments(dv, pb.batch, hkv, pb.seq_k, d, &pb.segments, span_k);
        if nchunks == 1 {
            // A single chunk owns its dK/dV rows outright: write them in place (f32
            // accumulates directly in the output, other dtypes round once at the end).
            for ((kh, si, dk_out), (_, _, dv_out)) in dks.into_iter().zip(dvs) {
                let task = &mut tasks[si * hkv + kh];
                (task.dk, task.dv) = (Some(dk_out), Some(dv_out));
            }
            tasks.into_par_iter().for_each_init(
                || self.scratch(),
                |sc, task| {
                    self.task(task, sc);
                },
            );
            return;
        }
        let partials: Vec<Option<(Vec<f32>, Vec<f32>)>> =
            tasks.into_par_iter().map_init(|| self.scratch(), |sc, task| self.task(task, sc)).collect();
        // Sum the chunks of each (segment, kv head) in chunk order and round once.
        dks.into_par_iter().zip(dvs).for_each(|((kh, si, dk_out), (_, _, dv_out))| {
            let first = (si * hkv + kh) * nchunks;
            let parts: Vec<&(Vec<f32>, Vec<f32>)> = partials[first..first + nchunks].iter().flatten().collect();
            let Some(((k0, v0), rest)) = parts.split_first() else { return };
            let (mut ks, mut vs) = (k0.clone(), v0.clone());
            for (kp, vp) in rest {
                ks.iter_mut().zip(kp).for_each(|(s, &x)| *s += x);
                vs.iter_mut().zip(vp).for_each(|(s, &x)| *s += x);
            }
            T::narrow(&ks, dk_out);
            T::narrow(&vs, dv_out);
        });
    }

    /// A task's tile buffers. One per rayon split, reused by its tasks as a task reuses them
    /// between its tiles: a task of a short sequence (a ViT's 49 patches) is small, and
    /// zeroing fresh ~170 KiB per task was 2.5% of a ViT training step.
    fn scratch(&self) -> Scratch {
        Scratch::new(self.pb.head_dim, self.dot.is_some())
    }

    /// Runs one task's dQ tiles in order. With its output dK/dV rows it writes them and
    /// returns None; without (one chunk of several) it returns its f32 partial dK and dV.
    fn task(&self, task: Task<'_, T>, sc: &mut Scratch) -> Option<(Vec<f32>, Vec<f32>)> {
        let Task { seg, tiles, dk, dv } = task;
        if tiles.is_empty() {
            return None;
        }
        let seg = &self.pb.segments[seg];
        let n = seg.k_len * self.pb.head_dim;
        let run = |kacc: &mut [f32], vacc: &mut [f32]| {
            for (h, t0, rows, slice) in tiles {
                self.tile(seg, h, t0, rows, slice, kacc, vacc, sc);
            }
        };
        match (dk, dv) {
            (Some(dk), Some(dv)) => {
                if let (Some(kf), Some(vf)) = (T::direct_mut(&mut *dk), T::direct_mut(&mut *dv)) {
                    run(kf, vf);
                } else {
                    let (mut kacc, mut vacc) = (vec![0.0f32; n], vec![0.0f32; n]);
                    run(&mut kacc, &mut vacc);
                    T::narrow(&kacc, dk);
                    T::narrow(&vacc, dv);
                }
                None
            }
            _ => {
                let (mut kacc, mut vacc) = (vec![0.0f32; n], vec![0.0f32; n]);
                run(&mut kacc, &mut vacc);
                Some((kacc, vacc))
            }
        }
    }
}
