//! # Coming from PyTorch
//!
//! A map from the authors' PyTorch modules and functions to this crate, with the conventions
//! that differ. Every layer here takes ndarray arrays whose rows are vectors (`(batch, features)`),
//! like `torch.nn.Linear`. The layouts and conventions the crate fixes are collected in
//! [`conventions`].
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
//! stored come from [`M2BertConfig`](crate::mixer::M2BertConfig) (its default is the
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
//! # use monarch::{mixer::M2BertConfig, mixer::M2BertEncoder, ndarray::Array3};
//! # let embeddings = Array3::<f32>::zeros((1, 128, 768));
//! let enc = M2BertEncoder::<f32>::load_safetensors("m2-bert.safetensors", "bert.encoder", &M2BertConfig::default())?;
//! let h = enc.forward(embeddings.view())?;                         // (B, L, H)
//! # drop(h);
//! # Ok::<(), monarch::Error>(())
//! ```
//!
//! | released name (under `bert.encoder.layer.{i}.`) | monarch ([`M2BertLayer`](crate::mixer::M2BertLayer) accessors) | conversion |
//! |---|---|---|
//! | `attention.in_linear.{weight,bias}`, `attention.out_linear.{weight,bias}` | `mixer().in_linear()`, `mixer().out_linear()` ([`Linear`](crate::primitives::nn::Linear), weight `(out, in)`) | none |
//! | `attention.short_filter.weight` `(3H, 1, 3)`, `.bias` | `mixer().short_conv_weight()` `(3H, 3)`, `mixer().short_conv_bias()` | middle axis dropped |
//! | `attention.filter_fn.bias` | `mixer().filter().bias()` (the skip weight `D`) | none |
//! | `attention.filter_fn.pos_emb.z` `(1, l_max, emb)`, `.pos_emb.t` `(1, l_max, 1)` | `mixer().filter().z()` `(l_max, emb)`, `mixer().filter().t()` `(l_max,)` | unit axes dropped |
//! | `attention.filter_fn.modulation.deltas` `(1, 1, H)` | `mixer().filter().deltas()` `(H,)` | unit axes dropped |
//! | `attention.filter_fn.implicit_filter.{0,2,4,6}.{weight,bias}` | `mixer().filter().mlp_fwd().layers()[0..4]` (last without bias) | none |
//! | `attention.filter_fn.implicit_filter_rev.*` | `mixer().filter().mlp_rev()` | none |
//! | `attention.filter_fn.implicit_filter{,_rev}.{1,3,5}.freq` `(1, order)` (one shared `Sin`) | `mixer().filter().freq()` `(order,)` | any copy; all present must agree |
//! | `attention.filter_fn2.*` (residual long conv) | `mixer().filter2()` | as `filter_fn` |
//! | `mlp.gated_layers.weight` `(nb, 2I/nb, H/nb)` (`BlockdiagLinear`, no bias) | `mlp().gated()` ([`BlockDiag`](crate::BlockDiag), same layout) | none (`nn.Linear` `(2I, H)` is read as one block) |
//! | `mlp.wo.weight` `(nb, H/nb, I/nb)`, `mlp.wo.bias` | `mlp().wo()`, `mlp().wo_bias()` | as above |
//! | `mlp.layernorm.{weight,bias}` | `mlp().ln()` | eps from the config |
//!
//! Not loaded (an error names the tensor): `hyena_training_additions` (`attention.layernorm`),
//! the Flash inference modules (`attention.fast_filter`, `attention.k`), the non-gated
//! `BertMLP`. The full table and the rules are in [`mixer::checkpoint`](crate::mixer::checkpoint).
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

