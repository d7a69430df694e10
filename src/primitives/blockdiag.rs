//! Block-diagonal factors: `nb` dense blocks of `rows × cols` on the diagonal.
//!
//! Blocks are stored **out×in** like a linear layer's weight, in an array of shape
//! `(nb, rows, cols)`, the layout of the PyTorch reference codes. Applied to a row `x` of length
//! `nb·cols`: `y[a·rows + i] = Σ_j w[a, i, j] · x[a·cols + j]`.
//!
//! ```
//! use monarch::BlockDiag;
//! use monarch::ndarray::{array, Array3};
//! let w = Array3::from_shape_vec((2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! let bd = BlockDiag::new(w).unwrap();
//! let y = bd.matmul(array![[1.0, 1.0, 1.0, 1.0]].view()).unwrap();
//! assert_eq!(y, array![[3.0, 7.0]]);
//! assert_eq!(bd.to_dense(), array![[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]]);
//! ```

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::kernels::Backend;
use crate::{Par, Scalar};
use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, Axis};

/// A block-diagonal matrix with `nb` blocks of `rows × cols` (stored out×in).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDiag<T> {
    pub(crate) w: Array3<T>,
}

/// Gradients of `sum(y ⊙ grad_out)` for `y = BD(w) x` (bilinear: no conjugation for complex).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDiagGrad<T> {
    /// Gradient with respect to the input rows, `(batch, nb·cols)`.
    pub x: Array2<T>,
    /// Gradient with respect to the blocks, `(nb, rows, cols)`.
    pub w: Array3<T>,
}

impl<T: Scalar> BlockDiag<T> {
    /// Wraps blocks of shape `(nb, rows, cols)`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if any dimension is zero.
    pub fn new(w: Array3<T>) -> Result<Self> {
        let (nb, r, c) = w.dim();
        check_nonzero(nb, "BlockDiag: number of blocks")?;
        check_nonzero(r, "BlockDiag: block rows")?;
        check_nonzero(c, "BlockDiag: block columns")?;
        Ok(BlockDiag {
            w: w.as_standard_layout().into_owned(),
        })
    }

    /// `nb` identity blocks of size `size`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `nb` or `size` is zero, [`Error::TooLarge`] if the element count
    /// overflows or the blocks cannot be allocated.
    pub fn identity(nb: usize, size: usize) -> Result<Self> {
        // Checked first: an empty block must not run a loop over `nb` (up to `usize::MAX`).
        check_nonzero(nb, "BlockDiag::identity: number of blocks")?;
        check_nonzero(size, "BlockDiag::identity: block size")?;
        let mut w: Array3<T> = crate::primitives::error::try_zeros(
            ndarray::Dim([nb, size, size]),
            "BlockDiag::identity",
        )?;
        for a in 0..nb {
            for i in 0..size {
                w[[a, i, i]] = T::one();
            }
        }
        Self::new(w)
    }

