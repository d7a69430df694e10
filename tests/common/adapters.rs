//! Helpers for the adapter tests (MoRe, LoRA, GS): finite differences and proptest config.
#![allow(dead_code)]

use monarch::ndarray::{Array, ArrayView2, Dimension};

/// Proptest cases from `PROPTEST_CASES`, default `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `sum(a ⊙ b)`.
pub fn dot_all(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// Central finite differences of a scalar function of `p` at every entry, compared with the
/// analytic gradient `grad` (relative to `max(1, max|grad|)`). Panics with `what` on failure.
#[track_caller]
pub fn check_fd<D: Dimension>(
    p: &Array<f64, D>,
    grad: &Array<f64, D>,
    mut f: impl FnMut(&Array<f64, D>) -> f64,
    tol: f64,
    what: &str,
) {
    assert_eq!(p.shape(), grad.shape(), "{what}: gradient shape");
    let h = 1e-6;
    let scale = grad.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut q = p.clone();
    let n = p.len();
    for idx in 0..n {
        let orig = q.as_slice_memory_order().unwrap()[idx];
        q.as_slice_memory_order_mut().unwrap()[idx] = orig + h;
        let fp = f(&q);
        q.as_slice_memory_order_mut().unwrap()[idx] = orig - h;
        let fm = f(&q);
        q.as_slice_memory_order_mut().unwrap()[idx] = orig;
        let fd = (fp - fm) / (2.0 * h);
        let an = grad.as_slice_memory_order().unwrap()[idx];
        assert!(
            (fd - an).abs() <= tol * scale,
            "{what}: entry {idx}: finite difference {fd} vs analytic {an}"
        );
    }
}
