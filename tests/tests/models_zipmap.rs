//! skl2onnx's default export ends in ZipMap (a map per row, which the Open Inference Protocol cannot carry):
//! `tractor serve` serves the probability tensor that feeds it under the same output name and says so in the
//! model metadata; `tractor inspect` warns and shows the export fix, `zipmap=False`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::paths::{fixtures, tractor_binary};
use tractor_e2e::serve::{Serve, Split};

const MODEL: &str = "breast_cancer_pipeline";

#[test]
fn serve_answers_the_probability_tensor_and_says_so() {
    let serve = Serve::start(&format!("{MODEL}.onnx"), "pipeline", &[]).unwrap();
    let client = Client::new();
    let meta: Value = client
        .get(serve.model_url(""))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "output_label", "datatype": "INT64", "shape": [-1]},
            {"name": "output_probability", "datatype": "FP32", "shape": [-1, 2]},
        ])
    );
    let notes = meta["parameters"]["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("zipmap=False")),
        "{meta}"
    );

    let split = Split::load(MODEL).unwrap();
    let body = json!({"inputs": [{"name": split.input, "shape": [3, split.features], "datatype": "FP32",
        "data": split.x[..3 * split.features]}], "outputs": [{"name": "output_probability"}]});
    let resp: Value = client
        .post(serve.model_url("/infer"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["outputs"][0]["shape"], json!([3, 2]));
    let want = &split.reference["output_probability"].data[..6];
    for (got, expected) in resp["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want)
    {
        assert!(
            (got.as_f64().unwrap() - expected).abs() <= 1e-5,
            "{got} vs {expected}"
        );
    }
}

#[test]
fn inspect_warns_and_shows_the_export_fix() {
    let out = Command::new(tractor_binary().unwrap())
        .arg("inspect")
        .arg(fixtures().join(format!("{MODEL}.onnx")))
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("zipmap=False"),
        "no warning on stderr: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("zipmap=False"),
        "{report}"
    );
    let ops: Vec<(&str, &str)> = report["sourceOps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["op"].as_str().unwrap(), o["support"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("Cast", "tract"),
            ("ai.onnx.ml.LinearClassifier", "tract"),
            ("ai.onnx.ml.Scaler", "tractor"),
            ("ai.onnx.ml.ZipMap", "tractor"),
        ]
    );
}
