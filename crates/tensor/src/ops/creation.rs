//! Creation ops: ranges (`arange`, `linspace`) and random tensors from the Philox generator
//! [`Rng`], which follows the stream convention of [`crate::cpu::philox`]. On a GPU device,
//! `rand` and `bernoulli` run the Philox kernel there (exact, so the values are the CPU's);
//! `uniform` and `normal` (whose f64 arithmetic a GPU may round differently) are generated on
//! the host and uploaded, which is the CPU stream by definition.

use crate::cpu::philox::{self, blocks_for, generate, threshold_24};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Result, Shape, Tensor, WithDType};
use half::{bf16, f16};

/// Largest element count a range op will allocate (guards against `arange(0, 1e300, 1)`).
const MAX_RANGE_LEN: f64 = (1u64 << 48) as f64;

/// Errors unless `device` runs ops, naming `op` (checked before any stream is consumed).
fn check_device(device: &Device, op: &'static str) -> Result<()> {
    if device.is_available() { Ok(()) } else { Err(device.unavailable(op)) }
}

/// Checks that integer `dtype` can hold every value in `[lo, hi]`.
fn check_int_range(op: &'static str, dtype: DType, lo: f64, hi: f64) -> Result<()> {
    let (min, max) = match dtype {
        DType::U8 => (0.0, u8::MAX as f64),
        DType::U32 => (0.0, u32::MAX as f64),
        DType::I64 => (i64::MIN as f64, i64::MAX as f64),
        _ => return Ok(()),
    };
    if lo < min || hi > max {
        return Err(Error::invalid(
            op,
            format!("values from {lo} to {hi} do not fit in {dtype} (range {min}..={max}); use a wider dtype"),
        ));
    }
    Ok(())
}

/// A contiguous storage of `dtype` from f64 values produced per index.
fn from_f64_fn(dtype: DType, n: usize, f: impl Fn(usize) -> f64) -> CpuStorage {
    fn build<T: WithDType>(n: usize, f: impl Fn(usize) -> f64) -> CpuStorage {
        T::into_storage((0..n).map(|i| T::from_f64(f(i))).collect())
    }
    match dtype {
        DType::U8 => build::<u8>(n, f),
        DType::U32 => build::<u32>(n, f),
        DType::I64 => build::<i64>(n, f),
        DType::F16 => build::<f16>(n, f),
        DType::BF16 => build::<bf16>(n, f),
        DType::F32 => build::<f32>(n, f),
        DType::F64 => build::<f64>(n, f),
    }
}

impl Tensor {
    /// Values `start, start + step, ...` strictly before `end` (PyTorch `arange`): the length
    /// is `ceil((end - start) / step)`, values are computed in f64 as `start + i * step` and
    /// converted to `dtype` (integer dtypes truncate toward zero). Errors when `step` is 0, when
    /// it points away from `end`, on non-finite arguments, or when integer values do not fit.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        const OP: &str = "arange";
        if !(start.is_finite() && end.is_finite() && step.is_finite()) {
            return Err(Error::invalid(OP, format!("start {start}, end {end} and step {step} must be finite")));
        }
        if step == 0.0 {
            return Err(Error::invalid(OP, format!("step must be nonzero (start {start}, end {end})")));
        }
        if (end - start) * step < 0.0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "step {step} points away from end {end} (start {start}); use a step with the sign of end - start"
                ),
            ));
        }
        let len = ((end - start) / step).ceil();
        if len > MAX_RANGE_LEN {
            return Err(Error::invalid(
                OP,
                format!("{len} elements (start {start}, end {end}, step {step}) is too many"),
            ));
        }
        let n = len as usize;
        if n > 0 && dtype.is_int() {
            let last = start + (n - 1) as f64 * step;
            check_int_range(OP, dtype, start.min(last), start.max(last))?;
        }
        check_device(device, OP)?;
        Tensor::from_cpu_storage(from_f64_fn(dtype, n, |i| start + i as f64 * step), n, device)
    }

    /// `0, 1, ..., n - 1` as a rank-1 tensor of `dtype`.
    pub fn arange_n(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::arange(0.0, n as f64, 1.0, dtype, device)
    }

    /// `steps` evenly spaced values from `start` to `end` inclusive (PyTorch `linspace`): the
    /// first half is computed as `start + i * delta`, the second as `end - (steps - 1 - i) *
    /// delta`, so both ends are exact. `steps == 1` gives `[start]`, `steps == 0` an empty tensor.
    pub fn linspace(start: f64, end: f64, steps: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        const OP: &str = "linspace";
        if !(start.is_finite() && end.is_finite()) {
            return Err(Error::invalid(OP, format!("start {start} and end {end} must be finite")));
        }
        if steps as f64 > MAX_RANGE_LEN {
            return Err(Error::invalid(OP, format!("{steps} steps is too many")));
        }
        if steps > 0 && dtype.is_int() {
            check_int_range(OP, dtype, start.min(end), start.max(end))?;
        }
        check_device(device, OP)?;
        let delta = if steps > 1 { (end - start) / (steps - 1) as f64 } else { 0.0 };
        let half = steps / 2;
        // With steps == 1, half is 0 and delta 0, so the single value is `end`: use start.
        let value = |i: usize| match i {
            _ if steps == 1 => start,
            i if i < half => start + i as f64 * delta,
            i => end - (steps - 1 - i) as f64 * delta,
        };
        Tensor::from_cpu_storage(from_f64_fn(dtype, steps, value), steps, device)
    }

    /// Uniform `[0, 1)` values with this tensor's shape, dtype and device (see [`Rng::rand`]).
    pub fn rand_like(&self, rng: &mut Rng) -> Result<Tensor> {
        rng.rand(self.shape(), self.dtype(), &self.device())
    }

    /// Standard normal values with this tensor's shape, dtype and device (see [`Rng::randn`]).
    pub fn randn_like(&self, rng: &mut Rng) -> Result<Tensor> {
        rng.randn(self.shape(), self.dtype(), &self.device())
    }
}

