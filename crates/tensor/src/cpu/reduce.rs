//! CPU reductions over any set of dims of a strided layout, and the vectorisable `exp` used by
//! softmax.
//!
//! [`reduce`] picks one of two traversals so the inner loop always walks contiguous memory
//! when the data allows it:
//! - **row path** (a reduced dim has stride 1, e.g. the last dim of a contiguous tensor): each
//!   output folds contiguous runs with [`LANES`] independent accumulators, which breaks the
//!   dependency chain and lets the loop vectorise;
//! - **column path** (the reduced dims are strided but the last kept dims are contiguous, e.g.
//!   dim 0 of `[4096, 512]`, the bias-gradient case): whole input rows are folded into a tile
//!   of accumulators, one contiguous slice at a time, instead of walking strided columns.
//!
//! Both go parallel with rayon above [`PAR_WORK`] elements: over outputs (or output tiles) when
//! there are enough of them, otherwise by splitting the reduced range into chunks whose partial
//! accumulators are merged in order.

use crate::Layout;
use crate::cpu::strided::Runs;
use half::{bf16, f16};
use rayon::prelude::*;

/// Work (elements read) above which reductions go parallel.
pub const PAR_WORK: usize = 1 << 15;
/// Independent accumulators per contiguous run (enough for 8 f64 or 16 f32 SIMD lanes after
/// the compiler's SLP pass; more would only add merge cost).
pub const LANES: usize = 8;
/// Accumulators per column-path task: 8192 f64 accumulators (64 KiB) stay in L2 while input
/// rows stream past them in 32 KiB (f32) contiguous pieces that keep the prefetchers busy
/// (measured against 1024 and 2048: equal or better on [64, 65536], [16, 2^20], [4096, 512]).
const TILE: usize = 8192;

/// A reduction as four functions. `step(acc, x, index)` folds one element whose position in
/// the (row-major) reduced index space is `index`; `merge(a, b)` combines the accumulators of
/// two disjoint sets of elements (`a`'s elements come first); `finish` makes the output.
/// `merge` must be associative and, for deterministic ties, must not depend on which of two
/// lanes is passed first except through the indices it sees.
pub struct Fold<I, S, M, F> {
    /// A fresh accumulator (the value for an empty set before `finish`).
    pub init: I,
    /// Folds one element.
    pub step: S,
    /// Combines two partial accumulators.
    pub merge: M,
    /// Turns an accumulator into an output value.
    pub finish: F,
}

/// Splits dims into (kept dims, kept strides, reduced dims, reduced strides), in logical order.
fn split_dims(layout: &Layout, rdims: &[usize]) -> [Vec<usize>; 4] {
    let (mut kd, mut ks, mut rd, mut rs) = (vec![], vec![], vec![], vec![]);
    for (i, (&d, &s)) in layout.dims().iter().zip(layout.strides()).enumerate() {
        if rdims.contains(&i) {
            rd.push(d);
            rs.push(s);
        } else {
            kd.push(d);
            ks.push(s);
        }
    }
    [kd, ks, rd, rs]
}

/// The number of trailing kept dims forming one contiguous (stride 1) block, and its length.
/// Size-1 dims are transparent; the block must start with a stride-1 dim.
fn contiguous_tail(kd: &[usize], ks: &[usize]) -> (usize, usize) {
    let mut len = 1;
    let mut count = 0;
    for i in (0..kd.len()).rev() {
        if kd[i] == 1 {
            count += 1;
            continue;
        }
        if ks[i] != len {
            break;
        }
        len *= kd[i];
        count += 1;
    }
    if len == 1 { (0, 1) } else { (count, len) }
}