    /// Number of blocks.
    pub fn nblocks(&self) -> usize {
        self.w.dim().0
    }
    /// Rows of each block (output features per block).
    pub fn block_rows(&self) -> usize {
        self.w.dim().1
    }
    /// Columns of each block (input features per block).
    pub fn block_cols(&self) -> usize {
        self.w.dim().2
    }
    /// Input length `nb·cols`.
    pub fn in_features(&self) -> usize {
        self.nblocks() * self.block_cols()
    }
    /// Output length `nb·rows`.
    pub fn out_features(&self) -> usize {
        self.nblocks() * self.block_rows()
    }
    /// Stored parameters `nb·rows·cols`.
    pub fn num_params(&self) -> usize {
        self.w.len()
    }
    /// Floating-point operations of a product with `batch` rows (2 per multiply-add).
    pub fn flops(&self, batch: usize) -> usize {
        2 * batch * self.num_params()
    }
    /// The blocks, `(nb, rows, cols)`.
    pub fn weights(&self) -> ArrayView3<'_, T> {
        self.w.view()
    }
    /// Mutable access to the blocks (the shape cannot change).
    pub fn weights_mut(&mut self) -> ndarray::ArrayViewMut3<'_, T> {
        self.w.view_mut()
    }
    /// The owned blocks.
    pub fn into_weights(self) -> Array3<T> {
        self.w
    }
    /// The owned blocks, by reference.
    pub fn weights_array(&self) -> &Array3<T> {
        &self.w
    }

    /// `BD(w)ᵀ`: every block transposed (not conjugated).
    pub fn transpose(&self) -> Self {
        BlockDiag {
            w: self
                .w
                .clone()
                .permuted_axes([0, 2, 1])
                .as_standard_layout()
                .into_owned(),
        }
    }

    /// `BD(w)ᴴ`: every block transposed and conjugated (equals `transpose` for reals).
    pub fn adjoint(&self) -> Self {
        let mut t = self.transpose();
        t.w.mapv_inplace(|v| v.conj_val());
        t
    }

    /// The dense `(nb·rows) × (nb·cols)` matrix.
    pub fn to_dense(&self) -> Array2<T> {
        let (nb, r, c) = self.w.dim();
        let mut d = Array2::zeros((nb * r, nb * c));
        for a in 0..nb {
            d.slice_mut(s![a * r..(a + 1) * r, a * c..(a + 1) * c])
                .assign(&self.w.index_axis(Axis(0), a));
        }
        d
    }

    /// Multiplies rows: `x` is `(batch, nb·cols)`, the result `(batch, nb·rows)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` has the wrong number of columns.
    pub fn matmul(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        let mut y = Array2::zeros((x.nrows(), self.out_features()));
        self.matmul_into(x, y.view_mut(), Par::Rayon)?;
        Ok(y)
    }

    /// Like [`matmul`](BlockDiag::matmul), writing into `y` (overwritten).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `y` has the wrong shape.
    pub fn matmul_into(&self, x: ArrayView2<T>, y: ArrayViewMut2<T>, par: Par) -> Result<()> {
        self.matmul_into_with(Backend::detect(), x, y, par)
    }

    /// [`matmul_into`](Self::matmul_into) on a chosen kernel backend (for tests and benchmarks
    /// comparing paths).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` or `y` has the wrong shape.
    ///
    /// # Panics
    /// If `backend` is not available on this CPU ([`Backend::is_available`]).
    pub fn matmul_into_with(
        &self,
        backend: Backend,
        x: ArrayView2<T>,
        y: ArrayViewMut2<T>,
        par: Par,
    ) -> Result<()> {
        assert!(
            backend.is_available(),
            "kernel backend {backend:?} is not available on this CPU"
        );
        if x.ncols() != self.in_features() {
            return Err(Error::shape(
                "BlockDiag::matmul: input columns (nb·cols)",
                self.in_features(),
                x.ncols(),
            ));
        }
        let expect = (x.nrows(), self.out_features());
        if y.dim() != expect {
            return Err(Error::shape(
                "BlockDiag::matmul_into: output shape",
                expect,
                y.dim(),
            ));
        }
        crate::primitives::kernels::pipeline::blockdiag_forward(self.w.view(), x, y, par, backend);
        Ok(())
    }

    /// Vector-Jacobian product of `y = BD(w) x` for upstream gradient `grad_out`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(&self, x: ArrayView2<T>, grad_out: ArrayView2<T>) -> Result<BlockDiagGrad<T>> {
        if x.ncols() != self.in_features() {
            return Err(Error::shape(
                "BlockDiag::vjp: input columns",
                self.in_features(),
                x.ncols(),
            ));
        }
        let expect = (x.nrows(), self.out_features());
        if grad_out.dim() != expect {
            return Err(Error::shape(
                "BlockDiag::vjp: grad_out shape",
                expect,
                grad_out.dim(),
            ));
        }
        let gx = crate::primitives::kernels::pipeline::blockdiag_transpose(
            self.w.view(),
            grad_out,
            Par::Rayon,
            Backend::detect(),
        );
        let gw = blocks_outer_sum(
            grad_out,
            x,
            self.nblocks(),
            self.block_rows(),
            self.block_cols(),
        );
        Ok(BlockDiagGrad { x: gx, w: gw })
    }
}

/// `out[a, i, j] = Σ_b g[b, a·rows + i] · x[b, a·cols + j]`: the block-restricted `gᵀ x`,
/// parallel over blocks so each sum runs on one thread in batch order (deterministic).
pub(crate) fn blocks_outer_sum<T: Scalar>(
    g: ArrayView2<T>,
    x: ArrayView2<T>,
    nb: usize,
    rows: usize,
    cols: usize,
) -> Array3<T> {
    crate::primitives::kernels::pipeline::blocks_outer(
        g,
        x,
        (nb, rows, cols),
        Par::Rayon,
        Backend::detect(),
    )
}
