//! How the Monarch product, its VJP and MonarchAttention scale with threads, in one run.
//!
//! For each thread count (default: 1, 2 and every power of two up to the machine's cores; or
//! `--threads 2,4,8,16`) the example builds a rayon pool of that size and times, best of several
//! trials, f32:
//! - the Monarch product and `vjp_into` at n = 4096 (b = 64, batch 1024), n = 1024 (b = 32,
//!   batch 4096) and n = 256 (b = 16, batch 16384);
//! - exact streaming attention and MonarchAttention (12 heads, d = 64, T = 1, b ≈ √N) at
//!   N = 1024, 4096, 16384.
//!
//! It prints the CPU model, the FMA peak measured on each pool, the speed-up over the first
//! thread count, the parallel efficiency (speed-up over the ideal), `vjp_into` / forward at
//! every count, and whether every result is bitwise identical to the first count's.
//!
//! ```text
//! cargo run --release -p monarch-bench --example bench_scaling -- --threads 2,16
//! ```
//! `--quick` runs small sizes for a smoke test.

use monarch::attention::{ExactAttention, MonarchAttention};
use monarch::ndarray::{Array2, Array4};
use monarch::primitives::kernels::{fma_peak_gflops, Backend};
use monarch::primitives::random::{normal_matrix, uniform_vec};
use monarch::{Monarch, MonarchGrad, Par};
use monarch_bench::{block_for, calibrate, cpu_model, has_flag, trial};

/// Best seconds per call over `trials` trials, each of enough calls to last `min_s`.
fn best_of(trials: usize, min_s: f64, mut f: impl FnMut()) -> f64 {
    let reps = calibrate(&mut f, min_s);
    (0..trials)
        .map(|_| trial(&mut f, reps))
        .fold(f64::INFINITY, f64::min)
}