/// Folds `n` elements `src[off + i * stride]` (reduced indices `idx0 + i`) into `acc`.
#[inline(always)]
fn fold_run<T: Copy, A: Copy>(
    step: &impl Fn(A, T, usize) -> A,
    merge: &impl Fn(A, A) -> A,
    init: &impl Fn() -> A,
    mut acc: A,
    src: &[T],
    (off, n, stride): (usize, usize, usize),
    idx0: usize,
) -> A {
    if stride == 1 {
        let xs = &src[off..off + n];
        if n < 2 * LANES {
            for (i, &x) in xs.iter().enumerate() {
                acc = step(acc, x, idx0 + i);
            }
            return acc;
        }
        // Independent lanes: lane k sees elements k, k + LANES, ... (in increasing index order).
        let mut lanes = [init(); LANES];
        let mut chunks = xs.chunks_exact(LANES);
        let mut idx = idx0;
        for c in &mut chunks {
            for k in 0..LANES {
                lanes[k] = step(lanes[k], c[k], idx + k);
            }
            idx += LANES;
        }
        for (k, &x) in chunks.remainder().iter().enumerate() {
            lanes[k] = step(lanes[k], x, idx + k);
        }
        lanes.into_iter().fold(acc, merge)
    } else {
        for i in 0..n {
            acc = step(acc, src[off + i * stride], idx0 + i);
        }
        acc
    }
}

/// Reduces `src` viewed by `layout` over the sorted, distinct dims `rdims`; returns the
/// outputs in row-major order of the kept dims. An empty reduced set gives `finish(init())`.
pub fn reduce<T, A, U, I, S, M, F>(src: &[T], layout: &Layout, rdims: &[usize], f: &Fold<I, S, M, F>) -> Vec<U>
where
    T: Copy + Sync,
    A: Copy + Send + Sync,
    U: Send,
    I: Fn() -> A + Sync,
    S: Fn(A, T, usize) -> A + Sync,
    M: Fn(A, A) -> A + Sync,
    F: Fn(A) -> U + Sync,
{
    let [kd, ks, rd, rs] = split_dims(layout, rdims);
    let out_count: usize = kd.iter().product();
    let red_count: usize = rd.iter().product();
    if out_count == 0 {
        return Vec::new();
    }
    if red_count == 0 {
        return (0..out_count).map(|_| (f.finish)((f.init)())).collect();
    }
    let inner = Runs::new(&rd, [&rs], [0]);
    let reduced_has_unit_stride = rd.iter().zip(&rs).any(|(&d, &s)| d > 1 && s == 1);
    let (tail_dims, block) = contiguous_tail(&kd, &ks);
    if !reduced_has_unit_stride && block > 1 {
        let split = kd.len() - tail_dims;
        let outer = Runs::new(&kd[..split], [&ks[..split]], [layout.offset()]);
        column_path(src, &outer, &inner, block, red_count, f)
    } else {
        let outer = Runs::new(&kd, [&ks], [layout.offset()]);
        row_path(src, &outer, &inner, red_count, f)
    }
}

/// Storage offsets of every position of `runs`, in order.
fn offsets(runs: &Runs<1>) -> Vec<usize> {
    let mut v = Vec::with_capacity(runs.len());
    runs.visit(0, runs.len(), |_, [o], n, [s]| v.extend((0..n).map(|i| o + i * s)));
    v
}

/// How many chunks to split `red_count` reduced elements into when outputs are too few to
/// keep every thread busy.
fn chunk_len(red_count: usize, per_elem: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let min_len = (PAR_WORK / per_elem.max(1)).max(1);
    red_count.div_ceil(4 * threads).max(min_len)
}

