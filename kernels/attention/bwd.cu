// Attention backward, FlashAttention-2 scheme, SIMT with f32 arithmetic for f32/f16/bf16 inputs.
// For f16/bf16 on sm_80+ with aligned rows and HD <= 128 the host runs bwd_mma.cu's tensor-core
// dK/dV kernel in place of attn_bwd_dkdv (the other entries here serve both). Semantics:
// attn_common.cuh and docs/attention.md.
//
// With P recomputed from lse (P = exp(s - lse)), mult the dropout multiplier (0, 1/(1-p) or 1),
// D = rowsum(dO * O) and s'(dot) the derivative of the score (attn_score_grad: softcap aware):
//   dV = (P * mult)^T dO,   dP = (dO V^T) * mult,   dS = P * (dP - D) * s'(dot),
//   dQ = dS K,              dK = dS^T Q.
// Rows with no visible key (lse = -inf) get zero gradients; a kv head's dK/dV sum over the query
// heads of its GQA group.
//
// Entries (one module per dtype, HD and tile set; the host, crates/attention/src/gpu/bwd.rs,
// picks the tiles and launches them in this order):
// - attn_bwd_dot: delta[row] = sum_d dout * out for every (batch, head, query) row; one warp a
//   row, any block size that is a multiple of 32, grid-stride. It reads out_f32 when set: the
//   forward's unrounded f16/bf16 output, so that delta matches sum_j P dP (an exact zero dS on
//   rows with one visible key, for instance) instead of carrying the output's rounding.
// - attn_bwd_dkdv: grid (ceil(max_k_len / BN), heads_kv, num_segments), BWD_NT threads. A block
//   owns BN keys of one kv head: K and V in shared memory, dK and dV in registers. It walks the
//   query heads of the group and the query tiles that can see its keys (causal and window
//   bounds), writes dK and dV in the dtype, and, when p.dq_accum is set (non-deterministic
//   mode), adds dS K into it (f32, zeroed by the host) with atomicAdd.
// - attn_bwd_dq: the deterministic dQ, grid (ceil(max_q_len / BM), heads_q, num_segments): a
//   block owns BM query rows, walks the visible key tiles in order and writes dq in the dtype.
//   No atomics, so two runs give bitwise-equal results.
// - attn_bwd_dq_convert: dq = dq_accum in the dtype (atomic mode; grid-stride).
//
// Tiles (defines BWD_BM, BWD_BN, BWD_NT, BWD_TC) and dynamic shared memory, in f32 words:
//   Q, dO: BM x (HD + 4) each; K, V: BN x (HD + 4) each; P, dS: BN x (BM + 1) each; then lse,
//   delta, lo, hi: BM each. Total 4 * (2 (BM + BN)(HD + 4) + 2 BN (BM + 1) + 4 BM) bytes.
// Both tile kernels declare __launch_bounds__(BWD_NT, 1): with a bare .maxntid ptxas spills a
// few bytes to reach a higher-occupancy register target (64, 80 or 128 registers, measured with
// ptxas 12.9 on sm_80/sm_90); one block per SM lets it keep every value in registers (<= 255).
// Rows are padded so that the float4 reads of the score phase (8 consecutive rows in a
// quarter-warp) and the column reads of the accumulation phases hit distinct banks.
//
// Summation order. A kv head's dK/dV sum group * seq_q terms (768 for 3 query heads of 256
// rows), dQ sums seq_k terms, and every score and dP is a head_dim-term dot product. One f32
// accumulator taking terms one by one rounds each partial sum, an error that grows like
// sqrt(terms) ulps of the result: 5 to 12 times the naive f32 implementation's (which rounds
// each exact product once) on unit-normal inputs with head_dim 112 and 3 query heads per kv
// head (issue 13). So every such sum is a pair of f32 (struct Acc): the FMAs of at most FLUSH
// consecutive terms (8 query rows, keys or head_dim columns) go into `lo`, which Knuth's
// TwoSum then folds into the running `hi` exactly, leaving the rounding error in `lo`. Only
// runs of 8 terms round; the error no longer grows with the sequence length or the group.
// The score phase uses the pair past the sum too: s - lse and dP - D are formed with FMAs
// from hi and lo instead of from the dot rounded to f32 (half an ulp of |dot| ~ 10..40).
// The folds (six adds every 8 FMAs) hide behind the shared-memory loads the accumulation
// and score phases are bound by; they cost a second register per accumulated element.
#include "attn_common.cuh"

