//! "Never panics" for the modules: attention, MoRe/LoRA, Group-and-Shuffle, circuits and the
//! CIM planner, fed arbitrary shapes (zero sizes included), block sizes, masks, ranks and
//! NaN/Inf values: every call returns `Ok` or an `Error`. A panic becomes a test failure that
//! prints the inputs. `PROPTEST_CASES` sets the case count.

use monarch::attention::{softmax_attention, ExactAttention, MonarchAttention, Padding};
use monarch::cim::{
    dense_arrays, fold_perms, plan_blocks, plan_factor, plan_layer, BlockShape, CimArray, Packing,
    StructuredLayer,
};
use monarch::circuit::{log_matmul_blockdiag, log_matmul_dense, softmax_blocks, Hmm, MonarchChain};
use monarch::gs::{
    butterfly_factors, min_dense_factors, DoubleGsoft, GsOrthConv2d, GsoftLinear, OrthGs, OrthMap,
};
use monarch::more::{Adapter, LoraAdapter, MoReAdapter};
use monarch::ndarray::{Array, Array1, Array2, Array3, Array4, Dimension};
use monarch::{Monarch, Par, Perm};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

/// Runs `f`; a panic fails the test with `what` (the inputs) in the message.
fn no_panic<R>(what: impl std::fmt::Debug, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("panic `{msg}` on inputs {what:?}")
        }
    }
}

/// Mostly ordinary values, sometimes NaN/±∞/0/huge, so that both the deep code paths and the
/// input checks are reached.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        16 => -3.0..3.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => Just(1e300),
    ]
}

fn scalar_opt() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        4 => Just(None),
        2 => (0.01..3.0f64).prop_map(Some),
        1 => Just(Some(0.0)),
        1 => Just(Some(f64::NAN)),
        1 => Just(Some(f64::INFINITY)),
        1 => Just(Some(-1.0)),
        1 => Just(Some(1e300)),
    ]
}

/// With `on`, non-finite and huge entries become 0.5, so that half of the cases get past the
/// input checks into the numerical code.
fn fin<D: Dimension>(a: &Array<f64, D>, on: bool) -> Array<f64, D> {
    a.mapv(|v| {
        if !on || (v.is_finite() && v.abs() < 1e10) {
            v
        } else {
            0.5
        }
    })
}

fn array2(d: (usize, usize)) -> impl Strategy<Value = Array2<f64>> {
    proptest::collection::vec(value(), d.0 * d.1)
        .prop_map(move |v| Array2::from_shape_vec(d, v).unwrap())
}

fn any_array2(max: usize) -> impl Strategy<Value = Array2<f64>> {
    (0..=max, 0..=max).prop_flat_map(array2)
}

fn array3(d: (usize, usize, usize)) -> impl Strategy<Value = Array3<f64>> {
    proptest::collection::vec(value(), d.0 * d.1 * d.2)
        .prop_map(move |v| Array3::from_shape_vec(d, v).unwrap())
}

fn any_array3(max: usize) -> impl Strategy<Value = Array3<f64>> {
    (0..=max, 0..=max, 0..=max).prop_flat_map(array3)
}

fn array4(d: (usize, usize, usize, usize)) -> impl Strategy<Value = Array4<f64>> {
    proptest::collection::vec(value(), d.0 * d.1 * d.2 * d.3)
        .prop_map(move |v| Array4::from_shape_vec(d, v).unwrap())
}

fn array1(len: usize) -> impl Strategy<Value = Array1<f64>> {
    proptest::collection::vec(value(), len).prop_map(Array1::from)
}

fn any_array1(max: usize) -> impl Strategy<Value = Array1<f64>> {
    (0..=max).prop_flat_map(array1)
}

fn mask(d: (usize, usize)) -> impl Strategy<Value = Array2<bool>> {
    proptest::collection::vec(prop_oneof![3 => Just(true), 1 => Just(false)], d.0 * d.1)
        .prop_map(move |v| Array2::from_shape_vec(d, v).unwrap())
}

/// q, k, v, an optional mask and grad_out: usually consistent shapes, sometimes not.
#[derive(Debug, Clone)]
struct AttnCase {
    q: Array4<f64>,
    k: Array4<f64>,
    v: Array4<f64>,
    mask: Option<Array2<bool>>,
    g: Array4<f64>,
}