fn row_path<T, A, U, I, S, M, F>(
    src: &[T],
    outer: &Runs<1>,
    inner: &Runs<1>,
    red: usize,
    f: &Fold<I, S, M, F>,
) -> Vec<U>
where
    T: Copy + Sync,
    A: Copy + Send + Sync,
    U: Send,
    I: Fn() -> A + Sync,
    S: Fn(A, T, usize) -> A + Sync,
    M: Fn(A, A) -> A + Sync,
    F: Fn(A) -> U + Sync,
{
    let fold_range = |base: usize, start: usize, end: usize| {
        let mut acc = (f.init)();
        inner.visit(start, end, |pos, [o], n, [s]| {
            acc = fold_run(&f.step, &f.merge, &f.init, acc, src, (base + o, n, s), pos);
        });
        acc
    };
    let bases = offsets(outer);
    let threads = rayon::current_num_threads().max(1);
    if bases.len() * red < PAR_WORK {
        bases.iter().map(|&b| (f.finish)(fold_range(b, 0, red))).collect()
    } else if bases.len() >= 2 * threads {
        let min_len = (PAR_WORK / red).max(1);
        bases.par_iter().with_min_len(min_len).map(|&b| (f.finish)(fold_range(b, 0, red))).collect()
    } else {
        // Few long outputs (e.g. a sum over everything): split each one's reduced range.
        let len = chunk_len(red, 1);
        bases
            .iter()
            .map(|&b| {
                let parts: Vec<A> = (0..red.div_ceil(len))
                    .into_par_iter()
                    .map(|c| fold_range(b, c * len, ((c + 1) * len).min(red)))
                    .collect();
                (f.finish)(parts.into_iter().fold((f.init)(), &f.merge))
            })
            .collect()
    }
}

fn column_path<T, A, U, I, S, M, F>(
    src: &[T],
    outer: &Runs<1>,
    inner: &Runs<1>,
    block: usize,
    red: usize,
    f: &Fold<I, S, M, F>,
) -> Vec<U>
where
    T: Copy + Sync,
    A: Copy + Send + Sync,
    U: Send,
    I: Fn() -> A + Sync,
    S: Fn(A, T, usize) -> A + Sync,
    M: Fn(A, A) -> A + Sync,
    F: Fn(A) -> U + Sync,
{
    // Folds reduced elements [start, end) into the accumulators of columns
    // [col, col + accs.len()) of the block starting at `base`.
    let fold_cols = |accs: &mut [A], base: usize, start: usize, end: usize| {
        let w = accs.len();
        let step = &f.step;
        inner.visit(start, end, |pos, [o], n, [s]| {
            let row = |i: usize| &src[base + o + i * s..base + o + i * s + w];
            let mut i = 0;
            // Four rows per sweep: each accumulator is loaded and stored once per four
            // elements, in index order, so any `step` sees the same sequence.
            while i + 4 <= n {
                let (r0, r1, r2, r3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
                let p = pos + i;
                for ((((a, &x0), &x1), &x2), &x3) in accs.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                    *a = step(step(step(step(*a, x0, p), x1, p + 1), x2, p + 2), x3, p + 3);
                }
                i += 4;
            }
            for i in i..n {
                for (a, &x) in accs.iter_mut().zip(row(i)) {
                    *a = step(*a, x, pos + i);
                }
            }
        });
    };
    let bases = offsets(outer);
    let tiles = block.div_ceil(TILE);
    // Task t covers outer block t / tiles, columns (t % tiles) * TILE.., so task outputs
    // concatenate in row-major output order.
    let task = |t: usize| -> (usize, usize, usize) {
        let col = (t % tiles) * TILE;
        (bases[t / tiles] + col, col, (block - col).min(TILE))
    };
    let n_tasks = bases.len() * tiles;
    let finish_all = |accs: Vec<A>| accs.into_iter().map(&f.finish).collect::<Vec<U>>();
    let threads = rayon::current_num_threads().max(1);
    let chunks: Vec<Vec<U>> = if n_tasks * TILE.min(block) * red < PAR_WORK {
        (0..n_tasks)
            .map(|t| {
                let (base, _, w) = task(t);
                let mut accs = vec![(f.init)(); w];
                fold_cols(&mut accs, base, 0, red);
                finish_all(accs)
            })
            .collect()
    } else if n_tasks >= 2 * threads {
        (0..n_tasks)
            .into_par_iter()
            .map(|t| {
                let (base, _, w) = task(t);
                let mut accs = vec![(f.init)(); w];
                fold_cols(&mut accs, base, 0, red);
                finish_all(accs)
            })
            .collect()
    } else {
        // Few tiles (e.g. one [4096, 512] bias gradient): split the reduced rows into chunks,
        // fold each into its own partial tile, then merge the partials in order.
        (0..n_tasks)
            .map(|t| {
                let (base, _, w) = task(t);
                let len = chunk_len(red, w);
                let parts: Vec<Vec<A>> = (0..red.div_ceil(len))
                    .into_par_iter()
                    .map(|c| {
                        let mut accs = vec![(f.init)(); w];
                        fold_cols(&mut accs, base, c * len, ((c + 1) * len).min(red));
                        accs
                    })
                    .collect();
                let mut it = parts.into_iter();
                let mut total = it.next().unwrap_or_else(|| vec![(f.init)(); w]);
                for p in it {
                    for (a, b) in total.iter_mut().zip(p) {
                        *a = (f.merge)(*a, b);
                    }
                }
                finish_all(total)
            })
            .collect()
    };
    chunks.into_iter().flatten().collect()
}

