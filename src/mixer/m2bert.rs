//! The released M2-BERT block, computed as its checkpoints compute it
//! (`MonarchMixerSequenceMixing` + `BertGatedLinearUnitMLP` in HazyResearch/m2), and the
//! encoder stack.
//!
//! Sequence mixer, input `u` `(batch, L, H)`:
//! 1. `p = u·W_inᵀ + b_in` (`H → 3H`);
//! 2. causal depthwise short conv, kernel 3: `uc[t] = w₀·p[t−2] + w₁·p[t−1] + w₂·p[t] + b`;
//! 3. split channels into `x1, x2, v` (that order), `v ← v ⊙ x1`;
//! 4. `y = LongConv(k_fwd, k_rev, D)(v)` with kernels from the [`ImplicitFilter`];
//! 5. `y ← y ⊙ x2`, optionally `y += LongConv₂(u)` (the residual long conv, its own filter);
//! 6. `out = y·W_outᵀ + b_out`.
//!
//! A layer is the sequence mixer followed by the [`GatedMlp`] (whose post-LayerNorm carries the
//! only residual of the layer); the encoder is a stack of layers.
//!
//! ```
//! use monarch::mixer::{ConvMethod, M2BertEncoder};
//! use monarch::ndarray::Array3;
//! let enc = M2BertEncoder::<f64>::random(2, 8, 16, 32, 4, 0).unwrap();
//! let u = Array3::from_shape_fn((2, 16, 8), |(b, t, c)| ((b + t + c) % 3) as f64 - 1.0);
//! let y = enc.forward(u.view()).unwrap();
//! assert_eq!(y.dim(), (2, 16, 8));
//! assert!(enc.forward(Array3::zeros((1, 17, 8)).view()).is_err()); // longer than l_max
//! # let _ = ConvMethod::Fft;
//! ```

use super::filter::{ImplicitFilter, ImplicitFilterGrad};
use super::glu::{GatedMlp, GatedMlpGrad};
use super::longconv::{ConvMethod, ConvPlan, LongConv};
use super::nn::{Linear, LinearGrad};
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::params::{prefixed, Grads, Params};
use crate::{RealScalar, Scalar};
use ndarray::{s, Array1, Array2, Array3, ArrayView3, ArrayViewD, ArrayViewMutD, Axis};
use num_complex::Complex;

/// M2-BERT's sequence mixer (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct M2SequenceMixer<R> {
    pub(crate) in_linear: Linear<R>,
    pub(crate) short_conv_weight: Array2<R>,
    pub(crate) short_conv_bias: Array1<R>,
    pub(crate) filter: ImplicitFilter<R>,
    pub(crate) filter2: Option<ImplicitFilter<R>>,
    pub(crate) out_linear: Linear<R>,
    pub(crate) method: ConvMethod,
}

/// Gradients of an [`M2SequenceMixer`].
#[derive(Debug, Clone, PartialEq)]
pub struct M2SequenceMixerGrad<R> {
    /// With respect to the input `(batch, L, H)`.
    pub u: Array3<R>,
    /// `in_linear` weight/bias (its `x` is the gradient of `u` through this path only).
    pub in_linear: LinearGrad<R>,
    /// Short-conv weights `(3H, 3)`.
    pub short_conv_weight: Array2<R>,
    /// Short-conv bias `(3H,)`.
    pub short_conv_bias: Array1<R>,
    /// The filter's MLPs, frequencies and positional features.
    pub filter: ImplicitFilterGrad<R>,
    /// The filter's `bias` (`D`).
    pub filter_bias: Array1<R>,
    /// The residual filter's gradients.
    pub filter2: Option<ImplicitFilterGrad<R>>,
    /// The residual filter's `bias`.
    pub filter2_bias: Option<Array1<R>>,
    /// `out_linear` weight/bias.
    pub out_linear: LinearGrad<R>,
}

struct SeqCache<R: RealScalar>
where
    Complex<R>: Scalar<Real = R>,
{
    p: Array3<R>,
    uc: Array3<R>,
    v: Array3<R>,
    conv: LongConv<R>,
    yconv: Array3<R>,
    conv2: Option<LongConv<R>>,
    y: Array2<R>,
    plan: ConvPlan<R>,
}

