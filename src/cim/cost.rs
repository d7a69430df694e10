//! Exact cost accounting of structured layers against their dense equivalents.

use crate::circuit::MonarchChain;
use crate::{BlockDiag, Monarch, MonarchLinear, Scalar};

/// Shape of one block-diagonal factor: `nblocks` blocks of `rows × cols` (stored out×in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockShape {
    /// Number of blocks.
    pub nblocks: usize,
    /// Output features per block.
    pub rows: usize,
    /// Input features per block.
    pub cols: usize,
}

impl BlockShape {
    /// Entries stored, `nblocks·rows·cols` (saturating at `usize::MAX` for sizes whose
    /// product overflows; [`plan_factor`](super::plan_factor) rejects those).
    pub fn params(&self) -> usize {
        self.nblocks
            .saturating_mul(self.rows)
            .saturating_mul(self.cols)
    }
}

/// Exact costs of a layer for one input row, next to the dense `out × in` layer it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCost {
    /// Input width of the layer as the caller sees it.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Stored parameters (every block entry, plus the bias if any).
    pub params: usize,
    /// Stored parameters that are non-zero right now.
    pub nonzeros: usize,
    /// Multiply-adds for one input row (every block entry once, zero-padding included).
    pub macs: usize,
    /// Bytes of the stored parameters (`params · size_of::<T>()`); permutations are folded into
    /// addressing and cost no weight storage.
    pub bytes: usize,
    /// Parameters of the dense equivalent (`in·out`, plus the bias if any).
    pub dense_params: usize,
    /// Multiply-adds of the dense equivalent for one row (`in·out`).
    pub dense_macs: usize,
    /// Bytes of the dense equivalent.
    pub dense_bytes: usize,
}

impl LayerCost {
    /// `dense_params / params` (how many times smaller the layer is).
    pub fn param_reduction(&self) -> f64 {
        self.dense_params as f64 / self.params as f64
    }
    /// `dense_macs / macs`.
    pub fn mac_reduction(&self) -> f64 {
        self.dense_macs as f64 / self.macs as f64
    }
    /// `dense_bytes / bytes`.
    pub fn byte_reduction(&self) -> f64 {
        self.dense_bytes as f64 / self.bytes as f64
    }
    /// `nonzeros / params`.
    pub fn density(&self) -> f64 {
        self.nonzeros as f64 / self.params as f64
    }
}

/// A layer built from block-diagonal factors: what the accounting and the CIM planner need.
/// Other modules implement it for their layers.
pub trait StructuredLayer {
    /// Exact costs next to the dense equivalent.
    fn cost(&self) -> LayerCost;
    /// The block-diagonal factors, in the order they are applied.
    fn block_factors(&self) -> Vec<BlockShape>;
}

fn count_nonzero<T: Scalar>(w: &[&BlockDiag<T>]) -> usize {
    w.iter()
        .map(|b| b.weights().iter().filter(|&&v| v != T::zero()).count())
        .sum()
}

fn shape_of<T: Scalar>(b: &BlockDiag<T>) -> BlockShape {
    BlockShape {
        nblocks: b.nblocks(),
        rows: b.block_rows(),
        cols: b.block_cols(),
    }
}

fn structured_cost<T: Scalar>(
    factors: &[&BlockDiag<T>],
    in_features: usize,
    out_features: usize,
    bias: Option<(usize, usize)>,
) -> LayerCost {
    let (bias_len, bias_nnz) = bias.unwrap_or((0, 0));
    let block_params: usize = factors.iter().map(|b| b.num_params()).sum();
    let size = std::mem::size_of::<T>();
    let params = block_params + bias_len;
    let dense_params = in_features * out_features + bias_len;
    LayerCost {
        in_features,
        out_features,
        params,
        nonzeros: count_nonzero(factors) + bias_nnz,
        macs: block_params,
        bytes: params * size,
        dense_params,
        dense_macs: in_features * out_features,
        dense_bytes: dense_params * size,
    }
}

impl<T: Scalar> StructuredLayer for BlockDiag<T> {
    fn cost(&self) -> LayerCost {
        structured_cost(&[self], self.in_features(), self.out_features(), None)
    }
    fn block_factors(&self) -> Vec<BlockShape> {
        vec![shape_of(self)]
    }
}

impl<T: Scalar> StructuredLayer for Monarch<T> {
    fn cost(&self) -> LayerCost {
        structured_cost(
            &[self.factor1(), self.factor2()],
            self.in_features(),
            self.out_features(),
            None,
        )
    }
    fn block_factors(&self) -> Vec<BlockShape> {
        vec![shape_of(self.factor1()), shape_of(self.factor2())]
    }
}

impl<T: Scalar> StructuredLayer for MonarchLinear<T> {
    fn cost(&self) -> LayerCost {
        let m = self.monarch();
        let bias = self
            .bias()
            .map(|b| (b.len(), b.iter().filter(|&&v| v != T::zero()).count()));
        structured_cost(
            &[m.factor1(), m.factor2()],
            self.in_features(),
            self.out_features(),
            bias,
        )
    }
    fn block_factors(&self) -> Vec<BlockShape> {
        self.monarch().block_factors()
    }
}

impl<T: Scalar> StructuredLayer for MonarchChain<T> {
    fn cost(&self) -> LayerCost {
        let f: Vec<&BlockDiag<T>> = self.factors().iter().collect();
        structured_cost(&f, self.in_features(), self.out_features(), None)
    }
    fn block_factors(&self) -> Vec<BlockShape> {
        self.factors().iter().map(shape_of).collect()
    }
}
