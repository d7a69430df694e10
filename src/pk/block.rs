//! The MLP-Mixer block built from PK layers.

use super::layer::{PkLayer, PkLayerGrad};
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::nn::{Activation, LayerNorm, LayerNormGrad};
use crate::RealScalar;
use ndarray::{Array1, Array2, Array3, ArrayView3};

/// An MLP-Mixer block on `X` `(batch, S, C)` (tokens × channels):
/// `X₁ = X + TokenMLP(LN₁(X))`, `out = X₁ + ChannelMLP(LN₂(X₁))`, each MLP two PK layers
/// (GELU between). The token MLP is `(I_C ⊗ W)` on column-major `vec X`, the channel MLP the
/// same with the commutation permutation (see [`PkLayer::channel_mixing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpMixerBlock<R> {
    /// LayerNorm before token mixing (over channels).
    pub ln1: LayerNorm<R>,
    /// Token MLP, first layer `S → D_S` (GELU).
    pub tok1: PkLayer<R>,
    /// Token MLP, second layer `D_S → S`.
    pub tok2: PkLayer<R>,
    /// LayerNorm before channel mixing.
    pub ln2: LayerNorm<R>,
    /// Channel MLP, first layer `C → D_C` (GELU).
    pub ch1: PkLayer<R>,
    /// Channel MLP, second layer `D_C → C`.
    pub ch2: PkLayer<R>,
}

/// Gradients of an [`MlpMixerBlock`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpMixerBlockGrad<R> {
    /// With respect to the input `(batch, S, C)`.
    pub x: Array3<R>,
    /// `ln1`.
    pub ln1: LayerNormGrad<R>,
    /// `tok1`.
    pub tok1: PkLayerGrad<R>,
    /// `tok2`.
    pub tok2: PkLayerGrad<R>,
    /// `ln2`.
    pub ln2: LayerNormGrad<R>,
    /// `ch1`.
    pub ch1: PkLayerGrad<R>,
    /// `ch2`.
    pub ch2: PkLayerGrad<R>,
}

/// `(B, S, C)` → column-major `vec` rows `(B, C·S)`, `v[c·S + s] = X[s, c]`.
pub fn to_vec_colmajor<R: RealScalar>(x: ArrayView3<R>) -> Array2<R> {
    let (b, s, c) = x.dim();
    x.permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((b, c * s))
        .expect("rows")
}

/// Inverse of [`to_vec_colmajor`].
pub fn from_vec_colmajor<R: RealScalar>(v: Array2<R>, s: usize, c: usize) -> Array3<R> {
    let b = v.nrows();
    v.into_shape_with_order((b, c, s))
        .expect("rows")
        .permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned()
}

fn token_rows<R: RealScalar>(x: &Array3<R>) -> Array2<R> {
    let (b, s, c) = x.dim();
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((b * s, c))
        .expect("rows")
}

struct Cache<R> {
    n1: Array2<R>,
    t1: Array2<R>,
    x1: Array3<R>,
    n2: Array2<R>,
    c1: Array2<R>,
}

impl<R: RealScalar> MlpMixerBlock<R> {
    /// A seeded block for `S` tokens, `C` channels, hidden widths `D_S`, `D_C` (PyTorch-style
    /// uniform init, zero biases, unit LayerNorms with eps 1e-6).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for zero sizes.
    pub fn random(
        tokens: usize,
        channels: usize,
        d_s: usize,
        d_c: usize,
        seed: u64,
    ) -> Result<Self> {
        for (v, n) in [(tokens, "S"), (channels, "C"), (d_s, "D_S"), (d_c, "D_C")] {
            check_nonzero(v, &format!("MlpMixerBlock: {n}"))?;
        }
        let size = std::mem::size_of::<R>();
        for (o, i) in [(d_s, tokens), (d_c, channels)] {
            crate::primitives::error::check_alloc(&[o, i], size, "MlpMixerBlock::random")?;
        }
        let w = |o: usize, i: usize, sd: u64| {
            crate::primitives::random::normal_matrix::<R>((o, i), 1.0 / (i as f64).sqrt(), sd)
        };
        let eps = R::from_f64(1e-6);
        Ok(MlpMixerBlock {
            ln1: LayerNorm::new(channels, eps)?,
            tok1: PkLayer::token_mixing(
                w(d_s, tokens, seed),
                Some(Array1::zeros(d_s)),
                channels,
                Activation::Gelu,
            )?,
            tok2: PkLayer::token_mixing(
                w(tokens, d_s, seed.wrapping_add(1)),
                Some(Array1::zeros(tokens)),
                channels,
                Activation::Identity,
            )?,
            ln2: LayerNorm::new(channels, eps)?,
            ch1: PkLayer::channel_mixing(
                w(d_c, channels, seed.wrapping_add(2)),
                Some(Array1::zeros(d_c)),
                tokens,
                Activation::Gelu,
            )?,
            ch2: PkLayer::channel_mixing(
                w(channels, d_c, seed.wrapping_add(3)),
                Some(Array1::zeros(channels)),
                tokens,
                Activation::Identity,
            )?,
        })
    }

    fn dims(&self) -> (usize, usize) {
        (self.tok2.w.nrows(), self.ln1.width())
    }

