//! Row-softmax building blocks shared by exact and Monarch attention.
//!
//! `exp` dominates attention's non-GEMM time: `std`'s `f32::exp` is a scalar libm call, so f32
//! rows go through a polynomial (Cephes' `expf` on a Cody–Waite reduced argument, ≈1 ulp) that
//! the compiler vectorises, compiled for AVX-512 or AVX2 and picked at run time. Every caller
//! subtracts the row maximum first, so arguments are `≤ 0`; anything below `−87` (including
//! `−∞` from masked keys) becomes exactly `0`.

use crate::RealScalar;
use std::any::TypeId;

const LANES: usize = 16;

/// Reinterprets a slice of `T` as `f32` when `T` is `f32`.
#[inline(always)]
fn as_f32_mut<T: RealScalar>(xs: &mut [T]) -> Option<&mut [f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (same TypeId), so the layout and validity are identical.
        Some(unsafe { std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast::<f32>(), xs.len()) })
    } else {
        None
    }
}

/// Reinterprets a slice of `T` as `f32` when `T` is `f32`.
#[inline(always)]
fn as_f32<T: RealScalar>(xs: &[T]) -> Option<&[f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: as in `as_f32_mut`.
        Some(unsafe { std::slice::from_raw_parts(xs.as_ptr().cast::<f32>(), xs.len()) })
    } else {
        None
    }
}

/// `exp(x)` for `x ≤ 0` in straight-line, branch-free code the compiler can vectorise.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest through the 1.5·2²³ trick (no libm call, vectorises everywhere).
    const MAGIC: f32 = 12_582_912.0;
    let xc = if x < -87.0 { -87.0 } else { x };
    let xc = if xc > 0.0 { 0.0 } else { xc };
    let shifted = xc * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // The integer n sits in the low mantissa bits of `shifted`; `as i32` would be a
    // saturating (scalar) conversion, integer bit arithmetic vectorises.
    let scale = f32::from_bits(
        shifted
            .to_bits()
            .wrapping_sub(0x4B40_0000)
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

/// `xs[i] ← exp(xs[i] − shift)`, returning the sum (lane-wise partial sums, fixed order).
#[inline(always)]
fn exp_sum_body(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
            *x = exp_poly(*x - shift);
            *a += *x;
        }
    }
    let mut tail = 0.0f32;
    for x in chunks.into_remainder() {
        *x = exp_poly(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max_body(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(chunks.remainder()) {
        m = if x > m { x } else { m };
    }
    m
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_sum_avx512(xs: &mut [f32], shift: f32) -> f32 {
    exp_sum_body(xs, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_sum_avx2(xs: &mut [f32], shift: f32) -> f32 {
    exp_sum_body(xs, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn max_avx512(xs: &[f32]) -> f32 {
    max_body(xs)
}

fn exp_sum_f32(xs: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { exp_sum_avx512(xs, shift) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { exp_sum_avx2(xs, shift) };
        }
    }
    exp_sum_body(xs, shift)
}

fn max_f32(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { max_avx512(xs) };
        }
    }
    max_body(xs)
}

/// Largest entry of a row (`−∞` for an empty or all-`−∞` row).
pub(crate) fn row_max<T: RealScalar>(xs: &[T]) -> T {
    if let Some(f) = as_f32(xs) {
        return T::from_f64(max_f32(f) as f64);
    }
    xs.iter()
        .fold(T::neg_infinity(), |m, &x| if x > m { x } else { m })
}

/// `xs[i] ← exp(xs[i] − shift)` and returns `Σ xs[i]`. Requires `shift ≥ max xs` (finite).
pub(crate) fn exp_shift_sum<T: RealScalar>(xs: &mut [T], shift: T) -> T {
    if let Some(f) = as_f32_mut(xs) {
        let s = exp_sum_f32(f, shift.to_f64_val() as f32);
        return T::from_f64(s as f64);
    }
    let mut sum = T::zero();
    for x in xs.iter_mut() {
        *x = (*x - shift).exp();
        sum += *x;
    }
    sum
}

/// Softmax of one row in place; returns `(max, sum)` so callers can form the log-sum-exp
/// `max + ln(sum)`. A row whose entries are all `−∞` becomes all zeros and returns
/// `(−∞, 0)`.
pub(crate) fn softmax_row<T: RealScalar>(xs: &mut [T]) -> (T, T) {
    let m = row_max(xs);
    if m == T::neg_infinity() {
        xs.fill(T::zero());
        return (m, T::zero());
    }
    let sum = exp_shift_sum(xs, m);
    let inv = T::one() / sum;
    for x in xs.iter_mut() {
        *x *= inv;
    }
    (m, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_poly_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -90.0f32;
        while x <= 0.0 {
            let got = exp_poly(x) as f64;
            let want = (x as f64).exp();
            if x >= -87.0 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert_eq!(got, 0.0);
            }
            x += 0.0137;
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_poly(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_poly(0.0), 1.0);
    }

    #[test]
    fn dispatched_kernels_agree_with_portable() {
        let xs: Vec<f32> = (0..37).map(|i| -(i as f32) * 0.77).collect();
        let mut a = xs.clone();
        let mut b = xs.clone();
        let sa = exp_sum_f32(&mut a, 0.5);
        let sb = exp_sum_body(&mut b, 0.5);
        assert!((sa - sb).abs() <= 1e-6 * sb);
        assert_eq!(max_f32(&xs), 0.0);
        let mut r = vec![f32::NEG_INFINITY; 5];
        assert_eq!(softmax_row(&mut r).1, 0.0);
        assert!(r.iter().all(|&x| x == 0.0));
    }
}
