//! Gradient passes: each factor's weight gradient and input gradient from fused passes over
//! the rows, in a fixed number of parts so sums never depend on the thread count.

use super::*;

/// The weight gradient `Σ_b g ⊗ x` of a factor of shape `(nb, rows, cols)` in layout `kind`.
pub(super) fn stage_outer<T: Scalar>(
    be: Backend,
    kind: Kind,
    dims: (usize, usize, usize),
    g: Rows<T>,
    x: Rows<T>,
    par: Par,
) -> Array3<T> {
    let mut out = Array3::zeros(dims);
    stage_outer_into(be, kind, dims, g, x, par, &mut out);
    out
}

/// [`stage_outer`] into `out`, reusing its buffer when it has the shape and a standard layout
/// (a training loop's gradients: fresh megabyte arrays cost page faults on every call).
pub(super) fn stage_outer_into<T: Scalar>(
    be: Backend,
    kind: Kind,
    (nb, rows, cols): (usize, usize, usize),
    g: Rows<T>,
    x: Rows<T>,
    par: Par,
    out: &mut Array3<T>,
) {
    let flat = fit_grad(out, (nb, rows, cols));
    let split = par.should_split(g.nrows() * nb * rows * cols);
    match kind {
        Kind::Blocked => {
            // One range of blocks per thread, every block summed over the rows in a fixed
            // order, so results do not depend on the thread count. A range reads a contiguous
            // part of each row (one block per task read a 128-byte strip of every row: o1 at
            // n = 4096, 4.9 → 4.4 ms). (A library GEMM per block was measured slower here:
            // packing columns that sit a 16 KB row stride apart misses the TLB on every row.)
            let per = nb.div_ceil(tasks(split));
            let body = |(wi, o): (usize, &mut [T])| {
                let (a0, na) = (wi * per, o.len() / (rows * cols));
                let gc = g.cols(a0 * rows..(a0 + na) * rows);
                let xc = x.cols(a0 * cols..(a0 + na) * cols);
                blocked_outer_into(be, (rows, cols), gc, xc, o);
            };
            for_each_chunk(flat, per * rows * cols, split, body);
        }
        Kind::Inter if inter_parts(g.nrows(), g.ncols()) > 1 => {
            let nch = nb.div_ceil(PAD);
            let part = |r: Range<usize>, o: &mut [&mut [T]], _: &mut [T]| {
                let (g, x) = (g.rows(r.clone()), x.rows(r));
                interleaved_outer_chunks_into(be, nb, 0..nch, g, x, o[0]);
            };
            let mut sums = [(Kind::Inter, (nb, rows, cols), flat)];
            let parts = inter_parts(g.nrows(), g.ncols());
            parts_sum(g.nrows(), parts, split, &mut sums, &mut [], 0, part);
        }
        Kind::Inter => {
            // packed[i][t][c] = Σ_b g[b, i·nb + c] · x[b, t·nb + c], one window of output
            // features per thread: every window packs the same input stripes, so fewer, wider
            // windows pack less (VJP 3.2× → 3.0× the forward at n = 1024, 3.6× → 3.3× at 256).
            let win = rows.div_ceil(tasks(split)).max(4).min(rows);
            with_scratch(|buf: &mut Vec<T>| {
                let packed = scratch_slice(buf, rows * cols * nb);
                let body = |(wi, o): (usize, &mut [T])| {
                    let i0 = wi * win;
                    let ni = o.len() / (cols * nb);
                    let gc = g.cols(i0 * nb..(i0 + ni) * nb);
                    interleaved_outer_into(be, nb, gc, x, o);
                };
                for_each_chunk(packed, win * cols * nb, split, body);
                // [i][t][c] → (c, i, t).
                for (c, blk) in flat.chunks_mut(rows * cols).enumerate() {
                    for (it, v) in blk.iter_mut().enumerate() {
                        *v = packed[it * nb + c];
                    }
                }
            });
        }
    }
}

