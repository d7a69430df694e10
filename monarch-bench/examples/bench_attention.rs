//! Exact softmax attention vs MonarchAttention on one machine, in one run.
//!
//! f32, d = 64, 12 heads, batch 1, T = 1, b = ⌈√N⌉ rounded to a power of two. Prints per N the
//! time of exact (flash-style) attention and of MonarchAttention and their ratio, exact
//! attention's GFLOP/s (counting 4·N²·d per head) as a fraction of the FMA peak measured in the
//! same program, and MonarchAttention's peak extra memory at N = 65536 measured with a counting
//! global allocator.
//!
//! `cargo run --release -p monarch-bench --example bench_attention` (about a minute); `--markdown`
//! prints the machine line and the timing table as Markdown for the README;
//! `BENCH_QUICK=1` or `--quick` runs small sizes only (seconds), for CI smoke runs.

use monarch::attention::{ExactAttention, MonarchAttention};
use monarch::ndarray::Array4;
use monarch::primitives::kernels::{fma_peak_gflops, Backend};
use monarch::primitives::random::uniform_vec;
use monarch_bench::{block_for, cpu_model, has_flag};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Deterministic uniform(−1, 1) inputs (timing does not depend on the values).
fn input(heads: usize, n: usize, d: usize, seed: u32) -> Array4<f32> {
    uniform_vec::<f32>(heads * n * d, 1.0, u64::from(seed))
        .into_shape_with_order((1, heads, n, d))
        .expect("shape")
}

/// Best of several runs, stopping once about `budget` seconds were spent.
fn time_it(budget: f64, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 2 || (start.elapsed().as_secs_f64() < budget && runs < 50) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
        if start.elapsed().as_secs_f64() > budget && runs >= 1 {
            break;
        }
    }
    best
}

/// Peak f32 GFLOP/s of the crate's FMA loop, run on every thread of the pool at once (the
/// same probe as `bench_core`); 0 without SIMD.
fn measure_peak(min_seconds: f64) -> f64 {
    let be = Backend::detect();
    if be == Backend::Portable {
        return 0.0;
    }
    rayon::broadcast(|_| fma_peak_gflops(be, min_seconds))
        .into_iter()
        .sum()
}

/// Smooth positional inputs: sinusoids of the position with per-channel frequencies (as in
/// sinusoidal position embeddings), amplitude `amp`, one phase per head.
fn positional(heads: usize, n: usize, d: usize, amp: f32) -> Array4<f32> {
    Array4::from_shape_fn((1, heads, n, d), |(_, h, t, c)| {
        let freq = 0.3 / 10f64.powf(2.0 * (c / 2) as f64 / d as f64);
        let phase = 0.7 * h as f64
            + if c % 2 == 0 {
                0.0
            } else {
                std::f64::consts::FRAC_PI_2
            };
        amp * (t as f64 * freq + phase).sin() as f32
    })
}

/// Inputs smooth on the scale of the whole sequence: channel pair `c` is a sinusoid of
/// frequency `c/2 + 1` periods over the `N` positions (so doubling `N` doubles the smoothness
/// per token), amplitude `amp`.
fn smooth(heads: usize, n: usize, d: usize, amp: f32) -> Array4<f32> {
    Array4::from_shape_fn((1, heads, n, d), |(_, h, t, c)| {
        let cycles = (c / 2 + 1) as f64;
        let phase = 0.7 * h as f64
            + if c % 2 == 0 {
                0.0
            } else {
                std::f64::consts::FRAC_PI_2
            };
        let x = 2.0 * std::f64::consts::PI * cycles * t as f64 / n as f64 + phase;
        amp * x.sin() as f32
    })
}

