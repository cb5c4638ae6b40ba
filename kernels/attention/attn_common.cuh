// The contract shared by every attention kernel (docs/attention.md) and its Rust mirror,
// crates/attention/src/gpu/abi.rs: one parameter struct passed by value, the segment table, the
// mask, softcap and dropout rules, and 16-bit load/store helpers.
//
// Geometry. q is (batch, heads_q, seq_q, HD), k and v (batch, heads_kv, seq_k, HD), each with its
// own batch/head/row strides in elements (head_dim has unit stride). Outputs are contiguous: out
// and dq like q's shape, dk and dv like k's, lse and delta (batch, heads_q, seq_q) in f32.
// A *segment* is one independent problem (key padding and packed variable-length sequences are
// both expressed this way): queries q_start..q_start+q_len of batch entry `batch` attend to keys
// k_start..k_start+k_len, indices along the seq dims. Grids are (tiles, heads, segments); a block
// whose tile lies past its segment exits. Every query row lies in exactly one segment (the host
// validates this), so kernels write every row of out and lse.
//
// Masks: local query i of a segment sees local key j iff lo(i) <= j < hi(i), with the diagonal
// diag = i + k_len - q_len (bottom-right alignment), lo = max(0, diag - left) when left >= 0, and
// hi = min(k_len, diag + right + 1) when right >= 0 (causal is right = 0). A row with no visible
// key outputs 0 and lse = -inf.
//
// Scores: s = scale * q.k, or with softcap c > 0: s = c * tanh(scale * q.k / c).
// Dropout: the element (b, h, i, j) (global seq indices) is stream index
// ((b * heads_q + h) * seq_q + i) * seq_k + j of the Philox stream (drop_seed, drop_offset); it
// is kept iff (word >> 8) >= drop_threshold, and kept probabilities are multiplied by
// drop_keep_scale = 1 / (1 - p). lse is of the scores before dropout.
#pragma once
#include "../common.cuh"
#include "../philox.cuh"

#ifndef HD
#error "attention kernels are compiled for one head_dim: define HD"
#endif

// Entries of one segment in the segment table (int32).
#define SEG_FIELDS 5

struct AttnParams {
    // Device addresses.
    const void* q;
    const void* k;
    const void* v;
    void* out;
    float* lse;
    const int* segments;  // [num_segments][SEG_FIELDS]: batch, q_start, q_len, k_start, k_len
    const void* dout;     // backward only
    void* dq;             // backward: dQ in the input dtype (contiguous like out)
    void* dk;             // backward: dK (contiguous, batch, heads_kv, seq_k, HD)
    void* dv;             // backward: dV
    float* dq_accum;      // backward: f32 dQ accumulator (contiguous like out), zeroed by the host
    float* delta;         // backward: rowsum(dout * out), f32 like lse
    float* partial_out;   // split-KV: [num_splits][batch * heads_q * seq_q][HD] f32
    float* partial_lse;   // split-KV: [num_splits][batch * heads_q * seq_q] f32
    float* out_f32;       // forward: when set, also the output in f32 (contiguous like out);
                          // backward: when set, the pre-pass reads it instead of out
    // Strides in elements.
    long long q_batch_stride, q_head_stride, q_row_stride;
    long long k_batch_stride, k_head_stride, k_row_stride;
    long long v_batch_stride, v_head_stride, v_row_stride;
    long long dout_batch_stride, dout_head_stride, dout_row_stride;
    unsigned long long drop_seed;
    unsigned long long drop_offset;
    // Sizes.
    int batch, heads_q, heads_kv, seq_q, seq_k;
    int num_segments;
    int head_dim;      // == HD; checked by kernels in debug builds
    int window_left;   // -1: unbounded
    int window_right;  // -1: unbounded; 0 when causal
    float scale;       // score scale
    float softcap;     // 0: off
    float drop_keep_scale;
    unsigned drop_threshold;  // 0: no dropout
    int num_splits;           // split-KV: key splits per row
    int max_q_len;            // longest segment's q_len (grid sizing)
    int max_k_len;            // longest segment's k_len
    // (16 four-byte fields: the size is a multiple of 8 with no implicit padding, as the Rust
    // mirror, a bytemuck::Pod, requires)
};

struct Segment {
    int batch, q_start, q_len, k_start, k_len;
};

__device__ __forceinline__ Segment load_segment(const AttnParams& p, int z) {
    const int* s = p.segments + (long long)z * SEG_FIELDS;
    Segment seg;
    seg.batch = s[0];
    seg.q_start = s[1];
    seg.q_len = s[2];
    seg.k_start = s[3];
    seg.k_len = s[4];
    return seg;
}

// Visible local keys [lo, hi) of local query row i of a segment; empty (lo >= hi) when none.
__device__ __forceinline__ void key_range(const AttnParams& p, const Segment& seg, int i, int* lo, int* hi) {
    const int diag = i + seg.k_len - seg.q_len;
    int l = p.window_left >= 0 ? diag - p.window_left : 0;
    int h = p.window_right >= 0 ? diag + p.window_right + 1 : seg.k_len;
    l = l < 0 ? 0 : l;
    h = h > seg.k_len ? seg.k_len : h;
    *lo = l;
    *hi = h;
}