/// Parts the rows of an interleaved backward pass are cut into: a function of the shape only
/// (`rows` rows of output gradient, `width` elements each), so results do not depend on the
/// thread count (each part's weight gradient is summed on its own and the parts are added in
/// order). Splitting the 16-lane chunks of block indices among threads instead shares cache
/// lines between them where a chunk is half a line pair (NB = 32), and splitting output
/// features makes every thread pack all inputs.
pub(super) fn inter_parts(rows: usize, width: usize) -> usize {
    (rows / part_rows(width)).clamp(1, MAX_PARTS)
}

/// Fewest rows of a part, [`MIN_PART_ROWS`] to [`MAX_PART_ROWS`]: about [`PART_ELEMS`]
/// elements of output gradient. Each part writes and re-reads a whole weight gradient, and
/// short rows make a part's passes short: on a 2-vCPU Zen 4, parts of 64 rows made
/// `vjp_into` / forward 3.2–3.8 at n = 1024 and 256 (batch 1024, 2 threads) against 2.7–2.9
/// with parts of 128 and 256 rows; at n = 4096 parts of 64 rows measured best on 16 threads.
fn part_rows(width: usize) -> usize {
    (PART_ELEMS / width.max(1)).clamp(MIN_PART_ROWS, MAX_PART_ROWS)
}

/// Output-gradient elements of a part (rows times width), before the row bounds.
const PART_ELEMS: usize = 128 << 10;

/// Fewest rows of a part: the outer sums of a few dozen rows cost about as much as writing
/// and re-reading the part's weight gradient.
pub(super) const MIN_PART_ROWS: usize = 64;

/// Most rows a part needs, however short the rows.
const MAX_PART_ROWS: usize = 256;

/// Most row parts: enough for 16 threads to share the weight-gradient sums.
pub(super) const MAX_PARTS: usize = 16;

/// Backward of one factor `w` (layout `kind`) whose input was `x` and whose output gradient
/// is `g`: the weight gradient into `wgrad` (reallocated only when its shape or layout does not
/// fit) and the input gradient into `gx` (rows of the factor's input width), in one fused pass
/// over the rows that computes both from one copy of each chunk of rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage_backward_into<T: Scalar>(
    be: Backend,
    kind: Kind,
    w: ArrayView3<T>,
    g: Rows<T>,
    x: Rows<T>,
    par: Par,
    wgrad: &mut Array3<T>,
    gx: &mut [T],
) {
    let dims = w.dim();
    let nrows = g.nrows();
    let split = par.should_split(nrows * dims.0 * dims.1 * dims.2);
    match kind {
        Kind::Blocked => {
            // Contiguous block ranges per thread: no reduction, bitwise the separate passes.
            let wt = PackedBlocked::pack_transposed(w);
            let flat = fit_grad(wgrad, dims);
            blocked_backward_into(be, &wt, g, x, flat, gx, tasks(split), false);
        }
        Kind::Inter if split && inter_parts(nrows, g.ncols()) == 1 => {
            // Too few rows to cut: the separate passes split rows and output features (one
            // part is bitwise the fused pass, so `Par::Seq` agrees).
            stage_outer_into(be, kind, dims, g, x, par, wgrad);
            Packed::new(kind, w, true).apply_all(be, g, gx, split);
        }
        Kind::Inter => inter_backward_into(be, w, g, Input::Rows(x), par, wgrad, gx),
    }
}

