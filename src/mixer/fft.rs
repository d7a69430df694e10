//! Complex FFT plans of any length, a thin wrapper over [`rustfft`], the `O(L log L)` baseline
//! for the Monarch-DFT long convolution.
//!
//! The crate once carried its own mixed-radix FFT; it was 7.5–8.8× slower than `rustfft` at
//! powers of two and quadratic in the largest prime factor (440× slower at n = 4099), which made
//! the Monarch-versus-FFT comparison one against a weak FFT. `rustfft` handles every length in
//! `O(n log n)` (Rader and Bluestein for large primes) with SIMD kernels. The long convolution
//! itself uses the real-input transforms of [`realfft`] (see [`crate::mixer::ConvMethod::Fft`]).
//!
//! ```
//! use monarch::mixer::fft::FftPlan;
//! use monarch::num_complex::Complex64;
//! let plan = FftPlan::<f64>::new(12).unwrap();
//! let mut x: Vec<Complex64> = (0..12).map(|i| Complex64::new(i as f64, 0.0)).collect();
//! plan.forward(&mut x);
//! assert!((x[0].re - 66.0).abs() < 1e-12); // DC term: Σx (unnormalised)
//! plan.inverse(&mut x);                      // includes the 1/n
//! assert!((x[5].re - 5.0).abs() < 1e-12);
//! ```

use crate::primitives::error::{check_nonzero, Result};
use crate::primitives::scalar::same_type_mut;
use crate::RealScalar;
use num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;

/// A precomputed plan for length-`n` complex FFTs (forward and inverse).
pub struct FftPlan<R> {
    fwd: Plan,
    inv: Plan,
    n: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R> Clone for FftPlan<R> {
    fn clone(&self) -> Self {
        FftPlan {
            fwd: self.fwd.clone(),
            inv: self.inv.clone(),
            n: self.n,
            _r: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for FftPlan<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FftPlan").field("n", &self.n).finish()
    }
}

/// A rustfft plan in the precision of the `RealScalar` it was made for. The public types stay
/// generic over `RealScalar` alone, which does not name rustfft's `FftNum`; the element slices
/// are handed over by [`same_type_mut`].
#[derive(Clone)]
enum Plan {
    F32(Arc<dyn Fft<f32>>),
    F64(Arc<dyn Fft<f64>>),
}

/// True if `R` is `f32` (`RealScalar` is implemented for `f32` and `f64` only).
pub(crate) fn is_f32<R: RealScalar>() -> bool {
    TypeId::of::<R>() == TypeId::of::<f32>()
}

impl Plan {
    fn new<R: RealScalar>(n: usize, inverse: bool) -> Plan {
        if is_f32::<R>() {
            let mut p = FftPlanner::<f32>::new();
            Plan::F32(if inverse {
                p.plan_fft_inverse(n)
            } else {
                p.plan_fft_forward(n)
            })
        } else {
            let mut p = FftPlanner::<f64>::new();
            Plan::F64(if inverse {
                p.plan_fft_inverse(n)
            } else {
                p.plan_fft_forward(n)
            })
        }
    }

    fn process<R: RealScalar>(&self, data: &mut [Complex<R>]) {
        const MSG: &str = "FftPlan: plan made for this scalar type";
        match self {
            Plan::F32(p) => p.process(same_type_mut(data).expect(MSG)),
            Plan::F64(p) => p.process(same_type_mut(data).expect(MSG)),
        }
    }
}

impl<R: RealScalar> FftPlan<R> {
    /// Plans transforms of length `n`.
    ///
    /// # Errors
    /// [`crate::Error::ZeroSize`] if `n == 0`; [`crate::Error::TooLarge`] if `n` complex
    /// values cannot be allocated.
    pub fn new(n: usize) -> Result<Self> {
        check_nonzero(n, "FftPlan: n")?;
        // Checked before planning: rustfft allocates twiddles and scratch of about `n` values,
        // and an allocation failure there would abort instead of returning an error.
        let size = 2 * std::mem::size_of::<R>();
        crate::primitives::error::check_alloc(&[n], size, "FftPlan: n")?;
        Ok(FftPlan {
            fwd: Plan::new::<R>(n, false),
            inv: Plan::new::<R>(n, true),
            n,
            _r: PhantomData,
        })
    }

    /// Transform length.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false (plans have positive length).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// In-place unnormalised forward DFT, `X[k] = Σ_j x[j]·e^{−2πijk/n}`.
    ///
    /// # Panics
    /// If `data.len() != n`.
    pub fn forward(&self, data: &mut [Complex<R>]) {
        assert_eq!(data.len(), self.n, "FftPlan: length mismatch");
        self.fwd.process(data);
    }

    /// In-place inverse DFT including the `1/n`, so `inverse(forward(x)) == x`.
    ///
    /// # Panics
    /// If `data.len() != n`.
    pub fn inverse(&self, data: &mut [Complex<R>]) {
        assert_eq!(data.len(), self.n, "FftPlan: length mismatch");
        self.inv.process(data);
        let s = R::one() / R::from_f64(self.n as f64);
        for v in data.iter_mut() {
            *v *= s;
        }
    }
}
