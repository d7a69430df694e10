//! GSOFT fine-tuning layers: `y = s ⊙ (W0 · Q x) + b` and Double GSOFT
//! `y = s ⊙ (Q_out · W0 · Q_in x) + b`, with a frozen `W0` and orthogonal GS matrices `Q`.

use super::layer::OrthGs;
use super::orthogonal::OrthMap;
use crate::primitives::error::{Error, Result};
use crate::primitives::nn::{check_cols, check_grad};
use crate::RealScalar;
use ndarray::{Array1, Array2, Array3, ArrayView2, Axis};

/// GSOFT: a frozen linear layer `W0` (`out × in`, optional bias) rotated on its input side by
/// an orthogonal GS matrix `Q` and rescaled per output: `y = s ⊙ (W0 Q x) + b`.
///
/// `Q` starts at the identity and `s` at one, so the layer starts equal to the base layer.
#[derive(Debug, Clone)]
pub struct GsoftLinear<T: RealScalar> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
    q: OrthGs<T>,
    scale: Array1<T>,
}

/// Gradients of `sum(y ⊙ grad_out)` for a [`GsoftLinear`].
#[derive(Debug, Clone, PartialEq)]
pub struct GsoftGrad<T> {
    /// With respect to the input, `(batch, in)`.
    pub x: Array2<T>,
    /// With respect to `Q`'s parameters, one `(k, b, b)` array per factor.
    pub params: Vec<Array3<T>>,
    /// With respect to the scale `s`, `(out,)`.
    pub scale: Array1<T>,
}

/// Gradients of `sum(y ⊙ grad_out)` for a [`DoubleGsoft`].
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleGsoftGrad<T> {
    /// With respect to the input, `(batch, in)`.
    pub x: Array2<T>,
    /// With respect to `Q_in`'s parameters.
    pub params_in: Vec<Array3<T>>,
    /// With respect to `Q_out`'s parameters.
    pub params_out: Vec<Array3<T>>,
    /// With respect to the scale `s`, `(out,)`.
    pub scale: Array1<T>,
}

fn scale_rows<T: RealScalar>(
    mut v: Array2<T>,
    s: &Array1<T>,
    bias: Option<&Array1<T>>,
) -> Array2<T> {
    v *= s;
    if let Some(b) = bias {
        v += b;
    }
    v
}

/// `Σ_batch g ⊙ v` and `g ⊙ s`.
fn scale_vjp<T: RealScalar>(
    g: ArrayView2<T>,
    v: &Array2<T>,
    s: &Array1<T>,
) -> (Array1<T>, Array2<T>) {
    let gs = (&g * v).sum_axis(Axis(0));
    let gv = &g * s;
    (gs, gv)
}

impl<T: RealScalar> GsoftLinear<T> {
    /// A GSOFT layer over the frozen `weight` with `Q` of block size `block` (dividing `in`)
    /// and `nfactors` block-diagonal factors (2 for the paper's layer), at the identity.
    ///
    /// # Errors
    /// [`Error::ZeroSize`], [`Error::NotDivisible`] unless `block` divides `in`;
    /// [`Error::ShapeMismatch`] for a wrong bias; [`Error::NonFinite`] for a NaN/Inf base.
    pub fn new(
        weight: Array2<T>,
        bias: Option<Array1<T>>,
        block: usize,
        nfactors: usize,
        map: OrthMap,
    ) -> Result<Self> {
        crate::primitives::nn::check_base(&weight, bias.as_ref(), "GsoftLinear")?;
        let q = OrthGs::identity(weight.ncols(), block, nfactors, map)?;
        let scale = Array1::ones(weight.nrows());
        Ok(GsoftLinear {
            weight,
            bias,
            q,
            scale,
        })
    }

