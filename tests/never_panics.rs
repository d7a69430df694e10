//! "Never panics": every public entry point of the core, fed arbitrary shapes (zero sizes
//! included), block counts, permutations and NaN/Inf values, returns `Ok` or an `Error`.
//! A panic becomes a test failure that prints the inputs. `PROPTEST_CASES` sets the case count.

use monarch::checkpoint::StateDict;
use monarch::ndarray::{Array1, Array2, Array3};
use monarch::num_complex::Complex64;
use monarch::{BlockDiag, Monarch, MonarchLinear, Par, Perm};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// Runs `f`; a panic fails the test with `what` (the inputs) in the message.
fn no_panic<R>(what: impl std::fmt::Debug, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("panic `{msg}` on inputs {what:?}")
        }
    }
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -3.0..3.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
    ]
}

fn dims3(max: usize) -> impl Strategy<Value = (usize, usize, usize)> {
    (0..=max, 0..=max, 0..=max)
}

fn array3(d: (usize, usize, usize)) -> impl Strategy<Value = Array3<f64>> {
    proptest::collection::vec(value(), d.0 * d.1 * d.2)
        .prop_map(move |v| Array3::from_shape_vec(d, v).unwrap())
}

fn array2(d: (usize, usize)) -> impl Strategy<Value = Array2<f64>> {
    proptest::collection::vec(value(), d.0 * d.1)
        .prop_map(move |v| Array2::from_shape_vec(d, v).unwrap())
}

fn any_array2(max: usize) -> impl Strategy<Value = Array2<f64>> {
    (0..=max, 0..=max).prop_flat_map(array2)
}

fn any_array3(max: usize) -> impl Strategy<Value = Array3<f64>> {
    dims3(max).prop_flat_map(array3)
}

