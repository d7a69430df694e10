//! [`MonarchChain`]: a product of `k ≥ 2` block-diagonal factors with permutations between them,
//! `M = P_k · BD(w_{k-1}) · P_{k-1} ⋯ P_1 · BD(w_0) · P_0`.
//!
//! [`MonarchChain::from_factors`] extends the core's convention A to any number of factors:
//! `P_0` is the identity, the permutation in front of factor `i ≥ 1` with `nb_i` blocks of
//! `rows_i × cols_i` is `Perm::stride(cols_i, nb_i)`, and the last one is
//! `Perm::stride(nb_{k-1}, rows_{k-1})`. With two factors this is exactly [`Monarch`].
//!
//! [`MonarchChain::from_factors_hmm`] follows the public MonarchHMM code instead: its factors are
//! listed in the authors' order and applied last to first, and after each factor (with `nb`
//! blocks of `rows × cols`) the `(nb, rows)` view of its output is transposed,
//! `Perm::stride(nb, rows)`, before the next one (and once more after the last). Where the block
//! counts of consecutive factors multiply to the length (`nb_{i-1}·nb_i = n`: the square
//! two-factor Monarch, `b × b` blocks with `n = b²`) both layouts give the same matrix; in
//! MonarchHMM's chains of three or more factors (`n = b^k`, every factor `b^{k-1}` blocks of
//! `b × b`) they differ, and its trained weights must be loaded with
//! [`from_factors_hmm`](MonarchChain::from_factors_hmm).
//! [`from_parts`](MonarchChain::from_parts) takes any permutations.
use crate::primitives::blockdiag::BlockDiag;
use crate::primitives::error::{Error, Result};
use crate::primitives::random::try_normal_array3;
use crate::{Monarch, Par, Perm, Scalar};
use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2};
use rand::SeedableRng;

/// A k-factor Monarch matrix (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct MonarchChain<T> {
    pub(crate) factors: Vec<BlockDiag<T>>,
    /// `perms[i]` is applied just before `factors[i]`; `perms[k]` after the last factor.
    pub(crate) perms: Vec<Perm>,
}

/// Shape `(nb, rows, cols)` of each factor, checked to chain: `nb_i·cols_i == nb_{i-1}·rows_{i-1}`.
fn check_shapes(shapes: &[(usize, usize, usize)], min_factors: usize) -> Result<()> {
    if shapes.len() < min_factors {
        return Err(Error::invalid(format!(
            "MonarchChain needs at least {min_factors} factors, got {}",
            shapes.len()
        )));
    }
    for (i, &(nb, r, c)) in shapes.iter().enumerate() {
        if nb == 0 || r == 0 || c == 0 {
            return Err(Error::zero(format!(
                "MonarchChain: factor {i} has shape (nb, rows, cols) = ({nb}, {r}, {c})"
            )));
        }
        let size = std::mem::size_of::<usize>();
        crate::primitives::error::checked_len(&[nb, r, c], size, "MonarchChain: factor")?;
        if i > 0 {
            let (pnb, pr, _) = shapes[i - 1];
            if nb * c != pnb * pr {
                return Err(Error::shape(
                    format!("MonarchChain: factor {i} input length nb·cols = {nb}·{c} must equal factor {} output length nb·rows = {pnb}·{pr}", i - 1),
                    pnb * pr,
                    nb * c,
                ));
            }
        }
    }
    Ok(())
}

impl<T: Scalar> MonarchChain<T> {
    /// Builds a chain from factors `w_i` of shape `(nb_i, rows_i, cols_i)` (blocks stored
    /// out×in, `w_0` applied first) with the stride permutations of the core's convention A
    /// (module docs); [`from_factors_hmm`](MonarchChain::from_factors_hmm) takes the MonarchHMM
    /// layout.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for fewer than two factors, [`Error::ZeroSize`] for an empty
    /// dimension, [`Error::ShapeMismatch`] if consecutive factors do not chain,
    /// [`Error::TooLarge`] if a length overflows or cannot be allocated.
    pub fn from_factors(ws: Vec<Array3<T>>) -> Result<Self> {
        let shapes: Vec<_> = ws.iter().map(|w| w.dim()).collect();
        check_shapes(&shapes, 2)?;
        Self::from_checked_factors(ws)
    }

    fn from_checked_factors(ws: Vec<Array3<T>>) -> Result<Self> {
        let shapes: Vec<_> = ws.iter().map(|w| w.dim()).collect();
        let k = shapes.len();
        let mut perms = Vec::with_capacity(k + 1);
        perms.push(Self::input_identity(shapes[0])?);
        for &(nb, _, c) in &shapes[1..] {
            perms.push(Perm::stride(c, nb)?);
        }
        let (nb, r, _) = shapes[k - 1];
        perms.push(Perm::stride(nb, r)?);
        Self::from_checked_parts(perms, ws)
    }

