//! AVX2+FMA and AVX-512 micro-kernels for `f32` and `f64`.
//!
//! One generic register-blocked micro-kernel per operation is written against the tiny [`Simd`]
//! trait and instantiated for four vector types. The generic code is `#[inline(always)]` and is
//! only ever called from an entry function carrying `#[target_feature]`, so after inlining every
//! intrinsic is compiled with the instruction set it needs. Entry functions are reached only
//! through [`Backend`] dispatch after `is_x86_feature_detected!` said yes.
//!
//! Tails: packed weights are zero-padded to a multiple of 16 elements, so weight loads are always
//! full vectors; activations and outputs use masked loads and stores for partial vectors
//! (masked-off lanes are never read from or written to memory, faults included).

use super::{Backend, BlockedShape, InterShape, OuterLayout, Rows, RowsMut, PAD};
use std::any::TypeId;
use std::arch::x86_64::*;
use std::ops::Range;

/// The vector operations the micro-kernels need.
///
/// Every method is `unsafe`: it must run on a CPU with the instruction set of the implementing
/// type, and pointer arguments must be valid for the lanes touched (`LANES` elements, or the
/// first `n` for the `_part` variants).
pub(super) trait Simd: Copy {
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
pub(super) struct Avx512F32;
#[derive(Clone, Copy)]
pub(super) struct Avx512F64;
#[derive(Clone, Copy)]
pub(super) struct Avx2F32;
#[derive(Clone, Copy)]
pub(super) struct Avx2F64;

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

/// Rows per chunk of the outer sums (a fixed number, so results never depend on threads).
const OUTER_ROWS: usize = 32;

/// Rows a blocked pass stages at a time (see [`stage_rows`]).
const STAGE_ROWS: usize = 32;

/// Smallest row pitch (bytes) at which a blocked pass stages whole rows: below a page, a
/// block's windows of successive rows share pages and the prefetchers follow them in place
/// (staging measured 10–17% slower at n = 256, rows of 1 KB).
const STAGE_PITCH: usize = 4096;

/// Largest staging buffer (bytes) of a blocked pass: it must stay in L2 beside the weights.
/// Wider rows copy one block's column window at a time instead.
const STAGE_MAX: usize = 256 << 10;

/// `MASK32[8 - n..]` starts with `n` all-ones lanes followed by zeros.
static MASK32: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
static MASK64: [i64; 8] = [-1, -1, -1, -1, 0, 0, 0, 0];

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

/// Maps a runtime count to a const generic, for the listed values only.
macro_rules! const_n {
    ($n:expr, $N:ident in [$($v:literal)*] => $body:expr) => {
        match $n {
            $($v => {
                const $N: usize = $v;
                $body
            })*
            _ => unreachable!("tile size out of range"),
        }
    };
}

/// GEMM micro-kernel `C[MR × NV·L] = A[MR × k] · B[k × NV·L]`, broadcasting `A`.
///
/// `A[r, kk]` at `a + r·rsa + kk·csa`; row `kk` of `B` at `b + kk·ldb` with `bvalid` readable
/// elements (`> (NV−1)·L`); `C[r, ·]` at `c + r·ldc`, `cvalid` elements written (and first
/// read, to continue the sums, when `accumulate`).
///
/// # Safety
/// Every address named above must be valid, and the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mk_gemm<S: Simd, const MR: usize, const NV: usize>(
    k: usize,
    a: *const S::E,
    rsa: usize,
    csa: usize,
    b: *const S::E,
    ldb: usize,
    bvalid: usize,
    c: *mut S::E,
    ldc: usize,
    cvalid: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    let mut acc = [[S::zero(); NV]; MR];
    if accumulate {
        for (r, accr) in acc.iter_mut().enumerate() {
            for (v, val) in accr.iter_mut().enumerate() {
                let off = v * l;
                let p = c.add(r * ldc + off);
                if off + l <= cvalid {
                    *val = S::load(p);
                } else if off < cvalid {
                    *val = S::load_part(p, cvalid - off);
                }
            }
        }
    }
    let full_b = bvalid >= NV * l;
    let last_n = bvalid - (NV - 1) * l;
    for kk in 0..k {
        let bp = b.add(kk * ldb);
        let mut bv = [S::zero(); NV];
        for (v, bvv) in bv.iter_mut().enumerate() {
            *bvv = if v == NV - 1 && !full_b {
                S::load_part(bp.add(v * l), last_n)
            } else {
                S::load(bp.add(v * l))
            };
        }
        let ap = a.add(kk * csa);
        for (r, accr) in acc.iter_mut().enumerate() {
            let av = S::splat(ap.add(r * rsa));
            for v in 0..NV {
                accr[v] = S::fma(bv[v], av, accr[v]);
            }
        }
    }
    for (r, accr) in acc.iter().enumerate() {
        for (v, &val) in accr.iter().enumerate() {
            let off = v * l;
            let p = c.add(r * ldc + off);
            if off + l <= cvalid {
                S::store(p, val);
            } else if off < cvalid {
                S::store_part(p, val, cvalid - off);
            }
        }
    }
}

/// Dot-form micro-kernel on unpacked weights: `out[b·ldo] = Σ_j w[j] · x[b·ldx + j]` for
/// `MB` rows, `j < k`.
///
/// # Safety
/// `w` valid for `k` elements, each `x` row for `k`, each output element valid; the CPU must
/// support `S`.
#[inline(always)]
unsafe fn mk_dot<S: Simd, const MB: usize>(
    k: usize,
    w: *const S::E,
    x: *const S::E,
    ldx: usize,
    out: *mut S::E,
    ldo: usize,
) where
    S::E: std::ops::Add<Output = S::E> + Default,
{
    let l = S::LANES;
    let mut acc = [S::zero(); MB];
    let mut j = 0;
    while j + l <= k {
        let wv = S::load(w.add(j));
        for (b, ab) in acc.iter_mut().enumerate() {
            *ab = S::fma(wv, S::load(x.add(b * ldx + j)), *ab);
        }
        j += l;
    }
    if j < k {
        let n = k - j;
        let wv = S::load_part(w.add(j), n);
        for (b, ab) in acc.iter_mut().enumerate() {
            *ab = S::fma(wv, S::load_part(x.add(b * ldx + j), n), *ab);
        }
    }
    for (b, &ab) in acc.iter().enumerate() {
        *out.add(b * ldo) = S::hsum(ab);
    }
}

