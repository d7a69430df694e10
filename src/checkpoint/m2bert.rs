//! Load/save of the released M2-BERT block under the module names of HazyResearch/m2
//! (`bert/src/bert_layers.py`, `bert/src/mm/monarch_mixer_sequence_mixer.py`,
//! `bert/src/mm/hyena_utils.py`, `bert/src/mm/blockdiag_linear.py`).
//!
//! Names below are relative to a layer prefix such as `bert.encoder.layer.0` (a checkpoint
//! saved through Composer's wrapper has `model.` in front: pass `model.bert.encoder`).
//!
//! | released name | shape | ours |
//! |---|---|---|
//! | `attention.in_linear.weight`, `.bias` | `(3H, H)`, `(3H,)` | [`M2SequenceMixer::in_linear`] |
//! | `attention.short_filter.weight`, `.bias` | `(3H, 1, 3)`, `(3H,)` | [`M2SequenceMixer::short_conv_weight`] `(3H, 3)`, [`short_conv_bias`](M2SequenceMixer::short_conv_bias) |
//! | `attention.out_linear.weight`, `.bias` | `(H, H)`, `(H,)` | [`M2SequenceMixer::out_linear`] |
//! | `attention.filter_fn.bias` | `(H,)` | [`ImplicitFilter::bias`] (`D`) |
//! | `attention.filter_fn.pos_emb.z` | `(1, l_max, emb_dim)` | [`ImplicitFilter::z`] |
//! | `attention.filter_fn.pos_emb.t` | `(1, l_max, 1)` | [`ImplicitFilter::t`] |
//! | `attention.filter_fn.modulation.deltas` | `(1, 1, H)` | [`ImplicitFilter::deltas`] |
//! | `attention.filter_fn.implicit_filter.{0,2,…}.weight`, `.bias` | `(order, emb_dim)`, `(order, order)` | [`ImplicitFilter::mlp_fwd`] layers |
//! | `attention.filter_fn.implicit_filter.{2n}.weight` (last, no bias) | `(H, order)` | last layer of `mlp_fwd` |
//! | `attention.filter_fn.implicit_filter.{1,3,…}.freq` | `(1, order)` | [`ImplicitFilter::freq`] |
//! | `attention.filter_fn.implicit_filter_rev.*` (bidirectional) | as above | [`ImplicitFilter::mlp_rev`] |
//! | `attention.filter_fn2.*` (residual long conv) | as `filter_fn` | [`M2SequenceMixer::filter2`] |
//! | `mlp.gated_layers.weight` | `(nb, 2I/nb, H/nb)` or `(2I, H)` | [`GatedMlp::gated`] |
//! | `mlp.wo.weight`, `mlp.wo.bias` | `(nb, H/nb, I/nb)` or `(H, I)`, `(H,)` | [`GatedMlp::wo`], [`GatedMlp::wo_bias`] |
//! | `mlp.layernorm.weight`, `.bias` | `(H,)` | [`GatedMlp::ln`] |
//!
//! The released filter applies one `Sin` module after every hidden layer of both MLPs, so its
//! `freq` is stored once per position (`implicit_filter.1.freq`, `.3.freq`, …,
//! `implicit_filter_rev.1.freq`, …), or only once when a converter removed the shared copies.
//! Loading accepts any non-empty subset of these names and requires them to be equal; saving
//! writes all of them, as PyTorch's `state_dict()` does.
//!
//! Not stored in the checkpoints and taken from [`M2BertConfig`]: `bidirectional`,
//! `residual_long_conv`, `hyena_w_mod` and `layer_norm_eps`. The modulation `shift` is 0 in the
//! released code (it is never passed). Sizes (`H`, `I`, `nb`, `l_max`, `order`, `emb_dim`, the
//! number of inner filter layers and of encoder layers) are read from the tensors.
//!
//! Not loaded (each is an [`Error`] naming the tensor): `hyena_training_additions`
//! (`attention.layernorm.*`), the inference-only `FlashMMSequenceMixing` /
//! `MMFlashFFTSequenceMixing` modules (`attention.fast_filter.*`, `attention.k`,
//! `attention.x1_s`, …), the non-gated `BertMLP` (`use_glu_mlp = False`), `BlockdiagLinear`
//! weights padded to a multiple of `nblocks`, and one-layer (`linear_mixer`) filters. Embeddings,
//! pooler and heads are outside the encoder and are not read.

