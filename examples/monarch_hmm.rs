//! Fits a Monarch HMM with thousands of hidden states to text sampled from a known HMM, next to
//! a dense HMM started from the same dense transition matrix, printing the log-likelihood per
//! token after each EM step and the time per step of each.
//!
//! The Monarch HMM is initialised the way the paper does it, by circuit multiplication: the
//! product of two random `√h`-state HMMs is an `h`-state HMM whose transition matrix is a
//! tied-block Monarch; EM then unties the blocks. The dense HMM starts from exactly the same
//! model (same initial distribution, same dense transition matrix, same emissions).
//!
//! Run: `cargo run --release --example monarch_hmm [-- STATES SEQS LEN STEPS]`
//! (defaults 4096 states, 32 sequences of 32 symbols, 3 EM steps, f32: chosen so the default run
//! stays under a minute in release on 2 busy cores; most of the time is the dense HMM's).

use monarch::circuit::{softmax_blocks, Hmm};
use monarch::ndarray::{Array1, Array2};
use monarch::primitives::random::normal_matrix;
use std::time::Instant;

fn softmax_rows(m: Array2<f32>) -> Array2<f32> {
    let (r, c) = m.dim();
    softmax_blocks(m.into_shape_with_order((1, r, c)).unwrap().view())
        .unwrap()
        .into_shape_with_order((r, c))
        .unwrap()
}

/// A random dense HMM with `h` states over `vocab` symbols; `peak` sharpens the rows.
fn random_dense(h: usize, vocab: usize, peak: f64, seed: u64) -> Hmm<f32> {
    let pi = softmax_rows(normal_matrix((1, h), 1.0, seed))
        .row(0)
        .to_owned();
    let t = softmax_rows(normal_matrix((h, h), peak, seed + 1));
    let e = softmax_rows(normal_matrix((h, vocab), peak, seed + 2));
    Hmm::dense(pi, t, e).expect("softmax rows are distributions")
}

fn main() -> Result<(), monarch::Error> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: STATES SEQS LEN STEPS"))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (h, nseq, len, steps) = (arg(0, 4096), arg(1, 32), arg(2, 32), arg(3, 3));
    let b = (h as f64).sqrt().round() as usize;
    assert_eq!(b * b, h, "STATES must be a perfect square");
    let vocab = 27; // "text": 26 letters and a space

    // Text from a known 32-state HMM.
    let truth = random_dense(32, vocab, 2.5, 1);
    let train = truth.sample(nseq, len, 7)?;
    let tokens = (nseq * len) as f32;
    let truth_ll = truth.log_likelihood(train.view())?.sum() / tokens;

    // Monarch HMM by circuit multiplication of two b-state HMMs (tied blocks), then a little noise
    // on the emissions so that states can specialise.
    let init = random_dense(b, vocab, 1.0, 11).product(&random_dense(b, vocab, 1.0, 12))?;
    let noise = normal_matrix::<f32>((h, vocab), 0.3, 13);
    let emit = softmax_rows(init.emission().mapv(|p| p.ln()) + &noise);
    let mut mon = Hmm::new(
        init.initial().to_owned(),
        init.transition().clone(),
        emit.clone(),
    )?;
    let t_dense = mon.transition().to_dense();
    let mut dense = Hmm::dense(Array1::from(mon.initial().to_vec()), t_dense, emit)?;

    println!(
        "{h} hidden states (Monarch: 2 factors of {b} blocks {b}×{b}, {} transition params; dense: {}), \
         {nseq} sequences × {len} symbols, vocab {vocab}, f32",
        mon.transition().num_params(),
        h * h
    );
    println!("true model log-likelihood/token on the training text: {truth_ll:.4}");
    println!();
    println!("| EM step | Monarch LL/token | Monarch s/step | dense LL/token | dense s/step |");
    println!("|---|---|---|---|---|");
    let (mut tm, mut td) = (0.0, 0.0);
    for step in 0..=steps {
        // Step 0 reports the starting model; every EM step returns the likelihood before the
        // update, so the final likelihood is evaluated separately.
        let (lm, sm, ld, sd) = if step < steps {
            let t0 = Instant::now();
            let lm = mon.em_step(train.view())?;
            let sm = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let ld = dense.em_step(train.view())?;
            let sd = t0.elapsed().as_secs_f64();
            tm += sm;
            td += sd;
            (lm, sm, ld, sd)
        } else {
            let lm = mon.log_likelihood(train.view())?.sum();
            let ld = dense.log_likelihood(train.view())?.sum();
            (lm, f64::NAN, ld, f64::NAN)
        };
        let fmt = |s: f64| {
            if s.is_nan() {
                "–".to_string()
            } else {
                format!("{s:.3}")
            }
        };
        println!(
            "| {step} | {:.4} | {} | {:.4} | {} |",
            lm / tokens,
            fmt(sm),
            ld / tokens,
            fmt(sd)
        );
    }
    println!();
    println!(
        "mean time per EM step: Monarch {:.3} s, dense {:.3} s ({:.1}× faster)",
        tm / steps as f64,
        td / steps as f64,
        td / tm
    );
    Ok(())
}