/// Dot-form blocked product on unpacked weights `(nb, rows, cols)` (for a few rows, where
/// packing would cost more than the product).
///
/// # Safety
/// `w` holds `nb·rows·cols` elements, `x` and `y` rows of `nb·cols` and `nb·rows` (checked by
/// the caller), and the CPU supports `S`.
#[inline(always)]
unsafe fn drv_dot<S: Simd>(sh: BlockedShape, w: &[S::E], x: &Rows<S::E>, y: &mut RowsMut<S::E>)
where
    S::E: std::ops::Add<Output = S::E> + Default,
{
    let (ldx, ldy, nrows) = (x.ld, y.ld, x.nrows);
    let (wp, xp, yp) = (w.as_ptr(), x.data.as_ptr(), y.data.as_mut_ptr());
    for a in 0..sh.nb {
        for i in 0..sh.rows {
            let wr = wp.add((a * sh.rows + i) * sh.cols);
            let mut r0 = 0;
            while r0 < nrows {
                let mb = 4.min(nrows - r0);
                let xr = xp.add(r0 * ldx + a * sh.cols);
                let yr = yp.add(r0 * ldy + a * sh.rows + i);
                const_n!(mb, M in [1 2 3 4] => mk_dot::<S, M>(sh.cols, wr, xr, ldx, yr, ldy));
                r0 += mb;
            }
        }
    }
}

/// Blocked product over all blocks of the window.
///
/// # Safety
/// `w` holds `nb·cols·rpad` elements, `x` and `y` rows of `nb·cols` and `nb·rows` elements
/// (checked by the caller), and the CPU supports `S`.
#[inline(always)]
unsafe fn drv_blocked<S: Simd>(
    sh: BlockedShape,
    w: &[S::E],
    x: &Rows<S::E>,
    y: &mut RowsMut<S::E>,
) {
    let (ldx, ldy, nrows) = (x.ld, y.ld, x.nrows);
    let (wp, xp, yp) = (w.as_ptr(), x.data.as_ptr(), y.data.as_mut_ptr());
    // A block's input columns are copied into a contiguous panel first: read in place, rows a
    // power-of-two stride apart (`ld = 4096`, say) share L1 sets and evict each other before
    // the next feature tile reuses them. Where a chunk of whole rows fits in L2 the rows are
    // staged block-major instead (see `stage_rows`); wider rows take a block at a time.
    let lda = if sh.cols >= 256 && sh.cols.is_multiple_of(64) {
        sh.cols + PAD
    } else {
        sh.cols
    };
    let size = std::mem::size_of::<S::E>();
    // Fewer rows per stage for wide inputs (16 of 16 KB at n = 4096), down to 8.
    let stage_rows_fit = STAGE_MAX / (lda * sh.nb * size).max(1);
    if ldx * size >= STAGE_PITCH && stage_rows_fit >= 8 {
        let kc = STAGE_ROWS.min(stage_rows_fit).min(nrows);
        let sblk = kc * lda + PAD;
        let mut stage: Vec<S::E> = Vec::with_capacity(sblk * sh.nb);
        let sp = stage.as_mut_ptr();
        let mut r0 = 0;
        while r0 < nrows {
            let kb = kc.min(nrows - r0);
            stage_rows::<S>(xp, ldx, r0..r0 + kb, nrows, sh.nb, sh.cols, sp, lda, sblk);
            for a in 0..sh.nb {
                let wa = wp.add(a * sh.cols * sh.rpad);
                let ya = yp.add(r0 * ldy + a * sh.rows);
                blocked_rows::<S>(sh, wa, sp.add(a * sblk), lda, kb, ya, ldy);
            }
            r0 += kb;
        }
        return;
    }
    let mut apanel: Vec<S::E> = Vec::with_capacity(nrows * lda);
    let ap = apanel.as_mut_ptr();
    for a in 0..sh.nb {
        let wa = wp.add(a * sh.cols * sh.rpad);
        let xa = xp.add(a * sh.cols);
        let ya = yp.add(a * sh.rows);
        copy_rows::<S>(xa, ldx, sh.cols, nrows, ap, lda);
        blocked_rows::<S>(sh, wa, ap, lda, nrows, ya, ldy);
    }
}

/// One block's product for `nrows` rows held in a panel (`ap + r·lda`): every output feature
/// of the block, written at `ya + r·ldy`.
///
/// # Safety
/// `wa` one block packed for `sh`, `ap` valid for `nrows` rows of `sh.cols`, `ya` for `nrows`
/// rows of `sh.rows`; the CPU must support `S`.
#[inline(always)]
unsafe fn blocked_rows<S: Simd>(
    sh: BlockedShape,
    wa: *const S::E,
    ap: *const S::E,
    lda: usize,
    nrows: usize,
    ya: *mut S::E,
    ldy: usize,
) {
    let l = S::LANES;
    let mut i0 = 0;
    while i0 < sh.rows {
        let rem = sh.rows - i0;
        // Four weight vectors against six rows load 10 vectors per 24 FMAs, two against
        // twelve load 14: the wide tile where the block has the features for it.
        if S::MR4 > 0 && rem > 3 * l {
            let cvalid = rem.min(4 * l);
            let mut r0 = 0;
            while r0 < nrows {
                let mr = S::MR4.min(nrows - r0);
                let (ar, cr) = (ap.add(r0 * lda), ya.add(r0 * ldy + i0));
                const_n!(mr, M in [1 2 3 4 5 6] => mk_gemm::<S, M, 4>(
                    sh.cols, ar, lda, 1, wa.add(i0), sh.rpad, 4 * l, cr, ldy, cvalid, false
                ));
                r0 += mr;
            }
            i0 += 4 * l;
            continue;
        }
        let two = rem > l;
        let cvalid = rem.min(if two { 2 * l } else { l });
        let mut r0 = 0;
        while r0 < nrows {
            let mr = S::MR.min(nrows - r0);
            let (ar, cr) = (ap.add(r0 * lda), ya.add(r0 * ldy + i0));
            let bw = wa.add(i0);
            if two {
                const_n!(mr, M in [1 2 3 4 5 6 7 8 9 10 11 12] => mk_gemm::<S, M, 2>(
                    sh.cols, ar, lda, 1, bw, sh.rpad, 2 * l, cr, ldy, cvalid, false
                ));
            } else {
                const_n!(mr, M in [1 2 3 4 5 6 7 8 9 10 11 12] => mk_gemm::<S, M, 1>(
                    sh.cols, ar, lda, 1, bw, sh.rpad, l, cr, ldy, cvalid, false
                ));
            }
            r0 += mr;
        }
        i0 += if two { 2 * l } else { l };
    }
}

