//! The core every paper module builds on: permutations, block-diagonal factors, the
//! [`Monarch`](monarch::Monarch) matrix, its optimal projection, the DFT as a Monarch, the
//! rectangular linear layer, the small dense layers (GELU, LayerNorm, dense linear) that
//! several paper modules share, and the block-diagonal product kernels beneath them, with the
//! crate's error type, threading policy, scalar traits and seeded random arrays.
//!
//! Dependencies run one way: [`kernels`] works on plain shapes and slices; [`blockdiag`] and
//! [`monarch`] describe their factors to the kernels; everything above (`project`, `dft`,
//! `linear`, and the paper modules outside `primitives`) goes through the types.
//!
//! ```
//! use monarch::primitives::perm::Perm;
//! // The reshape-(2, 3)-transpose permutation as a gather index, and its inverse.
//! let p = Perm::stride(2, 3).unwrap();
//! assert_eq!(p.index(), &[0, 3, 1, 4, 2, 5]);
//! assert!(p.inverse().compose(&p).is_identity());
//! ```

pub mod blockdiag;
mod checkpoint;
pub mod dft;
pub mod error;
pub mod kernels;
pub mod linear;
pub mod monarch;
pub mod nn;
pub mod optim;
pub mod par;
pub mod params;
pub mod perm;
pub mod project;
pub mod random;
pub mod scalar;
pub mod svd;
