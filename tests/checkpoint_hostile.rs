//! Wrong, truncated and hostile safetensors files: every one is an `Error` naming the tensor,
//! never a panic, and nothing is allocated that the file's bytes cannot back.

use crate::ckpt;

use ckpt::*;
use monarch::checkpoint::{Dtype, StateDict};
use monarch::ndarray::Array2;
use monarch::{Error, MonarchLinear};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn err_f32(bytes: &[u8]) -> String {
    match StateDict::<f32>::from_bytes(bytes) {
        Ok(_) => panic!("hostile file accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, name: &str) {
    assert!(
        msg.contains(&format!("\"{name}\"")),
        "error does not name {name}: {msg}"
    );
}

/// Loads both fixture layers from `bytes`, returning the first error; panics propagate.
fn load_layers(bytes: &[u8]) -> Result<(), Error> {
    let sd = StateDict::<f32>::from_bytes(bytes)?;
    let up = MonarchLinear::from_state_dict(&sd, "model.up", 20, 36, true)?;
    let down = MonarchLinear::from_state_dict(&sd, "model.down", 30, 14, true)?;
    up.forward(Array2::from_elem((2, 20), 1.0f32).view())?;
    down.forward(Array2::from_elem((2, 30), 1.0f32).view())?;
    Ok(())
}

#[test]
fn every_truncation_is_an_error() {
    let full = ckpt_bytes("monarch_linear_f32.safetensors");
    assert!(load_layers(&full).is_ok());
    for len in 0..full.len() {
        assert!(
            StateDict::<f32>::from_bytes(&full[..len]).is_err(),
            "truncated to {len} accepted"
        );
    }
}

#[test]
fn header_length_beyond_file() {
    let mut b = ckpt_bytes("monarch_linear_f32.safetensors");
    for n in [b.len() as u64, u64::MAX, 1 << 40, (b.len() - 7) as u64] {
        b[..8].copy_from_slice(&n.to_le_bytes());
        let e = err_f32(&b);
        assert!(e.contains("header length"), "{e}");
    }
    assert!(err_f32(&[1, 2, 3]).contains("shorter"));
}

#[test]
fn header_not_json_or_not_utf8() {
    assert!(err_f32(&container("{\"a\": ", &[])).contains("JSON"));
    assert!(err_f32(&container("[1, 2]", &[])).contains("JSON"));
    let mut bad = container("{\"a\":{}}", &[]);
    bad[10] = 0xff;
    assert!(err_f32(&bad).contains("UTF-8"));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(StateDict::<f32>::from_bytes(&container(&deep, &[])).is_err());
}

#[test]
fn lying_sizes_and_offsets_name_the_tensor() {
    let data = vec![0u8; 64];
    let cases = [
        // Shape needs 4·16·16·4 bytes, offsets hold 64.
        (
            r#"{"w":{"dtype":"F32","shape":[4,16,16],"data_offsets":[0,64]}}"#,
            "needs",
        ),
        // Offsets past the data region.
        (
            r#"{"w":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}}"#,
            "outside",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[65,65]}}"#,
            "outside",
        ),
        // start > end.
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
            "outside",
        ),
        // Huge declared shapes: overflow before any allocation.
        (
            r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,64]}}"#,
            "overflow",
        ),
        (
            r#"{"w":{"dtype":"F64","shape":[18446744073709551615],"data_offsets":[0,64]}}"#,
            "overflow",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,64]}}"#,
            "needs",
        ),
        // Dtype lies: 16 F64 need 128 bytes.
        (
            r#"{"w":{"dtype":"F64","shape":[16],"data_offsets":[0,64]}}"#,
            "needs",
        ),
        (
            r#"{"w":{"dtype":"F128","shape":[4],"data_offsets":[0,64]}}"#,
            "unknown dtype",
        ),
        (
            r#"{"w":{"dtype":7,"shape":[16],"data_offsets":[0,64]}}"#,
            "dtype",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,64]}}"#,
            "non-negative",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,64]}}"#,
            "non-negative",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":16,"data_offsets":[0,64]}}"#,
            "not a list",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[16],"data_offsets":[0,32,64]}}"#,
            "[start, end]",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[16]}}"#,
            "missing \"data_offsets\"",
        ),
        (r#"{"w":{"shape":[16],"data_offsets":[0,64]}}"#, "dtype"),
        (r#"{"w":[1,2]}"#, "not a JSON object"),
        // Overlapping tensors.
        (
            r#"{"v":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},"w":{"dtype":"F32","shape":[8],"data_offsets":[16,48]}}"#,
            "overlap",
        ),
        // Repeated name (readers would disagree on which one is meant).
        (
            r#"{"w":{"dtype":"F32","shape":[16],"data_offsets":[0,64]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            "twice",
        ),
    ];
    for (h, what) in cases {
        let e = err_f32(&container(h, &data));
        assert_names(&e, "w");
        assert!(e.contains(what), "{h}: expected '{what}' in: {e}");
    }
    let e = err_f32(&container(r#"{"__metadata__":{"a":1}}"#, &[]));
    assert!(e.contains("__metadata__"), "{e}");
}

#[test]
fn wrong_dtype_shape_and_missing_tensors_name_the_tensor() {
    let sd = StateDict::<f64>::load(ckpt_path("monarch_linear_f64.safetensors")).unwrap();
    // Wrong shapes: a layer declared with other sizes than the file's.
    let e = MonarchLinear::from_state_dict(&sd, "model.up", 20, 40, true).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert_names(&e.to_string(), "model.up.blkdiag2");
    let e = MonarchLinear::from_state_dict(&sd, "model.up", 24, 36, true).unwrap_err();
    assert_names(&e.to_string(), "model.up.blkdiag1");
    let e = MonarchLinear::from_state_dict(&sd, "model.down", 30, 13, true).unwrap_err();
    assert!(e.to_string().contains("model.down.b"), "{e}");
    // Missing tensors.
    let e = MonarchLinear::from_state_dict(&sd, "model.side", 20, 36, true).unwrap_err();
    assert_names(&e.to_string(), "model.side.blkdiag1");
    let mut no_bias = sd.clone();
    no_bias.remove("model.up.bias");
    let e = MonarchLinear::from_state_dict(&no_bias, "model.up", 20, 36, true).unwrap_err();
    assert_names(&e.to_string(), "model.up.bias");
    let mut no_w2 = sd.clone();
    no_w2.remove("model.up.blkdiag2");
    let e = MonarchLinear::from_state_dict(&no_w2, "model.up", 20, 36, true).unwrap_err();
    assert_names(&e.to_string(), "model.up.blkdiag2");
    // A bias the caller did not ask for would be dropped silently: an error.
    let e = MonarchLinear::from_state_dict(&sd, "model.up", 20, 36, false).unwrap_err();
    assert_names(&e.to_string(), "model.up.bias");
    // Zero sizes.
    assert!(MonarchLinear::from_state_dict(&sd, "model.up", 0, 36, true).is_err());
    // Non-float dtype where a weight belongs.
    let h = r#"{"l.blkdiag1":{"dtype":"I32","shape":[1,1,1],"data_offsets":[0,4]},"l.blkdiag2":{"dtype":"F32","shape":[1,1,1],"data_offsets":[4,8]}}"#;
    let sd = StateDict::<f32>::from_bytes(&container(h, &[0u8; 8])).unwrap();
    let e = MonarchLinear::from_state_dict(&sd, "l", 1, 1, false)
        .unwrap_err()
        .to_string();
    assert_names(&e, "l.blkdiag1");
    assert!(e.contains("I32"), "{e}");
    // A 2-D tensor where a 3-D one belongs.
    let h = r#"{"blkdiag1":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#;
    let sd = StateDict::<f32>::from_bytes(&container(h, &[0u8; 4])).unwrap();
    let e = MonarchLinear::from_state_dict(&sd, "", 1, 1, false)
        .unwrap_err()
        .to_string();
    assert_names(&e, "blkdiag1");
}

#[test]
fn hand_made_file_with_gaps_is_rejected_and_without_loads() {
    // The format forbids holes in the data region (issue 18: this file used to load).
    let h = r#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},"c":{"dtype":"F32","shape":[0,3],"data_offsets":[10,10]}}"#;
    let data = [0x80, 0x3f, 0x40, 0xc0, 9, 9, 9, 9, 0x00, 0x3c];
    let e = StateDict::<f64>::from_bytes(&container(h, &data)).unwrap_err();
    assert!(e.to_string().contains("gap of 4 bytes"), "{e}");
    // The same tensors packed: loads, zero-size tensors included.
    let h = r#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[4,6]},"c":{"dtype":"F32","shape":[0,3],"data_offsets":[6,6]}}"#;
    let data = [0x80, 0x3f, 0x40, 0xc0, 0x00, 0x3c];
    let sd = StateDict::<f64>::from_bytes(&container(h, &data)).unwrap();
    assert_eq!(sd.get("a").unwrap().as_slice().unwrap(), &[1.0, -3.0]);
    assert_eq!(sd.get("b").unwrap().as_slice().unwrap(), &[1.0]);
    assert_eq!(sd.get("c").unwrap().shape(), &[0, 3]);
    assert_eq!(Dtype::parse("BF16"), Some(Dtype::BF16));
}

/// Runs `f`, turning a panic into a test failure that prints `what`.
fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => panic!("panicked on {what}"),
    }
}

