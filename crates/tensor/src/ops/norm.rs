//! Fused layer norm and RMS norm over the last dim.
//!
//! Forward: one kernel per row (rows split across rayon tasks above a size threshold) that
//! accumulates the statistics in f32 (f16/bf16/f32) or f64 (f64), writes the output and saves
//! the per-row mean and reciprocal standard deviation for the backward.
//!
//! Backward design: on the CPU the backward is a fused kernel too (two passes over each row
//! in cache, producing dx and per-task partial sums of dweight/dbias); on a GPU (and the
//! emulator) it is the fused kernel of kernels/tensor/norm.cu, with dweight/dbias summed over
//! row chunks and then over the chunks in order (deterministic, no atomics). The same closed
//! form written with tensor ops takes about a dozen full-size passes and temporaries, so it is
//! kept only as the test reference of the CPU kernel.

use crate::autograd::GradFn;
use crate::cpu::strided::PAR_THRESHOLD;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Error, Result, Tensor, WithDType};
use half::{bf16, f16};
use num_traits::{Float, NumCast, Zero};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per rayon task for row kernels (rows are never split).
const TASK_ELEMS: usize = 1 << 14;
/// At most this many tasks for kernels that keep per-task partial sums, so the partials stay
/// small and their (sequential, ordered) reduction is deterministic.
const MAX_PARTIAL_TASKS: usize = 64;

/// A float element computed in a wider accumulator: f32 for f16/bf16/f32, f64 for f64.
pub(crate) trait AccElem: Copy + Send + Sync + 'static {
    /// The accumulator type.
    /// [`FastExp`](crate::cpu::math::FastExp): f32 rows exponentiate with the vectorisable
    /// `exp_f32` (cross-entropy's softmax) instead of a libm call per element.
    type A: Float + crate::cpu::math::FastExp + Send + Sync + std::iter::Sum + 'static;
    fn to_a(self) -> Self::A;
    fn from_a(a: Self::A) -> Self;
    /// Wraps accumulator values in storage.
    fn acc_storage(v: Vec<Self::A>) -> CpuStorage;
    /// Borrows accumulator values from storage.
    fn acc_slice(s: &CpuStorage) -> Option<&[Self::A]>;
}

macro_rules! acc_elem {
    ($t:ty, $a:ty, $variant:ident, $to:expr, $from:expr) => {
        impl AccElem for $t {
            type A = $a;
            #[inline(always)]
            fn to_a(self) -> $a {
                $to(self)
            }
            #[inline(always)]
            fn from_a(a: $a) -> Self {
                $from(a)
            }
            fn acc_storage(v: Vec<$a>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn acc_slice(s: &CpuStorage) -> Option<&[$a]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
acc_elem!(f16, f32, F32, f16::to_f32, f16::from_f32);
acc_elem!(bf16, f32, F32, bf16::to_f32, bf16::from_f32);
acc_elem!(f32, f32, F32, |x| x, |x| x);
acc_elem!(f64, f64, F64, |x| x, |x| x);

/// `sum(f(x))` over a contiguous slice with eight partial sums, so the loop vectorises.
#[inline]
pub(crate) fn lane_sum<T: Copy, A: Float>(xs: &[T], f: impl Fn(T) -> A) -> A {
    let mut acc = [A::zero(); 8];
    let mut it = xs.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] = acc[k] + f(c[k]);
        }
    }
    let tail = it.remainder().iter().fold(A::zero(), |a, &x| a + f(x));
    acc.iter().fold(tail, |a, &b| a + b)
}

/// An f64 constant in the accumulator type (exact for f64, rounded for f32).
#[inline]
pub(crate) fn cast<A: Float>(v: f64) -> A {
    <A as NumCast>::from(v).unwrap_or_else(A::nan)
}

/// Rows per rayon task: about [`TASK_ELEMS`] elements, at least one row.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMS / row_len.max(1)).max(1)
}