    fn check(&self, x: ArrayView3<R>, ctx: &str) -> Result<()> {
        let (s, c) = self.dims();
        if (x.dim().1, x.dim().2) != (s, c) {
            return Err(Error::shape(
                format!("{ctx}: input (batch, S, C)"),
                (x.dim().0, s, c),
                x.dim(),
            ));
        }
        Ok(())
    }

    fn run(&self, x: ArrayView3<R>) -> Result<(Cache<R>, Array3<R>)> {
        let (s, c) = self.dims();
        let n1 = self.ln1.forward(token_rows(&x.to_owned()).view())?;
        let n1v = to_vec_colmajor(n1.view().into_shape_with_order(x.dim()).expect("rows"));
        let t1 = self.tok1.forward(n1v.view())?;
        let t2 = self.tok2.forward(t1.view())?;
        let x1 = &x + &from_vec_colmajor(t2, s, c);
        let n2 = self.ln2.forward(token_rows(&x1).view())?;
        let n2v = to_vec_colmajor(n2.view().into_shape_with_order(x.dim()).expect("rows"));
        let c1 = self.ch1.forward(n2v.view())?;
        let c2 = self.ch2.forward(c1.view())?;
        let out = &x1 + &from_vec_colmajor(c2, s, c);
        Ok((
            Cache {
                n1: n1v,
                t1,
                x1,
                n2: n2v,
                c1,
            },
            out,
        ))
    }

    /// Applies the block to `x` `(batch, S, C)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` is not `(batch, S, C)`.
    pub fn forward(&self, x: ArrayView3<R>) -> Result<Array3<R>> {
        self.check(x, "MlpMixerBlock::forward")?;
        Ok(self.run(x)?.1)
    }

    /// VJP of [`forward`](Self::forward).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, x: ArrayView3<R>, grad_out: ArrayView3<R>) -> Result<MlpMixerBlockGrad<R>> {
        self.check(x, "MlpMixerBlock::vjp")?;
        if grad_out.dim() != x.dim() {
            return Err(Error::shape(
                "MlpMixerBlock::vjp: grad_out shape",
                x.dim(),
                grad_out.dim(),
            ));
        }
        let (s, c) = self.dims();
        let (k, _) = self.run(x)?;
        let g = grad_out.to_owned();
        let gv = to_vec_colmajor(g.view());
        let ch2 = self.ch2.vjp(k.c1.view(), gv.view())?;
        let ch1 = self.ch1.vjp(k.n2.view(), ch2.x.view())?;
        let gn2 = from_vec_colmajor(ch1.x.clone(), s, c);
        let ln2 = self
            .ln2
            .vjp(token_rows(&k.x1).view(), token_rows(&gn2).view())?;
        let gx1 = &g + &ln2.x.view().into_shape_with_order(x.dim()).expect("rows");
        let gx1v = to_vec_colmajor(gx1.view());
        let tok2 = self.tok2.vjp(k.t1.view(), gx1v.view())?;
        let tok1 = self.tok1.vjp(k.n1.view(), tok2.x.view())?;
        let gn1 = from_vec_colmajor(tok1.x.clone(), s, c);
        let ln1 = self
            .ln1
            .vjp(token_rows(&x.to_owned()).view(), token_rows(&gn1).view())?;
        let gx = &gx1 + &ln1.x.view().into_shape_with_order(x.dim()).expect("rows");
        Ok(MlpMixerBlockGrad {
            x: gx,
            ln1,
            tok1,
            tok2,
            ln2,
            ch1,
            ch2,
        })
    }
}

/// `ln1.*`, `tok1.*`, `tok2.*`, `ln2.*`, `ch1.*`, `ch2.*`.
impl<R: RealScalar> crate::primitives::params::Params<R> for MlpMixerBlock<R> {
    type Grad = MlpMixerBlockGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, R>)) {
        use crate::primitives::params::prefixed;
        self.ln1.visit_params(&mut prefixed("ln1", f));
        self.tok1.visit_params(&mut prefixed("tok1", f));
        self.tok2.visit_params(&mut prefixed("tok2", f));
        self.ln2.visit_params(&mut prefixed("ln2", f));
        self.ch1.visit_params(&mut prefixed("ch1", f));
        self.ch2.visit_params(&mut prefixed("ch2", f));
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'a, R>)) {
        use crate::primitives::params::prefixed;
        self.ln1.visit_params_mut(&mut prefixed("ln1", f));
        self.tok1.visit_params_mut(&mut prefixed("tok1", f));
        self.tok2.visit_params_mut(&mut prefixed("tok2", f));
        self.ln2.visit_params_mut(&mut prefixed("ln2", f));
        self.ch1.visit_params_mut(&mut prefixed("ch1", f));
        self.ch2.visit_params_mut(&mut prefixed("ch2", f));
    }
}

impl<R> crate::primitives::params::Grads<R> for MlpMixerBlockGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, R>)) {
        use crate::primitives::params::prefixed;
        self.ln1.visit_grads(&mut prefixed("ln1", f));
        self.tok1.visit_grads(&mut prefixed("tok1", f));
        self.tok2.visit_grads(&mut prefixed("tok2", f));
        self.ln2.visit_grads(&mut prefixed("ln2", f));
        self.ch1.visit_grads(&mut prefixed("ch1", f));
        self.ch2.visit_grads(&mut prefixed("ch2", f));
    }
}