/// `(B, L, C)` → `(B, C, L)` owned.
fn blc_to_bcl<R: RealScalar>(x: ArrayView3<R>) -> Array3<R> {
    x.permuted_axes([0, 2, 1]).as_standard_layout().into_owned()
}

impl<R: RealScalar> M2SequenceMixer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// A seeded mixer with the authors' initialisation (PyTorch defaults for the linears and the
    /// short conv, see [`ImplicitFilter::random`]), bidirectional, filter order 16, emb_dim 5.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for zero sizes.
    pub fn random(
        hidden: usize,
        l_max: usize,
        residual_long_conv: bool,
        seed: u64,
    ) -> Result<Self> {
        check_nonzero(hidden, "M2SequenceMixer: hidden H")?;
        let size = std::mem::size_of::<R>();
        let h3 =
            crate::primitives::error::check_alloc(&[3, hidden, 3], size, "M2SequenceMixer")? / 3;
        let bound = 1.0 / 3f64.sqrt();
        let scw =
            crate::primitives::random::uniform_array3::<R>((1, h3, 3), bound, seed.wrapping_add(2))
                .index_axis_move(Axis(0), 0);
        M2SequenceMixer::new(
            Linear::random(hidden, h3, true, seed)?,
            scw,
            crate::primitives::random::uniform_vec(h3, bound, seed.wrapping_add(3)),
            ImplicitFilter::random(hidden, l_max, 16, 5, true, seed.wrapping_add(4))?,
            if residual_long_conv {
                Some(ImplicitFilter::random(
                    hidden,
                    l_max,
                    16,
                    5,
                    true,
                    seed.wrapping_add(5),
                )?)
            } else {
                None
            },
            Linear::random(hidden, hidden, true, seed.wrapping_add(1))?,
        )
    }

    /// A mixer from its parts, computing the long convolutions with [`ConvMethod::default`]:
    /// `in_linear` `H → 3H`, the depthwise short conv's weights `(3H, 3)` (PyTorch's
    /// `(3H, 1, 3)` squeezed) and bias `(3H,)`, the filter (and the residual long
    /// convolution's `filter2`) with `H` channels, `out_linear` `H → H`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the part whose size does not fit the `H` of
    /// `out_linear`'s output.
    pub fn new(
        in_linear: Linear<R>,
        short_conv_weight: Array2<R>,
        short_conv_bias: Array1<R>,
        filter: ImplicitFilter<R>,
        filter2: Option<ImplicitFilter<R>>,
        out_linear: Linear<R>,
    ) -> Result<Self> {
        let h = out_linear.out_features();
        let ctx = |what: &str| format!("M2SequenceMixer: {what} for H = {h} (out_linear's output)");
        if out_linear.in_features() != h {
            return Err(Error::shape(
                ctx("out_linear (out, in) = (H, H)"),
                (h, h),
                out_linear.weight.dim(),
            ));
        }
        if in_linear.weight.dim() != (3 * h, h) {
            return Err(Error::shape(
                ctx("in_linear (out, in) = (3H, H)"),
                (3 * h, h),
                in_linear.weight.dim(),
            ));
        }
        if short_conv_weight.dim() != (3 * h, 3) {
            return Err(Error::shape(
                ctx("short conv weight (3H, 3)"),
                (3 * h, 3),
                short_conv_weight.dim(),
            ));
        }
        if short_conv_bias.len() != 3 * h {
            return Err(Error::shape(
                ctx("short conv bias (3H,)"),
                3 * h,
                short_conv_bias.len(),
            ));
        }
        if filter.channels() != h {
            return Err(Error::shape(ctx("filter channels"), h, filter.channels()));
        }
        if let Some(f2) = &filter2 {
            if f2.channels() != h {
                return Err(Error::shape(ctx("filter2 channels"), h, f2.channels()));
            }
        }
        Ok(M2SequenceMixer {
            in_linear,
            short_conv_weight,
            short_conv_bias,
            filter,
            filter2,
            out_linear,
            method: ConvMethod::default(),
        })
    }

    /// `H → 3H` with bias.
    pub fn in_linear(&self) -> &Linear<R> {
        &self.in_linear
    }
    /// Depthwise short-conv weights `(3H, 3)` (PyTorch's `(3H, 1, 3)` squeezed).
    pub fn short_conv_weight(&self) -> &Array2<R> {
        &self.short_conv_weight
    }
    /// Short-conv bias `(3H,)`.
    pub fn short_conv_bias(&self) -> &Array1<R> {
        &self.short_conv_bias
    }
    /// Generates `k_fwd`, `k_rev` and holds `D` (its `bias`).
    pub fn filter(&self) -> &ImplicitFilter<R> {
        &self.filter
    }
    /// The residual long convolution's filter, if enabled.
    pub fn filter2(&self) -> Option<&ImplicitFilter<R>> {
        self.filter2.as_ref()
    }
    /// `H → H` with bias.
    pub fn out_linear(&self) -> &Linear<R> {
        &self.out_linear
    }
    /// How the long convolutions are computed.
    pub fn method(&self) -> ConvMethod {
        self.method
    }
    /// Sets how the long convolutions are computed.
    pub fn set_method(&mut self, method: ConvMethod) {
        self.method = method;
    }

    /// Hidden width `H`.
    pub fn hidden(&self) -> usize {
        self.out_linear.out_features()
    }

    fn check(&self, u: ArrayView3<R>, ctx: &str) -> Result<()> {
        let (b, l, h) = u.dim();
        check_nonzero(l, &format!("{ctx}: sequence length"))?;
        let hh = self.hidden();
        if h != hh {
            return Err(Error::shape(
                format!("{ctx}: input (batch, L, H)"),
                (b, l, hh),
                u.dim(),
            ));
        }
        Ok(())
    }

    fn make_conv(f: &ImplicitFilter<R>, l: usize) -> Result<LongConv<R>> {
        let (kf, kr) = f.kernels(l)?;
        LongConv::new(kf, kr, f.bias.clone())
    }

    fn run(&self, u: ArrayView3<R>) -> Result<SeqCache<R>> {
        let (b, l, h) = u.dim();
        let rows = u
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((b * l, h))
            .expect("rows");
        let p = self
            .in_linear
            .forward(rows.view())?
            .into_shape_with_order((b, l, 3 * h))
            .expect("rows");
        let w = &self.short_conv_weight;
        let uc = Array3::from_shape_fn((b, l, 3 * h), |(bi, t, c)| {
            let mut acc = self.short_conv_bias[c] + w[[c, 2]] * p[[bi, t, c]];
            if t >= 1 {
                acc += w[[c, 1]] * p[[bi, t - 1, c]];
            }
            if t >= 2 {
                acc += w[[c, 0]] * p[[bi, t - 2, c]];
            }
            acc
        });
        let v = &uc.slice(s![.., .., 2 * h..]) * &uc.slice(s![.., .., ..h]);
        let v = blc_to_bcl(v.view());
        let conv = Self::make_conv(&self.filter, l)?;
        let plan = ConvPlan::new(self.method, l)?;
        let yconv = conv.forward_with(v.view(), &plan)?;
        let mut y = &yconv.view().permuted_axes([0, 2, 1]) * &uc.slice(s![.., .., h..2 * h]);
        let conv2 = match &self.filter2 {
            Some(f2) => {
                let c2 = Self::make_conv(f2, l)?;
                let yu = c2.forward_with(blc_to_bcl(u).view(), &plan)?;
                y += &yu.view().permuted_axes([0, 2, 1]);
                Some(c2)
            }
            None => None,
        };
        let y = y
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((b * l, h))
            .expect("rows");
        Ok(SeqCache {
            plan,
            p,
            uc,
            v,
            conv,
            yconv,
            conv2,
            y,
        })
    }

    /// Applies the mixer to `u` `(batch, L, H)`, `L ≤ l_max`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong width or inconsistent parameters,
    /// [`Error::TooLarge`] if `L > l_max`, [`Error::ZeroSize`] for empty input.
    pub fn forward(&self, u: ArrayView3<R>) -> Result<Array3<R>> {
        self.check(u, "M2SequenceMixer::forward")?;
        let (b, l, h) = u.dim();
        let c = self.run(u)?;
        Ok(self
            .out_linear
            .forward(c.y.view())?
            .into_shape_with_order((b, l, h))
            .expect("rows"))
    }

    /// VJP of [`forward`](Self::forward) with respect to the input and every parameter
    /// (including the filters' MLPs, `freq`, `z` and `D`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, u: ArrayView3<R>, grad_out: ArrayView3<R>) -> Result<M2SequenceMixerGrad<R>> {
        self.check(u, "M2SequenceMixer::vjp")?;
        if grad_out.dim() != u.dim() {
            return Err(Error::shape(
                "M2SequenceMixer::vjp: grad_out shape",
                u.dim(),
                grad_out.dim(),
            ));
        }
        let (b, l, h) = u.dim();
        let c = self.run(u)?;
        let g_rows = grad_out
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((b * l, h))
            .expect("rows");
        let out_linear = self.out_linear.vjp(c.y.view(), g_rows.view())?;
        let gy = out_linear
            .x
            .clone()
            .into_shape_with_order((b, l, h))
            .expect("rows");
        let gy_bcl = blc_to_bcl(gy.view());
        let mut gu = Array3::<R>::zeros((b, l, h));
        let (filter2, filter2_bias) = match (&self.filter2, &c.conv2) {
            (Some(f2), Some(c2)) => {
                let g2 = c2.vjp_with(blc_to_bcl(u).view(), gy_bcl.view(), &c.plan)?;
                gu += &g2.u.view().permuted_axes([0, 2, 1]);
                let fg = f2.vjp(l, g2.k_fwd.view(), g2.k_rev.as_ref().map(|k| k.view()))?;
                (Some(fg), Some(g2.d))
            }
            _ => (None, None),
        };
        let x2 = blc_to_bcl(c.uc.slice(s![.., .., h..2 * h]));
        let g_yconv = &gy_bcl * &x2;
        let g_x2 = &gy_bcl * &c.yconv;
        let cg = c.conv.vjp_with(c.v.view(), g_yconv.view(), &c.plan)?;
        let filter = self
            .filter
            .vjp(l, cg.k_fwd.view(), cg.k_rev.as_ref().map(|k| k.view()))?;
        let x1 = blc_to_bcl(c.uc.slice(s![.., .., ..h]));
        let v0 = blc_to_bcl(c.uc.slice(s![.., .., 2 * h..]));
        let g_v0 = &cg.u * &x1;
        let g_x1 = &cg.u * &v0;
        let mut guc = Array3::<R>::zeros((b, l, 3 * h));
        guc.slice_mut(s![.., .., ..h])
            .assign(&g_x1.view().permuted_axes([0, 2, 1]));
        guc.slice_mut(s![.., .., h..2 * h])
            .assign(&g_x2.view().permuted_axes([0, 2, 1]));
        guc.slice_mut(s![.., .., 2 * h..])
            .assign(&g_v0.view().permuted_axes([0, 2, 1]));
        // Short conv: uc[t] = b + w₂p[t] + w₁p[t−1] + w₀p[t−2].
        let w = &self.short_conv_weight;
        let mut gp = Array3::<R>::zeros((b, l, 3 * h));
        let mut gw = Array2::<R>::zeros((3 * h, 3));
        let mut gb = Array1::<R>::zeros(3 * h);
        for bi in 0..b {
            for t in 0..l {
                for ch in 0..3 * h {
                    let g = guc[[bi, t, ch]];
                    gb[ch] += g;
                    gp[[bi, t, ch]] += w[[ch, 2]] * g;
                    gw[[ch, 2]] += g * c.p[[bi, t, ch]];
                    if t >= 1 {
                        gp[[bi, t - 1, ch]] += w[[ch, 1]] * g;
                        gw[[ch, 1]] += g * c.p[[bi, t - 1, ch]];
                    }
                    if t >= 2 {
                        gp[[bi, t - 2, ch]] += w[[ch, 0]] * g;
                        gw[[ch, 0]] += g * c.p[[bi, t - 2, ch]];
                    }
                }
            }
        }
        let rows = u
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((b * l, h))
            .expect("rows");
        let gp = gp.into_shape_with_order((b * l, 3 * h)).expect("rows");
        let in_linear = self.in_linear.vjp(rows.view(), gp.view())?;
        gu += &in_linear
            .x
            .view()
            .into_shape_with_order((b, l, h))
            .expect("rows");
        Ok(M2SequenceMixerGrad {
            u: gu,
            in_linear,
            short_conv_weight: gw,
            short_conv_bias: gb,
            filter,
            filter_bias: cg.d,
            filter2,
            filter2_bias,
            out_linear,
        })
    }
}