use super::dtype::Dtype;
use super::more::{check_finite, name_err};
use super::state_dict::{join_name, StateDict};
use crate::mixer::{
    FilterMlp, GatedMlp, ImplicitFilter, M2BertEncoder, M2BertLayer, M2SequenceMixer,
};
use crate::primitives::error::{Error, Result};
use crate::primitives::nn::{LayerNorm, Linear};
use crate::{RealScalar, Scalar};
use ndarray::{Array1, Array2, Array3, ArrayD, Axis, Ix2, Ix3};
use num_complex::Complex;
use std::path::Path;

/// The parts of an M2-BERT configuration (`BertConfig` in HazyResearch/m2) that change how the
/// stored tensors are read but are not themselves stored. [`Default`] is the released
/// M2-BERT's: bidirectional, residual long convolution, `hyena_w_mod = 1`, eps `1e-12`, every
/// layer present in the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct M2BertConfig {
    /// `bidirectional`: the filters also have `implicit_filter_rev` (`k_rev`).
    pub bidirectional: bool,
    /// `residual_long_conv`: the mixer also has `filter_fn2` (a long convolution of its input).
    pub residual_long_conv: bool,
    /// `hyena_w_mod`: fixed multiplier of the sine frequencies.
    pub hyena_w_mod: f64,
    /// `layer_norm_eps` of the MLP's post-LayerNorm (HuggingFace's `BertConfig` default `1e-12`).
    pub layer_norm_eps: f64,
    /// `num_hidden_layers`; `None` loads the layers `0, 1, …` that the checkpoint holds.
    pub num_hidden_layers: Option<usize>,
}

impl Default for M2BertConfig {
    fn default() -> Self {
        M2BertConfig {
            bidirectional: true,
            residual_long_conv: true,
            hyena_w_mod: 1.0,
            layer_norm_eps: 1e-12,
            num_hidden_layers: None,
        }
    }
}

/// The tensor `name` with exactly `ndim` dimensions, finite.
fn tensor_nd<T: RealScalar>(sd: &StateDict<T>, name: &str, ndim: usize) -> Result<ArrayD<T>> {
    let a = sd.tensor(name)?;
    if a.ndim() != ndim {
        return Err(Error::ShapeMismatch {
            context: format!("tensor \"{name}\": shape"),
            expected: format!("{ndim} dimensions"),
            found: format!("{:?}", a.shape()),
        });
    }
    if a.is_empty() {
        return Err(Error::zero(format!(
            "tensor \"{name}\": shape {:?}",
            a.shape()
        )));
    }
    check_finite(name, a.iter())?;
    Ok(a.clone())
}

/// The tensor `name` of exactly `shape`, finite.
fn tensor_shape<T: RealScalar>(
    sd: &StateDict<T>,
    name: &str,
    shape: &[usize],
) -> Result<ArrayD<T>> {
    let a = sd.array(name, shape)?;
    check_finite(name, a.iter())?;
    Ok(a)
}

fn to2<T>(a: ArrayD<T>, name: &str) -> Result<Array2<T>> {
    a.into_dimensionality::<Ix2>()
        .map_err(|e| Error::Format(format!("tensor \"{name}\": {e}")))
}

fn to3<T>(a: ArrayD<T>, name: &str) -> Result<Array3<T>> {
    a.into_dimensionality::<Ix3>()
        .map_err(|e| Error::Format(format!("tensor \"{name}\": {e}")))
}

fn to1<T: Clone>(a: ArrayD<T>) -> Array1<T> {
    Array1::from_iter(a.iter().cloned())
}

/// `Err` naming `name` if it is present: a tensor the configuration says the module lacks.
fn absent<T: RealScalar>(sd: &StateDict<T>, name: &str, why: &str) -> Result<()> {
    if sd.contains(name) || sd.skipped().contains_key(name) {
        Err(Error::Format(format!(
            "tensor \"{name}\": present but {why}"
        )))
    } else {
        Ok(())
    }
}

/// `Err` naming the first tensor under `prefix` (module path), if any.
fn no_module<T: RealScalar>(sd: &StateDict<T>, prefix: &str, why: &str) -> Result<()> {
    let start = join_name(prefix, "");
    match sd.names().find(|n| n.starts_with(&start)) {
        Some(n) => Err(Error::Format(format!("tensor \"{n}\": present but {why}"))),
        None => Ok(()),
    }
}

