//! `cargo xtask bench-attn --backend cuda`: the fused kernels on a GPU, timed with CUDA events
//! and an L2 flush before every repeat, against an unfused baseline in the same run (cuBLAS
//! matmul, the softmax kernel, cuBLAS matmul), with TFLOP/s and the share of the device's
//! peak. Without a GPU it prints the static report instead: registers, spills, shared memory
//! and theoretical occupancy of every kernel the dispatcher would launch for the shape, on
//! sm_80 and sm_90, from NVRTC + ptxas (labelled static: nothing is timed).

use crate::bench_attn::{BenchAttnArgs, fwd_flops, median};
use crate::build_kernels::{EntryLaunch, analyse, json, print_table};
use anyhow::{Context, Result, bail};
use attune_attention::{AttentionParams, validate};
use attune_cuda::toolchain;
use attune_tensor::{DType, Device, Rng, Tensor};
use std::process::ExitCode;

/// Bytes written between repeats to evict the inputs from L2 (larger than any current L2).
const L2_FLUSH_BYTES: usize = 256 << 20;

/// Dense tensor-core and f32 (non-tensor) peaks in TFLOP/s of the GPUs we know, by name and
/// compute capability (vendor datasheets; SXM parts unless the name says PCIe).
fn peak_tflops(name: &str, sm: u32, dtype: DType) -> Option<f64> {
    let lowp = dtype != DType::F32;
    let (f16, f32) = match sm {
        80 if name.contains("A100") => (312.0, 19.5),
        86 if name.contains("A10") => (125.0, 31.2),
        89 if name.contains("L4") => (121.0, 30.3),
        89 if name.contains("4090") => (165.2, 82.6),
        90 if name.contains("PCIe") => (756.0, 51.0),
        90 if name.contains("H100") || name.contains("H200") => (989.0, 67.0),
        _ => return None,
    };
    Some(if lowp { f16 } else { f32 })
}

/// The attention parameters and CPU-side geometry of the benchmarked shape.
fn problem(args: &BenchAttnArgs, dtype: DType) -> Result<(AttentionParams, attune_attention::Problem)> {
    let [b, hq, sq, d] = args.shape;
    let (sk, hkv) = (args.seq_k.unwrap_or(sq), args.heads_kv.unwrap_or(hq));
    let p = AttentionParams::new().causal(args.causal);
    // Tiny stand-ins with the real dims are enough for validation: a zero-stride expand.
    let z = |h: usize, s: usize| Tensor::zeros([1, 1, 1, 1], dtype, &Device::Cpu)?.broadcast_as([b, h, s, d]);
    let pb = validate(&z(hq, sq)?, &z(hkv, sk)?, &z(hkv, sk)?, &p)?;
    Ok((p, pb))
}

