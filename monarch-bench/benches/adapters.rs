//! MoRe vs LoRA vs the dense base layer at a RoBERTa-large projection size (1024×1024, f32,
//! 128 tokens): the adapter path alone (`ΔW x`) and the full adapted forward `W0 x + b + ΔW x`,
//! plus one orthogonal GS application (GSOFT's `Q x`, b = 32).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use monarch::gs::{OrthGs, OrthMap};
use monarch::more::{Adapter, LoraAdapter, MoReAdapter};
use monarch::primitives::random::{normal_matrix, uniform_array3};

fn bench(c: &mut Criterion) {
    let (n, batch, rank, nb) = (1024, 128, 4, 4);
    let w0 = normal_matrix::<f32>((n, n), 0.03, 1);
    let x = normal_matrix::<f32>((batch, n), 1.0, 2);
    let (s1, s2) = MoReAdapter::<f32>::shapes(n, n, nb, rank).unwrap();
    let more = MoReAdapter::from_factors(
        w0.clone(),
        None,
        uniform_array3(s1, 0.1, 3),
        uniform_array3(s2, 0.1, 4),
        0.0,
    )
    .unwrap();
    let lora = LoraAdapter::from_factors(
        w0.clone(),
        None,
        normal_matrix((rank, n), 0.03, 5),
        normal_matrix((n, rank), 0.03, 6),
        0.0,
    )
    .unwrap();
    let mut g = c.benchmark_group("adapters_1024x1024_b128_f32");
    g.bench_function("dense_base_forward", |b| {
        b.iter(|| black_box(x.dot(&w0.t())))
    });
    g.bench_function("more_delta_only", |b| {
        b.iter(|| black_box(more.adapter_output(x.view()).unwrap()))
    });
    g.bench_function("lora_delta_only", |b| {
        b.iter(|| black_box(lora.adapter_output(x.view()).unwrap()))
    });
    g.bench_function("more_forward", |b| {
        b.iter(|| black_box(more.forward(x.view()).unwrap()))
    });
    g.bench_function("lora_forward", |b| {
        b.iter(|| black_box(lora.forward(x.view()).unwrap()))
    });
    let q = OrthGs::from_params(
        vec![
            uniform_array3::<f32>((32, 32, 32), 0.1, 7),
            uniform_array3::<f32>((32, 32, 32), 0.1, 8),
        ],
        OrthMap::Cayley,
    )
    .unwrap();
    g.bench_function("gs_orth_q_apply_b32", |b| {
        b.iter(|| black_box(q.forward(x.view()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