/// One M2-BERT layer: [`M2SequenceMixer`] then [`GatedMlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct M2BertLayer<R> {
    pub(crate) mixer: M2SequenceMixer<R>,
    pub(crate) mlp: GatedMlp<R>,
}

/// Gradients of an [`M2BertLayer`].
#[derive(Debug, Clone, PartialEq)]
pub struct M2BertLayerGrad<R> {
    /// With respect to the layer input.
    pub u: Array3<R>,
    /// Sequence-mixer parameters.
    pub mixer: M2SequenceMixerGrad<R>,
    /// MLP parameters.
    pub mlp: GatedMlpGrad<R>,
}

impl<R: RealScalar> M2BertLayer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// A seeded layer (`nblocks` block-diagonal blocks in the MLP).
    ///
    /// # Errors
    /// As [`M2SequenceMixer::random`] and [`GatedMlp::random`].
    pub fn random(
        hidden: usize,
        l_max: usize,
        intermediate: usize,
        nblocks: usize,
        seed: u64,
    ) -> Result<Self> {
        M2BertLayer::new(
            M2SequenceMixer::random(hidden, l_max, false, seed)?,
            GatedMlp::random(hidden, intermediate, nblocks, seed.wrapping_add(10))?,
        )
    }

    /// A layer from its sequence mixer and MLP.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless the MLP's width is the mixer's `H`.
    pub fn new(mixer: M2SequenceMixer<R>, mlp: GatedMlp<R>) -> Result<Self> {
        if mlp.hidden() != mixer.hidden() {
            return Err(Error::shape(
                "M2BertLayer: MLP width vs the sequence mixer's H",
                mixer.hidden(),
                mlp.hidden(),
            ));
        }
        Ok(M2BertLayer { mixer, mlp })
    }

    /// Sequence mixing.
    pub fn mixer(&self) -> &M2SequenceMixer<R> {
        &self.mixer
    }
    /// Dimension mixing with the post-LayerNorm.
    pub fn mlp(&self) -> &GatedMlp<R> {
        &self.mlp
    }
    /// Sets how the mixer's long convolutions are computed.
    pub fn set_method(&mut self, method: ConvMethod) {
        self.mixer.set_method(method);
    }

    /// `mlp(mixer(u))` for `u` `(batch, L, H)`.
    ///
    /// # Errors
    /// As [`M2SequenceMixer::forward`].
    pub fn forward(&self, u: ArrayView3<R>) -> Result<Array3<R>> {
        let a = self.mixer.forward(u)?;
        let d = a.dim();
        let rows = a.into_shape_with_order((d.0 * d.1, d.2)).expect("rows");
        let out = self.mlp.forward(rows.view())?;
        Ok(out.into_shape_with_order(d).expect("rows"))
    }

    /// VJP of [`forward`](Self::forward).
    ///
    /// # Errors
    /// As [`M2SequenceMixer::vjp`].
    pub fn vjp(&self, u: ArrayView3<R>, grad_out: ArrayView3<R>) -> Result<M2BertLayerGrad<R>> {
        let a = self.mixer.forward(u)?;
        let d = a.dim();
        if grad_out.dim() != d {
            return Err(Error::shape(
                "M2BertLayer::vjp: grad_out shape",
                d,
                grad_out.dim(),
            ));
        }
        let rows = a.into_shape_with_order((d.0 * d.1, d.2)).expect("rows");
        let g = grad_out
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((d.0 * d.1, d.2))
            .expect("rows");
        let mlp = self.mlp.vjp(rows.view(), g.view())?;
        let ga = mlp.x.clone().into_shape_with_order(d).expect("rows");
        let mixer = self.mixer.vjp(u, ga.view())?;
        Ok(M2BertLayerGrad {
            u: mixer.u.clone(),
            mixer,
            mlp,
        })
    }
}

