// Tensor-core attention backward for f16/bf16 inputs on sm_80+: the dK/dV kernel of bwd.cu's
// FlashAttention-2 scheme (and its atomic dQ) with every product on mma.sync.m16n8k16.
// bwd.cu keeps the delta pre-pass, the deterministic dQ kernel and the dQ conversion, and the
// SIMT dK/dV for f32, head_dim > 128 and unaligned inputs. Semantics: attn_common.cuh.
//
// Defines: ATTN_DTYPE (1 f16, 2 bf16), HD (a multiple of 8 up to 128), BM (queries per tile, a
// multiple of 16), WARPS (each warp owns 16 keys: BN = 16 * WARPS keys per block).
//
// Launch: grid (ceil(max_k_len / BN), heads_kv, num_segments), WARPS * 32 threads, dynamic
// shared memory (the host's MmaBwdTiles::smem_bytes), in 16-bit elements unless noted:
//   sK [BN][LDS] | sV [BN][LDS] | sQ [BM][LDS] | sdO [BM][LDS] | sdS [BN][LDT]
//   | lse, delta (f32) [BM] | lo, hi (int) [BM]
// with LDS = round_up(HD, 16) + 8 and LDT = BM + 8: the k-padding of the head_dim products (zero
// columns) and 16 bytes per row against bank conflicts (rows are an odd number of 16-byte units).
//
// Per block: K and V of its BN keys stay in shared memory; dK and dV (16 x HD per warp) stay in
// f32 accumulators. For each query head of the GQA group and each query tile that can see the
// block's keys (query_span), Q and dO arrive by cp.async, then each warp computes, for its 16
// keys and the tile's BM queries:
//   S^T = K Q^T and dP^T = V dO^T (A = K or V rows by ldmatrix, B = Q or dO rows by ldmatrix);
//   P^T = exp(score - lse) (masked, times the dropout multiplier) and
//   dS^T = P (dP * mult - delta) * d(score)/d(dot), element-wise in the accumulators;
//   dV += P^T dO and dK += dS^T Q, with P^T and dS^T re-packed from the accumulators into A
//   fragments (as fwd_mma.cu does with P) and B = dO or Q by ldmatrix.trans.
// Atomic dQ (p.dq_accum set): dS^T goes to shared memory as 16-bit, and the block's warps split
// dQ_tile += dS K into 16 x 16 pieces (A = dS by ldmatrix.trans of dS^T, B = K by ldmatrix.trans)
// added to dq_accum with f32 atomics. P and dS are rounded to the input dtype for the products,
// as in FlashAttention-2; everything else is f32.
#include "mma_util.cuh"

#if !defined(BM) || !defined(WARPS)
#error "define BM and WARPS (the host's MmaBwdTiles)"
#endif
#if BM % 16 != 0 || BM < 16
#error "BM must be a positive multiple of 16"
#endif
#if HD % 8 != 0 || HD < 8 || HD > 128
#error "HD must be a multiple of 8 in 8..128 (the dK and dV accumulators are HD registers)"
#endif

#define BN (16 * WARPS)                // keys per block
#define HDK ((HD + 15) / 16 * 16)      // k-dim of the head_dim products, zero-padded
#define LDS (HDK + 8)                  // row stride of sK, sV, sQ, sdO (elements)
#define LDT (BM + 8)                   // row stride of sdS (elements)
#define NT_Q (BM / 8)                  // n8 tiles of a warp's S^T and dP^T (16 keys x BM queries)
#define NT_O (HD / 8)                  // n8 tiles of dK and dV (16 keys x HD)
#define KS_D (HDK / 16)                // k16 steps over head_dim
#define KS_Q (BM / 16)                 // k16 steps over a tile's queries
#define NKEEP ((NT_Q * 4 + 31) / 32)   // 32-bit words of dropout keep bits per lane
#define THREADS (WARPS * 32)

