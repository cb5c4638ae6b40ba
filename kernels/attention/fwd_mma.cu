// FlashAttention-2-style forward for f16/bf16 inputs on sm_80+ (tensor cores), with every
// feature of docs/attention.md through the contract in attn_common.cuh.
//
// Defines: ATTN_DTYPE (1 f16, 2 bf16), HD (head_dim: a multiple of 8 in 8..256), BM (query rows
// per block), BN (keys per tile, a multiple of 16), WARPS (BM = 16 * WARPS: each warp owns 16
// query rows). Optional Q_IN_REGS: keep Q's fragments (HD / 4 registers) for the whole key loop
// instead of re-reading them with ldmatrix at every k-step. The default keeps them while
// O (HD / 2 f32 registers) + S (BN / 2) + Q stays within 112 registers, the budget that ptxas
// (CUDA 12.9) fits without spills on sm_80 and sm_90 for every HD/BN of the host's table; HD = 256
// (128 registers of O alone) therefore re-reads Q.
//
// Launch: grid (ceil(max_q_len / BM), heads_q, num_segments), block WARPS * 32 threads, dynamic
// shared memory (BM + 4 * BN) * LDS * sizeof(attn_t) bytes (the host's MmaTiles::smem_bytes):
//   sQ [BM][LDS] | sK [2][BN][LDS] | sV [2][BN][LDS]
// with LDS = HDK + 8 elements, HDK = HD rounded up to 16 (the k-dim of QK^T; the extra 8
// columns of sQ and sK are zeros, written once). The row padding of 16 bytes is the bank-conflict
// fix: a row is then an odd number (HDK / 8 + 1) of 16-byte units, so the 8 row addresses of one
// ldmatrix phase land in 8 distinct 16-byte bank groups (no swizzle needed).
//
// Per block: the visible key range is [lo(first row), hi(last row)) (both bounds are monotone in
// the row), so whole key tiles outside it are skipped; tiles that are not entirely visible to
// every row of the block are masked per element. K/V tiles stream through shared memory with
// cp.async double buffering (tile t + 1 loads while tile t computes). Rows past the segment's
// q_len / k_len are zero-filled with plain stores (finite zeros: 0 * V must not be NaN).
//
// Per warp: S = Q K^T with mma.m16n8k16 (A = Q by ldmatrix_x4, B = K rows by ldmatrix_x4), the
// online softmax in registers in the log2 domain (scale folded into log2(e), exp2f; the row max
// and sum combine the 4 lanes of a row with __shfl_xor_sync), P re-packed from the S accumulators
// straight into A fragments, O += P V (B = V by ldmatrix_x4_trans, n8 tiles over HD). The row sum
// l is of the undropped probabilities; dropout zeroes the dropped probabilities fed to P V and
// its keep scale joins the normalisation. O is normalised once at the end; lse = m ln 2 + ln l (natural log, before dropout); a row with no
// visible key gets out 0 and lse -inf.
#include "mma_util.cuh"
#if !defined(BM) || !defined(BN) || !defined(WARPS)
#error "define BM, BN and WARPS (the host's mma_tiles)"
#endif
#if BM != 16 * WARPS
#error "each warp owns 16 query rows: BM must be 16 * WARPS"
#endif
#if BN % 16 != 0 || BN < 16
#error "BN must be a positive multiple of 16 (P V steps over keys 16 at a time)"
#endif
#if HD % 8 != 0 || HD < 8 || HD > 256
#error "HD must be a multiple of 8 in 8..256"
#endif
#ifndef Q_IN_REGS
#define Q_IN_REGS (HD / 2 + BN / 2 + HD / 4 <= 112)
#endif

#define HDK ((HD + 15) / 16 * 16)  // k-dim of Q K^T, padded with zeros
#define LDS (HDK + 8)              // shared row stride in elements (16 bytes of padding)
#define NT_S (BN / 8)              // n8 tiles of a warp's S (16 x BN)
#define NT_O (HD / 8)              // n8 tiles of a warp's O (16 x HD)
#define KS_QK (HDK / 16)           // k16 steps of Q K^T
#define KS_PV (BN / 16)            // k16 steps of P V
#define NKEEP ((NT_S * 4 + 31) / 32)  // 32-bit words of dropout keep bits per lane
#define THREADS (WARPS * 32)
#define FULL_MASK 0xffffffffu

