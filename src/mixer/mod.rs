//! Monarch Mixer (Fu et al. 2023, "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based
//! Architecture") and the released M2-BERT block.
//!
//! * [`LongConv`]: per-channel causal or bidirectional long convolution, computed directly, by
//!   FFT, or through the DFT written as a Monarch ([`ConvMethod`]);
//! * [`ImplicitFilter`]: M2-BERT's implicit kernel generator;
//! * [`M2SequenceMixer`], [`GatedMlp`], [`M2BertLayer`], [`M2BertEncoder`]: the released
//!   M2-BERT block and stack, as its checkpoints compute it;
//! * [`M2Layer`]: the paper's layer, sequence mixing `M₂(K₁ ⊙ M₁X)` (learned Monarchs or
//!   the DFT long convolution) and dimension mixing `M₄σ(K₂ ⊙ M₃X̃ᵀ)`, residual, LayerNorm;
//! * [`nn`] (re-exported from the core): exact-erf GELU, LayerNorm, dense linear, each with
//!   its VJP.
//!
//! Every layer has `forward` and `vjp` (gradients of `sum(out ⊙ grad_out)`).
//!
//! ```
//! use monarch::mixer::{ConvMethod, LongConv};
//! use monarch::ndarray::{Array1, Array2, Array3};
//! let (h, l) = (2, 16);
//! let conv = LongConv::bidirectional(
//!     Array2::from_shape_fn((h, l), |(c, t)| 1.0 / (1.0 + (c + t) as f64)),
//!     Array2::from_shape_fn((h, l), |(c, t)| 0.5 / (1.0 + (c * t) as f64)),
//!     Array1::from_elem(h, 0.1),
//! )
//! .unwrap();
//! let u = Array3::from_shape_fn((3, h, l), |(b, c, t)| ((b + 2 * c + 3 * t) % 5) as f64);
//! let direct = conv.forward(u.view(), ConvMethod::Direct).unwrap();
//! let monarch = conv.forward(u.view(), ConvMethod::MonarchDft).unwrap();
//! assert!(direct.iter().zip(&monarch).all(|(a, b)| (a - b).abs() < 1e-10));
//! ```

pub mod checkpoint;
pub mod fft;
pub mod filter;
pub mod glu;
pub mod longconv;
pub mod m2bert;
/// The dense building blocks the mixing layers use; they live in the core
/// ([`primitives::nn`](crate::primitives::nn)) because `pk` shares them.
pub use crate::primitives::nn;
pub mod paper;

pub use checkpoint::M2BertConfig;
pub use filter::{FilterMlp, ImplicitFilter, ImplicitFilterGrad};
pub use glu::{GatedMlp, GatedMlpGrad};
pub use longconv::{dft_block_count, ConvMethod, ConvPlan, LongConv, LongConvGrad};
pub use m2bert::{
    M2BertEncoder, M2BertEncoderGrad, M2BertLayer, M2BertLayerGrad, M2SequenceMixer,
    M2SequenceMixerGrad,
};
pub use paper::{M2Layer, M2LayerGrad, SequenceMixing, SequenceMixingGrad};
