//! The Monarch HMM against a naive dense probability-space HMM with the same dense transition
//! matrix: log-likelihood, posteriors, expected flows (by finite differences), EM monotonicity,
//! Baum–Welch equivalence of the dense variant, the product HMM, and bad input.

#![allow(clippy::needless_range_loop)]

use crate::circuit_ref;

use circuit_ref::DenseHmm;
use monarch::circuit::{softmax_blocks, Hmm, MonarchChain};
use monarch::ndarray::{array, Array1, Array2};
use monarch::primitives::random::normal_matrix;
use monarch::Error;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

fn softmax_rows(m: Array2<f64>) -> Array2<f64> {
    let (r, c) = m.dim();
    softmax_blocks(m.into_shape_with_order((1, r, c)).unwrap().view())
        .unwrap()
        .into_shape_with_order((r, c))
        .unwrap()
}

fn random_hmm(shapes: &[(usize, usize, usize)], vocab: usize, seed: u64) -> Hmm<f64> {
    let t = MonarchChain::<f64>::random_stochastic(shapes, 1.5, seed).unwrap();
    let h = t.in_features();
    let pi = softmax_rows(normal_matrix((1, h), 1.0, seed + 1))
        .row(0)
        .to_owned();
    let e = softmax_rows(normal_matrix((h, vocab), 1.5, seed + 2));
    Hmm::new(pi, t, e).unwrap()
}

fn dense_of(hmm: &Hmm<f64>) -> DenseHmm {
    DenseHmm {
        pi: hmm.initial().to_owned(),
        t: hmm.transition().to_dense(),
        e: hmm.emission().to_owned(),
    }
}

fn seqs(obs: &Array2<usize>) -> Vec<Vec<usize>> {
    obs.rows().into_iter().map(|r| r.to_vec()).collect()
}

const SHAPES3: [(usize, usize, usize); 3] = [(3, 4, 4), (4, 3, 3), (3, 4, 4)]; // h = 12

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn likelihood_and_posteriors_match_dense(seed in 0u64..1000, len in 1usize..7, nseq in 1usize..4) {
        let hmm = random_hmm(&SHAPES3, 5, seed);
        let obs = hmm.sample(nseq, len, seed + 3).unwrap();
        let dense = dense_of(&hmm);
        let ll = hmm.log_likelihood(obs.view()).unwrap();
        let post = hmm.posteriors(obs.view()).unwrap();
        for (s, seq) in seqs(&obs).iter().enumerate() {
            let want = dense.log_likelihood(seq);
            prop_assert!((ll[s] - want).abs() < 1e-10 * (1.0 + want.abs()), "{} vs {}", ll[s], want);
            let dp = dense.posteriors(seq);
            for t in 0..len {
                let row = post.slice(monarch::ndarray::s![s, t, ..]);
                prop_assert!((row.sum() - 1.0).abs() < 1e-10);
                for i in 0..hmm.num_states() {
                    prop_assert!((row[i] - dp[t][i]).abs() < 1e-10);
                }
            }
        }
    }
}

/// log Σ_s log P(x_s) of a chain with one entry changed (not renormalised): the function whose
/// gradient the flows are.
fn ll_with(
    hmm: &Hmm<f64>,
    seqs: &[Vec<usize>],
    edit: impl Fn(&mut DenseHmm, &mut MonarchChain<f64>),
) -> f64 {
    let mut chain = hmm.transition().clone();
    let mut d = dense_of(hmm);
    edit(&mut d, &mut chain);
    d.t = chain.to_dense();
    seqs.iter().map(|s| d.log_likelihood(s)).sum()
}

#[test]
fn expected_flows_are_weight_times_gradient() {
    // flow(θ) = θ · ∂ log P / ∂θ for every parameter θ of the (unnormalised) model.
    let hmm = random_hmm(&SHAPES3, 4, 11);
    let obs = hmm.sample(3, 6, 5).unwrap();
    let ss = seqs(&obs);
    let f = hmm.expected_flows(obs.view()).unwrap();
    let total: f64 = ss.iter().map(|s| dense_of(&hmm).log_likelihood(s)).sum();
    assert!((f.log_likelihood.sum() - total).abs() < 1e-10);
    let h = 1e-6;
    for (l, fl) in f.transition.iter().enumerate() {
        assert!(
            (fl.sum() - 3.0 * 5.0).abs() < 1e-9,
            "factor {l} flow total {}",
            fl.sum()
        );
        for ((a, i, j), &got) in fl.indexed_iter() {
            let w = hmm.transition().factors()[l].weights()[[a, i, j]];
            let plus = ll_with(&hmm, &ss, |_, c| {
                c.factor_mut(l).weights_mut()[[a, i, j]] += h
            });
            let minus = ll_with(&hmm, &ss, |_, c| {
                c.factor_mut(l).weights_mut()[[a, i, j]] -= h
            });
            let want = w * (plus - minus) / (2.0 * h);
            assert!(
                (got - want).abs() < 1e-6,
                "factor {l} ({a},{i},{j}): {got} vs {want}"
            );
        }
    }
    for ((i, o), &got) in f.emission.indexed_iter() {
        let e = hmm.emission()[[i, o]];
        let plus = ll_with(&hmm, &ss, |d, _| d.e[[i, o]] += h);
        let minus = ll_with(&hmm, &ss, |d, _| d.e[[i, o]] -= h);
        assert!((got - e * (plus - minus) / (2.0 * h)).abs() < 1e-6);
    }
    for (i, &got) in f.initial.iter().enumerate() {
        let p = hmm.initial()[i];
        let plus = ll_with(&hmm, &ss, |d, _| d.pi[i] += h);
        let minus = ll_with(&hmm, &ss, |d, _| d.pi[i] -= h);
        assert!((got - p * (plus - minus) / (2.0 * h)).abs() < 1e-6);
    }
}

