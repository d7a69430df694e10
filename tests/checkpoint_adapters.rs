//! MoRe and GSOFT checkpoints: fixtures written by numpy + safetensors (scripts/make_fixtures.py,
//! with independent numpy forwards written from `monarch::guide::conventions`) load and
//! reproduce the numpy outputs; save → load round trips are bit-identical; wrong or missing
//! tensors are errors naming the tensor.

use crate::ckpt;
use crate::common;

use ckpt::*;
use common::assert_close;
use monarch::checkpoint::{Dtype, StateDict};
use monarch::gs::{GsoftLinear, OrthMap};
use monarch::more::{Adapter, MoReAdapter};
use monarch::ndarray::{Array1, Array2, ArrayD, IxDyn};
use monarch::RealScalar;

fn expected() -> serde_json::Value {
    common::fixture("checkpoints/adapters_expected.json")
}

fn map_of(s: &str) -> OrthMap {
    match s {
        "cayley" => OrthMap::Cayley,
        "exp" => OrthMap::Exp,
        other => panic!("unknown map {other}"),
    }
}

fn check_more<T: RealScalar>(tol: f64) {
    let exp = expected();
    let file = ckpt_path("more_f32.safetensors");
    for (prefix, l) in exp["more"].as_object().unwrap() {
        let bias = l["bias"].as_bool().unwrap();
        let x = rows(&l["x"]).mapv(T::from_f64);
        for p in [prefix.clone(), format!("{prefix}.")] {
            let ad = MoReAdapter::<T>::load_safetensors(&file, &p, bias, 0.0).unwrap();
            assert_eq!(
                ad.in_features(),
                l["in_features"].as_u64().unwrap() as usize
            );
            assert_eq!(
                ad.out_features(),
                l["out_features"].as_u64().unwrap() as usize
            );
            assert_eq!(ad.nblocks(), l["nblocks"].as_u64().unwrap() as usize);
            assert_eq!(ad.rank(), l["rank"].as_u64().unwrap() as usize);
            assert_eq!(ad.bias().is_some(), bias);
            let y = ad.forward(x.view()).unwrap().mapv(|v| v.to_f64_val());
            let want = rows(&l["y"]);
            let ctx = format!("MoRe {p} ({})", std::any::type_name::<T>());
            assert_close(y.as_slice().unwrap(), want.as_slice().unwrap(), tol, &ctx);
            // The adapter is really non-zero in the fixture: its output differs from the base.
            let base = rows(&l["y_base"]);
            let diff = (&y - &base).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(diff > 1e-2, "{ctx}: adapter output too small ({diff})");
        }
    }
}