    /// The identity in front of a first factor of shape `(nb, rows, cols)`.
    fn input_identity((nb, _, c): (usize, usize, usize)) -> Result<Perm> {
        let size = std::mem::size_of::<usize>();
        crate::primitives::error::check_alloc(&[nb, c], size, "MonarchChain: input length")?;
        Ok(Perm::identity(nb * c))
    }

    fn from_checked_parts(perms: Vec<Perm>, ws: Vec<Array3<T>>) -> Result<Self> {
        let factors = ws
            .into_iter()
            .map(BlockDiag::new)
            .collect::<Result<Vec<_>>>()?;
        Ok(MonarchChain { factors, perms })
    }

    /// Builds a chain in the layout of the public MonarchHMM code (see the module docs): `ws`
    /// in the authors' list order, `ws[k-1]` applied first and `ws[0]` last; before each factor
    /// of shape `(nb, rows, cols)` the vector is viewed as `(nb, cols)` (block `a` takes row
    /// `a`), and after it the `(nb, rows)` view of the output is transposed
    /// (`Perm::stride(nb, rows)`). In [`factors`](MonarchChain::factors) the factors are stored
    /// in application order, so `factors()[0]` is `ws[k-1]`.
    ///
    /// ```
    /// use monarch::circuit::MonarchChain;
    /// use monarch::ndarray::Array3;
    /// // Two factors of 4 blocks 4×4 (n = 16): the same matrix as `from_factors` in the
    /// // reference layout, with the list reversed.
    /// let a = Array3::from_shape_fn((4, 4, 4), |(i, j, l)| (i * 16 + j * 4 + l) as f64 / 64.0);
    /// let b = Array3::from_shape_fn((4, 4, 4), |(i, j, l)| ((i + 2 * j + 3 * l) % 5) as f64);
    /// let hmm = MonarchChain::from_factors_hmm(vec![b.clone(), a.clone()]).unwrap();
    /// let reference = MonarchChain::from_factors(vec![a, b]).unwrap();
    /// assert_eq!(hmm.to_dense(), reference.to_dense());
    /// ```
    ///
    /// # Errors
    /// As [`from_factors`](MonarchChain::from_factors) (shapes checked in application order).
    pub fn from_factors_hmm(mut ws: Vec<Array3<T>>) -> Result<Self> {
        ws.reverse();
        let shapes: Vec<_> = ws.iter().map(|w| w.dim()).collect();
        check_shapes(&shapes, 2)?;
        let mut perms = Vec::with_capacity(shapes.len() + 1);
        perms.push(Self::input_identity(shapes[0])?);
        for &(nb, r, _) in &shapes {
            perms.push(Perm::stride(nb, r)?);
        }
        Self::from_checked_parts(perms, ws)
    }

    /// Builds `perms[k] · BD(factors[k-1]) ⋯ BD(factors[0]) · perms[0]` from arbitrary parts
    /// (`perms.len() == factors.len() + 1`).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for fewer than two factors, [`Error::ShapeMismatch`] if the
    /// permutation count or any length does not chain.
    pub fn from_parts(perms: Vec<Perm>, factors: Vec<BlockDiag<T>>) -> Result<Self> {
        let shapes: Vec<_> = factors.iter().map(|f| f.weights().dim()).collect();
        check_shapes(&shapes, 2)?;
        Self::from_parts_any(perms, factors)
    }

    /// Like `from_parts` but allowing a single factor (the dense baseline of the HMM).
    pub(crate) fn from_parts_any(perms: Vec<Perm>, factors: Vec<BlockDiag<T>>) -> Result<Self> {
        let shapes: Vec<_> = factors.iter().map(|f| f.weights().dim()).collect();
        check_shapes(&shapes, 1)?;
        if perms.len() != factors.len() + 1 {
            return Err(Error::shape(
                "MonarchChain::from_parts: number of permutations (factors + 1)",
                factors.len() + 1,
                perms.len(),
            ));
        }
        for (i, p) in perms.iter().enumerate() {
            let want = if i < factors.len() {
                factors[i].in_features()
            } else {
                factors[i - 1].out_features()
            };
            if p.len() != want {
                return Err(Error::shape(
                    format!("MonarchChain::from_parts: length of permutation {i}"),
                    want,
                    p.len(),
                ));
            }
        }
        Ok(MonarchChain { factors, perms })
    }

