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
use std::io;
use std::sync::Arc;

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
    /// A rank or count exceeds what the structure allows, or an allocation of a caller's or a
    /// file's size could not be made (then `value` is the byte count asked for and `max` is 0).
    TooLarge {
        /// What was too large.
        context: String,
        /// The value passed (the bytes asked for, for a failed allocation).
        value: usize,
        /// The largest allowed value (0 for a failed allocation: no bound is known).
        max: usize,
    },
    /// NaN or infinity where a finite value is required.
    NonFinite {
        /// Where the non-finite value was found.
        context: String,
    },
    /// Any other invalid argument (a probability that is negative, a mask that masks everything…).
    InvalidArgument(String),
    /// A checkpoint or data file could not be read or written. The [`io::ErrorKind`] and the
    /// original [`io::Error`] are kept: `std::error::Error::source` returns the latter.
    Io {
        /// What was being read or written (file, tensor, header).
        context: String,
        /// The kind of the underlying I/O error.
        kind: io::ErrorKind,
        /// The underlying I/O error.
        source: IoSource,
    },
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
                max: 0,
            } if context.ends_with(ALLOC_FAILED) => {
                write!(f, "{context}: {value} bytes could not be allocated")
            }
            Error::TooLarge {
                context,
                value,
                max,
            } => write!(f, "{context}: {value} exceeds the maximum {max}"),
            Error::NonFinite { context } => write!(f, "{context}: NaN or infinite value"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Io {
                context, source, ..
            } => write!(f, "i/o error: {context}: {}", source.get_ref()),
            Error::Format(m) => write!(f, "format error: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source.get_ref()),
            _ => None,
        }
    }
}

/// The [`io::Error`] behind an [`Error::Io`], shared so that [`Error`] stays `Clone`; two are
/// equal when their kinds and messages are.
#[derive(Debug, Clone)]
pub struct IoSource(Arc<io::Error>);

impl IoSource {
    /// The underlying I/O error.
    pub fn get_ref(&self) -> &io::Error {
        &self.0
    }
}

impl PartialEq for IoSource {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

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

    /// [`Error::Io`] for `err`, with `context` naming what was being read or written.
    pub fn io(context: impl Into<String>, err: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            kind: err.kind(),
            source: IoSource(Arc::new(err)),
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

/// [`checked_len`], then checks that `len · elem_size` bytes can be allocated now, by reserving
/// (and releasing) them with [`Vec::try_reserve_exact`]: [`Error::TooLarge`] instead of the
/// process abort ("memory allocation of … bytes failed") that an infallible allocation of a
/// caller's or a file's size would give. Constructors call it before they allocate.
pub(crate) fn check_alloc(dims: &[usize], elem_size: usize, context: &str) -> Result<usize> {
    let n = checked_len(dims, elem_size, context)?;
    let bytes = n * elem_size.max(1);
    // Small allocations cannot fail in a way worth probing for.
    if bytes > 1 << 26 {
        let mut probe: Vec<u8> = Vec::new();
        probe
            .try_reserve_exact(bytes)
            .map_err(|_| alloc_err(dims, elem_size, bytes, context))?;
    }
    Ok(n)
}

/// Ends the context of an [`Error::TooLarge`] for a failed allocation.
const ALLOC_FAILED: &str = " (allocation failed)";

fn alloc_err(dims: &[usize], elem_size: usize, bytes: usize, context: &str) -> Error {
    Error::TooLarge {
        context: format!("{context}: shape {dims:?} of {elem_size}-byte elements{ALLOC_FAILED}"),
        value: bytes,
        max: 0,
    }
}

/// An empty vector with room for the elements of shape `dims`, reserved fallibly, and their
/// count: the one place the `try_*` constructors below allocate.
fn try_reserve<T>(dims: &[usize], context: &str) -> Result<(Vec<T>, usize)> {
    let size = std::mem::size_of::<T>();
    let len = checked_len(dims, size, context)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| alloc_err(dims, size, len.saturating_mul(size), context))?;
    Ok((v, len))
}

/// A vector of `len` copies of `value`, allocated fallibly: [`Error::TooLarge`] (naming
/// `context`) where `vec![value; len]` would abort the process.
pub(crate) fn try_vec<T: Clone>(len: usize, value: T, context: &str) -> Result<Vec<T>> {
    let (mut v, len) = try_reserve(&[len], context)?;
    v.resize(len, value);
    Ok(v)
}

/// An array of shape `dims` filled by `f` in row-major order, allocated fallibly (see
/// [`try_vec`]).
pub(crate) fn try_array_from_fn<T, D: ndarray::Dimension>(
    dims: D,
    context: &str,
    mut f: impl FnMut() -> T,
) -> Result<ndarray::Array<T, D>> {
    let (mut v, len) = try_reserve(dims.slice(), context)?;
    v.extend((0..len).map(|_| f()));
    Ok(ndarray::Array::from_shape_vec(dims, v).expect("length is the shape's element count"))
}

/// A zero array of shape `dims`, allocated fallibly (see [`try_vec`]).
pub(crate) fn try_zeros<T: Clone + num_traits::Zero, D: ndarray::Dimension>(
    dims: D,
    context: &str,
) -> Result<ndarray::Array<T, D>> {
    try_array_from_fn(dims, context, T::zero)
}
