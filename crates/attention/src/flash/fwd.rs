//! The forward pass: one task per (batch, head, query tile), an online softmax over the key
//! tiles the tile's rows can see, one score tile in flight per thread.

use super::dot;
use super::dropout::DropTile;
use super::io::{Elem, View, split_segments, tiles};
use super::kernel::Acc;
use super::{BK, BQ, Ranges, kernel, vmath};
use crate::params::{Problem, Segment};
use rayon::prelude::*;

/// Everything a forward tile reads.
pub struct Fwd<'a, T> {
    pub pb: &'a Problem,
    pub q: View<'a, T>,
    pub k: View<'a, T>,
    pub v: View<'a, T>,
    /// Folded into the transposed query tile: `scale * log2(e)`, or `scale / cap` with a softcap.
    pub qscale: f32,
    /// `cap * log2(e)` when a softcap is set.
    pub cap_log2: Option<f32>,
    pub drop: Option<DropTile>,
    /// The bf16 views when the tile products run on bf16 dot products ([`dot`]).
    pub dot: Option<dot::Views<'a>>,
}

/// Per-thread buffers, reused across tiles.
pub struct Scratch {
    qt: Vec<f32>,
    s: Vec<f32>,
    mult: Vec<f32>,
    o: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
    words: Vec<u32>,
    ranges: Ranges,
    /// The bf16 dot-product path's operands (empty on the f32 path): `Q^T` and `K` as words
    /// along head_dim, `P` and `V` as pairs of keys.
    qtw: Vec<u32>,
    kw: Vec<u32>,
    pw: Vec<u32>,
    vw: Vec<u32>,
}

impl Scratch {
    pub fn new(d: usize, dot: bool) -> Self {
        let words = |n: usize| dot::scratch(n, dot);
        let dp = d.div_ceil(2);
        Scratch {
            qtw: words(dp * BQ),
            kw: words(BK * dp),
            pw: words(BK / 2 * BQ),
            vw: words(BK / 2 * d),
            qt: vec![0.0; d * BQ],
            s: vec![0.0; BK * BQ],
            mult: vec![0.0; BK * BQ],
            o: vec![0.0; BQ * d],
            kbuf: vec![0.0; BK * d],
            vbuf: vec![0.0; BK * d],
            m: vec![0.0; BQ],
            l: vec![0.0; BQ],
            alpha: vec![0.0; BQ],
            words: vec![0; BK],
            ranges: Ranges::new(),
        }
    }
}

