//! MoRe and LoRA adapters against dense references, paper parameter counts, VJPs by finite
//! differences, and bad input.

use crate::adapters;
use crate::common;

use adapters::{cases, check_fd, dot_all};
use common::{assert_close, naive_dense};
use monarch::more::{dropout_mask, Adapter, LoraAdapter, MoReAdapter};
use monarch::ndarray::{s, Array1, Array2, Array3};
use monarch::primitives::random::{normal_matrix, uniform_array3};
use monarch::primitives::svd::svd;
use monarch::Error;
use proptest::prelude::*;

fn randn3(shape: (usize, usize, usize), seed: u64) -> Array3<f64> {
    uniform_array3::<f64>(shape, 1.0, seed)
}

/// A MoRe adapter on a random base with random (non-zero) factors.
fn random_more(
    inp: usize,
    out: usize,
    nb: usize,
    r: usize,
    bias: bool,
    p: f64,
    seed: u64,
) -> MoReAdapter<f64> {
    let w0 = normal_matrix::<f64>((out, inp), 0.3, seed);
    let b = bias.then(|| Array1::from_iter((0..out).map(|i| 0.1 * i as f64 - 0.5)));
    let (s1, s2) = MoReAdapter::<f64>::shapes(inp, out, nb, r).unwrap();
    MoReAdapter::from_factors(w0, b, randn3(s1, seed + 1), randn3(s2, seed + 2), p).unwrap()
}

/// The dense ΔW of the note: pad, run the four steps of the reference multiply, truncate.
fn reference_delta(ad: &MoReAdapter<f64>) -> Array2<f64> {
    let d = naive_dense(ad.blkdiag1(), ad.blkdiag2());
    d.slice(s![..ad.out_features(), ..ad.in_features()])
        .to_owned()
}

/// `y[b, o] = Σ_i W[o, i] x[b, i] + bias[o]` by loops.
fn naive_linear(x: &Array2<f64>, w: &Array2<f64>, bias: Option<&Array1<f64>>) -> Array2<f64> {
    let (bn, n) = x.dim();
    let m = w.nrows();
    Array2::from_shape_fn((bn, m), |(b, o)| {
        (0..n).map(|i| w[[o, i]] * x[[b, i]]).sum::<f64>() + bias.map_or(0.0, |v| v[o])
    })
}

fn numerical_rank(a: &Array2<f64>) -> usize {
    let d = svd(a.view());
    let s0 = d.s[0];
    d.s.iter().filter(|&&v| v > 1e-9 * s0).count()
}

#[test]
fn shapes_follow_the_note() {
    // ib = ⌈in/N⌉, effective N = ⌈in/ib⌉, ob = ⌈ib·out/in⌉.
    assert_eq!(
        MoReAdapter::<f64>::shapes(1024, 1024, 4, 4).unwrap(),
        ((4, 4, 256), (4, 256, 4))
    );
    assert_eq!(
        MoReAdapter::<f64>::shapes(64, 128, 4, 2).unwrap(),
        ((4, 2, 16), (4, 32, 2))
    );
    // in = 10, N = 4: ib = 3, N = 4, ob = ⌈3·7/10⌉ = 3.
    assert_eq!(
        MoReAdapter::<f64>::shapes(10, 7, 4, 1).unwrap(),
        ((4, 1, 3), (4, 3, 1))
    );
    // in = 9, N = 4: ib = 3, effective N = 3.
    assert_eq!(
        MoReAdapter::<f64>::shapes(9, 9, 4, 2).unwrap(),
        ((3, 2, 3), (3, 3, 2))
    );
}

