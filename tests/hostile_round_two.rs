//! Hostile input, round two (issue 18): sizes near `usize::MAX` and the memory limit, loops
//! bounded by a caller's number, extreme finite values, lossy conversions, the loaders' NaN
//! policy, empty batches, gaps in safetensors files, `Error::Io`'s source; and the two gaps
//! against the authors' code (paired channel shuffle, MonarchHMM's k-factor layout). Every
//! input that found a defect is a named test here.

use monarch::attention::{softmax_attention, ExactAttention, MonarchAttention, MAX_STEPS};
use monarch::checkpoint::{Dtype, StateDict};
use monarch::circuit::{Hmm, MonarchChain};
use monarch::gs::{channel_shuffle, GsOrthConv2d, OrthGs, OrthMap, MAX_EXP_TERMS};
use monarch::mixer::{ConvPlan, GatedMlp, M2BertLayer};
use monarch::more::{Adapter, LoraAdapter, MoReAdapter};
use monarch::ndarray::{Array1, Array2, Array3, Array4, ArrayView2};
use monarch::pk::MlpMixerBlock;
use monarch::{BlockDiag, Error, Monarch, MonarchLinear, Perm};
use proptest::prelude::*;

fn is_too_large<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::TooLarge { .. }))
}

// ---------------------------------------------------------------------------------------------
// Sizes whose product wraps, and allocations that cannot succeed.

#[test]
fn perm_stride_whose_length_wraps_is_an_error() {
    // rows·cols = 2^64 wraps to 0: it used to index out of bounds.
    let r = Perm::stride(1 << 33, 1 << 31);
    assert!(is_too_large(&r), "{r:?}");
    // 2^60 indices fit usize but not isize bytes; 2^44 indices (128 TiB) fit but cannot be
    // allocated.
    assert!(is_too_large(&Perm::stride(1 << 40, 1 << 20)));
    assert!(is_too_large(&Perm::stride(1 << 22, 1 << 22)));
    // Small ones still work, empty ones are empty.
    assert_eq!(Perm::stride(2, 3).unwrap().index(), &[0, 3, 1, 4, 2, 5]);
    assert!(Perm::stride(0, 5).unwrap().is_empty());
}

#[test]
fn monarch_random_that_cannot_be_allocated_is_too_large() {
    // One block of 2^24 × 2^24 (2 PiB): the process used to abort.
    let r = Monarch::<f64>::random(1 << 24, 1, 0);
    assert!(is_too_large(&r), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("could not be allocated"), "{msg}");
    assert!(msg.contains("16777216"), "{msg}");
    assert!(is_too_large(&Monarch::<f32>::identity(1 << 24, 1)));
    assert!(is_too_large(&Monarch::<f64>::random_factors(
        (1, 1 << 23, 1 << 23),
        (1, 2, 1 << 23),
        0
    )));
    assert!(is_too_large(&BlockDiag::<f64>::identity(1, 1 << 23)));
    assert!(is_too_large(
        &Monarch::<monarch::num_complex::Complex64>::dft_factored(1 << 16, 1 << 16, false)
    ));
}

#[test]
fn monarch_linear_that_cannot_be_allocated_is_too_large() {
    let r = MonarchLinear::<f32>::new(1 << 28, 1 << 28, 1, true, 0);
    assert!(is_too_large(&r), "{r:?}");
    let r = MonarchLinear::<f64>::new(1 << 28, 1 << 28, 1, false, 0);
    assert!(is_too_large(&r), "{r:?}");
}

