//! Softmax attention, exact and Monarch-structured.
//!
//! Layout is PyTorch's `scaled_dot_product_attention`: `q`, `k` of shape
//! `(batch, heads, N, d)` and `v` of shape `(batch, heads, N, d_v)`; the optional key-padding
//! mask has shape `(batch, N)` with `true` = "this key takes part" (SDPA's boolean convention).
//! The score scale defaults to `1/√d`.
//!
//! - [`softmax_attention`] / [`ExactAttention`]: exact attention computed flash-style (tiles of
//!   keys with a running maximum and sum; the `N × N` score matrix never exists), multithreaded,
//!   optionally returning each row's log-sum-exp.
//! - [`MonarchAttention`]: the zero-shot sub-quadratic replacement of Yaras et al. (2025). It
//!   maximises the softmax variational objective `⟨A, S⟩ + H(A)` over row-stochastic Monarch
//!   matrices `A[l·b+j, a·b+i] = L_j[a, l]·R_a[j, i]` by alternating exact maximisation, in
//!   `O(N^1.5·d)` time and `O(N·d)` memory for block size `b ≈ √N`. Its per-row objective is a
//!   lower bound of the exact log-sum-exp; its VJP recomputes rather than stores the factors.
//!
//! Masked keys get no weight. A batch element whose keys are all masked has no meaningful
//! softmax: both methods return [`Error::InvalidArgument`](crate::Error) rather than NaN.
//! Every softmax subtracts its row maximum, so rows whose scores are all around −1000 are as
//! accurate as any other.
//!
//! Speed: exact attention runs f32 tiles through AVX-512 broadcast-FMA kernels (`Kᵀ` packed once
//! per head) with a vectorised `exp`, parallel over heads and query tiles; other types and CPUs
//! use `ndarray`'s `general_mat_mul`. MonarchAttention runs its `b × b` and `m × m` products
//! through `general_mat_mul`, parallel over `(batch, head)` pairs (a single head runs on one
//! thread). Measured numbers: `docs/attention_results.md`.
//!
//! ```
//! use monarch::attention::{softmax_attention, MonarchAttention, Padding};
//! use monarch::ndarray::Array4;
//! // Smooth positional inputs with k = q: attention is concentrated near the diagonal.
//! let (n, d) = (64, 8);
//! let q = Array4::from_shape_fn((1, 2, n, d), |(_, h, t, c)| {
//!     ((t as f64) * 0.05 * (c as f64 + 1.0) + h as f64).sin()
//! });
//! let exact = softmax_attention(q.view(), q.view(), q.view(), None).unwrap();
//! let ma = MonarchAttention::new(8, 2).padding(Padding::Post);
//! let approx = ma.forward(q.view(), q.view(), q.view(), None).unwrap();
//! let err = (&approx - &exact).mapv(|x| x * x).sum().sqrt() / exact.mapv(|x| x * x).sum().sqrt();
//! assert!(err < 0.5, "relative error {err}");
//! // One block covering all keys is exact attention.
//! let one = MonarchAttention::new(n, 1).forward(q.view(), q.view(), q.view(), None).unwrap();
//! assert!((&one - &exact).iter().all(|e| e.abs() < 1e-10));
//! ```

mod exact;
mod kernels;
mod monarch_attention;
mod monarch_vjp;
mod softmax;

pub use exact::{softmax_attention, ExactAttention};
pub use kernels::kernel_name;
pub use monarch_attention::{MonarchAttention, Padding, MAX_STEPS};
pub use monarch_vjp::MonarchAttentionGrad;

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::{Par, RealScalar};
use ndarray::{ArrayView2, ArrayView4};
use rayon::prelude::*;