#[test]
fn paper_parameter_counts() {
    // RoBERTa-large: 24 layers, hidden 1024, adapters on q, k, v at N = r = 4.
    let per = MoReAdapter::<f32>::param_count(1024, 1024, 4, 4).unwrap();
    assert_eq!(24 * 3 * per, 589_824);
    // LLaMA-7B: 32 layers, hidden 4096, q, k, v at r = 4 (N = 4).
    let per = MoReAdapter::<f32>::param_count(4096, 4096, 4, 4).unwrap();
    assert_eq!(32 * 3 * per, 3_145_728);
    // A built adapter agrees with the formula and with LoRA's count at the same rank.
    let w0 = Array2::<f32>::zeros((1024, 1024));
    let ad = MoReAdapter::new(w0.clone(), None, 4, 4, 0.0, 0).unwrap();
    assert_eq!(ad.num_params(), 4 * (1024 + 1024));
    assert_eq!(ad.num_params(), ad.blkdiag1().len() + ad.blkdiag2().len());
    let lora = LoraAdapter::new(w0, None, 4, 0.0, 0).unwrap();
    assert_eq!(lora.num_params(), ad.num_params());
    assert_eq!(ad.max_rank(), 16);
    assert_eq!(lora.max_rank(), 4);
}

#[test]
fn zero_init_equals_base_and_init_bounds() {
    let w0 = normal_matrix::<f64>((24, 20), 1.0, 3);
    let b = Array1::from_elem(24, 0.25);
    let ad = MoReAdapter::new(w0.clone(), Some(b.clone()), 4, 3, 0.1, 9).unwrap();
    assert!(ad.blkdiag2().iter().all(|&v| v == 0.0));
    let bound = 1.0 / (ad.blkdiag1().dim().2 as f64).sqrt();
    assert!(ad.blkdiag1().iter().all(|&v| v.abs() <= bound));
    assert!(ad.blkdiag1().iter().any(|&v| v != 0.0));
    let x = normal_matrix::<f64>((5, 20), 1.0, 4);
    let base = naive_linear(&x, &w0, Some(&b));
    assert_close(
        ad.forward(x.view()).unwrap().as_slice().unwrap(),
        base.as_slice().unwrap(),
        1e-13,
        "eval",
    );
    assert_close(
        ad.forward_train(x.view(), 5).unwrap().as_slice().unwrap(),
        base.as_slice().unwrap(),
        1e-13,
        "train",
    );
    assert!(ad.delta_weight().iter().all(|&v| v == 0.0));
    let lora = LoraAdapter::new(w0, Some(b), 3, 0.1, 9).unwrap();
    assert_close(
        lora.forward(x.view()).unwrap().as_slice().unwrap(),
        base.as_slice().unwrap(),
        1e-13,
        "lora",
    );
}

#[test]
fn forward_and_delta_match_dense_reference() {
    for &(inp, out, nb, r) in &[
        (16, 16, 4, 4),
        (16, 32, 4, 2),
        (32, 12, 4, 3),
        (10, 7, 4, 1),
        (9, 13, 4, 2),
        (12, 12, 3, 4),
    ] {
        let ad = random_more(inp, out, nb, r, true, 0.0, 11);
        let dw = reference_delta(&ad);
        assert_close(
            ad.delta_weight().as_slice().unwrap(),
            dw.as_slice().unwrap(),
            1e-13,
            "delta",
        );
        let x = normal_matrix::<f64>((3, inp), 1.0, 12);
        let w = ad.weight() + &dw;
        let want = naive_linear(&x, &w, ad.bias());
        let got = ad.forward(x.view()).unwrap();
        assert_close(
            got.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            &format!("forward {inp}→{out}"),
        );
    }
}

#[test]
fn block_structure_and_reachable_rank() {
    // N = 4, in = out = 32 (ib = ob = 8): block (j, k) — rows ≡ j mod N, columns of input block
    // k — has rank #{q < r : (k·r + q) mod N = j}; the whole ΔW has rank N·r.
    for r in 1..=6 {
        let (n, nb) = (32, 4);
        let ad = random_more(n, n, nb, r, false, 0.0, 20 + r as u64);
        let dw = ad.delta_weight();
        for j in 0..nb {
            for k in 0..nb {
                let blk = dw.slice(s![j..;nb, k * 8..(k + 1) * 8]).to_owned();
                let want = (0..r).filter(|q| (k * r + q) % nb == j).count();
                let got = if blk.iter().all(|v| v.abs() < 1e-14) {
                    0
                } else {
                    numerical_rank(&blk)
                };
                assert_eq!(got, want, "r={r} block ({j},{k})");
            }
        }
        assert_eq!(numerical_rank(&dw), nb * r, "r={r}");
        assert_eq!(ad.max_rank(), nb * r);
    }
    // LoRA at the same parameter count reaches rank r only.
    let w0 = Array2::<f64>::zeros((32, 32));
    let mut lora = LoraAdapter::new(w0, None, 4, 0.0, 1).unwrap();
    lora.lora_b_mut()
        .assign(&normal_matrix::<f64>((32, 4), 1.0, 2));
    assert_eq!(numerical_rank(&lora.delta_weight()), 4);
}

