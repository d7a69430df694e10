//! Dense references for attention, written from the attention section of
//! `monarch::guide::conventions` with the full `N × N` score matrix (independent of the crate's streaming and Monarch kernels).
#![allow(dead_code)]

use monarch::ndarray::{s, Array2, Array3, Array4};

/// Naive softmax attention in f64: output `(B, H, Nq, dv)` and row log-sum-exp `(B, H, Nq)`.
pub fn naive_attention(
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    mask: Option<&Array2<bool>>,
    scale: f64,
) -> (Array4<f64>, Array3<f64>) {
    let (nb, nh, nq, d) = q.dim();
    let nk = k.dim().2;
    let dv = v.dim().3;
    let mut out = Array4::zeros((nb, nh, nq, dv));
    let mut lse = Array3::zeros((nb, nh, nq));
    for b in 0..nb {
        for h in 0..nh {
            for t in 0..nq {
                let sc: Vec<f64> = (0..nk)
                    .map(|u| {
                        if mask.is_some_and(|m| !m[[b, u]]) {
                            f64::NEG_INFINITY
                        } else {
                            scale
                                * (0..d)
                                    .map(|c| q[[b, h, t, c]] * k[[b, h, u, c]])
                                    .sum::<f64>()
                        }
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dv {
                    out[[b, h, t, c]] = (0..nk).map(|u| e[u] * v[[b, h, u, c]]).sum::<f64>() / z;
                }
                lse[[b, h, t]] = mx + z.ln();
            }
        }
    }
    (out, lse)
}

/// Result of the dense MonarchAttention reference for all heads.
pub struct DenseMonarch {
    /// `(B, H, N, N)`
    pub a: Array4<f64>,
    /// `(B, H, N, dv)`
    pub out: Array4<f64>,
    /// `⟨A_row, S_row⟩ + H(A_row)` per row, `(B, H, N)`.
    pub objective: Array3<f64>,
}

fn softmax(z: &mut [f64]) {
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if mx == f64::NEG_INFINITY {
        z.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let mut sum = 0.0;
    for x in z.iter_mut() {
        *x = (*x - mx).exp();
        sum += *x;
    }
    z.iter_mut().for_each(|x| *x /= sum);
}

/// MonarchAttention by alternating maximisation of `⟨A, S⟩ + H(A)` written directly against
/// the dense padded score matrix (no α/c bookkeeping): the R-update maximises
/// `Σ_l w_l L_j[a,l]·(⟨R_a[j], S[lb+j, a-block]⟩ + H(R_a[j]))`, the L-update
/// `⟨L_j[·,l], Σ_i R S − Σ_i R log R⟩ + H(L_j[·,l])`.
#[allow(clippy::too_many_arguments)]
pub fn dense_monarch(
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    mask: Option<&Array2<bool>>,
    bsz: usize,
    steps: usize,
    pre_pad: bool,
    scale: f64,
) -> DenseMonarch {
    let (nb, nh, n, d) = q.dim();
    let dv = v.dim().3;
    let bsz = bsz.min(n);
    let m = n.div_ceil(bsz);
    let np = m * bsz;
    let pre = if pre_pad { np - n } else { 0 };
    let real = |p: usize| -> Option<usize> { p.checked_sub(pre).filter(|&t| t < n) };
    let mut a_all = Array4::zeros((nb, nh, n, n));
    let mut out = Array4::zeros((nb, nh, n, dv));
    let mut obj = Array3::zeros((nb, nh, n));
    for b in 0..nb {
        let live: Vec<bool> = (0..np)
            .map(|p| real(p).is_some_and(|t| mask.is_none_or(|mk| mk[[b, t]])))
            .collect();
        for h in 0..nh {
            // Padded dense scores (−∞ for dead keys).
            let mut sp = Array2::from_elem((np, np), f64::NEG_INFINITY);
            for p in 0..np {
                for r in 0..np {
                    if !live[r] {
                        continue;
                    }
                    let qrow: Vec<f64> = match real(p) {
                        Some(t) => (0..d).map(|c| q[[b, h, t, c]]).collect(),
                        None => vec![0.0; d],
                    };
                    let t2 = real(r).unwrap();
                    sp[[p, r]] = scale * (0..d).map(|c| qrow[c] * k[[b, h, t2, c]]).sum::<f64>();
                }
            }
            let w: Vec<f64> = live.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect();
            // L[j][(a, l)], R[a][(j, i)]
            let mut lf = vec![Array2::<f64>::eye(m); bsz];
            let mut rf = vec![Array2::<f64>::zeros((bsz, bsz)); m];
            for _ in 0..steps {
                for a in 0..m {
                    let block_live = (0..bsz).any(|i| live[a * bsz + i]);
                    for j in 0..bsz {
                        let mut z = vec![f64::NEG_INFINITY; bsz];
                        if block_live {
                            let c: f64 = (0..m).map(|l| w[l * bsz + j] * lf[j][[a, l]]).sum();
                            for i in 0..bsz {
                                if live[a * bsz + i] {
                                    z[i] = if c > 0.0 {
                                        (0..m)
                                            .filter(|&l| w[l * bsz + j] * lf[j][[a, l]] > 0.0)
                                            .map(|l| {
                                                w[l * bsz + j]
                                                    * lf[j][[a, l]]
                                                    * sp[[l * bsz + j, a * bsz + i]]
                                            })
                                            .sum::<f64>()
                                            / c
                                    } else {
                                        0.0
                                    };
                                }
                            }
                        }
                        softmax(&mut z);
                        for i in 0..bsz {
                            rf[a][[j, i]] = z[i];
                        }
                    }
                }
                for j in 0..bsz {
                    for l in 0..m {
                        let mut z = vec![f64::NEG_INFINITY; m];
                        for a in 0..m {
                            if !(0..bsz).any(|i| live[a * bsz + i]) {
                                continue;
                            }
                            let mut acc = 0.0;
                            for i in 0..bsz {
                                let r = rf[a][[j, i]];
                                if r > 0.0 {
                                    acc += r * sp[[l * bsz + j, a * bsz + i]] - r * r.ln();
                                }
                            }
                            z[a] = acc;
                        }
                        softmax(&mut z);
                        for a in 0..m {
                            lf[j][[a, l]] = z[a];
                        }
                    }
                }
            }
            for l in 0..m {
                for j in 0..bsz {
                    let Some(t) = real(l * bsz + j) else { continue };
                    let mut f = 0.0;
                    for a in 0..m {
                        for i in 0..bsz {
                            let val = lf[j][[a, l]] * rf[a][[j, i]];
                            if let Some(u) = real(a * bsz + i) {
                                a_all[[b, h, t, u]] = val;
                                if val > 0.0 {
                                    f += val * sp[[l * bsz + j, a * bsz + i]] - val * val.ln();
                                }
                            }
                        }
                    }
                    obj[[b, h, t]] = f;
                }
            }
            let ah = a_all.slice(s![b, h, .., ..]).to_owned();
            let vh = v.slice(s![b, h, .., ..]);
            out.slice_mut(s![b, h, .., ..]).assign(&ah.dot(&vh));
        }
    }
    DenseMonarch {
        a: a_all,
        out,
        objective: obj,
    }
}

/// Smooth positional inputs `(B, H, N, d)`: sinusoids of the position with per-channel
/// frequencies (like sinusoidal position embeddings), plus a per-head phase.
pub fn positional(nb: usize, nh: usize, n: usize, d: usize, amp: f64) -> Array4<f64> {
    Array4::from_shape_fn((nb, nh, n, d), |(b, h, t, c)| {
        let freq = 1.0 / (10.0f64).powf(2.0 * (c / 2) as f64 / d as f64) * 0.3;
        let phase = 0.7 * h as f64
            + 0.3 * b as f64
            + if c % 2 == 0 {
                0.0
            } else {
                std::f64::consts::FRAC_PI_2
            };
        amp * (t as f64 * freq + phase).sin()
    })
}

/// Seeded Gaussian `(B, H, N, d)`.
pub fn gauss4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
    let (a, b, c, d) = shape;
    monarch::primitives::random::normal_matrix::<f64>((a * b * c, d), 1.0, seed)
        .into_shape_with_order(shape)
        .unwrap()
}

/// Relative Frobenius error `‖x − y‖ / ‖y‖`.
pub fn rel_fro(x: &Array4<f64>, y: &Array4<f64>) -> f64 {
    let num: f64 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = y.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

/// Largest absolute entrywise difference.
pub fn max_abs<D: monarch::ndarray::Dimension>(
    x: &monarch::ndarray::Array<f64, D>,
    y: &monarch::ndarray::Array<f64, D>,
) -> f64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}
