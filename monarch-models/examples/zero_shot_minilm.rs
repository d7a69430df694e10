//! all-MiniLM-L6-v2 converted zero-shot: every attention layer replaced by MonarchAttention, and
//! every dense layer projected onto Monarch matrices, measured against the exact model.
//!
//! ```text
//! scripts/fetch_minilm.sh
//! cargo run --release -p monarch-models --example zero_shot_minilm            # full run
//! cargo run --release -p monarch-models --example zero_shot_minilm -- --quick # CI-sized
//!     options: --model DIR (default models/all-MiniLM-L6-v2), --svg FILE (cosine picture)
//! ```
//!
//! Text: the 196 sentences of `data/sentences.txt` (written for this crate, in groups of four
//! on one topic), passages made by joining four neighbouring groups (up to about 200 tokens) and
//! eight (truncated by the tokenizer at the model's 256 tokens), and the opening of the Gettysburg
//! Address (public domain). Timings use one synthetic sequence of exactly N tokens (the
//! passages' word pieces repeated).
//!
//! Prints markdown tables:
//! 1. MonarchAttention in every layer (T = 1, 2, 3 steps; several block sizes b): mean and
//!    worst cosine of each sentence embedding to the exact one, agreement of each sentence's
//!    nearest neighbour with the exact model's, relative error of the last hidden state, and
//!    time of the attention and of the whole encoder at sequence lengths 128, 256, 512.
//! 2. Every dense layer projected onto Monarch (`Monarch::project`, per-slice rank ρ, block
//!    counts near √n): parameters kept, weight error, the same embedding metrics.
//! 3. Recovery: the projected factors trained for a few Adam steps (the core's Monarch VJP) to
//!    reproduce each exact layer's outputs on half of the sentences, measured on the other half.

use monarch::attention::MonarchAttention;
use monarch::ndarray::{Array2, Array3, Array4, Axis};
use monarch_models::bert::{AttentionKind, BertModel, TokenBatch, DENSE_NAMES};
use monarch_models::fit::{distill, FitOptions};
use monarch_models::minilm::{default_model_dir, model_present, SentenceEncoder};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

type Enc = SentenceEncoder<f32>;

const GETTYSBURG: &str = "Four score and seven years ago our fathers brought forth on this \
continent, a new nation, conceived in Liberty, and dedicated to the proposition that all men are \
created equal. Now we are engaged in a great civil war, testing whether that nation, or any nation \
so conceived and so dedicated, can long endure. We are met on a great battle-field of that war. We \
have come to dedicate a portion of that field, as a final resting place for those who here gave \
their lives that that nation might live. It is altogether fitting and proper that we should do \
this. But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- \
this ground. The brave men, living and dead, who struggled here, have consecrated it, far above our \
poor power to add or detract. The world will little note, nor long remember what we say here, but \
it can never forget what they did here.";

fn arg_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn has_flag(name: &str) -> bool {
    std::env::args().skip(1).any(|a| a == name)
}

