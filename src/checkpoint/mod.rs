//! Checkpoints: PyTorch weights in the safetensors format, under the authors' parameter names.
//!
//! A [`StateDict`] holds named real tensors, like PyTorch's `state_dict()`. It loads from a
//! safetensors file (F32, F64, F16 and BF16 tensors are converted to `f32`/`f64` on load) and
//! saves to one; layers read and write their parameters in it under a prefix, PyTorch's module
//! path (`"encoder.layer.0.mlp.fc1"`), so a layer nested in a bigger model loads as it is.
//! This module is the format only, and sits with the core: it depends on nothing but the
//! crate's error and scalar types. Each layer's parameter names live beside the layer:
//! [`MonarchLinear`](crate::MonarchLinear) uses fly's names `blkdiag1`, `blkdiag2`, `bias` and
//! a bare [`Monarch`](crate::Monarch) `w1`, `w2` (`src/primitives/checkpoint.rs`); a
//! [`MoReAdapter`](crate::more::MoReAdapter) stores `weight`, `bias`, `blkdiag1`, `blkdiag2`
//! (`src/more/checkpoint.rs`); a [`GsoftLinear`](crate::gs::GsoftLinear) stores `weight`,
//! `bias`, `gsoft_R`, `gsoft_L`, `gsoft_scale` (`src/gs/checkpoint.rs`). The M2-BERT encoder,
//! its layers, sequence mixers, implicit filters and gated MLPs use the names of the released
//! M2-BERT checkpoints (`bert.encoder.layer.{i}.attention.in_linear.weight`, …): see
//! [`mixer::checkpoint`](crate::mixer::checkpoint) for the table of names and what is not
//! supported.
//!
//! The reader trusts nothing in the file: every size and offset the header declares is checked
//! against the bytes that exist before a tensor is allocated, and every failure is an
//! [`Error`](crate::Error) naming the tensor, never a panic.
//!
//! ```
//! use monarch::checkpoint::{Dtype, StateDict};
//! use monarch::MonarchLinear;
//! use monarch::ndarray::Array2;
//! let layer = MonarchLinear::<f32>::new(20, 36, 4, true, 7).unwrap();
//! let mut sd = StateDict::new();
//! layer.to_state_dict(&mut sd, "model.fc1");
//! assert!(sd.contains("model.fc1.blkdiag1"));
//! let bytes = sd.to_bytes(Dtype::F32).unwrap();
//! let back = StateDict::<f32>::from_bytes(&bytes).unwrap();
//! let loaded = MonarchLinear::from_state_dict(&back, "model.fc1", 20, 36, true).unwrap();
//! let x = Array2::from_elem((2, 20), 0.5f32);
//! assert_eq!(loaded.forward(x.view()).unwrap(), layer.forward(x.view()).unwrap());
//! // A truncated file is an error, not a panic.
//! assert!(StateDict::<f32>::from_bytes(&bytes[..bytes.len() - 4]).is_err());
//! ```

mod dtype;
mod format;
pub(crate) mod read;
mod state_dict;

pub use dtype::Dtype;
pub use format::{parse_header, Header, TensorInfo, MAX_HEADER_LEN};
pub use state_dict::{join_name, StateDict};
