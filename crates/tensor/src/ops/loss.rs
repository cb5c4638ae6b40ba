//! Fused cross-entropy loss over class logits, with PyTorch's semantics for `ignore_index`,
//! `label_smoothing` and the reductions.
//!
//! Forward: one kernel per row (rows split across rayon tasks above a size threshold) that
//! computes the log-sum-exp stably (max, then sum of `exp(x - max)` while the row is in
//! cache) and the row's loss, accumulating in f32 (f16/bf16/f32) or f64 (f64). The per-row
//! log-sum-exp is saved for the backward, which is one fused kernel as well:
//! `dlogits = scale * (softmax - target distribution)`.
//!
//! On a GPU device (and the emulator) the same steps run as kernels (kernels/tensor/loss.cu):
//! a row kernel for the losses and the saved log-sum-exp, a one-block f64 reduction for mean
//! and sum, and an element-wise backward. Targets are checked on the host either way.

use crate::autograd::GradFn;
use crate::cpu::math::FastExp;
use crate::ops::norm::{AccElem, cast, contiguous_slice, lane_sum, parallel_rows, rows_per_task};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Error, Result, Shape, Tensor, WithDType};
use half::{bf16, f16};
use num_traits::{Float, One, Zero};
use rayon::prelude::*;
use std::sync::Arc;

/// How per-element losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the targets that are not ignored (0 when every target is ignored).
    #[default]
    Mean,
    /// The sum over all targets (ignored targets contribute 0).
    Sum,
    /// One loss per target, shaped like the targets (0 at ignored targets).
    None,
}

/// Options of [`Tensor::cross_entropy`]. `Default` matches PyTorch: `ignore_index = -100`,
/// no label smoothing, mean reduction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropyOpts {
    /// Targets equal to this value contribute no loss and no gradient, and are not counted
    /// by the mean.
    pub ignore_index: Option<i64>,
    /// In `[0, 1]`: the loss is `(1 - s) * nll + s * mean over classes of -log_softmax`.
    pub label_smoothing: f64,
    /// How the per-target losses are combined.
    pub reduction: Reduction,
}

impl Default for CrossEntropyOpts {
    fn default() -> Self {
        CrossEntropyOpts { ignore_index: Some(-100), label_smoothing: 0.0, reduction: Reduction::Mean }
    }
}

const OP: &str = "cross_entropy";

/// Reads integer class indices as i64 (row-major; downloaded from a GPU device, since every
/// target is checked against the class count before anything runs).
fn class_indices(targets: &Tensor) -> Result<Vec<i64>> {
    Ok(match targets.to_cpu_storage()? {
        CpuStorage::I64(v) => v,
        CpuStorage::U32(v) => v.into_iter().map(i64::from).collect(),
        CpuStorage::U8(v) => v.into_iter().map(i64::from).collect(),
        other => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: other.dtype(),
                hint: "targets must be integer class indices (i64, u32 or u8); probability targets are not supported",
            });
        }
    })
}

/// Per-row forward: returns (loss, lse) for a row whose target is `t` (not ignored).
#[inline]
fn ce_row<T: AccElem>(x: &[T], t: usize, smoothing: T::A) -> (T::A, T::A) {
    // Eight running maxima vectorise; NaN propagates through the sum below.
    let mut lanes = [T::A::neg_infinity(); 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            lanes[k] = lanes[k].max(c[k].to_a());
        }
    }
    let m =
        it.remainder().iter().fold(lanes.iter().fold(T::A::neg_infinity(), |a, &b| a.max(b)), |a, &v| a.max(v.to_a()));
    // exp(-inf - -inf) would be NaN: a row of -inf logits has lse -inf.
    let shift = if m.is_finite() { m } else { T::A::zero() };
    let lse = shift + lane_sum(x, |v| (v.to_a() - shift).fexp()).ln();
    let xt = x.get(t).map_or(T::A::nan(), |v| v.to_a());
    let nll = lse - xt;
    if smoothing == T::A::zero() {
        return (nll, lse);
    }
    let n = cast::<T::A>(x.len() as f64);
    let smooth = lse - lane_sum(x, T::to_a) / n;
    ((T::A::one() - smoothing) * nll + smoothing * smooth, lse)
}