#[test]
fn merge_and_unmerge_keep_outputs() {
    let mut ad = random_more(20, 28, 4, 3, true, 0.2, 31);
    let w0 = ad.weight().clone();
    let x = normal_matrix::<f64>((6, 20), 1.0, 32);
    let before = ad.forward(x.view()).unwrap();
    ad.merge().unwrap();
    assert!(ad.is_merged());
    let merged = ad.forward(x.view()).unwrap();
    assert_close(
        merged.as_slice().unwrap(),
        before.as_slice().unwrap(),
        1e-13,
        "merged",
    );
    assert!(matches!(ad.merge(), Err(Error::InvalidArgument(_))));
    assert!(ad.forward_train(x.view(), 1).is_err());
    // The VJP is the same merged or not.
    let g = normal_matrix::<f64>((6, 28), 1.0, 33);
    let gm = ad.vjp(x.view(), g.view()).unwrap();
    ad.unmerge().unwrap();
    let gu = ad.vjp(x.view(), g.view()).unwrap();
    assert_close(
        gm.x.as_slice().unwrap(),
        gu.x.as_slice().unwrap(),
        1e-13,
        "vjp x merged",
    );
    assert_close(
        gm.blkdiag1.as_slice().unwrap(),
        gu.blkdiag1.as_slice().unwrap(),
        1e-13,
        "vjp b1 merged",
    );
    assert_close(
        ad.weight().as_slice().unwrap(),
        w0.as_slice().unwrap(),
        1e-14,
        "unmerged weight",
    );
    let after = ad.forward(x.view()).unwrap();
    assert_close(
        after.as_slice().unwrap(),
        before.as_slice().unwrap(),
        1e-13,
        "unmerged",
    );
    assert!(ad.unmerge().is_err());

    let mut lora = LoraAdapter::from_factors(
        w0.clone(),
        None,
        normal_matrix((3, 20), 1.0, 1),
        normal_matrix((28, 3), 1.0, 2),
        0.0,
    )
    .unwrap()
    .with_scaling(0.5)
    .unwrap();
    let before = lora.forward(x.view()).unwrap();
    lora.merge().unwrap();
    assert_close(
        lora.forward(x.view()).unwrap().as_slice().unwrap(),
        before.as_slice().unwrap(),
        1e-13,
        "lora merged",
    );
    lora.unmerge().unwrap();
    assert_close(
        lora.weight().as_slice().unwrap(),
        w0.as_slice().unwrap(),
        1e-14,
        "lora unmerged",
    );
}

#[test]
fn dropout_masks_the_adapter_output_only() {
    let ad = random_more(16, 16, 4, 2, true, 0.5, 41);
    let x = normal_matrix::<f64>((8, 16), 1.0, 42);
    let y = ad.forward_train(x.view(), 7).unwrap();
    let mask = dropout_mask::<f64>((8, 16), 0.5, 7).unwrap();
    let base = naive_linear(&x, ad.weight(), ad.bias());
    let want = &base + &(&naive_linear(&x, &reference_delta(&ad), None) * &mask);
    assert_close(
        y.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-12,
        "dropout forward",
    );
    assert!(mask.iter().any(|&m| m == 0.0) && mask.iter().any(|&m| m == 2.0));
    // Same seed, same output; a different seed differs.
    assert_eq!(y, ad.forward_train(x.view(), 7).unwrap());
    assert_ne!(y, ad.forward_train(x.view(), 8).unwrap());
    // Kept fraction near 1 − p over many entries.
    let big = dropout_mask::<f64>((200, 100), 0.3, 1).unwrap();
    let kept = big.iter().filter(|&&m| m != 0.0).count() as f64 / 20000.0;
    assert!((kept - 0.7).abs() < 0.02, "kept {kept}");
}

