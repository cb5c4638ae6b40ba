//! f32 matrix multiply through Tensor::matmul against `gemm` called directly, same threads.

use attune_benches::{gemm_direct, input, raw};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn square(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_square_f32");
    g.sample_size(20);
    for n in [256usize, 512, 1024] {
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        let (a, b) = (input(&[n, n], 1), input(&[n, n], 2));
        g.bench_with_input(BenchmarkId::new("attune", n), &n, |bch, _| bch.iter(|| a.matmul(&b).unwrap()));
        let (ra, rb) = (raw(n * n, 1), raw(n * n, 2));
        let mut dst = vec![0f32; n * n];
        g.bench_with_input(BenchmarkId::new("gemm_direct", n), &n, |bch, _| {
            bch.iter(|| gemm_direct(&mut dst, &ra, &rb, n, n, n))
        });
    }
    g.finish();
}

fn transformer(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_transformer_f32");
    g.sample_size(20);
    // (tokens, d_model) @ (d_model, 4 d_model): an MLP up-projection; then a batched
    // attention-score product (batch*heads, seq, head_dim) @ (.., head_dim, seq) through a
    // transposed view, which must not copy.
    let (m, k, n) = (2048usize, 256, 1024);
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    let (x, w) = (input(&[m, k], 3), input(&[n, k], 4));
    g.bench_function("mlp_up_x_wT_2048x256x1024", |b| b.iter(|| x.matmul(&w.t().unwrap()).unwrap()));
    let (bh, s, d) = (32usize, 256, 64);
    g.throughput(Throughput::Elements((2 * bh * s * s * d) as u64));
    let (q, kk) = (input(&[bh, s, d], 5), input(&[bh, s, d], 6));
    g.bench_function("scores_q_kT_32x256x64", |b| b.iter(|| q.matmul(&kk.t().unwrap()).unwrap()));
    g.finish();
}

criterion_group!(benches, square, transformer);
criterion_main!(benches);
