//! Mapping the blocks of block-diagonal factors onto fixed-size compute-in-memory arrays.
//!
//! A crossbar of `R × C` cells computes `y = Wᵀ x` for the inputs driven on its `R` rows
//! (word lines) and the outputs read on its `C` columns (bit lines). A block of `rows × cols`
//! (stored out×in) therefore occupies `cols` array rows and `rows` array columns. Blocks of a
//! block-diagonal factor have disjoint inputs and disjoint outputs, so:
//!
//! * [`Packing::Naive`]: one block per array (the baseline).
//! * [`Packing::Diagonal`]: `min(⌊R/cols⌋, ⌊C/rows⌋)` blocks on the array's diagonal; they use
//!   disjoint rows and columns, so all of them compute in one activation.
//! * [`Packing::Grid`]: blocks side by side and stacked, `⌊R/cols⌋·⌊C/rows⌋` per array; blocks
//!   sharing rows (or columns) must be activated in different rounds, `⌈m / min(g_r, g_c)⌉`
//!   rounds for `m` blocks on a `g_r × g_c` grid. Fewer arrays, more rounds.
//!
//! Each factor is planned on its own arrays (factors run one after the other); the totals add.

use crate::cim::cost::{BlockShape, StructuredLayer};
use crate::primitives::error::{Error, Result};

/// A crossbar array of `rows × cols` cells (rows = inputs, columns = outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CimArray {
    /// Word lines (inputs).
    pub rows: usize,
    /// Bit lines (outputs).
    pub cols: usize,
}

impl CimArray {
    /// An `rows × cols` array.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if either size is zero; [`Error::TooLarge`] if the cell count
    /// `rows·cols` overflows `usize`.
    pub fn new(rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(Error::zero(format!("CimArray: size {rows}×{cols}")));
        }
        checked_mul(
            rows,
            cols,
            &format!("CimArray: cells of a {rows}×{cols} array"),
        )?;
        Ok(CimArray { rows, cols })
    }
    /// Cells per array (saturating at `usize::MAX` for an array built by hand with sizes
    /// whose product overflows; [`new`](CimArray::new) rejects those).
    pub fn cells(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
}

/// `a·b`, or [`Error::TooLarge`] naming `ctx` if it overflows.
fn checked_mul(a: usize, b: usize, ctx: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::TooLarge {
        context: format!("{ctx} ({a}·{b} overflows)"),
        value: a.saturating_mul(b),
        max: usize::MAX,
    })
}

/// `Σ xs`, or [`Error::TooLarge`] naming `ctx` if it overflows.
fn checked_sum(xs: impl IntoIterator<Item = usize>, ctx: &str) -> Result<usize> {
    xs.into_iter().try_fold(0usize, |acc, x| {
        acc.checked_add(x).ok_or_else(|| Error::TooLarge {
            context: format!("{ctx} (sum overflows)"),
            value: usize::MAX,
            max: usize::MAX,
        })
    })
}

/// How blocks are placed in arrays (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// One block per array.
    Naive,
    /// Several blocks on the array's diagonal, all active at once.
    Diagonal,
    /// Blocks side by side and stacked, activated in rounds.
    Grid,
}

/// The mapping of one block-diagonal factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FactorPlan {
    /// The factor's blocks.
    pub block: BlockShape,
    /// Blocks placed in a full array.
    pub blocks_per_array: usize,
    /// Arrays used.
    pub arrays: usize,
    /// Sequential activation rounds per input row (arrays run in parallel).
    pub rounds: usize,
    /// Cells holding weights / cells of the arrays used.
    pub utilisation: f64,
}

/// The mapping of a whole layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Array size.
    pub array: CimArray,
    /// Strategy.
    pub packing: Packing,
    /// One entry per factor, in order.
    pub factors: Vec<FactorPlan>,
    /// Arrays used (sum over factors).
    pub arrays: usize,
    /// Cells holding weights.
    pub used_cells: usize,
    /// Cells of the arrays used.
    pub total_cells: usize,
    /// `used_cells / total_cells`.
    pub utilisation: f64,
    /// Activation rounds per input row (sum over factors, which run in sequence).
    pub rounds: usize,
}