#if !defined(BWD_BM) || !defined(BWD_BN) || !defined(BWD_NT) || !defined(BWD_TC)
#error "bwd.cu needs the tile defines BWD_BM, BWD_BN, BWD_NT, BWD_TC (see crates/attention/src/gpu/bwd.rs)"
#endif

// Register arrays are indexed by loop counters: the loops must be unrolled on the GPU (the
// host compiler of the emulator needs no hint).
// The loops over tile rows and head_dim steps are unrolled only twice (code size and register
// pressure; fully unrolled, ptxas hoists their shared-memory loads).
#ifdef ATTUNE_EMU
#define BWD_UNROLL
#define BWD_UNROLL2
#else
#define BWD_UNROLL _Pragma("unroll")
#define BWD_UNROLL2 _Pragma("unroll 2")
#endif

namespace bwd {
constexpr int BM = BWD_BM;              // query rows of a tile
constexpr int BN = BWD_BN;              // key rows of a tile
constexpr int NT = BWD_NT;              // threads of the dkdv and dq blocks
constexpr int TC = BWD_TC;              // threads along head_dim in the accumulation phases
constexpr int TR = NT / TC;             // threads along rows in the accumulation phases
constexpr int CN = (HD + TC - 1) / TC;  // head_dim columns per thread (tx + TC * j, j < CN)
constexpr int RK = BN / TR;             // key rows per thread of dK/dV
constexpr int RQ = BM / TR;             // query rows per thread of dQ
constexpr int SC = BM < 16 ? BM : 16;   // threads along queries in the score phase
constexpr int SR = NT / SC;             // threads along keys in the score phase
constexpr int SN = BN / SR;             // keys per thread of the score tile
constexpr int SM = BM / SC;             // queries per thread of the score tile
constexpr int LD = HD + 4;              // row stride of Q, dO, K, V in shared memory
constexpr int LDP = BM + 1;             // row stride of the (key x query) P and dS tiles
constexpr bool FULL_COLS = HD % TC == 0;
constexpr int FLUSH = 8;                // terms of a run summed in Acc::lo (see "Summation order")

static_assert(HD % 8 == 0 && HD >= 8 && HD <= 256, "HD must be a multiple of 8 in 8..256");
static_assert(NT % 32 == 0 && NT % TC == 0 && TC % 8 == 0 && TC <= 32, "TC must divide NT");
static_assert(BN % TR == 0 && BM % TR == 0, "BN and BM must be multiples of NT / TC");
static_assert(NT % SC == 0 && BM % SC == 0 && BN % SR == 0 && SN >= 1, "score tile split");

// Offsets (f32 words) of the shared-memory regions; float4 regions first (16-byte aligned).
constexpr int OFF_Q = 0;
constexpr int OFF_DO = OFF_Q + BM * LD;
constexpr int OFF_K = OFF_DO + BM * LD;
constexpr int OFF_V = OFF_K + BN * LD;
constexpr int OFF_P = OFF_V + BN * LD;
constexpr int OFF_DS = OFF_P + BN * LDP;
constexpr int OFF_LSE = OFF_DS + BN * LDP;
constexpr int OFF_DELTA = OFF_LSE + BM;
constexpr int OFF_LO = OFF_DELTA + BM;
constexpr int OFF_HI = OFF_LO + BM;
constexpr int SMEM_WORDS = OFF_HI + BM;

struct Smem {
    float* q;
    float* dout;
    float* k;
    float* v;
    float* p;
    float* ds;
    float* lse;
    float* delta;
    int* lo;
    int* hi;
};

__device__ __forceinline__ Smem carve(float* base) {
    Smem s;
    s.q = base + OFF_Q;
    s.dout = base + OFF_DO;
    s.k = base + OFF_K;
    s.v = base + OFF_V;
    s.p = base + OFF_P;
    s.ds = base + OFF_DS;
    s.lse = base + OFF_LSE;
    s.delta = base + OFF_DELTA;
    s.lo = reinterpret_cast<int*>(base + OFF_LO);
    s.hi = reinterpret_cast<int*>(base + OFF_HI);
    return s;
}

// R x CN gradient elements of one thread, each the unevaluated sum hi + lo (see "Summation
// order"): terms go into lo, fold() moves lo into hi without rounding anything away.
template <int R, int C = CN>
struct Acc {
    float hi[R][C], lo[R][C];

