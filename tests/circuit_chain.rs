//! k-factor Monarch chains, the log-space product, row-stochastic blocks and Kronecker → Monarch,
//! each against a naive dense reference.

#![allow(clippy::needless_range_loop)]

use crate::circuit_ref;
use crate::common;

use circuit_ref::{blockdiag_matrix, naive_log_matmul, stride_matrix};
use common::{assert_close, naive_dense};
use monarch::circuit::{
    kron_dense, log_matmul_blockdiag, log_matmul_blockdiag_into, log_matmul_dense, softmax_blocks,
    MonarchChain,
};
use monarch::ndarray::{Array2, Array3, Axis};
use monarch::primitives::random::normal_matrix;
use monarch::{Error, Monarch, Par};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

/// Random chaining factor shapes for `k` factors (seeded).
fn random_shapes(k: usize, seed: u64) -> Vec<(usize, usize, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut shapes = vec![(
        rng.random_range(1..=4),
        rng.random_range(1..=4),
        rng.random_range(1..=4),
    )];
    for _ in 1..k {
        let (nb, r, _) = *shapes.last().unwrap();
        let len = nb * r;
        let divs: Vec<usize> = (1..=len).filter(|d| len % d == 0).collect();
        let nb2 = divs[rng.random_range(0..divs.len())];
        shapes.push((nb2, rng.random_range(1..=4), len / nb2));
    }
    shapes
}

/// Dense matrix of a chain built from the module-doc definition with independent stride
/// matrices: `P_k · BD_{k-1} · P_{k-1} ⋯ BD_0` (P_0 = I, P_i = stride(cols_i, nb_i),
/// P_k = stride(nb_{k-1}, rows_{k-1})).
fn chain_reference(ws: &[Array3<f64>]) -> Array2<f64> {
    let mut m = blockdiag_matrix(&ws[0]);
    for w in &ws[1..] {
        let (nb, _, c) = w.dim();
        m = blockdiag_matrix(w).dot(&stride_matrix(c, nb)).dot(&m);
    }
    let (nb, r, _) = ws[ws.len() - 1].dim();
    stride_matrix(nb, r).dot(&m)
}

fn weights(chain: &MonarchChain<f64>) -> Vec<Array3<f64>> {
    chain
        .factors()
        .iter()
        .map(|f| f.weights().to_owned())
        .collect()
}