/// A stack of [`M2BertLayer`]s (`M2BertEncoder` without the optional position encodings).
#[derive(Debug, Clone, PartialEq)]
pub struct M2BertEncoder<R> {
    pub(crate) layers: Vec<M2BertLayer<R>>,
}

/// Gradients of an [`M2BertEncoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct M2BertEncoderGrad<R> {
    /// With respect to the encoder input.
    pub u: Array3<R>,
    /// Per layer, in order.
    pub layers: Vec<M2BertLayerGrad<R>>,
}

impl<R: RealScalar> M2BertEncoder<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// A seeded stack of `n_layers` layers.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `n_layers == 0`; as [`M2BertLayer::random`].
    pub fn random(
        n_layers: usize,
        hidden: usize,
        l_max: usize,
        intermediate: usize,
        nblocks: usize,
        seed: u64,
    ) -> Result<Self> {
        check_nonzero(n_layers, "M2BertEncoder: layers")?;
        let layers = (0..n_layers)
            .map(|i| {
                M2BertLayer::random(
                    hidden,
                    l_max,
                    intermediate,
                    nblocks,
                    seed.wrapping_add(100 * i as u64),
                )
            })
            .collect::<Result<_>>()?;
        M2BertEncoder::new(layers)
    }

    /// A stack of `layers`, applied in order.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for no layer; [`Error::ShapeMismatch`] naming the first layer whose
    /// width differs from layer 0's.
    pub fn new(layers: Vec<M2BertLayer<R>>) -> Result<Self> {
        check_nonzero(layers.len(), "M2BertEncoder: layers")?;
        let h = layers[0].mixer.hidden();
        if let Some((i, l)) = layers
            .iter()
            .enumerate()
            .find(|(_, l)| l.mixer.hidden() != h)
        {
            return Err(Error::shape(
                format!("M2BertEncoder: layer {i} width vs layer 0's H"),
                h,
                l.mixer.hidden(),
            ));
        }
        Ok(M2BertEncoder { layers })
    }

    /// The layers, applied in order.
    pub fn layers(&self) -> &[M2BertLayer<R>] {
        &self.layers
    }
    /// Sets how every layer's long convolutions are computed.
    pub fn set_method(&mut self, method: ConvMethod) {
        for l in &mut self.layers {
            l.set_method(method);
        }
    }

    /// The last hidden state for `u` `(batch, L, H)`.
    ///
    /// # Errors
    /// As [`M2BertLayer::forward`]; [`Error::ZeroSize`] for an empty stack.
    pub fn forward(&self, u: ArrayView3<R>) -> Result<Array3<R>> {
        let mut x = u.to_owned();
        for layer in &self.layers {
            x = layer.forward(x.view())?;
        }
        Ok(x)
    }

    /// VJP of [`forward`](Self::forward) through every layer.
    ///
    /// # Errors
    /// As [`M2BertLayer::vjp`].
    pub fn vjp(&self, u: ArrayView3<R>, grad_out: ArrayView3<R>) -> Result<M2BertEncoderGrad<R>> {
        let mut inputs = vec![u.to_owned()];
        for layer in &self.layers[..self.layers.len() - 1] {
            let next = layer.forward(inputs.last().expect("non-empty").view())?;
            inputs.push(next);
        }
        let mut g = grad_out.to_owned();
        let mut grads = Vec::with_capacity(self.layers.len());
        for (layer, x) in self.layers.iter().zip(&inputs).rev() {
            let lg = layer.vjp(x.view(), g.view())?;
            g = lg.u.clone();
            grads.push(lg);
        }
        grads.reverse();
        Ok(M2BertEncoderGrad {
            u: g,
            layers: grads,
        })
    }
}

