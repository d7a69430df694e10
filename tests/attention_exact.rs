//! Exact (streaming) softmax attention against a naive dense softmax.

use crate::attn;

use attn::{gauss4, max_abs, naive_attention};
use monarch::attention::{softmax_attention, ExactAttention};
use monarch::ndarray::{Array2, Array4, ShapeBuilder};
use monarch::{Error, Par};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

#[test]
fn matches_naive_dense_softmax_across_tiles_and_masks() {
    // Small tiles so that rows and keys span several (partial) tiles; N_q ≠ N_k.
    let q = gauss4((2, 3, 13, 5), 1);
    let k = gauss4((2, 3, 17, 5), 2);
    let v = gauss4((2, 3, 17, 4), 3);
    let mut mask = Array2::from_elem((2, 17), true);
    // Batch 1: keys 0..8 masked, so whole key tiles of 4 are dead.
    for u in 0..8 {
        mask[[1, u]] = false;
    }
    mask[[0, 16]] = false;
    for (qt, kt) in [(4, 4), (3, 5), (128, 256), (1, 1)] {
        for m in [None, Some(&mask)] {
            let att = ExactAttention::new().tiles(qt, kt).scale(0.7);
            let (o, l) = att
                .forward_with_lse(q.view(), k.view(), v.view(), m.map(|x| x.view()))
                .unwrap();
            let (eo, el) = naive_attention(&q, &k, &v, m, 0.7);
            assert!(
                max_abs(&o, &eo) < 1e-12,
                "tiles {qt}x{kt}: {}",
                max_abs(&o, &eo)
            );
            assert!(max_abs(&l, &el) < 1e-12, "lse tiles {qt}x{kt}");
        }
    }
}

#[test]
fn default_scale_and_free_function() {
    let q = gauss4((1, 2, 9, 16), 4);
    let k = gauss4((1, 2, 9, 16), 5);
    let v = gauss4((1, 2, 9, 3), 6);
    let o = softmax_attention(q.view(), k.view(), v.view(), None).unwrap();
    let (eo, _) = naive_attention(&q, &k, &v, None, 0.25);
    assert!(max_abs(&o, &eo) < 1e-12);
}

#[test]
fn very_negative_and_very_large_scores() {
    // All scores near −1000 (q·k = −1000 + small variations): plain exp underflows to 0.
    let n = 20;
    let q = Array4::from_shape_fn(
        (1, 1, n, 2),
        |(_, _, t, c)| if c == 0 { 1.0 } else { 0.01 * t as f64 },
    );
    let k = Array4::from_shape_fn((1, 1, n, 2), |(_, _, t, c)| {
        if c == 0 {
            -1000.0
        } else {
            (t as f64).sin()
        }
    });
    let v = gauss4((1, 1, n, 3), 7);
    let (o, l) = ExactAttention::new()
        .scale(1.0)
        .tiles(6, 7)
        .forward_with_lse(q.view(), k.view(), v.view(), None)
        .unwrap();
    let (eo, el) = naive_attention(&q, &k, &v, None, 1.0);
    assert!(o.iter().all(|x| x.is_finite()));
    assert!(max_abs(&o, &eo) < 1e-12);
    assert!(max_abs(&l, &el) < 1e-9);
    assert!(l.iter().all(|&x| x < -990.0));
    // f32 as well.
    let (o32, l32) = ExactAttention::new()
        .scale(1.0)
        .tiles(6, 7)
        .forward_with_lse(
            q.mapv(|x| x as f32).view(),
            k.mapv(|x| x as f32).view(),
            v.mapv(|x| x as f32).view(),
            None,
        )
        .unwrap();
    assert!(max_abs(&o32.mapv(|x| x as f64), &eo) < 1e-4);
    assert!(max_abs(&l32.mapv(|x| x as f64), &el) < 1e-2);
    // Huge positive scores.
    let kp = k.mapv(|x| -x);
    let o = ExactAttention::new()
        .scale(1.0)
        .forward(q.view(), kp.view(), v.view(), None)
        .unwrap();
    let (eo, _) = naive_attention(&q, &kp, &v, None, 1.0);
    assert!(max_abs(&o, &eo) < 1e-12);
}