fn header_end(b: &[u8]) -> usize {
    8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random byte overwrites anywhere (length prefix, header, data) and random truncation.
    #[test]
    fn mutated_bytes_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let name = ["f32", "f64", "f16", "bf16"][which];
        let mut b = ckpt_bytes(&format!("monarch_linear_{name}.safetensors"));
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        let desc = format!("{name} edits {edits:?} truncate {truncate}");
        let _ = no_panic(&desc, || load_layers(&b));
    }

    /// Edits confined to the JSON header that keep it plausible: digits replaced by digits,
    /// so offsets and shapes lie while the JSON stays valid.
    #[test]
    fn lying_header_digits_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..10), 1..4),
    ) {
        let mut b = ckpt_bytes("monarch_linear_f32.safetensors");
        let end = header_end(&b);
        let digits: Vec<usize> = (8..end).filter(|&i| b[i].is_ascii_digit()).collect();
        for (i, d) in &edits {
            b[digits[i.index(digits.len())]] = b'0' + d;
        }
        let changed = b != ckpt_bytes("monarch_linear_f32.safetensors");
        let r = no_panic(&format!("digit edits {edits:?}"), || load_layers(&b));
        // A changed shape or offset can only load if the header is still self-consistent.
        if changed && r.is_ok() {
            let sd = StateDict::<f32>::from_bytes(&b).unwrap();
            prop_assert!(sd.len() == 6);
        }
    }

    /// Edits confined to the data region always load (any bit pattern is some float).
    #[test]
    fn data_edits_load(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let mut b = ckpt_bytes("monarch_linear_f16.safetensors");
        let start = header_end(&b);
        let n = b.len() - start;
        for (i, v) in &edits {
            b[start + i.index(n)] = *v;
        }
        prop_assert!(no_panic("data edits", || StateDict::<f64>::from_bytes(&b)).is_ok());
    }
}
