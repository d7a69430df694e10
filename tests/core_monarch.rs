//! The core `Monarch` type against naive dense references (shapes square, rectangular, k ≠ l),
//! f32 and f64, real and complex; transpose, adjoint, VJP by finite differences; DFT.
use crate::common;
use common::*;
use monarch::ndarray::{Array1, Array2, Array3, Axis};
use monarch::num_complex::{Complex32, Complex64};
use monarch::primitives::random::{normal_array3, normal_matrix};
use monarch::{BlockDiag, Error, Monarch, Par, Perm, Scalar};
use rand::SeedableRng;

/// (k, q, p), (l, s, r) with k·q == l·r: square, rectangular, k ≠ l, q ≠ p, s ≠ r.
type S3 = (usize, usize, usize);
const SHAPES: &[(S3, S3)] = &[
    ((4, 4, 4), (4, 4, 4)),
    ((1, 5, 3), (1, 2, 5)),
    ((2, 3, 5), (3, 4, 2)),
    ((4, 16, 16), (4, 32, 16)),
    ((3, 4, 2), (2, 7, 6)),
    ((6, 2, 3), (4, 5, 3)),
    ((8, 8, 8), (8, 8, 8)),
    ((2, 6, 1), (12, 1, 1)),
];

fn factors<T: Scalar>(
    s1: (usize, usize, usize),
    s2: (usize, usize, usize),
    seed: u64,
) -> (Array3<T>, Array3<T>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (
        normal_array3(&mut rng, s1, 1.0),
        normal_array3(&mut rng, s2, 1.0),
    )
}

fn check_matmul<T: Scalar>(tol: f64) {
    for (i, &(s1, s2)) in SHAPES.iter().enumerate() {
        let (w1, w2) = factors::<T>(s1, s2, i as u64);
        let dense = naive_dense(&w1, &w2);
        let m = Monarch::from_factors(w1, w2).unwrap();
        assert_eq!(m.in_features(), s1.0 * s1.2);
        assert_eq!(m.out_features(), s2.0 * s2.1);
        assert_eq!(m.num_params(), s1.0 * s1.1 * s1.2 + s2.0 * s2.1 * s2.2);
        assert_close(
            m.to_dense().as_slice().unwrap(),
            dense.as_slice().unwrap(),
            tol,
            "to_dense",
        );
        for batch in [1usize, 3, 17] {
            let x = normal_matrix::<T>((batch, m.in_features()), 1.0, 100 + batch as u64);
            let y = m.matmul(x.view()).unwrap();
            let yref = naive_rows_times_t(&x, &dense);
            assert_close(
                y.as_slice().unwrap(),
                yref.as_slice().unwrap(),
                tol,
                "matmul",
            );
            // Non-contiguous input: a transposed view of the transposed data.
            let xt = x.t().to_owned();
            let y2 = m.matmul(xt.t()).unwrap();
            assert_eq!(y, y2, "strided input must give identical results");
            let mut out = Array2::from_elem((batch, m.out_features()), T::from_f64(7.0));
            m.matmul_into(x.view(), out.view_mut(), Par::Seq).unwrap();
            assert_eq!(out, y, "matmul_into(Seq) == matmul");
        }
        let v = normal_matrix::<T>((1, m.in_features()), 1.0, 5).index_axis_move(Axis(0), 0);
        let mv = m.matvec(v.view()).unwrap();
        let mvref: Array1<T> = (0..m.out_features())
            .map(|r| (0..m.in_features()).map(|c| dense[[r, c]] * v[c]).sum())
            .collect();
        assert_close(
            mv.as_slice().unwrap(),
            mvref.as_slice().unwrap(),
            tol,
            "matvec",
        );
    }
}

#[test]
fn matmul_matches_naive_dense_f64() {
    check_matmul::<f64>(1e-12);
}
#[test]
fn matmul_matches_naive_dense_f32() {
    check_matmul::<f32>(2e-5);
}
#[test]
fn matmul_matches_naive_dense_complex() {
    check_matmul::<Complex64>(1e-12);
    check_matmul::<Complex32>(2e-5);
}

