//! Matrix product with PyTorch's `matmul` semantics: 1-D x 1-D is a dot product, 2-D x 2-D a
//! matrix product, a 1-D operand is promoted to a matrix (a row on the left, a column on the
//! right) and the added dim removed again, and N-D operands are batches of matrices whose
//! batch dims (all but the last two) broadcast under NumPy rules.
//!
//! No operand is copied when its matrix dims have a unit stride on either dim (row- or
//! column-major, so `t()` and `narrow` views are free): the strides go straight to `gemm`.
//! Broadcast batch dims are not materialised either; each product reads its matrix at its own
//! offset. When the right operand is the same for every batch entry (`[B, m, k] @ [k, n]`,
//! the layer case) and the left one's batch and row dims merge, the whole batch is a single
//! `[B*m, k] @ [k, n]` product.

use crate::autograd::GradFn;
use crate::cpu::gemm::{
    Dst, GEMM_PAR_THRESHOLD, MatRef, Threads, gemm_bf16_into, gemm_f32_bf16_into, gemm_into, product_vec,
};
use crate::cpu::strided::Runs;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Error, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether a matrix with these (rows, cols) and strides can go to `gemm` and to cuBLAS as it
/// is: a unit stride on one dim and, on the other, a stride of at least that dim's extent (no
/// overlapping rows or columns: cuBLAS needs `ld >= rows`; an `expand`ed operand with stride 0
/// is copied once). The stride of a size-1 dim does not matter.
fn gemm_ready(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    cols <= 1 || rows <= 1 || (cs == 1 && rs >= cols) || (rs == 1 && cs >= rows)
}

/// The stride of `dims` merged into one dim in row-major order, if their strides allow it.
fn merged_stride(dims: &[usize], strides: &[usize]) -> Option<usize> {
    let mut inner: Option<usize> = None;
    let mut next = 0;
    for (&d, &s) in dims.iter().zip(strides).rev() {
        if d == 1 {
            continue;
        }
        match inner {
            None => inner = Some(s),
            Some(_) if s != next => return None,
            Some(_) => {}
        }
        next = d * s;
    }
    Some(inner.unwrap_or(0))
}

/// The products to run: one `m x k` by `k x n` product per entry of `offsets`.
struct Plan {
    m: usize,
    n: usize,
    k: usize,
    /// (row stride, column stride) of the left matrices.
    a: (usize, usize),
    /// (row stride, column stride) of the right matrices.
    b: (usize, usize),
    /// Storage offsets of each (left, right) pair, in output order.
    offsets: Vec<(usize, usize)>,
}

impl Plan {
    /// Plans `al @ bl` for layouts already broadcast to `batch ++ [m, k]` and `batch ++ [k, n]`.
    fn new(al: &Layout, bl: &Layout) -> Plan {
        let r = al.dims().len();
        let nb = r - 2;
        let batch = &al.dims()[..nb];
        let (m, k, n) = (al.dims()[r - 2], al.dims()[r - 1], bl.dims()[r - 1]);
        let (ast, bst) = (al.strides(), bl.strides());
        let a = (ast[r - 2], ast[r - 1]);
        let b = (bst[r - 2], bst[r - 1]);
        let count: usize = batch.iter().product();
        let rhs_constant = batch.iter().zip(bst).all(|(&d, &s)| d == 1 || s == 0);
        // One [count*m, k] @ [k, n] product; the output rows are laid out the same way.
        if count > 1
            && rhs_constant
            && let Some(rs) = merged_stride(&al.dims()[..=nb], &ast[..=nb])
            && gemm_ready(count * m, k, rs, a.1)
        {
            return Plan { m: count * m, n, k, a: (rs, a.1), b, offsets: vec![(al.offset(), bl.offset())] };
        }
        let runs = Runs::new(batch, [&ast[..nb], &bst[..nb]], [al.offset(), bl.offset()]);
        let mut offsets = Vec::with_capacity(count);
        runs.visit(0, runs.len(), |_, [oa, ob], len, [sa, sb]| {
            offsets.extend((0..len).map(|i| (oa + i * sa, ob + i * sb)));
        });
        Plan { m, n, k, a, b, offsets }
    }

