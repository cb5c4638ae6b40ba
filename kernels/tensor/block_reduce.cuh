// Block-wide tree reductions shared by the reduction, softmax, norm and loss kernels. Blocks
// that call these have a power-of-two size of at most ATTUNE_RED_THREADS (the host plans them
// so), and every thread of the block must call them (they hold barriers).
#pragma once
#include "tensor_common.cuh"

#define ATTUNE_RED_THREADS 256

// Merges the per-thread states `v` of the block with `Op::merge` through the shared array `sh`
// (at least blockDim.x entries); every thread gets the result. Merge order is fixed by the
// block size alone, so a launch is deterministic.
template <typename Op, typename S>
__device__ __forceinline__ S block_merge(S v, S* sh) {
    const int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = Op::merge(sh[t], sh[t + s]);
        __syncthreads();
    }
    S r = sh[0];
    __syncthreads();  // sh may be reused right after
    return r;
}

struct SumOp {
    template <typename A> static __device__ __forceinline__ A merge(A a, A b) { return a + b; }
};

// Max where NaN wins (a NaN anywhere makes the result NaN).
struct NanMaxOp {
    template <typename A> static __device__ __forceinline__ A merge(A a, A b) { return (b > a || b != b) ? b : a; }
};

template <typename A> __device__ __forceinline__ A block_sum(A v, A* sh) { return block_merge<SumOp>(v, sh); }
template <typename A> __device__ __forceinline__ A block_nanmax(A v, A* sh) { return block_merge<NanMaxOp>(v, sh); }

// Negative and positive infinity in float and double (INFINITY is a float: the casts widen it).
template <typename A> __device__ __forceinline__ A neg_inf() { return -(A)INFINITY; }
template <typename A> __device__ __forceinline__ A pos_inf() { return (A)INFINITY; }
