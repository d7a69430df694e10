//! The orthogonal GS layer: `Q = (P^{m−1})ᵀ · BD_m · P · BD_{m−1} ⋯ P · BD_1` with orthogonal
//! `b×b` blocks and the shuffle `P` between factors.
//!
//! With the default two factors (`BD_1 = R`, `BD_2 = L`) this is the paper's
//! `Q = Pᵀ · BD(L) · P · BD(R)`. Every extra factor mixes one more base-`b` digit of the index,
//! so `m ≥ 1 + ⌈log_b k⌉` factors give a dense `Q` (see [`min_dense_factors`](super::min_dense_factors)).

use super::orthogonal::{orthogonal_block, orthogonal_block_vjp, OrthMap};
use super::shuffle;
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::{BlockDiag, Perm, RealScalar};
use ndarray::{Array2, Array3, ArrayView2, Axis};

/// An orthogonal Group-and-Shuffle matrix of size `n = k·b`, parametrized by unconstrained
/// blocks (skew-symmetrised and mapped by Cayley or `exp`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrthGs<T> {
    params: Vec<Array3<T>>,
    map: OrthMap,
    shuffle: Perm,
    p_out: Perm,
}

/// Gradients of `sum(Q x ⊙ grad_out)` for an [`OrthGs`].
#[derive(Debug, Clone, PartialEq)]
pub struct OrthGsGrad<T> {
    /// With respect to the input rows, `(batch, n)`.
    pub x: Array2<T>,
    /// With respect to each factor's parameters, `(k, b, b)` each, in factor order.
    pub params: Vec<Array3<T>>,
}

impl<T: RealScalar> OrthGs<T> {
    /// The identity (all parameters zero) of size `n` with blocks of size `block` and
    /// `nfactors` block-diagonal factors (2 for the paper's layer).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for a zero argument; [`Error::NotDivisible`] unless `block` divides `n`.
    pub fn identity(n: usize, block: usize, nfactors: usize, map: OrthMap) -> Result<Self> {
        check_nonzero(n, "OrthGs: n")?;
        check_nonzero(nfactors, "OrthGs: nfactors")?;
        crate::primitives::error::check_divides(n, block, "OrthGs: n by block size")?;
        let k = n / block;
        let size = std::mem::size_of::<T>();
        crate::primitives::error::check_alloc(
            &[nfactors, k, block, block],
            size,
            "OrthGs::identity: parameters",
        )?;
        Self::from_params(vec![Array3::zeros((k, block, block)); nfactors], map)
    }

