//! The released M2-BERT block's parameter names under the module names of HazyResearch/m2
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

#[cfg(doc)]
use crate::{
    mixer::{GatedMlp, ImplicitFilter, M2SequenceMixer},
    Error,
};

mod filter;
mod layers;

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
