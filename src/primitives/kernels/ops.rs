//! The public kernel operations: blocked, dot-form and interleaved products, the weight-gradient
//! outer sums and the fused backward passes, each dispatched to the portable oracle or a SIMD
//! micro-kernel.

use super::*;

/// Blocked product for the blocks `blocks`:
/// `y[b, (a−a0)·R + i] = Σ_j W[a, i, j] · x[b, (a−a0)·C + j]` for `a ∈ blocks`, `a0 = blocks.start`
/// (so `x` and `y` are the column windows of those blocks). Overwrites `y`.
///
/// # Panics
/// If the shapes do not fit the packed factor, or `backend` is not available.
pub fn blocked_into<T: Scalar>(
    backend: Backend,
    w: &PackedBlocked<T>,
    blocks: Range<usize>,
    x: Rows<T>,
    mut y: RowsMut<T>,
) {
    assert!(blocks.start <= blocks.end && blocks.end <= w.nb);
    let nbl = blocks.len();
    assert_eq!(x.ncols, nbl * w.cols, "blocked_into: input width");
    assert_eq!(y.ncols, nbl * w.rows, "blocked_into: output width");
    assert_eq!(x.nrows, y.nrows, "blocked_into: row counts");
    if x.nrows == 0 || nbl == 0 {
        return;
    }
    let blk = w.cols * w.rpad;
    let wsl = &w.w[blocks.start * blk..blocks.end * blk];
    let shape = BlockedShape {
        nb: nbl,
        rows: w.rows,
        cols: w.cols,
        rpad: w.rpad,
    };
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            x86::dispatch_blocked(b, shape, wsl, &x, &mut y);
        }
        _ => portable::blocked(shape, wsl, &x, &mut y),
    }
}

/// Blocked product on unpacked weights (the dot-product form, for a few rows, where packing
/// would cost more than the product): `w` holds the blocks `(nb, rows, cols)` row-major, and
/// `y[b, (a−a0)·R + i] = Σ_j W[a, i, j] · x[b, (a−a0)·C + j]` for `a ∈ blocks`. Overwrites `y`.
///
/// # Panics
/// If the shapes do not fit, or `backend` is not available.
pub fn blocked_dot_into<T: Scalar>(
    backend: Backend,
    w: &[T],
    (nb, rows, cols): (usize, usize, usize),
    blocks: Range<usize>,
    x: Rows<T>,
    mut y: RowsMut<T>,
) {
    assert_eq!(
        w.len(),
        nb * rows * cols,
        "blocked_dot_into: weights length"
    );
    assert!(blocks.start <= blocks.end && blocks.end <= nb);
    let nbl = blocks.len();
    assert_eq!(x.ncols, nbl * cols, "blocked_dot_into: input width");
    assert_eq!(y.ncols, nbl * rows, "blocked_dot_into: output width");
    assert_eq!(x.nrows, y.nrows, "blocked_dot_into: row counts");
    if x.nrows == 0 || nbl == 0 {
        return;
    }
    let blk = rows * cols;
    let wsl = &w[blocks.start * blk..blocks.end * blk];
    let shape = BlockedShape {
        nb: nbl,
        rows,
        cols,
        rpad: 0,
    };
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            x86::dispatch_dot(b, shape, wsl, &x, &mut y);
        }
        _ => portable::blocked_dot(shape, wsl, &x, &mut y),
    }
}

/// Interleaved product for output features `irange`:
/// `y[b, (i−i0)·NB + c] = Σ_t W[c, i, t] · x[b, t·NB + c]` for `i ∈ irange`, `i0 = irange.start`,
/// `x` of width `C·NB`, `y` of width `|irange|·NB`. Overwrites `y`.
///
/// # Panics
/// If the shapes do not fit the packed factor, or `backend` is not available.
pub fn interleaved_into<T: Scalar>(
    backend: Backend,
    w: &PackedInterleaved<T>,
    irange: Range<usize>,
    x: Rows<T>,
    mut y: RowsMut<T>,
) {
    assert!(irange.start <= irange.end && irange.end <= w.rows);
    let ni = irange.len();
    assert_eq!(x.ncols, w.cols * w.nb, "interleaved_into: input width");
    assert_eq!(y.ncols, ni * w.nb, "interleaved_into: output width");
    assert_eq!(x.nrows, y.nrows, "interleaved_into: row counts");
    if x.nrows == 0 || ni == 0 {
        return;
    }
    let wsl = &w.w[..];
    let shape = InterShape {
        nb: w.nb,
        rows: ni,
        cols: w.cols,
        nbpad: w.nbpad,
        ioff: irange.start,
        wrows: w.rows,
    };
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            x86::dispatch_interleaved(b, shape, wsl, &x, &mut y);
        }
        _ => portable::interleaved(shape, wsl, &x, &mut y),
    }
}

