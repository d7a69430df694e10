//! The implicit long-convolution filter of M2-BERT (`HyenaFilter` in the authors' code): the
//! kernels are not stored but generated from positions by a small sine-activated MLP.
//!
//! For `l_max` positions the features are `z = [t, cos(f·w), −sin(f·w)]` (`emb_dim = 1 + 2·bands`,
//! `t = linspace(0, 1, l_max)`, `w = 2π·i/l_max`, `f = linspace(1e-4, bands − 1, bands)`); then
//! `Linear → sin(w_mod·freq·x) → (Linear → sin)×inner → Linear(no bias)` gives `(L, H)`, multiplied
//! by the modulation `exp(−t·|δ_h|) + shift`. One `freq` vector is shared by every sine layer of
//! both the forward and the reverse MLP (the authors reuse one `Sin` module). `z` is a trained
//! parameter (tiny learning rate in their code); `t` and `δ` are fixed buffers. The filter's
//! `bias` is the convolution's skip weight `D`.
//!
//! ```
//! use monarch::mixer::ImplicitFilter;
//! let f = ImplicitFilter::<f64>::random(4, 32, 16, 5, true, 0).unwrap();
//! let (k_fwd, k_rev) = f.kernels(32).unwrap();
//! assert_eq!(k_fwd.dim(), (4, 32));
//! assert_eq!(k_rev.unwrap().dim(), (4, 32));
//! assert!(f.kernels(33).is_err()); // longer than l_max
//! ```

use super::nn::{Linear, LinearGrad};
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::RealScalar;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

/// The sine-activated MLP of one direction: `layers[0]` is `emb_dim → order`, inner layers
/// `order → order`, the last `order → H` without bias; a sine follows every layer but the last.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterMlp<R> {
    /// The linear layers, in order.
    pub layers: Vec<Linear<R>>,
}

/// Gradients of an [`ImplicitFilter`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImplicitFilterGrad<R> {
    /// Per linear layer of the forward MLP (`x` holds the gradient of that layer's input).
    pub mlp_fwd: Vec<LinearGrad<R>>,
    /// Same for the reverse MLP.
    pub mlp_rev: Option<Vec<LinearGrad<R>>>,
    /// With respect to the shared sine frequencies `(order,)`.
    pub freq: Array1<R>,
    /// With respect to the positional features `z` `(l_max, emb_dim)` (zero past `L`).
    pub z: Array2<R>,
}

/// M2-BERT's implicit filter (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ImplicitFilter<R> {
    /// Positional features `(l_max, emb_dim)`.
    pub z: Array2<R>,
    /// Normalised time `(l_max,)`.
    pub t: Array1<R>,
    /// MLP producing `k_fwd`.
    pub mlp_fwd: FilterMlp<R>,
    /// MLP producing `k_rev` (bidirectional filters only).
    pub mlp_rev: Option<FilterMlp<R>>,
    /// Sine frequencies `(order,)`, shared by every sine layer.
    pub freq: Array1<R>,
    /// Fixed multiplier of `freq`.
    pub w_mod: R,
    /// Decay rates `δ` `(H,)`.
    pub deltas: Array1<R>,
    /// Added to the decay.
    pub shift: R,
    /// Skip weights `D` `(H,)` of the convolution that uses these kernels.
    pub bias: Array1<R>,
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => (0..n)
            .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

