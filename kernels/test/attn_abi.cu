// Layout probe of AttnParams (kernels/attention/attn_common.cuh): writes its size and the byte
// offsets of fields spread over the struct, so a test compares them with the Rust mirror
// (crates/attention/src/gpu/abi.rs) field by field.
#include "../attention/attn_common.cuh"

#define OFF(f) ((long long)((const char*)&probe.f - (const char*)&probe))

extern "C" __global__ void attn_abi_probe(const AttnParams p, long long* out) {
    AttnParams probe = p;
    out[0] = (long long)sizeof(AttnParams);
    out[1] = OFF(segments);
    out[2] = OFF(out_f32);
    out[3] = OFF(q_batch_stride);
    out[4] = OFF(dout_row_stride);
    out[5] = OFF(drop_offset);
    out[6] = OFF(batch);
    out[7] = OFF(window_right);
    out[8] = OFF(scale);
    out[9] = OFF(drop_threshold);
    out[10] = OFF(max_k_len);
    // A value read through the struct passed by value: the launch path delivers the bytes.
    out[11] = (long long)p.seq_k * 1000 + p.heads_kv;
}
