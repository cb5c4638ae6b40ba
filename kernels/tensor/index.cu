// Indexing ops (crates/tensor/src/ops/index.rs): index_select (and so embedding), gather,
// one_hot, and the accumulating index_add / scatter_add. Indices are u32 or i64 and were
// checked by the host. The accumulating kernels get the contributions grouped by destination
// (a CSR built by the host: `start[e] .. start[e + 1]` index `order`, sorted stably by
// destination), so each destination sums its sources in increasing order without atomics:
// the results are deterministic and equal the CPU's bit for bit (halves round after each add
// like the CPU; integers wrap).
#include "tensor_common.cuh"

template <typename T> __device__ __forceinline__ T acc_add(T a, T b) { return a + b; }
template <> __device__ __forceinline__ f16 acc_add<f16>(f16 a, f16 b) {
    return __float2half_rn(__half2float(a) + __half2float(b));
}
template <> __device__ __forceinline__ bf16 acc_add<bf16>(bf16 a, bf16 b) {
    return __float2bfloat16_rn(__bfloat162float(a) + __bfloat162float(b));
}
template <> __device__ __forceinline__ u8 acc_add<u8>(u8 a, u8 b) { return (u8)((u32)a + (u32)b); }
template <> __device__ __forceinline__ i64 acc_add<i64>(i64 a, i64 b) {
    return (i64)((unsigned long long)a + (unsigned long long)b);
}

// out[p] = x[p with coordinate `dim` replaced by idx[j]], j = that coordinate of p. Operand 1
// of `m` is the input viewed with the output's dims and stride 0 at `dim`; `sd` is the
// input's stride at `dim`, `inner` the product of the dims after it, `count` the index count.
template <typename T, typename I>
__device__ void index_select_kernel(StridedMeta m, i64 inner, i64 count, i64 sd, const I* __restrict__ idx,
                                    i64 idx_stride, const T* __restrict__ x, T* __restrict__ y) {
    GRID_STRIDE(p, m.n) {
        const i64 j = (p / inner) % count;
        y[p] = x[strided_offset(m, 1, p) + (i64)idx[j * idx_stride] * sd];
    }
}

// out[p] = x[p with coordinate `dim` replaced by index[p]]: operand 1 is the input viewed with
// the index's dims and stride 0 at `dim`, operand 2 the index.
template <typename T, typename I>
__device__ void gather_kernel(StridedMeta m, i64 sd, const I* __restrict__ idx, const T* __restrict__ x, T* __restrict__ y) {
    GRID_STRIDE(p, m.n) { y[p] = x[strided_offset(m, 1, p) + (i64)idx[strided_offset(m, 2, p)] * sd]; }
}

// out (zeroed, [n, classes]) gets 1 at (p, index[p]); operand 1 of `m` is the index.
template <typename T, typename I>
__device__ void one_hot_kernel(StridedMeta m, i64 classes, const I* __restrict__ idx, T* __restrict__ y) {
    GRID_STRIDE(p, m.n) { y[p * classes + (i64)idx[strided_offset(m, 1, p)]] = from_f64<T>(1.0); }
}

// out (contiguous [outer, size, inner], holding a copy of the input) += rows of contiguous
// src ([outer, count, inner]) at rows index[j]; `start`/`order` group the j by row.
template <typename T>
__device__ void index_add_kernel(i64 n, i64 size, i64 inner, i64 count, const i64* __restrict__ start,
                                 const i64* __restrict__ order, const T* __restrict__ src, T* __restrict__ out) {
    GRID_STRIDE(e, n) {
        const i64 row = (e / inner) % size;
        const i64 k0 = start[row], k1 = start[row + 1];
        if (k0 == k1) continue;
        const i64 o = e / (inner * size), i = e % inner;
        T acc = out[e];
        for (i64 k = k0; k < k1; ++k) acc = acc_add(acc, src[(o * count + order[k]) * inner + i]);
        out[e] = acc;
    }
}

// out (contiguous, holding a copy of the input) element e += src at the index positions
// order[start[e] .. start[e + 1]] (row-major positions of the index; operand 1 of `m` is src
// viewed with the index's dims).
template <typename T>
__device__ void scatter_add_kernel(StridedMeta m, i64 n_out, const i64* __restrict__ start, const i64* __restrict__ order,
                                   const T* __restrict__ src, T* __restrict__ out) {
    GRID_STRIDE(e, n_out) {
        const i64 k0 = start[e], k1 = start[e + 1];
        if (k0 == k1) continue;
        T acc = out[e];
        for (i64 k = k0; k < k1; ++k) acc = acc_add(acc, src[strided_offset(m, 1, order[k])]);
        out[e] = acc;
    }
}

#define INDEX_ENTRIES_TI(T, N, I, IN)                                                                               \
    extern "C" __global__ void index_select_##N##_##IN(StridedMeta m, i64 inner, i64 count, i64 sd, const I* idx,   \
                                                       i64 idx_stride, const T* x, T* y) {                          \
        index_select_kernel<T, I>(m, inner, count, sd, idx, idx_stride, x, y);                                      \
    }                                                                                                               \
    extern "C" __global__ void gather_##N##_##IN(StridedMeta m, i64 sd, const I* idx, const T* x, T* y) {           \
        gather_kernel<T, I>(m, sd, idx, x, y);                                                                      \
    }                                                                                                               \
    extern "C" __global__ void one_hot_##N##_##IN(StridedMeta m, i64 classes, const I* idx, T* y) {                 \
        one_hot_kernel<T, I>(m, classes, idx, y);                                                                   \
    }

#define INDEX_ENTRIES(T, N)                                                                                         \
    INDEX_ENTRIES_TI(T, N, u32, u32)                                                                                \
    INDEX_ENTRIES_TI(T, N, i64, i64)                                                                                \
    extern "C" __global__ void index_add_##N(i64 n, i64 size, i64 inner, i64 count, const i64* start,               \
                                             const i64* order, const T* src, T* out) {                              \
        index_add_kernel<T>(n, size, inner, count, start, order, src, out);                                         \
    }                                                                                                               \
    extern "C" __global__ void scatter_add_##N(StridedMeta m, i64 n_out, const i64* start, const i64* order,         \
                                               const T* src, T* out) {                                              \
        scatter_add_kernel<T>(m, n_out, start, order, src, out);                                                    \
    }

INDEX_ENTRIES(u8, u8)
INDEX_ENTRIES(u32, u32)
INDEX_ENTRIES(i64, i64)
INDEX_ENTRIES(f16, f16)
INDEX_ENTRIES(bf16, bf16)
INDEX_ENTRIES(float, f32)
INDEX_ENTRIES(double, f64)
