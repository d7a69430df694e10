//! GSOFT layers' parameter names: the frozen `weight`/`bias`, the two block-diagonal factors
//! `gsoft_R` (applied first) and `gsoft_L`, and the scale `gsoft_scale`, under one prefix.

use super::{GsoftLinear, OrthGs, OrthMap};
use crate::checkpoint::read::{check_finite, load_base, name_err};
use crate::checkpoint::{join_name, Dtype, StateDict};
use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use std::path::Path;

impl<T: RealScalar> GsoftLinear<T> {
    /// Loads a GSOFT layer `y = s ⊙ (W0 · Q x) + b`, `Q = Pᵀ · BD(L) · P · BD(R)`, from `sd`:
    /// `{prefix}.weight` `(out, in)`, `{prefix}.bias` `(out,)` if `bias`, the unconstrained
    /// block parameters `{prefix}.gsoft_R` and `{prefix}.gsoft_L`, both `(k, b, b)` with
    /// `k·b = in`, and `{prefix}.gsoft_scale` `(out,)`. The map from skew-symmetric to
    /// orthogonal blocks (`map`) is not stored in the tensors and must be the one trained with.
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing tensor (or a bias present when `bias == false`);
    /// [`Error::ShapeMismatch`] naming a tensor of the wrong shape (non-square blocks,
    /// `k·b ≠ in`, `gsoft_L` unlike `gsoft_R`, a scale not `(out,)`); [`Error::ZeroSize`];
    /// [`Error::NonFinite`] naming a tensor with NaN/Inf.
    pub fn from_state_dict(
        sd: &StateDict<T>,
        prefix: &str,
        bias: bool,
        map: OrthMap,
    ) -> Result<Self> {
        let (w, b) = load_base(sd, prefix, bias)?;
        let (out, inp) = w.dim();
        let rn = join_name(prefix, "gsoft_R");
        let ln = join_name(prefix, "gsoft_L");
        let sn = join_name(prefix, "gsoft_scale");
        let r = sd.array3_any(&rn)?;
        let (k, bs, bs2) = r.dim();
        if k == 0 || bs == 0 {
            return Err(Error::zero(format!(
                "tensor \"{rn}\": shape {:?}",
                r.shape()
            )));
        }
        if bs != bs2 || k * bs != inp {
            return Err(Error::ShapeMismatch {
                context: format!("tensor \"{rn}\": square blocks (k, b, b) with k·b = in_features"),
                expected: format!("(k, b, b) with k·b = {inp}"),
                found: format!("{:?}", r.shape()),
            });
        }
        let l = sd.array3(&ln, (k, bs, bs))?;
        let s = sd.array1(&sn, out)?;
        check_finite(&rn, r.iter())?;
        check_finite(&ln, l.iter())?;
        check_finite(&sn, s.iter())?;
        let names = format!("tensors under \"{prefix}\"");
        let q = OrthGs::from_params(vec![r, l], map).map_err(|e| name_err(&names, e))?;
        let mut layer = GsoftLinear::new(w, b, bs, 2, map)
            .and_then(|g| g.with_q(q))
            .map_err(|e| name_err(&names, e))?;
        layer.scale_mut().assign(&s);
        Ok(layer)
    }

    /// Stores the layer into `sd` as `weight`, `bias` (if any), `gsoft_R`, `gsoft_L`,
    /// `gsoft_scale`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `Q` has exactly two factors (the paper's layer; more
    /// factors have no names in the reference code).
    pub fn to_state_dict(&self, sd: &mut StateDict<T>, prefix: &str) -> Result<()> {
        let p = self.q().params();
        if p.len() != 2 {
            return Err(Error::invalid(format!(
                "GsoftLinear::to_state_dict: only the two-factor layer (gsoft_R, gsoft_L) can be saved, this one has {} factors",
                p.len()
            )));
        }
        sd.insert(join_name(prefix, "weight"), self.weight().clone());
        if let Some(b) = self.bias() {
            sd.insert(join_name(prefix, "bias"), b.clone());
        }
        sd.insert(join_name(prefix, "gsoft_R"), p[0].clone());
        sd.insert(join_name(prefix, "gsoft_L"), p[1].clone());
        sd.insert(join_name(prefix, "gsoft_scale"), self.scale().clone());
        Ok(())
    }

    /// Loads the layer at `prefix` from a safetensors file, reading only that layer's tensors.
    ///
    /// # Errors
    /// As [`StateDict::load_prefix`] and [`from_state_dict`](GsoftLinear::from_state_dict).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        bias: bool,
        map: OrthMap,
    ) -> Result<Self> {
        let sd = StateDict::load_prefix(path, &join_name(prefix, ""))?;
        Self::from_state_dict(&sd, prefix, bias, map)
    }

    /// Saves the layer alone to a safetensors file with `dtype`.
    ///
    /// # Errors
    /// As [`to_state_dict`](GsoftLinear::to_state_dict) and [`StateDict::save`].
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        dtype: Dtype,
    ) -> Result<()> {
        StateDict::save_new(path, dtype, |sd| self.to_state_dict(sd, prefix))
    }
}
