//! Launch plans of the indexing ops (kernels/tensor/index.cu). Indices were read and checked
//! on the host by the op; the gathering kernels read the device index tensor directly, the
//! accumulating ones get the contributions grouped by destination (a CSR built here from the
//! host indices), so they need no atomics and sum in the CPU's order.

use super::{GpuStorage, StridedMeta, dtype_suffix, grid_plan, launch, module};
use crate::storage::CpuStorage;
use crate::{DType, Error, Layout, Result, Shape};
use attune_cuda::KernelArg;

const FILE: &str = "index.cu";
const DTYPES: [DType; 7] = [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];

/// The entry suffix of an index dtype (u32 or i64).
fn index_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::U32 | DType::I64 => Ok(dtype_suffix(dtype)),
        dtype => Err(Error::UnsupportedDType {
            op,
            dtype,
            hint: "indices must be u32 or i64; convert with to_dtype(DType::I64)",
        }),
    }
}

/// `l` with `dims` and stride 0 at `dim` (the coordinate the kernel adds from the index).
fn without_dim(l: &Layout, dims: &[usize], dim: usize) -> Layout {
    let mut strides = l.strides().to_vec();
    strides[dim] = 0;
    Layout::new(Shape::from(dims.to_vec()), strides, l.offset())
}

/// Rows `indices` (rank 0 or 1, already checked) of `x` along `dim`; contiguous output.
pub(crate) fn index_select(
    op: &'static str,
    x: &GpuStorage,
    l: &Layout,
    dim: usize,
    idx: &GpuStorage,
    il: &Layout,
) -> Result<GpuStorage> {
    let count = il.elem_count();
    let mut dims = l.dims().to_vec();
    dims[dim] = count;
    let n: usize = dims.iter().product();
    let dev = x.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, x.dtype, n)?;
    if n == 0 {
        return Ok(out);
    }
    let meta = StridedMeta::new(op, &[&Layout::contiguous(dims.clone()), &without_dim(l, &dims, dim)])?;
    let inner: usize = dims[dim + 1..].iter().product();
    let idx_stride = il.strides().first().copied().unwrap_or(0);
    let args = vec![
        KernelArg::pod(&meta),
        KernelArg::I64(inner as i64),
        KernelArg::I64(count as i64),
        KernelArg::I64(l.strides()[dim] as i64),
        idx.arg(il.offset()),
        KernelArg::I64(idx_stride as i64),
        x.arg(0),
        out.arg(0),
    ];
    let entry = format!("index_select_{}_{}", dtype_suffix(x.dtype), index_suffix(op, idx.dtype)?);
    launch(op, &dev, &grid_plan(module(FILE), entry, n, args))?;
    Ok(out)
}

/// PyTorch `gather` of `x` along `dim` with the (checked) index `idx`; output shaped like it.
pub(crate) fn gather(
    op: &'static str,
    x: &GpuStorage,
    l: &Layout,
    dim: usize,
    idx: &GpuStorage,
    il: &Layout,
) -> Result<GpuStorage> {
    let dims = il.dims().to_vec();
    let n = il.elem_count();
    let dev = x.gpu().clone();
    let out = GpuStorage::alloc(op, &dev, x.dtype, n)?;
    if n == 0 {
        return Ok(out);
    }
    let meta = StridedMeta::new(op, &[&Layout::contiguous(dims.clone()), &without_dim(l, &dims, dim), il])?;
    let args = vec![KernelArg::pod(&meta), KernelArg::I64(l.strides()[dim] as i64), idx.arg(0), x.arg(0), out.arg(0)];
    let entry = format!("gather_{}_{}", dtype_suffix(x.dtype), index_suffix(op, idx.dtype)?);
    launch(op, &dev, &grid_plan(module(FILE), entry, n, args))?;
    Ok(out)
}

/// One-hot rows of `classes` entries in `dtype` for the (checked) labels `idx`.
pub(crate) fn one_hot(
    op: &'static str,
    idx: &GpuStorage,
    il: &Layout,
    classes: usize,
    dtype: DType,
) -> Result<GpuStorage> {
    let n = il.elem_count();
    let dev = idx.gpu().clone();
    let out = GpuStorage::zeros(op, &dev, dtype, n * classes)?;
    if n == 0 || classes == 0 {
        return Ok(out);
    }
    let meta = StridedMeta::contiguous_out(op, &[il])?;
    let args = vec![KernelArg::pod(&meta), KernelArg::I64(classes as i64), idx.arg(0), out.arg(0)];
    let entry = format!("one_hot_{}_{}", dtype_suffix(dtype), index_suffix(op, idx.dtype)?);
    launch(op, &dev, &grid_plan(module(FILE), entry, n, args))?;
    Ok(out)
}