/// Whether a row kernel over `rows` rows of `row_len` elements should run in parallel.
pub(crate) fn parallel_rows(rows: usize, row_len: usize) -> bool {
    rows > 1 && rows * row_len >= PAR_THRESHOLD
}

/// The elements of a contiguous tensor `t` inside its CPU storage `s` (None if `t` is not
/// contiguous or `T` is not its dtype).
pub(crate) fn contiguous_slice<'a, T: WithDType>(t: &Tensor, s: &'a CpuStorage) -> Option<&'a [T]> {
    let (a, b) = t.layout().contiguous_range()?;
    T::slice(s)?.get(a..b)
}

/// Normalises one row: returns (mean, rstd). `mean` is 0 for RMS norm.
#[inline]
fn norm_row<T: AccElem>(
    x: &[T],
    y: &mut [MaybeUninit<T>],
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: T::A,
    rms: bool,
) -> (T::A, T::A) {
    let n = cast::<T::A>(x.len() as f64);
    // Two passes over the row while it is in cache: the centred variance is stable where
    // E[x^2] - E[x]^2 cancels catastrophically.
    let mean = if rms { T::A::zero() } else { lane_sum(x, T::to_a) / n };
    let var = lane_sum(x, |v| {
        let c = v.to_a() - mean;
        c * c
    }) / n;
    let rstd = (var + eps).sqrt().recip();
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((o, &v), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                o.write(T::from_a((v.to_a() - mean) * rstd * w.to_a() + b.to_a()));
            }
        }
        (Some(w), None) => {
            for ((o, &v), &w) in y.iter_mut().zip(x).zip(w) {
                o.write(T::from_a((v.to_a() - mean) * rstd * w.to_a()));
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &b) in y.iter_mut().zip(x).zip(b) {
                o.write(T::from_a((v.to_a() - mean) * rstd + b.to_a()));
            }
        }
        (None, None) => {
            for (o, &v) in y.iter_mut().zip(x) {
                o.write(T::from_a((v.to_a() - mean) * rstd));
            }
        }
    }
    (mean, rstd)
}

/// Forward over contiguous rows of `d` elements: (y, mean, rstd).
fn norm_forward<T: AccElem>(
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: f64,
    rms: bool,
) -> (Vec<T>, Vec<T::A>, Vec<T::A>) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    let eps = cast::<T::A>(eps);
    let mut y: Vec<T> = Vec::with_capacity(x.len());
    let mut mean = vec![T::A::zero(); rows];
    let mut rstd = vec![T::A::zero(); rows];
    let spare = &mut y.spare_capacity_mut()[..x.len()];
    let task = |xs: &[T], ys: &mut [MaybeUninit<T>], ms: &mut [T::A], rs: &mut [T::A]| {
        for (((xr, yr), m), r) in xs.chunks_exact(d).zip(ys.chunks_exact_mut(d)).zip(ms).zip(rs) {
            (*m, *r) = norm_row(xr, yr, w, b, eps, rms);
        }
    };
    if d > 0 {
        let rpt = rows_per_task(d);
        if parallel_rows(rows, d) {
            spare
                .par_chunks_mut(rpt * d)
                .zip(x.par_chunks(rpt * d))
                .zip(mean.par_chunks_mut(rpt))
                .zip(rstd.par_chunks_mut(rpt))
                .for_each(|(((ys, xs), ms), rs)| task(xs, ys, ms, rs));
        } else {
            task(x, spare, &mut mean, &mut rstd);
        }
    }
    // SAFETY: every row of `d` elements was written by `norm_row` (and d == 0 means len 0).
    unsafe { y.set_len(x.len()) };
    (y, mean, rstd)
}

