//! Element-wise ops, softmax, and the fixed overhead of a tiny op.

use attune_benches::input;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn overhead(c: &mut Criterion) {
    let (a, b) = (input(&[16], 1), input(&[16], 2));
    c.bench_function("add_16_elements", |bch| bch.iter(|| a.add(&b).unwrap()));
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise_f32_1M");
    let n = 1 << 20;
    g.throughput(Throughput::Elements(n as u64));
    let (a, b) = (input(&[1024, 1024], 1), input(&[1024, 1024], 2));
    let row = input(&[1024], 3);
    g.bench_function("add", |bch| bch.iter(|| a.add(&b).unwrap()));
    g.bench_function("add_broadcast_row", |bch| bch.iter(|| a.add(&row).unwrap()));
    g.bench_function("exp", |bch| bch.iter(|| a.exp().unwrap()));
    g.bench_function("gelu", |bch| bch.iter(|| a.gelu().unwrap()));
    g.bench_function("add_transposed", |bch| bch.iter(|| a.t().unwrap().add(&b).unwrap()));
    g.bench_function("sum_last_dim", |bch| bch.iter(|| a.sum(1usize, false).unwrap()));
    g.bench_function("sum_first_dim", |bch| bch.iter(|| a.sum(0usize, false).unwrap()));
    g.finish();
}

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax_f32");
    let x = input(&[4096, 1024], 4);
    g.throughput(Throughput::Elements(x.elem_count() as u64));
    g.bench_function("last_dim_4096x1024", |bch| bch.iter(|| x.softmax(-1isize).unwrap()));
    g.finish();
}

criterion_group!(benches, overhead, elementwise, softmax);
criterion_main!(benches);
