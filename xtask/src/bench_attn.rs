//! `cargo xtask bench-attn`: median forward and forward+backward times of one attention shape
//! and their GFLOP/s by docs/benchmarks.md (forward `4 * b * hq * sq * sk * d`, halved when causal;
//! backward 2.5x forward, so forward+backward counts 3.5x). The flags match
//! benches/peers/torch_sdpa.py, and `--json` prints the same keys, so the two compare directly.

use crate::parity::{BackendArg, not_built};
use anyhow::{Context, Result, bail};
use attune_attention::AttentionParams;
use attune_attention::cases::Backend;
use attune_tensor::{DType, Device, Rng};
use std::process::ExitCode;
use std::time::Instant;

/// Options of `cargo xtask bench-attn`.
#[derive(clap::Args, Debug)]
pub struct BenchAttnArgs {
    /// Implementation to time.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// Query shape `B,H,S,D` (batch, query heads, query length, head dim).
    #[arg(long, value_parser = parse_shape)]
    pub(crate) shape: [usize; 4],
    /// Key length (default: the query length).
    #[arg(long)]
    pub(crate) seq_k: Option<usize>,
    /// Key/value heads (default: the query heads; fewer is GQA/MQA).
    #[arg(long)]
    pub(crate) heads_kv: Option<usize>,
    /// Causal mask (bottom-right aligned).
    #[arg(long)]
    pub(crate) causal: bool,
    /// Input dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub(crate) dtype: String,
    /// Also time forward + backward.
    #[arg(long)]
    pub(crate) bwd: bool,
    /// Rayon threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    pub(crate) warmup: usize,
    /// Timed runs (at least 10, docs/benchmarks.md); the median is reported.
    #[arg(long, default_value_t = 10)]
    pub(crate) iters: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_shape(s: &str) -> std::result::Result<[usize; 4], String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|e| format!("'{x}' in shape '{s}': {e}")))
        .collect::<std::result::Result<_, _>>()?;
    match v[..] {
        [b, h, s_, d] if b > 0 && h > 0 && s_ > 0 && d > 0 => Ok([b, h, s_, d]),
        _ => Err(format!("shape '{s}' must be four positive integers B,H,S,D, e.g. 4,8,1024,64")),
    }
}

/// Median of a non-empty list of durations in milliseconds.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Forward FLOPs of docs/benchmarks.md.
pub fn fwd_flops(b: usize, hq: usize, sq: usize, sk: usize, d: usize, causal: bool) -> f64 {
    let f = 4.0 * (b * hq) as f64 * sq as f64 * sk as f64 * d as f64;
    if causal { f / 2.0 } else { f }
}

/// Times `f` `warmup + iters` times and returns the median of the timed runs in ms.
fn time_ms(warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(t))
}

/// The measured numbers.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Median forward time.
    pub fwd_ms: f64,
    /// Forward GFLOP/s.
    pub fwd_gflops: f64,
    /// Median forward+backward time, with `--bwd`.
    pub fwdbwd_ms: Option<f64>,
    /// Forward+backward GFLOP/s (3.5x the forward FLOPs), with `--bwd`.
    pub fwdbwd_gflops: Option<f64>,
    /// Threads of the pool.
    pub threads: usize,
}

