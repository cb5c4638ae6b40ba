//! Mixed precision in the style of `torch.autocast`: while an [`Autocast`] guard is alive, the
//! matrix multiplies of [`crate::Linear`] and the fused attention of
//! [`crate::MultiHeadAttention`] on this thread compute in a 16-bit float dtype, while the
//! parameters (and so the optimizer's state and update) stay f32 and everything else (norms,
//! embeddings, activations, residual sums, softmax statistics, losses) runs in f32 on f32
//! tensors. Linear multiplies with [`attune_tensor::Tensor::matmul_in`] (operands rounded to
//! bf16 as the kernel packs them, f32 accumulation, f32 result); attention converts q, k and v
//! down on entry and its output back up. Modules outside the list never see a 16-bit tensor,
//! and gradients come back to the f32 parameters in f32 (docs/model.md, "Mixed precision").
//!
//! The state is per thread, like PyTorch's: a forward pass builds its graph on the thread
//! that called it (the ops' inner loops may run on other threads; they never read it).

use std::cell::Cell;

use attune_tensor::{DType, Tensor};

use crate::error::{NnError, Result};

thread_local! {
    static COMPUTE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// While alive, autocast ops on this thread compute in its dtype; dropping it restores the
/// previous state (guards nest).
#[derive(Debug)]
#[must_use = "autocast ends when the guard is dropped"]
pub struct Autocast {
    prev: Option<DType>,
}

impl Autocast {
    /// Starts autocasting to `dtype` (bf16 or f16).
    pub fn enter(dtype: DType) -> Result<Autocast> {
        if !matches!(dtype, DType::BF16 | DType::F16) {
            return Err(NnError::config(
                "Autocast",
                format!("autocast computes in bf16 or f16, not {dtype}; run without autocast for f32"),
            ));
        }
        Ok(Autocast { prev: COMPUTE.replace(Some(dtype)) })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        COMPUTE.set(self.prev);
    }
}

/// The dtype autocast ops compute in on this thread, if autocast is on.
pub fn compute_dtype() -> Option<DType> {
    COMPUTE.get()
}

/// The dtype an autocast op computes an input of dtype `dt` in: the autocast dtype for a wider
/// float, else `dt` itself (integers, and inputs already 16-bit, are left alone).
pub(crate) fn dtype_for(dt: DType) -> DType {
    match compute_dtype() {
        Some(lp) if matches!(dt, DType::F32 | DType::F64) => lp,
        _ => dt,
    }
}

/// `t` cast to [`dtype_for`] its dtype (itself when nothing changes).
pub(crate) fn cast_in(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(dtype_for(t.dtype()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_restore() {
        assert_eq!(compute_dtype(), None);
        {
            let _a = Autocast::enter(DType::BF16).unwrap();
            assert_eq!(dtype_for(DType::F32), DType::BF16);
            {
                let _b = Autocast::enter(DType::F16).unwrap();
                assert_eq!(compute_dtype(), Some(DType::F16));
            }
            assert_eq!(compute_dtype(), Some(DType::BF16));
            assert_eq!(dtype_for(DType::I64), DType::I64);
        }
        assert_eq!(compute_dtype(), None);
        assert_eq!(dtype_for(DType::F32), DType::F32);
        let e = Autocast::enter(DType::F32).unwrap_err().to_string();
        assert!(e.contains("bf16 or f16") && e.contains("f32"), "{e}");
    }
}
