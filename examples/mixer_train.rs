//! Trains two small mixers on a synthetic recall task with the crate's VJPs, its parameter
//! visitor and its Adam (`monarch::primitives::{params, optim}`): an MLP-Mixer block built from PK layers, and the paper's M2 layer whose sequence mixing
//! is a causal long convolution through the Monarch DFT.
//!
//! Task: sequences of `L` random tokens from a vocabulary of `V`; at every position `t ≥ OFFSET`
//! the model must output the token seen at `t − OFFSET` (chance accuracy `1/V`).
//!
//! Run: `cargo run --release --example mixer_train`

use monarch::mixer::{ConvMethod, LongConv, M2Layer};
use monarch::ndarray::{Array1, Array2, Array3, Axis};
use monarch::pk::MlpMixerBlock;
use monarch::primitives::nn::Activation;
use monarch::primitives::optim::Adam;
use monarch::primitives::random::normal_matrix;
use rand::{Rng, SeedableRng};

const L: usize = 16;
const V: usize = 8;
const C: usize = 16;
const OFFSET: usize = 3;
const BATCH: usize = 32;
const STEPS: usize = 400;

fn batch(rng: &mut rand::rngs::StdRng) -> Vec<Vec<usize>> {
    (0..BATCH)
        .map(|_| (0..L).map(|_| rng.random_range(0..V)).collect())
        .collect()
}

fn embed(e: &Array2<f64>, toks: &[Vec<usize>]) -> Array3<f64> {
    Array3::from_shape_fn((toks.len(), L, C), |(b, t, c)| e[[toks[b][t], c]])
}

/// Cross-entropy of the head on positions `t ≥ OFFSET`: (loss, accuracy, grad of features,
/// grad of head weight, grad of head bias).
fn head_loss(
    feats: &Array3<f64>,
    wh: &Array2<f64>,
    bh: &Array1<f64>,
    toks: &[Vec<usize>],
) -> (f64, f64, Array3<f64>, Array2<f64>, Array1<f64>) {
    let b = toks.len();
    let rows = feats.to_shape((b * L, C)).unwrap().to_owned();
    let logits = rows.dot(&wh.t()) + bh;
    let mut g = Array2::zeros(logits.raw_dim());
    let (mut loss, mut correct) = (0.0, 0usize);
    let count = (b * (L - OFFSET)) as f64;
    for r in 0..b * L {
        let (bi, t) = (r / L, r % L);
        if t < OFFSET {
            continue;
        }
        let target = toks[bi][t - OFFSET];
        let row = logits.row(r);
        let mx = row.fold(f64::NEG_INFINITY, |a, &v| a.max(v));
        let z: f64 = row.iter().map(|&v| (v - mx).exp()).sum();
        loss += -(row[target] - mx - z.ln());
        let argmax = (0..V).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
        correct += (argmax == target) as usize;
        for k in 0..V {
            let p = (row[k] - mx).exp() / z;
            g[[r, k]] = (p - if k == target { 1.0 } else { 0.0 }) / count;
        }
    }
    let gfeat = g.dot(wh).into_shape_with_order((b, L, C)).unwrap();
    (
        loss / count,
        correct as f64 / count,
        gfeat,
        g.t().dot(&rows),
        g.sum_axis(Axis(0)),
    )
}

fn embed_grad(gx: &Array3<f64>, toks: &[Vec<usize>]) -> Array2<f64> {
    let mut ge = Array2::<f64>::zeros((V, C));
    for (b, seq) in toks.iter().enumerate() {
        for (t, &tok) in seq.iter().enumerate() {
            let mut row = ge.row_mut(tok);
            row += &gx.index_axis(Axis(0), b).row(t);
        }
    }
    ge
}

/// One Adam per trained tensor group (the same update as one optimiser over all of them).
struct Opts {
    e: Adam<f64>,
    wh: Adam<f64>,
    bh: Adam<f64>,
    model: Adam<f64>,
}

impl Opts {
    fn new(lr: f64) -> Self {
        let a = || Adam::new(lr).unwrap();
        Opts {
            e: a(),
            wh: a(),
            bh: a(),
            model: a(),
        }
    }
}

fn train_pk_mixer() -> f64 {
    println!("== MLP-Mixer block from PK layers (S = {L} tokens, C = {C} channels) ==");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut e = normal_matrix::<f64>((V, C), 1.0, 2);
    let mut blk = MlpMixerBlock::<f64>::random(L, C, 32, 32, 3).unwrap();
    let mut wh = normal_matrix::<f64>((V, C), 0.25, 4);
    let mut bh = Array1::<f64>::zeros(V);
    let mut opt = Opts::new(3e-3);
    let mut acc = 0.0;
    for step in 0..=STEPS {
        let toks = batch(&mut rng);
        let x = embed(&e, &toks);
        let y = blk.forward(x.view()).unwrap();
        let (loss, a, gy, gwh, gbh) = head_loss(&y, &wh, &bh, &toks);
        acc = a;
        if step % 50 == 0 {
            println!("step {step:4}  loss {loss:.4}  accuracy {a:.3}");
        }
        let g = blk.vjp(x.view(), gy.view()).unwrap();
        opt.e.step(&mut e, &embed_grad(&g.x, &toks)).unwrap();
        opt.wh.step(&mut wh, &gwh).unwrap();
        opt.bh.step(&mut bh, &gbh).unwrap();
        opt.model.step(&mut blk, &g).unwrap();
    }
    acc
}

fn train_m2() -> f64 {
    println!(
        "== M2 layer: causal long conv via Monarch DFT (length 2L = {}), Monarch MLP ==",
        2 * L
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut e = normal_matrix::<f64>((V, C), 1.0, 12);
    let k = normal_matrix::<f64>((C, L), 0.1, 13);
    let d = Array1::<f64>::zeros(C);
    let conv = LongConv::causal(k, d).unwrap();
    let mut layer = M2Layer::random_conv(conv, C, 4, 14).unwrap();
    layer.set_act(Activation::Gelu);
    layer.set_method(ConvMethod::MonarchDft);
    let mut wh = normal_matrix::<f64>((V, C), 0.25, 15);
    let mut bh = Array1::<f64>::zeros(V);
    let mut opt = Opts::new(1e-2);
    let mut acc = 0.0;
    for step in 0..=STEPS {
        let toks = batch(&mut rng);
        let x = embed(&e, &toks);
        let y = layer.forward(x.view()).unwrap();
        let (loss, a, gy, gwh, gbh) = head_loss(&y, &wh, &bh, &toks);
        acc = a;
        if step % 50 == 0 {
            println!("step {step:4}  loss {loss:.4}  accuracy {a:.3}");
        }
        let g = layer.vjp(x.view(), gy.view()).unwrap();
        // The layer's parameters (the convolution's kernel and skip weights, M₃, K₂, M₄, the
        // LayerNorm) and their gradients come in the same order from the visitors.
        opt.e.step(&mut e, &embed_grad(&g.x, &toks)).unwrap();
        opt.wh.step(&mut wh, &gwh).unwrap();
        opt.bh.step(&mut bh, &gbh).unwrap();
        opt.model.step(&mut layer, &g).unwrap();
    }
    acc
}

fn main() {
    let t0 = std::time::Instant::now();
    let a_pk = train_pk_mixer();
    let a_m2 = train_m2();
    println!(
        "final accuracy: PK MLP-Mixer {a_pk:.3}, M2 {a_m2:.3} (chance {:.3}); {:.1} s",
        1.0 / V as f64,
        t0.elapsed().as_secs_f64()
    );
}
