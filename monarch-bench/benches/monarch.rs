//! Monarch products against the dense product on the same data (ndarray `dot`), for
//! n ∈ {256, 1024, 4096} (√n blocks) and batch ∈ {1, 64, 1024}; transposed product; VJP.
//! Sample sizes are small so the whole suite stays short: `cargo bench -p monarch-bench --bench monarch`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use monarch::ndarray::Array2;
use monarch::primitives::random::normal_matrix;
use monarch::{Monarch, MonarchGrad, Par};
use std::time::Duration;

fn sizes() -> Vec<(usize, usize)> {
    vec![(256, 16), (1024, 32), (4096, 64)]
}

fn bench_matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("monarch_matmul_f32");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (n, b) in sizes() {
        let m = Monarch::<f32>::random(n, b, 1).unwrap();
        let mt = m.transpose();
        let dense_t = m.to_dense().t().to_owned();
        for batch in [1usize, 64, 1024] {
            let x = normal_matrix::<f32>((batch, n), 1.0, 2);
            let mut out = Array2::<f32>::zeros((batch, n));
            let id = format!("n{n}_b{b}_batch{batch}");
            g.throughput(Throughput::Elements(m.flops(batch) as u64));
            g.bench_function(BenchmarkId::new("monarch", &id), |bch| {
                bch.iter(|| m.matmul_into(x.view(), out.view_mut(), Par::Rayon).unwrap())
            });
            g.bench_function(BenchmarkId::new("monarch_transpose", &id), |bch| {
                bch.iter(|| {
                    mt.matmul_into(x.view(), out.view_mut(), Par::Rayon)
                        .unwrap()
                })
            });
            // The dense product is slow at the largest size; one size of batch is enough there.
            if n < 4096 || batch <= 64 {
                g.bench_function(BenchmarkId::new("ndarray_dense_dot", &id), |bch| {
                    bch.iter(|| x.dot(&dense_t))
                });
            }
        }
    }
    g.finish();
}

fn bench_vjp(c: &mut Criterion) {
    let mut g = c.benchmark_group("monarch_vjp_f32");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (n, b) in sizes() {
        let m = Monarch::<f32>::random(n, b, 1).unwrap();
        for batch in [1usize, 64, 1024] {
            let x = normal_matrix::<f32>((batch, n), 1.0, 2);
            let gr = normal_matrix::<f32>((batch, n), 1.0, 3);
            g.bench_function(
                BenchmarkId::new("vjp", format!("n{n}_b{b}_batch{batch}")),
                |bch| bch.iter(|| m.vjp(x.view(), gr.view()).unwrap()),
            );
            // The training-loop form: gradients written into buffers reused across calls.
            let mut grads = MonarchGrad::zeros(&m, batch);
            g.bench_function(
                BenchmarkId::new("vjp_into", format!("n{n}_b{b}_batch{batch}")),
                |bch| bch.iter(|| m.vjp_into(x.view(), gr.view(), &mut grads).unwrap()),
            );
            // Autograd style: the forward keeps the first factor's output, the VJP reads it.
            let mut out = Array2::<f32>::zeros((batch, m.out_features()));
            let mut mid = Array2::<f32>::zeros((batch, m.hidden_features()));
            g.bench_function(
                BenchmarkId::new("matmul_keep_into", format!("n{n}_b{b}_batch{batch}")),
                |bch| {
                    bch.iter(|| {
                        m.matmul_keep_into(x.view(), out.view_mut(), mid.view_mut(), Par::Rayon)
                            .unwrap()
                    })
                },
            );
            g.bench_function(
                BenchmarkId::new("vjp_kept_into", format!("n{n}_b{b}_batch{batch}")),
                |bch| {
                    bch.iter(|| {
                        m.vjp_kept_into(x.view(), mid.view(), gr.view(), &mut grads)
                            .unwrap()
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench_matmul, bench_vjp);
criterion_main!(benches);
