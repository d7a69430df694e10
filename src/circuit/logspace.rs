//! The log-space product `log(A · exp(X))` for non-negative `A`, through block-diagonal
//! factors, whole chains and dense matrices.
//!
//! Each row of `X` holds log-values (log-probabilities); `−∞` stands for probability zero. For
//! every row and every block the input slice is shifted by its maximum `m` before `exp`, so the
//! block product `Σ_j w_ij · exp(x_j − m)` never overflows and the largest term is exactly `w_ij`;
//! the result is `m + ln(·)`. A slice that is all `−∞` gives `−∞` outputs (never NaN), and a
//! zero sum gives `ln 0 = −∞`. The shifted exponentials are multiplied by the blocks with the
//! dense GEMM, so a block costs one GEMM plus `cols` exponentials and `rows` logarithms per row.

use crate::circuit::MonarchChain;
use crate::primitives::error::{Error, Result};
use crate::{Par, RealScalar};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayView3, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Checks that every weight is finite and non-negative.
pub(crate) fn check_nonneg<T: RealScalar>(w: ArrayView3<T>, ctx: &str) -> Result<()> {
    for (idx, &v) in w.indexed_iter() {
        if !v.is_finite() {
            return Err(Error::NonFinite {
                context: format!("{ctx}: weight at {idx:?}"),
            });
        }
        if v < T::zero() {
            return Err(Error::invalid(format!(
                "{ctx}: weight at {idx:?} is negative ({v}); the log-space product needs A ≥ 0"
            )));
        }
    }
    Ok(())
}

/// Checks that log-values are never NaN or `+∞` (`−∞` is log 0 and allowed).
pub(crate) fn check_log_input<T: RealScalar>(x: ArrayView2<T>, ctx: &str) -> Result<()> {
    if let Some(((b, j), _)) = x
        .indexed_iter()
        .find(|(_, &v)| v.is_nan() || v == T::infinity())
    {
        return Err(Error::NonFinite {
            context: format!("{ctx}: log-value at row {b}, column {j} is NaN or +inf"),
        });
    }
    Ok(())
}

/// Unchecked kernel: `out[b, a·rows+i] = log Σ_j w[a,i,j]·exp(x[b, a·cols+j])`.
pub(crate) fn log_bd_into<T: RealScalar>(
    w: ArrayView3<T>,
    x: ArrayView2<T>,
    mut out: ArrayViewMut2<T>,
    par: Par,
) {
    let (nb, rows, cols) = w.dim();
    let batch = x.nrows();
    // Each output row is produced by one task in a fixed order: results do not depend on `par`.
    let chunk = if par.should_split(batch * nb * rows * cols) {
        // One chunk per thread: a chunk streams every block once, so fewer, taller chunks
        // keep a large (dense) block from being re-read for every few rows.
        batch.div_ceil(rayon::current_num_threads()).max(1)
    } else {
        batch.max(1)
    };
    let run = |(xc, mut oc): (ArrayView2<T>, ArrayViewMut2<T>)| {
        let r = xc.nrows();
        let mut e = Array2::<T>::zeros((r, cols));
        let mut shift = vec![T::zero(); r];
        for a in 0..nb {
            let xa = xc.slice(s![.., a * cols..(a + 1) * cols]);
            for ((xr, mut er), sh) in xa.rows().into_iter().zip(e.rows_mut()).zip(&mut shift) {
                let m = xr.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
                *sh = m;
                if m == T::neg_infinity() {
                    er.fill(T::zero());
                } else {
                    for (ei, &xi) in er.iter_mut().zip(xr.iter()) {
                        *ei = (xi - m).exp();
                    }
                }
            }
            let mut oa = oc.slice_mut(s![.., a * rows..(a + 1) * rows]);
            general_mat_mul(
                T::one(),
                &e,
                &w.index_axis(Axis(0), a).t(),
                T::zero(),
                &mut oa,
            );
            for (mut orow, &m) in oa.rows_mut().into_iter().zip(&shift) {
                if m == T::neg_infinity() {
                    orow.fill(T::neg_infinity());
                } else {
                    orow.mapv_inplace(|v| m + v.ln());
                }
            }
        }
    };
    let pairs = x
        .axis_chunks_iter(Axis(0), chunk)
        .zip(out.axis_chunks_iter_mut(Axis(0), chunk));
    if chunk < batch {
        pairs.collect::<Vec<_>>().into_par_iter().for_each(run);
    } else {
        pairs.for_each(run);
    }
}

