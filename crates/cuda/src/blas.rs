//! Matrix multiply on a GPU through cuBLAS (loaded at run time by cudarc): row-major,
//! strided-batched, for f32, f64, f16 and bf16 (halves accumulate in f32; f32 stays f32, no
//! TF32, so results match the CPU within the f32 tolerances of docs/attention.md).
//!
//! cuBLAS is column-major. A row-major `C = A B` (m x n) is the column-major `C^T = B^T A^T`
//! (n x m) over the same memory, so cuBLAS gets B as its first operand and A as its second,
//! with m and n swapped. Each operand may be stored either way round (row- or column-major,
//! i.e. either stride is 1): the unit stride picks cuBLAS's `N` or `T` and the other stride is
//! the leading dimension.
//!
//! On the emulator matrix multiply runs the CPU gemm over the emulated buffers (docs/architecture.md),
//! so [`gemm`] accepts only CUDA devices.

use crate::{Error, GpuDevice, Result};
use cudarc::cublas::sys::{self, cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use std::ffi::c_void;

/// Element type of a gemm (A, B and C share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmDType {
    /// f32 in, f32 accumulate, f32 out.
    F32,
    /// f64 throughout.
    F64,
    /// f16 in and out, f32 accumulate.
    F16,
    /// bf16 in and out, f32 accumulate.
    Bf16,
}

impl GemmDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            GemmDType::F32 => 4,
            GemmDType::F64 => 8,
            GemmDType::F16 | GemmDType::Bf16 => 2,
        }
    }
}

/// `C[p] = A[p] B[p]` for `p < batch`: A is (m, k), B is (k, n), C is (m, n), all row-major
/// indexed as `ptr + p * batch_stride + row * row_stride + col * col_stride` (strides in
/// elements; one of each operand's two strides must be 1). C is contiguous `(batch, m, n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmArgs {
    /// Element type.
    pub dtype: GemmDType,
    /// Number of products.
    pub batch: usize,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Device address of A.
    pub a: u64,
    /// Elements between rows of A.
    pub a_row_stride: i64,
    /// Elements between columns of A.
    pub a_col_stride: i64,
    /// Elements between consecutive A matrices (0 broadcasts one A).
    pub a_batch_stride: i64,
    /// Device address of B.
    pub b: u64,
    /// Elements between rows of B.
    pub b_row_stride: i64,
    /// Elements between columns of B.
    pub b_col_stride: i64,
    /// Elements between consecutive B matrices (0 broadcasts one B).
    pub b_batch_stride: i64,
    /// Device address of C, contiguous `(batch, m, n)`.
    pub c: u64,
}

/// One cuBLAS operand: its op, leading dimension and batch stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operand {
    /// Whether cuBLAS transposes it (`T`) or not (`N`).
    pub transpose: bool,
    /// Leading dimension in elements.
    pub ld: i64,
    /// Batch stride in elements.
    pub batch_stride: i64,
}

/// The cuBLAS (column-major) call computing a row-major [`GemmArgs`]: cuBLAS's `m` is our `n`,
/// its `n` is our `m`, its first operand is our B and its second our A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnMajorGemm {
    /// cuBLAS m (our n).
    pub m: i64,
    /// cuBLAS n (our m).
    pub n: i64,
    /// k.
    pub k: i64,
    /// cuBLAS's first operand (our B).
    pub first: Operand,
    /// cuBLAS's second operand (our A).
    pub second: Operand,
    /// Leading dimension of C (our n).
    pub ldc: i64,
    /// Batch stride of C (m * n).
    pub c_batch_stride: i64,
}

fn bad(args: &GemmArgs, why: String) -> Error {
    Error::Driver {
        op: "gemm",
        msg: format!(
            "{:?} batch {} (m {}, n {}, k {}), A strides (row {}, col {}, batch {}), B strides (row {}, col {}, batch {}): {why}",
            args.dtype,
            args.batch,
            args.m,
            args.n,
            args.k,
            args.a_row_stride,
            args.a_col_stride,
            args.a_batch_stride,
            args.b_row_stride,
            args.b_col_stride,
            args.b_batch_stride
        ),
    }
}

