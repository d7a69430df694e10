//! M2-BERT's dimension mixer: a gated MLP whose two linears are block-diagonal (no permutation),
//! followed by a residual and a post-LayerNorm (`BertGatedLinearUnitMLP` with
//! `use_monarch_mlp=True` in the authors' code).
//!
//! For rows `h` of width `H` and intermediate width `I`:
//! `a = BD(gated)·h` (`H → 2I`, no bias), `m = GELU(a[..I]) ⊙ a[I..]` (exact erf GELU),
//! `o = BD(wo)·m + b` (`I → H`), `out = LayerNorm(o + h)` (eps `1e-12` in M2-BERT).
//!
//! ```
//! use monarch::mixer::GatedMlp;
//! use monarch::ndarray::Array2;
//! let mlp = GatedMlp::<f64>::random(8, 16, 4, 0).unwrap();
//! let h = Array2::from_shape_fn((3, 8), |(i, j)| (i as f64 - j as f64) / 4.0);
//! let out = mlp.forward(h.view()).unwrap();
//! // Post-LayerNorm with unit weight and zero bias: every row has mean 0.
//! assert!(out.rows().into_iter().all(|r| r.sum().abs() < 1e-9));
//! ```

use super::nn::{gelu, gelu_grad, LayerNorm, LayerNormGrad};
use crate::primitives::error::{check_divides, check_nonzero, Error, Result};
use crate::primitives::params::{prefixed, Grads, Params};
use crate::{BlockDiag, RealScalar};
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayViewD, ArrayViewMutD, Axis};

/// The gated block-diagonal MLP with post-LayerNorm (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct GatedMlp<R> {
    pub(crate) gated: BlockDiag<R>,
    pub(crate) wo: BlockDiag<R>,
    pub(crate) wo_bias: Array1<R>,
    pub(crate) ln: LayerNorm<R>,
}

/// Gradients of a [`GatedMlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct GatedMlpGrad<R> {
    /// With respect to the input rows.
    pub x: Array2<R>,
    /// With respect to the gated blocks.
    pub gated: Array3<R>,
    /// With respect to the `wo` blocks.
    pub wo: Array3<R>,
    /// With respect to the `wo` bias.
    pub wo_bias: Array1<R>,
    /// LayerNorm weight and bias gradients (`x` there is the gradient of `o + h`).
    pub ln: LayerNormGrad<R>,
}

struct Cache<R> {
    a: Array2<R>,
    m: Array2<R>,
    pre_ln: Array2<R>,
}

impl<R: RealScalar> GatedMlp<R> {
    /// From weights in the authors' `BlockdiagLinear` layout.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the block shapes do not chain (`wo`'s input must be half of
    /// `gated`'s output, `wo`'s output `gated`'s input, same block count), bias or LayerNorm
    /// width differs from `H`.
    pub fn new(
        gated: Array3<R>,
        wo: Array3<R>,
        wo_bias: Array1<R>,
        ln: LayerNorm<R>,
    ) -> Result<Self> {
        let gated = BlockDiag::new(gated)?;
        let wo = BlockDiag::new(wo)?;
        let h = gated.in_features();
        if !gated.out_features().is_multiple_of(2) {
            return Err(Error::NotDivisible {
                context: "GatedMlp: gated output (2I) into gated and non-gated halves".into(),
                size: gated.out_features(),
                divisor: 2,
            });
        }
        let i = gated.out_features() / 2;
        if wo.nblocks() != gated.nblocks() || wo.in_features() != i || wo.out_features() != h {
            return Err(Error::shape(
                "GatedMlp: wo blocks (nb, H/nb, I/nb)",
                (gated.nblocks(), h / gated.nblocks(), i / gated.nblocks()),
                wo.weights().dim(),
            ));
        }
        if wo_bias.len() != h || ln.width() != h {
            return Err(Error::shape(
                "GatedMlp: wo bias and LayerNorm width (H)",
                (h, h),
                (wo_bias.len(), ln.width()),
            ));
        }
        Ok(GatedMlp {
            gated,
            wo,
            wo_bias,
            ln,
        })
    }

    /// A seeded layer with `BlockdiagLinear`'s init (uniform `±1/√(block input)`, bias
    /// `±1/√I`), unit LayerNorm, eps `1e-12`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] or [`Error::NotDivisible`] unless `nblocks` divides `H` and `I`.
    pub fn random(hidden: usize, intermediate: usize, nblocks: usize, seed: u64) -> Result<Self> {
        check_nonzero(hidden, "GatedMlp: hidden H")?;
        check_nonzero(intermediate, "GatedMlp: intermediate I")?;
        check_divides(hidden, nblocks, "GatedMlp: H by nblocks")?;
        check_divides(intermediate, nblocks, "GatedMlp: I by nblocks")?;
        let (hb, ib) = (hidden / nblocks, intermediate / nblocks);
        let size = std::mem::size_of::<R>();
        let two_ib = crate::primitives::error::checked_len(&[2, ib], size, "GatedMlp: 2·I")?;
        crate::primitives::error::check_alloc(
            &[nblocks, two_ib, hb],
            size,
            "GatedMlp::random: gate and up factor",
        )?;
        crate::primitives::error::check_alloc(
            &[nblocks, hb, ib],
            size,
            "GatedMlp::random: down factor",
        )?;
        let g = crate::primitives::random::uniform_array3(
            (nblocks, 2 * ib, hb),
            1.0 / (hb as f64).sqrt(),
            seed,
        );
        let w = crate::primitives::random::uniform_array3(
            (nblocks, hb, ib),
            1.0 / (ib as f64).sqrt(),
            seed.wrapping_add(1),
        );
        let b = crate::primitives::random::uniform_vec(
            hidden,
            1.0 / (intermediate as f64).sqrt(),
            seed.wrapping_add(2),
        );
        Self::new(g, w, b, LayerNorm::new(hidden, R::from_f64(1e-12))?)
    }