/// An element type as seen by comparisons (max, min, argmax, argmin): f16/bf16 compare in f32,
/// other types natively. `nan` is false for integers.
pub trait CmpElem: Copy + Send + Sync {
    /// The comparison type.
    type C: Copy + PartialOrd + Send + Sync;
    /// The smallest value of `C` (the start of a max).
    const LOWEST: Self::C;
    /// The largest value of `C` (the start of a min).
    const HIGHEST: Self::C;
    /// Converts to the comparison type (exactly).
    fn up(self) -> Self::C;
    /// Converts back (exact for values produced by `up`).
    fn down(c: Self::C) -> Self;
    /// Whether `c` is NaN.
    fn nan(c: Self::C) -> bool;
}

macro_rules! cmp_elem {
    ($t:ty, $c:ty, $lo:expr, $hi:expr, $up:expr, $down:expr, $nan:expr) => {
        impl CmpElem for $t {
            type C = $c;
            const LOWEST: $c = $lo;
            const HIGHEST: $c = $hi;
            #[inline(always)]
            fn up(self) -> $c {
                $up(self)
            }
            #[inline(always)]
            fn down(c: $c) -> Self {
                $down(c)
            }
            #[inline(always)]
            #[allow(clippy::redundant_closure_call)]
            fn nan(c: $c) -> bool {
                $nan(c)
            }
        }
    };
}
cmp_elem!(f16, f32, f32::NEG_INFINITY, f32::INFINITY, f16::to_f32, f16::from_f32, |c: f32| c.is_nan());
cmp_elem!(bf16, f32, f32::NEG_INFINITY, f32::INFINITY, bf16::to_f32, bf16::from_f32, |c: f32| c.is_nan());
cmp_elem!(f32, f32, f32::NEG_INFINITY, f32::INFINITY, |x| x, |c| c, |c: f32| c.is_nan());
cmp_elem!(f64, f64, f64::NEG_INFINITY, f64::INFINITY, |x| x, |c| c, |c: f64| c.is_nan());
cmp_elem!(u8, u8, 0, u8::MAX, |x| x, |c| c, |_| false);
cmp_elem!(u32, u32, 0, u32::MAX, |x| x, |c| c, |_| false);
cmp_elem!(i64, i64, i64::MIN, i64::MAX, |x| x, |c| c, |_| false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_tail_finds_the_stride_one_block() {
        assert_eq!(contiguous_tail(&[4, 5], &[5, 1]), (2, 20));
        assert_eq!(contiguous_tail(&[4, 5], &[10, 1]), (1, 5));
        assert_eq!(contiguous_tail(&[4, 1, 5], &[5, 99, 1]), (3, 20));
        assert_eq!(contiguous_tail(&[4, 5], &[1, 4]), (0, 1));
        assert_eq!(contiguous_tail(&[], &[]), (0, 1));
    }
}