    /// Runs every product with `mul` into a fresh contiguous output, which is not zeroed first:
    /// each `mul` (a `gemm_*_into`) writes all of its destination. Small products in a large
    /// batch are spread over rayon threads (one product per task); otherwise each product may
    /// use all threads inside `gemm`.
    fn run<T: Copy + Send + Sync>(
        &self,
        x: &[T],
        y: &[T],
        mul: impl Fn(usize, usize, usize, MatRef<'_, T>, MatRef<'_, T>, Dst<'_, T>, Threads) -> Result<()> + Sync,
    ) -> Result<Vec<T>> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mn = m * n;
        if mn == 0 || self.offsets.is_empty() {
            return Ok(Vec::new());
        }
        let one = |(oa, ob): (usize, usize), dst: Dst<'_, T>, threads: Threads| {
            let lhs = MatRef::new(x, oa, self.a.0, self.a.1);
            let rhs = MatRef::new(y, ob, self.b.0, self.b.1);
            mul(m, n, k, lhs, rhs, dst, threads)
        };
        let work = mn.saturating_mul(k);
        let total = work.saturating_mul(self.offsets.len());
        let by_batch = self.offsets.len() > 1
            && work < GEMM_PAR_THRESHOLD
            && total >= BATCH_PAR_THRESHOLD
            && rayon::current_num_threads() > 1;
        // SAFETY: one product per chunk of `mn` elements, the chunks covering the output; each
        // `mul` (a `*_into` product) writes all of its chunk when it returns Ok.
        unsafe {
            product_vec(mn * self.offsets.len(), |out| {
                if by_batch {
                    out.par_chunks_mut(mn)
                        .zip(self.offsets.par_iter())
                        .try_for_each(|(dst, &o)| one(o, dst, Threads::Single))
                } else {
                    out.chunks_mut(mn).zip(&self.offsets).try_for_each(|(dst, &o)| one(o, dst, Threads::Auto))
                }
            })
        }
    }
}

/// Total multiply-adds of a batch of small products from which the batch is split across
/// threads, one product per task. Lower than [`GEMM_PAR_THRESHOLD`]: batch tasks share no
/// packing buffers. Measured roughly on 2 cores: batches of 8^3..64^3 products lose below
/// ~2^17 multiply-adds in all (~15 us of work), and win 1.4-2x from ~2^19 on.
const BATCH_PAR_THRESHOLD: usize = 1 << 18;

/// Matrix multiply of GPU operands. The emulator's memory is host memory, so it runs the CPU
/// gemm over the emulated buffers (docs/architecture.md); a GPU runs cuBLAS, one gemm per batch entry
/// of the plan (the plan's batch offsets need not be evenly strided).
fn matmul_gpu(plan: &Plan, x: &crate::gpu::GpuStorage, y: &crate::gpu::GpuStorage) -> Result<crate::gpu::GpuStorage> {
    const OP: &str = "matmul";
    match x.gpu().backend() {
        attune_cuda::Backend::Emu => {
            let out = matmul_cpu(plan, &x.download(OP)?, &y.download(OP)?, false)?;
            crate::gpu::GpuStorage::upload(OP, x.gpu(), &out)
        }
        attune_cuda::Backend::Cuda(_) => {
            let batches: Vec<(usize, usize)> = plan.offsets.clone();
            crate::gpu::gemm(OP, (plan.m, plan.n, plan.k), x, plan.a, y, plan.b, &batches)
        }
    }
}

/// Runs the planned products on CPU buffers of one float dtype; `bf16_products` rounds f32
/// operands to bf16 for the products ([`Tensor::matmul_in`]).
fn matmul_cpu(plan: &Plan, x: &CpuStorage, y: &CpuStorage, bf16_products: bool) -> Result<CpuStorage> {
    if bf16_products && let (CpuStorage::F32(x), CpuStorage::F32(y)) = (x, y) {
        return Ok(CpuStorage::F32(plan.run(x, y, gemm_f32_bf16_into)?));
    }
    Ok(match (x, y) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(plan.run(x, y, gemm_into::<f32>)?),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(plan.run(x, y, gemm_into::<f64>)?),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => CpuStorage::F16(plan.run(x, y, gemm_into)?),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => CpuStorage::BF16(plan.run(x, y, gemm_bf16_into)?),
        _ => return Err(unsupported(x.dtype())),
    })
}

fn unsupported(dtype: crate::DType) -> Error {
    Error::UnsupportedDType {
        op: "matmul",
        dtype,
        hint: "matmul needs a float dtype (f16, bf16, f32, f64); convert with to_dtype",
    }
}

