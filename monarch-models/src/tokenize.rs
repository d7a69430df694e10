//! Tokenisation with the `tokenizers` crate, which reads a `tokenizer.json` as the Python
//! `tokenizers` package does (normaliser, pre-tokeniser, WordPiece, `[CLS] … [SEP]` template).

use crate::bert::TokenBatch;
use monarch::{Error, Result};
use std::path::Path;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// A `tokenizer.json` tokenizer set up as sentence-transformers runs it: truncation to
/// `max_len` tokens (special tokens included, longest-first), no padding (batches are padded
/// by [`TokenBatch::from_ids`]).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    max_len: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl Tokenizer {
    /// Reads `tokenizer.json` and truncates to `max_len` tokens.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it does not exist or cannot be read,
    /// [`Error::Format`] naming it if it is not a tokenizer the crate understands,
    /// [`Error::ZeroSize`] for `max_len < 2` (no room for `[CLS]` and `[SEP]`).
    pub fn load(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        let file = path.display().to_string();
        if max_len < 2 {
            return Err(Error::zero(format!(
                "Tokenizer::load({file}): max_len must leave room for [CLS] and [SEP]"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(file.to_string(), e))?;
        let mut inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| Error::Format(format!("{file}: not a tokenizer.json: {e}")))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Format(format!("{file}: truncation: {e}")))?;
        inner.with_padding(None);
        Ok(Tokenizer { inner, max_len })
    }

    /// The longest sequence produced, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of one text, with `[CLS]` and `[SEP]`, truncated to `max_len`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the tokenizer fails on the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::invalid(format!("Tokenizer::encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids and token-type ids of a pair of texts, `[CLS] first [SEP] second [SEP]`
    /// (types 0 up to the first `[SEP]`, then 1), the longer text shortened first until the
    /// pair fits `max_len`, as the Python tokenizer does for a sentence pair.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the tokenizer fails on the texts (also when `max_len`
    /// cannot hold the pair's special tokens).
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let enc = self
            .inner
            .encode((first, second), true)
            .map_err(|e| Error::invalid(format!("Tokenizer::encode_pair: {e}")))?;
        Ok((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()))
    }

    /// Several pairs of texts, padded to the longest, with their token types.
    ///
    /// # Errors
    /// As [`encode_pair`](Tokenizer::encode_pair); [`Error::ZeroSize`] for no pair.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<TokenBatch> {
        let (ids, types): (Vec<_>, Vec<_>) = pairs
            .iter()
            .map(|&(a, b)| self.encode_pair(a, b))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        TokenBatch::from_ids_and_types(&ids, &types)
    }

    /// The tokens (word pieces) of one text, for display.
    ///
    /// # Errors
    /// As [`encode`](Tokenizer::encode).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::invalid(format!("Tokenizer::tokens: {e}")))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// Several texts, padded to the longest.
    ///
    /// # Errors
    /// As [`encode`](Tokenizer::encode); [`Error::ZeroSize`] for no text.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let ids = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        TokenBatch::from_ids(&ids)
    }
}
