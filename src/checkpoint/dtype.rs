//! The element types a safetensors file may declare, and their conversion to `f32`/`f64`.

use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use std::fmt;

/// An element type of a safetensors file (the header's `"dtype"` string).
///
/// Every type the format defines is recognised so that offsets can be checked for all tensors,
/// but only the floating-point types [`F32`](Dtype::F32), [`F64`](Dtype::F64),
/// [`F16`](Dtype::F16) and [`BF16`](Dtype::BF16) load as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE binary16.
    F16,
    /// bfloat16 (the upper half of an `f32`).
    BF16,
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// Any other type of the format (integers, booleans, 8-bit floats), with its name and width.
    Other(&'static str, usize),
}

const OTHERS: [(&str, usize); 13] = [
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E5M2", 1),
    ("F8_E4M3", 1),
    ("F8_E8M0", 1),
    ("I16", 2),
    ("U16", 2),
    ("I32", 4),
    ("U32", 4),
    ("I64", 8),
    ("U64", 8),
    ("C64", 8),
];

impl Dtype {
    /// Parses a header dtype string (`"F32"`, `"BF16"`, …); `None` if the format has no such type.
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "F32" => Some(Dtype::F32),
            "F64" => Some(Dtype::F64),
            _ => OTHERS
                .iter()
                .find(|(n, _)| *n == s)
                .map(|&(n, w)| Dtype::Other(n, w)),
        }
    }

    /// The header string.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::Other(n, _) => n,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Other(_, w) => w,
        }
    }

    /// True for the four types that load as numbers.
    pub fn is_float(self) -> bool {
        !matches!(self, Dtype::Other(..))
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Exact conversion of an IEEE binary16 bit pattern to `f32` (every `f16` is an `f32`).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = mant · 2⁻²⁴, exact in f32.
            let v = mant as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// Exact conversion of a bfloat16 bit pattern to `f32`.
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// IEEE binary16 bits of `x`, correctly rounded (to nearest, ties to even) from the `f64`
/// value; overflow gives ±infinity, NaN stays NaN.
pub(crate) fn f64_to_f16(x: f64) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 48) & 0x8000) as u16;
    let exp = ((b >> 52) & 0x7ff) as i64;
    let mant = b & ((1u64 << 52) - 1);
    if exp == 0x7ff {
        return sign | 0x7c00 | if mant != 0 { 0x0200 } else { 0 };
    }
    if exp == 0 {
        return sign; // f64 zeros and subnormals are far below half the smallest f16
    }
    let e = exp - 1023 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    // Round `m` (an integer in units of 2^-shift of the result's last place) to nearest even.
    let round = |m: u64, shift: u32| -> u64 {
        let q = m >> shift;
        let rem = m & ((1u64 << shift) - 1);
        let half = 1u64 << (shift - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    };
    if e <= 0 {
        // f16 subnormal: value / 2^-24 = (mant | 2^52) · 2^(e - 43).
        if e < -20 {
            return sign;
        }
        // A carry into bit 10 gives the smallest normal, which is the right encoding.
        return sign | round(mant | (1u64 << 52), (43 - e) as u32) as u16;
    }
    // A carry out of the mantissa increments the exponent (up to infinity), as it should.
    sign | round(((e as u64) << 52) | mant, 42) as u16
}

/// bfloat16 bits of `x`, rounded to nearest even through `f32` (as PyTorch converts).
pub(crate) fn f64_to_bf16(x: f64) -> u16 {
    let f = x as f32;
    let b = f.to_bits();
    if f.is_nan() {
        return ((b >> 16) as u16) | 0x0040;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Appends the little-endian elements of `bytes` (of type `dtype`) to `out`, converted to `T`.
///
/// `bytes.len()` must be a multiple of the width (checked by the header parser); `name` names
/// the tensor in the error for a non-float type.
pub(crate) fn decode_into<T: RealScalar>(
    dtype: Dtype,
    bytes: &[u8],
    out: &mut Vec<T>,
    name: &str,
) -> Result<()> {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| T::from_f64(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)),
        ),
        Dtype::F64 => out.extend(bytes.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            T::from_f64(f64::from_le_bytes(b))
        })),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| T::from_f64(f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64)),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| T::from_f64(bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64)),
        ),
        Dtype::Other(n, _) => {
            return Err(Error::Format(format!(
                "tensor \"{name}\": dtype {n} is not a floating-point type (F32, F64, F16 or BF16 load)"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    /// Midpoints between consecutive finite positive values round to the even neighbour, a
    /// hair above/below round up/down, and every value converts back to itself.
    fn check_rounding(to: fn(f64) -> u16, from: fn(u16) -> f32, max_finite: u16) {
        for h in 0..max_finite {
            let (a, b) = (from(h) as f64, from(h + 1) as f64);
            assert_eq!(to(a), h, "{h:#06x} does not round-trip");
            assert_eq!(to(-a), h | 0x8000);
            let mid = (a + b) / 2.0;
            let even = if h & 1 == 0 { h } else { h + 1 };
            assert_eq!(to(mid), even, "midpoint above {h:#06x}");
            let eps = (b - a) * 1e-3;
            assert_eq!(to(mid + eps), h + 1);
            assert_eq!(to(mid - eps), h);
        }
        assert_eq!(to(f64::INFINITY), max_finite + 1);
    }

    #[test]
    fn f16_rounding_exhaustive() {
        check_rounding(f64_to_f16, f16_to_f32, 0x7bff);
        assert_eq!(f64_to_f16(65520.0), 0x7c00); // halfway to 2^16 rounds to infinity
        assert_eq!(f64_to_f16(65519.99), 0x7bff);
        assert_eq!(f64_to_f16(1e-30), 0);
        assert_eq!(f64_to_f16(2f64.powi(-25)), 0); // tie with 0 goes to even (0)
        assert_eq!(f64_to_f16(2f64.powi(-25) * 1.001), 1);
        assert!(f16_to_f32(f64_to_f16(f64::NAN)).is_nan());
    }

    #[test]
    fn bf16_rounding_exhaustive() {
        check_rounding(f64_to_bf16, bf16_to_f32, 0x7f7f);
        assert!(bf16_to_f32(f64_to_bf16(f64::NAN)).is_nan());
    }

    #[test]
    fn bf16_known_values() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
        assert!(bf16_to_f32(0x7fc0).is_nan());
    }
}