    __device__ __forceinline__ void zero() {
        BWD_UNROLL
        for (int i = 0; i < R; ++i) {
            BWD_UNROLL
            for (int j = 0; j < C; ++j) hi[i][j] = lo[i][j] = 0.f;
        }
    }

    // hi + lo = s + e exactly with s = fl(hi + lo) (TwoSum: right for any magnitudes, and
    // adds only, so FMA contraction cannot touch it).
    __device__ __forceinline__ void fold() {
        BWD_UNROLL
        for (int i = 0; i < R; ++i) {
            BWD_UNROLL
            for (int j = 0; j < C; ++j) {
                const float a = hi[i][j], b = lo[i][j];
                const float s = a + b, bb = s - a;
                lo[i][j] = (a - (s - bb)) + (b - bb);
                hi[i][j] = s;
            }
        }
    }

    __device__ __forceinline__ float value(int i, int j) const { return hi[i][j] + lo[i][j]; }
};

// Rows 0..BR-1 of a (rows, HD) matrix at `src` (row stride `stride`, unit column stride) into
// shared memory as f32, rows at or past `nrows` zero (they meet zero P and dS, and 0 * NaN from
// never-written memory would not be zero).
template <int BR>
__device__ __forceinline__ void load_tile(float* dst, const attn_t* src, long long stride, int nrows) {
    for (int idx = threadIdx.x; idx < BR * HD; idx += NT) {
        const int r = idx / HD, c = idx - r * HD;
        dst[r * LD + c] = r < nrows ? load_f32(src + r * stride + c) : 0.f;
    }
}

// Q, dO and the per-row lse, delta and visible key range of local query rows m0..m0+BM-1 of
// head h. Rows past the segment or with lse = -inf (no visible key) get an empty range.
__device__ __forceinline__ void load_queries(const AttnParams& p, const Segment& seg, int h, int m0, const Smem& s) {
    const int mrows = min(BM, seg.q_len - m0);
    const long long gi = seg.q_start + m0;
    const attn_t* q = (const attn_t*)p.q + seg.batch * p.q_batch_stride + h * p.q_head_stride + gi * p.q_row_stride;
    const attn_t* g = (const attn_t*)p.dout + seg.batch * p.dout_batch_stride + h * p.dout_head_stride +
                      gi * p.dout_row_stride;
    load_tile<BM>(s.q, q, p.q_row_stride, mrows);
    load_tile<BM>(s.dout, g, p.dout_row_stride, mrows);
    load_query_stats(p, seg, h, m0, BM, mrows, NT, s.lse, s.delta, s.lo, s.hi);
}

// K and V rows n0..n0+BN-1 of kv head hk (local key indices), zero past `nrows`.
__device__ __forceinline__ void load_keys(const AttnParams& p, const Segment& seg, int hk, int n0, int nrows,
                                          const Smem& s) {
    const long long gj = seg.k_start + n0;
    const attn_t* k = (const attn_t*)p.k + seg.batch * p.k_batch_stride + hk * p.k_head_stride + gj * p.k_row_stride;
    const attn_t* v = (const attn_t*)p.v + seg.batch * p.v_batch_stride + hk * p.v_head_stride + gj * p.v_row_stride;
    load_tile<BN>(s.k, k, p.k_row_stride, nrows);
    load_tile<BN>(s.v, v, p.v_row_stride, nrows);
}

// The score phase for the query tile at m0 (head h) and the key tile at n0 in shared memory:
// s.ds[n][m] = dS and, with WITH_P, s.p[n][m] = P * mult (what dV needs); zero where masked.
// Thread (sy, sx) owns keys sy + SR * a and queries sx + SC * b.
template <bool WITH_P>
__device__ __forceinline__ void score_tile(const AttnParams& p, const Segment& seg, int h, int m0, int n0,
                                           const Smem& s) {
    const int sx = threadIdx.x % SC, sy = threadIdx.x / SC;
    Acc<SN, SM> sc, dp;
    sc.zero();
    dp.zero();
    // S^T = K Q^T and dP'^T = V dO^T, 4 columns of head_dim at a time, folded every FLUSH.
    BWD_UNROLL2
    for (int d = 0; d < HD; d += 4) {
        float4 kk[SN], vv[SN];
        BWD_UNROLL
        for (int a = 0; a < SN; ++a) {
            kk[a] = *reinterpret_cast<const float4*>(s.k + (sy + SR * a) * LD + d);
            vv[a] = *reinterpret_cast<const float4*>(s.v + (sy + SR * a) * LD + d);
        }
        BWD_UNROLL
        for (int b = 0; b < SM; ++b) {
            const float4 qq = *reinterpret_cast<const float4*>(s.q + (sx + SC * b) * LD + d);
            const float4 gg = *reinterpret_cast<const float4*>(s.dout + (sx + SC * b) * LD + d);
            BWD_UNROLL
            for (int a = 0; a < SN; ++a) {
                sc.lo[a][b] += kk[a].x * qq.x + kk[a].y * qq.y + kk[a].z * qq.z + kk[a].w * qq.w;
                dp.lo[a][b] += vv[a].x * gg.x + vv[a].y * gg.y + vv[a].z * gg.z + vv[a].w * gg.w;
            }
        }
        if ((d + 4) % FLUSH == 0) {
            sc.fold();
            dp.fold();
        }
    }
    BWD_UNROLL
    for (int a = 0; a < SN; ++a) {
        BWD_UNROLL
        for (int b = 0; b < SM; ++b) {
            const int n = sy + SR * a, m = sx + SC * b;
            const int j = n0 + n;
            float pd = 0.f, ds = 0.f;
            if (j >= s.lo[m] && j < s.hi[m]) {
                // The dot products stay hi + lo until here: without a softcap, s - lse is
                // scale * hi - (lse - scale * lo) in two FMA roundings (rounding the dot to
                // f32 first would add half an ulp of |dot| ~ 10..40 times scale to every s).
                const float score = attn_score(p, sc.value(a, b));
                const float arg = p.softcap > 0.f ? score - s.lse[m]
                                                  : fmaf(sc.hi[a][b], p.scale, -fmaf(sc.lo[a][b], -p.scale, s.lse[m]));
                const float pr = expf(arg);
                const float mult = dropout_mult(p, seg.batch, h, seg.q_start + m0 + m, seg.k_start + j);
                pd = pr * mult;
                // dP - D as (hi * mult - D) + lo * mult: the difference of the rounded hi first.
                const float dpd = fmaf(dp.lo[a][b], mult, fmaf(dp.hi[a][b], mult, -s.delta[m]));
                ds = pr * dpd * attn_score_grad(p, score);
            }
            if (WITH_P) s.p[n * LDP + m] = pd;
            s.ds[n * LDP + m] = ds;
        }
    }
}

// Column j of this thread in the accumulation phases, and whether it exists.
__device__ __forceinline__ bool col_ok(int c) { return FULL_COLS || c < HD; }

// dQ += dS K over the tile's first `nrows` keys, for this thread's query rows ty + TR * i and
// columns tx + TC * j (both the atomic mode of attn_bwd_dkdv and attn_bwd_dq), FLUSH keys a run.
__device__ __forceinline__ void accumulate_dq(const Smem& s, int nrows, int tx, int ty, Acc<RQ>& dq) {
    for (int r0 = 0; r0 < nrows; r0 += FLUSH) {
        const int rend = min(r0 + FLUSH, nrows);
        BWD_UNROLL2
        for (int n = r0; n < rend; ++n) {
            float kv[CN];
            BWD_UNROLL
            for (int j = 0; j < CN; ++j) kv[j] = col_ok(tx + TC * j) ? s.k[n * LD + tx + TC * j] : 0.f;
            BWD_UNROLL
            for (int i = 0; i < RQ; ++i) {
                const float dsv = s.ds[n * LDP + ty + TR * i];
                BWD_UNROLL
                for (int j = 0; j < CN; ++j) dq.lo[i][j] += dsv * kv[j];
            }
        }
        dq.fold();
    }
}
}  // namespace bwd

