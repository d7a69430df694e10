//! Small dense building blocks shared by several paper modules (the M2 and PK mixers, the
//! adapters' shape checks): exact-erf GELU, LayerNorm and a
//! dense linear layer, each with its vector-Jacobian product.
//!
//! ```
//! use monarch::primitives::nn::{gelu, LayerNorm};
//! use monarch::ndarray::array;
//! assert!((gelu(1.0f64) - 0.8413447460685429).abs() < 1e-15);
//! let ln = LayerNorm::<f64>::new(2, 1e-12).unwrap();
//! let y = ln.forward(array![[1.0, 3.0]].view()).unwrap();
//! assert!((y[[0, 0]] + 1.0).abs() < 1e-9 && (y[[0, 1]] - 1.0).abs() < 1e-9);
//! ```

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::RealScalar;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

/// The error function, to about 1e-15 relative, from the all-positive series
/// `erf x = 2/√π · e^{−x²} · Σₙ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))` (no cancellation), which is
/// exact enough for PyTorch's `GELU(approximate='none')` without a libm dependency.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        // erfc(6) ≈ 2e-17: below half an ulp of 1.
        return x.signum();
    }
    let x2 = a * a;
    let mut term = a;
    let mut sum = a;
    let mut n = 0.0;
    while term > sum * 1e-17 {
        term *= 2.0 * x2 / (2.0 * n + 3.0);
        sum += term;
        n += 1.0;
    }
    let v = 2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum;
    v.min(1.0).copysign(x)
}

/// `GELU(x) = x · Φ(x) = x/2 · (1 + erf(x/√2))` (the exact, not the tanh, form).
pub fn gelu<R: RealScalar>(x: R) -> R {
    let xf = x.to_f64_val();
    R::from_f64(0.5 * xf * (1.0 + erf(xf / std::f64::consts::SQRT_2)))
}

/// `d GELU / dx = Φ(x) + x·φ(x)`.
pub fn gelu_grad<R: RealScalar>(x: R) -> R {
    let xf = x.to_f64_val();
    let cdf = 0.5 * (1.0 + erf(xf / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
    R::from_f64(cdf + xf * pdf)
}

/// Elementwise activations used by the mixers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `φ(x) = x`.
    #[default]
    Identity,
    /// Exact (erf) GELU.
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    /// `φ(x)`.
    pub fn apply<R: RealScalar>(self, x: R) -> R {
        match self {
            Activation::Identity => x,
            Activation::Gelu => gelu(x),
            Activation::Relu => x.max(R::zero()),
        }
    }
    /// `φ'(x)`.
    pub fn grad<R: RealScalar>(self, x: R) -> R {
        match self {
            Activation::Identity => R::one(),
            Activation::Gelu => gelu_grad(x),
            Activation::Relu => {
                if x > R::zero() {
                    R::one()
                } else {
                    R::zero()
                }
            }
        }
    }
}

/// LayerNorm over the last axis of rows: `y = (x − μ)/√(σ² + eps) · weight + bias`, σ² biased
/// (PyTorch's `nn.LayerNorm`).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm<R> {
    /// Scale, `(width,)`.
    pub weight: Array1<R>,
    /// Shift, `(width,)`.
    pub bias: Array1<R>,
    /// Added to the variance.
    pub eps: R,
}

/// Gradients of a [`LayerNorm`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormGrad<R> {
    /// With respect to the input rows.
    pub x: Array2<R>,
    /// With respect to `weight`.
    pub weight: Array1<R>,
    /// With respect to `bias`.
    pub bias: Array1<R>,
}

impl<R: RealScalar> LayerNorm<R> {
    /// Unit weight, zero bias.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `width == 0`.
    pub fn new(width: usize, eps: R) -> Result<Self> {
        check_nonzero(width, "LayerNorm: width")?;
        Ok(LayerNorm {
            weight: Array1::ones(width),
            bias: Array1::zeros(width),
            eps,
        })
    }

    /// From given parameters.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the lengths differ, [`Error::ZeroSize`] if empty,
    /// [`Error::InvalidArgument`] unless `eps ≥ 0`.
    pub fn from_params(weight: Array1<R>, bias: Array1<R>, eps: R) -> Result<Self> {
        check_nonzero(weight.len(), "LayerNorm: width")?;
        if bias.len() != weight.len() {
            return Err(Error::shape(
                "LayerNorm: bias length",
                weight.len(),
                bias.len(),
            ));
        }
        if eps.is_nan() || eps < R::zero() {
            return Err(Error::invalid(format!(
                "LayerNorm: eps = {eps} must be ≥ 0"
            )));
        }
        Ok(LayerNorm { weight, bias, eps })
    }