fn more_loss(ad: &MoReAdapter<f64>, x: &Array2<f64>, g: &Array2<f64>, seed: u64) -> f64 {
    dot_all(ad.forward_train(x.view(), seed).unwrap().view(), g.view())
}

#[test]
fn more_vjp_matches_finite_differences() {
    for &(inp, out, nb, r, p) in &[(12, 12, 4, 2, 0.0), (10, 14, 4, 3, 0.3), (16, 8, 2, 4, 0.5)] {
        let ad = random_more(inp, out, nb, r, true, p, 50);
        let x = normal_matrix::<f64>((4, inp), 1.0, 51);
        let g = normal_matrix::<f64>((4, out), 1.0, 52);
        let seed = 3;
        let gr = ad.vjp_train(x.view(), g.view(), seed).unwrap();
        check_fd(&x, &gr.x, |xp| more_loss(&ad, xp, &g, seed), 1e-7, "more x");
        let (b1, b2, w0, b) = (
            ad.blkdiag1().clone(),
            ad.blkdiag2().clone(),
            ad.weight().clone(),
            ad.bias().cloned(),
        );
        check_fd(
            &b1,
            &gr.blkdiag1,
            |p1| {
                let a = MoReAdapter::from_factors(w0.clone(), b.clone(), p1.clone(), b2.clone(), p)
                    .unwrap();
                more_loss(&a, &x, &g, seed)
            },
            1e-7,
            "more blkdiag1",
        );
        check_fd(
            &b2,
            &gr.blkdiag2,
            |p2| {
                let a = MoReAdapter::from_factors(w0.clone(), b.clone(), b1.clone(), p2.clone(), p)
                    .unwrap();
                more_loss(&a, &x, &g, seed)
            },
            1e-7,
            "more blkdiag2",
        );
        // Against the dense formula too: grad_x = g (W0 + ΔW) without dropout.
        let ge = ad.vjp(x.view(), g.view()).unwrap();
        let want = g.dot(&(ad.weight() + &reference_delta(&ad)));
        assert_close(
            ge.x.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            "more dense grad_x",
        );
    }
}

#[test]
fn lora_vjp_matches_finite_differences() {
    let (inp, out, r, p) = (9, 11, 3, 0.4);
    let w0 = normal_matrix::<f64>((out, inp), 0.3, 60);
    let a0 = normal_matrix::<f64>((r, inp), 1.0, 61);
    let b0 = normal_matrix::<f64>((out, r), 1.0, 62);
    let mk = |a: &Array2<f64>, b: &Array2<f64>| {
        LoraAdapter::from_factors(w0.clone(), Some(Array1::ones(out)), a.clone(), b.clone(), p)
            .unwrap()
            .with_scaling(2.0)
            .unwrap()
    };
    let lora = mk(&a0, &b0);
    let x = normal_matrix::<f64>((5, inp), 1.0, 63);
    let g = normal_matrix::<f64>((5, out), 1.0, 64);
    let loss = |l: &LoraAdapter<f64>, xp: &Array2<f64>| {
        dot_all(l.forward_train(xp.view(), 9).unwrap().view(), g.view())
    };
    let gr = lora.vjp_train(x.view(), g.view(), 9).unwrap();
    check_fd(&x, &gr.x, |xp| loss(&lora, xp), 1e-7, "lora x");
    check_fd(&a0, &gr.lora_a, |ap| loss(&mk(ap, &b0), &x), 1e-7, "lora A");
    check_fd(&b0, &gr.lora_b, |bp| loss(&mk(&a0, bp), &x), 1e-7, "lora B");
    let dw = &b0.dot(&a0) * 2.0;
    assert_close(
        lora.delta_weight().as_slice().unwrap(),
        dw.as_slice().unwrap(),
        1e-13,
        "lora delta",
    );
}

