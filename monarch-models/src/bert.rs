//! A BERT encoder (HuggingFace `BertModel`, without the pooler) built from the core crate's
//! pieces, loaded from safetensors under the published parameter names.
//!
//! One block, for rows `x` (`tokens × hidden`):
//!
//! ```text
//! q, k, v = x·Wqᵀ + bq, x·Wkᵀ + bk, x·Wvᵀ + bv          (split into heads of width hidden/heads)
//! x = LayerNorm(attention(q, k, v, mask)·Woᵀ + bo + x)   (post-LayerNorm)
//! x = LayerNorm(GELU(x·W1ᵀ + b1)·W2ᵀ + b2 + x)           (GELU in its exact erf form)
//! ```
//!
//! after embeddings `LayerNorm(word[id] + position[t] + token_type[type])`. The attention of each
//! layer is pluggable ([`AttentionKind`]): exact softmax attention (the core's streaming
//! [`ExactAttention`]) or [`MonarchAttention`] with a chosen block size and number of steps.
//! Each dense layer ([`Dense`]) is either the pretrained dense weight or a Monarch matrix, e.g.
//! its projection by [`Monarch::project`] (see [`BertModel::project_dense`]).
//!
//! | published name (prefix `encoder.layer.{i}.`) | shape | field |
//! |---|---|---|
//! | `attention.self.query.weight`, `.bias` (also `key`, `value`) | `(H, H)`, `(H,)` | [`BertLayer::query`], [`key`](BertLayer::key), [`value`](BertLayer::value) |
//! | `attention.output.dense.weight`, `.bias` | `(H, H)`, `(H,)` | [`BertLayer::attn_output`] |
//! | `attention.output.LayerNorm.weight`, `.bias` | `(H,)` | [`BertLayer::attn_norm`] |
//! | `intermediate.dense.weight`, `.bias` | `(I, H)`, `(I,)` | [`BertLayer::intermediate`] |
//! | `output.dense.weight`, `.bias` | `(H, I)`, `(H,)` | [`BertLayer::output`] |
//! | `output.LayerNorm.weight`, `.bias` | `(H,)` | [`BertLayer::out_norm`] |
//!
//! and `embeddings.{word,position,token_type}_embeddings.weight`, `embeddings.LayerNorm.*`.
//! Sizes come from [`BertConfig`] (`config.json`); every tensor is checked against them, and a
//! missing or misshapen tensor is an [`Error`] naming it (and the file). The pooler
//! (`pooler.dense.*`) and the integer buffer `embeddings.position_ids` are not read.

use monarch::attention::{ExactAttention, MonarchAttention};
use monarch::checkpoint::StateDict;
use monarch::mixer::nn::{gelu, LayerNorm, Linear};
use monarch::ndarray::{s, Array1, Array2, Array3, Array4, ArrayView2, ArrayView4, Axis};
use monarch::{Error, Monarch, RealScalar, Result};
use std::path::Path;

