//! Loading fly-layout `MonarchLinear` checkpoints written by Python's `safetensors` + numpy
//! (scripts/make_fixtures.py) in F32, F64, F16 and BF16, and save → load round trips.

use crate::ckpt;
use crate::common;

use ckpt::*;
use common::assert_close;
use monarch::checkpoint::{Dtype, StateDict};
use monarch::ndarray::Array3;
use monarch::{Error, Monarch, MonarchLinear, RealScalar};

const DTYPES: [&str; 4] = ["F32", "F64", "F16", "BF16"];

fn check_dtype<T: RealScalar>(dtype: &str, tol: f64) {
    let exp = common::fixture("checkpoints/monarch_linear_expected.json");
    let file = ckpt_path(&format!(
        "monarch_linear_{}.safetensors",
        dtype.to_lowercase()
    ));
    for (prefix, layer) in exp["layers"].as_object().unwrap() {
        let in_f = layer["in_features"].as_u64().unwrap() as usize;
        let out_f = layer["out_features"].as_u64().unwrap() as usize;
        let x = rows(&layer["x"]).mapv(T::from_f64);
        let want = rows(&exp["outputs"][dtype][prefix]);
        // Both prefix spellings PyTorch users write.
        for p in [prefix.clone(), format!("{prefix}.")] {
            let lin = MonarchLinear::<T>::load_safetensors(&file, &p, in_f, out_f, true).unwrap();
            assert_eq!(lin.nblocks(), layer["nblocks"].as_u64().unwrap() as usize);
            let y = lin.forward(x.view()).unwrap().mapv(|v| v.to_f64_val());
            assert_close(
                y.as_slice().unwrap(),
                want.as_slice().unwrap(),
                tol,
                &format!("{dtype} {prefix} ({})", std::any::type_name::<T>()),
            );
        }
    }
}

#[test]
fn fixtures_load_in_f64_exactly() {
    // Every on-disk type converts exactly to f64, so only the summation order differs.
    for d in DTYPES {
        check_dtype::<f64>(d, 1e-13);
    }
}

#[test]
fn fixtures_load_in_f32() {
    for d in DTYPES {
        check_dtype::<f32>(d, 2e-6);
    }
}

