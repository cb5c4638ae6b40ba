// Attention forward on CUDA cores in plain f32 (no tensor cores, no TF32, no f16 arithmetic):
// the full-accuracy f32 path, and the path for f16/bf16 inputs on GPUs older than sm_80 (their
// elements are converted to f32 when loaded). Semantics: attn_common.cuh (docs/attention.md).
//
// Thread mapping (one block = WARPS warps, BM = WARPS * R query rows, key tiles of BN = 32 * KPL):
// - the block's q rows are converted to f32 into shared memory once; each K tile, then each V
//   tile, is loaded cooperatively (16-byte chunks when the tensor is 16-byte aligned) into one
//   shared f32 buffer, so K and V never need shared memory at the same time;
// - scores: warp w owns query rows w*R .. w*R+R-1; lane l owns keys l, l+32, ... of the tile and
//   forms R*KPL dot products with float4 reads (the q row reads are warp broadcasts, the K reads
//   hit 8 distinct 16-byte bank groups per quarter warp thanks to the padding or XOR swizzle);
// - online softmax per row: the tile maximum is a warp reduction, the running sum stays a
//   per-lane partial (every lane rescales by the same factor) reduced once at the end;
// - P (after dropout) goes through a per-warp shared buffer (or warp shuffles where shared
//   memory is short) and lane l accumulates output columns l, l+32, ... of its R rows, so the
//   accumulator is R * ceil(HD/32) registers (at most 16: no spills up to HD 256);
// - the output is normalised once at the end; lse = m + log(l) in natural log.
// Warps skip key tiles outside their rows' visible range (causal, window) and the block only
// walks the union of its rows' ranges.
//
// This file also serves fwd_split.cu, which includes it with FWD_SIMT_NO_ENTRY defined.
#include "attn_common.cuh"

#if HD % 8 != 0 || HD < 8 || HD > 256
#error "fwd_simt: HD must be a multiple of 8 in 8..256"
#endif

// Rows per warp, keys per lane and warps per block of the forward kernel; the host mirrors these
// in crates/attention/src/gpu/fwd_simt.rs (SimtConfig).
#define SIMT_R (HD <= 128 ? 4 : 2)
#define SIMT_KPL (HD <= 64 ? 2 : 1)
#define SIMT_WARPS 4
#define SIMT_SMEM_LIMIT 49152

template <int R_, int WARPS_, int KPL_>
struct SimtCfg {
    static constexpr int R = R_;
    static constexpr int WARPS = WARPS_;
    static constexpr int KPL = KPL_;
    static constexpr int BN = 32 * KPL;
    static constexpr int BM = R * WARPS;
    static constexpr int NT = 32 * WARPS;
    static constexpr int DPL = (HD + 31) / 32;  // output columns per lane
    static constexpr int CH = HD / 4;           // 4-element chunks per row
    // Heads that are multiples of 32 swizzle the 16-byte chunks of K/V rows (chunk c of row j is
    // stored at c ^ (j & 7)); others pad rows by 4 floats. Both keep the per-lane K row reads of
    // the score loop conflict-free, and the swizzle costs no space (HD 256 fits 48 KiB).
    static constexpr bool SWZ = HD % 32 == 0;
    static constexpr int KVS = SWZ ? HD : HD + 4;
    static constexpr int Q_FLOATS = BM * HD;
    static constexpr int KV_FLOATS = BN * KVS;
    static constexpr int P_FLOATS = WARPS * BN * R;
    static constexpr bool P_SMEM = 4 * (Q_FLOATS + KV_FLOATS + P_FLOATS) <= SIMT_SMEM_LIMIT;
    static constexpr int SMEM_FLOATS = Q_FLOATS + KV_FLOATS + (P_SMEM ? P_FLOATS : 0);
    static_assert(4 * SMEM_FLOATS <= SIMT_SMEM_LIMIT, "fwd_simt: shared memory over 48 KiB");
};

// Index of element d of K/V row j in the shared tile.
template <class C>
__device__ __forceinline__ int kv_at(int j, int d) {
    if (C::SWZ) return j * C::KVS + ((((d >> 2) ^ (j & 7)) << 2) | (d & 3));
    return j * C::KVS + d;
}

