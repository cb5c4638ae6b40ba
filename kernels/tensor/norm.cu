// Layer norm and RMS norm over the last dim of contiguous [rows, d] tensors, forward and
// backward, following crates/tensor/src/ops/norm.rs: statistics in f32 (f16/bf16/f32) or f64
// (f64), a two-pass centred variance, and the saved per-row mean (layer norm) and rstd.
// Row kernels take a `mode`: 0 = one block per row (power-of-two block, <= 256 threads),
// 1 = one thread per row (short rows). The weight/bias gradients are column sums over rows,
// done without atomics: per-chunk partial sums (grid.y = chunk), then an ordered sum of the
// chunks, so results do not depend on scheduling.
#include "block_reduce.cuh"

// Row sums of f(k) over k = k0, k0 + step, ... < d, combined over the block in mode 0.
#define ROW_SUM(mode, sh, k, d, expr, out)                                   \
    do {                                                                     \
        A acc_ = (A)0;                                                       \
        const i64 k0_ = (mode) == 1 ? 0 : (i64)threadIdx.x;                  \
        const i64 st_ = (mode) == 1 ? 1 : (i64)blockDim.x;                   \
        for (i64 k = k0_; k < (d); k += st_) acc_ += (expr);                 \
        out = (mode) == 1 ? acc_ : block_sum(acc_, sh);                      \
    } while (0)

template <typename T>
__device__ void norm_fwd_kernel(int mode, int rms, i64 rows, i64 d, double eps_d, const T* __restrict__ x,
                                const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                                typename Acc<T>::type* __restrict__ mean_out, typename Acc<T>::type* __restrict__ rstd_out) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[ATTUNE_RED_THREADS];
    const A n = (A)(double)d, eps = (A)eps_d;
    const i64 first = mode == 1 ? (i64)blockIdx.x * blockDim.x + threadIdx.x : (i64)blockIdx.x;
    const i64 stride = mode == 1 ? (i64)gridDim.x * blockDim.x : (i64)gridDim.x;
    const i64 k0 = mode == 1 ? 0 : (i64)threadIdx.x, step = mode == 1 ? 1 : (i64)blockDim.x;
    for (i64 r = first; r < rows; r += stride) {
        const T* xr = x + r * d;
        T* yr = y + r * d;
        A mean = (A)0;
        if (!rms) {
            A s;
            ROW_SUM(mode, sh, k, d, to_acc(xr[k]), s);
            mean = s / n;
        }
        A ss;
        ROW_SUM(mode, sh, k, d, (to_acc(xr[k]) - mean) * (to_acc(xr[k]) - mean), ss);
        const A rstd = (A)1 / sqrt(ss / n + eps);
        for (i64 k = k0; k < d; k += step) {
            A v = (to_acc(xr[k]) - mean) * rstd;
            if (w) v = v * to_acc(w[k]);
            if (b) v = v + to_acc(b[k]);
            yr[k] = from_acc<T>(v);
        }
        if (k0 == 0) {
            if (mean_out) mean_out[r] = mean;
            rstd_out[r] = rstd;
        }
    }
}

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) (layer norm; RMS norm drops mean(gw)),
// with xhat = (x - mean) * rstd and gw = g * w.
template <typename T>
__device__ void norm_bwd_kernel(int mode, int rms, i64 rows, i64 d, const T* __restrict__ x, const T* __restrict__ g,
                                const T* __restrict__ w, const typename Acc<T>::type* __restrict__ mean_in,
                                const typename Acc<T>::type* __restrict__ rstd_in, T* __restrict__ dx) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[ATTUNE_RED_THREADS];
    const A n = (A)(double)d;
    const i64 first = mode == 1 ? (i64)blockIdx.x * blockDim.x + threadIdx.x : (i64)blockIdx.x;
    const i64 stride = mode == 1 ? (i64)gridDim.x * blockDim.x : (i64)gridDim.x;
    const i64 k0 = mode == 1 ? 0 : (i64)threadIdx.x, step = mode == 1 ? 1 : (i64)blockDim.x;
    for (i64 r = first; r < rows; r += stride) {
        const T* xr = x + r * d;
        const T* gr = g + r * d;
        const A mean = mean_in ? mean_in[r] : (A)0, rstd = rstd_in[r];
#define GW(k) (w ? to_acc(gr[k]) * to_acc(w[k]) : to_acc(gr[k]))
#define XHAT(k) ((to_acc(xr[k]) - mean) * rstd)
        A s_gw = (A)0, s_gwx;
        if (!rms) ROW_SUM(mode, sh, k, d, GW(k), s_gw);
        ROW_SUM(mode, sh, k, d, GW(k) * XHAT(k), s_gwx);
        const A a = rms ? (A)0 : s_gw / n, c = s_gwx / n;
        for (i64 k = k0; k < d; k += step) dx[r * d + k] = from_acc<T>(rstd * (GW(k) - a - XHAT(k) * c));
#undef GW
#undef XHAT
    }
}

