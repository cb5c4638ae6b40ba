//! Matrix multiply on a GPU through cuBLAS (attune-cuda's blas module).

use super::{GpuStorage, gpu_err};
use crate::{DType, Error, Result};
use attune_cuda::blas::{GemmArgs, GemmDType};

/// `out[b] = x[b] @ y[b]` for each batch entry `(x_offset, y_offset)` (in elements), with
/// `x` strides `(row, col)` = `xs` and `y` strides `ys`; `out` is contiguous `(batches, m, n)`.
/// The plan's batch offsets need not be evenly spaced, so each entry is one cuBLAS call.
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
    for (i, &(xo, yo)) in batches.iter().enumerate() {
        let args = GemmArgs {
            dtype,
            batch: 1,
            m,
            n,
            k,
            a: x.buf.device_ptr(xo * x.dtype.size_in_bytes()),
            a_row_stride: xs.0 as i64,
            a_col_stride: xs.1 as i64,
            a_batch_stride: 0,
            b: y.buf.device_ptr(yo * y.dtype.size_in_bytes()),
            b_row_stride: ys.0 as i64,
            b_col_stride: ys.1 as i64,
            b_batch_stride: 0,
            c: out.buf.device_ptr(i * m * n * x.dtype.size_in_bytes()),
        };
        attune_cuda::blas::gemm(&dev, &args).map_err(gpu_err(op))?;
    }
    Ok(out)
}
