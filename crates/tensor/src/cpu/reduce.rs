//! Generic CPU reduction over a set of dims of a strided layout.

use crate::Layout;
use rayon::prelude::*;

/// Output count above which outputs are computed in parallel.
const PAR_OUTPUTS: usize = 64;
/// Work (elements read) above which reductions go parallel.
const PAR_WORK: usize = 1 << 15;

/// Splits `layout` into the kept dims (output, row-major) and the reduced dims `rdims`
/// (sorted, distinct), and returns for every output the fold of its reduced elements:
/// `fold(acc, offset, len, stride)` folds `len` storage elements starting at `offset` with
/// `stride`, starting from `init()`; `finish(acc)` makes the output value.
pub fn reduce_layout<A, U: Send>(
    layout: &Layout,
    rdims: &[usize],
    init: impl Fn() -> A + Sync,
    fold: impl Fn(A, usize, usize, usize) -> A + Sync,
    finish: impl Fn(A) -> U + Sync,
) -> Vec<U> {
    let dims = layout.dims();
    let strides = layout.strides();
    let (mut kd, mut ks, mut rd, mut rs) = (vec![], vec![], vec![], vec![]);
    for i in 0..dims.len() {
        if rdims.contains(&i) {
            rd.push(dims[i]);
            rs.push(strides[i]);
        } else {
            kd.push(dims[i]);
            ks.push(strides[i]);
        }
    }
    let out_count: usize = kd.iter().product();
    let red_count: usize = rd.iter().product();
    let inner = crate::cpu::strided::Runs::new(&rd, [&rs], [0]);
    let outer = crate::cpu::strided::Runs::new(&kd, [&ks], [layout.offset()]);
    let one = |base: usize| {
        let mut acc = Some(init());
        inner.visit(0, red_count, |_, [o], n, [s]| acc = Some(fold(acc.take().expect("acc"), base + o, n, s)));
        finish(acc.expect("acc"))
    };
    let mut bases = Vec::with_capacity(out_count);
    outer.visit(0, out_count, |_, [o], n, [s]| bases.extend((0..n).map(|i| o + i * s)));
    if out_count >= PAR_OUTPUTS && out_count * red_count >= PAR_WORK {
        bases.par_iter().map(|&b| one(b)).collect()
    } else {
        bases.iter().map(|&b| one(b)).collect()
    }
}

/// Sums `len` elements at `offset` with `stride`, converted to f64 by `conv`.
#[inline]
pub fn sum_piece<T: Copy>(src: &[T], offset: usize, len: usize, stride: usize, conv: impl Fn(T) -> f64) -> f64 {
    if stride == 1 {
        // Four partial sums break the add dependency chain and let the loop vectorise.
        let chunk = &src[offset..offset + len];
        let mut acc = [0f64; 4];
        let mut it = chunk.chunks_exact(4);
        for c in &mut it {
            for k in 0..4 {
                acc[k] += conv(c[k]);
            }
        }
        let tail: f64 = it.remainder().iter().map(|&x| conv(x)).sum();
        acc.iter().sum::<f64>() + tail
    } else {
        (0..len).map(|i| conv(src[offset + i * stride])).sum()
    }
}
