//! Models exported with a fixed batch of 1 inside (a Reshape to the constant `[1, k]` under a symbolic batch, as
//! in the ONNX zoo's ResNet-50): tractor rewrites the 1 to the batch when it is provably the batch axis and serves
//! any batch; otherwise it serves batch 1 only and says so. tests/fixtures/make_tabular_models.py builds both.

#![allow(clippy::unwrap_used)]

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, Split};

fn body(split: &Split, rows: usize) -> Value {
    json!({"inputs": [{"name": split.input, "shape": [rows, 1, 8, 8], "datatype": "FP32",
        "data": split.x[..rows * split.features]}]})
}

fn note(meta: &Value) -> String {
    meta["parameters"]["notes"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The answer's values equal onnxruntime's `want`, as many of them (zip alone would stop at the shorter
/// side and let a short answer pass).
fn assert_matches(got: &Value, want: &[f64]) {
    let got = got.as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{} values for {} expected",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        let g = g.as_f64().unwrap();
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
}

#[test]
fn a_provable_batch_reshape_is_rewritten_and_serves_any_batch() {
    let name = "pinned_batch_cnn";
    let serve = Serve::start(&format!("{name}.onnx"), "cnn", &["--max-batch-size", "32"]).unwrap();
    let c = Client::new();
    let meta: Value = c.get(serve.model_url("")).send().unwrap().json().unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 8, 8]));
    assert!(
        note(&meta).contains("rewritten to the symbolic batch"),
        "{meta}"
    );

    let split = Split::load(name).unwrap();
    let resp: Value = c
        .post(serve.model_url("/infer"))
        .json(&body(&split, split.rows()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["outputs"][0]["shape"], json!([split.rows(), 10]));
    assert_matches(
        &resp["outputs"][0]["data"],
        &split.reference["probabilities"].data,
    );
}

#[test]
fn an_unprovable_one_serves_batch_one_and_says_so() {
    let name = "pinned_batch_flatten";
    let serve = Serve::start(&format!("{name}.onnx"), "flat", &[]).unwrap();
    let c = Client::new();
    let meta: Value = c.get(serve.model_url("")).send().unwrap().json().unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([1, 1, 8, 8]));
    assert!(note(&meta).contains("serves batch 1 only"), "{meta}");

    let split = Split::load(name).unwrap();
    let resp: Value = c
        .post(serve.model_url("/infer"))
        .json(&body(&split, 1))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["outputs"][0]["shape"], json!([1, 10]), "{resp}");
    assert_matches(
        &resp["outputs"][0]["data"],
        &split.reference["probabilities"].data[..10],
    );
    let two = c
        .post(serve.model_url("/infer"))
        .json(&body(&split, 2))
        .send()
        .unwrap();
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    let err: Value = two.json().unwrap();
    assert!(err["error"].as_str().is_some(), "{err}");
}