/// Forward over contiguous rows of `c` logits: (per-row loss, per-row lse); ignored rows
/// (target `None`) get loss 0 and lse 0.
fn ce_forward<T: AccElem>(x: &[T], c: usize, targets: &[Option<usize>], smoothing: f64) -> (Vec<T::A>, Vec<T::A>) {
    let rows = targets.len();
    let smoothing = cast::<T::A>(smoothing);
    let mut loss = vec![T::A::zero(); rows];
    let mut lse = vec![T::A::zero(); rows];
    let task = |r0: usize, ls: &mut [T::A], es: &mut [T::A]| {
        for (k, (l, e)) in ls.iter_mut().zip(es.iter_mut()).enumerate() {
            let r = r0 + k;
            if let Some(t) = targets[r] {
                (*l, *e) = ce_row(&x[r * c..(r + 1) * c], t, smoothing);
            }
        }
    };
    let rpt = rows_per_task(c);
    if parallel_rows(rows, c) {
        loss.par_chunks_mut(rpt)
            .zip(lse.par_chunks_mut(rpt))
            .enumerate()
            .for_each(|(i, (ls, es))| task(i * rpt, ls, es));
    } else {
        task(0, &mut loss, &mut lse);
    }
    (loss, lse)
}

/// Backward over contiguous rows: `dx[r] = scale[r] * (softmax(x[r]) - q[r])` where `q` puts
/// `1 - s + s / c` on the target and `s / c` elsewhere; ignored rows get 0.
fn ce_backward<T: AccElem>(
    x: &[T],
    c: usize,
    targets: &[Option<usize>],
    lse: &[T::A],
    scale: &(dyn Fn(usize) -> f64 + Sync),
    smoothing: f64,
) -> Vec<T> {
    let rows = targets.len();
    let off = cast::<T::A>(smoothing / c.max(1) as f64);
    let on = cast::<T::A>(1.0 - smoothing) + off;
    let mut dx = vec![T::from_a(T::A::zero()); rows * c];
    let task = |r0: usize, out: &mut [T]| {
        for (k, o) in out.chunks_exact_mut(c).enumerate() {
            let r = r0 + k;
            let Some(t) = targets[r] else { continue };
            let (s, l) = (cast::<T::A>(scale(r)), lse[r]);
            for (d, &v) in o.iter_mut().zip(&x[r * c..(r + 1) * c]) {
                *d = T::from_a(s * ((v.to_a() - l).fexp() - off));
            }
            if let Some(d) = o.get_mut(t) {
                let p = (x[r * c + t].to_a() - l).fexp();
                *d = T::from_a(s * (p - on));
            }
        }
    };
    if c > 0 {
        let rpt = rows_per_task(c);
        if parallel_rows(rows, c) {
            dx.par_chunks_mut(rpt * c).enumerate().for_each(|(i, out)| task(i * rpt, out));
        } else {
            task(0, &mut dx);
        }
    }
    dx
}

/// The recorded backward of cross entropy; its one input is the contiguous [N, C] logits.
struct CrossEntropyBack {
    targets: Arc<Vec<Option<usize>>>,
    /// On a GPU device: the targets as i64 there, -1 where ignored.
    targets_dev: Option<Tensor>,
    /// Per-row log-sum-exp, [N] in the accumulator dtype.
    lse: Tensor,
    opts: CrossEntropyOpts,
    /// Number of targets that are not ignored (the divisor of the mean).
    count: usize,
}

