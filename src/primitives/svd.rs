//! Singular value decomposition of dense matrices: faer's (bidiagonalisation and divide and
//! conquer), with a one-sided Jacobi SVD for the smallest matrices and for builds without the
//! `faer` feature.
//!
//! Projection onto the Monarch class needs one SVD per slice, slices are small (`s × p`,
//! typically 16–128 on a side), and the scalar may be complex. faer's thin SVD is 11–13× faster
//! than the Jacobi one at 128 × 128 and 31–46× at 512 × 512 (real); Jacobi, which needs no
//! workspace, stays ahead up to [`JACOBI_MAX_SIDE_REAL`] and [`JACOBI_MAX_SIDE_COMPLEX`]
//! (measured by `monarch-bench`'s `bench_libs`, figures in `docs/perf-notes.md`). One-sided
//! (Hestenes) Jacobi is accurate to a few ulps relative to each singular value and handles
//! complex scalars with a phase rotation.
//!
//! ```
//! use monarch::primitives::svd::svd;
//! use monarch::ndarray::array;
//! let a = array![[3.0f64, 0.0], [4.0, 5.0]];
//! let d = svd(a.view());
//! // Singular values of [[3,0],[4,5]] are √45 and √5.
//! assert!((d.s[0] - 45f64.sqrt()).abs() < 1e-12 && (d.s[1] - 5f64.sqrt()).abs() < 1e-12);
//! ```

use crate::{RealScalar, Scalar};
use ndarray::{Array1, Array2, ArrayView2};

/// A thin SVD `A = U · diag(s) · Vᴴ`, singular values in decreasing order.
#[derive(Debug, Clone)]
pub struct Svd<T: Scalar> {
    /// Left singular vectors, `m × min(m, n)`, orthonormal columns.
    pub u: Array2<T>,
    /// Singular values, decreasing, length `min(m, n)`.
    pub s: Array1<T::Real>,
    /// Right singular vectors, `n × min(m, n)`, orthonormal columns.
    pub v: Array2<T>,
}

/// Real matrices whose shorter side is at most this go to the Jacobi SVD even with the `faer`
/// feature on: measured faster there (1.2–4× at 2 × 2 to 8 × 8, f32 and f64), and slower from
/// 12 × 12 up.
pub const JACOBI_MAX_SIDE_REAL: usize = 8;

/// The same bound for complex matrices: Jacobi's lead ends sooner (faster up to 6 × 6, 1.0–1.5×
/// slower at 8 × 8, c32 and c64).
pub const JACOBI_MAX_SIDE_COMPLEX: usize = 6;

/// Thin SVD of `a` (`m × n`). Non-finite input gives non-finite output; callers check first.
///
/// Runs faer's SVD (on the calling thread: the projection already runs slices in parallel)
/// when the `faer` feature is on and `min(m, n)` is above [`JACOBI_MAX_SIDE_REAL`] or
/// [`JACOBI_MAX_SIDE_COMPLEX`], else [`svd_jacobi`]; if faer reports no convergence, falls
/// back to [`svd_jacobi`].
pub fn svd<T: Scalar>(a: ArrayView2<T>) -> Svd<T> {
    #[cfg(feature = "faer")]
    if a.nrows().min(a.ncols())
        > if T::IS_COMPLEX {
            JACOBI_MAX_SIDE_COMPLEX
        } else {
            JACOBI_MAX_SIDE_REAL
        }
    {
        if let Some(d) = via_faer::svd(a) {
            return d;
        }
    }
    svd_jacobi(a)
}

/// Thin SVD of `a` by one-sided Jacobi, whatever its size (what [`svd`] runs on small
/// matrices); public so that benchmarks can compare it with faer's.
pub fn svd_jacobi<T: Scalar>(a: ArrayView2<T>) -> Svd<T> {
    let (m, n) = a.dim();
    if m >= n {
        jacobi_tall(a.to_owned())
    } else {
        // A = U S Vᴴ  ⇔  Aᴴ = V S Uᴴ.
        let ah = a.t().mapv(|x| x.conj_val());
        let d = jacobi_tall(ah);
        Svd {
            u: d.v,
            s: d.s,
            v: d.u,
        }
    }
}

