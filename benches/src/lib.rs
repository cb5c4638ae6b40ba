//! Shared set-up of Attune's benches: the global allocator and input builders.

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use attune_tensor::{DType, Device, Tensor};

/// The allocator compiled in, for bench labels.
pub fn allocator_name() -> &'static str {
    if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else {
        "system"
    }
}

/// A deterministic f32 tensor with values in [-1, 1).
pub fn input(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches data")
}

/// Raw f32 data for the direct-gemm baseline.
pub fn raw(n: usize, seed: u64) -> Vec<f32> {
    input(&[n], seed).to_dtype(DType::F32).and_then(|t| t.to_vec::<f32>()).expect("f32 input")
}

/// `dst = lhs @ rhs` for row-major m x k and k x n, calling `gemm` directly: the peer that
/// Tensor::matmul's overhead is measured against.
pub fn gemm_direct(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, k: usize) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let par = gemm::Parallelism::Rayon(rayon::current_num_threads());
    // SAFETY: the asserts above bound every index gemm touches with these strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
