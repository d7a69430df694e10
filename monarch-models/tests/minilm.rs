//! all-MiniLM-L6-v2 against sentence-transformers' own outputs (token ids and sentence
//! embeddings stored by `scripts/minilm_reference.py`), and the loader's errors on bad input.
//!
//! The tests that need the model skip (passing, with a message) when `scripts/fetch_minilm.sh`
//! has not been run; CI runs it first.

use monarch::checkpoint::{Dtype, StateDict};
use monarch::ndarray::{Array1, Array2};
use monarch::Error;
use monarch_models::bert::{AttentionKind, BertConfig, BertModel, TokenBatch};
use monarch_models::minilm::{default_model_dir, model_present, SentenceEncoder};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Reference {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut r = Reference {
        texts: vec![],
        ids: vec![],
        embeddings: vec![],
    };
    for s in v["sentences"].as_array().unwrap() {
        r.texts.push(s["text"].as_str().unwrap().to_string());
        r.ids.push(
            s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
        );
        r.embeddings.push(
            s["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        );
    }
    r
}

/// The encoder, loaded once for all tests; `None` (with a message) if not fetched.
fn encoder() -> Option<&'static SentenceEncoder<f32>> {
    static ENC: OnceLock<Option<SentenceEncoder<f32>>> = OnceLock::new();
    ENC.get_or_init(|| {
        let dir = default_model_dir();
        if !model_present(&dir) {
            eprintln!(
                "SKIPPED: all-MiniLM-L6-v2 not found in {} (run scripts/fetch_minilm.sh)",
                dir.display()
            );
            return None;
        }
        Some(SentenceEncoder::load(&dir).expect("model folder loads"))
    })
    .as_ref()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn token_ids_match_the_python_tokenizer() {
    let Some(enc) = encoder() else { return };
    let r = reference();
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let ids = enc.tokenize(&texts).unwrap();
    for (i, (got, want)) in ids.iter().zip(&r.ids).enumerate() {
        assert_eq!(got, want, "sentence {i}: {:?}", r.texts[i]);
    }
    // The long passage is truncated to max_seq_length = 256, [SEP] kept last.
    assert!(ids.iter().any(|s| s.len() == 256 && s[255] == 102));
}

#[test]
fn exact_embeddings_match_sentence_transformers() {
    let Some(enc) = encoder() else { return };
    let r = reference();
    let emb = enc.embed_ids(&r.ids).unwrap();
    let mut worst = (1.0f64, 0.0f64);
    for (i, want) in r.embeddings.iter().enumerate() {
        let got = emb.row(i).to_vec();
        let cos = cosine(&got, want);
        let max_abs = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        assert!(
            cos >= 0.99999 && max_abs <= 1e-4,
            "sentence {i} ({:?}): cosine {cos}, max abs {max_abs}",
            r.texts[i]
        );
        worst = (worst.0.min(cos), worst.1.max(max_abs));
    }
    eprintln!(
        "exact forward vs sentence-transformers: min cosine {:.9}, max abs {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn padded_batch_matches_one_at_a_time() {
    let Some(enc) = encoder() else { return };
    let r = reference();
    // Sequences of different lengths in one padded batch: the key mask must hide the padding.
    let ids: Vec<Vec<u32>> = r.ids[..5].to_vec();
    let single = enc.embed_ids(&ids).unwrap();
    let batch = TokenBatch::from_ids(&ids).unwrap();
    let batched = enc.embed_batch(&batch).unwrap();
    let diff = (&single - &batched)
        .iter()
        .fold(0.0f32, |m, e| m.max(e.abs()));
    assert!(diff < 1e-5, "max difference {diff}");
    // The same with MonarchAttention, which handles the mask inside its factors.
    let mut ma = enc.clone();
    ma.set_attention(AttentionKind::monarch(4, 2));
    let single = ma.embed_ids(&ids).unwrap();
    let batched = ma.embed_batch(&batch).unwrap();
    let diff = (&single - &batched)
        .iter()
        .fold(0.0f32, |m, e| m.max(e.abs()));
    assert!(diff < 1e-4, "MonarchAttention: max difference {diff}");
}

#[test]
fn monarch_attention_with_one_block_is_exact_and_small_blocks_stay_close() {
    let Some(enc) = encoder() else { return };
    let r = reference();
    let ids = &r.ids[..4];
    let exact = enc.embed_ids(ids).unwrap();
    let mut ma = enc.clone();
    ma.set_attention(AttentionKind::monarch(512, 1));
    let one = ma.embed_ids(ids).unwrap();
    let diff = (&exact - &one).iter().fold(0.0f32, |m, e| m.max(e.abs()));
    assert!(diff < 1e-5, "one block: max difference {diff}");
    ma.set_attention(AttentionKind::monarch(4, 3));
    let approx = ma.embed_ids(ids).unwrap();
    for i in 0..ids.len() {
        let c = cosine(&exact.row(i).to_vec(), &approx.row(i).to_vec());
        assert!(c > 0.8, "sentence {i}: cosine {c}");
    }
}

// ---- bad input: a tiny random BERT written to a temporary folder (no model needed) ----

fn tiny_config_json(extra: &str) -> String {
    format!(
        r#"{{"model_type": "bert", "hidden_act": "gelu", "vocab_size": 11, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "max_position_embeddings": 12, "type_vocab_size": 2, "layer_norm_eps": 1e-12{extra}}}"#
    )
}

fn tiny_state_dict(cfg: &BertConfig) -> StateDict<f32> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut sd = StateDict::new();
    let mut seed = 0u64;
    let mut mat = |r: usize, c: usize| {
        seed += 1;
        Array2::from_shape_fn((r, c), |(a, b)| {
            (((a * 31 + b * 17) as f64 + seed as f64 * 0.7).sin() * 0.3) as f32
        })
    };
    sd.insert("embeddings.word_embeddings.weight", mat(cfg.vocab_size, h));
    sd.insert(
        "embeddings.position_embeddings.weight",
        mat(cfg.max_position_embeddings, h),
    );
    sd.insert(
        "embeddings.token_type_embeddings.weight",
        mat(cfg.type_vocab_size, h),
    );
    let ln = |sd: &mut StateDict<f32>, p: &str| {
        sd.insert(format!("{p}.weight"), Array1::<f32>::ones(h));
        sd.insert(format!("{p}.bias"), Array1::<f32>::zeros(h));
    };
    ln(&mut sd, "embeddings.LayerNorm");
    let p = "encoder.layer.0.";
    for (name, out, inp) in [
        ("attention.self.query", h, h),
        ("attention.self.key", h, h),
        ("attention.self.value", h, h),
        ("attention.output.dense", h, h),
        ("intermediate.dense", i, h),
        ("output.dense", h, i),
    ] {
        sd.insert(format!("{p}{name}.weight"), mat(out, inp));
        sd.insert(format!("{p}{name}.bias"), Array1::<f32>::zeros(out));
    }
    ln(&mut sd, &format!("{p}attention.output.LayerNorm"));
    ln(&mut sd, &format!("{p}output.LayerNorm"));
    sd
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("monarch-models-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tiny_model_runs_and_monarch_projection_of_its_layers_is_exact_at_full_rank() {
    let cfg = BertConfig::from_json(&tiny_config_json(""), "config.json").unwrap();
    let sd = tiny_state_dict(&cfg);
    let mut m = BertModel::from_state_dict(&sd, &cfg, "").unwrap();
    let batch = TokenBatch::from_ids(&[vec![1, 2, 3, 4], vec![5, 6]]).unwrap();
    let h = m.forward(&batch).unwrap();
    assert_eq!(h.dim(), (2, 4, 8));
    // Full per-slice rank makes the projection exact: the forward does not change.
    let rep = m.project_dense(2, Some((4, 4))).unwrap();
    assert!(rep.iter().all(|r| r.relative_error < 1e-5), "{rep:?}");
    let h2 = m.forward(&batch).unwrap();
    let diff = (&h - &h2).iter().fold(0.0f32, |a, e| a.max(e.abs()));
    assert!(diff < 1e-4, "{diff}");
    // Token ids outside the vocabulary or sequences past the position table are errors.
    let bad = TokenBatch::from_ids(&[vec![11]]).unwrap();
    assert!(matches!(m.forward(&bad), Err(Error::InvalidArgument(_))));
    let long = TokenBatch::from_ids(&[vec![1; 13]]).unwrap();
    assert!(matches!(m.forward(&long), Err(Error::TooLarge { .. })));
}

#[test]
fn bad_files_are_errors_naming_the_file_or_tensor() {
    let dir = tmp_dir("bad");
    // Unknown configuration values name the file and the key.
    let e = BertConfig::from_json(&tiny_config_json(r#", "hidden_act": "relu""#), "cfg.json");
    // (a duplicate key: serde_json keeps the last value)
    let msg = e.unwrap_err().to_string();
    assert!(
        msg.contains("cfg.json") && msg.contains("hidden_act"),
        "{msg}"
    );
    let bad_pos = tiny_config_json(r#", "position_embedding_type": "relative_key""#);
    let msg = BertConfig::from_json(&bad_pos, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("position_embedding_type"), "{msg}");
    let msg = BertConfig::from_json(r#"{"hidden_act": "gelu"}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("vocab_size"), "{msg}");

    // A missing file names the file.
    let missing = dir.join("nothing.safetensors");
    let cfg = BertConfig::from_json(&tiny_config_json(""), "config.json").unwrap();
    let e = BertModel::<f32>::load(&missing, &cfg, "").unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("nothing.safetensors"));

    // A tensor of the wrong shape names the file and the tensor.
    let mut sd = tiny_state_dict(&cfg);
    sd.insert(
        "encoder.layer.0.intermediate.dense.weight",
        Array2::<f32>::zeros((15, 8)),
    );
    let path = dir.join("wrong.safetensors");
    sd.save(&path, Dtype::F32).unwrap();
    let msg = BertModel::<f32>::load(&path, &cfg, "")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("wrong.safetensors")
            && msg.contains("encoder.layer.0.intermediate.dense.weight"),
        "{msg}"
    );
    // A missing tensor too.
    let mut sd = tiny_state_dict(&cfg);
    sd.remove("encoder.layer.0.output.LayerNorm.bias");
    sd.save(&path, Dtype::F32).unwrap();
    let msg = BertModel::<f32>::load(&path, &cfg, "")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("encoder.layer.0.output.LayerNorm.bias"),
        "{msg}"
    );

    // A sentence-transformers folder with an unsupported pooling names 1_Pooling/config.json.
    let folder = dir.join("st");
    std::fs::create_dir_all(folder.join("1_Pooling")).unwrap();
    std::fs::write(folder.join("config.json"), tiny_config_json("")).unwrap();
    std::fs::write(
        folder.join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": false, "pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    let msg = SentenceEncoder::<f32>::load(&folder)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("1_Pooling") && msg.contains("pooling_mode"),
        "{msg}"
    );
    // Without tokenizer.json the error names it.
    std::fs::write(
        folder.join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    let msg = SentenceEncoder::<f32>::load(&folder)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn distillation_lowers_the_layer_errors_of_a_projected_tiny_model() {
    let cfg = BertConfig::from_json(&tiny_config_json(""), "config.json").unwrap();
    let teacher = BertModel::from_state_dict(&tiny_state_dict(&cfg), &cfg, "").unwrap();
    let batches: Vec<TokenBatch> = (0..6u32)
        .map(|s| TokenBatch::from_ids(&[(0..10).map(|t| (s * 3 + t) % 11).collect()]).unwrap())
        .collect();
    let opts = monarch_models::fit::FitOptions {
        steps: 30,
        lr: 0.02,
    };
    for sequential in [false, true] {
        let mut student = teacher.clone();
        student.project_dense(1, Some((4, 4))).unwrap();
        let reps =
            monarch_models::fit::distill(&mut student, &teacher, &batches, 64, opts, sequential)
                .unwrap();
        assert_eq!(reps.len(), 6);
        // The best iterate is kept: never worse, and better on average.
        assert!(reps.iter().all(|r| r.after <= r.before), "{reps:?}");
        let gain: f64 = reps.iter().map(|r| r.before - r.after).sum();
        assert!(gain > 0.0, "sequential = {sequential}: {reps:?}");
    }
}

/// Sentence pairs: ids and token types equal to the Python tokenizer's
/// (`scripts/minilm_pair_ids.py`), truncation longest-first included; a padded batch of pairs
/// embeds as each pair alone; the token types reach the encoder.
#[test]
fn sentence_pairs_match_the_python_tokenizer() {
    let Some(enc) = encoder() else { return };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_pairs.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let nums = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|y| y.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = v["pairs"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut pairs = vec![];
    for c in cases {
        let (a, b) = (c["first"].as_str().unwrap(), c["second"].as_str().unwrap());
        let (ids, types) = enc.tokenizer().encode_pair(a, b).unwrap();
        assert_eq!(ids, nums(&c["ids"]), "ids of ({a:.30}, {b:.30})");
        assert_eq!(types, nums(&c["type_ids"]), "types of ({a:.30}, {b:.30})");
        pairs.push((a, b));
    }
    // Truncated pairs fill the model's limit exactly.
    assert!(cases.iter().any(|c| nums(&c["ids"]).len() == 256));

    let batch = enc.tokenizer().encode_pairs(&pairs[..4]).unwrap();
    let batched = enc.embed_batch(&batch).unwrap();
    for (i, &(a, b)) in pairs[..4].iter().enumerate() {
        let one = enc.tokenizer().encode_pairs(&[(a, b)]).unwrap();
        let e = enc.embed_batch(&one).unwrap();
        let diff = (&e.row(0) - &batched.row(i))
            .iter()
            .fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(diff < 1e-5, "pair {i}: max difference {diff}");
    }
    // All-zero types give a different embedding: the second segment's type is used.
    let mut zeros = batch.clone();
    zeros.type_ids.fill(0);
    let e0 = enc.embed_batch(&zeros).unwrap();
    let moved = (&e0.row(0) - &batched.row(0))
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(moved > 1e-3, "token types had no effect ({moved})");
}

#[test]
fn token_types_of_the_wrong_length_are_errors() {
    let ids = vec![vec![101, 7, 102], vec![101, 102]];
    let e = TokenBatch::from_ids_and_types(&ids, &[vec![0, 0, 0]]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = TokenBatch::from_ids_and_types(&ids, &[vec![0, 0, 0], vec![0]]).unwrap_err();
    assert!(e.to_string().contains("sequence 1"), "{e}");
    let b = TokenBatch::from_ids_and_types(&ids, &[vec![0, 1, 1], vec![0, 1]]).unwrap();
    assert_eq!(b.type_ids.row(0).to_vec(), vec![0, 1, 1]);
    assert_eq!(b.type_ids.row(1).to_vec(), vec![0, 1, 0]);
    assert_eq!(b.mask.row(1).to_vec(), vec![true, true, false]);
}