#[test]
fn f32_close_to_f64_and_thread_count_does_not_matter() {
    let q = gauss4((2, 3, 300, 32), 8);
    let k = gauss4((2, 3, 300, 32), 9);
    let v = gauss4((2, 3, 300, 16), 10);
    let (eo, _) = naive_attention(&q, &k, &v, None, 1.0 / 32f64.sqrt());
    let (q32, k32, v32) = (
        q.mapv(|x| x as f32),
        k.mapv(|x| x as f32),
        v.mapv(|x| x as f32),
    );
    let a = ExactAttention::new().par(Par::Rayon);
    let o1 = a.forward(q32.view(), k32.view(), v32.view(), None).unwrap();
    let o2 = a
        .par(Par::Seq)
        .forward(q32.view(), k32.view(), v32.view(), None)
        .unwrap();
    assert_eq!(o1, o2, "bitwise identical whatever the threading");
    assert!(max_abs(&o1.mapv(|x| x as f64), &eo) < 1e-5);
}

#[test]
fn forward_into_checks_and_writes() {
    let q = gauss4((1, 2, 5, 3), 11);
    let v = gauss4((1, 2, 5, 2), 12);
    let mut out = Array4::zeros((1, 2, 5, 2));
    ExactAttention::new()
        .forward_into(q.view(), q.view(), v.view(), None, out.view_mut(), None)
        .unwrap();
    let (eo, _) = naive_attention(&q, &q, &v, None, 1.0 / 3f64.sqrt());
    assert!(max_abs(&out, &eo) < 1e-12);
    let mut bad = Array4::zeros((1, 2, 5, 3));
    let e = ExactAttention::new().forward_into(
        q.view(),
        q.view(),
        v.view(),
        None,
        bad.view_mut(),
        None,
    );
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })));
}

