//! Fine-tuning a frozen "pretrained" MLP on a shifted task with LoRA, MoRe and GSOFT at matched
//! parameter budgets, trained with the crate's Adam (`monarch::primitives::optim`).
//!
//! The pretrained model is a random two-layer MLP `64 → 128 → 32` (tanh). Two target tasks
//! shift its weights: a **low-rank** shift (rank 4 per layer, LoRA's home ground) and a
//! **full-rank** shift (a dense random perturbation). Each method adapts both layers:
//! LoRA r = 4, MoRe N = 4 blocks with r = 4 (same parameter count: r·(in+out) per layer) and
//! GSOFT with 8×8 blocks (two GS factors on the input side plus an output scale; its count below
//! is the effective number — the strict upper triangles of the skew blocks plus the scales).
//! Every method gets the best of a small learning-rate sweep; the held-out loss curves are
//! printed side by side, then `‖QᵀQ − I‖` of GSOFT's rotations after 1000 steps.
//!
//! Run: `cargo run --release --example finetune [-- curves.csv]` (the CSV has one row per
//! logged step: `task,step,lora,more,gsoft`).

use monarch::gs::{GsoftGrad, GsoftLinear, OrthMap};
use monarch::more::{Adapter, LoraAdapter, LoraGrad, MoReAdapter, MoReGrad};
use monarch::ndarray::{Array1, Array2};
use monarch::primitives::optim::Adam;
use monarch::primitives::params::Params;
use monarch::primitives::random::normal_matrix;
use std::time::Instant;

const D_IN: usize = 64;
const D_HID: usize = 128;
const D_OUT: usize = 32;
const STEPS: usize = 1000;
const BATCH: usize = 64;
const LOG_EVERY: usize = 50;

/// One adapted linear layer, whichever the method; its trainable parameters are listed by
/// [`Params`] and stepped by the crate's [`Adam`].
trait Trainable: Params<f64> {
    fn forward(&self, x: &Array2<f64>) -> Array2<f64>;
    /// Input gradient and the parameter gradients.
    fn backward(&self, x: &Array2<f64>, g: &Array2<f64>) -> (Array2<f64>, Self::Grad);
    fn effective_params(&self) -> usize;
}

impl Trainable for LoraAdapter<f64> {
    fn forward(&self, x: &Array2<f64>) -> Array2<f64> {
        Adapter::forward(self, x.view()).unwrap()
    }
    fn backward(&self, x: &Array2<f64>, g: &Array2<f64>) -> (Array2<f64>, LoraGrad<f64>) {
        let gr = self.vjp(x.view(), g.view()).unwrap();
        (gr.x.clone(), gr)
    }
    fn effective_params(&self) -> usize {
        self.num_params()
    }
}

impl Trainable for MoReAdapter<f64> {
    fn forward(&self, x: &Array2<f64>) -> Array2<f64> {
        Adapter::forward(self, x.view()).unwrap()
    }
    fn backward(&self, x: &Array2<f64>, g: &Array2<f64>) -> (Array2<f64>, MoReGrad<f64>) {
        let gr = self.vjp(x.view(), g.view()).unwrap();
        (gr.x.clone(), gr)
    }
    fn effective_params(&self) -> usize {
        self.num_params()
    }
}

impl Trainable for GsoftLinear<f64> {
    fn forward(&self, x: &Array2<f64>) -> Array2<f64> {
        GsoftLinear::forward(self, x.view()).unwrap()
    }
    fn backward(&self, x: &Array2<f64>, g: &Array2<f64>) -> (Array2<f64>, GsoftGrad<f64>) {
        let gr = self.vjp(x.view(), g.view()).unwrap();
        (gr.x.clone(), gr)
    }
    fn effective_params(&self) -> usize {
        self.q().num_free_params() + self.scale().len()
    }
}

struct Mlp {
    w1: Array2<f64>,
    b1: Array1<f64>,
    w2: Array2<f64>,
    b2: Array1<f64>,
}

impl Mlp {
    fn forward(&self, x: &Array2<f64>) -> Array2<f64> {
        let h = (x.dot(&self.w1.t()) + &self.b1).mapv(f64::tanh);
        h.dot(&self.w2.t()) + &self.b2
    }
}

