//! CIM accounting, permutation folding and the array planner, against brute-force counts and
//! an explicit placement of every block.

#![allow(clippy::needless_range_loop)]

use monarch::cim::{
    dense_arrays, fold_perms, plan_blocks, plan_factor, plan_layer, BlockShape, CimArray, Packing,
    StructuredLayer,
};
use monarch::circuit::MonarchChain;
use monarch::ndarray::Array3;
use monarch::{BlockDiag, Error, Monarch, MonarchLinear, Perm};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

#[test]
fn accounting_matches_brute_force() {
    // Dense matrix entries that are structurally non-zero = parameters of the structure.
    let m = Monarch::<f64>::random_factors((4, 3, 5), (6, 2, 2), 1).unwrap();
    let c = m.cost();
    assert_eq!(c.in_features, 20);
    assert_eq!(c.out_features, 12);
    assert_eq!(c.params, 4 * 3 * 5 + 6 * 2 * 2);
    assert_eq!(c.macs, c.params);
    assert_eq!(
        c.nonzeros,
        m.w1()
            .iter()
            .chain(m.w2().iter())
            .filter(|v| **v != 0.0)
            .count()
    );
    assert_eq!(c.dense_params, m.to_dense().len());
    assert_eq!(c.bytes, 8 * c.params);
    assert_eq!(c.dense_bytes, 8 * 20 * 12);
    // Multiply-adds: count them by running the product on a one-hot batch with a counting scalar
    // is overkill; instead count the non-zero pattern of a structure with all-one blocks, where
    // every multiply-add lands on a distinct (block, row, col) triple.
    let ones = BlockDiag::new(Array3::<f32>::ones((3, 4, 2))).unwrap();
    let cb = ones.cost();
    assert_eq!(
        cb.nonzeros,
        ones.to_dense().iter().filter(|v| **v != 0.0).count()
    );
    assert_eq!(cb.bytes, 4 * 24);
    assert_eq!(cb.dense_macs, 12 * 6);
    // Zeroed weights count as parameters but not non-zeros.
    let z = BlockDiag::new(Array3::<f64>::zeros((2, 2, 2)))
        .unwrap()
        .cost();
    assert_eq!((z.params, z.nonzeros), (8, 0));
    // MonarchLinear with bias and padding: 100 → 60 with 4 blocks pads 100 to 100, 60 to 60.
    let l = MonarchLinear::<f32>::new(100, 60, 4, true, 3).unwrap();
    let cl = l.cost();
    assert_eq!(cl.params, l.num_params());
    assert_eq!(cl.dense_params, 100 * 60 + 60);
    assert_eq!(cl.macs, l.monarch().num_params());
    assert!(cl.param_reduction() > 1.0);
    // Chain.
    let ch = MonarchChain::<f64>::random(&[(4, 2, 2), (2, 4, 4), (8, 1, 1)], 0).unwrap();
    assert_eq!(ch.cost().params, ch.num_params());
    assert_eq!(ch.block_factors().len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn folded_permutation_equals_sequential_application(len in 1usize..40, k in 1usize..5, seed in 0u64..1000) {
        let perms: Vec<Perm> = (0..k).map(|i| Perm::random(len, seed * 7 + i as u64)).collect();
        let x: Vec<usize> = (100..100 + len).collect();
        let mut y = x.clone();
        for p in &perms {
            y = p.apply(&y);
        }
        let f = fold_perms(&perms).unwrap();
        prop_assert_eq!(f.apply(&x), y);
    }

    #[test]
    fn packed_plans_place_every_block_without_overlap(
        nb in 1usize..40, rows in 1usize..50, cols in 1usize..50, ar in 1usize..130, ac in 1usize..130,
    ) {
        let array = CimArray::new(ar, ac).unwrap();
        let block = BlockShape { nblocks: nb, rows, cols };
        for packing in [Packing::Naive, Packing::Diagonal, Packing::Grid] {
            let r = plan_factor(block, array, packing);
            if cols > ar || rows > ac {
                let too_large = matches!(r, Err(Error::TooLarge { .. }));
                prop_assert!(too_large);
                continue;
            }
            let p = r.unwrap();
            // Explicit placement: blocks fill arrays in order; each gets an (array, row0, col0).
            let (gr, gc) = (ar / cols, ac / rows);
            let mut cells = vec![vec![false; ar * ac]; p.arrays];
            let mut max_rounds = 0;
            for b in 0..nb {
                let (arr, slot) = (b / p.blocks_per_array, b % p.blocks_per_array);
                let (br, bc) = match packing {
                    Packing::Naive => (0, 0),
                    Packing::Diagonal => (slot, slot),
                    // Slot s: round d = s / m, position s % m, m = min(gr, gc) blocks per round,
                    // each round a wrapped diagonal (distinct row bands and column bands).
                    Packing::Grid => {
                        let m = gr.min(gc);
                        let (d, pos) = (slot / m, slot % m);
                        max_rounds = max_rounds.max(d + 1);
                        if gr <= gc { (pos, (pos + d) % gc) } else { ((pos + d) % gr, pos) }
                    }
                };
                prop_assert!(br < gr && bc < gc);
                for i in 0..cols {
                    for j in 0..rows {
                        let cell = &mut cells[arr][(br * cols + i) * ac + bc * rows + j];
                        prop_assert!(!*cell, "overlap");
                        *cell = true;
                    }
                }
            }
            if packing == Packing::Grid {
                prop_assert_eq!(p.rounds, max_rounds);
            } else {
                prop_assert_eq!(p.rounds, 1);
            }
            let used: usize = cells.iter().flatten().filter(|c| **c).count();
            prop_assert_eq!(used, nb * rows * cols);
            prop_assert!((p.utilisation - used as f64 / (p.arrays * ar * ac) as f64).abs() < 1e-12);
            // No array is wasted: the last one holds at least one block.
            prop_assert!((p.arrays - 1) * p.blocks_per_array < nb);
        }
    }
}

#[test]
fn grid_and_diagonal_beat_naive_on_monarch() {
    let m = Monarch::<f32>::random(1024, 32, 0).unwrap(); // blocks 32×32
    let a = CimArray::new(256, 256).unwrap();
    let naive = plan_layer(&m, a, Packing::Naive).unwrap();
    let diag = plan_layer(&m, a, Packing::Diagonal).unwrap();
    let grid = plan_layer(&m, a, Packing::Grid).unwrap();
    assert_eq!(naive.arrays, 64);
    assert_eq!(diag.arrays, 8); // 8 blocks on the diagonal of each array
    assert_eq!(grid.arrays, 2); // 64 slots per array, 32 blocks per factor
    assert_eq!(grid.rounds, 2 * 4); // 32 blocks, 8 per round, per factor
    assert!((naive.utilisation - 1.0 / 64.0).abs() < 1e-12);
    assert!((diag.utilisation - 1.0 / 8.0).abs() < 1e-12);
    assert!((grid.utilisation - 0.5).abs() < 1e-12);
    assert_eq!(dense_arrays(1024, 1024, a).unwrap(), 16);
    assert_eq!(dense_arrays(1000, 300, a).unwrap(), 4 * 2);
}

#[test]
fn bad_plans_are_errors() {
    assert!(matches!(CimArray::new(0, 4), Err(Error::ZeroSize { .. })));
    let a = CimArray::new(64, 32).unwrap();
    let big = BlockShape {
        nblocks: 2,
        rows: 16,
        cols: 65,
    };
    let e = plan_factor(big, a, Packing::Grid).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                value: 65,
                max: 64,
                ..
            }
        ),
        "{e}"
    );
    let wide = BlockShape {
        nblocks: 2,
        rows: 33,
        cols: 8,
    };
    assert!(matches!(
        plan_factor(wide, a, Packing::Naive),
        Err(Error::TooLarge {
            value: 33,
            max: 32,
            ..
        })
    ));
    let empty = BlockShape {
        nblocks: 0,
        rows: 1,
        cols: 1,
    };
    assert!(matches!(
        plan_factor(empty, a, Packing::Naive),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        plan_blocks(&[], a, Packing::Naive),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(dense_arrays(0, 3, a), Err(Error::ZeroSize { .. })));
    assert!(matches!(fold_perms(&[]), Err(Error::ZeroSize { .. })));
    assert!(matches!(
        fold_perms(&[Perm::identity(3), Perm::identity(4)]),
        Err(Error::ShapeMismatch { .. })
    ));
}