/// Backward of one row: writes dx and adds this row's terms to dw/db.
#[allow(clippy::too_many_arguments)]
#[inline]
fn norm_row_backward<T: AccElem>(
    x: &[T],
    g: &[T],
    dx: &mut [MaybeUninit<T>],
    w: Option<&[T]>,
    mean: T::A,
    rstd: T::A,
    rms: bool,
    dw: &mut [T::A],
    db: &mut [T::A],
) {
    let len = x.len();
    let n = cast::<T::A>(len as f64);
    // Re-slicing to the row length lets the compiler drop the bounds checks below.
    let (g, dw, db, w) = (&g[..len], &mut dw[..len], &mut db[..len], w.map(|w| &w[..len]));
    let gw = |j: usize| match w {
        Some(w) => g[j].to_a() * w[j].to_a(),
        None => g[j].to_a(),
    };
    // With xhat = (x - mean) * rstd and gw = g * w:
    //   layer norm: dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
    //   RMS norm:   dx = rstd * (gw - xhat * mean(gw * xhat))
    //   dw = sum over rows of g * xhat, db = sum over rows of g
    let mut s_gw = T::A::zero();
    let mut s_gwx = T::A::zero();
    for j in 0..len {
        let xhat = (x[j].to_a() - mean) * rstd;
        let (gj, gwj) = (g[j].to_a(), gw(j));
        s_gw = s_gw + gwj;
        s_gwx = s_gwx + gwj * xhat;
        dw[j] = dw[j] + gj * xhat;
        db[j] = db[j] + gj;
    }
    let a = if rms { T::A::zero() } else { s_gw / n };
    let c = s_gwx / n;
    for (j, (o, &v)) in dx.iter_mut().zip(x).enumerate() {
        let xhat = (v.to_a() - mean) * rstd;
        o.write(T::from_a(rstd * (gw(j) - a - xhat * c)));
    }
}

/// Per-task partial sums of (dw, db).
type Partials<A> = (Vec<A>, Vec<A>);

/// Fused backward over contiguous rows: (dx, dw, db), dw/db in the accumulator type.
fn norm_backward<T: AccElem>(
    x: &[T],
    g: &[T],
    d: usize,
    w: Option<&[T]>,
    mean: &[T::A],
    rstd: &[T::A],
    rms: bool,
) -> (Vec<T>, Vec<T::A>, Vec<T::A>) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    let mut dx: Vec<T> = Vec::with_capacity(x.len());
    let spare = &mut dx.spare_capacity_mut()[..x.len()];
    let task = |r0: usize, dxs: &mut [MaybeUninit<T>]| {
        let mut dw = vec![T::A::zero(); d];
        let mut db = vec![T::A::zero(); d];
        for (k, dxr) in dxs.chunks_exact_mut(d).enumerate() {
            let r = r0 + k;
            let rows_x = &x[r * d..(r + 1) * d];
            let rows_g = &g[r * d..(r + 1) * d];
            norm_row_backward(rows_x, rows_g, dxr, w, mean[r], rstd[r], rms, &mut dw, &mut db);
        }
        (dw, db)
    };
    let mut dw = vec![T::A::zero(); d];
    let mut db = vec![T::A::zero(); d];
    if d > 0 && rows > 0 {
        // Few enough tasks that the partial dw/db stay small; fixed by the shape alone, so
        // the result does not depend on the thread count.
        let rpt = rows_per_task(d).max(rows.div_ceil(MAX_PARTIAL_TASKS));
        let partials: Vec<Partials<T::A>> = if parallel_rows(rows, d) {
            spare.par_chunks_mut(rpt * d).enumerate().map(|(i, c)| task(i * rpt, c)).collect()
        } else {
            vec![task(0, spare)]
        };
        for (pw, pb) in partials {
            for ((a, p), (c, q)) in dw.iter_mut().zip(pw).zip(db.iter_mut().zip(pb)) {
                *a = *a + p;
                *c = *c + q;
            }
        }
    }
    // SAFETY: every row of `d` elements was written by `norm_row_backward`.
    unsafe { dx.set_len(x.len()) };
    (dx, dw, db)
}

