//! Monarch layers of [`monarch`] (the `monarch-matrix` crate) as [burn](https://burn.dev)
//! modules, so a model built from them trains with burn's autodiff on its CPU (`flex`, the
//! default feature), CUDA (`cuda`) and wgpu (`wgpu`) backends.
//!
//! Every module keeps the core crate's parameter layout (blocks out×in, `w1 (k, q, p)`,
//! `w2 (l, s, r)`), converts both ways (`from_core` / `to_core`), and is tested against the
//! core's forward and hand-written gradients.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use monarch_burn::MonarchLinear;
//! let device = Device::flex().autodiff();
//! let layer = MonarchLinear::new(16, 16, 4, true, 7, &device).unwrap();
//! let x = Tensor::<2>::ones([2, 16], &device).require_grad();
//! let loss = layer.forward(x.clone()).sum();
//! let grads = loss.backward();
//! assert_eq!(x.grad(&grads).unwrap().dims(), [2, 16]);
//! assert_eq!(layer.w1.val().grad(&grads).unwrap().dims(), [4, 4, 4]);
//! ```
//!
//! Bad input: see [`error`].
#![warn(missing_docs)]

pub use burn;
pub use monarch;

pub mod adapters;
pub mod attention;
pub mod backend;
pub mod convert;
pub mod error;
pub mod gsoft;
pub mod linear;
pub mod mixer;

pub use adapters::{LoraAdapter, MoReAdapter};
pub use attention::MonarchAttention;
pub use gsoft::{DoubleGsoft, GsoftLinear, OrthGs};
pub use linear::{blockdiag_matmul, monarch_matmul, BlockDiagLinear, MonarchLinear};
