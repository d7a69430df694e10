//! The vector operations the micro-kernels are written against, for AVX-512 and AVX2+FMA,
//! `f32` and `f64`.

use std::arch::x86_64::*;

/// The vector operations the micro-kernels need.
///
/// Every method is `unsafe`: it must run on a CPU with the instruction set of the implementing
/// type, and pointer arguments must be valid for the lanes touched (`LANES` elements, or the
/// first `n` for the `_part` variants).
pub(in crate::primitives::kernels) trait Simd: Copy {
    type E: Copy + 'static;
    type V: Copy;
    const LANES: usize;
    /// Row tile of the blocked kernel (rows broadcast against two weight vectors).
    const MR: usize;
    /// Row tile of the blocked kernel against four weight vectors (0: no such tile).
    const MR4: usize;
    /// Row tile and feature tile of the interleaved kernel.
    const IR: usize;
    const IN: usize;
    /// Tile of the interleaved outer sum: `OI` gradient features × `OT` inputs.
    const OI: usize;
    const OT: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(p: *const Self::E) -> Self::V;
    unsafe fn load(p: *const Self::E) -> Self::V;
    unsafe fn load_part(p: *const Self::E, n: usize) -> Self::V;
    unsafe fn store(p: *mut Self::E, v: Self::V);
    unsafe fn store_part(p: *mut Self::E, v: Self::V, n: usize);
    /// `a·b + c`, fused.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Sum of the lanes, in lane order.
    #[inline(always)]
    unsafe fn hsum(v: Self::V) -> Self::E
    where
        Self::E: std::ops::Add<Output = Self::E> + Default,
    {
        let mut buf = [Self::E::default(); 16];
        Self::store_part(buf.as_mut_ptr(), v, Self::LANES);
        buf[1..Self::LANES].iter().fold(buf[0], |a, &b| a + b)
    }
}

#[derive(Clone, Copy)]
pub(in crate::primitives::kernels) struct Avx512F32;
#[derive(Clone, Copy)]
pub(in crate::primitives::kernels) struct Avx512F64;
#[derive(Clone, Copy)]
pub(in crate::primitives::kernels) struct Avx2F32;
#[derive(Clone, Copy)]
pub(in crate::primitives::kernels) struct Avx2F64;

impl Simd for Avx512F32 {
    type E = f32;
    type V = __m512;
    const LANES: usize = 16;
    const MR: usize = 12;
    const MR4: usize = 6;
    // Many rows, few features: the rows' vectors stay in L1 while the weights stream from
    // L2, once per `IR` rows.
    const IR: usize = 8;
    const IN: usize = 3;
    const OI: usize = 4;
    const OT: usize = 6;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m512 {
        _mm512_set1_ps(*p)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m512, n: usize) {
        _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
}

impl Simd for Avx512F64 {
    type E = f64;
    type V = __m512d;
    const LANES: usize = 8;
    const MR: usize = 12;
    const MR4: usize = 6;
    // Many rows, few features: the rows' vectors stay in L1 while the weights stream from
    // L2, once per `IR` rows.
    const IR: usize = 12;
    const IN: usize = 2;
    const OI: usize = 4;
    const OT: usize = 6;
    #[inline(always)]
    unsafe fn zero() -> __m512d {
        _mm512_setzero_pd()
    }
    #[inline(always)]
    unsafe fn splat(p: *const f64) -> __m512d {
        _mm512_set1_pd(*p)
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> __m512d {
        _mm512_loadu_pd(p)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f64, n: usize) -> __m512d {
        _mm512_maskz_loadu_pd(((1u32 << n) - 1) as __mmask8, p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: __m512d) {
        _mm512_storeu_pd(p, v)
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f64, v: __m512d, n: usize) {
        _mm512_mask_storeu_pd(p, ((1u32 << n) - 1) as __mmask8, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
        _mm512_fmadd_pd(a, b, c)
    }
}

/// `MASK32[8 - n..]` starts with `n` all-ones lanes followed by zeros.
pub(super) static MASK32: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
pub(super) static MASK64: [i64; 8] = [-1, -1, -1, -1, 0, 0, 0, 0];

impl Simd for Avx2F32 {
    type E = f32;
    type V = __m256;
    const LANES: usize = 8;
    const MR: usize = 6;
    const MR4: usize = 0;
    const IR: usize = 4;
    const IN: usize = 3;
    const OI: usize = 3;
    const OT: usize = 3;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m256 {
        _mm256_broadcast_ss(&*p)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m256 {
        let m = _mm256_loadu_si256(MASK32.as_ptr().add(8 - n).cast());
        _mm256_maskload_ps(p, m)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m256, n: usize) {
        let m = _mm256_loadu_si256(MASK32.as_ptr().add(8 - n).cast());
        _mm256_maskstore_ps(p, m, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
}

impl Simd for Avx2F64 {
    type E = f64;
    type V = __m256d;
    const LANES: usize = 4;
    const MR: usize = 6;
    const MR4: usize = 0;
    const IR: usize = 4;
    const IN: usize = 3;
    const OI: usize = 3;
    const OT: usize = 3;
    #[inline(always)]
    unsafe fn zero() -> __m256d {
        _mm256_setzero_pd()
    }
    #[inline(always)]
    unsafe fn splat(p: *const f64) -> __m256d {
        _mm256_broadcast_sd(&*p)
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> __m256d {
        _mm256_loadu_pd(p)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f64, n: usize) -> __m256d {
        let m = _mm256_loadu_si256(MASK64.as_ptr().add(4 - n).cast());
        _mm256_maskload_pd(p, m)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: __m256d) {
        _mm256_storeu_pd(p, v)
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f64, v: __m256d, n: usize) {
        let m = _mm256_loadu_si256(MASK64.as_ptr().add(4 - n).cast());
        _mm256_maskstore_pd(p, m, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
        _mm256_fmadd_pd(a, b, c)
    }
}
