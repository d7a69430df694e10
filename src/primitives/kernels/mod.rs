//! Batched block-diagonal product kernels, the hot loops under every structured layer.
//!
//! A Monarch product is two batches of small GEMMs with a stride permutation between them. The
//! kernels here run both batches without a separate permutation pass, on rows stored batch-major
//! (`row b` of a `(batch, width)` buffer at offset `b·ld`):
//!
//! - **blocked**: `y[b, a·R + i] = Σ_j W[a, i, j] · x[b, a·C + j]` — the first factor. Each block
//!   is a small GEMM; the micro-kernel vectorises over a block's output features `i` (weights
//!   packed transposed and zero-padded to the vector width) and broadcasts `x`.
//! - **interleaved**: `y[b, i·NB + c] = Σ_t W[c, i, t] · x[b, t·NB + c]` — the second factor of
//!   the reference layout with both stride permutations folded in (`P_out · BD(W) · P_mid` with
//!   `P_mid = stride(C, NB)`, `P_out = stride(NB, R)`). Here the block index `c` is the fastest
//!   axis of both input and output, so the micro-kernel vectorises over `c` (weights packed as
//!   `[i][t][c]`) and reads and writes whole contiguous vectors.
//! - the two **outer sums** of the weight gradients, `Σ_b g ⊗ x` restricted to the blocks, in the
//!   blocked and the interleaved layout;
//! - the **fused backward** of a factor ([`blocked_backward_into`], [`interleaved_backward_into`]):
//!   its weight gradient and input gradient from one copy of each chunk of rows.
//!
//! Every operation has a portable implementation (the oracle, generic over every
//! [`Scalar`], used for complex scalars) and, for `f32`/`f64` on x86-64,
//! register-blocked AVX2+FMA and AVX-512 micro-kernels chosen at run time
//! ([`Backend::detect`]). Each output element is accumulated by one fused-multiply-add chain in
//! a fixed order (the Monarch VJP's interleaved weight gradient: a fixed number of such chains,
//! set by the row count, added in order), so results do not depend on how the work is split
//! over threads.
//!
//! ```
//! use monarch::primitives::kernels::{blocked_into, Backend, PackedBlocked, Rows, RowsMut};
//! use monarch::ndarray::Array3;
//! // Two 2×3 blocks applied to one row of length 6.
//! let w = Array3::from_shape_fn((2, 2, 3), |(a, i, j)| (a * 6 + i * 3 + j) as f32);
//! let pw = PackedBlocked::pack(w.view());
//! let x = [1.0f32; 6];
//! let mut y = [0.0f32; 4];
//! blocked_into(
//!     Backend::detect(),
//!     &pw,
//!     0..2,
//!     Rows::new(&x, 6, 1, 6),
//!     RowsMut::new(&mut y, 4, 1, 4),
//! );
//! assert_eq!(y, [3.0, 12.0, 21.0, 30.0]);
//! ```

