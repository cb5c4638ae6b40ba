//! What the attention tests (flash, gpu_bwd, gpu_fwd_mma, gpu_fwd_simt) share: the one case
//! type and input generator of `attune_attention::testing` (also xtask's grids) under the tests'
//! short names, their placement on the emulator, and the segment case list. Each test file
//! uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use attune_attention::AttentionParams;
use attune_attention::testing as generate;
pub use attune_attention::testing::{GridCase as Case, Layout};
use attune_tensor::{DType, Device, Tensor};

pub const CPU: Device = Device::Cpu;
pub const EMU: Device = Device::Emu;

/// The memory order `(batch, seq, heads, dim)` of a logical `(batch, heads, seq, dim)` tensor.
pub const BSHD: [usize; 4] = Layout::Bshd.perm();
/// Logical order: contiguous `(batch, heads, seq, dim)` memory.
pub const BHSD: [usize; 4] = Layout::Bhsd.perm();

/// A named case (the one case type, [`Case`]).
#[allow(clippy::too_many_arguments)]
pub fn case(
    name: &str,
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    params: AttentionParams,
) -> Case {
    Case::named(name, b, hq, hkv, sq, sk, d, params)
}

pub fn p() -> AttentionParams {
    AttentionParams::new()
}

/// Key padding, packed (varlen) sequences and dropout, alone and with masks, softcap and GQA:
/// the segment cases that gpu_bwd, gpu_fwd_mma and the CPU flash tests (flash.rs) all run.
pub fn segment_and_dropout_cases() -> Vec<Case> {
    vec![
        case("padding", 3, 2, 1, 50, 100, 64, p().seqlens_k(vec![0, 37, 100])),
        case("padding causal", 2, 2, 2, 60, 80, 64, p().seqlens_k(vec![80, 21]).causal(true)),
        case(
            "varlen",
            1,
            4,
            2,
            199,
            170,
            64,
            p().cu_seqlens(vec![0, 5, 5, 70, 199], vec![0, 30, 60, 60, 170]).causal(true),
        ),
        case("varlen window", 1, 2, 2, 150, 150, 48, p().cu_seqlens(vec![0, 64, 150], vec![0, 100, 150]).window(7, 3)),
        case("dropout", 2, 2, 2, 70, 90, 64, p().dropout(0.2, 42, 7)),
        case("dropout gqa causal", 1, 4, 2, 65, 65, 64, p().dropout(0.5, 3, u64::MAX - 2).causal(true)),
        case(
            "dropout varlen softcap",
            1,
            2,
            1,
            100,
            80,
            32,
            p().cu_seqlens(vec![0, 40, 100], vec![0, 50, 80]).dropout(0.1, 9, 0).softcap(3.0),
        ),
    ]
}

/// [`generate::normals`], unwrapped.
pub fn normals(shape: [usize; 4], seed: u64, dtype: DType, outliers: bool) -> Tensor {
    generate::normals(shape, seed, dtype, outliers).unwrap()
}

/// `t` (CPU, logical `(b, h, s, d)`) on the emulator, laid out in memory as `perm` of its dims
/// ([`generate::in_memory_order`], unwrapped).
pub fn on_emu(t: &Tensor, perm: [usize; 4]) -> Tensor {
    generate::in_memory_order(t, perm, &EMU).unwrap()
}

/// Largest finite `|a - b|`.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter().zip(&b).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
