//! Where the forward Monarch product's time goes, pass by pass, on one thread.
//!
//! For n = 4096, 1024 and 256 (b = √n), f32, with weights packed once through the public kernel
//! API ([`blocked_into`], [`interleaved_into`]), best of several trials:
//! - each pass on one panel of rows (the product's panel size) repeated, so every operand stays
//!   in cache: the register tiles' own rate;
//! - both passes panel by panel over 1024 rows, as the product runs them, still prepacked: adds
//!   the weights of both passes competing for L2 and the activations streaming;
//! - the whole `matmul_into` on one thread and on two: adds packing on every call and the split.
//!
//! Each figure is printed as a fraction of the FMA peak measured in the same run (one thread,
//! or both for the two-thread product), beside the CPU model and the kernel path.
//!
//! ```text
//! cargo run --release -p monarch-bench --example bench_passes
//! ```
//! `--quick` runs small sizes for a smoke test.

use monarch::ndarray::{Array2, Array3};
use monarch::primitives::kernels::{
    blocked_into, fma_peak_gflops, interleaved_into, Backend, PackedBlocked, PackedInterleaved,
    Rows, RowsMut,
};
use monarch::primitives::random::normal_matrix;
use monarch::{Monarch, Par};
use monarch_bench::{calibrate, cpu_model, has_flag, trial};

/// Best seconds per call over `trials` trials of at least `min_s` each.
fn best(trials: usize, min_s: f64, mut f: impl FnMut()) -> f64 {
    let reps = calibrate(&mut f, min_s);
    (0..trials)
        .map(|_| trial(&mut f, reps))
        .fold(f64::INFINITY, f64::min)
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("thread pool")
}

/// Deterministic blocks `(b, b, b)` of moderate size.
fn blocks(b: usize, salt: usize) -> Array3<f32> {
    Array3::from_shape_fn((b, b, b), |(a, i, j)| {
        ((a * 7 + i * 3 + j + salt) % 11) as f32 * 0.1 - 0.5
    })
}

fn main() {
    let quick = has_flag("--quick");
    let (trials, min_s, peak_s) = if quick {
        (2, 0.005, 0.05)
    } else {
        (7, 0.03, 0.3)
    };
    let be = Backend::detect();
    let (p1, p2) = (pool(1), pool(2));
    let peak1 = fma_peak_gflops(be, peak_s);
    let peak2: f64 = p2
        .broadcast(|_| fma_peak_gflops(be, peak_s))
        .into_iter()
        .sum();
    println!("# forward product pass by pass (f32, kernel path {be:?})");
    println!("CPU: {}", cpu_model());
    println!("measured FMA peak: {peak1:.0} GFLOP/s on 1 thread, {peak2:.0} GFLOP/s on 2 threads");
    println!();
    println!("| n, b | blocked pass, one panel in cache | interleaved pass, one panel in cache | both passes, panels, prepacked | `matmul_into`, 1 thread | `matmul_into`, 2 threads |");
    println!("|---|---|---|---|---|---|");
    let (batch, shapes): (usize, &[(usize, usize)]) = if quick {
        (64, &[(256, 16), (64, 8)])
    } else {
        (1024, &[(4096, 64), (1024, 32), (256, 16)])
    };
    for &(n, b) in shapes {
        let pb = PackedBlocked::pack(blocks(b, 0).view());
        let pi = PackedInterleaved::pack(blocks(b, 5).view());
        let x = normal_matrix::<f32>((batch, n), 1.0, 2);
        let xs = x.as_slice().expect("standard layout");
        let mut z = vec![0.0f32; batch * n];
        let mut y = vec![0.0f32; batch * n];
        // The product's panel: 128 K elements of the widest row (its `row_chunk`).
        let panel = (128 * 1024 / n).clamp(1, 256).min(batch);
        let pass_flops = |rows: usize| 2.0 * (rows * n * b) as f64;
        let pct = |flops: f64, t: f64, peak: f64| 100.0 * flops / t / 1e9 / peak;
        let (hot_b, hot_i, both) = p1.install(|| {
            let r = panel;
            let tb = best(trials, min_s, || {
                blocked_into(
                    be,
                    &pb,
                    0..b,
                    Rows::new(&xs[..r * n], n, r, n),
                    RowsMut::new(&mut z[..r * n], n, r, n),
                )
            });
            let zr = z[..r * n].to_vec();
            let ti = best(trials, min_s, || {
                interleaved_into(
                    be,
                    &pi,
                    0..b,
                    Rows::new(&zr, n, r, n),
                    RowsMut::new(&mut y[..r * n], n, r, n),
                )
            });
            let tboth = best(trials, min_s, || {
                for (r0, yp) in (0..batch).step_by(panel).zip(y.chunks_mut(panel * n)) {
                    let r = yp.len() / n;
                    blocked_into(
                        be,
                        &pb,
                        0..b,
                        Rows::new(&xs[r0 * n..(r0 + r) * n], n, r, n),
                        RowsMut::new(&mut z[..r * n], n, r, n),
                    );
                    interleaved_into(
                        be,
                        &pi,
                        0..b,
                        Rows::new(&z[..r * n], n, r, n),
                        RowsMut::new(yp, n, r, n),
                    );
                }
            });
            (
                pct(pass_flops(r), tb, peak1),
                pct(pass_flops(r), ti, peak1),
                pct(2.0 * pass_flops(batch), tboth, peak1),
            )
        });
        let m = Monarch::<f32>::random(n, b, 1).expect("monarch");
        let mut out = Array2::<f32>::zeros((batch, n));
        let mut whole = |p: &rayon::ThreadPool, peak: f64| {
            let t = p.install(|| {
                best(trials, min_s, || {
                    m.matmul_into(x.view(), out.view_mut(), Par::Rayon)
                        .expect("forward")
                })
            });
            pct(m.flops(batch) as f64, t, peak)
        };
        let (m1, m2) = (whole(&p1, peak1), whole(&p2, peak2));
        println!(
            "| {n}, {b} | {hot_b:.0} % | {hot_i:.0} % | {both:.0} % | {m1:.0} % | {m2:.0} % |"
        );
    }
}
