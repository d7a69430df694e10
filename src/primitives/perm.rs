//! Permutations as gather indices, with the stride (reshape-transpose) permutations of Monarch.
//!
//! Convention (see [`guide::conventions`](crate::guide::conventions)): applying a permutation
//! `p` to a vector `x` gives `y[i] = x[p.index()[i]]` — a *gather*. The matrix of `p` has a one at `(i, p[i])`, so its
//! transpose is the [`inverse`](Perm::inverse).
//!
//! [`Perm::stride(rows, cols)`](Perm::stride) views a vector of length `rows·cols` as a
//! row-major `(rows, cols)` matrix and transposes it: `y[j·rows + i] = x[i·cols + j]`.
//! Its inverse is `Perm::stride(cols, rows)`.
//!
//! ```
//! use monarch::Perm;
//! let p = Perm::stride(2, 3).unwrap(); // view [0 1 2; 3 4 5], read it column by column
//! assert_eq!(p.index(), &[0, 3, 1, 4, 2, 5]);
//! assert_eq!(p.apply(&[10, 11, 12, 13, 14, 15]), vec![10, 13, 11, 14, 12, 15]);
//! assert_eq!(p.inverse(), Perm::stride(3, 2).unwrap());
//! // Sizes whose product overflows are an error, not a panic.
//! assert!(Perm::stride(1 << 33, 1 << 31).is_err());
//! assert!(p.compose(&p.inverse()).is_identity());
//! ```

use crate::primitives::error::{Error, Result};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// How a permutation was built: lets kernels read a stride permutation as strided access
/// instead of an index table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermKind {
    /// The identity.
    Identity,
    /// `Perm::stride(rows, cols)`: reshape to `(rows, cols)` row-major and transpose.
    Stride {
        /// Rows of the reshaped view.
        rows: usize,
        /// Columns of the reshaped view.
        cols: usize,
    },
    /// Anything else.
    General,
}

/// A permutation of `0..len`, stored as a gather index: applying it gives `y[i] = x[idx[i]]`.
#[derive(Debug, Clone)]
pub struct Perm {
    idx: Vec<usize>,
    kind: PermKind,
}

impl PartialEq for Perm {
    fn eq(&self, other: &Self) -> bool {
        self.idx == other.idx
    }
}
impl Eq for Perm {}

impl Perm {
    /// The identity on `0..len`.
    ///
    /// Infallible like `Vec`: it aborts if `len` indices cannot be allocated. The crate's
    /// constructors check sizes from callers and files before they build one.
    pub fn identity(len: usize) -> Self {
        Perm {
            idx: (0..len).collect(),
            kind: PermKind::Identity,
        }
    }

    /// Reshape-transpose: view the input as a row-major `(rows, cols)` matrix and read it
    /// column by column, `y[j·rows + i] = x[i·cols + j]`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `rows·cols` overflows or its index table cannot be allocated.
    pub fn stride(rows: usize, cols: usize) -> Result<Self> {
        let ctx = format!("Perm::stride({rows}, {cols}): length rows·cols");
        let len = crate::primitives::error::checked_len(
            &[rows, cols],
            std::mem::size_of::<usize>(),
            &ctx,
        )?;
        let mut idx = crate::primitives::error::try_vec(len, 0usize, &ctx)?;
        // An empty side must not run the other side's loop (up to `usize::MAX` steps).
        let (rows, cols) = if len == 0 { (0, 0) } else { (rows, cols) };
        for j in 0..cols {
            for i in 0..rows {
                idx[j * rows + i] = i * cols + j;
            }
        }
        let kind = if rows <= 1 || cols <= 1 {
            PermKind::Identity
        } else {
            PermKind::Stride { rows, cols }
        };
        Ok(Perm { idx, kind })
    }

    /// Builds a permutation from a gather index.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `idx` is not a permutation of `0..idx.len()`.
    pub fn from_index(idx: Vec<usize>) -> Result<Self> {
        let n = idx.len();
        let mut seen = vec![false; n];
        for (pos, &i) in idx.iter().enumerate() {
            if i >= n || seen[i] {
                return Err(Error::invalid(format!(
                    "gather index of length {n} is not a permutation: entry {pos} is {i}"
                )));
            }
            seen[i] = true;
        }
        let mut p = Perm {
            idx,
            kind: PermKind::General,
        };
        p.kind = p.detect_kind();
        Ok(p)
    }

    /// A seeded uniformly random permutation of `0..len` (aborts, like `Vec`, if `len`
    /// indices cannot be allocated).
    pub fn random(len: usize, seed: u64) -> Self {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut idx: Vec<usize> = (0..len).collect();
        idx.shuffle(&mut rng);
        let mut p = Perm {
            idx,
            kind: PermKind::General,
        };
        p.kind = p.detect_kind();
        p
    }