using namespace bwd;

extern "C" __global__ void attn_bwd_dot(const AttnParams p) {
    const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
    const long long rows = (long long)p.batch * p.heads_q * p.seq_q;
    for (long long row = (long long)blockIdx.x * warps + threadIdx.x / 32; row < rows;
         row += (long long)gridDim.x * warps) {
        const long long i = row % p.seq_q, bh = row / p.seq_q;
        const long long h = bh % p.heads_q, b = bh / p.heads_q;
        const attn_t* g =
            (const attn_t*)p.dout + b * p.dout_batch_stride + h * p.dout_head_stride + i * p.dout_row_stride;
        float acc = 0.f;
        if (p.out_f32 != nullptr) {
            const float* o = p.out_f32 + row * HD;
            for (int c = lane; c < HD; c += 32) acc += o[c] * load_f32(g + c);
        } else {
            const attn_t* o = (const attn_t*)p.out + row * HD;
            for (int c = lane; c < HD; c += 32) acc += load_f32(o + c) * load_f32(g + c);
        }
        for (int w = 16; w > 0; w /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, w);
        if (lane == 0) p.delta[row] = acc;
    }
}

extern "C" __global__ void __launch_bounds__(BWD_NT, 1) attn_bwd_dkdv(const AttnParams p) {
    const Segment seg = load_segment(p, blockIdx.z);
    const int n0 = blockIdx.x * BN;
    if (n0 >= seg.k_len) return;
    const int hk = blockIdx.y, group = p.heads_q / p.heads_kv;
    const int nrows = min(BN, seg.k_len - n0);
    ATTUNE_DYNAMIC_SHARED(float, smem);
    const Smem s = carve(smem);
    load_keys(p, seg, hk, n0, nrows, s);

    const int tid = threadIdx.x, tx = tid % TC, ty = tid / TC;
    Acc<RK> dk, dv;
    dk.zero();
    dv.zero();
    int qlo, qhi;
    query_span(p, seg, n0, n0 + nrows, &qlo, &qhi);
    for (int g = 0; g < group; ++g) {
        const int h = hk * group + g;
        for (int m0 = qlo; m0 < qhi; m0 += BM) {
            __syncthreads();  // the previous tile's readers are done with Q, dO, P and dS
            load_queries(p, seg, h, m0, s);
            __syncthreads();
            score_tile<true>(p, seg, h, m0, n0, s);
            __syncthreads();
            // dV += (P * mult)^T dO, dK += dS^T Q over the tile's query rows, FLUSH rows a run.
            const int mrows = min(BM, seg.q_len - m0);
            for (int r0 = 0; r0 < mrows; r0 += FLUSH) {
                const int rend = min(r0 + FLUSH, mrows);
                BWD_UNROLL2
                for (int m = r0; m < rend; ++m) {
                    float qv[CN], gv[CN];
                    BWD_UNROLL
                    for (int j = 0; j < CN; ++j) {
                        const int c = tx + TC * j;
                        qv[j] = col_ok(c) ? s.q[m * LD + c] : 0.f;
                        gv[j] = col_ok(c) ? s.dout[m * LD + c] : 0.f;
                    }
                    BWD_UNROLL
                    for (int i = 0; i < RK; ++i) {
                        const float pv = s.p[(ty + TR * i) * LDP + m], dsv = s.ds[(ty + TR * i) * LDP + m];
                        BWD_UNROLL
                        for (int j = 0; j < CN; ++j) {
                            dv.lo[i][j] += pv * gv[j];
                            dk.lo[i][j] += dsv * qv[j];
                        }
                    }
                }
                dv.fold();
                dk.fold();
            }
            if (p.dq_accum == nullptr) continue;
            // Atomic mode: dQ += dS K for the rows that see any of these keys.
            Acc<RQ> dq;
            dq.zero();
            accumulate_dq(s, nrows, tx, ty, dq);
            BWD_UNROLL
            for (int i = 0; i < RQ; ++i) {
                const int m = ty + TR * i;
                if (m >= mrows || s.lo[m] >= s.hi[m] || s.hi[m] <= n0 || s.lo[m] >= n0 + nrows) continue;
                float* dst = p.dq_accum + q_row(p, seg, h, m0 + m) * HD;
                BWD_UNROLL
                for (int j = 0; j < CN; ++j)
                    if (col_ok(tx + TC * j)) atomicAdd(dst + tx + TC * j, dq.value(i, j));
            }
        }
    }
    const long long kv_row = ((long long)seg.batch * p.heads_kv + hk) * p.seq_k + seg.k_start + n0;
    attn_t* dk_out = (attn_t*)p.dk + kv_row * HD;
    attn_t* dv_out = (attn_t*)p.dv + kv_row * HD;
    BWD_UNROLL
    for (int i = 0; i < RK; ++i) {
        const int r = ty + TR * i;
        if (r >= nrows) continue;
        BWD_UNROLL
        for (int j = 0; j < CN; ++j) {
            const int c = tx + TC * j;
            if (!col_ok(c)) continue;
            store_f32(dk_out + (long long)r * HD + c, dk.value(i, j));
            store_f32(dv_out + (long long)r * HD + c, dv.value(i, j));
        }
    }
}