/// Blocked outer sum for the blocks `blocks` (column windows as in [`blocked_into`]):
/// `out[a−a0, i, j] = Σ_b g[b, (a−a0)·R + i] · x[b, (a−a0)·C + j]`, `out` of shape
/// `(|blocks|, R, C)` row-major. Overwrites `out`.
///
/// # Panics
/// If the shapes do not fit, or `backend` is not available.
pub fn blocked_outer_into<T: Scalar>(
    backend: Backend,
    (rows, cols): (usize, usize),
    g: Rows<T>,
    x: Rows<T>,
    out: &mut [T],
) {
    assert_eq!(g.nrows, x.nrows, "blocked_outer_into: row counts");
    assert!(rows > 0 && cols > 0);
    let nb = g.ncols / rows;
    assert_eq!(g.ncols, nb * rows, "blocked_outer_into: gradient width");
    assert_eq!(x.ncols, nb * cols, "blocked_outer_into: input width");
    assert_eq!(
        out.len(),
        nb * rows * cols,
        "blocked_outer_into: output length"
    );
    let shape = BlockedShape {
        nb,
        rows,
        cols,
        rpad: 0,
    };
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            x86::dispatch_blocked_outer(b, shape, &g, &x, out);
        }
        _ => portable::blocked_outer(shape, &g, &x, out, false),
    }
}

/// Interleaved outer sum for output features `irange`, with `NB` blocks:
/// `out[i−i0][t][c] = Σ_b g[b, (i−i0)·NB + c] · x[b, t·NB + c]`, `out` of shape
/// `(|irange|, C, NB)` row-major (note: block index last). Overwrites `out`.
///
/// # Panics
/// If the shapes do not fit, or `backend` is not available.
pub fn interleaved_outer_into<T: Scalar>(
    backend: Backend,
    nb: usize,
    g: Rows<T>,
    x: Rows<T>,
    out: &mut [T],
) {
    let (ni, cols) = outer_dims("interleaved_outer_into", nb, &g, &x);
    assert_eq!(
        out.len(),
        ni * cols * nb,
        "interleaved_outer_into: output length"
    );
    let lay = OuterLayout {
        c0: 0,
        c1: nb,
        cw: nb,
        ldi: cols * nb,
        ldt: nb,
        ldch: 0,
    };
    run_interleaved_outer(backend, nb, lay, &g, &x, out);
}

/// Interleaved outer sum over the block-index chunks `chunks` (chunk `k` holds the block
/// indices `16k .. 16k + 16`), in chunked layout: `out[k−k0][i][t][c mod 16] =
/// Σ_b g[b, i·NB + c] · x[b, t·NB + c]` for `c` in chunk `k`, `out` of length
/// `|chunks| · I · C · 16`; lanes past `NB` in the last chunk are set to zero. Overwrites `out`.
/// This is the layout the kernels write in (a chunk's lanes are one vector), so sums of several
/// row parts are added in it before one conversion to `(NB, I, C)`.
///
/// # Panics
/// If the shapes do not fit, the chunks are not within `0..⌈NB/16⌉`, or `backend` is not
/// available.
pub fn interleaved_outer_chunks_into<T: Scalar>(
    backend: Backend,
    nb: usize,
    chunks: Range<usize>,
    g: Rows<T>,
    x: Rows<T>,
    out: &mut [T],
) {
    let (ni, cols) = outer_dims("interleaved_outer_chunks_into", nb, &g, &x);
    assert!(
        chunks.start < chunks.end && chunks.end <= nb.div_ceil(PAD),
        "interleaved_outer_chunks_into: chunks {chunks:?} of {nb} block indices"
    );
    assert_eq!(
        out.len(),
        chunks.len() * ni * cols * PAD,
        "interleaved_outer_chunks_into: output length"
    );
    let lay = chunked_layout(nb, ni, cols, chunks, out);
    run_interleaved_outer(backend, nb, lay, &g, &x, out);
}

