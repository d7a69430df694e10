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

use super::{
    blocked_backward_into, blocked_dot_into, blocked_into, blocked_outer_into, for_each_chunk,
    interleaved_backward_into, interleaved_into, interleaved_outer_chunks_into,
    interleaved_outer_into, row_chunk, Backend, PackedBlocked, PackedInterleaved, Rows, RowsMut,
    PAD,
};
use crate::{Par, Perm, Scalar};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2};
use rayon::prelude::*;
use std::ops::Range;

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
const MIN_PANEL: usize = 12;

/// Largest factor size (bytes of both factors) for the fused VJP pass.
const FUSED_VJP_MAX_BYTES: usize = 48 << 10;

/// Largest factor size (bytes of both factors) for the one-pass VJP of the reference layout:
/// 2–20% faster than the stage-by-stage pass from n = 64 to 2304 (f32, 1024 rows, two
/// threads), equal at 2 MB (n = 4096 f32, n = 2304 f64), where the panel's share of L2 is gone.
const ONE_PASS_VJP_MAX_BYTES: usize = 1 << 20;

/// Largest intermediate buffer a thread keeps between calls (bytes).
const SCRATCH_KEEP: usize = 32 << 20;

thread_local! {
    /// Per-thread intermediate buffers, one per scalar type, reused across calls: a fresh
    /// megabyte-sized buffer per call costs a page fault per 4 KB, as much as a tenth of a
    /// Monarch product at n = 1024..4096.
    static SCRATCH: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers a thread keeps between calls (nested users each hold one).
const SCRATCH_COUNT: usize = 4;

/// Runs `f` with the largest of this thread's scratch `Vec<T>`s (any length, any contents),
/// and keeps it for the next call unless it grew past [`SCRATCH_KEEP`]. A nested call gets the
/// next largest, so an outer user of a large buffer and an inner user of a small one each find
/// theirs again on the next call.
fn with_scratch<T: Scalar, R>(f: impl FnOnce(&mut Vec<T>) -> R) -> R {
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

/// The first `len` elements of `buf`, grown with zeros if needed (existing contents are left:
/// every user overwrites them).
fn scratch_slice<T: Scalar>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    &mut buf[..len]
}

/// The standard-layout buffer of a weight gradient of shape `dims`: `wgrad`'s own when it has
/// the shape and layout (a training loop's gradients), a fresh one otherwise.
fn fit_grad<T: Scalar>(wgrad: &mut Array3<T>, dims: (usize, usize, usize)) -> &mut [T] {
    if wgrad.dim() != dims || !wgrad.is_standard_layout() {
        *wgrad = Array3::zeros(dims);
    }
    wgrad.as_slice_mut().expect("standard layout")
}

/// Tasks to cut work into: the pool's threads when splitting, else one.
fn tasks(split: bool) -> usize {
    if split {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// True if `p` equals `Perm::stride(rows, cols)`.
fn is_stride(p: &Perm, rows: usize, cols: usize) -> bool {
    p.len() == rows * cols
        && p.index()
            .iter()
            .enumerate()
            .all(|(pos, &v)| v == (pos % rows) * cols + pos / rows)
}

/// How a factor is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `y[a·R + i] = Σ_j W[a,i,j] x[a·C + j]`.
    Blocked,
    /// `stride(NB, R) · BD(W) · stride(C, NB)`: `y[i·NB + c] = Σ_t W[c,i,t] x[t·NB + c]`.
    Inter,
}

/// Rows up to which the forward product reads the weights unpacked (dot-product form):
/// packing costs about as much as a product with this many rows.
const DOT_MAX_ROWS: usize = 4;

/// Unpacked blocks `(nb, rows, cols)`, row-major.
#[derive(Clone, Copy)]
struct Raw<'a, T> {
    w: &'a [T],
    nb: usize,
    rows: usize,
    cols: usize,
}

/// A factor with its layout, packed for the forward product (or borrowed unpacked for
/// a few rows).
enum Packed<'a, T> {
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
fn gather<U: Copy>(src: &[U], p: &Perm, dst: &mut [U], rows: usize) {
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
fn contiguous<'a, T: Scalar>(x: &'a ArrayView2<'a, T>, buf: &'a mut Vec<T>) -> Rows<'a, T> {
    let (r, c) = x.dim();
    if let Some(s) = x.to_slice() {
        return Rows::new(s, c, r, c);
    }
    buf.clear();
    buf.extend(x.iter().copied());
    Rows::new(buf, c, r, c)
}

