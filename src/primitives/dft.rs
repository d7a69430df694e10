//! The discrete Fourier transform as an exact complex Monarch (Cooley–Tukey).
//!
//! For `n = k·p`, write the input index `a + k·j` and the output index `u₁ + p·u₂`. Then
//! `F[u, x] = ω^{a·u₁} · ω_p^{j·u₁} · ω_k^{a·u₂}`: a block of `p`-point DFTs with the twiddles
//! folded into its rows (`w1`, `k` blocks `p × p`), the stride permutation, and `k`-point DFTs
//! (`w2`, `p` blocks `k × k`); the output comes out in natural order. The input must be given
//! in stride-permuted order `x'[a·p + j] = x[a + k·j]` ([`Monarch::dft_input_perm`]);
//! [`Monarch::dft_natural`] folds that permutation into the Monarch's input permutation.
//! Scaling is orthonormal (`1/√n`), so the inverse is the [`adjoint`](Monarch::adjoint).
//!
//! ```
//! use monarch::{Monarch, num_complex::Complex64};
//! use monarch::ndarray::Array1;
//! let f = Monarch::<Complex64>::dft_natural(16).unwrap();
//! let x = Array1::from_shape_fn(16, |i| Complex64::new(i as f64, 0.0));
//! let y = f.matvec(x.view()).unwrap();
//! // DC term of the orthonormal DFT: Σx / √n.
//! assert!((y[0].re - 120.0 / 4.0).abs() < 1e-12);
//! ```

use crate::primitives::error::{check_divides, check_nonzero, Error, Result};
use crate::{Monarch, Perm, RealScalar, Scalar};
use ndarray::Array3;
use num_complex::Complex;

impl<R: RealScalar> Monarch<Complex<R>>
where
    Complex<R>: Scalar<Real = R>,
{
    /// The orthonormal `n`-point DFT, `n` a perfect square, as a Monarch with `√n` blocks of
    /// `√n × √n`, taking its input in stride-permuted order (see [`dft_input_perm`](Monarch::dft_input_perm)).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for `n = 0`, [`Error::InvalidArgument`] if `n` is not a perfect square.
    pub fn dft(n: usize) -> Result<Self> {
        check_nonzero(n, "Monarch::dft: n")?;
        let b = isqrt(n);
        if b * b != n {
            return Err(Error::invalid(format!(
                "Monarch::dft: n = {n} is not a perfect square; use Monarch::dft_factored(k, p) for n = k·p"
            )));
        }
        Self::dft_factored(b, b, false)
    }

    /// The orthonormal `n`-point DFT for `n = k·p`: `w1` has `k` blocks `p × p`, `w2` has `p` blocks
    /// `k × k`. Input in stride-permuted order `x'[a·p + j] = x[a + k·j]`; `inverse` gives the
    /// inverse DFT (`ω → ω̄`).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `k` or `p` is zero, [`Error::TooLarge`] if the sizes overflow.
    pub fn dft_factored(k: usize, p: usize, inverse: bool) -> Result<Self> {
        check_nonzero(k, "Monarch::dft_factored: k")?;
        check_nonzero(p, "Monarch::dft_factored: p")?;
        let size = std::mem::size_of::<Complex<R>>();
        let n =
            crate::primitives::error::checked_len(&[k, p], size, "Monarch::dft_factored: n = k·p")?;
        crate::primitives::error::check_alloc(&[k, p, p], size, "Monarch::dft_factored: w1")?;
        crate::primitives::error::check_alloc(&[p, k, k], size, "Monarch::dft_factored: w2")?;
        let sign = if inverse { 1.0 } else { -1.0 };
        let tau = 2.0 * std::f64::consts::PI;
        let cis = |num: usize, den: usize, scale: f64| {
            // Reduce the angle's numerator first so large products keep full precision.
            let ang = sign * tau * ((num % den) as f64) / den as f64;
            Complex::new(
                R::from_f64(ang.cos() * scale),
                R::from_f64(ang.sin() * scale),
            )
        };
        let sp = 1.0 / (p as f64).sqrt();
        let sk = 1.0 / (k as f64).sqrt();
        // w1[a, u1, j] = ω_n^{a·u1} · ω_p^{j·u1} / √p  (= ω_n^{a·u1 + k·j·u1}).
        let w1 = Array3::from_shape_fn((k, p, p), |(a, u1, j)| {
            cis(a * u1 + k * ((j * u1) % p), n, sp)
        });
        // w2[u1, u2, a] = ω_k^{a·u2} / √k.
        let w2 = Array3::from_shape_fn((p, k, k), |(_, u2, a)| cis(a * u2, k, sk));
        Monarch::from_factors(w1, w2)
    }

    /// The input permutation the DFT Monarch expects: `x' = perm.apply(x)`, `x'[a·p + j] = x[a + k·j]`
    /// (for the square case `perm[i·b + j] = j·b + i`).
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `k` or `p` is zero.
    pub fn dft_input_perm(k: usize, p: usize) -> Result<Perm> {
        check_nonzero(k, "Monarch::dft_input_perm: k")?;
        check_nonzero(p, "Monarch::dft_input_perm: p")?;
        crate::primitives::error::checked_len(
            &[k, p],
            std::mem::size_of::<usize>(),
            "Monarch::dft_input_perm",
        )?;
        Perm::stride(p, k)
    }

    /// The orthonormal DFT taking its input in natural order: [`dft`](Monarch::dft) with the
    /// stride permutation folded into `P_in`, so `dft_natural(n).matvec(x) == fft(x)/√n`.
    ///
    /// # Errors
    /// As [`dft`](Monarch::dft).
    pub fn dft_natural(n: usize) -> Result<Self> {
        let b = isqrt(n);
        let (_, w1, p_mid, w2, p_out) = Self::dft(n)?.into_parts();
        Monarch::from_parts(Self::dft_input_perm(b, b)?, w1, p_mid, w2, p_out)
    }

    /// Natural-order DFT (or inverse) of any length `n = k·p` with `k` input blocks.
    ///
    /// # Errors
    /// [`Error::NotDivisible`] if `k` does not divide `n`.
    pub fn dft_natural_factored(n: usize, k: usize, inverse: bool) -> Result<Self> {
        check_nonzero(n, "Monarch::dft_natural_factored: n")?;
        check_divides(n, k, "Monarch::dft_natural_factored: n by k")?;
        let p = n / k;
        let (_, w1, p_mid, w2, p_out) = Self::dft_factored(k, p, inverse)?.into_parts();
        Monarch::from_parts(Self::dft_input_perm(k, p)?, w1, p_mid, w2, p_out)
    }
}

fn isqrt(n: usize) -> usize {
    // The float estimate can be one off either way; products are checked because
    // `(2^32)^2` overflows usize for n near usize::MAX.
    let mut b = (n as f64).sqrt() as usize;
    while b.checked_mul(b).is_none_or(|v| v > n) {
        b -= 1;
    }
    while (b + 1).checked_mul(b + 1).is_some_and(|v| v <= n) {
        b += 1;
    }
    b
}
