//! The sequence mixer, layer and encoder names, and whole-file load/save.

use super::M2BertConfig;
use crate::checkpoint::read::*;
use crate::checkpoint::{join_name, Dtype, StateDict};
use crate::mixer::{GatedMlp, ImplicitFilter, M2BertEncoder, M2BertLayer, M2SequenceMixer};
use crate::primitives::error::{Error, Result};
use crate::{RealScalar, Scalar};
use ndarray::Axis;
use num_complex::Complex;
use std::path::Path;

impl<R: RealScalar> M2SequenceMixer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// Loads the released `MonarchMixerSequenceMixing` at `prefix` (e.g.
    /// `bert.encoder.layer.0.attention`): `in_linear`, `short_filter`, `filter_fn`, `filter_fn2`
    /// (if `cfg.residual_long_conv`) and `out_linear` (see the [module docs](crate::mixer::checkpoint)). The long
    /// convolutions use the default [`ConvMethod`](crate::mixer::ConvMethod); set
    /// [`method`](M2SequenceMixer::method) to change it.
    ///
    /// # Errors
    /// As [`ImplicitFilter::from_state_dict`]; [`Error::Format`] naming a tensor of a variant
    /// that is not supported (`layernorm` of `hyena_training_additions`, the Flash modules'
    /// `fast_filter`, `k`, `x1_s`) or a `filter_fn2` the configuration excludes;
    /// [`Error::ShapeMismatch`] naming a tensor whose shape does not fit `H`.
    pub fn from_state_dict(sd: &StateDict<R>, prefix: &str, cfg: &M2BertConfig) -> Result<Self> {
        absent(
            sd,
            &join_name(prefix, "layernorm.weight"),
            "hyena_training_additions (an input LayerNorm in the sequence mixer) is not supported",
        )?;
        for flash in ["k", "x1_s", "fast_filter.z"] {
            absent(
                sd,
                &join_name(prefix, flash),
                "the FlashMM/FlashFFT sequence mixers (inference kernels with their own parameters) are not supported",
            )?;
        }
        let iwn = join_name(prefix, "in_linear.weight");
        let iw = tensor_nd(sd, &iwn, 2)?;
        let h = iw.shape()[1];
        let in_linear = load_linear(sd, &join_name(prefix, "in_linear"), 3 * h, h)?;
        let swn = join_name(prefix, "short_filter.weight");
        let sw = to3(tensor_shape(sd, &swn, &[3 * h, 1, 3])?, &swn)?.index_axis_move(Axis(1), 0);
        let sbn = join_name(prefix, "short_filter.bias");
        let sb = to1(tensor_shape(sd, &sbn, &[3 * h])?);
        let check_h = |f: &ImplicitFilter<R>, p: &str| -> Result<()> {
            if f.channels() != h {
                let bn = join_name(p, "bias");
                return Err(Error::shape(
                    format!("tensor \"{bn}\": filter channels vs in_linear's H"),
                    h,
                    f.channels(),
                ));
            }
            Ok(())
        };
        let fp = join_name(prefix, "filter_fn");
        let filter = ImplicitFilter::from_state_dict(sd, &fp, cfg.bidirectional, cfg.hyena_w_mod)?;
        check_h(&filter, &fp)?;
        let fp2 = join_name(prefix, "filter_fn2");
        let filter2 = if cfg.residual_long_conv {
            let f2 = ImplicitFilter::from_state_dict(sd, &fp2, cfg.bidirectional, cfg.hyena_w_mod)?;
            check_h(&f2, &fp2)?;
            Some(f2)
        } else {
            no_module(sd, &fp2, "the configuration has residual_long_conv = false")?;
            None
        };
        let out_linear = load_linear(sd, &join_name(prefix, "out_linear"), h, h)?;
        M2SequenceMixer::new(in_linear, sw, sb, filter, filter2, out_linear)
            .map_err(|e| name_err(&format!("tensors \"{prefix}.*\""), e))
    }

    /// Stores the mixer under the released names (`short_filter.weight` as `(3H, 1, 3)`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a linear has no bias or a filter cannot be stored
    /// ([`ImplicitFilter::to_state_dict`]).
    pub fn to_state_dict(&self, sd: &mut StateDict<R>, prefix: &str) -> Result<()> {
        save_linear(
            sd,
            &join_name(prefix, "in_linear"),
            &self.in_linear,
            "M2SequenceMixer::to_state_dict",
        )?;
        save_linear(
            sd,
            &join_name(prefix, "out_linear"),
            &self.out_linear,
            "M2SequenceMixer::to_state_dict",
        )?;
        sd.insert(
            join_name(prefix, "short_filter.weight"),
            self.short_conv_weight.clone().insert_axis(Axis(1)),
        );
        sd.insert(
            join_name(prefix, "short_filter.bias"),
            self.short_conv_bias.clone(),
        );
        self.filter
            .to_state_dict(sd, &join_name(prefix, "filter_fn"))?;
        if let Some(f2) = &self.filter2 {
            f2.to_state_dict(sd, &join_name(prefix, "filter_fn2"))?;
        }
        Ok(())
    }
}

