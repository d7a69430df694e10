//! The paper's Monarch Mixer layer on `X` `(N × d)` (sequence × width), batched `(batch, N, d)`:
//!
//! * sequence mixing `X̃ = M₂ (K₁ ⊙ M₁ X)`, Monarchs along the sequence, `K₁` `(N', d)`; with
//!   `M₁ = F`, `M₂ = F⁻¹` (the DFT of length `2N` as Monarch products, zero padding for a linear
//!   convolution) this is a per-channel causal or bidirectional [`LongConv`];
//! * dimension mixing `Yᵀ = M₄ σ(K₂ ⊙ M₃ X̃ᵀ)`, Monarchs along the width, `K₂` `(d', N)`;
//! * output `LayerNorm(Y + X̃)`.
//!
//! (The ReLU printed in the paper's sequence-mixing pseudocode is a typo per the authors; the
//! sequence mixing here is linear.) `M₁…M₄` are any [`Monarch`], not necessarily square.
//!
//! ```
//! use monarch::mixer::{M2Layer, SequenceMixing};
//! use monarch::ndarray::Array3;
//! let layer = M2Layer::<f64>::random_monarch(16, 8, 4, 0).unwrap();
//! let x = Array3::from_shape_fn((2, 16, 8), |(b, n, c)| ((b + n * c) % 7) as f64 / 7.0);
//! let y = layer.forward(x.view()).unwrap();
//! assert_eq!(y.dim(), (2, 16, 8));
//! assert!(matches!(layer.seq(), SequenceMixing::Monarch { .. }));
//! ```

use super::longconv::{ConvMethod, LongConv, LongConvGrad};
use super::nn::{Activation, LayerNorm, LayerNormGrad};
use crate::primitives::error::{Error, Result};
use crate::primitives::params::{prefixed, Grads, Params};
use crate::{Monarch, MonarchGrad, RealScalar, Scalar};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewD, ArrayViewMutD};
use num_complex::Complex;

/// How the sequence is mixed.
// A layer holds one of these for its lifetime; boxing the Monarch variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceMixing<R> {
    /// `M₂ (K₁ ⊙ M₁ X)` with learned Monarchs: `m1` `N' × N`, `k1` `(N', d)`, `m2` `N × N'`.
    Monarch {
        /// `M₁`.
        m1: Monarch<R>,
        /// `K₁`, `(N', d)`.
        k1: Array2<R>,
        /// `M₂`.
        m2: Monarch<R>,
    },
    /// `M₁ = F`, `M₂ = F⁻¹` at length `2N`, `K₁ = F k`: a long convolution (causal or
    /// bidirectional), computed with the layer's [`ConvMethod`].
    Conv(LongConv<R>),
}

/// Gradients of the sequence-mixing parameters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceMixingGrad<R> {
    /// For [`SequenceMixing::Monarch`] (the `x` fields are intermediate).
    Monarch {
        /// `M₁`.
        m1: MonarchGrad<R>,
        /// `K₁`.
        k1: Array2<R>,
        /// `M₂`.
        m2: MonarchGrad<R>,
    },
    /// For [`SequenceMixing::Conv`].
    Conv(LongConvGrad<R>),
}

/// The paper's M2 layer (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct M2Layer<R> {
    seq: SequenceMixing<R>,
    m3: Monarch<R>,
    k2: Array2<R>,
    m4: Monarch<R>,
    act: Activation,
    ln: LayerNorm<R>,
    method: ConvMethod,
}

/// Gradients of an [`M2Layer`].
#[derive(Debug, Clone, PartialEq)]
pub struct M2LayerGrad<R> {
    /// With respect to the input `(batch, N, d)`.
    pub x: Array3<R>,
    /// Sequence mixing.
    pub seq: SequenceMixingGrad<R>,
    /// `M₃`.
    pub m3: MonarchGrad<R>,
    /// `K₂`.
    pub k2: Array2<R>,
    /// `M₄`.
    pub m4: MonarchGrad<R>,
    /// LayerNorm.
    pub ln: LayerNormGrad<R>,
}

