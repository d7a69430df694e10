//! Frobenius-optimal projection of a dense matrix onto the Monarch class.
//!
//! For `k` input blocks, `l` output blocks and per-slice rank `ρ`, the dense `m × n` matrix is cut
//! into `k·l` slices `A[a, c] = M[c::l, a·p..(a+1)·p]` (`s × p`, with `s = m/l`, `p = n/k`).
//! The slices partition the entries and a Monarch's slice `(a, c)` is exactly a rank-`ρ`
//! product of its own parameters, so the best approximation is the truncated SVD of each slice
//! (Eckart–Young per slice), written back as
//! `w2[c, :, a·ρ + t] = U[:, t]·√S_t` and `w1[a, t·l + c, :] = √S_t·V[:, t]ᴴ`,
//! giving `w1` of shape `(k, ρ·l, p)` and `w2` of shape `(l, s, k·ρ)`.
//! This covers every shape (square or not, any block counts, any `ρ ≤ min(s, p)`).
//!
//! ```
//! use monarch::Monarch;
//! let m = Monarch::<f64>::random(16, 4, 3).unwrap();
//! let p = Monarch::project_with_error(m.to_dense().view(), 4, 4, 1).unwrap();
//! assert!(p.error < 1e-10);
//! ```

use crate::error::{check_divides, check_nonzero, Error, Result};
use crate::svd::svd;
use crate::{Monarch, Scalar};
use ndarray::{s, Array3, ArrayView2};
use num_traits::{Float, Zero};
use rayon::prelude::*;

/// A projection together with its error.
#[derive(Debug, Clone)]
pub struct Projection<T: Scalar> {
    /// The projected Monarch `M̂`.
    pub monarch: Monarch<T>,
    /// `‖M − M̂‖_F`.
    pub error: T::Real,
    /// `‖M − M̂‖_F / ‖M‖_F` (zero for a zero matrix).
    pub relative_error: T::Real,
}

impl<T: Scalar> Monarch<T> {
    /// The Frobenius-nearest Monarch to `a` (`m × n`) with `in_blocks = k` (dividing `n`),
    /// `out_blocks = l` (dividing `m`) and per-slice rank `rank = ρ`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for empty input or zero arguments, [`Error::NotDivisible`] when the
    /// block counts do not divide the sides, [`Error::TooLarge`] when `ρ > min(m/l, n/k)`,
    /// [`Error::NonFinite`] if `a` holds NaN or infinity.
    pub fn project(
        a: ArrayView2<T>,
        in_blocks: usize,
        out_blocks: usize,
        rank: usize,
    ) -> Result<Self> {
        Ok(Self::project_with_error(a, in_blocks, out_blocks, rank)?.monarch)
    }

    /// Like [`project`](Monarch::project), also returning the projection error.
    ///
    /// # Errors
    /// As [`project`](Monarch::project).
    pub fn project_with_error(
        a: ArrayView2<T>,
        in_blocks: usize,
        out_blocks: usize,
        rank: usize,
    ) -> Result<Projection<T>> {
        let (m, n) = a.dim();
        check_nonzero(m, "Monarch::project: matrix rows")?;
        check_nonzero(n, "Monarch::project: matrix columns")?;
        check_nonzero(rank, "Monarch::project: rank")?;
        check_divides(n, in_blocks, "Monarch::project: columns by in_blocks")?;
        check_divides(m, out_blocks, "Monarch::project: rows by out_blocks")?;
        let (k, l) = (in_blocks, out_blocks);
        let (p, s) = (n / k, m / l);
        let max_rank = s.min(p);
        if rank > max_rank {
            return Err(Error::TooLarge {
                context: format!("Monarch::project: rank of a {s}×{p} slice ({m}×{n} matrix, {k} input blocks, {l} output blocks)"),
                value: rank,
                max: max_rank,
            });
        }
        if a.iter().any(|v| !v.is_finite_val()) {
            return Err(Error::NonFinite {
                context: "Monarch::project: input matrix".into(),
            });
        }
        let rho = rank;
        let (q, r) = (rho * l, k * rho);
        let slices: Vec<(usize, usize)> =
            (0..k).flat_map(|ai| (0..l).map(move |c| (ai, c))).collect();
        // Each slice is independent; results are written back in a fixed order.
        let results: Vec<_> = slices
            .par_iter()
            .map(|&(ai, c)| {
                let slice = a.slice(s![c..;l, ai * p..(ai + 1) * p]);
                let d = svd(slice);
                let tail =
                    d.s.iter()
                        .skip(rho)
                        .fold(T::Real::zero(), |acc, &x| acc + x * x);
                (d, tail)
            })
            .collect();
        let mut w1 = Array3::<T>::zeros((k, q, p));
        let mut w2 = Array3::<T>::zeros((l, s, r));
        let mut err2 = T::Real::zero();
        for (&(ai, c), (d, tail)) in slices.iter().zip(results) {
            err2 += tail;
            for t in 0..rho {
                let sq = T::from_real(d.s[t].sqrt());
                for i in 0..s {
                    w2[[c, i, ai * rho + t]] = d.u[[i, t]] * sq;
                }
                for j in 0..p {
                    w1[[ai, t * l + c, j]] = sq * d.v[[j, t]].conj_val();
                }
            }
        }
        let total = a.iter().fold(T::Real::zero(), |acc, v| acc + v.abs_sq());
        let error = err2.max(T::Real::zero()).sqrt();
        let relative_error = if total > T::Real::zero() {
            error / total.sqrt()
        } else {
            T::Real::zero()
        };
        Ok(Projection {
            monarch: Monarch::from_factors(w1, w2)?,
            error,
            relative_error,
        })
    }
}
