//! Exact conversion between a linear PK pair and a Monarch with tied blocks, and the
//! effective-width rule.

use crate::primitives::error::{check_nonzero, Error, Result};
use crate::{Monarch, RealScalar};
use ndarray::{Array2, Array3, Axis};

/// The Monarch equal to token mixing `W_t` (`S' × S`) followed by channel mixing `W_c`
/// (`C' × C`) on column-major `vec X`, i.e. `W_c ⊗ W_t`: `w1` holds `C` copies of `W_t`, `w2`
/// holds `S'` copies of `W_c` (the blocks are tied), with the Monarch's stride permutation
/// playing the commutation permutation `J_c`.
///
/// # Errors
/// [`Error::ZeroSize`] for empty matrices.
pub fn pk_pair_to_monarch<R: RealScalar>(w_t: &Array2<R>, w_c: &Array2<R>) -> Result<Monarch<R>> {
    let (so, si) = w_t.dim();
    let (co, ci) = w_c.dim();
    for (v, n) in [
        (so, "W_t rows"),
        (si, "W_t cols"),
        (co, "W_c rows"),
        (ci, "W_c cols"),
    ] {
        check_nonzero(v, &format!("pk_pair_to_monarch: {n}"))?;
    }
    let w1 = Array3::from_shape_fn((ci, so, si), |(_, i, j)| w_t[[i, j]]);
    let w2 = Array3::from_shape_fn((so, co, ci), |(_, i, j)| w_c[[i, j]]);
    Monarch::from_factors(w1, w2)
}

/// The inverse of [`pk_pair_to_monarch`]: `(W_t, W_c)` if every block of each factor is the
/// same (to `tol` in max-abs), for a Monarch in the reference layout.
///
/// # Errors
/// [`Error::InvalidArgument`] if the blocks are not tied (the Monarch is then strictly more
/// expressive than a PK pair) or the permutations are not the reference ones.
pub fn monarch_to_pk_pair<R: RealScalar>(m: &Monarch<R>, tol: R) -> Result<(Array2<R>, Array2<R>)> {
    let (p_in, _, _) = m.perms();
    if !p_in.is_identity() {
        return Err(Error::invalid(
            "monarch_to_pk_pair: the Monarch has an input permutation",
        ));
    }
    let tied = |w: &Array3<R>, name: &str| -> Result<Array2<R>> {
        let first = w.index_axis(Axis(0), 0).to_owned();
        for blk in w.axis_iter(Axis(0)) {
            let d = blk
                .iter()
                .zip(&first)
                .fold(R::zero(), |a, (&x, &y)| a.max((x - y).abs()));
            if d > tol {
                return Err(Error::invalid(format!(
                    "monarch_to_pk_pair: {name} blocks are not tied (max difference {d})"
                )));
            }
        }
        Ok(first)
    };
    Ok((tied(m.w1(), "w1")?, tied(m.w2(), "w2")?))
}

/// Effective width `m = S·C` of a PK (MLP-Mixer) layer seen as a wide sparse MLP.
pub fn effective_width(tokens: usize, channels: usize) -> usize {
    tokens * channels
}

/// Weight budget `Ω = S² + C²` of a token-plus-channel mixing pair.
pub fn weight_budget(tokens: usize, channels: usize) -> usize {
    tokens * tokens + channels * channels
}

/// The paper's guidance for a fixed budget `Ω`: the integer `(S, C)` with `S² + C² ≤ Ω`
/// maximising the effective width `S·C`, which is `S = C = ⌊√(Ω/2)⌋` (width `Ω/2` when exact).
/// Returns `(S, C, S·C)`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `Ω < 2` (no positive sizes fit).
pub fn widest_for_budget(omega: usize) -> Result<(usize, usize, usize)> {
    if omega < 2 {
        return Err(Error::invalid(format!(
            "widest_for_budget: budget {omega} < 2 fits no S, C ≥ 1"
        )));
    }
    let mut best = (1, 1, 1);
    let mut s = 1;
    while 2 * s * s <= omega {
        let rem = omega - s * s;
        let mut c = (rem as f64).sqrt() as usize;
        while c * c > rem {
            c -= 1;
        }
        while (c + 1) * (c + 1) <= rem {
            c += 1;
        }
        if s * c > best.2 {
            best = (s, c, s * c);
        }
        s += 1;
    }
    Ok(best)
}
