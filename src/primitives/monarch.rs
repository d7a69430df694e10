//! The [`Monarch`] matrix: two block-diagonal factors with permutations around them,
//! `M = P_out · BD(w2) · P_mid · BD(w1) · P_in`.
//!
//! Built with [`Monarch::from_factors`] it follows the PyTorch reference codes' layout
//! ("convention A" of [`guide::conventions`](crate::guide::conventions)): `w1` is `(k, q, p)`,
//! `w2` is `(l, s, r)`, `k·q == l·r`, input length `n = k·p`, output length `m = l·s`, `P_in`
//! the identity, `P_mid = Perm::stride(r, l)` and `P_out = Perm::stride(l, s)`. Holding an input
//! permutation as well lets [`transpose`](Monarch::transpose) return an exact Monarch, never a
//! dense matrix.
//!
//! ```
//! use monarch::Monarch;
//! use monarch::ndarray::Array2;
//! let m = Monarch::<f64>::random(16, 4, 0).unwrap();
//! let x = Array2::from_shape_fn((3, 16), |(i, j)| (i * 16 + j) as f64 / 10.0);
//! let y = m.matmul(x.view()).unwrap();
//! let dense = x.dot(&m.to_dense().t());
//! assert!((&y - &dense).iter().all(|e| e.abs() < 1e-12));
//! assert_eq!(m.num_params(), 2 * 16 * 4);
//! ```

use crate::primitives::blockdiag::BlockDiag;
use crate::primitives::error::{check_nonzero, check_shape, Error, Result};
use crate::primitives::kernels::Backend;
use crate::{Par, Perm, Scalar};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

/// A Monarch matrix `M = P_out · BD(w2) · P_mid · BD(w1) · P_in` (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Monarch<T> {
    pub(crate) p_in: Perm,
    pub(crate) w1: BlockDiag<T>,
    pub(crate) p_mid: Perm,
    pub(crate) w2: BlockDiag<T>,
    pub(crate) p_out: Perm,
}

/// Gradients of `sum(out ⊙ grad_out)` for `out = M x` (bilinear: no conjugation for complex).
#[derive(Debug, Clone, PartialEq)]
pub struct MonarchGrad<T> {
    /// Gradient with respect to the input rows, `(batch, in_features)`: `grad_out · M`.
    pub x: Array2<T>,
    /// Gradient with respect to `w1`, shape `(k, q, p)`.
    pub w1: Array3<T>,
    /// Gradient with respect to `w2`, shape `(l, s, r)`.
    pub w2: Array3<T>,
}

impl<T: Scalar> MonarchGrad<T> {
    /// Zero gradients shaped for `m` and a batch of `batch` rows, for
    /// [`Monarch::vjp_into`].
    pub fn zeros(m: &Monarch<T>, batch: usize) -> Self {
        MonarchGrad {
            x: Array2::zeros((batch, m.in_features())),
            w1: Array3::zeros(m.w1.weights().dim()),
            w2: Array3::zeros(m.w2.weights().dim()),
        }
    }
}

impl<T: Scalar> Monarch<T> {
    /// Builds a Monarch from the reference layout: `w1` `(k, q, p)`, `w2` `(l, s, r)`, blocks
    /// stored out×in, with `k·q == l·r`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for an empty dimension; [`Error::ShapeMismatch`] if `k·q != l·r`.
    pub fn from_factors(w1: Array3<T>, w2: Array3<T>) -> Result<Self> {
        let (k, q, p) = w1.dim();
        let (l, s, r) = w2.dim();
        for (v, name) in [(k, "k"), (q, "q"), (p, "p"), (l, "l"), (s, "s"), (r, "r")] {
            check_nonzero(
                v,
                &format!("Monarch::from_factors: {name} (w1 is (k,q,p), w2 is (l,s,r))"),
            )?;
        }
        if k * q != l * r {
            return Err(Error::shape(
                format!("Monarch::from_factors: w1 (k,q,p)=({k},{q},{p}) and w2 (l,s,r)=({l},{s},{r}) must chain, k·q == l·r"),
                format!("l·r = {}", k * q),
                format!("l·r = {}", l * r),
            ));
        }
        let size = std::mem::size_of::<usize>();
        crate::primitives::error::check_alloc(&[k, p], size, "Monarch::from_factors: P_in")?;
        Ok(Monarch {
            p_in: Perm::identity(k * p),
            w1: BlockDiag::new(w1)?,
            p_mid: Perm::stride(r, l)?,
            w2: BlockDiag::new(w2)?,
            p_out: Perm::stride(l, s)?,
        })
    }

