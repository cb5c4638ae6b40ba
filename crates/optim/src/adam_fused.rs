//! Adam's update as one pass over a parameter, its gradient and its moments, for contiguous
//! CPU f32 tensors. The tensor-op chain in `adam.rs` makes about ten passes over memory, each
//! into a fresh tensor (5-7% of the d256 4-layer training step). Each element here goes
//! through the chain's f32 operations in the chain's order, with the scalars rounded to f32 as
//! its `*_scalar` ops round them, so both paths give the same bits (tested in `adam.rs`); the
//! chain stays the path of GPUs, f64 parameters and strided tensors.

use std::mem::MaybeUninit;

use attune_tensor::storage::{CpuStorage, Storage};
use attune_tensor::{Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Elements from which the pass is split across rayon threads, and the chunk per task.
const PAR_THRESHOLD: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

/// One step's numbers, as f32.
pub(crate) struct Scalars {
    /// AdamW: the parameter is first multiplied by `1 - lr wd`.
    pub decay: Option<f32>,
    /// Adam with weight decay: `wd p` is added to the gradient.
    pub l2: Option<f32>,
    /// lerp's weight `1 - beta1` and `1 - w`; lerp starts from `m` when `|w| < 0.5`
    /// (`torch.lerp`'s two forms, `crate::slot::lerp`).
    pub w: f32,
    pub one_minus_w: f32,
    pub from_m: bool,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
}

/// The new values of one element: parameter, first and second moment, and the running maximum
/// of the second moment (AMSGrad; `vmax` is ignored without it).
#[inline(always)]
fn element(s: &Scalars, amsgrad: bool, p: f32, g: f32, m: f32, v: f32, vmax: f32) -> [f32; 4] {
    let (p, g) = match (s.decay, s.l2) {
        (Some(d), _) => (p * d, g),
        (None, Some(wd)) => (p, g + p * wd),
        (None, None) => (p, g),
    };
    let diff = g - m;
    let m = if s.from_m { m + diff * s.w } else { g - diff * s.one_minus_w };
    let v = v * s.beta2 + (g * g) * s.one_minus_beta2;
    // `maximum`'s rule: NaN in the running maximum stays.
    let vmax = if vmax > v || vmax.is_nan() { vmax } else { v };
    let v_hat = if amsgrad { vmax } else { v };
    let denom = v_hat.sqrt() / s.bc2_sqrt + s.eps;
    [p - m / denom * s.step_size, m, v, vmax]
}

/// The f32 values of a contiguous CPU f32 tensor.
fn values<'a>(storage: &'a Storage, t: &Tensor) -> Option<&'a [f32]> {
    match (storage, t.layout().contiguous_range()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Some(&v[a..b]),
        _ => None,
    }
}

/// A step's new tensors: parameter, exp_avg, exp_avg_sq and (AMSGrad) max_exp_avg_sq.
pub(crate) type Updated = (Tensor, Tensor, Tensor, Option<Tensor>);

/// The updated tensors when every tensor is a contiguous CPU f32 tensor of one shape; `None`
/// (nothing computed) otherwise.
pub(crate) fn step(
    s: &Scalars,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    vmax: Option<&Tensor>,
) -> Result<Option<Updated>> {
    let tensors = [Some(p), Some(g), Some(m), Some(v), vmax];
    if tensors.iter().flatten().any(|t| t.device() != Device::Cpu || t.shape() != p.shape()) {
        return Ok(None);
    }
    let guards: Vec<_> = tensors.iter().flatten().map(|t| t.storage()).collect();
    let views: Option<Vec<&[f32]>> = guards.iter().zip(tensors.iter().flatten()).map(|(s, t)| values(s, t)).collect();
    let Some(views) = views else { return Ok(None) };
    let amsgrad = vmax.is_some();
    let n = p.elem_count();
    let outs = if amsgrad { 4 } else { 3 };
    let mut out: Vec<Vec<f32>> = (0..outs).map(|_| Vec::with_capacity(n)).collect();
    {
        let mut spare: Vec<&mut [MaybeUninit<f32>]> =
            out.iter_mut().map(|o| &mut o.spare_capacity_mut()[..n]).collect();
        // Zipped slices (no indexing) so the loop vectorises.
        let run = |start: usize, dst: &mut [&mut [MaybeUninit<f32>]]| {
            let len = dst[0].len();
            let src = |k: usize| &views[k][start..start + len];
            let inputs = src(0).iter().zip(src(1)).zip(src(2)).zip(src(3));
            match dst {
                [dp, dm, dv] => {
                    for ((((&p, &g), &m), &v), ((op, om), ov)) in
                        inputs.zip(dp.iter_mut().zip(dm.iter_mut()).zip(dv.iter_mut()))
                    {
                        let [p, m, v, _] = element(s, false, p, g, m, v, 0.0);
                        op.write(p);
                        om.write(m);
                        ov.write(v);
                    }
                }
                [dp, dm, dv, dx] => {
                    let outs = dp.iter_mut().zip(dm.iter_mut()).zip(dv.iter_mut()).zip(dx.iter_mut());
                    for (((((&p, &g), &m), &v), &x), (((op, om), ov), ox)) in inputs.zip(src(4)).zip(outs) {
                        let [p, m, v, x] = element(s, true, p, g, m, v, x);
                        op.write(p);
                        om.write(m);
                        ov.write(v);
                        ox.write(x);
                    }
                }
                _ => unreachable!("three or four outputs"),
            }
        };
        if n >= PAR_THRESHOLD {
            let mut tasks: Vec<(usize, Vec<&mut [MaybeUninit<f32>]>)> = Vec::new();
            let mut rest = spare;
            let mut start = 0;
            while start < n {
                let take = CHUNK.min(n - start);
                let (heads, tails): (Vec<_>, Vec<_>) = rest.into_iter().map(|r| r.split_at_mut(take)).unzip();
                tasks.push((start, heads));
                rest = tails;
                start += take;
            }
            tasks.into_par_iter().for_each(|(start, mut dst)| run(start, &mut dst));
        } else {
            run(0, &mut spare);
        }
    }
    let mut tensors = out.into_iter().map(|mut o| {
        // SAFETY: every index 0..n of every output was written above.
        unsafe { o.set_len(n) };
        Tensor::from_vec(o, p.shape().clone(), &Device::Cpu)
    });
    let mut next = || tensors.next().expect("one output per tensor").map_err(crate::error::Error::from);
    let (p, m, v) = (next()?, next()?, next()?);
    let vmax = if amsgrad { Some(next()?) } else { None };
    Ok(Some((p, m, v, vmax)))
}