impl<R: RealScalar> M2BertLayer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// Loads the released `BertLayer` at `prefix` (e.g. `bert.encoder.layer.0`): the sequence
    /// mixer at `{prefix}.attention` and the MLP at `{prefix}.mlp`.
    ///
    /// # Errors
    /// As [`M2SequenceMixer::from_state_dict`] and [`GatedMlp::from_state_dict`];
    /// [`Error::ShapeMismatch`] naming `mlp.gated_layers.weight` if the MLP's width is not the
    /// mixer's `H` (also for `BlockdiagLinear` weights padded to a multiple of `nblocks`).
    pub fn from_state_dict(sd: &StateDict<R>, prefix: &str, cfg: &M2BertConfig) -> Result<Self> {
        let mixer = M2SequenceMixer::from_state_dict(sd, &join_name(prefix, "attention"), cfg)?;
        let mp = join_name(prefix, "mlp");
        let mlp = GatedMlp::from_state_dict(sd, &mp, cfg.layer_norm_eps)?;
        if mlp.hidden() != mixer.hidden() {
            return Err(Error::shape(
                format!(
                    "tensor \"{}\": input width (nblocks · in/nb) vs the mixer's H (a padded BlockdiagLinear is not supported)",
                    join_name(&mp, "gated_layers.weight")
                ),
                mixer.hidden(),
                mlp.hidden(),
            ));
        }
        M2BertLayer::new(mixer, mlp)
    }

    /// Stores the layer under the released names (`attention.*`, `mlp.*`).
    ///
    /// # Errors
    /// As [`M2SequenceMixer::to_state_dict`].
    pub fn to_state_dict(&self, sd: &mut StateDict<R>, prefix: &str) -> Result<()> {
        self.mixer
            .to_state_dict(sd, &join_name(prefix, "attention"))?;
        self.mlp.to_state_dict(sd, &join_name(prefix, "mlp"));
        Ok(())
    }

    /// Loads the layer at `prefix` from a safetensors file, reading only its tensors.
    ///
    /// # Errors
    /// As [`StateDict::load_prefix`] and [`from_state_dict`](M2BertLayer::from_state_dict).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        cfg: &M2BertConfig,
    ) -> Result<Self> {
        let sd = StateDict::load_prefix(path, &join_name(prefix, ""))?;
        Self::from_state_dict(&sd, prefix, cfg)
    }

    /// Saves the layer alone to a safetensors file with `dtype`.
    ///
    /// # Errors
    /// As [`to_state_dict`](M2BertLayer::to_state_dict) and [`StateDict::save`].
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        dtype: Dtype,
    ) -> Result<()> {
        StateDict::save_new(path, dtype, |sd| self.to_state_dict(sd, prefix))
    }
}