/// Exercises every method of a Monarch that was built successfully, with inputs of arbitrary
/// (mostly wrong) shapes; shapes that fit must give Ok.
fn exercise(m: &Monarch<f64>, x: &Array2<f64>, g: &Array2<f64>) {
    let (n, o) = (m.in_features(), m.out_features());
    let r = m.matmul(x.view());
    assert_eq!(r.is_ok(), x.ncols() == n);
    let mut out = Array2::zeros((x.nrows(), g.ncols()));
    let r = m.matmul_into(x.view(), out.view_mut(), Par::Rayon);
    assert_eq!(r.is_ok(), x.ncols() == n && g.ncols() == o);
    let r = m.vjp(x.view(), g.view());
    assert_eq!(r.is_ok(), x.ncols() == n && g.dim() == (x.nrows(), o));
    // A kept intermediate of the right width for one row count only (the input's, or one
    // more): wrong shapes anywhere must be errors, never panics.
    let h = m.hidden_features();
    for mid_rows in [x.nrows(), x.nrows() + 1] {
        let mut mid = Array2::zeros((mid_rows, h));
        let fits = x.ncols() == n && mid_rows == x.nrows();
        let r = m.matmul_keep_into(x.view(), out.view_mut(), mid.view_mut(), Par::Rayon);
        assert_eq!(r.is_ok(), fits && g.ncols() == o);
        let mut grads = monarch::MonarchGrad::zeros(m, x.nrows());
        let r = m.vjp_kept_into(x.view(), mid.view(), g.view(), &mut grads);
        assert_eq!(r.is_ok(), fits && g.dim() == (x.nrows(), o));
    }
    if x.nrows() > 0 {
        let _ = m.matvec(x.row(0));
    }
    let _ = m.transpose().matmul(g.view());
    let _ = m.adjoint();
    if n * o <= 4096 {
        let _ = m.to_dense();
    }
    let _ = (m.num_params(), m.flops(x.nrows()), m.perms());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn from_factors_and_products(
        w1 in any_array3(4), w2 in any_array3(4), x in any_array2(12), g in any_array2(12),
    ) {
        let what = (w1.dim(), w2.dim(), x.dim(), g.dim());
        no_panic(what, || {
            if let Ok(m) = Monarch::from_factors(w1.clone(), w2.clone()) {
                exercise(&m, &x, &g);
            }
        });
    }

    #[test]
    fn monarch_shaped_inputs(
        (w1, w2) in (1usize..4, 1usize..4, 1usize..4, 1usize..4, 1usize..4).prop_flat_map(|(k, q, p, l, s)| {
            // Force k·q == l·r where possible so the product paths run on NaN/Inf data.
            let r = (k * q).div_ceil(l);
            (array3((k, q, p)), array3((l, s, r)))
        }),
        batch in 0usize..5,
        seed in any::<u64>(),
    ) {
        no_panic((w1.dim(), w2.dim(), batch), || {
            if let Ok(m) = Monarch::from_factors(w1.clone(), w2.clone()) {
                let x = monarch::primitives::random::normal_matrix::<f64>((batch, m.in_features()), 1.0, seed);
                let g = monarch::primitives::random::normal_matrix::<f64>((batch, m.out_features()), 1.0, seed ^ 1);
                exercise(&m, &x, &g);
                let mut xn = x.clone();
                if let Some(v) = xn.iter_mut().next() { *v = f64::NAN; }
                exercise(&m, &xn, &g);
            }
        });
    }

    #[test]
    fn from_parts_arbitrary(
        lens in (0usize..10, 0usize..10, 0usize..10),
        w1 in any_array3(3), w2 in any_array3(3), seed in any::<u64>(), x in any_array2(10),
    ) {
        no_panic((lens, w1.dim(), w2.dim(), x.dim()), || {
            let (b1, b2) = match (BlockDiag::new(w1.clone()), BlockDiag::new(w2.clone())) {
                (Ok(a), Ok(b)) => (a, b),
                _ => return,
            };
            let perms = [Perm::random(lens.0, seed), Perm::random(lens.1, seed + 1), Perm::random(lens.2, seed + 2)];
            if let Ok(m) = Monarch::from_parts(perms[0].clone(), b1.clone(), perms[1].clone(), b2.clone(), perms[2].clone()) {
                exercise(&m, &x, &x);
            }
            // The exact lengths always chain.
            let m = Monarch::from_parts(
                Perm::random(b1.in_features(), seed), b1.clone(),
                Perm::random(b1.out_features(), seed), b2.clone(),
                Perm::random(b2.out_features(), seed),
            );
            assert_eq!(m.is_ok(), b1.out_features() == b2.in_features());
        });
    }

    #[test]
    fn constructors_random_identity(n in 0usize..70, nb in 0usize..12, seed in any::<u64>()) {
        no_panic((n, nb), || {
            let r = Monarch::<f64>::random(n, nb, seed);
            assert_eq!(r.is_ok(), n > 0 && nb > 0 && n % nb == 0);
            let i = Monarch::<f32>::identity(n, nb);
            assert_eq!(i.is_ok(), r.is_ok());
            let _ = Monarch::<f64>::random_factors((n % 5, nb % 5, 2), (nb % 5, 3, n % 5), seed);
            let _ = BlockDiag::<f64>::identity(nb, n % 7);
        });
    }

    #[test]
    fn projection(a in any_array2(12), k in 0usize..7, l in 0usize..7, rank in 0usize..7) {
        no_panic((a.dim(), k, l, rank), || {
            let r = Monarch::project_with_error(a.view(), k, l, rank);
            if a.iter().any(|v| !v.is_finite()) {
                assert!(r.is_err());
            }
            let _ = Monarch::project(a.view(), k, l, rank);
        });
    }

    #[test]
    fn dft_constructors(n in 0usize..80, k in 0usize..10, p in 0usize..10, inv in any::<bool>()) {
        no_panic((n, k, p, inv), || {
            let _ = Monarch::<Complex64>::dft(n);
            let _ = Monarch::<Complex64>::dft_natural(n);
            let _ = Monarch::<Complex64>::dft_factored(k, p, inv);
            let _ = Monarch::<Complex64>::dft_natural_factored(n, k, inv);
            let _ = Monarch::<Complex64>::dft_input_perm(k, p);
        });
    }

    #[test]
    fn blockdiag_ops(w in any_array3(4), x in any_array2(12), g in any_array2(12)) {
        no_panic((w.dim(), x.dim(), g.dim()), || {
            if let Ok(b) = BlockDiag::new(w.clone()) {
                assert_eq!(b.matmul(x.view()).is_ok(), x.ncols() == b.in_features());
                let mut y = Array2::zeros(g.dim());
                let _ = b.matmul_into(x.view(), y.view_mut(), Par::Seq);
                let _ = b.vjp(x.view(), g.view());
                let _ = (b.transpose(), b.adjoint(), b.to_dense());
            }
        });
    }

    #[test]
    fn perms(idx in proptest::collection::vec(prop_oneof![0usize..12, Just(usize::MAX)], 0..12),
             a in 0usize..10, b in 0usize..10, seed in any::<u64>(), x in any_array2(10)) {
        no_panic((&idx, a, b), || {
            if let Ok(p) = Perm::from_index(idx.clone()) {
                let _ = p.inverse();
                let _ = p.apply_rows(x.view());
                let mut y = x.clone();
                let _ = p.apply_rows_into(x.view(), y.view_mut());
            }
            let (pa, pb) = (Perm::random(a, seed), Perm::stride(a, b).unwrap());
            assert_eq!(pa.try_compose(&pb).is_ok(), a == a * b);
        });
    }

    #[test]
    fn monarch_linear(inf in 0usize..40, outf in 0usize..40, nb in 0usize..10, bias in any::<bool>(),
                      seed in any::<u64>(), batch in 0usize..4, bad in value()) {
        no_panic((inf, outf, nb, bias, batch), || {
            let r = MonarchLinear::<f64>::new(inf, outf, nb, bias, seed);
            assert_eq!(r.is_ok(), inf > 0 && outf > 0 && nb > 0);
            if let Ok(l) = r {
                let mut x = monarch::primitives::random::normal_matrix::<f64>((batch, inf), 1.0, seed);
                if let Some(v) = x.iter_mut().next() { *v = bad; }
                let g = Array2::from_elem((batch, outf), bad);
                assert!(l.forward(x.view()).is_ok());
                assert!(l.vjp(x.view(), g.view()).is_ok());
                let xw = Array2::<f64>::zeros((batch, inf + 1));
                assert!(l.forward(xw.view()).is_err());
                let gw = Array2::<f64>::zeros((batch, outf + 1));
                assert!(l.vjp(x.view(), gw.view()).is_err());
            }
        });
    }

    #[test]
    fn monarch_linear_from_weights(inf in 0usize..20, outf in 0usize..20, w1 in any_array3(4), w2 in any_array3(6),
                                   blen in proptest::option::of(0usize..25)) {
        no_panic((inf, outf, w1.dim(), w2.dim(), blen), || {
            let b = blen.map(Array1::<f64>::zeros);
            if let Ok(l) = MonarchLinear::from_weights(inf, outf, w1.clone(), w2.clone(), b) {
                let _ = l.forward(Array2::zeros((2, inf)).view());
            }
        });
    }

    #[test]
    fn checkpoint_loaders(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                          header in "\\{(\"[a-z.]{0,6}\":\\{\"dtype\":\"(F32|F16|BF16|F64|I8)\",\"shape\":\\[[0-9]{0,3}(,[0-9]{1,2}){0,2}\\],\"data_offsets\":\\[[0-9]{1,3},[0-9]{1,3}\\]\\},?){0,3}\\}",
                          inf in 0usize..10, outf in 0usize..10) {
        no_panic((&bytes, &header), || {
            let _ = StateDict::<f32>::from_bytes(&bytes);
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend_from_slice(header.as_bytes());
            file.extend_from_slice(&bytes);
            if let Ok(sd) = StateDict::<f64>::from_bytes(&file) {
                let _ = MonarchLinear::from_state_dict(&sd, "", inf, outf, true);
                let _ = Monarch::from_state_dict(&sd, "");
                for name in sd.names() {
                    let _ = sd.array3_any(name);
                    let _ = sd.array1(name, inf);
                }
            }
        });
    }
}

