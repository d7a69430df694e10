//! Naive dense references for the circuit tests: log-sum-exp products by the obvious loop, and
//! a probability-space HMM (scaled forward–backward, Baum–Welch) written from the textbook
//! formulas, independent of the crate's log-space kernels.
#![allow(dead_code, clippy::needless_range_loop)]

use monarch::ndarray::{Array1, Array2};

/// `out[b, i] = log Σ_j a[i, j] · exp(x[b, j])`, per entry with its own max (f64).
pub fn naive_log_matmul(a: &Array2<f64>, x: &Array2<f64>) -> Array2<f64> {
    let (m, n) = a.dim();
    assert_eq!(x.ncols(), n);
    Array2::from_shape_fn((x.nrows(), m), |(b, i)| {
        let terms: Vec<f64> = (0..n)
            .filter(|&j| a[[i, j]] > 0.0 && x[[b, j]] > f64::NEG_INFINITY)
            .map(|j| a[[i, j]].ln() + x[[b, j]])
            .collect();
        if terms.is_empty() {
            return f64::NEG_INFINITY;
        }
        let mx = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        mx + terms.iter().map(|t| (t - mx).exp()).sum::<f64>().ln()
    })
}

/// Stride permutation matrix from its definition `y[j·rows + i] = x[i·cols + j]`.
pub fn stride_matrix(rows: usize, cols: usize) -> Array2<f64> {
    let n = rows * cols;
    let mut p = Array2::zeros((n, n));
    for i in 0..rows {
        for j in 0..cols {
            p[[j * rows + i, i * cols + j]] = 1.0;
        }
    }
    p
}

/// Dense block-diagonal matrix from blocks `(nb, rows, cols)`.
pub fn blockdiag_matrix(w: &monarch::ndarray::Array3<f64>) -> Array2<f64> {
    let (nb, r, c) = w.dim();
    let mut d = Array2::zeros((nb * r, nb * c));
    for a in 0..nb {
        for i in 0..r {
            for j in 0..c {
                d[[a * r + i, a * c + j]] = w[[a, i, j]];
            }
        }
    }
    d
}

/// A dense HMM in probability space.
pub struct DenseHmm {
    pub pi: Array1<f64>,
    pub t: Array2<f64>,
    pub e: Array2<f64>,
}

impl DenseHmm {
    /// Scaled forward: normalised alphas, scales; log-likelihood is Σ log scales.
    fn forward(&self, obs: &[usize]) -> (Vec<Vec<f64>>, Vec<f64>) {
        let h = self.pi.len();
        let mut alphas = Vec::new();
        let mut scales = Vec::new();
        let mut a: Vec<f64> = (0..h).map(|i| self.pi[i] * self.e[[i, obs[0]]]).collect();
        for (t, &o) in obs.iter().enumerate() {
            if t > 0 {
                let prev = alphas.last().unwrap() as &Vec<f64>;
                a = (0..h)
                    .map(|j| (0..h).map(|i| prev[i] * self.t[[i, j]]).sum::<f64>() * self.e[[j, o]])
                    .collect();
            }
            let c: f64 = a.iter().sum();
            a.iter_mut().for_each(|v| *v /= c);
            scales.push(c);
            alphas.push(a.clone());
        }
        (alphas, scales)
    }

    fn backward(&self, obs: &[usize], scales: &[f64]) -> Vec<Vec<f64>> {
        let h = self.pi.len();
        let len = obs.len();
        let mut betas = vec![vec![1.0; h]; len];
        for t in (0..len - 1).rev() {
            let o = obs[t + 1];
            betas[t] = (0..h)
                .map(|i| {
                    (0..h)
                        .map(|j| self.t[[i, j]] * self.e[[j, o]] * betas[t + 1][j])
                        .sum::<f64>()
                        / scales[t + 1]
                })
                .collect();
        }
        betas
    }

    pub fn log_likelihood(&self, obs: &[usize]) -> f64 {
        self.forward(obs).1.iter().map(|c| c.ln()).sum()
    }

    pub fn posteriors(&self, obs: &[usize]) -> Vec<Vec<f64>> {
        let (al, sc) = self.forward(obs);
        let be = self.backward(obs, &sc);
        al.iter()
            .zip(&be)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).collect())
            .collect()
    }

    /// One Baum–Welch step over several sequences (rows with zero counts kept).
    pub fn em_step(&mut self, seqs: &[Vec<usize>]) {
        let h = self.pi.len();
        let v = self.e.ncols();
        let mut pi = Array1::<f64>::zeros(h);
        let mut xi = Array2::<f64>::zeros((h, h));
        let mut em = Array2::<f64>::zeros((h, v));
        for obs in seqs {
            let (al, sc) = self.forward(obs);
            let be = self.backward(obs, &sc);
            for t in 0..obs.len() {
                for i in 0..h {
                    let g = al[t][i] * be[t][i];
                    em[[i, obs[t]]] += g;
                    if t == 0 {
                        pi[i] += g;
                    }
                }
                if t + 1 < obs.len() {
                    let o = obs[t + 1];
                    for i in 0..h {
                        for j in 0..h {
                            xi[[i, j]] += al[t][i] * self.t[[i, j]] * self.e[[j, o]] * be[t + 1][j]
                                / sc[t + 1];
                        }
                    }
                }
            }
        }
        let n = pi.sum();
        self.pi = pi / n;
        for i in 0..h {
            let s: f64 = xi.row(i).sum();
            if s > 0.0 {
                for j in 0..h {
                    self.t[[i, j]] = xi[[i, j]] / s;
                }
            }
            let s: f64 = em.row(i).sum();
            if s > 0.0 {
                for o in 0..v {
                    self.e[[i, o]] = em[[i, o]] / s;
                }
            }
        }
    }
}