impl GradFn for CrossEntropyBack {
    fn name(&self) -> &str {
        OP
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let c = x.dims().last().copied().unwrap_or(0);
        if let Some(t) = &self.targets_dev {
            return Ok(vec![Some(self.backward_gpu(x, &g.contiguous()?, t, c)?)]);
        }
        let gv = g.to_f64_vec()?;
        let count = self.count.max(1) as f64;
        let g0 = gv.first().copied().unwrap_or(0.0);
        let scale = |r: usize| match self.opts.reduction {
            Reduction::Mean => g0 / count,
            Reduction::Sum => g0,
            Reduction::None => gv.get(r).copied().unwrap_or(0.0),
        };
        let op = "cross_entropy backward";
        let dx = x.with_cpu(op, |xs, _| {
            let ls = self.lse.storage();
            let Storage::Cpu(ls) = &*ls else { return Err(x.device().unavailable(op)) };
            let bad =
                || Error::invalid(op, "saved tensors are not contiguous or have unexpected dtypes (internal error)");
            let (t, s) = (&self.targets[..], self.opts.label_smoothing);
            macro_rules! run {
                ($t:ty) => {{
                    let xv = contiguous_slice::<$t>(x, xs).ok_or_else(bad)?;
                    let lv = <$t as AccElem>::acc_slice(ls).ok_or_else(bad)?;
                    <$t>::into_storage(ce_backward::<$t>(xv, c, t, lv, &scale, s))
                }};
            }
            Ok(match x.dtype() {
                DType::F16 => run!(f16),
                DType::BF16 => run!(bf16),
                DType::F32 => run!(f32),
                DType::F64 => run!(f64),
                dtype => return Err(Error::UnsupportedDType { op, dtype, hint: "logits must be floats" }),
            })
        })?;
        Ok(vec![Some(Tensor::from_storage(Storage::Cpu(dx), x.shape().clone()))])
    }
}

/// The kernel code of a reduction.
fn gpu_reduction(r: Reduction) -> crate::gpu::CeReduction {
    match r {
        Reduction::Mean => crate::gpu::CeReduction::Mean,
        Reduction::Sum => crate::gpu::CeReduction::Sum,
        Reduction::None => crate::gpu::CeReduction::None,
    }
}

impl CrossEntropyBack {
    /// The fused GPU backward (kernels/tensor/loss.cu).
    fn backward_gpu(&self, x: &Tensor, g: &Tensor, targets: &Tensor, c: usize) -> Result<Tensor> {
        let op = "cross_entropy backward";
        let rows = self.targets.len();
        let dx = x.with_gpu(op, |xs, xl| {
            g.with_gpu(op, |gs, gl| {
                targets.with_gpu(op, |ts, _| {
                    self.lse.with_gpu(op, |ls, _| {
                        crate::gpu::cross_entropy_backward(
                            op,
                            (xs, xl),
                            (gs, gl),
                            ts,
                            ls,
                            (rows, c),
                            self.opts.label_smoothing,
                            gpu_reduction(self.opts.reduction),
                            self.count,
                        )
                    })
                })
            })
        })?;
        Ok(Tensor::from_storage(Storage::Gpu(dx), x.shape().clone()))
    }
}

/// The forward of [`Tensor::cross_entropy`] on a GPU device, `x` being the contiguous
/// `[rows, c]` logits and `lead` the targets' shape.
fn cross_entropy_gpu(
    x: &Tensor,
    targets: Vec<Option<usize>>,
    opts: CrossEntropyOpts,
    count: usize,
    lead: &[usize],
) -> Result<Tensor> {
    let rows = targets.len();
    let c = x.dims()[1];
    let dev_targets: Vec<i64> = targets.iter().map(|t| t.map_or(-1, |v| v as i64)).collect();
    let t = Tensor::from_cpu_storage(CpuStorage::I64(dev_targets), rows, &x.device())?;
    let reduction = gpu_reduction(opts.reduction);
    let (loss, lse) = x.with_gpu(OP, |xs, xl| {
        t.with_gpu(OP, |ts, _| {
            crate::gpu::cross_entropy(OP, (xs, xl), ts, (rows, c), opts.label_smoothing, reduction, count)
        })
    })?;
    let shape: Shape = if opts.reduction == Reduction::None { lead.into() } else { ().into() };
    Ok(Tensor::from_op(Storage::Gpu(loss), shape, &[x], || {
        Box::new(CrossEntropyBack {
            targets: Arc::new(targets),
            targets_dev: Some(t),
            lse: Tensor::from_storage(Storage::Gpu(lse), rows),
            opts,
            count,
        })
    }))
}

