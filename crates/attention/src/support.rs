//! What the fused attention supports, by device, dtype and head_dim: the one rule that the
//! GPU dispatcher checks before launching and that callers (nn's `MultiHeadAttention`) ask
//! before choosing the fused op over composed tensor ops. The semantics are in
//! docs/attention.md; which kernel runs a supported call is [`crate::gpu`]'s choice.

use attune_tensor::{DType, Device};

/// The GPU kernels are compiled for head dims that are multiples of this.
pub const GPU_HEAD_DIM_STEP: usize = 8;
/// The largest head_dim the GPU kernels are compiled for.
pub const GPU_MAX_HEAD_DIM: usize = 256;

/// Why the fused attention cannot take a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A dtype the device's kernels do not take.
    #[error("the attention kernels on {device} take {accepted}, got {dtype}; convert with to_dtype")]
    DType {
        /// The inputs' device.
        device: Device,
        /// The inputs' dtype.
        dtype: DType,
        /// The dtypes the device takes, for the message.
        accepted: &'static str,
    },
    /// A head_dim the device's kernels are not compiled for.
    #[error(
        "the attention kernels on {device} take head_dim a multiple of {GPU_HEAD_DIM_STEP} in \
         {GPU_HEAD_DIM_STEP}..={GPU_MAX_HEAD_DIM}, got {head_dim}; pad head_dim with zeros (and keep the scale) \
         or run on the CPU"
    )]
    HeadDim {
        /// The inputs' device.
        device: Device,
        /// The inputs' head_dim.
        head_dim: usize,
    },
}

/// Whether the fused attention runs inputs of `dtype` with `head_dim` on `device`.
///
/// - CPU: f32, f16, bf16 (the flash kernels) and f64 (the exact oracle), any head_dim.
/// - `Cuda` and `Emu`: f32, f16 and bf16, head_dim a multiple of 8 in 8..=256.
pub fn supports(device: Device, dtype: DType, head_dim: usize) -> Result<(), Unsupported> {
    if device.is_gpu() {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Unsupported::DType { device, dtype, accepted: "f32, f16 or bf16 (f64 runs on the CPU)" });
        }
        if !gpu_head_dim(head_dim) {
            return Err(Unsupported::HeadDim { device, head_dim });
        }
        return Ok(());
    }
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        return Err(Unsupported::DType { device, dtype, accepted: "f32, f16, bf16 or f64" });
    }
    Ok(())
}

/// Whether the GPU kernels are compiled for `head_dim`.
pub(crate) fn gpu_head_dim(head_dim: usize) -> bool {
    head_dim.is_multiple_of(GPU_HEAD_DIM_STEP) && (GPU_HEAD_DIM_STEP..=GPU_MAX_HEAD_DIM).contains(&head_dim)
}

/// Every head_dim the GPU kernels are compiled for: 8, 16, ..., 256.
pub fn gpu_head_dims() -> impl Iterator<Item = usize> {
    (GPU_HEAD_DIM_STEP..=GPU_MAX_HEAD_DIM).step_by(GPU_HEAD_DIM_STEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_takes_multiples_of_8_up_to_256_in_three_dtypes() {
        for dev in [Device::Emu, Device::Cuda(0)] {
            for dt in [DType::F32, DType::F16, DType::BF16] {
                assert!(gpu_head_dims().all(|d| supports(dev, dt, d).is_ok()));
                for d in [0, 1, 12, 100, 264] {
                    assert_eq!(supports(dev, dt, d), Err(Unsupported::HeadDim { device: dev, head_dim: d }));
                }
            }
            assert!(matches!(supports(dev, DType::F64, 64), Err(Unsupported::DType { .. })));
        }
        assert_eq!(gpu_head_dims().count(), 32);
    }

    #[test]
    fn cpu_takes_any_head_dim_and_f64() {
        for dt in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            for d in [1, 3, 12, 264, 1000] {
                assert_eq!(supports(Device::Cpu, dt, d), Ok(()));
            }
        }
        assert!(supports(Device::Cpu, DType::I64, 8).is_err());
    }
}
