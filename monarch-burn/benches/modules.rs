//! Criterion benchmarks of the burn modules on the default (flex, CPU) backend, beside burn's
//! dense `Linear` and the core crate's ndarray product on the same data:
//! `cargo bench -p monarch-burn`. (`bench_burn` prints the GPU tables with ratios.)

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use monarch_burn::{BlockDiagLinear, MonarchAttention, MonarchLinear};

fn linear(c: &mut Criterion) {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let mut g = c.benchmark_group("burn_flex/linear");
    g.sample_size(10);
    for (n, batch) in [(256usize, 512usize), (1024, 256)] {
        let b = (n as f64).sqrt() as usize;
        g.throughput(Throughput::Elements((n * batch) as u64));
        let mon = MonarchLinear::new(n, n, b, false, 0, &ad).expect("layer");
        let bd = BlockDiagLinear::new(n, n, b, false, 0, &ad).expect("layer");
        let dense = LinearConfig::new(n, n).with_bias(false).init(&ad);
        let x = Tensor::<2>::random([batch, n], Distribution::Default, &ad);
        let (mon_i, bd_i, dense_i) = (
            mon.clone().no_grad(),
            bd.clone().no_grad(),
            dense.clone().no_grad(),
        );
        let id = |what: &str| BenchmarkId::new(what, format!("n{n}_b{b}_batch{batch}"));
        g.bench_function(id("monarch_forward"), |bch| {
            bch.iter(|| mon_i.forward(x.clone().detach()).into_data())
        });
        g.bench_function(id("blockdiag_forward"), |bch| {
            bch.iter(|| bd_i.forward(x.clone().detach()).into_data())
        });
        g.bench_function(id("dense_forward"), |bch| {
            bch.iter(|| dense_i.forward(x.clone().detach()).into_data())
        });
        let xg = x.clone().require_grad();
        g.bench_function(id("monarch_forward_backward"), |bch| {
            bch.iter(|| mon.forward(xg.clone()).sum().backward())
        });
        g.bench_function(id("dense_forward_backward"), |bch| {
            bch.iter(|| dense.forward(xg.clone()).sum().backward())
        });
        // The core crate on the same data: what the burn graph costs over the fused kernels.
        let core = mon.to_core().expect("core layer");
        let xa = monarch::ndarray::Array2::from_shape_vec(
            (batch, n),
            x.clone().into_data().try_to_vec::<f32>().expect("f32 data"),
        )
        .expect("shape");
        g.bench_function(id("core_ndarray_forward"), |bch| {
            bch.iter(|| core.forward(xa.view()).expect("forward"))
        });
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let device = Device::flex();
    let mut g = c.benchmark_group("burn_flex/monarch_attention");
    g.sample_size(10);
    for n in [256usize, 1024] {
        let b = (n as f64).sqrt() as usize;
        let heads = 4;
        let shape = [1, heads, n, 64];
        let q = Tensor::<4>::random(shape, Distribution::Default, &device);
        let k = Tensor::<4>::random(shape, Distribution::Default, &device);
        let v = Tensor::<4>::random(shape, Distribution::Default, &device);
        let att = MonarchAttention::new(b, 1);
        g.throughput(Throughput::Elements((heads * n) as u64));
        g.bench_function(
            BenchmarkId::new("forward_T1", format!("N{n}_h{heads}_b{b}")),
            |bch| {
                bch.iter(|| {
                    att.forward(q.clone(), k.clone(), v.clone(), None)
                        .into_data()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, linear, attention);
criterion_main!(benches);
