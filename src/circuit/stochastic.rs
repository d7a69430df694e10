//! Row-stochastic blocks (softmax of free parameters), probability checks, and the
//! Kronecker → Monarch construction behind circuit multiplication.
//!
//! If every block of every factor is row-stochastic, so is the chain: a block-diagonal matrix
//! of row-stochastic blocks is row-stochastic, permutation matrices are, and products of
//! row-stochastic matrices are. That keeps a Monarch sum layer a valid distribution.

use crate::circuit::MonarchChain;
use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use ndarray::{Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis};

/// Tolerance on `|Σ p − 1|` used by the probability checks: `10·√ε` of the scalar type.
pub fn prob_tolerance<T: RealScalar>() -> T {
    T::eps().sqrt() * T::from_f64(10.0)
}

/// Softmax over the last axis of each block: `w[a, i, :] = softmax(theta[a, i, :])`, so every
/// block is row-stochastic. Rows shifted by their maximum, so large logits do not overflow.
///
/// # Errors
/// [`Error::ZeroSize`] for an empty dimension, [`Error::NonFinite`] for a NaN or infinite logit.
pub fn softmax_blocks<T: RealScalar>(theta: ArrayView3<T>) -> Result<Array3<T>> {
    let (nb, r, c) = theta.dim();
    if nb == 0 || r == 0 || c == 0 {
        return Err(Error::zero(format!(
            "softmax_blocks: logits (nb, rows, cols) = ({nb}, {r}, {c})"
        )));
    }
    if theta.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            context: "softmax_blocks: logits".into(),
        });
    }
    let mut w = theta.to_owned();
    for mut row in w.lanes_mut(Axis(2)) {
        let m = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let s: T = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    Ok(w)
}

/// Checks that `p` is a probability vector: finite, non-negative, summing to one within
/// [`prob_tolerance`].
///
/// # Errors
/// [`Error::ZeroSize`] if empty, [`Error::NonFinite`], or [`Error::InvalidArgument`] naming the
/// negative entry or the sum.
pub fn check_distribution<T: RealScalar>(p: ArrayView1<T>, ctx: &str) -> Result<()> {
    if p.is_empty() {
        return Err(Error::zero(format!("{ctx}: probability vector")));
    }
    let mut sum = T::zero();
    for (i, &v) in p.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::NonFinite {
                context: format!("{ctx}: probability {i}"),
            });
        }
        if v < T::zero() {
            return Err(Error::invalid(format!(
                "{ctx}: probability {i} is negative ({v})"
            )));
        }
        sum += v;
    }
    if (sum - T::one()).abs() > prob_tolerance::<T>() {
        return Err(Error::invalid(format!(
            "{ctx}: probabilities of length {} sum to {sum}, not 1",
            p.len()
        )));
    }
    Ok(())
}

/// Checks that every row of `m` is a probability vector (see [`check_distribution`]).
///
/// # Errors
/// As [`check_distribution`], naming the row.
pub fn check_row_stochastic<T: RealScalar>(m: ArrayView2<T>, ctx: &str) -> Result<()> {
    if m.nrows() == 0 {
        return Err(Error::zero(format!("{ctx}: rows")));
    }
    for (i, row) in m.rows().into_iter().enumerate() {
        check_distribution(row, &format!("{ctx}: row {i}"))?;
    }
    Ok(())
}

/// Checks that every block row of every factor of `chain` is a probability vector.
///
/// # Errors
/// As [`check_distribution`], naming the factor, block and row.
pub fn check_chain_stochastic<T: RealScalar>(chain: &MonarchChain<T>, ctx: &str) -> Result<()> {
    for (f, bd) in chain.factors().iter().enumerate() {
        for (a, blk) in bd.weights().axis_iter(Axis(0)).enumerate() {
            check_row_stochastic(blk, &format!("{ctx}: factor {f}, block {a}"))?;
        }
    }
    Ok(())
}

impl<T: RealScalar> MonarchChain<T> {
    /// A chain whose blocks are the row-wise softmax of the given logits (`theta[i]` of shape
    /// `(nb_i, rows_i, cols_i)`): non-negative, every block row-stochastic.
    ///
    /// # Errors
    /// As [`softmax_blocks`] and [`MonarchChain::from_factors`].
    pub fn stochastic_from_logits(theta: &[Array3<T>]) -> Result<Self> {
        let ws = theta
            .iter()
            .map(|t| softmax_blocks(t.view()))
            .collect::<Result<Vec<_>>>()?;
        Self::from_factors(ws)
    }

    /// A seeded random row-stochastic chain: logits normal with standard deviation `spread`
    /// (0 gives uniform blocks; larger values give peakier rows).
    ///
    /// # Errors
    /// As [`MonarchChain::from_factors`]; [`Error::NonFinite`] for a non-finite `spread`.
    pub fn random_stochastic(
        shapes: &[(usize, usize, usize)],
        spread: f64,
        seed: u64,
    ) -> Result<Self> {
        if !spread.is_finite() {
            return Err(Error::NonFinite {
                context: "MonarchChain::random_stochastic: spread".into(),
            });
        }
        let logits = MonarchChain::<T>::random(shapes, seed)?;
        let theta: Vec<Array3<T>> = logits
            .factors()
            .iter()
            .map(|f| {
                let scale = T::from_f64(spread * (f.block_cols() as f64).sqrt());
                f.weights().mapv(|v| v * scale)
            })
            .collect();
        Self::stochastic_from_logits(&theta)
    }

    /// The Kronecker product `A ⊗ B` (`A` is `h1 × h1`, `B` is `h2 × h2`) as a two-factor chain
    /// with tied blocks: `w_0` holds `h1` copies of `B`, `w_1` holds `h2` copies of `A`, and the
    /// stride permutations of convention A do the rest (`A⊗I = Sᵀ (I⊗A) S`). State `(i1, i2)`
    /// of the product has index `i1·h2 + i2`. The blocks are tied only at construction; training
    /// unties them.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for an empty matrix, [`Error::ShapeMismatch`] if either is not square.
    pub fn kronecker(a: ArrayView2<T>, b: ArrayView2<T>) -> Result<Self> {
        for (m, name) in [(a, "A"), (b, "B")] {
            if m.nrows() == 0 {
                return Err(Error::zero(format!("MonarchChain::kronecker: {name}")));
            }
            if m.nrows() != m.ncols() {
                return Err(Error::shape(
                    format!("MonarchChain::kronecker: {name} must be square"),
                    (m.nrows(), m.nrows()),
                    m.dim(),
                ));
            }
        }
        let (h1, h2) = (a.nrows(), b.nrows());
        let tile = |m: ArrayView2<T>, copies: usize| {
            let h = m.nrows();
            Array3::from_shape_fn((copies, h, h), |(_, i, j)| m[[i, j]])
        };
        Self::from_factors(vec![tile(b, h1), tile(a, h2)])
    }
}

/// The dense Kronecker product `A ⊗ B` (the reference for [`MonarchChain::kronecker`]).
pub fn kron_dense<T: RealScalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let (m1, n1) = a.dim();
    let (m2, n2) = b.dim();
    Array2::from_shape_fn((m1 * m2, n1 * n2), |(i, j)| {
        a[[i / m2, j / n2]] * b[[i % m2, j % n2]]
    })
}
