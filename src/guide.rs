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
//! Loading fly's trained layer (`state_dict` saved with `safetensors.torch.save_file`):
//!
//! ```text
//! # PyTorch
//! layer = MonarchLinear(1024, 4096, nblocks=4); layer.load_state_dict(sd, prefix="encoder.fc1.")
//! ```
//!
//! ```no_run
//! # use monarch::MonarchLinear;
//! let layer = MonarchLinear::<f32>::load_safetensors("model.safetensors", "encoder.fc1", 1024, 4096, true)?;
//! # drop(layer);
//! # Ok::<(), monarch::Error>(())
//! ```
//!
//! ## MonarchAttention
//!
//! | PyTorch | monarch |
//! |---|---|
//! | `F.scaled_dot_product_attention(q, k, v, attn_mask)` | [`softmax_attention(q, k, v, mask)`](crate::attention::softmax_attention) — streaming, never N×N; [`ExactAttention`](crate::attention::ExactAttention) for the log-sum-exp |
//! | the authors' MonarchAttention module (block size `b`, `T` steps, pre/post padding) | [`MonarchAttention::new(b, T)`](crate::attention::MonarchAttention::new)`.padding(Padding::Pre)`, `.forward(q, k, v, mask)` |
//! | autograd through MonarchAttention | [`MonarchAttention::vjp`](crate::attention::MonarchAttention::vjp), memory O(T·N·d) |
//!
//! Layout is SDPA's: `(batch, heads, N, d)`; the mask is `(batch, N)` bool, `true` = key takes part.
//!
//! ```text
//! # PyTorch
//! out = F.scaled_dot_product_attention(q, k, v)                 # (B, H, N, d)
//! ```
//!
//! ```
//! # use monarch::ndarray::Array4;
//! use monarch::attention::{softmax_attention, MonarchAttention, Padding};
//! # let q = Array4::<f32>::zeros((1, 2, 20, 8)); let (k, v) = (q.clone(), q.clone());
//! let exact = softmax_attention(q.view(), k.view(), v.view(), None)?;
//! let approx = MonarchAttention::new(4, 1).padding(Padding::Post).forward(q.view(), k.view(), v.view(), None)?;
//! # assert_eq!(exact.dim(), approx.dim());
//! # Ok::<(), monarch::Error>(())
//! ```
//!
//! ## Monarch Mixer (HazyResearch/m2) and PK mixers
//!
//! | PyTorch | monarch |
//! |---|---|
//! | M2-BERT `MonarchMixerSequenceMixing` (in-projection, short conv, gating, `fftconv` with `k_fwd`, `k_rev`, `D`, out-projection) | [`mixer::M2SequenceMixer`](crate::mixer::M2SequenceMixer) |
//! | `HyenaFilter` (implicit long-conv kernels) | [`mixer::ImplicitFilter`](crate::mixer::ImplicitFilter) |
//! | `BertGatedLinearUnitMLP` with `BlockdiagLinear` | [`mixer::GatedMlp`](crate::mixer::GatedMlp) |
//! | M2-BERT layer / encoder | [`mixer::M2BertLayer`](crate::mixer::M2BertLayer), [`mixer::M2BertEncoder`](crate::mixer::M2BertEncoder) |
//! | `fftconv_ref` | [`mixer::LongConv`](crate::mixer::LongConv) with `ConvMethod::{Direct, Fft, MonarchDft}` |
//! | the paper's M2 layer | [`mixer::M2Layer`](crate::mixer::M2Layer) |
//! | MLP-Mixer token / channel MLPs as `(I ⊗ W)` | [`pk::PkLayer`](crate::pk::PkLayer), [`pk::MlpMixerBlock`](crate::pk::MlpMixerBlock) |
//!
//! ## MoRe and LoRA
//!
//! | PyTorch (MoRe / PEFT) | monarch |
//! |---|---|
//! | MoRe's `MonarchLinear` adapter (`blkdiag1`, `blkdiag2`) beside a frozen `nn.Linear` | [`MoReAdapter::new(weight, bias, nblocks, rank, dropout, seed)`](crate::more::MoReAdapter::new) |
//! | PEFT `LoraLayer` (`lora_A`, `lora_B`) | [`LoraAdapter`](crate::more::LoraAdapter), same interface |
//! | `merge_and_unload()` | `merge` / `unmerge` on either adapter |
//!
//! ## Group-and-Shuffle
//!
//! | PyTorch (GSOFT code) | monarch |
//! |---|---|
//! | `GSOrthogonal` (`gsoft_L`, `gsoft_R`, Cayley) | [`OrthGs`](crate::gs::OrthGs) (`OrthMap::Cayley` or `OrthMap::Exp`) |
//! | `GSOFTLayer` (`s ⊙ (W0 Q x) + b`) | [`GsoftLinear::new(weight, bias, block, nfactors, map)`](crate::gs::GsoftLinear::new); [`DoubleGsoft`](crate::gs::DoubleGsoft) |
//! | GS orthogonal convolution | [`GsOrthConv2d`](crate::gs::GsOrthConv2d) |
//!
//! ## Probabilistic circuits and CIM mapping
//!
//! | concept | monarch |
//! |---|---|
//! | Monarch sum layer in log space, `log(A·exp(x))` | [`circuit::log_matmul_blockdiag`](crate::circuit::log_matmul_blockdiag), [`MonarchChain`](crate::circuit::MonarchChain) |
//! | Monarch HMM (forward, forward–backward, EM) | [`circuit::Hmm`](crate::circuit::Hmm) |
//! | mapping block-diagonal factors onto R×C compute-in-memory arrays | [`cim`](crate::cim) planner and [`StructuredLayer`](crate::cim::StructuredLayer) accounting |
//!
//! Differences worth knowing:
//! - Complex gradients: [`Monarch::vjp`](crate::Monarch::vjp) returns the derivative of the
//!   bilinear form `sum(out ⊙ grad_out)`; PyTorch's autograd returns its complex conjugate.
//! - Threading: every hot call takes or defaults to [`Par`](crate::Par); call with `Par::Seq` from
//!   inside your own rayon loop.
