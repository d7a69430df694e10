//! Drivers that run Monarch and block-diagonal products, transposes and gradients on the
//! kernels: plan selection (which permutations fold into an interleaved stage), row panels,
//! thread splitting and layout conversion from ndarray views.
//!
//! A Monarch `P_out · BD(w2) · P_mid · BD(w1) · P_in` is run as two *stages* with at most three
//! explicit gathers:
//! - reference layout (`P_in = I`, `P_mid = stride(r, l)`, `P_out = stride(l, s)`): a blocked
//!   stage then an interleaved stage, no gather;
//! - its transpose (`P_in = stride(p, k)`, `P_mid = stride(k, q)`, `P_out = I`): an interleaved
//!   stage then a blocked stage, no gather;
//! - anything else: two blocked stages with the permutations applied as gathers.
//!
//! Threading: large batches are split into row panels (both stages of a panel run on one
//! thread, the intermediate staying in cache); small batches are split over blocks or output
//! features inside each stage. Every output element is computed by the same kernel call
//! sequence whatever the split, so results do not depend on the thread count.
//!
//! Gradients: the first factor's product is recomputed, then each factor's weight and input
//! gradients come from one fused pass over the rows — block ranges per thread for a blocked
//! factor, a fixed number of row parts for an interleaved one (see `inter_parts`). For the
//! reference layout and its transpose with factors up to a megabyte all of it is one pass:
//! each row part runs the recomputation and both backward passes a panel at a time
//! (`one_pass_vjp`).
//!
//! Layout: this file holds the parts, scratch buffers and plan selection; [`forward`] the
//! Monarch and block-diagonal products; [`vjp`] the gradient passes.

use super::{
    align_within, blocked_backward_into, blocked_dot_into, blocked_into, blocked_outer_into,
    for_each_chunk, interleaved_backward_into, interleaved_into, interleaved_outer_chunks_into,
    interleaved_outer_into, row_chunk, Backend, PackedBlocked, PackedInterleaved, Rows, RowsMut,
    PAD,
};
use crate::{Par, Perm, Scalar};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2};
use rayon::prelude::*;
use std::ops::Range;

mod forward;
mod vjp;

pub(crate) use forward::{blockdiag_forward, blockdiag_transpose, blocks_outer, monarch_forward};
pub(crate) use vjp::monarch_vjp_into;

/// A Monarch `P_out · BD(w2) · P_mid · BD(w1) · P_in` described by its parts: the two factors'
/// blocks (`w1` `(k, q, p)`, `w2` `(l, s, r)`, each block out×in) and the three gather
/// permutations. The types above the kernels (`Monarch`, `BlockDiag`) hand these over; the
/// kernels never see those types.
#[derive(Clone, Copy)]
pub(crate) struct MonarchParts<'a, T> {
    pub(crate) w1: ArrayView3<'a, T>,
    pub(crate) w2: ArrayView3<'a, T>,
    pub(crate) p_in: &'a Perm,
    pub(crate) p_mid: &'a Perm,
    pub(crate) p_out: &'a Perm,
}

impl<T> MonarchParts<'_, T> {
    fn in_features(&self) -> usize {
        self.p_in.len()
    }
    fn out_features(&self) -> usize {
        self.p_out.len()
    }
    fn hidden_features(&self) -> usize {
        let (k, q, _) = self.w1.dim();
        k * q
    }
    fn num_params(&self) -> usize {
        self.w1.len() + self.w2.len()
    }
}

/// Where a Monarch VJP writes: the input gradient `(batch, in_features)` (shape checked by the
/// caller) and the two weight gradients (replaced when their shapes or layouts do not fit).
pub(crate) struct GradParts<'a, T> {
    pub(crate) x: &'a mut Array2<T>,
    pub(crate) w1: &'a mut Array3<T>,
    pub(crate) w2: &'a mut Array3<T>,
}

/// Smallest row panel worth giving to a thread (one register tile of the blocked kernel).
pub(super) const MIN_PANEL: usize = 12;

/// Largest factor size (bytes of both factors) for the fused VJP pass.
pub(super) const FUSED_VJP_MAX_BYTES: usize = 48 << 10;