fn check_transpose<T: Scalar>(tol: f64) {
    for (i, &(s1, s2)) in SHAPES.iter().enumerate() {
        let (w1, w2) = factors::<T>(s1, s2, 10 + i as u64);
        let m = Monarch::from_factors(w1, w2).unwrap();
        let d = m.to_dense();
        let t = m.transpose();
        assert_eq!(
            (t.in_features(), t.out_features()),
            (m.out_features(), m.in_features())
        );
        assert_eq!(t.num_params(), m.num_params());
        let dt = d.t().to_owned();
        assert_close(
            t.to_dense().as_slice().unwrap(),
            dt.as_standard_layout().as_slice().unwrap(),
            tol,
            "transpose",
        );
        let a = m.adjoint();
        let dh = d.t().mapv(|v| v.conj_val());
        assert_close(
            a.to_dense().as_slice().unwrap(),
            dh.as_standard_layout().as_slice().unwrap(),
            tol,
            "adjoint",
        );
        // The transpose of the transpose is the original matrix.
        assert_close(
            t.transpose().to_dense().as_slice().unwrap(),
            d.as_slice().unwrap(),
            tol,
            "double transpose",
        );
    }
}

#[test]
fn transpose_and_adjoint_are_exact() {
    check_transpose::<f64>(1e-12);
    check_transpose::<f32>(2e-5);
    check_transpose::<Complex64>(1e-12);
}

/// Finite differences of `f(θ) = sum(M(θ) x ⊙ g)` in each parameter and input entry.
#[test]
fn vjp_matches_finite_differences() {
    for (i, &(s1, s2)) in SHAPES.iter().enumerate() {
        let (w1, w2) = factors::<f64>(s1, s2, 20 + i as u64);
        let m = Monarch::from_factors(w1.clone(), w2.clone()).unwrap();
        let batch = 3;
        let x = normal_matrix::<f64>((batch, m.in_features()), 1.0, 1);
        let g = normal_matrix::<f64>((batch, m.out_features()), 1.0, 2);
        let grad = m.vjp(x.view(), g.view()).unwrap();
        let f = |w1: &Array3<f64>, w2: &Array3<f64>, x: &Array2<f64>| -> f64 {
            let mm = Monarch::from_factors(w1.clone(), w2.clone()).unwrap();
            (&mm.matmul(x.view()).unwrap() * &g).sum()
        };
        let h = 1e-6;
        let fd = |plus: f64, minus: f64| (plus - minus) / (2.0 * h);
        for idx in 0..w1.len() {
            let (mut a, mut b) = (w1.clone(), w1.clone());
            a.as_slice_mut().unwrap()[idx] += h;
            b.as_slice_mut().unwrap()[idx] -= h;
            let num = fd(f(&a, &w2, &x), f(&b, &w2, &x));
            let got = grad.w1.as_slice().unwrap()[idx];
            assert!(
                (num - got).abs() < 1e-6 * (1.0 + num.abs()),
                "w1[{idx}] shape {i}: fd {num} vs {got}"
            );
        }
        for idx in 0..w2.len() {
            let (mut a, mut b) = (w2.clone(), w2.clone());
            a.as_slice_mut().unwrap()[idx] += h;
            b.as_slice_mut().unwrap()[idx] -= h;
            let num = fd(f(&w1, &a, &x), f(&w1, &b, &x));
            let got = grad.w2.as_slice().unwrap()[idx];
            assert!(
                (num - got).abs() < 1e-6 * (1.0 + num.abs()),
                "w2[{idx}] shape {i}: fd {num} vs {got}"
            );
        }
        for idx in 0..x.len() {
            let (mut a, mut b) = (x.clone(), x.clone());
            a.as_slice_mut().unwrap()[idx] += h;
            b.as_slice_mut().unwrap()[idx] -= h;
            let num = fd(f(&w1, &w2, &a), f(&w1, &w2, &b));
            let got = grad.x.as_slice().unwrap()[idx];
            assert!(
                (num - got).abs() < 1e-6 * (1.0 + num.abs()),
                "x[{idx}] shape {i}: fd {num} vs {got}"
            );
        }
    }
}

