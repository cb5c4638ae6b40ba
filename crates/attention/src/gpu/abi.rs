//! The Rust mirror of `AttnParams` in kernels/attention/attn_common.cuh (field for field, same
//! order, no padding), and the host-side helpers that fill it from a validated [`Problem`].

use crate::params::Problem;
use bytemuck::{Pod, Zeroable};

#[cfg(feature = "testing")]
/// Entries of one segment in the device segment table (i32): batch, q_start, q_len, k_start, k_len.
pub const SEG_FIELDS: usize = 5;

/// The parameter struct every attention kernel takes by value. See attn_common.cuh for the
/// meaning of each field; pointers are device addresses (0 when a kernel does not use them).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct AttnParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub lse: u64,
    pub segments: u64,
    pub dout: u64,
    pub dq: u64,
    pub dk: u64,
    pub dv: u64,
    pub dq_accum: u64,
    pub delta: u64,
    pub partial_out: u64,
    pub partial_lse: u64,
    pub out_f32: u64,
    pub q_batch_stride: i64,
    pub q_head_stride: i64,
    pub q_row_stride: i64,
    pub k_batch_stride: i64,
    pub k_head_stride: i64,
    pub k_row_stride: i64,
    pub v_batch_stride: i64,
    pub v_head_stride: i64,
    pub v_row_stride: i64,
    pub dout_batch_stride: i64,
    pub dout_head_stride: i64,
    pub dout_row_stride: i64,
    pub drop_seed: u64,
    pub drop_offset: u64,
    pub batch: i32,
    pub heads_q: i32,
    pub heads_kv: i32,
    pub seq_q: i32,
    pub seq_k: i32,
    pub num_segments: i32,
    pub head_dim: i32,
    pub window_left: i32,
    pub window_right: i32,
    pub scale: f32,
    pub softcap: f32,
    pub drop_keep_scale: f32,
    pub drop_threshold: u32,
    pub num_splits: i32,
    pub max_q_len: i32,
    pub max_k_len: i32,
}

impl AttnParams {
    /// The sizes, masks, softcap and dropout of `pb` (no addresses or strides yet).
    pub fn from_problem(pb: &Problem) -> AttnParams {
        let max_q = pb.segments.iter().map(|s| s.q_len).max().unwrap_or(0);
        let max_k = pb.segments.iter().map(|s| s.k_len).max().unwrap_or(0);
        let (threshold, keep, seed, offset) = match pb.dropout {
            Some(d) => {
                let t = attune_tensor::cpu::philox::threshold_24(d.p);
                (t, (1.0 / (1.0 - d.p)) as f32, d.seed, d.offset)
            }
            None => (0, 1.0, 0, 0),
        };
        let bound_cap = (pb.seq_q + pb.seq_k).min(i32::MAX as usize / 4);
        AttnParams {
            batch: pb.batch as i32,
            heads_q: pb.heads_q as i32,
            heads_kv: pb.heads_kv as i32,
            seq_q: pb.seq_q as i32,
            seq_k: pb.seq_k as i32,
            num_segments: pb.segments.len() as i32,
            head_dim: pb.head_dim as i32,
            // A bound of seq_q + seq_k already reaches every key; clamping there keeps the
            // kernels' `diag + bound + 1` in i32 range.
            window_left: pb.left.map_or(-1, |l| l.min(bound_cap) as i32),
            window_right: pb.right.map_or(-1, |r| r.min(bound_cap) as i32),
            scale: pb.scale as f32,
            softcap: pb.softcap.unwrap_or(0.0) as f32,
            drop_keep_scale: keep,
            drop_threshold: threshold,
            drop_seed: seed,
            drop_offset: offset,
            num_splits: 1,
            max_q_len: max_q as i32,
            max_k_len: max_k as i32,
            ..Default::default()
        }
    }

    /// The segment table of `pb`, flattened for upload.
    pub fn segment_table(pb: &Problem) -> Vec<i32> {
        pb.segments.iter().flat_map(|s| [s.batch, s.q_start, s.q_len, s.k_start, s.k_len].map(|x| x as i32)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_c_struct() {
        // 15 pointers + 12 strides + 2 u64 = 29 eight-byte fields, then 16 four-byte fields: the C struct in attn_common.cuh has the same sequence and size.
        assert_eq!(std::mem::size_of::<AttnParams>(), 29 * 8 + 16 * 4);
        assert_eq!(std::mem::align_of::<AttnParams>(), 8);
    }
}
