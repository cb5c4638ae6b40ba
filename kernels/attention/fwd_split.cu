// Split-KV attention forward for decoding: few query rows (1..16 per segment) against long keys.
// The keys a segment's rows can see are cut into num_splits contiguous chunks; block (s, h, z)
// runs the SIMT forward of fwd_simt.cu (f32 arithmetic, any dtype) for all q rows of segment z
// and head h against chunk s, and writes a normalised f32 partial output and its lse. The
// combine kernel merges the partials of each row by their lse. Dropout, masks and softcap are
// evaluated with global indices, so the split does not change the result.
#define FWD_SIMT_NO_ENTRY
#include "fwd_simt.cu"

// All (up to 16) rows of a segment in one block: R rows per warp, 16 / R warps.
#define SPLIT_ROWS 16
typedef SimtCfg<SIMT_R, SPLIT_ROWS / SIMT_R, SIMT_KPL> SplitCfg;

// Grid (num_splits, heads_q, num_segments), block 32 * SplitCfg::WARPS threads (128 for HD <= 128,
// else 256), dynamic shared memory 4 * SplitCfg::SMEM_FLOATS bytes. Needs max_q_len <= 16.
// Split s of a segment covers local keys [kb + s * c, kb + (s + 1) * c) intersected with
// [kb, ke), where [kb, ke) is the union of the rows' visible ranges and c = ceil((ke - kb) / S);
// an empty split writes lse -inf and zeros for every row.
extern "C" __global__ void attn_fwd_split(const AttnParams p) {
    const Segment seg = load_segment(p, blockIdx.z);
    if (seg.q_len <= 0) return;
    int kb, ke, unused;
    key_range(p, seg, 0, &kb, &unused);
    key_range(p, seg, seg.q_len - 1, &unused, &ke);
    const int n = ke > kb ? ke - kb : 0;
    const int per = div_nonneg(n + p.num_splits - 1, p.num_splits);
    const int s = blockIdx.x;
    long long beg = kb + (long long)s * per, end = beg + per;
    if (end > ke) end = ke;
    if (beg > end) beg = end;
    simt_attend<SplitCfg, true>(p, seg, blockIdx.y, 0, (int)beg, (int)end, s);
}

// Combine: one warp per global query row (4 rows per 128-thread block, grid ceil(rows / 4)).
// lse = logsumexp_s lse_s; out = sum_s exp(lse_s - lse) * o_s in the dtype; a row whose splits
// are all empty gets out 0 and lse -inf.
#define COMBINE_WARPS 4
extern "C" __global__ void attn_split_combine(const AttnParams p) {
    const long long rows = (long long)p.batch * p.heads_q * p.seq_q;
    const long long row = (long long)blockIdx.x * COMBINE_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;  // warp-uniform
    const int S = p.num_splits;
    float mx = -INFINITY;
    for (int s = lane; s < S; s += 32) mx = fmaxf(mx, p.partial_lse[s * rows + row]);
    mx = warp_max(mx);
    attn_t* o = static_cast<attn_t*>(p.out) + row * HD;
    float* const f = ATTN_DTYPE != 0 && p.out_f32 != nullptr ? p.out_f32 + row * HD : nullptr;
    if (mx == -INFINITY) {
        for (int d = lane; d < HD; d += 32) store_f32(o + d, 0.f);
        if (f != nullptr)
            for (int d = lane; d < HD; d += 32) f[d] = 0.f;
        if (lane == 0) p.lse[row] = -INFINITY;
        return;
    }
    float sum = 0.f;
    for (int s = lane; s < S; s += 32) sum += expf(p.partial_lse[s * rows + row] - mx);
    sum = warp_sum(sum);
    const float lse = mx + logf(sum);
    float acc[(HD + 31) / 32];
#pragma unroll
    for (int t = 0; t < (HD + 31) / 32; ++t) acc[t] = 0.f;
    for (int s = 0; s < S; ++s) {
        const float ls = p.partial_lse[s * rows + row];
        if (ls == -INFINITY) continue;  // empty split: zeros, weight 0
        const float w = expf(ls - lse);
        const float* po = p.partial_out + (s * rows + row) * HD;
#pragma unroll
        for (int t = 0; t < (HD + 31) / 32; ++t) {
            const int d = lane + 32 * t;
            if (HD % 32 == 0 || d < HD) acc[t] = fmaf(w, po[d], acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < (HD + 31) / 32; ++t) {
        const int d = lane + 32 * t;
        if (HD % 32 == 0 || d < HD) {
            store_f32(o + d, acc[t]);
            if (f != nullptr) f[d] = acc[t];
        }
    }
    if (lane == 0) p.lse[row] = lse;
}
