//! Dropout with the Philox stream convention of [`crate::cpu::philox`], so every backend drops
//! the same elements for the same generator state.

use crate::autograd::GradFn;
use crate::cpu::philox::{generate, threshold_24};
use crate::ops::creation::Rng;
use crate::storage::{CpuStorage, Storage};
use crate::{Error, FloatElem, Result, Tensor};
use rayon::prelude::*;

/// Elements per rayon task when applying the mask.
const PAR_MIN: usize = 1 << 14;

/// Backward of dropout: the gradient times the saved mask (0 or `1 / (1 - p)` per element).
struct DropoutBack {
    mask: Tensor,
}
impl GradFn for DropoutBack {
    fn name(&self) -> &str {
        "dropout"
    }
    fn backward(&self, _i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&self.mask)?)])
    }
}

/// Draws the mask (`scale` where kept, 0 where dropped) and applies it to contiguous `x`.
/// Products are formed exactly in f64 and rounded once, which equals the dtype's own multiply
/// (the backward `g * mask` rounds the same way).
fn dropout_t<T: FloatElem>(x: &[T], (seed, offset): (u64, u64), threshold: u32, scale: T) -> (Vec<T>, Vec<T>) {
    let zero = T::from_f32(0.0);
    let mask = generate(x.len(), seed, offset, |w| w.map(|v| if (v >> 8) >= threshold { scale } else { zero }));
    let apply = |(&v, &m): (&T, &T)| if m == zero { zero } else { T::from_f64(v.to_f64() * m.to_f64()) };
    let out = if x.len() >= PAR_MIN {
        x.par_iter().zip(mask.par_iter()).with_min_len(PAR_MIN).map(apply).collect()
    } else {
        x.iter().zip(&mask).map(apply).collect()
    };
    (out, mask)
}

impl Tensor {
    /// Inverted dropout: in training each element is dropped (set to 0) with probability `p`
    /// and the kept ones are scaled by `1 / (1 - p)` (rounded to the dtype), so the expectation
    /// is unchanged. With `train == false` or `p == 0` it returns `self` and draws nothing.
    ///
    /// Otherwise it takes the stream of `n = elem_count` elements from `rng` (advancing it by
    /// `ceil(n / 4)` counters, also when `p == 1`) and keeps element `i` (row-major index of the
    /// logical tensor, whatever its strides) iff its 24-bit uniform `k` satisfies
    /// `k >= ceil(p * 2^24)`, i.e. `u >= p` (see [`crate::cpu::philox`]). Differentiable: the
    /// gradient is multiplied by the same mask. Float dtypes only; `p` must be in `[0, 1]`.
    pub fn dropout(&self, p: f64, train: bool, rng: &mut Rng) -> Result<Tensor> {
        const OP: &str = "dropout";
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(OP, format!("probability {p} is outside [0, 1]")));
        }
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: self.dtype(),
                hint: "dropout needs a float dtype; convert with to_dtype",
            });
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        if self.device().is_gpu() {
            // The same stream and threshold on the device: the mask is the CPU's bit for bit.
            let stream = rng.take_stream(self.elem_count());
            let (out, mask) =
                self.with_gpu(OP, |g, l| crate::gpu::dropout(OP, g, l, stream, threshold_24(p), 1.0 / (1.0 - p)))?;
            let shape = self.shape().clone();
            let mask = Tensor::from_storage(Storage::Gpu(mask), shape.clone());
            return Ok(Tensor::from_op(Storage::Gpu(out), shape, &[self], || Box::new(DropoutBack { mask })));
        }
        let (out, mask) = self.with_cpu(OP, |s, l| {
            // Contiguous inputs are read in place; others are copied to row-major order first.
            let copied;
            let (x, (a, b)) = match l.contiguous_range() {
                Some(range) => (s, range),
                None => {
                    copied = s.copy_strided(l);
                    (&copied, (0, copied.len()))
                }
            };
            let stream = rng.take_stream(b - a);
            let t = threshold_24(p);
            // p == 1 keeps nothing, so the infinite scale is never used.
            let scale = 1.0 / (1.0 - p);
            Ok(match x {
                CpuStorage::F16(v) => {
                    let (o, m) = dropout_t(&v[a..b], stream, t, crate::f64_to_f16(scale));
                    (CpuStorage::F16(o), CpuStorage::F16(m))
                }
                CpuStorage::BF16(v) => {
                    let (o, m) = dropout_t(&v[a..b], stream, t, crate::f64_to_bf16(scale));
                    (CpuStorage::BF16(o), CpuStorage::BF16(m))
                }
                CpuStorage::F32(v) => {
                    let (o, m) = dropout_t(&v[a..b], stream, t, scale as f32);
                    (CpuStorage::F32(o), CpuStorage::F32(m))
                }
                CpuStorage::F64(v) => {
                    let (o, m) = dropout_t(&v[a..b], stream, t, scale);
                    (CpuStorage::F64(o), CpuStorage::F64(m))
                }
                other => {
                    return Err(Error::UnsupportedDType {
                        op: OP,
                        dtype: other.dtype(),
                        hint: "dropout needs a float dtype",
                    });
                }
            })
        })?;
        let shape = self.shape().clone();
        let mask = Tensor::from_storage(Storage::Cpu(mask), shape.clone());
        Ok(Tensor::from_op(Storage::Cpu(out), shape, &[self], || Box::new(DropoutBack { mask })))
    }
}