struct Cache<R> {
    /// `M₁ Xᵀ` rows `(B·d, N')` (Monarch case).
    s1: Option<Array2<R>>,
    /// `X̃` rows `(B·N, d)`.
    xt: Array2<R>,
    /// `M₃ X̃` rows `(B·N, d')`.
    a3: Array2<R>,
    /// `σ(K₂ ⊙ a3)` rows.
    h: Array2<R>,
    /// `Y + X̃` rows.
    pre: Array2<R>,
}

/// `(B, N, d)` → rows `(B·d, N)` (one row per batch item and channel).
fn channel_rows<R: RealScalar>(x: ArrayView3<R>) -> Array2<R> {
    let (b, n, d) = x.dim();
    x.permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((b * d, n))
        .expect("rows")
}

/// Rows `(B·d, N)` → `(B, N, d)`.
fn from_channel_rows<R: RealScalar>(r: Array2<R>, b: usize, d: usize) -> Array3<R> {
    let n = r.ncols();
    r.into_shape_with_order((b, d, n))
        .expect("rows")
        .permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned()
}

impl<R: RealScalar> M2Layer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// A seeded layer with square Monarchs (`nblocks` blocks) for sequence length `n` and width
    /// `d`, `K₁ = K₂ = 1`, GELU, unit LayerNorm (eps 1e-5).
    ///
    /// # Errors
    /// [`Error::NotDivisible`] unless `nblocks` divides `n` and `d`.
    pub fn random_monarch(n: usize, d: usize, nblocks: usize, seed: u64) -> Result<Self> {
        let seq = SequenceMixing::Monarch {
            m1: Monarch::random(n, nblocks, seed)?,
            k1: Array2::ones((n, d)),
            m2: Monarch::random(n, nblocks, seed.wrapping_add(1))?,
        };
        Self::with_sequence_mixing(seq, n, d, nblocks, seed)
    }

    /// A seeded layer whose sequence mixing is the long convolution `conv` (length `n`).
    ///
    /// # Errors
    /// [`Error::NotDivisible`] unless `nblocks` divides `d`.
    pub fn random_conv(conv: LongConv<R>, d: usize, nblocks: usize, seed: u64) -> Result<Self> {
        let n = conv.len();
        Self::with_sequence_mixing(SequenceMixing::Conv(conv), n, d, nblocks, seed)
    }

    fn with_sequence_mixing(
        seq: SequenceMixing<R>,
        n: usize,
        d: usize,
        nblocks: usize,
        seed: u64,
    ) -> Result<Self> {
        M2Layer::new(
            seq,
            Monarch::random(d, nblocks, seed.wrapping_add(2))?,
            Array2::ones((d, n)),
            Monarch::random(d, nblocks, seed.wrapping_add(3))?,
            Activation::Gelu,
            LayerNorm::new(d, R::from_f64(1e-5))?,
        )
    }

    /// A layer from its parts, computing a [`SequenceMixing::Conv`] with
    /// [`ConvMethod::MonarchDft`]. With `N` the sequence length (`K₂`'s columns), `d` the
    /// width (`M₃`'s input) and `d'` `M₃`'s output: `M₁` `N' × N`, `K₁` `(N', d)`, `M₂`
    /// `N × N'` (or a long convolution with `d` channels of length `N`), `K₂` `(d', N)`, `M₄`
    /// `d × d'`, LayerNorm over `d`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the part whose size does not fit.
    pub fn new(
        seq: SequenceMixing<R>,
        m3: Monarch<R>,
        k2: Array2<R>,
        m4: Monarch<R>,
        act: Activation,
        ln: LayerNorm<R>,
    ) -> Result<Self> {
        let (dp, n) = k2.dim();
        let d = m3.in_features();
        let ctx = |what: &str| {
            format!(
                "M2Layer: {what} for N = {n} (K₂ columns), d = {d} (M₃ input), d' = {dp} (K₂ rows)"
            )
        };
        if m3.out_features() != dp {
            return Err(Error::shape(ctx("M₃ output (d')"), dp, m3.out_features()));
        }
        if (m4.out_features(), m4.in_features()) != (d, dp) {
            return Err(Error::shape(
                ctx("M₄ (out, in) = (d, d')"),
                (d, dp),
                (m4.out_features(), m4.in_features()),
            ));
        }
        if ln.width() != d {
            return Err(Error::shape(ctx("LayerNorm width (d)"), d, ln.width()));
        }
        match &seq {
            SequenceMixing::Monarch { m1, k1, m2 } => {
                let np = m1.out_features();
                if m1.in_features() != n {
                    return Err(Error::shape(ctx("M₁ input (N)"), n, m1.in_features()));
                }
                if k1.dim() != (np, d) {
                    return Err(Error::shape(
                        ctx("K₁ (N', d) with N' = M₁'s output"),
                        (np, d),
                        k1.dim(),
                    ));
                }
                if (m2.out_features(), m2.in_features()) != (n, np) {
                    return Err(Error::shape(
                        ctx("M₂ (out, in) = (N, N')"),
                        (n, np),
                        (m2.out_features(), m2.in_features()),
                    ));
                }
            }
            SequenceMixing::Conv(c) => {
                if (c.channels(), c.len()) != (d, n) {
                    return Err(Error::shape(
                        ctx("long convolution (channels, length) = (d, N)"),
                        (d, n),
                        (c.channels(), c.len()),
                    ));
                }
            }
        }
        Ok(M2Layer {
            seq,
            m3,
            k2,
            m4,
            act,
            ln,
            method: ConvMethod::MonarchDft,
        })
    }

    /// Sequence mixing.
    pub fn seq(&self) -> &SequenceMixing<R> {
        &self.seq
    }
    /// `M₃`, `d' × d`.
    pub fn m3(&self) -> &Monarch<R> {
        &self.m3
    }
    /// `K₂`, `(d', N)`.
    pub fn k2(&self) -> &Array2<R> {
        &self.k2
    }
    /// `M₄`, `d × d'`.
    pub fn m4(&self) -> &Monarch<R> {
        &self.m4
    }
    /// `σ`.
    pub fn act(&self) -> Activation {
        self.act
    }
    /// Sets `σ`.
    pub fn set_act(&mut self, act: Activation) {
        self.act = act;
    }
    /// Output LayerNorm over `d`.
    pub fn ln(&self) -> &LayerNorm<R> {
        &self.ln
    }
    /// How a [`SequenceMixing::Conv`] is computed.
    pub fn method(&self) -> ConvMethod {
        self.method
    }
    /// Sets how a [`SequenceMixing::Conv`] is computed.
    pub fn set_method(&mut self, method: ConvMethod) {
        self.method = method;
    }

    /// Sequence length `N` the layer is built for.
    pub fn seq_len(&self) -> usize {
        self.k2.ncols()
    }
    /// Model width `d`.
    pub fn width(&self) -> usize {
        self.m3.in_features()
    }

    fn check(&self, x: ArrayView3<R>, ctx: &str) -> Result<()> {
        let (b, n, d) = x.dim();
        let (nn, dd) = (self.seq_len(), self.width());
        if (n, d) != (nn, dd) {
            return Err(Error::shape(
                format!("{ctx}: input (batch, N, d)"),
                (b, nn, dd),
                x.dim(),
            ));
        }
        Ok(())
    }

    fn run(&self, x: ArrayView3<R>) -> Result<Cache<R>> {
        let (b, n, d) = x.dim();
        let (xt3, s1) = match &self.seq {
            SequenceMixing::Monarch { m1, k1, m2 } => {
                let rows = channel_rows(x);
                let s1 = m1.matmul(rows.view())?;
                let mut s2 = s1.clone();
                scale_channel_rows(&mut s2, k1.view(), d);
                let out = m2.matmul(s2.view())?;
                (from_channel_rows(out, b, d), Some(s1))
            }
            SequenceMixing::Conv(c) => {
                let u = x.permuted_axes([0, 2, 1]);
                let y = c.forward(u, self.method)?;
                (
                    y.permuted_axes([0, 2, 1]).as_standard_layout().into_owned(),
                    None,
                )
            }
        };
        let xt = xt3.into_shape_with_order((b * n, d)).expect("rows");
        let a3 = self.m3.matmul(xt.view())?;
        let mut h = a3.clone();
        for (r, mut row) in h.rows_mut().into_iter().enumerate() {
            let tok = r % n;
            for (j, v) in row.iter_mut().enumerate() {
                *v = self.act.apply(*v * self.k2[[j, tok]]);
            }
        }
        let mut pre = self.m4.matmul(h.view())?;
        pre += &xt;
        Ok(Cache { s1, xt, a3, h, pre })
    }

    /// Applies the layer to `x` `(batch, N, d)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or the parameters do not fit `(N, d)`.
    pub fn forward(&self, x: ArrayView3<R>) -> Result<Array3<R>> {
        self.check(x, "M2Layer::forward")?;
        let c = self.run(x)?;
        Ok(self
            .ln
            .forward(c.pre.view())?
            .into_shape_with_order(x.dim())
            .expect("rows"))
    }

    /// VJP of [`forward`](Self::forward).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, x: ArrayView3<R>, grad_out: ArrayView3<R>) -> Result<M2LayerGrad<R>> {
        self.check(x, "M2Layer::vjp")?;
        if grad_out.dim() != x.dim() {
            return Err(Error::shape(
                "M2Layer::vjp: grad_out shape",
                x.dim(),
                grad_out.dim(),
            ));
        }
        let (b, n, d) = x.dim();
        let c = self.run(x)?;
        let g = grad_out
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((b * n, d))
            .expect("rows");
        let ln = self.ln.vjp(c.pre.view(), g.view())?;
        let m4 = self.m4.vjp(c.h.view(), ln.x.view())?;
        let mut ga = m4.x.clone();
        let mut gk2 = Array2::zeros(self.k2.raw_dim());
        for (r, mut row) in ga.rows_mut().into_iter().enumerate() {
            let tok = r % n;
            for (j, gv) in row.iter_mut().enumerate() {
                let k = self.k2[[j, tok]];
                let a = c.a3[[r, j]];
                let gpre = *gv * self.act.grad(a * k);
                gk2[[j, tok]] += gpre * a;
                *gv = gpre * k;
            }
        }
        let m3 = self.m3.vjp(c.xt.view(), ga.view())?;
        let mut gxt = m3.x.clone();
        gxt += &ln.x;
        let gxt3 = gxt.into_shape_with_order((b, n, d)).expect("rows");
        let (gx, seq) = match &self.seq {
            SequenceMixing::Monarch { m1, k1, m2 } => {
                let s1 = c.s1.as_ref().expect("Monarch cache");
                let mut s2 = s1.clone();
                scale_channel_rows(&mut s2, k1.view(), d);
                let g2 = m2.vjp(s2.view(), channel_rows(gxt3.view()).view())?;
                let mut gk1 = Array2::zeros(k1.raw_dim());
                let mut gs1 = g2.x.clone();
                for (r, mut row) in gs1.rows_mut().into_iter().enumerate() {
                    let ch = r % d;
                    for (i, gv) in row.iter_mut().enumerate() {
                        gk1[[i, ch]] += *gv * s1[[r, i]];
                        *gv *= k1[[i, ch]];
                    }
                }
                let g1 = m1.vjp(channel_rows(x).view(), gs1.view())?;
                let gx = from_channel_rows(g1.x.clone(), b, d);
                (
                    gx,
                    SequenceMixingGrad::Monarch {
                        m1: g1,
                        k1: gk1,
                        m2: g2,
                    },
                )
            }
            SequenceMixing::Conv(conv) => {
                let u = x.permuted_axes([0, 2, 1]);
                let gu = gxt3.view().permuted_axes([0, 2, 1]);
                let cg = conv.vjp(u, gu, self.method)?;
                let gx =
                    cg.u.view()
                        .permuted_axes([0, 2, 1])
                        .as_standard_layout()
                        .into_owned();
                (gx, SequenceMixingGrad::Conv(cg))
            }
        };
        Ok(M2LayerGrad {
            x: gx,
            seq,
            m3,
            k2: gk2,
            m4,
            ln,
        })
    }
}

