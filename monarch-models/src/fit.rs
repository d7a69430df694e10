//! Recovery after projection: a few steps of training the projected Monarch factors of a dense
//! layer so that, on inputs recorded from the exact model, they reproduce the exact layer's
//! outputs (a layer-local distillation; the gradients are the core's [`Monarch::vjp`]).
//!
//! For inputs `X` (rows) and the dense weight `W`, the loss is the relative error
//! `‖X·M̂ᵀ − X·Wᵀ‖²_F / ‖X·Wᵀ‖²_F`, minimised by Adam over both factors of `M̂`. The projection
//! minimises `‖W − M̂‖_F`, which weighs every input direction alike; the fit weighs them by how
//! much the data uses them.

use monarch::ndarray::{Array2, Array3, ArrayView2, Zip};
use monarch::{Error, Monarch, RealScalar, Result};

/// Settings of [`fit_monarch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Adam steps (full batch).
    pub steps: usize,
    /// Adam learning rate, relative to the RMS of each factor's entries at the start.
    pub lr: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            steps: 60,
            lr: 0.02,
        }
    }
}

/// Relative output error of [`fit_monarch`] before and after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    /// `‖X·M̂ᵀ − X·Wᵀ‖_F / ‖X·Wᵀ‖_F` with the projected factors.
    pub before: f64,
    /// The same after training.
    pub after: f64,
}

struct Adam<T> {
    m: Array3<T>,
    v: Array3<T>,
    lr: T,
}

impl<T: RealScalar> Adam<T> {
    fn new(w: &Array3<T>, lr: f64) -> Self {
        let rms = (w.iter().map(|&x| x * x).sum::<T>() / T::from_f64(w.len().max(1) as f64)).sqrt();
        Adam {
            m: Array3::zeros(w.raw_dim()),
            v: Array3::zeros(w.raw_dim()),
            lr: T::from_f64(lr) * rms,
        }
    }

    fn step(&mut self, mut w: monarch::ndarray::ArrayViewMut3<T>, g: &Array3<T>, t: usize) {
        let (b1, b2, eps) = (0.9, 0.999, 1e-12);
        let c1 = T::from_f64(1.0 - f64::powi(b1, t as i32));
        let c2 = T::from_f64(1.0 - f64::powi(b2, t as i32));
        let (b1, b2, eps) = (T::from_f64(b1), T::from_f64(b2), T::from_f64(eps));
        let lr = self.lr;
        Zip::from(&mut w)
            .and(&mut self.m)
            .and(&mut self.v)
            .and(g)
            .for_each(|w, m, v, &g| {
                *m = b1 * *m + (T::one() - b1) * g;
                *v = b2 * *v + (T::one() - b2) * g * g;
                *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            });
    }
}

fn frob2<T: RealScalar>(a: &Array2<T>) -> f64 {
    a.iter().map(|&x| x.to_f64_val() * x.to_f64_val()).sum()
}

/// Trains `m` so that `x·mᵀ ≈ target` (`x`: `(rows, in)`, `target`: `(rows, out)`, usually
/// `x·Wᵀ` of the dense weight the Monarch was projected from). Keeps the best iterate.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the shapes disagree, [`Error::InvalidArgument`] for a zero
/// target.
pub fn fit_monarch<T: RealScalar>(
    m: &mut Monarch<T>,
    x: ArrayView2<T>,
    target: ArrayView2<T>,
    opts: FitOptions,
) -> Result<FitReport> {
    if target.dim() != (x.nrows(), m.out_features()) {
        return Err(Error::shape(
            "fit_monarch: target (rows, out_features)",
            (x.nrows(), m.out_features()),
            target.dim(),
        ));
    }
    let norm2 = frob2(&target.to_owned());
    if norm2 == 0.0 {
        return Err(Error::invalid("fit_monarch: the target is zero"));
    }
    let scale = T::from_f64(2.0 / norm2);
    let mut a1 = Adam::new(m.w1(), opts.lr);
    let mut a2 = Adam::new(m.w2(), opts.lr);
    let mut best = (f64::INFINITY, m.clone());
    let mut first = None;
    for t in 0..=opts.steps {
        let mut r = m.matmul(x)?;
        r -= &target;
        let loss = frob2(&r) / norm2;
        first.get_or_insert(loss);
        if loss < best.0 {
            best = (loss, m.clone());
        }
        if t == opts.steps {
            break;
        }
        r.mapv_inplace(|e| e * scale);
        let g = m.vjp(x, r.view())?;
        a1.step(m.w1_mut(), &g.w1, t + 1);
        a2.step(m.w2_mut(), &g.w2, t + 1);
    }
    *m = best.1;
    Ok(FitReport {
        before: first.unwrap_or(f64::NAN).sqrt(),
        after: best.0.sqrt(),
    })
}