/// Describes a (rows x cols) row-major-indexed operand to cuBLAS as a column-major matrix of
/// `op(X)` = the operand transposed (cols x rows), which is what the swapped product needs.
/// `N`: the stored column-major matrix is (cols x rows) with `X[r][c]` at `c + r * ld`, so the
/// column stride must be 1 and ld is the row stride (ld >= cols). `T`: stored (rows x cols)
/// with `X[r][c]` at `r + c * ld`: row stride 1, ld the column stride (ld >= rows). A stride
/// over an extent of 1 is never used, so it may be anything.
fn operand(
    name: &str,
    rows: usize,
    cols: usize,
    row_stride: i64,
    col_stride: i64,
) -> std::result::Result<Operand, String> {
    if row_stride < 0 || col_stride < 0 {
        return Err(format!("{name} has a negative stride; make it contiguous first"));
    }
    let (rows_i, cols_i) = (rows as i64, cols as i64);
    if col_stride == 1 || cols == 1 {
        let ld = if rows == 1 { cols_i.max(1) } else { row_stride };
        if ld >= cols_i.max(1) {
            return Ok(Operand { transpose: false, ld, batch_stride: 0 });
        }
    }
    if row_stride == 1 || rows == 1 {
        let ld = if cols == 1 { rows_i.max(1) } else { col_stride };
        if ld >= rows_i.max(1) {
            return Ok(Operand { transpose: true, ld, batch_stride: 0 });
        }
    }
    Err(format!(
        "{name} ({rows} x {cols}) needs a unit stride on one dimension and a stride of at least the other extent on the other; make it contiguous first"
    ))
}

/// The column-major cuBLAS call for `args`, or why there is none. Does not look at addresses.
pub fn column_major(args: &GemmArgs) -> Result<ColumnMajorGemm> {
    let GemmArgs { m, n, k, batch, .. } = *args;
    let limit = i32::MAX as usize;
    if m > limit || n > limit || k > limit || batch > limit {
        return Err(bad(args, format!("cuBLAS takes sizes up to {limit}")));
    }
    let mut first = operand("B", k, n, args.b_row_stride, args.b_col_stride).map_err(|w| bad(args, w))?;
    let mut second = operand("A", m, k, args.a_row_stride, args.a_col_stride).map_err(|w| bad(args, w))?;
    if args.a_batch_stride < 0 || args.b_batch_stride < 0 {
        return Err(bad(args, "batch strides must be >= 0 (0 broadcasts)".into()));
    }
    first.batch_stride = if batch > 1 { args.b_batch_stride } else { 0 };
    second.batch_stride = if batch > 1 { args.a_batch_stride } else { 0 };
    if first.ld > limit as i64 || second.ld > limit as i64 {
        return Err(bad(args, format!("a leading dimension exceeds {limit}; make the operand contiguous first")));
    }
    Ok(ColumnMajorGemm {
        m: n as i64,
        n: m as i64,
        k: k as i64,
        first,
        second,
        ldc: (n as i64).max(1),
        c_batch_stride: (m * n) as i64,
    })
}

/// A cuBLAS handle bound to an executor's stream, destroyed on drop.
pub(crate) struct BlasHandle(sys::cublasHandle_t);

// SAFETY: the handle is used only under the executor's mutex.
unsafe impl Send for BlasHandle {}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // SAFETY: created by cublasCreate and destroyed only here; an error cannot be reported.
        unsafe {
            let _ = cudarc::cublas::result::destroy_handle(self.0);
        }
    }
}

fn cublas_err(op: &'static str) -> impl Fn(cudarc::cublas::result::CublasError) -> Error {
    move |e| Error::Driver { op, msg: format!("{e:?}") }
}

