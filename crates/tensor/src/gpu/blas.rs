//! Matrix multiply on a GPU through cuBLAS (attune-cuda's blas module).

use super::GpuStorage;
use crate::{Error, Result};

/// `out[b] = x[b] @ y[b]` for each batch entry `(x_offset, y_offset)` (in elements), with
/// `x` strides `(row, col)` = `xs` and `y` strides `ys`; `out` is contiguous `(batches, m, n)`.
pub(crate) fn gemm(
    op: &'static str,
    (m, n, k): (usize, usize, usize),
    x: &GpuStorage,
    xs: (usize, usize),
    y: &GpuStorage,
    ys: (usize, usize),
    batches: &[(usize, usize)],
) -> Result<GpuStorage> {
    let _ = (m, n, k, x, xs, y, ys, batches);
    Err(Error::invalid(op, "cuBLAS matmul is not wired yet".to_string()))
}