pub(crate) mod pipeline;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::primitives::error::{check_shape, Result};
use crate::{Par, Scalar};
use ndarray::{Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;
use std::any::TypeId;
use std::ops::Range;

/// Padding of packed weights: a multiple of every vector width (16 `f32` lanes).
pub(crate) const PAD: usize = 16;

/// Packed factors of at least this many elements are packed by several threads (below it,
/// waking a second thread costs about as much as it saves: 4 → 13 µs for 32 K elements).
const PACK_PAR_MIN: usize = 1 << 16;

/// Runs `f(index, chunk)` on the `chunk`-sized pieces of `data`, on the rayon pool when
/// `parallel`. Each piece is processed by the same call either way, so results do not depend
/// on the choice.
pub(crate) fn for_each_chunk<T: Send>(
    data: &mut [T],
    chunk: usize,
    parallel: bool,
    f: impl Fn((usize, &mut [T])) + Sync + Send,
) {
    let chunk = chunk.max(1);
    if parallel {
        data.par_chunks_mut(chunk).enumerate().for_each(f);
    } else {
        data.chunks_mut(chunk).enumerate().for_each(f);
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(PAD) * PAD
}

/// Side of the square tiles weights are packed in.
const TILE: usize = 8;

/// `dst[j·dld + i] = src[i·sld + j]` for `i < r`, `j < c`, in 8 × 8 tiles: a tile's reads and
/// writes stay in L1 where whole rows at a power-of-two stride would evict each other (packing
/// a 32 × 32 × 32 f32 factor for the blocked stage went from 20 to 16 µs, and for the
/// interleaved stage from 42 to 16 µs, on one thread).
fn transpose_tiles<T: Copy>(src: &[T], sld: usize, dst: &mut [T], dld: usize, r: usize, c: usize) {
    for i0 in (0..r).step_by(TILE) {
        let ni = TILE.min(r - i0);
        for j0 in (0..c).step_by(TILE) {
            let nj = TILE.min(c - j0);
            if ni == TILE && nj == TILE {
                // Whole tiles through fixed-size arrays: eight row loads, eight row stores.
                let tile: [[T; TILE]; TILE] = std::array::from_fn(|i| {
                    src[(i0 + i) * sld + j0..][..TILE]
                        .try_into()
                        .expect("tile row")
                });
                for j in 0..TILE {
                    let out: &mut [T; TILE] = (&mut dst[(j0 + j) * dld + i0..][..TILE])
                        .try_into()
                        .expect("tile row");
                    *out = std::array::from_fn(|i| tile[i][j]);
                }
                continue;
            }
            for i in i0..i0 + ni {
                let row = &src[i * sld + j0..][..nj];
                for (jj, &v) in row.iter().enumerate() {
                    dst[(j0 + jj) * dld + i] = v;
                }
            }
        }
    }
}

/// Which implementation runs the micro-kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Plain Rust loops, any scalar; the reference every other path is tested against.
    Portable,
    /// 256-bit AVX2 + FMA micro-kernels (`f32`, `f64`).
    Avx2,
    /// 512-bit AVX-512F micro-kernels (`f32`, `f64`).
    Avx512,
}

impl Backend {
    /// Every backend, fastest last.
    pub const ALL: [Backend; 3] = [Backend::Portable, Backend::Avx2, Backend::Avx512];

    /// True if this CPU can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest backend this CPU supports (detected once).
    pub fn detect() -> Backend {
        static BEST: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            Backend::ALL
                .into_iter()
                .rev()
                .find(|b| b.is_available())
                .unwrap_or(Backend::Portable)
        })
    }

    /// The backend that really runs for scalar `T`: SIMD backends serve `f32` and `f64` only.
    ///
    /// # Panics
    /// If `self` is not available on this CPU (asking for an absent instruction set is a bug).
    fn resolve<T: Scalar>(self) -> Backend {
        assert!(
            self.is_available(),
            "kernel backend {self:?} is not supported by this CPU"
        );
        if is_f32::<T>() || is_f64::<T>() {
            self
        } else {
            Backend::Portable
        }
    }
}

fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}
fn is_f64<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f64>()
}

/// Read-only rows: `nrows` rows of `ncols` elements, row `b` starting at `data[b·ld]`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a, T> {
    data: &'a [T],
    ld: usize,
    nrows: usize,
    ncols: usize,
}

impl<'a, T> Rows<'a, T> {
    /// Wraps `data` as rows.
    ///
    /// # Panics
    /// If `ld < ncols` or `data` is too short for `nrows` rows.
    pub fn new(data: &'a [T], ld: usize, nrows: usize, ncols: usize) -> Self {
        assert!(ld >= ncols, "row stride {ld} < row length {ncols}");
        assert!(
            nrows == 0 || data.len() >= (nrows - 1) * ld + ncols,
            "buffer of {} elements too short for {nrows} rows of {ncols} (stride {ld})",
            data.len()
        );
        Rows {
            data,
            ld,
            nrows,
            ncols,
        }
    }
    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.nrows
    }
    /// Row length.
    pub fn ncols(&self) -> usize {
        self.ncols
    }
    /// The row stride.
    pub fn ld(&self) -> usize {
        self.ld
    }
    /// The columns `cols` of every row.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn cols(self, cols: Range<usize>) -> Self {
        assert!(cols.start <= cols.end && cols.end <= self.ncols);
        // An empty view may have an empty buffer: never index past it.
        let data = if self.nrows == 0 {
            &self.data[..0]
        } else {
            &self.data[cols.start..(self.nrows - 1) * self.ld + cols.end]
        };
        Rows {
            data,
            ld: self.ld,
            nrows: self.nrows,
            ncols: cols.len(),
        }
    }
    /// The rows `rows`.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn rows(self, rows: Range<usize>) -> Self {
        assert!(rows.start <= rows.end && rows.end <= self.nrows);
        let start = (rows.start * self.ld).min(self.data.len());
        Rows {
            data: &self.data[start..],
            ld: self.ld,
            nrows: rows.len(),
            ncols: self.ncols,
        }
    }
    pub(crate) fn data(&self) -> &'a [T] {
        self.data
    }
}

