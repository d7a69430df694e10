//! Pictures for the docs, drawn with `plotters` (bitmap backend; text through `ab_glyph` with a
//! TrueType font read at run time), saved into `docs/img/`:
//!
//! * `attention_matrices.png`: on structured inputs (tokens on a circle, so the exact attention
//!   is a band around the diagonal, plus a repeated "global" key), the exact softmax attention
//!   matrix (left) next to MonarchAttention's approximation after T = 1, 2, 3 rounds
//!   (`MonarchAttention::attention_matrix`); x = key index, y = query index, darker = larger
//!   weight, every panel on the same colour scale.
//! * `finetune_curves.png`: held-out loss curves of `examples/finetune.rs`'s CSV, one panel per
//!   task, x = training step, y = held-out mean squared error (log scale, each panel its own
//!   range), LoRA red, MoRe blue, GSOFT green.
//! * `bench_ratios.png`: measured in this program, at reduced size so that it finishes in well
//!   under a minute: left, MonarchAttention's speed-up over exact (streaming) attention against
//!   the sequence length N (f32, d = 64, 2 heads, batch 1, T = 1, b ≈ √N); right, a Monarch
//!   product's speed-up over faer's dense product of the same matrix against n (f32, batch 256,
//!   b ≈ √n). Best of 3 to 10 runs each; the numbers are printed too.
//!
//! Run: `cargo run --release --example finetune -- curves.csv` then
//! `cargo run --release -p monarch-bench --features plots --example pictures -- curves.csv` (without a CSV the
//! fine-tuning picture is not redrawn). The font is `$MONARCH_FONT` if set, else DejaVu Sans
//! from the usual system paths (Debian: `apt-get install fonts-dejavu-core`).

use monarch::attention::{ExactAttention, MonarchAttention};
use monarch::ndarray::{Array2, Array4};
use monarch::primitives::random::{normal_matrix, uniform_vec};
use monarch::{Monarch, Par};
use monarch_bench::block_for;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::time::Instant;

const N: usize = 36;
const BLOCK: usize = 6;
const FONT: &str = "sans-serif";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Registers a TrueType font for all text (plotters' `ab_glyph` needs the bytes for the whole run).
fn load_font() -> Res<()> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("MONARCH_FONT") {
        candidates.push(p);
    }
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ] {
        candidates.push(p.to_string());
    }
    for p in &candidates {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                println!("font: {p}");
                return Ok(());
            }
        }
    }
    Err(format!(
        "no usable TrueType font found (tried {candidates:?}); set MONARCH_FONT to a .ttf file \
         or install fonts-dejavu-core"
    )
    .into())
}

/// Tokens on a circle (local, banded attention) with every 9th key also carrying a shared
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

fn shade(v: f64, vmax: f64) -> RGBColor {
    let t = (v / vmax).clamp(0.0, 1.0).sqrt();
    let c = (255.0 * (1.0 - t)) as u8;
    RGBColor(c, c, 255)
}

/// One matrix as a heat map: x = key index j, y = query index i (row 0 at the top).
fn draw_matrix(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    a: &Array2<f64>,
    vmax: f64,
    caption: &str,
) -> Res<()> {
    let n = a.nrows() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..n, n..0f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("key index j")
        .y_desc("query index i")
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    chart.draw_series(a.indexed_iter().map(|((i, j), &v)| {
        Rectangle::new(
            [(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)],
            shade(v, vmax).filled(),
        )
    }))?;
    Ok(())
}

