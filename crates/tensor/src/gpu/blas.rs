//! Matrix multiply on a GPU through cuBLAS (attune-cuda's blas module).

use super::{GpuStorage, gpu_err};
use crate::{DType, Error, Result};
use attune_cuda::blas::{GemmArgs, GemmDType};

/// `out[b] = x[b] @ y[b]` for each batch entry `(x_offset, y_offset)` (in elements), with
/// `x` strides `(row, col)` = `xs` and `y` strides `ys`; `out` is contiguous `(batches, m, n)`.
/// Evenly spaced entries (contiguous or broadcast batches, the usual case) are one
/// strided-batched cuBLAS call; otherwise each entry is its own call.
pub(crate) fn gemm(
    op: &'static str,
    (m, n, k): (usize, usize, usize),
    x: &GpuStorage,
    xs: (usize, usize),
    y: &GpuStorage,
    ys: (usize, usize),
    batches: &[(usize, usize)],
) -> Result<GpuStorage> {
    let dtype = match x.dtype {
        DType::F32 => GemmDType::F32,
        DType::F64 => GemmDType::F64,
        DType::F16 => GemmDType::F16,
        DType::BF16 => GemmDType::Bf16,
        other => {
            return Err(Error::UnsupportedDType {
                op,
                dtype: other,
                hint: "matmul on a GPU needs a float dtype; convert with to_dtype(DType::F32)",
            });
        }
    };
    let dev = x.gpu().clone();
    let out = GpuStorage::zeros(op, &dev, x.dtype, batches.len() * m * n)?;
    // An empty product (k = 0 gives zeros, m or n = 0 nothing) has no cuBLAS call: cuBLAS
    // rejects leading dimensions of 0.
    if m == 0 || n == 0 || k == 0 || batches.is_empty() {
        return Ok(out);
    }
    let size = x.dtype.size_in_bytes();
    let call = |first: usize, count: usize, (x_stride, y_stride): (i64, i64)| {
        let (xo, yo) = batches[first];
        let args = GemmArgs {
            dtype,
            batch: count,
            m,
            n,
            k,
            a: x.buf.device_ptr(xo * size),
            a_row_stride: xs.0 as i64,
            a_col_stride: xs.1 as i64,
            a_batch_stride: x_stride,
            b: y.buf.device_ptr(yo * size),
            b_row_stride: ys.0 as i64,
            b_col_stride: ys.1 as i64,
            b_batch_stride: y_stride,
            c: out.buf.device_ptr(first * m * n * size),
        };
        attune_cuda::blas::gemm(&dev, &args).map_err(gpu_err(op))
    };
    match uniform_batch_strides(batches) {
        Some(strides) => call(0, batches.len(), strides)?,
        None => {
            for i in 0..batches.len() {
                call(i, 1, (0, 0))?;
            }
        }
    }
    Ok(out)
}

/// The `(x, y)` batch strides when entry `i` sits at `entry 0 + i * stride` for both operands
/// and the strides are >= 0 (cuBLAS takes no negative batch strides); `None` otherwise.
fn uniform_batch_strides(batches: &[(usize, usize)]) -> Option<(i64, i64)> {
    let (&(x0, y0), rest) = batches.split_first()?;
    let Some(&(x1, y1)) = rest.first() else { return Some((0, 0)) };
    let (dx, dy) = (x1.checked_sub(x0)? as i64, y1.checked_sub(y0)? as i64);
    let even = batches
        .iter()
        .enumerate()
        .all(|(i, &(xi, yi))| xi as i64 == x0 as i64 + i as i64 * dx && yi as i64 == y0 as i64 + i as i64 * dy);
    even.then_some((dx, dy))
}

#[cfg(test)]
mod tests {
    use super::uniform_batch_strides;

    #[test]
    fn evenly_spaced_batches_become_one_strided_call() {
        assert_eq!(uniform_batch_strides(&[]), None);
        assert_eq!(uniform_batch_strides(&[(5, 7)]), Some((0, 0)));
        // Contiguous x, broadcast y.
        assert_eq!(uniform_batch_strides(&[(0, 3), (12, 3), (24, 3)]), Some((12, 0)));
        // Uneven spacing (a permuted batch view) and decreasing offsets fall back.
        assert_eq!(uniform_batch_strides(&[(0, 0), (12, 8), (36, 16)]), None);
        assert_eq!(uniform_batch_strides(&[(24, 0), (12, 8), (0, 16)]), None);
    }
}