/// Writable rows: `nrows` rows of `ncols` elements, row `b` starting at `data[b·ld]`.
#[derive(Debug)]
pub struct RowsMut<'a, T> {
    data: &'a mut [T],
    ld: usize,
    nrows: usize,
    ncols: usize,
}

impl<'a, T> RowsMut<'a, T> {
    /// Wraps `data` as writable rows.
    ///
    /// # Panics
    /// If `ld < ncols` or `data` is too short for `nrows` rows.
    pub fn new(data: &'a mut [T], ld: usize, nrows: usize, ncols: usize) -> Self {
        assert!(ld >= ncols, "row stride {ld} < row length {ncols}");
        assert!(
            nrows == 0 || data.len() >= (nrows - 1) * ld + ncols,
            "buffer of {} elements too short for {nrows} rows of {ncols} (stride {ld})",
            data.len()
        );
        RowsMut {
            data,
            ld,
            nrows,
            ncols,
        }
    }
    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.nrows
    }
    /// Row length.
    pub fn ncols(&self) -> usize {
        self.ncols
    }
    /// The row stride.
    pub fn ld(&self) -> usize {
        self.ld
    }
}

/// A block-diagonal factor `(nb, rows, cols)` packed for [`blocked_into`]:
/// `wt[a][j][i] = W[a, i, j]` with `i` zero-padded to a multiple of the vector width.
#[derive(Debug, Clone)]
pub struct PackedBlocked<T> {
    w: Vec<T>,
    nb: usize,
    rows: usize,
    cols: usize,
    rpad: usize,
}

impl<T: Scalar> PackedBlocked<T> {
    /// Packs blocks `w` of shape `(nb, rows, cols)` (stored out×in).
    pub fn pack(w: ArrayView3<T>) -> Self {
        let (nb, rows, cols) = w.dim();
        let src = w.as_standard_layout();
        let src = src.as_slice().expect("standard layout");
        // Block `a` row `i` (contiguous in `src`) becomes column `i` of the packed block.
        Self::pack_blocks(nb, rows, cols, |a, dst, rpad| {
            let blk = &src[a * rows * cols..(a + 1) * rows * cols];
            transpose_tiles(blk, cols, dst, rpad, rows, cols);
        })
    }

    /// Packs the blockwise transpose of `w` (`(nb, rows, cols)` → blocks `cols × rows`).
    pub fn pack_transposed(w: ArrayView3<T>) -> Self {
        let (nb, rows, cols) = w.dim();
        let src = w.as_standard_layout();
        let src = src.as_slice().expect("standard layout");
        // Block `a` row `i` becomes packed row `i`: a plain copy.
        Self::pack_blocks(nb, cols, rows, |a, dst, rpad| {
            let blk = &src[a * rows * cols..(a + 1) * rows * cols];
            for (d, row) in dst.chunks_mut(rpad).zip(blk.chunks_exact(cols)) {
                d[..cols].copy_from_slice(row);
            }
        })
    }

    /// Packed blocks of `rows × cols` (out×in), each filled by `fill(a, block, rpad)` into its
    /// zeroed `cols × rpad` slot; large factors are filled in parallel (packing is a pass
    /// over all weights on every product, as large as the product itself at a few rows).
    fn pack_blocks(
        nb: usize,
        rows: usize,
        cols: usize,
        fill: impl Fn(usize, &mut [T], usize) + Sync,
    ) -> Self {
        let rpad = round_up(rows);
        let mut w = vec![T::zero(); nb * cols * rpad];
        let par = w.len() >= PACK_PAR_MIN;
        for_each_chunk(&mut w, cols * rpad, par, |(a, d)| fill(a, d, rpad));
        PackedBlocked {
            w,
            nb,
            rows,
            cols,
            rpad,
        }
    }

    /// Number of blocks.
    pub fn nblocks(&self) -> usize {
        self.nb
    }
    /// Output features per block `R`.
    pub fn block_rows(&self) -> usize {
        self.rows
    }
    /// Input features per block `C`.
    pub fn block_cols(&self) -> usize {
        self.cols
    }
}