    /// Replaces `Q` (e.g. from a checkpoint).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `q.n() != in`.
    pub fn with_q(mut self, q: OrthGs<T>) -> Result<Self> {
        if q.n() != self.weight.ncols() {
            return Err(Error::shape(
                "GsoftLinear::with_q: Q size (in_features)",
                self.weight.ncols(),
                q.n(),
            ));
        }
        self.q = q;
        Ok(self)
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }
    /// The frozen weight `W0`.
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }
    /// The frozen bias.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }
    /// The orthogonal factor `Q`.
    pub fn q(&self) -> &OrthGs<T> {
        &self.q
    }
    /// Mutable `Q`, for training updates.
    pub fn q_mut(&mut self) -> &mut OrthGs<T> {
        &mut self.q
    }
    /// The scale `s`.
    pub fn scale(&self) -> &Array1<T> {
        &self.scale
    }
    /// Mutable scale, for training updates.
    pub fn scale_mut(&mut self) -> &mut Array1<T> {
        &mut self.scale
    }
    /// Trainable parameters: `Q`'s stored parameters plus `out` scales.
    pub fn num_params(&self) -> usize {
        self.q.num_params() + self.scale.len()
    }

    /// `y = s ⊙ (W0 Q x) + b` on rows.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input width; [`Error::NonFinite`] for NaN parameters.
    pub fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        check_cols(x, self.in_features(), "GsoftLinear::forward")?;
        let v = self.q.forward(x)?.dot(&self.weight.t());
        Ok(scale_rows(v, &self.scale, self.bias.as_ref()))
    }

    /// The merged dense weight `diag(s) · W0 · Q`, so `forward(x) = x Wᵀ + b`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN parameters.
    pub fn merged_weight(&self) -> Result<Array2<T>> {
        let mut w = self.weight.dot(&self.q.to_dense()?);
        w *= &self.scale.view().insert_axis(Axis(1));
        Ok(w)
    }

    /// Folds `Q` and `s` into the frozen weight and resets them (identity, ones), so training
    /// can continue from the merged layer; outputs are unchanged (to rounding).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN parameters.
    pub fn merge_and_reset(&mut self) -> Result<()> {
        self.weight = self.merged_weight()?;
        for p in self.q.params_mut() {
            p.fill(T::zero());
        }
        self.scale.fill(T::one());
        Ok(())
    }

    /// Gradients of `sum(forward(x) ⊙ grad_out)` with respect to the input, `Q`'s parameters and
    /// the scale.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<GsoftGrad<T>> {
        check_cols(x, self.in_features(), "GsoftLinear::vjp")?;
        check_grad(grad_out, x.nrows(), self.out_features(), "GsoftLinear::vjp")?;
        let u = self.q.forward(x)?;
        let v = u.dot(&self.weight.t());
        let (gs, gv) = scale_vjp(grad_out, &v, &self.scale);
        let gu = gv.dot(&self.weight);
        let gq = self.q.vjp(x, gu.view())?;
        Ok(GsoftGrad {
            x: gq.x,
            params: gq.params,
            scale: gs,
        })
    }
}

/// Double GSOFT: `y = s ⊙ (Q_out · W0 · Q_in x) + b`, orthogonal GS matrices on both sides.
#[derive(Debug, Clone)]
pub struct DoubleGsoft<T: RealScalar> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
    q_in: OrthGs<T>,
    q_out: OrthGs<T>,
    scale: Array1<T>,
}