fn attn_case() -> impl Strategy<Value = AttnCase> {
    (
        0..=2usize,
        0..=2usize,
        0..=11usize,
        0..=3usize,
        0..=3usize,
        prop_oneof![6 => Just(0usize), 1 => 1..=2usize],
        0..=3usize,
    )
        .prop_flat_map(|(b, h, n, d, dv, skew, mask_kind)| {
            // `skew` perturbs one size to reach the shape checks.
            let nk = if skew == 1 { n + 1 } else { n };
            let dk = if skew == 2 { d + 1 } else { d };
            let m = match mask_kind {
                0 => Just(None).boxed(),
                1 => mask((b, n + usize::from(skew == 2))).prop_map(Some).boxed(),
                _ => mask((b, n)).prop_map(Some).boxed(),
            };
            (
                array4((b, h, n, d)),
                array4((b, h, nk, dk)),
                array4((b, h, nk, dv)),
                m,
                array4((b, h, n, dv)),
            )
                .prop_map(|(q, k, v, mask, g)| AttnCase { q, k, v, mask, g })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn attention_never_panics(
        c in attn_case(),
        block in 0..=6usize,
        steps in 0..=3usize,
        pre in any::<bool>(),
        scale in scalar_opt(),
        tiles in (0..=4usize, 0..=4usize),
        seq in any::<bool>(),
        clean in any::<bool>(),
    ) {
        let c = AttnCase {
            q: fin(&c.q, clean),
            k: fin(&c.k, clean),
            v: fin(&c.v, clean),
            mask: c.mask,
            g: fin(&c.g, clean),
        };
        let what = (&c, block, steps, pre, scale, tiles, seq);
        no_panic(what, || {
            let par = if seq { Par::Seq } else { Par::Rayon };
            let m = c.mask.as_ref().map(|m| m.view());
            let _ = softmax_attention(c.q.view(), c.k.view(), c.v.view(), m);
            let mut ex = ExactAttention::new().tiles(tiles.0, tiles.1).par(par);
            let mut ma = MonarchAttention::new(block, steps)
                .padding(if pre { Padding::Pre } else { Padding::Post })
                .par(par);
            if let Some(s) = scale {
                ex = ex.scale(s);
                ma = ma.scale(s);
            }
            let _ = ex.forward(c.q.view(), c.k.view(), c.v.view(), m);
            let _ = ex.forward_with_lse(c.q.view(), c.k.view(), c.v.view(), m);
            let _ = ma.forward(c.q.view(), c.k.view(), c.v.view(), m);
            let _ = ma.forward_with_objective(c.q.view(), c.k.view(), c.v.view(), m);
            let _ = ma.attention_matrix(c.q.view(), c.k.view(), m);
            let _ = ma.vjp(c.q.view(), c.k.view(), c.v.view(), m, c.g.view());
        });
    }

    #[test]
    fn more_and_lora_never_panic(
        w in any_array2(7),
        bias in prop_oneof![Just(None), any_array1(8).prop_map(Some)],
        nblocks in 0..=8usize,
        rank in 0..=5usize,
        dropout in prop_oneof![Just(0.0), Just(0.3), Just(1.0), Just(-0.1), Just(f64::NAN)],
        x in any_array2(9),
        g in any_array2(9),
        f1 in any_array3(4),
        f2 in any_array3(4),
        la in any_array2(5),
        lb in any_array2(7),
        seed in any::<u64>(),
        clean in any::<bool>(),
    ) {
        let (w, x, g) = (fin(&w, clean), fin(&x, clean), fin(&g, clean));
        let bias = bias.map(|b| fin(&b, clean));
        let (f1, f2, la, lb) = (fin(&f1, clean), fin(&f2, clean), fin(&la, clean), fin(&lb, clean));
        let what = (&w, &bias, nblocks, rank, dropout, &x, &g, &f1, &f2, &la, &lb, seed);
        no_panic(what, || {
            let (out, inp) = w.dim();
            let _ = MoReAdapter::<f64>::shapes(inp, out, nblocks, rank);
            let _ = MoReAdapter::<f64>::param_count(inp, out, nblocks, rank);
            let _ = MoReAdapter::from_factors(w.clone(), bias.clone(), f1.clone(), f2.clone(), dropout);
            if let Ok(mut ad) = MoReAdapter::new(w.clone(), bias.clone(), nblocks, rank, dropout, seed) {
                ad.blkdiag2_mut().fill(0.25);
                exercise(&mut ad, &x, seed);
                let _ = ad.vjp(x.view(), g.view());
                let _ = ad.vjp_train(x.view(), g.view(), seed);
                let _ = ad.adapter_output(x.view());
                if ad.merge().is_ok() {
                    let _ = ad.vjp(x.view(), g.view());
                    let _ = ad.vjp_train(x.view(), g.view(), seed);
                }
            }
            let _ = LoraAdapter::from_factors(w.clone(), bias.clone(), la.clone(), lb.clone(), dropout);
            if let Ok(ad) = LoraAdapter::new(w.clone(), bias.clone(), rank, dropout, seed) {
                let _ = ad.clone().with_scaling(f64::NAN);
                let _ = ad.clone().with_scaling(2.0);
                let mut ad = ad;
                ad.lora_b_mut().fill(0.25);
                exercise(&mut ad, &x, seed);
                let _ = ad.vjp(x.view(), g.view());
                let _ = ad.vjp_train(x.view(), g.view(), seed);
            }
        });
    }

    #[test]
    fn gs_never_panics(
        w in any_array2(8),
        bias in prop_oneof![Just(None), any_array1(8).prop_map(Some)],
        block in 0..=5usize,
        block_out in 0..=5usize,
        nfactors in 0..=3usize,
        exp_map in any::<bool>(),
        fill in value(),
        params in proptest::collection::vec(any_array3(3), 0..=3),
        x in any_array2(9),
        g in any_array2(9),
        img in (0..=2usize, 0..=6usize, 0..=3usize, 0..=3usize).prop_flat_map(array4),
        conv in (0..=6usize, 0..=3usize, 0..=3usize, 0..=2usize),
        clean in any::<bool>(),
    ) {
        let (w, x, g, img) = (fin(&w, clean), fin(&x, clean), fin(&g, clean), fin(&img, clean));
        let bias = bias.map(|b| fin(&b, clean));
        let params: Vec<Array3<f64>> = params.iter().map(|p| fin(p, clean)).collect();
        let what = (&w, &bias, block, block_out, nfactors, exp_map, fill, &params, &x, &g, &img, conv);
        no_panic(what, || {
            let map = if exp_map { OrthMap::Exp } else { OrthMap::Cayley };
            let _ = min_dense_factors(block, nfactors);
            let _ = butterfly_factors(nfactors);
            let _ = butterfly_factors(usize::MAX);
            let _ = min_dense_factors(usize::MAX, usize::MAX);
            if let Ok(q) = OrthGs::from_params(params.clone(), map) {
                let _ = q.forward(x.view());
                let _ = q.to_dense();
                let _ = q.orthogonality_error();
                let _ = q.vjp(x.view(), g.view());
            }
            if let Ok(mut gl) = GsoftLinear::new(w.clone(), bias.clone(), block, nfactors, map) {
                for p in gl.q_mut().params_mut() {
                    p.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 3 == 0 { fill } else { 0.3 });
                }
                let _ = gl.forward(x.view());
                let _ = gl.vjp(x.view(), g.view());
                let _ = gl.merged_weight();
                if let Ok(q) = OrthGs::from_params(params.clone(), map) {
                    let _ = gl.clone().with_q(q);
                }
                let _ = gl.merge_and_reset();
                let _ = gl.forward(x.view());
            }
            if let Ok(mut dg) = DoubleGsoft::new(w.clone(), bias.clone(), block, block_out, nfactors, map) {
                dg.scale_mut().fill(fill);
                let _ = dg.forward(x.view());
                let _ = dg.vjp(x.view(), g.view());
                let _ = dg.merged_weight();
                let _ = dg.merge_and_reset();
            }
            let (ch, groups, ksize, terms) = conv;
            if let Ok(c) = GsOrthConv2d::<f64>::identity(ch, groups, ksize, terms) {
                let _ = c.forward(img.view());
                let _ = c.grouped_exp_conv(img.view());
                let _ = c.pointwise_blocks();
            }
        });
    }

    #[test]
    fn circuits_never_panic(
        ws in proptest::collection::vec(any_array3(3), 0..=3),
        x in any_array2(10),
        bd in any_array3(3),
        dense in any_array2(5),
        pi in any_array1(6),
        emit in any_array2(6),
        obs in (0..=3usize, 0..=5usize).prop_flat_map(|(s, t)| {
            proptest::collection::vec(0..=7usize, s * t)
                .prop_map(move |v| Array2::from_shape_vec((s, t), v).unwrap())
        }),
        shapes in proptest::collection::vec((0..=3usize, 0..=3usize, 0..=3usize), 0..=3),
        spread in prop_oneof![Just(1.0), Just(f64::NAN), Just(0.0), Just(50.0)],
        seed in any::<u64>(),
        sample in (0..=3usize, 0..=4usize),
        clean in any::<bool>(),
    ) {
        let ws: Vec<Array3<f64>> = ws.iter().map(|a| fin(a, clean)).collect();
        let (x, bd, dense) = (fin(&x, clean), fin(&bd, clean), fin(&dense, clean));
        let (pi, emit) = (fin(&pi, clean), fin(&emit, clean));
        let what = (&ws, &x, &bd, &dense, &pi, &emit, &obs, &shapes, spread, seed, sample);
        no_panic(what, || {
            let par = if seed % 2 == 0 { Par::Seq } else { Par::Rayon };
            let _ = log_matmul_blockdiag(bd.view(), x.view(), par);
            let abs = bd.mapv(f64::abs);
            let _ = log_matmul_blockdiag(abs.view(), x.view(), par);
            let _ = log_matmul_dense(dense.mapv(f64::abs).view(), x.view(), par);
            let _ = softmax_blocks(bd.view());
            if let Ok(c) = MonarchChain::from_factors(ws.clone()) {
                let _ = c.matmul(x.view());
                let _ = c.log_matmul(x.view(), par);
                let _ = c.transpose().matmul(x.view());
                let _ = c.cost();
                let _ = c.block_factors();
                let _ = fold_perms(c.perms());
            }
            let chains = [
                MonarchChain::<f64>::stochastic_from_logits(&ws),
                MonarchChain::<f64>::random_stochastic(&shapes, spread, seed),
            ];
            for chain in chains.into_iter().flatten() {
                let _ = chain.log_matmul(x.view(), par);
                // Emissions normalised where possible, so Hmm::new gets past its checks.
                let mut e = emit.mapv(f64::abs);
                for mut r in e.rows_mut() {
                    let s = r.sum();
                    if s > 0.0 && s.is_finite() { r /= s; }
                }
                let mut p = pi.mapv(f64::abs);
                let s = p.sum();
                if s > 0.0 && s.is_finite() { p /= s; }
                for (pp, ee) in [(pi.clone(), emit.clone()), (p, e)] {
                    if let Ok(mut hmm) = Hmm::new(pp, chain.clone(), ee) {
                        let _ = hmm.log_likelihood(obs.view());
                        let _ = hmm.posteriors(obs.view());
                        let _ = hmm.expected_flows(obs.view());
                        let _ = hmm.sample(sample.0, sample.1, seed);
                        let _ = hmm.product(&hmm.clone());
                        let _ = hmm.em_step(obs.view());
                        let _ = hmm.log_likelihood(obs.view());
                    }
                }
            }
            let _ = Hmm::dense(pi.clone(), dense.clone(), emit.clone());
        });
    }

    #[test]
    fn cim_planner_never_panics(
        blocks in proptest::collection::vec(
            (prop_oneof![0..=9usize, Just(usize::MAX)], prop_oneof![0..=9usize, Just(usize::MAX / 2)], 0..=9usize),
            0..=4,
        ),
        array in (prop_oneof![0..=9usize, Just(usize::MAX)], 0..=9usize),
        sizes in (prop_oneof![0..=40usize, Just(usize::MAX)], 0..=40usize),
        n in 0..=40usize,
        nb in 0..=8usize,
        perms in proptest::collection::vec((0..=5usize, any::<u64>()), 0..=3),
    ) {
        let what = (&blocks, array, sizes, n, nb, &perms);
        no_panic(what, || {
            let shapes: Vec<BlockShape> = blocks
                .iter()
                .map(|&(nblocks, rows, cols)| BlockShape { nblocks, rows, cols })
                .collect();
            let _ = CimArray::new(array.0, array.1);
            for a in [CimArray::new(array.0.max(1), array.1.max(1)), CimArray::new(4, 4)].into_iter().flatten() {
                for packing in [Packing::Naive, Packing::Diagonal, Packing::Grid] {
                    for s in &shapes {
                        let _ = plan_factor(*s, a, packing);
                        let _ = s.params();
                    }
                    let _ = plan_blocks(&shapes, a, packing);
                    if let Ok(m) = Monarch::<f32>::random(n, nb, 1) {
                        let _ = plan_layer(&m, a, packing);
                        let c = m.cost();
                        let _ = (c.param_reduction(), c.mac_reduction(), c.byte_reduction(), c.density());
                    }
                }
                let _ = dense_arrays(sizes.0, sizes.1, a);
            }
            let ps: Vec<Perm> = perms.iter().map(|&(len, s)| Perm::random(len, s)).collect();
            let _ = fold_perms(&ps);
        });
    }
}

/// Forward, training forward, VJPs, merge/unmerge of any adapter.
fn exercise<A: Adapter<f64>>(ad: &mut A, x: &Array2<f64>, seed: u64) {
    let _ = ad.delta_weight();
    let _ = ad.forward(x.view());
    let _ = ad.forward_train(x.view(), seed);
    let _ = (ad.num_params(), ad.max_rank());
    if ad.merge().is_ok() {
        let _ = ad.forward(x.view());
        let _ = ad.merge();
        let _ = ad.unmerge();
    }
    let _ = ad.unmerge();
}
