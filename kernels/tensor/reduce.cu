// Reductions over any set of dims: sum, mean, max, min, argmax, argmin, logsumexp, var, std.
// The host merges the kept dims and the reduced dims separately (ReduceMeta); outputs are
// written contiguously in row-major order of the kept dims. Two schedules (the `mode` arg):
//  - 0: one block per output; its threads stride over the reduced elements and the partial
//    states meet in a shared-memory tree (block sizes are powers of two, <= 256);
//  - 1: one thread per output, looping over the reduced elements (short reductions, and
//    column reductions where neighbouring threads read neighbouring addresses).
// Semantics follow the CPU backend (crates/tensor/src/ops/reduce.rs): float sums, means,
// logsumexp and moments accumulate in f64; max/min compare halves in f32 and let NaN win;
// argmax/argmin return the first index of the extremum (a NaN counts as the extremum);
// integer sums wrap in their own dtype.
#include "block_reduce.cuh"

#define ATTUNE_RED_RANK 8

// Mirrors attune_tensor::gpu::reduce::ReduceMeta (repr(C)).
struct ReduceMeta {
    i64 n_out;
    i64 n_red;
    int out_rank;
    int red_rank;
    i64 offset;
    i64 out_dims[ATTUNE_RED_RANK];
    i64 out_strides[ATTUNE_RED_RANK];
    i64 red_dims[ATTUNE_RED_RANK];
    i64 red_strides[ATTUNE_RED_RANK];
};

// Offset of the `i`-th element (row-major) of the dims/strides pair.
__device__ __forceinline__ i64 dims_offset(i64 i, int rank, const i64* dims, const i64* strides) {
    if (rank == 1) return i * strides[0];
    i64 off = 0;
    for (int d = rank - 1; d >= 0; --d) {
        off += (i % dims[d]) * strides[d];
        i /= dims[d];
    }
    return off;
}

// ---- comparison types: halves compare in f32, integers in i64 ------------------------------
template <typename T> struct Cmp { typedef T type; };
template <> struct Cmp<f16> { typedef float type; };
template <> struct Cmp<bf16> { typedef float type; };
template <> struct Cmp<u8> { typedef i64 type; };
template <> struct Cmp<u32> { typedef i64 type; };