/// The short sentences (by group) of `data/sentences.txt`.
fn read_groups() -> Vec<Vec<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sentences.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut groups = vec![vec![]];
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !groups.last().unwrap().is_empty() {
                groups.push(vec![]);
            }
        } else {
            groups.last_mut().unwrap().push(line.to_string());
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Embedding metrics of `approx` against `exact`.
struct Metrics {
    mean_cos: f64,
    worst_cos: f64,
    nn_agree: f64,
    hidden_err: f64,
    long_cos: f64,
}

fn cos_rows(a: &Array2<f32>, b: &Array2<f32>, i: usize) -> f64 {
    let (x, y) = (a.row(i), b.row(i));
    let dot: f64 = x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum();
    let nx: f64 = x.iter().map(|&p| (p as f64).powi(2)).sum::<f64>().sqrt();
    let ny: f64 = y.iter().map(|&p| (p as f64).powi(2)).sum::<f64>().sqrt();
    dot / (nx * ny)
}

/// Index of each row's nearest other row (cosine; rows are unit vectors).
fn nearest(e: &Array2<f32>) -> Vec<usize> {
    let g = e.dot(&e.t());
    (0..e.nrows())
        .map(|i| {
            (0..e.nrows())
                .filter(|&j| j != i)
                .max_by(|&a, &b| g[[i, a]].total_cmp(&g[[i, b]]))
                .unwrap_or(i)
        })
        .collect()
}

struct Run {
    emb: Array2<f32>,
    hidden: Vec<Array3<f32>>,
}

fn run(enc: &Enc, ids: &[Vec<u32>]) -> Run {
    let hidden: Vec<Array3<f32>> = ids
        .par_iter()
        .map(|s| enc.hidden(s).expect("forward"))
        .collect();
    let mut emb = Array2::zeros((ids.len(), enc.model.config.hidden_size));
    for (i, (h, s)) in hidden.iter().zip(ids).enumerate() {
        let b = TokenBatch::from_ids(std::slice::from_ref(s)).unwrap();
        emb.row_mut(i).assign(&enc.pool(h, &b).unwrap().row(0));
    }
    Run { emb, hidden }
}

fn metrics(exact: &Run, approx: &Run, subset: &[usize], long: &[usize]) -> Metrics {
    let cos: Vec<f64> = subset
        .iter()
        .map(|&i| cos_rows(&exact.emb, &approx.emb, i))
        .collect();
    let sel = |e: &Array2<f32>| e.select(Axis(0), subset);
    let (ne, na) = (nearest(&sel(&exact.emb)), nearest(&sel(&approx.emb)));
    let agree = ne.iter().zip(&na).filter(|(a, b)| a == b).count() as f64 / ne.len() as f64;
    let (mut d2, mut n2) = (0.0f64, 0.0f64);
    for &i in subset {
        let (h, a) = (&exact.hidden[i], &approx.hidden[i]);
        d2 += h
            .iter()
            .zip(a)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum::<f64>();
        n2 += h.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
    }
    let longs: Vec<f64> = long
        .iter()
        .filter(|i| subset.contains(i))
        .map(|&i| cos_rows(&exact.emb, &approx.emb, i))
        .collect();
    Metrics {
        mean_cos: cos.iter().sum::<f64>() / cos.len() as f64,
        worst_cos: cos.iter().copied().fold(f64::INFINITY, f64::min),
        nn_agree: agree,
        hidden_err: (d2 / n2).sqrt(),
        long_cos: if longs.is_empty() {
            f64::NAN
        } else {
            longs.iter().sum::<f64>() / longs.len() as f64
        },
    }
}

/// A sequence of exactly `n` tokens: `[CLS]`, word pieces of `text` repeated, `[SEP]`.
fn synthetic_ids(enc: &Enc, text: &str, n: usize) -> Vec<u32> {
    let ids = enc.tokenizer().encode(text).unwrap();
    let body = &ids[1..ids.len() - 1];
    let mut out = vec![ids[0]];
    out.extend(body.iter().cycle().take(n - 2));
    out.push(*ids.last().unwrap());
    out
}

/// The q, k, v of every layer of `model` for one sequence.
type Qkv = Vec<(Array4<f32>, Array4<f32>, Array4<f32>)>;

fn layer_qkv(model: &BertModel<f32>, batch: &TokenBatch) -> Qkv {
    let (_, traces) = model.forward_traced(batch).unwrap();
    let c = &model.config;
    let (n, heads, dh) = (batch.len(), c.num_attention_heads, c.head_dim());
    let split = |a: Array2<f32>| {
        a.into_shape_with_order((1, n, heads, dh))
            .unwrap()
            .permuted_axes([0, 2, 1, 3])
            .as_standard_layout()
            .into_owned()
    };
    model
        .layers
        .iter()
        .zip(&traces)
        .map(|(l, t)| {
            (
                split(l.query.forward(t.x.view()).unwrap()),
                split(l.key.forward(t.x.view()).unwrap()),
                split(l.value.forward(t.x.view()).unwrap()),
            )
        })
        .collect()
}

/// Seconds of (attention of all layers, whole encoder) for one sequence, exact and with
/// `kind`, on one thread: the two are timed alternately, `reps` times each, and the medians
/// kept, so that a change of load on the machine hits both alike.
fn timings(
    model: &BertModel<f32>,
    kind: AttentionKind,
    ids: &[u32],
    reps: usize,
) -> [(f64, f64); 2] {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let batch = TokenBatch::from_ids(&[ids.to_vec()]).unwrap();
        let qkv = layer_qkv(model, &batch);
        let mut models = [model.clone(), model.clone()];
        models[1].set_attention(kind);
        let kinds = [AttentionKind::Exact, kind];
        let mut att = [vec![], vec![]];
        let mut enc = [vec![], vec![]];
        for rep in 0..=reps {
            for w in 0..2 {
                let t = Instant::now();
                models[w].forward(&batch).unwrap();
                let e = t.elapsed().as_secs_f64();
                let t = Instant::now();
                for (q, k, v) in &qkv {
                    kinds[w]
                        .forward(q.view(), k.view(), v.view(), None)
                        .unwrap();
                }
                let a = t.elapsed().as_secs_f64();
                if rep > 0 {
                    enc[w].push(e);
                    att[w].push(a);
                }
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        [
            (med(&mut att[0]), med(&mut enc[0])),
            (med(&mut att[1]), med(&mut enc[1])),
        ]
    })
}

fn kind_name(kind: AttentionKind) -> String {
    match kind {
        AttentionKind::Exact => "exact".into(),
        AttentionKind::Monarch(ma) => format!("T={}, b={}", ma.steps(), ma.block_size()),
    }
}

/// A small SVG line chart: mean cosine to exact against block size, one line per T.
fn write_svg(
    path: &str,
    series: &[(usize, Vec<(usize, f64)>)],
    worst: &[(usize, Vec<(usize, f64)>)],
) {
    let (w, h, ml, mr, mt, mb) = (640.0, 400.0, 70.0, 150.0, 40.0, 55.0);
    let xs: Vec<usize> = series[0].1.iter().map(|p| p.0).collect();
    let lo = series
        .iter()
        .chain(worst)
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::min);
    let y0 = ((lo * 20.0).floor() / 20.0).min(0.95);
    let px = |i: usize| ml + (w - ml - mr) * i as f64 / (xs.len() - 1).max(1) as f64;
    let py = |v: f64| mt + (h - mt - mb) * (1.0 - (v - y0) / (1.0 - y0));
    let colours = ["#1f77b4", "#d62728", "#2ca02c"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">all-MiniLM-L6-v2, MonarchAttention in all 6 layers: cosine to exact</text>\n",
        w / 2.0
    );
    let mut t = 0;
    while y0 + 0.05 * t as f64 <= 1.0 + 1e-9 {
        let v = y0 + 0.05 * t as f64;
        svg += &format!(
            "<line x1=\"{ml}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
            w - mr,
            ml - 6.0,
            py(v) + 4.0,
            y = py(v)
        );
        t += 1;
    }
    for (i, x) in xs.iter().enumerate() {
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>\n",
            px(i),
            h - mb + 18.0
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">block size b</text>\n\
         <text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">cosine to exact</text>\n\
         <line x1=\"{ml}\" x2=\"{ml}\" y1=\"{mt}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{ml}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        (ml + w - mr) / 2.0,
        h - 12.0,
        (mt + h - mb) / 2.0,
        (mt + h - mb) / 2.0,
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for (si, ((steps, pts), (_, wpts))) in series.iter().zip(worst).enumerate() {
        let c = colours[si % colours.len()];
        let line = |pts: &[(usize, f64)]| {
            pts.iter()
                .enumerate()
                .map(|(i, p)| format!("{:.1},{:.1}", px(i), py(p.1)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" stroke-dasharray=\"5,4\" points=\"{}\"/>\n",
            line(pts),
            line(wpts)
        );
        for (i, p) in pts.iter().enumerate() {
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                px(i),
                py(p.1)
            );
        }
        let ly = mt + 20.0 + 36.0 * si as f64;
        svg += &format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">T = {steps}, mean</text>\n\
             <line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{c}\" stroke-dasharray=\"5,4\"/><text x=\"{}\" y=\"{}\">T = {steps}, worst</text>\n",
            w - mr + 10.0,
            w - mr + 35.0,
            w - mr + 40.0,
            ly + 4.0,
            w - mr + 10.0,
            w - mr + 35.0,
            ly + 16.0,
            ly + 16.0,
            w - mr + 40.0,
            ly + 20.0
        );
    }
    svg += "</svg>\n";
    std::fs::write(path, svg).unwrap_or_else(|e| panic!("{path}: {e}"));
}

fn main() -> monarch::Result<()> {
    let quick = has_flag("--quick");
    let dir = arg_value("--model")
        .map(PathBuf::from)
        .unwrap_or_else(default_model_dir);
    if !model_present(&dir) {
        eprintln!(
            "all-MiniLM-L6-v2 not found in {}: run scripts/fetch_minilm.sh first",
            dir.display()
        );
        std::process::exit(2);
    }
    let enc = Enc::load(&dir)?;
    println!(
        "# all-MiniLM-L6-v2, zero-shot Monarch conversion{}\n",
        if quick { " (--quick)" } else { "" }
    );
    println!(
        "CPU: {} ({} threads); f32; model from {}\n",
        monarch_models::cpu_model(),
        rayon::current_num_threads(),
        dir.display()
    );

    // ---- the text ----
    let groups = read_groups();
    let groups = if quick { groups[..6].to_vec() } else { groups };
    let mut texts: Vec<String> = groups.iter().flatten().cloned().collect();
    let n_short = texts.len();
    // Four neighbouring groups make passages of up to about 200 tokens; eight run past the
    // model's 256, so those reach the truncation length, the longest the model handles.
    for (joined, step) in [(4, 2), (8, 5)] {
        for g in (0..groups.len()).step_by(step) {
            let passage: Vec<String> = (g..g + joined)
                .map(|i| groups[i % groups.len()].join(" "))
                .collect();
            texts.push(passage.join(" "));
        }
    }
    texts.push(GETTYSBURG.to_string());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = enc.tokenize(&refs)?;
    let mut lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let long: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].len() >= 128).collect();
    lens.sort_unstable();
    println!(
        "{} texts ({} sentences, {} passages): {} to {} tokens, median {}; {} with ≥ 128 tokens, \
         {} at the model's limit of 256.\n",
        texts.len(),
        n_short,
        texts.len() - n_short,
        lens[0],
        lens[lens.len() - 1],
        lens[lens.len() / 2],
        long.len(),
        lens.iter().filter(|&&l| l >= 256).count()
    );
    let all: Vec<usize> = (0..ids.len()).collect();
    let t0 = Instant::now();
    let exact = run(&enc, &ids);
    println!(
        "Exact model: {:.2} s for all texts.\n",
        t0.elapsed().as_secs_f64()
    );

    // ---- 1. MonarchAttention ----
    let steps: Vec<usize> = if quick { vec![1, 2] } else { vec![1, 2, 3] };
    let blocks: Vec<usize> = if quick {
        vec![8, 16]
    } else {
        vec![4, 8, 16, 32]
    };
    let lengths: Vec<usize> = if quick {
        vec![128]
    } else {
        vec![128, 256, 512]
    };
    let reps = if quick { 1 } else { 7 };
    let probe = texts[n_short..].join(" ");
    let seqs: Vec<Vec<u32>> = lengths
        .iter()
        .map(|&n| synthetic_ids(&enc, &probe, n))
        .collect();
    let base_t: Vec<(f64, f64)> = seqs
        .iter()
        .map(|s| timings(&enc.model, AttentionKind::Exact, s, reps)[0])
        .collect();
    println!("## 1. MonarchAttention in every layer (zero-shot)\n");
    println!(
        "Cosine, nearest-neighbour agreement and hidden-state error over all {} texts; \"long\": \
         mean cosine over the {} texts of ≥ 128 tokens. Time: attention of the 6 layers / whole \
         encoder for one sequence of N tokens on one thread, milliseconds, median of {reps} \
         (speed-up against exact attention timed alternately with it).\n",
        texts.len(),
        long.len()
    );
    let mut head = String::from(
        "| attention | mean cos | worst cos | long: mean cos | NN agree | hidden rel. err |",
    );
    let mut rule = String::from("|---|---|---|---|---|---|");
    for n in &lengths {
        head += &format!(" N={n}: attn ms | N={n}: encoder ms |");
        rule += "---|---|";
    }
    println!("{head}\n{rule}");
    let mut row = "| exact | 1 | 1 | 1 | 1 | 0 |".to_string();
    for (a, e) in &base_t {
        row += &format!(" {:.2} | {:.1} |", a * 1e3, e * 1e3);
    }
    println!("{row}");
    let mut curves: Vec<(usize, Vec<(usize, f64)>)> = vec![];
    let mut worst_curves: Vec<(usize, Vec<(usize, f64)>)> = vec![];
    for &t in &steps {
        let mut curve = vec![];
        let mut wcurve = vec![];
        for &b in &blocks {
            let kind = AttentionKind::Monarch(MonarchAttention::new(b, t));
            let mut e2 = enc.clone();
            e2.set_attention(kind);
            let r = run(&e2, &ids);
            let m = metrics(&exact, &r, &all, &long);
            curve.push((b, m.mean_cos));
            wcurve.push((b, m.worst_cos));
            let mut row = format!(
                "| {} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} |",
                kind_name(kind),
                m.mean_cos,
                m.worst_cos,
                m.long_cos,
                m.nn_agree,
                m.hidden_err
            );
            for s in &seqs {
                let [(ba, be), (a, e)] = timings(&enc.model, kind, s, reps);
                row += &format!(
                    " {:.2} ({:.2}×) | {:.1} ({:.2}×) |",
                    a * 1e3,
                    ba / a,
                    e * 1e3,
                    be / e
                );
            }
            println!("{row}");
        }
        curves.push((t, curve));
        worst_curves.push((t, wcurve));
    }
    if let Some(path) = arg_value("--svg") {
        write_svg(&path, &curves, &worst_curves);
        println!("\n(picture written to {path})");
    }

    // ---- 2. Dense layers projected onto Monarch ----
    println!("\n## 2. Dense layers projected onto Monarch (`Monarch::project`)\n");
    println!(
        "All 36 dense layers of the 6 blocks (q, k, v, attention output: 384×384; intermediate \
         1536×384; output 384×1536), each replaced by its Frobenius-nearest Monarch with \
         per-slice rank ρ and block counts near √n (384 → 16 blocks, 1536 → 32). Weight error: \
         ‖W − M̂‖_F / ‖W‖_F, mean over the layers of each kind. Exact attention.\n"
    );
    println!("| ρ | layers projected | params kept | weight err q,k,v,o | weight err FFN | mean cos | worst cos | long: mean cos | NN agree | hidden rel. err |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ranks: Vec<usize> = if quick { vec![2] } else { vec![1, 2, 4] };
    let dense_total = enc.model.dense_weight_params();
    let mut projected: Vec<(usize, Enc)> = vec![];
    for &rho in &ranks {
        let scopes: &[&str] = if quick {
            &["all"]
        } else {
            &["all", "attention", "FFN"]
        };
        for &scope in scopes {
            let mut e2 = enc.clone();
            let rep = e2.model.project_dense(rho, None)?;
            // Undo the layers outside the scope.
            for (li, layer) in e2.model.layers.iter_mut().enumerate() {
                let orig = &enc.model.layers[li];
                for (di, d) in layer.dense_mut().into_iter().enumerate() {
                    let attn = di < 4;
                    let keep = match scope {
                        "all" => true,
                        "attention" => attn,
                        _ => !attn,
                    };
                    if !keep {
                        *d = orig.dense()[di].clone();
                    }
                }
            }
            let mean = |f: &dyn Fn(usize) -> bool| {
                let v: Vec<f64> = rep
                    .iter()
                    .filter(|r| f(DENSE_NAMES.iter().position(|n| *n == r.name).unwrap()))
                    .map(|r| r.relative_error)
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            let r = run(&e2, &ids);
            let m = metrics(&exact, &r, &all, &long);
            let label = match scope {
                "all" => "all 36",
                "attention" => "q, k, v, o only",
                _ => "FFN only",
            };
            let err_attn = if scope == "FFN" {
                "—".to_string()
            } else {
                format!("{:.3}", mean(&|i| i < 4))
            };
            let err_ffn = if scope == "attention" {
                "—".to_string()
            } else {
                format!("{:.3}", mean(&|i| i >= 4))
            };
            println!(
                "| {rho} | {label} | {:.1}% | {err_attn} | {err_ffn} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} |",
                100.0 * e2.model.dense_weight_params() as f64 / dense_total as f64,
                m.mean_cos,
                m.worst_cos,
                m.long_cos,
                m.nn_agree,
                m.hidden_err
            );
            if scope == "all" {
                projected.push((rho, e2));
            }
        }
    }

    // ---- 3. Recovery ----
    let opts = FitOptions {
        steps: if quick { 5 } else { 60 },
        ..FitOptions::default()
    };
    let max_rows = 4096;
    let train: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 0).collect();
    let test: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 1).collect();
    println!(
        "\n## 3. Recovery: projected factors trained to reproduce the exact layers' outputs\n\n\
         All 36 projected layers (rows \"all 36\" above; same parameter count) get {} full-batch \
         Adam steps each on ‖X·M̂ᵀ − Y‖² / ‖Y‖², Y = X_exact·Wᵀ the exact layer's output on the \
         {} training texts (every other text; at most {max_rows} token rows per layer), \
         gradients from the core's Monarch VJP. *local*: X = X_exact, the layer's input in the \
         exact model. *sequential*: layer by layer in order, X = the input that the compressed \
         model (earlier layers already fitted) gives the layer. Output error: mean over layers on \
         the training rows. Embedding metrics on the {} held-out texts.\n",
        opts.steps,
        train.len(),
        test.len()
    );
    let train_batches: Vec<TokenBatch> = train
        .iter()
        .map(|&i| TokenBatch::from_ids(std::slice::from_ref(&ids[i])).unwrap())
        .collect();
    println!("| ρ | fit | layer output err before → after | mean cos | worst cos | NN agree | hidden rel. err |");
    println!("|---|---|---|---|---|---|---|");
    for (rho, e2) in &projected {
        let before = metrics(&exact, &run(e2, &ids), &test, &long);
        println!(
            "| {rho} | none | — | {:.4} | {:.4} | {:.3} | {:.3} |",
            before.mean_cos, before.worst_cos, before.nn_agree, before.hidden_err
        );
        for sequential in [false, true] {
            let mut fitted = e2.clone();
            let t = Instant::now();
            let reps = distill(
                &mut fitted.model,
                &enc.model,
                &train_batches,
                max_rows,
                opts,
                sequential,
            )?;
            let secs = t.elapsed().as_secs_f64();
            let n = reps.len() as f64;
            let eb = reps.iter().map(|r| r.before).sum::<f64>() / n;
            let ea = reps.iter().map(|r| r.after).sum::<f64>() / n;
            let after = metrics(&exact, &run(&fitted, &ids), &test, &long);
            println!(
                "| {rho} | {} ({secs:.0} s) | {eb:.3} → {ea:.3} | {:.4} | {:.4} | {:.3} | {:.3} |",
                if sequential { "sequential" } else { "local" },
                after.mean_cos,
                after.worst_cos,
                after.nn_agree,
                after.hidden_err
            );
        }
    }
    Ok(())
}
