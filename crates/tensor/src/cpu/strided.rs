//! Row-major traversal of strided layouts in runs, so inner loops are plain (vectorisable)
//! slices whenever the innermost coalesced dim is contiguous or broadcast.

use std::mem::MaybeUninit;

/// Elements above which element-wise loops are split across rayon threads.
pub const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per rayon task.
const PAR_CHUNK: usize = 1 << 14;

/// `N` layouts of the same shape, coalesced into an outer odometer and an inner run.
pub struct Runs<const N: usize> {
    outer: Vec<usize>,
    outer_strides: [Vec<usize>; N],
    base: [usize; N],
    run_len: usize,
    run_strides: [usize; N],
    len: usize,
}

impl<const N: usize> Runs<N> {
    /// Builds the traversal of `dims` with one (strides, offset) pair per operand.
    pub fn new(dims: &[usize], strides: [&[usize]; N], offsets: [usize; N]) -> Self {
        let len = dims.iter().product();
        // Coalesce from the innermost dim outwards, dropping size-1 dims.
        let mut cd: Vec<usize> = Vec::new();
        let mut cs: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
        for i in (0..dims.len()).rev() {
            if dims[i] == 1 {
                continue;
            }
            let mergeable =
                !cd.is_empty() && (0..N).all(|k| strides[k][i] == cs[k].last().unwrap() * cd.last().unwrap());
            if mergeable {
                *cd.last_mut().unwrap() *= dims[i];
            } else {
                cd.push(dims[i]);
                for k in 0..N {
                    cs[k].push(strides[k][i]);
                }
            }
        }
        cd.reverse();
        for s in cs.iter_mut() {
            s.reverse();
        }
        let run_len = cd.pop().unwrap_or(1);
        let run_strides = std::array::from_fn(|k| cs[k].pop().unwrap_or(1));
        Runs { outer: cd, outer_strides: cs, base: offsets, run_len, run_strides, len }
    }

