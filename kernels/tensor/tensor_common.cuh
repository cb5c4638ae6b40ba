// Shared pieces of the tensor-op kernels: element types, conversions through f32/f64, and the
// strided indexing descriptor every element-wise kernel takes by value.
#pragma once
#include "../common.cuh"
#ifndef __CUDACC_RTC__
// Host compilers find the float overloads of the math functions in std; CUDA has them global.
#include <cmath>
using std::cos; using std::erf; using std::erfc; using std::exp; using std::fabs; using std::log;
using std::pow; using std::sin; using std::sqrt; using std::tanh;
#endif

typedef long long i64;
typedef unsigned int u32;
typedef unsigned char u8;
typedef __half f16;
typedef __nv_bfloat16 bf16;

#define ATTUNE_MAX_RANK 8

// Mirrors attune_tensor::gpu::StridedMeta (repr(C)): operand 0 is the output, 1..3 the inputs.
// Elements are visited in row-major order of `dims`; offsets and strides are in elements.
struct StridedMeta {
    i64 n;
    int rank;
    int pad;
    i64 dims[ATTUNE_MAX_RANK];
    i64 strides[4][ATTUNE_MAX_RANK];
    i64 offsets[4];
};

__device__ __forceinline__ i64 strided_offset(const StridedMeta& m, int which, i64 i) {
    i64 off = m.offsets[which];
    for (int d = m.rank - 1; d >= 0; --d) {
        i64 q = i % m.dims[d];
        i /= m.dims[d];
        off += q * m.strides[which][d];
    }
    return off;
}

// Grid-stride loop over n items: plans cap the grid, so every kernel loops.
#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Float conversions: halves compute in f32, like the CPU backend.
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(f16 x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(bf16 x) { return __bfloat162float(x); }

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

template <typename T> __device__ __forceinline__ T from_acc(typename Acc<T>::type x) { return from_f32<T>(x); }
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }

// Any element to f64 and back, for casts (integers saturate like Rust's `as`, NaN -> 0).
__device__ __forceinline__ double to_f64(float x) { return (double)x; }
__device__ __forceinline__ double to_f64(double x) { return x; }
__device__ __forceinline__ double to_f64(f16 x) { return (double)__half2float(x); }
__device__ __forceinline__ double to_f64(bf16 x) { return (double)__bfloat162float(x); }
__device__ __forceinline__ double to_f64(i64 x) { return (double)x; }
__device__ __forceinline__ double to_f64(u32 x) { return (double)x; }
__device__ __forceinline__ double to_f64(u8 x) { return (double)x; }

template <typename T> __device__ __forceinline__ T from_f64(double x);
template <> __device__ __forceinline__ double from_f64<double>(double x) { return x; }
template <> __device__ __forceinline__ float from_f64<float>(double x) { return (float)x; }
// f64 -> f16/bf16 rounds once (as the half crate does), not through f32.
template <> __device__ __forceinline__ f16 from_f64<f16>(double x) { return __double2half(x); }
template <> __device__ __forceinline__ bf16 from_f64<bf16>(double x) { return __double2bfloat16(x); }
__device__ __forceinline__ double sat(double x, double lo, double hi) {
    return x != x ? 0.0 : (x < lo ? lo : (x > hi ? hi : x));
}
template <> __device__ __forceinline__ i64 from_f64<i64>(double x) {
    return x != x ? 0 : (x >= 9.2233720368547758e18 ? (i64)0x7fffffffffffffffLL : (x <= -9.2233720368547758e18 ? (i64)(-0x7fffffffffffffffLL - 1) : (i64)x));
}
template <> __device__ __forceinline__ u32 from_f64<u32>(double x) { return (u32)sat(x, 0.0, 4294967295.0); }
template <> __device__ __forceinline__ u8 from_f64<u8>(double x) { return (u8)sat(x, 0.0, 255.0); }