/// A factor `(nb, rows, cols)` packed for [`interleaved_into`]: the block index `c` is cut into
/// chunks of 16 (zero-padded), and `wp[c / 16][i][t][c % 16] = W[c, i, t]`, so the weights a
/// micro-kernel streams for one chunk and a few output features are contiguous.
#[derive(Debug, Clone)]
pub struct PackedInterleaved<T> {
    w: Vec<T>,
    nb: usize,
    rows: usize,
    cols: usize,
    nbpad: usize,
}

impl<T: Scalar> PackedInterleaved<T> {
    /// Packs blocks `w` of shape `(nb, rows, cols)` (stored out×in).
    pub fn pack(w: ArrayView3<T>) -> Self {
        let (nb, rows, cols) = w.dim();
        let src = w.as_standard_layout();
        let src = src.as_slice().expect("standard layout");
        Self::pack_with(nb, rows, cols, src, cols, 1)
    }

    /// Packs the blockwise transpose of `w` (`(nb, rows, cols)` → blocks `cols × rows`).
    pub fn pack_transposed(w: ArrayView3<T>) -> Self {
        let (nb, rows, cols) = w.dim();
        let src = w.as_standard_layout();
        let src = src.as_slice().expect("standard layout");
        Self::pack_with(nb, cols, rows, src, 1, cols)
    }

    /// Packs block element `(c, i, t) = src[c·rows·cols + i·si + t·sj]` (`sj == 1`, or `si ==
    /// 1` for the transpose): one chunk of 16 blocks at a time (chunks in parallel for large
    /// factors). The transpose goes in 8 × 8 tiles of `(i, t)` with the lanes innermost but
    /// one, so a tile's 64 destination lines fill completely while in L1 (element by element,
    /// with the lanes' blocks a power-of-two stride apart, packing a 32 × 32 × 32 f32 factor
    /// took 42 µs on one thread, now 23 µs).
    fn pack_with(nb: usize, rows: usize, cols: usize, src: &[T], si: usize, sj: usize) -> Self {
        let nbpad = round_up(nb);
        let mut w = vec![T::zero(); rows * cols * nbpad];
        let blk = rows * cols;
        let fill = |(ci, dst): (usize, &mut [T])| {
            let c0 = ci * PAD;
            let lanes = PAD.min(nb - c0);
            if sj == 1 {
                // Each block is one row of `rows·cols` elements: the chunk is a transpose.
                let blocks = &src[c0 * blk..(c0 + lanes) * blk];
                transpose_tiles(blocks, blk, dst, PAD, lanes, blk);
                return;
            }
            for i0 in (0..rows).step_by(TILE) {
                let ir = i0..(i0 + TILE).min(rows);
                for t0 in (0..cols).step_by(TILE) {
                    let tr = t0..(t0 + TILE).min(cols);
                    for lane in 0..lanes {
                        let b = &src[(c0 + lane) * blk..][..blk];
                        // The inner loop walks the source in order.
                        for t in tr.clone() {
                            for i in ir.clone() {
                                dst[(i * cols + t) * PAD + lane] = b[i * si + t * sj];
                            }
                        }
                    }
                }
            }
        };
        let par = w.len() >= PACK_PAR_MIN;
        for_each_chunk(&mut w, blk * PAD, par, fill);
        PackedInterleaved {
            w,
            nb,
            rows,
            cols,
            nbpad,
        }
    }

