// Element-wise tensor ops over strided, broadcast operands: unary maps (op code + two scalar
// parameters), binary ops, comparisons, where, and casts/copies. One module holds every dtype's
// entry point so a process compiles it once. Op codes mirror attune_tensor::gpu::elementwise.
#include "tensor_common.cuh"

// ---- unary float ops ----------------------------------------------------------------------
enum UnaryOp {
    U_NEG = 0, U_EXP, U_LOG, U_ABS, U_SIGN, U_SQRT, U_RSQRT, U_SIN, U_COS, U_TANH, U_SQR, U_RECIP,
    U_ERF, U_POWF, U_CLAMP, U_RELU, U_SIGMOID, U_SILU, U_GELU, U_GELU_ERF,
    U_SQRT_BWD, U_RSQRT_BWD, U_COS_BWD, U_TANH_BWD, U_SQR_BWD, U_RECIP_BWD, U_ERF_BWD, U_POWF_BWD,
    U_CLAMP_BWD, U_RELU_BWD, U_SIGMOID_BWD, U_SILU_BWD, U_GELU_BWD, U_GELU_ERF_BWD, U_AFFINE
};

#define GELU_K 0.7978845608028654   // sqrt(2/pi)
#define GELU_C 0.044715
#define INV_SQRT_2PI 0.3989422804014327
#define FRAC_1_SQRT_2 0.7071067811865476

template <typename A>
__device__ __forceinline__ A unary_apply(int op, A x, double p0, double p1) {
    const A one = (A)1, zero = (A)0;
    switch (op) {
    case U_NEG: return -x;
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_ABS: return fabs(x);
    case U_SIGN: return x > zero ? one : (x < zero ? -one : x);
    case U_SQRT: return sqrt(x);
    case U_RSQRT: return one / sqrt(x);
    case U_SIN: return sin(x);
    case U_COS: return cos(x);
    case U_TANH: return tanh(x);
    case U_SQR: return x * x;
    case U_RECIP: return one / x;
    case U_ERF: return (A)erf((double)x);  // rounded once from f64, as the CPU (erf is not hot)
    case U_POWF: return (p0 == 2.0) ? x * x : pow(x, (A)p0);
    case U_CLAMP: return x < (A)p0 ? (A)p0 : (x > (A)p1 ? (A)p1 : x);
    case U_RELU: return x < zero ? zero : x;
    case U_SIGMOID: return one / (one + exp(-x));
    case U_SILU: return x / (one + exp(-x));
    case U_GELU: {
        A u2 = (A)(2.0 * GELU_K) * (x + (A)GELU_C * x * x * x);
        return x / (one + exp(-u2));
    }
    case U_GELU_ERF: return (A)0.5 * x * erfc(-x * (A)FRAC_1_SQRT_2);
    case U_SQRT_BWD: return (A)0.5 / x;
    case U_RSQRT_BWD: return (A)(-0.5) * x * x * x;
    case U_COS_BWD: return -sin(x);
    case U_TANH_BWD: return one - x * x;
    case U_SQR_BWD: return (A)2 * x;
    case U_RECIP_BWD: return -(x * x);
    case U_ERF_BWD: return (A)1.1283791670955126 * exp(-x * x);
    case U_POWF_BWD: return (A)p0 * pow(x, (A)(p0 - 1.0));
    case U_CLAMP_BWD: return ((double)x >= p0 && (double)x <= p1) ? one : zero;
    case U_RELU_BWD: return x > zero ? one : zero;
    case U_SIGMOID_BWD: return x * (one - x);
    case U_SILU_BWD: {
        A s = one / (one + exp(-x));
        return s * (one + x * (one - s));
    }
    case U_GELU_BWD: {
        A k = (A)GELU_K, c = (A)GELU_C;
        A s = one / (one + exp((A)(-2) * k * (x + c * x * x * x)));
        A t = s * (one - s);
        return t == zero ? s : s + t * x * (A)2 * k * (one + (A)3 * c * x * x);
    }
    case U_GELU_ERF_BWD:
        return (A)0.5 * erfc(-x * (A)FRAC_1_SQRT_2) + x * (A)INV_SQRT_2PI * exp((A)(-0.5) * x * x);
    case U_AFFINE: return x * (A)p0 + (A)p1;
    }
    return x;
}

template <typename T>
__device__ void unary_kernel(int op, double p0, double p1, StridedMeta m, const T* __restrict__ x, T* __restrict__ y) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE(i, m.n) {
        A v = to_acc(x[strided_offset(m, 1, i)]);
        y[strided_offset(m, 0, i)] = from_acc<T>(unary_apply<A>(op, v, p0, p1));
    }
}

