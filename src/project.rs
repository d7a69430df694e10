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
use crate::{Monarch, RealScalar, Scalar};
use ndarray::{s, Array2, Array3, ArrayView2};
use num_traits::{Float, One, Zero};
use rayon::prelude::*;
use std::any::TypeId;

/// The best rank-`ρ` factors of one slice: `u` (`s × ρ`), singular values `s`, `v` (`p × ρ`),
/// and the squared Frobenius error `tail = Σ_{t ≥ ρ} σ_t²`.
struct SliceFactor<T: Scalar> {
    u: Array2<T>,
    s: Vec<T::Real>,
    v: Array2<T>,
    tail: T::Real,
}

/// Truncated SVD of one slice: the certified power iteration for `ρ = 1` when it applies,
/// else the full Jacobi SVD (run in `f64` for `f32` input, where Jacobi converges reliably).
fn slice_factor<T: Scalar>(a: ArrayView2<T>, rho: usize) -> SliceFactor<T> {
    // Row by row: a slice's rows are contiguous runs of the matrix (an element-wise strided
    // copy costs as much as the power iteration).
    let (m, n) = a.dim();
    let mut buf = Vec::with_capacity(m * n);
    for row in a.rows() {
        match row.as_slice() {
            Some(sl) => buf.extend_from_slice(sl),
            None => buf.extend(row.iter().copied()),
        }
    }
    let a = Array2::from_shape_vec((m, n), buf).expect("m·n elements");
    if rho == 1 {
        if let Some(f) = rank_one_certified(&a) {
            return f;
        }
    }
    let d = if TypeId::of::<T>() == TypeId::of::<f32>() {
        let d = svd(a.mapv(|v| v.re().to_f64_val()).view());
        crate::svd::Svd {
            u: d.u.mapv(T::from_f64),
            s: d.s.mapv(<T::Real as Scalar>::from_f64),
            v: d.v.mapv(T::from_f64),
        }
    } else {
        svd(a.view())
    };
    let tail =
        d.s.iter()
            .skip(rho)
            .fold(T::Real::zero(), |acc, &x| acc + x * x);
    SliceFactor {
        u: d.u.slice(s![.., ..rho]).to_owned(),
        s: d.s.iter().take(rho).copied().collect(),
        v: d.v.slice(s![.., ..rho]).to_owned(),
        tail,
    }
}

