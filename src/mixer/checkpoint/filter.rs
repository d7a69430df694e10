//! The implicit filter (`HyenaFilter`) and gated MLP (`BertGatedLinearUnitMLP`) names.

use crate::checkpoint::read::*;
use crate::checkpoint::{join_name, StateDict};
use crate::mixer::{FilterMlp, GatedMlp, ImplicitFilter};
use crate::primitives::error::{Error, Result};
use crate::primitives::nn::{LayerNorm, Linear};
use crate::RealScalar;
use ndarray::{Array1, Array3, Axis};

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
    FilterMlp::new(layers).map_err(|e| name_err(&format!("tensors \"{seq}.*\""), e))
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
    /// `bidirectional`, `implicit_filter_rev.*` (see the [module docs](crate::mixer::checkpoint) for shapes).
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
        ImplicitFilter::new(
            z,
            t,
            mlp_fwd,
            mlp_rev,
            freq,
            R::from_f64(w_mod),
            deltas,
            R::zero(),
            bias,
        )
        .map_err(|e| name_err(&format!("tensors \"{prefix}.*\""), e))
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
