//! Launch plans of the reductions (kernels/tensor/reduce.cu): sum, mean, max, min, argmax,
//! argmin, logsumexp, var and std over any set of dims.

use super::{GpuStorage, StridedMeta, THREADS, dtype_suffix, grid_plan, launch, module};
use crate::{DType, Error, Layout, Result};
use attune_cuda::{Dim3, KernelArg, LaunchPlan};

const FILE: &str = "reduce.cu";
/// Maximum rank of the kept and of the reduced dims after merging.
const RED_RANK: usize = 8;
/// Largest grid of the block-per-output schedule (blocks loop over further outputs).
const MAX_GRID: usize = 65_535;

/// The reductions with a kernel (the entry point is `reduce_{name}_{dtype}`).
pub(crate) const FLOAT_OPS: [&str; 9] = ["sum", "mean", "max", "min", "argmax", "argmin", "logsumexp", "var", "std"];
/// The reductions defined for integer dtypes.
const INT_OPS: [&str; 5] = ["sum", "max", "min", "argmax", "argmin"];

/// Mirrors `ReduceMeta` in reduce.cu: the kept dims (row-major order of the outputs) and the
/// reduced dims, each with the input's strides, after merging.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ReduceMeta {
    n_out: i64,
    n_red: i64,
    out_rank: i32,
    red_rank: i32,
    offset: i64,
    out_dims: [i64; RED_RANK],
    out_strides: [i64; RED_RANK],
    red_dims: [i64; RED_RANK],
    red_strides: [i64; RED_RANK],
}

/// Drops dims of size 1 and merges neighbours `a, b` (in list order) when `stride_a ==
/// stride_b * size_b`; the row-major order of the visited offsets is unchanged.
fn merge_dims(dims: impl Iterator<Item = (usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (size, stride) in dims {
        if size == 1 {
            continue;
        }
        if let Some((psize, pstride)) = out.last_mut()
            && *pstride == stride * size
        {
            *psize *= size;
            *pstride = stride;
            continue;
        }
        out.push((size, stride));
    }
    out
}

impl ReduceMeta {
    /// The descriptor of `l` reduced over the sorted, distinct dims `rdims`.
    pub(crate) fn new(op: &'static str, l: &Layout, rdims: &[usize]) -> Result<ReduceMeta> {
        let (dims, strides) = (l.dims(), l.strides());
        let pairs =
            |keep: bool| (0..dims.len()).filter(move |d| rdims.contains(d) != keep).map(|d| (dims[d], strides[d]));
        let (kept, red) = (merge_dims(pairs(true)), merge_dims(pairs(false)));
        if kept.len() > RED_RANK || red.len() > RED_RANK {
            return Err(Error::invalid(
                op,
                format!(
                    "the GPU reduction indexes at most {RED_RANK} kept and {RED_RANK} reduced non-mergeable dims, got \
                     dims {dims:?} reduced over {rdims:?}; make the tensor contiguous first"
                ),
            ));
        }
        let mut m = ReduceMeta {
            n_out: kept.iter().map(|p| p.0).product::<usize>() as i64,
            n_red: red.iter().map(|p| p.0).product::<usize>() as i64,
            out_rank: kept.len() as i32,
            red_rank: red.len() as i32,
            offset: l.offset() as i64,
            out_dims: [1; RED_RANK],
            out_strides: [0; RED_RANK],
            red_dims: [1; RED_RANK],
            red_strides: [0; RED_RANK],
        };
        for (i, &(s, st)) in kept.iter().enumerate() {
            (m.out_dims[i], m.out_strides[i]) = (s as i64, st as i64);
        }
        for (i, &(s, st)) in red.iter().enumerate() {
            (m.red_dims[i], m.red_strides[i]) = (s as i64, st as i64);
        }
        // Empty kept dims mean zero outputs even when merging dropped them (size 0 never merges
        // away, so the products above already count it).
        Ok(m)
    }

    /// The schedule: `(mode, threads, blocks)`; mode 1 runs one thread per output.
    fn schedule(&self) -> (i32, u32, u32) {
        let (n_out, n_red) = (self.n_out as usize, self.n_red as usize);
        let innermost = |rank: i32, strides: &[i64; RED_RANK]| if rank > 0 { strides[rank as usize - 1] } else { 0 };
        // Neighbouring outputs adjacent in memory while the reduced elements are not: one
        // thread per output reads coalesced rows (the column reduction of a matrix).
        let columns = innermost(self.out_rank, &self.out_strides) == 1
            && innermost(self.red_rank, &self.red_strides) != 1
            && n_out >= 1024;
        if n_red <= 32 || columns {
            let blocks = n_out.div_ceil(THREADS as usize).clamp(1, super::MAX_BLOCKS) as u32;
            return (1, THREADS, blocks);
        }
        let threads = n_red.next_power_of_two().clamp(32, THREADS as usize) as u32;
        (0, threads, n_out.clamp(1, MAX_GRID) as u32)
    }
}

/// Whether reduction `name` has a kernel for `dtype`.
pub(crate) fn has_kernel(name: &str, dtype: DType) -> bool {
    if dtype.is_float() { FLOAT_OPS.contains(&name) } else { INT_OPS.contains(&name) }
}

/// Reduces `x` viewed by `l` over the sorted dims `rdims` with the reduction `name`; `param` is
/// the correction of var/std. The output is contiguous (kept dims in row-major order), of
/// `x`'s dtype, or i64 for argmax/argmin.
pub(crate) fn reduce(
    op: &'static str,
    name: &str,
    param: f64,
    x: &GpuStorage,
    l: &Layout,
    rdims: &[usize],
) -> Result<GpuStorage> {
    if !has_kernel(name, x.dtype) {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype, hint: "convert to a float dtype first" });
    }
    let meta = ReduceMeta::new(op, l, rdims)?;
    let out_dtype = if name.starts_with("arg") { DType::I64 } else { x.dtype };
    let dev = x.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, out_dtype, meta.n_out as usize)?;
    if meta.n_out == 0 {
        return Ok(out);
    }
    let (mode, threads, blocks) = meta.schedule();
    let args = vec![KernelArg::pod(&meta), KernelArg::I32(mode), KernelArg::F64(param), x.arg(0), out.arg(0)];
    let entry = format!("reduce_{name}_{}", dtype_suffix(x.dtype));
    let plan = LaunchPlan::new(module(FILE), entry, Dim3::x(blocks), Dim3::x(threads), args);
    launch(op, &dev, &plan)?;
    Ok(out)
}