#[test]
fn module_constructors_that_cannot_be_allocated_are_too_large() {
    let big = 1usize << 23;
    assert!(is_too_large(&MonarchChain::<f64>::random(
        &[(1, big, big), (1, big, big)],
        0
    )));
    assert!(is_too_large(&GsOrthConv2d::<f64>::identity(
        1 << 23,
        1,
        1,
        1
    )));
    assert!(is_too_large(&OrthGs::<f64>::identity(
        1 << 24,
        1 << 24,
        1,
        OrthMap::Cayley
    )));
    assert!(is_too_large(&GatedMlp::<f64>::random(
        1 << 23,
        1 << 23,
        1,
        0
    )));
    assert!(is_too_large(&MlpMixerBlock::<f64>::random(
        1 << 23,
        1,
        1 << 23,
        1,
        0
    )));
    assert!(is_too_large(&ConvPlan::<f64>::new(
        monarch::mixer::ConvMethod::Fft,
        usize::MAX / 2 + 1
    )));
    assert!(is_too_large(&ConvPlan::<f64>::new(
        monarch::mixer::ConvMethod::Fft,
        1 << 45
    )));
    // A small base with a huge rank: the rank check names it before anything is allocated.
    let w = Array2::<f64>::zeros((4, 4));
    assert!(LoraAdapter::new(w.clone(), None, usize::MAX, 0.0, 0).is_err());
    assert!(MoReAdapter::new(w, None, 2, usize::MAX, 0.0, 0).is_err());
    // Seeds near u64::MAX wrap instead of overflowing.
    assert!(GatedMlp::<f64>::random(4, 8, 2, u64::MAX).is_ok());
    assert!(M2BertLayer::<f64>::random(4, 8, 8, 2, u64::MAX).is_ok());
    assert!(MlpMixerBlock::<f64>::random(4, 4, 2, 2, u64::MAX).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Loops bounded by a caller's number.

fn small_qkv(batch: usize, heads: usize, n: usize, d: usize) -> Array4<f64> {
    Array4::from_shape_fn((batch, heads, n, d), |(b, h, i, j)| {
        ((b * 7 + h * 5 + i * 3 + j) % 11) as f64 / 11.0 - 0.4
    })
}

#[test]
fn monarch_attention_steps_are_capped() {
    let x = small_qkv(1, 1, 6, 2);
    // `usize::MAX` rounds used to run for ever.
    let r = MonarchAttention::new(2, usize::MAX).forward(x.view(), x.view(), x.view(), None);
    match r {
        Err(Error::TooLarge { value, max, .. }) => {
            assert_eq!((value, max), (usize::MAX, MAX_STEPS));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let ma = MonarchAttention::new(2, MAX_STEPS + 1);
    assert!(is_too_large(&ma.vjp(
        x.view(),
        x.view(),
        x.view(),
        None,
        x.view()
    )));
    assert!(is_too_large(&ma.attention_matrix(x.view(), x.view(), None)));
    let ok = MonarchAttention::new(2, MAX_STEPS).forward(x.view(), x.view(), x.view(), None);
    assert!(ok.unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn gs_conv_series_terms_are_capped() {
    let r = GsOrthConv2d::<f64>::identity(4, 2, 3, usize::MAX);
    assert!(is_too_large(&r), "{r:?}");
    assert!(GsOrthConv2d::<f64>::identity(4, 2, 3, MAX_EXP_TERMS).is_ok());
    assert!(is_too_large(&GsOrthConv2d::<f64>::identity(
        4,
        2,
        3,
        MAX_EXP_TERMS + 1
    )));
}

// ---------------------------------------------------------------------------------------------
// Extreme finite values in the projection.

fn assert_projection_exact<T: monarch::RealScalar>(dense: Array2<T>, tol: f64) {
    let p = Monarch::project_with_error(dense.view(), 4, 4, 1).unwrap();
    let err = p.error.to_f64_val();
    let rel = p.relative_error.to_f64_val();
    assert!(
        err.is_finite() && rel.is_finite(),
        "error {err}, relative {rel}"
    );
    assert!(rel < tol, "relative error {rel}");
    assert!(p
        .monarch
        .w1()
        .iter()
        .chain(p.monarch.w2())
        .all(|v| v.is_finite()));
    // The factors reproduce the matrix (compared relative to its largest entry).
    let back = p.monarch.to_dense();
    let big = dense.iter().fold(0f64, |a, v| a.max(v.to_f64_val().abs()));
    let worst = back.iter().zip(&dense).fold(0f64, |a, (x, y)| {
        a.max((x.to_f64_val() - y.to_f64_val()).abs())
    });
    assert!(worst <= tol * big, "worst entry error {worst} of {big}");
}

#[test]
fn projection_of_f64_entries_near_1e300_is_finite() {
    // Used to return Ok with a NaN error and non-finite factors.
    let m = Monarch::<f64>::random(16, 4, 5).unwrap();
    assert_projection_exact(m.to_dense().mapv(|v| v * 1e300), 1e-10);
    assert_projection_exact(m.to_dense().mapv(|v| v * 1e-300), 1e-10);
    assert_projection_exact(m.to_dense().mapv(|v| v * 1e307), 1e-10);
    // A matrix that is not a Monarch: the error is finite and the scale of the input.
    let a = Array2::from_shape_fn((16, 16), |(i, j)| {
        1e300 * (((i * 5 + j * 3) % 7) as f64 - 3.0)
    });
    let p = Monarch::project_with_error(a.view(), 4, 4, 1).unwrap();
    assert!(p.error.is_finite() && p.error > 1e299, "{}", p.error);
    let unscaled = a.mapv(|v| v / 1e300);
    let q = Monarch::project_with_error(unscaled.view(), 4, 4, 1).unwrap();
    assert!((p.relative_error - q.relative_error).abs() < 1e-12);
    assert!((p.error / 1e300 - q.error).abs() < 1e-9 * q.error);
}

#[test]
fn projection_of_f32_entries_near_3e19_is_finite() {
    let m = Monarch::<f32>::random(16, 4, 6).unwrap();
    let d = m.to_dense();
    // Largest entry exactly 3e19: the squares of a slice's entries overflow f32.
    let big = d.iter().fold(0f32, |a, v| a.max(v.abs()));
    assert_projection_exact(d.mapv(|v| v * (3e19 / big)), 1e-4);
    assert_projection_exact(d.mapv(|v| v * (3e38 / big)), 1e-4);
    assert_projection_exact(m.to_dense().mapv(|v| v * 1e-30), 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Lossy conversions on saving.

fn sd_of(values: &[f64]) -> StateDict<f64> {
    let mut sd = StateDict::new();
    sd.insert("w", Array1::from(values.to_vec()));
    sd
}

#[test]
fn f16_out_of_range_values_are_an_error_unless_lossy() {
    let sd = sd_of(&[1e6, -7e4, 1e-9]);
    let err = sd.to_bytes(Dtype::F16).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("\"w\""), "{err}");
    for v in [1e6, -7e4, 1e-9, 65520.0, 2f64.powi(-25)] {
        assert!(sd_of(&[v]).to_bytes(Dtype::F16).is_err(), "{v}");
    }
    // The explicit lossy option keeps the old behaviour.
    let bytes = sd.to_bytes_lossy(Dtype::F16).unwrap();
    let back = StateDict::<f64>::from_bytes(&bytes).unwrap();
    let w = back.get("w").unwrap();
    assert_eq!(
        w.as_slice().unwrap(),
        &[f64::INFINITY, f64::NEG_INFINITY, 0.0]
    );
    // In range (largest finite, smallest subnormal, zero, NaN and ±∞ themselves) is fine.
    let ok = sd_of(&[
        65504.0,
        -65519.0,
        2f64.powi(-24),
        0.0,
        f64::NAN,
        f64::INFINITY,
    ]);
    assert!(ok.to_bytes(Dtype::F16).is_ok());
    // The same rule for F32 and BF16 from f64.
    assert!(sd_of(&[1e300]).to_bytes(Dtype::F32).is_err());
    assert!(sd_of(&[1e-60]).to_bytes(Dtype::F32).is_err());
    assert!(sd_of(&[1e39]).to_bytes(Dtype::BF16).is_err());
    assert!(sd_of(&[1e300, 1e-300]).to_bytes(Dtype::F64).is_ok());
    assert!(sd_of(&[1e300]).to_bytes_lossy(Dtype::BF16).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// `to_bytes(F16)` is `Ok` exactly when no value overflows (`|v| ≥ 65520` rounds to ∞) or
    /// underflows (`0 < |v| ≤ 2^-25` rounds to 0): the rule written from IEEE binary16.
    #[test]
    fn f16_range_rule(exps in proptest::collection::vec(-40i32..20, 1..6),
                      mant in proptest::collection::vec(-1.0f64..1.0, 6)) {
        let vals: Vec<f64> = exps.iter().zip(&mant).map(|(&e, &m)| m * 2f64.powi(e)).collect();
        let in_range = vals
            .iter()
            .all(|v| v.abs() < 65520.0 && (*v == 0.0 || v.abs() > 2f64.powi(-25)));
        prop_assert_eq!(sd_of(&vals).to_bytes(Dtype::F16).is_ok(), in_range, "{:?}", vals);
        prop_assert!(sd_of(&vals).to_bytes_lossy(Dtype::F16).is_ok());
    }

    /// Monarch matrices scaled by `10^e` for any `e` of the f64 range project back exactly,
    /// with a finite error.
    #[test]
    fn projection_at_any_scale(e in -300i32..300, seed in 0u64..1000) {
        let m = Monarch::<f64>::random(16, 4, seed).unwrap();
        let s = 10f64.powi(e);
        let dense = m.to_dense().mapv(|v| v * s);
        let p = Monarch::project_with_error(dense.view(), 4, 4, 1).unwrap();
        prop_assert!(p.error.is_finite() && p.relative_error < 1e-10, "{} {}", p.error, p.relative_error);
        prop_assert!(p.monarch.w1().iter().chain(p.monarch.w2()).all(|v| v.is_finite()));
    }

    /// Constructors fed sizes that are tiny, zero, or far beyond any memory (≥ 2^45
    /// elements, up to `usize::MAX`): never a panic or an abort; a huge size is an error.
    #[test]
    fn constructors_with_sizes_near_the_limits(a in size(), b in size(), c in size(), seed in any::<u64>()) {
        let huge = |v: usize| v >= 1 << 45;
        // Lengths are zero, tiny (below 36) or at least 2^45.
        let r = Perm::stride(a, b);
        if a != 0 && b != 0 && (huge(a) || huge(b)) {
            prop_assert!(is_too_large(&r));
        } else if !huge(a) && !huge(b) {
            prop_assert_eq!(r.unwrap().len(), a * b);
        }
        if huge(a) {
            prop_assert!(Monarch::<f32>::random(a, b, seed).is_err());
        }
        let r = MonarchLinear::<f32>::new(a, b, c, true, seed);
        if huge(a) || huge(b) {
            prop_assert!(r.is_err(), "MonarchLinear::new({a}, {b}, {c})");
        }
        let r = BlockDiag::<f32>::identity(a, b);
        if (huge(a) && b != 0) || (huge(b) && a != 0) {
            prop_assert!(is_too_large(&r), "BlockDiag::identity({a}, {b}): {r:?}");
        }
        let _ = Monarch::<f32>::identity(a, b);
        let _ = Monarch::<f32>::random_factors((a, b, c), (c, b, a), seed);
        let _ = MonarchChain::<f32>::random(&[(a, b, c), (b, c, a)], seed);
        let _ = GsOrthConv2d::<f32>::identity(a, b, 1, c);
        let _ = GatedMlp::<f32>::random(a, b, c, seed);
    }

    /// Batches of 0 rows give empty results of the right shape everywhere; zero feature sizes
    /// are errors.
    #[test]
    fn empty_batches_are_empty_results(n_pow in 1u32..4, heads in 0usize..3, d in 0usize..3) {
        let n = 1usize << n_pow;
        let m = Monarch::<f64>::random(n * n, n, 1).unwrap();
        prop_assert_eq!(m.matmul(Array2::zeros((0, n * n)).view()).unwrap().dim(), (0, n * n));
        let q = Array4::<f64>::zeros((0, heads, n, d));
        let r = softmax_attention(q.view(), q.view(), q.view(), None);
        let ma = MonarchAttention::new(2, 2).forward(q.view(), q.view(), q.view(), None);
        if d == 0 {
            let zero = |e: &Result<Array4<f64>, Error>| matches!(e, Err(Error::ZeroSize { .. }));
            prop_assert!(zero(&r) && zero(&ma));
        } else {
            prop_assert_eq!(r.unwrap().dim(), (0, heads, n, d));
            prop_assert_eq!(ma.unwrap().dim(), (0, heads, n, d));
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

/// Sizes: zero, small, or at least 2^45 (beyond any allocation of 4-byte elements: 2^47 bytes
/// is the whole x86-64 user address space), up to `usize::MAX`.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..6,
        1 => (45u32..63).prop_map(|e| 1usize << e),
        1 => (0usize..4).prop_map(|k| usize::MAX - k),
        1 => (0usize..4).prop_map(|k| usize::MAX / 2 + 1 + k),
    ]
}

// ---------------------------------------------------------------------------------------------
// One NaN policy for every loader.

#[test]
fn monarch_from_state_dict_rejects_nan_like_the_other_loaders() {
    let m = Monarch::<f64>::random(16, 4, 2).unwrap();
    let mut sd = StateDict::new();
    m.to_state_dict(&mut sd, "m").unwrap();
    assert!(Monarch::from_state_dict(&sd, "m").is_ok());
    let mut w1 = m.w1().clone();
    w1[[1, 2, 3]] = f64::NAN;
    sd.insert("m.w1", w1);
    let err = Monarch::from_state_dict(&sd, "m").unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
    assert!(err.to_string().contains("m.w1"), "{err}");
    // MonarchLinear: an infinite bias.
    let lin = MonarchLinear::<f64>::new(8, 12, 2, true, 3).unwrap();
    let mut sd = StateDict::new();
    lin.to_state_dict(&mut sd, "fc");
    let mut b = lin.bias().unwrap().clone();
    b[0] = f64::INFINITY;
    sd.insert("fc.bias", b);
    let err = MonarchLinear::from_state_dict(&sd, "fc", 8, 12, true).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
    // A file holding NaN loads as a state dict (the values as stored); the getters refuse it.
    let bytes = sd.to_bytes(Dtype::F32).unwrap();
    let back = StateDict::<f32>::from_bytes(&bytes).unwrap();
    assert!(back.get("fc.bias").unwrap()[0].is_infinite());
    assert!(back.array1("fc.bias", 12).is_err());
}

// ---------------------------------------------------------------------------------------------
// Empty batches everywhere.

#[test]
fn empty_batches_give_empty_results_in_every_layer() {
    let x0 = |w: usize| Array2::<f64>::zeros((0, w));
    let lin = MonarchLinear::<f64>::new(8, 12, 2, true, 0).unwrap();
    assert_eq!(lin.forward(x0(8).view()).unwrap().dim(), (0, 12));
    assert_eq!(
        lin.vjp(x0(8).view(), x0(12).view()).unwrap().x.dim(),
        (0, 8)
    );
    let bd = BlockDiag::<f64>::identity(2, 3).unwrap();
    assert_eq!(bd.matmul(x0(6).view()).unwrap().dim(), (0, 6));
    let m = Monarch::<f64>::random(16, 4, 0).unwrap();
    assert_eq!(
        m.vjp(x0(16).view(), x0(16).view()).unwrap().x.dim(),
        (0, 16)
    );
    let chain = MonarchChain::<f64>::random(&[(4, 4, 4), (4, 4, 4), (4, 4, 4)], 0).unwrap();
    assert_eq!(chain.matmul(x0(16).view()).unwrap().dim(), (0, 16));

    // Attention: batch 0 and heads 0 are empty; lengths and feature sizes 0 are errors.
    for (b, h) in [(0, 2), (2, 0), (0, 0)] {
        let q = Array4::<f64>::zeros((b, h, 5, 3));
        let v = Array4::<f64>::zeros((b, h, 5, 4));
        let mask = Array2::from_elem((b, 5), true);
        let e = ExactAttention::new().forward(q.view(), q.view(), v.view(), Some(mask.view()));
        assert_eq!(e.unwrap().dim(), (b, h, 5, 4));
        let (o, lse) = ExactAttention::new()
            .forward_with_lse(q.view(), q.view(), v.view(), None)
            .unwrap();
        assert_eq!((o.dim(), lse.dim()), ((b, h, 5, 4), (b, h, 5)));
        let ma = MonarchAttention::new(2, 2);
        assert_eq!(
            ma.forward(q.view(), q.view(), v.view(), None)
                .unwrap()
                .dim(),
            (b, h, 5, 4)
        );
        let (o, obj) = ma
            .forward_with_objective(q.view(), q.view(), v.view(), None)
            .unwrap();
        assert_eq!((o.dim(), obj.dim()), ((b, h, 5, 4), (b, h, 5)));
        let g = ma
            .vjp(q.view(), q.view(), v.view(), None, v.view())
            .unwrap();
        assert_eq!((g.q.dim(), g.v.dim()), ((b, h, 5, 3), (b, h, 5, 4)));
        assert_eq!(
            ma.attention_matrix(q.view(), q.view(), None).unwrap().dim(),
            (b, h, 5, 5)
        );
    }
    let q = Array4::<f64>::zeros((1, 1, 0, 3));
    assert!(matches!(
        softmax_attention(q.view(), q.view(), q.view(), None),
        Err(Error::ZeroSize { .. })
    ));
    let q = Array4::<f64>::zeros((0, 1, 4, 0));
    assert!(matches!(
        MonarchAttention::new(2, 1).forward(q.view(), q.view(), q.view(), None),
        Err(Error::ZeroSize { .. })
    ));

    // Paper modules.
    let w = Array2::from_shape_fn((6, 8), |(i, j)| (i + j) as f64 / 10.0);
    let more = MoReAdapter::new(w.clone(), None, 2, 1, 0.0, 0).unwrap();
    assert_eq!(more.forward(x0(8).view()).unwrap().dim(), (0, 6));
    let lora = LoraAdapter::new(w, None, 2, 0.0, 0).unwrap();
    assert_eq!(lora.forward(x0(8).view()).unwrap().dim(), (0, 6));
    let glu = GatedMlp::<f64>::random(8, 16, 2, 0).unwrap();
    assert_eq!(glu.forward(x0(8).view()).unwrap().dim(), (0, 8));
    let layer = M2BertLayer::<f64>::random(4, 8, 8, 2, 0).unwrap();
    assert_eq!(
        layer
            .forward(Array3::zeros((0, 8, 4)).view())
            .unwrap()
            .dim(),
        (0, 8, 4)
    );
    let block = MlpMixerBlock::<f64>::random(4, 6, 3, 5, 0).unwrap();
    assert_eq!(
        block
            .forward(Array3::zeros((0, 4, 6)).view())
            .unwrap()
            .dim(),
        (0, 4, 6)
    );
    let gs = OrthGs::<f64>::identity(8, 4, 2, OrthMap::Cayley).unwrap();
    assert_eq!(gs.forward(x0(8).view()).unwrap().dim(), (0, 8));
    let conv = GsOrthConv2d::<f64>::identity(4, 2, 3, 4).unwrap();
    let y = conv.forward(Array4::zeros((0, 4, 3, 3)).view()).unwrap();
    assert_eq!(y.dim(), (0, 4, 3, 3));

    // HMM: no sequences give empty results; EM with none is an error.
    let t = MonarchChain::<f64>::random_stochastic(&[(2, 2, 2), (2, 2, 2)], 1.0, 3).unwrap();
    let mut hmm = Hmm::new(
        Array1::from_elem(4, 0.25),
        t,
        Array2::from_elem((4, 3), 1.0 / 3.0),
    )
    .unwrap();
    let none = Array2::<usize>::zeros((0, 5));
    assert_eq!(hmm.log_likelihood(none.view()).unwrap().len(), 0);
    assert_eq!(hmm.posteriors(none.view()).unwrap().dim(), (0, 5, 4));
    assert_eq!(hmm.sample(0, 5, 1).unwrap().dim(), (0, 5));
    assert!(matches!(
        hmm.em_step(none.view()),
        Err(Error::ZeroSize { .. })
    ));
    assert!(hmm
        .log_likelihood(Array2::<usize>::zeros((2, 0)).view())
        .is_err());
}

// ---------------------------------------------------------------------------------------------
// safetensors: gaps in the data region; Error::Io.

/// A safetensors file with one F32 tensor of one element per `(name, [start, end))`, over a
/// data region of `data_len` bytes.
fn container(tensors: &[(&str, u64, u64)], data_len: usize) -> Vec<u8> {
    let entries: Vec<String> = tensors
        .iter()
        .map(|(n, s, e)| {
            format!(
                "\"{n}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{s},{e}]}}",
                (e - s) / 4
            )
        })
        .collect();
    let head = format!("{{{}}}", entries.join(","));
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(head.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

#[test]
fn safetensors_gaps_are_rejected() {
    // Contiguous: fine.
    assert!(StateDict::<f32>::from_bytes(&container(&[("a", 0, 4), ("b", 4, 8)], 8)).is_ok());
    // A 4-byte hole between the tensors (used to load).
    let err =
        StateDict::<f32>::from_bytes(&container(&[("a", 0, 4), ("b", 8, 12)], 12)).unwrap_err();
    assert!(matches!(err, Error::Format(_)), "{err:?}");
    assert!(err.to_string().contains("gap of 4 bytes"), "{err}");
    // A hole before the first tensor, and unused bytes after the last.
    assert!(StateDict::<f32>::from_bytes(&container(&[("a", 4, 8)], 8)).is_err());
    assert!(StateDict::<f32>::from_bytes(&container(&[("a", 0, 4)], 8)).is_err());
    // No tensors and no data: fine; no tensors with data: unused bytes.
    assert!(StateDict::<f32>::from_bytes(&container(&[], 0)).is_ok());
    assert!(StateDict::<f32>::from_bytes(&container(&[], 4)).is_err());
    // Empty tensors take no bytes and may sit anywhere.
    assert!(StateDict::<f32>::from_bytes(&container(&[("a", 0, 4), ("e", 4, 4)], 4)).is_ok());
}

#[test]
fn io_errors_keep_their_kind_and_source() {
    use std::error::Error as _;
    let dir = std::env::temp_dir().join("monarch-hostile-io-test-missing-dir");
    let err = StateDict::<f32>::load(dir.join("absent.safetensors")).unwrap_err();
    match &err {
        Error::Io { kind, context, .. } => {
            assert_eq!(*kind, std::io::ErrorKind::NotFound);
            assert!(context.contains("absent.safetensors"), "{context}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let src = err.source().expect("an i/o error has a source");
    let io = src
        .downcast_ref::<std::io::Error>()
        .expect("the source is the io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(err.clone(), err);
    assert!(Error::zero("x").source().is_none());
    // Writing into a missing directory.
    let sd = sd_of(&[1.0]);
    let err = sd.save(dir.join("x.safetensors"), Dtype::F32).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Paired channel shuffle (gsoft's `channel_shuffle(x, groups, paired=True)`).

/// The rule written directly: `C/2` pairs, `cpg/2` pairs per group, pair `g·(cpg/2) + c`
/// gathers pair `c·groups + g`, both channels of a pair together.
fn paired_reference(groups: usize, cpg: usize) -> Vec<usize> {
    let ppg = cpg / 2;
    let mut idx = vec![0; groups * cpg];
    for g in 0..groups {
        for c in 0..ppg {
            for e in 0..2 {
                idx[2 * (g * ppg + c) + e] = 2 * (c * groups + g) + e;
            }
        }
    }
    idx
}

#[test]
fn paired_channel_shuffle_matches_the_rule() {
    for (groups, cpg) in [(1, 2), (2, 2), (2, 4), (3, 4), (4, 6), (5, 2), (2, 8)] {
        let p = channel_shuffle(groups, cpg, true).unwrap();
        let want = paired_reference(groups, cpg);
        assert_eq!(p.index(), &want[..], "groups {groups}, cpg {cpg}");
        for q in 0..groups * cpg / 2 {
            assert_eq!(p.index()[2 * q] % 2, 0);
            assert_eq!(p.index()[2 * q + 1], p.index()[2 * q] + 1);
        }
        // Unpaired: idx[g·cpg + c] = c·groups + g.
        let u = channel_shuffle(groups, cpg, false).unwrap();
        for g in 0..groups {
            for c in 0..cpg {
                assert_eq!(u.index()[g * cpg + c], c * groups + g);
            }
        }
    }
    assert!(matches!(
        channel_shuffle(2, 3, true),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn gs_conv_with_paired_shuffles() {
    let (c, groups, hw) = (8, 2, 4);
    let mut conv = GsOrthConv2d::<f64>::identity(c, groups, 3, 12).unwrap();
    conv.kernel_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = ((i * 7 % 13) as f64 - 6.0) * 0.03);
    conv.pointwise_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = ((i * 5 % 9) as f64 - 4.0) * 0.1);
    let paired = conv.clone().with_paired_shuffle(true).unwrap();
    assert!(paired.paired_shuffle() && !conv.paired_shuffle());
    let x = Array4::from_shape_fn((2, c, hw, hw), |(b, ch, i, j)| {
        ((b * 3 + ch * 5 + i * 7 + j * 11) % 17) as f64 / 17.0 - 0.5
    });
    let y = paired.forward(x.view()).unwrap();
    // Reference: the paired index rule, then the layer's own pieces.
    let idx = paired_reference(groups, c / groups);
    let shuffle =
        |a: &Array4<f64>| Array4::from_shape_fn(a.dim(), |(b, ch, i, j)| a[[b, idx[ch], i, j]]);
    let s1 = shuffle(&x);
    let e = conv.grouped_exp_conv(s1.view()).unwrap();
    let s2 = shuffle(&e);
    let q = conv.pointwise_blocks().unwrap();
    let cpg = c / groups;
    let want = Array4::from_shape_fn(x.dim(), |(b, o, i, j)| {
        let g = o / cpg;
        (0..cpg)
            .map(|t| q[[g, o % cpg, t]] * s2[[b, g * cpg + t, i, j]])
            .sum::<f64>()
    });
    let worst = y
        .iter()
        .zip(&want)
        .fold(0f64, |a, (p, w)| a.max((p - w).abs()));
    assert!(worst < 1e-12, "worst {worst}");
    // Orthogonal either way, and a different map from the unpaired one.
    let (nx, ny) = (
        x.iter().map(|v| v * v).sum::<f64>(),
        y.iter().map(|v| v * v).sum::<f64>(),
    );
    assert!((nx - ny).abs() < 1e-8 * nx);
    let yu = conv.forward(x.view()).unwrap();
    assert!(yu.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-6));
    // Odd channels per group cannot be paired.
    let odd = GsOrthConv2d::<f64>::identity(6, 2, 3, 2).unwrap();
    assert!(odd.with_paired_shuffle(true).is_err());
}

// ---------------------------------------------------------------------------------------------
// The k-factor chain in MonarchHMM's layout.

/// MonarchHMM's rule written directly: factors applied in reversed list order; before each
/// factor view the vector as `(nb, cols)` and multiply block `a` into row `a`, giving an
/// `(nb, rows)` view, then transpose that view.
fn hmm_apply(ws: &[Array3<f64>], x: &[f64]) -> Vec<f64> {
    let mut cur = x.to_vec();
    for w in ws.iter().rev() {
        let (nb, rows, cols) = w.dim();
        assert_eq!(cur.len(), nb * cols);
        let mut y = vec![0.0; nb * rows];
        for a in 0..nb {
            for r in 0..rows {
                y[a * rows + r] = (0..cols).map(|c| w[[a, r, c]] * cur[a * cols + c]).sum();
            }
        }
        // Transpose the (nb, rows) view: out[r·nb + a] = y[a·rows + r].
        let mut t = vec![0.0; nb * rows];
        for a in 0..nb {
            for r in 0..rows {
                t[r * nb + a] = y[a * rows + r];
            }
        }
        cur = t;
    }
    cur
}

fn hmm_dense(ws: &[Array3<f64>]) -> Array2<f64> {
    let n = ws.last().unwrap().dim().0 * ws.last().unwrap().dim().2;
    let cols: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let e: Vec<f64> = (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect();
            hmm_apply(ws, &e)
        })
        .collect();
    Array2::from_shape_fn((cols[0].len(), n), |(i, j)| cols[j][i])
}

fn factors(shapes: &[(usize, usize, usize)], seed: u64) -> Vec<Array3<f64>> {
    shapes
        .iter()
        .enumerate()
        .map(|(f, &s)| {
            Array3::from_shape_fn(s, |(a, r, c)| {
                let h = (seed as usize + f * 131 + a * 31 + r * 7 + c * 3) % 23;
                h as f64 / 23.0 - 0.4
            })
        })
        .collect()
}

fn max_diff(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn hmm_layout_three_and_four_factors_match_an_independent_dense_product() {
    let cases: &[&[(usize, usize, usize)]] = &[
        &[(4, 2, 2), (2, 4, 4), (4, 2, 2)],
        &[(2, 4, 4), (4, 2, 2), (8, 1, 1)],
        &[(3, 4, 4), (6, 2, 2), (2, 6, 6)],
        &[(4, 2, 2), (2, 4, 4), (4, 2, 2), (8, 1, 1)],
        &[(2, 8, 8), (4, 4, 4), (8, 2, 2), (4, 4, 4)],
        // Rectangular blocks that chain (lengths 12 → 8 → 6, 12 → 12 → 8 → 6).
        &[(2, 3, 4), (2, 4, 6)],
        &[(2, 3, 4), (4, 2, 3), (3, 4, 4)],
    ];
    for (i, shapes) in cases.iter().enumerate() {
        let ws = factors(shapes, i as u64);
        let chain = MonarchChain::from_factors_hmm(ws.clone()).unwrap();
        let d = max_diff(chain.to_dense().view(), hmm_dense(&ws).view());
        assert!(d < 1e-12, "case {i} {shapes:?}: {d}");
        // The log-space multiply runs the same permutations.
        let x = Array2::from_shape_fn((2, chain.in_features()), |(b, j)| -((b + j) as f64) / 5.0);
        let dense = hmm_dense(&ws.iter().map(|w| w.mapv(f64::abs)).collect::<Vec<_>>());
        let pos =
            MonarchChain::from_factors_hmm(ws.iter().map(|w| w.mapv(f64::abs)).collect()).unwrap();
        let got = pos.log_matmul(x.view(), monarch::Par::Seq).unwrap();
        let want = x.mapv(f64::exp).dot(&dense.t()).mapv(f64::ln);
        assert!(max_diff(got.view(), want.view()) < 1e-10, "log case {i}");
    }
}

#[test]
fn hmm_layout_differs_from_the_reference_layout_where_the_issue_says() {
    // n = b³ with b² blocks of b × b in every factor (MonarchHMM's three-factor case): the
    // two conventions give different matrices from the same list.
    for shapes in [
        &[(4, 2, 2); 3][..],
        &[(9, 3, 3); 3][..],
        &[(8, 2, 2); 4][..],
    ] {
        let ws = factors(shapes, 9);
        let mut rev = ws.clone();
        rev.reverse();
        let hmm = MonarchChain::from_factors_hmm(ws.clone())
            .unwrap()
            .to_dense();
        let reference = MonarchChain::from_factors(rev).unwrap().to_dense();
        assert!(max_diff(hmm.view(), reference.view()) > 1e-3, "{shapes:?}");
    }
    // Where consecutive block counts multiply to the length (nb_{i-1}·nb_i = n) they agree.
    let ws = factors(&[(4, 2, 2), (2, 4, 4), (4, 2, 2)], 9);
    let mut rev = ws.clone();
    rev.reverse();
    let hmm = MonarchChain::from_factors_hmm(ws).unwrap().to_dense();
    let reference = MonarchChain::from_factors(rev).unwrap().to_dense();
    assert!(max_diff(hmm.view(), reference.view()) < 1e-12);
    // Two square factors (nb_0·nb_1 = n): the same matrix, and the same as the core Monarch.
    let ws = factors(&[(4, 4, 4), (4, 4, 4)], 4);
    let hmm = MonarchChain::from_factors_hmm(ws.clone())
        .unwrap()
        .to_dense();
    let m = Monarch::from_factors(ws[1].clone(), ws[0].clone()).unwrap();
    assert!(max_diff(hmm.view(), m.to_dense().view()) < 1e-12);
    assert!(max_diff(hmm.view(), hmm_dense(&ws).view()) < 1e-12);
}

#[test]
fn hmm_from_monarch_hmm_weights_uses_their_layout() {
    // Row-stochastic blocks: softmax of the test factors, per row.
    let shapes = [(4, 2, 2), (2, 4, 4), (4, 2, 2)];
    let ws: Vec<Array3<f64>> = factors(&shapes, 2)
        .into_iter()
        .map(|w| {
            let mut p = w.mapv(f64::exp);
            for mut blk in p.outer_iter_mut() {
                for mut row in blk.outer_iter_mut() {
                    let s: f64 = row.sum();
                    row.mapv_inplace(|v| v / s);
                }
            }
            p
        })
        .collect();
    let pi = Array1::from_shape_fn(8, |i| (i + 1) as f64 / 36.0);
    let emit = Array2::from_shape_fn((8, 3), |(i, o)| [0.2, 0.3, 0.5][(i + o) % 3]);
    let hmm = Hmm::from_monarch_hmm(pi.clone(), ws.clone(), emit.clone()).unwrap();
    let dense = Hmm::dense(pi, hmm_dense(&ws), emit).unwrap();
    let obs = Array2::from_shape_fn((3, 6), |(s, t)| (s * 2 + t) % 3);
    let (a, b) = (
        hmm.log_likelihood(obs.view()).unwrap(),
        dense.log_likelihood(obs.view()).unwrap(),
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-10),
        "{a} vs {b}"
    );
}
