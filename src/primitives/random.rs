//! Seeded random arrays for constructors, tests and examples.
//!
//! Normal samples come from a Box–Muller transform over `rand`'s `StdRng`, so a seed gives the
//! same numbers for a given `rand` version on every platform.
//!
//! ```
//! let a = monarch::primitives::random::normal_matrix::<f64>((3, 4), 1.0, 7);
//! let b = monarch::primitives::random::normal_matrix::<f64>((3, 4), 1.0, 7);
//! assert_eq!(a, b);
//! ```

use crate::primitives::error::{try_array_from_fn, Result};
use crate::Scalar;
use ndarray::{Array1, Array2, Array3};
use rand::{Rng, SeedableRng};

/// One standard normal sample (Box–Muller).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    loop {
        let u1: f64 = rng.random();
        let u2: f64 = rng.random();
        if u1 > f64::MIN_POSITIVE {
            return (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        }
    }
}

/// A normal sample of `T` with standard deviation `std` (complex: each part `std/√2`).
pub fn normal_scalar<T: Scalar, R: Rng + ?Sized>(rng: &mut R, std: f64) -> T {
    if T::IS_COMPLEX {
        let s = std / std::f64::consts::SQRT_2;
        let re = standard_normal(rng) * s;
        let im = standard_normal(rng) * s;
        T::from_parts(T::Real::from_f64(re), T::Real::from_f64(im))
    } else {
        T::from_f64(standard_normal(rng) * std)
    }
}

/// An array of normal samples with standard deviation `std`.
///
/// Infallible like `ndarray`: it aborts if the array cannot be allocated; the crate's
/// constructors use [`try_normal_array3`].
pub fn normal_array3<T: Scalar, R: Rng + ?Sized>(
    rng: &mut R,
    shape: (usize, usize, usize),
    std: f64,
) -> Array3<T> {
    Array3::from_shape_simple_fn(shape, || normal_scalar(rng, std))
}

/// [`normal_array3`] allocated fallibly.
///
/// # Errors
/// [`Error::TooLarge`](crate::Error::TooLarge) if the element count overflows or the array cannot be allocated.
pub fn try_normal_array3<T: Scalar, R: Rng + ?Sized>(
    rng: &mut R,
    shape: (usize, usize, usize),
    std: f64,
) -> Result<Array3<T>> {
    try_array_from_fn(
        ndarray::Dim([shape.0, shape.1, shape.2]),
        "normal samples",
        || normal_scalar(rng, std),
    )
}

/// [`normal_matrix`] allocated fallibly.
///
/// # Errors
/// [`Error::TooLarge`](crate::Error::TooLarge) if the element count overflows or the matrix cannot be allocated.
pub fn try_normal_matrix<T: Scalar>(
    shape: (usize, usize),
    std: f64,
    seed: u64,
) -> Result<Array2<T>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    try_array_from_fn(ndarray::Dim([shape.0, shape.1]), "normal samples", || {
        normal_scalar(&mut rng, std)
    })
}

/// [`uniform_array3`] allocated fallibly.
///
/// # Errors
/// [`Error::TooLarge`](crate::Error::TooLarge) if the element count overflows or the array cannot be allocated.
pub fn try_uniform_array3<T: Scalar>(
    shape: (usize, usize, usize),
    bound: f64,
    seed: u64,
) -> Result<Array3<T>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    try_array_from_fn(
        ndarray::Dim([shape.0, shape.1, shape.2]),
        "uniform samples",
        || T::from_f64(rng.random_range(-bound..=bound)),
    )
}

/// [`uniform_vec`] allocated fallibly.
///
/// # Errors
/// [`Error::TooLarge`](crate::Error::TooLarge) if the vector cannot be allocated.
pub fn try_uniform_vec<T: Scalar>(len: usize, bound: f64, seed: u64) -> Result<Array1<T>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    try_array_from_fn(ndarray::Dim([len]), "uniform samples", || {
        T::from_f64(rng.random_range(-bound..=bound))
    })
}

/// A seeded matrix of normal samples with standard deviation `std`.
pub fn normal_matrix<T: Scalar>(shape: (usize, usize), std: f64, seed: u64) -> Array2<T> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Array2::from_shape_simple_fn(shape, || normal_scalar(&mut rng, std))
}

/// A seeded 3-D array of uniform samples in `[-bound, bound]` (real part only for complex).
pub fn uniform_array3<T: Scalar>(shape: (usize, usize, usize), bound: f64, seed: u64) -> Array3<T> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Array3::from_shape_simple_fn(shape, || T::from_f64(rng.random_range(-bound..=bound)))
}

/// A seeded vector of uniform samples in `[-bound, bound]`.
pub fn uniform_vec<T: Scalar>(len: usize, bound: f64, seed: u64) -> ndarray::Array1<T> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    ndarray::Array1::from_shape_simple_fn(len, || T::from_f64(rng.random_range(-bound..=bound)))
}
