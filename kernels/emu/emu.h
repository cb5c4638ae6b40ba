// attune CUDA emulator: what kernels/common.cuh includes when not compiled by NVRTC.
//
// Provides the CUDA language surface the kernels use (qualifiers, thread indices, shared memory,
// barriers, warp collectives, atomics, math, 16-bit floats) for the host C++ compiler. The
// whole kernel file plus a generated trailer is one translation unit, compiled into a shared
// library that the Rust side (crates/cuda/src/emu) loads and runs block by block.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define ATTUNE_EMU 1

#include "types.h"
#include "runtime.h"
#include "half.h"
#include "fmath.h"
#include "warp.h"
#include "atomics.h"
#include "launch.h"

// Qualifiers. `__global__` stays a token while the Rust side scans the preprocessed source for
// entry points (ATTUNE_EMU_SCAN), and is nothing when compiling.
#ifndef ATTUNE_EMU_SCAN
#define __global__
#endif
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

// Static shared memory: one OS thread runs one block's fibers at a time, so a thread-local
// static is exactly "one copy per block in flight". Under the sanitizer blocks run one at a
// time and plain statics let ASan put redzones around each array.
#if ATTUNE_EMU_SANITIZE
#define __shared__ static
#else
#define __shared__ static thread_local
#endif

// Dynamic shared memory (`extern __shared__ T name[]` under NVRTC), at function scope.
#define ATTUNE_DYNAMIC_SHARED(T, name) T* const name = reinterpret_cast<T*>(::attune_emu::g_block->dyn_smem)

// Per-fiber built-ins.
#define threadIdx (::attune_emu::g_fiber->tid)
#define blockIdx (::attune_emu::g_block->bid)
#define blockDim (::attune_emu::g_block->bdim)
#define gridDim (::attune_emu::g_block->gdim)
static constexpr int warpSize = 32;

// __trap() and assert() fail the launch with a message instead of aborting the process.
#define __trap() ::attune_emu::fail("__trap() called (%s:%d)", __FILE__, __LINE__)
#undef assert
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
#define assert(e) ((e) ? (void)0 : ::attune_emu::fail("assertion `%s` failed (%s:%d)", #e, __FILE__, __LINE__))
#endif

static inline long long clock64() {
#if defined(__x86_64__)
    return (long long)__builtin_ia32_rdtsc();
#else
    return 0;
#endif
}