// Whether every row of a tensor starts 16-byte aligned (base and all strides).
__device__ __forceinline__ bool rows_aligned16(const void* base, long long sb, long long sh, long long sr) {
    const long long es = (long long)sizeof(attn_t);
    return ((unsigned long long)base % 16ull) == 0 && (sb * es) % 16 == 0 && (sh * es) % 16 == 0 && (sr * es) % 16 == 0;
}

// Four consecutive elements as f32: one 16-byte (f32) or two 4-byte (f16/bf16) loads when
// aligned, else four scalar loads.
__device__ __forceinline__ float4 load4(const attn_t* src, bool vec) {
#if ATTN_DTYPE == 0
    if (vec) return *reinterpret_cast<const float4*>(src);
#elif ATTN_DTYPE == 1
    if (vec) {
        const __half2* h = reinterpret_cast<const __half2*>(src);
        const float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
        return make_float4(a.x, a.y, b.x, b.y);
    }
#else
    if (vec) {
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(src);
        const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
        return make_float4(a.x, a.y, b.x, b.y);
    }
#endif
    return make_float4(load_f32(src), load_f32(src + 1), load_f32(src + 2), load_f32(src + 3));
}

// Loads `rows` rows (row r at base + r * stride, zeros for r >= valid) into shared f32 rows of
// `ld` floats, swizzled like K/V when `kv`.
template <class C, bool KV>
__device__ __forceinline__ void load_rows(float* dst, const attn_t* base, long long stride, int rows, int valid, bool vec) {
    for (int c = threadIdx.x; c < rows * C::CH; c += C::NT) {
        const int r = c / C::CH, d = (c % C::CH) * 4;
        const float4 x = r < valid ? load4(base + r * stride + d, vec) : make_float4(0.f, 0.f, 0.f, 0.f);
        float* at = KV ? dst + kv_at<C>(r, d) : dst + r * HD + d;
        *reinterpret_cast<float4*>(at) = x;
    }
}