/// A float type whose value can be moved one step toward minus infinity (to keep `uniform`
/// strictly below its upper bound after rounding).
trait StepDown: WithDType {
    fn step_down(self) -> Self;
}
macro_rules! step_down {
    ($t:ty, $bits:ty, $to:expr, $from:expr) => {
        impl StepDown for $t {
            fn step_down(self) -> Self {
                let b: $bits = $to(self);
                let sign: $bits = 1 << (<$bits>::BITS - 1);
                if self.to_f64() > 0.0 {
                    $from(b - 1)
                } else if self.to_f64() == 0.0 {
                    $from(sign | 1)
                } else {
                    $from(b + 1)
                }
            }
        }
    };
}
step_down!(f16, u16, f16::to_bits, f16::from_bits);
step_down!(bf16, u16, bf16::to_bits, bf16::from_bits);
step_down!(f32, u32, f32::to_bits, f32::from_bits);
step_down!(f64, u64, f64::to_bits, f64::from_bits);

/// The uniform of one word on `dtype`'s significand grid (24 bits for f32/f64, 11 for f16,
/// 8 for bf16), so every value is exact in the dtype and below 1.
#[inline(always)]
fn grid_uniform(x: u32, bits: u32) -> f64 {
    (x >> (32 - bits)) as f64 * (1.0 / (1u64 << bits) as f64)
}

/// The Philox generator: a seed and an offset (in 4-element counters). Each sampling call
/// reads the stream `(seed, offset)` per the convention of [`crate::cpu::philox`] and then
/// advances the offset by the counters it used, so successive calls give fresh numbers and
/// `(seed, offset)` is the whole state: save it with [`Rng::seed`]/[`Rng::offset`] and
/// restore it with [`Rng::from_state`] or [`Rng::set_offset`] to resume exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rng {
    seed: u64,
    offset: u64,
}

