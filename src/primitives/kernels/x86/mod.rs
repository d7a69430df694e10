//! AVX2+FMA and AVX-512 micro-kernels for `f32` and `f64`.
//!
//! One generic register-blocked micro-kernel per operation is written against the tiny [`Simd`]
//! trait and instantiated for four vector types. The generic code is `#[inline(always)]` and is
//! only ever called from an entry function carrying `#[target_feature]`, so after inlining every
//! intrinsic is compiled with the instruction set it needs. Entry functions are reached only
//! through [`Backend`] dispatch after `is_x86_feature_detected!` said yes.
//!
//! Tails: packed weights are zero-padded to a multiple of 16 elements, so weight loads are always
//! full vectors; activations and outputs use masked loads and stores for partial vectors
//! (masked-off lanes are never read from or written to memory, faults included).
//!
//! Layout: [`simd`] holds the vector trait and its four instantiations; [`forward`] the
//! micro-kernels and drivers of the products (blocked, interleaved, dot form) with the row
//! staging they share; [`backward`] the fused weight-gradient and input-gradient passes; this
//! file the `#[target_feature]` entry points and the dispatch from [`Backend`].

use super::{Backend, BlockedShape, InterShape, OuterLayout, Rows, RowsMut, PAD};
use std::any::TypeId;
use std::arch::x86_64::*;
use std::ops::Range;

/// Rows per chunk of the blocked outer sums, and the most per chunk of the interleaved ones
/// (see `inter_outer_rows`); fixed by the shape, so results never depend on threads.
pub(super) const OUTER_ROWS: usize = 32;

/// Rows a blocked pass stages at a time (see [`stage_rows`]).
pub(super) const STAGE_ROWS: usize = 32;

/// Smallest row pitch (bytes) at which a blocked pass stages whole rows: below a page, a
/// block's windows of successive rows share pages and the prefetchers follow them in place
/// (staging measured 10–17% slower at n = 256, rows of 1 KB).
pub(super) const STAGE_PITCH: usize = 4096;

/// Largest staging buffer (bytes) of a blocked pass: it must stay in L2 beside the weights.
/// Wider rows copy one block's column window at a time instead.
pub(super) const STAGE_MAX: usize = 256 << 10;

/// Uninitialised room for `elems` elements of `S`, starting on a vector boundary (a cache line
/// for AVX-512), for the staging buffers of rows and panels. The caller writes every element it
/// reads, through raw pointers only.
pub(super) fn staging<S: Simd>(elems: usize) -> Vec<S::V> {
    Vec::with_capacity(elems.div_ceil(S::LANES))
}

/// Maps a runtime count to a const generic, for the listed values only.
macro_rules! const_n {
    ($n:expr, $N:ident in [$($v:literal)*] => $body:expr) => {
        match $n {
            $($v => {
                const $N: usize = $v;
                $body
            })*
            _ => unreachable!("tile size out of range"),
        }
    };
}

mod backward;
mod forward;
mod simd;

use backward::*;
use forward::*;
use simd::*;

macro_rules! entries {
    ($feat:literal, $blocked:ident, $inter:ident, $dot:ident, $bback:ident, $iback:ident) => {
        /// # Safety
        /// The CPU must support the enabled features; as in [`drv_blocked_backward`].
        #[target_feature(enable = $feat)]
        unsafe fn $bback<S: Simd>(
            sh: BlockedShape,
            prod: Option<Product<BlockedShape, S::E>>,
            g: &Rows<S::E>,
            x: &Rows<S::E>,
            out: &mut [S::E],
            accumulate: bool,
        ) {
            drv_blocked_backward::<S>(sh, prod, g, x, out, accumulate)
        }
        /// # Safety
        /// The CPU must support the enabled features; as in [`drv_inter_backward`].
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $iback<S: Simd>(
            sh: InterShape,
            lay: OuterLayout,
            prod: Option<Product<InterShape, S::E>>,
            g: &Rows<S::E>,
            x: &Rows<S::E>,
            out: &mut [S::E],
            accumulate: bool,
        ) {
            drv_inter_backward::<S>(sh, lay, prod, g, x, out, accumulate)
        }
        /// # Safety
        /// The CPU must support the enabled features; shapes as in [`drv_dot`].
        #[target_feature(enable = $feat)]
        unsafe fn $dot<S: Simd>(sh: BlockedShape, w: &[S::E], x: &Rows<S::E>, y: &mut RowsMut<S::E>)
        where
            S::E: std::ops::Add<Output = S::E> + Default,
        {
            drv_dot::<S>(sh, w, x, y)
        }
        /// # Safety
        /// The CPU must support the enabled features; shapes as in [`drv_blocked`].
        #[target_feature(enable = $feat)]
        unsafe fn $blocked<S: Simd>(
            sh: BlockedShape,
            w: &[S::E],
            x: &Rows<S::E>,
            y: &mut RowsMut<S::E>,
        ) {
            drv_blocked::<S>(sh, w, x, y)
        }
        /// # Safety
        /// The CPU must support the enabled features; shapes as in [`drv_inter`].
        #[target_feature(enable = $feat)]
        unsafe fn $inter<S: Simd>(
            sh: InterShape,
            w: &[S::E],
            x: &Rows<S::E>,
            y: &mut RowsMut<S::E>,
        ) {
            drv_inter::<S>(sh, w, x, y)
        }
    };
}

