//! proptest properties of the core over random shapes. Case count: `PROPTEST_CASES` (default 24).
use crate::common;
use common::*;
use monarch::ndarray::{s, Array2, Array3};
use monarch::primitives::random::{normal_array3, normal_matrix};
use monarch::Monarch;
use proptest::prelude::*;
use rand::SeedableRng;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Factor shapes (k,q,p), (l,s,r) with k·q == l·r, built from k, l, ρ so both layouts occur.
type S3 = (usize, usize, usize);
fn shapes() -> impl Strategy<Value = (S3, S3)> {
    (1usize..5, 1usize..5, 1usize..4, 1usize..6, 1usize..6)
        .prop_map(|(k, l, rho, p, s)| ((k, rho * l, p), (l, s, k * rho)))
}

fn monarch_of(s1: (usize, usize, usize), s2: (usize, usize, usize), seed: u64) -> Monarch<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Monarch::from_factors(
        normal_array3(&mut rng, s1, 1.0),
        normal_array3(&mut rng, s2, 1.0),
    )
    .unwrap()
}

fn fro(a: &Array2<f64>) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Eigenvalues of a symmetric matrix by cyclic two-sided Jacobi rotations, sorted descending.
/// A test-local algorithm, independent of the crate's one-sided SVD.
fn sym_eigenvalues(mut g: Array2<f64>) -> Vec<f64> {
    let n = g.nrows();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| g[[i, j]] * g[[i, j]])
            .sum();
        let diag: f64 = (0..n).map(|i| g[[i, i]] * g[[i, i]]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if g[[p, q]] == 0.0 {
                    continue;
                }
                let theta = (g[[q, q]] - g[[p, p]]) / (2.0 * g[[p, q]]);
                // `signum(0.0)` is 1, the rotation by π/4 that the equal-diagonal case needs.
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * c;
                for k in 0..n {
                    let (gkp, gkq) = (g[[k, p]], g[[k, q]]);
                    g[[k, p]] = c * gkp - sn * gkq;
                    g[[k, q]] = sn * gkp + c * gkq;
                }
                for k in 0..n {
                    let (gpk, gqk) = (g[[p, k]], g[[q, k]]);
                    g[[p, k]] = c * gpk - sn * gqk;
                    g[[q, k]] = sn * gpk + c * gqk;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| g[[i, i]].max(0.0)).collect();
    ev.sort_by(|a, b| b.partial_cmp(a).unwrap());
    ev
}

