//! The crate's one error type.
//!
//! Every fallible public function returns [`Result<_, Error>`](crate::Result). Messages name the
//! offending sizes so a caller can see at a glance which argument was wrong.
//!
//! ```
//! use monarch::{Error, Monarch};
//! use monarch::ndarray::Array3;
//! // k·q = 2·3 = 6 but l·r = 2·2 = 4: the factors do not chain.
//! let err = Monarch::from_factors(Array3::<f64>::zeros((2, 3, 4)), Array3::zeros((2, 5, 2)))
//!     .unwrap_err();
//! assert!(matches!(err, Error::ShapeMismatch { .. }));
//! assert!(err.to_string().contains("6"));
//! ```

use std::fmt;

/// Everything that can go wrong in this crate's public API.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// An array's shape does not fit the operation.
    ShapeMismatch {
        /// What was being checked (operation and argument).
        context: String,
        /// The shape or size that would have fitted.
        expected: String,
        /// The shape or size that was passed.
        found: String,
    },
    /// A size that must be positive is zero.
    ZeroSize {
        /// Which size is zero.
        context: String,
    },
    /// A size that must divide another does not.
    NotDivisible {
        /// What was being split.
        context: String,
        /// The size being split.
        size: usize,
        /// The divisor that does not divide it.
        divisor: usize,
    },
    /// A rank or count exceeds what the structure allows.
    TooLarge {
        /// What was too large.
        context: String,
        /// The value passed.
        value: usize,
        /// The largest allowed value.
        max: usize,
    },
    /// NaN or infinity where a finite value is required.
    NonFinite {
        /// Where the non-finite value was found.
        context: String,
    },
    /// Any other invalid argument (a probability that is negative, a mask that masks everything…).
    InvalidArgument(String),
    /// A checkpoint or data file could not be read or written.
    Io(String),
    /// A checkpoint's content does not match what the layer expects.
    Format(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch {
                context,
                expected,
                found,
            } => write!(f, "{context}: expected {expected}, found {found}"),
            Error::ZeroSize { context } => write!(f, "{context}: size must be positive, got 0"),
            Error::NotDivisible {
                context,
                size,
                divisor,
            } => write!(f, "{context}: {size} is not divisible by {divisor}"),
            Error::TooLarge {
                context,
                value,
                max,
            } => write!(f, "{context}: {value} exceeds the maximum {max}"),
            Error::NonFinite { context } => write!(f, "{context}: NaN or infinite value"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Io(m) => write!(f, "i/o error: {m}"),
            Error::Format(m) => write!(f, "format error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(
        context: impl Into<String>,
        expected: impl fmt::Debug,
        found: impl fmt::Debug,
    ) -> Self {
        Error::ShapeMismatch {
            context: context.into(),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }

    /// Shorthand for [`Error::ZeroSize`].
    pub fn zero(context: impl Into<String>) -> Self {
        Error::ZeroSize {
            context: context.into(),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns [`Error::ShapeMismatch`] (context `"{ctx}: {what}"`) unless `found == expect`.
pub(crate) fn check_shape(
    ctx: &str,
    what: &str,
    expect: (usize, usize),
    found: (usize, usize),
) -> Result<()> {
    if expect != found {
        return Err(Error::shape(format!("{ctx}: {what}"), expect, found));
    }
    Ok(())
}

/// Returns [`Error::ZeroSize`] if `size == 0`.
pub(crate) fn check_nonzero(size: usize, context: &str) -> Result<()> {
    if size == 0 {
        Err(Error::zero(context))
    } else {
        Ok(())
    }
}

/// Returns [`Error::NotDivisible`] unless `divisor` divides `size` (and is non-zero).
pub(crate) fn check_divides(size: usize, divisor: usize, context: &str) -> Result<()> {
    check_nonzero(divisor, context)?;
    if !size.is_multiple_of(divisor) {
        Err(Error::NotDivisible {
            context: context.into(),
            size,
            divisor,
        })
    } else {
        Ok(())
    }
}

/// Element count of an array of shape `dims` with `elem_size`-byte elements, or
/// [`Error::TooLarge`] if the count of its non-zero axes overflows or its bytes exceed
/// `isize::MAX` (where `ndarray` and `Vec` would panic).
pub(crate) fn checked_len(dims: &[usize], elem_size: usize, context: &str) -> Result<usize> {
    let max = isize::MAX as usize / elem_size.max(1);
    let mut n: usize = 1;
    for &d in dims.iter().filter(|&&d| d != 0) {
        n = match n.checked_mul(d) {
            Some(v) if v <= max => v,
            _ => {
                return Err(Error::TooLarge {
                    context: format!("{context}: element count of shape {dims:?}"),
                    value: n.saturating_mul(d),
                    max,
                })
            }
        };
    }
    Ok(if dims.contains(&0) { 0 } else { n })
}
