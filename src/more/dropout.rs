//! Seeded inverted dropout masks, shared by the adapters.
//!
//! A mask entry is `0` with probability `p` and `1/(1−p)` otherwise, so the expected output is
//! unchanged. The same seed gives the same mask, which is how a training step's forward pass and
//! its VJP agree on which entries were dropped.
//!
//! ```
//! use monarch::more::dropout_mask;
//! let a = dropout_mask::<f64>((4, 8), 0.5, 3).unwrap();
//! assert_eq!(a, dropout_mask::<f64>((4, 8), 0.5, 3).unwrap());
//! assert!(a.iter().all(|&m| m == 0.0 || m == 2.0));
//! ```

use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use ndarray::Array2;
use rand::{Rng, SeedableRng};

/// Checks that a dropout probability lies in `[0, 1)`.
///
/// # Errors
/// [`Error::InvalidArgument`] otherwise (NaN included).
pub fn check_dropout(p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(format!(
            "dropout probability must lie in [0, 1), got {p}"
        )));
    }
    Ok(())
}

/// A seeded inverted-dropout mask of `shape`: entries `0` (probability `p`) or `1/(1−p)`.
///
/// # Errors
/// [`Error::InvalidArgument`] unless `0 ≤ p < 1`.
pub fn dropout_mask<T: RealScalar>(shape: (usize, usize), p: f64, seed: u64) -> Result<Array2<T>> {
    check_dropout(p)?;
    let keep = T::from_f64(1.0 / (1.0 - p));
    if p == 0.0 {
        return Ok(Array2::from_elem(shape, T::one()));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Ok(Array2::from_shape_simple_fn(shape, || {
        if rng.random::<f64>() < p {
            T::zero()
        } else {
            keep
        }
    }))
}
