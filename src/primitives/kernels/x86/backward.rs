//! Backward passes: weight-gradient outer sums fused with the input-gradient product, for
//! blocked and interleaved factors, each summing in row order whatever the chunking.

use super::*;

/// Interleaved outer-sum micro-kernel on packed stripes, over `nrows` rows:
/// `out[i·ldoi + t·ldot] (+)= Σ_b gp[(i·nrows + b)·L] · xp[(t·nrows + b)·L]` for `NI × NT` pairs.
///
/// # Safety
/// `gp`, `xp` valid for `NI`, `NT` stripes of `nrows` full vectors; `out` valid for `nvalid`
/// lanes at every `(i, t)` (read first when `accumulate`); the CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn mk_outer_packed<S: Simd, const NI: usize, const NT: usize>(
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
pub(super) unsafe fn blocked_outer_rows<S: Simd>(
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
pub(super) unsafe fn prefetch_rows<S: Simd>(
    src: *const S::E,
    ld: usize,
    ncols: usize,
    nrows: usize,
) {
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
pub(super) unsafe fn pack_stripes<S: Simd>(
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
pub(super) unsafe fn inter_outer_stripes<S: Simd>(
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
pub(super) unsafe fn drv_blocked_backward<S: Simd>(
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
        let mut gstage = staging::<S>(sg * sh.nb);
        let mut xstage = staging::<S>(sx * sh.nb);
        let (gs, xs) = (
            gstage.as_mut_ptr() as *mut S::E,
            xstage.as_mut_ptr() as *mut S::E,
        );
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
    let mut gpanel = staging::<S>(kmax * sh.rows);
    let mut xpanel = staging::<S>(kmax * sh.cols);
    let (gk, xk) = (
        gpanel.as_mut_ptr() as *mut S::E,
        xpanel.as_mut_ptr() as *mut S::E,
    );
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
pub(super) unsafe fn block_backward<S: Simd>(
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

/// Rows per chunk of the interleaved backward pass: as many as keep both of a chunk's stripe
/// buffers (`(rows + cols)` stripes of one vector per row) within 32 KB, the smallest L1 data
/// cache of the x86 cores these kernels run on, between 8 and [`OUTER_ROWS`]: every register
/// tile sweeps all the input stripes, which can then stay in L1. Measured on an AMD EPYC Zen 5
/// only (n = 1024: `vjp_into` / forward 3.46-3.51 with 32-row chunks, 3.23-3.32 with 8;
/// docs/perf-notes.md). The sums run in row order through `out` whatever the chunk, so results
/// do not depend on it.
#[inline(always)]
pub(super) fn inter_outer_rows<S: Simd>(rows: usize, cols: usize) -> usize {
    let per_row = (rows + cols) * S::LANES * std::mem::size_of::<S::E>();
    ((32 << 10) / per_row.max(1)).clamp(8, OUTER_ROWS) / 4 * 4
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
pub(super) unsafe fn drv_inter_backward<S: Simd>(
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
    let chunk = inter_outer_rows::<S>(sh.rows, sh.cols);
    let kmax = chunk.min(nrows);
    // Left uninitialised (zeroing them was 1% of a VJP at n = 1024): every vector the kernels
    // read is first written by `pack_stripes`, through the raw pointers only.
    let mut gbuf = staging::<S>(sh.rows * kmax * S::LANES);
    let mut xbuf = staging::<S>(sh.cols * kmax * S::LANES);
    let (gk, xk) = (
        gbuf.as_mut_ptr() as *mut S::E,
        xbuf.as_mut_ptr() as *mut S::E,
    );
    let mut k0 = 0;
    while k0 < nrows {
        let kb = chunk.min(nrows - k0);
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
                    let tiles = Tiles {
                        tp: gk.add(r0 * l) as *const S::E,
                        lds: kb * l,
                        gstride: 0,
                        ng: 1,
                        lanes: nvalid,
                    };
                    inter_rows::<S>(p.shape, p.w, tiles, mr, c0, y, p.ld);
                    r0 += mr;
                }
            }
            c0 += l;
        }
        k0 += kb;
    }
}
