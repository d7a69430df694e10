//! Log-space Monarch multiply `log(M · exp(X))` against the dense log-sum-exp multiply with the
//! same dense matrix, f32, batch 64.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use monarch::circuit::{log_matmul_dense, MonarchChain};
use monarch::primitives::random::normal_matrix;
use monarch::Par;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_matmul");
    g.sample_size(10);
    for (n, b) in [(1024usize, 32usize), (4096, 64)] {
        let chain =
            MonarchChain::<f32>::random_stochastic(&[(b, n / b, n / b), (b, n / b, n / b)], 1.0, 1)
                .unwrap();
        let dense = chain.to_dense();
        let x = normal_matrix::<f32>((64, n), 2.0, 2);
        g.bench_with_input(BenchmarkId::new("monarch", n), &n, |bch, _| {
            bch.iter(|| black_box(chain.log_matmul(x.view(), Par::Rayon).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("dense", n), &n, |bch, _| {
            bch.iter(|| black_box(log_matmul_dense(dense.view(), x.view(), Par::Rayon).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