#[test]
fn two_factor_chain_is_the_core_monarch() {
    let m = Monarch::<f64>::random_factors((3, 4, 2), (2, 5, 6), 3).unwrap();
    let c = MonarchChain::from_factors(vec![m.w1().clone(), m.w2().clone()]).unwrap();
    assert_close(
        c.to_dense().as_slice().unwrap(),
        naive_dense(m.w1(), m.w2()).as_slice().unwrap(),
        1e-12,
        "chain(w1, w2) vs naive convention A",
    );
    let c2 = MonarchChain::from_monarch(&m);
    assert_close(
        c2.to_dense().as_slice().unwrap(),
        m.to_dense().as_slice().unwrap(),
        1e-12,
        "from_monarch",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn chain_matmul_transpose_dense(k in 2usize..=4, seed in 0u64..1000, batch in 1usize..4) {
        let shapes = random_shapes(k, seed);
        let c = MonarchChain::<f64>::random(&shapes, seed).unwrap();
        let reference = chain_reference(&weights(&c));
        assert_close(c.to_dense().as_slice().unwrap(), reference.as_slice().unwrap(), 1e-12, "to_dense");
        let x = normal_matrix::<f64>((batch, c.in_features()), 1.0, seed + 1);
        let y = c.matmul(x.view()).unwrap();
        let want = x.dot(&reference.t()).as_standard_layout().into_owned();
        assert_close(y.as_slice().unwrap(), want.as_slice().unwrap(), 1e-12, "matmul");
        let t = c.transpose();
        assert_close(
            t.to_dense().as_slice().unwrap(),
            reference.t().as_standard_layout().as_slice().unwrap(),
            1e-12,
            "transpose",
        );
        let mut seq = Array2::zeros(y.dim());
        c.matmul_into(x.view(), seq.view_mut(), Par::Seq).unwrap();
        prop_assert_eq!(seq, y);
    }

    #[test]
    fn log_matmul_matches_dense_logsumexp(k in 2usize..=3, seed in 0u64..1000, batch in 1usize..4) {
        let shapes = random_shapes(k, seed);
        let c = MonarchChain::<f64>::random_stochastic(&shapes, 1.5, seed).unwrap();
        let mut x = normal_matrix::<f64>((batch, c.in_features()), 3.0, seed + 7);
        // Sprinkle log-zeros, and one all-zero row.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for v in x.iter_mut() {
            if rng.random_bool(0.3) { *v = f64::NEG_INFINITY; }
        }
        x.row_mut(0).fill(f64::NEG_INFINITY);
        let got = c.log_matmul(x.view(), Par::Rayon).unwrap();
        let want = naive_log_matmul(&chain_reference(&weights(&c)), &x);
        for (g, w) in got.iter().zip(want.iter()) {
            prop_assert!(!g.is_nan());
            if *w == f64::NEG_INFINITY {
                prop_assert_eq!(*g, f64::NEG_INFINITY);
            } else {
                prop_assert!((g - w).abs() <= 1e-10 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
        }
        // f32 on the same data.
        let c32 = c.map(|v| v as f32);
        let got32 = c32.log_matmul(x.mapv(|v| v as f32).view(), Par::Seq).unwrap();
        for (g, w) in got32.iter().zip(want.iter()) {
            prop_assert!(!g.is_nan());
            if *w == f64::NEG_INFINITY {
                prop_assert_eq!(*g, f32::NEG_INFINITY);
            } else {
                prop_assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
        }
    }
}

#[test]
fn log_matmul_is_stable_for_huge_and_tiny_logs() {
    // exp(±800) overflows/underflows f64; the shifted product must not.
    let shapes = [(4, 4, 4), (4, 4, 4)];
    let c = MonarchChain::<f64>::random_stochastic(&shapes, 1.0, 1).unwrap();
    let base = normal_matrix::<f64>((2, 16), 1.0, 2);
    for shift in [800.0, -800.0] {
        let x = base.mapv(|v| v + shift);
        let y = c.log_matmul(x.view(), Par::Seq).unwrap();
        let y0 = c.log_matmul(base.view(), Par::Seq).unwrap();
        // Row-stochastic chain: log(M exp(x + s)) = log(M exp(x)) + s exactly in exact arithmetic.
        assert_close(
            y.mapv(|v| v - shift).as_slice().unwrap(),
            y0.as_slice().unwrap(),
            1e-12,
            "shift equivariance",
        );
    }
    // f32 with logs far below exp's range.
    let c32 = c.map(|v| v as f32);
    let x = base.mapv(|v| (v - 200.0) as f32);
    let y = c32.log_matmul(x.view(), Par::Seq).unwrap();
    assert!(y.iter().all(|v| v.is_finite() && *v < -150.0));
}

#[test]
fn log_matmul_zero_weights_give_log_zero() {
    let mut w = Array3::<f64>::zeros((2, 2, 3));
    w[[0, 0, 1]] = 0.5;
    w[[1, 1, 2]] = 2.0;
    let x =
        Array2::from_shape_vec((1, 6), vec![0.0, 1.0, 2.0, f64::NEG_INFINITY, 0.5, -1.0]).unwrap();
    let y = log_matmul_blockdiag(w.view(), x.view(), Par::Seq).unwrap();
    let want = naive_log_matmul(&blockdiag_matrix(&w), &x);
    assert_eq!(y[[0, 1]], f64::NEG_INFINITY);
    assert_eq!(y[[0, 2]], f64::NEG_INFINITY);
    assert!((y[[0, 0]] - want[[0, 0]]).abs() < 1e-14);
    assert!((y[[0, 3]] - want[[0, 3]]).abs() < 1e-14);
    let mut into = Array2::from_elem((1, 4), f64::NAN);
    log_matmul_blockdiag_into(w.view(), x.view(), into.view_mut(), Par::Seq).unwrap();
    assert_eq!(into, y);
    let mut wrong = Array2::zeros((1, 5));
    assert!(matches!(
        log_matmul_blockdiag_into(w.view(), x.view(), wrong.view_mut(), Par::Seq),
        Err(Error::ShapeMismatch { .. })
    ));
    // Dense version equals the one-block case.
    let a = normal_matrix::<f64>((5, 7), 1.0, 3).mapv(f64::abs);
    let x = normal_matrix::<f64>((3, 7), 2.0, 4);
    let y = log_matmul_dense(a.view(), x.view(), Par::Rayon).unwrap();
    assert_close(
        y.as_slice().unwrap(),
        naive_log_matmul(&a, &x).as_slice().unwrap(),
        1e-13,
        "dense log matmul",
    );
}

#[test]
fn log_matmul_rejects_bad_input() {
    let c = MonarchChain::<f64>::random(&[(2, 2, 2), (2, 2, 2)], 0).unwrap();
    let x = Array2::<f64>::zeros((1, 4));
    // Random normal blocks have negative entries.
    assert!(matches!(
        c.log_matmul(x.view(), Par::Seq),
        Err(Error::InvalidArgument(_))
    ));
    let s = MonarchChain::<f64>::random_stochastic(&[(2, 2, 2), (2, 2, 2)], 1.0, 0).unwrap();
    let bad = Array2::from_shape_vec((1, 4), vec![0.0, f64::NAN, 0.0, 0.0]).unwrap();
    assert!(matches!(
        s.log_matmul(bad.view(), Par::Seq),
        Err(Error::NonFinite { .. })
    ));
    let bad = Array2::from_shape_vec((1, 4), vec![0.0, f64::INFINITY, 0.0, 0.0]).unwrap();
    assert!(matches!(
        s.log_matmul(bad.view(), Par::Seq),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        s.log_matmul(Array2::zeros((1, 5)).view(), Par::Seq),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        log_matmul_blockdiag(Array3::<f64>::zeros((0, 2, 2)).view(), x.view(), Par::Seq),
        Err(Error::ZeroSize { .. })
    ));
}

#[test]
fn chain_rejects_bad_shapes() {
    let one = MonarchChain::<f64>::from_factors(vec![Array3::zeros((2, 2, 2))]);
    assert!(matches!(one, Err(Error::InvalidArgument(_))));
    let zero =
        MonarchChain::<f64>::from_factors(vec![Array3::zeros((2, 0, 2)), Array3::zeros((2, 2, 2))]);
    assert!(matches!(zero, Err(Error::ZeroSize { .. })));
    let e =
        MonarchChain::<f64>::from_factors(vec![Array3::zeros((2, 3, 2)), Array3::zeros((2, 2, 2))])
            .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    assert!(e.to_string().contains('6'), "{e}");
}

#[test]
fn softmax_blocks_are_row_stochastic() {
    let theta = Array3::from_shape_fn((3, 4, 5), |(a, i, j)| {
        (a * 7 + i * 3 + j) as f64 * 40.0 - 300.0
    });
    let w = softmax_blocks(theta.view()).unwrap();
    for row in w.lanes(Axis(2)) {
        assert!((row.sum() - 1.0).abs() < 1e-12);
        assert!(row.iter().all(|&v| v >= 0.0));
        // Softmax by the direct formula on this row's logits.
    }
    let (a, i) = (1, 2);
    let logits: Vec<f64> = (0..5).map(|j| theta[[a, i, j]]).collect();
    let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
    for j in 0..5 {
        assert!((w[[a, i, j]] - (logits[j] - mx).exp() / z).abs() < 1e-15);
    }
    let chain =
        MonarchChain::<f64>::random_stochastic(&[(4, 3, 3), (3, 2, 4), (3, 2, 2)], 2.0, 5).unwrap();
    for row in chain.to_dense().rows() {
        assert!((row.sum() - 1.0).abs() < 1e-12, "chain rows sum to one");
    }
    let mut nan = theta.clone();
    nan[[0, 0, 0]] = f64::NAN;
    assert!(matches!(
        softmax_blocks(nan.view()),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn kronecker_is_a_tied_block_monarch() {
    for (h1, h2) in [(3, 4), (4, 4), (1, 5), (5, 2)] {
        let a = normal_matrix::<f64>((h1, h1), 1.0, h1 as u64);
        let b = normal_matrix::<f64>((h2, h2), 1.0, 10 + h2 as u64);
        let c = MonarchChain::kronecker(a.view(), b.view()).unwrap();
        assert_eq!(c.num_factors(), 2);
        // Reference A ⊗ B straight from the definition.
        let want = Array2::from_shape_fn((h1 * h2, h1 * h2), |(i, j)| {
            a[[i / h2, j / h2]] * b[[i % h2, j % h2]]
        });
        assert_close(
            c.to_dense().as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            "kron",
        );
        assert_close(
            kron_dense(a.view(), b.view()).as_slice().unwrap(),
            want.as_slice().unwrap(),
            0.0,
            "kron_dense",
        );
        // Tied: every block of a factor is the same matrix.
        for f in c.factors() {
            let w = f.weights();
            for blk in w.outer_iter() {
                assert_eq!(blk, w.index_axis(Axis(0), 0));
            }
        }
    }
    let e =
        MonarchChain::<f64>::kronecker(Array2::zeros((2, 3)).view(), Array2::zeros((2, 2)).view());
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })));
    let e =
        MonarchChain::<f64>::kronecker(Array2::zeros((0, 0)).view(), Array2::zeros((2, 2)).view());
    assert!(matches!(e, Err(Error::ZeroSize { .. })));
}