extern "C" __global__ void __launch_bounds__(BWD_NT, 1) attn_bwd_dq(const AttnParams p) {
    const Segment seg = load_segment(p, blockIdx.z);
    const int m0 = blockIdx.x * BM;
    if (m0 >= seg.q_len) return;
    const int h = blockIdx.y, hk = h / (p.heads_q / p.heads_kv);
    const int mrows = min(BM, seg.q_len - m0);
    ATTUNE_DYNAMIC_SHARED(float, smem);
    const Smem s = carve(smem);
    load_queries(p, seg, h, m0, s);
    __syncthreads();
    // The union of the rows' visible keys (each row's range is an interval, and ranges move
    // monotonically with the row, so the union is one interval too).
    int klo = seg.k_len, khi = 0;
    for (int m = 0; m < mrows; ++m) {
        if (s.lo[m] < s.hi[m]) {
            klo = min(klo, s.lo[m]);
            khi = max(khi, s.hi[m]);
        }
    }
    const int tid = threadIdx.x, tx = tid % TC, ty = tid / TC;
    Acc<RQ> dq;
    dq.zero();
    for (int n0 = klo; n0 < khi; n0 += BN) {
        const int nrows = min(BN, khi - n0);
        __syncthreads();  // the previous tile's readers are done with K, V and dS
        load_keys(p, seg, hk, n0, nrows, s);
        __syncthreads();
        score_tile<false>(p, seg, h, m0, n0, s);
        __syncthreads();
        accumulate_dq(s, nrows, tx, ty, dq);
    }
    BWD_UNROLL
    for (int i = 0; i < RQ; ++i) {
        const int m = ty + TR * i;
        if (m >= mrows) continue;
        attn_t* dst = (attn_t*)p.dq + q_row(p, seg, h, m0 + m) * HD;
        BWD_UNROLL
        for (int j = 0; j < CN; ++j)
            if (col_ok(tx + TC * j)) store_f32(dst + tx + TC * j, dq.value(i, j));
    }
}

extern "C" __global__ void attn_bwd_dq_convert(const AttnParams p) {
    const long long n = (long long)p.batch * p.heads_q * p.seq_q * HD;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        store_f32((attn_t*)p.dq + i, p.dq_accum[i]);
}