    /// `H → 2I`, blocks `(nb, 2I/nb, H/nb)` stored out×in.
    pub fn gated(&self) -> &BlockDiag<R> {
        &self.gated
    }
    /// `I → H`, blocks `(nb, H/nb, I/nb)`.
    pub fn wo(&self) -> &BlockDiag<R> {
        &self.wo
    }
    /// Bias of `wo`, `(H,)`.
    pub fn wo_bias(&self) -> &Array1<R> {
        &self.wo_bias
    }
    /// Post-LayerNorm over `H`.
    pub fn ln(&self) -> &LayerNorm<R> {
        &self.ln
    }

    /// Hidden width `H`.
    pub fn hidden(&self) -> usize {
        self.gated.in_features()
    }
    /// Intermediate width `I`.
    pub fn intermediate(&self) -> usize {
        self.wo.in_features()
    }

    fn check(&self, h: ArrayView2<R>, ctx: &str) -> Result<()> {
        if h.ncols() != self.hidden() {
            return Err(Error::shape(
                format!("{ctx}: input columns (H)"),
                self.hidden(),
                h.ncols(),
            ));
        }
        Ok(())
    }

    fn run(&self, h: ArrayView2<R>) -> Result<Cache<R>> {
        let i = self.intermediate();
        let a = self.gated.matmul(h)?;
        let m = Array2::from_shape_fn((h.nrows(), i), |(r, c)| gelu(a[[r, c]]) * a[[r, i + c]]);
        let mut pre_ln = self.wo.matmul(m.view())?;
        pre_ln += &self.wo_bias;
        pre_ln += &h;
        Ok(Cache { a, m, pre_ln })
    }

    /// Applies the layer to rows `h` `(N, H)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `h.ncols() != H`, [`Error::ZeroSize`] for no rows.
    pub fn forward(&self, h: ArrayView2<R>) -> Result<Array2<R>> {
        self.check(h, "GatedMlp::forward")?;
        let c = self.run(h)?;
        self.ln.forward(c.pre_ln.view())
    }

    /// VJP of [`forward`](GatedMlp::forward).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, h: ArrayView2<R>, grad_out: ArrayView2<R>) -> Result<GatedMlpGrad<R>> {
        self.check(h, "GatedMlp::vjp")?;
        if grad_out.dim() != h.dim() {
            return Err(Error::shape(
                "GatedMlp::vjp: grad_out shape",
                h.dim(),
                grad_out.dim(),
            ));
        }
        let i = self.intermediate();
        let c = self.run(h)?;
        let ln = self.ln.vjp(c.pre_ln.view(), grad_out)?;
        let go = &ln.x;
        let wo_bias = go.sum_axis(Axis(0));
        let wog = self.wo.vjp(c.m.view(), go.view())?;
        let gm = &wog.x;
        let mut ga = Array2::zeros(c.a.raw_dim());
        for r in 0..h.nrows() {
            for k in 0..i {
                let (x, y) = (c.a[[r, k]], c.a[[r, i + k]]);
                ga[[r, k]] = gm[[r, k]] * y * gelu_grad(x);
                ga[[r, i + k]] = gm[[r, k]] * gelu(x);
            }
        }
        let gg = self.gated.vjp(h, ga.view())?;
        let mut x = gg.x;
        x += go;
        Ok(GatedMlpGrad {
            x,
            gated: gg.w,
            wo: wog.w,
            wo_bias,
            ln,
        })
    }
}

/// `gated_layers.weight`, `wo.weight`, `wo.bias`, `layernorm.weight`, `layernorm.bias` (the
/// released `BertGatedLinearUnitMLP`'s names; block weights `(nb, out/nb, in/nb)`).
impl<R: RealScalar> Params<R> for GatedMlp<R> {
    type Grad = GatedMlpGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("gated_layers.weight", self.gated.w.view().into_dyn());
        f("wo.weight", self.wo.w.view().into_dyn());
        f("wo.bias", self.wo_bias.view().into_dyn());
        self.ln.visit_params(&mut prefixed("layernorm", f));
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        f("gated_layers.weight", self.gated.w.view_mut().into_dyn());
        f("wo.weight", self.wo.w.view_mut().into_dyn());
        f("wo.bias", self.wo_bias.view_mut().into_dyn());
        self.ln.visit_params_mut(&mut prefixed("layernorm", f));
    }
}

impl<R> Grads<R> for GatedMlpGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("gated_layers.weight", self.gated.view().into_dyn());
        f("wo.weight", self.wo.view().into_dyn());
        f("wo.bias", self.wo_bias.view().into_dyn());
        self.ln.visit_grads(&mut prefixed("layernorm", f));
    }
}