/// Largest factor size (bytes of both factors) for the one-pass VJP of the reference layout:
/// 2–20% faster than the stage-by-stage pass from n = 64 to 2304 (f32, 1024 rows, two
/// threads), equal at 2 MB (n = 4096 f32, n = 2304 f64), where the panel's share of L2 is gone.
pub(super) const ONE_PASS_VJP_MAX_BYTES: usize = 1 << 20;

/// Largest intermediate buffer a thread keeps between calls (bytes).
pub(super) const SCRATCH_KEEP: usize = 32 << 20;

thread_local! {
    /// Per-thread intermediate buffers, one per scalar type, reused across calls: a fresh
    /// megabyte-sized buffer per call costs a page fault per 4 KB, as much as a tenth of a
    /// Monarch product at n = 1024..4096.
    static SCRATCH: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers a thread keeps between calls (nested users each hold one).
pub(super) const SCRATCH_COUNT: usize = 4;

/// Runs `f` with the largest of this thread's scratch `Vec<T>`s (any length, any contents),
/// and keeps it for the next call unless it grew past [`SCRATCH_KEEP`]. A nested call gets the
/// next largest, so an outer user of a large buffer and an inner user of a small one each find
/// theirs again on the next call.
pub(super) fn with_scratch<T: Scalar, R>(f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    let taken = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let i = (0..s.len())
            .filter_map(|i| s[i].downcast_ref::<Vec<T>>().map(|v| (i, v.capacity())))
            .max_by_key(|&(_, cap)| cap)?
            .0;
        s.swap_remove(i).downcast::<Vec<T>>().ok()
    });
    let mut buf = taken.map(|b| *b).unwrap_or_default();
    let r = f(&mut buf);
    if buf.capacity() * std::mem::size_of::<T>() <= SCRATCH_KEEP {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.push(Box::new(buf));
            if s.len() > SCRATCH_COUNT {
                s.remove(0);
            }
        });
    }
    r
}

/// `len` elements of `buf` from its first cache-line-aligned one, grown with zeros if needed
/// (existing contents are left: every user overwrites them).
pub(super) fn scratch_slice<T: Scalar>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    let off = align_within(buf, len);
    &mut buf[off..off + len]
}

/// The standard-layout buffer of a weight gradient of shape `dims`: `wgrad`'s own when it has
/// the shape and layout (a training loop's gradients), a fresh one otherwise.
pub(super) fn fit_grad<T: Scalar>(wgrad: &mut Array3<T>, dims: (usize, usize, usize)) -> &mut [T] {
    if wgrad.dim() != dims || !wgrad.is_standard_layout() {
        *wgrad = Array3::zeros(dims);
    }
    wgrad.as_slice_mut().expect("standard layout")
}

/// Tasks to cut work into: the pool's threads when splitting, else one.
pub(super) fn tasks(split: bool) -> usize {
    if split {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// True if `p` equals `Perm::stride(rows, cols)`.
pub(super) fn is_stride(p: &Perm, rows: usize, cols: usize) -> bool {
    p.len() == rows * cols
        && p.index()
            .iter()
            .enumerate()
            .all(|(pos, &v)| v == (pos % rows) * cols + pos / rows)
}

/// How a factor is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `y[a·R + i] = Σ_j W[a,i,j] x[a·C + j]`.
    Blocked,
    /// `stride(NB, R) · BD(W) · stride(C, NB)`: `y[i·NB + c] = Σ_t W[c,i,t] x[t·NB + c]`.
    Inter,
}

/// Rows up to which the forward product reads the weights unpacked (dot-product form):
/// packing costs about as much as a product with this many rows.
pub(super) const DOT_MAX_ROWS: usize = 4;

/// Unpacked blocks `(nb, rows, cols)`, row-major.
#[derive(Clone, Copy)]
pub(super) struct Raw<'a, T> {
    w: &'a [T],
    nb: usize,
    rows: usize,
    cols: usize,
}