    /// Number of blocks `NB`.
    pub fn nblocks(&self) -> usize {
        self.nb
    }
    /// Output features per block `R`.
    pub fn block_rows(&self) -> usize {
        self.rows
    }
    /// Input features per block `C`.
    pub fn block_cols(&self) -> usize {
        self.cols
    }
}

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
fn chunked_layout<T: Scalar>(
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
struct SharedMut<T>(*mut T);
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
fn outer_dims<T>(ctx: &str, nb: usize, g: &Rows<T>, x: &Rows<T>) -> (usize, usize) {
    assert_eq!(g.nrows, x.nrows, "{ctx}: row counts");
    assert!(nb > 0, "{ctx}: no blocks");
    let (ni, cols) = (g.ncols / nb, x.ncols / nb);
    assert_eq!(g.ncols, ni * nb, "{ctx}: gradient width");
    assert_eq!(x.ncols, cols * nb, "{ctx}: input width");
    (ni, cols)
}

fn run_interleaved_outer<T: Scalar>(
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

/// Where an interleaved outer sum writes `(i, t, c)`, for block indices `c ∈ c0..c1`:
/// `i·ldi + t·ldt + (c/cw − c0/cw)·ldch + c mod cw` (`cw` a multiple of every vector width).
#[derive(Debug, Clone, Copy)]
struct OuterLayout {
    c0: usize,
    c1: usize,
    cw: usize,
    ldi: usize,
    ldt: usize,
    ldch: usize,
}

impl OuterLayout {
    fn at(&self, i: usize, t: usize, c: usize) -> usize {
        i * self.ldi + t * self.ldt + (c / self.cw - self.c0 / self.cw) * self.ldch + c % self.cw
    }

    /// Elements `out` must hold.
    fn len(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 || self.c0 == self.c1 {
            return 0;
        }
        self.at(rows - 1, cols - 1, self.c1 - 1) + 1
    }
}

/// Shape of a blocked operation on a block window.
#[derive(Debug, Clone, Copy)]
struct BlockedShape {
    nb: usize,
    rows: usize,
    cols: usize,
    rpad: usize,
}

/// Shape of an interleaved operation on an output-feature window.
#[derive(Debug, Clone, Copy)]
struct InterShape {
    nb: usize,
    rows: usize,
    cols: usize,
    nbpad: usize,
    /// First output feature of the window, and output features of the packed factor.
    ioff: usize,
    wrows: usize,
}

/// Rows processed together by one task: large enough to amortise the per-task set-up, small
/// enough that a chunk's intermediates stay in L2.
pub(crate) fn row_chunk(width: usize) -> usize {
    let target = (128 * 1024) / width.max(1);
    target.clamp(1, 256)
}

/// The block-restricted `gᵀ x`: `out[a, i, j] = Σ_b g[b, a·rows + i] · x[b, a·cols + j]`, on
/// a chosen backend (the weight gradient of a block-diagonal product).
///
/// # Errors
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if `g` is not `(batch, nb·rows)` or
/// `x` not `(batch, nb·cols)`; [`Error::ZeroSize`](crate::Error::ZeroSize) for a zero block
/// count or size.
///
/// # Panics
/// If `backend` is not available on this CPU.
pub fn blocks_outer_sum_with<T: Scalar>(
    backend: Backend,
    g: ArrayView2<T>,
    x: ArrayView2<T>,
    (nb, rows, cols): (usize, usize, usize),
    par: Par,
) -> Result<Array3<T>> {
    let ctx = "kernels::blocks_outer_sum_with";
    crate::primitives::error::check_nonzero(nb, "kernels::blocks_outer_sum_with: blocks")?;
    crate::primitives::error::check_nonzero(rows, "kernels::blocks_outer_sum_with: block rows")?;
    crate::primitives::error::check_nonzero(cols, "kernels::blocks_outer_sum_with: block columns")?;
    check_shape(ctx, "gradient shape", (g.nrows(), nb * rows), g.dim())?;
    check_shape(ctx, "input shape", (g.nrows(), nb * cols), x.dim())?;
    Ok(pipeline::blocks_outer(g, x, (nb, rows, cols), par, backend))
}

/// Measures the single-thread `f32` FMA throughput of `backend` in GFLOP/s by running
/// independent fused-multiply-add chains for at least `min_seconds` (best of a few trials).
/// Run it on every thread of a pool at once to get the machine's peak. Returns 0 for the
/// portable backend (no defined vector width).
///
/// # Panics
/// If `backend` is not available on this CPU.
pub fn fma_peak_gflops(backend: Backend, min_seconds: f64) -> f64 {
    if backend == Backend::Portable {
        assert!(backend.is_available());
        return 0.0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut best = 0.0f64;
        let mut sink = 0.0f32;
        for _ in 0..3 {
            let mut iters = 1 << 16;
            loop {
                let t = std::time::Instant::now();
                let (flops, chk) = x86::fma_loop(backend, iters);
                let dt = t.elapsed().as_secs_f64();
                sink += chk;
                if dt >= min_seconds / 3.0 || iters >= 1 << 40 {
                    best = best.max(flops / dt / 1e9);
                    break;
                }
                iters *= 2;
            }
        }
        std::hint::black_box(sink);
        best
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("SIMD backends exist only on x86-64")
    }
}
