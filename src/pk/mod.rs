//! The permuted-Kronecker (PK) family of Hayase & Karakida ("MLP-Mixer as a Wide and Sparse
//! MLP", ICML 2024): mixing layers `J₂ · φ((I_a ⊗ W) · J₁ x)` with fixed permutations.
//!
//! Features `X` (`S × C`, tokens × channels) are vectorised column-major, `vec X[c·S + s] =
//! X[s, c]`. Token mixing is `(I_C ⊗ W_t)`, channel mixing `J_cᵀ (I_S ⊗ W_c) J_c` with the
//! commutation permutation `J_c` ([`Perm::stride`](crate::Perm::stride)), RP-Mixer uses seeded
//! random permutations. A linear token-then-channel pair is `W_c ⊗ W_t`, a Monarch with tied
//! blocks ([`pk_pair_to_monarch`]); for a weight budget `Ω = S² + C²` the effective width `S·C`
//! is largest at `S = C` ([`widest_for_budget`]).
//!
//! ```
//! use monarch::pk::{pk_pair_to_monarch, PkLayer};
//! use monarch::primitives::nn::Activation;
//! use monarch::ndarray::Array2;
//! let (s, c) = (3, 4);
//! let w_t = Array2::from_shape_fn((s, s), |(i, j)| (i * 3 + j) as f64 / 10.0);
//! let w_c = Array2::from_shape_fn((c, c), |(i, j)| (i + 2 * j) as f64 / 10.0 - 0.3);
//! let tok = PkLayer::token_mixing(w_t.clone(), None, c, Activation::Identity).unwrap();
//! let ch = PkLayer::channel_mixing(w_c.clone(), None, s, Activation::Identity).unwrap();
//! let m = pk_pair_to_monarch(&w_t, &w_c).unwrap();
//! let x = Array2::from_shape_fn((2, s * c), |(b, i)| (b + i) as f64);
//! let pk = ch.forward(tok.forward(x.view()).unwrap().view()).unwrap();
//! let mo = m.matmul(x.view()).unwrap();
//! assert!(pk.iter().zip(&mo).all(|(a, b)| (a - b).abs() < 1e-12));
//! ```

pub mod block;
pub mod convert;
pub mod layer;

pub use block::{from_vec_colmajor, to_vec_colmajor, MlpMixerBlock, MlpMixerBlockGrad};
pub use convert::{
    effective_width, monarch_to_pk_pair, pk_pair_to_monarch, weight_budget, widest_for_budget,
};
pub use layer::{PkLayer, PkLayerGrad};
