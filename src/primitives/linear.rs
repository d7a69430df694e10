//! `MonarchLinear`: the rectangular Monarch layer of the reference codes, with zero-padding,
//! truncation and bias.
//!
//! For `in`, `out` and `nblocks = nb`: `ib = ⌈in/nb⌉`, `ob = ⌈out/nb⌉`; the input is zero-padded
//! to `nb·ib`, the Monarch applied, the output truncated to `out` and the bias added. If
//! `nb·ib < nb·ob` the factors are `w1 (nb, ib, ib)`, `w2 (nb, ob, ib)`, else `w1 (nb, ob, ib)`,
//! `w2 (nb, ob, ob)`. Initialisation: each factor uniform in `±1/√(block input width)`, bias
//! uniform in `±1/√out` (the reference's).
//!
//! ```
//! use monarch::MonarchLinear;
//! use monarch::ndarray::Array2;
//! let layer = MonarchLinear::<f32>::new(64, 128, 4, true, 0).unwrap();
//! assert_eq!(layer.monarch().w1().dim(), (4, 16, 16));
//! assert_eq!(layer.monarch().w2().dim(), (4, 32, 16));
//! let y = layer.forward(Array2::zeros((2, 64)).view()).unwrap();
//! assert_eq!(y.dim(), (2, 128));
//! ```

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::random::{try_uniform_array3, try_uniform_vec};
use crate::{Monarch, Scalar};
use ndarray::{s, Array1, Array2, Array3, ArrayView2, Axis};

/// A linear layer `y = M · pad(x) [..out] + bias` with a Monarch `M`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonarchLinear<T: Scalar> {
    in_features: usize,
    out_features: usize,
    nblocks: usize,
    pub(crate) monarch: Monarch<T>,
    pub(crate) bias: Option<Array1<T>>,
}

/// Gradients of `sum(y ⊙ grad_out)` for a [`MonarchLinear`].
#[derive(Debug, Clone, PartialEq)]
pub struct MonarchLinearGrad<T> {
    /// With respect to the input, `(batch, in_features)`.
    pub x: Array2<T>,
    /// With respect to `w1`.
    pub w1: Array3<T>,
    /// With respect to `w2`.
    pub w2: Array3<T>,
    /// With respect to the bias (if the layer has one).
    pub bias: Option<Array1<T>>,
}

/// A factor's shape `(nblocks, rows, cols)`.
pub type Shape3 = (usize, usize, usize);

/// Factor shapes `(w1, w2)` of `MonarchLinear(in, out, nblocks)`.
///
/// # Errors
/// [`Error::ZeroSize`] if any argument is zero, [`Error::TooLarge`] if the padded sizes or the
/// factors' element counts overflow.
pub fn monarch_linear_shapes(
    in_features: usize,
    out_features: usize,
    nblocks: usize,
) -> Result<(Shape3, Shape3)> {
    check_nonzero(in_features, "MonarchLinear: in_features")?;
    check_nonzero(out_features, "MonarchLinear: out_features")?;
    check_nonzero(nblocks, "MonarchLinear: nblocks")?;
    let ib = in_features.div_ceil(nblocks);
    let ob = out_features.div_ceil(nblocks);
    // The padded widths `nb·ib`, `nb·ob` can exceed usize for sizes near usize::MAX.
    let padded = |b: usize| {
        nblocks.checked_mul(b).ok_or_else(|| Error::TooLarge {
            context: format!("MonarchLinear({in_features}, {out_features}, nblocks={nblocks}): padded width nblocks·{b}"),
            value: b,
            max: usize::MAX / nblocks,
        })
    };
    let (pin, pout) = (padded(ib)?, padded(ob)?);
    let (s1, s2) = if pin < pout {
        ((nblocks, ib, ib), (nblocks, ob, ib))
    } else {
        ((nblocks, ob, ib), (nblocks, ob, ob))
    };
    for (s, name) in [(s1, "w1"), (s2, "w2")] {
        crate::primitives::error::checked_len(
            &[s.0, s.1, s.2],
            16,
            &format!("MonarchLinear: {name}"),
        )?;
    }
    Ok((s1, s2))
}

impl<T: Scalar> MonarchLinear<T> {
    /// A layer with the reference initialisation, seeded.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if any size is zero, [`Error::TooLarge`] if the factors' element
    /// counts overflow or they cannot be allocated.
    pub fn new(
        in_features: usize,
        out_features: usize,
        nblocks: usize,
        bias: bool,
        seed: u64,
    ) -> Result<Self> {
        let (s1, s2) = monarch_linear_shapes(in_features, out_features, nblocks)?;
        let size = std::mem::size_of::<T>();
        // Every part is checked (and its allocation tried) before any is filled.
        let check = crate::primitives::error::check_alloc;
        check(&[s1.0, s1.1, s1.2], size, "MonarchLinear::new: w1")?;
        check(&[s2.0, s2.1, s2.2], size, "MonarchLinear::new: w2")?;
        let w1 = try_uniform_array3::<T>(s1, 1.0 / (s1.2 as f64).sqrt(), seed)?;
        let w2 = try_uniform_array3::<T>(s2, 1.0 / (s2.2 as f64).sqrt(), seed.wrapping_add(1))?;
        let b = bias
            .then(|| {
                let bound = 1.0 / (out_features as f64).sqrt();
                try_uniform_vec::<T>(out_features, bound, seed.wrapping_add(2))
            })
            .transpose()?;
        Self::from_weights(in_features, out_features, w1, w2, b)
    }