// The (batch, head, global query row) index of lse, delta, out and dq rows.
__device__ __forceinline__ long long q_row(const AttnParams& p, const Segment& seg, int h, int i) {
    return ((long long)seg.batch * p.heads_q + h) * p.seq_q + seg.q_start + i;
}

// Local query rows [lo, hi) whose visible keys can meet keys [n0, n1): query i sees keys
// i + off - left .. i + off + right with off = k_len - q_len (64-bit: windows may be huge).
__device__ __forceinline__ void query_span(const AttnParams& p, const Segment& seg, int n0, int n1, int* lo,
                                           int* hi) {
    const long long off = (long long)seg.k_len - seg.q_len;
    long long a = 0, b = seg.q_len;
    if (p.window_right >= 0) a = max(a, (long long)n0 - off - p.window_right);
    if (p.window_left >= 0) b = min(b, (long long)n1 - off + p.window_left);
    a = min(a, (long long)seg.q_len);
    *lo = (int)a;
    *hi = (int)max(a, b);
}

// lse, delta and the visible local key range [lo, hi) of local query rows m0..m0+rows-1 of
// head h (the backward's per-query data), for rows tid, tid + nthreads, ... of the tile. Rows
// at or past `mrows` (outside the segment) or with lse = -inf (no visible key) get an empty
// range, so every product with them is masked.
__device__ __forceinline__ void load_query_stats(const AttnParams& p, const Segment& seg, int h, int m0, int rows,
                                                 int mrows, int nthreads, float* lse_out, float* delta_out,
                                                 int* lo_out, int* hi_out) {
    for (int m = threadIdx.x; m < rows; m += nthreads) {
        int lo = 0, hi = 0;
        float lse = 0.f, delta = 0.f;
        if (m < mrows) {
            const long long row = q_row(p, seg, h, m0 + m);
            lse = p.lse[row];
            if (lse != -INFINITY) {
                key_range(p, seg, m0 + m, &lo, &hi);
                delta = p.delta[row];
            }
        }
        lse_out[m] = lse;
        delta_out[m] = delta;
        lo_out[m] = lo;
        hi_out[m] = hi;
    }
}

// The score of a raw dot product q.k (softcap applied).
__device__ __forceinline__ float attn_score(const AttnParams& p, float dot) {
    if (p.softcap > 0.f) {
        // __fdividef (2 ulp) on the params, which loops hoist: an IEEE divide is a slow-path call
        // on the GPU and the call costs register spills. Past 1e37 (where __fdividef would give
        // 0) the cap changes nothing at f32 precision.
        if (p.softcap > 1e37f) return dot * p.scale;
        return p.softcap * tanhf(dot * __fdividef(p.scale, p.softcap));
    }
    return dot * p.scale;
}

// d(score)/d(dot) given the score: scale without softcap, scale * (1 - (s/c)^2) with it.
__device__ __forceinline__ float attn_score_grad(const AttnParams& p, float score) {
    if (p.softcap > 0.f) {
        const float t = score / p.softcap;
        return p.scale * (1.f - t * t);
    }
    return p.scale;
}

// The dropout multiplier of (batch b, query head h, global query row i, global key row j):
// 0 when dropped, drop_keep_scale when kept, 1 without dropout.
__device__ __forceinline__ float dropout_mult(const AttnParams& p, int b, int h, int i, int j) {
    if (p.drop_threshold == 0u) return 1.f;
    const unsigned long long idx =
        (((unsigned long long)b * p.heads_q + h) * p.seq_q + i) * (unsigned long long)p.seq_k + j;
    const Words w = philox_block(p.drop_seed, p.drop_offset + idx / 4);
    // Selects rather than indexes: a runtime index into w.w would put the words in local memory.
    const unsigned r = (unsigned)(idx % 4);
    const unsigned word = r == 0 ? w.w[0] : r == 1 ? w.w[1] : r == 2 ? w.w[2] : w.w[3];
    return (word >> 8) >= p.drop_threshold ? p.drop_keep_scale : 0.f;
}

// Element loads and stores of the kernel dtype (f32, __half or __nv_bfloat16) as f32.
__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f32(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_f32(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

// The kernel dtype from the ATTN_DTYPE define: 0 f32, 1 f16, 2 bf16.
#ifndef ATTN_DTYPE
#error "define ATTN_DTYPE (0 f32, 1 f16, 2 bf16)"
#endif
#if ATTN_DTYPE == 0
typedef float attn_t;
#elif ATTN_DTYPE == 1
typedef __half attn_t;
#else
typedef __nv_bfloat16 attn_t;
#endif

// log2(e): kernels keep running maxima in the scaled log2 domain and use exp2f.
#define ATTN_LOG2E 1.4426950408889634f