/// The layer indices `i` of the tensors named `{prefix}.layer.{i}.…`, sorted.
fn layer_indices<T: RealScalar>(sd: &StateDict<T>, prefix: &str) -> Vec<usize> {
    let start = join_name(prefix, "layer.");
    let mut v: Vec<usize> = sd
        .names()
        .chain(sd.skipped().keys().map(String::as_str))
        .filter_map(|n| n.strip_prefix(&start))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl<R: RealScalar> M2BertEncoder<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// Loads the released `BertEncoder` at `prefix` (e.g. `bert.encoder`): layers
    /// `{prefix}.layer.0`, `{prefix}.layer.1`, … ([`M2BertLayer::from_state_dict`]), as many as
    /// `cfg.num_hidden_layers` or, if `None`, as the checkpoint holds.
    ///
    /// # Errors
    /// As [`M2BertLayer::from_state_dict`]; [`Error::Format`] if there is no layer, if the layer
    /// numbers have a gap (naming the first missing layer), or if the checkpoint holds layers
    /// beyond `cfg.num_hidden_layers` (naming the first extra one).
    pub fn from_state_dict(sd: &StateDict<R>, prefix: &str, cfg: &M2BertConfig) -> Result<Self> {
        let found = layer_indices(sd, prefix);
        // Layers 0, 1, … present without a gap.
        let contiguous = found
            .iter()
            .enumerate()
            .take_while(|(i, &j)| *i == j)
            .count();
        let n = match cfg.num_hidden_layers {
            Some(n) => n,
            None if contiguous < found.len() => {
                return Err(Error::Format(format!(
                    "tensors \"{}.*\": layer {contiguous} missing from the checkpoint (found layers {found:?})",
                    join_name(prefix, &format!("layer.{contiguous}"))
                )));
            }
            None => contiguous,
        };
        if n == 0 {
            return Err(Error::Format(format!(
                "tensors \"{}.*\": missing from the checkpoint (the encoder has no layer)",
                join_name(prefix, "layer.0")
            )));
        }
        if let Some(&extra) = found.iter().find(|&&i| i >= n) {
            return Err(Error::Format(format!(
                "tensors \"{}.*\": layer {extra} present but num_hidden_layers = {n}",
                join_name(prefix, &format!("layer.{extra}"))
            )));
        }
        let layers = (0..n)
            .map(|i| {
                let p = join_name(prefix, &format!("layer.{i}"));
                if found.binary_search(&i).is_err() {
                    return Err(Error::Format(format!(
                        "tensors \"{p}.*\": layer {i} missing from the checkpoint (found layers {found:?})"
                    )));
                }
                M2BertLayer::from_state_dict(sd, &p, cfg)
            })
            .collect::<Result<_>>()?;
        M2BertEncoder::new(layers).map_err(|e| name_err(&format!("tensors \"{prefix}.*\""), e))
    }

    /// Stores every layer as `{prefix}.layer.{i}.…`.
    ///
    /// # Errors
    /// As [`M2BertLayer::to_state_dict`].
    pub fn to_state_dict(&self, sd: &mut StateDict<R>, prefix: &str) -> Result<()> {
        for (i, l) in self.layers.iter().enumerate() {
            l.to_state_dict(sd, &join_name(prefix, &format!("layer.{i}")))?;
        }
        Ok(())
    }

    /// Loads the encoder at `prefix` from a safetensors file, reading only its tensors.
    ///
    /// # Errors
    /// As [`StateDict::load_prefix`] and [`from_state_dict`](M2BertEncoder::from_state_dict).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        cfg: &M2BertConfig,
    ) -> Result<Self> {
        let sd = StateDict::load_prefix(path, &join_name(prefix, ""))?;
        Self::from_state_dict(&sd, prefix, cfg)
    }

    /// Saves the encoder alone to a safetensors file with `dtype` (`F32`, `F64`, `F16`, `BF16`).
    ///
    /// # Errors
    /// As [`to_state_dict`](M2BertEncoder::to_state_dict) and [`StateDict::save`].
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        dtype: Dtype,
    ) -> Result<()> {
        StateDict::save_new(path, dtype, |sd| self.to_state_dict(sd, prefix))
    }
}
