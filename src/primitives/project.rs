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

use crate::primitives::error::{check_divides, check_nonzero, Error, Result};
use crate::primitives::svd::svd;
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

/// One slice's result: its factors, or `None` when it holds a NaN or an infinity; and its
/// squared Frobenius norm.
type SliceResult<T> = (Option<SliceFactor<T>>, <T as Scalar>::Real);

/// Gathers slice `A[ai, c]` of `a` into `buf` (row by row: a slice's rows are contiguous runs of
/// the matrix, and an element-wise strided copy costs as much as the power iteration), then
/// factors it. Non-finite slices are reported, not factored.
fn slice_factor<T: Scalar>(a: ArrayView2<T>, rho: usize, buf: &mut Vec<T>) -> SliceResult<T> {
    let (m, n) = a.dim();
    buf.clear();
    for row in a.rows() {
        match row.as_slice() {
            Some(sl) => buf.extend_from_slice(sl),
            None => buf.extend(row.iter().copied()),
        }
    }
    if !buf.iter().all(|v| v.is_finite_val()) {
        return (None, T::Real::zero());
    }
    let f = sum_sq(buf);
    if rho == 1 {
        if let Some(fac) = rank_one_certified(buf, m, n, f) {
            return (Some(fac), f);
        }
    }
    let a = ArrayView2::from_shape((m, n), &buf[..]).expect("m·n elements");
    let d = if TypeId::of::<T>() == TypeId::of::<f32>() {
        let d = svd(a.mapv(|v| v.re().to_f64_val()).view());
        crate::primitives::svd::Svd {
            u: d.u.mapv(T::from_f64),
            s: d.s.mapv(<T::Real as Scalar>::from_f64),
            v: d.v.mapv(T::from_f64),
        }
    } else {
        svd(a)
    };
    let tail =
        d.s.iter()
            .skip(rho)
            .fold(T::Real::zero(), |acc, &x| acc + x * x);
    let fac = SliceFactor {
        u: d.u.slice(s![.., ..rho]).to_owned(),
        s: d.s.iter().take(rho).copied().collect(),
        v: d.v.slice(s![.., ..rho]).to_owned(),
        tail,
    };
    (Some(fac), f)
}

/// Independent partial sums: a fixed number of them (so results do not depend on the CPU),
/// enough that the compiler vectorises the loops below.
const LANES: usize = 16;

/// `Σ x_k · y_k` (no conjugation), by `LANES` interleaved partial sums.
#[inline(always)]
fn dot<T: Scalar>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for k in 0..LANES {
            acc[k] += a[k] * b[k];
        }
    }
    for (k, (&a, &b)) in xr.iter().zip(yr).enumerate() {
        acc[k] += a * b;
    }
    acc.iter().fold(T::zero(), |s, &v| s + v)
}

/// `Σ |x_k|²`, by `LANES` interleaved partial sums.
#[inline(always)]
fn sum_sq<T: Scalar>(x: &[T]) -> T::Real {
    let mut acc = [T::Real::zero(); LANES];
    let xc = x.chunks_exact(LANES);
    let xr = xc.remainder();
    for a in xc {
        for k in 0..LANES {
            acc[k] += a[k].abs_sq();
        }
    }
    for (k, &a) in xr.iter().enumerate() {
        acc[k] += a.abs_sq();
    }
    acc.iter().fold(T::Real::zero(), |s, &v| s + v)
}

fn normalize<T: Scalar>(x: &mut [T]) -> Option<()> {
    let nrm = sum_sq(x).sqrt();
    if nrm.partial_cmp(&T::Real::zero()) != Some(std::cmp::Ordering::Greater) || !nrm.is_finite() {
        return None;
    }
    let inv = T::from_real(T::Real::one() / nrm);
    x.iter_mut().for_each(|v| *v *= inv);
    Some(())
}

