//! M2-BERT checkpoints under the released module names (`bert.encoder.layer.{i}.attention.…`,
//! `….mlp.…`): fixtures written by numpy + safetensors (scripts/make_fixtures.py, with an
//! independent numpy forward of the block written from `monarch::guide::conventions`) load and
//! reproduce the numpy outputs in every on-disk dtype; save → load round trips are exact and
//! write the released names; missing, misshapen, non-finite or unsupported tensors are errors
//! naming them.

use crate::ckpt;
use crate::common;

use ckpt::*;
use common::assert_close;
use monarch::checkpoint::{Dtype, StateDict};
use monarch::mixer::M2BertConfig;
use monarch::mixer::{
    ConvMethod, FilterMlp, ImplicitFilter, M2BertEncoder, M2BertLayer, M2SequenceMixer,
};
use monarch::ndarray::{Array3, ArrayD, IxDyn};
use monarch::primitives::nn::Linear;
use monarch::RealScalar;
use serde_json::Value;

fn expected() -> Value {
    common::fixture("checkpoints/m2bert_expected.json")
}

fn arr3(v: &Value) -> Array3<f64> {
    let r: Vec<Vec<Vec<f64>>> = serde_json::from_value(v.clone()).unwrap();
    let (a, b, c) = (r.len(), r[0].len(), r[0][0].len());
    Array3::from_shape_vec((a, b, c), r.into_iter().flatten().flatten().collect()).unwrap()
}

fn variant_cfg() -> M2BertConfig {
    M2BertConfig {
        bidirectional: false,
        residual_long_conv: false,
        hyena_w_mod: 2.0,
        ..M2BertConfig::default()
    }
}

fn set_method<T: RealScalar>(enc: &mut M2BertEncoder<T>, m: ConvMethod)
where
    monarch::num_complex::Complex<T>: monarch::Scalar<Real = T>,
{
    enc.set_method(m);
}

fn check_main<T: RealScalar>(tol: f64)
where
    monarch::num_complex::Complex<T>: monarch::Scalar<Real = T>,
{
    let exp = expected();
    let main = &exp["main"];
    let u = arr3(&main["u"]).mapv(T::from_f64);
    for dtype in ["F32", "F64", "F16", "BF16"] {
        let file = ckpt_path(&format!("m2bert_{}.safetensors", dtype.to_lowercase()));
        let want = arr3(&main["outputs"][dtype]);
        for prefix in ["bert.encoder", "bert.encoder."] {
            let mut enc =
                M2BertEncoder::<T>::load_safetensors(&file, prefix, &M2BertConfig::default())
                    .unwrap();
            assert_eq!(enc.layers().len(), 2);
            let l0 = &enc.layers()[0];
            assert_eq!(l0.mixer().hidden(), 8);
            assert_eq!(l0.mlp().intermediate(), 16);
            assert_eq!(l0.mlp().gated().nblocks(), 4);
            assert_eq!(l0.mixer().filter().l_max(), 12);
            assert!(l0.mixer().filter().is_bidirectional() && l0.mixer().filter2().is_some());
            for m in [ConvMethod::MonarchDft, ConvMethod::Fft, ConvMethod::Direct] {
                set_method(&mut enc, m);
                let y = enc.forward(u.view()).unwrap().mapv(|v| v.to_f64_val());
                let ctx = format!("{dtype} {prefix} {m:?} ({})", std::any::type_name::<T>());
                assert_close(y.as_slice().unwrap(), want.as_slice().unwrap(), tol, &ctx);
            }
        }
        // One layer alone, at its own prefix.
        let layer =
            M2BertLayer::<T>::load_safetensors(&file, "bert.encoder.layer.0", &Default::default())
                .unwrap();
        let y = layer.forward(u.view()).unwrap().mapv(|v| v.to_f64_val());
        let want0 = arr3(&main["layer0"][dtype]);
        assert_close(
            y.as_slice().unwrap(),
            want0.as_slice().unwrap(),
            tol,
            &format!("layer 0, {dtype}"),
        );
    }
}