fn rel_err(x: &Array4<f32>, y: &Array4<f32>) -> f64 {
    let num: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = y.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Relative error against exact attention for T = 1, 2, 3, and of averaging V.
fn quality(quick: bool) {
    println!(
        "quality: relative Frobenius error vs exact attention (f32, d=64, 4 heads, v Gaussian)"
    );
    println!(
        "{:>24} {:>6} {:>4} {:>9} {:>8} {:>8} {:>8}",
        "inputs", "N", "b", "avg V", "T=1", "T=2", "T=3"
    );
    let d = 64;
    let ns: &[usize] = if quick { &[256] } else { &[256, 1024] };
    let ns: Vec<usize> = std::env::var("QUALITY_N")
        .map(|v| v.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(ns.to_vec());
    for &n in &ns {
        let v = input(4, n, d, 9);
        let mean = v
            .mean_axis(monarch::ndarray::Axis(2))
            .unwrap()
            .insert_axis(monarch::ndarray::Axis(2));
        let cases: Vec<(String, Array4<f32>, Array4<f32>)> = vec![
            (
                "k=q positional amp 1".into(),
                positional(4, n, d, 1.0),
                positional(4, n, d, 1.0),
            ),
            (
                "k=q positional amp 2".into(),
                positional(4, n, d, 2.0),
                positional(4, n, d, 2.0),
            ),
            (
                "k=q smooth in t/N amp 1".into(),
                smooth(4, n, d, 1.0),
                smooth(4, n, d, 1.0),
            ),
            (
                "k=q smooth in t/N amp 2".into(),
                smooth(4, n, d, 2.0),
                smooth(4, n, d, 2.0),
            ),
            (
                "k=q uniform random".into(),
                input(4, n, d, 7),
                input(4, n, d, 7),
            ),
            (
                "q, k uniform random".into(),
                input(4, n, d, 7),
                input(4, n, d, 8),
            ),
        ];
        for (name, q, k) in cases {
            let exact = ExactAttention::new()
                .forward(q.view(), k.view(), v.view(), None)
                .unwrap();
            let avg = rel_err(&(&exact * 0.0 + &mean), &exact);
            for b in [16, 32] {
                let errs: Vec<f64> = (1..=3)
                    .map(|t| {
                        let o = MonarchAttention::new(b, t)
                            .forward(q.view(), k.view(), v.view(), None)
                            .unwrap();
                        rel_err(&o, &exact)
                    })
                    .collect();
                println!(
                    "{:>24} {:>6} {:>4} {:>9.4} {:>8.4} {:>8.4} {:>8.4}",
                    name, n, b, avg, errs[0], errs[1], errs[2]
                );
            }
        }
    }
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0") || has_flag("--quick");
    let markdown = has_flag("--markdown");
    let (d, heads) = (64, if quick { 2 } else { 12 });
    let sizes: &[usize] = if quick {
        &[256, 1024]
    } else {
        &[256, 1024, 4096, 16384]
    };
    let budget = if quick { 0.2 } else { 2.0 };
    let peak = measure_peak(if quick { 0.05 } else { 0.3 });
    let threads = rayon::current_num_threads();
    let cpu = cpu_model();
    let kernels = monarch::attention::kernel_name();
    if markdown {
        println!(
            "Measured by `bench_attention` on **{cpu}**, {threads} threads, f32, d = {d}, \
             {heads} heads, batch 1, T = 1, b ≈ √N; tile kernels: {kernels}; FMA peak measured \
             in the same run: {peak:.0} GFLOP/s. GFLOP/s and % of peak are the exact \
             attention's (4·N²·d per head)."
        );
        println!();
        println!("| N | b | exact ms | MonarchAttention ms | exact / Monarch | exact GFLOP/s | % of peak |");
        println!("|---|---|---|---|---|---|---|");
    } else {
        println!("CPU: {cpu}");
        println!("attention tile kernels (f32): {kernels}");
        println!("threads: {threads}; FMA peak measured in this run: {peak:.0} GFLOP/s");
        println!("f32, d={d}, heads={heads}, batch 1, T=1, b≈√N");
        println!(
            "{:>6} {:>4} {:>12} {:>12} {:>8} {:>10} {:>11}",
            "N", "b", "exact ms", "monarch ms", "ratio", "GFLOP/s", "% of peak"
        );
    }
    let exact = ExactAttention::new();
    for &n in sizes {
        let q = input(heads, n, d, 1);
        let k = input(heads, n, d, 2);
        let v = input(heads, n, d, 3);
        let b = block_for(n);
        let ma = MonarchAttention::new(b, 1);
        let te = time_it(budget, || {
            std::hint::black_box(exact.forward(q.view(), k.view(), v.view(), None).unwrap());
        });
        let tm = time_it(budget, || {
            std::hint::black_box(ma.forward(q.view(), k.view(), v.view(), None).unwrap());
        });
        let gflops = (4 * n * n * d * heads) as f64 / te / 1e9;
        if markdown {
            println!(
                "| {n} | {b} | {:.3} | {:.3} | {:.1}× | {gflops:.1} | {:.1}% |",
                te * 1e3,
                tm * 1e3,
                te / tm,
                100.0 * gflops / peak
            );
            continue;
        }
        println!(
            "{:>6} {:>4} {:>12.3} {:>12.3} {:>7.1}x {:>10.1} {:>10.1}%",
            n,
            b,
            te * 1e3,
            tm * 1e3,
            te / tm,
            gflops,
            100.0 * gflops / peak
        );
    }
    if markdown {
        // The quality and memory reports stay fixed-width text; fence them for Markdown.
        println!();
        println!("```text");
    }
    quality(quick);
    // Peak extra memory of MonarchAttention.
    let n = if quick { 4096 } else { 65536 };
    let q = input(heads, n, d, 4);
    let k = input(heads, n, d, 5);
    let v = input(heads, n, d, 6);
    let qkv_bytes = 3 * q.len() * std::mem::size_of::<f32>();
    let out_bytes = v.len() * std::mem::size_of::<f32>();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let b = block_for(n);
    let t = Instant::now();
    let o = MonarchAttention::new(b, 1)
        .forward(q.view(), k.view(), v.view(), None)
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let extra = PEAK.load(Ordering::Relaxed) - base;
    std::hint::black_box(&o);
    println!(
        "memory at N={n}, d={d}, heads={heads}, b={b}: q,k,v {:.1} MiB; MonarchAttention peak extra {:.1} MiB \
         = {:.2}x q,k,v (of which the output {:.1} MiB; {:.2}x without it); forward took {:.2} s",
        qkv_bytes as f64 / 1048576.0,
        extra as f64 / 1048576.0,
        extra as f64 / qkv_bytes as f64,
        out_bytes as f64 / 1048576.0,
        (extra - out_bytes.min(extra)) as f64 / qkv_bytes as f64,
        secs
    );
    if markdown {
        println!("```");
    }
}
