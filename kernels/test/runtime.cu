// Self-test kernels of the CUDA emulator (crates/cuda/tests/emu_runtime.rs). They use only
// what kernels/common.cuh documents, so they compile under NVRTC too.
#include "../common.cuh"

// Each block reverses its blockDim.x elements through static shared memory.
extern "C" __global__ void reverse_static(const float* __restrict__ in, float* __restrict__ out) {
    __shared__ float tile[1024];
    unsigned base = blockIdx.x * blockDim.x;
    tile[threadIdx.x] = in[base + threadIdx.x];
    __syncthreads();
    out[base + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

// The same through dynamic shared memory, which also holds a second array after the first.
extern "C" __global__ void reverse_dynamic(const float* __restrict__ in, float* __restrict__ out) {
    ATTUNE_DYNAMIC_SHARED(float, smem);
    float* second = smem + blockDim.x;
    unsigned base = blockIdx.x * blockDim.x;
    smem[threadIdx.x] = in[base + threadIdx.x];
    second[threadIdx.x] = 2.0f * in[base + threadIdx.x];
    __syncthreads();
    out[base + threadIdx.x] = smem[blockDim.x - 1 - threadIdx.x] + second[threadIdx.x];
}

// Four shuffles per thread of the value 1000 * warp + lane (+ 0.5 as a float for xor, and as
// a 64-bit value for down), written as out[4 * thread + k].
extern "C" __global__ void shuffles(int* out, int width, int delta) {
    unsigned t = threadIdx.x;
    int lane = t & 31;
    int v = 1000 * (int)(t / 32) + lane;
    int src = (lane * 7 + 3) % 37;  // arbitrary, sometimes >= 32 (then taken modulo width)
    out[4 * t + 0] = __shfl_sync(0xffffffffu, v, src, width);
    out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, (unsigned)delta, width);
    long long wide = (long long)v << 33;
    out[4 * t + 2] = (int)(__shfl_down_sync(0xffffffffu, wide, (unsigned)delta, width) >> 33);
    out[4 * t + 3] = (int)__shfl_xor_sync(0xffffffffu, (float)v + 0.5f, delta, width);
}

// ballot/any/all of predicates that depend on the lane and the warp.
extern "C" __global__ void votes(unsigned* out) {
    unsigned t = threadIdx.x;
    int lane = t & 31, warp = t / 32;
    unsigned b = __ballot_sync(0xffffffffu, (lane % (warp + 2)) == 0);
    int any = __any_sync(0xffffffffu, lane == 31 && warp % 2 == 1);
    int all = __all_sync(0xffffffffu, lane < 32 - warp);
    if (lane == 0) {
        out[3 * warp + 0] = b;
        out[3 * warp + 1] = (unsigned)any;
        out[3 * warp + 2] = (unsigned)all;
    }
}

// Every thread of every block adds to the same counters.
extern "C" __global__ void atomics(float* fsum, double* dsum, int* isum, unsigned long long* usum, unsigned* umax,
                                   int* imin, int* cas_count) {
    unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(fsum, 0.5f);
    atomicAdd(dsum, 0.25);
    atomicAdd(isum, (int)(g % 7) - 3);
    atomicAdd(usum, (unsigned long long)g);
    atomicMax(umax, g * 3u);
    atomicMin(imin, -(int)g);
    // A lock-free increment through atomicCAS.
    int old = *(volatile int*)cas_count, seen;
    while ((seen = atomicCAS(cas_count, old, old + 1)) != old) old = seen;
}

// Threads at or past `live` return before the barrier; the others still pass it.
extern "C" __global__ void early_exit(float* out, int live) {
    __shared__ float s[1024];
    unsigned t = threadIdx.x;
    if ((int)t >= live) return;
    s[t] = (float)t;
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[(t + 1) % (unsigned)live];
    __syncthreads();
    int n = __syncthreads_count(t % 2 == 0);
    if (t == 0) out[blockIdx.x * blockDim.x + blockDim.x - 1] = (float)n;
}

// Writes (thread, block, blockDim, gridDim) of every thread as 12 unsigned.
extern "C" __global__ void indices(unsigned* out) {
    unsigned tpb = blockDim.x * blockDim.y * blockDim.z;
    unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned* o = out + 12 * (b * tpb + t);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
    o[6] = blockDim.x; o[7] = blockDim.y; o[8] = blockDim.z;
    o[9] = gridDim.x; o[10] = gridDim.y; o[11] = gridDim.z;
}

// Lanes 0-15 of warp 1 shuffle while every other thread waits at __syncthreads: a deadlock.
extern "C" __global__ void divergent_collective(int* out) {
    unsigned t = threadIdx.x;
    if (t / 32 == 1 && (t & 31) < 16) {
        out[t] = __shfl_xor_sync(0xffffffffu, (int)t, 1);
    } else {
        __syncthreads();
    }
}

// A shuffle over half a warp's mask: legal CUDA, but Attune's kernels must pass full masks
// (docs/kernels.md), and the emulator cannot model partial ones, so it must refuse this.
extern "C" __global__ void partial_mask(int* out, unsigned mask) {
    unsigned t = threadIdx.x;
    out[t] = __shfl_xor_sync(mask, (int)t, 1);
}

struct ScaleParams {
    int n;
    float scale;
    double offset;
};

// A POD struct by value between pointers.
extern "C" __global__ void scale_pod(const float* x, ScaleParams p, float* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) y[i] = x[i] * p.scale + (float)p.offset;
}

