//! One way to list a layer's trainable parameters and the matching gradients.
//!
//! A layer implements [`Params`]: [`visit_params`](Params::visit_params) and
//! [`visit_params_mut`](Params::visit_params_mut) call a closure once per trainable tensor with
//! its name and a view of it. The views keep their shape, so a visitor (an optimiser, a
//! finite-difference check) can change values but never break the layer's shape invariants.
//! The gradient struct the layer's `vjp` returns implements [`Grads`] and visits its parameter
//! gradients under the same names, in the same order (the input gradient `x`/`u` is not one of
//! them), so the two can be zipped: [`Adam`](crate::primitives::optim::Adam) does.
//!
//! Names follow the PyTorch `state_dict()` names of the module where the crate loads one
//! (`weight`, `bias`, `blkdiag1`, `gated_layers.weight`, `filter_fn.pos_emb.z`, …), relative to
//! the layer; shapes are the crate's (unit axes of PyTorch's shapes dropped). Frozen tensors
//! (an adapter's base weight, the implicit filter's `t` and `deltas`) are not visited.
//!
//! ```
//! use monarch::primitives::nn::Linear;
//! use monarch::primitives::params::{Grads, Params};
//! use monarch::ndarray::Array2;
//! let mut lin = Linear::<f64>::random(3, 2, true, 0).unwrap();
//! assert_eq!(lin.param_names(), ["weight", "bias"]);
//! // Scale every parameter in place; the shapes cannot change.
//! lin.visit_params_mut(&mut |_, mut p| p.mapv_inplace(|v| 2.0 * v));
//! let g = lin.vjp(Array2::ones((4, 3)).view(), Array2::ones((4, 2)).view()).unwrap();
//! assert_eq!(g.grad_names(), lin.param_names());
//! ```

use crate::primitives::blockdiag::{BlockDiag, BlockDiagGrad};
use crate::primitives::linear::{MonarchLinear, MonarchLinearGrad};
use crate::primitives::monarch::{Monarch, MonarchGrad};
use crate::primitives::nn::{LayerNorm, LayerNormGrad, Linear, LinearGrad};
use crate::Scalar;
use ndarray::{Array, ArrayViewD, ArrayViewMutD, Dimension};

/// A layer's trainable parameters (see the [module docs](self)).
pub trait Params<R> {
    /// The gradient struct that visits this layer's parameter gradients in the same order.
    type Grad: Grads<R>;

    /// Calls `f(name, view)` once per trainable tensor, in a fixed order.
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>));

    /// Calls `f(name, view)` once per trainable tensor with a shape-preserving mutable view, in
    /// the order of [`visit_params`](Params::visit_params).
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>));

    /// The names [`visit_params`](Params::visit_params) passes, in order.
    fn param_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.visit_params(&mut |n, _| v.push(n.to_owned()));
        v
    }

    /// Total number of trainable scalars.
    fn param_len(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |_, p| n += p.len());
        n
    }
}

/// A gradient struct's parameter gradients, named and ordered as its layer's [`Params`].
pub trait Grads<R> {
    /// Calls `f(name, view)` once per parameter gradient, in the layer's parameter order.
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>));

    /// The names [`visit_grads`](Grads::visit_grads) passes, in order.
    fn grad_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.visit_grads(&mut |n, _| v.push(n.to_owned()));
        v
    }
}

/// `prefix.name` (or either alone when the other is empty).
pub(crate) fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (_, true) => prefix.to_owned(),
        _ => format!("{prefix}.{name}"),
    }
}

/// `f` with `prefix.` put in front of every name.
pub(crate) fn prefixed<'f, V>(
    prefix: &'f str,
    f: &'f mut dyn FnMut(&str, V),
) -> impl FnMut(&str, V) + 'f {
    move |n: &str, v: V| f(&join(prefix, n), v)
}

/// A plain array is one parameter (its name is empty) and its own gradient: handy for the
/// embeddings and heads a training loop keeps beside the layers.
impl<R, D: Dimension> Params<R> for Array<R, D> {
    type Grad = Array<R, D>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("", self.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        f("", self.view_mut().into_dyn());
    }
}

impl<R, D: Dimension> Grads<R> for Array<R, D> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("", self.view().into_dyn());
    }
}

/// `weight`, then `bias` if the layer has one.
impl<R> Params<R> for Linear<R> {
    type Grad = LinearGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("weight", self.weight.view().into_dyn());
        if let Some(b) = &self.bias {
            f("bias", b.view().into_dyn());
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        f("weight", self.weight.view_mut().into_dyn());
        if let Some(b) = &mut self.bias {
            f("bias", b.view_mut().into_dyn());
        }
    }
}

impl<R> Grads<R> for LinearGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("weight", self.weight.view().into_dyn());
        if let Some(b) = &self.bias {
            f("bias", b.view().into_dyn());
        }
    }
}

/// `weight`, `bias` (`eps` is not trained).
impl<R> Params<R> for LayerNorm<R> {
    type Grad = LayerNormGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("weight", self.weight.view().into_dyn());
        f("bias", self.bias.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, R>)) {
        f("weight", self.weight.view_mut().into_dyn());
        f("bias", self.bias.view_mut().into_dyn());
    }
}

impl<R> Grads<R> for LayerNormGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, R>)) {
        f("weight", self.weight.view().into_dyn());
        f("bias", self.bias.view().into_dyn());
    }
}

/// `weight`, the blocks `(nb, rows, cols)` (`BlockdiagLinear`'s name).
impl<T: Scalar> Params<T> for BlockDiag<T> {
    type Grad = BlockDiagGrad<T>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, T>)) {
        f("weight", self.w.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, T>)) {
        f("weight", self.w.view_mut().into_dyn());
    }
}

impl<T> Grads<T> for BlockDiagGrad<T> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, T>)) {
        f("weight", self.w.view().into_dyn());
    }
}

/// `w1`, `w2` (the names [`Monarch::to_state_dict`] writes); the permutations are fixed.
impl<T: Scalar> Params<T> for Monarch<T> {
    type Grad = MonarchGrad<T>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, T>)) {
        f("w1", self.w1.w.view().into_dyn());
        f("w2", self.w2.w.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, T>)) {
        f("w1", self.w1.w.view_mut().into_dyn());
        f("w2", self.w2.w.view_mut().into_dyn());
    }
}

impl<T> Grads<T> for MonarchGrad<T> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, T>)) {
        f("w1", self.w1.view().into_dyn());
        f("w2", self.w2.view().into_dyn());
    }
}

/// `blkdiag1`, `blkdiag2`, then `bias` if any (the reference `MonarchLinear`'s names).
impl<T: Scalar> Params<T> for MonarchLinear<T> {
    type Grad = MonarchLinearGrad<T>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, T>)) {
        f("blkdiag1", self.monarch().w1().view().into_dyn());
        f("blkdiag2", self.monarch().w2().view().into_dyn());
        if let Some(b) = self.bias() {
            f("bias", b.view().into_dyn());
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ArrayViewMutD<'a, T>)) {
        f("blkdiag1", self.monarch.w1.w.view_mut().into_dyn());
        f("blkdiag2", self.monarch.w2.w.view_mut().into_dyn());
        if let Some(b) = &mut self.bias {
            f("bias", b.view_mut().into_dyn());
        }
    }
}

impl<T> Grads<T> for MonarchLinearGrad<T> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ArrayViewD<'a, T>)) {
        f("blkdiag1", self.w1.view().into_dyn());
        f("blkdiag2", self.w2.view().into_dyn());
        if let Some(b) = &self.bias {
            f("bias", b.view().into_dyn());
        }
    }
}
