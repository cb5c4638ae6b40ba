// Cross-entropy over class logits (crates/tensor/src/ops/loss.rs): a row kernel computing each
// row's loss and log-sum-exp in the compute type (f32 for f16/bf16/f32, f64 for f64), the
// mean/sum of the row losses in f64 (one block, fixed order), and the backward
// dx = scale * (softmax - q) with q = 1 - s + s / C on the target and s / C elsewhere.
// Targets are i64 class indices checked by the host, -1 where ignored (loss, lse and
// gradient 0). Row kernels take `mode`: 0 = one block per row, 1 = one thread per row.
#include "block_reduce.cuh"

// The max of the row ignoring NaN (num_traits' Float::max, as the CPU); NaN still reaches the
// loss through the sum of exponentials.
struct FiniteMaxOp {
    template <typename A> static __device__ __forceinline__ A merge(A a, A b) { return b > a ? b : a; }
};

template <typename A> __device__ __forceinline__ bool is_finite(A v) {
    return v == v && v != pos_inf<A>() && v != neg_inf<A>();
}

template <typename T>
__device__ void ce_fwd_kernel(int mode, i64 rows, i64 c, double smoothing_d, const T* __restrict__ x,
                              const i64* __restrict__ targets, typename Acc<T>::type* __restrict__ loss,
                              typename Acc<T>::type* __restrict__ lse_out) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[ATTUNE_RED_THREADS];
    const A smoothing = (A)smoothing_d;
    const i64 first = mode == 1 ? (i64)blockIdx.x * blockDim.x + threadIdx.x : (i64)blockIdx.x;
    const i64 stride = mode == 1 ? (i64)gridDim.x * blockDim.x : (i64)gridDim.x;
    const i64 k0 = mode == 1 ? 0 : (i64)threadIdx.x, step = mode == 1 ? 1 : (i64)blockDim.x;
    for (i64 r = first; r < rows; r += stride) {
        const i64 t = targets[r];
        if (t < 0) {  // ignored: the same branch for the whole block
            if (k0 == 0) {
                loss[r] = (A)0;
                lse_out[r] = (A)0;
            }
            continue;
        }
        const T* xr = x + r * c;
        A m = neg_inf<A>();
        for (i64 k = k0; k < c; k += step) m = FiniteMaxOp::merge(m, to_acc(xr[k]));
        if (mode == 0) m = block_merge<FiniteMaxOp>(m, sh);
        // exp(-inf - -inf) would be NaN: a row of -inf logits has lse -inf.
        const A shift = is_finite(m) ? m : (A)0;
        A s = (A)0;
        for (i64 k = k0; k < c; k += step) s += exp(to_acc(xr[k]) - shift);
        if (mode == 0) s = block_sum(s, sh);
        const A lse = shift + log(s);
        A total = (A)0;
        if (smoothing != (A)0) {
            for (i64 k = k0; k < c; k += step) total += to_acc(xr[k]);
            if (mode == 0) total = block_sum(total, sh);
        }
        if (k0 == 0) {
            const A nll = lse - to_acc(xr[t]);
            const A smooth = lse - total / (A)(double)c;
            loss[r] = smoothing == (A)0 ? nll : ((A)1 - smoothing) * nll + smoothing * smooth;
            lse_out[r] = lse;
        }
    }
}

// out[0] = sum of the row losses in f64 (divided by max(count, 1) when `mean`); one block.
template <typename T>
__device__ void ce_reduce_kernel(i64 rows, int mean, i64 count, const typename Acc<T>::type* __restrict__ loss, T* __restrict__ out) {
    __shared__ double sh[ATTUNE_RED_THREADS];
    double s = 0.0;
    for (i64 r = threadIdx.x; r < rows; r += blockDim.x) s += (double)loss[r];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = from_f64<T>(mean ? s / (double)(count > 0 ? count : 1) : s);
}

// dx[r, j] = scale_r * (e^(x - lse_r) - q_j); `mode_red` 0 = mean (g[0] / max(count, 1)),
// 1 = sum (g[0]), 2 = none (g[r]).
template <typename T>
__device__ void ce_bwd_kernel(i64 rows, i64 c, double smoothing, int mode_red, i64 count, const T* __restrict__ g,
                              const i64* __restrict__ targets, const T* __restrict__ x,
                              const typename Acc<T>::type* __restrict__ lse, T* __restrict__ dx) {
    typedef typename Acc<T>::type A;
    const A off = (A)(smoothing / (double)c);
    const A on = (A)(1.0 - smoothing) + off;
    GRID_STRIDE(e, rows * c) {
        const i64 r = e / c, j = e % c, t = targets[r];
        if (t < 0) {
            dx[e] = from_acc<T>((A)0);
            continue;
        }
        const double gs = mode_red == 2 ? to_f64(g[r]) : to_f64(g[0]);
        const A scale = (A)(mode_red == 0 ? gs / (double)(count > 0 ? count : 1) : gs);
        dx[e] = from_acc<T>(scale * (exp(to_acc(x[e]) - lse[r]) - (j == t ? on : off)));
    }
}

#define LOSS_ENTRIES(T, N)                                                                                        \
    extern "C" __global__ void ce_fwd_##N(int mode, i64 rows, i64 c, double smoothing, const T* x,                 \
                                          const i64* targets, Acc<T>::type* loss, Acc<T>::type* lse) {             \
        ce_fwd_kernel<T>(mode, rows, c, smoothing, x, targets, loss, lse);                                        \
    }                                                                                                             \
    extern "C" __global__ void ce_reduce_##N(i64 rows, int mean, i64 count, const Acc<T>::type* loss, T* out) {    \
        ce_reduce_kernel<T>(rows, mean, count, loss, out);                                                        \
    }                                                                                                             \
    extern "C" __global__ void ce_bwd_##N(i64 rows, i64 c, double smoothing, int mode_red, i64 count, const T* g, \
                                          const i64* targets, const T* x, const Acc<T>::type* lse, T* dx) {        \
        ce_bwd_kernel<T>(rows, c, smoothing, mode_red, count, g, targets, x, lse, dx);                            \
    }
LOSS_ENTRIES(f16, f16)
LOSS_ENTRIES(bf16, bf16)
LOSS_ENTRIES(float, f32)
LOSS_ENTRIES(double, f64)