/// The two stages of a Monarch and the gathers that remain around them.
struct Plan<'a, T> {
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
fn kinds<T: Scalar>(m: &MonarchParts<T>) -> (Kind, Kind, bool) {
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

fn opt_perm(p: &Perm) -> Option<Perm> {
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

/// `out = x · Mᵀ` row by row (`out[b] = M x[b]`) with backend `be`; when `mid` is given
/// (`rows × h`, row-major) it receives the first factor's output `BD(w1) · P_in x`.
pub(crate) fn monarch_forward<T: Scalar>(
    m: &MonarchParts<T>,
    x: ArrayView2<T>,
    mut out: ArrayViewMut2<T>,
    mid: Option<&mut [T]>,
    par: Par,
    be: Backend,
) {
    let rows = x.nrows();
    if rows == 0 {
        return;
    }
    let split = par.should_split(rows * m.num_params());
    let plan = Plan::forward(m, rows, split);
    let (n, mo) = (m.in_features(), m.out_features());
    let width = n.max(mo).max(plan.s1.out_len());
    let threads = rayon::current_num_threads();
    let chunk = if split {
        row_chunk(width)
            .min(rows.div_ceil(2 * threads))
            .max(MIN_PANEL)
    } else {
        row_chunk(width)
    };
    let panel_parallel = split && rows >= 2 * MIN_PANEL;
    // Output: write straight into `out` when it is one contiguous row-major block.
    let mut tmp = Vec::new();
    let direct = out.is_standard_layout();
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    {
        let dst: &mut [T] = if direct {
            out.as_slice_mut().expect("standard layout")
        } else {
            tmp = vec![T::zero(); rows * mo];
            &mut tmp
        };
        let h = plan.s1.out_len();
        // Runs the panels of one group (rows from `r0`), each with its rows of `mid`.
        let group_body = |y1: &mut Vec<T>, r0: usize, gc: &mut [T], mg: Option<&mut [T]>| {
            let mut mids = mg.map(|m| m.chunks_mut(chunk * h));
            for (ci, oc) in gc.chunks_mut(chunk * mo).enumerate() {
                let (p0, nr) = (r0 + ci * chunk, oc.len() / mo);
                let mp = mids.as_mut().and_then(|it| it.next());
                let xp = xr.rows(p0..p0 + nr);
                plan.run_panel(be, xp, oc, !panel_parallel && split, y1, mp);
            }
        };
        if panel_parallel {
            // One task per group of panels, each with one intermediate buffer: allocating a
            // fresh buffer per panel costs page faults comparable to the panel's work.
            let group = rows.div_ceil(2 * threads).div_ceil(chunk) * chunk;
            let groups = rows.div_ceil(group);
            let mids: Vec<Option<&mut [T]>> = match mid {
                Some(m) => m.chunks_mut(group * h).map(Some).collect(),
                None => (0..groups).map(|_| None).collect(),
            };
            dst.par_chunks_mut(group * mo)
                .zip(mids)
                .enumerate()
                .for_each(|(gi, (gc, mg))| with_scratch(|y1| group_body(y1, gi * group, gc, mg)));
        } else {
            with_scratch(|y1| group_body(y1, 0, dst, mid));
        }
    }
    if !direct {
        for (o, v) in out.iter_mut().zip(tmp) {
            *o = v;
        }
    }
}

/// The weight gradient `Σ_b g ⊗ x` of a factor of shape `(nb, rows, cols)` in layout `kind`.
fn stage_outer<T: Scalar>(
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
fn stage_outer_into<T: Scalar>(
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
        Kind::Inter if inter_parts(g.nrows()) > 1 => {
            let nch = nb.div_ceil(PAD);
            let part = |r: Range<usize>, o: &mut [&mut [T]], _: &mut [T]| {
                let (g, x) = (g.rows(r.clone()), x.rows(r));
                interleaved_outer_chunks_into(be, nb, 0..nch, g, x, o[0]);
            };
            let mut sums = [(Kind::Inter, (nb, rows, cols), flat)];
            parts_sum(g.nrows(), split, &mut sums, &mut [], 0, part);
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

/// Parts the rows of an interleaved backward pass are cut into: a function of the row count
/// only, so results do not depend on the thread count (each part's weight gradient is summed
/// on its own and the parts are added in order). Splitting the 16-lane chunks of block
/// indices among threads instead shares cache lines between them where a chunk is half a
/// line pair (NB = 32), and splitting output features makes every thread pack all inputs.
fn inter_parts(rows: usize) -> usize {
    (rows / 64).clamp(1, 4)
}

/// Backward of one factor `w` (layout `kind`) whose input was `x` and whose output gradient
/// is `g`: the weight gradient into `wgrad` (reallocated only when its shape or layout does not
/// fit) and the input gradient into `gx` (rows of the factor's input width), in one fused pass
/// over the rows that computes both from one copy of each chunk of rows.
#[allow(clippy::too_many_arguments)]
fn stage_backward_into<T: Scalar>(
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
        Kind::Inter if split && inter_parts(nrows) == 1 => {
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
enum Input<'a, T> {
    /// Given rows.
    Rows(Rows<'a, T>),
    /// A first factor (blocked, packed for the forward) applied to these rows, with no
    /// permutation between: recomputed a panel of rows at a time inside each row part, where
    /// the backward pass reads it from cache, instead of being written out whole and read back.
    After(&'a Packed<'a, T>, Rows<'a, T>),
}

/// The interleaved part of [`stage_backward_into`]: the rows cut into [`inter_parts`], each
/// part's weight gradient summed on its own, the parts added in order.
fn inter_backward_into<T: Scalar>(
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
        split,
        &mut [(Kind::Inter, dims, flat)],
        gx,
        width,
        part,
    );
}

/// A weight gradient summed by row parts: its factor's layout, shape and output buffer.
type PartSum<'a, T> = (Kind, (usize, usize, usize), &'a mut [T]);

/// Runs `part(rows, sums_p, gx_p)` for the [`inter_parts`] of `nrows` rows (in parallel when
/// `split`): `sums_p` holds the part's own buffer for each weight gradient of `sums` (layout of
/// [`part_len`]), `gx_p` its rows of `gx` (`width` per row; empty when `width == 0`). Then the
/// parts are added in order into each gradient's buffer.
fn parts_sum<T: Scalar>(
    nrows: usize,
    split: bool,
    sums: &mut [PartSum<T>],
    gx: &mut [T],
    width: usize,
    part: impl Fn(Range<usize>, &mut [&mut [T]], &mut [T]) + Sync,
) {
    let parts = inter_parts(nrows);
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
fn sum_chunked_parts<T: Scalar>(
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
    let few = split && inter_parts(rows) == 1;
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
fn part_len(kind: Kind, (nb, rows, cols): (usize, usize, usize)) -> usize {
    match kind {
        Kind::Blocked => nb * rows * cols,
        Kind::Inter => nb.div_ceil(PAD) * rows * cols * PAD,
    }
}

/// A factor's fused backward pass over a panel of rows (`wt` its transposed packing), its
/// weight-gradient sums into a part's buffer `out` (continued when `acc`), its input gradient
/// into `gx`.
fn panel_backward<T: Scalar>(
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
fn sum_parts<T: Scalar>(
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
fn one_pass_vjp<T: Scalar>(
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
    parts_sum(rows, split, &mut sums, gx, n, part);
}

/// `y = BD(w) x` row by row with backend `be`.
pub(crate) fn blockdiag_forward<T: Scalar>(
    w: ArrayView3<T>,
    x: ArrayView2<T>,
    mut y: ArrayViewMut2<T>,
    par: Par,
    be: Backend,
) {
    let rows = x.nrows();
    if rows == 0 {
        return;
    }
    let packed = Packed::forward(Kind::Blocked, w, rows);
    let m = w.dim().0 * w.dim().1;
    let split = par.should_split(rows * w.len());
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    if y.is_standard_layout() {
        packed.apply_all(be, xr, y.as_slice_mut().expect("standard layout"), split);
    } else {
        let mut tmp = vec![T::zero(); rows * m];
        packed.apply_all(be, xr, &mut tmp, split);
        for (o, v) in y.iter_mut().zip(tmp) {
            *o = v;
        }
    }
}

/// `(Σ_b g ⊗ x)` restricted to `nb` blocks of `rows × cols`, with backend `be`.
pub(crate) fn blocks_outer<T: Scalar>(
    g: ArrayView2<T>,
    x: ArrayView2<T>,
    (nb, rows, cols): (usize, usize, usize),
    par: Par,
    be: Backend,
) -> Array3<T> {
    let mut gbuf = Vec::new();
    let gr = contiguous(&g, &mut gbuf);
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    stage_outer(be, Kind::Blocked, (nb, rows, cols), gr, xr, par)
}

/// Transpose product `BD(w)ᵀ g` with backend `be`.
pub(crate) fn blockdiag_transpose<T: Scalar>(
    w: ArrayView3<T>,
    g: ArrayView2<T>,
    par: Par,
    be: Backend,
) -> Array2<T> {
    let rows = g.nrows();
    let n = w.dim().0 * w.dim().2;
    let packed = Packed::new(Kind::Blocked, w, true);
    let split = par.should_split(rows * w.len());
    let mut gbuf = Vec::new();
    let gr = contiguous(&g, &mut gbuf);
    let mut out = vec![T::zero(); rows * n];
    if rows > 0 {
        packed.apply_all(be, gr, &mut out, split);
    }
    Array2::from_shape_vec((rows, n), out).expect("shape")
}
