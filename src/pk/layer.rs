//! The permuted-Kronecker layer `y = J₂ · φ((I_a ⊗ W)·J₁x + 1_a ⊗ b)`.

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::nn::{standard, Activation};
use crate::{Perm, RealScalar};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// A PK layer: permute, apply the same `W` (`out_b × in_b`, optional bias) to each of `a`
/// consecutive blocks, activate, permute.
#[derive(Debug, Clone, PartialEq)]
pub struct PkLayer<R> {
    /// Input permutation `J₁` (length `a·in_b`).
    pub j1: Perm,
    /// The shared block `W`, `(out_b, in_b)`.
    pub w: Array2<R>,
    /// Optional shared bias `(out_b,)`.
    pub bias: Option<Array1<R>>,
    /// Number of blocks `a`.
    pub a: usize,
    /// `φ`.
    pub act: Activation,
    /// Output permutation `J₂` (length `a·out_b`).
    pub j2: Perm,
}

/// Gradients of a [`PkLayer`].
#[derive(Debug, Clone, PartialEq)]
pub struct PkLayerGrad<R> {
    /// With respect to the input rows.
    pub x: Array2<R>,
    /// With respect to `W`.
    pub w: Array2<R>,
    /// With respect to the bias.
    pub bias: Option<Array1<R>>,
}

impl<R: RealScalar> PkLayer<R> {
    /// Builds a layer.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for empty sizes; [`Error::ShapeMismatch`] if `J₁`, `J₂` or the bias do
    /// not have lengths `a·in_b`, `a·out_b`, `out_b`.
    pub fn new(
        j1: Perm,
        w: Array2<R>,
        bias: Option<Array1<R>>,
        a: usize,
        act: Activation,
        j2: Perm,
    ) -> Result<Self> {
        check_nonzero(a, "PkLayer: number of blocks a")?;
        check_nonzero(w.nrows(), "PkLayer: W rows")?;
        check_nonzero(w.ncols(), "PkLayer: W columns")?;
        let (ob, ib) = w.dim();
        if j1.len() != a * ib {
            return Err(Error::shape(
                "PkLayer: J₁ length (a·in_b)",
                a * ib,
                j1.len(),
            ));
        }
        if j2.len() != a * ob {
            return Err(Error::shape(
                "PkLayer: J₂ length (a·out_b)",
                a * ob,
                j2.len(),
            ));
        }
        if let Some(b) = &bias {
            if b.len() != ob {
                return Err(Error::shape("PkLayer: bias length (out_b)", ob, b.len()));
            }
        }
        Ok(PkLayer {
            j1,
            w,
            bias,
            a,
            act,
            j2,
        })
    }

