//! The Rust mirror of `AttnParams` has the C struct's layout: a probe kernel on the emulator
//! reports the struct's size and field offsets as its compiler lays them out.

use attune_attention::gpu::abi::AttnParams;
use attune_cuda::{Dim3, GpuDevice, KernelArg, LaunchPlan, ModuleSpec};
use std::mem::offset_of;

#[test]
fn attn_params_layout_matches_the_c_struct() {
    let dev = GpuDevice::emu().expect("the emulator needs a host C++ compiler");
    let out = dev.alloc_zeroed(12 * 8).unwrap();
    let p = AttnParams { seq_k: 513, heads_kv: 7, ..Default::default() };
    let spec = ModuleSpec::new(
        "test/attn_abi.cu",
        [("HD".to_string(), "8".to_string()), ("ATTN_DTYPE".to_string(), "0".to_string())],
    );
    let plan = LaunchPlan::new(
        spec,
        "attn_abi_probe",
        Dim3::x(1),
        Dim3::x(32),
        vec![KernelArg::pod(&p), KernelArg::Ptr(out.device_ptr(0))],
    );
    dev.launch(&plan).unwrap();
    let bytes = out.to_host().unwrap();
    let got: Vec<i64> = bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let want = [
        std::mem::size_of::<AttnParams>(),
        offset_of!(AttnParams, segments),
        offset_of!(AttnParams, out_f32),
        offset_of!(AttnParams, q_batch_stride),
        offset_of!(AttnParams, dout_row_stride),
        offset_of!(AttnParams, drop_offset),
        offset_of!(AttnParams, batch),
        offset_of!(AttnParams, window_right),
        offset_of!(AttnParams, scale),
        offset_of!(AttnParams, drop_threshold),
        offset_of!(AttnParams, max_k_len),
    ];
    let want: Vec<i64> = want.iter().map(|&x| x as i64).chain([513 * 1000 + 7]).collect();
    assert_eq!(got, want, "C layout (size, offsets..., probe value) vs the Rust mirror");
}