// a / b for a >= 0, b > 0 without the integer-divide subroutine (a call whose register saves
// ptxas reports as spills): the f32 quotient is within a few units, then corrected exactly.
__device__ __forceinline__ int div_nonneg(int a, int b) {
    int q = (int)__fdividef((float)a, (float)b);
    while ((long long)q * b > a) --q;
    while ((long long)(q + 1) * b <= a) ++q;
    return q;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Where a block's results go: the normalised output rows and their lse.
//   SPLIT false: out (attn_t, contiguous like q) and lse.
//   SPLIT true: f32 partial_out / partial_lse of split `split`.
// One block: query rows i0 .. i0 + BM - 1 of segment `seg` (local indices; rows >= q_len are
// idle) and query head h, against local keys kbeg .. kend - 1 (a block-uniform range that
// covers, or for split-KV bounds, the rows' visible keys).
template <class C, bool SPLIT>
__device__ void simt_attend(const AttnParams& p, const Segment& seg, int h, int i0, int kbeg, int kend, int split) {
    ATTUNE_DYNAMIC_SHARED(float, smem);
    float* const qs = smem;
    float* const kvs = smem + C::Q_FLOATS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int hk = div_nonneg(h, div_nonneg(p.heads_q, p.heads_kv));  // GQA/MQA kv head
    const int b = seg.batch;
    const float NEG_INF = -INFINITY;

    // The block's q rows, in f32.
    {
        const attn_t* qb = static_cast<const attn_t*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride +
                           (long long)(seg.q_start + i0) * p.q_row_stride;
        const bool vec = rows_aligned16(p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
        const int valid = seg.q_len - i0 < C::BM ? seg.q_len - i0 : C::BM;
        load_rows<C, false>(qs, qb, p.q_row_stride, C::BM, valid, vec);
    }
    const attn_t* kb = static_cast<const attn_t*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride +
                       (long long)seg.k_start * p.k_row_stride;
    const attn_t* vb = static_cast<const attn_t*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride +
                       (long long)seg.k_start * p.v_row_stride;
    const bool kvec = rows_aligned16(p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
    const bool vvec = rows_aligned16(p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride);

    // This warp's rows: visible ranges (empty for idle rows) and the warp's union of them.
    const int r0 = i0 + warp * C::R;  // first local row of the warp
    int lo[C::R], hi[C::R];
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        lo[r] = 0;
        hi[r] = 0;
        if (r0 + r < seg.q_len) key_range(p, seg, r0 + r, &lo[r], &hi[r]);
    }
    int wlo = 0x7fffffff, whi = 0;
#pragma unroll
    for (int r = 0; r < C::R; ++r)
        if (lo[r] < hi[r]) {
            wlo = lo[r] < wlo ? lo[r] : wlo;
            whi = hi[r] > whi ? hi[r] : whi;
        }

    float m[C::R], l[C::R], acc[C::R][C::DPL];
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        m[r] = NEG_INF;
        l[r] = 0.f;
#pragma unroll
        for (int t = 0; t < C::DPL; ++t) acc[r][t] = 0.f;
    }
    float* const ps = smem + C::Q_FLOATS + C::KV_FLOATS + warp * C::BN * C::R;  // P_SMEM only

    for (int n0 = kbeg; n0 < kend; n0 += C::BN) {
        const int nvalid = kend - n0 < C::BN ? kend - n0 : C::BN;
        const bool active = wlo < whi && n0 < whi && n0 + nvalid > wlo;  // warp-uniform
        __syncthreads();  // the previous V tile (and, first time, nothing) is no longer read
        load_rows<C, true>(kvs, kb + (long long)n0 * p.k_row_stride, p.k_row_stride, C::BN, nvalid, kvec);
        __syncthreads();
        float pv[C::R][C::KPL];  // probabilities after dropout (P_SMEM: written to ps instead)
        if (active) {
            float s[C::R][C::KPL];
#pragma unroll
            for (int r = 0; r < C::R; ++r)
#pragma unroll
                for (int kk = 0; kk < C::KPL; ++kk) s[r][kk] = 0.f;
#pragma unroll 2
            for (int c = 0; c < C::CH; ++c) {
                float4 kv[C::KPL];
#pragma unroll
                for (int kk = 0; kk < C::KPL; ++kk)
                    kv[kk] = *reinterpret_cast<const float4*>(kvs + kv_at<C>(kk * 32 + lane, c * 4));
#pragma unroll
                for (int r = 0; r < C::R; ++r) {
                    const float4 qv = *reinterpret_cast<const float4*>(qs + (warp * C::R + r) * HD + c * 4);
#pragma unroll
                    for (int kk = 0; kk < C::KPL; ++kk) {
                        s[r][kk] = fmaf(qv.x, kv[kk].x, s[r][kk]);
                        s[r][kk] = fmaf(qv.y, kv[kk].y, s[r][kk]);
                        s[r][kk] = fmaf(qv.z, kv[kk].z, s[r][kk]);
                        s[r][kk] = fmaf(qv.w, kv[kk].w, s[r][kk]);
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < C::R; ++r) {
                float tmax = NEG_INF;
#pragma unroll
                for (int kk = 0; kk < C::KPL; ++kk) {
                    const int j = n0 + kk * 32 + lane;
                    const bool vis = kk * 32 + lane < nvalid && j >= lo[r] && j < hi[r];
                    s[r][kk] = vis ? attn_score(p, s[r][kk]) : NEG_INF;
                    tmax = fmaxf(tmax, s[r][kk]);
                }
                tmax = warp_max(tmax);
                const float mnew = fmaxf(m[r], tmax);
                // No visible key so far: nothing to add (and no -inf - -inf).
                const float alpha = mnew == NEG_INF ? 1.f : exp2f((m[r] - mnew) * ATTN_LOG2E);
                float psum = 0.f;
#pragma unroll
                for (int kk = 0; kk < C::KPL; ++kk) {
                    float e = 0.f;
                    if (s[r][kk] != NEG_INF) {
                        e = exp2f((s[r][kk] - mnew) * ATTN_LOG2E);
                        psum += e;
                        e *= dropout_mult(p, b, h, seg.q_start + r0 + r, seg.k_start + n0 + kk * 32 + lane);
                    }
                    pv[r][kk] = e;
                }
                m[r] = mnew;
                l[r] = l[r] * alpha + psum;
#pragma unroll
                for (int t = 0; t < C::DPL; ++t) acc[r][t] *= alpha;
            }
            if (C::P_SMEM) {
#pragma unroll
                for (int kk = 0; kk < C::KPL; ++kk)
#pragma unroll
                    for (int r = 0; r < C::R; ++r) ps[(kk * 32 + lane) * C::R + r] = pv[r][kk];
            }
        }
        __syncthreads();  // K is no longer read
        load_rows<C, true>(kvs, vb + (long long)n0 * p.v_row_stride, p.v_row_stride, C::BN, nvalid, vvec);
        __syncthreads();  // V (and this warp's P) visible
        if (active) {
            const int jend = nvalid < whi - n0 ? nvalid : whi - n0;  // keys past whi have p = 0
            for (int j = 0; j < jend; ++j) {
                float pr[C::R];
#pragma unroll
                for (int r = 0; r < C::R; ++r) {
                    if (C::P_SMEM) {
                        pr[r] = ps[j * C::R + r];
                    } else {
#pragma unroll
                        for (int kk = 0; kk < C::KPL; ++kk)
                            if (kk == j / 32) pr[r] = __shfl_sync(0xffffffffu, pv[r][kk], j % 32);
                    }
                }
#pragma unroll
                for (int t = 0; t < C::DPL; ++t) {
                    const int d = lane + 32 * t;
                    if (HD % 32 == 0 || d < HD) {
                        const float x = kvs[kv_at<C>(j, d)];
#pragma unroll
                        for (int r = 0; r < C::R; ++r) acc[r][t] = fmaf(pr[r], x, acc[r][t]);
                    }
                }
            }
        }
    }

    // Normalise once and write this warp's rows.
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        const float lsum = warp_sum(l[r]);
        const int i = r0 + r;
        if (i >= seg.q_len) continue;
        const bool any = lsum > 0.f;  // the row's maximum contributes exp(0) = 1
        // 1 / lsum without an IEEE divide (whose slow-path call costs spills): the approximate
        // reciprocal and one Newton step, within 1 ulp for lsum >= 1.
        float inv = 0.f;
        if (any) {
            inv = __fdividef(1.f, lsum);
            inv = fmaf(inv, fmaf(-lsum, inv, 1.f), inv);
        }
        const float lse = any ? m[r] + logf(lsum) : NEG_INF;
        const long long row = ((long long)b * p.heads_q + h) * p.seq_q + seg.q_start + i;
        if (SPLIT) {
            const long long rows = (long long)p.batch * p.heads_q * p.seq_q;
            float* o = p.partial_out + ((long long)split * rows + row) * HD;
#pragma unroll
            for (int t = 0; t < C::DPL; ++t) {
                const int d = lane + 32 * t;
                if (HD % 32 == 0 || d < HD) o[d] = acc[r][t] * inv;
            }
            if (lane == 0) p.partial_lse[(long long)split * rows + row] = lse;
        } else {
            attn_t* o = static_cast<attn_t*>(p.out) + row * HD;
#pragma unroll
            for (int t = 0; t < C::DPL; ++t) {
                const int d = lane + 32 * t;
                if (HD % 32 == 0 || d < HD) store_f32(o + d, acc[r][t] * inv);
            }
            if (ATTN_DTYPE != 0 && p.out_f32 != nullptr) {
                float* f = p.out_f32 + row * HD;
#pragma unroll
                for (int t = 0; t < C::DPL; ++t) {
                    const int d = lane + 32 * t;
                    if (HD % 32 == 0 || d < HD) f[d] = acc[r][t] * inv;
                }
            }
            if (lane == 0) p.lse[row] = lse;
        }
    }
}

#ifndef FWD_SIMT_NO_ENTRY
typedef SimtCfg<SIMT_R, SIMT_WARPS, SIMT_KPL> FwdCfg;

// Grid (ceil(max_q_len / BM), heads_q, num_segments), block 32 * SIMT_WARPS threads, dynamic
// shared memory 4 * FwdCfg::SMEM_FLOATS bytes. No __launch_bounds__: with .maxntid ptxas picks
// a register budget for occupancy and spills a few words to meet it (seen on sm_80 and sm_90);
// without it the kernels need 64..~140 registers and spill nothing.
extern "C" __global__ void attn_fwd_simt(const AttnParams p) {
    const Segment seg = load_segment(p, blockIdx.z);
    const int i0 = blockIdx.x * FwdCfg::BM;
    if (i0 >= seg.q_len) return;
    const int last = (i0 + FwdCfg::BM < seg.q_len ? i0 + FwdCfg::BM : seg.q_len) - 1;
    int kbeg, kend, lo_last;
    key_range(p, seg, i0, &kbeg, &lo_last);
    key_range(p, seg, last, &lo_last, &kend);
    simt_attend<FwdCfg, false>(p, seg, blockIdx.y, i0, kbeg, kend, 0);
}
#endif