/// Runs the measurement inside the current rayon pool.
pub fn measure(args: &BenchAttnArgs, backend: Backend) -> Result<BenchResult> {
    let [b, hq, sq, d] = args.shape;
    let (sk, hkv) = (args.seq_k.unwrap_or(sq), args.heads_kv.unwrap_or(hq));
    let dtype: DType = args.dtype.parse().map_err(anyhow::Error::msg)?;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        bail!("--dtype {dtype} is not benchmarked; use f32, f16 or bf16");
    }
    let mut rng = Rng::new(0);
    let dev = Device::Cpu;
    let q = rng.randn([b, hq, sq, d], dtype, &dev)?;
    let k = rng.randn([b, hkv, sk, d], dtype, &dev)?;
    let v = rng.randn([b, hkv, sk, d], dtype, &dev)?;
    let dout = rng.randn([b, hq, sq, d], dtype, &dev)?;
    let p = AttentionParams::new().causal(args.causal);
    let flops = fwd_flops(b, hq, sq, sk, d, args.causal);
    let fwd_ms = time_ms(args.warmup, args.iters, || {
        std::hint::black_box(backend.forward(&q, &k, &v, &p)?);
        Ok(())
    })?;
    let fwdbwd_ms = if args.bwd {
        Some(time_ms(args.warmup, args.iters, || {
            let o = backend.forward(&q, &k, &v, &p)?;
            std::hint::black_box(backend.backward(&q, &k, &v, &o.out, &o.lse, &dout, &p)?);
            Ok(())
        })?)
    } else {
        None
    };
    Ok(BenchResult {
        fwd_ms,
        fwd_gflops: flops / (fwd_ms * 1e6),
        fwdbwd_ms,
        fwdbwd_gflops: fwdbwd_ms.map(|t| 3.5 * flops / (t * 1e6)),
        threads: rayon::current_num_threads(),
    })
}

/// The JSON object of a result (same keys as torch_sdpa.py).
pub fn to_json(args: &BenchAttnArgs, r: &BenchResult) -> serde_json::Value {
    let [b, hq, sq, d] = args.shape;
    let mut j = serde_json::json!({
        "impl": "attune",
        "backend": args.backend.name(),
        "batch": b,
        "heads_q": hq,
        "heads_kv": args.heads_kv.unwrap_or(hq),
        "seq_q": sq,
        "seq_k": args.seq_k.unwrap_or(sq),
        "head_dim": d,
        "causal": args.causal,
        "dtype": args.dtype,
        "threads": r.threads,
        "iters": args.iters,
        "fwd_ms": r.fwd_ms,
        "fwd_gflops": r.fwd_gflops,
    });
    if let (Some(t), Some(g)) = (r.fwdbwd_ms, r.fwdbwd_gflops) {
        j["fwdbwd_ms"] = t.into();
        j["fwdbwd_gflops"] = g.into();
    }
    j
}

/// `cargo xtask bench-attn`.
pub fn run(args: &BenchAttnArgs) -> Result<ExitCode> {
    if args.backend == BackendArg::Cuda {
        return crate::bench_attn_gpu::run(args);
    }
    let Some(backend) = args.backend.backend() else {
        return Ok(not_built(args.backend));
    };
    if args.iters < 10 {
        bail!("--iters {} is too few: report medians of at least 10 timed runs, docs/benchmarks.md", args.iters);
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = args.threads {
        builder = builder.num_threads(t);
    }
    let pool = builder.build().context("building the rayon pool")?;
    let r = pool.install(|| measure(args, backend))?;
    if args.json {
        println!("{}", to_json(args, &r));
    } else {
        let [b, hq, sq, d] = args.shape;
        println!(
            "attune {} attention {}: b {b} hq {hq} hkv {} sq {sq} sk {} d {d}{}, {} threads, median of {}",
            args.backend.name(),
            args.dtype,
            args.heads_kv.unwrap_or(hq),
            args.seq_k.unwrap_or(sq),
            if args.causal { " causal" } else { "" },
            r.threads,
            args.iters
        );
        println!("  forward          {:>10.3} ms {:>8.1} GFLOP/s", r.fwd_ms, r.fwd_gflops);
        if let (Some(t), Some(g)) = (r.fwdbwd_ms, r.fwdbwd_gflops) {
            println!("  forward+backward {t:>10.3} ms {g:>8.1} GFLOP/s");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_explain() {
        assert_eq!(parse_shape("4,8,1024,64").unwrap(), [4, 8, 1024, 64]);
        assert!(parse_shape("4,8,1024").unwrap_err().contains("B,H,S,D"));
        assert!(parse_shape("4,8,x,64").unwrap_err().contains("'x'"));
    }

    #[test]
    fn flops_and_median_follow_the_conventions() {
        assert_eq!(fwd_flops(1, 2, 3, 5, 7, false), 4.0 * 2.0 * 3.0 * 5.0 * 7.0);
        assert_eq!(fwd_flops(1, 2, 3, 5, 7, true), 2.0 * 2.0 * 3.0 * 5.0 * 7.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
