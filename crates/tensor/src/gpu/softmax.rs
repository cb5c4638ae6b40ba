//! Launch plans of softmax and log-softmax along one dim (kernels/tensor/softmax.cu).

use super::{GpuStorage, THREADS, dtype_suffix, launch, module};
use crate::{DType, Error, Layout, Result};
use attune_cuda::{Dim3, KernelArg, LaunchPlan};

const FILE: &str = "softmax.cu";
/// Largest grid of the block-per-row schedule (blocks loop over further rows).
const MAX_GRID: usize = 65_535;

/// Every block size [`row_schedule`] (and reduce.rs's schedule, which follows the same rule)
/// can launch: a power of two of at least 64 threads (rows of 32 or fewer run one thread per
/// row in blocks of `THREADS`), at most `THREADS`. build-kernels reports these entries at each.
pub(crate) const ROW_BLOCKS: [u32; 3] = [64, 128, 256];

/// `(mode, threads, blocks)` for `rows` rows of `d` elements `inner` apart: one thread per row
/// (mode 1) for short rows and for rows along an outer dim with many rows (neighbouring
/// threads then read neighbouring addresses), else one block per row.
pub(crate) fn row_schedule(rows: usize, d: usize, inner: usize) -> (i32, u32, u32) {
    if d <= 32 || (inner > 1 && rows >= 1024) {
        let blocks = rows.div_ceil(THREADS as usize).clamp(1, super::MAX_BLOCKS) as u32;
        return (1, THREADS, blocks);
    }
    let threads = d.next_power_of_two().clamp(32, THREADS as usize) as u32;
    (0, threads, rows.clamp(1, MAX_GRID) as u32)
}

/// Softmax (`log`: log-softmax) of `x` viewed by `l` along `dim`; the output is contiguous.
pub(crate) fn softmax(op: &'static str, x: &GpuStorage, l: &Layout, dim: usize, log: bool) -> Result<GpuStorage> {
    if !x.dtype.is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: x.dtype,
            hint: "softmax needs a float dtype; convert with to_dtype",
        });
    }
    let dims = l.dims();
    let (d, inner) = (dims[dim], dims[dim + 1..].iter().product::<usize>());
    let n = l.elem_count();
    let dev = x.gpu().clone();
    // The kernel reads rows of a contiguous tensor; other views are copied first.
    let copy;
    let (src, start) = match l.contiguous_range() {
        Some((a, _)) => (x, a),
        None => {
            copy = super::contiguous(op, x, l)?;
            (&copy, 0)
        }
    };
    let out = GpuStorage::alloc(op, &dev, x.dtype, n)?;
    if n == 0 {
        return Ok(out);
    }
    let rows = n / d;
    let (mode, threads, blocks) = row_schedule(rows, d, inner);
    let args = vec![
        KernelArg::I32(log as i32),
        KernelArg::I32(mode),
        KernelArg::I64(rows as i64),
        KernelArg::I64(d as i64),
        KernelArg::I64(inner as i64),
        src.arg(start),
        out.arg(0),
    ];
    let entry = format!("softmax_{}", dtype_suffix(x.dtype));
    launch(op, &dev, &LaunchPlan::new(module(FILE), entry, Dim3::x(blocks), Dim3::x(threads), args))?;
    Ok(out)
}

/// Every entry point of softmax.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    [DType::F16, DType::BF16, DType::F32, DType::F64].iter().map(|&d| format!("softmax_{}", dtype_suffix(d))).collect()
}

#[cfg(test)]
mod tests {
    use super::{ROW_BLOCKS, row_schedule};

    #[test]
    fn row_schedule_launches_only_the_listed_block_sizes() {
        for d in 1..=3000 {
            for (rows, inner) in [(1, 1), (7, 1), (5000, 1), (5000, 3)] {
                let (_, threads, _) = row_schedule(rows, d, inner);
                assert!(ROW_BLOCKS.contains(&threads), "d {d}, rows {rows}: {threads} threads");
            }
        }
    }
}
