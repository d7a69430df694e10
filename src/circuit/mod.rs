//! Monarch probabilistic circuits (Zhang et al., "Scaling probabilistic circuits via Monarch
//! matrices", arXiv 2506.12383).
//!
//! The dense sum layers of a circuit (an HMM's `h × h` transition matrix) become k-factor
//! Monarch chains ([`MonarchChain`]) with non-negative, row-stochastic blocks
//! ([`softmax_blocks`]); activations are log-probabilities, so every block product is the
//! stable `log(A · exp(X))` ([`MonarchChain::log_matmul`]). [`MonarchChain::kronecker`] turns
//! the product of two HMMs into a tied-block Monarch, and [`Hmm`] runs the forward algorithm,
//! forward–backward and EM on expected flows through every factor.
//!
//! ```
//! use monarch::circuit::{Hmm, MonarchChain};
//! use monarch::ndarray::{array, Array1, Array2};
//! // 16 hidden states, transition = two factors of 4 row-stochastic 4×4 blocks.
//! let t = MonarchChain::<f64>::random_stochastic(&[(4, 4, 4), (4, 4, 4)], 1.0, 7).unwrap();
//! let pi = Array1::from_elem(16, 1.0 / 16.0);
//! let emit = Array2::from_elem((16, 3), 1.0 / 3.0);
//! let mut hmm = Hmm::new(pi, t, emit).unwrap();
//! let obs = array![[0usize, 2, 1, 1, 0]];
//! let ll = hmm.log_likelihood(obs.view()).unwrap();
//! assert!((ll[0] - 5.0 * (1.0f64 / 3.0).ln()).abs() < 1e-12); // uniform emissions
//! let before = hmm.em_step(obs.view()).unwrap();
//! assert!(hmm.log_likelihood(obs.view()).unwrap()[0] >= before - 1e-12);
//! ```

mod chain;
mod hmm;
mod logspace;
mod stochastic;

pub use chain::MonarchChain;
pub use hmm::{Flows, Hmm};
pub use logspace::{log_matmul_blockdiag, log_matmul_blockdiag_into, log_matmul_dense};
pub use stochastic::{
    check_chain_stochastic, check_distribution, check_row_stochastic, kron_dense, prob_tolerance,
    softmax_blocks,
};