/// An `nn.Linear` at `prefix` with weight `(out, in)` and bias `(out,)`.
fn load_linear<T: RealScalar>(
    sd: &StateDict<T>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Linear<T>> {
    let wn = join_name(prefix, "weight");
    let bn = join_name(prefix, "bias");
    let w = to2(tensor_shape(sd, &wn, &[out, inp])?, &wn)?;
    let b = to1(tensor_shape(sd, &bn, &[out])?);
    Linear::new(w, Some(b)).map_err(|e| name_err(&format!("tensor \"{wn}\""), e))
}

fn save_linear<T: RealScalar>(
    sd: &mut StateDict<T>,
    prefix: &str,
    l: &Linear<T>,
    what: &str,
) -> Result<()> {
    let b = l.bias.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "{what}: the released module has a bias (\"{}\"); this layer has none",
            join_name(prefix, "bias")
        ))
    })?;
    sd.insert(join_name(prefix, "weight"), l.weight.clone());
    sd.insert(join_name(prefix, "bias"), b.clone());
    Ok(())
}

/// One direction's MLP: `{seq}.0`, `{seq}.2`, … with a `Sin` at the odd positions. The last
/// linear's index is the largest of the weights' indices and one past the largest `freq` index
/// (a `Sin` is always followed by a linear), so a missing last weight is named.
fn load_filter_mlp<T: RealScalar>(
    sd: &StateDict<T>,
    seq: &str,
    emb_dim: usize,
    channels: usize,
    want_layers: Option<usize>,
) -> Result<FilterMlp<T>> {
    let start = join_name(seq, "");
    let mut last = 0usize;
    for name in sd.names().chain(sd.skipped().keys().map(String::as_str)) {
        let Some(rest) = name.strip_prefix(&start) else {
            continue;
        };
        let Some((idx, param)) = rest.split_once('.') else {
            continue;
        };
        let Ok(j) = idx.parse::<usize>() else {
            continue;
        };
        match param {
            "weight" => last = last.max(j),
            "freq" => last = last.max(j.saturating_add(1)),
            _ => {}
        }
    }
    if last % 2 == 1 {
        return Err(Error::Format(format!(
            "tensor \"{}\": an odd index holds a Sin module, not a linear layer",
            join_name(seq, &format!("{last}.weight"))
        )));
    }
    let n = last / 2 + 1;
    if n == 1 {
        // Names the first weight if it is missing, else reports the unsupported linear mixer.
        sd.tensor(&join_name(seq, "0.weight"))?;
        return Err(Error::Format(format!(
            "tensor \"{}\": the implicit filter has a single linear layer (linear_mixer = True), which is not supported",
            join_name(seq, "0.weight")
        )));
    }
    if let Some(w) = want_layers {
        if w != n {
            return Err(Error::Format(format!(
                "tensors \"{seq}.*\": {n} linear layers, but the forward filter has {w}"
            )));
        }
    }
    let first = join_name(seq, "0.weight");
    let order = tensor_nd(sd, &first, 2)?.shape()[0];
    // `n` comes from a name in the file and may be huge: no capacity from it.
    let mut layers = Vec::new();
    for i in 0..n {
        let p = join_name(seq, &(2 * i).to_string());
        if i + 1 < n {
            let inp = if i == 0 { emb_dim } else { order };
            layers.push(load_linear(sd, &p, order, inp)?);
        } else {
            let wn = join_name(&p, "weight");
            absent(
                sd,
                &join_name(&p, "bias"),
                "the last layer of the released implicit filter has no bias",
            )?;
            let w = to2(tensor_shape(sd, &wn, &[channels, order])?, &wn)?;
            layers
                .push(Linear::new(w, None).map_err(|e| name_err(&format!("tensor \"{wn}\""), e))?);
        }
    }
    // A bias past the last layer would be silently dropped.
    if let Some(extra) = sd
        .names()
        .filter_map(|nm| nm.strip_prefix(&start).map(|r| (nm, r)))
        .find(|(_, r)| {
            r.split_once('.')
                .and_then(|(i, _)| i.parse::<usize>().ok())
                .is_some_and(|j| j > last)
        })
    {
        return Err(Error::Format(format!(
            "tensor \"{}\": present but no linear layer of the implicit filter has this index",
            extra.0
        )));
    }
    Ok(FilterMlp { layers })
}