/// Top singular triplet of the row-major `m × n` slice `data` (`‖data‖² = f`) by power
/// iteration on `AᴴA`, returned only when certified optimal to rounding; `None` sends the slice
/// to the exact SVD.
///
/// For a unit `v` with Rayleigh quotient `θ = ‖Av‖²` and residual `r = AᴴAv − θv`, and
/// `F = ‖A‖²_F = Σ λ`: every other eigenvalue is at most `F − θ`, so if `2θ > F` the gap is at
/// least `δ = 2θ − F`, the angle between `v` and the top eigenvector is at most `‖r‖/δ`
/// (Davis–Kahan) and `λ₁ − θ ≤ ‖r‖²/δ` (Kato–Temple). The rank-one approximation `(Av)vᴴ` has
/// squared error `F − θ` in exact arithmetic. The result is accepted when the angle bound is at the
/// rounding floor of computing `r` (`16·√n·eps`), so factors match the exact SVD's to rounding.
fn rank_one_certified<T: Scalar>(
    data: &[T],
    m: usize,
    n: usize,
    f: T::Real,
) -> Option<SliceFactor<T>> {
    match crate::primitives::kernels::Backend::detect() {
        // SAFETY: `detect` returns a SIMD backend only after run-time detection of its
        // instruction set.
        #[cfg(target_arch = "x86_64")]
        crate::primitives::kernels::Backend::Avx512 => unsafe { rank_one_avx512(data, m, n, f) },
        // SAFETY: as above (AVX2 and FMA detected).
        #[cfg(target_arch = "x86_64")]
        crate::primitives::kernels::Backend::Avx2 => unsafe { rank_one_avx2(data, m, n, f) },
        _ => rank_one_body(data, m, n, f),
    }
}

/// [`rank_one_body`] compiled for AVX-512: the same operations in the same order (the compiler
/// only widens the vectors), so results match the portable build bit for bit.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rank_one_avx512<T: Scalar>(
    data: &[T],
    m: usize,
    n: usize,
    f: T::Real,
) -> Option<SliceFactor<T>> {
    rank_one_body(data, m, n, f)
}

/// [`rank_one_body`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rank_one_avx2<T: Scalar>(
    data: &[T],
    m: usize,
    n: usize,
    f: T::Real,
) -> Option<SliceFactor<T>> {
    rank_one_body(data, m, n, f)
}