/// The chunked layout of [`interleaved_outer_chunks_into`] for `chunks`, with the lanes past
/// `nb` of `out`'s last chunk set to zero (no kernel writes them).
pub(super) fn chunked_layout<T: Scalar>(
    nb: usize,
    ni: usize,
    cols: usize,
    chunks: Range<usize>,
    out: &mut [T],
) -> OuterLayout {
    let blk = ni * cols * PAD;
    let lay = OuterLayout {
        c0: chunks.start * PAD,
        c1: (chunks.end * PAD).min(nb),
        cw: PAD,
        ldi: cols * PAD,
        ldt: PAD,
        ldch: blk,
    };
    let pad = chunks.end * PAD - lay.c1;
    if pad > 0 {
        let last = &mut out[(chunks.len() - 1) * blk..];
        for v in last.chunks_mut(PAD) {
            v[PAD - pad..].fill(T::zero());
        }
    }
    lay
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(super) struct SharedMut<T>(*mut T);
// SAFETY: only handed to tasks that write disjoint elements (each use says which), while the
// buffer is borrowed mutably by the function that spawned them.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Fused backward of a blocked factor over all rows, one pass instead of an outer sum and a
/// transposed product that each read the gradient: the weight gradient `out` (`(NB, R, C)`
/// row-major, as [`blocked_outer_into`]) and the input gradient `gx` (`g.nrows × NB·C`,
/// contiguous; `gx[b, a·C + j] = Σ_i W[a, i, j] · g[b, a·R + i]`), `wt` the transposed packing
/// of `W` ([`PackedBlocked::pack_transposed`]). The blocks are cut into `tasks` contiguous
/// ranges run in parallel; every sum runs in the same order as in the two separate passes,
/// so results are bitwise theirs whatever `tasks` is. With `accumulate`, the weight sums
/// continue those already in `out` (rows can be fed a panel at a time).
///
/// The portable backend runs the two passes one after the other.
///
/// # Panics
/// If the shapes do not fit, or `backend` is not available.
#[allow(clippy::too_many_arguments)]
pub fn blocked_backward_into<T: Scalar>(
    backend: Backend,
    wt: &PackedBlocked<T>,
    g: Rows<T>,
    x: Rows<T>,
    out: &mut [T],
    gx: &mut [T],
    tasks: usize,
    accumulate: bool,
) {
    let (nb, r, c) = (wt.nb, wt.cols, wt.rows);
    let nrows = g.nrows;
    assert_eq!(g.ncols, nb * r, "blocked_backward: gradient width");
    assert_eq!(x.ncols, nb * c, "blocked_backward: input width");
    assert_eq!(x.nrows, nrows, "blocked_backward: row counts");
    assert_eq!(
        out.len(),
        nb * r * c,
        "blocked_backward: weight-gradient length"
    );
    assert_eq!(
        gx.len(),
        nrows * nb * c,
        "blocked_backward: input-gradient length"
    );
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            let per = nb.div_ceil(tasks.max(1));
            let gxp = SharedMut(gx.as_mut_ptr());
            for_each_chunk(out, per * r * c, tasks > 1, |(wi, o)| {
                let (a0, na) = (wi * per, o.len() / (r * c));
                let sh = BlockedShape {
                    nb: na,
                    rows: r,
                    cols: c,
                    rpad: 0,
                };
                let wsh = BlockedShape {
                    nb: na,
                    rows: c,
                    cols: r,
                    rpad: wt.rpad,
                };
                let wsl = &wt.w[a0 * r * wt.rpad..];
                let (gc, xc) = (g.cols(a0 * r..(a0 + na) * r), x.cols(a0 * c..(a0 + na) * c));
                // SAFETY: task `wi` writes only the columns `a0·C .. (a0 + na)·C` of the
                // `nrows` rows of `gx` (checked above to hold them), disjoint across tasks.
                unsafe {
                    let prod = Some((wsh, wsl, gxp.get().add(a0 * c), nb * c));
                    x86::dispatch_blocked_backward(b, sh, prod, &gc, &xc, o, accumulate);
                }
            });
        }
        _ => {
            let sh = BlockedShape {
                nb,
                rows: r,
                cols: c,
                rpad: 0,
            };
            portable::blocked_outer(sh, &g, &x, out, accumulate);
            blocked_into(
                backend,
                wt,
                0..nb,
                g,
                RowsMut::new(gx, nb * c, nrows, nb * c),
            );
        }
    }
}

