//! Quickstart: project a structured dense matrix onto the Monarch class, multiply a batch with
//! it, and compare error and speed with the dense product on the same data.
//!
//! `cargo run --release --example quickstart`

use monarch::ndarray::Array2;
use monarch::primitives::random::normal_matrix;
use monarch::Monarch;
use std::time::Instant;

fn median_time(mut f: impl FnMut(), reps: usize) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[reps / 2]
}

fn main() -> Result<(), monarch::Error> {
    let (n, blocks, batch) = (1024, 32, 1024);
    // A "structured" dense matrix: a hidden Monarch plus 1% noise.
    let hidden = Monarch::<f32>::random(n, blocks, 1)?;
    let noise = normal_matrix::<f32>((n, n), 0.01 / (n as f64).sqrt(), 2);
    let a: Array2<f32> = hidden.to_dense() + &noise;

    let t0 = Instant::now();
    let proj = Monarch::project_with_error(a.view(), blocks, blocks, 1)?;
    let t_proj = t0.elapsed().as_secs_f64();
    let m = proj.monarch;
    println!("projected a {n}x{n} matrix onto Monarch({blocks} blocks) in {t_proj:.3} s");
    println!(
        "  parameters: {} vs {} dense ({:.1}x fewer)",
        m.num_params(),
        n * n,
        (n * n) as f64 / m.num_params() as f64
    );
    println!(
        "  relative projection error ||A - M||_F / ||A||_F = {:.4}",
        proj.relative_error
    );

    let x = normal_matrix::<f32>((batch, n), 1.0, 3);
    let y = m.matmul(x.view())?;
    let y_dense = x.dot(&a.t());
    let diff = (&y - &y_dense).iter().map(|v| v * v).sum::<f32>().sqrt();
    let norm = y_dense.iter().map(|v| v * v).sum::<f32>().sqrt();
    println!(
        "  relative output error on a batch of {batch}: {:.4}",
        diff / norm
    );

    let at = a.t().as_standard_layout().into_owned();
    let t_monarch = median_time(|| drop(m.matmul(x.view()).unwrap()), 7);
    let t_dense = median_time(|| drop(x.dot(&at)), 7);
    println!(
        "multiply (batch {batch}, n {n}): Monarch {:.2} ms, dense ndarray dot {:.2} ms -> {:.1}x faster ({:.1} vs {:.1} GFLOP/s)",
        t_monarch * 1e3,
        t_dense * 1e3,
        t_dense / t_monarch,
        m.flops(batch) as f64 / t_monarch / 1e9,
        2.0 * (batch * n * n) as f64 / t_dense / 1e9
    );
    Ok(())
}