    /// The same matrix as a two-factor [`Monarch`] (its three permutations kept).
    pub fn from_monarch(m: &Monarch<T>) -> Self {
        let (p_in, p_mid, p_out) = m.perms();
        MonarchChain {
            factors: vec![m.factor1().clone(), m.factor2().clone()],
            perms: vec![p_in.clone(), p_mid.clone(), p_out.clone()],
        }
    }

    /// A seeded random chain with factor shapes `shapes[i] = (nb, rows, cols)`, entries normal
    /// with variance `1/cols` (products keep unit scale).
    ///
    /// # Errors
    /// As [`from_factors`](MonarchChain::from_factors).
    pub fn random(shapes: &[(usize, usize, usize)], seed: u64) -> Result<Self> {
        check_shapes(shapes, 2)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ws = shapes
            .iter()
            .map(|&s| try_normal_array3(&mut rng, s, 1.0 / (s.2 as f64).sqrt()))
            .collect::<Result<Vec<_>>>()?;
        Self::from_factors(ws)
    }

    /// Number of block-diagonal factors `k`.
    pub fn num_factors(&self) -> usize {
        self.factors.len()
    }
    /// The factors, `factors()[0]` applied first.
    pub fn factors(&self) -> &[BlockDiag<T>] {
        &self.factors
    }
    /// Mutable factor `i` (its shape cannot change).
    ///
    /// # Panics
    /// If `i >= num_factors()`.
    pub fn factor_mut(&mut self, i: usize) -> &mut BlockDiag<T> {
        &mut self.factors[i]
    }
    /// The `k + 1` permutations; `perms()[i]` is applied just before factor `i`.
    pub fn perms(&self) -> &[Perm] {
        &self.perms
    }
    /// Input length.
    pub fn in_features(&self) -> usize {
        self.factors[0].in_features()
    }
    /// Output length.
    pub fn out_features(&self) -> usize {
        self.factors[self.factors.len() - 1].out_features()
    }
    /// Stored parameters (sum over factors).
    pub fn num_params(&self) -> usize {
        self.factors.iter().map(|f| f.num_params()).sum()
    }
    /// Floating-point operations of a product with `batch` rows (2 per multiply-add).
    pub fn flops(&self, batch: usize) -> usize {
        2 * batch * self.num_params()
    }

    /// Multiplies rows: `x` is `(batch, in_features)`, the result `(batch, out_features)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` has the wrong number of columns.
    pub fn matmul(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        let mut out = Array2::zeros((x.nrows(), self.out_features()));
        self.matmul_into(x, out.view_mut(), Par::Rayon)?;
        Ok(out)
    }

    /// Like [`matmul`](MonarchChain::matmul), writing into `out`, with a threading policy.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `out` has the wrong shape.
    pub fn matmul_into(&self, x: ArrayView2<T>, mut out: ArrayViewMut2<T>, par: Par) -> Result<()> {
        self.check_io(x.dim(), out.dim(), "MonarchChain::matmul")?;
        let mut cur = self.perms[0].apply_rows(x)?;
        for (f, p) in self.factors.iter().zip(&self.perms[1..]) {
            let mut y = Array2::zeros((x.nrows(), f.out_features()));
            f.matmul_into(cur.view(), y.view_mut(), par)?;
            cur = if p.is_identity() {
                y
            } else {
                p.apply_rows(y.view())?
            };
        }
        out.assign(&cur);
        Ok(())
    }

    pub(crate) fn check_io(&self, x: (usize, usize), out: (usize, usize), ctx: &str) -> Result<()> {
        if x.1 != self.in_features() {
            return Err(Error::shape(
                format!("{ctx}: input columns (in_features)"),
                self.in_features(),
                x.1,
            ));
        }
        if out != (x.0, self.out_features()) {
            return Err(Error::shape(
                format!("{ctx}: output shape (batch, out_features)"),
                (x.0, self.out_features()),
                out,
            ));
        }
        Ok(())
    }

    /// The exact transpose `Mᵀ = P_0ᵀ · BD(w_0)ᵀ ⋯ BD(w_{k-1})ᵀ · P_kᵀ` as a chain.
    pub fn transpose(&self) -> Self {
        MonarchChain {
            factors: self.factors.iter().rev().map(|f| f.transpose()).collect(),
            perms: self.perms.iter().rev().map(|p| p.inverse()).collect(),
        }
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

    /// Converts every entry with `f`, keeping the structure.
    pub fn map<U: Scalar>(&self, f: impl Fn(T) -> U + Copy) -> MonarchChain<U> {
        MonarchChain {
            factors: self
                .factors
                .iter()
                .map(|b| BlockDiag::new(b.weights().mapv(f)).expect("non-empty"))
                .collect(),
            perms: self.perms.clone(),
        }
    }
}
