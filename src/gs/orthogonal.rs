//! Orthogonal blocks from unconstrained parameters: skew-symmetrise, then Cayley or `exp`.
//!
//! A stored block `A` becomes `K = (A − Aᵀ)/2` and then `Q = (I + K)(I − K)⁻¹` (Cayley, the
//! default) or `Q = exp(K)`. Both are orthogonal for every `A` — the parametrization, not a
//! projection, keeps orthogonality, so it survives any number of training steps to rounding.
//! `A = 0` gives `Q = I`. Only the `b(b−1)/2` entries above the diagonal of `K` matter.
//!
//! ```
//! use monarch::gs::{orthogonal_block, OrthMap};
//! use monarch::ndarray::{array, Array2};
//! let a = array![[0.0f64, 0.7, -0.2], [0.1, 0.0, 0.4], [0.3, -0.5, 0.0]];
//! for map in [OrthMap::Cayley, OrthMap::Exp] {
//!     let q = orthogonal_block(a.view(), map).unwrap();
//!     let e = q.t().dot(&q) - Array2::<f64>::eye(3);
//!     assert!(e.iter().all(|v| v.abs() < 1e-14));
//! }
//! ```

use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use ndarray::{Array2, ArrayView2};

/// How a skew-symmetric block is mapped to an orthogonal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrthMap {
    /// `(I + K)(I − K)⁻¹`: one small solve per block; cannot reach orthogonal matrices with
    /// eigenvalue −1 (it reaches the special orthogonal matrices without them).
    #[default]
    Cayley,
    /// `exp(K)`: scaling and squaring with a Taylor series; reaches every rotation.
    Exp,
}

/// `(A − Aᵀ)/2`.
pub fn skew<T: RealScalar>(a: ArrayView2<T>) -> Array2<T> {
    let half = T::from_f64(0.5);
    let mut k = a.to_owned();
    k -= &a.t();
    k.mapv_inplace(|v| v * half);
    k
}

fn check_square<T>(a: ArrayView2<T>, ctx: &str) -> Result<usize> {
    let (r, c) = a.dim();
    if r != c {
        return Err(Error::shape(format!("{ctx}: square block"), (r, r), (r, c)));
    }
    crate::primitives::error::check_nonzero(r, ctx)?;
    Ok(r)
}

/// Inverse of a small square matrix by Gauss–Jordan elimination with partial pivoting.
///
/// # Errors
/// [`Error::InvalidArgument`] if the matrix is singular to working precision.
pub(crate) fn inverse<T: RealScalar>(m: ArrayView2<T>) -> Result<Array2<T>> {
    let n = m.nrows();
    let mut a = m.to_owned();
    let mut inv = Array2::<T>::eye(n);
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| {
                a[[i, col]]
                    .abs()
                    .partial_cmp(&a[[j, col]].abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .unwrap_or(col);
        let p = a[[piv, col]];
        if p == T::zero() || !p.is_finite() {
            return Err(Error::invalid(format!(
                "singular {n}×{n} matrix in an orthogonal-block solve (column {col})"
            )));
        }
        if piv != col {
            for j in 0..n {
                a.swap([piv, j], [col, j]);
                inv.swap([piv, j], [col, j]);
            }
        }
        let ip = T::one() / p;
        for j in 0..n {
            a[[col, j]] *= ip;
            inv[[col, j]] *= ip;
        }
        for i in 0..n {
            if i != col {
                let f = a[[i, col]];
                if f != T::zero() {
                    for j in 0..n {
                        let (aj, vj) = (a[[col, j]], inv[[col, j]]);
                        a[[i, j]] -= f * aj;
                        inv[[i, j]] -= f * vj;
                    }
                }
            }
        }
    }
    Ok(inv)
}

/// Cayley transform of a skew-symmetric `k`: returns `(Q, (I − K)⁻¹)`.
fn cayley_parts<T: RealScalar>(k: ArrayView2<T>) -> Result<(Array2<T>, Array2<T>)> {
    let n = k.nrows();
    let eye = Array2::<T>::eye(n);
    // I − K is invertible for skew K (eigenvalues 1 − iλ), so this only fails on NaN input.
    let m = inverse((&eye - &k).view())?;
    let q = (&eye + &k).dot(&m);
    Ok((q, m))
}

/// `(I + K)(I − K)⁻¹` for a skew-symmetric `k`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a non-square block; [`Error::NonFinite`] for NaN/Inf entries.
pub fn cayley<T: RealScalar>(k: ArrayView2<T>) -> Result<Array2<T>> {
    check_square(k, "cayley")?;
    check_finite(k, "cayley")?;
    Ok(cayley_parts(k)?.0)
}

fn check_finite<T: RealScalar>(a: ArrayView2<T>, ctx: &str) -> Result<()> {
    if a.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            context: ctx.into(),
        })
    }
}