#[test]
fn em_never_decreases_the_likelihood() {
    for (shapes, seed) in [
        (&SHAPES3[..], 1u64),
        (&[(4usize, 4usize, 4usize), (4, 4, 4)][..], 2),
        (&[(2, 6, 6), (4, 3, 3)][..], 3),
    ] {
        let truth = random_hmm(shapes, 6, seed + 100);
        let obs = truth.sample(8, 20, seed).unwrap();
        let mut hmm = random_hmm(shapes, 6, seed);
        let mut prev = f64::NEG_INFINITY;
        for step in 0..15 {
            let ll = hmm.em_step(obs.view()).unwrap();
            assert!(ll >= prev - 1e-9 * ll.abs(), "step {step}: {ll} < {prev}");
            prev = ll;
        }
        let after = hmm.log_likelihood(obs.view()).unwrap().sum();
        assert!(after >= prev - 1e-9 * prev.abs());
        // Still a valid model: rebuilding it passes every probability check.
        Hmm::new(
            hmm.initial().to_owned(),
            hmm.transition().clone(),
            hmm.emission().to_owned(),
        )
        .unwrap();
    }
}

#[test]
fn dense_variant_em_is_baum_welch() {
    // h = 6, and h = 256 (large enough for the parallel split of the dense flow GEMM).
    for (shapes, nseq, len) in [
        (&[(2usize, 3usize, 3usize), (3, 2, 2)][..], 4usize, 7usize),
        (&[(16, 16, 16), (16, 16, 16)][..], 2, 4),
    ] {
        dense_em_case(shapes, nseq, len);
    }
}

fn dense_em_case(shapes: &[(usize, usize, usize)], nseq: usize, len: usize) {
    let m = random_hmm(shapes, 4, 9);
    let obs = m.sample(nseq, len, 1).unwrap();
    let mut dense = Hmm::dense(
        m.initial().to_owned(),
        m.transition().to_dense(),
        m.emission().to_owned(),
    )
    .unwrap();
    let mut reference = dense_of(&m);
    for _ in 0..3 {
        dense.em_step(obs.view()).unwrap();
        reference.em_step(&seqs(&obs));
    }
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-10);
    assert!(close(
        dense.initial().as_slice().unwrap(),
        reference.pi.as_slice().unwrap()
    ));
    assert!(close(
        dense.transition().to_dense().as_slice().unwrap(),
        reference.t.as_slice().unwrap()
    ));
    assert!(close(
        dense.emission().as_standard_layout().as_slice().unwrap(),
        reference.e.as_slice().unwrap()
    ));
    // And the Monarch HMM's first E-step sees the same likelihood as the dense one.
    let mut mm = m.clone();
    let l1 = mm.em_step(obs.view()).unwrap();
    let l2 = Hmm::dense(
        m.initial().to_owned(),
        m.transition().to_dense(),
        m.emission().to_owned(),
    )
    .unwrap()
    .em_step(obs.view())
    .unwrap();
    assert!((l1 - l2).abs() < 1e-10);
}

#[test]
fn product_hmm_is_the_kronecker_model() {
    let a = random_hmm(&[(2, 2, 2), (2, 2, 2)], 3, 4);
    let b = Hmm::dense(
        array![0.3, 0.7],
        array![[0.9, 0.1], [0.25, 0.75]],
        array![[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]],
    )
    .unwrap();
    let p = a.product(&b).unwrap();
    assert_eq!(p.num_states(), 8);
    let ta = a.transition().to_dense();
    let tb = b.transition().to_dense();
    let want_t = Array2::from_shape_fn((8, 8), |(i, j)| ta[[i / 2, j / 2]] * tb[[i % 2, j % 2]]);
    let got_t = p.transition().to_dense();
    assert!(got_t
        .iter()
        .zip(want_t.iter())
        .all(|(x, y)| (x - y).abs() < 1e-14));
    let mut e = Array2::from_shape_fn((8, 3), |(i, o)| {
        a.emission()[[i / 2, o]] * b.emission()[[i % 2, o]]
    });
    for mut r in e.rows_mut() {
        let s = r.sum();
        r /= s;
    }
    let d = DenseHmm {
        pi: Array1::from_shape_fn(8, |i| a.initial()[i / 2] * b.initial()[i % 2]),
        t: want_t,
        e,
    };
    let obs = p.sample(2, 6, 3).unwrap();
    let ll = p.log_likelihood(obs.view()).unwrap();
    for (s, seq) in seqs(&obs).iter().enumerate() {
        assert!((ll[s] - d.log_likelihood(seq)).abs() < 1e-10);
    }
}

