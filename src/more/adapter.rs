//! The MoRe adapter: a rectangular Monarch `ΔW` added to a frozen linear layer.

use super::{dropout_mask, frozen_plus_adapter, Adapter};
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::nn::{check_base, check_cols, check_grad};
use crate::primitives::random::uniform_array3;
use crate::{Monarch, RealScalar};
use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayViewMut3};

/// Shapes `((N, r, ib), (N, ob, r))` of `blkdiag1` and `blkdiag2`.
pub type FactorShapes = ((usize, usize, usize), (usize, usize, usize));

/// A MoRe adapter over a frozen linear layer: `y = W0 x + b + dropout(ΔW x)`.
///
/// `ΔW = (P_out · BD(blkdiag2) · P_mid · BD(blkdiag1))[..out, ..in]` in the core layout (see the
/// [module docs](crate::more)).
#[derive(Debug, Clone)]
pub struct MoReAdapter<T: RealScalar> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
    monarch: Monarch<T>,
    rank: usize,
    dropout: f64,
    merged: bool,
}

/// Gradients of `sum(y ⊙ grad_out)` for a [`MoReAdapter`] (the base layer is frozen).
#[derive(Debug, Clone, PartialEq)]
pub struct MoReGrad<T> {
    /// With respect to the input, `(batch, in_features)` (through the base layer and `ΔW`).
    pub x: Array2<T>,
    /// With respect to `blkdiag1`, `(N, r, ib)`.
    pub blkdiag1: Array3<T>,
    /// With respect to `blkdiag2`, `(N, ob, r)`.
    pub blkdiag2: Array3<T>,
}

impl<T: RealScalar> MoReAdapter<T> {
    /// Factor shapes `(blkdiag1, blkdiag2) = ((N, r, ib), (N, ob, r))` for an `out × in` layer,
    /// `nblocks` requested blocks and per-block rank `rank` (`N` is the effective block count
    /// `⌈in/ib⌉`, smaller than `nblocks` when `in` is small).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for a zero argument; [`Error::TooLarge`] if `nblocks > in` or the rank
    /// exceeds a block's width, `rank > min(ib, ob)` (a block could not have that rank).
    pub fn shapes(
        in_features: usize,
        out_features: usize,
        nblocks: usize,
        rank: usize,
    ) -> Result<FactorShapes> {
        check_nonzero(in_features, "MoReAdapter: in_features")?;
        check_nonzero(out_features, "MoReAdapter: out_features")?;
        check_nonzero(nblocks, "MoReAdapter: nblocks")?;
        check_nonzero(rank, "MoReAdapter: rank")?;
        if nblocks > in_features {
            return Err(Error::TooLarge {
                context: format!("MoReAdapter: nblocks for in_features = {in_features}"),
                value: nblocks,
                max: in_features,
            });
        }
        let ib = in_features.div_ceil(nblocks);
        let n = in_features.div_ceil(ib);
        let ob = (ib * out_features).div_ceil(in_features);
        let max = ib.min(ob);
        if rank > max {
            return Err(Error::TooLarge {
                context: format!(
                    "MoReAdapter({in_features}→{out_features}, nblocks={nblocks}): per-block rank \
                     (blocks are {ob}×r and r×{ib})"
                ),
                value: rank,
                max,
            });
        }
        Ok(((n, rank, ib), (n, ob, rank)))
    }

    /// Adapter parameters for the given sizes without building anything: `r·(in+out)` when `N`
    /// divides `in` and `out`, `N·r·(ib + ob)` in general.
    ///
    /// # Errors
    /// As [`shapes`](MoReAdapter::shapes).
    pub fn param_count(
        in_features: usize,
        out_features: usize,
        nblocks: usize,
        rank: usize,
    ) -> Result<usize> {
        let ((n, r, ib), (_, ob, _)) = Self::shapes(in_features, out_features, nblocks, rank)?;
        Ok(n * r * (ib + ob))
    }

    /// An adapter over the frozen `weight` (`out × in`) and optional `bias`, with the paper's
    /// initialisation: `blkdiag1` uniform in `±1/√ib` (seeded), `blkdiag2 = 0`. `dropout` is the
    /// probability applied to the adapter output in training mode.
    ///
    /// # Errors
    /// [`Error::ZeroSize`], [`Error::TooLarge`] as in [`shapes`](MoReAdapter::shapes);
    /// [`Error::ShapeMismatch`] for a bias that is not `(out,)`; [`Error::NonFinite`] for a
    /// NaN/infinite base; [`Error::InvalidArgument`] unless `0 ≤ dropout < 1`.
    pub fn new(
        weight: Array2<T>,
        bias: Option<Array1<T>>,
        nblocks: usize,
        rank: usize,
        dropout: f64,
        seed: u64,
    ) -> Result<Self> {
        check_base(&weight, bias.as_ref(), "MoReAdapter")?;
        let (out, inp) = weight.dim();
        let (s1, s2) = Self::shapes(inp, out, nblocks, rank)?;
        let size = std::mem::size_of::<T>();
        crate::primitives::error::check_alloc(
            &[s1.0, s1.1, s1.2],
            size,
            "MoReAdapter::new: first factor",
        )?;
        crate::primitives::error::check_alloc(
            &[s2.0, s2.1, s2.2],
            size,
            "MoReAdapter::new: second factor",
        )?;
        let b1 = uniform_array3::<T>(s1, 1.0 / (s1.2 as f64).sqrt(), seed);
        Self::from_factors(weight, bias, b1, Array3::zeros(s2), dropout)
    }