/// Checks the SDPA shapes and returns `(batch, heads, n_q, n_k, d, d_v)`.
pub(crate) fn check_qkv<T: RealScalar>(
    ctx: &str,
    q: &ArrayView4<T>,
    k: &ArrayView4<T>,
    v: &ArrayView4<T>,
    mask: Option<&ArrayView2<bool>>,
    par: Par,
) -> Result<(usize, usize, usize, usize, usize, usize)> {
    let (bq, hq, nq, d) = q.dim();
    let (bk, hk, nk, dk) = k.dim();
    let (bv, hv, nv, dv) = v.dim();
    // Batch and heads of size 0 are an empty batch: an empty result (PyTorch's rule, the
    // crate's for every entry point). Lengths and feature sizes must be positive.
    check_nonzero(nq, &format!("{ctx}: query length"))?;
    check_nonzero(d, &format!("{ctx}: head dimension"))?;
    check_nonzero(nk, &format!("{ctx}: key length"))?;
    check_nonzero(dv, &format!("{ctx}: value dimension"))?;
    if (bk, hk, dk) != (bq, hq, d) {
        return Err(Error::shape(
            format!("{ctx}: k (batch, heads, N, d)"),
            (bq, hq, "N", d),
            (bk, hk, nk, dk),
        ));
    }
    if (bv, hv, nv) != (bq, hq, nk) {
        return Err(Error::shape(
            format!("{ctx}: v (batch, heads, N, d_v)"),
            (bq, hq, nk, "d_v"),
            (bv, hv, nv, dv),
        ));
    }
    if let Some(m) = mask {
        if m.dim() != (bq, nk) {
            return Err(Error::shape(
                format!("{ctx}: key-padding mask (batch, N)"),
                (bq, nk),
                m.dim(),
            ));
        }
        for (b, row) in m.outer_iter().enumerate() {
            if !row.iter().any(|&x| x) {
                return Err(Error::invalid(format!(
                    "{ctx}: every key of batch element {b} is masked; softmax over no keys is undefined"
                )));
            }
        }
    }
    for (name, a) in [("q", q), ("k", k), ("v", v)] {
        if !all_finite(a, par) {
            return Err(Error::NonFinite {
                context: format!("{ctx}: {name}"),
            });
        }
    }
    Ok((bq, hq, nq, nk, d, dv))
}

/// The score scale: `explicit` or `1/√d`.
pub(crate) fn resolve_scale<T: RealScalar>(explicit: Option<f64>, d: usize) -> Result<T> {
    match explicit {
        Some(s) if !s.is_finite() => Err(Error::NonFinite {
            context: "attention: score scale".into(),
        }),
        Some(s) => Ok(T::from_f64(s)),
        None => Ok(T::from_f64(1.0 / (d as f64).sqrt())),
    }
}

