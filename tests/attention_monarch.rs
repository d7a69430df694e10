//! MonarchAttention against a dense reference of the same alternating maximisation, exact
//! attention, finite differences, and its structural properties.

use crate::attn;

use attn::{dense_monarch, gauss4, max_abs, naive_attention, positional, rel_fro};
use monarch::attention::{softmax_attention, MonarchAttention, Padding};
use monarch::ndarray::{s, Array2, Array3, Array4, ArrayView2, Axis};
use monarch::{Error, Par};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

fn pad_of(pre: bool) -> Padding {
    if pre {
        Padding::Pre
    } else {
        Padding::Post
    }
}

/// A mask with a fully masked key block (for b = 3: positions 3..6) and a few stray holes.
fn holey_mask(nb: usize, n: usize) -> Array2<bool> {
    Array2::from_shape_fn((nb, n), |(b, t)| {
        !((3..6).contains(&t) || (b == 1 && t % 4 == 1))
    })
}

#[test]
fn one_block_is_exact_attention() {
    let q = gauss4((2, 2, 11, 4), 1);
    let k = gauss4((2, 2, 11, 4), 2);
    let v = gauss4((2, 2, 11, 3), 3);
    let mask = holey_mask(2, 11);
    for bsz in [11, 16] {
        for steps in [1, 2] {
            for m in [None, Some(&mask)] {
                let ma = MonarchAttention::new(bsz, steps).scale(0.9);
                let (o, obj) = ma
                    .forward_with_objective(q.view(), k.view(), v.view(), m.map(|x| x.view()))
                    .unwrap();
                let (eo, el) = naive_attention(&q, &k, &v, m, 0.9);
                // Masked positions carry no weight in the fit (like padding), so only the
                // rows of live queries are SDPA's; masked rows are still finite.
                for b in 0..2 {
                    for t in 0..11 {
                        if m.is_some_and(|mk| !mk[[b, t]]) {
                            assert!(o.slice(s![b, .., t, ..]).iter().all(|x| x.is_finite()));
                            continue;
                        }
                        let (x, y) = (o.slice(s![b, .., t, ..]), eo.slice(s![b, .., t, ..]));
                        let diff = (&x - &y).iter().fold(0.0f64, |a, e| a.max(e.abs()));
                        assert!(diff < 1e-12, "b={bsz} T={steps} row {t}: {diff:e}");
                        let (x, y) = (obj.slice(s![b, .., t]), el.slice(s![b, .., t]));
                        let diff = (&x - &y).iter().fold(0.0f64, |a, e| a.max(e.abs()));
                        assert!(diff < 1e-11, "objective = lse when b ≥ N: {diff:e}");
                    }
                }
            }
        }
    }
}

#[test]
fn matches_dense_alternating_maximisation_with_padding_and_masks() {
    let (nb, nh, n, d, dv) = (2, 2, 13, 4, 3);
    let q = gauss4((nb, nh, n, d), 4);
    let k = gauss4((nb, nh, n, d), 5);
    let v = gauss4((nb, nh, n, dv), 6);
    let mask = holey_mask(nb, n);
    for bsz in [3, 4, 5] {
        for pre in [false, true] {
            for steps in [1, 2, 3] {
                for m in [None, Some(&mask)] {
                    let ma = MonarchAttention::new(bsz, steps)
                        .padding(pad_of(pre))
                        .scale(0.8);
                    let mv = m.map(|x| x.view());
                    let (o, obj) = ma
                        .forward_with_objective(q.view(), k.view(), v.view(), mv)
                        .unwrap();
                    let a = ma.attention_matrix(q.view(), k.view(), mv).unwrap();
                    let r = dense_monarch(&q, &k, &v, m, bsz, steps, pre, 0.8);
                    let what = format!("b={bsz} pre={pre} T={steps} mask={}", m.is_some());
                    assert!(
                        max_abs(&o, &r.out) < 1e-11,
                        "out {what}: {}",
                        max_abs(&o, &r.out)
                    );
                    assert!(max_abs(&a, &r.a) < 1e-11, "A {what}");
                    assert!(max_abs(&obj, &r.objective) < 1e-10, "objective {what}");
                }
            }
        }
    }
}

