//! Helpers for the checkpoint tests: fixture paths, a raw safetensors builder for hand-made
//! (hostile) files, and a proptest case count that `PROPTEST_CASES` overrides.
#![allow(dead_code)]

use monarch::ndarray::Array2;
use serde_json::Value;

/// Path of a file in `tests/data/checkpoints/`.
pub fn ckpt_path(name: &str) -> String {
    format!(
        "{}/tests/data/checkpoints/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Bytes of a file in `tests/data/checkpoints/`.
pub fn ckpt_bytes(name: &str) -> Vec<u8> {
    let p = ckpt_path(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A safetensors container from a literal header and data bytes (no validation: for hostile files).
pub fn container(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

/// JSON rows as an f64 matrix.
pub fn rows(v: &Value) -> Array2<f64> {
    let r: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (n, m) = (r.len(), r[0].len());
    Array2::from_shape_vec((n, m), r.into_iter().flatten().collect()).unwrap()
}

/// Proptest cases: `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A fresh path in the system temp directory for this process.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "monarch-ckpt-{}-{tag}.safetensors",
        std::process::id()
    ))
}