    /// Builds `P_out · BD(w2) · P_mid · BD(w1) · P_in` from arbitrary parts.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the lengths do not chain.
    pub fn from_parts(
        p_in: Perm,
        w1: BlockDiag<T>,
        p_mid: Perm,
        w2: BlockDiag<T>,
        p_out: Perm,
    ) -> Result<Self> {
        if p_in.len() != w1.in_features() {
            return Err(Error::shape(
                "Monarch::from_parts: P_in length vs w1 input",
                w1.in_features(),
                p_in.len(),
            ));
        }
        if p_mid.len() != w1.out_features() || p_mid.len() != w2.in_features() {
            return Err(Error::shape(
                "Monarch::from_parts: P_mid length vs w1 output and w2 input",
                (w1.out_features(), w2.in_features()),
                p_mid.len(),
            ));
        }
        if p_out.len() != w2.out_features() {
            return Err(Error::shape(
                "Monarch::from_parts: P_out length vs w2 output",
                w2.out_features(),
                p_out.len(),
            ));
        }
        Ok(Monarch {
            p_in,
            w1,
            p_mid,
            w2,
            p_out,
        })
    }

    /// The square identity of size `n` as a Monarch with `nblocks` blocks in each factor.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] or [`Error::NotDivisible`] unless `nblocks` divides `n`;
    /// [`Error::TooLarge`] if the factors cannot be allocated.
    pub fn identity(n: usize, nblocks: usize) -> Result<Self> {
        check_nonzero(n, "Monarch::identity: n")?;
        crate::primitives::error::check_divides(n, nblocks, "Monarch::identity: n by nblocks")?;
        let b = n / nblocks;
        let eye = BlockDiag::<T>::identity(nblocks, b)?;
        Self::from_factors(eye.weights_array().clone(), eye.into_weights())
    }

    /// A seeded random square `n × n` Monarch with `nblocks` blocks per factor, entries
    /// normal with variance `1/(block input width)` (so products keep unit scale).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] or [`Error::NotDivisible`] unless `nblocks` divides `n`;
    /// [`Error::TooLarge`] if the factors (`nblocks·(n/nblocks)²` entries each) cannot be
    /// allocated.
    pub fn random(n: usize, nblocks: usize, seed: u64) -> Result<Self> {
        check_nonzero(n, "Monarch::random: n")?;
        crate::primitives::error::check_divides(n, nblocks, "Monarch::random: n by nblocks")?;
        let b = n / nblocks;
        Self::random_factors((nblocks, b, b), (nblocks, b, b), seed)
    }

    /// A seeded random Monarch with `w1` of shape `(k, q, p)` and `w2` of shape `(l, s, r)`.
    ///
    /// # Errors
    /// As [`from_factors`](Monarch::from_factors); [`Error::TooLarge`] if an element count
    /// overflows or a factor cannot be allocated.
    pub fn random_factors(
        w1: (usize, usize, usize),
        w2: (usize, usize, usize),
        seed: u64,
    ) -> Result<Self> {
        use rand::SeedableRng;
        let size = std::mem::size_of::<T>();
        // Both factors are checked (and their allocation tried) before either is filled.
        crate::primitives::error::check_alloc(
            &[w1.0, w1.1, w1.2],
            size,
            "Monarch::random_factors: w1",
        )?;
        crate::primitives::error::check_alloc(
            &[w2.0, w2.1, w2.2],
            size,
            "Monarch::random_factors: w2",
        )?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let s1 = 1.0 / (w1.2.max(1) as f64).sqrt();
        let s2 = 1.0 / (w2.2.max(1) as f64).sqrt();
        let a = crate::primitives::random::try_normal_array3::<T, _>(&mut rng, w1, s1)?;
        let b = crate::primitives::random::try_normal_array3::<T, _>(&mut rng, w2, s2)?;
        Self::from_factors(a, b)
    }

