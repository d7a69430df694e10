//! Block-diagonal products and gradients: `cargo bench -p monarch-bench --bench blockdiag`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use monarch::ndarray::Array2;
use monarch::primitives::random::{normal_matrix, uniform_array3};
use monarch::{BlockDiag, Par};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("blockdiag_f32");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (nb, size) in [(16usize, 16usize), (32, 32), (64, 64)] {
        let bd = BlockDiag::new(uniform_array3::<f32>((nb, size, size), 1.0, 1)).unwrap();
        let n = nb * size;
        for batch in [1usize, 64, 1024] {
            let x = normal_matrix::<f32>((batch, n), 1.0, 2);
            let gr = normal_matrix::<f32>((batch, n), 1.0, 3);
            let mut y = Array2::<f32>::zeros((batch, n));
            let id = format!("nb{nb}_b{size}_batch{batch}");
            g.throughput(Throughput::Elements(bd.flops(batch) as u64));
            g.bench_function(BenchmarkId::new("matmul", &id), |b| {
                b.iter(|| bd.matmul_into(x.view(), y.view_mut(), Par::Rayon).unwrap())
            });
            g.bench_function(BenchmarkId::new("vjp", &id), |b| {
                b.iter(|| bd.vjp(x.view(), gr.view()).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
