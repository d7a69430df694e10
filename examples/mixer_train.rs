//! Trains two small mixers on a synthetic recall task with the crate's VJPs and a hand-written
//! Adam: an MLP-Mixer block built from PK layers, and the paper's M2 layer whose sequence mixing
//! is a causal long convolution through the Monarch DFT.
//!
//! Task: sequences of `L` random tokens from a vocabulary of `V`; at every position `t ≥ OFFSET`
//! the model must output the token seen at `t − OFFSET` (chance accuracy `1/V`).
//!
//! Run: `cargo run --release --example mixer_train`

use monarch::mixer::{ConvMethod, LongConv, M2Layer, SequenceMixing, SequenceMixingGrad};
use monarch::ndarray::{Array1, Array2, Array3, Axis};
use monarch::pk::MlpMixerBlock;
use monarch::primitives::nn::Activation;
use monarch::primitives::random::normal_matrix;
use rand::{Rng, SeedableRng};

const L: usize = 16;
const V: usize = 8;
const C: usize = 16;
const OFFSET: usize = 3;
const BATCH: usize = 32;
const STEPS: usize = 400;

/// Adam over a list of flat parameter tensors.
struct Adam {
    lr: f64,
    t: i32,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
}

impl Adam {
    fn new(lr: f64) -> Self {
        Adam {
            lr,
            t: 0,
            m: vec![],
            v: vec![],
        }
    }
    fn step(&mut self, params: Vec<&mut [f64]>, grads: Vec<Vec<f64>>) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        if self.m.is_empty() {
            self.m = grads.iter().map(|g| vec![0.0; g.len()]).collect();
            self.v = self.m.clone();
        }
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (k, (p, g)) in params.into_iter().zip(grads).enumerate() {
            assert_eq!(p.len(), g.len());
            for i in 0..p.len() {
                self.m[k][i] = b1 * self.m[k][i] + (1.0 - b1) * g[i];
                self.v[k][i] = b2 * self.v[k][i] + (1.0 - b2) * g[i] * g[i];
                p[i] -= self.lr * (self.m[k][i] / c1) / ((self.v[k][i] / c2).sqrt() + eps);
            }
        }
    }
}

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

fn embed_grad(gx: &Array3<f64>, toks: &[Vec<usize>]) -> Vec<f64> {
    let mut ge = Array2::<f64>::zeros((V, C));
    for (b, seq) in toks.iter().enumerate() {
        for (t, &tok) in seq.iter().enumerate() {
            let mut row = ge.row_mut(tok);
            row += &gx.index_axis(Axis(0), b).row(t);
        }
    }
    ge.into_raw_vec_and_offset().0
}

fn v(a: impl IntoIterator<Item = f64>) -> Vec<f64> {
    a.into_iter().collect()
}

