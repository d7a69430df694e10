//! f32 micro-kernels (AVX-512F, or AVX2 + FMA) for the two tile products of attention.
//!
//! `matrixmultiply` re-packs both operands on every call; for attention's short inner
//! dimension (`d = 64`) that packing cost about a fifth of the run time. Here `S = s·Q Kᵀ` reads
//! `Q` rows in place against a `Kᵀ` tile packed once per key tile, and `O += P·V` reads `P` and
//! `V` rows in place: broadcast-FMA register tiles (8 rows × 32 columns and 4 rows × 64
//! columns), masked at the edges. Callers fall back to `general_mat_mul` for other types, CPUs
//! or layouts, so these only change speed (and rounding order).

use crate::RealScalar;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::any::TypeId;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    #[inline(always)]
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// `s[r, c] = scale·Σ_t q[r, t]·kt[t, c]` for `MR` rows and `cols` columns.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk_rows<const MR: usize>(
        q: *const f32,
        qs: usize,
        kt: *const f32,
        ldk: usize,
        d: usize,
        cols: usize,
        scale: f32,
        s: *mut f32,
        lds: usize,
    ) {
        let sc = _mm512_set1_ps(scale);
        let mut c = 0;
        while c < cols {
            let n = cols - c;
            let (m0, m1) = (mask(n), mask(n.saturating_sub(16)));
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            for t in 0..d {
                let kp = kt.wrapping_add(t * ldk + c);
                // SAFETY (all loads/stores): masked-off lanes are never accessed.
                let k0 = unsafe { _mm512_maskz_loadu_ps(m0, kp) };
                let k1 = unsafe { _mm512_maskz_loadu_ps(m1, kp.wrapping_add(16)) };
                for (r, a) in acc.iter_mut().enumerate() {
                    let qv = _mm512_set1_ps(unsafe { *q.add(r * qs + t) });
                    a[0] = _mm512_fmadd_ps(qv, k0, a[0]);
                    a[1] = _mm512_fmadd_ps(qv, k1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let sp = s.wrapping_add(r * lds + c);
                unsafe {
                    _mm512_mask_storeu_ps(sp, m0, _mm512_mul_ps(a[0], sc));
                    _mm512_mask_storeu_ps(sp.wrapping_add(16), m1, _mm512_mul_ps(a[1], sc));
                }
            }
            c += 32;
        }
    }

    /// `S = scale·Q·Kᵀ` for `rows × cols`, `Q` rows of stride `qs`, `Kᵀ` packed `d × ldk`.
    ///
    /// # Safety
    /// AVX-512F available; pointers valid for the described extents.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn qk(
        q: *const f32,
        qs: usize,
        kt: *const f32,
        ldk: usize,
        d: usize,
        rows: usize,
        cols: usize,
        scale: f32,
        s: *mut f32,
        lds: usize,
    ) {
        let mut r = 0;
        unsafe {
            while r + 8 <= rows {
                qk_rows::<8>(
                    q.add(r * qs),
                    qs,
                    kt,
                    ldk,
                    d,
                    cols,
                    scale,
                    s.add(r * lds),
                    lds,
                );
                r += 8;
            }
            while r < rows {
                qk_rows::<1>(
                    q.add(r * qs),
                    qs,
                    kt,
                    ldk,
                    d,
                    cols,
                    scale,
                    s.add(r * lds),
                    lds,
                );
                r += 1;
            }
        }
    }

    /// `o[r, ·] += Σ_c p[r, c]·v[c, ·]` for `MR` rows.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_rows<const MR: usize>(
        p: *const f32,
        lp: usize,
        v: *const f32,
        lv: usize,
        kc: usize,
        dv: usize,
        o: *mut f32,
        lo: usize,
        zero: bool,
    ) {
        let mut c0 = 0;
        while c0 < dv {
            let n = dv - c0;
            let m = [
                mask(n),
                mask(n.saturating_sub(16)),
                mask(n.saturating_sub(32)),
                mask(n.saturating_sub(48)),
            ];
            let mut acc = [[_mm512_setzero_ps(); 4]; MR];
            for (r, a) in acc.iter_mut().enumerate() {
                for (z, x) in a.iter_mut().enumerate() {
                    // SAFETY: masked lanes only.
                    *x = if zero {
                        _mm512_setzero_ps()
                    } else {
                        unsafe { _mm512_maskz_loadu_ps(m[z], o.wrapping_add(r * lo + c0 + 16 * z)) }
                    };
                }
            }
            for c in 0..kc {
                let vp = v.wrapping_add(c * lv + c0);
                let vv: [__m512; 4] = std::array::from_fn(|z| unsafe {
                    _mm512_maskz_loadu_ps(m[z], vp.wrapping_add(16 * z))
                });
                for (r, a) in acc.iter_mut().enumerate() {
                    let pv = _mm512_set1_ps(unsafe { *p.add(r * lp + c) });
                    for z in 0..4 {
                        a[z] = _mm512_fmadd_ps(pv, vv[z], a[z]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (z, x) in a.iter().enumerate() {
                    unsafe {
                        _mm512_mask_storeu_ps(o.wrapping_add(r * lo + c0 + 16 * z), m[z], *x)
                    };
                }
            }
            c0 += 64;
        }
    }

    /// `O += P·V` (`O = P·V` with `zero`, `O` not read) for `rows × dv`, inner length `kc`.
    ///
    /// # Safety
    /// AVX-512F available; pointers valid for the described extents.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn pv(
        p: *const f32,
        lp: usize,
        v: *const f32,
        lv: usize,
        kc: usize,
        rows: usize,
        dv: usize,
        o: *mut f32,
        lo: usize,
        zero: bool,
    ) {
        let mut r = 0;
        unsafe {
            while r + 4 <= rows {
                pv_rows::<4>(p.add(r * lp), lp, v, lv, kc, dv, o.add(r * lo), lo, zero);
                r += 4;
            }
            while r < rows {
                pv_rows::<1>(p.add(r * lp), lp, v, lv, kc, dv, o.add(r * lo), lo, zero);
                r += 1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The same two products in 256-bit AVX2 + FMA registers (CPUs without AVX-512, such as
    //! Zen 3): 6 rows × 16 columns per register tile (12 accumulators, 2 loads and 6
    //! broadcasts per step of the inner dimension), edges by masked loads and stores.
    use std::arch::x86_64::*;

    /// Lane mask of the first `n` (≥ 8: all) lanes.
    #[inline(always)]
    unsafe fn mask(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
    }

    /// Loads 16 floats at `p` (only the first `n` when `!FULL`; the rest read as zero and
    /// their addresses are never accessed).
    #[inline(always)]
    unsafe fn load16<const FULL: bool>(p: *const f32, m: &[__m256i; 2]) -> [__m256; 2] {
        unsafe {
            if FULL {
                [_mm256_loadu_ps(p), _mm256_loadu_ps(p.wrapping_add(8))]
            } else {
                [
                    _mm256_maskload_ps(p, m[0]),
                    _mm256_maskload_ps(p.wrapping_add(8), m[1]),
                ]
            }
        }
    }

    #[inline(always)]
    unsafe fn store16<const FULL: bool>(p: *mut f32, m: &[__m256i; 2], v: [__m256; 2]) {
        unsafe {
            if FULL {
                _mm256_storeu_ps(p, v[0]);
                _mm256_storeu_ps(p.wrapping_add(8), v[1]);
            } else {
                _mm256_maskstore_ps(p, m[0], v[0]);
                _mm256_maskstore_ps(p.wrapping_add(8), m[1], v[1]);
            }
        }
    }

    /// One `MR × 16` tile of `s = scale·q·kt` (`n` valid columns).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk_tile<const MR: usize, const FULL: bool>(
        q: *const f32,
        qs: usize,
        kt: *const f32,
        ldk: usize,
        d: usize,
        m: &[__m256i; 2],
        scale: __m256,
        s: *mut f32,
        lds: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for t in 0..d {
            // SAFETY (all accesses): within the caller's extents; masked lanes untouched.
            let k = unsafe { load16::<FULL>(kt.wrapping_add(t * ldk), m) };
            for (r, a) in acc.iter_mut().enumerate() {
                let qv = _mm256_set1_ps(unsafe { *q.add(r * qs + t) });
                a[0] = _mm256_fmadd_ps(qv, k[0], a[0]);
                a[1] = _mm256_fmadd_ps(qv, k[1], a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let v = [_mm256_mul_ps(a[0], scale), _mm256_mul_ps(a[1], scale)];
            unsafe { store16::<FULL>(s.wrapping_add(r * lds), m, v) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk_rows<const MR: usize>(
        q: *const f32,
        qs: usize,
        kt: *const f32,
        ldk: usize,
        d: usize,
        cols: usize,
        scale: f32,
        s: *mut f32,
        lds: usize,
    ) {
        let sc = _mm256_set1_ps(scale);
        let mut c = 0;
        while c < cols {
            let n = cols - c;
            let m = unsafe { [mask(n), mask(n.saturating_sub(8))] };
            let (ktc, sc_) = (kt.wrapping_add(c), s.wrapping_add(c));
            unsafe {
                if n >= 16 {
                    qk_tile::<MR, true>(q, qs, ktc, ldk, d, &m, sc, sc_, lds);
                } else {
                    qk_tile::<MR, false>(q, qs, ktc, ldk, d, &m, sc, sc_, lds);
                }
            }
            c += 16;
        }
    }

    /// `S = scale·Q·Kᵀ` for `rows × cols`, `Q` rows of stride `qs`, `Kᵀ` packed `d × ldk`.
    ///
    /// # Safety
    /// AVX2 and FMA available; pointers valid for the described extents.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn qk(
        q: *const f32,
        qs: usize,
        kt: *const f32,
        ldk: usize,
        d: usize,
        rows: usize,
        cols: usize,
        scale: f32,
        s: *mut f32,
        lds: usize,
    ) {
        type Rows =
            unsafe fn(*const f32, usize, *const f32, usize, usize, usize, f32, *mut f32, usize);
        let mut r = 0;
        while r < rows {
            // Tiles of 6 rows, the rest in 2s and a last 1.
            let (mr, f): (usize, Rows) = match rows - r {
                6.. => (6, qk_rows::<6>),
                2.. => (2, qk_rows::<2>),
                _ => (1, qk_rows::<1>),
            };
            unsafe {
                f(
                    q.add(r * qs),
                    qs,
                    kt,
                    ldk,
                    d,
                    cols,
                    scale,
                    s.add(r * lds),
                    lds,
                )
            };
            r += mr;
        }
    }

    /// One `MR × 16` tile of `o += p·v` (`n` valid columns).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_tile<const MR: usize, const FULL: bool>(
        p: *const f32,
        lp: usize,
        v: *const f32,
        lv: usize,
        kc: usize,
        m: &[__m256i; 2],
        o: *mut f32,
        lo: usize,
        zero: bool,
    ) {
        // SAFETY (all accesses): within the caller's extents; masked lanes untouched.
        let mut acc: [[__m256; 2]; MR] = std::array::from_fn(|r| {
            if zero {
                [_mm256_setzero_ps(); 2]
            } else {
                unsafe { load16::<FULL>(o.wrapping_add(r * lo), m) }
            }
        });
        for c in 0..kc {
            let vv = unsafe { load16::<FULL>(v.wrapping_add(c * lv), m) };
            for (r, a) in acc.iter_mut().enumerate() {
                let pv = _mm256_set1_ps(unsafe { *p.add(r * lp + c) });
                a[0] = _mm256_fmadd_ps(pv, vv[0], a[0]);
                a[1] = _mm256_fmadd_ps(pv, vv[1], a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            unsafe { store16::<FULL>(o.wrapping_add(r * lo), m, *a) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_rows<const MR: usize>(
        p: *const f32,
        lp: usize,
        v: *const f32,
        lv: usize,
        kc: usize,
        dv: usize,
        o: *mut f32,
        lo: usize,
        zero: bool,
    ) {
        let mut c0 = 0;
        while c0 < dv {
            let n = dv - c0;
            let m = unsafe { [mask(n), mask(n.saturating_sub(8))] };
            let (vc, oc) = (v.wrapping_add(c0), o.wrapping_add(c0));
            unsafe {
                if n >= 16 {
                    pv_tile::<MR, true>(p, lp, vc, lv, kc, &m, oc, lo, zero);
                } else {
                    pv_tile::<MR, false>(p, lp, vc, lv, kc, &m, oc, lo, zero);
                }
            }
            c0 += 16;
        }
    }

    /// `O += P·V` (`O = P·V` with `zero`, `O` not read) for `rows × dv`, inner length `kc`.
    ///
    /// # Safety
    /// AVX2 and FMA available; pointers valid for the described extents.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn pv(
        p: *const f32,
        lp: usize,
        v: *const f32,
        lv: usize,
        kc: usize,
        rows: usize,
        dv: usize,
        o: *mut f32,
        lo: usize,
        zero: bool,
    ) {
        type Rows =
            unsafe fn(*const f32, usize, *const f32, usize, usize, usize, *mut f32, usize, bool);
        let mut r = 0;
        while r < rows {
            // Tiles of 6 rows, the rest in 2s and a last 1.
            let (mr, f): (usize, Rows) = match rows - r {
                6.. => (6, pv_rows::<6>),
                2.. => (2, pv_rows::<2>),
                _ => (1, pv_rows::<1>),
            };
            unsafe { f(p.add(r * lp), lp, v, lv, kc, dv, o.add(r * lo), lo, zero) };
            r += mr;
        }
    }
}

/// Which f32 micro-kernels this CPU runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Avx512,
    Avx2,
}

/// The f32 kernels for this CPU (AVX-512F, else AVX2 + FMA), once detected.
fn path() -> Option<Path> {
    #[cfg(target_arch = "x86_64")]
    {
        static PATH: std::sync::OnceLock<Option<Path>> = std::sync::OnceLock::new();
        *PATH.get_or_init(|| {
            if is_x86_feature_detected!("avx512f") {
                Some(Path::Avx512)
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                Some(Path::Avx2)
            } else {
                None
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The f32 kernels when `T` is `f32` and this CPU has them.
fn fast_path<T: 'static>() -> Option<Path> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        path()
    } else {
        None
    }
}

/// True when the fast f32 kernels can run.
fn fast<T: 'static>() -> bool {
    fast_path::<T>().is_some()
}

/// Name of the attention tile kernels that run for `f32` on this CPU (for benchmark reports).
pub fn kernel_name() -> &'static str {
    match path() {
        Some(Path::Avx512) => "AVX-512F tiles",
        Some(Path::Avx2) => "AVX2+FMA tiles",
        None => "matrixmultiply",
    }
}

/// Row stride of a view whose rows are contiguous (unit column stride, non-negative rows).
fn row_stride(s: &[isize]) -> Option<usize> {
    (s[1] == 1 && s[0] >= 0).then_some(s[0] as usize)
}

/// `Kᵀ` of each block of `bs` keys, block `a` at `a·bs·d` as `d × bs` row-major (a last
/// partial block padded with zeros), when the f32 kernels will run, else `None`. Per-block
/// tiles keep the packed rows `bs` floats apart: in one `d × N` matrix a power-of-two `N` put
/// every row of a 16-key strip in the same L1 set, and packing cost a fifth of
/// MonarchAttention's time.
pub(crate) fn pack_kt_blocks<T: RealScalar>(k: &ArrayView2<T>, bs: usize) -> Option<Vec<T>> {
    if !fast::<T>() {
        return None;
    }
    let (n, d) = k.dim();
    let mut kt = vec![T::zero(); n.div_ceil(bs) * bs * d];
    for (a, blk) in kt.chunks_mut(bs * d).enumerate() {
        for c in 0..bs.min(n - a * bs) {
            for (t, &x) in k.row(a * bs + c).iter().enumerate() {
                blk[t * bs + c] = x;
            }
        }
    }
    Some(kt)
}

/// `sc = scale·q·kᵀ` (`q`: rows × d, `k`: cols × d). `packed = (Kᵀ of the head, its row
/// length, first column)` enables the f32 kernel.
pub(crate) fn tile_qk<T: RealScalar>(
    scale: T,
    q: &ArrayView2<T>,
    k: &ArrayView2<T>,
    packed: Option<(&[T], usize, usize)>,
    sc: &mut ArrayViewMut2<T>,
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(path), Some((kt, ldk, c0))) = (fast_path::<T>(), packed) {
        if let (Some(qs), Some(lds)) = (row_stride(q.strides()), row_stride(sc.strides())) {
            let (rows, d) = q.dim();
            let cols = k.nrows();
            assert!(kt.len() >= d * ldk && c0 + cols <= ldk);
            let kernel = match path {
                Path::Avx512 => avx512::qk,
                Path::Avx2 => avx2::qk,
            };
            // SAFETY: T is f32 (checked), the path's features present (detected), extents
            // checked above / by the views.
            unsafe {
                kernel(
                    q.as_ptr().cast(),
                    qs,
                    kt.as_ptr().add(c0).cast(),
                    ldk,
                    d,
                    rows,
                    cols,
                    scale.to_f64_val() as f32,
                    sc.as_mut_ptr().cast(),
                    lds,
                );
            }
            return;
        }
    }
    let _ = packed;
    general_mat_mul(scale, q, &k.t(), T::zero(), sc);
}

/// `acc += p·v` (`p`: rows × kc, `v`: kc × dv).
pub(crate) fn tile_pv<T: RealScalar>(
    p: &ArrayViewMut2<T>,
    v: &ArrayView2<T>,
    acc: &mut ArrayViewMut2<T>,
) {
    pv_dispatch(p, v, acc, false);
}

/// `out = p·v` (`p`: rows × kc, `v`: kc × dv), overwriting `out` (never read).
pub(crate) fn tile_pv_set<T: RealScalar>(
    p: &ArrayViewMut2<T>,
    v: &ArrayView2<T>,
    out: &mut ArrayViewMut2<T>,
) {
    pv_dispatch(p, v, out, true);
}

/// `out = p·v` when `zero`, else `out += p·v`: the f32 kernels where they run (their
/// accumulators start at zero instead of a zero-filled `out`), `general_mat_mul` otherwise.
fn pv_dispatch<T: RealScalar>(
    p: &ArrayViewMut2<T>,
    v: &ArrayView2<T>,
    out: &mut ArrayViewMut2<T>,
    zero: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(path) = fast_path::<T>() {
        if let (Some(lp), Some(lv), Some(lo)) = (
            row_stride(p.strides()),
            row_stride(v.strides()),
            row_stride(out.strides()),
        ) {
            let (rows, kc) = p.dim();
            let kernel = match path {
                Path::Avx512 => avx512::pv,
                Path::Avx2 => avx2::pv,
            };
            // SAFETY: T is f32 (checked), the path's features present (detected), extents
            // match the views.
            unsafe {
                kernel(
                    p.as_ptr().cast(),
                    lp,
                    v.as_ptr().cast(),
                    lv,
                    kc,
                    rows,
                    v.ncols(),
                    out.as_mut_ptr().cast(),
                    lo,
                    zero,
                );
            }
            return;
        }
    }
    let beta = if zero { T::zero() } else { T::one() };
    general_mat_mul(T::one(), p, v, beta, out);
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    //! Every kernel this CPU can run against plain loops, on shapes that hit every edge (row
    //! tails of 1–5, partial column tiles, `d` and `dv` not multiples of a register).
    use super::*;

    type Qk =
        unsafe fn(*const f32, usize, *const f32, usize, usize, usize, usize, f32, *mut f32, usize);
    type Pv =
        unsafe fn(*const f32, usize, *const f32, usize, usize, usize, usize, *mut f32, usize, bool);

    fn kernels() -> Vec<(&'static str, Qk, Pv)> {
        let mut v: Vec<(&'static str, Qk, Pv)> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(("avx2", avx2::qk, avx2::pv));
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(("avx512", avx512::qk, avx512::pv));
        }
        v
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32
                    - 0.5
            })
            .collect()
    }

    #[test]
    fn tile_kernels_match_plain_loops() {
        for (name, qk, pv) in kernels() {
            for &(rows, cols, d) in &[(1, 1, 1), (5, 17, 3), (13, 40, 64), (8, 33, 70), (7, 16, 9)]
            {
                // Row strides wider than the rows: the kernels must honour them.
                let (qs, ldk, lds) = (d + 3, cols + 5, cols + 2);
                let q = data(rows * qs, 1);
                let kt = data(d * ldk, 2);
                let mut s = vec![f32::NAN; rows * lds];
                // SAFETY: the detected features; buffers sized for the strides above.
                unsafe {
                    qk(
                        q.as_ptr(),
                        qs,
                        kt.as_ptr(),
                        ldk,
                        d,
                        rows,
                        cols,
                        0.5,
                        s.as_mut_ptr(),
                        lds,
                    )
                };
                for r in 0..rows {
                    for c in 0..cols {
                        let want: f32 =
                            0.5 * (0..d).map(|t| q[r * qs + t] * kt[t * ldk + c]).sum::<f32>();
                        let got = s[r * lds + c];
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{name} qk {rows}x{cols}x{d} [{r},{c}]: {got} vs {want}"
                        );
                    }
                    // Past the tile: untouched.
                    assert!(
                        s[r * lds + cols..(r + 1) * lds].iter().all(|x| x.is_nan()),
                        "{name} qk wrote past {cols} columns"
                    );
                }
            }
            for &(rows, kc, dv) in &[(1, 1, 1), (5, 7, 17), (13, 32, 64), (3, 9, 70), (8, 4, 15)] {
                for zero in [false, true] {
                    let (lp, lv, lo) = (kc + 1, dv + 4, dv + 3);
                    let p = data(rows * lp, 3);
                    let v = data(kc * lv, 4);
                    // With `zero` the output's old values (NaN) must never be read.
                    let o0 = if zero {
                        vec![f32::NAN; rows * lo]
                    } else {
                        data(rows * lo, 5)
                    };
                    let mut o = o0.clone();
                    // SAFETY: as above.
                    unsafe {
                        pv(
                            p.as_ptr(),
                            lp,
                            v.as_ptr(),
                            lv,
                            kc,
                            rows,
                            dv,
                            o.as_mut_ptr(),
                            lo,
                            zero,
                        )
                    };
                    for r in 0..rows {
                        for c in 0..dv {
                            let base = if zero { 0.0 } else { o0[r * lo + c] };
                            let want =
                                base + (0..kc).map(|i| p[r * lp + i] * v[i * lv + c]).sum::<f32>();
                            let got = o[r * lo + c];
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{name} pv zero={zero} {rows}x{kc}x{dv} [{r},{c}]: {got} vs {want}"
                            );
                        }
                        // Past the tile: untouched.
                        let tail = &o[r * lo + dv..(r + 1) * lo];
                        let tail0 = &o0[r * lo + dv..(r + 1) * lo];
                        assert!(
                            tail.iter()
                                .zip(tail0)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{name} pv wrote past {dv} columns"
                        );
                    }
                }
            }
        }
    }
}