impl Rng {
    /// A generator at the start (offset 0) of the stream of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { seed, offset: 0 }
    }

    /// A generator with an explicit state (to resume from a checkpoint).
    pub fn from_state(seed: u64, offset: u64) -> Rng {
        Rng { seed, offset }
    }

    /// The seed (the Philox key).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The offset of the next stream, in counters.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Replaces the seed (the offset is kept).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// Replaces the offset.
    pub fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// Reserves the stream of `n` elements for an op that generates its own numbers (dropout
    /// inside a fused kernel, for example): returns `(seed, offset)` to hand to the kernel and
    /// advances the offset by `ceil(n / 4)`.
    pub fn take_stream(&mut self, n: usize) -> (u64, u64) {
        let state = (self.seed, self.offset);
        self.offset = self.offset.wrapping_add(blocks_for(n));
        state
    }

    /// Generates floats `finish(f(words, bits))` per block, where `bits` is the dtype's grid.
    fn float_stream(
        &mut self,
        op: &'static str,
        shape: Shape,
        dtype: DType,
        device: &Device,
        f: impl Fn(&[u32; 4], u32) -> [f64; 4] + Sync,
        upper: Option<f64>,
    ) -> Result<Tensor> {
        fn gen_t<T: StepDown>(
            n: usize,
            (seed, offset): (u64, u64),
            bits: u32,
            f: impl Fn(&[u32; 4], u32) -> [f64; 4] + Sync,
            upper: Option<f64>,
        ) -> CpuStorage {
            T::into_storage(generate(n, seed, offset, |w| {
                f(w, bits).map(|v| {
                    let x = T::from_f64(v);
                    match upper {
                        Some(hi) if x.to_f64() >= hi => x.step_down(),
                        _ => x,
                    }
                })
            }))
        }
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType {
                op,
                dtype,
                hint: "random values need a float dtype; cast the result",
            });
        }
        check_device(device, op)?;
        let n = shape.elem_count();
        let stream = self.take_stream(n);
        let storage = match dtype {
            DType::F16 => gen_t::<f16>(n, stream, 11, f, upper),
            DType::BF16 => gen_t::<bf16>(n, stream, 8, f, upper),
            DType::F32 => gen_t::<f32>(n, stream, 24, f, upper),
            _ => gen_t::<f64>(n, stream, 24, f, upper),
        };
        Tensor::from_cpu_storage(storage, shape, device)
    }

    /// Uniform values in `[0, 1)` (24 random bits for f32/f64, 11 for f16, 8 for bf16).
    /// On a GPU device they are generated there (the same stream, bit for bit).
    pub fn rand(&mut self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if device.is_gpu() && dtype.is_float() {
            let bits = match dtype {
                DType::F16 => 11,
                DType::BF16 => 8,
                _ => 24,
            };
            check_device(device, "rand")?;
            let dev = crate::gpu::gpu_device("rand", *device)?;
            let stream = self.take_stream(shape.elem_count());
            let out = crate::gpu::rand("rand", &dev, shape.elem_count(), stream, bits, dtype)?;
            return Ok(Tensor::from_storage(Storage::Gpu(out), shape));
        }
        self.float_stream("rand", shape, dtype, device, |w, bits| w.map(|x| grid_uniform(x, bits)), None)
    }

    /// Uniform values in `[lo, hi)`: `lo + (hi - lo) * u` with `u` as in [`Rng::rand`], computed
    /// in f64 and rounded to `dtype`; a value that rounds up to `hi` is moved one step down.
    pub fn uniform(
        &mut self,
        lo: f64,
        hi: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(Error::invalid("uniform", format!("needs finite bounds with lo <= hi, got lo {lo}, hi {hi}")));
        }
        let upper = (hi > lo).then_some(hi);
        let f = move |w: &[u32; 4], bits| w.map(|x| lo + (hi - lo) * grid_uniform(x, bits));
        self.float_stream("uniform", shape.into(), dtype, device, f, upper)
    }

    /// Standard normal values (Box-Muller on word pairs, see [`crate::cpu::philox`]).
    pub fn randn(&mut self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        self.normal(0.0, 1.0, shape, dtype, device)
    }

    /// Normal values with mean `mean` and standard deviation `std` (`mean + std * z`).
    pub fn normal(
        &mut self,
        mean: f64,
        std: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
            return Err(Error::invalid(
                "normal",
                format!("needs a finite mean and std >= 0, got mean {mean}, std {std}"),
            ));
        }
        let f = move |w: &[u32; 4], _bits| philox::normals(w).map(|z| mean + std * z);
        self.float_stream("normal", shape.into(), dtype, device, f, None)
    }

    /// 1 with probability `p`, else 0, in any dtype: element `i` is 1 iff its 24-bit uniform
    /// `k` satisfies `k < ceil(p * 2^24)` (see [`philox::threshold_24`]).
    pub fn bernoulli(&mut self, p: f64, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        fn gen_t<T: WithDType>(n: usize, (seed, offset): (u64, u64), t: u32) -> CpuStorage {
            let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
            T::into_storage(generate(n, seed, offset, |w| w.map(|x| if (x >> 8) < t { one } else { zero })))
        }
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("bernoulli", format!("probability {p} is outside [0, 1]")));
        }
        check_device(device, "bernoulli")?;
        let shape = shape.into();
        let n = shape.elem_count();
        if device.is_gpu() {
            // Generated on the device: the same stream and integer comparison, bit for bit.
            let dev = crate::gpu::gpu_device("bernoulli", *device)?;
            let out = crate::gpu::bernoulli("bernoulli", &dev, n, self.take_stream(n), threshold_24(p), dtype)?;
            return Ok(Tensor::from_storage(Storage::Gpu(out), shape));
        }
        let (t, s) = (threshold_24(p), self.take_stream(n));
        let storage = match dtype {
            DType::U8 => gen_t::<u8>(n, s, t),
            DType::U32 => gen_t::<u32>(n, s, t),
            DType::I64 => gen_t::<i64>(n, s, t),
            DType::F16 => gen_t::<f16>(n, s, t),
            DType::BF16 => gen_t::<bf16>(n, s, t),
            DType::F32 => gen_t::<f32>(n, s, t),
            DType::F64 => gen_t::<f64>(n, s, t),
        };
        Tensor::from_cpu_storage(storage, shape, device)
    }
}
