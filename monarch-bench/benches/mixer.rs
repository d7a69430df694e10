//! M2 sequence mixing (bidirectional long convolution over H channels) via the Monarch DFT,
//! the FFT and the direct sum at L ∈ {512, 4096}; and the Monarch dimension mixer
//! `M₄ ReLU(M₃ x)` (a cheap activation, so the timing is the mixing) against a dense MLP of the same widths.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use monarch::mixer::{ConvMethod, ConvPlan, LongConv};
use monarch::primitives::linear::monarch_linear_shapes;
use monarch::primitives::random::normal_matrix;
use monarch::Monarch;
use std::hint::black_box;
use std::time::Duration;

fn seq_mixing(c: &mut Criterion) {
    let h = 16;
    let mut g = c.benchmark_group("m2_sequence_mixing_bidir_H16");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for l in [512usize, 4096] {
        let conv = LongConv::<f32>::bidirectional(
            normal_matrix((h, l), 0.1, 1),
            normal_matrix((h, l), 0.1, 2),
            normal_matrix((1, h), 1.0, 3).row(0).to_owned(),
        )
        .unwrap();
        let u = normal_matrix::<f32>((1, h * l), 1.0, 4)
            .into_shape_with_order((1, h, l))
            .unwrap();
        for (name, m) in [
            ("monarch_dft", ConvMethod::MonarchDft),
            ("fft", ConvMethod::Fft),
            ("direct", ConvMethod::Direct),
        ] {
            let plan = ConvPlan::new(m, l).unwrap();
            g.bench_with_input(BenchmarkId::new(name, l), &l, |b, _| {
                b.iter(|| black_box(conv.forward_with(u.view(), &plan).unwrap()))
            });
        }
    }
    g.finish();
}

fn dim_mixing(c: &mut Criterion) {
    let (rows, d, dh, nb) = (256usize, 1024usize, 4096usize, 32usize);
    let (a1, a2) = monarch_linear_shapes(d, dh, nb).unwrap();
    let (b1, b2) = monarch_linear_shapes(dh, d, nb).unwrap();
    let m3 = Monarch::<f32>::random_factors(a1, a2, 1).unwrap();
    let m4 = Monarch::<f32>::random_factors(b1, b2, 2).unwrap();
    let w1 = normal_matrix::<f32>((dh, d), 0.03, 3);
    let w2 = normal_matrix::<f32>((d, dh), 0.015, 4);
    let x = normal_matrix::<f32>((rows, d), 1.0, 5);
    let mut g = c.benchmark_group("dimension_mixer_1024_4096_rows256");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("monarch_nb32", |b| {
        b.iter(|| {
            let h = m3.matmul(x.view()).unwrap().mapv(|v| v.max(0.0));
            black_box(m4.matmul(h.view()).unwrap())
        })
    });
    g.bench_function("dense", |b| {
        b.iter(|| {
            let h = x.dot(&w1.t()).mapv(|v| v.max(0.0));
            black_box(h.dot(&w2.t()))
        })
    });
    g.finish();
}

criterion_group!(benches, seq_mixing, dim_mixing);
criterion_main!(benches);