/// Interleaved micro-kernel on packed stripes: for `MR` rows and `NI` output features, one
/// vector of block indices: `y[r, i·nb] (+)= Σ_t w[i·ldwi + t·ldwt] · xp[t·lds + r·L]`.
///
/// # Safety
/// `xp` valid for `MR` full vectors at each of the `tcount` stripes, `w` for full vectors at every `(i, t)`, `y` valid
/// for `nvalid` lanes per `(r, i)` (read first when `accumulate`); the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mk_inter_packed<S: Simd, const MR: usize, const NI: usize>(
    tcount: usize,
    xp: *const S::E,
    lds: usize,
    w: *const S::E,
    ldwi: usize,
    ldwt: usize,
    y: *mut S::E,
    ldy: usize,
    nb: usize,
    nvalid: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    let full = nvalid >= l;
    let mut acc = [[S::zero(); NI]; MR];
    if accumulate {
        for (r, accr) in acc.iter_mut().enumerate() {
            for (i, a) in accr.iter_mut().enumerate() {
                let p = y.add(r * ldy + i * nb);
                *a = if full {
                    S::load(p)
                } else {
                    S::load_part(p, nvalid)
                };
            }
        }
    }
    for t in 0..tcount {
        let mut wv = [S::zero(); NI];
        for (i, wi) in wv.iter_mut().enumerate() {
            *wi = S::load(w.add(i * ldwi + t * ldwt));
        }
        let xt = xp.add(t * lds);
        for (r, accr) in acc.iter_mut().enumerate() {
            let xv = S::load(xt.add(r * l));
            for (a, &wi) in accr.iter_mut().zip(&wv) {
                *a = S::fma(wi, xv, *a);
            }
        }
    }
    for (r, accr) in acc.iter().enumerate() {
        for (i, &val) in accr.iter().enumerate() {
            let p = y.add(r * ldy + i * nb);
            if full {
                S::store(p, val);
            } else {
                S::store_part(p, val, nvalid);
            }
        }
    }
}

/// Inputs per slice of the interleaved kernel's reduction: a packed row tile's slice
/// (`IR · INTER_KT` vectors) stays in L1 while every feature tile sweeps it.
const INTER_KT: usize = 32;

/// Interleaved product over the output features `ioff..ioff + rows` of the packed factor.
///
/// # Safety
/// `w` holds `wrows·cols·nbpad` elements, `x` and `y` rows of `cols·nb` and `rows·nb` elements
/// (checked by the caller), and the CPU supports `S`.
#[inline(always)]
unsafe fn drv_inter<S: Simd>(sh: InterShape, w: &[S::E], x: &Rows<S::E>, y: &mut RowsMut<S::E>) {
    let l = S::LANES;
    let (ldx, ldy, nrows, nb) = (x.ld, y.ld, x.nrows, sh.nb);
    let (wp, xp, yp) = (w.as_ptr(), x.data.as_ptr(), y.data.as_mut_ptr());
    // The rows' vectors of one block-index chunk are copied into a contiguous tile `[t][r]`:
    // read in place they sit a power-of-two row stride apart and evict each other from L1.
    // Uninitialised: `pack_stripes` writes every vector `inter_rows` reads (raw pointers only).
    let mut tile: Vec<S::V> = Vec::with_capacity(sh.cols * S::IR);
    let tp = tile.as_mut_ptr() as *mut S::E;
    let mut c0 = 0;
    while c0 < nb {
        let nvalid = l.min(nb - c0);
        let mut r0 = 0;
        while r0 < nrows {
            let mr = S::IR.min(nrows - r0);
            // Stripe `t` of the tile holds the `mr` rows' vectors at input `t`.
            pack_stripes::<S>(xp.add(r0 * ldx), ldx, nb, c0, nvalid, sh.cols, mr, tp);
            inter_rows::<S>(sh, wp, tp, mr * l, mr, c0, nvalid, yp.add(r0 * ldy), ldy);
            r0 += mr;
        }
        c0 += l;
    }
}

/// The interleaved product of `mr ≤ IR` rows held as stripes (`tp + t·lds` the rows' vectors
/// at input `t`) for the block indices `c0..c0 + nvalid`: every output feature of `sh`, written
/// at `y + r·ldy + i·nb + c0`.
///
/// # Safety
/// `w` packed for `sh`, `tp` valid for `mr` vectors at each of the `sh.cols` stripes, `y` for
/// `nvalid` lanes at every `(r, i)`; the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn inter_rows<S: Simd>(
    sh: InterShape,
    wp: *const S::E,
    tp: *const S::E,
    lds: usize,
    mr: usize,
    c0: usize,
    nvalid: usize,
    y: *mut S::E,
    ldy: usize,
) {
    let nb = sh.nb;
    // Packed as [c / 16][i][t][c % 16]: consecutive `t` are consecutive 16-element groups.
    let ldwi = sh.cols * PAD;
    let mut t0 = 0;
    while t0 < sh.cols {
        let kt = INTER_KT.min(sh.cols - t0);
        let mut i0 = 0;
        while i0 < sh.rows {
            let ni = S::IN.min(sh.rows - i0);
            let wr = wp.add(((c0 / PAD) * sh.wrows + sh.ioff + i0) * ldwi + t0 * PAD + c0 % PAD);
            let xr = tp.add(t0 * lds);
            let yr = y.add(i0 * nb + c0);
            const_n!(mr, M in [1 2 3 4 5 6 7 8 9 10 11 12] => const_n!(ni, N in [1 2 3 4] => mk_inter_packed::<S, M, N>(
                kt, xr, lds, wr, ldwi, PAD, yr, ldy, nb, nvalid, t0 > 0
            )));
            i0 += ni;
        }
        t0 += kt;
    }
}

/// Copies `nrows` rows of `ncols` elements, `src[b·lds + j] → dst[b·ldd + j]`, with vector
/// loads and stores (a `memcpy` call per short row costs more than the copy).
///
/// # Safety
/// Both regions valid for the elements named, not overlapping; the CPU must support `S`.
#[inline(always)]
unsafe fn copy_rows<S: Simd>(
    src: *const S::E,
    lds: usize,
    ncols: usize,
    nrows: usize,
    dst: *mut S::E,
    ldd: usize,
) {
    let l = S::LANES;
    for b in 0..nrows {
        let (s, d) = (src.add(b * lds), dst.add(b * ldd));
        let mut j = 0;
        while j + l <= ncols {
            S::store(d.add(j), S::load(s.add(j)));
            j += l;
        }
        if j < ncols {
            S::store_part(d.add(j), S::load_part(s.add(j), ncols - j), ncols - j);
        }
    }
}

