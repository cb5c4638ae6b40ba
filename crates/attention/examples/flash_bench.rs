//! Throughput of the CPU flash attention on the issue's shapes, several at once, and the tile
//! micro-kernel against the `gemm` crate (`--kernels`). For comparisons with PyTorch use
//! `cargo xtask bench-attn` and `benches/peers/torch_sdpa.py` (benches/peers/README.md).
//!
//! ```text
//! cargo run --release -p attune-attention --example flash_bench -- [--threads 2] [--reps 10]
//!     [--mode fwd|fwdbwd|both] [--causal true|false|both] [--shape B,H,S,D] [--kernels] [--cpu]
//!     [--dtype f32|f16|bf16] [--dropout P]
//! ```
//! `--cpu` reports CPU seconds (all threads) instead of wall-clock seconds; `--dtype f16|bf16`
//! and `--dropout P` time those paths (the line then says so).
//! FLOPs (docs/benchmarks.md): forward `4 B H Sq Sk D`, halved when causal; backward 2.5x forward,
//! so forward+backward counts 3.5x. `--kernels` instead times the tile micro-kernel against
//! the `gemm` crate on the attention passes' tile shapes.

use attune_attention::{AttentionParams, flash};
use attune_tensor::cpu::gemm::{MatRef, Threads, gemm};
use attune_tensor::{DType, Device, Rng, Tensor};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHAPES: [[usize; 4]; 3] = [[4, 8, 1024, 64], [1, 16, 2048, 64], [2, 8, 1024, 128]];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU time of every thread of this process so far, in seconds (`/proc/self/task/*/schedstat`,
/// nanosecond resolution). With other jobs on the cores it stays close to the time the work
/// needs, where wall-clock time also counts the waits: useful for tuning single-threaded.
fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                ns += s.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

/// Median seconds of `reps` runs after two warm-ups: wall-clock, or CPU time with `cpu`.
fn time_with(reps: usize, cpu: bool, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let (t, c) = (Instant::now(), cpu_seconds());
                f();
                if cpu { cpu_seconds() - c } else { t.elapsed().as_secs_f64() }
            })
            .collect(),
    )
}

fn kernels(reps: usize) {
    let mut rng = Rng::new(1);
    for d in [64usize, 128] {
        let buf = |n: usize, rng: &mut Rng| rng.randn([n], DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap();
        let (k, qt, p, v) =
            (buf(64 * d, &mut rng), buf(d * 64, &mut rng), buf(64 * 64, &mut rng), buf(64 * d, &mut rng));
        let mut c = vec![0f32; 64 * d.max(64)];
        let iters = 20000;
        let flops = 2.0 * 64.0 * 64.0 * d as f64 * iters as f64;
        // S^T (64 keys x 64 queries, k = d): K rows broadcast, Q^T rows as vectors.
        let ours_s = time_with(reps, true, || {
            for _ in 0..iters {
                flash::kernel::gemm(64, 64, d, &k, d, 1, &qt, 64, &mut c, 64, flash::kernel::Acc::Overwrite);
            }
        });
        let theirs_s = time_with(reps, true, || {
            for _ in 0..iters {
                gemm(
                    64,
                    64,
                    d,
                    MatRef::new(&k, 0, d, 1),
                    MatRef::new(&qt, 0, 64, 1),
                    &mut c[..64 * 64],
                    Threads::Single,
                )
                .unwrap();
            }
        });
        // O += P V (64 queries x d, k = 64 keys): P read transposed from the score tile.
        let ours_o = time_with(reps, true, || {
            for _ in 0..iters {
                flash::kernel::gemm(64, d, 64, &p, 1, 64, &v, d, &mut c, d, flash::kernel::Acc::Add);
            }
        });
        let theirs_o = time_with(reps, true, || {
            for _ in 0..iters {
                gemm(64, d, 64, MatRef::new(&p, 0, 1, 64), MatRef::new(&v, 0, d, 1), &mut c[..64 * d], Threads::Single)
                    .unwrap();
            }
        });
        let g = |t: f64| flops / t / 1e9;
        println!(
            "kernel d={d} S=KQ^T 64x64x{d}: ours {:.1} GFLOP/s, gemm crate {:.1} GFLOP/s | O+=PV 64x{d}x64: ours {:.1}, gemm crate {:.1}",
            g(ours_s),
            g(theirs_s),
            g(ours_o),
            g(theirs_o)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").map_or(2, |s| s.parse().expect("--threads N"));
    let reps: usize = arg(&args, "--reps").map_or(10, |s| s.parse().expect("--reps N"));
    let cpu = args.iter().any(|a| a == "--cpu");
    let dropout: f64 = arg(&args, "--dropout").map_or(0.0, |s| s.parse().expect("--dropout P"));
    let dtype: DType = arg(&args, "--dtype").map_or(DType::F32, |s| s.parse().expect("--dtype f32|f16|bf16"));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool");
    if args.iter().any(|a| a == "--kernels") {
        kernels(reps);
        return;
    }
    let modes: Vec<&str> = match arg(&args, "--mode").as_deref() {
        Some("fwd") => vec!["fwd"],
        Some("fwdbwd") => vec!["fwdbwd"],
        _ => vec!["fwd", "fwdbwd"],
    };
    let causals: Vec<bool> = match arg(&args, "--causal").as_deref() {
        Some("true") => vec![true],
        Some("false") => vec![false],
        _ => vec![false, true],
    };
    let shapes: Vec<[usize; 4]> = match arg(&args, "--shape") {
        Some(s) => {
            let v: Vec<usize> = s.split(',').map(|x| x.parse().expect("--shape B,H,S,D")).collect();
            vec![[v[0], v[1], v[2], v[3]]]
        }
        None => SHAPES.to_vec(),
    };
    for [b, h, s, d] in shapes {
        let mut rng = Rng::new(0);
        let mut t = || rng.randn([b, h, s, d], DType::F32, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let (q, k, v, dout): (Tensor, Tensor, Tensor, Tensor) = (t(), t(), t(), t());
        for &causal in &causals {
            let mut params = AttentionParams::new().causal(causal);
            if dropout > 0.0 {
                params = params.dropout(dropout, 1234, 0);
            }
            for &mode in &modes {
                let mut flops = 4.0 * (b * h) as f64 * (s * s * d) as f64 / if causal { 2.0 } else { 1.0 };
                let secs = if mode == "fwd" {
                    time_with(reps, cpu, || {
                        flash::forward(&q, &k, &v, &params).unwrap();
                    })
                } else {
                    flops *= 3.5;
                    time_with(reps, cpu, || {
                        let f = flash::forward(&q, &k, &v, &params).unwrap();
                        flash::backward(&q, &k, &v, &f.out, &f.lse, &dout, &params).unwrap();
                    })
                };
                let extra = match (dtype, dropout > 0.0) {
                    (DType::F32, false) => String::new(),
                    _ => format!(" ({dtype}, dropout {dropout})"),
                };
                println!(
                    "flash {b},{h},{s},{d} causal={causal} {mode} median_ms={:.2} gflops={:.1}{extra}",
                    secs * 1e3,
                    flops / secs / 1e9
                );
            }
        }
    }
}