/// The closed-form backward written with tensor ops: the reference the fused kernels (CPU and
/// GPU) are tested against.
/// `x` and `g` are [rows, d]; `mean` and `rstd` are [rows, 1] in the accumulator dtype.
/// Returns dx and, when asked for (`need`), dw and db, in `x`'s dtype.
#[cfg(test)]
pub(crate) fn norm_backward_ops(
    x: &Tensor,
    g: &Tensor,
    w: Option<&Tensor>,
    mean: Option<&Tensor>,
    rstd: &Tensor,
    need: (bool, bool),
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let (dt, ct) = (x.dtype(), rstd.dtype());
    let (xc, gc) = (x.to_dtype(ct)?, g.to_dtype(ct)?);
    let xhat = match mean {
        Some(m) => xc.sub(m)?.mul(rstd)?,
        None => xc.mul(rstd)?,
    };
    let gw = match w {
        Some(w) => gc.mul(&w.to_dtype(ct)?)?,
        None => gc.clone(),
    };
    let mut inner = gw.sub(&xhat.mul(&gw.mul(&xhat)?.mean(1usize, true)?)?)?;
    if mean.is_some() {
        inner = inner.sub(&gw.mean(1usize, true)?)?;
    }
    let dx = inner.mul(rstd)?.to_dtype(dt)?;
    let dw = need.0.then(|| gc.mul(&xhat)?.sum(0usize, false)?.to_dtype(dt)).transpose()?;
    let db = need.1.then(|| gc.sum(0usize, false)?.to_dtype(dt)).transpose()?;
    Ok((dx, dw, db))
}

/// The single recorded backward of layer norm / RMS norm. Inputs: x (contiguous), then the
/// weight and the bias when given.
struct NormBack {
    rms: bool,
    has_w: bool,
    has_b: bool,
    /// Per-row statistics, [rows, 1] in the accumulator dtype (mean is None for RMS norm).
    mean: Option<Tensor>,
    rstd: Tensor,
}

impl GradFn for NormBack {
    fn name(&self) -> &str {
        if self.rms { "rms_norm" } else { "layer_norm" }
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let w = self.has_w.then(|| &inputs[1]);
        let d = x.dims().last().copied().unwrap_or(1);
        let rows = x.elem_count().checked_div(d).unwrap_or(0);
        let (dx, dw, db) = if x.device().is_cpu() {
            let (dx, dw, db) = self.backward_cpu(x, &g.contiguous()?, w, d)?;
            (dx, Some(dw), Some(db))
        } else {
            self.backward_gpu(x, &g.contiguous()?, w, (rows, d))?
        };
        let mut out = vec![Some(dx)];
        if self.has_w {
            out.push(dw);
        }
        if self.has_b {
            out.push(db);
        }
        Ok(out)
    }
}

impl NormBack {
    /// The fused GPU backward (kernels/tensor/norm.cu); dw/db only when there are w/b.
    fn backward_gpu(
        &self,
        x: &Tensor,
        g: &Tensor,
        w: Option<&Tensor>,
        shape: (usize, usize),
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let op = if self.rms { "rms_norm backward" } else { "layer_norm backward" };
        let (xs, gs, rs) = (x.storage(), g.storage(), self.rstd.storage());
        let ws = w.map(|w| w.storage());
        let ms = self.mean.as_ref().map(|m| m.storage());
        let wo = match (&ws, w) {
            (Some(s), Some(t)) => Some((gpu_of(op, s)?, t.layout())),
            _ => None,
        };
        let mo = match (&ms, &self.mean) {
            (Some(s), Some(t)) => Some((gpu_of(op, s)?, t.layout())),
            _ => None,
        };
        let (dx, dw, db) = crate::gpu::norm_backward(
            op,
            (gpu_of(op, &xs)?, x.layout()),
            (gpu_of(op, &gs)?, g.layout()),
            wo,
            mo,
            (gpu_of(op, &rs)?, self.rstd.layout()),
            shape,
            (self.has_w, self.has_b),
        )?;
        let wrap = |s: crate::gpu::GpuStorage, shape: crate::Shape| Tensor::from_storage(Storage::Gpu(s), shape);
        Ok((wrap(dx, x.shape().clone()), dw.map(|s| wrap(s, shape.1.into())), db.map(|s| wrap(s, shape.1.into()))))
    }

