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
//!
//! Layout: [`Rows`], [`RowsMut`] and the packed weights live in `buffers.rs`; the public
//! operations in `ops.rs`; `pipeline/` runs whole Monarch products and gradients on them;
//! `portable.rs` is the oracle and `x86/` the SIMD micro-kernels.

mod buffers;
mod ops;
pub(crate) mod pipeline;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use buffers::align_within;
pub use buffers::{PackedBlocked, PackedInterleaved, Rows, RowsMut};
pub use ops::{
    blocked_backward_into, blocked_dot_into, blocked_into, blocked_outer_into,
    interleaved_backward_into, interleaved_into, interleaved_outer_chunks_into,
    interleaved_outer_into,
};

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
