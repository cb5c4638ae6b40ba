// Tensor-core helpers shared by the f16/bf16 attention kernels (fwd_mma.cu, bwd_mma.cu): the
// m16n8k16 product of the kernel dtype, packing two f32 into one A-fragment register, and the
// cp.async row loader. Fragment layouts: docs/kernels.md, "Fragment layouts" (PTX ISA).
#pragma once
#include "attn_common.cuh"

#if ATTN_DTYPE != 1 && ATTN_DTYPE != 2
#error "the tensor-core kernels take f16 (ATTN_DTYPE=1) or bf16 (ATTN_DTYPE=2) inputs"
#endif

// d += a b for one m16n8k16 tile in the kernel dtype, f32 accumulate.
__device__ __forceinline__ void mma16816(float d[4], const unsigned a[4], const unsigned b[2]) {
#if ATTN_DTYPE == 1
    mma_m16n8k16_f16f32(d, a, b, d);
#else
    mma_m16n8k16_bf16f32(d, a, b, d);
#endif
}

// Two f32 rounded to the kernel dtype in one register, the lower-indexed element in the low half.
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
#if ATTN_DTYPE == 1
    return (unsigned)__half_as_ushort(__float2half_rn(lo)) | ((unsigned)__half_as_ushort(__float2half_rn(hi)) << 16);
#else
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
#endif
}

// Copies rows 0..rows-1 (HD elements, global row stride `stride`) of `g` into `s` (row stride
// LD elements) with NTHREADS threads: rows < valid by cp.async, the others zero-filled with
// plain stores (they lie past the segment, where `g` has no data for us). The caller commits.
template <int NTHREADS, int LD>
__device__ __forceinline__ void load_rows(attn_t* s, const attn_t* g, long long stride, int rows, int valid) {
    constexpr int CPR = HD / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < rows * CPR; c += NTHREADS) {
        const int r = c / CPR, col = (c % CPR) * 8;
        attn_t* dst = s + r * LD + col;
        if (r < valid)
            cp_async_16(dst, g + r * stride + col);
        else
            *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
}

// The dropout keep bits of a lane's `count` elements (bit n % 32 of word n / 32 is element n,
// at global (query row, key row) `at(n, &gi, &gj)`), from a rolled loop: Philox is ~40
// instructions, and unrolled over every element it would crowd out the accumulators.
template <int WORDS, class At>
__device__ __forceinline__ void dropout_keep_bits(unsigned (&keep)[WORDS], int count, const AttnParams& p, int batch,
                                                  int h, At at) {
#pragma unroll
    for (int w = 0; w < WORDS; ++w) {
        unsigned bits = 0u;
        const int n_w = min(32, count - 32 * w);
#pragma unroll 1
        for (int n = 0; n < n_w; ++n) {
            int gi, gj;
            at(32 * w + n, &gi, &gj);
            bits |= (dropout_mult(p, batch, h, gi, gj) != 0.f ? 1u : 0u) << n;
        }
        keep[w] = bits;
    }
}
