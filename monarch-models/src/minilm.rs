//! all-MiniLM-L6-v2 as sentence-transformers runs it: tokenizer, BERT encoder, mean pooling
//! over the real tokens, L2 normalisation.
//!
//! The model folder is the one sentence-transformers saves (and `scripts/fetch_minilm.sh`
//! unpacks): `config.json`, `model.safetensors`, `tokenizer.json`, `1_Pooling/config.json`,
//! and optionally `sentence_bert_config.json` (`max_seq_length`, default 256) and
//! `modules.json` (normalisation is applied when it lists a `Normalize` module, or when the file
//! is absent).

use crate::bert::{l2_normalize, mean_pool, AttentionKind, BertConfig, BertModel, TokenBatch};
use crate::tokenize::Tokenizer;
use monarch::ndarray::{Array2, Array3};
use monarch::{Error, RealScalar, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The default model folder: `$MINILM_DIR`, else `models/all-MiniLM-L6-v2` at the workspace
/// root (where `scripts/fetch_minilm.sh` puts it).
pub fn default_model_dir() -> PathBuf {
    match std::env::var_os("MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("models")
            .join("all-MiniLM-L6-v2"),
    }
}

/// True if `dir` holds the files [`SentenceEncoder::load`] needs.
pub fn model_present(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(file.to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Format(format!("{file}: not valid JSON: {e}")))
}

/// A sentence encoder: [`Tokenizer`] + [`BertModel`] + mean pooling (+ L2 normalisation).
#[derive(Debug, Clone)]
pub struct SentenceEncoder<T: RealScalar> {
    /// The encoder (its attention and dense layers can be swapped).
    pub model: BertModel<T>,
    tokenizer: std::sync::Arc<Tokenizer>,
    normalize: bool,
}

impl<T: RealScalar> SentenceEncoder<T> {
    /// Loads a sentence-transformers folder (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing file; [`Error::Format`] naming the file and key of an
    /// unsupported configuration (pooling other than mean, an unknown activation, …) or the file
    /// and tensor of a missing or misshapen weight.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::load(dir.join("config.json"))?;
        let pooling = dir.join("1_Pooling").join("config.json");
        let pj = read_json(&pooling)?;
        let pfile = pooling.display();
        for (key, want) in [
            ("pooling_mode_mean_tokens", true),
            ("pooling_mode_cls_token", false),
            ("pooling_mode_max_tokens", false),
            ("pooling_mode_mean_sqrt_len_tokens", false),
        ] {
            match pj.get(key).and_then(serde_json::Value::as_bool) {
                Some(v) if v == want => {}
                None if !want => {}
                other => {
                    return Err(Error::Format(format!(
                        "{pfile}: \"{key}\" = {other:?} is not supported (only mean pooling: \
                         pooling_mode_mean_tokens = true, the other modes false)"
                    )))
                }
            }
        }
        if let Some(d) = pj.get("word_embedding_dimension") {
            if d.as_u64() != Some(config.hidden_size as u64) {
                return Err(Error::Format(format!(
                    "{pfile}: \"word_embedding_dimension\" = {d} differs from hidden_size {}",
                    config.hidden_size
                )));
            }
        }
        let st = dir.join("sentence_bert_config.json");
        let max_len = if st.is_file() {
            let v = read_json(&st)?;
            match v.get("max_seq_length") {
                None => 256,
                Some(x) => match x.as_u64() {
                    Some(n) if n >= 2 && n as usize <= config.max_position_embeddings => n as usize,
                    _ => {
                        return Err(Error::Format(format!(
                            "{}: \"max_seq_length\" = {x} is not an integer in 2..={}",
                            st.display(),
                            config.max_position_embeddings
                        )))
                    }
                },
            }
        } else {
            256
        };
        let modules = dir.join("modules.json");
        let normalize = if modules.is_file() {
            let v = read_json(&modules)?;
            let list = v.as_array().ok_or_else(|| {
                Error::Format(format!("{}: not a list of modules", modules.display()))
            })?;
            list.iter().any(|m| {
                m.get("type")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|t| t.ends_with(".Normalize"))
            })
        } else {
            true
        };
        let tokenizer = Tokenizer::load(dir.join("tokenizer.json"), max_len)?;
        let model = BertModel::load(dir.join("model.safetensors"), &config, "")?;
        Ok(SentenceEncoder {
            model,
            tokenizer: std::sync::Arc::new(tokenizer),
            normalize,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Sets the attention of every layer.
    pub fn set_attention(&mut self, kind: AttentionKind) {
        self.model.set_attention(kind);
    }

    /// Token ids of each text.
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.tokenizer.encode(t)).collect()
    }

    /// The last hidden state `(1, N, H)` of one tokenised sequence.
    ///
    /// # Errors
    /// As [`BertModel::forward`].
    pub fn hidden(&self, ids: &[u32]) -> Result<Array3<T>> {
        self.model.forward(&TokenBatch::from_ids(&[ids.to_vec()])?)
    }

    /// Sentence embeddings `(batch, H)` of a padded batch.
    ///
    /// # Errors
    /// As [`BertModel::forward`].
    pub fn embed_batch(&self, batch: &TokenBatch) -> Result<Array2<T>> {
        let h = self.model.forward(batch)?;
        self.pool(&h, batch)
    }

    /// Pools (and normalises) a last hidden state of `batch`.
    ///
    /// # Errors
    /// As [`mean_pool`].
    pub fn pool(&self, hidden: &Array3<T>, batch: &TokenBatch) -> Result<Array2<T>> {
        let e = mean_pool(hidden, batch.mask.view())?;
        Ok(if self.normalize { l2_normalize(e) } else { e })
    }

    /// Sentence embeddings `(texts, H)`, one sequence at a time (no padding), sequences in
    /// parallel.
    ///
    /// # Errors
    /// As [`Tokenizer::encode`] and [`BertModel::forward`].
    pub fn embed(&self, texts: &[&str]) -> Result<Array2<T>> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids)
    }

    /// Sentence embeddings of tokenised sequences, one at a time, in parallel.
    ///
    /// # Errors
    /// As [`BertModel::forward`].
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Array2<T>> {
        let rows = ids
            .par_iter()
            .map(|s| self.embed_batch(&TokenBatch::from_ids(std::slice::from_ref(s))?))
            .collect::<Result<Vec<_>>>()?;
        let h = self.model.config.hidden_size;
        let mut out = Array2::zeros((ids.len(), h));
        for (mut o, r) in out.rows_mut().into_iter().zip(rows) {
            o.assign(&r.row(0));
        }
        Ok(out)
    }
}