/// The static report: what would run, and its ptxas resources.
fn static_report(args: &BenchAttnArgs, dtype: DType, why: &str) -> Result<ExitCode> {
    let (_, pb) = problem(args, dtype)?;
    let text = !args.json;
    if text {
        println!("no GPU ({why}): static report, no timings.");
        println!(
            "kernels the dispatcher would launch for this shape{} on sm_80 (108 SMs) and sm_90 (132 SMs), from NVRTC + ptxas:",
            if args.bwd { " (forward and backward)" } else { "" }
        );
    }
    let nv = toolchain::nvrtc().context("NVRTC is needed for the static report (run `cargo xtask cuda-tools`)")?;
    let ptxas = nv.toolchain.ptxas().context("ptxas is needed")?.to_path_buf();
    let work = std::env::temp_dir().join(format!("attune-bench-attn-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    for (sm, sms) in [(80u32, 108usize), (90, 132)] {
        let planned = attune_attention::gpu::planned_variants(&pb, dtype, sm, sms, args.bwd, false)?;
        for (kind, spec, entries) in planned {
            if text {
                println!("  sm_{sm}: {kind}: {} [{}]", spec.file, spec.defines_string());
            }
            let launches: Vec<EntryLaunch> =
                entries.iter().map(|(e, t, smem)| EntryLaunch::new(e, *t).with_dynamic_smem(*smem)).collect();
            analyse(&spec, &launches, sm, &ptxas, &work, &mut rows, &mut failures);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if text {
        print_table(&rows);
    } else {
        println!(
            "{}",
            serde_json::json!({ "impl": "attune", "backend": "cuda", "static": true, "no_gpu": why, "kernels": json(&rows) })
        );
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The unfused baseline: `softmax(q k^T * scale + mask) v` from tensor ops (cuBLAS matmul and
/// the softmax kernel), K/V heads repeated for GQA.
fn unfused(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let (hq, hkv) = (q.dims()[1], k.dims()[1]);
    let rep = |t: &Tensor| -> Result<Tensor> {
        if hq == hkv {
            return Ok(t.clone());
        }
        let [b, h, s, d] = [t.dims()[0], t.dims()[1], t.dims()[2], t.dims()[3]];
        Ok(t.unsqueeze(2)?.broadcast_as([b, h, hq / h, s, d])?.reshape([b, hq, s, d])?)
    };
    let (k, v) = (rep(k)?, rep(v)?);
    let mut s = q.matmul(&k.transpose(2usize, 3usize)?)?.mul_scalar(scale)?;
    if let Some(m) = mask {
        s = s.add(m)?;
    }
    Ok(s.softmax(3usize)?.matmul(&v)?)
}

/// Times `f` on the GPU: warm-up, then per repeat an L2 flush and a CUDA-event-timed run.
fn gpu_time(
    exec: &attune_cuda::cuda::CudaExecutor,
    flush: &attune_cuda::GpuBuffer,
    warmup: usize,
    iters: usize,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let zeros = vec![0u8; flush.len()];
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        flush.write(0, &zeros)?;
        let mut err = None;
        let ms = exec.time_ms(&mut || {
            if let Err(e) = f() {
                err = Some(e);
            }
            Ok(())
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        t.push(ms);
    }
    Ok(median(t))
}

/// The timed GPU run.
fn timed(args: &BenchAttnArgs, dtype: DType) -> Result<ExitCode> {
    let (p, pb) = problem(args, dtype)?;
    let dev = Device::Cuda(0);
    let gpu = attune_tensor::gpu::runtime_device("bench-attn", dev)?;
    let exec = gpu.cuda_executor().context("device 0 is not a CUDA executor")?;
    let flush = gpu.alloc(L2_FLUSH_BYTES)?;
    let [b, hq, sq, d] = args.shape;
    let (sk, hkv) = (pb.seq_k, pb.heads_kv);
    let mut rng = Rng::new(0);
    let q = rng.randn([b, hq, sq, d], dtype, &Device::Cpu)?.to_device(&dev)?;
    let k = rng.randn([b, hkv, sk, d], dtype, &Device::Cpu)?.to_device(&dev)?;
    let v = rng.randn([b, hkv, sk, d], dtype, &Device::Cpu)?.to_device(&dev)?;
    let dout = rng.randn([b, hq, sq, d], dtype, &Device::Cpu)?.to_device(&dev)?;
    let mask = if args.causal {
        // Additive bottom-right causal mask for the baseline.
        let m: Vec<f32> =
            (0..sq * sk).map(|x| if x % sk <= x / sk + sk - sq.min(sk) { 0.0 } else { f32::NEG_INFINITY }).collect();
        Some(Tensor::from_vec(m, [sq, sk], &Device::Cpu)?.to_dtype(dtype)?.to_device(&dev)?)
    } else {
        None
    };
    let flops = fwd_flops(b, hq, sq, sk, d, args.causal);
    let (w, n) = (args.warmup, args.iters);
    let fused = gpu_time(exec, &flush, w, n, &mut || {
        attune_attention::gpu::forward(&q, &k, &v, &p)?;
        Ok(())
    })?;
    let base = gpu_time(exec, &flush, w, n, &mut || {
        unfused(&q, &k, &v, pb.scale, mask.as_ref())?;
        Ok(())
    })?;
    let peak = peak_tflops(exec.name(), exec.compute_capability(), dtype);
    let tf = |ms: f64, mult: f64| mult * flops / (ms * 1e9);
    let fb = if args.bwd {
        Some(gpu_time(exec, &flush, w, n, &mut || {
            let o = attune_attention::gpu::forward(&q, &k, &v, &p)?;
            attune_attention::gpu::backward(&q, &k, &v, &o.out, &o.lse, &dout, &p)?;
            Ok(())
        })?)
    } else {
        None
    };
    if args.json {
        let mut j = serde_json::json!({
            "impl": "attune", "backend": "cuda", "device": exec.name(), "sm": exec.compute_capability(),
            "batch": b, "heads_q": hq, "heads_kv": hkv, "seq_q": sq, "seq_k": sk, "head_dim": d,
            "causal": args.causal, "dtype": args.dtype, "iters": n, "timer": "cuda_events_l2_flushed",
            "fwd_ms": fused, "fwd_tflops": tf(fused, 1.0), "unfused_fwd_ms": base,
            "unfused_fwd_tflops": tf(base, 1.0), "peak_tflops": peak,
        });
        if let Some(t) = fb {
            j["fwdbwd_ms"] = t.into();
            j["fwdbwd_tflops"] = tf(t, 3.5).into();
        }
        println!("{j}");
        return Ok(ExitCode::SUCCESS);
    }
    let share = |t: f64| peak.map_or("peak n/a".to_string(), |pk| format!("{:.1}% of {pk} peak", 100.0 * t / pk));
    println!(
        "attune cuda attention {}: b {b} hq {hq} hkv {hkv} sq {sq} sk {sk} d {d}{} on {} (sm_{}), CUDA events, L2 flushed, median of {n}",
        args.dtype,
        if args.causal { " causal" } else { "" },
        exec.name(),
        exec.compute_capability()
    );
    println!("  fused forward    {fused:>9.3} ms {:>7.1} TFLOP/s ({})", tf(fused, 1.0), share(tf(fused, 1.0)));
    println!("  unfused forward  {base:>9.3} ms {:>7.1} TFLOP/s; fused is {:.2}x faster", tf(base, 1.0), base / fused);
    if let Some(fb) = fb {
        println!("  fused fwd+bwd    {fb:>9.3} ms {:>7.1} TFLOP/s ({})", tf(fb, 3.5), share(tf(fb, 3.5)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `bench-attn --backend cuda`.
pub fn run(args: &BenchAttnArgs) -> Result<ExitCode> {
    let dtype: DType = args.dtype.parse().map_err(anyhow::Error::msg)?;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        bail!("--dtype {dtype} is not benchmarked; use f32, f16 or bf16");
    }
    if args.iters < 10 {
        bail!("--iters {} is too few: report medians of at least 10 timed runs, docs/benchmarks.md", args.iters);
    }
    match attune_cuda::cuda::unavailable_reason() {
        Some(why) => static_report(args, dtype, &why),
        None => timed(args, dtype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_are_known_for_the_datacenter_parts_and_absent_otherwise() {
        assert_eq!(peak_tflops("NVIDIA A100-SXM4-80GB", 80, DType::F16), Some(312.0));
        assert_eq!(peak_tflops("NVIDIA H100 80GB HBM3", 90, DType::BF16), Some(989.0));
        assert_eq!(peak_tflops("NVIDIA H100 PCIe", 90, DType::F32), Some(51.0));
        assert_eq!(peak_tflops("Some GPU", 75, DType::F16), None);
    }
}