    /// A layer from given factors (e.g. loaded from a checkpoint) and optional bias.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the factors do not have the shapes of
    /// [`monarch_linear_shapes`] for some `nblocks`, or the bias is not `(out_features,)`.
    pub fn from_weights(
        in_features: usize,
        out_features: usize,
        w1: Array3<T>,
        w2: Array3<T>,
        bias: Option<Array1<T>>,
    ) -> Result<Self> {
        let nblocks = w1.dim().0;
        let (s1, s2) = monarch_linear_shapes(in_features, out_features, nblocks)?;
        if w1.dim() != s1 || w2.dim() != s2 {
            return Err(Error::shape(
                format!("MonarchLinear({in_features}, {out_features}, nblocks={nblocks}): factor shapes (w1, w2)"),
                (s1, s2),
                (w1.dim(), w2.dim()),
            ));
        }
        if let Some(b) = &bias {
            if b.len() != out_features {
                return Err(Error::shape(
                    "MonarchLinear: bias length",
                    out_features,
                    b.len(),
                ));
            }
        }
        Ok(MonarchLinear {
            in_features,
            out_features,
            nblocks,
            monarch: Monarch::from_factors(w1, w2)?,
            bias,
        })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// Number of blocks per factor.
    pub fn nblocks(&self) -> usize {
        self.nblocks
    }
    /// The underlying (padded) Monarch.
    pub fn monarch(&self) -> &Monarch<T> {
        &self.monarch
    }
    /// Mutable access to the underlying Monarch (for training updates).
    pub fn monarch_mut(&mut self) -> &mut Monarch<T> {
        &mut self.monarch
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }
    /// Mutable bias, if any.
    pub fn bias_mut(&mut self) -> Option<&mut Array1<T>> {
        self.bias.as_mut()
    }
    /// Trainable parameters (both factors plus bias).
    pub fn num_params(&self) -> usize {
        self.monarch.num_params() + self.bias.as_ref().map_or(0, |b| b.len())
    }

    fn pad(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        if x.ncols() != self.in_features {
            return Err(Error::shape(
                "MonarchLinear: input columns",
                self.in_features,
                x.ncols(),
            ));
        }
        let n = self.monarch.in_features();
        let mut xp = Array2::zeros((x.nrows(), n));
        xp.slice_mut(s![.., ..self.in_features]).assign(&x);
        Ok(xp)
    }

    /// `y = M · pad(x) [..out] + bias` on rows: `(batch, in) → (batch, out)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` does not have `in_features` columns.
    pub fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        let y = if x.ncols() == self.monarch.in_features() && x.ncols() == self.in_features {
            self.monarch.matmul(x)?
        } else {
            self.monarch.matmul(self.pad(x)?.view())?
        };
        // Truncation copies so callers always get a contiguous (standard-layout) array.
        let mut y = if y.ncols() == self.out_features {
            y
        } else {
            y.slice(s![.., ..self.out_features]).to_owned()
        };
        if let Some(b) = &self.bias {
            y += b;
        }
        Ok(y)
    }

    /// The dense `out × in` weight the layer applies (without the bias).
    pub fn to_dense(&self) -> Array2<T> {
        self.monarch
            .to_dense()
            .slice(s![..self.out_features, ..self.in_features])
            .to_owned()
    }

    /// Gradients of `sum(forward(x) ⊙ grad_out)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<MonarchLinearGrad<T>> {
        let xp = self.pad(x)?;
        if grad_out.dim() != (x.nrows(), self.out_features) {
            return Err(Error::shape(
                "MonarchLinear::vjp: grad_out shape",
                (x.nrows(), self.out_features),
                grad_out.dim(),
            ));
        }
        let mut gp = Array2::zeros((x.nrows(), self.monarch.out_features()));
        gp.slice_mut(s![.., ..self.out_features]).assign(&grad_out);
        let g = self.monarch.vjp(xp.view(), gp.view())?;
        Ok(MonarchLinearGrad {
            x: if g.x.ncols() == self.in_features {
                g.x
            } else {
                g.x.slice(s![.., ..self.in_features]).to_owned()
            },
            w1: g.w1,
            w2: g.w2,
            bias: self.bias.as_ref().map(|_| grad_out.sum_axis(Axis(0))),
        })
    }
}