impl<T: Elem> Fwd<'_, T> {
    /// Rows `t0 .. t0 + rows` (local to `seg`) of query head `h`: writes their output rows
    /// (`rows * head_dim` elements) and lse (natural log).
    #[allow(clippy::too_many_arguments)]
    pub fn tile<O: Elem>(
        &self,
        seg: &Segment,
        h: usize,
        t0: usize,
        rows: usize,
        out: &mut [O],
        lse: &mut [f32],
        sc: &mut Scratch,
    ) {
        let pb = self.pb;
        let (d, b, hk) = (pb.head_dim, seg.batch, pb.kv_head(h));
        let (kept, after) = DropTile::scales(self.drop.as_ref(), self.dot.is_some());
        let rg = &mut sc.ranges;
        rg.compute(pb, seg, t0, rows, None);
        if rg.ulo >= rg.uhi {
            out.iter_mut().for_each(|x| *x = O::from_f32(0.0));
            lse.fill(f32::NEG_INFINITY);
            return;
        }
        match &self.dot {
            Some(x) => dot::words_t(&x.q, b, h, seg.q_start + t0, rows, &mut sc.qtw, BQ),
            None => self.q.load_t(b, h, seg.q_start + t0, rows, self.qscale, &mut sc.qt, BQ),
        }
        sc.m[..rows].fill(f32::NEG_INFINITY);
        sc.l[..rows].fill(0.0);
        sc.o[..rows * d].fill(0.0);

        let mut kt0 = rg.ulo;
        while kt0 < rg.uhi {
            let bk = BK.min(rg.uhi - kt0);
            let gk0 = seg.k_start + kt0;
            // S^T = K Q^T, keys as rows.
            match &self.dot {
                Some(x) => {
                    let (kw, kwl) = dot::row_words(&x.k, b, hk, gk0, bk, &mut sc.kw);
                    let dp = d.div_ceil(2);
                    dot::gemm(bk, rows, dp, kw, kwl, 1, &sc.qtw, BQ, &mut sc.s, BQ, Acc::Overwrite, self.qscale);
                }
                None => {
                    let (ka, kld) = self.k.rows(b, hk, gk0, bk, &mut sc.kbuf);
                    kernel::gemm(bk, rows, d, ka, kld, 1, &sc.qt, BQ, &mut sc.s, BQ, Acc::Overwrite);
                }
            }
            if let Some(c) = self.cap_log2 {
                vmath::softcap(&mut sc.s, None, bk, rows, BQ, c);
            }
            if !rg.is_full(kt0, bk) {
                vmath::mask(&mut sc.s, bk, rows, BQ, kt0 as u32, &rg.lo, &rg.hi);
            }
            // Online softmax in the exp2 domain.
            vmath::online_step(&mut sc.s, bk, rows, BQ, &mut sc.m, &mut sc.l, &mut sc.alpha);
            if let Some(dr) = &self.drop {
                let base = |r: usize| pb.dropout_index(b, h, seg.q_start + t0 + r, gk0);
                dr.fill(kept, &mut sc.mult, bk, rows, BQ, base, &mut sc.words);
                for j in 0..bk {
                    for (x, &m) in sc.s[j * BQ..][..rows].iter_mut().zip(&sc.mult[j * BQ..][..rows]) {
                        *x *= m;
                    }
                }
            }
            // O = O * alpha + P V, P read transposed from the score tile (rounded to bf16
            // first on the dot-product path, as FlashAttention does on GPUs).
            match &self.dot {
                Some(x) => {
                    let (ars, aps) = dot::key_pairs(&sc.s, bk, rows, BQ, &mut sc.pw);
                    dot::row_pairs(&x.v, b, hk, gk0, bk, &mut sc.vw, d);
                    let (kp, alpha) = (bk.div_ceil(2), Acc::ScaleAdd(&sc.alpha));
                    dot::gemm(rows, d, kp, &sc.pw, ars, aps, &sc.vw, d, &mut sc.o, d, alpha, 1.0);
                }
                None => {
                    let (va, vld) = self.v.rows(b, hk, gk0, bk, &mut sc.vbuf);
                    kernel::gemm(rows, d, bk, &sc.s, 1, BQ, va, vld, &mut sc.o, d, Acc::ScaleAdd(&sc.alpha));
                }
            }
            kt0 += bk;
        }

        for r in 0..rows {
            let l = sc.l[r];
            let orow = &mut sc.o[r * d..][..d];
            if l > 0.0 {
                let inv = after / l;
                orow.iter_mut().for_each(|x| *x *= inv);
                lse[r] = ((sc.m[r] as f64 + (l as f64).log2()) * std::f64::consts::LN_2) as f32;
            } else {
                orow.fill(0.0);
                lse[r] = f32::NEG_INFINITY;
            }
            O::narrow(orow, &mut out[r * d..][..d]);
        }
    }

    /// Runs every tile in parallel. `out` is `(batch, heads_q, seq_q, head_dim)` (in the input
    /// type, or f32 for an unrounded output) and `lse` `(batch, heads_q, seq_q)`, both
    /// row-major; rows outside every segment are left as given.
    pub fn run<O: Elem>(&self, out: &mut [O], lse: &mut [f32]) {
        let pb = self.pb;
        let d = pb.head_dim;
        let span = |s: &Segment| (s.q_start, s.q_len);
        let outs = split_segments(out, pb.batch, pb.heads_q, pb.seq_q, d, &pb.segments, span);
        let lses = split_segments(lse, pb.batch, pb.heads_q, pb.seq_q, 1, &pb.segments, span);
        let mut work = Vec::new();
        for ((h, si, o), (_, _, l)) in outs.into_iter().zip(lses) {
            let seg = &pb.segments[si];
            for ((t0, rows, ot), (_, _, lt)) in tiles(o, seg.q_len, d, BQ).into_iter().zip(tiles(l, seg.q_len, 1, BQ)) {
                work.push((seg, h, t0, rows, ot, lt));
            }
        }
        work.into_par_iter().for_each_init(
            || Scratch::new(d, self.dot.is_some()),
            |sc, (seg, h, t0, rows, ot, lt)| self.tile(seg, h, t0, rows, ot, lt, sc),
        );
    }
}