    /// Token mixing `(I_C ⊗ W_t)·vec X` on column-major `vec X` (`X` is `S × C`, `W_t` is
    /// `S' × S`): identity permutations, `a = C`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn token_mixing(
        w_t: Array2<R>,
        bias: Option<Array1<R>>,
        channels: usize,
        act: Activation,
    ) -> Result<Self> {
        let (so, si) = w_t.dim();
        let size = std::mem::size_of::<usize>();
        let ctx = "PkLayer::token_mixing: channels·tokens";
        crate::primitives::error::check_alloc(&[channels, si.max(so)], size, ctx)?;
        Self::new(
            Perm::identity(channels * si),
            w_t,
            bias,
            channels,
            act,
            Perm::identity(channels * so),
        )
    }

    /// Channel mixing `X·W_cᵀ` on column-major `vec X` (`X` is `S × C`, `W_c` is `C' × C`):
    /// `J_c (I_S ⊗ W_c) J_c`-style with the commutation permutations `J₁ = Perm::stride(C, S)`
    /// (gather `K[s·C + c] = c·S + s`) and `J₂ = Perm::stride(S, C')` back to column-major.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn channel_mixing(
        w_c: Array2<R>,
        bias: Option<Array1<R>>,
        tokens: usize,
        act: Activation,
    ) -> Result<Self> {
        let (co, ci) = w_c.dim();
        Self::new(
            Perm::stride(ci, tokens)?,
            w_c,
            bias,
            tokens,
            act,
            Perm::stride(tokens, co)?,
        )
    }

    /// RP-Mixer: fixed seeded random permutations `J₁`, `J₂` around `I_a ⊗ W`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn random_perms(
        w: Array2<R>,
        bias: Option<Array1<R>>,
        a: usize,
        act: Activation,
        seed: u64,
    ) -> Result<Self> {
        let (ob, ib) = w.dim();
        let size = std::mem::size_of::<usize>();
        let ctx = "PkLayer::random_perms: a·block width";
        crate::primitives::error::check_alloc(&[a, ib.max(ob)], size, ctx)?;
        let j1 = Perm::random(a * ib, seed);
        let j2 = Perm::random(a * ob, seed.wrapping_add(0x9e37_79b9));
        Self::new(j1, w, bias, a, act, j2)
    }

    /// Input length `a·in_b`.
    pub fn in_features(&self) -> usize {
        self.j1.len()
    }
    /// Output length `a·out_b`.
    pub fn out_features(&self) -> usize {
        self.j2.len()
    }

    fn check(&self, x: ArrayView2<R>, ctx: &str) -> Result<()> {
        if x.ncols() != self.in_features() {
            return Err(Error::shape(
                format!("{ctx}: input columns (a·in_b)"),
                self.in_features(),
                x.ncols(),
            ));
        }
        if self.w.dim() != (self.out_features() / self.a, self.in_features() / self.a) {
            return Err(Error::shape(
                format!("{ctx}: W vs permutation lengths"),
                (self.out_features() / self.a, self.in_features() / self.a),
                self.w.dim(),
            ));
        }
        Ok(())
    }

    /// `(pre-activation rows (B·a, out_b), permuted input rows (B·a, in_b))`.
    fn pre(&self, x: ArrayView2<R>) -> Result<(Array2<R>, Array2<R>)> {
        let ib = self.w.ncols();
        let b = x.nrows();
        let xp = self
            .j1
            .apply_rows(x)?
            .into_shape_with_order((b * self.a, ib))
            .expect("rows");
        let mut z = standard(xp.dot(&self.w.t()));
        if let Some(bias) = &self.bias {
            z += bias;
        }
        Ok((z, xp))
    }

    /// Applies the layer to rows `x` `(batch, a·in_b)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` has the wrong width.
    pub fn forward(&self, x: ArrayView2<R>) -> Result<Array2<R>> {
        self.check(x, "PkLayer::forward")?;
        let (z, _) = self.pre(x)?;
        let h = z
            .mapv(|v| self.act.apply(v))
            .into_shape_with_order((x.nrows(), self.out_features()))
            .expect("rows");
        self.j2.apply_rows(h.view())
    }

    /// VJP of [`forward`](Self::forward).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, x: ArrayView2<R>, grad_out: ArrayView2<R>) -> Result<PkLayerGrad<R>> {
        self.check(x, "PkLayer::vjp")?;
        if grad_out.dim() != (x.nrows(), self.out_features()) {
            return Err(Error::shape(
                "PkLayer::vjp: grad_out shape",
                (x.nrows(), self.out_features()),
                grad_out.dim(),
            ));
        }
        let (ob, ib) = self.w.dim();
        let b = x.nrows();
        let (z, xp) = self.pre(x)?;
        let gh = self
            .j2
            .inverse()
            .apply_rows(grad_out)?
            .into_shape_with_order((b * self.a, ob))
            .expect("rows");
        let gz = &gh * &z.mapv(|v| self.act.grad(v));
        let gw = gz.t().dot(&xp);
        let gb = self.bias.as_ref().map(|_| gz.sum_axis(Axis(0)));
        let gxp = standard(gz.dot(&self.w))
            .into_shape_with_order((b, self.a * ib))
            .expect("rows");
        let gx = self.j1.inverse().apply_rows(gxp.view())?;
        Ok(PkLayerGrad {
            x: gx,
            w: gw,
            bias: gb,
        })
    }

    /// The dense matrix of the linear part `J₂ (I_a ⊗ W) J₁` (bias and `φ` left out).
    pub fn linear_dense(&self) -> Array2<R> {
        let (ob, ib) = self.w.dim();
        let mut k = Array2::zeros((self.a * ob, self.a * ib));
        for blk in 0..self.a {
            for i in 0..ob {
                for j in 0..ib {
                    k[[blk * ob + i, blk * ib + j]] = self.w[[i, j]];
                }
            }
        }
        let p2: Array2<R> = self.j2.to_dense();
        let p1: Array2<R> = self.j1.to_dense();
        p2.dot(&k).dot(&p1)
    }
}

/// `w`, then `bias` if any (the permutations, `a` and `φ` are fixed).
impl<R: RealScalar> crate::primitives::params::Params<R> for PkLayer<R> {
    type Grad = PkLayerGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, R>)) {
        f("w", self.w.view().into_dyn());
        if let Some(b) = &self.bias {
            f("bias", b.view().into_dyn());
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'a, R>)) {
        f("w", self.w.view_mut().into_dyn());
        if let Some(b) = &mut self.bias {
            f("bias", b.view_mut().into_dyn());
        }
    }
}

impl<R> crate::primitives::params::Grads<R> for PkLayerGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, R>)) {
        f("w", self.w.view().into_dyn());
        if let Some(b) = &self.bias {
            f("bias", b.view().into_dyn());
        }
    }
}