fn thread_counts() -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        if let Some(list) = args.get(i + 1) {
            let v: Vec<usize> = list
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&t| t > 0)
                .collect();
            if !v.is_empty() {
                return v;
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut v = vec![1];
    let mut t = 2;
    while t <= cores {
        v.push(t);
        t *= 2;
    }
    if *v.last().unwrap() != cores {
        v.push(cores);
    }
    v
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn main() {
    let quick = has_flag("--quick");
    let (trials, min_s) = if quick { (2, 0.01) } else { (7, 0.1) };
    let counts = thread_counts();
    let be = Backend::detect();
    println!("# monarch thread scaling (f32, kernel path {be:?})");
    println!("CPU: {}", cpu_model());
    let pools: Vec<rayon::ThreadPool> = counts
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("thread pool")
        })
        .collect();
    let peak_s = if quick { 0.05 } else { 0.3 };
    let peaks: Vec<f64> = pools
        .iter()
        .map(|p| {
            p.broadcast(|_| fma_peak_gflops(be, peak_s))
                .into_iter()
                .sum()
        })
        .collect();
    print!("FMA peak measured per pool:");
    for (t, p) in counts.iter().zip(&peaks) {
        print!(" {t} threads {p:.0} GFLOP/s;");
    }
    println!();
    println!();
    let t0 = counts[0];
    println!(
        "| case | threads | forward ms | % of peak | forward speed-up vs {t0} (efficiency) | VJP ms | VJP speed-up vs {t0} (efficiency) | VJP / forward | bitwise = {t0} threads |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let cases: &[(usize, usize, usize)] = if quick {
        &[(256, 16, 256), (64, 8, 1024)]
    } else {
        &[(4096, 64, 1024), (1024, 32, 4096), (256, 16, 16384)]
    };
    for &(n, b, batch) in cases {
        let m = Monarch::<f32>::random(n, b, 1).expect("monarch");
        let x = normal_matrix::<f32>((batch, n), 1.0, 2);
        let g = normal_matrix::<f32>((batch, n), 1.0, 3);
        let flops = m.flops(batch) as f64;
        let mut first: Option<(f64, f64, Array2<f32>, MonarchGrad<f32>)> = None;
        for ((pool, &t), peak) in pools.iter().zip(&counts).zip(&peaks) {
            let mut out = Array2::<f32>::zeros((batch, n));
            let mut grads = MonarchGrad::zeros(&m, batch);
            let (tf, tv) = pool.install(|| {
                let tf = best_of(trials, min_s, || {
                    m.matmul_into(x.view(), out.view_mut(), Par::Rayon)
                        .expect("forward")
                });
                let tv = best_of(trials, min_s, || {
                    m.vjp_into(x.view(), g.view(), &mut grads).expect("vjp")
                });
                (tf, tv)
            });
            let pct = 100.0 * flops / tf / 1e9 / peak;
            let (sf, sv, bits) = match &first {
                None => (1.0, 1.0, true),
                Some((f0, v0, o0, g0)) => (
                    f0 / tf,
                    v0 / tv,
                    same_bits(o0.as_slice().unwrap(), out.as_slice().unwrap())
                        && same_bits(g0.x.as_slice().unwrap(), grads.x.as_slice().unwrap())
                        && same_bits(g0.w1.as_slice().unwrap(), grads.w1.as_slice().unwrap())
                        && same_bits(g0.w2.as_slice().unwrap(), grads.w2.as_slice().unwrap()),
                ),
            };
            let ideal = t as f64 / t0 as f64;
            println!(
                "| n={n} b={b} batch={batch} | {t} | {:.3} | {pct:.0}% | {sf:.2}× ({:.0}%) | {:.3} | {sv:.2}× ({:.0}%) | {:.2} | {} |",
                tf * 1e3,
                100.0 * sf / ideal,
                tv * 1e3,
                100.0 * sv / ideal,
                tv / tf,
                if bits { "yes" } else { "NO" }
            );
            if first.is_none() {
                first = Some((tf, tv, out, grads));
            }
        }
    }

    println!();
    let (heads, d) = (if quick { 2 } else { 12 }, 64);
    println!(
        "| N | threads | exact ms | exact speed-up vs {t0} | MonarchAttention ms | Monarch speed-up vs {t0} (efficiency) | exact / Monarch | bitwise = {t0} threads |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let sizes: &[usize] = if quick { &[256] } else { &[1024, 4096, 16384] };
    let exact = ExactAttention::new();
    for &n in sizes {
        let input = |seed: u64| -> Array4<f32> {
            uniform_vec::<f32>(heads * n * d, 1.0, seed)
                .into_shape_with_order((1, heads, n, d))
                .expect("shape")
        };
        let (q, k, v) = (input(1), input(2), input(3));
        let ma = MonarchAttention::new(block_for(n), 1);
        let mut first: Option<(f64, f64, Vec<f32>)> = None;
        for (pool, &t) in pools.iter().zip(&counts) {
            let (te, tm, o) = pool.install(|| {
                let te = best_of(trials.min(3), min_s, || {
                    std::hint::black_box(
                        exact.forward(q.view(), k.view(), v.view(), None).unwrap(),
                    );
                });
                let tm = best_of(trials.min(3), min_s, || {
                    std::hint::black_box(ma.forward(q.view(), k.view(), v.view(), None).unwrap());
                });
                let o = ma.forward(q.view(), k.view(), v.view(), None).unwrap();
                (te, tm, o.iter().copied().collect::<Vec<f32>>())
            });
            let (se, sm, bits) = match &first {
                None => (1.0, 1.0, true),
                Some((e0, m0, o0)) => (e0 / te, m0 / tm, same_bits(o0, &o)),
            };
            let ideal = t as f64 / t0 as f64;
            println!(
                "| {n} | {t} | {:.3} | {se:.2}× | {:.3} | {sm:.2}× ({:.0}%) | {:.1}× | {} |",
                te * 1e3,
                tm * 1e3,
                100.0 * sm / ideal,
                te / tm,
                if bits { "yes" } else { "NO" }
            );
            if first.is_none() {
                first = Some((te, tm, o));
            }
        }
    }
}