    fn backward_cpu(&self, x: &Tensor, g: &Tensor, w: Option<&Tensor>, d: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let op = if self.rms { "rms_norm backward" } else { "layer_norm backward" };
        let (xs, gs, rs) = (x.storage(), g.storage(), self.rstd.storage());
        let ws = w.map(|w| w.storage());
        let ms = self.mean.as_ref().map(|m| m.storage());
        let (Storage::Cpu(xs), Storage::Cpu(gs), Storage::Cpu(rs)) = (&*xs, &*gs, &*rs) else {
            return Err(x.device().unavailable(op));
        };
        let ws = ws.as_ref().map(|s| match &**s {
            Storage::Cpu(s) => Ok(s),
            Storage::Gpu(_) => Err(x.device().unavailable(op)),
        });
        let ws = ws.transpose()?;
        let ms = ms.as_ref().map(|s| match &**s {
            Storage::Cpu(s) => Ok(s),
            Storage::Gpu(_) => Err(x.device().unavailable(op)),
        });
        let ms = ms.transpose()?;
        let rows = x.elem_count().checked_div(d).unwrap_or(0);
        let bad = || Error::invalid(op, "saved tensors are not contiguous or have unexpected dtypes (internal error)");
        macro_rules! run {
            ($t:ty) => {{
                let xv = contiguous_slice::<$t>(x, xs).ok_or_else(bad)?;
                let gv = contiguous_slice::<$t>(g, gs).ok_or_else(bad)?;
                let wv = w.zip(ws).map(|(t, s)| contiguous_slice::<$t>(t, s).ok_or_else(bad)).transpose()?;
                let rv = <$t as AccElem>::acc_slice(rs).ok_or_else(bad)?;
                let zeros;
                let mv = match ms {
                    Some(s) => <$t as AccElem>::acc_slice(s).ok_or_else(bad)?,
                    None => {
                        zeros = vec![0.0; rows];
                        &zeros[..]
                    }
                };
                let (dx, dw, db) = norm_backward::<$t>(xv, gv, d, wv, mv, rv, self.rms);
                let back = |v: Vec<<$t as AccElem>::A>| v.into_iter().map(<$t>::from_a).collect::<Vec<$t>>();
                (<$t>::into_storage(dx), <$t>::into_storage(back(dw)), <$t>::into_storage(back(db)))
            }};
        }
        let (dx, dw, db) = match x.dtype() {
            DType::F16 => run!(f16),
            DType::BF16 => run!(bf16),
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dtype => return Err(Error::UnsupportedDType { op, dtype, hint: "normalization needs a float dtype" }),
        };
        let wrap = |s: CpuStorage, shape: crate::Shape| Tensor::from_storage(Storage::Cpu(s), shape);
        Ok((wrap(dx, x.shape().clone()), wrap(dw, d.into()), wrap(db, d.into())))
    }
}

/// Validates a weight or bias: same dtype and device as x, shape [d]; returns it contiguous.
fn check_param(op: &'static str, what: &str, x: &Tensor, p: Option<&Tensor>, d: usize) -> Result<Option<Tensor>> {
    let Some(p) = p else { return Ok(None) };
    x.same_dtype_device(p, op)?;
    if p.dims() != [d] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().clone(),
            rhs: p.shape().clone(),
            hint: format!("the {what} must have shape [{d}], the size of the input's last dim"),
        });
    }
    Ok(Some(p.contiguous()?))
}