entries!(
    "avx512f",
    blocked_512,
    inter_512,
    dot_512,
    bback_512,
    iback_512
);
entries!(
    "avx2,fma",
    blocked_256,
    inter_256,
    dot_256,
    bback_256,
    iback_256
);

/// Reinterprets a slice of `T` as `U` when they are the same type.
fn cast<T: 'static, U: 'static>(s: &[T]) -> &[U] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<U>());
    // SAFETY: `T` and `U` are the same type (checked above): same layout, same validity.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<U>(), s.len()) }
}

fn cast_mut<T: 'static, U: 'static>(s: &mut [T]) -> &mut [U] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<U>());
    // SAFETY: `T` and `U` are the same type (checked above); the borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<U>(), s.len()) }
}

fn cast_rows<'a, T: 'static, U: 'static>(r: &Rows<'a, T>) -> Rows<'a, U> {
    Rows {
        data: cast(r.data),
        ld: r.ld,
        nrows: r.nrows,
        ncols: r.ncols,
    }
}

fn cast_rows_mut<'b, T: 'static, U: 'static>(r: &'b mut RowsMut<'_, T>) -> RowsMut<'b, U> {
    RowsMut {
        data: cast_mut(&mut *r.data),
        ld: r.ld,
        nrows: r.nrows,
        ncols: r.ncols,
    }
}

/// Runs `$f512::<$s512>` or `$f256::<$s256>` on the backend `$b`.
macro_rules! dispatch {
    ($b:expr, $s512:ty, $s256:ty, $f512:ident, $f256:ident, ($($arg:expr),*)) => {{
        assert!($b.is_available(), "backend {:?} not supported by this CPU", $b);
        // SAFETY (both arms): the backend's instruction set was detected above, and the
        // shapes were checked against the buffer lengths by the caller.
        match $b {
            Backend::Avx512 => unsafe { $f512::<$s512>($($arg),*) },
            Backend::Avx2 => unsafe { $f256::<$s256>($($arg),*) },
            Backend::Portable => unreachable!("portable path handled by the caller"),
        }
    }};
}

fn check_blocked(sh: &BlockedShape, wlen: usize, x: (usize, usize), y: (usize, usize)) {
    assert!(wlen >= sh.nb * sh.cols * sh.rpad && sh.rpad >= sh.rows.div_ceil(16) * 16);
    assert_eq!(x.1, sh.nb * sh.cols);
    assert_eq!(y.1, sh.nb * sh.rows);
    assert_eq!(x.0, y.0);
}

pub(super) fn dispatch_blocked<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    w: &[T],
    x: &Rows<T>,
    y: &mut RowsMut<T>,
) {
    check_blocked(&sh, w.len(), (x.nrows, x.ncols), (y.nrows, y.ncols));
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (w, x, mut y) = (
            cast::<T, f32>(w),
            cast_rows::<T, f32>(x),
            cast_rows_mut::<T, f32>(y),
        );
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            blocked_512,
            blocked_256,
            (sh, w, &x, &mut y)
        )
    } else {
        let (w, x, mut y) = (
            cast::<T, f64>(w),
            cast_rows::<T, f64>(x),
            cast_rows_mut::<T, f64>(y),
        );
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            blocked_512,
            blocked_256,
            (sh, w, &x, &mut y)
        )
    }
}

pub(super) fn dispatch_dot<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    w: &[T],
    x: &Rows<T>,
    y: &mut RowsMut<T>,
) {
    assert!(w.len() >= sh.nb * sh.rows * sh.cols);
    assert_eq!(x.ncols, sh.nb * sh.cols);
    assert_eq!(y.ncols, sh.nb * sh.rows);
    assert_eq!(x.nrows, y.nrows);
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (w, x, mut y) = (
            cast::<T, f32>(w),
            cast_rows::<T, f32>(x),
            cast_rows_mut::<T, f32>(y),
        );
        dispatch!(b, Avx512F32, Avx2F32, dot_512, dot_256, (sh, w, &x, &mut y))
    } else {
        let (w, x, mut y) = (
            cast::<T, f64>(w),
            cast_rows::<T, f64>(x),
            cast_rows_mut::<T, f64>(y),
        );
        dispatch!(b, Avx512F64, Avx2F64, dot_512, dot_256, (sh, w, &x, &mut y))
    }
}

