//! AVX-512 f32 micro-kernels for the two tile products of exact attention.
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
                    *x = unsafe {
                        _mm512_maskz_loadu_ps(m[z], o.wrapping_add(r * lo + c0 + 16 * z))
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

    /// `O += P·V` for `rows × dv`, inner length `kc`.
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
    ) {
        let mut r = 0;
        unsafe {
            while r + 4 <= rows {
                pv_rows::<4>(p.add(r * lp), lp, v, lv, kc, dv, o.add(r * lo), lo);
                r += 4;
            }
            while r < rows {
                pv_rows::<1>(p.add(r * lp), lp, v, lv, kc, dv, o.add(r * lo), lo);
                r += 1;
            }
        }
    }
}

/// True when the fast f32 kernels can run.
fn fast<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        TypeId::of::<T>() == TypeId::of::<f32>() && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Row stride of a view whose rows are contiguous (unit column stride, non-negative rows).
fn row_stride(s: &[isize]) -> Option<usize> {
    (s[1] == 1 && s[0] >= 0).then_some(s[0] as usize)
}

/// `Kᵀ` of one head (`d × N`, row-major) when the f32 kernels will run, else `None`.
pub(crate) fn pack_kt<T: RealScalar>(k: &ArrayView2<T>) -> Option<Vec<T>> {
    if !fast::<T>() {
        return None;
    }
    let (n, d) = k.dim();
    let mut kt = vec![T::zero(); n * d];
    // Blocks of 16 keys keep both the reads and the writes within a few cache lines.
    for c0 in (0..n).step_by(16) {
        let c1 = (c0 + 16).min(n);
        for c in c0..c1 {
            let row = k.row(c);
            for (t, &x) in row.iter().enumerate() {
                kt[t * n + c] = x;
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
    if let (true, Some((kt, ldk, c0))) = (fast::<T>(), packed) {
        if let (Some(qs), Some(lds)) = (row_stride(q.strides()), row_stride(sc.strides())) {
            let (rows, d) = q.dim();
            let cols = k.nrows();
            assert!(kt.len() >= d * ldk && c0 + cols <= ldk);
            // SAFETY: T is f32 (checked), AVX-512F present, extents checked above / by views.
            unsafe {
                avx512::qk(
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
    #[cfg(target_arch = "x86_64")]
    if fast::<T>() {
        if let (Some(lp), Some(lv), Some(lo)) = (
            row_stride(p.strides()),
            row_stride(v.strides()),
            row_stride(acc.strides()),
        ) {
            let (rows, kc) = p.dim();
            // SAFETY: T is f32 (checked), AVX-512F present, extents match the views.
            unsafe {
                avx512::pv(
                    p.as_ptr().cast(),
                    lp,
                    v.as_ptr().cast(),
                    lv,
                    kc,
                    rows,
                    v.ncols(),
                    acc.as_mut_ptr().cast(),
                    lo,
                );
            }
            return;
        }
    }
    general_mat_mul(T::one(), p, v, T::one(), acc);
}

/// `out = p·v` (`p`: rows × kc, `v`: kc × dv), overwriting `out`.
pub(crate) fn tile_pv_set<T: RealScalar>(
    p: &ArrayViewMut2<T>,
    v: &ArrayView2<T>,
    out: &mut ArrayViewMut2<T>,
) {
    if fast::<T>() {
        out.fill(T::zero());
        tile_pv(p, v, out);
    } else {
        general_mat_mul(T::one(), p, v, T::zero(), out);
    }
}
