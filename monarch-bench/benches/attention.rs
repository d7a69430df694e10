//! Exact (flash-style) softmax attention vs MonarchAttention (T = 1, b ≈ √N), f32, d = 64,
//! 12 heads, on seeded inputs.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use monarch::attention::{ExactAttention, MonarchAttention};
use monarch::ndarray::Array4;

fn input(n: usize, seed: u64) -> Array4<f32> {
    monarch::primitives::random::normal_matrix::<f32>((12 * n, 64), 1.0, seed)
        .into_shape_with_order((1, 12, n, 64))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_f32_d64_h12");
    g.sample_size(10);
    for n in [256usize, 1024, 4096] {
        let (q, k, v) = (input(n, 1), input(n, 2), input(n, 3));
        let b = (n as f64).sqrt().round() as usize;
        g.bench_with_input(BenchmarkId::new("exact", n), &n, |bch, _| {
            bch.iter(|| {
                ExactAttention::new()
                    .forward(q.view(), k.view(), v.view(), None)
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("monarch_T1", n), &n, |bch, _| {
            bch.iter(|| {
                MonarchAttention::new(b, 1)
                    .forward(q.view(), k.view(), v.view(), None)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
