//! The scalar types the crate computes with: `f32`, `f64`, `Complex<f32>`, `Complex<f64>`.
//!
//! [`Scalar`] is what every structured matrix is generic over; [`RealScalar`] is its real
//! subset (`f32`, `f64`), used for norms, errors and anything that needs an ordering.
//!
//! ```
//! use monarch::{Scalar, num_complex::Complex};
//! let z = Complex::new(3.0f64, 4.0);
//! assert_eq!(z.abs_val(), 5.0);
//! assert_eq!(z.conj_val(), Complex::new(3.0, -4.0));
//! assert!(!<f32 as Scalar>::IS_COMPLEX);
//! ```

use num_complex::Complex;
use num_traits::{Float, NumAssign};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::Neg;

/// A field element this crate can compute with: `f32`, `f64`, `Complex<f32>` or `Complex<f64>`.
pub trait Scalar:
    Copy
    + Send
    + Sync
    + Debug
    + Display
    + PartialEq
    + Default
    + 'static
    + NumAssign
    + Neg<Output = Self>
    + Sum
    + ndarray::LinalgScalar
{
    /// The real type underneath (`f32` for `Complex<f32>`).
    type Real: RealScalar;
    /// True for the complex types.
    const IS_COMPLEX: bool;
    /// Complex conjugate (identity for reals).
    fn conj_val(self) -> Self;
    /// Real part.
    fn re(self) -> Self::Real;
    /// Imaginary part (zero for reals).
    fn im(self) -> Self::Real;
    /// `|x|²`.
    fn abs_sq(self) -> Self::Real;
    /// `|x|`.
    fn abs_val(self) -> Self::Real {
        self.abs_sq().sqrt()
    }
    /// Embeds a real number.
    fn from_real(r: Self::Real) -> Self;
    /// Builds from real and imaginary parts (the imaginary part is dropped for reals).
    fn from_parts(re: Self::Real, im: Self::Real) -> Self;
    /// Converts an `f64` (rounding for `f32`).
    fn from_f64(x: f64) -> Self {
        Self::from_real(<Self::Real as Scalar>::from_f64(x))
    }
    /// True if neither part is NaN or infinite.
    fn is_finite_val(self) -> bool {
        self.re().is_finite() && self.im().is_finite()
    }
    /// `self * a + b`, fused where the hardware has it for reals.
    #[inline(always)]
    fn mul_add_val(self, a: Self, b: Self) -> Self {
        self * a + b
    }
}

/// A real scalar: `f32` or `f64`.
pub trait RealScalar: Scalar<Real = Self> + Float + PartialOrd {
    /// Machine epsilon.
    fn eps() -> Self {
        <Self as Float>::epsilon()
    }
    /// Converts to `f64`.
    fn to_f64_val(self) -> f64;
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Scalar for $t {
            type Real = $t;
            const IS_COMPLEX: bool = false;
            #[inline(always)]
            fn conj_val(self) -> Self {
                self
            }
            #[inline(always)]
            fn re(self) -> Self {
                self
            }
            #[inline(always)]
            fn im(self) -> Self {
                0.0
            }
            #[inline(always)]
            fn abs_sq(self) -> Self {
                self * self
            }
            #[inline(always)]
            fn abs_val(self) -> Self {
                self.abs()
            }
            #[inline(always)]
            fn from_real(r: Self) -> Self {
                r
            }
            #[inline(always)]
            fn from_parts(re: Self, _im: Self) -> Self {
                re
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn mul_add_val(self, a: Self, b: Self) -> Self {
                // Plain `*` then `+`: `f32::mul_add` is a libm call without the `fma` target
                // feature, and LLVM contracts this pattern where FMA is available.
                self * a + b
            }
        }
        impl RealScalar for $t {
            fn to_f64_val(self) -> f64 {
                self as f64
            }
        }
    };
}
impl_real!(f32);
impl_real!(f64);

macro_rules! impl_complex {
    ($t:ty) => {
        impl Scalar for Complex<$t> {
            type Real = $t;
            const IS_COMPLEX: bool = true;
            #[inline(always)]
            fn conj_val(self) -> Self {
                self.conj()
            }
            #[inline(always)]
            fn re(self) -> $t {
                self.re
            }
            #[inline(always)]
            fn im(self) -> $t {
                self.im
            }
            #[inline(always)]
            fn abs_sq(self) -> $t {
                self.norm_sqr()
            }
            #[inline(always)]
            fn from_real(r: $t) -> Self {
                Complex::new(r, 0.0)
            }
            #[inline(always)]
            fn from_parts(re: $t, im: $t) -> Self {
                Complex::new(re, im)
            }
        }
    };
}
impl_complex!(f32);
impl_complex!(f64);

/// `xs` as a slice of `U` when `T` and `U` are the same type, else `None`.
///
/// Lets code generic over the crate's scalars call libraries whose element traits the scalar
/// traits do not name (rustfft's `FftNum`): adding such a trait as a supertrait would make
/// `R::from_f64` ambiguous in every caller's generic code.
pub(crate) fn same_type_mut<T: 'static, U: 'static>(xs: &mut [T]) -> Option<&mut [U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type (same TypeId), so layout and validity agree.
        Some(unsafe { std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast::<U>(), xs.len()) })
    } else {
        None
    }
}
