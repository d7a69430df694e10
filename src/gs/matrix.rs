//! The general GS class `A = P_L · (L · P · R) · P_R`.

use crate::primitives::error::Result;
use crate::{BlockDiag, Monarch, Perm, Scalar};
use ndarray::{Array2, Array3, ArrayView2};

/// A Group-and-Shuffle matrix `P_L · L · P · R · P_R` with block-diagonal `L`, `R` (any block
/// shapes that chain) and permutations `P_L`, `P`, `P_R` (gather convention).
///
/// It is stored as the [`Monarch`] `P_out · BD(w2) · P_mid · BD(w1) · P_in` with `w2 = L`,
/// `w1 = R`, `P_out = P_L`, `P_mid = P`, `P_in = P_R`, so it shares the Monarch kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct GsMatrix<T> {
    inner: Monarch<T>,
}

/// Gradients of `sum((A x) ⊙ grad_out)` for a [`GsMatrix`].
#[derive(Debug, Clone, PartialEq)]
pub struct GsGrad<T> {
    /// With respect to the input rows.
    pub x: Array2<T>,
    /// With respect to `L`'s blocks.
    pub l: Array3<T>,
    /// With respect to `R`'s blocks.
    pub r: Array3<T>,
}

impl<T: Scalar> GsMatrix<T> {
    /// Builds `P_L · L · P · R · P_R`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the lengths do not chain
    /// (`|P_R| = in(R)`, `|P| = out(R) = in(L)`, `|P_L| = out(L)`).
    pub fn new(
        p_left: Perm,
        l: BlockDiag<T>,
        p: Perm,
        r: BlockDiag<T>,
        p_right: Perm,
    ) -> Result<Self> {
        Ok(GsMatrix {
            inner: Monarch::from_parts(p_right, r, p, l, p_left)?,
        })
    }

    /// The same matrix as a [`Monarch`].
    pub fn as_monarch(&self) -> &Monarch<T> {
        &self.inner
    }
    /// `L`.
    pub fn l(&self) -> &BlockDiag<T> {
        self.inner.factor2()
    }
    /// `R`.
    pub fn r(&self) -> &BlockDiag<T> {
        self.inner.factor1()
    }
    /// `(P_L, P, P_R)`.
    pub fn perms(&self) -> (&Perm, &Perm, &Perm) {
        let (pin, pmid, pout) = self.inner.perms();
        (pout, pmid, pin)
    }
    /// Input length.
    pub fn in_features(&self) -> usize {
        self.inner.in_features()
    }
    /// Output length.
    pub fn out_features(&self) -> usize {
        self.inner.out_features()
    }
    /// Stored parameters of `L` and `R`.
    pub fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    /// Multiplies rows: `out[b] = A · x[b]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) for a wrong input width.
    pub fn matmul(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        self.inner.matmul(x)
    }
    /// The dense matrix.
    pub fn to_dense(&self) -> Array2<T> {
        self.inner.to_dense()
    }
    /// `Aᵀ = P_Rᵀ Rᵀ Pᵀ Lᵀ P_Lᵀ`, again a GS matrix.
    pub fn transpose(&self) -> Self {
        GsMatrix {
            inner: self.inner.transpose(),
        }
    }
    /// Gradients of `sum(matmul(x) ⊙ grad_out)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) for wrong shapes.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<GsGrad<T>> {
        let g = self.inner.vjp(x, grad_out)?;
        Ok(GsGrad {
            x: g.x,
            l: g.w2,
            r: g.w1,
        })
    }
}