#[test]
fn bad_probabilities_and_observations_are_errors() {
    let t = MonarchChain::<f64>::random_stochastic(&[(2, 2, 2), (2, 2, 2)], 1.0, 0).unwrap();
    let e = Array2::from_elem((4, 2), 0.5);
    let ok = Array1::from_elem(4, 0.25);
    assert!(Hmm::new(ok.clone(), t.clone(), e.clone()).is_ok());
    let neg = array![0.5, 0.6, -0.1, 0.0];
    assert!(matches!(
        Hmm::new(neg, t.clone(), e.clone()),
        Err(Error::InvalidArgument(_))
    ));
    let short = array![0.25, 0.25, 0.25, 0.2];
    let msg = Hmm::new(short, t.clone(), e.clone())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sum"), "{msg}");
    let bad_e = Array2::from_elem((4, 2), 0.4);
    assert!(matches!(
        Hmm::new(ok.clone(), t.clone(), bad_e),
        Err(Error::InvalidArgument(_))
    ));
    let raw = MonarchChain::<f64>::random(&[(2, 2, 2), (2, 2, 2)], 0).unwrap();
    assert!(Hmm::new(ok.clone(), raw, e.clone()).is_err());
    assert!(matches!(
        Hmm::new(Array1::zeros(0), t.clone(), e.clone()),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        Hmm::new(Array1::from_elem(3, 1.0 / 3.0), t.clone(), e.clone()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Hmm::new(ok.clone(), t.clone(), Array2::zeros((4, 0))),
        Err(Error::ZeroSize { .. })
    ));
    let dense_bad = Hmm::dense(
        array![1.0, 0.0],
        array![[0.5, 0.6], [0.5, 0.5]],
        array![[1.0], [1.0]],
    );
    assert!(matches!(dense_bad, Err(Error::InvalidArgument(_))));
    let hmm = Hmm::new(ok, t, e).unwrap();
    assert!(matches!(
        hmm.log_likelihood(array![[0usize, 2]].view()),
        Err(Error::TooLarge { .. })
    ));
    // No sequences is an empty batch (an empty result), empty sequences an error.
    assert_eq!(
        hmm.log_likelihood(Array2::<usize>::zeros((0, 3)).view())
            .unwrap()
            .len(),
        0
    );
    assert!(matches!(
        hmm.log_likelihood(Array2::<usize>::zeros((2, 0)).view()),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        hmm.posteriors(Array2::<usize>::zeros((2, 0)).view()),
        Err(Error::ZeroSize { .. })
    ));
    assert_eq!(hmm.sample(0, 3, 1).unwrap().dim(), (0, 3));
    assert!(matches!(hmm.sample(2, 0, 1), Err(Error::ZeroSize { .. })));
}

#[test]
fn impossible_sequences_give_log_zero_not_nan() {
    // State 0 only emits symbol 0 and is absorbing; a sequence 0,1 has probability zero.
    let hmm = Hmm::dense(
        array![1.0, 0.0],
        array![[1.0, 0.0], [0.5, 0.5]],
        array![[1.0, 0.0], [0.0, 1.0]],
    )
    .unwrap();
    let ll = hmm
        .log_likelihood(array![[0usize, 1], [0, 0]].view())
        .unwrap();
    assert_eq!(ll[0], f64::NEG_INFINITY);
    assert_eq!(ll[1], 0.0);
    let mut h2 = hmm.clone();
    assert!(matches!(
        h2.em_step(array![[0usize, 1]].view()),
        Err(Error::NonFinite { .. })
    ));
    assert_eq!(h2, hmm);
}

#[test]
fn f32_hmm_matches_f64() {
    let m = random_hmm(&SHAPES3, 5, 21);
    let obs = m.sample(3, 12, 2).unwrap();
    let m32 = Hmm::new(
        m.initial().mapv(|v| v as f32),
        m.transition().map(|v| v as f32),
        m.emission().mapv(|v| v as f32),
    )
    .unwrap();
    let l64 = m.log_likelihood(obs.view()).unwrap();
    let l32 = m32.log_likelihood(obs.view()).unwrap();
    for (a, b) in l32.iter().zip(l64.iter()) {
        assert!((*a as f64 - b).abs() < 1e-4 * b.abs(), "{a} vs {b}");
    }
    let p32 = m32.posteriors(obs.view()).unwrap();
    let p64 = m.posteriors(obs.view()).unwrap();
    for (a, b) in p32.iter().zip(p64.iter()) {
        assert!((*a as f64 - b).abs() < 1e-4);
    }
    let mut m32 = m32;
    let mut prev = f32::NEG_INFINITY;
    for _ in 0..5 {
        let ll = m32.em_step(obs.view()).unwrap();
        assert!(ll >= prev - 1e-4 * ll.abs());
        prev = ll;
    }
}
