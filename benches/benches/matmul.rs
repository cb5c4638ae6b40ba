//! f32 matrix multiply through Tensor::matmul against `gemm` called directly, same threads; bf16
//! through Tensor::matmul (the AVX512_BF16 dot-product kernel where the CPU has it) against the
//! widened f32 path. The PyTorch peer of the bf16 group: benches/peers/torch_matmul.py.

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

fn square_bf16(c: &mut Criterion) {
    use attune_tensor::DType;
    use attune_tensor::cpu::gemm::{MatRef, Threads, gemm_bf16_widened};
    let mut g = c.benchmark_group("matmul_square_bf16");
    g.sample_size(10);
    for n in [512usize, 1024, 2048] {
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        let a = input(&[n, n], 1).to_dtype(DType::BF16).unwrap();
        let b = input(&[n, n], 2).to_dtype(DType::BF16).unwrap();
        g.bench_with_input(BenchmarkId::new("attune", n), &n, |bch, _| bch.iter(|| a.matmul(&b).unwrap()));
        let (ra, rb) = (a.to_vec::<half::bf16>().unwrap(), b.to_vec::<half::bf16>().unwrap());
        let mut dst = vec![half::bf16::ZERO; n * n];
        g.bench_with_input(BenchmarkId::new("widened_f32", n), &n, |bch, _| {
            bch.iter(|| {
                let (l, r) = (MatRef::row_major(&ra, n), MatRef::row_major(&rb, n));
                gemm_bf16_widened(n, n, n, l, r, &mut dst, Threads::Auto).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, square, transformer, square_bf16);
criterion_main!(benches);