    /// An adapter from given factors (e.g. a checkpoint), `blkdiag1 (N, r, ib)`,
    /// `blkdiag2 (N, ob, r)`; `N` is read from `blkdiag1`.
    ///
    /// # Errors
    /// As [`new`](MoReAdapter::new); [`Error::ShapeMismatch`] if the factors do not have the
    /// shapes of [`shapes`](MoReAdapter::shapes) for their block count and rank;
    /// [`Error::NonFinite`] for NaN/infinite factors.
    pub fn from_factors(
        weight: Array2<T>,
        bias: Option<Array1<T>>,
        blkdiag1: Array3<T>,
        blkdiag2: Array3<T>,
        dropout: f64,
    ) -> Result<Self> {
        check_base(&weight, bias.as_ref(), "MoReAdapter")?;
        super::check_dropout(dropout)?;
        let (out, inp) = weight.dim();
        let (nb, rank, _) = blkdiag1.dim();
        let (s1, s2) = Self::shapes(inp, out, nb.max(1), rank.max(1))?;
        if blkdiag1.dim() != s1 || blkdiag2.dim() != s2 {
            return Err(Error::shape(
                format!("MoReAdapter({inp}→{out}): factor shapes (blkdiag1, blkdiag2)"),
                (s1, s2),
                (blkdiag1.dim(), blkdiag2.dim()),
            ));
        }
        if !blkdiag1
            .iter()
            .chain(blkdiag2.iter())
            .all(|v| v.is_finite())
        {
            return Err(Error::NonFinite {
                context: "MoReAdapter: factors".into(),
            });
        }
        Ok(MoReAdapter {
            weight,
            bias,
            monarch: Monarch::from_factors(blkdiag1, blkdiag2)?,
            rank,
            dropout,
            merged: false,
        })
    }