fn check_gsoft<T: RealScalar>(tol: f64) {
    let exp = expected();
    let file = ckpt_path("gsoft_f32.safetensors");
    for (prefix, l) in exp["gsoft"].as_object().unwrap() {
        let bias = l["bias"].as_bool().unwrap();
        let map = map_of(l["map"].as_str().unwrap());
        let x = rows(&l["x"]).mapv(T::from_f64);
        for p in [prefix.clone(), format!("{prefix}.")] {
            let g = GsoftLinear::<T>::load_safetensors(&file, &p, bias, map).unwrap();
            assert_eq!(g.q().block(), l["block"].as_u64().unwrap() as usize);
            assert_eq!(g.q().map(), map);
            let y = g.forward(x.view()).unwrap().mapv(|v| v.to_f64_val());
            let want = rows(&l["y"]);
            let ctx = format!("GSOFT {p} ({})", std::any::type_name::<T>());
            assert_close(y.as_slice().unwrap(), want.as_slice().unwrap(), tol, &ctx);
            // The other map gives a different layer: the map really matters.
            let other = if map == OrthMap::Cayley {
                OrthMap::Exp
            } else {
                OrthMap::Cayley
            };
            let g2 = GsoftLinear::<T>::load_safetensors(&file, &p, bias, other).unwrap();
            let y2 = g2.forward(x.view()).unwrap().mapv(|v| v.to_f64_val());
            let diff = (&y2 - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(diff > 1e-3, "{ctx}: map ignored ({diff})");
        }
    }
}

#[test]
fn more_fixture_matches_numpy_f64() {
    check_more::<f64>(1e-12);
}

#[test]
fn more_fixture_matches_numpy_f32() {
    check_more::<f32>(2e-5);
}

#[test]
fn gsoft_fixture_matches_numpy_f64() {
    check_gsoft::<f64>(1e-11);
}

#[test]
fn gsoft_fixture_matches_numpy_f32() {
    check_gsoft::<f32>(5e-5);
}

fn more_f64(bias: bool) -> MoReAdapter<f64> {
    let w0 = monarch::primitives::random::normal_matrix::<f64>((14, 30), 0.3, 11);
    let b = bias.then(|| Array1::linspace(-1.0, 1.0, 14));
    let mut ad = MoReAdapter::new(w0, b, 4, 2, 0.1, 5).unwrap();
    let n = ad.blkdiag2().len();
    let vals = monarch::primitives::random::uniform_vec::<f64>(n, 0.7, 9);
    ad.blkdiag2_mut()
        .iter_mut()
        .zip(vals)
        .for_each(|(a, v)| *a = v);
    ad
}

fn gsoft_f64(bias: bool) -> GsoftLinear<f64> {
    let w0 = monarch::primitives::random::normal_matrix::<f64>((10, 12), 0.3, 12);
    let b = bias.then(|| Array1::linspace(-1.0, 1.0, 10));
    let mut g = GsoftLinear::new(w0, b, 4, 2, OrthMap::Cayley).unwrap();
    for (i, p) in g.q_mut().params_mut().iter_mut().enumerate() {
        *p = monarch::primitives::random::uniform_array3::<f64>(p.dim(), 0.5, 20 + i as u64);
    }
    g.scale_mut().assign(&Array1::linspace(0.5, 1.5, 10));
    g
}

#[test]
fn more_round_trip_is_bit_identical() {
    let x = monarch::primitives::random::normal_matrix::<f64>((4, 30), 1.0, 3);
    for bias in [true, false] {
        let ad = more_f64(bias);
        let mut sd = StateDict::new();
        ad.to_state_dict(&mut sd, "enc.layers.0.q").unwrap();
        let bytes = sd.to_bytes(Dtype::F64).unwrap();
        let back = StateDict::<f64>::from_bytes(&bytes).unwrap();
        let ld = MoReAdapter::from_state_dict(&back, "enc.layers.0.q", bias, 0.1).unwrap();
        assert_eq!(ld.weight(), ad.weight());
        assert_eq!(ld.bias(), ad.bias());
        assert_eq!(ld.blkdiag1(), ad.blkdiag1());
        assert_eq!(ld.blkdiag2(), ad.blkdiag2());
        assert_eq!(ld.forward(x.view()).unwrap(), ad.forward(x.view()).unwrap());
        // Saving the loaded adapter gives the same bytes again.
        let mut sd2 = StateDict::new();
        ld.to_state_dict(&mut sd2, "enc.layers.0.q").unwrap();
        assert_eq!(sd2.to_bytes(Dtype::F64).unwrap(), bytes);
    }
}

#[test]
fn fixture_round_trips_through_f32_files_bit_identically() {
    // Fixtures are F32 on disk: load as f32, save as F32, load again — identical tensors.
    let dir = std::env::temp_dir().join(format!("monarch_ckpt_adapters_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exp = expected();
    for (prefix, l) in exp["more"].as_object().unwrap() {
        let bias = l["bias"].as_bool().unwrap();
        let a = MoReAdapter::<f32>::load_safetensors(
            ckpt_path("more_f32.safetensors"),
            prefix,
            bias,
            0.0,
        )
        .unwrap();
        let path = dir.join("more.safetensors");
        a.save_safetensors(&path, prefix, Dtype::F32).unwrap();
        let b = MoReAdapter::<f32>::load_safetensors(&path, prefix, bias, 0.0).unwrap();
        assert_eq!(
            (a.weight(), a.bias(), a.blkdiag1(), a.blkdiag2()),
            (b.weight(), b.bias(), b.blkdiag1(), b.blkdiag2())
        );
    }
    for (prefix, l) in exp["gsoft"].as_object().unwrap() {
        let bias = l["bias"].as_bool().unwrap();
        let map = map_of(l["map"].as_str().unwrap());
        let a = GsoftLinear::<f32>::load_safetensors(
            ckpt_path("gsoft_f32.safetensors"),
            prefix,
            bias,
            map,
        )
        .unwrap();
        let path = dir.join("gsoft.safetensors");
        a.save_safetensors(&path, prefix, Dtype::F32).unwrap();
        let b = GsoftLinear::<f32>::load_safetensors(&path, prefix, bias, map).unwrap();
        assert_eq!(
            (a.weight(), a.bias(), a.q().params(), a.scale()),
            (b.weight(), b.bias(), b.q().params(), b.scale())
        );
        let x = rows(&l["x"]).mapv(|v| v as f32);
        assert_eq!(a.forward(x.view()).unwrap(), b.forward(x.view()).unwrap());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gsoft_round_trip_is_bit_identical() {
    let x = monarch::primitives::random::normal_matrix::<f64>((4, 12), 1.0, 4);
    for bias in [true, false] {
        let g = gsoft_f64(bias);
        let mut sd = StateDict::new();
        g.to_state_dict(&mut sd, "blocks.3.attn.qkv.").unwrap();
        let bytes = sd.to_bytes(Dtype::F64).unwrap();
        let back = StateDict::<f64>::from_bytes(&bytes).unwrap();
        let ld = GsoftLinear::from_state_dict(&back, "blocks.3.attn.qkv", bias, OrthMap::Cayley)
            .unwrap();
        assert_eq!(ld.weight(), g.weight());
        assert_eq!(ld.bias(), g.bias());
        assert_eq!(ld.q().params(), g.q().params());
        assert_eq!(ld.scale(), g.scale());
        assert_eq!(ld.forward(x.view()).unwrap(), g.forward(x.view()).unwrap());
    }
}

/// `f` applied to a copy of `sd` must make loading fail with a message naming `name`.
fn expect_named_err<T, F, L>(sd: &StateDict<f64>, name: &str, f: F, load: L)
where
    F: Fn(&mut StateDict<f64>),
    L: Fn(&StateDict<f64>) -> monarch::Result<T>,
{
    let mut bad = sd.clone();
    f(&mut bad);
    match load(&bad) {
        Ok(_) => panic!("loading succeeded after corrupting {name}"),
        Err(e) => assert!(
            e.to_string().contains(name),
            "error for {name} does not name it: {e}"
        ),
    }
}

fn reshaped(sd: &mut StateDict<f64>, name: &str, shape: &[usize]) {
    let n: usize = shape.iter().product();
    sd.insert(name.to_string(), ArrayD::from_elem(IxDyn(shape), 0.1));
    assert_eq!(sd.get(name).unwrap().len(), n);
}

#[test]
fn more_bad_checkpoints_are_errors_naming_the_tensor() {
    let mut sd = StateDict::new();
    more_f64(true).to_state_dict(&mut sd, "m").unwrap();
    let load = |s: &StateDict<f64>| MoReAdapter::from_state_dict(s, "m", true, 0.0);
    for name in ["m.weight", "m.bias", "m.blkdiag1", "m.blkdiag2"] {
        expect_named_err(
            &sd,
            name,
            |s| {
                s.remove(name);
            },
            load,
        );
        expect_named_err(
            &sd,
            name,
            |s| {
                let a = s.get(name).unwrap().clone();
                let mut v = a.clone();
                if let Some(e) = v.iter_mut().next() {
                    *e = f64::NAN;
                }
                s.insert(name.to_string(), v);
            },
            load,
        );
    }
    // Wrong shapes of each tensor.
    expect_named_err(
        &sd,
        "m.weight",
        |s| reshaped(s, "m.weight", &[14 * 30]),
        load,
    );
    expect_named_err(&sd, "m.bias", |s| reshaped(s, "m.bias", &[13]), load);
    expect_named_err(
        &sd,
        "m.blkdiag1",
        |s| reshaped(s, "m.blkdiag1", &[4, 2, 7]),
        load,
    );
    expect_named_err(
        &sd,
        "m.blkdiag1",
        |s| reshaped(s, "m.blkdiag1", &[4, 2]),
        load,
    );
    expect_named_err(
        &sd,
        "m.blkdiag1",
        |s| reshaped(s, "m.blkdiag1", &[0, 2, 8]),
        load,
    );
    expect_named_err(
        &sd,
        "m.blkdiag1",
        |s| reshaped(s, "m.blkdiag1", &[4, 9, 8]),
        load,
    );
    expect_named_err(
        &sd,
        "m.blkdiag2",
        |s| reshaped(s, "m.blkdiag2", &[4, 3, 2]),
        load,
    );
    // A weight of another size no longer fits the factors.
    expect_named_err(
        &sd,
        "m.blkdiag1",
        |s| reshaped(s, "m.weight", &[14, 40]),
        load,
    );
    // A bias the caller did not ask for is not silently dropped.
    let e = MoReAdapter::from_state_dict(&sd, "m", false, 0.0).unwrap_err();
    assert!(e.to_string().contains("m.bias"), "{e}");
    // A merged adapter refuses to save (ΔW would be applied twice on load).
    let mut ad = more_f64(true);
    ad.merge().unwrap();
    assert!(ad.to_state_dict(&mut StateDict::new(), "m").is_err());
    ad.unmerge().unwrap();
    assert!(ad.to_state_dict(&mut StateDict::new(), "m").is_ok());
}

#[test]
fn gsoft_bad_checkpoints_are_errors_naming_the_tensor() {
    let mut sd = StateDict::new();
    gsoft_f64(true).to_state_dict(&mut sd, "g").unwrap();
    let load = |s: &StateDict<f64>| GsoftLinear::from_state_dict(s, "g", true, OrthMap::Cayley);
    for name in [
        "g.weight",
        "g.bias",
        "g.gsoft_R",
        "g.gsoft_L",
        "g.gsoft_scale",
    ] {
        expect_named_err(
            &sd,
            name,
            |s| {
                s.remove(name);
            },
            load,
        );
        expect_named_err(
            &sd,
            name,
            |s| {
                let mut v = s.get(name).unwrap().clone();
                if let Some(e) = v.iter_mut().last() {
                    *e = f64::INFINITY;
                }
                s.insert(name.to_string(), v);
            },
            load,
        );
    }
    expect_named_err(
        &sd,
        "g.gsoft_R",
        |s| reshaped(s, "g.gsoft_R", &[3, 4, 5]),
        load,
    );
    expect_named_err(
        &sd,
        "g.gsoft_R",
        |s| reshaped(s, "g.gsoft_R", &[2, 4, 4]),
        load,
    );
    expect_named_err(
        &sd,
        "g.gsoft_R",
        |s| reshaped(s, "g.gsoft_R", &[0, 4, 4]),
        load,
    );
    expect_named_err(
        &sd,
        "g.gsoft_R",
        |s| reshaped(s, "g.gsoft_R", &[12, 4]),
        load,
    );
    expect_named_err(
        &sd,
        "g.gsoft_L",
        |s| reshaped(s, "g.gsoft_L", &[6, 2, 2]),
        load,
    );
    expect_named_err(
        &sd,
        "g.gsoft_scale",
        |s| reshaped(s, "g.gsoft_scale", &[12]),
        load,
    );
    expect_named_err(
        &sd,
        "g.weight",
        |s| reshaped(s, "g.weight", &[10, 12, 1]),
        load,
    );
    expect_named_err(&sd, "g.weight", |s| reshaped(s, "g.weight", &[0, 12]), load);
    let e = GsoftLinear::from_state_dict(&sd, "g", false, OrthMap::Cayley).unwrap_err();
    assert!(e.to_string().contains("g.bias"), "{e}");
    // Three factors have no reference names: saving them is an error, not a silent loss.
    let w0 = Array2::<f64>::zeros((4, 8));
    let g3 = GsoftLinear::new(w0, None, 2, 3, OrthMap::Cayley).unwrap();
    assert!(g3.to_state_dict(&mut StateDict::new(), "g").is_err());
}