/// Sizes whose element counts overflow must be errors, not arithmetic-overflow or ndarray panics.
/// (Sizes that fit in memory arithmetic but not in RAM are allocation failures, which abort.)
#[test]
fn overflowing_sizes_are_errors() {
    let big = usize::MAX;
    type Case = (&'static str, Box<dyn Fn() -> bool>);
    let cases: Vec<Case> = vec![
        (
            "random(MAX, 1)",
            Box::new(move || Monarch::<f64>::random(big, 1, 0).is_err()),
        ),
        // Found by the monarch_constructors fuzz target (fuzz/regressions/): shape (MAX, 1, 1).
        (
            "random(MAX, MAX)",
            Box::new(move || Monarch::<f64>::random(big, big, 0).is_err()),
        ),
        (
            "random(2^40, 1)",
            Box::new(|| Monarch::<f64>::random(1 << 40, 1, 0).is_err()),
        ),
        (
            "identity(MAX, 1)",
            Box::new(move || Monarch::<f64>::identity(big, 1).is_err()),
        ),
        (
            "identity(2^40, 1)",
            Box::new(|| Monarch::<f32>::identity(1 << 40, 1).is_err()),
        ),
        (
            "random_factors huge",
            Box::new(move || Monarch::<f64>::random_factors((big, 2, 2), (2, 2, big), 0).is_err()),
        ),
        (
            "BlockDiag::identity(MAX, 2)",
            Box::new(move || BlockDiag::<f64>::identity(big, 2).is_err()),
        ),
        (
            "BlockDiag::identity(2, 2^40)",
            Box::new(|| BlockDiag::<f64>::identity(2, 1 << 40).is_err()),
        ),
        (
            "MonarchLinear::new(MAX, 1, 2)",
            Box::new(move || MonarchLinear::<f64>::new(big, 1, 2, true, 0).is_err()),
        ),
        (
            "MonarchLinear::new(2^40, 2^40, 1)",
            Box::new(|| MonarchLinear::<f64>::new(1 << 40, 1 << 40, 1, true, 0).is_err()),
        ),
        (
            "dft(MAX)",
            Box::new(move || Monarch::<Complex64>::dft(big).is_err()),
        ),
        (
            "dft(2^64 - 2^33 + 1)",
            Box::new(|| Monarch::<Complex64>::dft(usize::MAX - (1 << 33) + 2).is_err()),
        ),
        (
            "dft_factored(2^40, 2^40)",
            Box::new(|| Monarch::<Complex64>::dft_factored(1 << 40, 1 << 40, false).is_err()),
        ),
        (
            "dft_natural_factored(MAX, 1)",
            Box::new(move || Monarch::<Complex64>::dft_natural_factored(big, 1, false).is_err()),
        ),
        (
            "dft_input_perm(2^40, 2^40)",
            Box::new(|| Monarch::<Complex64>::dft_input_perm(1 << 40, 1 << 40).is_err()),
        ),
    ];
    for (name, f) in cases {
        assert!(no_panic(name, f), "{name} returned Ok");
    }
}