#[cfg(feature = "faer")]
mod via_faer {
    use super::Svd;
    use crate::{RealScalar, Scalar};
    use faer::diag::Diag;
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::svd::{self as fsvd, ComputeSvdVectors};
    use faer::traits::ComplexField;
    use faer::{c32, c64, Mat, Par};
    use ndarray::{Array1, Array2, ArrayView2};
    use std::any::TypeId;

    /// faer's thin SVD in `T`'s own precision, or `None` if it did not converge. `Scalar` is
    /// not tied to faer's traits, so each of the four scalar types is converted to its faer
    /// twin through `f64` parts, which is exact both ways.
    pub(super) fn svd<T: Scalar>(a: ArrayView2<T>) -> Option<Svd<T>> {
        let re = |x: T| x.re().to_f64_val();
        let im = |x: T| x.im().to_f64_val();
        let back = |r: f64, i: f64| {
            T::from_parts(
                <T::Real as Scalar>::from_f64(r),
                <T::Real as Scalar>::from_f64(i),
            )
        };
        let single = TypeId::of::<T::Real>() == TypeId::of::<f32>();
        match (T::IS_COMPLEX, single) {
            (false, true) => thin(a, |x| re(x) as f32, |f: f32| back(f as f64, 0.0)),
            (false, false) => thin(a, re, |f: f64| back(f, 0.0)),
            (true, true) => thin(
                a,
                |x| c32::new(re(x) as f32, im(x) as f32),
                |f: c32| back(f.re as f64, f.im as f64),
            ),
            (true, false) => thin(a, |x| c64::new(re(x), im(x)), |f: c64| back(f.re, f.im)),
        }
    }

    fn thin<T: Scalar, F: ComplexField>(
        a: ArrayView2<T>,
        to: impl Fn(T) -> F,
        back: impl Fn(F) -> T,
    ) -> Option<Svd<T>> {
        let (m, n) = a.dim();
        let k = m.min(n);
        let fa = Mat::from_fn(m, n, |i, j| to(a[[i, j]]));
        let mut s = Diag::<F>::zeros(k);
        let mut u = Mat::<F>::zeros(m, k);
        let mut v = Mat::<F>::zeros(n, k);
        let (thin, par) = (ComputeSvdVectors::Thin, Par::Seq);
        let req = fsvd::svd_scratch::<F>(m, n, thin, thin, par, Default::default());
        let mut buf = MemBuffer::new(req);
        fsvd::svd(
            fa.as_ref(),
            s.as_mut(),
            Some(u.as_mut()),
            Some(v.as_mut()),
            par,
            MemStack::new(&mut buf),
            Default::default(),
        )
        .ok()?;
        let sv = s.column_vector();
        Some(Svd {
            u: Array2::from_shape_fn((m, k), |(i, j)| back(u[(i, j)].clone())),
            s: Array1::from_shape_fn(k, |i| back(sv[i].clone()).re()),
            v: Array2::from_shape_fn((n, k), |(i, j)| back(v[(i, j)].clone())),
        })
    }
}

