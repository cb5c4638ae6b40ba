// Kernels for the sanitizer test (crates/cuda/tests/emu_sanitize.rs): out-of-bounds accesses of
// global, static shared and dynamic shared memory by one known thread, and an in-bounds kernel.
#include "../common.cuh"

// Thread (5,0,0) of block (1,0,0) writes one element past the end of x (n elements).
extern "C" __global__ void oob_global(float* x, int n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if ((int)i < n) x[i] = 1.0f;
    if (blockIdx.x == 1 && threadIdx.x == 5) x[n] = 2.0f;
}

// Thread (31,1,0) of block (2,0,0) reads one past a static shared array.
extern "C" __global__ void oob_static_shared(float* out) {
    __shared__ float tile[64];
    unsigned t = threadIdx.x + blockDim.x * threadIdx.y;
    tile[t] = (float)t;
    __syncthreads();
    unsigned j = (blockIdx.x == 2 && t == 63) ? 64 : t;
    out[blockIdx.x * 64 + t] = tile[j];
}

// Thread (7,0,0) of block (0,0,0) writes one past the dynamic shared memory it was given.
extern "C" __global__ void oob_dynamic_shared(float* out, int count) {
    ATTUNE_DYNAMIC_SHARED(float, buf);
    unsigned t = threadIdx.x;
    if ((int)t < count) buf[t] = 1.0f;
    __syncthreads();
    if (t == 7) buf[count] = 3.0f;
    out[t] = buf[t % (unsigned)count];
}

// In bounds: static and dynamic shared memory, shuffles, a barrier, every thread's own element.
extern "C" __global__ void in_bounds(const float* x, float* y, int n) {
    __shared__ float tile[256];
    ATTUNE_DYNAMIC_SHARED(float, extra);
    unsigned t = threadIdx.x;
    unsigned i = blockIdx.x * blockDim.x + t;
    float v = (int)i < n ? x[i] : 0.0f;
    tile[t] = v;
    extra[t] = 2.0f * v;
    __syncthreads();
    float s = tile[blockDim.x - 1 - t] + extra[t];
    s += __shfl_xor_sync(0xffffffffu, v, 1);
    if ((int)i < n) y[i] = s;
}
