//! Indexing ops with PyTorch semantics: `index_select` / `index_add` along a dim, `gather` /
//! `scatter_add` with an index tensor, `one_hot`, and `embedding` (row lookup).
//!
//! Indices are `u32` or `i64` tensors; every value is checked (negative or too large values
//! give [`Error::IndexOutOfRange`]). Accumulating ops are deterministic: each destination
//! element sums its contributions in row-major order of the index, whatever the thread count.
//! On a GPU device the indices are still read and checked on the host; the kernels
//! (kernels/tensor/index.cu) read the device index tensor, and the accumulating ones get the
//! contributions grouped by destination, so they too sum in that order, without atomics.

use crate::autograd::GradFn;
use crate::cpu::strided::{Runs, fill_vec};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Dim, Error, Layout, Result, Shape, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements above which index kernels split their output across rayon threads.
const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per rayon task.
const PAR_CHUNK: usize = 1 << 14;

/// Reads an index tensor (u32 or i64, any layout) row-major, checking that every value lies in
/// `0..size` (`dim` names the indexed dim in errors).
fn read_indices(op: &'static str, index: &Tensor, dim: usize, size: usize, device: Device) -> Result<Vec<usize>> {
    if index.device() != device {
        return Err(Error::DeviceMismatch { op, lhs: device, rhs: index.device() });
    }
    let check = |v: i64| {
        if v < 0 || v as u64 >= size as u64 {
            Err(Error::IndexOutOfRange { op, index: v, dim, size })
        } else {
            Ok(v as usize)
        }
    };
    match index.dtype() {
        DType::U32 => index.to_vec::<u32>()?.into_iter().map(|v| check(v as i64)).collect(),
        DType::I64 => index.to_vec::<i64>()?.into_iter().map(check).collect(),
        dtype => Err(Error::UnsupportedDType {
            op,
            dtype,
            hint: "indices must be u32 or i64; convert with to_dtype(DType::I64)",
        }),
    }
}

/// Element addition used by the accumulating kernels (integers wrap, f16/bf16 add in f32).
trait Accum: Copy + Send + Sync {
    fn acc(self, rhs: Self) -> Self;
}
macro_rules! accum {
    ($($t:ty => |$a:ident, $b:ident| $e:expr),* $(,)?) => {$(
        impl Accum for $t {
            #[inline(always)]
            fn acc(self, rhs: Self) -> Self {
                let ($a, $b) = (self, rhs);
                $e
            }
        }
    )*};
}
accum!(
    u8 => |a, b| a.wrapping_add(b),
    u32 => |a, b| a.wrapping_add(b),
    i64 => |a, b| a.wrapping_add(b),
    f16 => |a, b| f16::from_f32(a.to_f32() + b.to_f32()),
    bf16 => |a, b| bf16::from_f32(a.to_f32() + b.to_f32()),
    f32 => |a, b| a + b,
    f64 => |a, b| a + b,
);

/// Runs `$body` with `$x`, `$y` bound to the vectors of two storages of the same dtype.
macro_rules! with_pair {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (CpuStorage::U8($x), CpuStorage::U8($y)) => $body,
            (CpuStorage::U32($x), CpuStorage::U32($y)) => $body,
            (CpuStorage::I64($x), CpuStorage::I64($y)) => $body,
            (CpuStorage::F16($x), CpuStorage::F16($y)) => $body,
            (CpuStorage::BF16($x), CpuStorage::BF16($y)) => $body,
            (CpuStorage::F32($x), CpuStorage::F32($y)) => $body,
            (CpuStorage::F64($x), CpuStorage::F64($y)) => $body,
            (a, b) => return Err(Error::DTypeMismatch { op: $op, lhs: a.dtype(), rhs: b.dtype() }),
        }
    };
}

/// `(outer, size, inner)`: the products of the dims before `dim`, `dim` itself, and after it.
fn split_dims(dims: &[usize], dim: usize) -> (usize, usize, usize) {
    (dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product())
}