    /// Normalised width.
    pub fn width(&self) -> usize {
        self.weight.len()
    }

    fn check(&self, x: ArrayView2<R>, ctx: &str) -> Result<()> {
        if x.ncols() != self.width() {
            return Err(Error::shape(
                format!("{ctx}: input columns"),
                self.width(),
                x.ncols(),
            ));
        }
        Ok(())
    }

    fn stats(&self, row: ArrayView1<R>) -> (R, R) {
        let n = R::from_f64(row.len() as f64);
        let mean = row.sum() / n;
        let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<R>() / n;
        (mean, R::one() / (var + self.eps).sqrt())
    }

    /// Normalises every row.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x.ncols() != width`.
    pub fn forward(&self, x: ArrayView2<R>) -> Result<Array2<R>> {
        self.check(x, "LayerNorm::forward")?;
        let mut y = x.to_owned();
        for mut row in y.rows_mut() {
            let (mean, rstd) = self.stats(row.view());
            for ((v, &w), &b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) * rstd * w + b;
            }
        }
        Ok(y)
    }

    /// VJP of [`forward`](LayerNorm::forward).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, x: ArrayView2<R>, grad_out: ArrayView2<R>) -> Result<LayerNormGrad<R>> {
        self.check(x, "LayerNorm::vjp")?;
        if grad_out.dim() != x.dim() {
            return Err(Error::shape(
                "LayerNorm::vjp: grad_out shape",
                x.dim(),
                grad_out.dim(),
            ));
        }
        let w = self.width();
        let n = R::from_f64(w as f64);
        let mut gx = Array2::zeros(x.raw_dim());
        let mut gw = Array1::zeros(w);
        let mut gb = Array1::zeros(w);
        let mut xhat = vec![R::zero(); w];
        let mut gh = vec![R::zero(); w];
        for ((xr, gr), mut gxr) in x.rows().into_iter().zip(grad_out.rows()).zip(gx.rows_mut()) {
            let (mean, rstd) = self.stats(xr);
            for j in 0..w {
                xhat[j] = (xr[j] - mean) * rstd;
                gh[j] = gr[j] * self.weight[j];
                gw[j] += gr[j] * xhat[j];
                gb[j] += gr[j];
            }
            let mg = gh.iter().copied().sum::<R>() / n;
            let mgx = gh.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<R>() / n;
            for j in 0..w {
                gxr[j] = rstd * (gh[j] - mg - xhat[j] * mgx);
            }
        }
        Ok(LayerNormGrad {
            x: gx,
            weight: gw,
            bias: gb,
        })
    }
}

/// A dense linear layer `y = x·Wᵀ + b` with `W` stored `(out, in)` (PyTorch's `nn.Linear`).
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<R> {
    /// Weight, `(out, in)`.
    pub weight: Array2<R>,
    /// Optional bias, `(out,)`.
    pub bias: Option<Array1<R>>,
}

/// Gradients of a [`Linear`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearGrad<R> {
    /// With respect to the input rows.
    pub x: Array2<R>,
    /// With respect to the weight.
    pub weight: Array2<R>,
    /// With respect to the bias (if any).
    pub bias: Option<Array1<R>>,
}

impl<R: RealScalar> Linear<R> {
    /// From a weight `(out, in)` and an optional bias `(out,)`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for an empty weight, [`Error::ShapeMismatch`] for a bias of the wrong length.
    pub fn new(weight: Array2<R>, bias: Option<Array1<R>>) -> Result<Self> {
        check_nonzero(weight.nrows(), "Linear: out features")?;
        check_nonzero(weight.ncols(), "Linear: in features")?;
        if let Some(b) = &bias {
            if b.len() != weight.nrows() {
                return Err(Error::shape("Linear: bias length", weight.nrows(), b.len()));
            }
        }
        Ok(Linear { weight, bias })
    }

