// The one header every kernel includes (GUIDE.md section 5). Kernel files compile unchanged
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
#pragma once

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

#else

#include "emu/emu.h"

#endif