/// Copies rows `rows` (of `nrows`) of `nb` consecutive windows of `w` elements each, row `r` at
/// `src + r·ld`, block-major: window `a` of row `r` to `dst + a·sblk + (r − rows.start)·ldr`,
/// fetching the row two ahead (up to `nrows`) meanwhile.
///
/// Why: a block's window of a row is a few cache lines, the next row's a page or more away, so
/// reading a block's rows at a time defeats the hardware prefetchers (which stop at page
/// boundaries) and stalls on every row; whole rows read front to back stream. `sblk` is padded
/// past a multiple of 4 KB so the blocks' panels do not share L1 sets. Measured at batch 1024
/// (best of single calls interleaved in one process, staging on and off): the blocked backward
/// pass's copies fell from a quarter of its time to a seventh; at n = 1024 the forward was 2–7%
/// and the VJP 2–6% faster, at n = 4096 the forward 2–4%.
///
/// # Safety
/// `src` valid for those rows (`nb·w` elements each), `dst` for `nb` panels of `sblk` elements
/// holding `rows.len()` rows of stride `ldr ≥ w`; the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn stage_rows<S: Simd>(
    src: *const S::E,
    ld: usize,
    rows: Range<usize>,
    nrows: usize,
    nb: usize,
    w: usize,
    dst: *mut S::E,
    ldr: usize,
    sblk: usize,
) {
    for r in rows.clone() {
        if r + 2 < nrows {
            prefetch_rows::<S>(src.add((r + 2) * ld), ld, nb * w, 1);
        }
        let d = dst.add((r - rows.start) * ldr);
        copy_rows::<S>(src.add(r * ld), w, w, nb, d, sblk);
    }
}

/// Interleaved outer-sum micro-kernel on packed stripes, over `nrows` rows:
/// `out[i·ldoi + t·ldot] (+)= Σ_b gp[(i·nrows + b)·L] · xp[(t·nrows + b)·L]` for `NI × NT` pairs.
///
/// # Safety
/// `gp`, `xp` valid for `NI`, `NT` stripes of `nrows` full vectors; `out` valid for `nvalid`
/// lanes at every `(i, t)` (read first when `accumulate`); the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mk_outer_packed<S: Simd, const NI: usize, const NT: usize>(
    nrows: usize,
    gp: *const S::E,
    xp: *const S::E,
    out: *mut S::E,
    ldoi: usize,
    ldot: usize,
    nvalid: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    let full = nvalid >= l;
    let mut acc = [[S::zero(); NT]; NI];
    if accumulate {
        for (i, acci) in acc.iter_mut().enumerate() {
            for (t, val) in acci.iter_mut().enumerate() {
                let p = out.add(i * ldoi + t * ldot);
                *val = if full {
                    S::load(p)
                } else {
                    S::load_part(p, nvalid)
                };
            }
        }
    }
    let stripe = nrows * l;
    for b in 0..nrows {
        let mut xv = [S::zero(); NT];
        for (t, xt) in xv.iter_mut().enumerate() {
            *xt = S::load(xp.add(t * stripe + b * l));
        }
        for (i, acci) in acc.iter_mut().enumerate() {
            let gv = S::load(gp.add(i * stripe + b * l));
            for t in 0..NT {
                acci[t] = S::fma(gv, xv[t], acci[t]);
            }
        }
    }
    for (i, acci) in acc.iter().enumerate() {
        for (t, &val) in acci.iter().enumerate() {
            let p = out.add(i * ldoi + t * ldot);
            if full {
                S::store(p, val);
            } else {
                S::store_part(p, val, nvalid);
            }
        }
    }
}

/// One block's outer sum over the `kb` rows of two panels (`gk + b·rows`, `xk + b·cols`):
/// `out[i·cols + j] (+)= Σ_b gk[b·rows + i] · xk[b·cols + j]` (continuing the sums in `out` when
/// `acc`).
///
/// # Safety
/// The panels valid for `kb` rows, `out` for `rows·cols` elements; the CPU must support `S`.
#[inline(always)]
unsafe fn blocked_outer_rows<S: Simd>(
    rows: usize,
    cols: usize,
    gk: *const S::E,
    xk: *const S::E,
    kb: usize,
    out: *mut S::E,
    acc: bool,
) {
    let l = S::LANES;
    let mut j0 = 0;
    while j0 < cols {
        let rem = cols - j0;
        let two = rem > l;
        let valid = rem.min(if two { 2 * l } else { l });
        let mut i0 = 0;
        while i0 < rows {
            let mi = S::MR.min(rows - i0);
            let ga = gk.add(i0);
            let xa = xk.add(j0);
            let oa = out.add(i0 * cols + j0);
            if two {
                const_n!(mi, M in [1 2 3 4 5 6 7 8 9 10 11 12] => mk_gemm::<S, M, 2>(
                    kb, ga, 1, rows, xa, cols, valid, oa, cols, valid, acc
                ));
            } else {
                const_n!(mi, M in [1 2 3 4 5 6 7 8 9 10 11 12] => mk_gemm::<S, M, 1>(
                    kb, ga, 1, rows, xa, cols, valid, oa, cols, valid, acc
                ));
            }
            i0 += mi;
        }
        j0 += if two { 2 * l } else { l };
    }
}

/// Prefetches `nrows` rows of `ncols` elements at `src + b·ld` into L1.
///
/// # Safety
/// None beyond the CPU supporting SSE (every x86-64): a prefetch never faults.
#[inline(always)]
unsafe fn prefetch_rows<S: Simd>(src: *const S::E, ld: usize, ncols: usize, nrows: usize) {
    let bytes = ncols * std::mem::size_of::<S::E>();
    for b in 0..nrows {
        let row = src.wrapping_add(b * ld).cast::<i8>();
        let mut off = 0;
        while off < bytes {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(off));
            off += 64;
        }
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(bytes - 1));
    }
}

/// Copies, for rows `0..nrows` and the block-index chunk at `c0` (`nvalid` lanes), the vectors
/// `src[b·ld + f·nb + c0]` of features `f < nf` into stripes `dst[(f·nrows + b)·L]`
/// (masked-off lanes zero).
///
/// # Safety
/// `src` valid for those lanes, `dst` for `nf·nrows` vectors; the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_stripes<S: Simd>(
    src: *const S::E,
    ld: usize,
    nb: usize,
    c0: usize,
    nvalid: usize,
    nf: usize,
    nrows: usize,
    dst: *mut S::E,
) {
    let l = S::LANES;
    for b in 0..nrows {
        let row = src.add(b * ld + c0);
        for f in 0..nf {
            let p = row.add(f * nb);
            let v = if nvalid >= l {
                S::load(p)
            } else {
                S::load_part(p, nvalid)
            };
            S::store(dst.add((f * nrows + b) * l), v);
        }
    }
}