/// The parts of a HuggingFace `BertConfig` (`config.json`) that the encoder needs.
///
/// Reading checks the values the forward pass depends on and rejects others: `model_type`
/// must be `"bert"` (when present), `hidden_act` `"gelu"` (the erf form),
/// `position_embedding_type` `"absolute"` (when present), and `hidden_size` a multiple of
/// `num_attention_heads`.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// `vocab_size`: rows of the word-embedding table.
    pub vocab_size: usize,
    /// `hidden_size` `H`.
    pub hidden_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `intermediate_size` `I` of the feed-forward block.
    pub intermediate_size: usize,
    /// `max_position_embeddings`: the longest sequence the position table allows.
    pub max_position_embeddings: usize,
    /// `type_vocab_size`: rows of the token-type table.
    pub type_vocab_size: usize,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// Parses the JSON text of a `config.json`; `file` names it in errors.
    ///
    /// # Errors
    /// [`Error::Format`] naming `file` and the key for invalid JSON, a missing or non-numeric
    /// size, or an unsupported value (see the type's docs).
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Format(format!("{file}: not valid JSON: {e}")))?;
        let size = |key: &str| -> Result<usize> {
            let x = v
                .get(key)
                .ok_or_else(|| Error::Format(format!("{file}: \"{key}\" is missing")))?;
            match x.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(Error::Format(format!(
                    "{file}: \"{key}\" = {x} is not a positive integer"
                ))),
            }
        };
        let string = |key: &str, want: &str, required: bool| -> Result<()> {
            match v.get(key) {
                None if !required => Ok(()),
                None => Err(Error::Format(format!("{file}: \"{key}\" is missing"))),
                Some(x) if x.as_str() == Some(want) => Ok(()),
                Some(x) => Err(Error::Format(format!(
                    "{file}: \"{key}\" = {x} is not supported (only \"{want}\")"
                ))),
            }
        };
        string("model_type", "bert", false)?;
        string("hidden_act", "gelu", true)?;
        string("position_embedding_type", "absolute", false)?;
        let eps = match v.get("layer_norm_eps") {
            None => 1e-12,
            Some(x) => match x.as_f64() {
                Some(e) if e.is_finite() && e >= 0.0 => e,
                _ => {
                    return Err(Error::Format(format!(
                        "{file}: \"layer_norm_eps\" = {x} is not a non-negative number"
                    )))
                }
            },
        };
        let cfg = BertConfig {
            vocab_size: size("vocab_size")?,
            hidden_size: size("hidden_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads: size("num_attention_heads")?,
            intermediate_size: size("intermediate_size")?,
            max_position_embeddings: size("max_position_embeddings")?,
            type_vocab_size: size("type_vocab_size")?,
            layer_norm_eps: eps,
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Format(format!(
                "{file}: \"hidden_size\" = {} is not a multiple of \"num_attention_heads\" = {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }

    /// Reads a `config.json` file.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it cannot be read; otherwise as
    /// [`from_json`](BertConfig::from_json).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Width of one attention head, `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which attention a layer runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionKind {
    /// Exact softmax attention (the core's streaming [`ExactAttention`]).
    Exact,
    /// [`MonarchAttention`] with its block size and number of steps.
    Monarch(MonarchAttention),
}

impl AttentionKind {
    /// `MonarchAttention` with block size `block_size` and `steps` rounds.
    pub fn monarch(block_size: usize, steps: usize) -> Self {
        AttentionKind::Monarch(MonarchAttention::new(block_size, steps))
    }

    /// Attention of `q`, `k`, `v` `(batch, heads, N, d)` with an optional key mask `(batch, N)`.
    ///
    /// # Errors
    /// Those of [`ExactAttention::forward`] or [`MonarchAttention::forward`].
    pub fn forward<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<Array4<T>> {
        match self {
            AttentionKind::Exact => ExactAttention::new().forward(q, k, v, mask),
            AttentionKind::Monarch(ma) => ma.forward(q, k, v, mask),
        }
    }
}

/// A dense layer `y = x·Wᵀ + b` of the encoder: the pretrained weight or a Monarch matrix.
// A model holds a few dozen of these, not a collection: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Dense<T: RealScalar> {
    /// The dense weight `(out, in)` and bias, as published.
    Full(Linear<T>),
    /// A Monarch matrix `(out × in)` in place of the weight, with the dense bias.
    Monarch {
        /// The structured weight.
        weight: Monarch<T>,
        /// The bias `(out,)`.
        bias: Array1<T>,
    },
}

impl<T: RealScalar> Dense<T> {
    /// Rows `x` `(tokens, in)` to `(tokens, out)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `x` has the wrong width.
    pub fn forward(&self, x: ArrayView2<T>) -> Result<Array2<T>> {
        match self {
            Dense::Full(l) => l.forward(x),
            Dense::Monarch { weight, bias } => {
                let mut y = weight.matmul(x)?;
                y += bias;
                Ok(y)
            }
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        match self {
            Dense::Full(l) => l.in_features(),
            Dense::Monarch { weight, .. } => weight.in_features(),
        }
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        match self {
            Dense::Full(l) => l.out_features(),
            Dense::Monarch { weight, .. } => weight.out_features(),
        }
    }

    /// Parameters of the weight (the bias not counted).
    pub fn weight_params(&self) -> usize {
        match self {
            Dense::Full(l) => l.weight.len(),
            Dense::Monarch { weight, .. } => weight.num_params(),
        }
    }

    /// The weight as a dense `(out, in)` matrix.
    pub fn dense_weight(&self) -> Array2<T> {
        match self {
            Dense::Full(l) => l.weight.clone(),
            Dense::Monarch { weight, .. } => weight.to_dense(),
        }
    }

    /// The bias `(out,)`.
    pub fn bias(&self) -> Array1<T> {
        match self {
            Dense::Full(l) => l
                .bias
                .clone()
                .unwrap_or_else(|| Array1::zeros(l.out_features())),
            Dense::Monarch { bias, .. } => bias.clone(),
        }
    }
}

/// One encoder block (see the [module docs](self) for its formula and parameter names).
#[derive(Debug, Clone)]
pub struct BertLayer<T: RealScalar> {
    /// `attention.self.query`.
    pub query: Dense<T>,
    /// `attention.self.key`.
    pub key: Dense<T>,
    /// `attention.self.value`.
    pub value: Dense<T>,
    /// `attention.output.dense`.
    pub attn_output: Dense<T>,
    /// `attention.output.LayerNorm`.
    pub attn_norm: LayerNorm<T>,
    /// `intermediate.dense`.
    pub intermediate: Dense<T>,
    /// `output.dense`.
    pub output: Dense<T>,
    /// `output.LayerNorm`.
    pub out_norm: LayerNorm<T>,
    /// The attention this layer runs.
    pub attention: AttentionKind,
    heads: usize,
}

/// The inputs that one block's dense layers saw in a forward pass (rows = tokens of every
/// sequence of the batch, padding included): what [`BertModel::forward_traced`] records.
#[derive(Debug, Clone)]
pub struct LayerTrace<T> {
    /// Input of `query`, `key` and `value` (the block's input).
    pub x: Array2<T>,
    /// Input of `attention.output.dense` (the attention output, heads concatenated).
    pub context: Array2<T>,
    /// Input of `intermediate.dense` (after the first LayerNorm).
    pub mid: Array2<T>,
    /// Input of `output.dense` (after GELU).
    pub act: Array2<T>,
}

/// The names of a block's six dense layers, in the order of [`BertLayer::dense_mut`].
pub const DENSE_NAMES: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

impl<T: RealScalar> BertLayer<T> {
    /// The six dense layers in the order of [`DENSE_NAMES`].
    pub fn dense_mut(&mut self) -> [&mut Dense<T>; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attn_output,
            &mut self.intermediate,
            &mut self.output,
        ]
    }

    /// The six dense layers in the order of [`DENSE_NAMES`].
    pub fn dense(&self) -> [&Dense<T>; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attn_output,
            &self.intermediate,
            &self.output,
        ]
    }

    /// For a dense layer's index in [`DENSE_NAMES`], the matching input rows of a trace.
    pub fn trace_input(trace: &LayerTrace<T>, index: usize) -> &Array2<T> {
        match index {
            0..=2 => &trace.x,
            3 => &trace.context,
            4 => &trace.mid,
            _ => &trace.act,
        }
    }

    /// The block on rows `x` `(batch·N, H)` of `batch` sequences of length `N`; `mask`
    /// `(batch, N)` marks the real tokens (`None`: all are).
    ///
    /// # Errors
    /// Shape errors, and those of the attention.
    pub fn forward(
        &self,
        x: ArrayView2<T>,
        batch: usize,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<Array2<T>> {
        self.forward_impl(x, batch, mask, None)
    }

    fn forward_impl(
        &self,
        x: ArrayView2<T>,
        batch: usize,
        mask: Option<ArrayView2<bool>>,
        trace: Option<&mut Vec<LayerTrace<T>>>,
    ) -> Result<Array2<T>> {
        let (rows, h) = x.dim();
        let n = rows / batch.max(1);
        let heads = self.heads;
        let dh = h / heads;
        let split = |a: Array2<T>| -> Result<Array4<T>> {
            let a = a
                .into_shape_with_order((batch, n, heads, dh))
                .map_err(|e| Error::invalid(format!("BertLayer: reshape to heads: {e}")))?;
            Ok(a.permuted_axes([0, 2, 1, 3])
                .as_standard_layout()
                .into_owned())
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let o = self.attention.forward(q.view(), k.view(), v.view(), mask)?;
        let ctx = o
            .permuted_axes([0, 2, 1, 3])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((rows, h))
            .map_err(|e| Error::invalid(format!("BertLayer: merge heads: {e}")))?;
        let mut a = self.attn_output.forward(ctx.view())?;
        a += &x;
        let mid = self.attn_norm.forward(a.view())?;
        let mut act = self.intermediate.forward(mid.view())?;
        act.mapv_inplace(gelu);
        let mut y = self.output.forward(act.view())?;
        y += &mid;
        let out = self.out_norm.forward(y.view())?;
        if let Some(t) = trace {
            t.push(LayerTrace {
                x: x.to_owned(),
                context: ctx,
                mid,
                act,
            });
        }
        Ok(out)
    }
}

/// The embedding tables and their LayerNorm.
#[derive(Debug, Clone)]
pub struct BertEmbeddings<T: RealScalar> {
    /// `word_embeddings.weight` `(vocab, H)`.
    pub word: Array2<T>,
    /// `position_embeddings.weight` `(max_positions, H)`.
    pub position: Array2<T>,
    /// `token_type_embeddings.weight` `(types, H)`.
    pub token_type: Array2<T>,
    /// `LayerNorm`.
    pub norm: LayerNorm<T>,
}

/// Token ids of a batch of sequences, padded to one length: what the encoder reads.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Token ids `(batch, N)` (padding: 0).
    pub ids: Array2<u32>,
    /// Token-type (segment) ids `(batch, N)`.
    pub type_ids: Array2<u32>,
    /// `(batch, N)`: `true` for real tokens, `false` for padding.
    pub mask: Array2<bool>,
}

impl TokenBatch {
    /// Pads sequences of ids (all token type 0) with id 0 to the longest one.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for no sequence or only empty ones.
    pub fn from_ids(seqs: &[Vec<u32>]) -> Result<Self> {
        let n = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if seqs.is_empty() || n == 0 {
            return Err(Error::zero("TokenBatch::from_ids: sequences"));
        }
        let b = seqs.len();
        let mut ids = Array2::zeros((b, n));
        let mut mask = Array2::from_elem((b, n), false);
        for (i, s) in seqs.iter().enumerate() {
            for (t, &id) in s.iter().enumerate() {
                ids[[i, t]] = id;
                mask[[i, t]] = true;
            }
        }
        Ok(TokenBatch {
            ids,
            type_ids: Array2::zeros((b, n)),
            mask,
        })
    }

    /// Pads sequences of ids and their token types (sentence pairs: 0 for the first text,
    /// 1 for the second) with 0 to the longest one.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for no sequence or only empty ones; [`Error::ShapeMismatch`] if
    /// `types` does not give one type per id of every sequence.
    pub fn from_ids_and_types(seqs: &[Vec<u32>], types: &[Vec<u32>]) -> Result<Self> {
        if types.len() != seqs.len() {
            return Err(Error::shape(
                "TokenBatch::from_ids_and_types: sequences of types",
                seqs.len(),
                types.len(),
            ));
        }
        let mut batch = Self::from_ids(seqs)?;
        for (i, (s, t)) in seqs.iter().zip(types).enumerate() {
            if t.len() != s.len() {
                return Err(Error::shape(
                    format!("TokenBatch::from_ids_and_types: types of sequence {i}"),
                    s.len(),
                    t.len(),
                ));
            }
            for (j, &ty) in t.iter().enumerate() {
                batch.type_ids[[i, j]] = ty;
            }
        }
        Ok(batch)
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.ids.nrows()
    }

    /// Padded length `N`.
    pub fn len(&self) -> usize {
        self.ids.ncols()
    }

    /// True for a batch of length 0 (never built by [`from_ids`](TokenBatch::from_ids)).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The BERT encoder: embeddings and blocks (no pooler).
#[derive(Debug, Clone)]
pub struct BertModel<T: RealScalar> {
    /// The configuration it was built for.
    pub config: BertConfig,
    /// Embedding tables.
    pub embeddings: BertEmbeddings<T>,
    /// The blocks.
    pub layers: Vec<BertLayer<T>>,
}

/// One dense layer's outcome in [`BertModel::project_dense`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedLayer {
    /// Layer index.
    pub layer: usize,
    /// Name in the block ([`DENSE_NAMES`]).
    pub name: &'static str,
    /// Parameters of the dense weight.
    pub dense_params: usize,
    /// Parameters of the Monarch weight.
    pub monarch_params: usize,
    /// `‖W − M̂‖_F / ‖W‖_F`.
    pub relative_error: f64,
    /// Input blocks `k` and output blocks `l` of the projection.
    pub blocks: (usize, usize),
}

/// The divisor of `n` closest to `√n` (the smaller one on a tie): the block count that makes a
/// Monarch's blocks square-ish.
pub fn near_sqrt_divisor(n: usize) -> usize {
    let r = (n as f64).sqrt();
    (1..=n.max(1))
        .filter(|d| n.is_multiple_of(*d))
        .min_by(|a, b| {
            let da = (*a as f64 - r).abs();
            let db = (*b as f64 - r).abs();
            da.total_cmp(&db).then(a.cmp(b))
        })
        .unwrap_or(1)
}

fn with_file(file: &str, e: Error) -> Error {
    match e {
        Error::Format(m) => Error::Format(format!("{file}: {m}")),
        Error::ShapeMismatch {
            context,
            expected,
            found,
        } => Error::ShapeMismatch {
            context: format!("{file}: {context}"),
            expected,
            found,
        },
        Error::NonFinite { context } => Error::NonFinite {
            context: format!("{file}: {context}"),
        },
        other => other,
    }
}

fn finite<T: RealScalar>(name: &str, a: &Array2<T>) -> Result<()> {
    if a.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            context: format!("tensor \"{name}\""),
        })
    }
}

