//! Projection of a dense matrix onto the Monarch class (ρ = 1, √n blocks):
//! `cargo bench -p monarch-bench --bench project`. The near-Monarch inputs (a Monarch plus 1% noise, the case of
//! projecting a matrix that is close to the class) take the certified power-iteration path; the
//! unstructured random input exercises the exact SVD fallback (faer's thin SVD per 32 × 32 slice).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use monarch::primitives::random::normal_matrix;
use monarch::Monarch;
use std::time::Duration;

fn near_monarch(n: usize, b: usize) -> monarch::ndarray::Array2<f32> {
    let m = Monarch::<f32>::random(n, b, 1).unwrap().to_dense();
    let noise = normal_matrix::<f32>((n, n), 0.01 / (n as f64).sqrt(), 2);
    m + noise
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("project_f32");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (n, b) in [(1024usize, 32usize), (4096, 64)] {
        let a = near_monarch(n, b);
        g.bench_function(BenchmarkId::new("near_monarch", n), |bch| {
            bch.iter(|| Monarch::project(a.view(), b, b, 1).unwrap())
        });
    }
    let a = normal_matrix::<f32>((1024, 1024), 1.0, 3);
    g.bench_function(BenchmarkId::new("random_dense", 1024), |bch| {
        bch.iter(|| Monarch::project(a.view(), 32, 32, 1).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