/// Rejects inputs whose scores can leave the float range: per (batch, head),
/// `max(|scale|, 1)·max‖q_i‖·max‖k_j‖` — a Cauchy–Schwarz bound on every score `scale·q·k` and
/// on the unscaled dot product `q·k` the products form first — must not exceed the largest
/// finite `T`. Exact attention would return ∞ − ∞ = NaN for such rows, and MonarchAttention,
/// whose partial scores stay below the bound, would give wrong finite weights. Computed in
/// logarithms, so the check itself cannot overflow.
pub(crate) fn check_score_range<T: RealScalar>(
    ctx: &str,
    q: &ndarray::ArrayView4<T>,
    k: &ndarray::ArrayView4<T>,
    scale: T,
    par: Par,
) -> Result<()> {
    let ln_max = T::max_value().to_f64_val().ln();
    let ln_scale = scale.to_f64_val().abs().ln().max(0.0);
    // ln ‖x‖ without overflow: ln m + ½ ln Σ (x·(1/m))² with m = max |x| (each term ≤ 1),
    // in T with eight running lanes so the loops vectorise: the scan is O(N·d), but element
    // by element in f64 (a division each) it cost a sixth of MonarchAttention's time. A
    // subnormal m (whose 1/m overflows) takes the f64 route.
    let ln_norm = |row: ndarray::ArrayView1<T>| -> f64 {
        let max = |a: T, x: T| if x.abs() > a { x.abs() } else { a };
        let m = fold_lanes(row, max, max);
        if m == T::zero() {
            return f64::NEG_INFINITY;
        }
        let sum = if m >= T::min_positive_value() {
            let inv = T::one() / m;
            fold_lanes(row, |a, x| a + (x * inv) * (x * inv), |a, b| a + b).to_f64_val()
        } else {
            let m = m.to_f64_val();
            row.iter().map(|&x| (x.to_f64_val() / m).powi(2)).sum()
        };
        m.to_f64_val().ln() + 0.5 * sum.ln()
    };
    let ln_max_norm = |a: ndarray::ArrayView2<T>| {
        a.outer_iter()
            .map(ln_norm)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let nb = q.dim().0.min(k.dim().0);
    let nh = q.dim().1.min(k.dim().1);
    let bound = |i: usize| {
        let (b, h) = (i / nh, i % nh);
        let qh = q.slice(ndarray::s![b, h, .., ..]);
        let kh = k.slice(ndarray::s![b, h, .., ..]);
        ln_scale + ln_max_norm(qh) + ln_max_norm(kh)
    };
    // A scan of q and k: serial, with the finiteness scans it held MonarchAttention on 16 threads
    // to half its speed (docs/perf-notes.md). The maxima do not depend on the split, and the
    // first failing head is reported either way.
    let bounds: Vec<f64> = if scan_in_parallel(q.len() + k.len(), par) {
        (0..nb * nh).into_par_iter().map(bound).collect()
    } else {
        (0..nb * nh).map(bound).collect()
    };
    for bound in bounds {
        if bound > ln_max {
            return Err(Error::NonFinite {
                context: format!(
                    "{ctx}: attention scores can overflow the float type (max(|scale|, 1)·max‖q‖·max‖k‖ = e^{bound:.1} > e^{ln_max:.1}); rescale q or k, or use f64"
                ),
            });
        }
    }
    Ok(())
}

/// `f` folded over `row` from zero in eight interleaved lanes (so it vectorises), the lanes
/// then merged by `merge`.
fn fold_lanes<T: RealScalar>(
    row: ndarray::ArrayView1<T>,
    f: impl Fn(T, T) -> T,
    merge: impl Fn(T, T) -> T,
) -> T {
    let mut acc = [T::zero(); 8];
    let mut rest = T::zero();
    match row.as_slice() {
        Some(xs) => {
            let mut chunks = xs.chunks_exact(8);
            for c in &mut chunks {
                for (a, &x) in acc.iter_mut().zip(c) {
                    *a = f(*a, x);
                }
            }
            for &x in chunks.remainder() {
                rest = f(rest, x);
            }
        }
        None => {
            for &x in row.iter() {
                rest = f(rest, x);
            }
        }
    }
    acc.iter().fold(rest, |a, &x| merge(a, x))
}

/// Inputs were finite and their scores fit the float range ([`check_score_range`]), so a NaN
/// or ±∞ in a result means a sum of values or gradients overflowed (values near the float
/// maximum): report it instead of returning NaN. One pass over outputs that are `O(N·d)`,
/// small next to the attention itself.
pub(crate) fn check_overflow<T: RealScalar, D: ndarray::Dimension>(
    ctx: &str,
    results: &[ndarray::ArrayView<T, D>],
    par: Par,
) -> Result<()> {
    if results.iter().all(|a| all_finite(a, par)) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            context: format!(
                "{ctx}: the result overflowed the float type (values or gradients too large); rescale v or the upstream gradient, or use f64"
            ),
        })
    }
}

/// Whether a memory-bound scan of `len` elements is worth splitting over the pool: from a
/// megabyte of f32 (a single thread streams it in about a tenth of a millisecond).
fn scan_in_parallel(len: usize, par: Par) -> bool {
    len >= SCAN_PAR_MIN && par.should_split(len)
}

/// Elements from which [`scan_in_parallel`] splits a scan.
const SCAN_PAR_MIN: usize = 1 << 18;

/// True if no entry is NaN or ±∞. `x·0` is `0` for finite `x` and NaN otherwise; summing it in
/// 16 independent lanes lets the compiler vectorise the scan. Split over the pool under `par`
/// for large arrays (the answer does not depend on the split).
pub(crate) fn all_finite<T: RealScalar, D: ndarray::Dimension>(
    a: &ndarray::ArrayView<T, D>,
    par: Par,
) -> bool {
    let scan = |xs: &[T]| {
        let mut acc = [T::zero(); 16];
        let mut chunks = xs.chunks_exact(16);
        for c in &mut chunks {
            for (s, &x) in acc.iter_mut().zip(c) {
                *s += x * T::zero();
            }
        }
        let tail: T = chunks.remainder().iter().map(|&x| x * T::zero()).sum();
        acc.iter().fold(tail, |s, &x| s + x) == T::zero()
    };
    match a.as_slice_memory_order() {
        Some(xs) if scan_in_parallel(xs.len(), par) => xs.par_chunks(SCAN_PAR_MIN / 8).all(scan),
        Some(xs) => scan(xs),
        None => a.iter().all(|x| x.is_finite()),
    }
}
