//! Row views over caller buffers and weights packed for the micro-kernels.

use super::*;

/// Bytes to which packed weights and scratch buffers are aligned: a whole cache line, so a
/// 64-byte vector load from them never straddles two lines. (glibc returns large blocks
/// 16 bytes past a line; aligned, the forward ran 6–19 % faster on one thread of an Intel Xeon
/// with two 512-bit FMA ports, and level on Zen 4: docs/perf-notes.md.)
pub(crate) const ALIGN: usize = 64;

/// Spare elements that leave room to align a buffer of `T` to [`ALIGN`] bytes.
fn align_slack<T>() -> usize {
    ALIGN / std::mem::size_of::<T>().max(1)
}

/// Offset (in elements, at most `slack`) of the first [`ALIGN`]-aligned element of `buf`, or 0
/// when no element within `slack` is aligned (element sizes that do not divide [`ALIGN`]).
fn aligned_offset<T>(buf: &[T], slack: usize) -> usize {
    match buf.as_ptr().align_offset(ALIGN) {
        off if off <= slack && off <= buf.len() => off,
        _ => 0,
    }
}

/// Grows `buf` with zeros until it holds `len` elements from its first [`ALIGN`]-aligned one,
/// and returns that element's index (existing contents are left as they are).
pub(crate) fn align_within<T: Scalar>(buf: &mut Vec<T>, len: usize) -> usize {
    let slack = align_slack::<T>();
    if buf.len() < len + slack {
        buf.resize(len + slack, T::zero());
    }
    aligned_offset(buf, slack)
}

/// A zero-initialised buffer whose first element sits on an [`ALIGN`]-byte boundary.
#[derive(Debug)]
pub(crate) struct AlignedVec<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Scalar> AlignedVec<T> {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> Self {
        let mut buf = Vec::new();
        let off = align_within(&mut buf, len);
        AlignedVec { buf, off, len }
    }
}

impl<T: Clone> Clone for AlignedVec<T> {
    // A derived clone would keep the offset, which is only right for the original allocation.
    fn clone(&self) -> Self {
        let mut buf = self.buf.clone();
        let off = aligned_offset(&buf, self.buf.len() - self.len);
        buf[off..off + self.len].clone_from_slice(self);
        AlignedVec {
            buf,
            off,
            len: self.len,
        }
    }
}

impl<T> std::ops::Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> std::ops::DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Read-only rows: `nrows` rows of `ncols` elements, row `b` starting at `data[b·ld]`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a, T> {
    pub(super) data: &'a [T],
    pub(super) ld: usize,
    pub(super) nrows: usize,
    pub(super) ncols: usize,
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
    pub(super) data: &'a mut [T],
    pub(super) ld: usize,
    pub(super) nrows: usize,
    pub(super) ncols: usize,
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
    pub(super) w: AlignedVec<T>,
    pub(super) nb: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rpad: usize,
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
        let mut w = AlignedVec::zeros(nb * cols * rpad);
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
    pub(super) w: AlignedVec<T>,
    pub(super) nb: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) nbpad: usize,
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
        let mut w = AlignedVec::zeros(rows * cols * nbpad);
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

#[cfg(test)]
mod tests {
    use super::*;
    use num_complex::Complex;

    fn is_aligned<T>(s: &[T]) -> bool {
        (s.as_ptr() as usize).is_multiple_of(ALIGN)
    }

    #[test]
    fn aligned_vec_starts_on_a_cache_line_and_clones_keep_contents() {
        for len in [1usize, 15, 16, 1000, 65537] {
            let mut a = AlignedVec::<f32>::zeros(len);
            assert_eq!(a.len(), len);
            assert!(is_aligned(&a));
            for (i, x) in a.iter_mut().enumerate() {
                *x = i as f32;
            }
            let b = a.clone();
            assert!(is_aligned(&b));
            assert_eq!(&a[..], &b[..]);
            let c = AlignedVec::<Complex<f64>>::zeros(len);
            assert!(is_aligned(&c) && c.iter().all(|z| *z == Complex::new(0.0, 0.0)));
        }
    }

    #[test]
    fn packed_weights_are_aligned() {
        let w = ndarray::Array3::<f64>::from_shape_fn((3, 5, 7), |(a, i, j)| (a + i * j) as f64);
        assert!(is_aligned(&PackedBlocked::pack(w.view()).w));
        assert!(is_aligned(&PackedInterleaved::pack(w.view()).w));
    }
}