impl<R: RealScalar> ImplicitFilter<R> {
    /// The positional features `(z, t)` of the authors' `PositionalEmbedding(emb_dim, l_max)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `emb_dim` is odd and ≥ 3; [`Error::ZeroSize`] if `l_max == 0`.
    pub fn positional_features(emb_dim: usize, l_max: usize) -> Result<(Array2<R>, Array1<R>)> {
        check_nonzero(l_max, "ImplicitFilter: l_max")?;
        if emb_dim < 3 || emb_dim.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "ImplicitFilter: emb_dim = {emb_dim} must be odd and ≥ 3 (time, cosines, sines)"
            )));
        }
        let bands = (emb_dim - 1) / 2;
        let t = linspace(0.0, 1.0, l_max);
        let f = linspace(1e-4, (bands - 1) as f64, bands);
        let ctx = "ImplicitFilter::positional_features";
        let mut z: Array2<R> =
            crate::primitives::error::try_zeros(ndarray::Dim([l_max, emb_dim]), ctx)?;
        for i in 0..l_max {
            let w = 2.0 * std::f64::consts::PI * i as f64 / l_max as f64;
            z[[i, 0]] = R::from_f64(t[i]);
            for (j, &fj) in f.iter().enumerate() {
                z[[i, 1 + j]] = R::from_f64((fj * w).cos());
                z[[i, 1 + bands + j]] = R::from_f64(-(fj * w).sin());
            }
        }
        Ok((z, t.into_iter().map(R::from_f64).collect()))
    }

    /// A seeded filter with the authors' initialisation: PyTorch default linear init,
    /// `freq = w = 10` (M2-BERT's `hyena_w`), `w_mod = 1`, `δ = linspace(ln(1e-2)/1.5,
    /// ln(1e-2)/0.3, H)`, `shift = 0`, two inner layers, `D` standard normal.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for zero sizes; as [`positional_features`](Self::positional_features).
    pub fn random(
        channels: usize,
        l_max: usize,
        order: usize,
        emb_dim: usize,
        bidirectional: bool,
        seed: u64,
    ) -> Result<Self> {
        check_nonzero(channels, "ImplicitFilter: channels H")?;
        check_nonzero(order, "ImplicitFilter: order")?;
        let (z, t) = Self::positional_features(emb_dim, l_max)?;
        let mlp = |s: u64| -> Result<FilterMlp<R>> {
            let mut layers = vec![Linear::random(emb_dim, order, true, s)?];
            for i in 0..2 {
                layers.push(Linear::random(order, order, true, s + 1 + i)?);
            }
            layers.push(Linear::random(order, channels, false, s + 3)?);
            Ok(FilterMlp { layers })
        };
        let deltas = linspace((0.01f64).ln() / 1.5, (0.01f64).ln() / 0.3, channels);
        let bias = crate::primitives::random::normal_matrix::<R>((1, channels), 1.0, seed ^ 0xb1a5)
            .index_axis_move(Axis(0), 0);
        Ok(ImplicitFilter {
            z,
            t,
            mlp_fwd: mlp(seed.wrapping_mul(7919))?,
            mlp_rev: if bidirectional {
                Some(mlp(seed.wrapping_mul(7919) + 100)?)
            } else {
                None
            },
            freq: Array1::from_elem(order, R::from_f64(10.0)),
            w_mod: R::one(),
            deltas: deltas.into_iter().map(R::from_f64).collect(),
            shift: R::zero(),
            bias,
        })
    }

    /// Number of channels `H`.
    pub fn channels(&self) -> usize {
        self.deltas.len()
    }
    /// Longest sequence the filter was built for.
    pub fn l_max(&self) -> usize {
        self.z.nrows()
    }
    /// True if it also generates `k_rev`.
    pub fn is_bidirectional(&self) -> bool {
        self.mlp_rev.is_some()
    }

    fn check_len(&self, l: usize) -> Result<()> {
        check_nonzero(l, "ImplicitFilter: sequence length")?;
        if self.t.len() != self.l_max() || self.bias.len() != self.channels() {
            return Err(Error::shape(
                "ImplicitFilter: t length (l_max) and bias length (H)",
                (self.l_max(), self.channels()),
                (self.t.len(), self.bias.len()),
            ));
        }
        if l > self.l_max() {
            return Err(Error::TooLarge {
                context: "ImplicitFilter: sequence length vs l_max".into(),
                value: l,
                max: self.l_max(),
            });
        }
        Ok(())
    }

    /// Runs one MLP on `z[..l]`, returning the pre-activations of every layer (the last is the
    /// raw `(l, H)` output).
    fn mlp_pre(&self, mlp: &FilterMlp<R>, z: ArrayView2<R>) -> Result<Vec<Array2<R>>> {
        let mut pre = Vec::with_capacity(mlp.layers.len());
        let mut h = z.to_owned();
        for (i, layer) in mlp.layers.iter().enumerate() {
            let a = layer.forward(h.view())?;
            if i + 1 < mlp.layers.len() {
                h = self.sin_act(a.view())?;
            }
            pre.push(a);
        }
        Ok(pre)
    }

    fn sin_act(&self, a: ArrayView2<R>) -> Result<Array2<R>> {
        if a.ncols() != self.freq.len() {
            return Err(Error::shape(
                "ImplicitFilter: sine width (order) vs freq length",
                self.freq.len(),
                a.ncols(),
            ));
        }
        let mut h = a.to_owned();
        for mut row in h.rows_mut() {
            row.zip_mut_with(&self.freq, |v, &f| *v = (self.w_mod * f * *v).sin());
        }
        Ok(h)
    }

    fn modulation(&self, l: usize) -> Array2<R> {
        Array2::from_shape_fn((l, self.channels()), |(i, c)| {
            (-self.t[i] * self.deltas[c].abs()).exp() + self.shift
        })
    }

    /// The kernels `(k_fwd, k_rev)` for sequence length `l ≤ l_max`, each `(H, l)`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `l > l_max`; [`Error::ShapeMismatch`] for inconsistent parameters.
    pub fn kernels(&self, l: usize) -> Result<(Array2<R>, Option<Array2<R>>)> {
        self.check_len(l)?;
        let z = self.z.slice(s![..l, ..]);
        let md = self.modulation(l);
        let one = |mlp: &FilterMlp<R>| -> Result<Array2<R>> {
            let pre = self.mlp_pre(mlp, z)?;
            let out = pre.last().expect("at least one layer") * &md;
            if out.ncols() != self.channels() {
                return Err(Error::shape(
                    "ImplicitFilter: last layer width vs H",
                    self.channels(),
                    out.ncols(),
                ));
            }
            Ok(out.reversed_axes().as_standard_layout().into_owned())
        };
        let kf = one(&self.mlp_fwd)?;
        let kr = self.mlp_rev.as_ref().map(one).transpose()?;
        Ok((kf, kr))
    }

    /// VJP of [`kernels`](Self::kernels) for upstream gradients of `k_fwd` and `k_rev` `(H, l)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if a gradient has the wrong shape or `grad_rev` is missing/extra.
    pub fn vjp(
        &self,
        l: usize,
        grad_fwd: ArrayView2<R>,
        grad_rev: Option<ArrayView2<R>>,
    ) -> Result<ImplicitFilterGrad<R>> {
        self.check_len(l)?;
        let hdim = self.channels();
        if grad_fwd.dim() != (hdim, l) {
            return Err(Error::shape(
                "ImplicitFilter::vjp: grad_fwd (H, L)",
                (hdim, l),
                grad_fwd.dim(),
            ));
        }
        if grad_rev.is_some() != self.is_bidirectional() {
            return Err(Error::invalid(
                "ImplicitFilter::vjp: grad_rev must be given exactly when the filter is bidirectional",
            ));
        }
        let z = self.z.slice(s![..l, ..]);
        let md = self.modulation(l);
        let mut gfreq = Array1::zeros(self.freq.len());
        let mut gz = Array2::zeros(self.z.raw_dim());
        let mut one = |mlp: &FilterMlp<R>, g: ArrayView2<R>| -> Result<Vec<LinearGrad<R>>> {
            if g.dim() != (hdim, l) {
                return Err(Error::shape(
                    "ImplicitFilter::vjp: grad_rev (H, L)",
                    (hdim, l),
                    g.dim(),
                ));
            }
            let pre = self.mlp_pre(mlp, z)?;
            let nl = mlp.layers.len();
            let mut g = &g.t() * &md;
            let mut grads = Vec::with_capacity(nl);
            for i in (0..nl).rev() {
                let input = if i == 0 {
                    z.to_owned()
                } else {
                    self.sin_act(pre[i - 1].view())?
                };
                let lg = mlp.layers[i].vjp(input.view(), g.view())?;
                if i > 0 {
                    // Through h = sin(w_mod·freq·a): dh/da = w_mod·freq·cos, dh/dfreq = w_mod·a·cos.
                    let a = &pre[i - 1];
                    let mut ga = lg.x.clone();
                    for ((mut gr, ar), _) in ga.rows_mut().into_iter().zip(a.rows()).zip(0..) {
                        for j in 0..gr.len() {
                            let c = (self.w_mod * self.freq[j] * ar[j]).cos();
                            gfreq[j] += gr[j] * self.w_mod * ar[j] * c;
                            gr[j] = gr[j] * self.w_mod * self.freq[j] * c;
                        }
                    }
                    g = ga;
                } else {
                    let mut gzl = gz.slice_mut(s![..l, ..]);
                    gzl += &lg.x;
                }
                grads.push(lg);
            }
            grads.reverse();
            Ok(grads)
        };
        let mlp_fwd = one(&self.mlp_fwd, grad_fwd)?;
        let mlp_rev = match (&self.mlp_rev, grad_rev) {
            (Some(m), Some(g)) => Some(one(m, g)?),
            _ => None,
        };
        Ok(ImplicitFilterGrad {
            mlp_fwd,
            mlp_rev,
            freq: gfreq,
            z: gz,
        })
    }
}
