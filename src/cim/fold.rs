//! Folding a chain of permutations into one gather index.

use crate::primitives::error::{Error, Result};
use crate::Perm;

/// The single permutation equal to applying `perms[0]`, then `perms[1]`, …: one gather index
/// `y[i] = x[idx[i]]` for the whole chain, so hardware (or a kernel) reads its inputs through
/// one address table instead of moving data between the steps.
///
/// # Errors
/// [`Error::ZeroSize`] for an empty list, [`Error::ShapeMismatch`] if the lengths differ.
pub fn fold_perms(perms: &[Perm]) -> Result<Perm> {
    let first = perms
        .first()
        .ok_or_else(|| Error::zero("fold_perms: number of permutations"))?;
    let mut acc = first.clone();
    for (i, p) in perms.iter().enumerate().skip(1) {
        if p.len() != acc.len() {
            return Err(Error::shape(
                format!("fold_perms: length of permutation {i}"),
                acc.len(),
                p.len(),
            ));
        }
        acc = p.compose(&acc);
    }
    Ok(acc)
}
