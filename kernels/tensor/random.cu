// Philox4x32-10 streams on the device, with the one stream convention of every Attune backend
// (crates/tensor/src/cpu/philox.rs): element i reads block c = offset + i / 4 (counter
// [lo32(c), hi32(c), 0, 0], key [lo32(seed), hi32(seed)]) and owns word i % 4. Each thread
// computes one block and writes its (up to) four elements, so the results are the CPU's bit
// for bit: dropout masks, Bernoulli draws and uniforms compare integers or scale exactly.
#include "tensor_common.cuh"
#include "../philox.cuh"

// Loops over the blocks of an n-element stream; `b` is the block, `i` the first element.
#define STREAM_BLOCKS(b, n) GRID_STRIDE(b, ((n) + 3) / 4)

// Inverted dropout of x (read through operand 1 of `m`, written row-major): element i is kept
// iff (word >> 8) >= threshold; kept elements are x * scale (the product formed exactly in f64
// and rounded once, as on the CPU), dropped ones 0. `mask` gets scale or 0.
template <typename T>
__device__ void dropout_kernel(StridedMeta m, unsigned long long seed, unsigned long long offset, u32 threshold,
                               double scale_d, const T* __restrict__ x, T* __restrict__ y, T* __restrict__ mask) {
    const T scale = from_f64<T>(scale_d), zero = from_f64<T>(0.0);
    const double s = to_f64(scale);
    STREAM_BLOCKS(b, m.n) {
        const Words w = philox_block(seed, offset + (unsigned long long)b);
        for (int j = 0; j < 4; ++j) {
            const i64 i = 4 * b + j;
            if (i >= m.n) break;
            const bool keep = (w.w[j] >> 8) >= threshold;
            y[i] = keep ? from_f64<T>(to_f64(x[strided_offset(m, 1, i)]) * s) : zero;
            mask[i] = keep ? scale : zero;
        }
    }
}

// 1 where (word >> 8) < threshold, else 0.
template <typename T>
__device__ void bernoulli_kernel(i64 n, unsigned long long seed, unsigned long long offset, u32 threshold, T* __restrict__ y) {
    const T one = from_f64<T>(1.0), zero = from_f64<T>(0.0);
    STREAM_BLOCKS(b, n) {
        const Words w = philox_block(seed, offset + (unsigned long long)b);
        for (int j = 0; j < 4 && 4 * b + j < n; ++j) y[4 * b + j] = (w.w[j] >> 8) < threshold ? one : zero;
    }
}

// Uniforms in [0, 1) on the dtype's significand grid: the top `bits` bits of the word times
// 2^-bits (exact in the dtype).
template <typename T>
__device__ void rand_kernel(i64 n, unsigned long long seed, unsigned long long offset, int bits, T* __restrict__ y) {
    const double unit = 1.0 / (double)(1ULL << bits);
    STREAM_BLOCKS(b, n) {
        const Words w = philox_block(seed, offset + (unsigned long long)b);
        for (int j = 0; j < 4 && 4 * b + j < n; ++j) y[4 * b + j] = from_f64<T>((double)(w.w[j] >> (32 - bits)) * unit);
    }
}

#define RANDOM_ANY(T, N)                                                                                           \
    extern "C" __global__ void bernoulli_##N(i64 n, unsigned long long seed, unsigned long long offset, u32 t, T* y) { \
        bernoulli_kernel<T>(n, seed, offset, t, y);                                                                \
    }

#define RANDOM_FLOAT(T, N)                                                                                          \
    RANDOM_ANY(T, N)                                                                                                \
    extern "C" __global__ void dropout_##N(StridedMeta m, unsigned long long seed, unsigned long long offset, u32 t, \
                                           double scale, const T* x, T* y, T* mask) {                               \
        dropout_kernel<T>(m, seed, offset, t, scale, x, y, mask);                                                   \
    }                                                                                                               \
    extern "C" __global__ void rand_##N(i64 n, unsigned long long seed, unsigned long long offset, int bits, T* y) { \
        rand_kernel<T>(n, seed, offset, bits, y);                                                                   \
    }

RANDOM_FLOAT(f16, f16)
RANDOM_FLOAT(bf16, bf16)
RANDOM_FLOAT(float, f32)
RANDOM_FLOAT(double, f64)
RANDOM_ANY(u8, u8)
RANDOM_ANY(u32, u32)
RANDOM_ANY(i64, i64)