/// A factor with its layout, packed for the forward product (or borrowed unpacked for
/// a few rows).
pub(super) enum Packed<'a, T> {
    Blocked(PackedBlocked<T>),
    Inter(PackedInterleaved<T>),
    /// Blocked layout, dot-product form on the stored weights.
    Dot(Raw<'a, T>),
    /// Interleaved layout, dot-product form: transposes around a blocked dot product (O(n)
    /// per row, negligible next to packing at a few rows).
    DotInter(Raw<'a, T>),
}

impl<'a, T: Scalar> Packed<'a, T> {
    fn new(kind: Kind, w: ArrayView3<T>, transposed: bool) -> Self {
        match (kind, transposed) {
            (Kind::Blocked, false) => Packed::Blocked(PackedBlocked::pack(w)),
            (Kind::Blocked, true) => Packed::Blocked(PackedBlocked::pack_transposed(w)),
            (Kind::Inter, false) => Packed::Inter(PackedInterleaved::pack(w)),
            (Kind::Inter, true) => Packed::Inter(PackedInterleaved::pack_transposed(w)),
        }
    }

    /// The forward factor for `rows` rows: unpacked when few rows and the weights are
    /// contiguous, packed otherwise.
    fn forward(kind: Kind, w: ArrayView3<'a, T>, rows: usize) -> Self {
        let (nb, r, c) = w.dim();
        match w.to_slice() {
            Some(sl) if rows <= DOT_MAX_ROWS => {
                let raw = Raw {
                    w: sl,
                    nb,
                    rows: r,
                    cols: c,
                };
                match kind {
                    Kind::Blocked => Packed::Dot(raw),
                    Kind::Inter => Packed::DotInter(raw),
                }
            }
            _ => Self::new(kind, w, false),
        }
    }

    fn in_len(&self) -> usize {
        match self {
            Packed::Blocked(p) => p.nb * p.cols,
            Packed::Inter(p) => p.nb * p.cols,
            Packed::Dot(r) | Packed::DotInter(r) => r.nb * r.cols,
        }
    }

    fn out_len(&self) -> usize {
        match self {
            Packed::Blocked(p) => p.nb * p.rows,
            Packed::Inter(p) => p.nb * p.rows,
            Packed::Dot(r) | Packed::DotInter(r) => r.nb * r.rows,
        }
    }

    /// Units the output can be split into (blocks, or output features of the interleaved
    /// layout), each owning a contiguous column window of every output row.
    fn units(&self) -> usize {
        match self {
            Packed::Blocked(p) => p.nb,
            Packed::Inter(p) => p.rows,
            Packed::Dot(r) | Packed::DotInter(r) => r.nb,
        }
    }

    /// Output columns of unit window `u`.
    fn out_cols(&self, u: &Range<usize>) -> Range<usize> {
        let w = match self {
            Packed::Blocked(p) => p.rows,
            Packed::Inter(p) => p.nb,
            Packed::Dot(r) | Packed::DotInter(r) => r.rows,
        };
        u.start * w..u.end * w
    }

    /// Applies the units `u` to the full input rows `x`, writing their output window `y`
    /// (for `DotInter`: the blocked dot product on already transposed rows).
    fn apply(&self, be: Backend, u: Range<usize>, x: Rows<T>, y: RowsMut<T>) {
        match self {
            Packed::Blocked(p) => {
                let xc = x.cols(u.start * p.cols..u.end * p.cols);
                blocked_into(be, p, u, xc, y);
            }
            Packed::Inter(p) => interleaved_into(be, p, u, x, y),
            Packed::Dot(r) | Packed::DotInter(r) => {
                let xc = x.cols(u.start * r.cols..u.end * r.cols);
                blocked_dot_into(be, r.w, (r.nb, r.rows, r.cols), u, xc, y);
            }
        }
    }

    /// Applies the whole factor to `x` into `y` (rows of `out_len()`), splitting over threads
    /// when `split`.
    fn apply_all(&self, be: Backend, x: Rows<T>, y: &mut [T], split: bool) {
        let (nrows, m) = (x.nrows(), self.out_len());
        let y = &mut y[..nrows * m];
        if let Packed::DotInter(r) = self {
            // z[b, c·C + t] = x[b, t·NB + c]; y2 = BD(W) z; y[b, i·NB + c] = y2[b, c·R + i].
            let (nb, rr, cc) = (r.nb, r.rows, r.cols);
            let n = nb * cc;
            let mut z = vec![T::zero(); nrows * n];
            for b in 0..nrows {
                let xr = &x.data()[b * x.ld()..][..n];
                let zr = &mut z[b * n..(b + 1) * n];
                for t in 0..cc {
                    for c in 0..nb {
                        zr[c * cc + t] = xr[t * nb + c];
                    }
                }
            }
            let mut y2 = vec![T::zero(); nrows * m];
            Packed::Dot(*r).apply_all(be, Rows::new(&z, n, nrows, n), &mut y2, split);
            for b in 0..nrows {
                let (src, dst) = (&y2[b * m..(b + 1) * m], &mut y[b * m..(b + 1) * m]);
                for c in 0..nb {
                    for i in 0..rr {
                        dst[i * nb + c] = src[c * rr + i];
                    }
                }
            }
            return;
        }
        let threads = rayon::current_num_threads();
        // Row panels small enough that a panel's input stays in cache while every tile of
        // the weights sweeps it.
        let panel = row_chunk(self.in_len().max(m));
        let run = |(ci, yc): (usize, &mut [T]), chunk: usize| {
            let r0 = ci * chunk;
            let rows = yc.len() / m;
            let xc = x.rows(r0..r0 + rows);
            self.apply(be, 0..self.units(), xc, RowsMut::new(yc, m, rows, m));
        };
        if !split || threads < 2 {
            y.chunks_mut(panel * m)
                .enumerate()
                .for_each(|c| run(c, panel));
            return;
        }
        if nrows >= 2 * MIN_PANEL {
            let chunk = nrows.div_ceil(2 * threads).max(MIN_PANEL).min(panel);
            y.par_chunks_mut(chunk * m)
                .enumerate()
                .for_each(|c| run(c, chunk));
        } else {
            // Few rows: split the output columns; each task fills a private window.
            let units = self.units();
            let parts = (2 * threads).min(units);
            let windows: Vec<Range<usize>> = (0..parts)
                .map(|t| t * units / parts..(t + 1) * units / parts)
                .filter(|r| !r.is_empty())
                .collect();
            let results: Vec<(Range<usize>, Vec<T>)> = windows
                .into_par_iter()
                .map(|u| {
                    let cols = self.out_cols(&u);
                    let w = cols.len();
                    let mut buf = vec![T::zero(); nrows * w];
                    self.apply(be, u, x, RowsMut::new(&mut buf, w, nrows, w));
                    (cols, buf)
                })
                .collect();
            for (cols, buf) in results {
                let w = cols.len();
                for r in 0..nrows {
                    y[r * m + cols.start..r * m + cols.end]
                        .copy_from_slice(&buf[r * w..(r + 1) * w]);
                }
            }
        }
    }
}

/// `dst[r·n + i] = src[r·n + p[i]]` for `rows` rows of length `n = p.len()`.
pub(super) fn gather<U: Copy>(src: &[U], p: &Perm, dst: &mut [U], rows: usize) {
    let n = p.len();
    let idx = p.index();
    for r in 0..rows {
        let s = &src[r * n..(r + 1) * n];
        for (d, &i) in dst[r * n..(r + 1) * n].iter_mut().zip(idx) {
            *d = s[i];
        }
    }
}

/// Copies a view into a contiguous row-major buffer unless it already is one.
pub(super) fn contiguous<'a, T: Scalar>(
    x: &'a ArrayView2<'a, T>,
    buf: &'a mut Vec<T>,
) -> Rows<'a, T> {
    let (r, c) = x.dim();
    if let Some(s) = x.to_slice() {
        return Rows::new(s, c, r, c);
    }
    buf.clear();
    buf.extend(x.iter().copied());
    Rows::new(buf, c, r, c)
}