// acc[0..NT_O) += a B over head_dim, B (16 rows x HD, row-major at `rows`, stride LDS) read
// transposed by ldmatrix: the second operand of dV += P^T dO, dK += dS^T Q and dQ += dS K.
// `rows` already points at this lane's ldmatrix row (row lrow + 8 * lm0 of the 16).
__device__ __forceinline__ void mma_rows_trans(float (*acc)[4], const unsigned a[4], const attn_t* rows, int lm1) {
#pragma unroll
    for (int d = 0; d + 1 < NT_O; d += 2) {
        unsigned b[4];
        ldmatrix_x4_trans(b, rows + d * 8 + 8 * lm1);
        mma16816(acc[d], a, b);
        mma16816(acc[d + 1], a, b + 2);
    }
#if NT_O % 2 == 1
    {
        unsigned b[2];
        ldmatrix_x2_trans(b, rows + (NT_O - 1) * 8);
        mma16816(acc[NT_O - 1], a, b);
    }
#endif
}

// The A fragment of k-step kk (16 columns) from the C accumulators of n-tiles 2kk and 2kk + 1.
__device__ __forceinline__ void acc_to_a(unsigned a[4], const float (*c)[4], int kk) {
    a[0] = pack2(c[2 * kk][0], c[2 * kk][1]);
    a[1] = pack2(c[2 * kk][2], c[2 * kk][3]);
    a[2] = pack2(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = pack2(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

extern "C" __global__ void __launch_bounds__(THREADS, 1) attn_bwd_dkdv_mma(const AttnParams p) {
    ATTUNE_DYNAMIC_SHARED(attn_t, smem);
    attn_t* const sK = smem;
    attn_t* const sV = sK + BN * LDS;
    attn_t* const sQ = sV + BN * LDS;
    attn_t* const sdO = sQ + BM * LDS;
    attn_t* const sdS = sdO + BM * LDS;
    float* const sLse = reinterpret_cast<float*>(sdS + BN * LDT);
    float* const sDelta = sLse + BM;
    int* const sLo = reinterpret_cast<int*>(sDelta + BM);
    int* const sHi = sLo + BM;

    const Segment seg = load_segment(p, blockIdx.z);
    const int n0 = blockIdx.x * BN;
    if (n0 >= seg.k_len) return;  // past this segment's keys (uniform over the block)
    const int hk = blockIdx.y, group = p.heads_q / p.heads_kv;
    const int nrows = min(BN, seg.k_len - n0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane >> 2, t = lane & 3;
    // ldmatrix row addresses: lane l serves row (l & 7) of matrix l >> 3.
    const int lrow = lane & 7, lm0 = (lane >> 3) & 1, lm1 = lane >> 4;

    const attn_t* const gk = static_cast<const attn_t*>(p.k) + seg.batch * p.k_batch_stride + hk * p.k_head_stride +
                             (long long)(seg.k_start + n0) * p.k_row_stride;
    const attn_t* const gv = static_cast<const attn_t*>(p.v) + seg.batch * p.v_batch_stride + hk * p.v_head_stride +
                             (long long)(seg.k_start + n0) * p.v_row_stride;
#if HDK > HD
    // The zero k-padding of the four row tiles (contiguous: K, V, Q, dO); cp.async never writes it.
    for (int r = threadIdx.x; r < 2 * BN + 2 * BM; r += THREADS)
        *reinterpret_cast<uint4*>(sK + r * LDS + HD) = make_uint4(0u, 0u, 0u, 0u);
#endif
    load_rows<THREADS, LDS>(sK, gk, p.k_row_stride, BN, nrows);
    load_rows<THREADS, LDS>(sV, gv, p.v_row_stride, BN, nrows);
    cp_async_commit();

    float dk[NT_O][4], dv[NT_O][4];
#pragma unroll
    for (int d = 0; d < NT_O; ++d) {
        dk[d][0] = dk[d][1] = dk[d][2] = dk[d][3] = 0.f;
        dv[d][0] = dv[d][1] = dv[d][2] = dv[d][3] = 0.f;
    }
    const bool dropout = p.drop_threshold != 0u;
    const int key0 = n0 + warp * 16 + g;  // local key of accumulator rows g (and key0 + 8: g + 8)
    const attn_t* const sKw = sK + (warp * 16 + lrow + 8 * lm0) * LDS + 8 * lm1;
    const attn_t* const sVw = sV + (warp * 16 + lrow + 8 * lm0) * LDS + 8 * lm1;

    int qlo, qhi;
    query_span(p, seg, n0, n0 + nrows, &qlo, &qhi);
    for (int gi = 0; gi < group; ++gi) {
        const int h = hk * group + gi;
        const attn_t* const gq = static_cast<const attn_t*>(p.q) + seg.batch * p.q_batch_stride +
                                 h * p.q_head_stride + (long long)seg.q_start * p.q_row_stride;
        const attn_t* const gdo = static_cast<const attn_t*>(p.dout) + seg.batch * p.dout_batch_stride +
                                  h * p.dout_head_stride + (long long)seg.q_start * p.dout_row_stride;
        for (int m0 = qlo; m0 < qhi; m0 += BM) {
            const int mrows = min(BM, seg.q_len - m0);
            __syncthreads();  // the previous tile's readers are done with sQ, sdO, sdS and the rows
            load_rows<THREADS, LDS>(sQ, gq + (long long)m0 * p.q_row_stride, p.q_row_stride, BM, mrows);
            load_rows<THREADS, LDS>(sdO, gdo + (long long)m0 * p.dout_row_stride, p.dout_row_stride, BM, mrows);
            cp_async_commit();
            load_query_stats(p, seg, h, m0, BM, mrows, THREADS, sLse, sDelta, sLo, sHi);
            cp_async_wait<0>();
            __syncthreads();

            // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys and the tile's BM queries.
            float s[NT_Q][4], dp[NT_Q][4];
#pragma unroll
            for (int j = 0; j < NT_Q; ++j) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
                dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
            }
#pragma unroll
            for (int kk = 0; kk < KS_D; ++kk) {
                unsigned ak[4], av[4];
                ldmatrix_x4(ak, sKw + kk * 16);
                ldmatrix_x4(av, sVw + kk * 16);
#pragma unroll
                for (int j = 0; j < NT_Q; j += 2) {
                    // Matrices (queries j*8 | j*8+8) x (dims kk*16 | +8): B of n-tiles j, j + 1.
                    const int off = (j * 8 + lrow + 8 * lm1) * LDS + kk * 16 + 8 * lm0;
                    unsigned b[4];
                    ldmatrix_x4(b, sQ + off);
                    mma16816(s[j], ak, b);
                    mma16816(s[j + 1], ak, b + 2);
                    ldmatrix_x4(b, sdO + off);
                    mma16816(dp[j], av, b);
                    mma16816(dp[j + 1], av, b + 2);
                }
            }

            // Element (j, e): key key0 + 8 * (e >> 1), tile query j * 8 + 2t + (e & 1).
            unsigned keep[NKEEP];
            if (dropout) {
                dropout_keep_bits(keep, NT_Q * 4, p, seg.batch, h, [&](int el, int* gi, int* gj) {
                    const int e = el & 3;
                    *gi = seg.q_start + m0 + (el >> 2) * 8 + 2 * t + (e & 1);
                    *gj = seg.k_start + key0 + 8 * (e >> 1);
                });
            }
#pragma unroll
            for (int j = 0; j < NT_Q; ++j) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = key0 + 8 * (e >> 1), m = j * 8 + 2 * t + (e & 1);
                    float pd = 0.f, ds = 0.f;
                    if (key >= sLo[m] && key < sHi[m]) {
                        const float score = attn_score(p, s[j][e]);
                        const float pr = expf(score - sLse[m]);
                        const int el = 4 * j + e;
                        const float mult =
                            !dropout ? 1.f : ((keep[el / 32] >> (el % 32)) & 1u) ? p.drop_keep_scale : 0.f;
                        pd = pr * mult;
                        ds = pr * (dp[j][e] * mult - sDelta[m]) * attn_score_grad(p, score);
                    }
                    s[j][e] = pd;
                    dp[j][e] = ds;
                }
            }

            // dV += P^T dO and dK += dS^T Q over the tile's queries, 16 at a time.
#pragma unroll
            for (int kk = 0; kk < KS_Q; ++kk) {
                const int row = (kk * 16 + lrow + 8 * lm0) * LDS;
                unsigned a[4];
                acc_to_a(a, s, kk);
                mma_rows_trans(dv, a, sdO + row, lm1);
                acc_to_a(a, dp, kk);
                mma_rows_trans(dk, a, sQ + row, lm1);
            }
            if (p.dq_accum == nullptr) continue;

            // Atomic dQ: the block's dS^T (BN keys x BM queries) through shared memory.
#pragma unroll
            for (int j = 0; j < NT_Q; ++j) {
#pragma unroll
                for (int r = 0; r < 2; ++r)
                    *reinterpret_cast<unsigned*>(sdS + (warp * 16 + g + 8 * r) * LDT + j * 8 + 2 * t) =
                        pack2(dp[j][2 * r], dp[j][2 * r + 1]);
            }
            __syncthreads();
            constexpr int DP = (NT_O + 1) / 2;  // 16-column pieces of dQ (the last may be 8 wide)
            for (int item = warp; item < KS_Q * DP; item += WARPS) {
                const int qb = item / DP, d = (item % DP) * 2;
                float c[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
                for (int kk = 0; kk < WARPS; ++kk) {
                    // A = dS (queries qb*16.. x keys kk*16..), stored transposed in sdS.
                    unsigned a[4];
                    ldmatrix_x4_trans(a, sdS + (kk * 16 + lrow + 8 * lm1) * LDT + qb * 16 + 8 * lm0);
                    const attn_t* const krow = sK + (kk * 16 + lrow + 8 * lm0) * LDS + d * 8;
                    if (d + 1 < NT_O) {
                        unsigned b[4];
                        ldmatrix_x4_trans(b, krow + 8 * lm1);
                        mma16816(c[0], a, b);
                        mma16816(c[1], a, b + 2);
                    } else {
                        unsigned b[2];
                        ldmatrix_x2_trans(b, krow);
                        mma16816(c[0], a, b);
                    }
                }
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int m = qb * 16 + g + 8 * r;
                    // Rows past the segment must not be touched; rows that see none of these
                    // keys have a zero dS row (nothing to add).
                    if (m >= mrows || sLo[m] >= sHi[m] || sHi[m] <= n0 || sLo[m] >= n0 + nrows) continue;
                    float* const dst = p.dq_accum + q_row(p, seg, h, m0 + m) * HD + d * 8 + 2 * t;
                    atomicAdd(dst, c[0][2 * r]);
                    atomicAdd(dst + 1, c[0][2 * r + 1]);
                    if (d + 1 < NT_O) {
                        atomicAdd(dst + 8, c[1][2 * r]);
                        atomicAdd(dst + 9, c[1][2 * r + 1]);
                    }
                }
            }
        }
    }

    // dK and dV rows of this warp's keys that lie in the segment, in the input dtype.
    const long long kv_row = ((long long)seg.batch * p.heads_kv + hk) * p.seq_k + seg.k_start + n0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = warp * 16 + g + 8 * r;
        if (row >= nrows) continue;
        attn_t* const dk_out = static_cast<attn_t*>(p.dk) + (kv_row + row) * HD + 2 * t;
        attn_t* const dv_out = static_cast<attn_t*>(p.dv) + (kv_row + row) * HD + 2 * t;
#pragma unroll
        for (int d = 0; d < NT_O; ++d) {
            *reinterpret_cast<unsigned*>(dk_out + d * 8) = pack2(dk[d][2 * r], dk[d][2 * r + 1]);
            *reinterpret_cast<unsigned*>(dv_out + d * 8) = pack2(dv[d][2 * r], dv[d][2 * r + 1]);
        }
    }
}