/// The interleaved outer sum of one block-index chunk over the `kb` rows held as stripes
/// (`gk`: `sh.rows` stripes, `xk`: `sh.cols`), into `out` at `lay` (continuing the sums when
/// `acc`).
///
/// # Safety
/// The stripes valid for `kb` full vectors each, `out` for `nvalid` lanes at every `(i, t)` of
/// chunk `c0`; the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn inter_outer_stripes<S: Simd>(
    sh: InterShape,
    lay: OuterLayout,
    gk: *const S::E,
    xk: *const S::E,
    kb: usize,
    c0: usize,
    nvalid: usize,
    out: *mut S::E,
    acc: bool,
) {
    let l = S::LANES;
    let mut i0 = 0;
    while i0 < sh.rows {
        let ni = S::OI.min(sh.rows - i0);
        let mut t0 = 0;
        while t0 < sh.cols {
            let nt = S::OT.min(sh.cols - t0);
            let gr = gk.add(i0 * kb * l);
            let xr = xk.add(t0 * kb * l);
            let or = out.add(lay.at(i0, t0, c0));
            const_n!(ni, M in [1 2 3 4] => const_n!(nt, N in [1 2 3 4 5 6] => mk_outer_packed::<S, M, N>(
                kb, gr, xr, or, lay.ldi, lay.ldt, nvalid, acc
            )));
            t0 += nt;
        }
        i0 += ni;
    }
}

/// The transposed product a backward pass runs beside its weight-gradient outer sum: `Wᵀ`
/// packed for `shape` at `w`, its output rows at `gx` (stride `ld`).
#[derive(Clone, Copy)]
pub(super) struct Product<Sh, E> {
    pub(super) shape: Sh,
    pub(super) w: *const E,
    pub(super) gx: *mut E,
    pub(super) ld: usize,
}

/// Backward of a blocked factor `W` (`nb` blocks of `R × C`, `sh`) over the blocks of the
/// views: the weight gradient `out[a, i, j] = Σ_b g[b, a·R + i] · x[b, a·C + j]` (continuing
/// the sums in `out` when `accumulate`) and, with `prod`, the input gradient
/// `gx[b·ld + a·C + j] = Σ_i W[a, i, j] · g[b, a·R + i]` from the same copy of each chunk of rows.
/// Each sum runs in row order whatever the chunking, so results are bitwise those of a separate
/// outer sum and [`drv_blocked`].
///
/// # Safety
/// `g`, `x` rows of `nb·R`, `nb·C` elements, `out` of `nb·R·C`; with `prod`, its weights packed
/// for its shape (`nb` blocks of `C × R`) and `gx` valid for `g.nrows` rows of `nb·C` elements
/// at its stride, written by no one else meanwhile (checked by the caller); the CPU supports `S`.
#[inline(always)]
unsafe fn drv_blocked_backward<S: Simd>(
    sh: BlockedShape,
    prod: Option<Product<BlockedShape, S::E>>,
    g: &Rows<S::E>,
    x: &Rows<S::E>,
    out: &mut [S::E],
    accumulate: bool,
) {
    let (ldg, ldx, nrows) = (g.ld, x.ld, g.nrows);
    let (gp, xp, op) = (g.data.as_ptr(), x.data.as_ptr(), out.as_mut_ptr());
    if nrows == 0 {
        if !accumulate {
            out.iter_mut().for_each(|v| *v = std::mem::zeroed());
        }
        return;
    }
    // Rows are taken in fixed chunks; a chunk's block windows are copied into contiguous
    // panels (in place they sit a power-of-two stride apart and evict each other from L1)
    // that every register tile of the block sweeps; the sums continue through `out` in row
    // order. Where the chunk's whole rows fit the staging limit they are staged at once,
    // otherwise a block's windows are copied just before its product.
    let kmax = OUTER_ROWS.min(nrows);
    let size = std::mem::size_of::<S::E>();
    if ldg.min(ldx) * size >= STAGE_PITCH
        && OUTER_ROWS * (sh.rows + sh.cols) * sh.nb * size <= STAGE_MAX
    {
        // Whole rows staged block-major (see `stage_rows`), a chunk at a time. (Staging a
        // group of blocks at a time where all do not fit measured 2–4% slower at n = 4096:
        // there a block's windows are 4 lines and its products long enough for the prefetch
        // of the next block's windows to land.)
        let (sg, sx) = (kmax * sh.rows + PAD, kmax * sh.cols + PAD);
        let mut gstage: Vec<S::E> = Vec::with_capacity(sg * sh.nb);
        let mut xstage: Vec<S::E> = Vec::with_capacity(sx * sh.nb);
        let (gs, xs) = (gstage.as_mut_ptr(), xstage.as_mut_ptr());
        let mut k0 = 0;
        while k0 < nrows {
            let kb = OUTER_ROWS.min(nrows - k0);
            stage_rows::<S>(gp, ldg, k0..k0 + kb, nrows, sh.nb, sh.rows, gs, sh.rows, sg);
            stage_rows::<S>(xp, ldx, k0..k0 + kb, nrows, sh.nb, sh.cols, xs, sh.cols, sx);
            for a in 0..sh.nb {
                let (gk, xk) = (gs.add(a * sg), xs.add(a * sx));
                block_backward::<S>(sh, prod, a, gk, xk, k0..k0 + kb, op, accumulate);
            }
            k0 += kb;
        }
        return;
    }
    let mut gpanel: Vec<S::E> = Vec::with_capacity(kmax * sh.rows);
    let mut xpanel: Vec<S::E> = Vec::with_capacity(kmax * sh.cols);
    let (gk, xk) = (gpanel.as_mut_ptr(), xpanel.as_mut_ptr());
    let mut k0 = 0;
    while k0 < nrows {
        let kb = OUTER_ROWS.min(nrows - k0);
        for a in 0..sh.nb {
            copy_rows::<S>(
                gp.add(k0 * ldg + a * sh.rows),
                ldg,
                sh.rows,
                kb,
                gk,
                sh.rows,
            );
            copy_rows::<S>(
                xp.add(k0 * ldx + a * sh.cols),
                ldx,
                sh.cols,
                kb,
                xk,
                sh.cols,
            );
            // The next block's rows are fetched while this one computes: each row is a new
            // page, where the hardware prefetchers start cold (1–3% of this pass, measured).
            let (nk0, na) = if a + 1 < sh.nb {
                (k0, a + 1)
            } else {
                (k0 + kb, 0)
            };
            if nk0 < nrows {
                let nkb = OUTER_ROWS.min(nrows - nk0);
                prefetch_rows::<S>(gp.add(nk0 * ldg + na * sh.rows), ldg, sh.rows, nkb);
                prefetch_rows::<S>(xp.add(nk0 * ldx + na * sh.cols), ldx, sh.cols, nkb);
            }
            block_backward::<S>(sh, prod, a, gk, xk, k0..k0 + kb, op, accumulate);
        }
        k0 += kb;
    }
}

