//! Block-diagonal sparse layers on compute-in-memory arrays (de Lima, Dietrich, Castrillon,
//! Khan, arXiv 2510.11192).
//!
//! * [`StructuredLayer`]: exact parameter / non-zero / multiply-add / byte accounting of a
//!   structured layer next to its dense equivalent, implemented for [`BlockDiag`](crate::BlockDiag),
//!   [`Monarch`](crate::Monarch), [`MonarchLinear`](crate::MonarchLinear) and
//!   [`MonarchChain`](crate::circuit::MonarchChain).
//! * [`fold_perms`]: a chain of permutations as one gather index (folded into addressing).
//! * [`plan_layer`]: maps the blocks of every factor onto `R × C` arrays, naive (one block per
//!   array) or packed (diagonal, or a grid activated in rounds), with arrays used and utilisation.
//!
//! ```
//! use monarch::cim::{dense_arrays, plan_layer, CimArray, Packing, StructuredLayer};
//! use monarch::Monarch;
//! let m = Monarch::<f32>::random(4096, 64, 0).unwrap(); // 2 factors of 64 blocks 64×64
//! let c = m.cost();
//! assert_eq!((c.params, c.dense_params), (2 * 64 * 64 * 64, 4096 * 4096));
//! let a = CimArray::new(256, 256).unwrap();
//! let naive = plan_layer(&m, a, Packing::Naive).unwrap();
//! let grid = plan_layer(&m, a, Packing::Grid).unwrap();
//! assert_eq!((naive.arrays, grid.arrays), (128, 8));
//! assert_eq!(grid.utilisation, 1.0);
//! assert_eq!(dense_arrays(4096, 4096, a).unwrap(), 256);
//! ```

mod cost;
mod fold;
mod plan;

pub use cost::{BlockShape, LayerCost, StructuredLayer};
pub use fold::fold_perms;
pub use plan::{
    dense_arrays, plan_blocks, plan_factor, plan_layer, CimArray, FactorPlan, Packing, Plan,
};
