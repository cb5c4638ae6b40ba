//! CPU flash attention, forward and forward+backward, at a training-like shape with and
//! without the causal mask. Throughput counts FLOPs by docs/benchmarks.md (forward
//! 4*B*H*Sq*Sk*D, halved when causal; forward+backward 3.5x), so `cargo xtask bench` shows
//! GFLOP/s. The PyTorch peer runs outside criterion: benches/peers/torch_sdpa.py.

use attune_attention::{AttentionParams, flash};
use attune_benches::input;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// (batch, heads, seq, head_dim) of the benched shapes.
const SHAPES: [(usize, usize, usize, usize); 2] = [(1, 8, 1024, 64), (4, 8, 512, 128)];

fn flops(b: usize, h: usize, s: usize, d: usize, causal: bool) -> f64 {
    let f = 4.0 * (b * h * s * s * d) as f64;
    if causal { f / 2.0 } else { f }
}

fn label(b: usize, h: usize, s: usize, d: usize, causal: bool) -> String {
    format!("b{b}h{h}s{s}d{d}{}", if causal { "_causal" } else { "" })
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_fwd_f32");
    g.sample_size(10);
    for (b, h, s, d) in SHAPES {
        let (q, k, v) = (input(&[b, h, s, d], 1), input(&[b, h, s, d], 2), input(&[b, h, s, d], 3));
        for causal in [false, true] {
            let p = AttentionParams::new().causal(causal);
            g.throughput(Throughput::Elements(flops(b, h, s, d, causal) as u64));
            g.bench_function(BenchmarkId::new("attune", label(b, h, s, d, causal)), |bch| {
                bch.iter(|| flash::forward(&q, &k, &v, &p).unwrap())
            });
        }
    }
    g.finish();
}

fn forward_backward(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_fwdbwd_f32");
    g.sample_size(10);
    for (b, h, s, d) in SHAPES {
        let (q, k, v) = (input(&[b, h, s, d], 1), input(&[b, h, s, d], 2), input(&[b, h, s, d], 3));
        let dout = input(&[b, h, s, d], 4);
        for causal in [false, true] {
            let p = AttentionParams::new().causal(causal);
            g.throughput(Throughput::Elements((3.5 * flops(b, h, s, d, causal)) as u64));
            g.bench_function(BenchmarkId::new("attune", label(b, h, s, d, causal)), |bch| {
                bch.iter(|| {
                    let o = flash::forward(&q, &k, &v, &p).unwrap();
                    flash::backward(&q, &k, &v, &o.out, &o.lse, &dout, &p).unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, forward, forward_backward);
criterion_main!(benches);