/// The input of an interleaved factor's backward pass.
#[derive(Clone, Copy)]
pub(super) enum Input<'a, T> {
    /// Given rows.
    Rows(Rows<'a, T>),
    /// A first factor (blocked, packed for the forward) applied to these rows, with no
    /// permutation between: recomputed a panel of rows at a time inside each row part, where
    /// the backward pass reads it from cache, instead of being written out whole and read back.
    After(&'a Packed<'a, T>, Rows<'a, T>),
}

/// The interleaved part of [`stage_backward_into`]: the rows cut into [`inter_parts`], each
/// part's weight gradient summed on its own, the parts added in order.
pub(super) fn inter_backward_into<T: Scalar>(
    be: Backend,
    w: ArrayView3<T>,
    g: Rows<T>,
    input: Input<T>,
    par: Par,
    wgrad: &mut Array3<T>,
    gx: &mut [T],
) {
    let dims = w.dim();
    let (nb, rows, cols) = dims;
    let nrows = g.nrows();
    let split = par.should_split(nrows * nb * rows * cols);
    let flat = fit_grad(wgrad, dims);
    let width = cols * nb;
    let wt = PackedInterleaved::pack_transposed(w);
    let part = |r: Range<usize>, o: &mut [&mut [T]], gxp: &mut [T]| match input {
        Input::Rows(x) => {
            interleaved_backward_into(be, &wt, g.rows(r.clone()), x.rows(r), o[0], gxp, false);
        }
        Input::After(s1, xin) => with_scratch(|ybuf: &mut Vec<T>| {
            // Panels small enough that the recomputed intermediate stays in L2.
            let (h, panel) = (s1.out_len(), row_chunk(s1.out_len()));
            let mut r0 = r.start;
            loop {
                let r1 = (r0 + panel).min(r.end);
                let nr = r1 - r0;
                let y = scratch_slice(ybuf, nr * h);
                if nr > 0 {
                    let ym = RowsMut::new(&mut y[..], h, nr, h);
                    s1.apply(be, 0..s1.units(), xin.rows(r0..r1), ym);
                }
                let (yr, gr) = (Rows::new(y, h, nr, h), g.rows(r0..r1));
                let gzp = &mut gxp[(r0 - r.start) * width..(r1 - r.start) * width];
                interleaved_backward_into(be, &wt, gr, yr, o[0], gzp, r0 > r.start);
                r0 = r1;
                if r0 >= r.end {
                    break;
                }
            }
        }),
    };
    parts_sum(
        nrows,
        inter_parts(nrows, g.ncols()),
        split,
        &mut [(Kind::Inter, dims, flat)],
        gx,
        width,
        part,
    );
}

/// A weight gradient summed by row parts: its factor's layout, shape and output buffer.
type PartSum<'a, T> = (Kind, (usize, usize, usize), &'a mut [T]);

/// Runs `part(rows, sums_p, gx_p)` for `parts` parts of `nrows` rows (in parallel when
/// `split`): `sums_p` holds the part's own buffer for each weight gradient of `sums` (layout of
/// [`part_len`]), `gx_p` its rows of `gx` (`width` per row; empty when `width == 0`). Then the
/// parts are added in order into each gradient's buffer.
#[allow(clippy::too_many_arguments)]
pub(super) fn parts_sum<T: Scalar>(
    nrows: usize,
    parts: usize,
    split: bool,
    sums: &mut [PartSum<T>],
    gx: &mut [T],
    width: usize,
    part: impl Fn(Range<usize>, &mut [&mut [T]], &mut [T]) + Sync,
) {
    let lens: Vec<usize> = sums.iter().map(|&(k, d, _)| part_len(k, d)).collect();
    let blk: usize = lens.iter().sum();
    let bounds = |p: usize| p * nrows / parts..(p + 1) * nrows / parts;
    let mut gxs: Vec<&mut [T]> = Vec::with_capacity(parts);
    let mut rest = &mut gx[..nrows * width];
    for p in 0..parts {
        let (head, tail) = rest.split_at_mut(bounds(p).len() * width);
        gxs.push(head);
        rest = tail;
    }
    with_scratch(|buf: &mut Vec<T>| {
        let packed = scratch_slice(buf, parts * blk);
        let body = |(p, (o, gxp)): (usize, (&mut [T], &mut [T]))| {
            let mut bufs: Vec<&mut [T]> = Vec::with_capacity(lens.len());
            let mut rest = o;
            for &len in &lens {
                let (head, tail) = rest.split_at_mut(len);
                bufs.push(head);
                rest = tail;
            }
            part(bounds(p), &mut bufs, gxp)
        };
        if split {
            let tasks = packed.par_chunks_mut(blk).zip(gxs.into_par_iter());
            tasks.enumerate().for_each(body);
        } else {
            packed.chunks_mut(blk).zip(gxs).enumerate().for_each(body);
        }
        let mut off = 0;
        for ((kind, dims, flat), len) in sums.iter_mut().zip(&lens) {
            sum_parts(*kind, *dims, flat, &packed[off..], parts, blk, split);
            off += len;
        }
    });
}