/// Plans one factor.
///
/// # Errors
/// [`Error::ZeroSize`] for an empty factor, [`Error::TooLarge`] if a block does not fit the
/// array (its `cols` exceed the array's rows or its `rows` the array's columns) or its entry or
/// cell counts overflow `usize`.
pub fn plan_factor(block: BlockShape, array: CimArray, packing: Packing) -> Result<FactorPlan> {
    let BlockShape {
        nblocks,
        rows,
        cols,
    } = block;
    if nblocks == 0 || rows == 0 || cols == 0 || array.rows == 0 || array.cols == 0 {
        return Err(Error::zero(format!(
            "plan_factor: {nblocks} blocks of {rows}×{cols} on a {}×{} array",
            array.rows, array.cols
        )));
    }
    if cols > array.rows {
        return Err(Error::TooLarge {
            context: format!("plan_factor: block {rows}×{cols} (out×in) needs {cols} array rows"),
            value: cols,
            max: array.rows,
        });
    }
    if rows > array.cols {
        return Err(Error::TooLarge {
            context: format!(
                "plan_factor: block {rows}×{cols} (out×in) needs {rows} array columns"
            ),
            value: rows,
            max: array.cols,
        });
    }
    let ctx = format!("plan_factor: {nblocks} blocks of {rows}×{cols}");
    let params = checked_mul(checked_mul(nblocks, rows, &ctx)?, cols, &ctx)?;
    let (gr, gc) = (array.rows / cols, array.cols / rows);
    let per = match packing {
        Packing::Naive => 1,
        Packing::Diagonal => gr.min(gc),
        Packing::Grid => checked_mul(gr, gc, &ctx)?,
    };
    let arrays = nblocks.div_ceil(per);
    let rounds = match packing {
        Packing::Naive | Packing::Diagonal => 1,
        Packing::Grid => per.min(nblocks).div_ceil(gr.min(gc)),
    };
    Ok(FactorPlan {
        block,
        blocks_per_array: per,
        arrays,
        rounds,
        utilisation: params as f64 / checked_mul(arrays, array.cells(), &ctx)? as f64,
    })
}

/// Plans every factor of a list.
///
/// # Errors
/// [`Error::ZeroSize`] for an empty list or factor, [`Error::TooLarge`] as [`plan_factor`].
pub fn plan_blocks(factors: &[BlockShape], array: CimArray, packing: Packing) -> Result<Plan> {
    if factors.is_empty() {
        return Err(Error::zero("plan_blocks: number of factors"));
    }
    let fp = factors
        .iter()
        .map(|&b| plan_factor(b, array, packing))
        .collect::<Result<Vec<_>>>()?;
    let arrays = checked_sum(fp.iter().map(|f| f.arrays), "plan_blocks: arrays")?;
    let used = checked_sum(
        factors.iter().map(|b| b.params()),
        "plan_blocks: used cells",
    )?;
    let total = checked_mul(arrays, array.cells(), "plan_blocks: total cells")?;
    Ok(Plan {
        array,
        packing,
        rounds: checked_sum(fp.iter().map(|f| f.rounds), "plan_blocks: rounds")?,
        factors: fp,
        arrays,
        used_cells: used,
        total_cells: total,
        utilisation: used as f64 / total as f64,
    })
}

/// Plans a structured layer (all of its block-diagonal factors).
///
/// # Errors
/// As [`plan_blocks`].
pub fn plan_layer<L: StructuredLayer + ?Sized>(
    layer: &L,
    array: CimArray,
    packing: Packing,
) -> Result<Plan> {
    plan_blocks(&layer.block_factors(), array, packing)
}

/// Arrays a dense `out × in` weight needs when tiled onto `array`s: `⌈in/R⌉·⌈out/C⌉`.
///
/// # Errors
/// [`Error::ZeroSize`] if a size is zero; [`Error::TooLarge`] if the count overflows `usize`.
pub fn dense_arrays(in_features: usize, out_features: usize, array: CimArray) -> Result<usize> {
    if in_features == 0 || out_features == 0 || array.rows == 0 || array.cols == 0 {
        return Err(Error::zero(format!(
            "dense_arrays: {out_features}×{in_features} weight on a {}×{} array",
            array.rows, array.cols
        )));
    }
    checked_mul(
        in_features.div_ceil(array.rows),
        out_features.div_ceil(array.cols),
        &format!("dense_arrays: {out_features}×{in_features} weight"),
    )
}