/// Row-major strided-batched `C = A B` on a CUDA device (see [`GemmArgs`]). Queued on the
/// device's stream like every kernel; synchronise the device to wait for it.
pub fn gemm(dev: &GpuDevice, args: &GemmArgs) -> Result<()> {
    let Some(exec) = dev.cuda_executor() else {
        return Err(Error::WrongDevice {
            op: "gemm (cuBLAS; the emulator runs matrix multiply with the CPU gemm over its buffers)",
            got: dev.backend().to_string(),
            expected: "a CUDA device".into(),
        });
    };
    let plan = column_major(args)?;
    let size = args.dtype.size() as u64;
    for (name, ptr) in [("A", args.a), ("B", args.b), ("C", args.c)] {
        if ptr % size != 0 {
            return Err(bad(args, format!("{name} at {ptr:#x} is not aligned to its {size}-byte elements")));
        }
    }
    if args.batch == 0 || args.m == 0 || args.n == 0 {
        return Ok(());
    }
    exec.context()
        .bind_to_thread()
        .map_err(|e| Error::Driver { op: "gemm: binding the context", msg: format!("{e:?}") })?;
    let stream = exec.stream().cu_stream();
    if args.k == 0 {
        // An empty sum: C is zero (cuBLAS is not asked to handle k = 0).
        let bytes = args.batch * args.m * args.n * args.dtype.size();
        // SAFETY: C holds (batch, m, n) elements per the contract of GemmArgs.
        return unsafe { cudarc::driver::result::memset_d8_async(args.c, 0, bytes, stream) }
            .map_err(|e| Error::Driver { op: "gemm (k = 0): cuMemsetD8Async", msg: format!("{e:?}") });
    }

    let mut guard = exec.blas.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        if !crate::toolchain::preload_cublas() {
            return Err(Error::ToolchainMissing {
                what: "cuBLAS (libcublas.so.12 and libcublasLt.so.12; `cargo xtask cuda-tools --cublas` installs them)",
                looked: crate::toolchain::search_roots()
                    .iter()
                    .map(|(_, p)| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                env: crate::toolchain::TOOLS_ENV,
            });
        }
        let handle = BlasHandle(cudarc::cublas::result::create_handle().map_err(cublas_err("cublasCreate"))?);
        // SAFETY: a live handle and the executor's stream, which outlives the handle.
        unsafe { cudarc::cublas::result::set_stream(handle.0, stream as _) }.map_err(cublas_err("cublasSetStream"))?;
        *guard = Some(handle);
    }
    let handle = guard.as_ref().map(|h| h.0).expect("set above");

    let (data_type, compute) = match args.dtype {
        GemmDType::F32 => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        GemmDType::F64 => (cudaDataType::CUDA_R_64F, cublasComputeType_t::CUBLAS_COMPUTE_64F),
        GemmDType::F16 => (cudaDataType::CUDA_R_16F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        GemmDType::Bf16 => (cudaDataType::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F),
    };
    // Scalars have the compute type's precision.
    let (one64, zero64) = (1.0f64, 0.0f64);
    let (one32, zero32) = (1.0f32, 0.0f32);
    let (alpha, beta): (*const c_void, *const c_void) = if args.dtype == GemmDType::F64 {
        ((&one64 as *const f64).cast(), (&zero64 as *const f64).cast())
    } else {
        ((&one32 as *const f32).cast(), (&zero32 as *const f32).cast())
    };
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    // SAFETY: the addresses are device memory of the executor's context holding the described
    // matrices (the caller's contract); the sizes and leading dimensions were validated and
    // fit in i32; the scalars live until the call returns (host pointer mode copies them).
    unsafe {
        cudarc::cublas::result::gemm_strided_batched_ex(
            handle,
            op(plan.first.transpose),
            op(plan.second.transpose),
            plan.m as i32,
            plan.n as i32,
            plan.k as i32,
            alpha,
            args.b as *const c_void,
            data_type,
            plan.first.ld as i32,
            plan.first.batch_stride,
            args.a as *const c_void,
            data_type,
            plan.second.ld as i32,
            plan.second.batch_stride,
            beta,
            args.c as *mut c_void,
            data_type,
            plan.ldc as i32,
            plan.c_batch_stride,
            args.batch as i32,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| bad(args, format!("cublasGemmStridedBatchedEx failed: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's documented column-major semantics, run on the host: C(i, j) at
    /// `c[i + j * ldc]` = sum over l of op(first)(i, l) * op(second)(l, j), where op(X)(r, s)
    /// is `X[r + s * ld]` for N and `X[s + r * ld]` for T, each matrix offset by its batch
    /// stride. Applied to the row-major data, it must give the row-major product.
    fn run_column_major(g: &ColumnMajorGemm, first: &[f64], second: &[f64], batch: usize) -> Vec<f64> {
        let at = |x: &[f64], o: &Operand, base: i64, r: i64, s: i64| {
            let idx = if o.transpose { s + r * o.ld } else { r + s * o.ld };
            x[(base + idx) as usize]
        };
        let mut c = vec![0.0; batch * (g.m * g.n) as usize];
        for p in 0..batch as i64 {
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut acc = 0.0;
                    for l in 0..g.k {
                        acc += at(first, &g.first, p * g.first.batch_stride, i, l)
                            * at(second, &g.second, p * g.second.batch_stride, l, j);
                    }
                    c[(p * g.c_batch_stride + i + j * g.ldc) as usize] = acc;
                }
            }
        }
        c
    }

    /// A strided (rows x cols) matrix per batch: element (p, r, c) at p*bs + r*rs + c*cs holds a
    /// value unique to it; the rest of the buffer is NaN so a wrong address poisons the result.
    fn fill(batch: usize, rows: usize, cols: usize, rs: i64, cs: i64, bs: i64, seed: f64) -> Vec<f64> {
        let len = (0..batch.max(1))
            .flat_map(|p| {
                (0..rows).flat_map(move |r| (0..cols).map(move |c| p as i64 * bs + r as i64 * rs + c as i64 * cs))
            })
            .max()
            .unwrap_or(0) as usize
            + 1;
        let mut v = vec![f64::NAN; len];
        for p in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    v[(p as i64 * bs + r as i64 * rs + c as i64 * cs) as usize] =
                        seed + (p * 100 + r * 10 + c) as f64 * 0.01;
                }
            }
        }
        v
    }

    #[test]
    fn the_column_major_call_computes_the_row_major_product() {
        let (batch, m, n, k) = (2usize, 3usize, 4usize, 5usize);
        // (A row, A col, B row, B col) strides: row-major, column-major (transposed views),
        // padded rows, and mixtures.
        let layouts: [(i64, i64, i64, i64); 5] = [(5, 1, 4, 1), (1, 3, 1, 5), (7, 1, 1, 6), (1, 4, 9, 1), (8, 1, 4, 1)];
        for (ars, acs, brs, bcs) in layouts {
            for broadcast_b in [false, true] {
                let a_bs = (ars * (m as i64 - 1) + acs * (k as i64 - 1)) + 1;
                let b_bs = if broadcast_b { 0 } else { (brs * (k as i64 - 1) + bcs * (n as i64 - 1)) + 1 };
                let a = fill(batch, m, k, ars, acs, a_bs, 1.0);
                let b = fill(if broadcast_b { 1 } else { batch }, k, n, brs, bcs, b_bs, -2.0);
                let args = GemmArgs {
                    dtype: GemmDType::F64,
                    batch,
                    m,
                    n,
                    k,
                    a: 0,
                    a_row_stride: ars,
                    a_col_stride: acs,
                    a_batch_stride: a_bs,
                    b: 0,
                    b_row_stride: brs,
                    b_col_stride: bcs,
                    b_batch_stride: b_bs,
                    c: 0,
                };
                let g = column_major(&args).unwrap();
                let got = run_column_major(&g, &b, &a, batch);
                for p in 0..batch {
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k)
                                .map(|l| {
                                    a[(p as i64 * a_bs + i as i64 * ars + l as i64 * acs) as usize]
                                        * b[(p as i64 * b_bs + l as i64 * brs + j as i64 * bcs) as usize]
                                })
                                .sum();
                            let v = got[p * m * n + i * n + j];
                            assert!(
                                (v - want).abs() < 1e-12,
                                "layout {:?}: C[{p}][{i}][{j}] = {v}, want {want}",
                                (ars, acs, brs, bcs)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn extents_of_one_accept_any_stride_and_bad_strides_are_refused() {
        // A vector times a matrix: A is (1 x k) with a meaningless row stride.
        let ok = GemmArgs {
            dtype: GemmDType::F32,
            batch: 1,
            m: 1,
            n: 3,
            k: 4,
            a: 0,
            a_row_stride: 0,
            a_col_stride: 1,
            a_batch_stride: 0,
            b: 0,
            b_row_stride: 3,
            b_col_stride: 1,
            b_batch_stride: 0,
            c: 0,
        };
        let g = column_major(&ok).unwrap();
        assert!(g.second.ld >= 1);
        let a = fill(1, 1, 4, 0, 1, 0, 0.5);
        let b = fill(1, 4, 3, 3, 1, 0, 0.25);
        let got = run_column_major(&g, &b, &a, 1);
        for j in 0..3 {
            let want: f64 = (0..4).map(|l| a[l] * b[l * 3 + j]).sum();
            assert!((got[j] - want).abs() < 1e-12);
        }
        // Neither stride of A is 1: refused with advice.
        let strided = GemmArgs { a_row_stride: 8, a_col_stride: 2, m: 2, ..ok };
        let msg = column_major(&strided).unwrap_err().to_string();
        assert!(msg.contains("make it contiguous"), "{msg}");
        // Overlapping rows (leading dimension below the row length).
        let overlap = GemmArgs { b_row_stride: 2, ..ok };
        assert!(column_major(&overlap).is_err());
        let negative = GemmArgs { a_batch_stride: -1, batch: 2, ..ok };
        assert!(column_major(&negative).is_err());
    }
}
