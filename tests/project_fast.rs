//! The certified rank-one path of the projection against per-slice SVDs computed here
//! (Eckart–Young written out), on near-Monarch inputs (which take the fast path) and on
//! unstructured ones (which fall back), in f32, f64 and complex.

use crate::common;

use common::assert_close;
use monarch::ndarray::{s, Array2};
use monarch::num_complex::Complex;
use monarch::primitives::random::normal_matrix;
use monarch::primitives::svd::svd;
use monarch::{Monarch, RealScalar, Scalar};

/// Dense best approximation: each slice `M[c::l, a·p..]` replaced by its rank-one truncation.
fn reference<T: Scalar>(a: &Array2<T>, k: usize, l: usize) -> (Array2<T>, f64) {
    let (m, n) = a.dim();
    let (s_, p) = (m / l, n / k);
    let mut out = Array2::<T>::zeros((m, n));
    let mut err2 = 0.0f64;
    for ai in 0..k {
        for c in 0..l {
            let sl = a.slice(s![c..;l, ai * p..(ai + 1) * p]);
            let d = svd(sl);
            for &sv in d.s.iter().skip(1) {
                err2 += RealScalar::to_f64_val(sv).powi(2);
            }
            for i in 0..s_ {
                for j in 0..p {
                    out[[c + i * l, ai * p + j]] =
                        d.u[[i, 0]] * T::from_real(d.s[0]) * d.v[[j, 0]].conj_val();
                }
            }
        }
    }
    (out, err2.sqrt())
}

fn check<T: Scalar>(a: Array2<T>, k: usize, l: usize, tol: f64, what: &str) {
    let (want, err) = reference(&a, k, l);
    let p = Monarch::project_with_error(a.view(), k, l, 1).unwrap();
    let got = p.monarch.to_dense();
    assert_close(got.as_slice().unwrap(), want.as_slice().unwrap(), tol, what);
    let e = RealScalar::to_f64_val(p.error);
    assert!(
        (e - err).abs() <= tol * (1.0 + err),
        "{what}: error {e} vs {err}"
    );
}

fn near_monarch(n: usize, b: usize, noise: f64, seed: u64) -> Array2<f64> {
    let m = Monarch::<f64>::random(n, b, seed).unwrap().to_dense();
    m + normal_matrix::<f64>((n, n), noise, seed + 1)
}

#[test]
fn rank_one_fast_path_is_optimal_f64_f32() {
    for (n, b) in [(64, 8), (256, 16)] {
        let a = near_monarch(n, b, 1e-3, 3);
        check(a.clone(), b, b, 1e-9, "near-monarch f64");
        check(a.mapv(|v| v as f32), b, b, 2e-4, "near-monarch f32");
        // Unstructured input: the fallback.
        let r = normal_matrix::<f64>((n, n), 1.0, 5);
        check(r.clone(), b, b, 1e-9, "random f64");
        check(r.mapv(|v| v as f32), b, b, 2e-4, "random f32");
    }
}

#[test]
fn rank_one_fast_path_is_optimal_complex_and_rectangular() {
    let re = near_monarch(64, 8, 1e-3, 7);
    let im = near_monarch(64, 8, 1e-3, 9);
    let a = Array2::from_shape_fn((64, 64), |(i, j)| Complex::new(re[[i, j]], im[[i, j]]));
    check(a, 8, 8, 1e-9, "complex");
    // Rectangular 48×96 with 4 output and 8 input blocks.
    let m = Monarch::<f64>::random_factors((8, 4, 12), (4, 12, 8), 2)
        .unwrap()
        .to_dense();
    let a = m + normal_matrix::<f64>((48, 96), 1e-4, 4);
    check(a, 8, 4, 1e-9, "rectangular");
}