/// The weight gradients equal the dense gradient `gᵀ x` restricted to the structure:
/// `⟨grad_w, δw⟩ = ⟨gᵀx, dense(δw)-induced change⟩` is checked through directional derivatives.
#[test]
fn vjp_complex_is_bilinear_derivative() {
    let (w1, w2) = factors::<Complex64>((3, 4, 2), (2, 7, 6), 3);
    let m = Monarch::from_factors(w1.clone(), w2.clone()).unwrap();
    let x = normal_matrix::<Complex64>((2, m.in_features()), 1.0, 4);
    let g = normal_matrix::<Complex64>((2, m.out_features()), 1.0, 5);
    let grad = m.vjp(x.view(), g.view()).unwrap();
    // Directional derivative along a random complex direction d of the holomorphic map
    // w1 ↦ sum(M(w1) x ⊙ g) equals Σ grad_w1 ⊙ d.
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let d: Array3<Complex64> = normal_array3(&mut rng, w1.dim(), 1.0);
    let h = 1e-6;
    let f = |w: &Array3<Complex64>| {
        (&Monarch::from_factors(w.clone(), w2.clone())
            .unwrap()
            .matmul(x.view())
            .unwrap()
            * &g)
            .sum()
    };
    let num = (f(&(&w1 + &(&d * Complex64::new(h, 0.0))))
        - f(&(&w1 - &(&d * Complex64::new(h, 0.0)))))
        / Complex64::new(2.0 * h, 0.0);
    let got: Complex64 = (&grad.w1 * &d).sum();
    assert!(
        (num - got).norm() < 1e-6 * (1.0 + num.norm()),
        "{num} vs {got}"
    );
    // grad_x = g · M (plain transpose, no conjugation).
    let gx_ref = g.dot(&m.to_dense());
    assert_close(
        grad.x.as_slice().unwrap(),
        gx_ref.as_slice().unwrap(),
        1e-12,
        "complex grad_x",
    );
}

#[test]
fn identity_and_random_constructors() {
    for (n, b) in [(16, 4), (12, 3), (12, 4), (7, 7), (5, 1)] {
        let id = Monarch::<f64>::identity(n, b).unwrap();
        let d = id.to_dense();
        assert_eq!(d, Array2::<f64>::eye(n), "identity({n}, {b})");
        let r1 = Monarch::<f32>::random(n, b, 42).unwrap();
        let r2 = Monarch::<f32>::random(n, b, 42).unwrap();
        let r3 = Monarch::<f32>::random(n, b, 43).unwrap();
        assert_eq!(r1, r2);
        assert_ne!(r1, r3);
    }
    assert!(matches!(
        Monarch::<f64>::identity(10, 3),
        Err(Error::NotDivisible {
            size: 10,
            divisor: 3,
            ..
        })
    ));
    assert!(matches!(
        Monarch::<f64>::random(0, 1, 0),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        Monarch::<f64>::random(8, 0, 0),
        Err(Error::ZeroSize { .. })
    ));
}

#[test]
fn bad_input_returns_errors() {
    let e = Monarch::<f64>::from_factors(Array3::zeros((2, 3, 4)), Array3::zeros((2, 5, 2)))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("(2,3,4)") && msg.contains("(2,5,2)"), "{msg}");
    assert!(matches!(
        Monarch::<f64>::from_factors(Array3::zeros((0, 3, 4)), Array3::zeros((2, 5, 2))),
        Err(Error::ZeroSize { .. })
    ));
    let m = Monarch::<f64>::random(16, 4, 0).unwrap();
    let e = m.matmul(Array2::zeros((2, 15)).view()).unwrap_err();
    assert!(
        e.to_string().contains("16") && e.to_string().contains("15"),
        "{e}"
    );
    assert!(m
        .matmul_into(
            Array2::zeros((2, 16)).view(),
            Array2::zeros((3, 16)).view_mut(),
            Par::Seq
        )
        .is_err());
    assert!(m
        .vjp(Array2::zeros((2, 16)).view(), Array2::zeros((2, 15)).view())
        .is_err());
    assert!(m.matvec(Array1::zeros(3).view()).is_err());
    // Zero batch is fine: an empty result.
    assert_eq!(
        m.matmul(Array2::zeros((0, 16)).view()).unwrap().dim(),
        (0, 16)
    );
    assert!(Perm::from_index(vec![0, 0, 1]).is_err());
    assert!(Perm::from_index(vec![0, 3, 1]).is_err());
    assert!(Perm::identity(3).try_compose(&Perm::identity(4)).is_err());
    assert!(BlockDiag::<f64>::new(Array3::zeros((2, 0, 3))).is_err());
    let bd = BlockDiag::new(Array3::<f64>::ones((2, 3, 4))).unwrap();
    assert!(bd.matmul(Array2::zeros((1, 7)).view()).is_err());
    let p1 = Perm::identity(8);
    assert!(Monarch::from_parts(
        p1,
        bd.clone(),
        Perm::identity(6),
        bd.clone(),
        Perm::identity(6)
    )
    .is_err());
}