#[test]
fn bad_input_is_an_error() {
    let w0 = Array2::<f64>::zeros((16, 16));
    // Rank larger than a block allows (ib = ob = 4).
    assert!(matches!(
        MoReAdapter::new(w0.clone(), None, 4, 5, 0.0, 0),
        Err(Error::TooLarge {
            value: 5,
            max: 4,
            ..
        })
    ));
    assert!(matches!(
        MoReAdapter::new(w0.clone(), None, 17, 1, 0.0, 0),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        MoReAdapter::new(w0.clone(), None, 0, 1, 0.0, 0),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        MoReAdapter::new(w0.clone(), None, 4, 0, 0.0, 0),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        MoReAdapter::new(Array2::<f64>::zeros((0, 4)), None, 1, 1, 0.0, 0),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        MoReAdapter::new(w0.clone(), Some(Array1::zeros(15)), 4, 1, 0.0, 0),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        MoReAdapter::new(w0.clone(), None, 4, 1, 1.0, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        MoReAdapter::new(w0.clone(), None, 4, 1, f64::NAN, 0),
        Err(Error::InvalidArgument(_))
    ));
    let mut wn = w0.clone();
    wn[[1, 1]] = f64::NAN;
    assert!(matches!(
        MoReAdapter::new(wn, None, 4, 1, 0.0, 0),
        Err(Error::NonFinite { .. })
    ));
    // Mismatched factors.
    let e = MoReAdapter::from_factors(
        w0.clone(),
        None,
        Array3::zeros((4, 2, 4)),
        Array3::zeros((4, 3, 2)),
        0.0,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("(4, 4, 2)"), "{e}");
    let ad = MoReAdapter::new(w0.clone(), None, 4, 2, 0.0, 0).unwrap();
    assert!(matches!(
        ad.forward(Array2::zeros((2, 15)).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ad.vjp(Array2::zeros((2, 16)).view(), Array2::zeros((3, 16)).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    // LoRA.
    assert!(matches!(
        LoraAdapter::new(Array2::<f64>::zeros((8, 4)), None, 5, 0.0, 0),
        Err(Error::TooLarge { max: 4, .. })
    ));
    assert!(matches!(
        LoraAdapter::from_factors(
            w0.clone(),
            None,
            Array2::zeros((2, 16)),
            Array2::zeros((15, 2)),
            0.0
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let l = LoraAdapter::new(w0, None, 2, 0.0, 0).unwrap();
    assert!(l.forward(Array2::zeros((1, 3)).view()).is_err());
    assert!(l.with_scaling(f64::INFINITY).is_err());
}

#[test]
fn f32_matches_f64() {
    let ad = random_more(24, 40, 4, 3, true, 0.0, 70);
    let ad32 = MoReAdapter::<f32>::from_factors(
        ad.weight().mapv(|v| v as f32),
        ad.bias().map(|b| b.mapv(|v| v as f32)),
        ad.blkdiag1().mapv(|v| v as f32),
        ad.blkdiag2().mapv(|v| v as f32),
        0.0,
    )
    .unwrap();
    let x = normal_matrix::<f64>((3, 24), 1.0, 71);
    let y = ad.forward(x.view()).unwrap();
    let y32 = ad32
        .forward(x.mapv(|v| v as f32).view())
        .unwrap()
        .mapv(|v| v as f64);
    assert_close(y32.as_slice().unwrap(), y.as_slice().unwrap(), 1e-5, "f32");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(16)))]
    #[test]
    fn prop_forward_matches_dense(inp in 1usize..24, out in 1usize..24, nb in 1usize..6, r in 1usize..5, seed in 0u64..1000) {
        prop_assume!(nb <= inp);
        let shapes = MoReAdapter::<f64>::shapes(inp, out, nb, r);
        if let Ok(((n, _, ib), (_, ob, _))) = shapes {
            prop_assert!(n * ib >= inp && n * ob >= out && r <= ib.min(ob));
            let ad = random_more(inp, out, nb, r, seed % 2 == 0, 0.0, seed);
            let x = normal_matrix::<f64>((2, inp), 1.0, seed + 7);
            let want = naive_linear(&x, &(ad.weight() + &reference_delta(&ad)), ad.bias());
            let got = ad.forward(x.view()).unwrap();
            prop_assert!(common::rel_max_diff(got.as_slice().unwrap(), want.as_slice().unwrap()) < 1e-12);
            prop_assert_eq!(ad.num_params(), MoReAdapter::<f64>::param_count(inp, out, nb, r).unwrap());
        } else {
            let too_large = matches!(shapes, Err(Error::TooLarge { .. }));
            prop_assert!(too_large);
        }
    }
}
