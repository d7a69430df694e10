//! Maps LLaMA-7B-sized projections, converted to Monarch (`MonarchLinear` layout), onto
//! 256×256 and 512×512 compute-in-memory arrays: naive (one block per array), diagonal and grid
//! packing, next to the dense layer tiled onto the same arrays.
//!
//! Run: `cargo run --release --example cim_plan`

use monarch::cim::{dense_arrays, plan_layer, CimArray, Packing, StructuredLayer};
use monarch::MonarchLinear;

fn main() -> Result<(), monarch::Error> {
    println!("# Monarch projections (MonarchLinear layout) on CIM arrays");
    println!();
    println!(
        "| layer (in→out) | nb | blocks (w1; w2) out×in | params | dense params | reduction | array | packing | arrays | dense arrays | fewer arrays | utilisation | rounds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (inf, outf) in [(4096usize, 4096usize), (4096, 11008)] {
        for nb in [8usize, 16, 32, 64] {
            // f32 storage here; the shapes (what the planner needs) do not depend on the type.
            let layer = MonarchLinear::<f32>::new(inf, outf, nb, false, 0)?;
            let cost = layer.cost();
            let f = layer.block_factors();
            let shapes = format!(
                "{}×{}×{}; {}×{}×{}",
                f[0].nblocks, f[0].rows, f[0].cols, f[1].nblocks, f[1].rows, f[1].cols
            );
            for size in [256usize, 512] {
                let array = CimArray::new(size, size)?;
                let dense = dense_arrays(inf, outf, array)?;
                for packing in [Packing::Naive, Packing::Diagonal, Packing::Grid] {
                    match plan_layer(&layer, array, packing) {
                        Ok(p) => println!(
                            "| {inf}→{outf} | {nb} | {shapes} | {:.2} M | {:.2} M | {:.1}× | {size}² | {packing:?} | {} | {dense} | {:.1}% | {:.1}% | {} |",
                            cost.params as f64 / 1e6,
                            cost.dense_params as f64 / 1e6,
                            cost.param_reduction(),
                            p.arrays,
                            100.0 * (1.0 - p.arrays as f64 / dense as f64),
                            100.0 * p.utilisation,
                            p.rounds
                        ),
                        Err(e) => {
                            // The same error for every packing: report it once.
                            println!(
                                "| {inf}→{outf} | {nb} | {shapes} | {:.2} M | {:.2} M | {:.1}× | {size}² | any | does not fit: {e} | {dense} | | | |",
                                cost.params as f64 / 1e6,
                                cost.dense_params as f64 / 1e6,
                                cost.param_reduction(),
                            );
                            break;
                        }
                    }
                }
            }
        }
    }
    println!();
    println!(
        "rounds = sequential array activations per input row (factors in sequence; grid-packed"
    );
    println!(
        "blocks that share word or bit lines run in separate rounds); dense tiles need 1 round."
    );
    Ok(())
}