/// The two stages of a Monarch and the gathers that remain around them.
pub(super) struct Plan<'a, T> {
    p_in: Option<Perm>,
    s1: Packed<'a, T>,
    p_mid: Option<Perm>,
    s2: Packed<'a, T>,
    p_out: Option<Perm>,
    /// Takes the first stage's output to `BD(w1) · P_in x` (what a kept intermediate holds)
    /// where the stage absorbs `P_mid` (the transposed layout).
    keep: Option<Perm>,
}

/// Stage layouts `(kind1, kind2)` for a Monarch, and whether gathers are needed.
pub(super) fn kinds<T: Scalar>(m: &MonarchParts<T>) -> (Kind, Kind, bool) {
    let (k, q, p) = m.w1.dim();
    let (l, s, r) = m.w2.dim();
    if m.p_in.is_identity() && is_stride(m.p_mid, r, l) && is_stride(m.p_out, l, s) {
        (Kind::Blocked, Kind::Inter, false)
    } else if m.p_out.is_identity() && is_stride(m.p_in, p, k) && is_stride(m.p_mid, k, q) {
        (Kind::Inter, Kind::Blocked, false)
    } else {
        (Kind::Blocked, Kind::Blocked, true)
    }
}

pub(super) fn opt_perm(p: &Perm) -> Option<Perm> {
    if p.is_identity() {
        None
    } else {
        Some(p.clone())
    }
}