#[test]
fn materialised_matrix_is_row_stochastic_monarch_and_gives_the_output() {
    let (n, bsz) = (24, 4);
    let m = n / bsz;
    let q = gauss4((1, 2, n, 5), 7);
    let k = gauss4((1, 2, n, 5), 8);
    let v = gauss4((1, 2, n, 3), 9);
    let ma = MonarchAttention::new(bsz, 2);
    let a = ma.attention_matrix(q.view(), k.view(), None).unwrap();
    let o = ma.forward(q.view(), k.view(), v.view(), None).unwrap();
    for h in 0..2 {
        let ah: ArrayView2<f64> = a.slice(s![0, h, .., ..]);
        for row in ah.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-12);
            assert!(row.iter().all(|&x| x >= 0.0));
        }
        // Monarch structure: for fixed (j, a) the m×b block A[l·b+j, a·b+i] is rank one.
        for j in 0..bsz {
            for blk in 0..m {
                let sub =
                    Array2::from_shape_fn((m, bsz), |(l, i)| ah[[l * bsz + j, blk * bsz + i]]);
                let scale = sub.iter().cloned().fold(0.0, f64::max);
                for l1 in 0..m {
                    for l2 in 0..m {
                        for i1 in 0..bsz {
                            for i2 in 0..bsz {
                                let minor =
                                    sub[[l1, i1]] * sub[[l2, i2]] - sub[[l1, i2]] * sub[[l2, i1]];
                                assert!(minor.abs() <= 1e-12 * scale * scale + 1e-300);
                            }
                        }
                    }
                }
            }
        }
        let vh: ArrayView2<f64> = v.slice(s![0, h, .., ..]);
        let av = ah.dot(&vh);
        assert!((&av - &o.slice(s![0, h, .., ..]))
            .iter()
            .all(|x| x.abs() < 1e-12));
    }
    // And it is not trivially dense softmax: with b < N it differs from exact attention.
    let exact = softmax_attention(q.view(), k.view(), v.view(), None).unwrap();
    assert!(max_abs(&o, &exact) > 1e-3);
}

fn total_objective(obj: &Array3<f64>, mask: Option<&Array2<bool>>) -> f64 {
    let mut tot = 0.0;
    for ((b, _, t), &x) in obj.indexed_iter() {
        if mask.is_none_or(|m| m[[b, t]]) {
            tot += x;
        }
    }
    tot
}