/// `rows[r, i] *= k[i, r % d]` for channel rows `(B·d, N')` and `k` `(N', d)`.
fn scale_channel_rows<R: RealScalar>(rows: &mut Array2<R>, k: ArrayView2<R>, d: usize) {
    for (r, mut row) in rows.rows_mut().into_iter().enumerate() {
        let ch = r % d;
        for (i, v) in row.iter_mut().enumerate() {
            *v *= k[[i, ch]];
        }
    }
}

/// `m1.w1`, `m1.w2`, `k1`, `m2.w1`, `m2.w2` for learned Monarchs; the long convolution's
/// `k_fwd`, `k_rev`, `d` otherwise.
impl<R: RealScalar> Params<R> for SequenceMixing<R>
where
    Complex<R>: Scalar<Real = R>,
{
    type Grad = SequenceMixingGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        match self {
            SequenceMixing::Monarch { m1, k1, m2 } => {
                m1.visit_params(&mut prefixed("m1", f));
                f("k1", k1.view().into_dyn());
                m2.visit_params(&mut prefixed("m2", f));
            }
            SequenceMixing::Conv(c) => c.visit_params(f),
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        match self {
            SequenceMixing::Monarch { m1, k1, m2 } => {
                m1.visit_params_mut(&mut prefixed("m1", f));
                f("k1", k1.view_mut().into_dyn());
                m2.visit_params_mut(&mut prefixed("m2", f));
            }
            SequenceMixing::Conv(c) => c.visit_params_mut(f),
        }
    }
}