template <typename T> __device__ __forceinline__ T saturate_int(i64 r) { return (T)r; }
template <> __device__ __forceinline__ u32 saturate_int<u32>(i64 r) { return r < 0 ? 0u : (r > 4294967295LL ? 4294967295u : (u32)r); }
template <> __device__ __forceinline__ u8 saturate_int<u8>(i64 r) { return r < 0 ? (u8)0 : (r > 255 ? (u8)255 : (u8)r); }

// Integer unary ops (abs, neg, sign, relu, clamp), computed in i64 and saturated to the dtype.
template <typename T>
__device__ void unary_int_kernel(int op, double p0, double p1, StridedMeta m, const T* __restrict__ x, T* __restrict__ y) {
    GRID_STRIDE(i, m.n) {
        i64 v = (i64)x[strided_offset(m, 1, i)], r = v;
        switch (op) {
        case U_NEG: r = (i64)(0ULL - (unsigned long long)v); break;
        case U_ABS: r = v < 0 ? (i64)(0ULL - (unsigned long long)v) : v; break;
        case U_SIGN: r = v > 0 ? 1 : (v < 0 ? -1 : 0); break;
        case U_RELU: r = v < 0 ? 0 : v; break;
        case U_CLAMP: {
            i64 lo = (i64)p0, hi = (i64)p1;  // the host passes ceil(min), floor(max)
            r = v < lo ? lo : v;
            r = r > hi ? hi : r;
            break;
        }
        }
        y[strided_offset(m, 0, i)] = saturate_int<T>(r);
    }
}

// ---- binary ops ---------------------------------------------------------------------------
enum BinaryOp { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_MAX_BWD, B_MIN_BWD, B_POW_BWD_BASE, B_POW_BWD_EXP };

template <typename A>
__device__ __forceinline__ A binary_apply(int op, A a, A b) {
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAX: return (a > b || a != a) ? a : b;
    case B_MIN: return (a < b || a != a) ? a : b;
    case B_POW: return pow(a, b);
    case B_MAX_BWD: return a > b ? (A)1 : (a == b ? (A)0.5 : (A)0);
    case B_MIN_BWD: return a < b ? (A)1 : (a == b ? (A)0.5 : (A)0);
    case B_POW_BWD_BASE: return b == (A)0 ? (A)0 : b * pow(a, b - (A)1);
    case B_POW_BWD_EXP: return (a == (A)0 && b >= (A)0) ? (A)0 : pow(a, b) * log(a);
    }
    return a;
}

template <typename T>
__device__ void binary_kernel(int op, StridedMeta m, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE(i, m.n) {
        A va = to_acc(a[strided_offset(m, 1, i)]), vb = to_acc(b[strided_offset(m, 2, i)]);
        y[strided_offset(m, 0, i)] = from_acc<T>(binary_apply<A>(op, va, vb));
    }
}

// Integers: wrapping i64 arithmetic, division by zero gives 0 (the CPU's convention).
template <typename T>
__device__ void binary_int_kernel(int op, StridedMeta m, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y) {
    GRID_STRIDE(i, m.n) {
        i64 va = (i64)a[strided_offset(m, 1, i)], vb = (i64)b[strided_offset(m, 2, i)];
        unsigned long long ua = (unsigned long long)va, ub = (unsigned long long)vb;
        i64 r = 0;
        switch (op) {
        case B_ADD: r = (i64)(ua + ub); break;
        case B_SUB: r = (i64)(ua - ub); break;
        case B_MUL: r = (i64)(ua * ub); break;
        case B_DIV: r = vb == 0 ? 0 : ((va == (i64)(-0x7fffffffffffffffLL - 1) && vb == -1) ? va : va / vb); break;
        case B_MAX: r = va > vb ? va : vb; break;
        case B_MIN: r = va < vb ? va : vb; break;
        }
        y[strided_offset(m, 0, i)] = (T)r;  // wrapping, as the CPU's `as` casts
    }
}

// ---- comparisons and where ----------------------------------------------------------------
enum CmpOp { C_EQ = 0, C_NE, C_LT, C_LE, C_GT, C_GE };

// Integers compare exactly as i64, floats as f64 (exact for every float dtype).
__device__ __forceinline__ i64 cmp_val(i64 x) { return x; }
__device__ __forceinline__ i64 cmp_val(u32 x) { return (i64)x; }
__device__ __forceinline__ i64 cmp_val(u8 x) { return (i64)x; }
__device__ __forceinline__ double cmp_val(float x) { return (double)x; }
__device__ __forceinline__ double cmp_val(double x) { return x; }
__device__ __forceinline__ double cmp_val(f16 x) { return (double)__half2float(x); }
__device__ __forceinline__ double cmp_val(bf16 x) { return (double)__bfloat162float(x); }