#[inline(always)]
fn rank_one_body<T: Scalar>(data: &[T], m: usize, n: usize, f: T::Real) -> Option<SliceFactor<T>> {
    if f.partial_cmp(&T::Real::zero()) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let angle =
        <T::Real as RealScalar>::eps() * <T::Real as Scalar>::from_f64(16.0 * (n as f64).sqrt());
    let row = |i: usize| &data[i * n..(i + 1) * n];
    // Start from the conjugate of the largest row: never orthogonal to the top vector.
    let mut best = (0, T::Real::zero());
    for i in 0..m {
        let ni = sum_sq(row(i));
        if ni > best.1 {
            best = (i, ni);
        }
    }
    let mut v: Vec<T> = row(best.0).iter().map(|x| x.conj_val()).collect();
    normalize(&mut v)?;
    let mut w = vec![T::zero(); m];
    let mut z = vec![T::zero(); n];
    let two = <T::Real as Scalar>::from_f64(2.0);
    for _ in 0..40 {
        for (i, wi) in w.iter_mut().enumerate() {
            *wi = dot(row(i), &v);
        }
        let theta = sum_sq(&w);
        z.fill(T::zero());
        for (i, &wi) in w.iter().enumerate() {
            for (zj, &x) in z.iter_mut().zip(row(i)) {
                *zj += x.conj_val() * wi;
            }
        }
        let delta = two * theta - f;
        let th = T::from_real(theta);
        let mut res = T::Real::zero();
        for (&zj, &vj) in z.iter().zip(&v) {
            res += (zj - vj * th).abs_sq();
        }
        if delta > T::Real::zero() && res <= angle * angle * delta * delta {
            let sigma = theta.sqrt();
            let inv = T::from_real(T::Real::one() / sigma);
            let u = Array2::from_shape_fn((m, 1), |(i, _)| w[i] * inv);
            let vv = Array2::from_shape_fn((n, 1), |(j, _)| v[j]);
            // The error is summed explicitly: `F − θ` cancels catastrophically when the slice
            // is nearly rank one.
            let vc: Vec<T> = v.iter().map(|x| x.conj_val()).collect();
            let mut tail = T::Real::zero();
            let mut diff = vec![T::zero(); n];
            for (i, &wi) in w.iter().enumerate() {
                for ((d, &x), &vj) in diff.iter_mut().zip(row(i)).zip(&vc) {
                    *d = x - wi * vj;
                }
                tail += sum_sq(&diff);
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
    /// Matrices with entries near the ends of the float range (say `|a| ≈ 1e300` in `f64` or
    /// `3e19` in `f32`, whose squares overflow) are projected as `a / 2^e` (exact) and scaled
    /// back, so the factors and the error stay finite.
    ///
    /// # Errors
    /// As [`project`](Monarch::project); [`Error::NonFinite`] if the error itself exceeds the
    /// float range.
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
        if let Some(e) = range_exponent(a) {
            return Self::project_scaled(a, in_blocks, out_blocks, rank, e);
        }
        let rho = rank;
        let (q, r) = (rho * l, k * rho);
        let slices: Vec<(usize, usize)> =
            (0..k).flat_map(|ai| (0..l).map(move |c| (ai, c))).collect();
        // Each slice is independent; results are written back in a fixed order.
        // One pass: each slice is gathered once, checked for NaN/Inf, summed and factored.
        let results: Vec<SliceResult<T>> = slices
            .par_iter()
            .map_init(Vec::new, |buf, &(ai, c)| {
                slice_factor(a.slice(s![c..;l, ai * p..(ai + 1) * p]), rho, buf)
            })
            .collect();
        if results.iter().any(|(f, _)| f.is_none()) {
            return Err(Error::NonFinite {
                context: "Monarch::project: input matrix".into(),
            });
        }
        let mut w1 = Array3::<T>::zeros((k, q, p));
        let mut w2 = Array3::<T>::zeros((l, s, r));
        let mut err2 = T::Real::zero();
        let mut total = T::Real::zero();
        for (&(ai, c), (f, norm2)) in slices.iter().zip(results) {
            let f = f.expect("non-finite slices returned above");
            total += norm2;
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

impl<T: Scalar> Monarch<T> {
    /// [`project_with_error`](Monarch::project_with_error) of `a / 2^e`, scaled back: each
    /// factor by `2^(e/2)`, the error by `2^e` (powers of two: no rounding).
    fn project_scaled(
        a: ArrayView2<T>,
        in_blocks: usize,
        out_blocks: usize,
        rank: usize,
        e: i32,
    ) -> Result<Projection<T>> {
        let pow2 = |x: i32| T::from_f64(2f64.powi(x));
        // Two half steps: `2^-e` alone can leave the float range (2^-128 in f32).
        let (down1, down2) = (pow2(-(e / 2)), pow2(-(e - e / 2)));
        let scaled = a.mapv(|v| v * down1 * down2);
        let mut p = Self::project_with_error(scaled.view(), in_blocks, out_blocks, rank)?;
        let (up1, up2) = (pow2(e / 2), pow2(e - e / 2));
        p.monarch.w1_mut().mapv_inplace(|v| v * up1);
        p.monarch.w2_mut().mapv_inplace(|v| v * up2);
        let error = p.error.to_f64_val() * 2f64.powi(e);
        p.error = <T::Real as Scalar>::from_f64(error);
        let finite = p.error.is_finite()
            && p.monarch
                .w1()
                .iter()
                .chain(p.monarch.w2())
                .all(|v| v.is_finite_val());
        if !finite {
            return Err(Error::NonFinite {
                context: format!(
                    "Monarch::project: the factors or error of a matrix with entries up to 2^{e} exceed the float range"
                ),
            });
        }
        Ok(p)
    }
}

/// The `e` with `max |entry| · 2^-e` in `[1/2, 1)` when the entries are finite, not all zero,
/// and that far from 1 that sums of their squares may overflow or underflow (`|e|` above a
/// quarter of the float type's exponent range); `None` otherwise.
fn range_exponent<T: Scalar>(a: ArrayView2<T>) -> Option<i32> {
    let mut big = 0f64;
    for v in a.iter() {
        let (re, im) = (v.re().to_f64_val().abs(), v.im().to_f64_val().abs());
        if !(re.is_finite() && im.is_finite()) {
            return None; // reported as NonFinite by the projection
        }
        big = big.max(re).max(im);
    }
    if big == 0.0 {
        return None;
    }
    let e = big.log2().floor() as i32 + 1;
    let limit = (<T::Real as Float>::max_value().to_f64_val().log2() / 4.0) as i32;
    (e.abs() > limit).then_some(e)
}