#[test]
fn objective_never_decreases_and_stays_below_log_sum_exp() {
    let n = 30;
    let inputs = [
        (gauss4((2, 2, n, 6), 10), gauss4((2, 2, n, 6), 11)),
        (positional(2, 2, n, 6, 2.0), positional(2, 2, n, 6, 2.0)),
    ];
    let mask = holey_mask(2, n);
    for (q, k) in &inputs {
        let v = gauss4((2, 2, n, 2), 12);
        for m in [None, Some(&mask)] {
            let (_, lse) = naive_attention(q, k, &v, m, 0.6);
            for (bsz, pre) in [(4, false), (7, true), (5, false)] {
                let mut prev = f64::NEG_INFINITY;
                for steps in 1..=5 {
                    let ma = MonarchAttention::new(bsz, steps)
                        .padding(pad_of(pre))
                        .scale(0.6);
                    let (_, obj) = ma
                        .forward_with_objective(q.view(), k.view(), v.view(), m.map(|x| x.view()))
                        .unwrap();
                    let tot = total_objective(&obj, m);
                    assert!(
                        tot >= prev - 1e-10 * prev.abs().max(1.0),
                        "T={steps}: {tot} < {prev}"
                    );
                    prev = tot;
                    for (x, e) in obj.iter().zip(lse.iter()) {
                        assert!(*x <= *e + 1e-10, "objective {x} above log-sum-exp {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn stable_for_very_negative_scores_and_dead_blocks() {
    // Every score is about −1000: a naive exp gives 0/0.
    let n = 16;
    let q = Array4::from_shape_fn(
        (1, 1, n, 2),
        |(_, _, t, c)| if c == 0 { 1.0 } else { 0.1 * t as f64 },
    );
    let k = Array4::from_shape_fn((1, 1, n, 2), |(_, _, t, c)| {
        if c == 0 {
            -1000.0
        } else {
            (t as f64).cos()
        }
    });
    let v = gauss4((1, 1, n, 3), 13);
    for (bsz, steps) in [(16, 1), (4, 1), (4, 3), (5, 2)] {
        let ma = MonarchAttention::new(bsz, steps).scale(1.0);
        let o = ma.forward(q.view(), k.view(), v.view(), None).unwrap();
        let r = dense_monarch(&q, &k, &v, None, bsz, steps, false, 1.0);
        assert!(o.iter().all(|x| x.is_finite()));
        assert!(max_abs(&o, &r.out) < 1e-9, "b={bsz} T={steps}");
        // The output is a convex combination of values, not collapsed to 0.
        let o32 = ma
            .forward(
                q.mapv(|x| x as f32).view(),
                k.mapv(|x| x as f32).view(),
                v.mapv(|x| x as f32).view(),
                None,
            )
            .unwrap();
        assert!(
            max_abs(&o32.mapv(|x| x as f64), &r.out) < 1e-3,
            "f32 b={bsz} T={steps}"
        );
    }
    // A fully masked key block receives no weight at all.
    let q = gauss4((1, 1, 12, 3), 14);
    let mut mask = Array2::from_elem((1, 12), true);
    mask.slice_mut(s![0, 4..8]).fill(false);
    let a = MonarchAttention::new(4, 3)
        .attention_matrix(q.view(), q.view(), Some(mask.view()))
        .unwrap();
    assert!(a.slice(s![0, 0, .., 4..8]).iter().all(|&x| x == 0.0));
    for row in a.slice(s![0, 0, .., ..]).outer_iter() {
        assert!((row.sum() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn f32_matches_f64_and_threads_do_not_change_bits() {
    let q = gauss4((2, 3, 50, 8), 15);
    let k = gauss4((2, 3, 50, 8), 16);
    let v = gauss4((2, 3, 50, 4), 17);
    let ma = MonarchAttention::new(7, 2).padding(Padding::Pre);
    let o64 = ma.forward(q.view(), k.view(), v.view(), None).unwrap();
    let (q32, k32, v32) = (
        q.mapv(|x| x as f32),
        k.mapv(|x| x as f32),
        v.mapv(|x| x as f32),
    );
    let a = ma
        .par(Par::Rayon)
        .forward(q32.view(), k32.view(), v32.view(), None)
        .unwrap();
    let b = ma
        .par(Par::Seq)
        .forward(q32.view(), k32.view(), v32.view(), None)
        .unwrap();
    assert_eq!(a, b);
    assert!(max_abs(&a.mapv(|x| x as f64), &o64) < 1e-4);
}

/// `sum(forward ⊙ g)` for finite differences.
fn loss(
    ma: &MonarchAttention,
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    m: Option<&Array2<bool>>,
    g: &Array4<f64>,
) -> f64 {
    let o = ma
        .forward(q.view(), k.view(), v.view(), m.map(|x| x.view()))
        .unwrap();
    (&o * g).sum()
}

#[test]
fn vjp_matches_finite_differences() {
    let (nb, nh, n, d, dv) = (2, 1, 7, 3, 2);
    let q = gauss4((nb, nh, n, d), 18);
    let k = gauss4((nb, nh, n, d), 19);
    let v = gauss4((nb, nh, n, dv), 20);
    let g = gauss4((nb, nh, n, dv), 21);
    let mut mask = Array2::from_elem((nb, n), true);
    mask[[1, 2]] = false;
    mask[[1, 5]] = false;
    let h = 1e-5;
    for (bsz, steps, pre, masked) in [
        (3, 1, false, false),
        (3, 2, true, true),
        (2, 3, false, true),
        (4, 3, true, false),
        (7, 2, false, true),
    ] {
        let ma = MonarchAttention::new(bsz, steps)
            .padding(pad_of(pre))
            .scale(0.9);
        let m = masked.then_some(&mask);
        let grad = ma
            .vjp(q.view(), k.view(), v.view(), m.map(|x| x.view()), g.view())
            .unwrap();
        for (which, analytic) in [(0, &grad.q), (1, &grad.k), (2, &grad.v)] {
            let base = [&q, &k, &v][which];
            let mut worst = 0.0f64;
            let mut scale = 1e-3f64;
            for idx in monarch::ndarray::indices(base.dim()) {
                let mut args = [q.clone(), k.clone(), v.clone()];
                args[which][idx] += h;
                let up = loss(&ma, &args[0], &args[1], &args[2], m, &g);
                args[which][idx] -= 2.0 * h;
                let down = loss(&ma, &args[0], &args[1], &args[2], m, &g);
                let fd = (up - down) / (2.0 * h);
                worst = worst.max((fd - analytic[idx]).abs());
                scale = scale.max(fd.abs());
            }
            assert!(
                worst < 1e-6 * scale.max(1.0),
                "b={bsz} T={steps} pre={pre} mask={masked} arg {which}: error {worst:e}"
            );
        }
    }
}

#[test]
fn vjp_of_one_block_is_softmax_attention_gradient() {
    // With b ≥ N and T = 1, dL/dv = Aᵀ g for the exact softmax matrix A.
    let q = gauss4((1, 1, 6, 3), 22);
    let k = gauss4((1, 1, 6, 3), 23);
    let v = gauss4((1, 1, 6, 2), 24);
    let g = gauss4((1, 1, 6, 2), 25);
    let ma = MonarchAttention::new(6, 1);
    let gr = ma
        .vjp(q.view(), k.view(), v.view(), None, g.view())
        .unwrap();
    let a = ma.attention_matrix(q.view(), k.view(), None).unwrap();
    let a2: ArrayView2<f64> = a.slice(s![0, 0, .., ..]);
    let g2: ArrayView2<f64> = g.slice(s![0, 0, .., ..]);
    let at_g = a2.t().dot(&g2);
    assert!((&at_g - &gr.v.slice(s![0, 0, .., ..]))
        .iter()
        .all(|x| x.abs() < 1e-12));
}

#[test]
fn bad_input_is_an_error() {
    let q = gauss4((2, 2, 6, 3), 26);
    let v = gauss4((2, 2, 6, 2), 27);
    let fwd = |ma: MonarchAttention, k: &Array4<f64>, v: &Array4<f64>, m: Option<&Array2<bool>>| {
        ma.forward(q.view(), k.view(), v.view(), m.map(|x| x.view()))
    };
    let ok = MonarchAttention::new(2, 1);
    assert!(matches!(
        fwd(MonarchAttention::new(0, 1), &q, &v, None),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        fwd(MonarchAttention::new(2, 0), &q, &v, None),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        fwd(ok, &gauss4((2, 2, 6, 4), 1), &v, None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fwd(ok, &gauss4((2, 2, 5, 3), 1), &gauss4((2, 2, 5, 2), 1), None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fwd(ok, &q, &gauss4((2, 1, 6, 2), 1), None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fwd(ok, &q, &v, Some(&Array2::from_elem((2, 5), true))),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fwd(ok, &q, &v, Some(&Array2::from_elem((1, 6), true))),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut dead = Array2::from_elem((2, 6), true);
    dead.row_mut(0).fill(false);
    assert!(matches!(
        fwd(ok, &q, &v, Some(&dead)),
        Err(Error::InvalidArgument(_))
    ));
    let mut nan = v.clone();
    nan[[1, 1, 1, 1]] = f64::INFINITY;
    assert!(matches!(
        fwd(ok, &q, &nan, None),
        Err(Error::NonFinite { .. })
    ));
    let e = ok.vjp(q.view(), q.view(), v.view(), None, q.view());
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })));
    let e = MonarchAttention::new(0, 1).attention_matrix(q.view(), q.view(), None);
    assert!(matches!(e, Err(Error::ZeroSize { .. })));
    let big = Array4::<f64>::zeros((1, 1, 5000, 1));
    let e = ok.attention_matrix(big.view(), big.view(), None);
    assert!(matches!(e, Err(Error::TooLarge { .. })));
}

#[test]
fn structured_inputs_beat_averaging_v() {
    // k = q, smooth positional inputs (sinusoids of the position), d = 64, N = 256, b = 16.
    let (n, d, bsz) = (256, 64, 16);
    let q = positional(1, 2, n, d, 1.0) * 3.0;
    let v = gauss4((1, 2, n, d), 28);
    let exact = softmax_attention(q.view(), q.view(), v.view(), None).unwrap();
    let mean = v.mean_axis(Axis(2)).unwrap().insert_axis(Axis(2));
    let avg = rel_fro(&(&exact * 0.0 + &mean), &exact);
    let mut errs = Vec::new();
    for steps in 1..=3 {
        let o = MonarchAttention::new(bsz, steps)
            .forward(q.view(), q.view(), v.view(), None)
            .unwrap();
        errs.push(rel_fro(&o, &exact));
    }
    println!("N={n} d={d} b={bsz}: averaging V {avg:.4}, MonarchAttention T=1..3 {errs:.4?}");
    for e in &errs {
        assert!(*e < 0.5 * avg, "error {e} not well below averaging V {avg}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn prop_matches_dense_reference(nb in 1usize..3, n in 1usize..14, bsz in 1usize..6, d in 1usize..4,
                                    steps in 1usize..4, pre in any::<bool>(), seed in 0u64..1000,
                                    hole in 0usize..14) {
        let q = gauss4((nb, 1, n, d), seed);
        let k = gauss4((nb, 1, n, d), seed + 1);
        let v = gauss4((nb, 1, n, 2), seed + 2);
        let mask = Array2::from_shape_fn((nb, n), |(_, t)| t == 0 || t != hole);
        let ma = MonarchAttention::new(bsz, steps).padding(pad_of(pre));
        let (o, obj) = ma.forward_with_objective(q.view(), k.view(), v.view(), Some(mask.view())).unwrap();
        let r = dense_monarch(&q, &k, &v, Some(&mask), bsz, steps, pre, 1.0 / (d as f64).sqrt());
        prop_assert!(max_abs(&o, &r.out) < 1e-11);
        prop_assert!(max_abs(&obj, &r.objective) < 1e-10);
    }
}

#[test]
fn f32_kernels_match_dense_reference_on_ragged_shapes() {
    // f32 runs the AVX-512 tile kernels (where available) on edges of every size.
    let (n, d, dv) = (45, 13, 20);
    let q = gauss4((2, 2, n, d), 40);
    let k = gauss4((2, 2, n, d), 41);
    let v = gauss4((2, 2, n, dv), 42);
    let mask = holey_mask(2, n);
    for (bsz, steps, pre) in [(6, 1, false), (6, 2, true), (9, 3, false), (45, 1, true)] {
        let ma = MonarchAttention::new(bsz, steps)
            .padding(pad_of(pre))
            .scale(0.5);
        let o = ma
            .forward(
                q.mapv(|x| x as f32).view(),
                k.mapv(|x| x as f32).view(),
                v.mapv(|x| x as f32).view(),
                Some(mask.view()),
            )
            .unwrap();
        let r = dense_monarch(&q, &k, &v, Some(&mask), bsz, steps, pre, 0.5);
        let err = max_abs(&o.mapv(|x| x as f64), &r.out);
        assert!(err < 1e-4, "b={bsz} T={steps} pre={pre}: {err:e}");
    }
}

/// Regression (found by fuzzing): a query group whose L-weights underflow to a subnormal sum
/// made `u = α_R / c_R` compute `0 · (1/c) = 0 · ∞ = NaN`. Finite inputs must give a finite,
/// row-stochastic matrix and finite outputs.
#[test]
fn subnormal_group_weight_gives_finite_output() {
    use monarch::ndarray::{Array2, Array4};
    let q = [
        0.9483666714935843,
        5.453268361338107,
        9.237584578318366,
        -17.385769497493953,
        15.18399245642588,
        -12.809994365768993,
        0.3518545637371453,
        16.747700321019547,
        8.873930047399263,
        -7.547406675507954,
    ];
    let k = [
        6.852308747172092,
        -6.222775925387841,
        -4.062252840304364,
        -0.3770431972064934,
        -7.8891022625607015,
        14.05849747354753,
        12.985333328294253,
        0.645930898073324,
        -9.3159332527613,
        -16.279635296249413,
    ];
    let q = Array4::<f64>::from_shape_vec((1, 1, 10, 1), q.to_vec()).unwrap();
    let k = Array4::<f64>::from_shape_vec((1, 1, 10, 1), k.to_vec()).unwrap();
    let v = Array4::from_shape_fn((1, 1, 10, 2), |(_, _, t, c)| (t as f64) - 3.0 * c as f64);
    let mask = Array2::from_shape_vec(
        (1, 10),
        vec![
            true, true, false, true, false, false, true, false, false, true,
        ],
    )
    .unwrap();
    let ma = monarch::attention::MonarchAttention::new(2, 2).scale(-8.274520107209273);
    let a = ma
        .attention_matrix(q.view(), k.view(), Some(mask.view()))
        .unwrap();
    assert!(
        a.iter().all(|x| x.is_finite()),
        "non-finite attention matrix"
    );
    for row in a
        .index_axis(monarch::ndarray::Axis(0), 0)
        .index_axis(monarch::ndarray::Axis(0), 0)
        .rows()
    {
        assert!((row.sum() - 1.0).abs() < 1e-12, "row sum {}", row.sum());
    }
    let o = ma
        .forward(q.view(), k.view(), v.view(), Some(mask.view()))
        .unwrap();
    assert!(o.iter().all(|x| x.is_finite()), "non-finite output");
    let g = ma
        .vjp(q.view(), k.view(), v.view(), Some(mask.view()), o.view())
        .unwrap();
    assert!(
        g.q.iter()
            .chain(g.k.iter())
            .chain(g.v.iter())
            .all(|x| x.is_finite()),
        "non-finite gradient"
    );
}
