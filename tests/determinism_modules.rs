//! The modules' results are bitwise identical whatever the rayon pool size (1, 2 and 8
//! threads): exact attention, MonarchAttention forward and VJP, MoRe, GSOFT, and the circuits'
//! log-space products and HMM log-likelihoods.

use monarch::attention::{softmax_attention, ExactAttention, MonarchAttention, Padding};
use monarch::circuit::{log_matmul_blockdiag, Hmm, MonarchChain};
use monarch::gs::{GsoftLinear, OrthMap};
use monarch::more::{Adapter, MoReAdapter};
use monarch::ndarray::{Array2, Array4};
use monarch::primitives::random::{normal_matrix, uniform_array3};
use monarch::Par;

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Runs `f` in pools of 1, 2 and 8 threads and asserts the three results are identical.
fn same_across_pools<R: PartialEq + std::fmt::Debug + Send>(what: &str, f: impl Fn() -> R + Sync) {
    let r1 = in_pool(1, &f);
    let r2 = in_pool(2, &f);
    let r8 = in_pool(8, &f);
    assert!(r1 == r2, "{what}: 1 vs 2 threads differ");
    assert!(r1 == r8, "{what}: 1 vs 8 threads differ");
}

fn bits<'a>(a: impl IntoIterator<Item = &'a f64>) -> Vec<u64> {
    a.into_iter().map(|v| v.to_bits()).collect()
}

fn array4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
    let m = normal_matrix::<f64>((shape.0 * shape.1 * shape.2, shape.3), 1.0, seed);
    m.into_shape_with_order(shape).unwrap()
}

#[test]
fn attention_is_thread_count_independent() {
    // 2 × 4 = 8 heads and 100 tokens: several query tiles and heads to spread over threads.
    let (b, h, n, d) = (2, 4, 100, 16);
    let q = array4((b, h, n, d), 1);
    let k = array4((b, h, n, d), 2);
    let v = array4((b, h, n, d), 3);
    let g = array4((b, h, n, d), 4);
    let mut mask = Array2::from_elem((b, n), true);
    for t in (0..n).step_by(7) {
        mask[[1, t]] = false;
    }
    let m = Some(mask.view());
    same_across_pools("softmax_attention", || {
        bits(&softmax_attention(q.view(), k.view(), v.view(), m).unwrap())
    });
    same_across_pools("ExactAttention small tiles", || {
        let (o, lse) = ExactAttention::new()
            .tiles(16, 32)
            .forward_with_lse(q.view(), k.view(), v.view(), m)
            .unwrap();
        (bits(&o), bits(&lse))
    });
    for steps in [1, 2, 3] {
        let ma = MonarchAttention::new(10, steps);
        same_across_pools("MonarchAttention::forward", || {
            bits(&ma.forward(q.view(), k.view(), v.view(), m).unwrap())
        });
        same_across_pools("MonarchAttention::vjp", || {
            let gr = ma.vjp(q.view(), k.view(), v.view(), m, g.view()).unwrap();
            (bits(&gr.q), bits(&gr.k), bits(&gr.v))
        });
        // The sequential policy gives the same bits as the parallel one.
        let seq = ma
            .par(Par::Seq)
            .forward(q.view(), k.view(), v.view(), m)
            .unwrap();
        let par = in_pool(8, || ma.forward(q.view(), k.view(), v.view(), m).unwrap());
        assert_eq!(
            bits(&seq),
            bits(&par),
            "MonarchAttention Seq vs Rayon, T={steps}"
        );
    }
}

