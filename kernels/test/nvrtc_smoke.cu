// A self-contained kernel for attune-cuda's NVRTC tests (crates/cuda/tests/nvrtc_compile.rs).
// It includes a header of its own so the tests cover NVRTC's named headers, and it has a
// deliberate syntax error behind SMOKE_BREAK for the error-report test.
#include "nvrtc_smoke.cuh"

#ifdef SMOKE_BREAK
this line is not C++ and must fail to compile
#endif

// y[i] = a * x[i] + y[i] for i < n.
extern "C" __global__ void smoke_axpy(float a, const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = smoke_fma(a, x[i], y[i]);
}

// Sums SMOKE_BLOCK values per block through shared memory.
#ifndef SMOKE_BLOCK
#define SMOKE_BLOCK 128
#endif
extern "C" __global__ void smoke_block_sum(const float* x, float* out) {
    __shared__ float buf[SMOKE_BLOCK];
    int t = threadIdx.x;
    buf[t] = x[blockIdx.x * SMOKE_BLOCK + t];
    __syncthreads();
    for (int s = SMOKE_BLOCK / 2; s > 0; s /= 2) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}
