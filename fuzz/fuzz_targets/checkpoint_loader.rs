//! Arbitrary bytes as a safetensors file: loading never panics; whatever loads re-saves and
//! re-loads to the same tensors; layers built from it either load or return an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monarch::checkpoint::{Dtype, StateDict};
use monarch::{Monarch, MonarchLinear};

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = StateDict::<f32>::from_bytes(data) else {
        return;
    };
    // Round trip: same names, shapes and (non-NaN) values.
    let bytes = sd.to_bytes(Dtype::F32).expect("a loaded state dict saves");
    let back = StateDict::<f32>::from_bytes(&bytes).expect("a saved state dict loads");
    assert_eq!(sd.names().collect::<Vec<_>>(), back.names().collect::<Vec<_>>());
    for name in sd.names() {
        let (a, b) = (sd.get(name).unwrap(), back.get(name).unwrap());
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(x.is_nan() && y.is_nan() || x.to_bits() == y.to_bits());
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