#[test]
fn m2bert_fixture_matches_numpy_f64() {
    check_main::<f64>(1e-10);
}

#[test]
fn m2bert_fixture_matches_numpy_f32() {
    check_main::<f32>(1e-4);
}

#[test]
fn m2bert_dtypes_really_differ() {
    // The per-dtype expected outputs differ (the rounding is visible), so a loader that ignored
    // the on-disk dtype could not pass the fixture test above.
    let exp = expected();
    let a = arr3(&exp["main"]["outputs"]["F32"]);
    let b = arr3(&exp["main"]["outputs"]["BF16"]);
    let d = (&a - &b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(d > 1e-3, "F32 vs BF16 outputs differ by only {d}");
}

#[test]
fn m2bert_variant_matches_numpy() {
    // Composer's "model." prefix, dense nn.Linear MLP weights, causal filters, no residual long
    // conv, hyena_w_mod = 2, one inner filter layer, only implicit_filter.1.freq stored.
    let exp = expected();
    let v = &exp["variant"];
    let file = ckpt_path("m2bert_variant_f32.safetensors");
    let u = arr3(&v["u"]);
    let want = arr3(&v["y"]);
    let enc = M2BertEncoder::<f64>::load_safetensors(&file, "model.bert.encoder", &variant_cfg())
        .unwrap();
    assert_eq!(enc.layers().len(), 1);
    let l0 = &enc.layers()[0];
    assert!(!l0.mixer().filter().is_bidirectional() && l0.mixer().filter2().is_none());
    assert_eq!(l0.mlp().gated().nblocks(), 1);
    assert_eq!(l0.mixer().filter().mlp_fwd().layers().len(), 3);
    let y = enc.forward(u.view()).unwrap();
    assert_close(
        y.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-10,
        "variant",
    );
    // hyena_w_mod is really used: the default (1) gives another output.
    let cfg1 = M2BertConfig {
        hyena_w_mod: 1.0,
        ..variant_cfg()
    };
    let e1 = M2BertEncoder::<f64>::load_safetensors(&file, "model.bert.encoder", &cfg1).unwrap();
    let y1 = e1.forward(u.view()).unwrap();
    let d = (&y1 - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(d > 1e-3, "hyena_w_mod ignored ({d})");
    // The released default configuration (bidirectional, residual) does not fit this file.
    let e = M2BertEncoder::<f64>::load_safetensors(
        &file,
        "model.bert.encoder",
        &M2BertConfig::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(
            "model.bert.encoder.layer.0.attention.filter_fn.implicit_filter_rev.0.weight"
        ),
        "{e}"
    );
}

fn main_sd() -> StateDict<f64> {
    StateDict::load(ckpt_path("m2bert_f64.safetensors")).unwrap()
}

/// `f` with modulation shift `shift` and, if given, reverse MLP `rev`.
fn filter_with(
    f: &ImplicitFilter<f64>,
    shift: f64,
    rev: Option<FilterMlp<f64>>,
) -> ImplicitFilter<f64> {
    ImplicitFilter::new(
        f.z().clone(),
        f.t().clone(),
        f.mlp_fwd().clone(),
        rev.or_else(|| f.mlp_rev().cloned()),
        f.freq().clone(),
        f.w_mod(),
        f.deltas().clone(),
        shift,
        f.bias().clone(),
    )
    .unwrap()
}

/// `m` with its filter replaced by `filter`.
fn mixer_with_filter(
    m: &M2SequenceMixer<f64>,
    filter: ImplicitFilter<f64>,
) -> M2SequenceMixer<f64> {
    M2SequenceMixer::new(
        m.in_linear().clone(),
        m.short_conv_weight().clone(),
        m.short_conv_bias().clone(),
        filter,
        m.filter2().cloned(),
        m.out_linear().clone(),
    )
    .unwrap()
}

/// `enc` with layer `i`'s sequence mixer replaced by `f(mixer)`.
fn replace_mixer(
    enc: &M2BertEncoder<f64>,
    i: usize,
    f: impl FnOnce(&M2SequenceMixer<f64>) -> M2SequenceMixer<f64>,
) -> M2BertEncoder<f64> {
    let mut f = Some(f);
    let layers = enc
        .layers()
        .iter()
        .enumerate()
        .map(|(j, l)| {
            if j == i {
                M2BertLayer::new((f.take().unwrap())(l.mixer()), l.mlp().clone()).unwrap()
            } else {
                l.clone()
            }
        })
        .collect();
    M2BertEncoder::new(layers).unwrap()
}

fn load_main(sd: &StateDict<f64>) -> monarch::Result<M2BertEncoder<f64>> {
    M2BertEncoder::from_state_dict(sd, "bert.encoder", &M2BertConfig::default())
}

#[test]
fn m2bert_save_writes_the_released_names_and_round_trips() {
    let sd = main_sd();
    let enc = load_main(&sd).unwrap();
    let mut out = StateDict::new();
    enc.to_state_dict(&mut out, "bert.encoder").unwrap();
    // Exactly the encoder's tensors of the file (every freq copy included), same shapes and bits.
    let file_names: Vec<&str> = sd
        .names()
        .filter(|n| n.starts_with("bert.encoder."))
        .collect();
    assert_eq!(out.names().collect::<Vec<_>>(), file_names);
    for n in file_names {
        assert_eq!(out.get(n).unwrap(), sd.get(n).unwrap(), "{n}");
    }
    // Through bytes in every dtype: F64 is exact; F32/F16/BF16 re-save bit-identically.
    let bytes = out.to_bytes(Dtype::F64).unwrap();
    let back = load_main(&StateDict::from_bytes(&bytes).unwrap()).unwrap();
    assert_eq!(back, enc);
    for (dtype, file) in [
        (Dtype::F32, "m2bert_f32.safetensors"),
        (Dtype::F16, "m2bert_f16.safetensors"),
        (Dtype::BF16, "m2bert_bf16.safetensors"),
    ] {
        let a = M2BertEncoder::<f32>::load_safetensors(
            ckpt_path(file),
            "bert.encoder",
            &M2BertConfig::default(),
        )
        .unwrap();
        let path = temp_path(&format!("m2bert_{dtype}"));
        a.save_safetensors(&path, "bert.encoder", dtype).unwrap();
        let b = M2BertEncoder::<f32>::load_safetensors(&path, "bert.encoder", &Default::default())
            .unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(a, b, "{dtype}");
    }
    // The variant (dense MLP, one freq copy) round-trips too; its MLP is saved as one block.
    let v = M2BertEncoder::<f64>::load_safetensors(
        ckpt_path("m2bert_variant_f32.safetensors"),
        "model.bert.encoder",
        &variant_cfg(),
    )
    .unwrap();
    let mut sv = StateDict::new();
    v.to_state_dict(&mut sv, "enc").unwrap();
    assert_eq!(
        sv.get("enc.layer.0.mlp.gated_layers.weight")
            .unwrap()
            .shape(),
        &[1, 20, 6]
    );
    assert!(sv.contains("enc.layer.0.attention.filter_fn.implicit_filter.3.freq"));
    let v2 = M2BertEncoder::from_state_dict(&sv, "enc", &variant_cfg()).unwrap();
    assert_eq!(v2, v);
}

/// Loading a copy of the main fixture changed by `f` fails with a message naming `name`.
#[track_caller]
fn expect_named_err(sd: &StateDict<f64>, name: &str, f: impl FnOnce(&mut StateDict<f64>)) {
    let mut bad = sd.clone();
    f(&mut bad);
    match load_main(&bad) {
        Ok(_) => panic!("loading succeeded after corrupting {name}"),
        Err(e) => assert!(
            e.to_string().contains(&format!("\"{name}\"")),
            "error for {name} does not name it: {e}"
        ),
    }
}

fn replace(sd: &mut StateDict<f64>, name: &str, shape: &[usize]) {
    sd.insert(name.to_string(), ArrayD::from_elem(IxDyn(shape), 0.1));
}

#[test]
fn m2bert_missing_misshapen_or_nonfinite_tensors_are_errors_naming_them() {
    let sd = main_sd();
    assert!(load_main(&sd).is_ok());
    let names: Vec<String> = sd
        .names()
        .filter(|n| n.starts_with("bert.encoder."))
        .map(String::from)
        .collect();
    assert_eq!(names.len(), 2 * 59);
    for name in &names {
        let shape = sd.get(name).unwrap().shape().to_vec();
        // One more dimension of size 1: wrong rank.
        let mut bigger = shape.clone();
        bigger.push(1);
        expect_named_err(&sd, name, |s| replace(s, name, &bigger));
        // A NaN.
        expect_named_err(&sd, name, |s| {
            let mut a = s.get(name).unwrap().clone();
            *a.iter_mut().next().unwrap() = f64::NAN;
            s.insert(name.clone(), a);
        });
        // Missing: every tensor but the shared freq copies, of which any one suffices.
        if !name.ends_with(".freq") {
            expect_named_err(&sd, name, |s| {
                s.remove(name);
            });
        }
    }
    let p = "bert.encoder.layer.1";
    let a = format!("{p}.attention");
    let f = format!("{a}.filter_fn2");
    // Any single freq copy loads; none is an error naming the first name; copies must agree.
    let freqs: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{f}.")) && n.ends_with(".freq"))
        .collect();
    assert_eq!(freqs.len(), 6);
    for keep in &freqs {
        let mut s = sd.clone();
        for n in &freqs {
            if n != keep {
                s.remove(n);
            }
        }
        assert_eq!(load_main(&s).unwrap(), load_main(&sd).unwrap());
    }
    expect_named_err(&sd, &format!("{f}.implicit_filter.1.freq"), |s| {
        for n in &freqs {
            s.remove(n);
        }
    });
    let f5 = format!("{f}.implicit_filter_rev.5.freq");
    expect_named_err(&sd, &f5, |s| {
        let mut a = s.get(&f5).unwrap().clone();
        a[[0, 2]] += 0.5;
        s.insert(f5.clone(), a);
    });
    // Wrong sizes.
    for (name, shape) in [
        (format!("{a}.in_linear.weight"), vec![24, 7]),
        (format!("{a}.in_linear.bias"), vec![23]),
        (format!("{a}.short_filter.weight"), vec![24, 1, 4]),
        (format!("{a}.short_filter.weight"), vec![24, 3]),
        (format!("{a}.short_filter.bias"), vec![8]),
        (format!("{a}.out_linear.weight"), vec![8, 9]),
        (format!("{a}.filter_fn.pos_emb.z"), vec![2, 12, 5]),
        (format!("{a}.filter_fn.pos_emb.t"), vec![1, 11, 1]),
        (format!("{a}.filter_fn.modulation.deltas"), vec![1, 1, 7]),
        (
            format!("{a}.filter_fn.implicit_filter.0.weight"),
            vec![6, 4],
        ),
        (
            format!("{a}.filter_fn.implicit_filter.2.weight"),
            vec![6, 5],
        ),
        (format!("{a}.filter_fn.implicit_filter.4.bias"), vec![5]),
        (
            format!("{a}.filter_fn.implicit_filter.6.weight"),
            vec![7, 6],
        ),
        (
            format!("{a}.filter_fn.implicit_filter_rev.6.weight"),
            vec![8, 5],
        ),
        (format!("{a}.filter_fn.implicit_filter.1.freq"), vec![1, 5]),
        (format!("{f}.bias"), vec![7]),
        (format!("{p}.mlp.wo.weight"), vec![4, 2, 3]),
        (format!("{p}.mlp.wo.bias"), vec![9]),
        (format!("{p}.mlp.layernorm.weight"), vec![7]),
        (format!("{p}.mlp.layernorm.bias"), vec![0]),
        (format!("{p}.mlp.gated_layers.weight"), vec![4, 6, 2]),
        (format!("{p}.mlp.gated_layers.weight"), vec![0, 8, 2]),
        // As if padded (4 blocks of 3 inputs = 12 > H = 8): no longer chains with wo.
        (format!("{p}.mlp.gated_layers.weight"), vec![4, 8, 3]),
    ] {
        expect_named_err(&sd, &name, |s| replace(s, &name, &shape));
    }
    // Tensors the released module (or this configuration) does not have.
    for (name, shape) in [
        (format!("{p}.mlp.gated_layers.bias"), vec![32]),
        (format!("{a}.filter_fn.implicit_filter.6.bias"), vec![8]),
        (format!("{a}.layernorm.weight"), vec![8]),
        (format!("{a}.k"), vec![8, 24]),
        (format!("{a}.fast_filter.z"), vec![2, 12, 5]),
    ] {
        expect_named_err(&sd, &name, |s| replace(s, &name, &shape));
    }
    // A linear past the last one: layer 6 is then an inner layer, and its (H, order) weight is
    // reported as not (order, order).
    let w8 = format!("{a}.filter_fn.implicit_filter.8.weight");
    expect_named_err(
        &sd,
        &format!("{a}.filter_fn.implicit_filter.6.weight"),
        |s| replace(s, &w8, &[8, 6]),
    );
    // The non-gated BertMLP (gated_layers output I, not 2I).
    let g = format!("{p}.mlp.gated_layers.weight");
    expect_named_err(&sd, &g, |s| replace(s, &g, &[4, 4, 2]));
    // A linear_mixer filter (one layer only).
    let w0 = format!("{a}.filter_fn.implicit_filter.0.weight");
    expect_named_err(&sd, &w0, |s| {
        for n in &names {
            if n.starts_with(&format!("{a}.filter_fn.implicit_filter.")) && !n.starts_with(&w0) {
                s.remove(n);
            }
        }
    });
    // Configuration disagreeing with the file.
    let no_res = M2BertConfig {
        residual_long_conv: false,
        ..Default::default()
    };
    let e = M2BertEncoder::from_state_dict(&sd, "bert.encoder", &no_res).unwrap_err();
    assert!(e.to_string().contains("filter_fn2"), "{e}");
    let causal = M2BertConfig {
        bidirectional: false,
        ..Default::default()
    };
    let e = M2BertEncoder::from_state_dict(&sd, "bert.encoder", &causal).unwrap_err();
    assert!(e.to_string().contains("implicit_filter_rev"), "{e}");
    for (n, name) in [(1, "bert.encoder.layer.1"), (3, "bert.encoder.layer.2")] {
        let cfg = M2BertConfig {
            num_hidden_layers: Some(n),
            ..Default::default()
        };
        let e = M2BertEncoder::from_state_dict(&sd, "bert.encoder", &cfg).unwrap_err();
        assert!(e.to_string().contains(name), "{e}");
    }
    // A gap in the layer numbers, and no layer at all.
    let mut gap = sd.clone();
    for n in names
        .iter()
        .filter(|n| n.starts_with("bert.encoder.layer.0."))
    {
        gap.remove(n);
    }
    let e = load_main(&gap).unwrap_err();
    assert!(e.to_string().contains("bert.encoder.layer.0"), "{e}");
    let e =
        M2BertEncoder::from_state_dict(&sd, "roberta.encoder", &Default::default()).unwrap_err();
    assert!(e.to_string().contains("roberta.encoder.layer.0"), "{e}");
    // Indices near usize::MAX in names (a layer number, a filter layer) are errors, not
    // overflows or huge allocations.
    let huge = format!(
        "bert.encoder.layer.{}.attention.in_linear.weight",
        usize::MAX
    );
    let mut s = sd.clone();
    replace(&mut s, &huge, &[24, 8]);
    let e = load_main(&s).unwrap_err();
    assert!(e.to_string().contains("bert.encoder.layer.2"), "{e}");
    for idx in [usize::MAX - 1, usize::MAX] {
        let name = format!("{a}.filter_fn.implicit_filter.{idx}.weight");
        let mut s = sd.clone();
        replace(&mut s, &name, &[1]);
        assert!(load_main(&s).is_err(), "{name}");
    }
    // Bad configuration values are errors, not panics.
    for cfg in [
        M2BertConfig {
            hyena_w_mod: f64::NAN,
            ..Default::default()
        },
        M2BertConfig {
            layer_norm_eps: -1.0,
            ..Default::default()
        },
    ] {
        assert!(M2BertEncoder::from_state_dict(&sd, "bert.encoder", &cfg).is_err());
    }
}

#[test]
fn m2bert_layers_without_released_names_refuse_to_save() {
    let main = load_main(&main_sd()).unwrap();
    let enc = replace_mixer(&main, 0, |m| {
        mixer_with_filter(m, filter_with(m.filter(), 0.5, None))
    });
    let e = enc.to_state_dict(&mut StateDict::new(), "e").unwrap_err();
    assert!(e.to_string().contains("shift"), "{e}");
    let enc = replace_mixer(&main, 1, |m| {
        M2SequenceMixer::new(
            m.in_linear().clone(),
            m.short_conv_weight().clone(),
            m.short_conv_bias().clone(),
            m.filter().clone(),
            m.filter2().cloned(),
            Linear::new(m.out_linear().weight.clone(), None).unwrap(),
        )
        .unwrap()
    });
    let e = enc.to_state_dict(&mut StateDict::new(), "e").unwrap_err();
    assert!(
        e.to_string()
            .contains("e.layer.1.attention.out_linear.bias"),
        "{e}"
    );
    // A reverse MLP shorter than the forward one has no released names. (Dropping its last
    // layer leaves an `order`-wide output, which the filter's constructor already refuses.)
    let f0 = main.layers()[0].mixer().filter();
    let mut rev = f0.mlp_rev().unwrap().layers().to_vec();
    let mut popped = rev.clone();
    popped.pop();
    assert!(FilterMlp::new(popped)
        .and_then(|m| ImplicitFilter::new(
            f0.z().clone(),
            f0.t().clone(),
            f0.mlp_fwd().clone(),
            Some(m),
            f0.freq().clone(),
            f0.w_mod(),
            f0.deltas().clone(),
            f0.shift(),
            f0.bias().clone(),
        ))
        .is_err());
    rev.remove(rev.len() - 2);
    let shorter = FilterMlp::new(rev).unwrap();
    let enc = replace_mixer(&main, 0, |m| {
        mixer_with_filter(
            m,
            filter_with(m.filter(), m.filter().shift(), Some(shorter)),
        )
    });
    assert!(enc.to_state_dict(&mut StateDict::new(), "e").is_err());
}

#[test]
fn m2bert_random_encoder_round_trips() {
    // A seeded encoder of this crate (not from a file) saves under the released names and
    // loads back equal, and gives the same output.
    let enc = M2BertEncoder::<f64>::random(2, 8, 16, 32, 4, 3).unwrap();
    let cfg = M2BertConfig {
        residual_long_conv: false,
        ..Default::default()
    };
    let mut sd = StateDict::new();
    enc.to_state_dict(&mut sd, "bert.encoder").unwrap();
    assert!(sd.contains("bert.encoder.layer.1.attention.short_filter.weight"));
    assert_eq!(
        sd.get("bert.encoder.layer.1.attention.short_filter.weight")
            .unwrap()
            .shape(),
        &[24, 1, 3]
    );
    let back = M2BertEncoder::from_state_dict(
        &StateDict::from_bytes(&sd.to_bytes(Dtype::F64).unwrap()).unwrap(),
        "bert.encoder",
        &cfg,
    )
    .unwrap();
    assert_eq!(back, enc);
    let u = Array3::from_shape_fn((1, 16, 8), |(_, t, c)| ((t * 3 + c) % 7) as f64 - 3.0);
    assert_eq!(
        back.forward(u.view()).unwrap(),
        enc.forward(u.view()).unwrap()
    );
}
