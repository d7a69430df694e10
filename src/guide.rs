//! # Coming from PyTorch
//!
//! A map from the authors' PyTorch modules and functions to this crate, with the conventions
//! that differ. Every layer here takes ndarray arrays whose rows are vectors (`(batch, features)`),
//! like `torch.nn.Linear`.
//!
//! ## Monarch core (HazyResearch/fly)
//!
//! | PyTorch (fly) | monarch |
//! |---|---|
//! | `blockdiag_butterfly_multiply(x, w1_bfly, w2_bfly)` | [`Monarch::from_factors(w1, w2)`](crate::Monarch::from_factors)`?.matmul(x)` |
//! | `w1_bfly` `(k, q, p)`, `w2_bfly` `(l, s, r)` | the same arrays, unchanged: [`Monarch::w1`](crate::Monarch::w1), [`Monarch::w2`](crate::Monarch::w2) |
//! | `blockdiag_butterfly_project(M)` (square only) | [`Monarch::project(m, k, l, rank)`](crate::Monarch::project) (any shape, block counts, rank), [`Monarch::project_with_error`](crate::Monarch::project_with_error) |
//! | autograd of the multiply | [`Monarch::vjp(x, grad_out)`](crate::Monarch::vjp) → `MonarchGrad { x, w1, w2 }` |
//! | `MonarchLinear(in, out, nblocks)` (`blkdiag1`, `blkdiag2`, `bias`) | [`MonarchLinear::new(in, out, nblocks, bias, seed)`](crate::MonarchLinear::new), [`MonarchLinear::from_weights`](crate::MonarchLinear::from_weights) |
//! | `M.t()` via dense | [`Monarch::transpose`](crate::Monarch::transpose) — exact, still a Monarch |
//!
//! Side by side, the multiply:
//!
//! ```text
//! # PyTorch
//! out = blockdiag_butterfly_multiply(x, w1_bfly, w2_bfly)      # x: (batch, n)
//! ```
//!
//! ```
//! # use monarch::{Monarch, ndarray::{Array2, Array3}};
//! # let (w1_bfly, w2_bfly) = (Array3::<f32>::ones((4, 4, 4)), Array3::<f32>::ones((4, 4, 4)));
//! # let x = Array2::<f32>::ones((2, 16));
//! let m = Monarch::from_factors(w1_bfly, w2_bfly)?;
//! let out = m.matmul(x.view())?;                                // x: (batch, n)
//! # assert_eq!(out.dim(), (2, 16));
//! # Ok::<(), monarch::Error>(())
//! ```
//!
//! Differences worth knowing:
//! - Complex gradients: [`Monarch::vjp`](crate::Monarch::vjp) returns the derivative of the
//!   bilinear form `sum(out ⊙ grad_out)`; PyTorch's autograd returns its complex conjugate.
//! - Threading: every hot call takes or defaults to [`Par`](crate::Par); call with `Par::Seq` from
//!   inside your own rayon loop.