#[test]
fn lower_precision_files_really_differ() {
    // The fixtures' outputs per dtype differ, so a loader that ignored the dtype would fail.
    let exp = common::fixture("checkpoints/monarch_linear_expected.json");
    let a = rows(&exp["outputs"]["F64"]["model.up"]);
    for d in ["F16", "BF16"] {
        let b = rows(&exp["outputs"][d]["model.up"]);
        let diff = (&a - &b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(diff > 1e-4, "{d}: outputs too close to F64 ({diff:e})");
    }
}

#[test]
fn whole_file_load_skips_integer_buffers_and_keeps_metadata() {
    let sd = StateDict::<f64>::load(ckpt_path("monarch_linear_bf16.safetensors")).unwrap();
    assert_eq!(sd.len(), 6);
    assert_eq!(sd.metadata().get("format").map(String::as_str), Some("pt"));
    assert_eq!(
        sd.skipped().get("model.position_ids"),
        Some(&Dtype::Other("I64", 8))
    );
    let err = sd.tensor("model.position_ids").unwrap_err().to_string();
    assert!(
        err.contains("model.position_ids") && err.contains("I64"),
        "{err}"
    );
    assert_eq!(sd.get("model.up.blkdiag1").unwrap().shape(), &[4, 5, 5]);
    assert_eq!(sd.get("model.down.blkdiag2").unwrap().shape(), &[4, 4, 4]);
    // Prefix loading reads only that layer.
    let up =
        StateDict::<f32>::load_prefix(ckpt_path("monarch_linear_f16.safetensors"), "model.up.")
            .unwrap();
    assert_eq!(
        up.names().collect::<Vec<_>>(),
        ["model.up.bias", "model.up.blkdiag1", "model.up.blkdiag2"]
    );
}

#[test]
fn fixture_bytes_and_file_agree() {
    let bytes = ckpt_bytes("monarch_linear_f32.safetensors");
    let a = StateDict::<f32>::from_bytes(&bytes).unwrap();
    let b = StateDict::<f32>::load(ckpt_path("monarch_linear_f32.safetensors")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn round_trip_monarch_linear_is_bitwise() {
    for (i, &(inf, outf, nb, bias)) in [
        (20, 36, 4, true),
        (30, 14, 4, false),
        (64, 64, 8, true),
        (7, 5, 3, true),
    ]
    .iter()
    .enumerate()
    {
        let l64 = MonarchLinear::<f64>::new(inf, outf, nb, bias, 11 + i as u64).unwrap();
        let path = temp_path(&format!("rt{i}"));
        l64.save_safetensors(&path, "enc.layer.0", Dtype::F64)
            .unwrap();
        let back =
            MonarchLinear::<f64>::load_safetensors(&path, "enc.layer.0", inf, outf, bias).unwrap();
        assert_eq!(back, l64);
        // Saved as F32: exactly the f32-rounded numbers come back.
        l64.save_safetensors(&path, "", Dtype::F32).unwrap();
        let back32 = MonarchLinear::<f32>::load_safetensors(&path, "", inf, outf, bias).unwrap();
        assert_eq!(
            back32.monarch().w1(),
            &l64.monarch().w1().mapv(|v| v as f32)
        );
        assert_eq!(
            back32.monarch().w2(),
            &l64.monarch().w2().mapv(|v| v as f32)
        );
        assert_eq!(
            back32.bias().cloned(),
            l64.bias().map(|b| b.mapv(|v| v as f32))
        );
        let back64 = MonarchLinear::<f64>::load_safetensors(&path, "", inf, outf, bias).unwrap();
        assert_eq!(
            back64.monarch().w1(),
            &l64.monarch().w1().mapv(|v| v as f32 as f64)
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn round_trip_state_dict_bytes_with_metadata() {
    let mut sd = StateDict::<f32>::new();
    sd.metadata_mut().insert("format".into(), "pt".into());
    sd.insert(
        "a",
        Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32 - 50.5),
    );
    // A non-standard layout must still be written in logical row-major order.
    let t = Array3::from_shape_fn((3, 2, 2), |(i, j, k)| (i + 2 * j + 7 * k) as f32)
        .permuted_axes([2, 0, 1]);
    sd.insert("b.t", t.clone());
    sd.insert("scalar", monarch::ndarray::arr0(3.25f32));
    sd.insert("empty", monarch::ndarray::Array2::<f32>::zeros((0, 5)));
    let bytes = sd.to_bytes(Dtype::F32).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
    let back = StateDict::<f32>::from_bytes(&bytes).unwrap();
    assert_eq!(back, sd);
    assert_eq!(back.get("b.t").unwrap(), &t.into_dyn());
    assert!(matches!(
        sd.to_bytes(Dtype::Other("I64", 8)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn round_trip_bare_monarch_and_rejects_nonstandard_perms() {
    let m = Monarch::<f64>::random_factors((3, 4, 5), (2, 7, 6), 5).unwrap();
    let mut sd = StateDict::new();
    m.to_state_dict(&mut sd, "blk").unwrap();
    let bytes = sd.to_bytes(Dtype::F64).unwrap();
    let back =
        Monarch::<f64>::from_state_dict(&StateDict::from_bytes(&bytes).unwrap(), "blk").unwrap();
    assert_eq!(back, m);
    let mut sd2 = StateDict::new();
    assert!(m.transpose().to_state_dict(&mut sd2, "").is_err());
    // Factors that do not chain: the error names both tensors.
    let mut bad = StateDict::<f64>::new();
    bad.insert("w1", Array3::<f64>::zeros((2, 3, 4)));
    bad.insert("w2", Array3::<f64>::zeros((2, 5, 2)));
    let e = Monarch::<f64>::from_state_dict(&bad, "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"w1\"") && e.contains("\"w2\""), "{e}");
}

#[test]
fn saving_f16_and_bf16_rounds_like_numpy() {
    // The fixtures' F16 values were rounded by numpy from the same f64 values, the BF16 ones
    // through f32 with round-to-nearest-even: saving the F64 file in those dtypes must give
    // exactly the same numbers.
    let f64sd = StateDict::<f64>::load(ckpt_path("monarch_linear_f64.safetensors")).unwrap();
    for (dtype, file) in [(Dtype::F16, "f16"), (Dtype::BF16, "bf16")] {
        let bytes = f64sd.to_bytes(dtype).unwrap();
        let ours = StateDict::<f64>::from_bytes(&bytes).unwrap();
        let theirs =
            StateDict::<f64>::load(ckpt_path(&format!("monarch_linear_{file}.safetensors")))
                .unwrap();
        assert_eq!(ours.len(), 6);
        for name in theirs.names() {
            assert_eq!(ours.get(name), theirs.get(name), "{dtype} {name}");
        }
        // Re-saving the rounded values is lossless.
        let ours32 = StateDict::<f32>::from_bytes(&bytes).unwrap();
        let again = StateDict::<f32>::from_bytes(&ours32.to_bytes(dtype).unwrap()).unwrap();
        assert_eq!(again, ours32);
    }
}
