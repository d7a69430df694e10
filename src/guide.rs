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
//! | autograd's saved activation (the first `bmm`'s output) | [`Monarch::matmul_keep_into`](crate::Monarch::matmul_keep_into) keeps it, [`Monarch::vjp_kept_into`](crate::Monarch::vjp_kept_into) reads it instead of recomputing it |
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
//! Loading a released M2-BERT checkpoint (`BertForMaskedLM` / `BertModel` of
//! `bert/src/bert_layers.py`, its `state_dict()` saved with safetensors): the encoder's tensors
//! are read under their module names, every size from the tensors, and the options that are not
//! stored come from [`M2BertConfig`](crate::checkpoint::M2BertConfig) (its default is the
//! released configuration: `bidirectional`, `residual_long_conv`, `hyena_w_mod = 1`,
//! `layer_norm_eps = 1e-12`). Embeddings, pooler and heads are not part of the encoder.
//!
//! ```text
//! # PyTorch (HazyResearch/m2)
//! model = BertForMaskedLM(config); model.load_state_dict(sd)
//! h = model.bert.encoder(embeddings, attention_mask)[-1]          # (B, L, H)
//! ```
//!
//! ```no_run
//! # use monarch::{checkpoint::M2BertConfig, mixer::M2BertEncoder, ndarray::Array3};
//! # let embeddings = Array3::<f32>::zeros((1, 128, 768));
//! let enc = M2BertEncoder::<f32>::load_safetensors("m2-bert.safetensors", "bert.encoder", &M2BertConfig::default())?;
//! let h = enc.forward(embeddings.view())?;                         // (B, L, H)
//! # drop(h);
//! # Ok::<(), monarch::Error>(())
//! ```
//!
//! | released name (under `bert.encoder.layer.{i}.`) | monarch ([`M2BertLayer`](crate::mixer::M2BertLayer)) | conversion |
//! |---|---|---|
//! | `attention.in_linear.{weight,bias}`, `attention.out_linear.{weight,bias}` | `mixer.in_linear`, `mixer.out_linear` ([`Linear`](crate::mixer::nn::Linear), weight `(out, in)`) | none |
//! | `attention.short_filter.weight` `(3H, 1, 3)`, `.bias` | `mixer.short_conv_weight` `(3H, 3)`, `mixer.short_conv_bias` | middle axis dropped |
//! | `attention.filter_fn.bias` | `mixer.filter.bias` (the skip weight `D`) | none |
//! | `attention.filter_fn.pos_emb.z` `(1, l_max, emb)`, `.pos_emb.t` `(1, l_max, 1)` | `mixer.filter.z` `(l_max, emb)`, `mixer.filter.t` `(l_max,)` | unit axes dropped |
//! | `attention.filter_fn.modulation.deltas` `(1, 1, H)` | `mixer.filter.deltas` `(H,)` | unit axes dropped |
//! | `attention.filter_fn.implicit_filter.{0,2,4,6}.{weight,bias}` | `mixer.filter.mlp_fwd.layers[0..4]` (last without bias) | none |
//! | `attention.filter_fn.implicit_filter_rev.*` | `mixer.filter.mlp_rev` | none |
//! | `attention.filter_fn.implicit_filter{,_rev}.{1,3,5}.freq` `(1, order)` (one shared `Sin`) | `mixer.filter.freq` `(order,)` | any copy; all present must agree |
//! | `attention.filter_fn2.*` (residual long conv) | `mixer.filter2` | as `filter_fn` |
//! | `mlp.gated_layers.weight` `(nb, 2I/nb, H/nb)` (`BlockdiagLinear`, no bias) | `mlp.gated` ([`BlockDiag`](crate::BlockDiag), same layout) | none (`nn.Linear` `(2I, H)` is read as one block) |
//! | `mlp.wo.weight` `(nb, H/nb, I/nb)`, `mlp.wo.bias` | `mlp.wo`, `mlp.wo_bias` | as above |
//! | `mlp.layernorm.{weight,bias}` | `mlp.ln` | eps from the config |
//!
//! Not loaded (an error names the tensor): `hyena_training_additions` (`attention.layernorm`),
//! the Flash inference modules (`attention.fast_filter`, `attention.k`), the non-gated
//! `BertMLP`. The full table and the rules are in [`checkpoint::m2bert`](crate::checkpoint::m2bert).
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
