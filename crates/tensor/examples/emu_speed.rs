//! How fast the CUDA emulator runs a small kernel: the median time of one softmax launch over
//! a (rows, cols) f32 tensor on `Device::Emu` (the module is compiled and cached before
//! timing), next to the same op on the CPU backend.
//!
//! `cargo run --release -p attune-tensor --example emu_speed -- [rows] [cols] [repeats]`

use attune_tensor::{DType, Device, Rng, Tensor};
use std::time::Instant;

fn median_ms(x: &Tensor, repeats: usize) -> attune_tensor::Result<f64> {
    let _ = x.softmax(-1isize)?; // compile / warm up
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let y = x.softmax(-1isize)?;
        drop(y);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> attune_tensor::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (rows, cols, repeats) =
        (args.first().copied().unwrap_or(64), args.get(1).copied().unwrap_or(256), args.get(2).copied().unwrap_or(50));
    let x = Rng::new(0).randn([rows, cols], DType::F32, &Device::Cpu)?;
    let cpu = median_ms(&x, repeats)?;
    let emu = median_ms(&x.to_device(&Device::Emu)?, repeats)?;
    println!(
        "softmax f32 ({rows} x {cols}), median of {repeats}, {} rayon threads: emu {emu:.3} ms per launch, cpu {cpu:.3} ms (emu/cpu {:.0}x)",
        rayon::current_num_threads(),
        emu / cpu
    );
    Ok(())
}