impl Tensor {
    /// Cross-entropy loss between `self`, logits of shape `[..., C]` (classes in the last
    /// dim, any leading dims), and `targets`, integer class indices (i64, u32 or u8) shaped
    /// like the leading dims. Semantics are PyTorch's (`F.cross_entropy` with class-index
    /// targets) except that a mean over zero counted targets is 0 rather than NaN, so a batch
    /// made only of padding does not poison training. Differentiable w.r.t. the logits.
    ///
    /// Errors: non-float logits or float targets (`UnsupportedDType`), targets not shaped
    /// like the leading dims (`ShapeMismatch`), a target outside `0..C` that is not
    /// `ignore_index` (`IndexOutOfRange`), `label_smoothing` outside `[0, 1]`.
    pub fn cross_entropy(&self, targets: &Tensor, opts: CrossEntropyOpts) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: self.dtype(),
                hint: "logits must be floats; convert with to_dtype",
            });
        }
        if !targets.dtype().is_int() {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: targets.dtype(),
                hint: "targets must be integer class indices (i64, u32 or u8); probability targets are not supported",
            });
        }
        if self.device() != targets.device() {
            return Err(Error::DeviceMismatch { op: OP, lhs: self.device(), rhs: targets.device() });
        }
        let Some((&c, lead)) = self.dims().split_last() else {
            return Err(Error::invalid(OP, "logits must have a class dim, got a scalar (shape [])"));
        };
        if targets.dims() != lead {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: targets.shape().clone(),
                hint: format!("targets must have the logits' shape without the class dim, i.e. {lead:?}"),
            });
        }
        let s = opts.label_smoothing;
        if !(0.0..=1.0).contains(&s) {
            return Err(Error::invalid(OP, format!("label_smoothing must be in [0, 1], got {s}")));
        }
        let last = self.rank() - 1;
        let targets: Vec<Option<usize>> = class_indices(targets)?
            .into_iter()
            .map(|t| match t {
                t if Some(t) == opts.ignore_index => Ok(None),
                t if t >= 0 && (t as u64) < c as u64 => Ok(Some(t as usize)),
                t => Err(Error::IndexOutOfRange { op: OP, index: t, dim: last, size: c }),
            })
            .collect::<Result<_>>()?;
        let count = targets.iter().filter(|t| t.is_some()).count();
        let rows = targets.len();
        let x = self.reshape([rows, c])?.contiguous()?;
        if x.device().is_gpu() {
            return cross_entropy_gpu(&x, targets, opts, count, lead);
        }
        let (loss, lse) = x.with_cpu(OP, |xs, _| {
            let bad = || Error::invalid(OP, "logits are not contiguous (internal error)");
            macro_rules! run {
                ($t:ty) => {{
                    let xv = contiguous_slice::<$t>(&x, xs).ok_or_else(bad)?;
                    let (loss, lse) = ce_forward::<$t>(xv, c, &targets, s);
                    let loss: Vec<f64> = loss.into_iter().map(f64::from).collect();
                    (loss, <$t as AccElem>::acc_storage(lse))
                }};
            }
            Ok(match x.dtype() {
                DType::F16 => run!(f16),
                DType::BF16 => run!(bf16),
                DType::F32 => run!(f32),
                DType::F64 => run!(f64),
                dtype => return Err(Error::UnsupportedDType { op: OP, dtype, hint: "logits must be floats" }),
            })
        })?;
        let (values, shape): (Vec<f64>, Shape) = match opts.reduction {
            Reduction::Mean => (vec![loss.iter().sum::<f64>() / count.max(1) as f64], ().into()),
            Reduction::Sum => (vec![loss.iter().sum::<f64>()], ().into()),
            Reduction::None => (loss, lead.into()),
        };
        let out = match self.dtype() {
            DType::F16 => f16::into_storage(values.into_iter().map(crate::f64_to_f16).collect()),
            DType::BF16 => bf16::into_storage(values.into_iter().map(crate::f64_to_bf16).collect()),
            DType::F32 => f32::into_storage(values.into_iter().map(|v| v as f32).collect()),
            _ => f64::into_storage(values),
        };
        Ok(Tensor::from_op(Storage::Cpu(out), shape, &[&x], || {
            Box::new(CrossEntropyBack {
                targets: Arc::new(targets),
                targets_dev: None,
                lse: Tensor::from_storage(Storage::Cpu(lse), rows),
                opts,
                count,
            })
        }))
    }
}
