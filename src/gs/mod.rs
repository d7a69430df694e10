//! Group-and-Shuffle matrices and orthogonal fine-tuning (Gorbunov et al., NeurIPS 2024,
//! arXiv 2406.10019).
//!
//! * [`GsMatrix`]: the general class `A = P_L (L P R) P_R`, `L`, `R` block-diagonal, `P_L`,
//!   `P`, `P_R` permutations (a [`Monarch`](crate::Monarch) is a special case, and the product
//!   runs on the Monarch kernels).
//! * [`OrthGs`]: the orthogonal layer `Q = Pᵀ · BD(L) · P · BD(R)` (or more factors) with `k`
//!   square `b×b` blocks, `n = k·b`, shuffle `z[l·b + t] = v[t·k + l]` ([`shuffle`]), blocks
//!   from unconstrained parameters by Cayley (default) or `exp` ([`orthogonal_block`]).
//! * [`GsoftLinear`] `y = s ⊙ (W0 Q x) + b` and [`DoubleGsoft`] `y = s ⊙ (Q_out W0 Q_in x) + b`.
//! * [`GsOrthConv2d`]: channel shuffle → grouped orthogonal convolution (exponential of a
//!   skew-symmetric convolution) → shuffle → grouped 1×1 orthogonal convolution.
//!
//! ```
//! use monarch::gs::{OrthGs, OrthMap, min_dense_factors};
//! // n = 12, k = 3 blocks of b = 4: the shuffle of the paper.
//! assert_eq!(monarch::gs::shuffle(3, 4).unwrap().index(), &[0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
//! let mut q = OrthGs::<f64>::identity(12, 4, 2, OrthMap::Cayley).unwrap();
//! assert!(q.orthogonality_error().unwrap() == 0.0);
//! q.params_mut()[0].fill(0.3);
//! q.params_mut()[1][[0, 0, 1]] = 1.0;
//! assert!(q.orthogonality_error().unwrap() < 1e-13);
//! // One GS matrix (two factors) is dense once the number of blocks k ≤ b.
//! assert_eq!(min_dense_factors(4, 3).unwrap(), 2);
//! assert_eq!(min_dense_factors(32, 32).unwrap(), 2);
//! assert_eq!(monarch::gs::butterfly_factors(32).unwrap(), 6);
//! ```

mod checkpoint;
mod conv;
mod gsoft;
mod layer;
mod matrix;
mod orthogonal;

pub use conv::{channel_shuffle, GsOrthConv2d, MAX_EXP_TERMS};
pub use gsoft::{DoubleGsoft, DoubleGsoftGrad, GsoftGrad, GsoftLinear};
pub use layer::{orthogonality_defect, OrthGs, OrthGsGrad};
pub use matrix::{GsGrad, GsMatrix};
pub use orthogonal::{cayley, expm, orthogonal_block, orthogonal_block_vjp, skew, OrthMap};

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::Perm;

/// The GS shuffle for `k` blocks of size `b`: gather `z[l·b + t] = v[t·k + l]`
/// (equal to [`Perm::stride(b, k)`](Perm::stride)).
///
/// # Errors
/// [`Error::TooLarge`] if `k·b` overflows or cannot be allocated.
pub fn shuffle(k: usize, b: usize) -> Result<Perm> {
    Perm::stride(b, k)
}

/// Smallest `e` with `base^e ≥ value` (`value ≥ 1`, `base ≥ 2`).
fn ceil_log(base: usize, value: usize) -> usize {
    let mut e = 0;
    let mut p = 1usize;
    while p < value {
        p = p.saturating_mul(base);
        e += 1;
    }
    e
}

/// Number of block-diagonal factors (`b×b` blocks, `r` blocks each, shuffles between) needed
/// for a dense product: `1 + ⌈log_b r⌉`.
///
/// # Errors
/// [`Error::ZeroSize`] for a zero argument; [`Error::InvalidArgument`] for `b = 1` with
/// `r > 1` (1×1 blocks never mix).
pub fn min_dense_factors(block: usize, nblocks: usize) -> Result<usize> {
    check_nonzero(block, "min_dense_factors: block size")?;
    check_nonzero(nblocks, "min_dense_factors: number of blocks")?;
    if nblocks == 1 {
        return Ok(1);
    }
    if block == 1 {
        return Err(Error::invalid(format!(
            "min_dense_factors: 1×1 blocks never make a product of {nblocks} blocks dense"
        )));
    }
    Ok(1 + ceil_log(block, nblocks))
}

/// Factors a butterfly / BOFT product needs to be dense with `r` blocks: `1 + ⌈log₂ r⌉`.
///
/// # Errors
/// [`Error::ZeroSize`] if `r = 0`.
pub fn butterfly_factors(nblocks: usize) -> Result<usize> {
    check_nonzero(nblocks, "butterfly_factors: number of blocks")?;
    Ok(1 + ceil_log(2, nblocks))
}