template <typename T>
__device__ void compare_kernel(int op, StridedMeta m, const T* __restrict__ a, const T* __restrict__ b, u8* __restrict__ y) {
    GRID_STRIDE(i, m.n) {
        auto va = cmp_val(a[strided_offset(m, 1, i)]);
        auto vb = cmp_val(b[strided_offset(m, 2, i)]);
        bool r = false;
        switch (op) {
        case C_EQ: r = va == vb; break;
        case C_NE: r = va != vb; break;
        case C_LT: r = va < vb; break;
        case C_LE: r = va <= vb; break;
        case C_GT: r = va > vb; break;
        case C_GE: r = va >= vb; break;
        }
        y[strided_offset(m, 0, i)] = r ? 1 : 0;
    }
}

template <typename T>
__device__ void where_kernel(StridedMeta m, const u8* __restrict__ c, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y) {
    GRID_STRIDE(i, m.n) {
        y[strided_offset(m, 0, i)] = c[strided_offset(m, 1, i)] ? a[strided_offset(m, 2, i)] : b[strided_offset(m, 3, i)];
    }
}

// ---- casts and strided copies -------------------------------------------------------------
template <typename S, typename D>
__device__ void cast_kernel(StridedMeta m, const S* __restrict__ x, D* __restrict__ y) {
    GRID_STRIDE(i, m.n) { y[strided_offset(m, 0, i)] = from_f64<D>(to_f64(x[strided_offset(m, 1, i)])); }
}

template <typename T>
__device__ void copy_kernel(StridedMeta m, const T* __restrict__ x, T* __restrict__ y) {
    GRID_STRIDE(i, m.n) { y[strided_offset(m, 0, i)] = x[strided_offset(m, 1, i)]; }
}

// ---- entry points -------------------------------------------------------------------------
#define FLOAT_ENTRIES(T, N)                                                                               \
    extern "C" __global__ void unary_##N(int op, double p0, double p1, StridedMeta m, const T* x, T* y) { \
        unary_kernel<T>(op, p0, p1, m, x, y);                                                             \
    }                                                                                                     \
    extern "C" __global__ void binary_##N(int op, StridedMeta m, const T* a, const T* b, T* y) {         \
        binary_kernel<T>(op, m, a, b, y);                                                                 \
    }

#define INT_ENTRIES(T, N)                                                                                     \
    extern "C" __global__ void unary_##N(int op, double p0, double p1, StridedMeta m, const T* x, T* y) {     \
        unary_int_kernel<T>(op, p0, p1, m, x, y);                                                             \
    }                                                                                                         \
    extern "C" __global__ void binary_##N(int op, StridedMeta m, const T* a, const T* b, T* y) {             \
        binary_int_kernel<T>(op, m, a, b, y);                                                                 \
    }

#define ANY_ENTRIES(T, N)                                                                                     \
    extern "C" __global__ void compare_##N(int op, StridedMeta m, const T* a, const T* b, u8* y) {           \
        compare_kernel<T>(op, m, a, b, y);                                                                    \
    }                                                                                                         \
    extern "C" __global__ void where_##N(StridedMeta m, const u8* c, const T* a, const T* b, T* y) {         \
        where_kernel<T>(m, c, a, b, y);                                                                       \
    }                                                                                                         \
    extern "C" __global__ void copy_##N(StridedMeta m, const T* x, T* y) { copy_kernel<T>(m, x, y); }

FLOAT_ENTRIES(f16, f16)
FLOAT_ENTRIES(bf16, bf16)
FLOAT_ENTRIES(float, f32)
FLOAT_ENTRIES(double, f64)
INT_ENTRIES(u8, u8)
INT_ENTRIES(u32, u32)
INT_ENTRIES(i64, i64)
ANY_ENTRIES(u8, u8)
ANY_ENTRIES(u32, u32)
ANY_ENTRIES(i64, i64)
ANY_ENTRIES(f16, f16)
ANY_ENTRIES(bf16, bf16)
ANY_ENTRIES(float, f32)
ANY_ENTRIES(double, f64)

#define CAST(S, SN, D, DN) \
    extern "C" __global__ void cast_##SN##_##DN(StridedMeta m, const S* x, D* y) { cast_kernel<S, D>(m, x, y); }
#define CAST_FROM(S, SN)                                                                                   \
    CAST(S, SN, u8, u8) CAST(S, SN, u32, u32) CAST(S, SN, i64, i64) CAST(S, SN, f16, f16) CAST(S, SN, bf16, bf16) \
        CAST(S, SN, float, f32) CAST(S, SN, double, f64)
CAST_FROM(u8, u8)
CAST_FROM(u32, u32)
CAST_FROM(i64, i64)
CAST_FROM(f16, f16)
CAST_FROM(bf16, bf16)
CAST_FROM(float, f32)
CAST_FROM(double, f64)
