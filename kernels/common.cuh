// The one header every kernel includes (docs/kernels.md). Kernel files compile unchanged
// under NVRTC (for the GPU) and under the host C++ compiler (for the CUDA emulator, Device::Emu):
// under NVRTC this pulls in NVIDIA's 16-bit float headers and defines the helpers below with
// inline PTX; otherwise emu/emu.h provides the same names, emulated.
//
// Rules for kernel files:
// - Entry points are `extern "C" __global__ void NAME(args...)` (optionally with
//   `__launch_bounds__(...)` before NAME); arguments are scalars, pointers or POD structs by
//   value. The emulator finds them in the preprocessed source, so macros may generate them.
// - Dynamic shared memory: `ATTUNE_DYNAMIC_SHARED(T, name);` at function scope (under NVRTC
//   `extern __shared__ __align__(16) T name[]`; in the emulator a `T* const name`).
// - Static `__shared__ T x[N];` works as written, at function or file scope.
// - Warp collectives (__shfl*_sync, __ballot_sync, __any_sync, __all_sync, __syncwarp and the
//   tensor-core helpers) must be reached by every live lane of the warp (full masks).
// - `ATTUNE_EMU` is defined when compiled for the emulator.
//
// Helpers beyond CUDA's own names (inline PTX under NVRTC, sm_80+; emulated twins in emu/mma.h,
// whose header lists the PTX ISA fragment layouts):
//   mma_m16n8k16_f16f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
//   mma_m16n8k16_bf16f32(...same...)          d = a * b + c, f32 accumulate, warp-collective
//   ldmatrix_x1/_x2/_x4(unsigned* regs, const void* smem_row)      and the _trans variants
//   cp_async_16(void* smem, const void* gmem), cp_async_commit(), cp_async_wait<N>(),
//   cp_async_wait_all()
#pragma once
// Include guard as well: NVRTC gets each header under every name it is included by
// ("common.cuh", "../common.cuh"), and `#pragma once` there is per name.
#ifndef ATTUNE_COMMON_CUH
#define ATTUNE_COMMON_CUH

#ifdef __CUDACC_RTC__

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#ifndef ATTUNE_NO_STDINT_TYPEDEFS
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#endif

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif

#define ATTUNE_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]

// ---- Tensor-core and async-copy helpers (sm_80+). Each has an exact emulated twin in
// emu/mma.h, whose header comment lists the fragment layouts (PTX ISA). ----

// d = a * b + c for one 16x8x16 tile: a = 8 f16 of A (16x16, row major) in four registers,
// b = 4 f16 of B (16x8, "col": k-major per column) in two, c/d = 4 f32 of C/D (16x8).
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32; warp-collective.
__device__ __forceinline__ void mma_m16n8k16_f16f32(float d[4], const unsigned a[4], const unsigned b[2],
                                                    const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}

// The same with bf16 inputs: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32.
__device__ __forceinline__ void mma_m16n8k16_bf16f32(float d[4], const unsigned a[4], const unsigned b[2],
                                                     const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}

// ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: lanes 8m..8m+7 pass the (16-byte aligned)
// shared-memory address of rows 0..7 of matrix m; regs[m] receives this lane's two elements of
// matrix m. Warp-collective.
__device__ __forceinline__ unsigned attune_smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void ldmatrix_x1(unsigned* regs, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(regs[0]) : "r"(attune_smem_addr(row)) : "memory");
}
__device__ __forceinline__ void ldmatrix_x2(unsigned* regs, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(regs[0]), "=r"(regs[1]) : "r"(attune_smem_addr(row)) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(unsigned* regs, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3]) : "r"(attune_smem_addr(row)) : "memory");
}
__device__ __forceinline__ void ldmatrix_x1_trans(unsigned* regs, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(regs[0]) : "r"(attune_smem_addr(row)) : "memory");
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned* regs, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(regs[0]), "=r"(regs[1]) : "r"(attune_smem_addr(row)) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* regs, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3]) : "r"(attune_smem_addr(row)) : "memory");
}

// Asynchronous 16-byte copy global -> shared (both 16-byte aligned): cp.async.cg.shared.global.
// Copies issued since the last commit form a group; cp_async_wait<N>() waits until at most the
// N most recent committed groups are pending; cp_async_wait_all() commits and waits for all.
// Other threads see the data after the wait and a __syncthreads().
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(attune_smem_addr(smem)),
                 "l"(__cvta_generic_to_global(gmem))
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

#else

#include "emu/emu.h"

#endif

#endif  // ATTUNE_COMMON_CUH
