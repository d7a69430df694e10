//! MoRe fine-tuning adapters (Tan et al., "MoRe Fine-Tuning with 10x Fewer Parameters",
//! arXiv 2408.17383) and the LoRA baseline with the same interface.
//!
//! A frozen linear layer `W0` (`out × in`, bias kept) gets an additive Monarch adapter,
//! `y = W0 x + b + dropout(ΔW x)`, with `ΔW` a rectangular [`Monarch`](crate::Monarch) in the
//! core layout: `nblocks = N`, per-block rank `r`, `ib = ⌈in/N⌉`, effective `N = ⌈in/ib⌉`,
//! `ob = ⌈ib·out/in⌉`, factors `blkdiag1 (N, r, ib)` and `blkdiag2 (N, ob, r)`, input zero-padded
//! to `N·ib` and output truncated to `out`. `blkdiag2` starts at zero, so the adapted layer
//! equals the base layer at step 0. The adapter has LoRA's `r·(in+out)` parameters but reaches
//! rank `N·r`.
//!
//! ```
//! use monarch::more::{Adapter, MoReAdapter};
//! let w0 = monarch::primitives::random::normal_matrix::<f64>((32, 16), 0.1, 1);
//! let mut ad = MoReAdapter::new(w0.clone(), None, 4, 2, 0.0, 7).unwrap();
//! let x = monarch::primitives::random::normal_matrix::<f64>((3, 16), 1.0, 2);
//! // Zero-initialised second factor: the adapted layer is the base layer.
//! assert_eq!(ad.forward(x.view()).unwrap(), x.dot(&w0.t()));
//! assert_eq!(ad.num_params(), 2 * (16 + 32));
//! assert_eq!(ad.max_rank(), 4 * 2);
//! ad.blkdiag2_mut().fill(0.5);
//! let before = ad.forward(x.view()).unwrap();
//! ad.merge().unwrap();
//! let after = ad.forward(x.view()).unwrap();
//! assert!((&before - &after).iter().all(|e| e.abs() < 1e-12));
//! ```

mod adapter;
mod checkpoint;
mod dropout;
pub mod lora;

pub use adapter::{FactorShapes, MoReAdapter, MoReGrad};
pub use dropout::{check_dropout, dropout_mask};
pub use lora::{LoraAdapter, LoraGrad};

use crate::primitives::error::Result;
#[cfg(doc)]
use crate::Error;
use crate::RealScalar;
use ndarray::{Array1, Array2, ArrayView2};

/// What every adapter over a frozen linear layer offers (MoRe and LoRA alike).
///
/// Rows are samples: inputs are `(batch, in_features)`, outputs `(batch, out_features)`.
pub trait Adapter<T: RealScalar> {
    /// Input width of the adapted layer.
    fn in_features(&self) -> usize;
    /// Output width of the adapted layer.
    fn out_features(&self) -> usize;
    /// Trainable adapter parameters.
    fn num_params(&self) -> usize;
    /// Largest rank `ΔW` can reach.
    fn max_rank(&self) -> usize;
    /// The dense update `ΔW` (`out × in`).
    fn delta_weight(&self) -> Array2<T>;
    /// Evaluation-mode output `W0 x + b + ΔW x` (no dropout); after a merge, `W x + b`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` does not have `in_features` columns.
    fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>>;
    /// Training-mode output with the adapter output dropped out by the mask of `seed`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input; [`Error::InvalidArgument`] when merged.
    fn forward_train(&self, x: ArrayView2<T>, seed: u64) -> Result<Array2<T>>;
    /// Adds `ΔW` into the frozen weight; the forward output is unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if already merged.
    fn merge(&mut self) -> Result<()>;
    /// Subtracts `ΔW` again, restoring the base weight (to rounding).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if not merged.
    fn unmerge(&mut self) -> Result<()>;
    /// True between [`merge`](Adapter::merge) and [`unmerge`](Adapter::unmerge).
    fn is_merged(&self) -> bool;
}

/// `x · wᵀ (+ bias)` for rows `x`.
pub(crate) fn dense_rows<T: RealScalar>(
    x: ArrayView2<T>,
    w: &Array2<T>,
    bias: Option<&Array1<T>>,
) -> Array2<T> {
    let y = x.dot(&w.t());
    // `dot` may return column-major output (one input feature, say); callers get row-major.
    let mut y = if y.is_standard_layout() {
        y
    } else {
        y.as_standard_layout().into_owned()
    };
    if let Some(b) = bias {
        y += b;
    }
    y
}

/// The adapted layer's forward pass: the frozen `x · wᵀ (+ bias)` plus, unless the adapter is
/// merged into `w`, its output (from `adapter`), under the dropout mask of `seed` if given.
/// Shared by every adapter so train and eval modes mean the same thing for each.
pub(crate) fn frozen_plus_adapter<T: RealScalar>(
    x: ArrayView2<T>,
    (w, bias): (&Array2<T>, Option<&Array1<T>>),
    merged: bool,
    dropout: (f64, Option<u64>),
    adapter: impl FnOnce() -> Result<Array2<T>>,
) -> Result<Array2<T>> {
    let mut y = dense_rows(x, w, bias);
    if merged {
        return Ok(y);
    }
    let mut a = adapter()?;
    if let (p, Some(seed)) = dropout {
        a *= &dropout_mask::<T>(a.dim(), p, seed)?;
    }
    y += &a;
    Ok(y)
}
