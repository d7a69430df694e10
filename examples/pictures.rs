//! Pictures for the docs, drawn with `plotters` (bitmap backend, no text: no system fonts are
//! needed), saved into `docs/img/`:
//!
//! * `attention_matrices.png`: on structured inputs (tokens on a circle, so the exact attention
//!   is a band around the diagonal, plus a repeated "global" token), the exact softmax attention
//!   matrix (left) next to MonarchAttention's approximation after T = 1, 2, 3 rounds
//!   (`MonarchAttention::attention_matrix`), one pixel block per entry, darker = larger, each
//!   panel on the same colour scale.
//! * `finetune_curves.png`: held-out loss curves of `examples/finetune.rs`'s CSV, one panel per
//!   task (left: low-rank shift, right: full-rank shift), x = training step, y = log10 of the
//!   held-out MSE (each panel its own range), LoRA red, MoRe blue, GSOFT green.
//!
//! There are no axis labels or legends: text in plotters needs a font backend, left out so the
//! example builds without system fonts; the numbers are printed instead.
//!
//! Run: `cargo run --release --example finetune -- curves.csv` then
//! `cargo run --release --features plots --example pictures -- curves.csv` (without a CSV only the attention
//! picture is drawn).

use monarch::attention::MonarchAttention;
use monarch::ndarray::{Array2, Array4};
use plotters::prelude::*;

const N: usize = 36;
const BLOCK: usize = 6;
const CELL: u32 = 8;

/// Tokens on a circle (local, banded attention) with every 9th token also carrying a shared
/// "global" direction (vertical stripes).
fn structured_qk() -> (Array4<f64>, Array4<f64>) {
    let d = 3;
    let mut q = Array4::zeros((1, 1, N, d));
    let mut k = Array4::zeros((1, 1, N, d));
    for i in 0..N {
        let a = 2.0 * std::f64::consts::PI * i as f64 / N as f64;
        for (m, sc) in [(&mut q, 4.0), (&mut k, 4.0)] {
            m[[0, 0, i, 0]] = sc * a.cos();
            m[[0, 0, i, 1]] = sc * a.sin();
        }
        q[[0, 0, i, 2]] = 2.0;
        if i % 9 == 0 {
            k[[0, 0, i, 2]] = 3.0;
        }
    }
    (q, k)
}

/// Exact dense softmax attention matrix, `softmax(Q Kᵀ / √d)` row by row.
fn exact_matrix(q: &Array4<f64>, k: &Array4<f64>) -> Array2<f64> {
    let d = q.dim().3;
    let s = 1.0 / (d as f64).sqrt();
    let mut a = Array2::zeros((N, N));
    for i in 0..N {
        let row: Vec<f64> = (0..N)
            .map(|j| {
                s * (0..d)
                    .map(|c| q[[0, 0, i, c]] * k[[0, 0, j, c]])
                    .sum::<f64>()
            })
            .collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for j in 0..N {
            a[[i, j]] = (row[j] - m).exp() / z;
        }
    }
    a
}

fn draw_matrix(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    a: &Array2<f64>,
    vmax: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    area.fill(&WHITE)?;
    for ((i, j), &v) in a.indexed_iter() {
        let t = (v / vmax).clamp(0.0, 1.0).sqrt();
        let c = (255.0 * (1.0 - t)) as u8;
        let (x0, y0) = (4 + j as i32 * CELL as i32, 4 + i as i32 * CELL as i32);
        area.draw(&Rectangle::new(
            [(x0, y0), (x0 + CELL as i32, y0 + CELL as i32)],
            RGBColor(c, c, 255).filled(),
        ))?;
    }
    Ok(())
}

fn attention_picture(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (q, k) = structured_qk();
    let exact = exact_matrix(&q, &k);
    let mut mats = vec![exact];
    for steps in 1..=3 {
        let a = MonarchAttention::new(BLOCK, steps).attention_matrix(q.view(), k.view(), None)?;
        mats.push(
            a.index_axis_move(monarch::ndarray::Axis(0), 0)
                .index_axis_move(monarch::ndarray::Axis(0), 0),
        );
    }
    for (t, m) in mats.iter().enumerate().skip(1) {
        let err = (m - &mats[0]).iter().map(|v| v.abs()).fold(0.0, f64::max);
        println!("T = {t}: max |A_monarch − A_exact| = {err:.3}");
    }
    let vmax = mats
        .iter()
        .flat_map(|m| m.iter())
        .cloned()
        .fold(0.0, f64::max);
    let side = N as u32 * CELL + 8;
    let root = BitMapBackend::new(path, (4 * side + 30, side)).into_drawing_area();
    root.fill(&RGBColor(200, 200, 200))?;
    for (p, m) in mats.iter().enumerate() {
        let x = p as i32 * (side as i32 + 10);
        let area = root.clone().shrink((x, 0), (side, side));
        draw_matrix(&area, m, vmax)?;
    }
    root.present()?;
    println!("wrote {path}");
    Ok(())
}

fn curves_picture(csv: &str, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(csv)?;
    let mut tasks: Vec<(String, Vec<[f64; 4]>)> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 5 {
            continue;
        }
        let vals = [f[1].parse()?, f[2].parse()?, f[3].parse()?, f[4].parse()?];
        match tasks.iter_mut().find(|(t, _)| t == f[0]) {
            Some((_, v)) => v.push(vals),
            None => tasks.push((f[0].to_string(), vec![vals])),
        }
    }
    let root = BitMapBackend::new(path, (500 * tasks.len().max(1) as u32, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, tasks.len().max(1)));
    for ((task, rows), area) in tasks.iter().zip(panels.iter()) {
        let xmax = rows.iter().map(|r| r[0]).fold(1.0, f64::max);
        let ys = rows
            .iter()
            .flat_map(|r| r[1..].iter().map(|v| v.max(1e-12).log10()));
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .build_cartesian_2d(0.0..xmax, (lo - 0.1)..(hi + 0.1))?;
        // Frame and grid without labels (no fonts needed).
        chart.plotting_area().draw(&Rectangle::new(
            [(0.0, lo - 0.1), (xmax, hi + 0.1)],
            BLACK.stroke_width(1),
        ))?;
        for (col, color) in [(1, RED), (2, BLUE), (3, GREEN)] {
            chart.draw_series(LineSeries::new(
                rows.iter().map(|r| (r[0], r[col].max(1e-12).log10())),
                color.stroke_width(2),
            ))?;
        }
        println!(
            "{task}: final held-out loss LoRA {:.3e}, MoRe {:.3e}, GSOFT {:.3e}",
            rows.last().map_or(f64::NAN, |r| r[1]),
            rows.last().map_or(f64::NAN, |r| r[2]),
            rows.last().map_or(f64::NAN, |r| r[3])
        );
    }
    root.present()?;
    println!(
        "wrote {path} (panels left to right: {:?})",
        tasks.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all("docs/img")?;
    attention_picture("docs/img/attention_matrices.png")?;
    if let Some(csv) = std::env::args().nth(1) {
        curves_picture(&csv, "docs/img/finetune_curves.png")?;
    }
    Ok(())
}