    fn detect_kind(&self) -> PermKind {
        if self.idx.iter().enumerate().all(|(i, &j)| i == j) {
            PermKind::Identity
        } else {
            PermKind::General
        }
    }

    /// Length of the permuted vectors.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    /// True for the permutation of the empty set.
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// The gather index: `y[i] = x[index()[i]]`.
    pub fn index(&self) -> &[usize] {
        &self.idx
    }

    /// How the permutation was built (used by kernels to pick strided access).
    pub fn kind(&self) -> PermKind {
        self.kind
    }

    /// True if this is the identity.
    pub fn is_identity(&self) -> bool {
        self.kind == PermKind::Identity || self.idx.iter().enumerate().all(|(i, &j)| i == j)
    }

    /// The inverse permutation (the transpose of its matrix).
    pub fn inverse(&self) -> Perm {
        let mut inv = vec![0; self.idx.len()];
        for (i, &j) in self.idx.iter().enumerate() {
            inv[j] = i;
        }
        let kind = match self.kind {
            PermKind::Identity => PermKind::Identity,
            PermKind::Stride { rows, cols } => PermKind::Stride {
                rows: cols,
                cols: rows,
            },
            PermKind::General => PermKind::General,
        };
        Perm { idx: inv, kind }
    }

    /// `self.compose(other)` applies `other` first, then `self`: as matrices, `P_self · P_other`.
    ///
    /// # Panics
    /// If the lengths differ (use [`try_compose`](Perm::try_compose) for an error instead).
    pub fn compose(&self, other: &Perm) -> Perm {
        self.try_compose(other).expect("permutation lengths differ")
    }

    /// Like [`compose`](Perm::compose), returning an error if the lengths differ.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `self.len() != other.len()`.
    pub fn try_compose(&self, other: &Perm) -> Result<Perm> {
        if self.len() != other.len() {
            return Err(Error::shape(
                "Perm::compose: lengths",
                self.len(),
                other.len(),
            ));
        }
        // y = P_self (P_other x): y[i] = (P_other x)[s[i]] = x[o[s[i]]].
        let idx: Vec<usize> = self.idx.iter().map(|&i| other.idx[i]).collect();
        let mut p = Perm {
            idx,
            kind: PermKind::General,
        };
        p.kind = match (self.kind, other.kind) {
            (PermKind::Identity, k) | (k, PermKind::Identity) => k,
            _ => p.detect_kind(),
        };
        Ok(p)
    }

    /// Applies the permutation to a slice: `y[i] = x[idx[i]]`.
    ///
    /// # Panics
    /// If `x.len() != self.len()`.
    pub fn apply<T: Copy>(&self, x: &[T]) -> Vec<T> {
        assert_eq!(x.len(), self.len(), "Perm::apply: length mismatch");
        self.idx.iter().map(|&i| x[i]).collect()
    }

    /// Writes the permuted `x` into `y` (`y[i] = x[idx[i]]`).
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn apply_into<T: Copy>(&self, x: &[T], y: &mut [T]) {
        assert_eq!(x.len(), self.len(), "Perm::apply_into: length mismatch");
        assert_eq!(y.len(), self.len(), "Perm::apply_into: length mismatch");
        for (yi, &i) in y.iter_mut().zip(&self.idx) {
            *yi = x[i];
        }
    }

    /// Permutes the columns of every row of `x` (rows are vectors): `y[b, i] = x[b, idx[i]]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` has `ncols != len`.
    pub fn apply_rows<T: Copy + Default>(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        let mut y = Array2::from_elem(x.raw_dim(), T::default());
        self.apply_rows_into(x, y.view_mut())?;
        Ok(y)
    }

    /// Like [`apply_rows`](Perm::apply_rows), writing into `y`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn apply_rows_into<T: Copy>(
        &self,
        x: ArrayView2<T>,
        mut y: ArrayViewMut2<T>,
    ) -> Result<()> {
        if x.ncols() != self.len() {
            return Err(Error::shape(
                "Perm::apply_rows: input columns",
                self.len(),
                x.ncols(),
            ));
        }
        if y.dim() != x.dim() {
            return Err(Error::shape(
                "Perm::apply_rows: output shape",
                x.dim(),
                y.dim(),
            ));
        }
        for (xr, mut yr) in x.rows().into_iter().zip(y.rows_mut()) {
            for (yi, &i) in yr.iter_mut().zip(&self.idx) {
                *yi = xr[i];
            }
        }
        Ok(())
    }

    /// The permutation matrix `P` with `P x = apply(x)`: ones at `(i, idx[i])`.
    pub fn to_dense<T: crate::Scalar>(&self) -> Array2<T> {
        let n = self.len();
        let mut m = Array2::zeros((n, n));
        for (i, &j) in self.idx.iter().enumerate() {
            m[[i, j]] = T::one();
        }
        m
    }
}