/// `in_linear.*`, `short_filter.weight` `(3H, 3)`, `short_filter.bias`, `filter_fn.bias` (`D`),
/// `filter_fn.*` ([`ImplicitFilter`]'s), the same for `filter_fn2` if present, `out_linear.*`
/// (the released `MonarchMixerSequenceMixing`'s names).
impl<R: RealScalar> Params<R> for M2SequenceMixer<R> {
    type Grad = M2SequenceMixerGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        self.in_linear.visit_params(&mut prefixed("in_linear", f));
        f(
            "short_filter.weight",
            self.short_conv_weight.view().into_dyn(),
        );
        f("short_filter.bias", self.short_conv_bias.view().into_dyn());
        f("filter_fn.bias", self.filter.bias.view().into_dyn());
        self.filter.visit_params(&mut prefixed("filter_fn", f));
        if let Some(f2) = &self.filter2 {
            f("filter_fn2.bias", f2.bias.view().into_dyn());
            f2.visit_params(&mut prefixed("filter_fn2", f));
        }
        self.out_linear.visit_params(&mut prefixed("out_linear", f));
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        self.in_linear
            .visit_params_mut(&mut prefixed("in_linear", f));
        f(
            "short_filter.weight",
            self.short_conv_weight.view_mut().into_dyn(),
        );
        f(
            "short_filter.bias",
            self.short_conv_bias.view_mut().into_dyn(),
        );
        self.filter
            .visit_mut_with_bias(true, &mut prefixed("filter_fn", f));
        if let Some(f2) = &mut self.filter2 {
            f2.visit_mut_with_bias(true, &mut prefixed("filter_fn2", f));
        }
        self.out_linear
            .visit_params_mut(&mut prefixed("out_linear", f));
    }
}

