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
use crate::primitives::params::{prefixed, Grads, Params};
use crate::RealScalar;
use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewD, ArrayViewMutD, Axis};

impl<R: RealScalar> FilterMlp<R> {
    /// From its linear layers, in order: widths must chain (`layers[i]`'s output is
    /// `layers[i + 1]`'s input).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for no layer; [`Error::ShapeMismatch`] naming the first layer whose
    /// input width is not the previous layer's output width.
    pub fn new(layers: Vec<Linear<R>>) -> Result<Self> {
        check_nonzero(layers.len(), "FilterMlp: number of layers")?;
        for (i, w) in layers.windows(2).enumerate() {
            if w[1].in_features() != w[0].out_features() {
                return Err(Error::shape(
                    format!(
                        "FilterMlp: layer {} input width vs layer {i} output width",
                        i + 1
                    ),
                    w[0].out_features(),
                    w[1].in_features(),
                ));
            }
        }
        Ok(FilterMlp { layers })
    }

    /// The linear layers, in order.
    pub fn layers(&self) -> &[Linear<R>] {
        &self.layers
    }
}

/// The sine-activated MLP of one direction: `layers[0]` is `emb_dim → order`, inner layers
/// `order → order`, the last `order → H` without bias; a sine follows every layer but the last.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterMlp<R> {
    pub(crate) layers: Vec<Linear<R>>,
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
    pub(crate) z: Array2<R>,
    pub(crate) t: Array1<R>,
    pub(crate) mlp_fwd: FilterMlp<R>,
    pub(crate) mlp_rev: Option<FilterMlp<R>>,
    pub(crate) freq: Array1<R>,
    pub(crate) w_mod: R,
    pub(crate) deltas: Array1<R>,
    pub(crate) shift: R,
    pub(crate) bias: Array1<R>,
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
            FilterMlp::new(layers)
        };
        let deltas = linspace((0.01f64).ln() / 1.5, (0.01f64).ln() / 0.3, channels);
        let bias = crate::primitives::random::normal_matrix::<R>((1, channels), 1.0, seed ^ 0xb1a5)
            .index_axis_move(Axis(0), 0);
        ImplicitFilter::new(
            z,
            t,
            mlp(seed.wrapping_mul(7919))?,
            if bidirectional {
                Some(mlp(seed.wrapping_mul(7919) + 100)?)
            } else {
                None
            },
            Array1::from_elem(order, R::from_f64(10.0)),
            R::one(),
            deltas.into_iter().map(R::from_f64).collect(),
            R::zero(),
            bias,
        )
    }

    /// A filter from its parts: positional features `z` `(l_max, emb_dim)`, normalised time `t`
    /// `(l_max,)`, the forward MLP and (bidirectional filters) the reverse MLP, the shared sine
    /// frequencies `freq` `(order,)` and their multiplier `w_mod`, decay rates `deltas` `(H,)`,
    /// the modulation `shift` and the skip weights `bias` (`D`, `(H,)`).
    ///
    /// Each MLP's first layer must take `emb_dim` inputs, every layer but the last must be
    /// `order` wide (a sine with `freq` follows it) and the last `H` wide.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for an empty `z`, `freq` or `deltas`; [`Error::ShapeMismatch`]
    /// naming the part and the sizes that do not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        z: Array2<R>,
        t: Array1<R>,
        mlp_fwd: FilterMlp<R>,
        mlp_rev: Option<FilterMlp<R>>,
        freq: Array1<R>,
        w_mod: R,
        deltas: Array1<R>,
        shift: R,
        bias: Array1<R>,
    ) -> Result<Self> {
        let (l_max, emb_dim) = z.dim();
        check_nonzero(l_max, "ImplicitFilter: z rows (l_max)")?;
        check_nonzero(emb_dim, "ImplicitFilter: z columns (emb_dim)")?;
        let h = deltas.len();
        check_nonzero(h, "ImplicitFilter: deltas length (channels H)")?;
        let order = freq.len();
        check_nonzero(order, "ImplicitFilter: freq length (order)")?;
        if t.len() != l_max {
            return Err(Error::shape(
                "ImplicitFilter: t length (l_max, the rows of z)",
                l_max,
                t.len(),
            ));
        }
        if bias.len() != h {
            return Err(Error::shape(
                "ImplicitFilter: bias length (H, the length of deltas)",
                h,
                bias.len(),
            ));
        }
        let mut mlps = vec![("mlp_fwd", &mlp_fwd)];
        if let Some(r) = &mlp_rev {
            mlps.push(("mlp_rev", r));
        }
        for (name, mlp) in mlps {
            let n = mlp.layers.len();
            if mlp.layers[0].in_features() != emb_dim {
                return Err(Error::shape(
                    format!(
                        "ImplicitFilter: {name} layer 0 input width (emb_dim, the columns of z)"
                    ),
                    emb_dim,
                    mlp.layers[0].in_features(),
                ));
            }
            for (i, l) in mlp.layers.iter().enumerate() {
                let (want, what) = if i + 1 < n {
                    (order, "order, the length of freq")
                } else {
                    (h, "H, the length of deltas")
                };
                if l.out_features() != want {
                    return Err(Error::shape(
                        format!("ImplicitFilter: {name} layer {i} output width ({what})"),
                        want,
                        l.out_features(),
                    ));
                }
            }
        }
        Ok(ImplicitFilter {
            z,
            t,
            mlp_fwd,
            mlp_rev,
            freq,
            w_mod,
            deltas,
            shift,
            bias,
        })
    }

    /// Positional features `(l_max, emb_dim)` (trained).
    pub fn z(&self) -> &Array2<R> {
        &self.z
    }
    /// Normalised time `(l_max,)` (a fixed buffer).
    pub fn t(&self) -> &Array1<R> {
        &self.t
    }
    /// The MLP producing `k_fwd`.
    pub fn mlp_fwd(&self) -> &FilterMlp<R> {
        &self.mlp_fwd
    }
    /// The MLP producing `k_rev` (bidirectional filters only).
    pub fn mlp_rev(&self) -> Option<&FilterMlp<R>> {
        self.mlp_rev.as_ref()
    }
    /// Sine frequencies `(order,)`, shared by every sine layer.
    pub fn freq(&self) -> &Array1<R> {
        &self.freq
    }
    /// Fixed multiplier of `freq`.
    pub fn w_mod(&self) -> R {
        self.w_mod
    }
    /// Decay rates `δ` `(H,)` (a fixed buffer).
    pub fn deltas(&self) -> &Array1<R> {
        &self.deltas
    }
    /// Added to the decay.
    pub fn shift(&self) -> R {
        self.shift
    }
    /// Skip weights `D` `(H,)` of the convolution that uses these kernels.
    pub fn bias(&self) -> &Array1<R> {
        &self.bias
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
                h = self.sin_act(a.view());
            }
            pre.push(a);
        }
        Ok(pre)
    }

    /// `sin(w_mod·freq·a)` row by row (the constructor makes every hidden width `order`).
    fn sin_act(&self, a: ArrayView2<R>) -> Array2<R> {
        let mut h = a.to_owned();
        for mut row in h.rows_mut() {
            row.zip_mut_with(&self.freq, |v, &f| *v = (self.w_mod * f * *v).sin());
        }
        h
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
                    self.sin_act(pre[i - 1].view())
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

/// `pos_emb.z`, the forward MLP's linears `implicit_filter.{0,2,…}.{weight,bias}`, the shared
/// `implicit_filter.1.freq`, then the reverse MLP's `implicit_filter_rev.*` (the released
/// `HyenaFilter`'s names); `t` and `deltas` are fixed, and `bias` (`D`) belongs to the
/// convolution, so the sequence mixer visits it (as `filter_fn.bias`).
impl<R: RealScalar> Params<R> for ImplicitFilter<R> {
    type Grad = ImplicitFilterGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("pos_emb.z", self.z.view().into_dyn());
        for (i, l) in self.mlp_fwd.layers.iter().enumerate() {
            let p = format!("implicit_filter.{}", 2 * i);
            l.visit_params(&mut prefixed(&p, f));
        }
        f("implicit_filter.1.freq", self.freq.view().into_dyn());
        if let Some(m) = &self.mlp_rev {
            for (i, l) in m.layers.iter().enumerate() {
                let p = format!("implicit_filter_rev.{}", 2 * i);
                l.visit_params(&mut prefixed(&p, f));
            }
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        self.visit_mut_with_bias(false, f);
    }
}

impl<R: RealScalar> ImplicitFilter<R> {
    /// [`Params::visit_params_mut`], led by `bias` (`D`) if `with_bias` (for the mixer, which
    /// trains `D` through the convolution).
    pub(crate) fn visit_mut_with_bias<'a>(
        &'a mut self,
        with_bias: bool,
        f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>),
    ) {
        let ImplicitFilter {
            z,
            mlp_fwd,
            mlp_rev,
            freq,
            bias,
            ..
        } = self;
        if with_bias {
            f("bias", bias.view_mut().into_dyn());
        }
        f("pos_emb.z", z.view_mut().into_dyn());
        for (i, l) in mlp_fwd.layers.iter_mut().enumerate() {
            let p = format!("implicit_filter.{}", 2 * i);
            l.visit_params_mut(&mut prefixed(&p, f));
        }
        f("implicit_filter.1.freq", freq.view_mut().into_dyn());
        if let Some(m) = mlp_rev {
            for (i, l) in m.layers.iter_mut().enumerate() {
                let p = format!("implicit_filter_rev.{}", 2 * i);
                l.visit_params_mut(&mut prefixed(&p, f));
            }
        }
    }
}

impl<R> Grads<R> for ImplicitFilterGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("pos_emb.z", self.z.view().into_dyn());
        for (i, l) in self.mlp_fwd.iter().enumerate() {
            let p = format!("implicit_filter.{}", 2 * i);
            l.visit_grads(&mut prefixed(&p, f));
        }
        f("implicit_filter.1.freq", self.freq.view().into_dyn());
        if let Some(m) = &self.mlp_rev {
            for (i, l) in m.iter().enumerate() {
                let p = format!("implicit_filter_rev.{}", 2 * i);
                l.visit_grads(&mut prefixed(&p, f));
            }
        }
    }
}