fn train_pk_mixer() -> f64 {
    println!("== MLP-Mixer block from PK layers (S = {L} tokens, C = {C} channels) ==");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut e = normal_matrix::<f64>((V, C), 1.0, 2);
    let mut blk = MlpMixerBlock::<f64>::random(L, C, 32, 32, 3).unwrap();
    let mut wh = normal_matrix::<f64>((V, C), 0.25, 4);
    let mut bh = Array1::<f64>::zeros(V);
    let mut opt = Adam::new(3e-3);
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
        let ge = embed_grad(&g.x, &toks);
        let bias = |b: &Option<Array1<f64>>| v(b.as_ref().unwrap().iter().copied());
        let grads = vec![
            ge,
            v(gwh),
            v(gbh),
            v(g.ln1.weight),
            v(g.ln1.bias),
            v(g.ln2.weight),
            v(g.ln2.bias),
            v(g.tok1.w),
            bias(&g.tok1.bias),
            v(g.tok2.w),
            bias(&g.tok2.bias),
            v(g.ch1.w),
            bias(&g.ch1.bias),
            v(g.ch2.w),
            bias(&g.ch2.bias),
        ];
        let params: Vec<&mut [f64]> = vec![
            e.as_slice_mut().unwrap(),
            wh.as_slice_mut().unwrap(),
            bh.as_slice_mut().unwrap(),
            blk.ln1.weight.as_slice_mut().unwrap(),
            blk.ln1.bias.as_slice_mut().unwrap(),
            blk.ln2.weight.as_slice_mut().unwrap(),
            blk.ln2.bias.as_slice_mut().unwrap(),
            blk.tok1.w.as_slice_mut().unwrap(),
            blk.tok1.bias.as_mut().unwrap().as_slice_mut().unwrap(),
            blk.tok2.w.as_slice_mut().unwrap(),
            blk.tok2.bias.as_mut().unwrap().as_slice_mut().unwrap(),
            blk.ch1.w.as_slice_mut().unwrap(),
            blk.ch1.bias.as_mut().unwrap().as_slice_mut().unwrap(),
            blk.ch2.w.as_slice_mut().unwrap(),
            blk.ch2.bias.as_mut().unwrap().as_slice_mut().unwrap(),
        ];
        opt.step(params, grads);
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
    let mut k = normal_matrix::<f64>((C, L), 0.1, 13);
    let mut d = Array1::<f64>::zeros(C);
    let conv = LongConv::causal(k.clone(), d.clone()).unwrap();
    let mut layer = M2Layer::random_conv(conv, C, 4, 14).unwrap();
    layer.act = Activation::Gelu;
    layer.method = ConvMethod::MonarchDft;
    let mut wh = normal_matrix::<f64>((V, C), 0.25, 15);
    let mut bh = Array1::<f64>::zeros(V);
    let mut opt = Adam::new(1e-2);
    let mut acc = 0.0;
    for step in 0..=STEPS {
        layer.seq = SequenceMixing::Conv(LongConv::causal(k.clone(), d.clone()).unwrap());
        let toks = batch(&mut rng);
        let x = embed(&e, &toks);
        let y = layer.forward(x.view()).unwrap();
        let (loss, a, gy, gwh, gbh) = head_loss(&y, &wh, &bh, &toks);
        acc = a;
        if step % 50 == 0 {
            println!("step {step:4}  loss {loss:.4}  accuracy {a:.3}");
        }
        let g = layer.vjp(x.view(), gy.view()).unwrap();
        let SequenceMixingGrad::Conv(cg) = &g.seq else {
            unreachable!()
        };
        let grads = vec![
            embed_grad(&g.x, &toks),
            v(gwh),
            v(gbh),
            v(cg.k_fwd.iter().copied()),
            v(cg.d.iter().copied()),
            v(g.m3.w1),
            v(g.m3.w2),
            v(g.k2),
            v(g.m4.w1),
            v(g.m4.w2),
            v(g.ln.weight),
            v(g.ln.bias),
        ];
        let M2Layer { m3, m4, k2, ln, .. } = &mut layer;
        let mut m3w1 = m3.w1().clone();
        let mut m3w2 = m3.w2().clone();
        let mut m4w1 = m4.w1().clone();
        let mut m4w2 = m4.w2().clone();
        let params: Vec<&mut [f64]> = vec![
            e.as_slice_mut().unwrap(),
            wh.as_slice_mut().unwrap(),
            bh.as_slice_mut().unwrap(),
            k.as_slice_mut().unwrap(),
            d.as_slice_mut().unwrap(),
            m3w1.as_slice_mut().unwrap(),
            m3w2.as_slice_mut().unwrap(),
            k2.as_slice_mut().unwrap(),
            m4w1.as_slice_mut().unwrap(),
            m4w2.as_slice_mut().unwrap(),
            ln.weight.as_slice_mut().unwrap(),
            ln.bias.as_slice_mut().unwrap(),
        ];
        opt.step(params, grads);
        m3.w1_mut().assign(&m3w1);
        m3.w2_mut().assign(&m3w2);
        m4.w1_mut().assign(&m4w1);
        m4.w2_mut().assign(&m4w2);
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