/// Student: the frozen MLP with an adapter on each layer.
fn train<L1: Trainable, L2: Trainable>(
    mut l1: L1,
    mut l2: L2,
    teacher: &Mlp,
    lr: f64,
    eval_x: &Array2<f64>,
    eval_y: &Array2<f64>,
) -> (Vec<f64>, L1, L2) {
    let eval = |l1: &L1, l2: &L2| {
        let y = l2.forward(&l1.forward(eval_x).mapv(f64::tanh));
        (&y - eval_y).mapv(|v| v * v).sum() / eval_x.nrows() as f64
    };
    let (mut o1, mut o2) = (Adam::new(lr).unwrap(), Adam::new(lr).unwrap());
    let mut curve = vec![eval(&l1, &l2)];
    for step in 0..STEPS {
        let x = normal_matrix::<f64>((BATCH, D_IN), 1.0, 10_000 + step as u64);
        let t = teacher.forward(&x);
        let h = l1.forward(&x).mapv(f64::tanh);
        let y = l2.forward(&h);
        let gy = (&y - &t) * (2.0 / BATCH as f64);
        let (gh, g2) = l2.backward(&h, &gy);
        let gpre = gh * &h.mapv(|v| 1.0 - v * v);
        let (_, g1) = l1.backward(&x, &gpre);
        o1.step(&mut l1, &g1).unwrap();
        o2.step(&mut l2, &g2).unwrap();
        if (step + 1) % LOG_EVERY == 0 {
            let l = eval(&l1, &l2);
            if !l.is_finite() {
                curve.push(f64::INFINITY);
                break;
            }
            curve.push(l);
        }
    }
    (curve, l1, l2)
}

fn low_rank(out: usize, inp: usize, rank: usize, scale: f64, seed: u64) -> Array2<f64> {
    let u = normal_matrix::<f64>((out, rank), 1.0, seed);
    let v = normal_matrix::<f64>((rank, inp), 1.0, seed + 1);
    u.dot(&v) * (scale / ((rank * inp) as f64).sqrt())
}

fn best_of<F: FnMut(f64) -> Vec<f64>>(lrs: &[f64], mut f: F) -> (f64, Vec<f64>) {
    let mut best: Option<(f64, Vec<f64>)> = None;
    for &lr in lrs {
        let c = f(lr);
        let last = *c.last().unwrap();
        if best.as_ref().is_none_or(|(_, b)| last < *b.last().unwrap()) {
            best = Some((lr, c));
        }
    }
    best.unwrap()
}