/// The names of the shared `Sin` frequencies of one filter.
fn freq_names(prefix: &str, n_layers: usize, bidirectional: bool) -> Vec<String> {
    let mut seqs = vec!["implicit_filter"];
    if bidirectional {
        seqs.push("implicit_filter_rev");
    }
    let mut v = Vec::new();
    for s in seqs {
        for i in 0..n_layers.saturating_sub(1) {
            v.push(join_name(prefix, &format!("{s}.{}.freq", 2 * i + 1)));
        }
    }
    v
}

impl<R: RealScalar> ImplicitFilter<R> {
    /// Loads a released `HyenaFilter` at `prefix` (e.g. `bert.encoder.layer.0.attention.filter_fn`):
    /// `bias`, `pos_emb.z`, `pos_emb.t`, `modulation.deltas`, `implicit_filter.*` and, if
    /// `bidirectional`, `implicit_filter_rev.*` (see the [module docs](crate::checkpoint::m2bert) for shapes).
    /// `w_mod` is `hyena_w_mod` (not stored); the modulation shift is 0.
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing tensor, a tensor that the configuration excludes
    /// (`implicit_filter_rev` when not `bidirectional`, a bias on the last layer), or `freq`
    /// copies that differ; [`Error::ShapeMismatch`] naming a tensor of the wrong shape;
    /// [`Error::ZeroSize`]; [`Error::NonFinite`] naming a tensor with NaN/Inf;
    /// [`Error::InvalidArgument`] for a non-finite `w_mod`.
    pub fn from_state_dict(
        sd: &StateDict<R>,
        prefix: &str,
        bidirectional: bool,
        w_mod: f64,
    ) -> Result<Self> {
        if !w_mod.is_finite() {
            return Err(Error::invalid(format!(
                "ImplicitFilter::from_state_dict: hyena_w_mod = {w_mod} must be finite"
            )));
        }
        let bn = join_name(prefix, "bias");
        let bias = to1(tensor_nd(sd, &bn, 1)?);
        let h = bias.len();
        let zn = join_name(prefix, "pos_emb.z");
        let z = tensor_nd(sd, &zn, 3)?;
        let (l_max, emb_dim) = (z.shape()[1], z.shape()[2]);
        if z.shape()[0] != 1 {
            return Err(Error::shape(
                format!("tensor \"{zn}\": shape (1, l_max, emb_dim)"),
                [1, l_max, emb_dim],
                z.shape(),
            ));
        }
        let z = to3(z, &zn)?.index_axis_move(Axis(0), 0);
        let tn = join_name(prefix, "pos_emb.t");
        let t = to1(tensor_shape(sd, &tn, &[1, l_max, 1])?);
        let dn = join_name(prefix, "modulation.deltas");
        let deltas = tensor_nd(sd, &dn, 3)?;
        if deltas.shape() != [1, 1, h] {
            return Err(Error::shape(
                format!("tensor \"{dn}\": shape (1, 1, H) with H the length of \"{bn}\""),
                [1, 1, h],
                deltas.shape(),
            ));
        }
        let deltas = to1(deltas);
        let fwd = join_name(prefix, "implicit_filter");
        let mlp_fwd = load_filter_mlp(sd, &fwd, emb_dim, h, None)?;
        let n = mlp_fwd.layers.len();
        let rev = join_name(prefix, "implicit_filter_rev");
        let mlp_rev = if bidirectional {
            Some(load_filter_mlp(sd, &rev, emb_dim, h, Some(n))?)
        } else {
            no_module(sd, &rev, "the configuration is not bidirectional")?;
            None
        };
        let order = mlp_fwd.layers[0].out_features();
        let names = freq_names(prefix, n, bidirectional);
        let mut freq: Option<(String, Array1<R>)> = None;
        for name in &names {
            if !sd.contains(name) && !sd.skipped().contains_key(name) {
                continue;
            }
            let f = to1(tensor_shape(sd, name, &[1, order])?);
            match &freq {
                None => freq = Some((name.clone(), f)),
                Some((first, f0)) => {
                    if *f0 != f {
                        return Err(Error::Format(format!(
                            "tensor \"{name}\": differs from \"{first}\"; the released filter shares one Sin module (one freq) across its layers"
                        )));
                    }
                }
            }
        }
        let Some((_, freq)) = freq else {
            // None of the copies is there: name the first one.
            return Err(Error::Format(format!(
                "tensor \"{}\": missing from the checkpoint (the sine frequencies; any of {} names would do)",
                names[0],
                names.len()
            )));
        };
        Ok(ImplicitFilter {
            z,
            t,
            mlp_fwd,
            mlp_rev,
            freq,
            w_mod: R::from_f64(w_mod),
            deltas,
            shift: R::zero(),
            bias,
        })
    }

