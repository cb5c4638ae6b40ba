//! `cargo xtask peak [--threads N]`: the CPU's arithmetic peaks on this machine, the
//! denominators of docs/benchmarks.md's "share of peak": 512-bit f32 FMA (`vfmadd231ps`, 32
//! flops an instruction) and, where the CPU has AVX512_BF16, the bf16 dot product
//! (`vdpbf16ps`, 64 flops), and where it has AMX the tile product (`tdpbf16ps`, 16,384 flops).
//! Each thread runs 12 independent accumulator chains (4 result tiles for AMX), enough to
//! cover the instructions' latency, from registers only; the best of 5 runs is reported.

use std::time::Instant;

use anyhow::{Result, bail};

/// Options of `cargo xtask peak`.
#[derive(clap::Args, Debug)]
pub struct PeakArgs {
    /// Threads, each looping on its own core (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Loop iterations per thread (12 instructions each).
    #[arg(long, default_value_t = 50_000_000)]
    iters: u64,
}

/// Runs the command.
pub fn run(args: &PeakArgs) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            bail!("this CPU has no AVX-512; the peaks measured here are AVX-512's");
        }
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        // SAFETY: avx512f was detected above.
        let fma = best(threads, args.iters, |n| unsafe { x86::fma_chains(n) }, 12.0 * 32.0);
        println!("f32 FMA (512-bit vfmadd231ps): {fma:.1} GFLOP/s on {threads} thread(s)");
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: avx512bf16 was detected.
            let dp = best(threads, args.iters, |n| unsafe { x86::dpbf16_chains(n) }, 12.0 * 64.0);
            println!(
                "bf16 dot product (512-bit vdpbf16ps): {dp:.1} GFLOP/s on {threads} thread(s) ({:.2}x f32)",
                dp / fma
            );
        } else {
            println!("bf16 dot product: this CPU has no avx512_bf16");
        }
        if attune_tensor::cpu::amx::available() {
            // Tens of thousands of times the work of one FMA round: far fewer rounds.
            let iters = (args.iters / 100).max(1);
            // SAFETY: amx::available() is true.
            let tiles = best(threads, iters, |n| unsafe { attune_tensor::cpu::amx::peak_loop(n) }, 4.0 * 16384.0);
            println!("bf16 tiles (AMX tdpbf16ps): {tiles:.1} GFLOP/s on {threads} thread(s) ({:.2}x f32)", tiles / fma);
        } else {
            println!("bf16 tiles: this CPU (or its kernel) gives no AMX-BF16");
        }
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = args;
        bail!("cargo xtask peak measures x86-64 AVX-512 peaks")
    }
}

/// The best GFLOP/s of 5 runs of `kernel(iters)` on `threads` threads at once.
fn best(threads: usize, iters: u64, kernel: impl Fn(u64) -> f32 + Sync, flops_per_iter: f64) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let sink: f32 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| kernel(iters))).collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            std::hint::black_box(sink);
            threads as f64 * iters as f64 * flops_per_iter / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_chains(iters: u64) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn dpbf16_chains(iters: u64) -> f32 {
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbf16_ps(*x, a, b);
            }
        }
        acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
    }
}