fn main() {
    let csv = std::env::args().nth(1);
    let start = Instant::now();
    let base = Mlp {
        w1: normal_matrix::<f64>((D_HID, D_IN), 1.0 / (D_IN as f64).sqrt(), 1),
        b1: Array1::from_iter((0..D_HID).map(|i| 0.05 * ((i % 7) as f64 - 3.0))),
        w2: normal_matrix::<f64>((D_OUT, D_HID), 1.0 / (D_HID as f64).sqrt(), 2),
        b2: Array1::zeros(D_OUT),
    };
    let (rank, nblocks, gs_block) = (4, 4, 8);
    let lrs = [3e-3, 1e-2, 3e-2];
    let mut rows = Vec::new();
    println!("pretrained MLP {D_IN}→{D_HID}→{D_OUT} (tanh), adapters on both layers, Adam, batch {BATCH}, {STEPS} steps");
    for (task, shift) in [("low-rank shift", 0u8), ("full-rank shift", 1u8)] {
        let (d1, d2) = if shift == 0 {
            (
                low_rank(D_HID, D_IN, 4, 0.6, 3),
                low_rank(D_OUT, D_HID, 4, 0.6, 5),
            )
        } else {
            (
                normal_matrix::<f64>((D_HID, D_IN), 0.6 / (D_IN as f64).sqrt(), 3),
                normal_matrix::<f64>((D_OUT, D_HID), 0.6 / (D_HID as f64).sqrt(), 5),
            )
        };
        let teacher = Mlp {
            w1: &base.w1 + &d1,
            b1: base.b1.clone(),
            w2: &base.w2 + &d2,
            b2: base.b2.clone(),
        };
        let eval_x = normal_matrix::<f64>((512, D_IN), 1.0, 99);
        let eval_y = teacher.forward(&eval_x);

        let lora = |lr| {
            let l1 =
                LoraAdapter::new(base.w1.clone(), Some(base.b1.clone()), rank, 0.0, 7).unwrap();
            let l2 =
                LoraAdapter::new(base.w2.clone(), Some(base.b2.clone()), rank, 0.0, 8).unwrap();
            train(l1, l2, &teacher, lr, &eval_x, &eval_y).0
        };
        let more = |lr| {
            let l1 = MoReAdapter::new(
                base.w1.clone(),
                Some(base.b1.clone()),
                nblocks,
                rank,
                0.0,
                7,
            )
            .unwrap();
            let l2 = MoReAdapter::new(
                base.w2.clone(),
                Some(base.b2.clone()),
                nblocks,
                rank,
                0.0,
                8,
            )
            .unwrap();
            train(l1, l2, &teacher, lr, &eval_x, &eval_y).0
        };
        let gsoft_layers = || {
            (
                GsoftLinear::new(
                    base.w1.clone(),
                    Some(base.b1.clone()),
                    gs_block,
                    2,
                    OrthMap::Cayley,
                )
                .unwrap(),
                GsoftLinear::new(
                    base.w2.clone(),
                    Some(base.b2.clone()),
                    gs_block,
                    2,
                    OrthMap::Cayley,
                )
                .unwrap(),
            )
        };
        let gsoft = |lr| {
            let (l1, l2) = gsoft_layers();
            train(l1, l2, &teacher, lr, &eval_x, &eval_y).0
        };
        let (lr_l, c_l) = best_of(&lrs, lora);
        let (lr_m, c_m) = best_of(&lrs, more);
        let (lr_g, c_g) = best_of(&lrs, gsoft);

        let (g1, g2) = gsoft_layers();
        let l1 = LoraAdapter::new(base.w1.clone(), None, rank, 0.0, 7).unwrap();
        let l2 = LoraAdapter::new(base.w2.clone(), None, rank, 0.0, 8).unwrap();
        let m1 = MoReAdapter::new(base.w1.clone(), None, nblocks, rank, 0.0, 7).unwrap();
        let m2 = MoReAdapter::new(base.w2.clone(), None, nblocks, rank, 0.0, 8).unwrap();
        println!("\n== task: {task} ==");
        println!(
            "trainable parameters: LoRA r={rank}: {} (rank ≤ {}), MoRe N={nblocks} r={rank}: {} (rank ≤ {}/{}), GSOFT b={gs_block}: {} effective ({} stored)",
            l1.num_params() + l2.num_params(),
            rank,
            m1.num_params() + m2.num_params(),
            m1.max_rank(),
            m2.max_rank(),
            g1.effective_params() + g2.effective_params(),
            g1.num_params() + g2.num_params(),
        );
        println!("best learning rates: LoRA {lr_l:e}, MoRe {lr_m:e}, GSOFT {lr_g:e}");
        println!(
            "{:>6} {:>12} {:>12} {:>12}",
            "step", "LoRA", "MoRe", "GSOFT"
        );
        for i in 0..c_l.len().max(c_m.len()).max(c_g.len()) {
            let get = |c: &Vec<f64>| c.get(i).copied().unwrap_or(f64::NAN);
            let step = i * LOG_EVERY;
            if i % 2 == 0 || i + 1 == c_l.len() {
                println!(
                    "{step:>6} {:>12.5} {:>12.5} {:>12.5}",
                    get(&c_l),
                    get(&c_m),
                    get(&c_g)
                );
            }
            rows.push(format!(
                "{task},{step},{},{},{}",
                get(&c_l),
                get(&c_m),
                get(&c_g)
            ));
        }
        let (fl, fm, fg) = (
            c_l.last().unwrap(),
            c_m.last().unwrap(),
            c_g.last().unwrap(),
        );
        println!(
            "final held-out MSE: LoRA {fl:.5}, MoRe {fm:.5}, GSOFT {fg:.5} → MoRe {} LoRA at equal parameters",
            if fm < fl { "beats" } else { "does NOT beat" }
        );
        // Orthogonality of GSOFT's rotations after 1000 Adam steps at the chosen rate.
        let (_, t1, t2) = train(g1, g2, &teacher, lr_g, &eval_x, &eval_y);
        println!(
            "GSOFT ‖QᵀQ − I‖_F after {STEPS} steps: layer 1 {:.2e}, layer 2 {:.2e}",
            t1.q().orthogonality_error().unwrap(),
            t2.q().orthogonality_error().unwrap()
        );
    }
    if let Some(path) = csv {
        let mut text = String::from("task,step,lora,more,gsoft\n");
        for r in &rows {
            text.push_str(r);
            text.push('\n');
        }
        match std::fs::write(&path, text) {
            Ok(()) => println!("\nloss curves written to {path}"),
            Err(e) => eprintln!("could not write {path}: {e}"),
        }
    }
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());
}