/// Adds the `parts` interleaved weight-gradient sums in `packed` (`blk` elements apart, each in
/// the chunked layout `[c / PAD][it][c mod PAD]`, `per = I·T` per block index) in part order
/// into `flat` as `(c, it)`. A line of `PAD` lanes is read once per part and its lanes written
/// to their `PAD` rows of `flat` (reading a lane at a time per output row re-read every line
/// `PAD` times).
pub(super) fn sum_chunked_parts<T: Scalar>(
    flat: &mut [T],
    packed: &[T],
    parts: usize,
    blk: usize,
    per: usize,
    split: bool,
) {
    for_each_chunk(flat, per * PAD, split, |(ch, dst)| {
        let nc = dst.len() / per;
        let base = ch * per * PAD;
        let mut acc = [T::zero(); PAD];
        for it in 0..per {
            let at = base + it * PAD;
            acc[..nc].copy_from_slice(&packed[at..at + nc]);
            for p in 1..parts {
                let src = &packed[p * blk + at..][..nc];
                acc.iter_mut().zip(src).for_each(|(a, &v)| *a += v);
            }
            for (c, &a) in acc[..nc].iter().enumerate() {
                dst[c * per + it] = a;
            }
        }
    });
}

/// Gradients of `sum(out ⊙ g)` for `out = M x` with backend `be`, into `grads`: the input gradient is written into `grads.x` (shape
/// `(batch, in_features)`, checked by the caller), the weight gradients into `grads.w1` and
/// `grads.w2` (reallocated only when their shapes or layouts do not fit). `mid`, when given,
/// is the first factor's output `BD(w1) · P_in x` kept by the forward (`(rows, h)`, checked by
/// the caller), so the first product is not recomputed.
pub(crate) fn monarch_vjp_into<T: Scalar>(
    m: &MonarchParts<T>,
    x: ArrayView2<T>,
    mid: Option<ArrayView2<T>>,
    g: ArrayView2<T>,
    grads: &mut GradParts<T>,
    par: Par,
    be: Backend,
) {
    let rows = x.nrows();
    let (k1, k2, general) = kinds(m);
    let (n, h, mo) = (m.in_features(), m.hidden_features(), m.out_features());
    // The first factor packed for its forward product (not needed with a kept intermediate).
    let s1 = || Packed::new(k1, m.w1, false);
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    let mut gbuf = Vec::new();
    let gr0 = contiguous(&g, &mut gbuf);
    let split = par.should_split(rows * m.num_params());
    let gather_rows = |src: Rows<T>, p: &Perm| {
        let len = p.len();
        let mut d = vec![T::zero(); rows * len];
        gather(src.data(), p, &mut d, rows);
        d
    };
    // Forward intermediates.
    let xin_v = (general && !m.p_in.is_identity()).then(|| gather_rows(xr, m.p_in));
    let xin = xin_v.as_deref().map_or(xr, |v| Rows::new(v, n, rows, n));
    let g2_v = (general && !m.p_out.is_identity()).then(|| gather_rows(gr0, &m.p_out.inverse()));
    let g2 = g2_v.as_deref().map_or(gr0, |v| Rows::new(v, mo, rows, mo));
    let bytes = m.num_params() * std::mem::size_of::<T>();
    // Reference layout or its transpose, factors up to a megabyte: all five products (four
    // with a kept intermediate, reference layout only: the transpose's kept intermediate lacks
    // `P_mid`) in one pass over the rows (see `one_pass_vjp`). Unless the rows are too few to
    // cut into parts and two threads would split each stage instead (one part is bitwise the
    // stage-by-stage pass).
    let reference = k1 == Kind::Blocked && k2 == Kind::Inter && !general;
    let few = split && inter_parts(rows, mo) == 1;
    let mut midbuf = Vec::new();
    let kept = mid.as_ref().map(|v| contiguous(v, &mut midbuf));
    let one_pass = !general
        && (kept.is_none() || reference)
        && !few
        && bytes <= ONE_PASS_VJP_MAX_BYTES
        && grads.x.is_standard_layout();
    if one_pass {
        one_pass_vjp(be, m, (k1, k2), xin, kept, g2, split, grads);
        return;
    }
    // Small factors (all three packed copies well inside L2) whose rows are too few for parts
    // (with the one-pass above taking the rest): the three products run panel by panel in one
    // parallel pass (one join instead of three, which is most of the cost of
    // small products), then both outer sums run together. With larger factors each panel would
    // evict the other products' weights (measured slower at n = 512, b = 16, and above).
    let small = bytes <= FUSED_VJP_MAX_BYTES;
    let fused = small
        && mid.is_none()
        && !general
        && split
        && rows >= 2 * MIN_PANEL
        && grads.x.is_standard_layout();
    if fused {
        let s2t = Packed::new(k2, m.w2, true);
        let s1t = Packed::new(k1, m.w1, true);
        let s1 = s1();
        let (d1, d2) = (m.w1.dim(), m.w2.dim());
        with_scratch(|zbuf: &mut Vec<T>| {
            with_scratch(|gzbuf: &mut Vec<T>| {
                let z = scratch_slice(zbuf, rows * h);
                let gz = scratch_slice(gzbuf, rows * h);
                let gx = grads.x.as_slice_mut().expect("standard layout");
                let threads = rayon::current_num_threads();
                let chunk = row_chunk(n.max(h).max(mo))
                    .min(rows.div_ceil(2 * threads))
                    .max(MIN_PANEL);
                z.par_chunks_mut(chunk * h)
                    .zip(gz.par_chunks_mut(chunk * h))
                    .zip(gx.par_chunks_mut(chunk * n))
                    .enumerate()
                    .for_each(|(ci, ((zc, gzc), gxc))| {
                        let (r0, nr) = (ci * chunk, zc.len() / h);
                        let rr = r0..r0 + nr;
                        let zo = RowsMut::new(zc, h, nr, h);
                        s1.apply(be, 0..s1.units(), xin.rows(rr.clone()), zo);
                        let go = RowsMut::new(gzc, h, nr, h);
                        s2t.apply(be, 0..s2t.units(), g2.rows(rr), go);
                        let gi = Rows::new(gzc, h, nr, h);
                        s1t.apply(be, 0..s1t.units(), gi, RowsMut::new(gxc, n, nr, n));
                    });
                let (zr, gzr) = (Rows::new(z, h, rows, h), Rows::new(gz, h, rows, h));
                let (w1, w2) = (&mut grads.w1, &mut grads.w2);
                rayon::join(
                    || stage_outer_into(be, k2, d2, g2, zr, par, w2),
                    || stage_outer_into(be, k1, d1, gzr, xin, par, w1),
                );
            })
        });
        return;
    }
    // Reference layout with enough rows: the intermediate is recomputed inside the second
    // factor's backward pass instead of being written out whole.
    let reference = reference && !few && mid.is_none();
    with_scratch(|gbuf: &mut Vec<T>| {
        // Backward: each factor's weight gradient and input gradient in one pass.
        let gz = scratch_slice(gbuf, rows * h);
        let w2 = m.w2;
        if reference {
            let s1 = s1();
            inter_backward_into(be, w2, g2, Input::After(&s1, xin), par, grads.w2, gz);
        } else {
            with_scratch(|buf: &mut Vec<T>| {
                // The second stage reads `P_mid · y1` as gathered here, except where the
                // stages absorb `P_mid`: the transposed layout's first stage applies it (so a
                // recomputed `y1` has it, a kept one, always `BD(w1) · P_in x`, does not).
                let (y, gather_mid) = match kept {
                    Some(y1) => (y1, general || k1 == Kind::Inter),
                    None => {
                        let y1 = scratch_slice(buf, rows * h);
                        s1().apply_all(be, xin, y1, split);
                        (Rows::new(y1, h, rows, h), general)
                    }
                };
                let z_v = (gather_mid && !m.p_mid.is_identity()).then(|| gather_rows(y, m.p_mid));
                let z = z_v.as_deref().map_or(y, |v| Rows::new(v, h, rows, h));
                stage_backward_into(be, k2, w2, g2, z, par, grads.w2, gz);
            });
        }
        let g1_v = (general && !m.p_mid.is_identity())
            .then(|| gather_rows(Rows::new(gz, h, rows, h), &m.p_mid.inverse()));
        let g1 = Rows::new(g1_v.as_deref().unwrap_or(gz), h, rows, h);
        let w1 = m.w1;
        let permute_in = general && !m.p_in.is_identity();
        match (permute_in, grads.x.as_slice_mut()) {
            (false, Some(dst)) => {
                stage_backward_into(be, k1, w1, g1, xin, par, grads.w1, dst);
            }
            (permute_in, _) => {
                let mut gxin = vec![T::zero(); rows * n];
                stage_backward_into(be, k1, w1, g1, xin, par, grads.w1, &mut gxin);
                let gx = if permute_in {
                    gather_rows(Rows::new(&gxin, n, rows, n), &m.p_in.inverse())
                } else {
                    gxin
                };
                let gx = ArrayView2::from_shape((rows, n), &gx).expect("shape");
                grads.x.assign(&gx);
            }
        }
    });
}