    /// A layer from given parameters, one `(k, b, b)` array per factor (first applied first).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for no factors or empty blocks; [`Error::ShapeMismatch`] if the
    /// factors differ in shape or blocks are not square; [`Error::NonFinite`].
    pub fn from_params(params: Vec<Array3<T>>, map: OrthMap) -> Result<Self> {
        let first = params
            .first()
            .ok_or_else(|| Error::zero("OrthGs: number of factors"))?;
        let (k, b, b2) = first.dim();
        check_nonzero(k, "OrthGs: number of blocks")?;
        check_nonzero(b, "OrthGs: block size")?;
        if b != b2 {
            return Err(Error::shape(
                "OrthGs: square blocks (k, b, b)",
                (k, b, b),
                (k, b, b2),
            ));
        }
        for (i, p) in params.iter().enumerate() {
            if p.dim() != (k, b, b) {
                return Err(Error::shape(
                    format!("OrthGs: factor {i} shape"),
                    (k, b, b),
                    p.dim(),
                ));
            }
            if !p.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFinite {
                    context: format!("OrthGs: factor {i} parameters"),
                });
            }
        }
        let shuffle = shuffle(k, b)?;
        let mut pm = Perm::identity(k * b);
        for _ in 1..params.len() {
            pm = shuffle.compose(&pm);
        }
        Ok(OrthGs {
            params: params
                .into_iter()
                .map(|p| p.as_standard_layout().into_owned())
                .collect(),
            map,
            shuffle,
            p_out: pm.inverse(),
        })
    }

    /// Size `n`.
    pub fn n(&self) -> usize {
        self.shuffle.len()
    }
    /// Number of blocks `k` per factor.
    pub fn nblocks(&self) -> usize {
        self.params[0].dim().0
    }
    /// Block size `b`.
    pub fn block(&self) -> usize {
        self.params[0].dim().1
    }
    /// Number of block-diagonal factors `m`.
    pub fn nfactors(&self) -> usize {
        self.params.len()
    }
    /// The map from skew-symmetric to orthogonal blocks.
    pub fn map(&self) -> OrthMap {
        self.map
    }
    /// The unconstrained parameters, one `(k, b, b)` array per factor.
    pub fn params(&self) -> &[Array3<T>] {
        &self.params
    }
    /// Mutable parameters (shapes must not change), for training updates.
    pub fn params_mut(&mut self) -> &mut [Array3<T>] {
        &mut self.params
    }
    /// Stored parameters `m·k·b²`.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.len()).sum()
    }
    /// Parameters that change `Q`: `m·k·b(b−1)/2` (the strict upper triangles of the skew parts).
    pub fn num_free_params(&self) -> usize {
        let b = self.block();
        self.nfactors() * self.nblocks() * b * (b - 1) / 2
    }
    /// The shuffle `P` between factors, `z[l·b + t] = v[t·k + l]`.
    pub fn shuffle(&self) -> &Perm {
        &self.shuffle
    }

    /// The orthogonal blocks of every factor.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if parameters became NaN/Inf (e.g. by a diverging update).
    pub fn blocks(&self) -> Result<Vec<BlockDiag<T>>> {
        self.params
            .iter()
            .map(|p| {
                let mut w = Array3::zeros(p.dim());
                for (a, pa) in p.axis_iter(Axis(0)).enumerate() {
                    w.index_axis_mut(Axis(0), a)
                        .assign(&orthogonal_block(pa, self.map)?);
                }
                BlockDiag::new(w)
            })
            .collect()
    }

    fn check_x(&self, x: ArrayView2<T>, ctx: &str) -> Result<()> {
        if x.ncols() != self.n() {
            return Err(Error::shape(
                format!("{ctx}: input columns (n)"),
                self.n(),
                x.ncols(),
            ));
        }
        Ok(())
    }

    /// Applies `Q` to rows: `out[b] = Q · x[b]`, `(batch, n) → (batch, n)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` does not have `n` columns; [`Error::NonFinite`] as
    /// [`blocks`](OrthGs::blocks).
    pub fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        self.check_x(x, "OrthGs::forward")?;
        let blocks = self.blocks()?;
        self.run(x, &blocks, None)
    }

    fn run(
        &self,
        x: ArrayView2<T>,
        blocks: &[BlockDiag<T>],
        mut keep: Option<&mut Vec<Array2<T>>>,
    ) -> Result<Array2<T>> {
        let mut h = x.to_owned();
        for (i, bd) in blocks.iter().enumerate() {
            if i > 0 {
                h = self.shuffle.apply_rows(h.view())?;
            }
            if let Some(k) = keep.as_mut() {
                k.push(h.clone());
            }
            h = bd.matmul(h.view())?;
        }
        if self.p_out.is_identity() {
            Ok(h)
        } else {
            self.p_out.apply_rows(h.view())
        }
    }

    /// The dense `n × n` matrix `Q`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] as [`blocks`](OrthGs::blocks).
    pub fn to_dense(&self) -> Result<Array2<T>> {
        let eye = Array2::<T>::eye(self.n());
        // Rows of `forward(I)` are Q's columns.
        Ok(self
            .forward(eye.view())?
            .reversed_axes()
            .as_standard_layout()
            .into_owned())
    }

    /// `‖QᵀQ − I‖_F` in `f64`: the orthogonality defect.
    ///
    /// # Errors
    /// [`Error::NonFinite`] as [`blocks`](OrthGs::blocks).
    pub fn orthogonality_error(&self) -> Result<f64> {
        let q = self.to_dense()?;
        Ok(orthogonality_defect(q.view()))
    }

    /// Gradients of `sum(forward(x) ⊙ grad_out)` with respect to the input and every factor's
    /// parameters (through the skew map and Cayley/`exp`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape; [`Error::NonFinite`].
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<OrthGsGrad<T>> {
        self.check_x(x, "OrthGs::vjp")?;
        if grad_out.dim() != x.dim() {
            return Err(Error::shape(
                "OrthGs::vjp: grad_out shape (batch, n)",
                x.dim(),
                grad_out.dim(),
            ));
        }
        let blocks = self.blocks()?;
        let mut inputs = Vec::with_capacity(blocks.len());
        self.run(x, &blocks, Some(&mut inputs))?;
        let mut g = self.p_out.inverse().apply_rows(grad_out)?;
        let mut grads = vec![Array3::zeros(self.params[0].dim()); blocks.len()];
        let sinv = self.shuffle.inverse();
        for i in (0..blocks.len()).rev() {
            let bg = blocks[i].vjp(inputs[i].view(), g.view())?;
            for (a, gq) in bg.w.axis_iter(Axis(0)).enumerate() {
                let ga = orthogonal_block_vjp(self.params[i].index_axis(Axis(0), a), gq, self.map)?;
                grads[i].index_axis_mut(Axis(0), a).assign(&ga);
            }
            g = if i > 0 {
                sinv.apply_rows(bg.x.view())?
            } else {
                bg.x
            };
        }
        Ok(OrthGsGrad {
            x: g,
            params: grads,
        })
    }
}

/// `‖QᵀQ − I‖_F` of a square matrix, computed in `f64`.
pub fn orthogonality_defect<T: RealScalar>(q: ArrayView2<T>) -> f64 {
    let q64 = q.mapv(|v| v.to_f64_val());
    let e = q64.t().dot(&q64) - Array2::<f64>::eye(q64.ncols());
    e.iter().map(|v| v * v).sum::<f64>().sqrt()
}
