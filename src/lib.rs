//! # monarch
//!
//! Monarch structured matrices and the layers that recent papers build on them.
//!
//! A Monarch matrix is a product of block-diagonal factors with stride (reshape-transpose)
//! permutations between them, `M = P_out · BD(w2) · P_mid · BD(w1)`: an `n × n` product costs
//! `O(n√n)` instead of `O(n²)` and runs as small dense GEMMs.
//!
//! The core, [`primitives`] ([`Perm`], [`BlockDiag`], [`Monarch`], projection, SVD, DFT,
//! [`MonarchLinear`], the shared dense layers of [`primitives::nn`], kernels), sits at the bottom;
//! each paper's layer is a thin module on top that uses the core and no other paper module, with
//! one exception: [`cim`]'s cost accounting also covers [`circuit::MonarchChain`].
//!
//! ```
//! use monarch::Monarch;
//! use monarch::ndarray::Array2;
//! // A structured 64×64 matrix, projected onto the Monarch class and applied to a batch.
//! let m = Monarch::<f64>::random(64, 8, 1).unwrap();
//! let p = Monarch::project_with_error(m.to_dense().view(), 8, 8, 1).unwrap();
//! assert!(p.relative_error < 1e-10);
//! let x = Array2::<f64>::ones((4, 64));
//! let y = p.monarch.matmul(x.view()).unwrap();
//! assert_eq!(y.dim(), (4, 64));
//! ```
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub use ndarray;
pub use num_complex;

pub mod primitives;

pub mod attention;
pub mod checkpoint;
pub mod cim;
pub mod circuit;
pub mod gs;
pub mod guide;
pub mod mixer;
pub mod more;
pub mod pk;

pub use primitives::blockdiag::{BlockDiag, BlockDiagGrad};
pub use primitives::error::{Error, Result};
pub use primitives::linear::{MonarchLinear, MonarchLinearGrad};
pub use primitives::monarch::{Monarch, MonarchGrad};
pub use primitives::par::Par;
pub use primitives::perm::{Perm, PermKind};
pub use primitives::project::Projection;
pub use primitives::scalar::{RealScalar, Scalar};
