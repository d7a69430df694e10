//! Threading policy.
//!
//! Every parallel operation takes (or defaults to) a [`Par`]. Results never depend on it: each
//! output element is computed by one thread in a fixed order, so `Par::Seq` and `Par::Rayon`
//! give bitwise identical results.
//!
//! ```
//! use monarch::{Monarch, Par};
//! let m = Monarch::<f64>::random(16, 4, 7).unwrap();
//! let x = monarch::ndarray::Array2::from_elem((8, 16), 1.0);
//! let mut a = monarch::ndarray::Array2::zeros((8, 16));
//! let mut b = a.clone();
//! m.matmul_into(x.view(), a.view_mut(), Par::Seq).unwrap();
//! m.matmul_into(x.view(), b.view_mut(), Par::Rayon).unwrap();
//! assert_eq!(a, b);
//! ```

/// Whether an operation may split its work over rayon's current thread pool.
///
/// Use `Par::Seq` when calling from inside your own parallel loop, so the two levels of
/// parallelism do not oversubscribe the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Par {
    /// Run on the calling thread only.
    Seq,
    /// Split work over the current rayon pool (when the job is large enough to gain from it).
    #[default]
    Rayon,
}

impl Par {
    /// Work (in multiply-adds) below which splitting over threads costs more than it gains
    /// (measured here: two threads slow jobs under ~0.1 MFLOP).
    pub const MIN_PARALLEL_WORK: usize = 1 << 16;

    /// True if a job of `work` multiply-adds should be split over threads.
    pub fn should_split(self, work: usize) -> bool {
        matches!(self, Par::Rayon)
            && work >= Self::MIN_PARALLEL_WORK
            && rayon::current_num_threads() > 1
    }
}
