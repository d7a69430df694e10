//! Results are bitwise identical whatever the rayon pool size (1, 2 and 8 threads) and with
//! `Par::Seq`: every output is computed by one thread in a fixed order.

use monarch::ndarray::{Array2, Array3};
use monarch::primitives::random::normal_matrix;
use monarch::{Monarch, MonarchLinear, Par};

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn bits2(a: &Array2<f64>) -> Vec<u64> {
    a.iter().map(|v| v.to_bits()).collect()
}
fn bits2f(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}
fn bits3(a: &Array3<f64>) -> Vec<u64> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Runs `f` in pools of 1, 2 and 8 threads and asserts the three results are identical.
fn same_across_pools<R: PartialEq + std::fmt::Debug + Send>(what: &str, f: impl Fn() -> R + Sync) {
    let r1 = in_pool(1, &f);
    let r2 = in_pool(2, &f);
    let r8 = in_pool(8, &f);
    assert!(r1 == r2, "{what}: 1 vs 2 threads differ");
    assert!(r1 == r8, "{what}: 1 vs 8 threads differ");
}

#[test]
fn monarch_matmul_and_vjp() {
    // Large enough that `Par::should_split` splits (batch · params ≫ MIN_PARALLEL_WORK).
    let m = Monarch::<f64>::random_factors((16, 16, 16), (16, 24, 16), 3).unwrap();
    let x = normal_matrix::<f64>((300, 256), 1.0, 4);
    let g = normal_matrix::<f64>((300, 384), 1.0, 5);
    assert!(300 * m.num_params() > 4 * Par::MIN_PARALLEL_WORK);
    same_across_pools("Monarch::matmul", || bits2(&m.matmul(x.view()).unwrap()));
    same_across_pools("Monarch::vjp", || {
        let v = m.vjp(x.view(), g.view()).unwrap();
        (bits2(&v.x), bits3(&v.w1), bits3(&v.w2))
    });
    // Par::Seq in an 8-thread pool equals the split run.
    let seq = in_pool(8, || {
        let mut o = Array2::zeros((300, 384));
        m.matmul_into(x.view(), o.view_mut(), Par::Seq).unwrap();
        o
    });
    assert_eq!(
        bits2(&seq),
        in_pool(8, || bits2(&m.matmul(x.view()).unwrap()))
    );
}

#[test]
fn monarch_vjp_32_blocks() {
    // 32 block indices: the interleaved weight gradient splits over the two 16-lane chunks on
    // 2 threads and over output-feature windows on 1 and 8; the blocked one over block ranges.
    let m = Monarch::<f64>::random(1024, 32, 7).unwrap();
    let x = normal_matrix::<f64>((96, 1024), 1.0, 8);
    let g = normal_matrix::<f64>((96, 1024), 1.0, 9);
    assert!(96 * m.num_params() > 4 * Par::MIN_PARALLEL_WORK);
    same_across_pools("Monarch::vjp (32 blocks)", || {
        let v = m.vjp(x.view(), g.view()).unwrap();
        (bits2(&v.x), bits3(&v.w1), bits3(&v.w2))
    });
}

#[test]
fn monarch_vjp_many_row_parts() {
    // 2100 rows at n = 1024: the interleaved weight gradient is summed in 16 row parts (one per
    // 128 rows at this width, at most 16), more parts than threads in every pool here; f32 and
    // f64, one-pass and stage-by-stage shapes, with and without a transposed factor.
    let x = normal_matrix::<f64>((2100, 1024), 1.0, 10);
    let g = normal_matrix::<f64>((2100, 1024), 1.0, 11);
    for m in [
        Monarch::<f64>::random(1024, 32, 12).unwrap(),
        Monarch::<f64>::random(1024, 32, 13).unwrap().transpose(),
    ] {
        same_across_pools("Monarch::vjp (16 row parts)", || {
            let v = m.vjp(x.view(), g.view()).unwrap();
            (bits2(&v.x), bits3(&v.w1), bits3(&v.w2))
        });
        let (p_in, p_mid, p_out) = m.perms();
        let m32 = Monarch::<f32>::from_parts(
            p_in.clone(),
            monarch::BlockDiag::new(m.w1().mapv(|v| v as f32)).unwrap(),
            p_mid.clone(),
            monarch::BlockDiag::new(m.w2().mapv(|v| v as f32)).unwrap(),
            p_out.clone(),
        )
        .unwrap();
        let (x32, g32) = (x.mapv(|v| v as f32), g.mapv(|v| v as f32));
        same_across_pools("Monarch<f32>::vjp (16 row parts)", || {
            let v = m32.vjp(x32.view(), g32.view()).unwrap();
            let b3 = |a: &Array3<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits2f(&v.x), b3(&v.w1), b3(&v.w2))
        });
    }
}

#[test]
fn monarch_f32_matmul() {
    let m = Monarch::<f32>::random(256, 16, 9).unwrap();
    let x = normal_matrix::<f32>((257, 256), 1.0, 10);
    same_across_pools("Monarch<f32>::matmul", || {
        bits2f(&m.matmul(x.view()).unwrap())
    });
}

#[test]
fn monarch_project() {
    let a = normal_matrix::<f64>((48, 64), 1.0, 6);
    same_across_pools("Monarch::project", || {
        let p = Monarch::project_with_error(a.view(), 8, 4, 2).unwrap();
        (
            bits3(p.monarch.w1()),
            bits3(p.monarch.w2()),
            p.error.to_bits(),
        )
    });
}

#[test]
fn monarch_linear_forward_and_vjp() {
    let lin = MonarchLinear::<f64>::new(200, 330, 8, true, 12).unwrap();
    let x = normal_matrix::<f64>((150, 200), 1.0, 13);
    let g = normal_matrix::<f64>((150, 330), 1.0, 14);
    same_across_pools("MonarchLinear::forward", || {
        bits2(&lin.forward(x.view()).unwrap())
    });
    same_across_pools("MonarchLinear::vjp", || {
        let v = lin.vjp(x.view(), g.view()).unwrap();
        let b: Vec<u64> = v.bias.unwrap().iter().map(|v| v.to_bits()).collect();
        (bits2(&v.x), bits3(&v.w1), bits3(&v.w2), b)
    });
}
