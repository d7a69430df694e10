//! The bad-input rule shared by the modules.
//!
//! Constructors and `try_forward` return the core crate's [`monarch::Error`], so a shape
//! that does not fit names its sizes the same way on both sides; `forward` follows burn's module
//! convention (its own layers panic on a wrong input shape) and panics with that message.

use burn::tensor::Tensor;
use monarch::{Error, Result};

/// Checks that the last axis of `x` has length `expected`.
pub(crate) fn last_dim<const D: usize>(
    context: &str,
    x: &Tensor<D>,
    expected: usize,
) -> Result<()> {
    let found = x.dims()[D - 1];
    if found != expected {
        return Err(Error::shape(context, expected, found));
    }
    Ok(())
}

/// Unwraps, panicking with the error's message.
#[track_caller]
pub(crate) fn expect_ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}
