//! Singular value decomposition of small dense matrices (one-sided Jacobi).
//!
//! Projection onto the Monarch class needs one SVD per slice, slices are small (`s × p`,
//! typically 16–128 on a side), and the scalar may be complex. One-sided (Hestenes) Jacobi is
//! accurate to a few ulps relative to each singular value, handles complex scalars with a phase
//! rotation, and needs no dependency.
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

/// Thin SVD of `a` (`m × n`). Non-finite input gives non-finite output; callers check first.
pub fn svd<T: Scalar>(a: ArrayView2<T>) -> Svd<T> {
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