/// Elements of one row part's weight-gradient sums for a factor of shape `dims` in layout
/// `kind` (the interleaved pass sums in its chunked layout).
pub(super) fn part_len(kind: Kind, (nb, rows, cols): (usize, usize, usize)) -> usize {
    match kind {
        Kind::Blocked => nb * rows * cols,
        Kind::Inter => nb.div_ceil(PAD) * rows * cols * PAD,
    }
}

/// A factor's fused backward pass over a panel of rows (`wt` its transposed packing), its
/// weight-gradient sums into a part's buffer `out` (continued when `acc`), its input gradient
/// into `gx`.
pub(super) fn panel_backward<T: Scalar>(
    be: Backend,
    wt: &Packed<T>,
    (g, x): (Rows<T>, Rows<T>),
    out: &mut [T],
    gx: &mut [T],
    acc: bool,
) {
    match wt {
        Packed::Blocked(w) => blocked_backward_into(be, w, g, x, out, gx, 1, acc),
        Packed::Inter(w) => interleaved_backward_into(be, w, g, x, out, gx, acc),
        Packed::Dot(_) | Packed::DotInter(_) => unreachable!("backward factors are packed"),
    }
}

/// Adds the `parts` sums in `packed` (`blk` apart, layout of [`part_len`]) in part order into
/// the weight gradient `flat` of shape `dims` in layout `kind`.
pub(super) fn sum_parts<T: Scalar>(
    kind: Kind,
    (_, rows, cols): (usize, usize, usize),
    flat: &mut [T],
    packed: &[T],
    parts: usize,
    blk: usize,
    split: bool,
) {
    match kind {
        Kind::Inter => sum_chunked_parts(flat, packed, parts, blk, rows * cols, split),
        Kind::Blocked => {
            // Pieces of at least 16 K elements: a task per block costs more than its sums.
            let piece = (rows * cols).max(1 << 14);
            for_each_chunk(flat, piece, split, |(k, dst)| {
                let base = k * piece;
                for (j, v) in dst.iter_mut().enumerate() {
                    let at = base + j;
                    *v = (1..parts).fold(packed[at], |acc, p| acc + packed[p * blk + at]);
                }
            });
        }
    }
}