/// Counting sort of the positions `0..dest.len()` by destination (`0..n_dest`), stable:
/// `(start, order)` with the positions of destination `e` at `order[start[e]..start[e + 1]]`.
fn group_by_destination(dest: impl Iterator<Item = usize> + Clone, n_dest: usize) -> (Vec<i64>, Vec<i64>) {
    let mut start = vec![0i64; n_dest + 1];
    for e in dest.clone() {
        start[e + 1] += 1;
    }
    for e in 0..n_dest {
        start[e + 1] += start[e];
    }
    let mut next = start.clone();
    let mut order = vec![0i64; start[n_dest] as usize];
    for (p, e) in dest.enumerate() {
        order[next[e] as usize] = p as i64;
        next[e] += 1;
    }
    (start, order)
}

/// `out` (contiguous with `dims`, a copy of the input) += rows of contiguous `src` (`src_start`
/// is its first element; the input's dims with `dim` resized to `idx.len()`) at rows `idx`.
pub(crate) fn index_add(
    op: &'static str,
    out: &GpuStorage,
    dims: &[usize],
    dim: usize,
    (src, src_start): (&GpuStorage, usize),
    idx: &[usize],
) -> Result<()> {
    let n: usize = dims.iter().product();
    if n == 0 || idx.is_empty() {
        return Ok(());
    }
    let (size, inner) = (dims[dim], dims[dim + 1..].iter().product::<usize>());
    let (start, order) = group_by_destination(idx.iter().copied(), size);
    let dev = out.gpu().clone();
    let start = GpuStorage::upload(op, &dev, &CpuStorage::I64(start))?;
    let order = GpuStorage::upload(op, &dev, &CpuStorage::I64(order))?;
    let args = vec![
        KernelArg::I64(n as i64),
        KernelArg::I64(size as i64),
        KernelArg::I64(inner as i64),
        KernelArg::I64(idx.len() as i64),
        start.arg(0),
        order.arg(0),
        src.arg(src_start),
        out.arg(0),
    ];
    launch(op, &dev, &grid_plan(module(FILE), format!("index_add_{}", dtype_suffix(out.dtype)), n, args))
}

/// `out` (contiguous with `odims`, a copy of the input) gets `src[p]` added at `p` with
/// `p[dim] = idx[p]` for every position `p` of the index shape `idims` (`idx` row-major).
pub(crate) fn scatter_add(
    op: &'static str,
    out: &GpuStorage,
    odims: &[usize],
    dim: usize,
    (src, sl): (&GpuStorage, &Layout),
    idims: &[usize],
    idx: &[usize],
) -> Result<()> {
    let n_out: usize = odims.iter().product();
    if idx.is_empty() {
        return Ok(());
    }
    let co = Shape::from(odims.to_vec()).contiguous_strides();
    // The destination of each index position, walking the index shape in row-major order.
    let dest = idx.iter().enumerate().map(|(p, &i)| {
        let (mut rest, mut e) = (p, 0);
        for d in (0..idims.len()).rev() {
            let c = rest % idims[d];
            rest /= idims[d];
            e += if d == dim { i } else { c } * co[d];
        }
        e
    });
    let (start, order) = group_by_destination(dest, n_out);
    let dev = out.gpu().clone();
    let start = GpuStorage::upload(op, &dev, &CpuStorage::I64(start))?;
    let order = GpuStorage::upload(op, &dev, &CpuStorage::I64(order))?;
    let src_view = Layout::new(Shape::from(idims.to_vec()), sl.strides().to_vec(), sl.offset());
    let meta = StridedMeta::new(op, &[&Layout::contiguous(idims.to_vec()), &src_view])?;
    let args =
        vec![KernelArg::pod(&meta), KernelArg::I64(n_out as i64), start.arg(0), order.arg(0), src.arg(0), out.arg(0)];
    launch(op, &dev, &grid_plan(module(FILE), format!("scatter_add_{}", dtype_suffix(out.dtype)), n_out, args))
}

/// Every entry point of index.cu (for build-kernels).
pub(crate) fn entries() -> Vec<String> {
    let mut out = Vec::new();
    for d in DTYPES {
        let s = dtype_suffix(d);
        for i in ["u32", "i64"] {
            out.extend(["index_select", "gather", "one_hot"].map(|k| format!("{k}_{s}_{i}")));
        }
        out.extend([format!("index_add_{s}"), format!("scatter_add_{s}")]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_is_a_stable_counting_sort() {
        let dest = [2usize, 0, 2, 1, 0, 2];
        let (start, order) = group_by_destination(dest.iter().copied(), 4);
        assert_eq!(start, vec![0, 2, 3, 6, 6]);
        assert_eq!(order, vec![1, 4, 3, 0, 2, 5]);
    }
}