extern "C" __global__ void __launch_bounds__(THREADS) attn_fwd_mma(const AttnParams p) {
    ATTUNE_DYNAMIC_SHARED(attn_t, smem);
    attn_t* const sQ = smem;
    attn_t* const sK = sQ + BM * LDS;
    attn_t* const sV = sK + 2 * BN * LDS;

    const Segment seg = load_segment(p, blockIdx.z);
    const int q0 = blockIdx.x * BM;
    if (q0 >= seg.q_len) return;  // past this segment's queries (uniform over the block)
    const int h = blockIdx.y;
    const int hk = h / (p.heads_q / p.heads_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane >> 2, t = lane & 3;
    const int rows = min(BM, seg.q_len - q0);

    // The block's key range and which tiles are visible to every valid row (no mask needed).
    int lo_first, hi_first, lo_last, hi_last;
    key_range(p, seg, q0, &lo_first, &hi_first);
    key_range(p, seg, q0 + rows - 1, &lo_last, &hi_last);
    const int t_begin = lo_first / BN;
    const int t_end = hi_last > lo_first ? (hi_last + BN - 1) / BN : t_begin;

    // This thread's two rows (local to the segment): warp row g and g + 8.
    const int r_local[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    int lo[2], hi[2];
    key_range(p, seg, r_local[0], &lo[0], &hi[0]);
    key_range(p, seg, r_local[1], &lo[1], &hi[1]);

    const attn_t* const gq = static_cast<const attn_t*>(p.q) + seg.batch * p.q_batch_stride + h * p.q_head_stride +
                             (long long)(seg.q_start + q0) * p.q_row_stride;
    const attn_t* const gk = static_cast<const attn_t*>(p.k) + seg.batch * p.k_batch_stride + hk * p.k_head_stride +
                             (long long)seg.k_start * p.k_row_stride;
    const attn_t* const gv = static_cast<const attn_t*>(p.v) + seg.batch * p.v_batch_stride + hk * p.v_head_stride +
                             (long long)seg.k_start * p.v_row_stride;

    if (t_begin < t_end) {
#if HDK > HD
        // The zero k-padding of Q and both K stages (cp.async never writes these columns).
        for (int r = threadIdx.x; r < BM + 2 * BN; r += THREADS)
            *reinterpret_cast<uint4*>(sQ + r * LDS + HD) = make_uint4(0u, 0u, 0u, 0u);
#endif
        load_rows<THREADS, LDS>(sQ, gq, p.q_row_stride, BM, rows);
        const int n0 = t_begin * BN;
        load_rows<THREADS, LDS>(sK, gk + n0 * p.k_row_stride, p.k_row_stride, BN, min(BN, seg.k_len - n0));
        load_rows<THREADS, LDS>(sV, gv + n0 * p.v_row_stride, p.v_row_stride, BN, min(BN, seg.k_len - n0));
        cp_async_commit();
    }

    const bool softcap = p.softcap > 0.f;
    const bool dropout = p.drop_threshold != 0u;
    const float scale_log2 = p.scale * ATTN_LOG2E;
    // ldmatrix row addresses: lane l serves row (l & 7) of matrix l >> 3.
    const int lrow = lane & 7, lm0 = (lane >> 3) & 1, lm1 = lane >> 4;

    float o[NT_O][4];
#pragma unroll
    for (int d = 0; d < NT_O; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY};  // running row max, log2 domain
    float l[2] = {0.f, 0.f};              // this lane's part of the running row sum
#if Q_IN_REGS
    unsigned qf[KS_QK][4];
#endif
    // A fragment of Q for k-step kk: matrices (rows 0-7 | 8-15) x (cols kk*16 | +8).
    const attn_t* const sQw = sQ + (warp * 16 + lrow + 8 * lm0) * LDS + 8 * lm1;

    for (int tile = t_begin; tile < t_end; ++tile) {
        const int stage = (tile - t_begin) & 1;
        if (tile + 1 < t_end) {
            const int n1 = (tile + 1) * BN;
            const int valid = min(BN, seg.k_len - n1);
            load_rows<THREADS, LDS>(sK + (stage ^ 1) * BN * LDS, gk + n1 * p.k_row_stride, p.k_row_stride, BN, valid);
            load_rows<THREADS, LDS>(sV + (stage ^ 1) * BN * LDS, gv + n1 * p.v_row_stride, p.v_row_stride, BN, valid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
#if Q_IN_REGS
        if (tile == t_begin) {
#pragma unroll
            for (int kk = 0; kk < KS_QK; ++kk) ldmatrix_x4(qf[kk], sQw + kk * 16);
        }
#endif
        const attn_t* const sKs = sK + stage * BN * LDS;
        const attn_t* const sVs = sV + stage * BN * LDS;

        // S = Q K^T for this warp's 16 rows and the tile's BN keys.
        float s[NT_S][4];
#pragma unroll
        for (int j = 0; j < NT_S; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS_QK; ++kk) {
#if Q_IN_REGS
            const unsigned* a = qf[kk];
#else
            unsigned a[4];
            ldmatrix_x4(a, sQw + kk * 16);
#endif
#pragma unroll
            for (int j = 0; j < NT_S; j += 2) {
                // Matrices (keys j*8 | j*8+8) x (dims kk*16 | +8): B of n-tiles j and j + 1.
                unsigned b[4];
                ldmatrix_x4(b, sKs + (j * 8 + lrow + 8 * lm1) * LDS + kk * 16 + 8 * lm0);
                mma16816(s[j], a, b);
                mma16816(s[j + 1], a, b + 2);
            }
        }

        // Scores in the log2 domain, masked per element unless every row sees the whole tile.
        const int n0 = tile * BN;
        const bool full = n0 >= lo_last && n0 + BN <= hi_first;
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int j = 0; j < NT_S; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e >> 1, key = n0 + j * 8 + 2 * t + (e & 1);
                float x = softcap ? attn_score(p, s[j][e]) * ATTN_LOG2E : s[j][e] * scale_log2;
                if (!full && (key < lo[r] || key >= hi[r])) x = -INFINITY;
                s[j][e] = x;
                mx[r] = fmaxf(mx[r], x);
            }
        }
        float base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            // A row with nothing visible yet keeps max -inf; exponents then use 0, so every
            // probability (and the rescale of the empty history) is exp2(-inf) = 0, never NaN.
            base[r] = mx[r] == -INFINITY ? 0.f : mx[r];
            const float alpha = exp2f(m[r] - base[r]);
            m[r] = mx[r];
            l[r] *= alpha;
#pragma unroll
            for (int d = 0; d < NT_O; ++d) {
                o[d][2 * r] *= alpha;
                o[d][2 * r + 1] *= alpha;
            }
        }
#pragma unroll
        for (int j = 0; j < NT_S; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e >> 1;
                const float pr = exp2f(s[j][e] - base[r]);
                l[r] += pr;
                s[j][e] = pr;
            }
        }
        if (dropout) {
            // The keep bits of this lane's NT_S * 4 elements, then applied to the registers.
            unsigned keep[NKEEP];
            dropout_keep_bits(keep, NT_S * 4, p, seg.batch, h, [&](int el, int* gi, int* gj) {
                const int e = el & 3;
                *gi = seg.q_start + r_local[0] + 8 * (e >> 1);
                *gj = seg.k_start + n0 + (el >> 2) * 8 + 2 * t + (e & 1);
            });
#pragma unroll
            for (int j = 0; j < NT_S; ++j) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int el = 4 * j + e;
                    // Dropped elements are zeroed; the keep scale 1/(1-p) is applied once, in
                    // f32, with the normalisation: multiplied into P here it would be rounded
                    // to 16 bits with P, and the output would no longer be the sum_j P dP that
                    // the backward's rowsum(dO * O) stands for (off by ~2^-9 in bf16 even when
                    // P is exactly 1).
                    if (!((keep[el / 32] >> (el % 32)) & 1u)) s[j][e] = 0.f;
                }
            }
        }

        // O += P V: P's A fragment for keys kk*16.. is the S accumulators of n-tiles 2kk, 2kk+1.