pub(super) fn dispatch_interleaved<T: 'static>(
    b: Backend,
    sh: InterShape,
    w: &[T],
    x: &Rows<T>,
    y: &mut RowsMut<T>,
) {
    assert!(sh.nbpad >= sh.nb.div_ceil(PAD) * PAD && sh.ioff + sh.rows <= sh.wrows);
    assert!(w.len() >= sh.wrows * sh.cols * sh.nbpad);
    assert_eq!(x.ncols, sh.cols * sh.nb);
    assert_eq!(y.ncols, sh.rows * sh.nb);
    assert_eq!(x.nrows, y.nrows);
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (w, x, mut y) = (
            cast::<T, f32>(w),
            cast_rows::<T, f32>(x),
            cast_rows_mut::<T, f32>(y),
        );
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            inter_512,
            inter_256,
            (sh, w, &x, &mut y)
        )
    } else {
        let (w, x, mut y) = (
            cast::<T, f64>(w),
            cast_rows::<T, f64>(x),
            cast_rows_mut::<T, f64>(y),
        );
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            inter_512,
            inter_256,
            (sh, w, &x, &mut y)
        )
    }
}

pub(super) fn dispatch_blocked_outer<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
) {
    // SAFETY: no product, so no output pointer to vouch for.
    unsafe { dispatch_blocked_backward(b, sh, None, g, x, out, false) }
}

fn check_inter_outer<T>(sh: &InterShape, lay: &OuterLayout, g: &Rows<T>, x: &Rows<T>, out: usize) {
    assert_eq!(g.ncols, sh.rows * sh.nb);
    assert_eq!(x.ncols, sh.cols * sh.nb);
    assert_eq!(g.nrows, x.nrows);
    // Every vector the kernel stores stays inside one run of `cw` lanes, and inside `out`.
    assert!(lay.c0 < lay.c1 && lay.c1 <= sh.nb);
    assert!(lay.cw.is_multiple_of(PAD) || (lay.c0 == 0 && lay.cw == sh.nb));
    assert!(out >= lay.len(sh.rows, sh.cols));
}

pub(super) fn dispatch_interleaved_outer<T: 'static>(
    b: Backend,
    sh: InterShape,
    lay: OuterLayout,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
) {
    // SAFETY: no product, so no output pointer to vouch for.
    unsafe { dispatch_interleaved_backward(b, sh, lay, None, g, x, out, false) }
}

/// `prod` (shape, packed `Wᵀ`, output pointer, its row stride) as the kernels' [`Product`] of `U`.
fn product_of<Sh, T: 'static, U: 'static>(
    prod: Option<(Sh, &[T], *mut T, usize)>,
) -> Option<Product<Sh, U>> {
    prod.map(|(shape, w, gx, ld)| Product {
        shape,
        w: cast::<T, U>(w).as_ptr(),
        gx: gx.cast::<U>(),
        ld,
    })
}

/// [`drv_blocked_backward`] on backend `b`; `prod` is the transposed product's shape, packed
/// weights, output pointer and row stride.
///
/// # Safety
/// With `prod`, its output pointer is valid for `g.nrows` rows of `sh.nb·sh.cols` elements at
/// its stride, written by no one else during the call.
pub(super) unsafe fn dispatch_blocked_backward<T: 'static>(
    b: Backend,
    sh: BlockedShape,
    prod: Option<(BlockedShape, &[T], *mut T, usize)>,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
    accumulate: bool,
) {
    assert_eq!(g.ncols, sh.nb * sh.rows);
    assert_eq!(x.ncols, sh.nb * sh.cols);
    assert_eq!(g.nrows, x.nrows);
    assert_eq!(out.len(), sh.nb * sh.rows * sh.cols);
    if let Some((wsh, wt, _, ld)) = prod {
        assert!(wsh.nb == sh.nb && wsh.rows == sh.cols && wsh.cols == sh.rows);
        check_blocked(&wsh, wt.len(), (0, sh.nb * sh.rows), (0, sh.nb * sh.cols));
        assert!(ld >= sh.nb * sh.cols);
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (g, x, out) = (
            cast_rows::<T, f32>(g),
            cast_rows::<T, f32>(x),
            cast_mut::<T, f32>(out),
        );
        let prod = product_of::<_, T, f32>(prod);
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            bback_512,
            bback_256,
            (sh, prod, &g, &x, out, accumulate)
        )
    } else {
        let (g, x, out) = (
            cast_rows::<T, f64>(g),
            cast_rows::<T, f64>(x),
            cast_mut::<T, f64>(out),
        );
        let prod = product_of::<_, T, f64>(prod);
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            bback_512,
            bback_256,
            (sh, prod, &g, &x, out, accumulate)
        )
    }
}