    /// PyTorch's default init: weight and bias uniform in `±1/√in`, seeded.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if a size is zero.
    pub fn random(in_features: usize, out_features: usize, bias: bool, seed: u64) -> Result<Self> {
        check_nonzero(in_features, "Linear: in features")?;
        check_nonzero(out_features, "Linear: out features")?;
        crate::primitives::error::check_alloc(
            &[out_features, in_features],
            std::mem::size_of::<R>(),
            "Linear::random",
        )?;
        let bound = 1.0 / (in_features as f64).sqrt();
        let w = crate::primitives::random::uniform_array3::<R>(
            (1, out_features, in_features),
            bound,
            seed,
        )
        .index_axis_move(Axis(0), 0);
        let b = bias.then(|| {
            crate::primitives::random::uniform_vec::<R>(out_features, bound, seed ^ 0x5eed)
        });
        Self::new(w, b)
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    fn check(&self, x: ArrayView2<R>, ctx: &str) -> Result<()> {
        if x.ncols() != self.in_features() {
            return Err(Error::shape(
                format!("{ctx}: input columns"),
                self.in_features(),
                x.ncols(),
            ));
        }
        Ok(())
    }

    /// `x·Wᵀ + b` for rows `x` `(batch, in)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x.ncols() != in`.
    pub fn forward(&self, x: ArrayView2<R>) -> Result<Array2<R>> {
        self.check(x, "Linear::forward")?;
        let mut y = standard(x.dot(&self.weight.t()));
        if let Some(b) = &self.bias {
            y += b;
        }
        Ok(y)
    }

    /// VJP of [`forward`](Linear::forward).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, x: ArrayView2<R>, grad_out: ArrayView2<R>) -> Result<LinearGrad<R>> {
        self.check(x, "Linear::vjp")?;
        if grad_out.dim() != (x.nrows(), self.out_features()) {
            return Err(Error::shape(
                "Linear::vjp: grad_out shape",
                (x.nrows(), self.out_features()),
                grad_out.dim(),
            ));
        }
        Ok(LinearGrad {
            x: standard(grad_out.dot(&self.weight)),
            weight: grad_out.t().dot(&x),
            bias: self.bias.as_ref().map(|_| grad_out.sum_axis(Axis(0))),
        })
    }
}

/// `a` in row-major layout (a product with a degenerate dimension can come back column-major,
/// and callers reshape the result).
pub(crate) fn standard<R: Clone>(a: Array2<R>) -> Array2<R> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Returns [`Error::NonFinite`] if any entry is NaN or infinite.
pub(crate) fn check_finite<'a, R: RealScalar>(
    it: impl IntoIterator<Item = &'a R>,
    ctx: &str,
) -> Result<()> {
    if it.into_iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            context: ctx.into(),
        })
    }
}

/// Validates a frozen base layer: non-empty finite `out × in` weight, bias of length `out`.
pub(crate) fn check_base<T: RealScalar>(
    weight: &Array2<T>,
    bias: Option<&Array1<T>>,
    ctx: &str,
) -> Result<()> {
    let (out, inp) = weight.dim();
    crate::primitives::error::check_nonzero(out, &format!("{ctx}: weight rows (out_features)"))?;
    crate::primitives::error::check_nonzero(inp, &format!("{ctx}: weight columns (in_features)"))?;
    if !weight.iter().all(|v| v.is_finite()) {
        return Err(Error::NonFinite {
            context: format!("{ctx}: base weight"),
        });
    }
    if let Some(b) = bias {
        if b.len() != out {
            return Err(Error::shape(
                format!("{ctx}: bias length (out_features of the {out}×{inp} weight)"),
                out,
                b.len(),
            ));
        }
        if !b.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFinite {
                context: format!("{ctx}: base bias"),
            });
        }
    }
    Ok(())
}

/// Checks that `x` has `n` columns.
pub(crate) fn check_cols<T>(x: ArrayView2<T>, n: usize, ctx: &str) -> Result<()> {
    if x.ncols() != n {
        return Err(Error::shape(
            format!("{ctx}: input columns (in_features)"),
            n,
            x.ncols(),
        ));
    }
    Ok(())
}

/// Checks that `g` is `(batch, out)`.
pub(crate) fn check_grad<T>(g: ArrayView2<T>, batch: usize, out: usize, ctx: &str) -> Result<()> {
    if g.dim() != (batch, out) {
        return Err(Error::shape(
            format!("{ctx}: grad_out shape (batch, out_features)"),
            (batch, out),
            g.dim(),
        ));
    }
    Ok(())
}