/// `log(BD(w) · exp(x))` on rows: `w` is `(nb, rows, cols)` with non-negative blocks, `x` is
/// `(batch, nb·cols)` log-values; returns `(batch, nb·rows)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `x` has the wrong width, [`Error::ZeroSize`] for an empty `w`,
/// [`Error::InvalidArgument`] for a negative weight, [`Error::NonFinite`] for a non-finite
/// weight or a NaN/`+∞` log-value.
pub fn log_matmul_blockdiag<T: RealScalar>(
    w: ArrayView3<T>,
    x: ArrayView2<T>,
    par: Par,
) -> Result<Array2<T>> {
    let mut out = Array2::zeros((x.nrows(), w.dim().0 * w.dim().1));
    log_matmul_blockdiag_into(w, x, out.view_mut(), par)?;
    Ok(out)
}

/// Like [`log_matmul_blockdiag`], writing into `out` (`(batch, nb·rows)`, overwritten).
///
/// # Errors
/// As [`log_matmul_blockdiag`]; [`Error::ShapeMismatch`] if `out` has the wrong shape.
pub fn log_matmul_blockdiag_into<T: RealScalar>(
    w: ArrayView3<T>,
    x: ArrayView2<T>,
    out: ArrayViewMut2<T>,
    par: Par,
) -> Result<()> {
    let (nb, rows, cols) = w.dim();
    if nb == 0 || rows == 0 || cols == 0 {
        return Err(Error::zero(format!(
            "log_matmul_blockdiag: blocks (nb, rows, cols) = ({nb}, {rows}, {cols})"
        )));
    }
    if x.ncols() != nb * cols {
        return Err(Error::shape(
            "log_matmul_blockdiag: input columns (nb·cols)",
            nb * cols,
            x.ncols(),
        ));
    }
    if out.dim() != (x.nrows(), nb * rows) {
        return Err(Error::shape(
            "log_matmul_blockdiag_into: output shape (batch, nb·rows)",
            (x.nrows(), nb * rows),
            out.dim(),
        ));
    }
    check_nonneg(w, "log_matmul_blockdiag")?;
    check_log_input(x, "log_matmul_blockdiag")?;
    log_bd_into(w, x, out, par);
    Ok(())
}

/// `log(A · exp(x))` on rows for a dense non-negative `a` (`m × n`), `x` `(batch, n)`: the
/// dense log-sum-exp product (one GEMM with a per-row max shift), the baseline of the
/// structured version.
///
/// # Errors
/// As [`log_matmul_blockdiag`].
pub fn log_matmul_dense<T: RealScalar>(
    a: ArrayView2<T>,
    x: ArrayView2<T>,
    par: Par,
) -> Result<Array2<T>> {
    let w = a.insert_axis(Axis(0));
    log_matmul_blockdiag(w, x, par)
}

impl<T: RealScalar> MonarchChain<T> {
    /// `log(M · exp(x))` on rows through every factor: `x` is `(batch, in_features)` of
    /// log-values, every block must be non-negative.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong width, [`Error::InvalidArgument`] for a negative
    /// weight, [`Error::NonFinite`] for a non-finite weight or a NaN/`+∞` log-value.
    pub fn log_matmul(&self, x: ArrayView2<T>, par: Par) -> Result<Array2<T>> {
        self.check_io(
            x.dim(),
            (x.nrows(), self.out_features()),
            "MonarchChain::log_matmul",
        )?;
        for (i, f) in self.factors.iter().enumerate() {
            check_nonneg(
                f.weights(),
                &format!("MonarchChain::log_matmul: factor {i}"),
            )?;
        }
        check_log_input(x, "MonarchChain::log_matmul")?;
        Ok(self.log_trace(x, par, false).pop().expect("k ≥ 1"))
    }

    /// Unchecked log-space pass. Returns the input of every factor (after its permutation) and,
    /// last, the output; with `keep == false` only the output.
    pub(crate) fn log_trace(&self, x: ArrayView2<T>, par: Par, keep: bool) -> Vec<Array2<T>> {
        let mut trace = Vec::new();
        let mut cur = permute(&self.perms[0], x);
        for (f, p) in self.factors.iter().zip(&self.perms[1..]) {
            let mut y = Array2::zeros((x.nrows(), f.out_features()));
            log_bd_into(f.weights(), cur.view(), y.view_mut(), par);
            let prev = std::mem::replace(&mut cur, permute(p, y.view()));
            if keep {
                trace.push(prev);
            }
        }
        trace.push(cur);
        trace
    }
}

fn permute<T: RealScalar>(p: &crate::Perm, x: ArrayView2<T>) -> Array2<T> {
    if p.is_identity() {
        x.to_owned()
    } else {
        p.apply_rows(x).expect("lengths chain")
    }
}