/// One-sided Jacobi on the columns of a tall `m × n` matrix (m ≥ n).
fn jacobi_tall<T: Scalar>(a: Array2<T>) -> Svd<T> {
    let (m, n) = a.dim();
    // Work on columns stored contiguously: g[j] is column j.
    let mut g: Vec<Vec<T>> = (0..n).map(|j| a.column(j).to_vec()).collect();
    let mut v: Vec<Vec<T>> = (0..n)
        .map(|j| {
            (0..n)
                .map(|i| if i == j { T::one() } else { T::zero() })
                .collect()
        })
        .collect();
    let eps = T::Real::eps();
    let tol = eps * <T::Real as Scalar>::from_f64((m as f64).sqrt().max(1.0));
    let mut norms: Vec<T::Real> = g.iter().map(|c| sq_norm(c)).collect();
    for _sweep in 0..80 {
        let mut rotated = false;
        for i in 0..n {
            for j in (i + 1)..n {
                let alpha = norms[i];
                let beta = norms[j];
                let gamma = dotc(&g[i], &g[j]); // a_iᴴ a_j
                let gabs = gamma.abs_val();
                if gabs == T::Real::zero() || gabs <= tol * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                // Phase that makes the off-diagonal real: a_j ← a_j · e^{-iφ}.
                let phase = T::from_parts(gamma.re() / gabs, -gamma.im() / gabs);
                let two = <T::Real as Scalar>::from_f64(2.0);
                let zeta = (beta - alpha) / (two * gabs);
                let t = zeta.signum() / (zeta.abs() + (T::Real::one() + zeta * zeta).sqrt());
                let c = T::Real::one() / (T::Real::one() + t * t).sqrt();
                let s = c * t;
                let (cc, ss) = (T::from_real(c), T::from_real(s));
                rotate(&mut g, i, j, phase, cc, ss);
                rotate(&mut v, i, j, phase, cc, ss);
                norms[i] = sq_norm(&g[i]);
                norms[j] = sq_norm(&g[j]);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    let sv: Vec<T::Real> = g.iter().map(|c| sq_norm(c).sqrt()).collect();
    order.sort_by(|&x, &y| {
        sv[y]
            .partial_cmp(&sv[x])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut u = Array2::zeros((m, n));
    let mut vv = Array2::zeros((n, n));
    let mut s = Array1::zeros(n);
    for (dst, &src) in order.iter().enumerate() {
        let sigma = sv[src];
        s[dst] = sigma;
        for r in 0..n {
            vv[[r, dst]] = v[src][r];
        }
        if sigma > T::Real::zero() {
            let inv = T::from_real(T::Real::one() / sigma);
            for r in 0..m {
                u[[r, dst]] = g[src][r] * inv;
            }
        }
    }
    complete_basis(&mut u, &s);
    Svd { u, s, v: vv }
}

/// Replaces the columns of `u` that belong to zero singular values by orthonormal vectors
/// orthogonal to the rest, so `u` always has orthonormal columns.
fn complete_basis<T: Scalar>(u: &mut Array2<T>, s: &Array1<T::Real>) {
    let (m, k) = u.dim();
    for col in 0..k {
        if s[col] > T::Real::zero() {
            continue;
        }
        // Gram–Schmidt a unit vector e_t against the columns before.
        for t in 0..m {
            let mut cand: Vec<T> = (0..m)
                .map(|i| if i == t { T::one() } else { T::zero() })
                .collect();
            for prev in 0..k {
                if prev == col || (prev > col && s[prev] == T::Real::zero()) {
                    continue;
                }
                let pc: Vec<T> = u.column(prev).to_vec();
                let d = dotc(&pc, &cand);
                for i in 0..m {
                    cand[i] -= pc[i] * d;
                }
            }
            let nrm = sq_norm(&cand).sqrt();
            if nrm > <T::Real as Scalar>::from_f64(0.5) {
                let inv = T::from_real(T::Real::one() / nrm);
                for i in 0..m {
                    u[[i, col]] = cand[i] * inv;
                }
                break;
            }
        }
    }
}

#[inline]
fn sq_norm<T: Scalar>(x: &[T]) -> T::Real {
    x.iter().fold(T::Real::zero(), |acc, &v| acc + v.abs_sq())
}

/// `xᴴ y`.
#[inline]
fn dotc<T: Scalar>(x: &[T], y: &[T]) -> T {
    x.iter()
        .zip(y)
        .fold(T::zero(), |acc, (&a, &b)| acc + a.conj_val() * b)
}

/// Columns i, j ← (c·a_i − s·a_j·φ, s·a_i + c·a_j·φ).
#[inline]
fn rotate<T: Scalar>(cols: &mut [Vec<T>], i: usize, j: usize, phase: T, c: T, s: T) {
    let (lo, hi) = cols.split_at_mut(j);
    let (ci, cj) = (&mut lo[i], &mut hi[0]);
    for (x, y) in ci.iter_mut().zip(cj.iter_mut()) {
        let yj = *y * phase;
        let xi = *x;
        *x = c * xi - s * yj;
        *y = s * xi + c * yj;
    }
}

use num_traits::{Float, One, Zero};