#pragma unroll
        for (int kk = 0; kk < KS_PV; ++kk) {
            unsigned a[4];
            a[0] = pack2(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack2(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            // Matrices (keys kk*16 | +8) x (dims d*8 | d*8+8), transposed: B of n-tiles d, d + 1.
            const attn_t* const vrow = sVs + (kk * 16 + lrow + 8 * lm0) * LDS;
#pragma unroll
            for (int d = 0; d + 1 < NT_O; d += 2) {
                unsigned b[4];
                ldmatrix_x4_trans(b, vrow + d * 8 + 8 * lm1);
                mma16816(o[d], a, b);
                mma16816(o[d + 1], a, b + 2);
            }
#if (HD / 8) % 2 == 1
            {
                unsigned b[2];
                ldmatrix_x2_trans(b, vrow + (NT_O - 1) * 8);
                mma16816(o[NT_O - 1], a, b);
            }
#endif
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }

    // Epilogue: the full row sums, then out = O / l and lse.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = r_local[r];
        if (i >= seg.q_len) continue;
        const long long row = ((long long)seg.batch * p.heads_q + h) * p.seq_q + seg.q_start + i;
        const float inv = l[r] > 0.f ? (dropout ? p.drop_keep_scale : 1.f) / l[r] : 0.f;
        attn_t* const orow = static_cast<attn_t*>(p.out) + row * HD + 2 * t;
#pragma unroll
        for (int d = 0; d < NT_O; ++d)
            *reinterpret_cast<unsigned*>(orow + d * 8) = pack2(o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
        if (p.out_f32 != nullptr) {
            float* const frow = p.out_f32 + row * HD + 2 * t;
#pragma unroll
            for (int d = 0; d < NT_O; ++d)
                *reinterpret_cast<float2*>(frow + d * 8) = make_float2(o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
        }
        if (t == 0) p.lse[row] = l[r] > 0.f ? m[r] * 0.6931471805599453f + logf(l[r]) : -INFINITY;
    }
}
