//! The LoRA baseline (Hu et al. 2021) with the same interface as [`MoReAdapter`](super::MoReAdapter):
//! `y = W0 x + b + dropout(s · B A x)`, `A` of shape `(r, in)`, `B` of shape `(out, r)`.
//!
//! Initialisation follows PEFT: `A` uniform in `±1/√in` (Kaiming-uniform with `a = √5`), `B = 0`,
//! scaling `s = α/r` (1 unless set with [`LoraAdapter::with_scaling`]). Parameters `r·(in+out)`,
//! rank at most `r`.
//!
//! ```
//! use monarch::more::{Adapter, LoraAdapter};
//! let w0 = monarch::primitives::random::normal_matrix::<f64>((32, 16), 0.1, 1);
//! let lora = LoraAdapter::new(w0, None, 2, 0.0, 7).unwrap();
//! assert_eq!(lora.num_params(), 2 * (16 + 32));
//! assert_eq!(lora.max_rank(), 2);
//! ```

use super::{dropout_mask, frozen_plus_adapter, Adapter};
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::nn::{check_base, check_cols, check_grad};
use crate::RealScalar;
use ndarray::{Array1, Array2, ArrayView2};
use rand::{Rng, SeedableRng};

/// A LoRA adapter over a frozen linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter<T: RealScalar> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
    lora_a: Array2<T>,
    lora_b: Array2<T>,
    scaling: T,
    dropout: f64,
    merged: bool,
}

/// Gradients of `sum(y ⊙ grad_out)` for a [`LoraAdapter`] (the base layer is frozen).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraGrad<T> {
    /// With respect to the input, `(batch, in_features)`.
    pub x: Array2<T>,
    /// With respect to `A`, `(r, in)`.
    pub lora_a: Array2<T>,
    /// With respect to `B`, `(out, r)`.
    pub lora_b: Array2<T>,
}

impl<T: RealScalar> LoraAdapter<T> {
    /// A rank-`rank` adapter over the frozen `weight` (`out × in`) and optional `bias`, PEFT
    /// initialisation (seeded), scaling 1.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for a zero rank or empty weight; [`Error::TooLarge`] if
    /// `rank > min(in, out)`; [`Error::ShapeMismatch`] for a wrong bias; [`Error::NonFinite`];
    /// [`Error::InvalidArgument`] unless `0 ≤ dropout < 1`.
    pub fn new(
        weight: Array2<T>,
        bias: Option<Array1<T>>,
        rank: usize,
        dropout: f64,
        seed: u64,
    ) -> Result<Self> {
        check_base(&weight, bias.as_ref(), "LoraAdapter")?;
        let (out, inp) = weight.dim();
        Self::check_rank(inp, out, rank)?;
        let size = std::mem::size_of::<T>();
        crate::primitives::error::check_alloc(&[rank, inp], size, "LoraAdapter::new: A")?;
        crate::primitives::error::check_alloc(&[out, rank], size, "LoraAdapter::new: B")?;
        let bound = 1.0 / (inp as f64).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let a = Array2::from_shape_simple_fn((rank, inp), || {
            T::from_f64(rng.random_range(-bound..=bound))
        });
        Self::from_factors(weight, bias, a, Array2::zeros((out, rank)), dropout)
    }

    fn check_rank(inp: usize, out: usize, rank: usize) -> Result<()> {
        check_nonzero(rank, "LoraAdapter: rank")?;
        if rank > inp.min(out) {
            return Err(Error::TooLarge {
                context: format!("LoraAdapter({inp}→{out}): rank"),
                value: rank,
                max: inp.min(out),
            });
        }
        Ok(())
    }

    /// An adapter from given factors `A (r, in)` and `B (out, r)`.
    ///
    /// # Errors
    /// As [`new`](LoraAdapter::new); [`Error::ShapeMismatch`] if the factors do not fit the weight.
    pub fn from_factors(
        weight: Array2<T>,
        bias: Option<Array1<T>>,
        lora_a: Array2<T>,
        lora_b: Array2<T>,
        dropout: f64,
    ) -> Result<Self> {
        check_base(&weight, bias.as_ref(), "LoraAdapter")?;
        super::check_dropout(dropout)?;
        let (out, inp) = weight.dim();
        let rank = lora_a.nrows();
        Self::check_rank(inp, out, rank)?;
        if lora_a.dim() != (rank, inp) || lora_b.dim() != (out, rank) {
            return Err(Error::shape(
                format!("LoraAdapter({inp}→{out}): factor shapes (A, B)"),
                ((rank, inp), (out, rank)),
                (lora_a.dim(), lora_b.dim()),
            ));
        }
        if !lora_a.iter().chain(lora_b.iter()).all(|v| v.is_finite()) {
            return Err(Error::NonFinite {
                context: "LoraAdapter: factors".into(),
            });
        }
        Ok(LoraAdapter {
            weight,
            bias,
            lora_a,
            lora_b,
            scaling: T::one(),
            dropout,
            merged: false,
        })
    }

    /// Sets the scaling `s = α/r` applied to `B A`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN/infinite scaling; [`Error::InvalidArgument`] while merged.
    pub fn with_scaling(mut self, scaling: T) -> Result<Self> {
        if !scaling.is_finite() {
            return Err(Error::NonFinite {
                context: "LoraAdapter: scaling".into(),
            });
        }
        if self.merged {
            return Err(Error::invalid("LoraAdapter::with_scaling: merged"));
        }
        self.scaling = scaling;
        Ok(self)
    }

