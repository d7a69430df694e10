//! Batched block-diagonal product kernels, the hot loop under every structured layer.
//!
//! The portable kernel here is the oracle that every faster path is tested against: it
//! multiplies a chunk of contiguous rows by a block-diagonal matrix whose blocks were packed
//! transposed, so the innermost loop is an `axpy` over a block's output features (contiguous in
//! both the packed weight and the output row), which compilers vectorise without fast-math.

use crate::Scalar;
use ndarray::ArrayView3;

/// Block-diagonal weights packed for the row kernel: `wt[a][j][i] = w[a][i][j]`.
#[derive(Debug, Clone)]
pub(crate) struct PackedBlocks<T> {
    pub wt: Vec<T>,
    pub nb: usize,
    pub rows: usize,
    pub cols: usize,
}

impl<T: Scalar> PackedBlocks<T> {
    /// Packs `w` of shape `(nb, rows, cols)` (blocks stored out×in).
    pub fn pack(w: ArrayView3<T>) -> Self {
        let (nb, rows, cols) = w.dim();
        let mut wt = vec![T::zero(); nb * rows * cols];
        for a in 0..nb {
            let base = a * rows * cols;
            for i in 0..rows {
                for j in 0..cols {
                    wt[base + j * rows + i] = w[[a, i, j]];
                }
            }
        }
        PackedBlocks { wt, nb, rows, cols }
    }

    /// Input length `nb·cols`.
    pub fn in_len(&self) -> usize {
        self.nb * self.cols
    }

    /// Output length `nb·rows`.
    pub fn out_len(&self) -> usize {
        self.nb * self.rows
    }

    /// `y[a·rows + i] = Σ_j w[a,i,j] · x[a·cols + j]` for each of `nrows` rows.
    ///
    /// `x` holds rows of length `in_len()` back to back, `y` rows of length `out_len()`.
    pub fn apply_rows(&self, x: &[T], y: &mut [T], nrows: usize) {
        let (nb, rows, cols) = (self.nb, self.rows, self.cols);
        let (n, m) = (self.in_len(), self.out_len());
        debug_assert!(x.len() >= nrows * n && y.len() >= nrows * m);
        for r in 0..nrows {
            let xr = &x[r * n..(r + 1) * n];
            let yr = &mut y[r * m..(r + 1) * m];
            for a in 0..nb {
                let wa = &self.wt[a * rows * cols..(a + 1) * rows * cols];
                let xa = &xr[a * cols..(a + 1) * cols];
                let ya = &mut yr[a * rows..(a + 1) * rows];
                ya.fill(T::zero());
                for (j, &xj) in xa.iter().enumerate() {
                    let wrow = &wa[j * rows..(j + 1) * rows];
                    for (yi, &wij) in ya.iter_mut().zip(wrow) {
                        *yi = wij.mul_add_val(xj, *yi);
                    }
                }
            }
        }
    }
}

/// Rows processed together by one task: large enough to amortise the per-task set-up, small
/// enough that a chunk's intermediates stay in L2.
pub(crate) fn row_chunk(width: usize) -> usize {
    let target = (64 * 1024) / width.max(1);
    target.clamp(1, 256)
}