/// Runs `f(first_row, rows)` over `out` cut into rows of `inner` elements, in parallel chunks
/// of whole rows when `work` is large.
fn for_rows<T: Send>(out: &mut [T], inner: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if inner == 0 || out.is_empty() {
        return;
    }
    if work >= PAR_THRESHOLD {
        let rows = (PAR_CHUNK / inner).max(1);
        out.par_chunks_mut(rows * inner).enumerate().for_each(|(c, chunk)| f(c * rows, chunk));
    } else {
        f(0, out);
    }
}

/// Copies row `idx[j]` of every outer block of contiguous `src` (`outer x size x inner`) to
/// row `j` of the output (`outer x idx.len() x inner`).
fn select_rows<T: Copy + Send + Sync>(src: &[T], (outer, size, inner): (usize, usize, usize), idx: &[usize]) -> Vec<T> {
    let j = idx.len();
    let n = outer * j * inner;
    let mut out: Vec<T> = Vec::with_capacity(n);
    for_rows(&mut out.spare_capacity_mut()[..n], inner, n, |r0, chunk: &mut [MaybeUninit<T>]| {
        for (k, row) in chunk.chunks_exact_mut(inner).enumerate() {
            let (o, jj) = ((r0 + k) / j, (r0 + k) % j);
            let s = (o * size + idx[jj]) * inner;
            row.write_copy_of_slice(&src[s..s + inner]);
        }
    });
    // SAFETY: the rows cover all `outer * j` rows of `inner` elements, each written above.
    unsafe { out.set_len(n) };
    out
}

/// `out` (`outer x size x inner`, contiguous) += rows of `src` (`outer x idx.len() x inner`)
/// at rows `idx`. Parallel over destination rows; each sums its sources in increasing `j`.
fn add_rows<T: Accum>(out: &mut [T], src: &[T], (outer, size, inner): (usize, usize, usize), idx: &[usize]) {
    let j = idx.len();
    if j == 0 {
        return;
    }
    // Counting sort of the positions by destination (CSR), stable in j.
    let mut start = vec![0usize; size + 1];
    for &i in idx {
        start[i + 1] += 1;
    }
    for d in 0..size {
        start[d + 1] += start[d];
    }
    let mut next = start.clone();
    let mut order = vec![0usize; j];
    for (jj, &i) in idx.iter().enumerate() {
        order[next[i]] = jj;
        next[i] += 1;
    }
    for_rows(out, inner, outer * j * inner, |r0, chunk| {
        for (k, row) in chunk.chunks_exact_mut(inner).enumerate() {
            let (o, d) = ((r0 + k) / size, (r0 + k) % size);
            for &jj in &order[start[d]..start[d + 1]] {
                let s = (o * j + jj) * inner;
                for (a, &b) in row.iter_mut().zip(&src[s..s + inner]) {
                    *a = a.acc(b);
                }
            }
        }
    });
}

/// `out[p] = src[p with p[dim] replaced by idx[p]]` over the index shape `idims`.
fn gather_t<T: Copy + Send + Sync>(src: &[T], sl: &Layout, dim: usize, idims: &[usize], idx: &[usize]) -> Vec<T> {
    let mut ss = sl.strides().to_vec();
    let sd = std::mem::replace(&mut ss[dim], 0);
    let ci = Shape::from(idims).contiguous_strides();
    let runs = Runs::new(idims, [&ss, &ci], [sl.offset(), 0]);
    fill_vec(&runs, |out, [os, oi], [s1, s2]| {
        for (k, d) in out.iter_mut().enumerate() {
            d.write(src[os + k * s1 + idx[oi + k * s2] * sd]);
        }
    })
}