/// Block `a`'s share of [`drv_blocked_backward`] for the rows `rows`, held in contiguous
/// panels `gk` (`R` per row) and `xk` (`C` per row): its weight-gradient sums into `out`
/// (continued from the earlier rows, or from `out` itself when `accumulate`) and, with `prod`,
/// its input-gradient rows.
///
/// # Safety
/// As [`drv_blocked_backward`], with the panels valid for `rows.len()` rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_backward<S: Simd>(
    sh: BlockedShape,
    prod: Option<Product<BlockedShape, S::E>>,
    a: usize,
    gk: *const S::E,
    xk: *const S::E,
    rows: Range<usize>,
    out: *mut S::E,
    accumulate: bool,
) {
    let (k0, kb) = (rows.start, rows.len());
    let oa = out.add(a * sh.rows * sh.cols);
    blocked_outer_rows::<S>(sh.rows, sh.cols, gk, xk, kb, oa, accumulate || k0 > 0);
    if let Some(p) = prod {
        let wa = p.w.add(a * p.shape.cols * p.shape.rpad);
        let ya = p.gx.add(k0 * p.ld + a * sh.cols);
        blocked_rows::<S>(p.shape, wa, gk, sh.rows, kb, ya, p.ld);
    }
}

/// Backward of an interleaved factor `W` (`sh`: `nb` blocks of `I × T`) over the block indices
/// `lay.c0..lay.c1`: the weight gradient `out[lay.at(i, t, c)] = Σ_b g[b, i·NB + c] ·
/// x[b, t·NB + c]` (continuing the sums in `out` when `accumulate`) and, with `prod`, the input
/// gradient `gx[b·ld + t·NB + c] = Σ_i W[c, i, t] · g[b, i·NB + c]` from the same packing of
/// each chunk of rows. Sums run in the same order as a separate outer sum and [`drv_inter`]:
/// bitwise their results.
///
/// # Safety
/// `g`, `x` rows of `I·NB`, `T·NB` elements, `out` valid for `lay.len(I, T)`, every run of
/// `lay.cw` lanes a whole number of vectors or the whole block range; with `prod`, its weights
/// packed for its shape (`T` outputs over `I`, all `nb` blocks) and `gx` valid for `g.nrows` rows
/// of `T·NB` elements at its stride, lanes `lay.c0..lay.c1` written by no one else meanwhile
/// (all checked by the caller); the CPU supports `S`.
#[inline(always)]
unsafe fn drv_inter_backward<S: Simd>(
    sh: InterShape,
    lay: OuterLayout,
    prod: Option<Product<InterShape, S::E>>,
    g: &Rows<S::E>,
    x: &Rows<S::E>,
    out: &mut [S::E],
    accumulate: bool,
) {
    let l = S::LANES;
    let (ldg, ldx, nrows, nb) = (g.ld, x.ld, g.nrows, sh.nb);
    let (gp, xp, op) = (g.data.as_ptr(), x.data.as_ptr(), out.as_mut_ptr());
    if nrows == 0 {
        let mut c0 = lay.c0;
        while c0 < lay.c1 && !accumulate {
            let len = (lay.cw - c0 % lay.cw).min(lay.c1 - c0);
            for i in 0..sh.rows {
                for t in 0..sh.cols {
                    out[lay.at(i, t, c0)..][..len]
                        .iter_mut()
                        .for_each(|v| *v = std::mem::zeroed());
                }
            }
            c0 += len;
        }
        return;
    }
    // A chunk of rows of one block-index chunk is copied into contiguous per-feature stripes:
    // in place, the rows sit a power-of-two stride apart and evict each other from L1, and
    // every register tile would reload them from L2.
    let kmax = OUTER_ROWS.min(nrows);
    // Left uninitialised (zeroing them was 1% of a VJP at n = 1024): every vector the kernels
    // read is first written by `pack_stripes`, through the raw pointers only.
    let mut gbuf: Vec<S::V> = Vec::with_capacity(sh.rows * kmax);
    let mut xbuf: Vec<S::V> = Vec::with_capacity(sh.cols * kmax);
    let (gk, xk) = (
        gbuf.as_mut_ptr() as *mut S::E,
        xbuf.as_mut_ptr() as *mut S::E,
    );
    let mut k0 = 0;
    while k0 < nrows {
        let kb = OUTER_ROWS.min(nrows - k0);
        let mut c0 = lay.c0;
        while c0 < lay.c1 {
            let nvalid = l.min(lay.c1 - c0);
            pack_stripes::<S>(gp.add(k0 * ldg), ldg, nb, c0, nvalid, sh.rows, kb, gk);
            pack_stripes::<S>(xp.add(k0 * ldx), ldx, nb, c0, nvalid, sh.cols, kb, xk);
            inter_outer_stripes::<S>(sh, lay, gk, xk, kb, c0, nvalid, op, accumulate || k0 > 0);
            if let Some(p) = prod {
                // The gradient stripes are the product's input, `IR` rows at a time.
                let mut r0 = 0;
                while r0 < kb {
                    let mr = S::IR.min(kb - r0);
                    let y = p.gx.add((k0 + r0) * p.ld);
                    inter_rows::<S>(
                        p.shape,
                        p.w,
                        gk.add(r0 * l),
                        kb * l,
                        mr,
                        c0,
                        nvalid,
                        y,
                        p.ld,
                    );
                    r0 += mr;
                }
            }
            c0 += l;
        }
        k0 += kb;
    }
}

macro_rules! entries {
    ($feat:literal, $blocked:ident, $inter:ident, $dot:ident, $bback:ident, $iback:ident) => {
        /// # Safety
        /// The CPU must support the enabled features; as in [`drv_blocked_backward`].
        #[target_feature(enable = $feat)]
        unsafe fn $bback<S: Simd>(
            sh: BlockedShape,
            prod: Option<Product<BlockedShape, S::E>>,
            g: &Rows<S::E>,
            x: &Rows<S::E>,
            out: &mut [S::E],
            accumulate: bool,
        ) {
            drv_blocked_backward::<S>(sh, prod, g, x, out, accumulate)
        }
        /// # Safety
        /// The CPU must support the enabled features; as in [`drv_inter_backward`].
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $iback<S: Simd>(
            sh: InterShape,
            lay: OuterLayout,
            prod: Option<Product<InterShape, S::E>>,
            g: &Rows<S::E>,
            x: &Rows<S::E>,
            out: &mut [S::E],
            accumulate: bool,
        ) {
            drv_inter_backward::<S>(sh, lay, prod, g, x, out, accumulate)
        }
        /// # Safety
        /// The CPU must support the enabled features; shapes as in [`drv_dot`].
        #[target_feature(enable = $feat)]
        unsafe fn $dot<S: Simd>(sh: BlockedShape, w: &[S::E], x: &Rows<S::E>, y: &mut RowsMut<S::E>)
        where
            S::E: std::ops::Add<Output = S::E> + Default,
        {
            drv_dot::<S>(sh, w, x, y)
        }
        /// # Safety
        /// The CPU must support the enabled features; shapes as in [`drv_blocked`].
        #[target_feature(enable = $feat)]
        unsafe fn $blocked<S: Simd>(
            sh: BlockedShape,
            w: &[S::E],
            x: &Rows<S::E>,
            y: &mut RowsMut<S::E>,
        ) {
            drv_blocked::<S>(sh, w, x, y)
        }
        /// # Safety
        /// The CPU must support the enabled features; shapes as in [`drv_inter`].
        #[target_feature(enable = $feat)]
        unsafe fn $inter<S: Simd>(
            sh: InterShape,
            w: &[S::E],
            x: &Rows<S::E>,
            y: &mut RowsMut<S::E>,
        ) {
            drv_inter::<S>(sh, w, x, y)
        }
    };
}

