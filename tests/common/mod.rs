//! Shared test helpers: naive dense references written from the formulas of the crate's
//! conventions page (`monarch::guide::conventions`), independent of the crate's kernels, and
//! JSON fixture loading.
#![allow(dead_code)]

use monarch::ndarray::{Array, Array2, Array3, ArrayD, IxDyn};
use monarch::num_complex::Complex;
use monarch::Scalar;
use serde_json::Value;

/// Dense matrix of the reference multiply (convention A), built by running the four steps of
/// `monarch::guide::conventions` literally on every basis vector.
pub fn naive_dense<T: Scalar>(w1: &Array3<T>, w2: &Array3<T>) -> Array2<T> {
    let (k, q, p) = w1.dim();
    let (l, s, r) = w2.dim();
    assert_eq!(k * q, l * r);
    let (n, m) = (k * p, l * s);
    let mut d = Array2::zeros((m, n));
    for col in 0..n {
        let mut x = vec![T::zero(); n];
        x[col] = T::one();
        let mut y1 = vec![T::zero(); k * q];
        for a in 0..k {
            for i in 0..q {
                for j in 0..p {
                    y1[a * q + i] += w1[[a, i, j]] * x[a * p + j];
                }
            }
        }
        let mut z = vec![T::zero(); l * r];
        for c in 0..l {
            for t in 0..r {
                z[c * r + t] = y1[t * l + c];
            }
        }
        let mut y2 = vec![T::zero(); l * s];
        for c in 0..l {
            for i in 0..s {
                for j in 0..r {
                    y2[c * s + i] += w2[[c, i, j]] * z[c * r + j];
                }
            }
        }
        for i in 0..s {
            for c in 0..l {
                d[[i * l + c, col]] = y2[c * s + i];
            }
        }
    }
    d
}

/// Plain triple-loop `x · aᵀ` for rows `x` (`batch × n`) and `a` (`m × n`).
pub fn naive_rows_times_t<T: Scalar>(x: &Array2<T>, a: &Array2<T>) -> Array2<T> {
    let (b, n) = x.dim();
    let m = a.nrows();
    assert_eq!(a.ncols(), n);
    Array2::from_shape_fn((b, m), |(i, j)| (0..n).map(|t| x[[i, t]] * a[[j, t]]).sum())
}

/// Largest entrywise `|a − b|` relative to `max(1, max|b|)`.
pub fn rel_max_diff<T: Scalar>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b
        .iter()
        .map(|v| v.abs_val().to_f64_val())
        .fold(1.0f64, f64::max);
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x - *y).abs_val().to_f64_val())
        .fold(0.0, f64::max)
        / scale
}

use monarch::RealScalar;

/// Asserts `rel_max_diff(a, b) <= tol` with a readable message.
#[track_caller]
pub fn assert_close<T: Scalar>(a: &[T], b: &[T], tol: f64, what: &str) {
    let d = rel_max_diff(a, b);
    assert!(d <= tol, "{what}: relative max difference {d:e} > {tol:e}");
}

/// Loads a JSON fixture from `tests/data/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A real tensor `{"shape": [...], "data": [...]}` as an f64 array.
pub fn tensor(v: &Value) -> ArrayD<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    Array::from_shape_vec(IxDyn(&shape), data).unwrap()
}

/// A complex tensor `{"shape", "re", "im"}`.
pub fn ctensor(v: &Value) -> ArrayD<Complex<f64>> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect();
    let re: Vec<f64> = v["re"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let im: Vec<f64> = v["im"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    Array::from_shape_vec(
        IxDyn(&shape),
        re.into_iter()
            .zip(im)
            .map(|(a, b)| Complex::new(a, b))
            .collect(),
    )
    .unwrap()
}

pub fn t2(v: &Value) -> Array2<f64> {
    tensor(v).into_dimensionality().unwrap()
}
pub fn t3(v: &Value) -> Array3<f64> {
    tensor(v).into_dimensionality().unwrap()
}