/// The error for operands whose contracted dims differ, naming both dims.
fn inner_mismatch(lhs: &Shape, rhs: &Shape) -> Error {
    let ka = lhs.dims()[lhs.rank() - 1];
    let (which, kb) = if rhs.rank() == 1 {
        ("the only dim", rhs.dims()[0])
    } else {
        ("the second-to-last dim", rhs.dims()[rhs.rank() - 2])
    };
    Error::ShapeMismatch {
        op: "matmul",
        lhs: lhs.clone(),
        rhs: rhs.clone(),
        hint: format!(
            "the last dim of lhs ({ka}) must equal {which} of rhs ({kb}); transpose or reshape an operand so they agree"
        ),
    }
}

/// The batched product of two tensors of rank >= 2 with equal contracted dims; with
/// `bf16_products`, of CPU f32 operands rounded to bf16; with `bias` (f32 or f64 values of the
/// last dim, CPU), the bias added to every row of the fresh product in place.
fn matmul_nd(
    a: &Tensor,
    b: &Tensor,
    lhs: &Shape,
    rhs: &Shape,
    bf16_products: bool,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.dims()[ra - 2], a.dims()[ra - 1], b.dims()[rb - 1]);
    let (ba, bb) = (&a.dims()[..ra - 2], &b.dims()[..rb - 2]);
    let batch = Shape::broadcast("matmul", &ba.into(), &bb.into()).map_err(|_| Error::ShapeMismatch {
        op: "matmul",
        lhs: lhs.clone(),
        rhs: rhs.clone(),
        hint: format!(
            "the batch dims (all but the last two) {ba:?} and {bb:?} are not broadcastable; they must be equal or 1"
        ),
    })?;
    let full = |rows: usize, cols: usize| -> Shape {
        let mut d = batch.dims().to_vec();
        d.extend([rows, cols]);
        d.into()
    };
    // Layouts with no unit stride in their matrix dims are copied once, before broadcasting,
    // so gemm never packs from fully strided memory and broadcasts stay views.
    let ready = |t: &Tensor| {
        let (r, s) = (t.rank(), t.stride());
        if gemm_ready(t.dims()[r - 2], t.dims()[r - 1], s[r - 2], s[r - 1]) {
            Ok(t.detach())
        } else {
            t.detach().contiguous()
        }
    };
    let (ac, bc) = (ready(a)?, ready(b)?);
    let al = ac.layout().broadcast_as("matmul", &full(m, k))?;
    let bl = bc.layout().broadcast_as("matmul", &full(k, n))?;
    let plan = Plan::new(&al, &bl);
    let out = {
        let ga = ac.storage();
        // One read guard when both operands share a buffer (x @ x.t()).
        let gb = (!ac.same_storage(&bc)).then(|| bc.storage());
        match (&*ga, gb.as_deref().unwrap_or(&*ga)) {
            (Storage::Cpu(x), Storage::Cpu(y)) => Storage::Cpu(matmul_cpu(&plan, x, y, bf16_products)?),
            (Storage::Gpu(x), Storage::Gpu(y)) => Storage::Gpu(matmul_gpu(&plan, x, y)?),
            _ => unreachable!("matmul: devices checked by the caller"),
        }
    };
    let compute = bf16_products.then_some(DType::BF16);
    let Some(bias) = bias else {
        return Ok(Tensor::from_op(out, full(m, n), &[a, b], || Box::new(MatmulBack { compute, bias: false })));
    };
    let mut out = out;
    match &mut out {
        Storage::Cpu(CpuStorage::F32(y)) => add_rows(y, &bias.to_vec::<f32>()?),
        Storage::Cpu(CpuStorage::F64(y)) => add_rows(y, &bias.to_vec::<f64>()?),
        _ => unreachable!("matmul bias: dtype and device checked by the caller"),
    }
    Ok(Tensor::from_op(out, full(m, n), &[a, b, bias], || Box::new(MatmulBack { compute, bias: true })))
}

/// `y[i][j] += bias[j]` over the rows of `y`, in parallel for large outputs.
fn add_rows<T: Copy + std::ops::AddAssign + Send + Sync>(y: &mut [T], bias: &[T]) {
    let n = bias.len().max(1);
    let row = |r: &mut [T]| r.iter_mut().zip(bias).for_each(|(x, &b)| *x += b);
    if y.len() >= 1 << 16 {
        y.par_chunks_mut(n * 64).for_each(|c| c.chunks_mut(n).for_each(row));
    } else {
        y.chunks_mut(n).for_each(row);
    }
}