#[test]
fn perm_stride_inverse_and_composition() {
    for (r, c) in [(2, 3), (4, 4), (1, 5), (5, 1), (3, 7)] {
        let p = Perm::stride(r, c).unwrap();
        let x: Vec<usize> = (0..r * c).collect();
        let y = p.apply(&x);
        for i in 0..r {
            for j in 0..c {
                assert_eq!(y[j * r + i], x[i * c + j]);
            }
        }
        assert_eq!(p.inverse(), Perm::stride(c, r).unwrap());
        assert!(p.compose(&p.inverse()).is_identity());
        assert!(p.inverse().compose(&p).is_identity());
        // The matrix of the inverse is the transpose.
        let d: Array2<f64> = p.to_dense();
        assert_eq!(p.inverse().to_dense::<f64>(), d.t().to_owned());
    }
    let a = Perm::random(10, 1);
    let b = Perm::random(10, 2);
    let x: Vec<u32> = (0..10).map(|v| v * 3 + 1).collect();
    assert_eq!(a.compose(&b).apply(&x), a.apply(&b.apply(&x)));
}

#[test]
fn blockdiag_matches_dense_and_vjp() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let w: Array3<f64> = normal_array3(&mut rng, (3, 4, 5), 1.0);
    let bd = BlockDiag::new(w).unwrap();
    let d = bd.to_dense();
    let x = normal_matrix::<f64>((6, 15), 1.0, 2);
    let y = bd.matmul(x.view()).unwrap();
    assert_close(
        y.as_slice().unwrap(),
        naive_rows_times_t(&x, &d).as_slice().unwrap(),
        1e-12,
        "bd matmul",
    );
    let g = normal_matrix::<f64>((6, 12), 1.0, 3);
    let gr = bd.vjp(x.view(), g.view()).unwrap();
    assert_close(
        gr.x.as_slice().unwrap(),
        g.dot(&d).as_slice().unwrap(),
        1e-12,
        "bd grad x",
    );
    // Dense gradient gᵀx restricted to the blocks.
    let full = g.t().dot(&x);
    for a in 0..3 {
        for i in 0..4 {
            for j in 0..5 {
                assert!((gr.w[[a, i, j]] - full[[a * 4 + i, a * 5 + j]]).abs() < 1e-12);
            }
        }
    }
}

/// Naive O(n²) DFT, orthonormal.
fn naive_dft(x: &[Complex64], inverse: bool) -> Vec<Complex64> {
    let n = x.len();
    let sign = if inverse { 1.0 } else { -1.0 };
    (0..n)
        .map(|u| {
            x.iter()
                .enumerate()
                .map(|(t, &v)| {
                    v * Complex64::from_polar(
                        1.0,
                        sign * 2.0 * std::f64::consts::PI * (u * t) as f64 / n as f64,
                    )
                })
                .sum::<Complex64>()
                / (n as f64).sqrt()
        })
        .collect()
}