fn load_linear<T: RealScalar>(
    sd: &StateDict<T>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Dense<T>> {
    let wn = format!("{prefix}.weight");
    let bn = format!("{prefix}.bias");
    let w = sd.array2(&wn, (out, inp))?;
    finite(&wn, &w)?;
    let b = sd.array1(&bn, out)?;
    finite(&bn, &b.clone().insert_axis(Axis(0)))?;
    Ok(Dense::Full(Linear::new(w, Some(b))?))
}

fn load_norm<T: RealScalar>(
    sd: &StateDict<T>,
    prefix: &str,
    width: usize,
    eps: f64,
) -> Result<LayerNorm<T>> {
    let w = sd.array1(&format!("{prefix}.weight"), width)?;
    let b = sd.array1(&format!("{prefix}.bias"), width)?;
    LayerNorm::from_params(w, b, T::from_f64(eps))
}

impl<T: RealScalar> BertModel<T> {
    /// Builds the encoder from a state dict whose names start at `prefix` (`""` for a
    /// `BertModel` saved alone, as all-MiniLM-L6-v2 is; `"bert."` inside a task model).
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing tensor, [`Error::ShapeMismatch`] naming a tensor whose
    /// shape does not fit `config`, [`Error::NonFinite`] naming a weight with NaN or infinity.
    pub fn from_state_dict(sd: &StateDict<T>, config: &BertConfig, prefix: &str) -> Result<Self> {
        let c = config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let p = |name: &str| format!("{prefix}{name}");
        let table = |name: &str, rows: usize| -> Result<Array2<T>> {
            let n = p(name);
            let a = sd.array2(&n, (rows, h))?;
            finite(&n, &a)?;
            Ok(a)
        };
        let embeddings = BertEmbeddings {
            word: table("embeddings.word_embeddings.weight", c.vocab_size)?,
            position: table(
                "embeddings.position_embeddings.weight",
                c.max_position_embeddings,
            )?,
            token_type: table("embeddings.token_type_embeddings.weight", c.type_vocab_size)?,
            norm: load_norm(sd, &p("embeddings.LayerNorm"), h, c.layer_norm_eps)?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let lp = p(&format!("encoder.layer.{l}."));
            let lin = |name: &str, out, inp| load_linear(sd, &format!("{lp}{name}"), out, inp);
            layers.push(BertLayer {
                query: lin("attention.self.query", h, h)?,
                key: lin("attention.self.key", h, h)?,
                value: lin("attention.self.value", h, h)?,
                attn_output: lin("attention.output.dense", h, h)?,
                attn_norm: load_norm(
                    sd,
                    &format!("{lp}attention.output.LayerNorm"),
                    h,
                    c.layer_norm_eps,
                )?,
                intermediate: lin("intermediate.dense", i, h)?,
                output: lin("output.dense", h, i)?,
                out_norm: load_norm(sd, &format!("{lp}output.LayerNorm"), h, c.layer_norm_eps)?,
                attention: AttentionKind::Exact,
                heads: c.num_attention_heads,
            });
        }
        Ok(BertModel {
            config: c.clone(),
            embeddings,
            layers,
        })
    }

    /// Loads the encoder from a safetensors file (only the tensors under `prefix` are read).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it cannot be read; otherwise the errors of
    /// [`from_state_dict`](BertModel::from_state_dict) and of the safetensors reader, each
    /// naming the file and the tensor.
    pub fn load(path: impl AsRef<Path>, config: &BertConfig, prefix: &str) -> Result<Self> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let sd = StateDict::<T>::load_prefix(path, prefix).map_err(|e| with_file(&file, e))?;
        Self::from_state_dict(&sd, config, prefix).map_err(|e| with_file(&file, e))
    }

    /// Sets the attention of every layer.
    pub fn set_attention(&mut self, kind: AttentionKind) {
        for l in &mut self.layers {
            l.attention = kind;
        }
    }

    /// Checks a batch against the configuration.
    fn check_batch(&self, batch: &TokenBatch) -> Result<()> {
        let c = &self.config;
        if batch.ids.is_empty() {
            return Err(Error::zero("BertModel::forward: token batch"));
        }
        if batch.type_ids.dim() != batch.ids.dim() || batch.mask.dim() != batch.ids.dim() {
            return Err(Error::shape(
                "BertModel::forward: type_ids and mask (batch, N)",
                batch.ids.dim(),
                (batch.type_ids.dim(), batch.mask.dim()),
            ));
        }
        if batch.len() > c.max_position_embeddings {
            return Err(Error::TooLarge {
                context: "BertModel::forward: sequence length (max_position_embeddings)".into(),
                value: batch.len(),
                max: c.max_position_embeddings,
            });
        }
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::invalid(format!(
                "BertModel::forward: token id {id} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        if let Some(&t) = batch
            .type_ids
            .iter()
            .find(|&&t| t as usize >= c.type_vocab_size)
        {
            return Err(Error::invalid(format!(
                "BertModel::forward: token type {t} is outside the {} types",
                c.type_vocab_size
            )));
        }
        Ok(())
    }

    /// `LayerNorm(word[id] + position[t] + token_type[type])`, rows `(batch·N, H)`.
    ///
    /// # Errors
    /// As [`forward`](BertModel::forward).
    pub fn embed(&self, batch: &TokenBatch) -> Result<Array2<T>> {
        self.check_batch(batch)?;
        let (b, n) = batch.ids.dim();
        let e = &self.embeddings;
        let mut x = Array2::<T>::zeros((b * n, self.config.hidden_size));
        for ((bi, t), &id) in batch.ids.indexed_iter() {
            let mut row = x.row_mut(bi * n + t);
            row.assign(&e.word.row(id as usize));
            row += &e.position.row(t);
            row += &e.token_type.row(batch.type_ids[[bi, t]] as usize);
        }
        e.norm.forward(x.view())
    }

    /// The last hidden state `(batch, N, H)` of a batch (rows of padding tokens are computed
    /// but mean nothing).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for sequences longer than `max_position_embeddings`,
    /// [`Error::InvalidArgument`] for a token id or type outside the tables or a sequence that
    /// is all padding, and the attention's errors.
    pub fn forward(&self, batch: &TokenBatch) -> Result<Array3<T>> {
        self.run(batch, None)
    }

    /// [`forward`](BertModel::forward) that also returns what each block's dense layers read
    /// ([`LayerTrace`]), for fitting replacements of those layers.
    ///
    /// # Errors
    /// As [`forward`](BertModel::forward).
    pub fn forward_traced(&self, batch: &TokenBatch) -> Result<(Array3<T>, Vec<LayerTrace<T>>)> {
        let mut traces = Vec::with_capacity(self.layers.len());
        let h = self.run(batch, Some(&mut traces))?;
        Ok((h, traces))
    }

    fn run(
        &self,
        batch: &TokenBatch,
        mut trace: Option<&mut Vec<LayerTrace<T>>>,
    ) -> Result<Array3<T>> {
        let mut x = self.embed(batch)?;
        let (b, n) = batch.ids.dim();
        let mask = if batch.mask.iter().all(|&m| m) {
            None
        } else {
            Some(batch.mask.view())
        };
        for layer in &self.layers {
            x = layer.forward_impl(x.view(), b, mask, trace.as_deref_mut())?;
        }
        x.into_shape_with_order((b, n, self.config.hidden_size))
            .map_err(|e| Error::invalid(format!("BertModel::forward: {e}")))
    }

    /// Replaces every dense layer of the blocks (`query`, `key`, `value`, attention output,
    /// intermediate, output) by its Frobenius-nearest Monarch ([`Monarch::project`]) of
    /// per-slice rank `rank`, with block counts `near_sqrt_divisor` of each side (or
    /// `blocks = (in_blocks, out_blocks)` for every layer). Dense layers that are already Monarch
    /// are projected from their dense form. Returns each layer's sizes and weight error.
    ///
    /// # Errors
    /// Those of [`Monarch::project`] (a rank larger than a slice allows, block counts that do not
    /// divide the sides).
    pub fn project_dense(
        &mut self,
        rank: usize,
        blocks: Option<(usize, usize)>,
    ) -> Result<Vec<ProjectedLayer>> {
        let mut out = Vec::new();
        for (li, layer) in self.layers.iter_mut().enumerate() {
            for (name, d) in DENSE_NAMES.iter().zip(layer.dense_mut()) {
                let w = d.dense_weight();
                let (rows, cols) = w.dim();
                let (k, l) = blocks.unwrap_or((near_sqrt_divisor(cols), near_sqrt_divisor(rows)));
                let p = Monarch::project_with_error(w.view(), k, l, rank).map_err(|e| {
                    Error::invalid(format!("encoder.layer.{li}.{name}: projection: {e}"))
                })?;
                out.push(ProjectedLayer {
                    layer: li,
                    name,
                    dense_params: w.len(),
                    monarch_params: p.monarch.num_params(),
                    relative_error: p.relative_error.to_f64_val(),
                    blocks: (k, l),
                });
                *d = Dense::Monarch {
                    weight: p.monarch,
                    bias: d.bias(),
                };
            }
        }
        Ok(out)
    }

    /// Parameters of all dense weights of the blocks (biases, norms and embeddings excluded).
    pub fn dense_weight_params(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.dense().map(Dense::weight_params))
            .sum()
    }
}

/// Mean of the real tokens' rows of `hidden` `(batch, N, H)` per sequence, `(batch, H)`
/// (sentence-transformers' mean pooling).
///
/// # Errors
/// [`Error::ShapeMismatch`] if `mask` is not `(batch, N)`; [`Error::InvalidArgument`] for a
/// sequence with no real token.
pub fn mean_pool<T: RealScalar>(hidden: &Array3<T>, mask: ArrayView2<bool>) -> Result<Array2<T>> {
    let (b, n, h) = hidden.dim();
    if mask.dim() != (b, n) {
        return Err(Error::shape(
            "mean_pool: mask (batch, N)",
            (b, n),
            mask.dim(),
        ));
    }
    let mut out = Array2::zeros((b, h));
    for bi in 0..b {
        let count = mask.row(bi).iter().filter(|&&m| m).count();
        if count == 0 {
            return Err(Error::invalid(format!(
                "mean_pool: sequence {bi} has no real token"
            )));
        }
        let mut row = out.row_mut(bi);
        for t in 0..n {
            if mask[[bi, t]] {
                row += &hidden.slice(s![bi, t, ..]);
            }
        }
        let c = T::from_f64(count as f64);
        row.mapv_inplace(|v| v / c);
    }
    Ok(out)
}

/// Each row divided by its Euclidean norm (rows of norm zero are left as they are; PyTorch's
/// `F.normalize` clamps the norm at 1e-12 to the same effect).
pub fn l2_normalize<T: RealScalar>(mut x: Array2<T>) -> Array2<T> {
    for mut row in x.rows_mut() {
        let norm = row.iter().map(|&v| v * v).sum::<T>().sqrt();
        if norm > T::from_f64(1e-12) {
            row.mapv_inplace(|v| v / norm);
        }
    }
    x
}