    /// `A`, `(r, in)`.
    pub fn lora_a(&self) -> &Array2<T> {
        &self.lora_a
    }
    /// `B`, `(out, r)` (zero at initialisation).
    pub fn lora_b(&self) -> &Array2<T> {
        &self.lora_b
    }
    /// Mutable `A`, for training updates.
    pub fn lora_a_mut(&mut self) -> &mut Array2<T> {
        &mut self.lora_a
    }
    /// Mutable `B`, for training updates.
    pub fn lora_b_mut(&mut self) -> &mut Array2<T> {
        &mut self.lora_b
    }
    /// The layer's current weight: `W0`, or `W0 + ΔW` while merged.
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }
    /// The frozen bias, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.nrows()
    }
    /// The scaling `s`.
    pub fn scaling(&self) -> T {
        self.scaling
    }

    /// Dropout probability on the adapter output (training mode only).
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// `s · B A x` on rows.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` does not have `in_features` columns.
    pub fn adapter_output(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        check_cols(x, self.in_features(), "LoraAdapter")?;
        let mut y = x.dot(&self.lora_a.t()).dot(&self.lora_b.t());
        y.mapv_inplace(|v| v * self.scaling);
        Ok(y)
    }

    fn forward_masked(&self, x: ArrayView2<T>, seed: Option<u64>) -> Result<Array2<T>> {
        check_cols(x, self.in_features(), "LoraAdapter::forward")?;
        frozen_plus_adapter(
            x,
            (&self.weight, self.bias.as_ref()),
            self.merged,
            (self.dropout, seed),
            || self.adapter_output(x),
        )
    }

    /// Gradients of `sum(forward(x) ⊙ grad_out)` in evaluation mode.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<LoraGrad<T>> {
        self.vjp_masked(x, grad_out, None)
    }

    /// Gradients of `sum(forward_train(x, seed) ⊙ grad_out)`.
    ///
    /// # Errors
    /// As [`vjp`](LoraAdapter::vjp); [`Error::InvalidArgument`] while merged.
    pub fn vjp_train(
        &self,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        seed: u64,
    ) -> Result<LoraGrad<T>> {
        if self.merged {
            return Err(Error::invalid(
                "LoraAdapter::vjp_train: merged; unmerge before training",
            ));
        }
        self.vjp_masked(x, grad_out, Some(seed))
    }

    fn vjp_masked(
        &self,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        seed: Option<u64>,
    ) -> Result<LoraGrad<T>> {
        check_cols(x, self.in_features(), "LoraAdapter::vjp")?;
        check_grad(grad_out, x.nrows(), self.out_features(), "LoraAdapter::vjp")?;
        let mut gx = grad_out.dot(&self.weight);
        let mut ga = grad_out.mapv(|v| v * self.scaling);
        if let Some(seed) = seed {
            ga *= &dropout_mask::<T>(ga.dim(), self.dropout, seed)?;
        }
        let h = x.dot(&self.lora_a.t()); // (batch, r)
        let gh = ga.dot(&self.lora_b); // (batch, r)
        let gb = ga.t().dot(&h);
        let gan = gh.t().dot(&x);
        if !self.merged {
            gx += &gh.dot(&self.lora_a);
        }
        Ok(LoraGrad {
            x: gx,
            lora_a: gan,
            lora_b: gb,
        })
    }
}

impl<T: RealScalar> Adapter<T> for LoraAdapter<T> {
    fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    fn out_features(&self) -> usize {
        self.weight.nrows()
    }
    fn num_params(&self) -> usize {
        self.lora_a.len() + self.lora_b.len()
    }
    fn max_rank(&self) -> usize {
        self.rank()
    }
    fn delta_weight(&self) -> Array2<T> {
        let mut d = self.lora_b.dot(&self.lora_a);
        d.mapv_inplace(|v| v * self.scaling);
        d
    }
    fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        self.forward_masked(x, None)
    }
    fn forward_train(&self, x: ArrayView2<T>, seed: u64) -> Result<Array2<T>> {
        if self.merged {
            return Err(Error::invalid(
                "LoraAdapter::forward_train: merged; unmerge before training",
            ));
        }
        self.forward_masked(x, Some(seed))
    }
    fn merge(&mut self) -> Result<()> {
        if self.merged {
            return Err(Error::invalid("LoraAdapter::merge: already merged"));
        }
        self.weight += &self.delta_weight();
        self.merged = true;
        Ok(())
    }
    fn unmerge(&mut self) -> Result<()> {
        if !self.merged {
            return Err(Error::invalid(
                "LoraAdapter::unmerge: the adapter is not merged",
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

/// `lora_A.weight` `(r, in)`, `lora_B.weight` `(out, r)` (PEFT's names; the base layer is
/// frozen).
impl<T: RealScalar> crate::primitives::params::Params<T> for LoraAdapter<T> {
    type Grad = LoraGrad<T>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, T>)) {
        f("lora_A.weight", self.lora_a.view().into_dyn());
        f("lora_B.weight", self.lora_b.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'a, T>)) {
        f("lora_A.weight", self.lora_a.view_mut().into_dyn());
        f("lora_B.weight", self.lora_b.view_mut().into_dyn());
    }
}

impl<T> crate::primitives::params::Grads<T> for LoraGrad<T> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, T>)) {
        f("lora_A.weight", self.lora_a.view().into_dyn());
        f("lora_B.weight", self.lora_b.view().into_dyn());
    }
}