impl<'a, T: Scalar> Plan<'a, T> {
    /// The plan for `rows` rows; with `split`, the two factors are packed side by side, which
    /// also wakes the second thread before the products need it (forward 4% faster at n = 256,
    /// 1024 and 4096 than packing one after the other, measured interleaved in one process).
    fn forward(m: &MonarchParts<'a, T>, rows: usize, split: bool) -> Self {
        let (k1, k2, general) = kinds(m);
        let pack1 = || Packed::forward(k1, m.w1, rows);
        let pack2 = || Packed::forward(k2, m.w2, rows);
        let (s1, s2) = if split {
            rayon::join(pack1, pack2)
        } else {
            (pack1(), pack2())
        };
        Plan {
            p_in: if general { opt_perm(m.p_in) } else { None },
            s1,
            p_mid: if general { opt_perm(m.p_mid) } else { None },
            s2,
            p_out: if general { opt_perm(m.p_out) } else { None },
            keep: if k1 == Kind::Inter && !general {
                opt_perm(&m.p_mid.inverse())
            } else {
                None
            },
        }
    }

    /// Runs a panel of contiguous rows `x` into the contiguous output `out`, keeping the first
    /// factor's output `BD(w1) · P_in x` in `mid` when given (the panel's rows, `h` each).
    fn run_panel(
        &self,
        be: Backend,
        x: Rows<T>,
        out: &mut [T],
        split: bool,
        y1: &mut Vec<T>,
        mid: Option<&mut [T]>,
    ) {
        let rows = x.nrows();
        let (n, h, m) = (self.s1.in_len(), self.s1.out_len(), self.s2.out_len());
        let mut xin_buf = Vec::new();
        let xin = match &self.p_in {
            Some(p) => {
                xin_buf = vec![T::zero(); rows * n];
                gather(x.data(), p, &mut xin_buf, rows);
                Rows::new(&xin_buf, n, rows, n)
            }
            None => x,
        };
        // The intermediate buffer is reused across the panels a thread runs; a kept
        // intermediate is written where the caller keeps it and read back from cache.
        let direct = self.keep.is_none();
        let (y1, mid): (&mut [T], _) = match mid {
            Some(m) if direct => (m, None),
            mid => (scratch_slice(y1, rows * h), mid),
        };
        self.s1.apply_all(be, xin, y1, split);
        drop(xin_buf);
        if let (Some(m), Some(p)) = (mid, &self.keep) {
            gather(y1, p, m, rows);
        }
        let zbuf;
        let z: &[T] = match &self.p_mid {
            Some(p) => {
                let mut zz = vec![T::zero(); rows * h];
                gather(y1, p, &mut zz, rows);
                zbuf = zz;
                &zbuf
            }
            None => y1,
        };
        let zr = Rows::new(z, h, rows, h);
        match &self.p_out {
            Some(p) => {
                let mut y2 = vec![T::zero(); rows * m];
                self.s2.apply_all(be, zr, &mut y2, split);
                gather(&y2, p, out, rows);
            }
            None => self.s2.apply_all(be, zr, out, split),
        }
    }
}