entries!(
    "avx512f",
    blocked_512,
    inter_512,
    dot_512,
    bback_512,
    iback_512
);
entries!(
    "avx2,fma",
    blocked_256,
    inter_256,
    dot_256,
    bback_256,
    iback_256
);

/// Reinterprets a slice of `T` as `U` when they are the same type.
fn cast<T: 'static, U: 'static>(s: &[T]) -> &[U] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<U>());
    // SAFETY: `T` and `U` are the same type (checked above): same layout, same validity.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<U>(), s.len()) }
}

fn cast_mut<T: 'static, U: 'static>(s: &mut [T]) -> &mut [U] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<U>());
    // SAFETY: `T` and `U` are the same type (checked above); the borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<U>(), s.len()) }
}

fn cast_rows<'a, T: 'static, U: 'static>(r: &Rows<'a, T>) -> Rows<'a, U> {
    Rows {
        data: cast(r.data),
        ld: r.ld,
        nrows: r.nrows,
        ncols: r.ncols,
    }
}

fn cast_rows_mut<'b, T: 'static, U: 'static>(r: &'b mut RowsMut<'_, T>) -> RowsMut<'b, U> {
    RowsMut {
        data: cast_mut(&mut *r.data),
        ld: r.ld,
        nrows: r.nrows,
        ncols: r.ncols,
    }
}

/// Runs `$f512::<$s512>` or `$f256::<$s256>` on the backend `$b`.
macro_rules! dispatch {
    ($b:expr, $s512:ty, $s256:ty, $f512:ident, $f256:ident, ($($arg:expr),*)) => {{
        assert!($b.is_available(), "backend {:?} not supported by this CPU", $b);
        // SAFETY (both arms): the backend's instruction set was detected above, and the
        // shapes were checked against the buffer lengths by the caller.
        match $b {
            Backend::Avx512 => unsafe { $f512::<$s512>($($arg),*) },
            Backend::Avx2 => unsafe { $f256::<$s256>($($arg),*) },
            Backend::Portable => unreachable!("portable path handled by the caller"),
        }
    }};
}

fn check_blocked(sh: &BlockedShape, wlen: usize, x: (usize, usize), y: (usize, usize)) {
    assert!(wlen >= sh.nb * sh.cols * sh.rpad && sh.rpad >= sh.rows.div_ceil(16) * 16);
    assert_eq!(x.1, sh.nb * sh.cols);
    assert_eq!(y.1, sh.nb * sh.rows);
    assert_eq!(x.0, y.0);
}

pub(super) fn dispatch_blocked<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    w: &[T],
    x: &Rows<T>,
    y: &mut RowsMut<T>,
) {
    check_blocked(&sh, w.len(), (x.nrows, x.ncols), (y.nrows, y.ncols));
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (w, x, mut y) = (
            cast::<T, f32>(w),
            cast_rows::<T, f32>(x),
            cast_rows_mut::<T, f32>(y),
        );
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            blocked_512,
            blocked_256,
            (sh, w, &x, &mut y)
        )
    } else {
        let (w, x, mut y) = (
            cast::<T, f64>(w),
            cast_rows::<T, f64>(x),
            cast_rows_mut::<T, f64>(y),
        );
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            blocked_512,
            blocked_256,
            (sh, w, &x, &mut y)
        )
    }
}

pub(super) fn dispatch_dot<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    w: &[T],
    x: &Rows<T>,
    y: &mut RowsMut<T>,
) {
    assert!(w.len() >= sh.nb * sh.rows * sh.cols);
    assert_eq!(x.ncols, sh.nb * sh.cols);
    assert_eq!(y.ncols, sh.nb * sh.rows);
    assert_eq!(x.nrows, y.nrows);
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (w, x, mut y) = (
            cast::<T, f32>(w),
            cast_rows::<T, f32>(x),
            cast_rows_mut::<T, f32>(y),
        );
        dispatch!(b, Avx512F32, Avx2F32, dot_512, dot_256, (sh, w, &x, &mut y))
    } else {
        let (w, x, mut y) = (
            cast::<T, f64>(w),
            cast_rows::<T, f64>(x),
            cast_rows_mut::<T, f64>(y),
        );
        dispatch!(b, Avx512F64, Avx2F64, dot_512, dot_256, (sh, w, &x, &mut y))
    }
}

pub(super) fn dispatch_interleaved<T: 'static>(
    b: Backend,
    sh: InterShape,
    w: &[T],
    x: &Rows<T>,
    y: &mut RowsMut<T>,
) {
    assert!(sh.nbpad >= sh.nb.div_ceil(PAD) * PAD && sh.ioff + sh.rows <= sh.wrows);
    assert!(w.len() >= sh.wrows * sh.cols * sh.nbpad);
    assert_eq!(x.ncols, sh.cols * sh.nb);
    assert_eq!(y.ncols, sh.rows * sh.nb);
    assert_eq!(x.nrows, y.nrows);
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (w, x, mut y) = (
            cast::<T, f32>(w),
            cast_rows::<T, f32>(x),
            cast_rows_mut::<T, f32>(y),
        );
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            inter_512,
            inter_256,
            (sh, w, &x, &mut y)
        )
    } else {
        let (w, x, mut y) = (
            cast::<T, f64>(w),
            cast_rows::<T, f64>(x),
            cast_rows_mut::<T, f64>(y),
        );
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            inter_512,
            inter_256,
            (sh, w, &x, &mut y)
        )
    }
}

pub(super) fn dispatch_blocked_outer<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
) {
    // SAFETY: no product, so no output pointer to vouch for.
    unsafe { dispatch_blocked_backward(b, sh, None, g, x, out, false) }
}

