//! Arbitrary bytes as a safetensors file: loading never panics; whatever loads re-saves and
//! re-loads to the same tensors; layers built from it (MonarchLinear, Monarch, and the M2-BERT
//! encoder and layer under the released names) either load or return an error, and whatever
//! loads runs forward with the promised shape (or returns an error) and saves again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monarch::checkpoint::{Dtype, M2BertConfig, StateDict};
use monarch::mixer::{M2BertEncoder, M2BertLayer};
use monarch::ndarray::Array3;
use monarch::{Monarch, MonarchLinear};

/// Runs a loaded M2-BERT stack on a small input: Ok with the input's shape, or an Err.
fn run_m2(forward: impl Fn(&Array3<f32>) -> monarch::Result<Array3<f32>>, h: usize, l_max: usize) {
    let l = l_max.clamp(1, 6);
    let u = Array3::from_shape_fn((1, l, h), |(_, t, c)| ((t + 2 * c) % 5) as f32 - 2.0);
    if let Ok(y) = forward(&u) {
        assert_eq!(y.dim(), u.dim());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = StateDict::<f32>::from_bytes(data) else {
        return;
    };
    // Round trip: same names, shapes and (non-NaN) values.
    let bytes = sd.to_bytes(Dtype::F32).expect("a loaded state dict saves");
    let back = StateDict::<f32>::from_bytes(&bytes).expect("a saved state dict loads");
    assert_eq!(
        sd.names().collect::<Vec<_>>(),
        back.names().collect::<Vec<_>>()
    );
    for name in sd.names() {
        let (a, b) = (sd.get(name).unwrap(), back.get(name).unwrap());
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(x.is_nan() && y.is_nan() || x.to_bits() == y.to_bits());
        }
    }
    // Lossy conversions: F16 is Ok exactly when every finite value stays finite and every
    // non-zero value stays non-zero (|v| < 65520, |v| > 2^-25: IEEE binary16 rounding), the
    // explicit lossy option always.
    let in_f16 = sd.names().all(|n| {
        sd.get(n).unwrap().iter().all(|&v| {
            let a = (v as f64).abs();
            !v.is_finite() || v == 0.0 || (a < 65520.0 && a > 2f64.powi(-25))
        })
    });
    assert_eq!(sd.to_bytes(Dtype::F16).is_ok(), in_f16);
    assert!(sd.to_bytes_lossy(Dtype::F16).is_ok());
    // One NaN policy: the typed getters every loader uses refuse NaN/±inf.
    for name in sd.names() {
        let a = sd.get(name).unwrap();
        let finite = a.iter().all(|v| v.is_finite());
        assert_eq!(sd.array(name, a.shape()).is_ok(), finite, "{name}");
    }
    // M2-BERT: each encoder prefix (whatever precedes ".layer.") and each of its layers, once.
    let mut layer_prefixes = std::collections::BTreeSet::new();
    for name in sd.names() {
        if let Some((enc_prefix, rest)) = name.split_once(".layer.") {
            let idx = rest.split('.').next().unwrap_or("");
            layer_prefixes.insert((enc_prefix.to_string(), format!("{enc_prefix}.layer.{idx}")));
        }
    }
    let mut done = std::collections::BTreeSet::new();
    for (enc_prefix, layer_prefix) in &layer_prefixes {
        for cfg in [
            M2BertConfig::default(),
            M2BertConfig {
                bidirectional: false,
                residual_long_conv: false,
                ..M2BertConfig::default()
            },
        ] {
            if done.insert((enc_prefix.clone(), cfg.bidirectional)) {
                if let Ok(enc) = M2BertEncoder::<f32>::from_state_dict(&sd, enc_prefix, &cfg) {
                    let l0 = &enc.layers()[0];
                    run_m2(
                        |u| enc.forward(u.view()),
                        l0.mixer().hidden(),
                        l0.mixer().filter().l_max(),
                    );
                    let mut out = StateDict::new();
                    enc.to_state_dict(&mut out, enc_prefix)
                        .expect("a loaded encoder saves");
                    let back = M2BertEncoder::<f32>::from_state_dict(&out, enc_prefix, &cfg)
                        .expect("a saved encoder loads");
                    assert_eq!(back, enc);
                }
            }
            if let Ok(layer) = M2BertLayer::<f32>::from_state_dict(&sd, layer_prefix, &cfg) {
                run_m2(
                    |u| layer.forward(u.view()),
                    layer.mixer().hidden(),
                    layer.mixer().filter().l_max(),
                );
            }
        }
    }
    // Every tensor name's module path, tried as a MonarchLinear and a bare Monarch.
    let sizes = [1usize, 3, 8, 20, 36];
    for name in sd.names() {
        let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
        for &i in &sizes {
            for &o in &sizes {
                for bias in [true, false] {
                    if let Ok(l) = MonarchLinear::from_state_dict(&sd, prefix, i, o, bias) {
                        let x = monarch::ndarray::Array2::from_elem((2, i), 0.5f32);
                        assert_eq!(l.forward(x.view()).unwrap().dim(), (2, o));
                    }
                }
            }
        }
        if let Ok(m) = Monarch::from_state_dict(&sd, prefix) {
            let x = monarch::ndarray::Array2::from_elem((1, m.in_features()), 1.0f32);
            assert_eq!(m.matmul(x.view()).unwrap().dim(), (1, m.out_features()));
        }
    }
});