fn norm_op(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64, rms: bool) -> Result<Tensor> {
    let op = if rms { "rms_norm" } else { "layer_norm" };
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: x.dtype(),
            hint: "normalization needs a float dtype; convert with to_dtype",
        });
    }
    let Some(&d) = x.dims().last() else {
        return Err(Error::invalid(op, "needs at least one dim to normalize over, got a scalar (shape [])"));
    };
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, format!("eps must be finite and >= 0, got {eps}")));
    }
    let w = check_param(op, "weight", x, w, d)?;
    let b = check_param(op, "bias", x, b, d)?;
    let x = x.contiguous()?;
    let rows = x.elem_count().checked_div(d).unwrap_or(0);
    if x.device().is_gpu() {
        return norm_op_gpu(op, &x, w.as_ref(), b.as_ref(), (rows, d), eps, rms);
    }
    let (y, mean, rstd) = {
        let xs = x.storage();
        let ws = w.as_ref().map(|w| w.storage());
        let bs = b.as_ref().map(|b| b.storage());
        let Storage::Cpu(xc) = &*xs else { return Err(x.device().unavailable(op)) };
        let wc = ws.as_ref().map(|s| match &**s {
            Storage::Cpu(s) => Ok(s),
            Storage::Gpu(_) => Err(x.device().unavailable(op)),
        });
        let wc = wc.transpose()?;
        let bc = bs.as_ref().map(|s| match &**s {
            Storage::Cpu(s) => Ok(s),
            Storage::Gpu(_) => Err(x.device().unavailable(op)),
        });
        let bc = bc.transpose()?;
        let bad = || Error::invalid(op, "operands are not contiguous or have mismatched dtypes (internal error)");
        macro_rules! run {
            ($t:ty) => {{
                let xv = contiguous_slice::<$t>(&x, xc).ok_or_else(bad)?;
                let wv = w.as_ref().zip(wc).map(|(t, s)| contiguous_slice::<$t>(t, s).ok_or_else(bad)).transpose()?;
                let bv = b.as_ref().zip(bc).map(|(t, s)| contiguous_slice::<$t>(t, s).ok_or_else(bad)).transpose()?;
                let (y, m, r) = norm_forward::<$t>(xv, d, wv, bv, eps, rms);
                (<$t>::into_storage(y), <$t as AccElem>::acc_storage(m), <$t as AccElem>::acc_storage(r))
            }};
        }
        match x.dtype() {
            DType::F16 => run!(f16),
            DType::BF16 => run!(bf16),
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dtype => return Err(Error::UnsupportedDType { op, dtype, hint: "normalization needs a float dtype" }),
        }
    };
    let mut inputs = vec![&x];
    inputs.extend(w.as_ref());
    inputs.extend(b.as_ref());
    let stat = |s: CpuStorage| Tensor::from_storage(Storage::Cpu(s), [rows, 1]);
    Ok(Tensor::from_op(Storage::Cpu(y), x.shape().clone(), &inputs, || {
        Box::new(NormBack {
            rms,
            has_w: w.is_some(),
            has_b: b.is_some(),
            mean: (!rms).then(|| stat(mean)),
            rstd: stat(rstd),
        })
    }))
}

/// The GPU storage behind a tensor of a GPU op (an internal error otherwise).
fn gpu_of<'a>(op: &'static str, s: &'a Storage) -> Result<&'a crate::gpu::GpuStorage> {
    match s {
        Storage::Gpu(g) => Ok(g),
        Storage::Cpu(_) => Err(Error::invalid(op, "expected GPU storage for every operand (internal error)")),
    }
}