/// Per-slice singular values, as square roots of the eigenvalues of each slice's Gram matrix.
fn slice_singular_values(a: &Array2<f64>, k: usize, l: usize) -> Vec<Vec<f64>> {
    let p = a.ncols() / k;
    let mut out = vec![];
    for ai in 0..k {
        for c in 0..l {
            let sl = a.slice(s![c..;l, ai * p..(ai + 1) * p]).to_owned();
            // The smaller Gram matrix, so no structurally zero eigenvalue loses half its digits
            // to the square root.
            let gram = if sl.nrows() < sl.ncols() {
                sl.dot(&sl.t())
            } else {
                sl.t().dot(&sl)
            };
            out.push(sym_eigenvalues(gram).into_iter().map(f64::sqrt).collect());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn adjoint_identity((s1, s2) in shapes(), seed in 0u64..1000) {
        let m = monarch_of(s1, s2, seed);
        let x = normal_matrix::<f64>((1, m.in_features()), 1.0, seed + 1);
        let y = normal_matrix::<f64>((1, m.out_features()), 1.0, seed + 2);
        let mx = m.matmul(x.view()).unwrap();
        let mty = m.transpose().matmul(y.view()).unwrap();
        let lhs: f64 = (&mx * &y).sum();
        let rhs: f64 = (&x * &mty).sum();
        prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
    }

    #[test]
    fn transpose_dense_is_dense_transpose((s1, s2) in shapes(), seed in 0u64..1000) {
        let m = monarch_of(s1, s2, seed);
        let a = m.transpose().to_dense();
        let b = m.to_dense().t().as_standard_layout().into_owned();
        prop_assert!(rel_max_diff(a.as_slice().unwrap(), b.as_slice().unwrap()) < 1e-12);
    }

    #[test]
    fn projecting_a_monarch_returns_it((s1, s2) in shapes(), seed in 0u64..1000) {
        let m = monarch_of(s1, s2, seed);
        let (k, l, rho) = (s1.0, s2.0, s1.1 / s2.0);
        let d = m.to_dense();
        // ρ may exceed the slice's side; then the slice is full rank anyway: use min.
        let (p, s) = (s1.2, s2.1);
        let r = rho.min(p.min(s));
        let pr = Monarch::project_with_error(d.view(), k, l, r).unwrap();
        let back = pr.monarch.to_dense();
        prop_assert!(fro(&(&back - &d)) <= 1e-9 * (1.0 + fro(&d)), "error {}", fro(&(&back - &d)));
        prop_assert!(pr.error <= 1e-9 * (1.0 + fro(&d)));
    }

    #[test]
    fn projection_is_idempotent_and_matches_slice_svd_formula(
        k in 1usize..4, l in 1usize..4, p in 1usize..6, s in 1usize..6, rho_pick in 0usize..6, seed in 0u64..1000
    ) {
        let rho = 1 + rho_pick % p.min(s);
        let a = normal_matrix::<f64>((l * s, k * p), 1.0, seed);
        let pr = Monarch::project_with_error(a.view(), k, l, rho).unwrap();
        prop_assert_eq!(pr.monarch.w1().dim(), (k, rho * l, p));
        prop_assert_eq!(pr.monarch.w2().dim(), (l, s, k * rho));
        let mhat = pr.monarch.to_dense();
        let actual = fro(&(&mhat - &a));
        // Error formula from independently computed singular values.
        let tail: f64 = slice_singular_values(&a, k, l).iter().map(|sv| sv.iter().skip(rho).map(|x| x * x).sum::<f64>()).sum();
        prop_assert!((actual - tail.sqrt()).abs() <= 1e-9 * (1.0 + actual), "actual {} formula {}", actual, tail.sqrt());
        prop_assert!((pr.error - actual).abs() <= 1e-9 * (1.0 + actual));
        // Idempotent.
        let again = Monarch::project(mhat.view(), k, l, rho).unwrap().to_dense();
        prop_assert!(fro(&(&again - &mhat)) <= 1e-9 * (1.0 + fro(&mhat)));
    }

    #[test]
    fn no_perturbation_of_projected_factors_lowers_the_error(
        k in 1usize..4, l in 1usize..4, p in 1usize..5, s in 1usize..5, seed in 0u64..1000, eps in 1e-4f64..1e-1
    ) {
        let a = normal_matrix::<f64>((l * s, k * p), 1.0, seed);
        let pr = Monarch::project_with_error(a.view(), k, l, 1).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 7);
        for _ in 0..4 {
            let d1: Array3<f64> = normal_array3(&mut rng, pr.monarch.w1().dim(), eps);
            let d2: Array3<f64> = normal_array3(&mut rng, pr.monarch.w2().dim(), eps);
            let q = Monarch::from_factors(pr.monarch.w1() + &d1, pr.monarch.w2() + &d2).unwrap();
            let e = fro(&(&q.to_dense() - &a));
            prop_assert!(e >= pr.error - 1e-10 * (1.0 + pr.error), "perturbed {} < optimal {}", e, pr.error);
        }
    }
}

#[test]
fn projection_errors_name_sizes() {
    let a = Array2::<f64>::zeros((12, 10));
    let e = Monarch::project(a.view(), 3, 4, 1).unwrap_err();
    assert!(
        e.to_string().contains("10") && e.to_string().contains('3'),
        "{e}"
    );
    let e = Monarch::project(a.view(), 5, 5, 1).unwrap_err();
    assert!(e.to_string().contains("12"), "{e}");
    // Slices are 3×2: rank 3 is too large.
    let e = Monarch::project(a.view(), 5, 4, 3).unwrap_err();
    assert!(
        matches!(
            e,
            monarch::Error::TooLarge {
                value: 3,
                max: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(Monarch::project(a.view(), 5, 4, 0).is_err());
    assert!(Monarch::project(Array2::<f64>::zeros((0, 4)).view(), 1, 1, 1).is_err());
    let mut b = Array2::<f64>::zeros((4, 4));
    b[[1, 2]] = f64::NAN;
    assert!(matches!(
        Monarch::project(b.view(), 2, 2, 1),
        Err(monarch::Error::NonFinite { .. })
    ));
    // The zero matrix projects to zero with zero relative error.
    let z = Monarch::project_with_error(Array2::<f64>::zeros((4, 4)).view(), 2, 2, 1).unwrap();
    assert_eq!(z.relative_error, 0.0);
}

#[test]
fn projection_complex_and_f32() {
    use monarch::num_complex::Complex64;
    let m = Monarch::<Complex64>::random(16, 4, 5).unwrap();
    let d = m.to_dense();
    let p = Monarch::project_with_error(d.view(), 4, 4, 1).unwrap();
    assert!(p.relative_error < 1e-12, "{}", p.relative_error);
    let m32 = Monarch::<f32>::random(64, 8, 6).unwrap();
    let p32 = Monarch::project_with_error(m32.to_dense().view(), 8, 8, 1).unwrap();
    assert!(p32.relative_error < 1e-5, "{}", p32.relative_error);
    // The DFT is a Monarch: projecting its dense matrix (stride-permuted input) is exact.
    let f = Monarch::<Complex64>::dft(64).unwrap();
    let pf = Monarch::project_with_error(f.to_dense().view(), 8, 8, 1).unwrap();
    assert!(pf.relative_error < 1e-12);
}