#[test]
fn bad_input_is_an_error() {
    let q = gauss4((2, 2, 5, 3), 13);
    let v = gauss4((2, 2, 5, 2), 14);
    let att = |q: &Array4<f64>, k: &Array4<f64>, v: &Array4<f64>, m: Option<&Array2<bool>>| {
        softmax_attention(q.view(), k.view(), v.view(), m.map(|x| x.view()))
    };
    assert!(matches!(
        att(&q, &gauss4((2, 2, 5, 4), 1), &v, None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        att(&q, &q, &gauss4((2, 2, 6, 2), 1), None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        att(&q, &gauss4((1, 2, 5, 3), 1), &v, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let wrong = Array2::from_elem((2, 4), true);
    assert!(matches!(
        att(&q, &q, &v, Some(&wrong)),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut all_masked = Array2::from_elem((2, 5), true);
    all_masked.row_mut(1).fill(false);
    let e = att(&q, &q, &v, Some(&all_masked)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let empty = Array4::<f64>::zeros((2, 2, 0, 3));
    assert!(matches!(
        att(&empty, &q, &v, None),
        Err(Error::ZeroSize { .. })
    ));
    let mut nan = q.clone();
    nan[[0, 0, 0, 0]] = f64::NAN;
    assert!(matches!(
        att(&nan, &q, &v, None),
        Err(Error::NonFinite { .. })
    ));
    let e = ExactAttention::new()
        .scale(f64::INFINITY)
        .forward(q.view(), q.view(), v.view(), None);
    assert!(matches!(e, Err(Error::NonFinite { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn prop_matches_naive(nb in 1usize..3, nh in 1usize..3, nq in 1usize..20, nk in 1usize..20,
                          d in 1usize..6, dv in 1usize..5, qt in 1usize..9, kt in 1usize..9,
                          seed in 0u64..1000, drop in 0usize..3) {
        let q = gauss4((nb, nh, nq, d), seed);
        let k = gauss4((nb, nh, nk, d), seed + 1);
        let v = gauss4((nb, nh, nk, dv), seed + 2);
        // Mask every `drop+2`-th key except key 0, so no row is fully masked.
        let mask = Array2::from_shape_fn((nb, nk), |(_, u)| u == 0 || u % (drop + 2) != 0);
        let (o, l) = ExactAttention::new().tiles(qt, kt)
            .forward_with_lse(q.view(), k.view(), v.view(), Some(mask.view())).unwrap();
        let (eo, el) = naive_attention(&q, &k, &v, Some(&mask), 1.0 / (d as f64).sqrt());
        prop_assert!(max_abs(&o, &eo) < 1e-12);
        prop_assert!(max_abs(&l, &el) < 1e-12);
    }
}

#[test]
fn f32_kernels_match_naive_on_ragged_shapes() {
    // Rows not a multiple of 8/4, keys not a multiple of 32, d odd, d_v above 64 and ragged.
    for (nq, nk, d, dv) in [
        (37, 45, 13, 70),
        (9, 33, 64, 64),
        (1, 1, 1, 1),
        (20, 70, 16, 17),
    ] {
        let q = gauss4((1, 2, nq, d), 30);
        let k = gauss4((1, 2, nk, d), 31);
        let v = gauss4((1, 2, nk, dv), 32);
        let mut mask = Array2::from_elem((1, nk), true);
        if nk > 3 {
            mask[[0, 2]] = false;
        }
        let (eo, el) = naive_attention(&q, &k, &v, Some(&mask), 0.3);
        let (q32, k32, v32) = (
            q.mapv(|x| x as f32),
            k.mapv(|x| x as f32),
            v.mapv(|x| x as f32),
        );
        for (qt, kt) in [(8, 32), (5, 7), (128, 256), (16, 40)] {
            let (o, l) = ExactAttention::new()
                .scale(0.3)
                .tiles(qt, kt)
                .forward_with_lse(q32.view(), k32.view(), v32.view(), Some(mask.view()))
                .unwrap();
            let err = max_abs(&o.mapv(|x| x as f64), &eo);
            assert!(
                err < 2e-5,
                "{nq}x{nk} d={d} dv={dv} tiles {qt}x{kt}: {err:e}"
            );
            assert!(max_abs(&l.mapv(|x| x as f64), &el) < 1e-4);
        }
        // A transposed (non-contiguous-row) view takes the general path and agrees.
        let mut qf = Array4::<f32>::zeros(q32.dim().f());
        qf.assign(&q32);
        let o = ExactAttention::new()
            .scale(0.3)
            .forward(qf.view(), k32.view(), v32.view(), Some(mask.view()))
            .unwrap();
        assert!(max_abs(&o.mapv(|x| x as f64), &eo) < 2e-5);
    }
}

/// Finite inputs whose scores leave the float range are reported as errors, never NaN; scores
/// that are huge but finite still work (checked above).
#[test]
fn overflowing_scores_are_an_error_not_nan() {
    use monarch::attention::MonarchAttention;
    let (n, d) = (16, 4);
    // f64: q·k ≈ 4·(1e160)² = 4e320 > f64::MAX.
    let q = gauss4((1, 2, n, d), 1).mapv(|x| 1e160 * (1.0 + x.abs()));
    let k = gauss4((1, 2, n, d), 2).mapv(|x| 1e160 * (1.0 + x.abs()));
    let v = gauss4((1, 2, n, 3), 3);
    let is_overflow = |e: Error| match e {
        Error::NonFinite { context } => context.contains("overflow"),
        _ => false,
    };
    let e = softmax_attention(q.view(), k.view(), v.view(), None).unwrap_err();
    assert!(is_overflow(e));
    let e = ExactAttention::new()
        .forward_with_lse(q.view(), k.view(), v.view(), None)
        .unwrap_err();
    assert!(is_overflow(e));
    let ma = MonarchAttention::new(4, 2);
    assert!(is_overflow(
        ma.forward(q.view(), k.view(), v.view(), None).unwrap_err()
    ));
    assert!(is_overflow(
        ma.forward_with_objective(q.view(), k.view(), v.view(), None)
            .unwrap_err()
    ));
    assert!(is_overflow(
        ma.attention_matrix(q.view(), k.view(), None).unwrap_err()
    ));
    let g = gauss4((1, 2, n, 3), 4);
    assert!(is_overflow(
        ma.vjp(q.view(), k.view(), v.view(), None, g.view())
            .unwrap_err()
    ));
    // f32: q·k ≈ 4e40 > f32::MAX.
    let (q32, k32, v32) = (
        q.mapv(|x| (x / 1e160 * 1e20) as f32),
        k.mapv(|x| (x / 1e160 * 1e20) as f32),
        v.mapv(|x| x as f32),
    );
    let e = softmax_attention(q32.view(), k32.view(), v32.view(), None).unwrap_err();
    assert!(is_overflow(e));
    assert!(is_overflow(
        ma.forward(q32.view(), k32.view(), v32.view(), None)
            .unwrap_err()
    ));
    // The same inputs scaled into range work.
    let small = q32.mapv(|x| x * 1e-20);
    assert!(softmax_attention(
        small.view(),
        k32.mapv(|x| x * 1e-20).view(),
        v32.view(),
        None
    )
    .is_ok());
    // A huge scale on tame inputs (the fuzzer's case: MonarchAttention used to return all-zero
    // rows here, exact attention NaN).
    let (qt, kt) = (gauss4((1, 2, n, d), 5), gauss4((1, 2, n, d), 6));
    let e = ExactAttention::new()
        .scale(-1.03e308)
        .forward(qt.view(), kt.view(), v.view(), None)
        .unwrap_err();
    assert!(is_overflow(e));
    let e = MonarchAttention::new(4, 2)
        .scale(-1.03e308)
        .forward(qt.view(), kt.view(), v.view(), None)
        .unwrap_err();
    assert!(is_overflow(e));
    // The fuzzer's second case: the scaled scores fit (≈1.6e176) but the products q·k formed
    // before scaling do not (≈3.7e324); both attentions must refuse rather than disagree.
    let q1 = Array4::from_shape_vec(
        (1, 1, 2, 1),
        vec![4.186341030828635e-149, 6.499370198085938e82],
    )
    .unwrap();
    let k1 = Array4::from_shape_vec((1, 1, 2, 1), vec![5.71095824369004e241, -5.23]).unwrap();
    let v1 = Array4::from_shape_vec(
        (1, 1, 2, 2),
        vec![-5.5721805224841576e250, -0.87, -0.65, -0.65],
    )
    .unwrap();
    let sc = 4.186341030828676e-149;
    let e = ExactAttention::new()
        .scale(sc)
        .forward(q1.view(), k1.view(), v1.view(), None);
    assert!(is_overflow(e.unwrap_err()));
    let e = MonarchAttention::new(7, 4)
        .scale(sc)
        .forward(q1.view(), k1.view(), v1.view(), None);
    assert!(is_overflow(e.unwrap_err()));
    // Huge q against tiny k: every score is moderate, so both run, and exact attention matches
    // the naive computation on the rescaled inputs.
    let (qb, ks) = (qt.mapv(|x| x * 1e200), kt.mapv(|x| x * 1e-200));
    let o = softmax_attention(qb.view(), ks.view(), v.view(), None).unwrap();
    let (eo, _) = naive_attention(&qt, &kt, &v, None, 1.0 / (d as f64).sqrt());
    assert!(max_abs(&o, &eo) < 1e-9);
    assert!(MonarchAttention::new(4, 2)
        .forward(qb.view(), ks.view(), v.view(), None)
        .is_ok());
}

/// Inputs large enough that the finiteness and score-range scans are split over the pool: a
/// NaN in the last element, or one head of many whose scores overflow, is still found, with
/// `Par::Seq` and `Par::Rayon` alike, and the error names the same cause.
#[test]
fn large_inputs_are_checked_in_parallel_as_in_sequence() {
    use monarch::attention::MonarchAttention;
    // 2·8·256·64 = 262 144 elements per tensor: the size from which the scans split.
    let (b, h, n, d) = (2, 8, 256, 64);
    let q = gauss4((b, h, n, d), 21).mapv(|x| x as f32);
    let k = gauss4((b, h, n, d), 22).mapv(|x| x as f32);
    let v = gauss4((b, h, n, d), 23).mapv(|x| x as f32);
    for par in [Par::Seq, Par::Rayon] {
        let ex = ExactAttention::new().par(par);
        let ma = MonarchAttention::new(16, 1).par(par);
        assert!(ex.forward(q.view(), k.view(), v.view(), None).is_ok());
        assert!(ma.forward(q.view(), k.view(), v.view(), None).is_ok());
        for which in 0..3 {
            let mut t = [q.clone(), k.clone(), v.clone()];
            t[which][[b - 1, h - 1, n - 1, d - 1]] = f32::NAN;
            let name = ["q", "k", "v"][which];
            let is_nan = |e: Error| match e {
                Error::NonFinite { context } => context.ends_with(&format!(": {name}")),
                _ => false,
            };
            let e = ex.forward(t[0].view(), t[1].view(), t[2].view(), None);
            assert!(is_nan(e.unwrap_err()), "{par:?} exact, NaN in {name}");
            let e = ma.forward(t[0].view(), t[1].view(), t[2].view(), None);
            assert!(is_nan(e.unwrap_err()), "{par:?} Monarch, NaN in {name}");
        }
        // One head (batch 1, head 5) with scores beyond f32's range.
        let mut qb = q.clone();
        qb.slice_mut(monarch::ndarray::s![1, 5, .., ..])
            .mapv_inplace(|x| 1e20 * (1.0 + x.abs()));
        let mut kb = k.clone();
        kb.slice_mut(monarch::ndarray::s![1, 5, .., ..])
            .mapv_inplace(|x| 1e20 * (1.0 + x.abs()));
        for e in [
            ex.forward(qb.view(), kb.view(), v.view(), None)
                .unwrap_err(),
            ma.forward(qb.view(), kb.view(), v.view(), None)
                .unwrap_err(),
        ] {
            match e {
                Error::NonFinite { context } => {
                    assert!(context.contains("overflow"), "{par:?}: {context}")
                }
                e => panic!("{par:?}: expected an overflow error, got {e:?}"),
            }
        }
    }
}