/// A view of `t` with all dims but the last merged into one, or a contiguous copy reshaped so
/// when the strides do not merge.
fn merge_rows(t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    let rows: usize = t.dims()[..r - 1].iter().product();
    let cols = t.dims()[r - 1];
    let s = t.stride();
    match merged_stride(&t.dims()[..r - 1], &s[..r - 1]) {
        Some(rs) if gemm_ready(rows, cols, rs, s[r - 1]) => {
            t.as_strided([rows, cols], vec![rs, s[r - 1]], t.layout().offset())
        }
        _ => t.reshape([rows, cols]),
    }
}

/// Backward of the batched product `c = a @ b`: `da = dc @ b^T` and `db = a^T @ dc`, each
/// summed over the batch dims its input was broadcast along, computed in the forward's
/// `compute` dtype when it had one. Transposes are views.
struct MatmulBack {
    compute: Option<DType>,
    /// A third input, the bias added to every row (its gradient sums the rows).
    bias: bool,
}
impl GradFn for MatmulBack {
    fn name(&self) -> &str {
        "matmul"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&i[0], &i[1]);
        let mm = |x: &Tensor, y: &Tensor| match self.compute {
            Some(c) => x.matmul_in(y, c),
            None => x.matmul(y),
        };
        let ga = a.requires_grad().then(|| mm(g, &b.t()?)?.sum_to(a.shape())).transpose()?;
        let gb = b
            .requires_grad()
            .then(|| {
                let shared = b.dims()[..b.rank() - 2].iter().all(|&d| d == 1);
                if shared && g.rank() > 2 {
                    // b is the same matrix for the whole batch: one [k, B*m] @ [B*m, n] product
                    // instead of B products and a sum over them.
                    let r = g.rank();
                    let mut dims = g.dims()[..r - 1].to_vec();
                    dims.push(a.dims()[a.rank() - 1]);
                    let a_full = a.broadcast_as(dims)?;
                    mm(&merge_rows(&a_full)?.t()?, &merge_rows(g)?)?.reshape(b.shape())
                } else {
                    mm(&a.t()?, g)?.sum_to(b.shape())
                }
            })
            .transpose()?;
        let mut grads = vec![ga, gb];
        if self.bias {
            let bias = &i[2];
            grads.push(bias.requires_grad().then(|| g.sum_to(bias.shape())).transpose()?);
        }
        Ok(grads)
    }
}

