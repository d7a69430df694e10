//! Finite-difference helpers for the mixer and PK tests.
#![allow(dead_code)]

use monarch::ndarray::{Array, Dimension};
use monarch::primitives::params::Params;

/// Indices to probe in a tensor of `n` entries: all if small, else a spread of `k`.
pub fn probe(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        (0..n).collect()
    } else {
        (0..k).map(|i| (i * 7919 + 13) % n).collect()
    }
}

/// Checks `analytic[i]` against the central difference of `loss_at(i, ±h)` at probed indices.
#[track_caller]
pub fn check_grad(
    what: &str,
    analytic: &[f64],
    mut loss_at: impl FnMut(usize, f64) -> f64,
    tol: f64,
) {
    let h = 1e-5;
    for i in probe(analytic.len(), 12) {
        let fd = (loss_at(i, h) - loss_at(i, -h)) / (2.0 * h);
        let a = analytic[i];
        let err = (fd - a).abs() / (1.0f64).max(a.abs());
        assert!(
            err <= tol,
            "{what}[{i}]: analytic {a:e} vs finite difference {fd:e} (rel {err:e})"
        );
    }
}

/// `Σ a ⊙ b`.
pub fn dot<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Perturbs entry `i` (in logical order) of `a` by `d`.
pub fn bump<D: Dimension>(a: &mut Array<f64, D>, i: usize, d: f64) {
    *a.iter_mut().nth(i).unwrap() += d;
}

/// The logical-order entries of an array.
pub fn flat<D: Dimension>(a: &Array<f64, D>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// Perturbs entry `i` (in logical order) of the parameter `name` of `p` by `d`, through
/// [`Params::visit_params_mut`] (the shapes cannot change).
#[track_caller]
pub fn bump_param<P: Params<f64>>(p: &mut P, name: &str, i: usize, d: f64) {
    let mut hit = false;
    p.visit_params_mut(&mut |n, mut v| {
        if n == name {
            *v.iter_mut().nth(i).unwrap() += d;
            hit = true;
        }
    });
    assert!(hit, "no parameter named {name}");
}

/// Assigns `value` (same shape) to the parameter `name` of `p`.
#[track_caller]
pub fn set_param<P: Params<f64>, D: Dimension>(p: &mut P, name: &str, value: &Array<f64, D>) {
    let mut hit = false;
    p.visit_params_mut(&mut |n, mut v| {
        if n == name {
            v.assign(&value.view().into_dyn());
            hit = true;
        }
    });
    assert!(hit, "no parameter named {name}");
}

/// Fills with `value` every parameter of `p` whose name ends with `suffix` (at least one).
#[track_caller]
pub fn fill_params<P: Params<f64>>(p: &mut P, suffix: &str, value: f64) {
    let mut hits = 0;
    p.visit_params_mut(&mut |n, mut v| {
        if n.ends_with(suffix) {
            v.fill(value);
            hits += 1;
        }
    });
    assert!(hits > 0, "no parameter name ends with {suffix}");
}