fn check_inter_outer<T>(sh: &InterShape, lay: &OuterLayout, g: &Rows<T>, x: &Rows<T>, out: usize) {
    assert_eq!(g.ncols, sh.rows * sh.nb);
    assert_eq!(x.ncols, sh.cols * sh.nb);
    assert_eq!(g.nrows, x.nrows);
    // Every vector the kernel stores stays inside one run of `cw` lanes, and inside `out`.
    assert!(lay.c0 < lay.c1 && lay.c1 <= sh.nb);
    assert!(lay.cw.is_multiple_of(PAD) || (lay.c0 == 0 && lay.cw == sh.nb));
    assert!(out >= lay.len(sh.rows, sh.cols));
}

pub(super) fn dispatch_interleaved_outer<T: 'static>(
    b: Backend,
    sh: InterShape,
    lay: OuterLayout,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
) {
    // SAFETY: no product, so no output pointer to vouch for.
    unsafe { dispatch_interleaved_backward(b, sh, lay, None, g, x, out, false) }
}

/// `prod` (shape, packed `Wᵀ`, output pointer, its row stride) as the kernels' [`Product`] of `U`.
fn product_of<Sh, T: 'static, U: 'static>(
    prod: Option<(Sh, &[T], *mut T, usize)>,
) -> Option<Product<Sh, U>> {
    prod.map(|(shape, w, gx, ld)| Product {
        shape,
        w: cast::<T, U>(w).as_ptr(),
        gx: gx.cast::<U>(),
        ld,
    })
}

/// [`drv_blocked_backward`] on backend `b`; `prod` is the transposed product's shape, packed
/// weights, output pointer and row stride.
///
/// # Safety
/// With `prod`, its output pointer is valid for `g.nrows` rows of `sh.nb·sh.cols` elements at
/// its stride, written by no one else during the call.
pub(super) unsafe fn dispatch_blocked_backward<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    prod: Option<(BlockedShape, &[T], *mut T, usize)>,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
    accumulate: bool,
) {
    assert_eq!(g.ncols, sh.nb * sh.rows);
    assert_eq!(x.ncols, sh.nb * sh.cols);
    assert_eq!(g.nrows, x.nrows);
    assert_eq!(out.len(), sh.nb * sh.rows * sh.cols);
    if let Some((wsh, wt, _, ld)) = prod {
        assert!(wsh.nb == sh.nb && wsh.rows == sh.cols && wsh.cols == sh.rows);
        check_blocked(&wsh, wt.len(), (0, sh.nb * sh.rows), (0, sh.nb * sh.cols));
        assert!(ld >= sh.nb * sh.cols);
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (g, x, out) = (
            cast_rows::<T, f32>(g),
            cast_rows::<T, f32>(x),
            cast_mut::<T, f32>(out),
        );
        let prod = product_of::<_, T, f32>(prod);
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            bback_512,
            bback_256,
            (sh, prod, &g, &x, out, accumulate)
        )
    } else {
        let (g, x, out) = (
            cast_rows::<T, f64>(g),
            cast_rows::<T, f64>(x),
            cast_mut::<T, f64>(out),
        );
        let prod = product_of::<_, T, f64>(prod);
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            bback_512,
            bback_256,
            (sh, prod, &g, &x, out, accumulate)
        )
    }
}

/// [`drv_inter_backward`] on backend `b`; `prod` is the transposed product's shape, packed
/// weights, output pointer and row stride.
///
/// # Safety
/// With `prod`, its output pointer is valid for `g.nrows` rows of `sh.cols·sh.nb` elements at
/// its stride, and its lanes `lay.c0..lay.c1` written by no one else during the call.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn dispatch_interleaved_backward<T: 'static>(
    b: Backend,
    sh: InterShape,
    lay: OuterLayout,
    prod: Option<(InterShape, &[T], *mut T, usize)>,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
    accumulate: bool,
) {
    check_inter_outer(&sh, &lay, g, x, out.len());
    if let Some((wsh, wt, _, ld)) = prod {
        assert!(wsh.nb == sh.nb && wsh.rows == sh.cols && wsh.cols == sh.rows);
        assert!(wsh.ioff == 0 && wsh.wrows == wsh.rows);
        assert!(wsh.nbpad >= sh.nb.div_ceil(PAD) * PAD);
        assert!(wt.len() >= wsh.wrows * wsh.cols * wsh.nbpad);
        assert!(ld >= sh.cols * sh.nb);
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (g, x, out) = (
            cast_rows::<T, f32>(g),
            cast_rows::<T, f32>(x),
            cast_mut::<T, f32>(out),
        );
        let prod = product_of::<_, T, f32>(prod);
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            iback_512,
            iback_256,
            (sh, lay, prod, &g, &x, out, accumulate)
        )
    } else {
        let (g, x, out) = (
            cast_rows::<T, f64>(g),
            cast_rows::<T, f64>(x),
            cast_mut::<T, f64>(out),
        );
        let prod = product_of::<_, T, f64>(prod);
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            iback_512,
            iback_256,
            (sh, lay, prod, &g, &x, out, accumulate)
        )
    }
}

/// `iters` rounds of 24 independent FMA chains on full vectors of `S` (enough chains to
/// cover the FMA latency on two ports); returns a value depending on every chain so the loop
/// cannot be removed.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn fma_chains<S: Simd<E = f32>>(iters: usize) -> f32 {
    // Opaque inputs, and no fixed point: the compiler must run every FMA.
    let one = std::hint::black_box(1.0f32);
    let (a, b) = std::hint::black_box((0.999_9f32, 1e-4f32));
    let (av, bv) = (S::splat(&a), S::splat(&b));
    let mut acc = [S::splat(&one); 24];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = S::fma(*v, av, bv);
        }
    }
    let mut out = [0.0f32; 16];
    let mut total = 0.0;
    for v in acc {
        S::store_part(out.as_mut_ptr(), v, S::LANES);
        total += out[..S::LANES].iter().sum::<f32>();
    }
    total
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_512(iters: usize) -> f32 {
    fma_chains::<Avx512F32>(iters)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_256(iters: usize) -> f32 {
    fma_chains::<Avx2F32>(iters)
}

/// Runs the FMA loop of `backend` for `iters` rounds; returns `(flops, checksum)`.
pub(super) fn fma_loop(backend: Backend, iters: usize) -> (f64, f32) {
    assert!(backend.is_available());
    match backend {
        // SAFETY: the instruction set was detected just above.
        Backend::Avx512 => ((iters * 24 * 16 * 2) as f64, unsafe {
            fma_chains_512(iters)
        }),
        // SAFETY: the instruction set was detected just above.
        Backend::Avx2 => ((iters * 24 * 8 * 2) as f64, unsafe {
            fma_chains_256(iters)
        }),
        Backend::Portable => (0.0, 0.0),
    }
}
