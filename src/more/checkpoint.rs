//! MoRe adapters' parameter names: the frozen `weight`/`bias` and the factors `blkdiag1`,
//! `blkdiag2` under one module prefix.

use super::{Adapter, MoReAdapter};
use crate::checkpoint::read::{check_finite, load_base, name_err};
use crate::checkpoint::{join_name, Dtype, StateDict};
use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use ndarray::Array3;
use std::path::Path;

impl<T: RealScalar> MoReAdapter<T> {
    /// Loads a MoRe adapter from `sd`: the frozen `{prefix}.weight` `(out, in)` and, if `bias`,
    /// `{prefix}.bias` `(out,)`, with the factors `{prefix}.blkdiag1` `(N, r, ib)` and
    /// `{prefix}.blkdiag2` `(N, ob, r)` (MoRe's names, fly's layout; `N` and `r` are read from
    /// `blkdiag1`). `dropout` is the training-mode probability (not stored in checkpoints).
    /// See [`join_name`] for the prefix rule.
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing tensor (or a bias present when `bias == false`);
    /// [`Error::ShapeMismatch`] naming a tensor of the wrong shape; [`Error::ZeroSize`],
    /// [`Error::TooLarge`] for factor sizes no MoRe adapter of this weight has;
    /// [`Error::NonFinite`] naming a tensor with NaN/Inf; [`Error::InvalidArgument`] for a bad
    /// `dropout`.
    pub fn from_state_dict(
        sd: &StateDict<T>,
        prefix: &str,
        bias: bool,
        dropout: f64,
    ) -> Result<Self> {
        let (w, b) = load_base(sd, prefix, bias)?;
        let (out, inp) = w.dim();
        let n1 = join_name(prefix, "blkdiag1");
        let n2 = join_name(prefix, "blkdiag2");
        let w1: Array3<T> = sd.array3_any(&n1)?;
        let (nb, r, _) = w1.dim();
        if nb == 0 || r == 0 {
            return Err(Error::zero(format!(
                "tensor \"{n1}\": shape {:?}",
                w1.shape()
            )));
        }
        let (s1, s2) =
            Self::shapes(inp, out, nb, r).map_err(|e| name_err(&format!("tensor \"{n1}\""), e))?;
        if w1.dim() != s1 {
            return Err(Error::shape(
                format!("tensor \"{n1}\": shape for a MoRe adapter of a {out}×{inp} weight with N={nb}, r={r}"),
                [s1.0, s1.1, s1.2],
                w1.shape(),
            ));
        }
        let w2 = sd.array3(&n2, s2)?;
        check_finite(&n1, w1.iter())?;
        check_finite(&n2, w2.iter())?;
        MoReAdapter::from_factors(w, b, w1, w2, dropout)
            .map_err(|e| name_err(&format!("tensors under \"{prefix}\""), e))
    }

    /// Stores the adapter into `sd` as `weight`, `bias` (if any), `blkdiag1`, `blkdiag2`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] while merged: the weight then holds `W0 + ΔW`, and saving it
    /// beside the factors would add `ΔW` twice on load. [`unmerge`](Adapter::unmerge) first.
    pub fn to_state_dict(&self, sd: &mut StateDict<T>, prefix: &str) -> Result<()> {
        if self.is_merged() {
            return Err(Error::invalid(
                "MoReAdapter::to_state_dict: the adapter is merged into the weight; unmerge before saving",
            ));
        }
        sd.insert(join_name(prefix, "weight"), self.weight().clone());
        if let Some(b) = self.bias() {
            sd.insert(join_name(prefix, "bias"), b.clone());
        }
        sd.insert(join_name(prefix, "blkdiag1"), self.blkdiag1().clone());
        sd.insert(join_name(prefix, "blkdiag2"), self.blkdiag2().clone());
        Ok(())
    }

    /// Loads the adapter at `prefix` from a safetensors file, reading only that layer's tensors.
    ///
    /// # Errors
    /// As [`StateDict::load_prefix`] and [`from_state_dict`](MoReAdapter::from_state_dict).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        bias: bool,
        dropout: f64,
    ) -> Result<Self> {
        let sd = StateDict::load_prefix(path, &join_name(prefix, ""))?;
        Self::from_state_dict(&sd, prefix, bias, dropout)
    }

    /// Saves the adapter alone to a safetensors file with `dtype`.
    ///
    /// # Errors
    /// As [`to_state_dict`](MoReAdapter::to_state_dict) and [`StateDict::save`].
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        dtype: Dtype,
    ) -> Result<()> {
        StateDict::save_new(path, dtype, |sd| self.to_state_dict(sd, prefix))
    }
}
