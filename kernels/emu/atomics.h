// attune CUDA emulator: atomics. Blocks run concurrently on several OS threads, so these are
// real atomic read-modify-writes on host memory (fibers of one block never interleave inside
// one). Floating-point adds are compare-and-swap loops, like the GPU's result for a given
// order; the order across blocks is the only run-to-run difference the emulator allows.
#pragma once
#include <string.h>

#include "half.h"

#define ATTUNE_EMU_ATOMIC_INT(T)                                                                            \
    static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }            \
    static inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }            \
    static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }            \
    static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }              \
    static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }            \
    static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }          \
    static inline T atomicCAS(T* p, T expected, T desired) {                                               \
        __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);     \
        return expected;                                                                                   \
    }                                                                                                      \
    static inline T atomicMax(T* p, T v) {                                                                 \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                      \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
            ;                                                                                              \
        return old;                                                                                        \
    }                                                                                                      \
    static inline T atomicMin(T* p, T v) {                                                                 \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                      \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
            ;                                                                                              \
        return old;                                                                                        \
    }

ATTUNE_EMU_ATOMIC_INT(int)
ATTUNE_EMU_ATOMIC_INT(unsigned int)
ATTUNE_EMU_ATOMIC_INT(long long)
ATTUNE_EMU_ATOMIC_INT(unsigned long long)
#undef ATTUNE_EMU_ATOMIC_INT

static inline unsigned short atomicCAS(unsigned short* p, unsigned short expected, unsigned short desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}

// atomicInc/atomicDec with CUDA's wrap-around semantics.
static inline unsigned int atomicInc(unsigned int* p, unsigned int limit) {
    unsigned int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return old;
}
static inline unsigned int atomicDec(unsigned int* p, unsigned int limit) {
    unsigned int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, (old == 0 || old > limit) ? limit : old - 1, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
    return old;
}

namespace attune_emu {
// A read-modify-write of a value stored as the integer type B (CAS loop on its bits).
template <typename T, typename B, typename F>
inline T atomic_rmw(T* p, F f) {
    B* bp = reinterpret_cast<B*>(p);
    B old = __atomic_load_n(bp, __ATOMIC_RELAXED);
    for (;;) {
        T cur;
        memcpy(&cur, &old, sizeof(T));
        T next = f(cur);
        B nb;
        memcpy(&nb, &next, sizeof(T));
        if (__atomic_compare_exchange_n(bp, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return cur;
    }
}
}  // namespace attune_emu

static inline float atomicAdd(float* p, float v) {
    return attune_emu::atomic_rmw<float, unsigned int>(p, [v](float x) { return x + v; });
}
static inline double atomicAdd(double* p, double v) {
    return attune_emu::atomic_rmw<double, unsigned long long>(p, [v](double x) { return x + v; });
}
static inline __half atomicAdd(__half* p, __half v) {
    return attune_emu::atomic_rmw<__half, unsigned short>(p, [v](__half x) { return __hadd(x, v); });
}
static inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
    return attune_emu::atomic_rmw<__nv_bfloat16, unsigned short>(p, [v](__nv_bfloat16 x) { return __hadd(x, v); });
}
static inline __half2 atomicAdd(__half2* p, __half2 v) {
    return attune_emu::atomic_rmw<__half2, unsigned int>(p, [v](__half2 x) { return __hadd2(x, v); });
}
static inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
    return attune_emu::atomic_rmw<__nv_bfloat162, unsigned int>(p, [v](__nv_bfloat162 x) { return __hadd2(x, v); });
}
static inline float atomicExch(float* p, float v) {
    return attune_emu::atomic_rmw<float, unsigned int>(p, [v](float) { return v; });
}