    /// The first factor, `(N, r, ib)`.
    pub fn blkdiag1(&self) -> &Array3<T> {
        self.monarch.w1()
    }
    /// The second factor, `(N, ob, r)` (zero at initialisation).
    pub fn blkdiag2(&self) -> &Array3<T> {
        self.monarch.w2()
    }
    /// Mutable first factor, for training updates.
    ///
    /// Changing it while merged makes [`unmerge`](Adapter::unmerge) subtract the new `ΔW`.
    pub fn blkdiag1_mut(&mut self) -> ArrayViewMut3<'_, T> {
        self.monarch.w1_mut()
    }
    /// Mutable second factor, for training updates (see [`blkdiag1_mut`](Self::blkdiag1_mut)).
    pub fn blkdiag2_mut(&mut self) -> ArrayViewMut3<'_, T> {
        self.monarch.w2_mut()
    }
    /// The padded Monarch `ΔW` is cut from (`N·ob × N·ib`).
    pub fn monarch(&self) -> &Monarch<T> {
        &self.monarch
    }
    /// The layer's current weight: `W0`, or `W0 + ΔW` while merged.
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }
    /// The frozen bias, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }
    /// Effective number of blocks `N`.
    pub fn nblocks(&self) -> usize {
        self.monarch.w1().dim().0
    }
    /// Per-block rank `r`.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Dropout probability on the adapter output (training mode only).
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// `ΔW x` on rows: `(batch, in) → (batch, out)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` does not have `in_features` columns.
    pub fn adapter_output(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        check_cols(x, self.in_features(), "MoReAdapter")?;
        let (out, inp) = self.weight.dim();
        let n = self.monarch.in_features();
        let y = if n == inp {
            self.monarch.matmul(x)?
        } else {
            self.monarch.matmul(self.pad(x).view())?
        };
        Ok(if y.ncols() == out {
            y
        } else {
            y.slice_move(s![.., ..out])
        })
    }

    fn pad(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut xp = Array2::zeros((x.nrows(), self.monarch.in_features()));
        xp.slice_mut(s![.., ..x.ncols()]).assign(&x);
        xp
    }

    fn forward_masked(&self, x: ArrayView2<T>, seed: Option<u64>) -> Result<Array2<T>> {
        check_cols(x, self.in_features(), "MoReAdapter::forward")?;
        frozen_plus_adapter(
            x,
            (&self.weight, self.bias.as_ref()),
            self.merged,
            (self.dropout, seed),
            || self.adapter_output(x),
        )
    }

    /// Gradients of `sum(forward(x) ⊙ grad_out)` in evaluation mode (no dropout). Works merged
    /// or not: the factor gradients are those of `ΔW` either way.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<MoReGrad<T>> {
        self.vjp_masked(x, grad_out, None)
    }

    /// Gradients of `sum(forward_train(x, seed) ⊙ grad_out)` (same dropout mask as the forward).
    ///
    /// # Errors
    /// As [`vjp`](MoReAdapter::vjp); [`Error::InvalidArgument`] while merged.
    pub fn vjp_train(
        &self,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        seed: u64,
    ) -> Result<MoReGrad<T>> {
        self.check_unmerged("MoReAdapter::vjp_train")?;
        self.vjp_masked(x, grad_out, Some(seed))
    }

    fn vjp_masked(
        &self,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        seed: Option<u64>,
    ) -> Result<MoReGrad<T>> {
        check_cols(x, self.in_features(), "MoReAdapter::vjp")?;
        let (out, inp) = self.weight.dim();
        check_grad(grad_out, x.nrows(), out, "MoReAdapter::vjp")?;
        // The weight already holds ΔW when merged: its input gradient covers both paths.
        let mut gx = grad_out.dot(&self.weight);
        let mut ga = Array2::zeros((x.nrows(), self.monarch.out_features()));
        ga.slice_mut(s![.., ..out]).assign(&grad_out);
        if let Some(seed) = seed {
            let mask = dropout_mask::<T>((x.nrows(), out), self.dropout, seed)?;
            let mut sub = ga.slice_mut(s![.., ..out]);
            sub *= &mask;
        }
        let g = if self.monarch.in_features() == inp {
            self.monarch.vjp(x, ga.view())?
        } else {
            self.monarch.vjp(self.pad(x).view(), ga.view())?
        };
        if !self.merged {
            gx += &g.x.slice(s![.., ..inp]);
        }
        Ok(MoReGrad {
            x: gx,
            blkdiag1: g.w1,
            blkdiag2: g.w2,
        })
    }

    fn check_unmerged(&self, ctx: &str) -> Result<()> {
        if self.merged {
            return Err(Error::invalid(format!(
                "{ctx}: the adapter is merged into the weight; unmerge before training"
            )));
        }
        Ok(())
    }
}

impl<T: RealScalar> Adapter<T> for MoReAdapter<T> {
    fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    fn out_features(&self) -> usize {
        self.weight.nrows()
    }
    /// `N·r·(ib + ob)`, which is `r·(in + out)` when `N` divides both sizes.
    fn num_params(&self) -> usize {
        self.monarch.num_params()
    }
    /// `min(N·r, in, out)`: `N·r` intermediate channels, each an independent rank-one path.
    fn max_rank(&self) -> usize {
        (self.nblocks() * self.rank)
            .min(self.in_features())
            .min(self.out_features())
    }
    fn delta_weight(&self) -> Array2<T> {
        let (out, inp) = self.weight.dim();
        self.monarch.to_dense().slice(s![..out, ..inp]).to_owned()
    }
    fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        self.forward_masked(x, None)
    }
    fn forward_train(&self, x: ArrayView2<T>, seed: u64) -> Result<Array2<T>> {
        self.check_unmerged("MoReAdapter::forward_train")?;
        self.forward_masked(x, Some(seed))
    }
    fn merge(&mut self) -> Result<()> {
        self.check_unmerged("MoReAdapter::merge")?;
        self.weight += &self.delta_weight();
        self.merged = true;
        Ok(())
    }
    fn unmerge(&mut self) -> Result<()> {
        if !self.merged {
            return Err(Error::invalid(
                "MoReAdapter::unmerge: the adapter is not merged",
            ));
        }
        self.weight -= &self.delta_weight();
        self.merged = false;
        Ok(())
    }
    fn is_merged(&self) -> bool {
        self.merged
    }
}

/// `blkdiag1`, `blkdiag2` (the trainable factors; the base layer is frozen).
impl<T: RealScalar> crate::primitives::params::Params<T> for MoReAdapter<T> {
    type Grad = MoReGrad<T>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, T>)) {
        f("blkdiag1", self.monarch.w1.w.view().into_dyn());
        f("blkdiag2", self.monarch.w2.w.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'a, T>)) {
        f("blkdiag1", self.monarch.w1.w.view_mut().into_dyn());
        f("blkdiag2", self.monarch.w2.w.view_mut().into_dyn());
    }
}

impl<T> crate::primitives::params::Grads<T> for MoReGrad<T> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, T>)) {
        f("blkdiag1", self.blkdiag1.view().into_dyn());
        f("blkdiag2", self.blkdiag2.view().into_dyn());
    }
}