    /// Total element count.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no element to visit.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f(out_pos, offsets, len, strides)` for the pieces covering elements `[start, end)`.
    pub fn visit(&self, start: usize, end: usize, mut f: impl FnMut(usize, [usize; N], usize, [usize; N])) {
        if start >= end {
            return;
        }
        let run = start / self.run_len;
        let mut within = start % self.run_len;
        // Unravel the run index into the outer odometer.
        let mut idx = vec![0; self.outer.len()];
        let mut r = run;
        for d in (0..self.outer.len()).rev() {
            idx[d] = r % self.outer[d];
            r /= self.outer[d];
        }
        let mut pos = start;
        while pos < end {
            let offs: [usize; N] = std::array::from_fn(|k| {
                self.base[k]
                    + idx.iter().zip(&self.outer_strides[k]).map(|(i, s)| i * s).sum::<usize>()
                    + within * self.run_strides[k]
            });
            let n = (self.run_len - within).min(end - pos);
            f(pos, offs, n, self.run_strides);
            pos += n;
            within = 0;
            for d in (0..self.outer.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.outer[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

/// Fills a fresh vector of `runs.len()` elements, in parallel above [`PAR_THRESHOLD`].
/// `fill(out, offsets, strides)` writes `out.len()` elements starting at the given offsets.
pub fn fill_vec<U: Send, const N: usize>(
    runs: &Runs<N>,
    fill: impl Fn(&mut [MaybeUninit<U>], [usize; N], [usize; N]) + Sync,
) -> Vec<U> {
    use rayon::prelude::*;
    let len = runs.len();
    let mut out: Vec<U> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let work = |chunk_start: usize, chunk: &mut [MaybeUninit<U>]| {
        runs.visit(chunk_start, chunk_start + chunk.len(), |pos, offs, n, strides| {
            let o = pos - chunk_start;
            fill(&mut chunk[o..o + n], offs, strides)
        })
    };
    if len >= PAR_THRESHOLD {
        spare.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| work(i * PAR_CHUNK, c));
    } else {
        work(0, spare);
    }
    // SAFETY: `visit` covers every position of [0, len) exactly once and `fill` writes each.
    unsafe { out.set_len(len) };
    out
}

/// Maps a strided operand element-wise into a new contiguous vector.
pub fn map1<T: Copy + Sync, U: Send>(
    src: &[T],
    dims: &[usize],
    strides: &[usize],
    offset: usize,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let runs = Runs::new(dims, [strides], [offset]);
    fill_vec(&runs, |out, [o], [s]| {
        let n = out.len();
        if s == 1 {
            for (d, &x) in out.iter_mut().zip(&src[o..o + n]) {
                d.write(f(x));
            }
        } else {
            for (i, d) in out.iter_mut().enumerate() {
                d.write(f(src[o + i * s]));
            }
        }
    })
}

/// Maps two same-shape strided operands element-wise into a new contiguous vector.
#[allow(clippy::too_many_arguments)]
pub fn map2<A: Copy + Sync, B: Copy + Sync, U: Send>(
    a: &[A],
    a_strides: &[usize],
    a_offset: usize,
    b: &[B],
    b_strides: &[usize],
    b_offset: usize,
    dims: &[usize],
    f: impl Fn(A, B) -> U + Sync,
) -> Vec<U> {
    let runs = Runs::new(dims, [a_strides, b_strides], [a_offset, b_offset]);
    fill_vec(&runs, |out, [oa, ob], [sa, sb]| {
        let n = out.len();
        match (sa, sb) {
            (1, 1) => {
                for ((d, &x), &y) in out.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                    d.write(f(x, y));
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (d, &x) in out.iter_mut().zip(&a[oa..oa + n]) {
                    d.write(f(x, y));
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (d, &y) in out.iter_mut().zip(&b[ob..ob + n]) {
                    d.write(f(x, y));
                }
            }
            _ => {
                for (i, d) in out.iter_mut().enumerate() {
                    d.write(f(a[oa + i * sa], b[ob + i * sb]));
                }
            }
        }
    })
}

/// Maps three same-shape strided operands element-wise (used by `where_cond`).
#[allow(clippy::too_many_arguments)]
pub fn map3<A: Copy + Sync, B: Copy + Sync, C: Copy + Sync, U: Send>(
    a: (&[A], &[usize], usize),
    b: (&[B], &[usize], usize),
    c: (&[C], &[usize], usize),
    dims: &[usize],
    f: impl Fn(A, B, C) -> U + Sync,
) -> Vec<U> {
    let runs = Runs::new(dims, [a.1, b.1, c.1], [a.2, b.2, c.2]);
    fill_vec(&runs, |out, [oa, ob, oc], [sa, sb, sc]| {
        let n = out.len();
        // Slice loops (no index arithmetic or bounds checks) for the common where_cond shapes:
        // all contiguous, or one of the branches a broadcast scalar (masked fill).
        match (sa, sb, sc) {
            (1, 1, 1) => {
                let abc = a.0[oa..oa + n].iter().zip(&b.0[ob..ob + n]).zip(&c.0[oc..oc + n]);
                for (d, ((&x, &y), &z)) in out.iter_mut().zip(abc) {
                    d.write(f(x, y, z));
                }
            }
            (1, 1, 0) => {
                let z = c.0[oc];
                for (d, (&x, &y)) in out.iter_mut().zip(a.0[oa..oa + n].iter().zip(&b.0[ob..ob + n])) {
                    d.write(f(x, y, z));
                }
            }
            (1, 0, 1) => {
                let y = b.0[ob];
                for (d, (&x, &z)) in out.iter_mut().zip(a.0[oa..oa + n].iter().zip(&c.0[oc..oc + n])) {
                    d.write(f(x, y, z));
                }
            }
            _ => {
                for (i, d) in out.iter_mut().enumerate() {
                    d.write(f(a.0[oa + i * sa], b.0[ob + i * sb], c.0[oc + i * sc]));
                }
            }
        }
    })
}

/// Copies the elements of `src` (viewed by `src_layout`) into `dst` at `dst_layout` (same shape).
pub fn copy_into<T: Copy>(dst: &mut [T], dst_layout: &crate::Layout, src: &[T], src_layout: &crate::Layout) {
    let runs = Runs::new(
        dst_layout.dims(),
        [dst_layout.strides(), src_layout.strides()],
        [dst_layout.offset(), src_layout.offset()],
    );
    runs.visit(0, runs.len(), |_, [od, os], n, [sd, ss]| {
        if sd == 1 && ss == 1 {
            dst[od..od + n].copy_from_slice(&src[os..os + n]);
        } else {
            for i in 0..n {
                dst[od + i * sd] = src[os + i * ss];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_offsets(dims: &[usize], strides: &[usize], offset: usize) -> Vec<usize> {
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut i| {
                let mut o = offset;
                for d in (0..dims.len()).rev() {
                    o += (i % dims[d]) * strides[d];
                    i /= dims[d];
                }
                o
            })
            .collect()
    }

    #[test]
    fn runs_match_naive_unravel_for_any_range() {
        let cases: &[(&[usize], &[usize], usize)] = &[
            (&[2, 3, 4], &[12, 4, 1], 0),
            (&[4, 3, 2], &[1, 4, 12], 5),
            (&[2, 1, 3], &[3, 99, 1], 1),
            (&[3, 5], &[0, 1], 2),
            (&[], &[], 7),
            (&[2, 0, 3], &[0, 3, 1], 0),
        ];
        for &(dims, strides, off) in cases {
            let expect = naive_offsets(dims, strides, off);
            let src: Vec<usize> = (0..200).collect();
            for (start, end) in [(0, expect.len()), (1, expect.len().saturating_sub(1)), (5, 7)] {
                if start > end || end > expect.len() {
                    continue;
                }
                let runs = Runs::new(dims, [strides], [off]);
                let mut got = vec![];
                runs.visit(start, end, |pos, [o], n, [s]| {
                    assert_eq!(pos, start + got.len());
                    got.extend((0..n).map(|i| src[o + i * s]));
                });
                assert_eq!(got, expect[start..end], "{dims:?} {strides:?} {start}..{end}");
            }
        }
    }

    #[test]
    fn parallel_fill_matches_sequential() {
        let n = PAR_THRESHOLD * 3 + 17;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        // A transposed view: dims [17, k] of a [k, 17] matrix.
        let k = n / 17;
        let got = map1(&a, &[17, k], &[1, 17], 0, |x| x * 2.0);
        for (i, g) in got.iter().enumerate() {
            let (r, c) = (i / k, i % k);
            assert_eq!(*g, a[c * 17 + r] * 2.0);
        }
    }
}