__device__ __forceinline__ float cmp_up(f16 x) { return __half2float(x); }
__device__ __forceinline__ float cmp_up(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float cmp_up(float x) { return x; }
__device__ __forceinline__ double cmp_up(double x) { return x; }
__device__ __forceinline__ i64 cmp_up(u8 x) { return (i64)x; }
__device__ __forceinline__ i64 cmp_up(u32 x) { return (i64)x; }
__device__ __forceinline__ i64 cmp_up(i64 x) { return x; }

template <typename T> __device__ __forceinline__ T cmp_down(typename Cmp<T>::type c) { return (T)c; }
template <> __device__ __forceinline__ f16 cmp_down<f16>(float c) { return __float2half_rn(c); }
template <> __device__ __forceinline__ bf16 cmp_down<bf16>(float c) { return __float2bfloat16_rn(c); }

template <typename C> __device__ __forceinline__ C cmp_lowest() { return neg_inf<C>(); }
template <> __device__ __forceinline__ i64 cmp_lowest<i64>() { return (i64)(-0x7fffffffffffffffLL - 1); }
template <typename C> __device__ __forceinline__ C cmp_highest() { return pos_inf<C>(); }
template <> __device__ __forceinline__ i64 cmp_highest<i64>() { return (i64)0x7fffffffffffffffLL; }

template <typename C> __device__ __forceinline__ bool is_nan(C c) { return c != c; }

// ---- the folds ---------------------------------------------------------------------------
// Each has a state S, init(), step(state, element, reduced index), merge and finish(state,
// count, param) giving the output element.

template <typename T> struct SumFloat {
    typedef double S;
    typedef T Out;
    __device__ static S init() { return 0.0; }
    __device__ static S step(S a, T x, i64) { return a + to_f64(x); }
    __device__ static S merge(S a, S b) { return a + b; }
    __device__ static Out finish(S a, i64, double) { return from_f64<T>(a); }
};

template <typename T> struct MeanFloat : SumFloat<T> {
    // Divided in f64 before rounding, like the CPU (an f16 mean of a large set cannot overflow).
    __device__ static T finish(double a, i64 n, double) { return from_f64<T>(a / (double)n); }
};

// Integer sums wrap: the u64 sum truncated to the dtype equals the wrapping sum in the dtype.
template <typename T> struct SumInt {
    typedef unsigned long long S;
    typedef T Out;
    __device__ static S init() { return 0ULL; }
    __device__ static S step(S a, T x, i64) { return a + (unsigned long long)(i64)x; }
    __device__ static S merge(S a, S b) { return a + b; }
    __device__ static Out finish(S a, i64, double) { return (T)a; }
};

template <typename T, bool MAX> struct Extremum {
    typedef typename Cmp<T>::type S;
    typedef T Out;
    __device__ static S init() { return MAX ? cmp_lowest<S>() : cmp_highest<S>(); }
    __device__ static S merge(S a, S x) {
        bool better = MAX ? (x > a) : (x < a);
        return (better || is_nan(x)) ? x : a;
    }
    __device__ static S step(S a, T x, i64) { return merge(a, cmp_up(x)); }
    __device__ static Out finish(S a, i64, double) { return cmp_down<T>(a); }
};

template <typename C> struct ArgState {
    C v;
    i64 i;
};

template <typename T, bool MAX> struct ArgExtremum {
    typedef typename Cmp<T>::type C;
    typedef ArgState<C> S;
    typedef i64 Out;
    __device__ static bool better(C x, C a) { return (MAX ? (x > a) : (x < a)) || (is_nan(x) && !is_nan(a)); }
    // The start never wins a tie against a real element (its index is the largest).
    __device__ static S init() {
        S s;
        s.v = MAX ? cmp_lowest<C>() : cmp_highest<C>();
        s.i = (i64)0x7fffffffffffffffLL;
        return s;
    }
    __device__ static S step(S a, T x, i64 i) {
        C c = cmp_up(x);
        if (better(c, a.v) || (!better(a.v, c) && i < a.i)) {
            a.v = c;
            a.i = i;
        }
        return a;
    }
    __device__ static S merge(S a, S b) { return (better(a.v, b.v) || (!better(b.v, a.v) && a.i <= b.i)) ? a : b; }
    // Only an empty set keeps the start, and the host rejects those.
    __device__ static Out finish(S a, i64, double) { return a.i == (i64)0x7fffffffffffffffLL ? 0 : a.i; }
};

// Online logsumexp (m, s): the running max and the sum of e^(x - m); equal values (two
// infinities included) add 1 directly so inf - inf never appears; NaN propagates through s.
struct LseState {
    double m, s;
};
__device__ __forceinline__ double lse_rescale(double s, double from, double to) {
    return from == to ? s : s * exp(from - to);
}
template <typename T> struct Lse {
    typedef LseState S;
    typedef T Out;
    __device__ static S init() {
        S r;
        r.m = neg_inf<double>();
        r.s = 0.0;
        return r;
    }
    __device__ static S step(S a, T xt, i64) {
        double x = to_f64(xt);
        if (x > a.m) {
            a.s = lse_rescale(a.s, a.m, x) + 1.0;
            a.m = x;
        } else if (x == a.m) {
            a.s += 1.0;
        } else {
            a.s += exp(x - a.m);
        }
        return a;
    }
    __device__ static S merge(S a, S b) {
        double m = a.m > b.m ? a.m : b.m;
        S r;
        r.s = lse_rescale(a.s, a.m, m) + lse_rescale(b.s, b.m, m);
        r.m = m;
        return r;
    }
    __device__ static Out finish(S a, i64, double) { return from_f64<T>(a.m + log(a.s)); }
};

// Welford / Chan moments (count, mean, sum of squared deviations) in f64.
struct Moments {
    double n, mean, m2;
};
template <typename T, bool STD> struct Var {
    typedef Moments S;
    typedef T Out;
    __device__ static S init() {
        S r;
        r.n = 0.0;
        r.mean = 0.0;
        r.m2 = 0.0;
        return r;
    }
    __device__ static S step(S a, T xt, i64) {
        double x = to_f64(xt);
        a.n += 1.0;
        double d = x - a.mean;
        a.mean += d / a.n;
        a.m2 += d * (x - a.mean);
        return a;
    }
    __device__ static S merge(S a, S b) {
        if (a.n == 0.0) return b;
        if (b.n == 0.0) return a;
        S r;
        r.n = a.n + b.n;
        double d = b.mean - a.mean;
        r.mean = a.mean + d * (b.n / r.n);
        r.m2 = a.m2 + b.m2 + d * d * (a.n * b.n / r.n);
        return r;
    }
    // `correction` is the param; a divisor <= 0 gives NaN or inf, as on the CPU.
    __device__ static Out finish(S a, i64, double correction) {
        double dof = a.n - correction;
        double var = a.m2 / (dof > 0.0 ? dof : 0.0);
        return from_f64<T>(STD ? sqrt(var) : var);
    }
};

template <typename Op, typename T>
__device__ void reduce_kernel(const ReduceMeta& m, int mode, double p, const T* __restrict__ x,
                              typename Op::Out* __restrict__ y) {
    typedef typename Op::S S;
    __shared__ S sh[ATTUNE_RED_THREADS];
    if (mode == 1) {
        GRID_STRIDE(o, m.n_out) {
            const T* base = x + m.offset + dims_offset(o, m.out_rank, m.out_dims, m.out_strides);
            S s = Op::init();
            for (i64 r = 0; r < m.n_red; ++r) s = Op::step(s, base[dims_offset(r, m.red_rank, m.red_dims, m.red_strides)], r);
            y[o] = Op::finish(s, m.n_red, p);
        }
        return;
    }
    for (i64 o = blockIdx.x; o < m.n_out; o += gridDim.x) {
        const T* base = x + m.offset + dims_offset(o, m.out_rank, m.out_dims, m.out_strides);
        S s = Op::init();
        for (i64 r = threadIdx.x; r < m.n_red; r += blockDim.x)
            s = Op::step(s, base[dims_offset(r, m.red_rank, m.red_dims, m.red_strides)], r);
        s = block_merge<Op>(s, sh);
        if (threadIdx.x == 0) y[o] = Op::finish(s, m.n_red, p);
    }
}

// One-parameter names of the two-parameter folds, so they pass through the entry macros.
template <typename T> struct MaxOp : Extremum<T, true> {};
template <typename T> struct MinOp : Extremum<T, false> {};
template <typename T> struct ArgMaxOp : ArgExtremum<T, true> {};
template <typename T> struct ArgMinOp : ArgExtremum<T, false> {};
template <typename T> struct VarOp : Var<T, false> {};
template <typename T> struct StdOp : Var<T, true> {};

#define RED_ENTRY(NAME, OP, T, N)                                                                          \
    extern "C" __global__ void reduce_##NAME##_##N(ReduceMeta m, int mode, double p, const T* x,            \
                                                   OP<T>::Out* y) {                                        \
        reduce_kernel<OP<T>, T>(m, mode, p, x, y);                                                         \
    }