/// The matrix exponential of a small square matrix (any, not only skew): scaling and squaring
/// with a degree-18 Taylor polynomial after scaling to 1-norm ≤ ½ (truncation below 1e-22).
///
/// # Errors
/// [`Error::ShapeMismatch`] for a non-square matrix; [`Error::NonFinite`] for NaN/Inf entries.
pub fn expm<T: RealScalar>(a: ArrayView2<T>) -> Result<Array2<T>> {
    let n = check_square(a, "expm")?;
    check_finite(a, "expm")?;
    let norm = (0..n)
        .map(|j| {
            a.column(j)
                .iter()
                .map(|v| v.abs().to_f64_val())
                .sum::<f64>()
        })
        .fold(0.0, f64::max);
    let s = if norm > 0.5 {
        (norm / 0.5).log2().ceil() as i32
    } else {
        0
    };
    let scale = T::from_f64(0.5f64.powi(s));
    let x = a.mapv(|v| v * scale);
    // Horner: I + X(I + X/2(I + X/3(…))).
    let eye = Array2::<T>::eye(n);
    let mut p = eye.clone();
    for d in (1..=18).rev() {
        let inv_d = T::from_f64(1.0 / d as f64);
        p = &eye + &x.dot(&p).mapv(|v| v * inv_d);
    }
    for _ in 0..s {
        p = p.dot(&p);
    }
    Ok(p)
}

/// The orthogonal block of parameters `a` (skew-symmetrised, then mapped by `map`).
///
/// # Errors
/// [`Error::ShapeMismatch`] for a non-square block; [`Error::NonFinite`] for NaN/Inf entries.
pub fn orthogonal_block<T: RealScalar>(a: ArrayView2<T>, map: OrthMap) -> Result<Array2<T>> {
    check_square(a, "orthogonal_block")?;
    check_finite(a, "orthogonal_block")?;
    let k = skew(a);
    match map {
        OrthMap::Cayley => Ok(cayley_parts(k.view())?.0),
        OrthMap::Exp => expm(k.view()),
    }
}

/// Gradient with respect to the parameters `a` of `sum(Q(a) ⊙ g)` (the VJP through the skew
/// map and Cayley or `exp`).
///
/// Cayley: `dQ = (I + Q) dK (I − K)⁻¹`, so `∂/∂K = (I + Q)ᵀ g (I − K)⁻ᵀ`. Exp: the adjoint of
/// the Fréchet derivative at `K` is the Fréchet derivative at `Kᵀ`, read off the upper-right
/// block of `exp([[Kᵀ, g], [0, Kᵀ]])`. Then `∂/∂A = (∂K − ∂Kᵀ)/2`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `a` is not square or `g` has another shape; [`Error::NonFinite`].
pub fn orthogonal_block_vjp<T: RealScalar>(
    a: ArrayView2<T>,
    g: ArrayView2<T>,
    map: OrthMap,
) -> Result<Array2<T>> {
    let n = check_square(a, "orthogonal_block_vjp")?;
    if g.dim() != (n, n) {
        return Err(Error::shape(
            "orthogonal_block_vjp: upstream gradient",
            (n, n),
            g.dim(),
        ));
    }
    check_finite(a, "orthogonal_block_vjp: parameters")?;
    let k = skew(a);
    let gk = match map {
        OrthMap::Cayley => {
            let (q, m) = cayley_parts(k.view())?;
            let ipq = &q + &Array2::<T>::eye(n);
            ipq.t().dot(&g).dot(&m.t())
        }
        OrthMap::Exp => {
            let mut big = Array2::<T>::zeros((2 * n, 2 * n));
            big.slice_mut(ndarray::s![..n, ..n]).assign(&k.t());
            big.slice_mut(ndarray::s![n.., n..]).assign(&k.t());
            big.slice_mut(ndarray::s![..n, n..]).assign(&g);
            let e = expm(big.view())?;
            e.slice(ndarray::s![..n, n..]).to_owned()
        }
    };
    Ok(skew(gk.view()))
}