impl<R> Grads<R> for SequenceMixingGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        match self {
            SequenceMixingGrad::Monarch { m1, k1, m2 } => {
                m1.visit_grads(&mut prefixed("m1", f));
                f("k1", k1.view().into_dyn());
                m2.visit_grads(&mut prefixed("m2", f));
            }
            SequenceMixingGrad::Conv(c) => c.visit_grads(f),
        }
    }
}

/// `seq.*` ([`SequenceMixing`]'s), `m3.w1`, `m3.w2`, `k2`, `m4.w1`, `m4.w2`, `ln.weight`,
/// `ln.bias`.
impl<R: RealScalar> Params<R> for M2Layer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    type Grad = M2LayerGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        self.seq.visit_params(&mut prefixed("seq", f));
        self.m3.visit_params(&mut prefixed("m3", f));
        f("k2", self.k2.view().into_dyn());
        self.m4.visit_params(&mut prefixed("m4", f));
        self.ln.visit_params(&mut prefixed("ln", f));
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        self.seq.visit_params_mut(&mut prefixed("seq", f));
        self.m3.visit_params_mut(&mut prefixed("m3", f));
        f("k2", self.k2.view_mut().into_dyn());
        self.m4.visit_params_mut(&mut prefixed("m4", f));
        self.ln.visit_params_mut(&mut prefixed("ln", f));
    }
}

impl<R> Grads<R> for M2LayerGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        self.seq.visit_grads(&mut prefixed("seq", f));
        self.m3.visit_grads(&mut prefixed("m3", f));
        f("k2", self.k2.view().into_dyn());
        self.m4.visit_grads(&mut prefixed("m4", f));
        self.ln.visit_grads(&mut prefixed("ln", f));
    }
}
