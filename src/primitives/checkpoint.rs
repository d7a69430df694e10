//! The core layers' parameter names, as the Monarch reference code (fly) stores them:
//! `blkdiag1`, `blkdiag2`, `bias` for [`MonarchLinear`], `w1`, `w2` for a bare [`Monarch`].

use crate::checkpoint::{join_name, Dtype, StateDict};
use crate::primitives::error::{Error, Result};
use crate::primitives::linear::monarch_linear_shapes;
use crate::{Monarch, MonarchLinear, Perm, RealScalar};
use std::path::Path;

impl<T: RealScalar> MonarchLinear<T> {
    /// Loads fly's `MonarchLinear(in_features, out_features, bias, nblocks)` from `sd`: tensors
    /// `{prefix}.blkdiag1` (`w1`), `{prefix}.blkdiag2` (`w2`) and, if `bias`, `{prefix}.bias`
    /// (`nblocks` is read from `blkdiag1`'s first dimension). See [`join_name`] for the prefix rule.
    ///
    /// # Errors
    /// [`Error::Format`] naming the tensor if one is missing (or, with `bias == false`, if a
    /// bias is present: it would be silently dropped); [`Error::ShapeMismatch`] naming the tensor
    /// if a shape is not the one `MonarchLinear(in, out, nblocks)` has; [`Error::ZeroSize`] for
    /// zero sizes.
    pub fn from_state_dict(
        sd: &StateDict<T>,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let n1 = join_name(prefix, "blkdiag1");
        let n2 = join_name(prefix, "blkdiag2");
        let nb_name = join_name(prefix, "bias");
        let w1 = sd.array3_any(&n1)?;
        let nblocks = w1.dim().0;
        let (s1, s2) = monarch_linear_shapes(in_features, out_features, nblocks)?;
        if w1.dim() != s1 {
            return Err(Error::shape(
                format!("tensor \"{n1}\": shape for MonarchLinear({in_features}, {out_features}, nblocks={nblocks})"),
                [s1.0, s1.1, s1.2],
                w1.shape(),
            ));
        }
        let w2 = sd.array3(&n2, s2)?;
        let b = if bias {
            Some(sd.array1(&nb_name, out_features)?)
        } else {
            if sd.contains(&nb_name) {
                return Err(Error::Format(format!(
                    "tensor \"{nb_name}\": present but the layer was requested without bias"
                )));
            }
            None
        };
        MonarchLinear::from_weights(in_features, out_features, w1, w2, b)
    }

    /// Stores the layer into `sd` under fly's names (`blkdiag1`, `blkdiag2`, `bias`).
    pub fn to_state_dict(&self, sd: &mut StateDict<T>, prefix: &str) {
        sd.insert(join_name(prefix, "blkdiag1"), self.monarch().w1().clone());
        sd.insert(join_name(prefix, "blkdiag2"), self.monarch().w2().clone());
        if let Some(b) = self.bias() {
            sd.insert(join_name(prefix, "bias"), b.clone());
        }
    }

    /// Loads the layer at `prefix` from a safetensors file, reading only that layer's tensors.
    ///
    /// # Errors
    /// As [`StateDict::load_prefix`] and [`from_state_dict`](MonarchLinear::from_state_dict).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let sd = StateDict::load_prefix(path, &join_name(prefix, ""))?;
        Self::from_state_dict(&sd, prefix, in_features, out_features, bias)
    }

    /// Saves the layer alone to a safetensors file with `dtype` (`F32`, `F64`, `F16` or `BF16`).
    ///
    /// # Errors
    /// As [`StateDict::save`].
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        dtype: Dtype,
    ) -> Result<()> {
        StateDict::save_new(path, dtype, |sd| {
            self.to_state_dict(sd, prefix);
            Ok(())
        })
    }
}

impl<T: RealScalar> Monarch<T> {
    /// Loads a bare Monarch (reference layout, [`Monarch::from_factors`]) from tensors
    /// `{prefix}.w1` `(k, q, p)` and `{prefix}.w2` `(l, s, r)`.
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing tensor, [`Error::ShapeMismatch`] naming a tensor that
    /// is not 3-D, and the errors of [`from_factors`](Monarch::from_factors) if they do not chain.
    pub fn from_state_dict(sd: &StateDict<T>, prefix: &str) -> Result<Self> {
        let n1 = join_name(prefix, "w1");
        let n2 = join_name(prefix, "w2");
        let w1 = sd.array3_any(&n1)?;
        let w2 = sd.array3_any(&n2)?;
        Monarch::from_factors(w1, w2).map_err(|e| match e {
            Error::ShapeMismatch {
                context,
                expected,
                found,
            } => Error::ShapeMismatch {
                context: format!("tensors \"{n1}\", \"{n2}\": {context}"),
                expected,
                found,
            },
            Error::ZeroSize { context } => Error::ZeroSize {
                context: format!("tensors \"{n1}\", \"{n2}\": {context}"),
            },
            other => other,
        })
    }

    /// Stores the factors as `{prefix}.w1`, `{prefix}.w2`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the Monarch's permutations are not the reference ones
    /// (e.g. a [`transpose`](Monarch::transpose) or [`dft_natural`](Monarch::dft_natural)):
    /// the two factors alone would describe a different matrix.
    pub fn to_state_dict(&self, sd: &mut StateDict<T>, prefix: &str) -> Result<()> {
        let (_, _, r) = self.w2().dim();
        let (l, s, _) = self.w2().dim();
        let (p_in, p_mid, p_out) = self.perms();
        if !p_in.is_identity() || *p_mid != Perm::stride(r, l)? || *p_out != Perm::stride(l, s)? {
            return Err(Error::invalid(
                "Monarch::to_state_dict: only Monarchs in the reference layout (from_factors) can be saved as two factors",
            ));
        }
        sd.insert(join_name(prefix, "w1"), self.w1().clone());
        sd.insert(join_name(prefix, "w2"), self.w2().clone());
        Ok(())
    }
}
