//! Forward micro-kernels and drivers: the blocked GEMM form, the dot form for a few rows, the
//! interleaved form, and the row copies and staging they share.

use super::*;

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
pub(super) unsafe fn mk_gemm<S: Simd, const MR: usize, const NV: usize>(
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
pub(super) unsafe fn mk_dot<S: Simd, const MB: usize>(
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
pub(super) unsafe fn drv_dot<S: Simd>(
    sh: BlockedShape,
    w: &[S::E],
    x: &Rows<S::E>,
    y: &mut RowsMut<S::E>,
) where
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
pub(super) unsafe fn drv_blocked<S: Simd>(
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
    let staged = ldx * size >= STAGE_PITCH && stage_rows_fit >= 8;
    // A block with one register tile of output features reads each element of its input
    // window once, so a copy buys no reuse and costs a pass over the panel. Rows under a page
    // apart share pages and stream in place (the blocked pass 1.12-1.41x faster at n = 64 and
    // 256 on Zen 3 and the Intel Xeon); rows a page or more apart stream in place where the
    // window spans 4 lines or more (n = 4096: the pass 1.12-1.30x, the product 1.08x, on the
    // Intel Xeon), while 2-line windows (n = 1024) gained in the pass alone and not in the
    // product, so they stay staged.
    let in_place = tile_features::<S>(sh.rows) >= sh.rows && !(staged && sh.cols * size < 256);
    if staged && !in_place {
        let kc = STAGE_ROWS.min(stage_rows_fit).min(nrows);
        let sblk = kc * lda + PAD;
        // Each panel starts on a vector boundary where `sblk` is a multiple of the vector width
        // (block sizes that are multiples of 16).
        let mut stage = staging::<S>(sblk * sh.nb);
        let sp = stage.as_mut_ptr() as *mut S::E;
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
    let mut apanel = staging::<S>(if in_place { 0 } else { nrows * lda });
    let ap = apanel.as_mut_ptr() as *mut S::E;
    for a in 0..sh.nb {
        let wa = wp.add(a * sh.cols * sh.rpad);
        let xa = xp.add(a * sh.cols);
        let ya = yp.add(a * sh.rows);
        if in_place {
            blocked_rows::<S>(sh, wa, xa, ldx, nrows, ya, ldy);
        } else {
            copy_rows::<S>(xa, ldx, sh.cols, nrows, ap, lda);
            blocked_rows::<S>(sh, wa, ap, lda, nrows, ya, ldy);
        }
    }
}

/// Output features the next register tile of [`blocked_rows`] covers, of `rem` left: four
/// weight vectors against six rows load 10 vectors per 24 FMAs, two against twelve load 14, so
/// the wide tile where the block has the features for it.
#[inline(always)]
pub(super) fn tile_features<S: Simd>(rem: usize) -> usize {
    let l = S::LANES;
    if S::MR4 > 0 && rem > 3 * l {
        4 * l
    } else if rem > l {
        2 * l
    } else {
        l
    }
}

/// One block's product for `nrows` rows held in a panel (`ap + r·lda`): every output feature
/// of the block, written at `ya + r·ldy`.
///
/// # Safety
/// `wa` one block packed for `sh`, `ap` valid for `nrows` rows of `sh.cols`, `ya` for `nrows`
/// rows of `sh.rows`; the CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn blocked_rows<S: Simd>(
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
        if tile_features::<S>(rem) == 4 * l {
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
        let two = tile_features::<S>(rem) == 2 * l;
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
pub(super) unsafe fn mk_inter_packed<S: Simd, const MR: usize, const NI: usize>(
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
pub(super) const INTER_KT: usize = 32;

/// Interleaved product over the output features `ioff..ioff + rows` of the packed factor.
///
/// # Safety
/// `w` holds `wrows·cols·nbpad` elements, `x` and `y` rows of `cols·nb` and `rows·nb` elements
/// (checked by the caller), and the CPU supports `S`.
#[inline(always)]
pub(super) unsafe fn drv_inter<S: Simd>(
    sh: InterShape,
    w: &[S::E],
    x: &Rows<S::E>,
    y: &mut RowsMut<S::E>,
) {
    let l = S::LANES;
    let (ldx, ldy, nrows, nb) = (x.ld, y.ld, x.nrows, sh.nb);
    let (wp, xp, yp) = (w.as_ptr(), x.data.as_ptr(), y.data.as_mut_ptr());
    // The rows' vectors of one block-index chunk are copied into a contiguous tile `[t][r]`:
    // read in place they sit a power-of-two row stride apart and evict each other from L1.
    // Vectors narrower than the packing's 16 lanes (AVX2 f32, every f64) take all the vectors
    // of a 16-lane chunk together, one tile each: a weight cache line then serves each of
    // them while it is in L1, where chunk by chunk every line came from L2 once per vector.
    // Uninitialised: `pack_stripes` writes every vector `inter_rows` reads (raw pointers only).
    let groups = PAD / l;
    let gstride = sh.cols * S::IR * l;
    let mut tile = staging::<S>(gstride * groups);
    let tp = tile.as_mut_ptr() as *mut S::E;
    let mut c0 = 0;
    while c0 < nb {
        let lanes = PAD.min(nb - c0);
        let ng = lanes.div_ceil(l);
        let mut r0 = 0;
        while r0 < nrows {
            let mr = S::IR.min(nrows - r0);
            // Stripe `t` of tile `h` holds the `mr` rows' vectors at input `t`, lanes
            // `c0 + h·L ..`.
            for h in 0..ng {
                let (ch, nv) = (c0 + h * l, l.min(lanes - h * l));
                let th = tp.add(h * gstride);
                pack_stripes::<S>(xp.add(r0 * ldx), ldx, nb, ch, nv, sh.cols, mr, th);
            }
            let tiles = Tiles {
                tp,
                lds: mr * l,
                gstride,
                ng,
                lanes,
            };
            inter_rows::<S>(sh, wp, tiles, mr, c0, yp.add(r0 * ldy), ldy);
            r0 += mr;
        }
        c0 += PAD;
    }
}

/// Where [`inter_rows`] finds its rows: `ng` tiles of stripes, tile `h` at `tp + h·gstride`
/// holding lanes `c0 + h·L ..` of the `lanes` valid ones, stripe `t` of a tile at `t·lds`.
#[derive(Clone, Copy)]
pub(super) struct Tiles<E> {
    pub(super) tp: *const E,
    pub(super) lds: usize,
    pub(super) gstride: usize,
    pub(super) ng: usize,
    pub(super) lanes: usize,
}

/// The interleaved product of `mr ≤ IR` rows held as stripes (see [`Tiles`]) for the block
/// indices `c0..c0 + tiles.lanes`: every output feature of `sh`, written at
/// `y + r·ldy + i·nb + c0`. For each slice of inputs and group of features, the tiles run one
/// after another, so they share the weights' cache lines; every output vector's sum runs in
/// the same order whatever the number of tiles.
///
/// # Safety
/// `w` packed for `sh`, each tile valid for `mr` vectors at each of the `sh.cols` stripes, `y`
/// for the valid lanes at every `(r, i)`; the CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn inter_rows<S: Simd>(
    sh: InterShape,
    wp: *const S::E,
    tiles: Tiles<S::E>,
    mr: usize,
    c0: usize,
    y: *mut S::E,
    ldy: usize,
) {
    let (l, nb, lds) = (S::LANES, sh.nb, tiles.lds);
    // Packed as [c / 16][i][t][c % 16]: consecutive `t` are consecutive 16-element groups.
    let ldwi = sh.cols * PAD;
    let mut t0 = 0;
    while t0 < sh.cols {
        let kt = INTER_KT.min(sh.cols - t0);
        let mut i0 = 0;
        while i0 < sh.rows {
            let ni = S::IN.min(sh.rows - i0);
            let wr = wp.add(((c0 / PAD) * sh.wrows + sh.ioff + i0) * ldwi + t0 * PAD + c0 % PAD);
            for h in 0..tiles.ng {
                let nvalid = l.min(tiles.lanes - h * l);
                let xr = tiles.tp.add(h * tiles.gstride + t0 * tiles.lds);
                let yr = y.add(i0 * nb + c0 + h * l);
                const_n!(mr, M in [1 2 3 4 5 6 7 8 9 10 11 12] => const_n!(ni, N in [1 2 3 4] => mk_inter_packed::<S, M, N>(
                    kt, xr, lds, wr.add(h * l), ldwi, PAD, yr, ldy, nb, nvalid, t0 > 0
                )));
            }
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
pub(super) unsafe fn copy_rows<S: Simd>(
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
pub(super) unsafe fn stage_rows<S: Simd>(
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