impl<T: RealScalar> DoubleGsoft<T> {
    /// A Double GSOFT layer at the identity: `Q_in` with blocks of `block_in` (dividing `in`),
    /// `Q_out` with blocks of `block_out` (dividing `out`), `nfactors` factors each.
    ///
    /// # Errors
    /// As [`GsoftLinear::new`], for both sides.
    pub fn new(
        weight: Array2<T>,
        bias: Option<Array1<T>>,
        block_in: usize,
        block_out: usize,
        nfactors: usize,
        map: OrthMap,
    ) -> Result<Self> {
        crate::primitives::nn::check_base(&weight, bias.as_ref(), "DoubleGsoft")?;
        let q_in = OrthGs::identity(weight.ncols(), block_in, nfactors, map)?;
        let q_out = OrthGs::identity(weight.nrows(), block_out, nfactors, map)?;
        let scale = Array1::ones(weight.nrows());
        Ok(DoubleGsoft {
            weight,
            bias,
            q_in,
            q_out,
            scale,
        })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }
    /// The frozen weight.
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }
    /// The frozen bias, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }

    /// `Q_in`.
    pub fn q_in(&self) -> &OrthGs<T> {
        &self.q_in
    }
    /// `Q_out`.
    pub fn q_out(&self) -> &OrthGs<T> {
        &self.q_out
    }
    /// Mutable `Q_in`.
    pub fn q_in_mut(&mut self) -> &mut OrthGs<T> {
        &mut self.q_in
    }
    /// Mutable `Q_out`.
    pub fn q_out_mut(&mut self) -> &mut OrthGs<T> {
        &mut self.q_out
    }
    /// The scale `s`.
    pub fn scale(&self) -> &Array1<T> {
        &self.scale
    }
    /// Mutable scale.
    pub fn scale_mut(&mut self) -> &mut Array1<T> {
        &mut self.scale
    }
    /// Trainable parameters: both `Q`s plus `out` scales.
    pub fn num_params(&self) -> usize {
        self.q_in.num_params() + self.q_out.num_params() + self.scale.len()
    }

    /// `y = s ⊙ (Q_out W0 Q_in x) + b` on rows.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input width; [`Error::NonFinite`] for NaN parameters.
    pub fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        check_cols(x, self.in_features(), "DoubleGsoft::forward")?;
        let v = self.q_in.forward(x)?.dot(&self.weight.t());
        let w = self.q_out.forward(v.view())?;
        Ok(scale_rows(w, &self.scale, self.bias.as_ref()))
    }

    /// The merged dense weight `diag(s) · Q_out · W0 · Q_in`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN parameters.
    pub fn merged_weight(&self) -> Result<Array2<T>> {
        let mut w = self
            .q_out
            .to_dense()?
            .dot(&self.weight)
            .dot(&self.q_in.to_dense()?);
        w *= &self.scale.view().insert_axis(Axis(1));
        Ok(w)
    }

    /// Folds both `Q`s and `s` into the frozen weight and resets them.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN parameters.
    pub fn merge_and_reset(&mut self) -> Result<()> {
        self.weight = self.merged_weight()?;
        for p in self
            .q_in
            .params_mut()
            .iter_mut()
            .chain(self.q_out.params_mut())
        {
            p.fill(T::zero());
        }
        self.scale.fill(T::one());
        Ok(())
    }

    /// Gradients of `sum(forward(x) ⊙ grad_out)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<DoubleGsoftGrad<T>> {
        check_cols(x, self.in_features(), "DoubleGsoft::vjp")?;
        check_grad(grad_out, x.nrows(), self.out_features(), "DoubleGsoft::vjp")?;
        let v = self.q_in.forward(x)?.dot(&self.weight.t());
        let w = self.q_out.forward(v.view())?;
        let (gs, gw) = scale_vjp(grad_out, &w, &self.scale);
        let go = self.q_out.vjp(v.view(), gw.view())?;
        let gu = go.x.dot(&self.weight);
        let gi = self.q_in.vjp(x, gu.view())?;
        Ok(DoubleGsoftGrad {
            x: gi.x,
            params_in: gi.params,
            params_out: go.params,
            scale: gs,
        })
    }
}

/// The name of `Q`'s factor `i` of `n`: `gsoft_R`, `gsoft_L` for the two-factor layer the
/// checkpoints store, `gsoft_q.{i}` otherwise.
fn factor_name(i: usize, n: usize) -> String {
    match (n, i) {
        (2, 0) => "gsoft_R".into(),
        (2, _) => "gsoft_L".into(),
        _ => format!("gsoft_q.{i}"),
    }
}

/// `Q`'s factors (`gsoft_R`, `gsoft_L`), then `gsoft_scale` (the base layer is frozen).
impl<T: RealScalar> crate::primitives::params::Params<T> for GsoftLinear<T> {
    type Grad = GsoftGrad<T>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, T>)) {
        let n = self.q.params().len();
        for (i, p) in self.q.params().iter().enumerate() {
            f(&factor_name(i, n), p.view().into_dyn());
        }
        f("gsoft_scale", self.scale.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'a, T>)) {
        let GsoftLinear { q, scale, .. } = self;
        let ps = q.params_mut();
        let n = ps.len();
        for (i, p) in ps.iter_mut().enumerate() {
            f(&factor_name(i, n), p.view_mut().into_dyn());
        }
        f("gsoft_scale", scale.view_mut().into_dyn());
    }
}

impl<T> crate::primitives::params::Grads<T> for GsoftGrad<T> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, T>)) {
        let n = self.params.len();
        for (i, p) in self.params.iter().enumerate() {
            f(&factor_name(i, n), p.view().into_dyn());
        }
        f("gsoft_scale", self.scale.view().into_dyn());
    }
}