pub mod conventions {
    //! # Conventions
    //!
    //! The layouts and sign conventions the crate fixes, in one place. The tests, the numpy
    //! fixture generator (`scripts/make_fixtures.py`) and the dense reference implementations in
    //! `tests/common/` are written against this page.
    //!
    //! ## Arrays
    //!
    //! - Every array is row-major (ndarray's standard layout).
    //! - **Rows are vectors.** A layer takes `x` of shape `(batch, in_features)` and returns
    //!   `(batch, out_features)`, with `out[b] = M · x[b]`, like `torch.nn.Linear`. A dense
    //!   matrix built from a structured one ([`Monarch::to_dense`](crate::Monarch::to_dense)) is
    //!   `(out, in)`, so `matmul(x) == x · Mᵀ`.
    //! - **Blocks are stored out × in**, like a linear layer's weight: a block-diagonal factor
    //!   of shape `(nblocks, rows, cols)` maps `cols` inputs of its block to `rows` outputs.
    //!
    //! ## Permutations
    //!
    //! A permutation is a **gather index**: applying `p` to `x` gives `y[i] = x[p[i]]`. Its
    //! matrix has a one at `(i, p[i])`, so its transpose is its inverse.
    //! [`Perm::stride(rows, cols)`](crate::Perm::stride) reads a vector of length `rows·cols`
    //! as a row-major `(rows, cols)` matrix and transposes it, `y[j·rows + i] = x[i·cols + j]`;
    //! its inverse is `Perm::stride(cols, rows)`. The direction of a stride permutation is the
    //! easiest thing in this field to get backwards: every test checks a permutation and its
    //! inverse separately.
    //!
    //! ## The Monarch factor layout ("convention A")
    //!
    //! This is the layout of the PyTorch reference code (HazyResearch/fly,
    //! `blockdiag_butterfly_multiply`), which the MoRe and Group-and-Shuffle codes reuse, so
    //! trained factors load without conversion.
    //!
    //! - `w1` has shape `(k, q, p)`: `k` blocks of `q × p`; `w2` has shape `(l, s, r)`: `l`
    //!   blocks of `s × r`; they must satisfy `k·q == l·r`.
    //! - Input length `n = k·p`, output length `m = l·s`.
    //! - For one input row `x`, the multiply is four steps:
    //!   1. `y1[a·q + i] = Σ_j w1[a, i, j] · x[a·p + j]` (the block-diagonal `BD(w1)`);
    //!   2. `z[c·r + t] = y1[t·l + c]` (view `y1` as `(r, l)` and transpose: `P_mid =
    //!      Perm::stride(r, l)`);
    //!   3. `y2[c·s + i] = Σ_j w2[c, i, j] · z[c·r + j]` (`BD(w2)`);
    //!   4. `out[i·l + c] = y2[c·s + i]` (view as `(l, s)` and transpose: `P_out =
    //!      Perm::stride(l, s)`).
    //!
    //!   So `M = P_out · BD(w2) · P_mid · BD(w1)`. With all six sizes equal to `√n` both
    //!   permutations are the same reshape-transpose involution.
    //! - [`Monarch`](crate::Monarch) also holds an input permutation `P_in` (the identity for
    //!   [`Monarch::from_factors`](crate::Monarch::from_factors)), so that the transpose
    //!   `Mᵀ = P_inᵀ · BD(w1)ᵀ · P_midᵀ · BD(w2)ᵀ · P_outᵀ` is again an exact Monarch (blocks
    //!   transposed, permutations inverted) and the DFT can take its input in natural order.
    //!   For complex scalars [`adjoint`](crate::Monarch::adjoint) also conjugates the blocks;
    //!   [`transpose`](crate::Monarch::transpose) does not.
    //! - Parameters and multiply-adds per row are both `k·q·p + l·s·r`; a square `n × n`
    //!   Monarch with `√n` blocks has `2·n^1.5` of them against `n²` dense.
    //!
    //! ## The rectangular layer
    //!
    //! [`MonarchLinear(in, out, nblocks)`](crate::MonarchLinear) follows fly's layer: with
    //! `ib = ⌈in/nb⌉` and `ob = ⌈out/nb⌉` the input is zero-padded to `nb·ib` and the output
    //! truncated to `out`, plus an optional bias `(out,)`. If `nb·ib < nb·ob` the factors are
    //! `w1 (nb, ib, ib)`, `w2 (nb, ob, ib)`, otherwise `w1 (nb, ob, ib)`, `w2 (nb, ob, ob)`.
    //! Initialisation: each factor uniform in `±1/√(block input width)`, the bias uniform in
    //! `±1/√out`.
    //!
    //! ## Projection
    //!
    //! [`Monarch::project(m, k, l, rank)`](crate::Monarch::project) takes `k` input blocks,
    //! `l` output blocks and the per-slice rank `ρ = q / l` (so `r = k·ρ`; the classic Monarch
    //! has `ρ = 1`). For each input block `a` and output residue `c` the slice
    //! `M[c::l, a·p..(a+1)·p]` has rank at most `ρ` on a Monarch; the slices partition the
    //! matrix, so the Frobenius-optimal projection is the rank-`ρ` truncated SVD of each slice,
    //! written back as `w2[c, :, a·ρ + t] = U[:, t]·√σ_t` and `w1[a, t·l + c, :] = √σ_t·V[:, t]ᵀ`.
    //! The squared error is the sum of the discarded `σ²`. Factors are unique only up to signs
    //! and the split of `σ`: compare dense products, not factors. Shapes where `l` does not
    //! divide `q` have no slice form and are rejected.
    //!
    //! ## Gradients
    //!
    //! Every `vjp` returns the gradients of the scalar `sum(out ⊙ grad_out)` with respect to the
    //! inputs and the parameters. For complex scalars this is the derivative of that
    //! **bilinear** form, with no conjugation; PyTorch's autograd convention for a real loss is
    //! its complex conjugate. For the Monarch multiply, `grad_x = grad_out · M` (that is,
    //! `Mᵀ` applied to each row of `grad_out`), and each factor's gradient is the outer-product
    //! sum over the batch of its pulled-back output gradient and its input, restricted to the
    //! blocks.
    //!
    //! ## The DFT as a Monarch
    //!
    //! For `n = k·p` the `n`-point DFT is an exact complex Monarch (Cooley–Tukey: `p`-point
    //! DFTs with the twiddles folded into their rows as `w1`, the stride permutation, `k`-point
    //! DFTs as `w2`). Its input is taken in stride-permuted order `x'[a·p + j] = x[a + k·j]`
    //! ([`Monarch::dft_input_perm`](crate::Monarch::dft_input_perm)), or in natural order by
    //! [`Monarch::dft_natural`](crate::Monarch::dft_natural), which folds that permutation into
    //! `P_in`. Scaling is orthonormal (`1/√n`), so the inverse is the adjoint. The plain FFT in
    //! [`mixer::fft`](crate::mixer::fft) is unnormalised forward, `1/n` inverse.
    //!
    //! ## Attention
    //!
    //! - Layout is that of PyTorch's `scaled_dot_product_attention`: `q`, `k` are
    //!   `(batch, heads, N, d)`, `v` is `(batch, heads, N, d_v)`. The optional key-padding mask
    //!   is `(batch, N)` bool with `true` = the key takes part. The score scale defaults to
    //!   `1/√d`.
    //! - Every softmax subtracts its row maximum and adds no epsilon, so rows whose scores are
    //!   all very negative are as accurate as any other. Inputs whose score bound
    //!   `max(|scale|, 1)·max‖q‖·max‖k‖` exceeds the float range, and any non-finite result of
    //!   finite inputs, are [`Error::NonFinite`](crate::Error::NonFinite); a batch element whose
    //!   keys are all masked is [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    //! - [`MonarchAttention`](crate::attention::MonarchAttention) (Yaras et al. 2025) uses block
    //!   size `b`, `m = ⌈N/b⌉` blocks and padded length `N_p = m·b`. Query `l·b + j` and key
    //!   `a·b + i` (`l, a < m`; `j, i < b`) meet with weight
    //!   `A[l·b + j, a·b + i] = L_j[a, l] · R_a[j, i]`, each `R_a` (`b × b`) row-stochastic over
    //!   `i` and each `L_j` (`m × m`) column-stochastic over `a`, so every row of `A` sums to one.
    //! - The method maximises the softmax variational objective `⟨A, S⟩ + H(A)`,
    //!   `S = scale·Q Kᵀ`, over such matrices by alternating exact maximisation. It starts from
    //!   `L_j = I` (the first R-update is block-local attention) and runs `T` rounds of an
    //!   R-update (`R_a[j, ·] = softmax_i(scale·⟨u[a, j], k_{a·b+i}⟩)`, `u = α_R / c_R` the
    //!   `L`-weighted mean of the queries `l·b + j`) and an L-update
    //!   (`L_j[·, l] = softmax_a(⟨q_{l·b+j}, α_L[j, a]⟩ − c_L[j, a])` with
    //!   `α_L[j, a] = scale·Σ_i R_a[j, i]·k_{a·b+i}` and `c_L[j, a] = Σ_i R_a[j, i]·log R_a[j, i]`).
    //!   The output is `o_{l·b+j} = Σ_a L_j[a, l]·Σ_i R_a[j, i]·v_{a·b+i}` from the last round.
    //!   The `N × N` matrix is never formed; only `O(N·d)` state lives between phases, and the
    //!   VJP keeps that state per round (`O(T·N·d)`) and recomputes the factors.
    //! - Padding ([`Padding`](crate::attention::Padding)) is at the back by default (token `t`
    //!   at padded position `t`) or at the front (`t + N_p − N`). Padded and masked keys get
    //!   weight zero; padded and masked queries carry no weight in the R-update, and their
    //!   output rows are to be ignored. `b ≥ N` is exact softmax attention.
    //!
    //! ## Mixers
    //!
    //! - [`LongConv`](crate::mixer::LongConv) uses the authors' layout `(batch, H, L)` with
    //!   kernels `k_fwd`, `k_rev` of shape `(H, L)` and skip weights `D` of shape `(H,)`:
    //!   `y[t] = Σ_{s≤t} k_fwd[t−s]·u[s] + Σ_{s>t} k_rev[s−t−1]·u[s] + D·u[t]`; the causal
    //!   form drops the `k_rev` term. Both are a circular convolution of length `2L` with the
    //!   combined kernel `pad(k_fwd, (0, L)) + pad(flip(k_rev), (L, 0))`, as M2-BERT's
    //!   `HyenaFilter.forward` computes it; the zero padding makes it linear. The three methods
    //!   ([`ConvMethod`](crate::mixer::ConvMethod): direct sum, FFT of length `2L`, Monarch DFT
    //!   of length `2L`) compute the same function.
    //! - The released M2-BERT block takes `(batch, L, H)`: `in_linear` `H → 3H`, a depthwise
    //!   causal short convolution of width 3, the split into `x1, x2, v` in that order,
    //!   `v ⊙ x1`, the bidirectional long convolution, `⊙ x2`, optionally a residual long
    //!   convolution of the block's input, and `out_linear`. Its MLP is gated and
    //!   block-diagonal without permutations: `GELU(first half) ⊙ second half`, exact-erf GELU,
    //!   then post-LayerNorm with eps `1e-12`. Dense linears store weights `(out, in)` and
    //!   compute `x Wᵀ + b`. The name mapping is in [`mixer::checkpoint`](crate::mixer::checkpoint).
    //! - The paper's [`M2Layer`](crate::mixer::M2Layer) works on `X` `(N × d)`, batched
    //!   `(batch, N, d)`: sequence mixing `M₂(K₁ ⊙ M₁X)` (linear: the ReLU in the paper's
    //!   pseudocode is a typo), dimension mixing `Yᵀ = M₄ σ(K₂ ⊙ M₃X̃ᵀ)`, then
    //!   `LayerNorm(Y + X̃)`.
    //! - PK layers ([`pk`](crate::pk)) vectorise `X` (`S × C`, tokens × channels) column-major,
    //!   `vec X[c·S + s] = X[s, c]`. Token mixing is `I_C ⊗ W_t`; channel mixing is
    //!   `J_cᵀ (I_S ⊗ W_c) J_c` with the commutation permutation `J_c` (a
    //!   [`Perm::stride`](crate::Perm::stride)); a linear token-then-channel pair is `W_c ⊗ W_t`,
    //!   a Monarch with tied blocks.
    //!
    //! ## Adapters
    //!
    //! - [`MoReAdapter`](crate::more::MoReAdapter): a frozen `W0` (`out × in`, bias kept) plus
    //!   `dropout(ΔW x)` (dropout on the adapter's output), `ΔW` a rectangular Monarch in the
    //!   layout above with `N` blocks and per-block rank `r`: `ib = ⌈in/N⌉`, effective
    //!   `N = ⌈in/ib⌉`, `ob = ⌈ib·out/in⌉`, `blkdiag1 (N, r, ib)`, `blkdiag2 (N, ob, r)`. The
    //!   second factor starts at zero (the adapted layer equals the base layer at step 0), the
    //!   first uniform in `±1/√ib`; there is no `α/r` scaling. Merge and unmerge add and
    //!   subtract the dense `ΔW`.
    //! - Group-and-Shuffle ([`gs`](crate::gs)): the orthogonal layer is
    //!   `Q = Pᵀ · BD(L) · P · BD(R)` with `k` square `b × b` blocks (`n = k·b`) and the shuffle
    //!   gather `z[l·b + t] = v[t·k + l]`. Each stored block `A` is skew-symmetrised,
    //!   `K = (A − Aᵀ)/2`, and mapped by Cayley `(I + K)(I − K)⁻¹` (the default) or `exp(K)`;
    //!   zero parameters give `Q = I`. GSOFT is `y = s ⊙ (W0 · Q x) + b` with a learnable
    //!   scale `s` (initially one); Double GSOFT is `s ⊙ (Q_out W0 Q_in x) + b`. The channel
    //!   shuffle of the orthogonal convolution is the gather `idx[g·cpg + c] = c·groups + g`.
    //!
    //! ## Circuits and compute-in-memory
    //!
    //! - Monarch circuits ([`circuit`](crate::circuit)) carry **log-probabilities** in rows;
    //!   `−∞` is probability zero. Blocks are non-negative and row-stochastic (a softmax of
    //!   unconstrained logits per block row). Every block product is `log(A · exp(X))` with each
    //!   row's input slice shifted by its maximum before `exp`; an all-`−∞` slice gives `−∞`,
    //!   never NaN. The product of two HMMs is a Kronecker transition, a Monarch with tied
    //!   blocks. Training is EM on expected flows.
    //! - The CIM planner ([`cim`](crate::cim)) maps each block-diagonal factor's blocks (out ×
    //!   in, as everywhere) onto `R × C` arrays: a block needs `out` array columns and `in`
    //!   array rows. Permutations are folded into addressing as one gather index. A block larger
    //!   than the array is an error rather than tiled.
    //!
    //! ## Errors and threads
    //!
    //! Fallible entry points return [`Error`](crate::Error) on bad input, never panic; sizes
    //! whose element count overflows, or whose arrays cannot be allocated, are
    //! [`Error::TooLarge`](crate::Error::TooLarge), and so are round or term counts above a
    //! documented cap. A batch of zero items (the leading batch axis, attention's heads, an
    //! HMM's sequences) gives an empty result of the right shape, as in PyTorch; every other
    //! zero size is [`Error::ZeroSize`](crate::Error::ZeroSize). Conversions that lose more
    //! than rounding (saving a value beyond a dtype's range) are errors unless a method named
    //! `_lossy` is called. Results are bitwise identical for any thread count
    //! ([`Par`](crate::Par)).
}
