//! Times the burn modules on a chosen backend against burn's dense `Linear` on the same data,
//! and prints Markdown tables of milliseconds per call and ratios, measured in one run.
//!
//! - `MonarchLinear` forward and forward + backward at n = 1024 and 4096 (b = √n), batch 8192,
//!   against a dense `Linear` n × n;
//! - `MonarchAttention` (T = 1, b = √N, d = 64, 12 heads) at N = 1K, 4K, 16K, forward.
//!
//! ```text
//! cargo run --release -p monarch-burn --example bench_burn -- [--device flex|wgpu|cuda] [--quick]
//! ```
//! The PyTorch side (the authors' two-`bmm` path and SDPA) on the same GPU is
//! `scripts/bench_torch_gpu.py`.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor};
use monarch_burn::{MonarchAttention, MonarchLinear};
use std::time::Instant;

/// Best of `trials` mean times (ms) of `reps` calls, after a warm-up; `f` must sync the device.
fn best_ms(mut f: impl FnMut(), trials: usize, min_s: f64) -> f64 {
    f();
    let mut reps = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed().as_secs_f64() >= min_s || reps >= 1 << 12 {
            break;
        }
        reps *= 2;
    }
    (0..trials)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> monarch::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (device, name) = monarch_burn::backend::device_from_args("flex")?;
    let (trials, min_s) = if quick { (2, 0.02) } else { (5, 0.2) };
    let sync = |d: &Device| d.sync().expect("device sync");
    println!("# monarch-burn on burn's `{name}` backend, f32");
    println!();
    println!("| n | b | batch | Monarch fwd ms | dense fwd ms | dense/Monarch | Monarch fwd+bwd ms | dense fwd+bwd ms | dense/Monarch |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let cases: &[(usize, usize)] = if quick {
        &[(256, 512)]
    } else {
        &[(1024, 8192), (4096, 8192)]
    };
    for &(n, batch) in cases {
        let b = (n as f64).sqrt() as usize;
        let ad = device.clone().autodiff();
        let mon = MonarchLinear::new(n, n, b, false, 0, &ad)?;
        let dense = LinearConfig::new(n, n).with_bias(false).init(&ad);
        let x = Tensor::<2>::random([batch, n], Distribution::Default, &ad);
        let gy = Tensor::<2>::random([batch, n], Distribution::Default, &ad);
        // Forward without a graph: the inference modules.
        let (mon_i, dense_i) = (mon.clone().no_grad(), dense.clone().no_grad());
        let xi = x.clone().detach();
        // Outputs stay alive across the sync, so no backend can skip or defer them.
        let mf = best_ms(
            || {
                let y = mon_i.forward(xi.clone());
                sync(&ad);
                drop(y)
            },
            trials,
            min_s,
        );
        let df = best_ms(
            || {
                let y = dense_i.forward(xi.clone());
                sync(&ad);
                drop(y)
            },
            trials,
            min_s,
        );
        let xg = x.clone().require_grad();
        let mb = best_ms(
            || {
                let g = (mon.forward(xg.clone()) * gy.clone()).sum().backward();
                sync(&ad);
                drop(g)
            },
            trials,
            min_s,
        );
        let db = best_ms(
            || {
                let g = (dense.forward(xg.clone()) * gy.clone()).sum().backward();
                sync(&ad);
                drop(g)
            },
            trials,
            min_s,
        );
        println!(
            "| {n} | {b} | {batch} | {mf:.3} | {df:.3} | {:.2} | {mb:.3} | {db:.3} | {:.2} |",
            df / mf,
            db / mb
        );
    }
    println!();
    println!("| N | heads | d | b | MonarchAttention T=1 fwd ms |");
    println!("|---|---|---|---|---|");
    let sizes: &[usize] = if quick { &[256] } else { &[1024, 4096, 16384] };
    let heads = if quick { 2 } else { 12 };
    for &n in sizes {
        let b = (n as f64).sqrt() as usize;
        let q = Tensor::<4>::random([1, heads, n, 64], Distribution::Default, &device);
        let k = Tensor::<4>::random([1, heads, n, 64], Distribution::Default, &device);
        let v = Tensor::<4>::random([1, heads, n, 64], Distribution::Default, &device);
        let att = MonarchAttention::new(b, 1);
        let ms = best_ms(
            || {
                let o = att.forward(q.clone(), k.clone(), v.clone(), None);
                sync(&device);
                drop(o)
            },
            trials,
            min_s,
        );
        println!("| {n} | {heads} | 64 | {b} | {ms:.3} |");
    }
    Ok(())
}