#[test]
fn dft_monarch_matches_naive_dft() {
    for n in [1usize, 4, 16, 64, 256] {
        let f = Monarch::<Complex64>::dft(n).unwrap();
        let x = normal_matrix::<Complex64>((1, n), 1.0, n as u64);
        let xs = x.row(0).to_vec();
        let b = (n as f64).sqrt() as usize;
        // perm[i·b + j] = j·b + i (`monarch::guide::conventions`, "The DFT as a Monarch").
        let perm: Vec<usize> = (0..n).map(|idx| (idx % b) * b + idx / b).collect();
        let xp: Vec<Complex64> = perm.iter().map(|&i| xs[i]).collect();
        let y = f.matvec(Array1::from(xp).view()).unwrap();
        assert_close(y.as_slice().unwrap(), &naive_dft(&xs, false), 1e-12, "dft");
        assert_eq!(
            Monarch::<Complex64>::dft_input_perm(b, b).unwrap().index(),
            &perm[..]
        );
        let fnat = Monarch::<Complex64>::dft_natural(n).unwrap();
        let y2 = fnat.matvec(x.row(0)).unwrap();
        assert_close(
            y2.as_slice().unwrap(),
            &naive_dft(&xs, false),
            1e-12,
            "dft_natural",
        );
        // Inverse through the adjoint.
        let back = fnat.adjoint().matvec(y2.view()).unwrap();
        assert_close(back.as_slice().unwrap(), &xs, 1e-12, "adjoint inverts");
    }
    for (n, k) in [(12usize, 3usize), (12, 4), (10, 5), (8, 2), (7, 7), (7, 1)] {
        for inverse in [false, true] {
            let f = Monarch::<Complex64>::dft_natural_factored(n, k, inverse).unwrap();
            let x = normal_matrix::<Complex64>((1, n), 1.0, 99);
            let y = f.matvec(x.row(0)).unwrap();
            assert_close(
                y.as_slice().unwrap(),
                &naive_dft(x.row(0).as_slice().unwrap(), inverse),
                1e-12,
                "factored dft",
            );
        }
    }
    assert!(Monarch::<Complex64>::dft(12).is_err());
    assert!(Monarch::<Complex64>::dft(0).is_err());
    assert!(Monarch::<Complex64>::dft_natural_factored(12, 5, false).is_err());
}

#[test]
fn thread_count_does_not_change_results() {
    let m = Monarch::<f32>::random(256, 16, 3).unwrap();
    let x = normal_matrix::<f32>((300, 256), 1.0, 4);
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let pool3 = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let a = pool1.install(|| m.matmul(x.view()).unwrap());
    let b = pool3.install(|| m.matmul(x.view()).unwrap());
    assert_eq!(a, b);
    let g = normal_matrix::<f32>((300, 256), 1.0, 5);
    let ga = pool1.install(|| m.vjp(x.view(), g.view()).unwrap());
    let gb = pool3.install(|| m.vjp(x.view(), g.view()).unwrap());
    assert_eq!(ga, gb);
}