// Conversions: float -> half/bf16 bits and the bits back to float.
extern "C" __global__ void convert16(const float* x, unsigned short* h, unsigned short* b, float* hf, float* bf, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half hv = __float2half_rn(x[i]);
    __nv_bfloat16 bv = __float2bfloat16_rn(x[i]);
    h[i] = __half_as_ushort(hv);
    b[i] = __bfloat16_as_ushort(bv);
    hf[i] = __half2float(__ushort_as_half((unsigned short)i));
    bf[i] = __bfloat162float(__ushort_as_bfloat16((unsigned short)i));
}

// 16-bit arithmetic on the bit patterns a, b, c: out[8 i + k] for add, sub, mul, div, fma, max,
// min (half), then the same through __half2 / __nv_bfloat162 for the first two lanes.
extern "C" __global__ void arith16(const unsigned short* a, const unsigned short* b, const unsigned short* c,
                                   unsigned short* hout, unsigned short* bout, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half ha = __ushort_as_half(a[i]), hb = __ushort_as_half(b[i]), hc = __ushort_as_half(c[i]);
    unsigned short* o = hout + 8 * i;
    o[0] = __half_as_ushort(ha + hb);
    o[1] = __half_as_ushort(__hsub(ha, hb));
    o[2] = __half_as_ushort(__hmul(ha, hb));
    o[3] = __half_as_ushort(ha / hb);
    o[4] = __half_as_ushort(__hfma(ha, hb, hc));
    o[5] = __half_as_ushort(__hmax(ha, hb));
    o[6] = __half_as_ushort(__hmin(ha, hb));
    __half2 p = __hadd2(__halves2half2(ha, hb), __halves2half2(hb, hc));
    o[7] = __half_as_ushort(__low2half(p));
    __nv_bfloat16 ba = __ushort_as_bfloat16(a[i]), bb = __ushort_as_bfloat16(b[i]), bc = __ushort_as_bfloat16(c[i]);
    unsigned short* q = bout + 8 * i;
    q[0] = __bfloat16_as_ushort(ba + bb);
    q[1] = __bfloat16_as_ushort(__hsub(ba, bb));
    q[2] = __bfloat16_as_ushort(__hmul(ba, bb));
    q[3] = __bfloat16_as_ushort(ba / bb);
    q[4] = __bfloat16_as_ushort(__hfma(ba, bb, bc));
    q[5] = __bfloat16_as_ushort(__hmax(ba, bb));
    q[6] = __bfloat16_as_ushort(__hmin(ba, bb));
    __nv_bfloat162 r = __floats2bfloat162_rn(__low2float(__halves2bfloat162(ba, bb)), __high2float(__halves2bfloat162(ba, bb)));
    q[7] = __bfloat16_as_ushort(__high2bfloat16(r));
}

// One block, one barrier: the launch-overhead probe.
extern "C" __global__ void trivial(float* out) {
    __shared__ float s[1024];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = s[blockDim.x - 1];
}

// A compile error, enabled by a define (for the error-message test).
#ifdef ATTUNE_TEST_BROKEN
extern "C" __global__ void broken(float* out) { out[0] = this_name_does_not_exist; }
#endif

// __trap() reported as an error.
extern "C" __global__ void traps(int* out) {
    if (threadIdx.x == 37) __trap();
    out[threadIdx.x] = 1;
}

// 128 KiB of locals per thread (attention kernels keep large register arrays; on the emulator
// they live on the fiber's stack, ATTUNE_EMU_STACK, 256 KiB by default), across a barrier.
extern "C" __global__ void big_locals(float* out) {
    float regs[32768];
    for (int i = 0; i < 32768; i++) regs[i] = (float)((i + threadIdx.x) % 7);
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < 32768; i += 97) s += regs[i];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
