// Softmax and log-softmax along one dim of a contiguous tensor viewed as [outer, d, inner]:
// row r = (o, i) holds the d elements at o * d * inner + i + k * inner. Per row: the max (NaN
// wins), the sum of e^(x - max) (partials in the element's compute type, f32 for halves,
// combined in f64), then the output pass. Two schedules (the `mode` arg): 0 = one block per
// row (power-of-two block, <= 256 threads), 1 = one thread per row (short rows, and rows
// along an outer dim where neighbouring threads read neighbouring addresses).
// Semantics follow crates/tensor/src/ops/softmax.rs: a row of only -inf gives softmax 0 and
// log-softmax -inf everywhere; a row holding NaN or +inf gives NaN.
#include "block_reduce.cuh"

template <typename A> __device__ __forceinline__ A sm_pick(A a, A v) { return (v > a || v != v) ? v : a; }

// Writes the outputs of one row given its max `m` and sum `s` (elements k = k0, k0 + step, ...).
template <typename T, typename A>
__device__ __forceinline__ void sm_write(int is_log, const T* x, T* y, i64 d, i64 inner, i64 k0, i64 step, A m, double s) {
    if (m == neg_inf<A>()) {
        const T fill = from_acc<T>(is_log ? neg_inf<A>() : (A)0);
        for (i64 k = k0; k < d; k += step) y[k * inner] = fill;
        return;
    }
    if (is_log) {
        // (x - m) - ln s keeps precision for large logits (x - m is exact near the max).
        const A ls = (A)log(s);
        for (i64 k = k0; k < d; k += step) y[k * inner] = from_acc<T>((to_acc(x[k * inner]) - m) - ls);
    } else {
        const A inv = (A)(1.0 / s);
        for (i64 k = k0; k < d; k += step) y[k * inner] = from_acc<T>(exp(to_acc(x[k * inner]) - m) * inv);
    }
}

template <typename T>
__device__ void softmax_kernel(int is_log, int mode, i64 rows, i64 d, i64 inner, const T* __restrict__ x, T* __restrict__ y) {
    typedef typename Acc<T>::type A;
    __shared__ A sh_a[ATTUNE_RED_THREADS];
    __shared__ double sh_d[ATTUNE_RED_THREADS];
    if (mode == 1) {
        GRID_STRIDE(r, rows) {
            const i64 base = (r / inner) * d * inner + r % inner;
            const T* xr = x + base;
            A m = neg_inf<A>();
            for (i64 k = 0; k < d; ++k) m = sm_pick(m, to_acc(xr[k * inner]));
            A s = (A)0;
            if (m != neg_inf<A>())
                for (i64 k = 0; k < d; ++k) s += exp(to_acc(xr[k * inner]) - m);
            sm_write<T, A>(is_log, xr, y + base, d, inner, 0, 1, m, (double)s);
        }
        return;
    }
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const i64 base = (r / inner) * d * inner + r % inner;
        const T* xr = x + base;
        A m = neg_inf<A>();
        for (i64 k = threadIdx.x; k < d; k += blockDim.x) m = sm_pick(m, to_acc(xr[k * inner]));
        m = block_nanmax(m, sh_a);
        A s = (A)0;
        if (m != neg_inf<A>())
            for (i64 k = threadIdx.x; k < d; k += blockDim.x) s += exp(to_acc(xr[k * inner]) - m);
        const double total = block_sum((double)s, sh_d);
        sm_write<T, A>(is_log, xr, y + base, d, inner, threadIdx.x, blockDim.x, m, total);
    }
}

#define SOFTMAX_ENTRY(T, N)                                                                          \
    extern "C" __global__ void softmax_##N(int is_log, int mode, i64 rows, i64 d, i64 inner, const T* x, \
                                           T* y) {                                                   \
        softmax_kernel<T>(is_log, mode, rows, d, inner, x, y);                                          \
    }
SOFTMAX_ENTRY(f16, f16)
SOFTMAX_ENTRY(bf16, bf16)
SOFTMAX_ENTRY(float, f32)
SOFTMAX_ENTRY(double, f64)