/// `vjp_into` writes the same gradients as `vjp`, for every layout of the Monarch (reference,
/// transposed, general permutations) and of the caller's `grads.x`, reusing its buffers; and
/// it rejects a wrongly shaped `grads.x`.
#[test]
fn vjp_into_matches_vjp_and_reuses_buffers() {
    use monarch::ndarray::ShapeBuilder;
    use monarch::MonarchGrad;
    for (i, &(s1, s2)) in SHAPES.iter().enumerate() {
        let (w1, w2) = factors::<f64>(s1, s2, 40 + i as u64);
        let m = Monarch::from_factors(w1, w2).unwrap();
        for mm in [m.clone(), m.transpose()] {
            for batch in [0usize, 1, 5, 37] {
                let x = normal_matrix::<f64>((batch, mm.in_features()), 1.0, 3 + batch as u64);
                let g = normal_matrix::<f64>((batch, mm.out_features()), 1.0, 4);
                let want = mm.vjp(x.view(), g.view()).unwrap();
                let mut grads = MonarchGrad::zeros(&mm, batch);
                // Twice: the second call must overwrite, not accumulate.
                mm.vjp_into(x.view(), g.view(), &mut grads).unwrap();
                mm.vjp_into(x.view(), g.view(), &mut grads).unwrap();
                assert_eq!(grads, want, "shape {i}, batch {batch}");
                // A column-major gradient buffer.
                let mut fgrads = MonarchGrad::zeros(&mm, batch);
                fgrads.x = Array2::zeros((batch, mm.in_features()).f());
                mm.vjp_into(x.view(), g.view(), &mut fgrads).unwrap();
                assert_eq!(fgrads.x, want.x);
                assert_eq!(fgrads.w1, want.w1);
            }
        }
        let mut bad = MonarchGrad::zeros(&m, 3);
        bad.x = Array2::zeros((3, m.in_features() + 1));
        let x = Array2::<f64>::zeros((3, m.in_features()));
        let g = Array2::<f64>::zeros((3, m.out_features()));
        assert!(matches!(
            m.vjp_into(x.view(), g.view(), &mut bad),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

/// `matmul_keep_into` returns the output of `matmul` and keeps the first factor's output
/// `BD(w1) · P_in x` (checked against a naive gather and block loop); `vjp_kept_into`
/// from it gives the gradients of `vjp`, for the reference layout, its transpose and general
/// permutations, with row-major and column-major buffers; wrong `mid` shapes are errors.
#[test]
fn kept_intermediate_forward_and_vjp() {
    use crate::circuit_ref::blockdiag_matrix;
    use monarch::ndarray::ShapeBuilder;
    use monarch::MonarchGrad;
    for (i, &(s1, s2)) in SHAPES.iter().enumerate() {
        let (w1, w2) = factors::<f64>(s1, s2, 60 + i as u64);
        let m = Monarch::from_factors(w1.clone(), w2.clone()).unwrap();
        let (n, h, mo) = (m.in_features(), m.hidden_features(), m.out_features());
        assert_eq!(h, s1.0 * s1.1);
        let seed = 70 + 3 * i as u64;
        let general = Monarch::from_parts(
            Perm::random(n, seed),
            BlockDiag::new(w1).unwrap(),
            Perm::random(h, seed + 1),
            BlockDiag::new(w2).unwrap(),
            Perm::random(mo, seed + 2),
        )
        .unwrap();
        for (li, mm) in [m.clone(), m.transpose(), general].into_iter().enumerate() {
            let (n, h, mo) = (mm.in_features(), mm.hidden_features(), mm.out_features());
            let bd = blockdiag_matrix(mm.w1());
            let p_in = mm.perms().0;
            for batch in [0usize, 1, 5, 37, 130] {
                let what = format!("shape {i}, layout {li}, batch {batch}");
                let x = normal_matrix::<f64>((batch, n), 1.0, 5 + batch as u64);
                let g = normal_matrix::<f64>((batch, mo), 1.0, 6 + batch as u64);
                let mut y = Array2::zeros((batch, mo));
                let mut mid = Array2::zeros((batch, h));
                mm.matmul_keep_into(x.view(), y.view_mut(), mid.view_mut(), Par::Rayon)
                    .unwrap();
                assert_eq!(y, mm.matmul(x.view()).unwrap(), "{what}: output");
                let mut want = Array2::<f64>::zeros((batch, h));
                for b in 0..batch {
                    let xin: Vec<f64> = p_in.index().iter().map(|&j| x[[b, j]]).collect();
                    for r in 0..h {
                        want[[b, r]] = (0..n).map(|c| bd[[r, c]] * xin[c]).sum();
                    }
                }
                let (got, want) = (mid.as_slice().unwrap(), want.as_slice().unwrap());
                assert_close(got, want, 1e-13, &format!("{what}: mid"));
                // A column-major `mid`, one thread.
                let mut fmid = Array2::zeros((batch, h).f());
                mm.matmul_keep_into(x.view(), y.view_mut(), fmid.view_mut(), Par::Seq)
                    .unwrap();
                assert_eq!(fmid, mid, "{what}: column-major mid");
                let full = mm.vjp(x.view(), g.view()).unwrap();
                let mut grads = MonarchGrad::zeros(&mm, batch);
                for kept in [mid.view(), fmid.view()] {
                    mm.vjp_kept_into(x.view(), kept, g.view(), &mut grads)
                        .unwrap();
                    let pairs = [(&grads.w1, &full.w1), (&grads.w2, &full.w2)];
                    for (k, (a, b)) in pairs.into_iter().enumerate() {
                        let (a, b) = (a.as_slice().unwrap(), b.as_slice().unwrap());
                        assert_close(a, b, 1e-12, &format!("{what}: w{}", k + 1));
                    }
                    let (a, b) = (grads.x.as_slice().unwrap(), full.x.as_slice().unwrap());
                    assert_close(a, b, 1e-12, &format!("{what}: x"));
                }
            }
        }
        let x = Array2::<f64>::zeros((3, n));
        let g = Array2::<f64>::zeros((3, mo));
        let mut y = Array2::zeros((3, mo));
        let mut grads = MonarchGrad::zeros(&m, 3);
        for bad in [(3, h + 1), (2, h)] {
            let mut mid = Array2::zeros(bad);
            let r = m.matmul_keep_into(x.view(), y.view_mut(), mid.view_mut(), Par::Rayon);
            assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{bad:?}");
            let r = m.vjp_kept_into(x.view(), mid.view(), g.view(), &mut grads);
            assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{bad:?}");
        }
    }
}