#define CMP_ENTRIES(T, N)              \
    RED_ENTRY(max, MaxOp, T, N)        \
    RED_ENTRY(min, MinOp, T, N)        \
    RED_ENTRY(argmax, ArgMaxOp, T, N)  \
    RED_ENTRY(argmin, ArgMinOp, T, N)

#define FLOAT_RED_ENTRIES(T, N)          \
    RED_ENTRY(sum, SumFloat, T, N)       \
    RED_ENTRY(mean, MeanFloat, T, N)     \
    RED_ENTRY(logsumexp, Lse, T, N)      \
    RED_ENTRY(var, VarOp, T, N)          \
    RED_ENTRY(std, StdOp, T, N)          \
    CMP_ENTRIES(T, N)

#define INT_RED_ENTRIES(T, N)          \
    RED_ENTRY(sum, SumInt, T, N)       \
    CMP_ENTRIES(T, N)

FLOAT_RED_ENTRIES(f16, f16)
FLOAT_RED_ENTRIES(bf16, bf16)
FLOAT_RED_ENTRIES(float, f32)
FLOAT_RED_ENTRIES(double, f64)
INT_RED_ENTRIES(u8, u8)
INT_RED_ENTRIES(u32, u32)
INT_RED_ENTRIES(i64, i64)

// ---- element-wise helpers of the reduction backward passes ------------------------------
// Op codes mirror attune_tensor::gpu::reduce::BACKWARD_HELPERS; halves compute in f32 like
// the CPU's binary kernels.
enum RedBwdOp { RB_EQ_MASK = 0, RB_EXP_SUB_MASKED, RB_SAFE_DIV };

template <typename A> __device__ __forceinline__ A red_bwd_apply(int op, A a, A b) {
    switch (op) {
    // 1 where x equals the extremum (NaN matching NaN, so a NaN max routes its gradient).
    case RB_EQ_MASK: return (a == b || (a != a && b != b)) ? (A)1 : (A)0;
    // exp(x - lse), and 0 where lse is -inf (a set of only -inf), where x - lse is NaN.
    case RB_EXP_SUB_MASKED: return (b == neg_inf<A>()) ? (A)0 : exp(a - b);
    // a / b, and 0 where b is 0 (std's gradient at zero spread).
    case RB_SAFE_DIV: return b == (A)0 ? (A)0 : a / b;
    }
    return a;
}

template <typename T>
__device__ void red_bwd_kernel(int op, StridedMeta m, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE(i, m.n) {
        A va = to_acc(a[strided_offset(m, 1, i)]), vb = to_acc(b[strided_offset(m, 2, i)]);
        y[strided_offset(m, 0, i)] = from_acc<T>(red_bwd_apply<A>(op, va, vb));
    }
}

#define RED_BWD_ENTRY(T, N)                                                                     \
    extern "C" __global__ void reduce_bwd_##N(int op, StridedMeta m, const T* a, const T* b, T* y) { \
        red_bwd_kernel<T>(op, m, a, b, y);                                                      \
    }
RED_BWD_ENTRY(f16, f16)
RED_BWD_ENTRY(bf16, bf16)
RED_BWD_ENTRY(float, f32)
RED_BWD_ENTRY(double, f64)