// Partial column sums over the rows of chunk blockIdx.y: pw[chunk][j] = sum g * xhat,
// pb[chunk][j] = sum g (each only when its pointer is given).
template <typename T>
__device__ void norm_wb_partial_kernel(i64 rows, i64 d, i64 chunk_rows, const T* __restrict__ x, const T* __restrict__ g,
                                       const typename Acc<T>::type* __restrict__ mean_in,
                                       const typename Acc<T>::type* __restrict__ rstd_in,
                                       typename Acc<T>::type* __restrict__ pw, typename Acc<T>::type* __restrict__ pb) {
    typedef typename Acc<T>::type A;
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    const i64 r0 = (i64)blockIdx.y * chunk_rows;
    const i64 r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    A sw = (A)0, sb = (A)0;
    for (i64 r = r0; r < r1; ++r) {
        const A gv = to_acc(g[r * d + j]);
        const A mean = mean_in ? mean_in[r] : (A)0;
        sw += gv * ((to_acc(x[r * d + j]) - mean) * rstd_in[r]);
        sb += gv;
    }
    if (pw) pw[(i64)blockIdx.y * d + j] = sw;
    if (pb) pb[(i64)blockIdx.y * d + j] = sb;
}

// out[j] = sum over chunks of p[chunk][j], in chunk order.
template <typename T>
__device__ void norm_wb_final_kernel(i64 chunks, i64 d, const typename Acc<T>::type* __restrict__ p, T* __restrict__ out) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE(j, d) {
        A s = (A)0;
        for (i64 c = 0; c < chunks; ++c) s += p[c * d + j];
        out[j] = from_acc<T>(s);
    }
}

#define NORM_ENTRIES(T, N)                                                                                        \
    extern "C" __global__ void norm_fwd_##N(int mode, int rms, i64 rows, i64 d, double eps, const T* x, const T* w, \
                                            const T* b, T* y, Acc<T>::type* mean, Acc<T>::type* rstd) {           \
        norm_fwd_kernel<T>(mode, rms, rows, d, eps, x, w, b, y, mean, rstd);                                      \
    }                                                                                                             \
    extern "C" __global__ void norm_bwd_##N(int mode, int rms, i64 rows, i64 d, const T* x, const T* g, const T* w, \
                                            const Acc<T>::type* mean, const Acc<T>::type* rstd, T* dx) {          \
        norm_bwd_kernel<T>(mode, rms, rows, d, x, g, w, mean, rstd, dx);                                          \
    }                                                                                                             \
    extern "C" __global__ void norm_wb_partial_##N(i64 rows, i64 d, i64 chunk_rows, const T* x, const T* g,        \
                                                   const Acc<T>::type* mean, const Acc<T>::type* rstd,            \
                                                   Acc<T>::type* pw, Acc<T>::type* pb) {                          \
        norm_wb_partial_kernel<T>(rows, d, chunk_rows, x, g, mean, rstd, pw, pb);                                 \
    }                                                                                                             \
    extern "C" __global__ void norm_wb_final_##N(i64 chunks, i64 d, const Acc<T>::type* p, T* out) {              \
        norm_wb_final_kernel<T>(chunks, d, p, out);                                                               \
    }
NORM_ENTRIES(f16, f16)
NORM_ENTRIES(bf16, bf16)
NORM_ENTRIES(float, f32)
NORM_ENTRIES(double, f64)