    /// Length of the intermediate between the two factors (`k·q == l·r`): the width of the
    /// rows [`matmul_keep_into`](Monarch::matmul_keep_into) keeps for the VJP.
    pub fn hidden_features(&self) -> usize {
        self.w1.out_features()
    }

    /// First factor's blocks `(k, q, p)`.
    pub fn w1(&self) -> &Array3<T> {
        self.w1.weights_array()
    }
    /// Second factor's blocks `(l, s, r)`.
    pub fn w2(&self) -> &Array3<T> {
        self.w2.weights_array()
    }
    /// First factor.
    pub fn factor1(&self) -> &BlockDiag<T> {
        &self.w1
    }
    /// Second factor.
    pub fn factor2(&self) -> &BlockDiag<T> {
        &self.w2
    }
    /// Mutable first factor's blocks (shape fixed), for training loops.
    pub fn w1_mut(&mut self) -> ndarray::ArrayViewMut3<'_, T> {
        self.w1.weights_mut()
    }
    /// Mutable second factor's blocks (shape fixed), for training loops.
    pub fn w2_mut(&mut self) -> ndarray::ArrayViewMut3<'_, T> {
        self.w2.weights_mut()
    }
    /// Takes the Monarch apart into `(P_in, w1, P_mid, w2, P_out)`, the arguments of
    /// [`from_parts`](Monarch::from_parts), so a caller can replace one part and rebuild
    /// through the checked constructor.
    pub fn into_parts(self) -> (Perm, BlockDiag<T>, Perm, BlockDiag<T>, Perm) {
        (self.p_in, self.w1, self.p_mid, self.w2, self.p_out)
    }
    /// The permutations `(P_in, P_mid, P_out)`.
    pub fn perms(&self) -> (&Perm, &Perm, &Perm) {
        (&self.p_in, &self.p_mid, &self.p_out)
    }
    /// Input length `n`.
    pub fn in_features(&self) -> usize {
        self.p_in.len()
    }
    /// Output length `m`.
    pub fn out_features(&self) -> usize {
        self.p_out.len()
    }
    /// Stored parameters `k·q·p + l·s·r`.
    pub fn num_params(&self) -> usize {
        self.w1.num_params() + self.w2.num_params()
    }
    /// Floating-point operations of a product with `batch` rows (2 per multiply-add).
    pub fn flops(&self, batch: usize) -> usize {
        2 * batch * self.num_params()
    }

    /// Multiplies rows: `x` is `(batch, in_features)`, the result `(batch, out_features)`,
    /// `out[b] = M · x[b]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` has the wrong number of columns.
    pub fn matmul(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        let mut out = Array2::zeros((x.nrows(), self.out_features()));
        self.matmul_into(x, out.view_mut(), Par::Rayon)?;
        Ok(out)
    }

    /// Multiplies one vector: `M · x`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x.len() != in_features()`.
    pub fn matvec(&self, x: ArrayView1<T>) -> Result<Array1<T>> {
        let x2 = x.insert_axis(Axis(0));
        let out = self.matmul(x2)?;
        Ok(out.index_axis_move(Axis(0), 0))
    }

    /// Like [`matmul`](Monarch::matmul), writing into `out` (overwritten), with a threading policy.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `out` has the wrong shape.
    pub fn matmul_into(&self, x: ArrayView2<T>, out: ArrayViewMut2<T>, par: Par) -> Result<()> {
        self.matmul_into_with(Backend::detect(), x, out, par)
    }

    /// [`matmul_into`](Self::matmul_into) on a chosen kernel backend (for tests and benchmarks
    /// comparing paths).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `out` has the wrong shape.
    ///
    /// # Panics
    /// If `backend` is not available on this CPU ([`Backend::is_available`]).
    pub fn matmul_into_with(
        &self,
        backend: Backend,
        x: ArrayView2<T>,
        out: ArrayViewMut2<T>,
        par: Par,
    ) -> Result<()> {
        assert!(
            backend.is_available(),
            "kernel backend {backend:?} is not available on this CPU"
        );
        self.check_input(x, "Monarch::matmul")?;
        self.check_out(x.nrows(), out.dim(), "Monarch::matmul_into")?;
        crate::primitives::kernels::pipeline::monarch_forward(
            &self.parts(),
            x,
            out,
            None,
            par,
            backend,
        );
        Ok(())
    }

    /// The plain description the kernels run on.
    fn parts(&self) -> crate::primitives::kernels::pipeline::MonarchParts<'_, T> {
        crate::primitives::kernels::pipeline::MonarchParts {
            w1: self.w1.weights(),
            w2: self.w2.weights(),
            p_in: &self.p_in,
            p_mid: &self.p_mid,
            p_out: &self.p_out,
        }
    }

    fn check_input(&self, x: ArrayView2<T>, ctx: &str) -> Result<()> {
        if x.ncols() != self.in_features() {
            return Err(Error::shape(
                format!("{ctx}: input columns (in_features)"),
                self.in_features(),
                x.ncols(),
            ));
        }
        Ok(())
    }

    /// The dense `out_features × in_features` matrix.
    pub fn to_dense(&self) -> Array2<T> {
        let n = self.in_features();
        let eye = Array2::from_shape_fn((n, n), |(i, j)| if i == j { T::one() } else { T::zero() });
        let cols = self
            .matmul(eye.view())
            .expect("identity has in_features columns");
        cols.reversed_axes().as_standard_layout().into_owned()
    }

    /// The exact transpose `Mᵀ = P_inᵀ · BD(w1)ᵀ · P_midᵀ · BD(w2)ᵀ · P_outᵀ` as a Monarch
    /// (blocks transposed, not conjugated). Its `w1()` is this `w2()` transposed blockwise.
    pub fn transpose(&self) -> Self {
        Monarch {
            p_in: self.p_out.inverse(),
            w1: self.w2.transpose(),
            p_mid: self.p_mid.inverse(),
            w2: self.w1.transpose(),
            p_out: self.p_in.inverse(),
        }
    }

    /// The exact conjugate transpose `Mᴴ` as a Monarch (equals [`transpose`](Monarch::transpose)
    /// for real scalars).
    pub fn adjoint(&self) -> Self {
        Monarch {
            p_in: self.p_out.inverse(),
            w1: self.w2.adjoint(),
            p_mid: self.p_mid.inverse(),
            w2: self.w1.adjoint(),
            p_out: self.p_in.inverse(),
        }
    }

    /// Vector-Jacobian product of `out = M x` (rows) for upstream gradient `grad_out`:
    /// gradients of `sum(out ⊙ grad_out)` with respect to `x`, `w1` and `w2`.
    ///
    /// For complex scalars these are the derivatives of the bilinear form (no conjugation);
    /// PyTorch's convention for a real loss is their complex conjugate.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<MonarchGrad<T>> {
        self.check_input(x, "Monarch::vjp")?;
        let what = "grad_out shape (batch, out_features)";
        check_shape(
            "Monarch::vjp",
            what,
            (x.nrows(), self.out_features()),
            grad_out.dim(),
        )?;
        self.vjp_with(Backend::detect(), x, grad_out, Par::Rayon)
    }

    /// [`vjp`](Self::vjp) on a chosen kernel backend and threading policy (for tests and
    /// benchmarks comparing paths).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `grad_out` has the wrong shape.
    ///
    /// # Panics
    /// If `backend` is not available on this CPU ([`Backend::is_available`]).
    pub fn vjp_with(
        &self,
        backend: Backend,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        par: Par,
    ) -> Result<MonarchGrad<T>> {
        assert!(
            backend.is_available(),
            "kernel backend {backend:?} is not available on this CPU"
        );
        self.check_input(x, "Monarch::vjp")?;
        check_shape(
            "Monarch::vjp",
            "grad_out shape (batch, out_features)",
            (x.nrows(), self.out_features()),
            grad_out.dim(),
        )?;
        let mut grads = MonarchGrad {
            x: Array2::zeros((x.nrows(), self.in_features())),
            w1: Array3::zeros((0, 0, 0)),
            w2: Array3::zeros((0, 0, 0)),
        };
        self.run_vjp(x, None, grad_out, &mut grads, par, backend);
        Ok(grads)
    }

    fn run_vjp(
        &self,
        x: ArrayView2<T>,
        mid: Option<ArrayView2<T>>,
        grad_out: ArrayView2<T>,
        grads: &mut MonarchGrad<T>,
        par: Par,
        be: Backend,
    ) {
        let mut g = crate::primitives::kernels::pipeline::GradParts {
            x: &mut grads.x,
            w1: &mut grads.w1,
            w2: &mut grads.w2,
        };
        crate::primitives::kernels::pipeline::monarch_vjp_into(
            &self.parts(),
            x,
            mid,
            grad_out,
            &mut g,
            par,
            be,
        );
    }

    /// [`vjp`](Self::vjp) into a caller's gradients, for training loops: the input gradient
    /// is written into `grads.x`, and the weight gradients into `grads.w1` and `grads.w2`, whose
    /// buffers are reused when they have the right shapes (else they are replaced). Start from
    /// [`MonarchGrad::zeros`] or the result of an earlier call. It recomputes the first
    /// factor's output from `x`; a training step that runs the forward anyway can keep it with
    /// [`matmul_keep_into`](Self::matmul_keep_into) and pass it to
    /// [`vjp_kept_into`](Self::vjp_kept_into) instead.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x`, `grad_out` or `grads.x` has the wrong shape.
    ///
    /// ```
    /// use monarch::{Monarch, MonarchGrad};
    /// use monarch::ndarray::Array2;
    /// let m = Monarch::<f32>::random(16, 4, 1).unwrap();
    /// let x = Array2::<f32>::ones((3, 16));
    /// let mut grads = MonarchGrad::zeros(&m, 3);
    /// m.vjp_into(x.view(), x.view(), &mut grads).unwrap();
    /// assert_eq!(grads, m.vjp(x.view(), x.view()).unwrap());
    /// ```
    pub fn vjp_into(
        &self,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        grads: &mut MonarchGrad<T>,
    ) -> Result<()> {
        self.check_vjp(x, grad_out, grads, "Monarch::vjp_into")?;
        self.run_vjp(x, None, grad_out, grads, Par::Rayon, Backend::detect());
        Ok(())
    }

    /// [`matmul_into`](Self::matmul_into) that also keeps the intermediate a later
    /// [`vjp_kept_into`](Self::vjp_kept_into) needs, as an autograd framework saves
    /// activations: `mid` (shape `(batch, hidden_features())`, overwritten) receives the first
    /// factor's output `BD(w1) · P_in x` row by row. In the reference layout it is written from
    /// the panel the forward already holds in cache, so it costs one extra write of `mid`
    /// (other layouts add a gather of it).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x`, `out` or `mid` has the wrong shape.
    ///
    /// ```
    /// use monarch::{Monarch, MonarchGrad, Par};
    /// use monarch::ndarray::Array2;
    /// let m = Monarch::<f64>::random(16, 4, 1).unwrap();
    /// let x = Array2::from_shape_fn((3, 16), |(i, j)| (i + 2 * j) as f64 / 7.0);
    /// let mut y = Array2::zeros((3, 16));
    /// let mut mid = Array2::zeros((3, m.hidden_features()));
    /// m.matmul_keep_into(x.view(), y.view_mut(), mid.view_mut(), Par::Rayon).unwrap();
    /// assert_eq!(y, m.matmul(x.view()).unwrap());
    /// // Backward from the kept intermediate: the same gradients as from `x` alone.
    /// let g = Array2::ones((3, 16));
    /// let mut grads = MonarchGrad::zeros(&m, 3);
    /// m.vjp_kept_into(x.view(), mid.view(), g.view(), &mut grads).unwrap();
    /// let full = m.vjp(x.view(), g.view()).unwrap();
    /// assert!((&grads.w1 - &full.w1).iter().all(|e| e.abs() < 1e-12));
    /// ```
    pub fn matmul_keep_into(
        &self,
        x: ArrayView2<T>,
        out: ArrayViewMut2<T>,
        mut mid: ArrayViewMut2<T>,
        par: Par,
    ) -> Result<()> {
        let ctx = "Monarch::matmul_keep_into";
        self.check_input(x, ctx)?;
        self.check_out(x.nrows(), out.dim(), ctx)?;
        self.check_mid(x.nrows(), mid.dim(), ctx)?;
        let be = Backend::detect();
        match mid.as_slice_mut() {
            Some(m) => crate::primitives::kernels::pipeline::monarch_forward(
                &self.parts(),
                x,
                out,
                Some(m),
                par,
                be,
            ),
            None => {
                // Not one row-major block: kept in a buffer of our own, then copied.
                let mut tmp = vec![T::zero(); mid.len()];
                crate::primitives::kernels::pipeline::monarch_forward(
                    &self.parts(),
                    x,
                    out,
                    Some(&mut tmp),
                    par,
                    be,
                );
                let tmp = ArrayView2::from_shape(mid.dim(), &tmp).expect("shape");
                mid.assign(&tmp);
            }
        }
        Ok(())
    }

    /// [`vjp_into`](Self::vjp_into) given the intermediate `mid` kept by
    /// [`matmul_keep_into`](Self::matmul_keep_into) for the same `x`, so the first factor's
    /// product is not recomputed (four block products instead of five). `mid` is trusted: a
    /// `mid` from another input gives the gradients at that intermediate.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x`, `mid`, `grad_out` or `grads.x` has the wrong shape.
    pub fn vjp_kept_into(
        &self,
        x: ArrayView2<T>,
        mid: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        grads: &mut MonarchGrad<T>,
    ) -> Result<()> {
        self.check_vjp(x, grad_out, grads, "Monarch::vjp_kept_into")?;
        self.check_mid(x.nrows(), mid.dim(), "Monarch::vjp_kept_into")?;
        self.run_vjp(x, Some(mid), grad_out, grads, Par::Rayon, Backend::detect());
        Ok(())
    }

    fn check_vjp(
        &self,
        x: ArrayView2<T>,
        grad_out: ArrayView2<T>,
        grads: &MonarchGrad<T>,
        ctx: &str,
    ) -> Result<()> {
        self.check_input(x, ctx)?;
        let rows = x.nrows();
        let what = "grad_out shape (batch, out_features)";
        check_shape(ctx, what, (rows, self.out_features()), grad_out.dim())?;
        let what = "grads.x shape (batch, in_features)";
        check_shape(ctx, what, (rows, self.in_features()), grads.x.dim())
    }

    fn check_out(&self, rows: usize, got: (usize, usize), ctx: &str) -> Result<()> {
        let what = "output shape (batch, out_features)";
        check_shape(ctx, what, (rows, self.out_features()), got)
    }

    fn check_mid(&self, rows: usize, got: (usize, usize), ctx: &str) -> Result<()> {
        let what = "mid shape (batch, hidden_features)";
        check_shape(ctx, what, (rows, self.hidden_features()), got)
    }

    /// Converts every entry with `f` (e.g. `f64 → f32`), keeping the structure.
    pub fn map<U: Scalar>(&self, f: impl Fn(T) -> U + Copy) -> Monarch<U> {
        Monarch {
            p_in: self.p_in.clone(),
            w1: BlockDiag {
                w: self.w1.weights().mapv(f),
            },
            p_mid: self.p_mid.clone(),
            w2: BlockDiag {
                w: self.w2.weights().mapv(f),
            },
            p_out: self.p_out.clone(),
        }
    }
}