impl<R> Grads<R> for M2SequenceMixerGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        self.in_linear.visit_grads(&mut prefixed("in_linear", f));
        f(
            "short_filter.weight",
            self.short_conv_weight.view().into_dyn(),
        );
        f("short_filter.bias", self.short_conv_bias.view().into_dyn());
        f("filter_fn.bias", self.filter_bias.view().into_dyn());
        self.filter.visit_grads(&mut prefixed("filter_fn", f));
        if let (Some(g2), Some(b2)) = (&self.filter2, &self.filter2_bias) {
            f("filter_fn2.bias", b2.view().into_dyn());
            g2.visit_grads(&mut prefixed("filter_fn2", f));
        }
        self.out_linear.visit_grads(&mut prefixed("out_linear", f));
    }
}

/// `attention.*` (the mixer's) then `mlp.*` (the MLP's), as in the released `BertLayer`.
impl<R: RealScalar> Params<R> for M2BertLayer<R> {
    type Grad = M2BertLayerGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        self.mixer.visit_params(&mut prefixed("attention", f));
        self.mlp.visit_params(&mut prefixed("mlp", f));
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        self.mixer.visit_params_mut(&mut prefixed("attention", f));
        self.mlp.visit_params_mut(&mut prefixed("mlp", f));
    }
}

impl<R> Grads<R> for M2BertLayerGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        self.mixer.visit_grads(&mut prefixed("attention", f));
        self.mlp.visit_grads(&mut prefixed("mlp", f));
    }
}

/// `layer.{i}.*` for every layer, in order.
impl<R: RealScalar> Params<R> for M2BertEncoder<R> {
    type Grad = M2BertEncoderGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_params(&mut prefixed(&format!("layer.{i}"), f));
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_params_mut(&mut prefixed(&format!("layer.{i}"), f));
        }
    }
}

impl<R> Grads<R> for M2BertEncoderGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_grads(&mut prefixed(&format!("layer.{i}"), f));
        }
    }
}