#[test]
fn monarch_attention_split_inside_one_head_is_thread_count_independent() {
    // One head: with 2 or 8 threads every phase splits its blocks over the pool. 300 tokens in
    // blocks of 17 (pre-padded to 306) with masked keys, so padding and masks meet the split.
    let (n, d) = (300, 16);
    let q = array4((1, 1, n, d), 5);
    let k = array4((1, 1, n, d), 6);
    let v = array4((1, 1, n, 8), 7);
    let mut mask = Array2::from_elem((1, n), true);
    for t in (3..n).step_by(11) {
        mask[[0, t]] = false;
    }
    let m = Some(mask.view());
    for steps in [1, 2, 3] {
        let ma = MonarchAttention::new(17, steps).padding(Padding::Pre);
        let run = |ma: MonarchAttention| {
            let (o, obj) = ma
                .forward_with_objective(q.view(), k.view(), v.view(), m)
                .unwrap();
            (bits(&o), bits(&obj))
        };
        same_across_pools("MonarchAttention one head", || run(ma));
        let par = in_pool(8, || run(ma));
        assert_eq!(
            run(ma.par(Par::Seq)),
            par,
            "one head, Seq vs 8 threads, T={steps}"
        );
    }
}

#[test]
fn more_and_gsoft_are_thread_count_independent() {
    let w0 = normal_matrix::<f64>((384, 256), 0.1, 5);
    let x = normal_matrix::<f64>((300, 256), 1.0, 6);
    let g = normal_matrix::<f64>((300, 384), 1.0, 7);
    let mut ad = MoReAdapter::new(w0.clone(), None, 16, 4, 0.0, 8).unwrap();
    let w2 = uniform_array3::<f64>(ad.blkdiag2().dim(), 0.5, 9);
    ad.blkdiag2_mut().assign(&w2);
    same_across_pools("MoReAdapter::forward", || {
        bits(&ad.forward(x.view()).unwrap())
    });
    same_across_pools("MoReAdapter::vjp", || {
        let gr = ad.vjp(x.view(), g.view()).unwrap();
        (bits(&gr.x), bits(&gr.blkdiag1), bits(&gr.blkdiag2))
    });
    let mut gs = GsoftLinear::new(w0, None, 16, 2, OrthMap::Cayley).unwrap();
    for (i, p) in gs.q_mut().params_mut().iter_mut().enumerate() {
        *p = uniform_array3::<f64>(p.dim(), 0.5, 10 + i as u64);
    }
    same_across_pools("GsoftLinear::forward", || {
        bits(&gs.forward(x.view()).unwrap())
    });
    same_across_pools("GsoftLinear::vjp", || {
        let gr = gs.vjp(x.view(), g.view()).unwrap();
        let p: Vec<u64> = gr.params.iter().flat_map(bits).collect();
        (bits(&gr.x), p, bits(&gr.scale))
    });
}

#[test]
fn circuits_are_thread_count_independent() {
    let chain =
        MonarchChain::<f64>::random_stochastic(&[(16, 16, 16), (16, 16, 16)], 1.0, 3).unwrap();
    let x = normal_matrix::<f64>((200, 256), 2.0, 4);
    same_across_pools("MonarchChain::log_matmul", || {
        bits(&chain.log_matmul(x.view(), Par::Rayon).unwrap())
    });
    let w = uniform_array3::<f64>((16, 16, 16), 1.0, 5).mapv(f64::abs);
    same_across_pools("log_matmul_blockdiag", || {
        bits(&log_matmul_blockdiag(w.view(), x.view(), Par::Rayon).unwrap())
    });
    let h = 256;
    let vocab = 8;
    let pi = monarch::ndarray::Array1::from_elem(h, 1.0 / h as f64);
    let mut emit = normal_matrix::<f64>((h, vocab), 1.0, 6).mapv(f64::exp);
    for mut r in emit.rows_mut() {
        let s = r.sum();
        r /= s;
    }
    let hmm = Hmm::new(pi, chain, emit).unwrap();
    let obs = hmm.sample(64, 20, 7).unwrap();
    same_across_pools("Hmm::log_likelihood", || {
        bits(&hmm.log_likelihood(obs.view()).unwrap())
    });
    same_across_pools("Hmm::posteriors", || {
        bits(&hmm.posteriors(obs.view()).unwrap())
    });
}