/// `out[p with p[dim] replaced by idx[p]] += src[p]` over the index shape; `out` is contiguous
/// with dims `odims`. Parallel over dim-0 slices when `dim > 0` (they touch disjoint outputs).
fn scatter_add_t<T: Accum>(
    out: &mut [T],
    odims: &[usize],
    dim: usize,
    src: &[T],
    sl: &Layout,
    idims: &[usize],
    idx: &[usize],
) {
    let n: usize = idims.iter().product();
    if n == 0 {
        return;
    }
    let mut co = Shape::from(odims).contiguous_strides();
    let od = std::mem::replace(&mut co[dim], 0);
    let ci = Shape::from(idims).contiguous_strides();
    let ss = sl.strides();
    let slice = |out: &mut [T], dims: &[usize], strides: [&[usize]; 3], offs: [usize; 3]| {
        let runs = Runs::new(dims, strides, offs);
        runs.visit(0, runs.len(), |_, [os, oo, oi], len, [a, b, c]| {
            for k in 0..len {
                let t = &mut out[oo + k * b + idx[oi + k * c] * od];
                *t = t.acc(src[os + k * a]);
            }
        });
    };
    if dim > 0 && n >= PAR_THRESHOLD && idims[0] > 1 {
        // co[0] > 0: n > 0 makes every index dim, hence every output dim, nonzero.
        out.par_chunks_mut(co[0]).take(idims[0]).enumerate().for_each(|(i0, chunk)| {
            slice(chunk, &idims[1..], [&ss[1..], &co[1..], &ci[1..]], [sl.offset() + i0 * ss[0], 0, i0 * ci[0]])
        });
    } else {
        slice(out, idims, [ss, &co, &ci], [sl.offset(), 0, 0]);
    }
}

/// Checks PyTorch's shape rules for gather/scatter: same rank, and `index` no larger than
/// `input` outside `dim` (and no larger than `src` anywhere, when given).
fn check_index_shape(op: &'static str, input: &Shape, index: &Shape, dim: usize, src: Option<&Shape>) -> Result<()> {
    let mismatch = |lhs: &Shape, hint: String| Error::ShapeMismatch { op, lhs: lhs.clone(), rhs: index.clone(), hint };
    if index.rank() != input.rank() {
        return Err(mismatch(input, "index (rhs) must have the same rank as the input (lhs)".into()));
    }
    for d in 0..input.rank() {
        if d != dim && index.dims()[d] > input.dims()[d] {
            return Err(mismatch(
                input,
                format!("index (rhs) may not be larger than the input (lhs) in dim {d} != {dim}"),
            ));
        }
    }
    match src {
        Some(src) if src.rank() != index.rank() || src.dims().iter().zip(index.dims()).any(|(s, i)| i > s) => {
            Err(mismatch(src, "index (rhs) must have the rank of src (lhs) and be no larger in any dim".into()))
        }
        _ => Ok(()),
    }
}

struct IndexSelectBack(usize);
impl GradFn for IndexSelectBack {
    fn name(&self) -> &str {
        "index_select"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zeros = Tensor::zeros(i[0].shape(), g.dtype(), &g.device())?;
        Ok(vec![Some(zeros.index_add(self.0, &i[1], g)?), None])
    }
}

struct IndexAddBack(usize);
impl GradFn for IndexAddBack {
    fn name(&self) -> &str {
        "index_add"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gs = i[2].requires_grad().then(|| g.index_select(self.0, &i[1])).transpose()?;
        Ok(vec![Some(g.clone()), None, gs])
    }
}

struct GatherBack(usize);
impl GradFn for GatherBack {
    fn name(&self) -> &str {
        "gather"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zeros = Tensor::zeros(i[0].shape(), g.dtype(), &g.device())?;
        Ok(vec![Some(zeros.scatter_add(self.0, &i[1], g)?), None])
    }
}

struct ScatterAddBack(usize);
impl GradFn for ScatterAddBack {
    fn name(&self) -> &str {
        "scatter_add"
    }
    fn backward(&self, i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gs = if i[2].requires_grad() {
            // Elements of src outside the index shape are unused: their gradient is 0.
            let mut gs = g.gather(self.0, &i[1])?;
            for d in 0..gs.rank() {
                let missing = i[2].dims()[d] - gs.dims()[d];
                gs = gs.pad_with_zeros(d, 0, missing)?;
            }
            Some(gs)
        } else {
            None
        };
        Ok(vec![Some(g.clone()), None, gs])
    }
}