    /// Stores the filter under the released names (every `freq` copy included).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the filter has no name in the released code: a non-zero
    /// `shift`, fewer than two layers, a reverse MLP of another depth, a bias on the last layer
    /// or none on another.
    pub fn to_state_dict(&self, sd: &mut StateDict<R>, prefix: &str) -> Result<()> {
        if self.shift != R::zero() {
            return Err(Error::invalid(
                "ImplicitFilter::to_state_dict: a non-zero modulation shift is not stored in the released checkpoints",
            ));
        }
        let n = self.mlp_fwd.layers.len();
        let mut seqs = vec![("implicit_filter", &self.mlp_fwd)];
        if let Some(r) = &self.mlp_rev {
            seqs.push(("implicit_filter_rev", r));
        }
        for (_, m) in &seqs {
            if m.layers.len() != n || n < 2 {
                return Err(Error::invalid(format!(
                    "ImplicitFilter::to_state_dict: both MLPs must have the same number (≥ 2) of layers, found {n} and {}",
                    m.layers.len()
                )));
            }
            for (i, l) in m.layers.iter().enumerate() {
                if l.bias.is_some() != (i + 1 < n) {
                    return Err(Error::invalid(
                        "ImplicitFilter::to_state_dict: the released filter has a bias on every layer but the last",
                    ));
                }
            }
        }
        sd.insert(join_name(prefix, "bias"), self.bias.clone());
        sd.insert(
            join_name(prefix, "pos_emb.z"),
            self.z.clone().insert_axis(Axis(0)),
        );
        let l = self.t.len();
        sd.insert(
            join_name(prefix, "pos_emb.t"),
            self.t
                .clone()
                .into_shape_with_order((1, l, 1))
                .expect("length"),
        );
        let h = self.deltas.len();
        sd.insert(
            join_name(prefix, "modulation.deltas"),
            self.deltas
                .clone()
                .into_shape_with_order((1, 1, h))
                .expect("length"),
        );
        let order = self.freq.len();
        let freq = self
            .freq
            .clone()
            .into_shape_with_order((1, order))
            .expect("length");
        for (s, m) in seqs {
            for (i, l) in m.layers.iter().enumerate() {
                let p = join_name(prefix, &format!("{s}.{}", 2 * i));
                sd.insert(join_name(&p, "weight"), l.weight.clone());
                if let Some(b) = &l.bias {
                    sd.insert(join_name(&p, "bias"), b.clone());
                }
                if i + 1 < n {
                    sd.insert(
                        join_name(prefix, &format!("{s}.{}.freq", 2 * i + 1)),
                        freq.clone(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A `BlockdiagLinear` weight `(nb, out/nb, in/nb)` or an `nn.Linear` weight `(out, in)` (one block).
fn load_blocks<T: RealScalar>(sd: &StateDict<T>, name: &str) -> Result<Array3<T>> {
    let a = sd.tensor(name)?;
    let a = match a.ndim() {
        2 => tensor_nd(sd, name, 2)?.insert_axis(Axis(0)),
        _ => tensor_nd(sd, name, 3)?,
    };
    to3(a, name)
}

impl<R: RealScalar> GatedMlp<R> {
    /// Loads the released `BertGatedLinearUnitMLP` at `prefix` (e.g. `bert.encoder.layer.0.mlp`):
    /// `gated_layers.weight` (no bias), `wo.weight`, `wo.bias`, `layernorm.weight`,
    /// `layernorm.bias`. The weights are `BlockdiagLinear`'s `(nblocks, out/nb, in/nb)`
    /// (`use_monarch_mlp = True`) or `nn.Linear`'s `(out, in)`, read as one block.
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing tensor, a `gated_layers.bias`, or a `gated_layers`
    /// output as wide as `wo`'s input (the non-gated `BertMLP`); [`Error::ShapeMismatch`]
    /// naming a tensor whose shape does not chain; [`Error::ZeroSize`]; [`Error::NonFinite`];
    /// [`Error::InvalidArgument`] for a negative or NaN `layer_norm_eps`.
    pub fn from_state_dict(sd: &StateDict<R>, prefix: &str, layer_norm_eps: f64) -> Result<Self> {
        let gn = join_name(prefix, "gated_layers.weight");
        let won = join_name(prefix, "wo.weight");
        absent(
            sd,
            &join_name(prefix, "gated_layers.bias"),
            "the released gated_layers has no bias",
        )?;
        let g = load_blocks(sd, &gn)?;
        let w = load_blocks(sd, &won)?;
        let (nb, go, gi) = g.dim();
        let (wb, wo_o, wo_i) = w.dim();
        let h = nb * gi;
        if wb == nb && go == wo_i {
            return Err(Error::Format(format!(
                "tensor \"{gn}\": output width {} equals the input width of \"{won}\": this is the non-gated BertMLP (use_glu_mlp = False), which is not supported",
                nb * go
            )));
        }
        if wb != nb || go != 2 * wo_i || wo_o != gi {
            return Err(Error::shape(
                format!(
                    "tensors \"{gn}\" {:?} and \"{won}\": wo's shape (nb, H/nb, I/nb) for these gated_layers",
                    g.shape()
                ),
                [nb, gi, go / 2],
                [wb, wo_o, wo_i],
            ));
        }
        let bn = join_name(prefix, "wo.bias");
        let b = to1(tensor_shape(sd, &bn, &[h])?);
        let lw = join_name(prefix, "layernorm.weight");
        let lb = join_name(prefix, "layernorm.bias");
        let lnw = to1(tensor_shape(sd, &lw, &[h])?);
        let lnb = to1(tensor_shape(sd, &lb, &[h])?);
        if layer_norm_eps.is_nan() || layer_norm_eps < 0.0 {
            return Err(Error::invalid(format!(
                "GatedMlp::from_state_dict: layer_norm_eps = {layer_norm_eps} must be ≥ 0"
            )));
        }
        let ln = LayerNorm::from_params(lnw, lnb, R::from_f64(layer_norm_eps))
            .map_err(|e| name_err(&format!("tensor \"{lw}\""), e))?;
        GatedMlp::new(g, w, b, ln).map_err(|e| name_err(&format!("tensors under \"{prefix}\""), e))
    }

    /// Stores the MLP under the released names, the linears as `BlockdiagLinear` weights
    /// `(nblocks, out/nb, in/nb)` (a layer loaded from `nn.Linear` weights has one block; reshape
    /// to 2-D for a dense PyTorch model).
    pub fn to_state_dict(&self, sd: &mut StateDict<R>, prefix: &str) {
        sd.insert(
            join_name(prefix, "gated_layers.weight"),
            self.gated.weights_array().clone(),
        );
        sd.insert(
            join_name(prefix, "wo.weight"),
            self.wo.weights_array().clone(),
        );
        sd.insert(join_name(prefix, "wo.bias"), self.wo_bias.clone());
        sd.insert(
            join_name(prefix, "layernorm.weight"),
            self.ln.weight.clone(),
        );
        sd.insert(join_name(prefix, "layernorm.bias"), self.ln.bias.clone());
    }
}

impl<R: RealScalar> M2SequenceMixer<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// Loads the released `MonarchMixerSequenceMixing` at `prefix` (e.g.
    /// `bert.encoder.layer.0.attention`): `in_linear`, `short_filter`, `filter_fn`, `filter_fn2`
    /// (if `cfg.residual_long_conv`) and `out_linear` (see the [module docs](crate::checkpoint::m2bert)). The long
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
        Ok(M2SequenceMixer {
            in_linear,
            short_conv_weight: sw,
            short_conv_bias: sb,
            filter,
            filter2,
            out_linear,
            method: Default::default(),
        })
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
        Ok(M2BertLayer { mixer, mlp })
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
        Ok(M2BertEncoder { layers })
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
