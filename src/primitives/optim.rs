//! Adam (Kingma & Ba 2015) over any layer that lists its parameters through
//! [`Params`] (see [`params`](crate::primitives::params)).
//!
//! ```
//! use monarch::primitives::optim::Adam;
//! use monarch::ndarray::{array, Array1};
//! // Minimise ‖p − c‖² from p = 0: the gradient is 2(p − c).
//! let c = array![1.0, -2.0, 0.5];
//! let mut p = Array1::<f64>::zeros(3);
//! let mut opt = Adam::new(0.05).unwrap();
//! for _ in 0..500 {
//!     let g = (&p - &c) * 2.0;
//!     opt.step(&mut p, &g).unwrap();
//! }
//! assert!((&p - &c).iter().all(|e| e.abs() < 1e-3));
//! ```

use crate::primitives::error::{Error, Result};
use crate::primitives::params::{Grads, Params};
use crate::RealScalar;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// Adam with bias correction: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)`; defaults `β₁ = 0.9`, `β₂ = 0.999`,
/// `ε = 1e-8`.
///
/// One optimiser holds the moments of one layer (or one array): its first
/// [`step`](Adam::step) fixes the parameter list, and a later step on a layer with other names
/// or shapes is an error. Keep one `Adam` per layer to train several; with equal settings
/// this is the same update as one optimiser over all of them.
#[derive(Debug, Clone)]
pub struct Adam<R> {
    lr: R,
    beta1: R,
    beta2: R,
    eps: R,
    t: i32,
    names: Vec<String>,
    m: Vec<ArrayD<R>>,
    v: Vec<ArrayD<R>>,
}

impl<R: RealScalar> Adam<R> {
    /// Adam with learning rate `lr` and the default betas and epsilon.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `lr` is finite and positive.
    pub fn new(lr: f64) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::invalid(format!(
                "Adam: learning rate {lr} must be finite and positive"
            )));
        }
        Ok(Adam {
            lr: R::from_f64(lr),
            beta1: R::from_f64(0.9),
            beta2: R::from_f64(0.999),
            eps: R::from_f64(1e-8),
            t: 0,
            names: Vec::new(),
            m: Vec::new(),
            v: Vec::new(),
        })
    }

    /// The same with moment decay rates `beta1`, `beta2` and denominator offset `eps`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `0 ≤ beta < 1` and `eps ≥ 0`, all finite.
    pub fn with_hyper(mut self, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(format!(
                    "Adam: {name} = {b} must be in [0, 1)"
                )));
            }
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::invalid(format!(
                "Adam: eps = {eps} must be finite and ≥ 0"
            )));
        }
        self.beta1 = R::from_f64(beta1);
        self.beta2 = R::from_f64(beta2);
        self.eps = R::from_f64(eps);
        Ok(self)
    }

    /// The learning rate.
    pub fn lr(&self) -> R {
        self.lr
    }

    /// Sets the learning rate (for a schedule); the moments are kept.
    pub fn set_lr(&mut self, lr: R) {
        self.lr = lr;
    }

    /// Number of steps taken.
    pub fn steps(&self) -> usize {
        self.t as usize
    }

    /// One update of every parameter of `params` from the matching gradient in `grads`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the parameter if `grads` lists other names or shapes
    /// than `params`, or if `params` is not the layer of the first step; nothing is updated then.
    pub fn step<P: Params<R>>(&mut self, params: &mut P, grads: &P::Grad) -> Result<()> {
        let mut gs: Vec<(String, ArrayViewD<'_, R>)> = Vec::new();
        grads.visit_grads(&mut |n, g| gs.push((n.to_owned(), g)));
        let mut ps = Vec::new();
        params.visit_params_mut(&mut |n, p| ps.push((n.to_owned(), p)));
        if ps.len() != gs.len() {
            return Err(Error::shape(
                "Adam::step: number of gradients (one per parameter)",
                ps.len(),
                gs.len(),
            ));
        }
        for ((pn, p), (gn, g)) in ps.iter().zip(&gs) {
            if pn != gn || p.shape() != g.shape() {
                return Err(Error::shape(
                    format!("Adam::step: gradient of parameter \"{pn}\" (name, shape)"),
                    (pn, p.shape()),
                    (gn, g.shape()),
                ));
            }
        }
        if self.t == 0 {
            self.names = ps.iter().map(|(n, _)| n.clone()).collect();
            self.m = ps
                .iter()
                .map(|(_, p)| ArrayD::zeros(IxDyn(p.shape())))
                .collect();
            self.v = self.m.clone();
        } else if self.names.len() != ps.len()
            || ps
                .iter()
                .zip(self.names.iter().zip(&self.m))
                .any(|((pn, p), (n, m))| pn != n || p.shape() != m.shape())
        {
            return Err(Error::shape(
                "Adam::step: parameters (names) of the layer this optimiser was first stepped on",
                &self.names,
                ps.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ));
        }
        self.t += 1;
        let (b1, b2, eps, lr) = (self.beta1, self.beta2, self.eps, self.lr);
        let c1 = R::one() - b1.powi(self.t);
        let c2 = R::one() - b2.powi(self.t);
        for (((_, p), (_, g)), (m, v)) in ps
            .iter_mut()
            .zip(&gs)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            ndarray::Zip::from(p)
                .and(g)
                .and(m)
                .and(v)
                .for_each(|p, &g, m, v| {
                    *m = b1 * *m + (R::one() - b1) * g;
                    *v = b2 * *v + (R::one() - b2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                });
        }
        Ok(())
    }
}