fn attention_picture(path: &str) -> Res<()> {
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
    let mut captions = vec!["exact softmax attention".to_string()];
    for (t, m) in mats.iter().enumerate().skip(1) {
        let err = (m - &mats[0]).iter().map(|v| v.abs()).fold(0.0, f64::max);
        println!("T = {t}: max |A_monarch − A_exact| = {err:.3}");
        captions.push(format!("MonarchAttention T = {t} (max |diff| {err:.2})"));
    }
    let vmax = mats
        .iter()
        .flat_map(|m| m.iter())
        .cloned()
        .fold(0.0, f64::max);
    let root = BitMapBackend::new(path, (4 * 340, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, rest) = root.split_vertically(64);
    title.draw(&Text::new(
        format!(
            "Attention matrices, N = {N} tokens on a circle (every 9th key shared), b = {BLOCK}"
        ),
        (12, 8),
        (FONT, 22),
    ))?;
    title.draw(&Text::new(
        format!(
            "colour: attention weight, white = 0, dark blue = {vmax:.2} (square-root scale, same for all panels)"
        ),
        (12, 38),
        (FONT, 15),
    ))?;
    for ((m, cap), area) in mats.iter().zip(&captions).zip(rest.split_evenly((1, 4))) {
        draw_matrix(&area, m, vmax, cap)?;
    }
    root.present()?;
    println!("wrote {path}");
    Ok(())
}

fn curves_picture(csv: &str, path: &str) -> Res<()> {
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
    let root = BitMapBackend::new(path, (560 * tasks.len().max(1) as u32, 470)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, rest) = root.split_vertically(40);
    title.draw(&Text::new(
        "Fine-tuning (examples/finetune.rs): held-out loss at equal trainable-parameter budgets",
        (12, 10),
        (FONT, 20),
    ))?;
    let legend_x = 560 * tasks.len().max(1) as i32 - 300;
    for (i, (color, name)) in [(RED, "LoRA"), (BLUE, "MoRe"), (GREEN, "GSOFT")]
        .into_iter()
        .enumerate()
    {
        let x = legend_x + 95 * i as i32;
        title.draw(&PathElement::new(
            vec![(x, 20), (x + 24, 20)],
            color.stroke_width(3),
        ))?;
        title.draw(&Text::new(name, (x + 30, 12), (FONT, 16)))?;
    }
    let panels = rest.split_evenly((1, tasks.len().max(1)));
    for ((task, rows), area) in tasks.iter().zip(panels.iter()) {
        let xmax = rows.iter().map(|r| r[0]).fold(1.0, f64::max);
        // y is log10 of the loss on a linear axis, labelled with the loss itself.
        let ys = rows
            .iter()
            .flat_map(|r| r[1..].iter().map(|v| v.max(1e-12).log10()));
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let pad = 0.05 * (hi - lo).max(0.2);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("task: {task}"), (FONT, 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, (lo - pad)..(hi + pad))?;
        // Wide ranges are labelled with powers of ten, narrow ones with plain numbers.
        let wide = hi - lo > 2.0;
        chart
            .configure_mesh()
            .x_desc("training step")
            .y_desc("held-out MSE (log scale)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_labels(12)
            .y_label_formatter(&|v| {
                if wide {
                    format!("1e{v:.0}")
                } else {
                    format!("{:.2}", 10f64.powf(*v))
                }
            })
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
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

/// Best wall time of `f` over at least 3 and at most 10 runs within about `budget` seconds.
fn best_time(budget: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || (runs < 10 && start.elapsed().as_secs_f64() < budget) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

/// Deterministic uniform(−1, 1) inputs (timing does not depend on the values).
fn input(heads: usize, n: usize, d: usize, seed: u32) -> Array4<f32> {
    uniform_vec::<f32>(heads * n * d, 1.0, u64::from(seed))
        .into_shape_with_order((1, heads, n, d))
        .expect("shape")
}

const HEADS: usize = 2;
const D: usize = 64;
const BATCH: usize = 256;

/// `(N, exact s, Monarch s)` for MonarchAttention vs exact attention.
fn measure_attention() -> Res<Vec<(f64, f64, f64)>> {
    let exact = ExactAttention::new();
    let mut out = Vec::new();
    for n in [256usize, 512, 1024, 2048, 4096] {
        let (q, k, v) = (
            input(HEADS, n, D, 1),
            input(HEADS, n, D, 2),
            input(HEADS, n, D, 3),
        );
        let ma = MonarchAttention::new(block_for(n), 1);
        let te = best_time(2.0, || {
            std::hint::black_box(exact.forward(q.view(), k.view(), v.view(), None).unwrap());
        });
        let tm = best_time(2.0, || {
            std::hint::black_box(ma.forward(q.view(), k.view(), v.view(), None).unwrap());
        });
        println!(
            "attention N = {n:5} (b = {:3}): exact {:8.2} ms, MonarchAttention {:7.2} ms, speed-up {:5.1}x",
            block_for(n),
            te * 1e3,
            tm * 1e3,
            te / tm
        );
        out.push((n as f64, te, tm));
    }
    Ok(out)
}

/// `(n, faer dense s, Monarch s)` for an `n × n` product on `BATCH` rows.
fn measure_core() -> Res<Vec<(f64, f64, f64)>> {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        faer::Par::rayon(threads)
    } else {
        faer::Par::Seq
    };
    let mut out = Vec::new();
    for n in [256usize, 512, 1024, 2048, 4096] {
        let m = Monarch::<f32>::random(n, block_for(n), 1)?;
        let x = normal_matrix::<f32>((BATCH, n), 1.0, 2);
        let mut y = Array2::<f32>::zeros((BATCH, n));
        let tm = best_time(1.5, || {
            m.matmul_into(x.view(), y.view_mut(), Par::Rayon).unwrap()
        });
        let dense = m.to_dense();
        let fx = faer::Mat::from_fn(BATCH, n, |i, j| x[[i, j]]);
        let fdt = faer::Mat::from_fn(n, n, |i, j| dense[[j, i]]);
        let mut fo = faer::Mat::<f32>::zeros(BATCH, n);
        let tf = best_time(1.5, || {
            faer::linalg::matmul::matmul(
                fo.as_mut(),
                faer::Accum::Replace,
                fx.as_ref(),
                fdt.as_ref(),
                1.0f32,
                par,
            )
        });
        println!(
            "core n = {n:5} (b = {:3}): faer dense {:8.3} ms, Monarch {:7.3} ms, ratio {:5.1}x",
            block_for(n),
            tf * 1e3,
            tm * 1e3,
            tf / tm
        );
        out.push((n as f64, tf, tm));
    }
    Ok(out)
}

fn ratio_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    pts: &[(f64, f64, f64)],
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    color: RGBColor,
) -> Res<()> {
    // x is log2 of the size, labelled with the size itself.
    let ratios: Vec<(f64, f64)> = pts.iter().map(|&(n, a, b)| (n.log2(), a / b)).collect();
    let ymax = ratios.iter().map(|r| r.1).fold(1.0, f64::max) * 1.25;
    let (x0, x1) = (ratios[0].0 - 0.4, ratios[ratios.len() - 1].0 + 0.4);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(ratios.len() + 1)
        .x_label_formatter(&|v| format!("{:.0}", 2f64.powf(*v)))
        .y_label_formatter(&|v| format!("{v:.0}x"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(x0, 1.0), (x1, 1.0)],
        BLACK.mix(0.5).stroke_width(1),
    ))?;
    chart.draw_series(std::iter::once(Text::new(
        "1x: equal time",
        (x1 - 1.0, 1.0 - ymax * 0.012),
        (FONT, 12).into_font().color(&BLACK.mix(0.6)),
    )))?;
    chart.draw_series(LineSeries::new(
        ratios.iter().copied(),
        color.stroke_width(2),
    ))?;
    chart.draw_series(ratios.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    chart.draw_series(ratios.iter().map(|&(x, y)| {
        Text::new(
            format!("{y:.1}x"),
            (x - 0.32, y + ymax * 0.075),
            (FONT, 14).into_font().color(&BLACK),
        )
    }))?;
    Ok(())
}

/// The 1-minute load average from `/proc/loadavg`, if there is one.
fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next().map(str::to_string)
}

fn bench_picture(path: &str) -> Res<()> {
    let threads = rayon::current_num_threads();
    let load = load_average().map_or(String::new(), |l| format!(", load average {l} at start"));
    println!("benchmark picture: {threads} threads{load}");
    let att = measure_attention()?;
    let core = measure_core()?;
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, rest) = root.split_vertically(64);
    title.draw(&Text::new(
        "Measured speed-ups (reduced-size run of examples/pictures.rs, f32, ".to_string()
            + &format!("{threads} threads, best of 3-10 runs)"),
        (12, 8),
        (FONT, 21),
    ))?;
    title.draw(&Text::new(
        format!(
            "cargo run --release -p monarch-bench --features plots --example pictures{load}; full-size figures: \
             README (bench_attention, bench_core)"
        ),
        (12, 38),
        (FONT, 14),
    ))?;
    let panels = rest.split_evenly((1, 2));
    ratio_panel(
        &panels[0],
        &att,
        &format!("MonarchAttention vs exact attention ({HEADS} heads, d = {D}, T = 1, b ≈ √N)"),
        "sequence length N (log scale)",
        "speed-up (exact time / Monarch time)",
        BLUE,
    )?;
    ratio_panel(
        &panels[1],
        &core,
        &format!("Monarch product vs faer dense (batch {BATCH}, b ≈ √n)"),
        "matrix size n (log scale)",
        "speed-up (faer time / Monarch time)",
        RGBColor(200, 60, 0),
    )?;
    root.present()?;
    println!("wrote {path}");
    Ok(())
}

fn main() -> Res<()> {
    load_font()?;
    std::fs::create_dir_all("docs/img")?;
    attention_picture("docs/img/attention_matrices.png")?;
    if let Some(csv) = std::env::args().nth(1) {
        curves_picture(&csv, "docs/img/finetune_curves.png")?;
    }
    let start = Instant::now();
    bench_picture("docs/img/bench_ratios.png")?;
    println!(
        "benchmark picture: {:.1} s of measurement",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