/// VJP in one pass over the rows, for the reference layout and its transpose (no gathers):
/// each row part (see [`inter_parts`]) runs, a panel of rows at a time, the first factor's
/// product (or takes the panel's rows of the `kept` intermediate, reference layout only), the
/// second factor's backward pass and the first factor's backward pass, the panel's
/// intermediate and its gradient staying in cache (instead of a whole-batch gradient written
/// out and read back); each part sums both weight gradients on its own and the parts are added
/// in order, so results do not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(super) fn one_pass_vjp<T: Scalar>(
    be: Backend,
    m: &MonarchParts<T>,
    (k1, k2): (Kind, Kind),
    xin: Rows<T>,
    kept: Option<Rows<T>>,
    g2: Rows<T>,
    split: bool,
    grads: &mut GradParts<T>,
) {
    let rows = xin.nrows();
    let (n, h) = (m.in_features(), m.hidden_features());
    // Insensitive between 16 and 128 rows at n = 1024 (measured); half a `row_chunk` keeps
    // the panel's intermediate, its gradient and its rows of `x`, `g` and `gx` within L2.
    let panel = (row_chunk(h) / 2).max(MIN_PANEL);
    let (d1, d2) = (m.w1.dim(), m.w2.dim());
    let pack1 = || kept.is_none().then(|| Packed::new(k1, m.w1, false));
    let pack2 = || Packed::new(k2, m.w2, true);
    let pack3 = || Packed::new(k1, m.w1, true);
    // Packed side by side when splitting (2–3% faster at n = 1024, measured in one process).
    let (s1, (w2t, w1t)) = if split {
        rayon::join(pack1, || rayon::join(pack2, pack3))
    } else {
        (pack1(), (pack2(), pack3()))
    };
    let flat2 = fit_grad(grads.w2, d2);
    let flat1 = fit_grad(grads.w1, d1);
    let gx = grads.x.as_slice_mut().expect("standard layout");
    let part = |r: Range<usize>, o: &mut [&mut [T]], gxp: &mut [T]| {
        let [o2, o1] = o else {
            unreachable!("two weight gradients")
        };
        with_scratch(|zbuf: &mut Vec<T>| {
            with_scratch(|gzbuf: &mut Vec<T>| {
                let z = scratch_slice(zbuf, panel * h);
                let gz = scratch_slice(gzbuf, panel * h);
                // At least one panel, so that a part of no rows still zeroes its sums.
                let mut r0 = r.start;
                loop {
                    let r1 = (r0 + panel).min(r.end);
                    let nr = r1 - r0;
                    let (z, gz) = (&mut z[..nr * h], &mut gz[..nr * h]);
                    let xr = xin.rows(r0..r1);
                    let zr = match (kept, &s1) {
                        (Some(k), _) => k.rows(r0..r1),
                        (None, s1) => {
                            let s1 = s1.as_ref().expect("packed when nothing is kept");
                            if nr > 0 {
                                let zm = RowsMut::new(&mut z[..], h, nr, h);
                                s1.apply(be, 0..s1.units(), xr, zm);
                            }
                            Rows::new(z, h, nr, h)
                        }
                    };
                    let acc = r0 > r.start;
                    panel_backward(be, &w2t, (g2.rows(r0..r1), zr), o2, gz, acc);
                    let gzr = Rows::new(gz, h, nr, h);
                    let gxr = &mut gxp[(r0 - r.start) * n..(r1 - r.start) * n];
                    panel_backward(be, &w1t, (gzr, xr), o1, gxr, acc);
                    r0 = r1;
                    if r0 >= r.end {
                        break;
                    }
                }
            })
        })
    };
    let mut sums = [(k2, d2, flat2), (k1, d1, flat1)];
    parts_sum(
        rows,
        inter_parts(rows, g2.ncols()),
        split,
        &mut sums,
        gx,
        n,
        part,
    );
}