impl Tensor {
    /// Selects entries `indices` (rank 0 or 1, u32 or i64) along `dim`: the output has the
    /// input's shape with `dim` resized to the number of indices. Indices may repeat. Rows are
    /// copied as contiguous slices, in parallel for large outputs (a non-contiguous input is
    /// made contiguous first). Differentiable in `self`: the backward is an `index_add`.
    pub fn index_select(&self, dim: impl Dim, indices: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        let d = dim.to_index(self.shape(), OP)?;
        if indices.rank() > 1 {
            return Err(Error::invalid(
                OP,
                format!("indices must have rank 0 or 1, got shape {:?}; flatten them", indices.shape()),
            ));
        }
        let idx = read_indices(OP, indices, d, self.dims()[d], self.device())?;
        let parts = split_dims(self.dims(), d);
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(match self.layout().contiguous_range() {
                Some((a, b)) => crate::cpu_storage_map!(s, v => select_rows(&v[a..b], parts, &idx)),
                None => crate::cpu_storage_map!(&s.copy_strided(self.layout()), v => select_rows(v, parts, &idx)),
            }),
            Storage::Gpu(g) => {
                let is = indices.storage();
                let Storage::Gpu(ig) = &*is else { unreachable!("read_indices checked the device") };
                Storage::Gpu(crate::gpu::index_select(OP, g, self.layout(), d, ig, indices.layout())?)
            }
        };
        let mut dims = self.dims().to_vec();
        dims[d] = idx.len();
        Ok(Tensor::from_op(out, dims, &[self, indices], || Box::new(IndexSelectBack(d))))
    }

    /// Out-of-place `index_add`: a copy of `self` where entry `indices[j]` of `dim` gets entry
    /// `j` of `src` added (repeated indices accumulate, deterministically in increasing `j`).
    /// `src` has `self`'s shape with `dim` resized to the number of indices. Differentiable in
    /// `self` (identity) and `src` (an `index_select`).
    pub fn index_add(&self, dim: impl Dim, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_add";
        let d = dim.to_index(self.shape(), OP)?;
        self.same_dtype_device(src, OP)?;
        if indices.rank() > 1 {
            return Err(Error::invalid(
                OP,
                format!("indices must have rank 0 or 1, got shape {:?}; flatten them", indices.shape()),
            ));
        }
        let idx = read_indices(OP, indices, d, self.dims()[d], self.device())?;
        let mut want = self.dims().to_vec();
        want[d] = idx.len();
        if src.dims() != want.as_slice() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: want.into(),
                rhs: src.shape().clone(),
                hint: format!(
                    "src (rhs) must have the input's shape with dim {d} of size {} (the index count)",
                    idx.len()
                ),
            });
        }
        let out = if self.device().is_gpu() {
            let out = self.with_gpu(OP, |g, l| crate::gpu::contiguous(OP, g, l))?;
            let src = src.contiguous()?;
            src.with_gpu(OP, |sg, sl| crate::gpu::index_add(OP, &out, self.dims(), d, (sg, sl.offset()), &idx))?;
            Storage::Gpu(out)
        } else {
            let parts = split_dims(self.dims(), d);
            let mut out = self.to_cpu_storage()?;
            let src_c = src.to_cpu_storage()?;
            with_pair!(OP, &mut out, &src_c, |o, s| add_rows(o, s, parts, &idx));
            Storage::Cpu(out)
        };
        Ok(Tensor::from_op(out, self.shape().clone(), &[self, indices, src], || Box::new(IndexAddBack(d))))
    }

    /// PyTorch `gather`: `out[p] = self[p with p[dim] = index[p]]`, with the shape of `index`
    /// (same rank as `self`, no larger outside `dim`). Differentiable in `self` (a scatter_add).
    pub fn gather(&self, dim: impl Dim, index: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        let d = dim.to_index(self.shape(), OP)?;
        check_index_shape(OP, self.shape(), index.shape(), d, None)?;
        let idx = read_indices(OP, index, d, self.dims()[d], self.device())?;
        let idims = index.dims().to_vec();
        let out = match &*self.storage() {
            Storage::Cpu(s) => {
                let l = self.layout();
                Storage::Cpu(crate::cpu_storage_map!(s, v => gather_t(v, l, d, &idims, &idx)))
            }
            Storage::Gpu(g) => {
                let is = index.storage();
                let Storage::Gpu(ig) = &*is else { unreachable!("read_indices checked the device") };
                Storage::Gpu(crate::gpu::gather(OP, g, self.layout(), d, ig, index.layout())?)
            }
        };
        Ok(Tensor::from_op(out, idims, &[self, index], || Box::new(GatherBack(d))))
    }

    /// Out-of-place PyTorch `scatter_add`: a copy of `self` where, for every position `p` of
    /// `index`, `src[p]` is added at `p` with `p[dim] = index[p]`. `index` has the rank of `self`
    /// and `src`, is no larger than `src` anywhere and than `self` outside `dim`. Contributions
    /// accumulate in row-major order of `index`. Differentiable in `self` (identity) and `src`
    /// (a `gather`, zero where `src` lies outside the index shape).
    pub fn scatter_add(&self, dim: impl Dim, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        let d = dim.to_index(self.shape(), OP)?;
        self.same_dtype_device(src, OP)?;
        check_index_shape(OP, self.shape(), index.shape(), d, Some(src.shape()))?;
        let idx = read_indices(OP, index, d, self.dims()[d], self.device())?;
        let out = if self.device().is_gpu() {
            let out = self.with_gpu(OP, |g, l| crate::gpu::contiguous(OP, g, l))?;
            src.with_gpu(OP, |sg, sl| crate::gpu::scatter_add(OP, &out, self.dims(), d, (sg, sl), index.dims(), &idx))?;
            Storage::Gpu(out)
        } else {
            let mut out = self.to_cpu_storage()?;
            src.with_cpu(OP, |s, l| {
                with_pair!(OP, &mut out, s, |o, sv| scatter_add_t(o, self.dims(), d, sv, l, index.dims(), &idx));
                Ok(())
            })?;
            Storage::Cpu(out)
        };
        Ok(Tensor::from_op(out, self.shape().clone(), &[self, index, src], || Box::new(ScatterAddBack(d))))
    }

    /// One-hot encoding of integer labels (`self`, u32 or i64): shape `self.shape + [num_classes]`
    /// with 1 at each label and 0 elsewhere, in `dtype`. Not differentiable.
    pub fn one_hot(&self, num_classes: usize, dtype: DType) -> Result<Tensor> {
        fn build<T: WithDType>(idx: &[usize], classes: usize) -> CpuStorage {
            let mut v = vec![T::from_f64(0.0); idx.len() * classes];
            for (row, &i) in v.chunks_exact_mut(classes.max(1)).zip(idx) {
                row[i] = T::from_f64(1.0);
            }
            T::into_storage(v)
        }
        let idx = read_indices("one_hot", self, self.rank(), num_classes, self.device())?;
        let mut dims = self.dims().to_vec();
        dims.push(num_classes);
        if self.device().is_gpu() {
            let out = self.with_gpu("one_hot", |g, l| crate::gpu::one_hot("one_hot", g, l, num_classes, dtype))?;
            return Ok(Tensor::from_storage(Storage::Gpu(out), dims));
        }
        let s = match dtype {
            DType::U8 => build::<u8>(&idx, num_classes),
            DType::U32 => build::<u32>(&idx, num_classes),
            DType::I64 => build::<i64>(&idx, num_classes),
            DType::F16 => build::<f16>(&idx, num_classes),
            DType::BF16 => build::<bf16>(&idx, num_classes),
            DType::F32 => build::<f32>(&idx, num_classes),
            DType::F64 => build::<f64>(&idx, num_classes),
        };
        Tensor::from_cpu_storage(s, dims, &self.device())
    }

    /// Embedding lookup on a weight matrix `self` of shape `(num_embeddings, dim)`: returns
    /// `ids.shape + [dim]` with row `ids[p]` at `p` (an `index_select` on dim 0, so the weight
    /// gets a deterministic scatter-add gradient).
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid("embedding", format!("weight must have rank 2, got shape {:?}", self.shape())));
        }
        let mut dims = ids.dims().to_vec();
        dims.push(self.dims()[1]);
        self.index_select(0usize, &ids.flatten_all()?)?.reshape(dims)
    }
}