/// [`drv_inter_backward`] on backend `b`; `prod` is the transposed product's shape, packed
/// weights, output pointer and row stride.
///
/// # Safety
/// With `prod`, its output pointer is valid for `g.nrows` rows of `sh.cols·sh.nb` elements at
/// its stride, and its lanes `lay.c0..lay.c1` written by no one else during the call.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn dispatch_interleaved_backward<T: 'static>(
    b: Backend,
    sh: InterShape,
    lay: OuterLayout,
    prod: Option<(InterShape, &[T], *mut T, usize)>,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
    accumulate: bool,
) {
    check_inter_outer(&sh, &lay, g, x, out.len());
    if let Some((wsh, wt, _, ld)) = prod {
        assert!(wsh.nb == sh.nb && wsh.rows == sh.cols && wsh.cols == sh.rows);
        assert!(wsh.ioff == 0 && wsh.wrows == wsh.rows);
        assert!(wsh.nbpad >= sh.nb.div_ceil(PAD) * PAD);
        assert!(wt.len() >= wsh.wrows * wsh.cols * wsh.nbpad);
        assert!(ld >= sh.cols * sh.nb);
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (g, x, out) = (
            cast_rows::<T, f32>(g),
            cast_rows::<T, f32>(x),
            cast_mut::<T, f32>(out),
        );
        let prod = product_of::<_, T, f32>(prod);
        dispatch!(
            b,
            Avx512F32,
            Avx2F32,
            iback_512,
            iback_256,
            (sh, lay, prod, &g, &x, out, accumulate)
        )
    } else {
        let (g, x, out) = (
            cast_rows::<T, f64>(g),
            cast_rows::<T, f64>(x),
            cast_mut::<T, f64>(out),
        );
        let prod = product_of::<_, T, f64>(prod);
        dispatch!(
            b,
            Avx512F64,
            Avx2F64,
            iback_512,
            iback_256,
            (sh, lay, prod, &g, &x, out, accumulate)
        )
    }
}

/// `iters` rounds of `C` independent FMA chains on full vectors of `S`; returns a value
/// depending on every chain so the loop cannot be removed.
///
/// `C` must cover the FMA latency on two ports (8 chains at 4 cycles) and, with the two
/// operands, fit the register file: 24 for the 32 registers of AVX-512, 12 for the 16 of AVX2,
/// where 24 chains spill to the stack and the loop measures stores instead of FMAs.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn fma_chains<S: Simd<E = f32>, const C: usize>(iters: usize) -> f32 {
    // Opaque inputs, and no fixed point: the compiler must run every FMA.
    let one = std::hint::black_box(1.0f32);
    let (a, b) = std::hint::black_box((0.999_9f32, 1e-4f32));
    let (av, bv) = (S::splat(&a), S::splat(&b));
    let mut acc = [S::splat(&one); C];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = S::fma(*v, av, bv);
        }
    }
    let mut out = [0.0f32; 16];
    let mut total = 0.0;
    for v in acc {
        S::store_part(out.as_mut_ptr(), v, S::LANES);
        total += out[..S::LANES].iter().sum::<f32>();
    }
    total
}

/// FMA chains of the peak probe on AVX-512 and on AVX2 (see [`fma_chains`]).
const CHAINS_512: usize = 24;
const CHAINS_256: usize = 12;

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_512(iters: usize) -> f32 {
    fma_chains::<Avx512F32, CHAINS_512>(iters)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_256(iters: usize) -> f32 {
    fma_chains::<Avx2F32, CHAINS_256>(iters)
}

/// Runs the FMA loop of `backend` for `iters` rounds; returns `(flops, checksum)`.
pub(super) fn fma_loop(backend: Backend, iters: usize) -> (f64, f32) {
    assert!(backend.is_available());
    match backend {
        // SAFETY: the instruction set was detected just above.
        Backend::Avx512 => ((iters * CHAINS_512 * 16 * 2) as f64, unsafe {
            fma_chains_512(iters)
        }),
        // SAFETY: the instruction set was detected just above.
        Backend::Avx2 => ((iters * CHAINS_256 * 8 * 2) as f64, unsafe {
            fma_chains_256(iters)
        }),
        Backend::Portable => (0.0, 0.0),
    }
}