/// Fused backward of an interleaved factor over the rows of `g` and `x`: the weight gradient in
/// the chunked layout of [`interleaved_outer_chunks_into`] (all `⌈NB/16⌉` chunks) and the input
/// gradient `gx` (`g.nrows × C·NB`, contiguous; `gx[b, t·NB + c] = Σ_i W[c, i, t] · g[b, i·NB + c]`),
/// `wt` the transposed packing of `W` ([`PackedInterleaved::pack_transposed`]). One packing of
/// each chunk of rows serves both; sums run in the order of the two separate passes, so results
/// are bitwise theirs. With `accumulate`, the weight sums continue those already in `out` (row
/// by row, as one call over all the rows would: a caller can feed the rows a panel at a time).
/// Sequential: callers split the rows.
///
/// The portable backend runs the two passes one after the other.
///
/// # Panics
/// If the shapes do not fit, or `backend` is not available.
pub fn interleaved_backward_into<T: Scalar>(
    backend: Backend,
    wt: &PackedInterleaved<T>,
    g: Rows<T>,
    x: Rows<T>,
    out: &mut [T],
    gx: &mut [T],
    accumulate: bool,
) {
    let (nb, cols, ni) = (wt.nb, wt.rows, wt.cols);
    let nrows = g.nrows;
    let nch = nb.div_ceil(PAD);
    assert_eq!(
        g.ncols,
        ni * nb,
        "interleaved_backward_into: gradient width"
    );
    assert_eq!(x.ncols, cols * nb, "interleaved_backward_into: input width");
    assert_eq!(x.nrows, nrows, "interleaved_backward_into: row counts");
    let blk = ni * cols * PAD;
    assert_eq!(
        out.len(),
        nch * blk,
        "interleaved_backward_into: weight-gradient length"
    );
    assert_eq!(
        gx.len(),
        nrows * cols * nb,
        "interleaved_backward_into: input-gradient length"
    );
    let lay = chunked_layout(nb, ni, cols, 0..nch, out);
    let sh = InterShape {
        nb,
        rows: ni,
        cols,
        nbpad: 0,
        ioff: 0,
        wrows: 0,
    };
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            let wsh = InterShape {
                nb,
                rows: cols,
                cols: ni,
                nbpad: wt.nbpad,
                ioff: 0,
                wrows: cols,
            };
            // SAFETY: `gx` is borrowed mutably here and holds `nrows` rows of `C·NB` (checked
            // above).
            unsafe {
                let prod = Some((wsh, &wt.w[..], gx.as_mut_ptr(), cols * nb));
                x86::dispatch_interleaved_backward(b, sh, lay, prod, &g, &x, out, accumulate);
            }
        }
        _ => {
            portable::interleaved_outer(sh, lay, &g, &x, out, accumulate);
            let y = RowsMut::new(gx, cols * nb, nrows, cols * nb);
            interleaved_into(backend, wt, 0..cols, g, y);
        }
    }
}

/// Checks the operands of an interleaved outer sum; returns `(I, C)`.
pub(super) fn outer_dims<T>(ctx: &str, nb: usize, g: &Rows<T>, x: &Rows<T>) -> (usize, usize) {
    assert_eq!(g.nrows, x.nrows, "{ctx}: row counts");
    assert!(nb > 0, "{ctx}: no blocks");
    let (ni, cols) = (g.ncols / nb, x.ncols / nb);
    assert_eq!(g.ncols, ni * nb, "{ctx}: gradient width");
    assert_eq!(x.ncols, cols * nb, "{ctx}: input width");
    (ni, cols)
}

pub(super) fn run_interleaved_outer<T: Scalar>(
    backend: Backend,
    nb: usize,
    lay: OuterLayout,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
) {
    let shape = InterShape {
        nb,
        rows: g.ncols / nb,
        cols: x.ncols / nb,
        nbpad: 0,
        ioff: 0,
        wrows: 0,
    };
    match backend.resolve::<T>() {
        #[cfg(target_arch = "x86_64")]
        b @ (Backend::Avx2 | Backend::Avx512) => {
            x86::dispatch_interleaved_outer(b, shape, lay, g, x, out);
        }
        _ => portable::interleaved_outer(shape, lay, g, x, out, false),
    }
}