/// Top singular triplet by power iteration on `AᴴA`, returned only when certified optimal to
/// rounding; `None` sends the slice to the exact SVD.
///
/// For a unit `v` with Rayleigh quotient `θ = ‖Av‖²` and residual `r = AᴴAv − θv`, and
/// `F = ‖A‖²_F = Σ λ`: every other eigenvalue is at most `F − θ`, so if `2θ > F` the gap is at
/// least `δ = 2θ − F`, the angle between `v` and the top eigenvector is at most `‖r‖/δ`
/// (Davis–Kahan) and `λ₁ − θ ≤ ‖r‖²/δ` (Kato–Temple). The rank-one approximation `(Av)vᴴ` has
/// squared error `F − θ` in exact arithmetic. The result is accepted when the angle bound is at the
/// rounding floor of computing `r` (`16·√n·eps`), so factors match the exact SVD's to rounding.
fn rank_one_certified<T: Scalar>(a: &Array2<T>) -> Option<SliceFactor<T>> {
    let (m, n) = a.dim();
    let data = a.as_slice()?;
    let f: T::Real = data.iter().fold(T::Real::zero(), |acc, v| acc + v.abs_sq());
    if f <= T::Real::zero() {
        return None;
    }
    // Angle bound ‖r‖/δ at the rounding floor of computing r (about eps·√n·θ).
    let angle =
        <T::Real as RealScalar>::eps() * <T::Real as Scalar>::from_f64(16.0 * (n as f64).sqrt());
    // Start from the row of largest norm (conjugated): close to the top right vector when one
    // direction dominates.
    let best = (0..m)
        .max_by(|&x, &y| {
            let nx = row_sq(&data[x * n..(x + 1) * n]);
            let ny = row_sq(&data[y * n..(y + 1) * n]);
            nx.partial_cmp(&ny).unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(0);
    let mut v: Vec<T> = data[best * n..(best + 1) * n]
        .iter()
        .map(|x| x.conj_val())
        .collect();
    normalize(&mut v)?;
    let mut w = vec![T::zero(); m];
    let mut z = vec![T::zero(); n];
    for _ in 0..40 {
        // w = A v, θ = ‖w‖², z = Aᴴ w = AᴴA v.
        for (i, wi) in w.iter_mut().enumerate() {
            *wi = data[i * n..(i + 1) * n]
                .iter()
                .zip(&v)
                .map(|(&x, &y)| x * y)
                .sum();
        }
        let theta = row_sq(&w);
        z.fill(T::zero());
        for (i, &wi) in w.iter().enumerate() {
            for (zj, &x) in z.iter_mut().zip(&data[i * n..(i + 1) * n]) {
                *zj += x.conj_val() * wi;
            }
        }
        let two = <T::Real as Scalar>::from_f64(2.0);
        let delta = two * theta - f;
        let res: T::Real = z.iter().zip(&v).fold(T::Real::zero(), |acc, (&zj, &vj)| {
            acc + (zj - vj * T::from_real(theta)).abs_sq()
        });
        if delta > T::Real::zero() && res <= angle * angle * delta * delta {
            let sigma = theta.sqrt();
            let inv = T::from_real(T::Real::one() / sigma);
            let u = Array2::from_shape_fn((m, 1), |(i, _)| w[i] * inv);
            let vv = Array2::from_shape_fn((n, 1), |(j, _)| v[j]);
            // The error of the returned approximation `(Av)vᴴ`, summed directly: `F − θ` would
            // lose it to cancellation when the slice is (nearly) rank one.
            let mut tail = T::Real::zero();
            for (i, &wi) in w.iter().enumerate() {
                for (&x, &vj) in data[i * n..(i + 1) * n].iter().zip(&v) {
                    tail += (x - wi * vj.conj_val()).abs_sq();
                }
            }
            return Some(SliceFactor {
                u,
                s: vec![sigma],
                v: vv,
                tail,
            });
        }
        v.copy_from_slice(&z);
        normalize(&mut v)?;
    }
    None
}

fn row_sq<T: Scalar>(x: &[T]) -> T::Real {
    x.iter().fold(T::Real::zero(), |acc, v| acc + v.abs_sq())
}

fn normalize<T: Scalar>(x: &mut [T]) -> Option<()> {
    let nrm = row_sq(x).sqrt();
    if nrm.partial_cmp(&T::Real::zero()) != Some(std::cmp::Ordering::Greater) || !nrm.is_finite() {
        return None;
    }
    let inv = T::from_real(T::Real::one() / nrm);
    x.iter_mut().for_each(|v| *v *= inv);
    Some(())
}

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
        let results: Vec<SliceFactor<T>> = slices
            .par_iter()
            .map(|&(ai, c)| slice_factor(a.slice(s![c..;l, ai * p..(ai + 1) * p]), rho))
            .collect();
        let mut w1 = Array3::<T>::zeros((k, q, p));
        let mut w2 = Array3::<T>::zeros((l, s, r));
        let mut err2 = T::Real::zero();
        for (&(ai, c), f) in slices.iter().zip(results) {
            err2 += f.tail;
            for t in 0..rho {
                let sq = T::from_real(f.s[t].sqrt());
                for i in 0..s {
                    w2[[c, i, ai * rho + t]] = f.u[[i, t]] * sq;
                }
                for j in 0..p {
                    w1[[ai, t * l + c, j]] = sq * f.v[[j, t]].conj_val();
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