/// The element-wise helpers of the reduction backward passes (op code = position), named like
/// the CPU's private binary kernels in ops/reduce.rs.
const BACKWARD_HELPERS: [&str; 3] = ["max_backward", "logsumexp_backward", "std_backward"];

/// `y = helper(a, b)` over two layouts already broadcast to one shape (float dtypes).
pub(crate) fn backward_helper(
    op: &'static str,
    a: &GpuStorage,
    al: &Layout,
    b: &GpuStorage,
    bl: &Layout,
) -> Result<GpuStorage> {
    let code = BACKWARD_HELPERS.iter().position(|n| *n == op).ok_or_else(|| {
        Error::invalid(op, format!("no GPU kernel for '{op}'; this is a bug in attune-tensor's GPU backend"))
    })?;
    if !a.dtype.is_float() {
        return Err(Error::UnsupportedDType { op, dtype: a.dtype, hint: "convert to a float dtype first" });
    }
    let meta = StridedMeta::contiguous_out(op, &[al, bl])?;
    let dev = a.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, a.dtype, meta.n())?;
    let args = vec![KernelArg::I32(code as i32), KernelArg::pod(&meta), a.arg(0), b.arg(0), out.arg(0)];
    let entry = format!("reduce_bwd_{}", dtype_suffix(a.dtype));
    launch(op, &dev, &grid_plan(module(FILE), entry, meta.n(), args))?;
    Ok(out)
}

/// Every entry point of reduce.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    let mut out: Vec<String> = [DType::F16, DType::BF16, DType::F32, DType::F64]
        .iter()
        .map(|&d| format!("reduce_bwd_{}", dtype_suffix(d)))
        .collect();
    for d in [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64] {
        let names: &[&str] = if d.is_float() { &FLOAT_OPS } else { &INT_OPS };
        out.extend(names.iter().map(|n| format!("reduce_{n}_{}", dtype_suffix(d))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;

    /// The input offsets of every (output, reduced element) pair, as the kernel computes them.
    fn visits(m: &ReduceMeta) -> Vec<Vec<i64>> {
        let off = |mut i: i64, rank: i32, dims: &[i64; RED_RANK], strides: &[i64; RED_RANK]| {
            let mut o = 0;
            for d in (0..rank as usize).rev() {
                o += (i % dims[d]) * strides[d];
                i /= dims[d];
            }
            o
        };
        (0..m.n_out)
            .map(|o| {
                let base = m.offset + off(o, m.out_rank, &m.out_dims, &m.out_strides);
                (0..m.n_red).map(|r| base + off(r, m.red_rank, &m.red_dims, &m.red_strides)).collect()
            })
            .collect()
    }

    #[test]
    fn merged_descriptors_visit_the_same_elements_in_order() {
        // [2, 3, 4, 5] transposed in its middle dims, offset 7, reduced over dims 1 and 3.
        let l = Layout::new(Shape::from(vec![2, 4, 3, 5]), vec![60, 5, 20, 1], 7);
        let m = ReduceMeta::new("test", &l, &[1, 3]).unwrap();
        let mut want = Vec::new();
        for a in 0..2 {
            for c in 0..3 {
                let mut row = Vec::new();
                for b in 0..4 {
                    for d in 0..5 {
                        row.push(7 + a * 60 + b * 5 + c * 20 + d);
                    }
                }
                want.push(row);
            }
        }
        assert_eq!(visits(&m), want);
        // A contiguous tensor reduced over its trailing dims collapses to rank 1 twice.
        let c = Layout::contiguous(vec![3, 4, 5]);
        let m = ReduceMeta::new("test", &c, &[1, 2]).unwrap();
        assert_eq!((m.out_rank, m.red_rank, m.n_out, m.n_red), (1, 1, 3, 20));
    }
}