/// The forward of [`norm_op`] on a GPU: the fused kernel of kernels/tensor/norm.cu.
fn norm_op_gpu(
    op: &'static str,
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    (rows, d): (usize, usize),
    eps: f64,
    rms: bool,
) -> Result<Tensor> {
    let (y, mean, rstd) = {
        let (xs, ws, bs) = (x.storage(), w.map(|t| t.storage()), b.map(|t| t.storage()));
        let wo = match (&ws, w) {
            (Some(s), Some(t)) => Some((gpu_of(op, s)?, t.layout())),
            _ => None,
        };
        let bo = match (&bs, b) {
            (Some(s), Some(t)) => Some((gpu_of(op, s)?, t.layout())),
            _ => None,
        };
        crate::gpu::norm_forward(op, (gpu_of(op, &xs)?, x.layout()), wo, bo, (rows, d), eps, rms)?
    };
    let mut inputs = vec![x];
    inputs.extend(w);
    inputs.extend(b);
    let stat = |s: crate::gpu::GpuStorage| Tensor::from_storage(Storage::Gpu(s), [rows, 1]);
    let (has_w, has_b) = (w.is_some(), b.is_some());
    Ok(Tensor::from_op(Storage::Gpu(y), x.shape().clone(), &inputs, || {
        Box::new(NormBack { rms, has_w, has_b, mean: mean.map(stat), rstd: stat(rstd) })
    }))
}

impl Tensor {
    /// Layer normalization over the last dim: `(x - mean) / sqrt(var + eps) * weight + bias`
    /// with the biased variance (like PyTorch). `weight` and `bias` have shape `[last dim]`.
    /// Statistics accumulate in f32 (f64 for f64 inputs); one fused op in the graph.
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        norm_op(self, weight, bias, eps, false)
    }

    /// RMS normalization over the last dim: `x / sqrt(mean(x^2) + eps) * weight`.
    /// `weight` has shape `[last dim]`. One fused op in the graph.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        norm_op(self, weight, None, eps, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f64<T: AccElem + WithDType>(v: &[T]) -> Vec<f64> {
        v.iter().map(|x| x.to_f64()).collect()
    }

    /// The tensor-op backward (the path of devices without a fused kernel) agrees with the
    /// fused CPU kernel.
    fn ops_backward_matches_kernel<T: AccElem + WithDType>(rms: bool, tol: f64) {
        let (r, d) = (5, 13);
        let val = |i: usize, m: usize| T::from_f64(((i * 7919) % m) as f64 / 5.0 - 2.0);
        let x: Vec<T> = (0..r * d).map(|i| val(i, 23)).collect();
        let g: Vec<T> = (0..r * d).map(|i| val(i + 3, 17)).collect();
        let w: Vec<T> = (0..d).map(|i| val(i + 1, 11)).collect();
        let (_, mean, rstd) = norm_forward(&x, d, Some(&w), None, 1e-5, rms);
        let (dx, dw, db) = norm_backward(&x, &g, d, Some(&w), &mean, &rstd, rms);
        let back = |v: Vec<T::A>| to_f64(&v.into_iter().map(T::from_a).collect::<Vec<T>>());
        let t = |v: Vec<T>, shape: &[usize]| Tensor::from_vec(v, shape, &crate::Device::Cpu).unwrap();
        let stat = |v: Vec<T::A>| Tensor::from_storage(Storage::Cpu(T::acc_storage(v)), [r, 1]);
        let mean = (!rms).then(|| stat(mean));
        let (x, g, w) = (t(x, &[r, d]), t(g, &[r, d]), t(w, &[d]));
        let (ox, ow, ob) = norm_backward_ops(&x, &g, Some(&w), mean.as_ref(), &stat(rstd), (true, true)).unwrap();
        let pairs = [(to_f64(&dx), ox), (back(dw), ow.unwrap()), (back(db), ob.unwrap())];
        for (k, (want, got)) in pairs.into_iter().enumerate() {
            let got = got.to_f64_vec().unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{} rms={rms} output {k}: {a} vs {b}", T::DTYPE);
            }
        }
    }

    #[test]
    fn tensor_op_backward_matches_the_fused_kernel() {
        for rms in [false, true] {
            ops_backward_matches_kernel::<f64>(rms, 1e-12);
            ops_backward_matches_kernel::<f32>(rms, 1e-5);
            ops_backward_matches_kernel::<f16>(rms, 2e-3);
            ops_backward_matches_kernel::<bf16>(rms, 1.6e-2);
        }
    }
}