impl Tensor {
    /// Matrix product with PyTorch's `matmul` semantics:
    /// - 1-D @ 1-D: dot product (rank 0);
    /// - 2-D @ 2-D: matrix product `[m, k] @ [k, n] -> [m, n]`;
    /// - a 1-D lhs `[k]` acts as `[1, k]`, a 1-D rhs `[k]` as `[k, 1]`, and the added dim is
    ///   removed from the result;
    /// - N-D: batches of matrices whose batch dims broadcast, e.g.
    ///   `[2, 1, 3, 4] @ [5, 4, 6] -> [2, 5, 3, 6]`.
    ///
    /// Float dtypes only (f16/bf16 accumulate in f32). Any strided view works; those with a
    /// unit stride on either matrix dim (row- or column-major, e.g. `t()`) are read in place.
    /// Differentiable.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.matmul_with(rhs, false)
    }

    /// [`Tensor::matmul`] with the products computed in `compute`, the result in the operands'
    /// dtype: autocast's matrix multiply. For f32 operands and `DType::BF16` on the CPU, each
    /// operand is rounded to bf16 (nearest even) as the kernel packs it, the products are
    /// accumulated in f32 and the result stays f32, so no 16-bit copy of either operand is
    /// made. Elsewhere (other devices, other dtypes) the operands are converted to `compute`,
    /// multiplied and the result converted back (rounded once more, as a 16-bit matmul's output
    /// is). `compute` equal to the operands' dtype is plain `matmul`.
    ///
    /// Differentiable with the gradients of the rounded product, themselves computed in
    /// `compute` (`da = round(dc) @ round(b)^T`, `db = round(a)^T @ round(dc)`), as autocast's
    /// backward runs in bf16. A rounded product is piecewise constant in its inputs, so finite
    /// differences do not apply; the tests check these formulas directly.
    pub fn matmul_in(&self, rhs: &Tensor, compute: DType) -> Result<Tensor> {
        let dt = self.dtype();
        if compute == dt {
            return self.matmul(rhs);
        }
        if !compute.is_float() {
            return Err(unsupported(compute));
        }
        if dt == DType::F32 && compute == DType::BF16 && self.device() == crate::Device::Cpu {
            return self.matmul_with(rhs, true);
        }
        self.same_dtype_device(rhs, "matmul")?;
        self.to_dtype(compute)?.matmul(&rhs.to_dtype(compute)?)?.to_dtype(dt)
    }

    /// `self.matmul_in(rhs, compute) + bias` for 2-D operands and a 1-D `bias` of the output's
    /// columns (a Linear layer): on the CPU in f32 or f64 the bias is added into the fresh
    /// product in place, one pass and one allocation fewer than `matmul` then `add`, with the
    /// same result bit for bit; elsewhere it is exactly that composition. Differentiable (the
    /// bias's gradient sums the output gradient's rows).
    pub fn matmul_bias(&self, rhs: &Tensor, bias: &Tensor, compute: DType) -> Result<Tensor> {
        let fused = self.device() == crate::Device::Cpu
            && self.rank() == 2
            && rhs.rank() == 2
            && bias.rank() == 1
            && bias.dims()[0] == rhs.dims()[1]
            && bias.dtype() == self.dtype()
            && bias.device() == self.device()
            && matches!(self.dtype(), DType::F32 | DType::F64)
            && (compute == self.dtype() || (self.dtype() == DType::F32 && compute == DType::BF16));
        if !fused {
            return self.matmul_in(rhs, compute)?.add(bias);
        }
        self.same_dtype_device(rhs, "matmul")?;
        if self.dims()[1] != rhs.dims()[0] {
            return Err(inner_mismatch(self.shape(), rhs.shape()));
        }
        matmul_nd(self, rhs, self.shape(), rhs.shape(), compute != self.dtype(), Some(bias))
    }

    fn matmul_with(&self, rhs: &Tensor, bf16_products: bool) -> Result<Tensor> {
        self.same_dtype_device(rhs, "matmul")?;
        if !self.dtype().is_float() {
            return Err(unsupported(self.dtype()));
        }
        for (side, t) in [("lhs", self), ("rhs", rhs)] {
            if t.rank() == 0 {
                return Err(Error::invalid(
                    "matmul",
                    format!(
                        "{side} is a scalar (shape []) but matmul needs operands of rank >= 1 (lhs {:?}, rhs {:?}); use mul to scale by a scalar",
                        self.shape(),
                        rhs.shape()
                    ),
                ));
            }
        }
        let ka = self.dims()[self.rank() - 1];
        let kb = if rhs.rank() == 1 { rhs.dims()[0] } else { rhs.dims()[rhs.rank() - 2] };
        if ka != kb {
            return Err(inner_mismatch(self.shape(), rhs.shape()));
        }
        let (a_vec, b_vec) = (self.rank() == 1, rhs.rank() == 1);
        let a = if a_vec { self.unsqueeze(0usize)? } else { self.clone() };
        let b = if b_vec { rhs.unsqueeze(1usize)? } else { rhs.clone() };
        let mut out = matmul_nd(&a, &b, self.shape(), rhs.shape(), bf16_products, None)?;
        if b_vec {
            out = out.squeeze(-1isize)?;
        }
        if a_vec {
            out = out.squeeze(if b_vec { -1isize } else { -2 })?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stride_follows_row_major_nesting() {
        assert_eq!(merged_stride(&[2, 3], &[12, 4]), Some(4));
        assert_eq!(merged_stride(&[2, 3], &[13, 4]), None);
        assert_eq!(merged_stride(&[2, 1, 3], &[3, 99, 1]), Some(1));
        assert_eq!(merged_stride(&[1, 1], &[5, 7]), Some(0));
        assert_eq!(merged_stride(&[4, 3], &[0, 0]), Some(0));
    }

    #[test]
    fn a_shared_rhs_folds_the_batch_into_one_product() {
        let al = Layout::contiguous([4, 3, 5]);
        let bl = Layout::contiguous([5, 2]).broadcast_as("t", &[4, 5, 2].into()).unwrap();
        let p = Plan::new(&al, &bl);
        assert_eq!((p.m, p.offsets.len(), p.a), (12, 1, (5, 1)));
        // A transposed lhs does not merge: one product per batch entry.
        let at = Layout::contiguous([4, 5, 3]).transpose(1, 2);
        let p = Plan::new(&at, &bl);
        assert_eq!((p.m, p.offsets.len(), p.a), (3, 4, (1, 3)));
        assert_eq!(p.offsets.iter().map(|o| o.0).collect::<Vec<_>>(), vec![0, 15, 30, 45]);
    }
}
