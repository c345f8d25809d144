//! Tabular models (scikit-learn pipelines, forests, boosted trees, SVMs, LightGBM, encoders; tests/fixtures/
//! make_tabular_models.py): each optimizes with `tractor optimize` and serves its artifact with `tractor serve`,
//! giving onnxruntime's outputs on the whole test split within 1e-5 relative (f32); f16 where it means something.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::optimize::{fixtures, optimize};
use tractor_e2e::serve::{Serve, Split};

/// `|got - want| <= tol * max(|want|, 1)`: relative, with an absolute floor for values near zero.
fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// Optimize fixture `name` at `precision` into `dir`; the artifact's path.
fn artifact(name: &str, precision: &str, dir: &Path) -> String {
    let out = dir.join(format!("{name}-{precision}"));
    let src = fixtures().join(format!("{name}.onnx"));
    let run = optimize(
        &out,
        &["--source", src.to_str().unwrap(), "--precision", precision],
        &[],
    )
    .unwrap();
    assert_eq!(run.code, 0, "{name} {precision}: {}", run.stderr);
    assert_eq!(run.report["precision"], precision, "{name}");
    out.join("model.nnef.tgz").display().to_string()
}

/// Serve `model`, send the whole split in one request, and return each output as (shape, values) by name.
fn infer_all(model: &str, name: &str) -> (Split, serde_json::Map<String, Value>) {
    let split = Split::load(name).unwrap();
    let serve = Serve::start(model, name, &["--max-batch-size", "256"]).unwrap();
    let body = json!({"inputs": [{"name": split.input, "shape": [split.rows(), split.features],
        "datatype": "FP32", "data": split.x}]});
    let resp: Value = Client::new()
        .post(serve.model_url("/infer"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let outputs = resp["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: {resp}"))
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_owned(), o.clone()))
        .collect();
    (split, outputs)
}

/// Every output equal to onnxruntime's within `tol`; labels exactly.
fn assert_matches(name: &str, split: &Split, outputs: &serde_json::Map<String, Value>, tol: f64) {
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        split.reference.keys().collect::<Vec<_>>(),
        "{name}: output names"
    );
    for (out, want) in &split.reference {
        let got = &outputs[out];
        assert_eq!(got["shape"], json!(want.shape), "{name}/{out}: shape");
        let data: Vec<f64> = got["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let integer = matches!(got["datatype"].as_str(), Some("INT64" | "INT32"));
        let bad: Vec<_> = data
            .iter()
            .zip(&want.data)
            .enumerate()
            .filter(|(_, (served, expected))| {
                if integer {
                    served != expected
                } else {
                    !close(**served, **expected, tol)
                }
            })
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "{name}/{out}: (index, (tractor, onnxruntime)) {bad:?}"
        );
    }
}

#[test]
fn every_tabular_fixture_optimizes_and_serves_onnxruntimes_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "breast_cancer_pipeline",
        "diabetes_gbr",
        "diabetes_rf",
        "iris_rf",
        "iris_svc",
        "diabetes_svr",
        "breast_cancer_lgbm",
        "iris_encoders",
        // ai.onnx.ml opset 5 TreeEnsemble; references from onnx's reference evaluator (onnxruntime 1.19 lacks it).
        "diabetes_gbr_v5",
        "iris_trees_v5",
    ] {
        let model = artifact(name, "f32", tmp.path());
        let (split, outputs) = infer_all(&model, name);
        assert_matches(name, &split, &outputs, 1e-5);
    }
}

#[test]
fn the_scaler_pipeline_serves_in_f16_with_the_same_labels() {
    // Scaler + linear model: f16 weights change the probabilities slightly, not the decisions.
    let tmp = tempfile::tempdir().unwrap();
    let name = "breast_cancer_pipeline";
    let model = artifact(name, "f16", tmp.path());
    let (split, outputs) = infer_all(&model, name);
    let labels = &outputs["output_label"]["data"];
    let want = &split.reference["output_label"].data;
    let agree = labels
        .as_array()
        .unwrap()
        .iter()
        .zip(want)
        .filter(|(g, w)| g.as_f64() == Some(**w))
        .count();
    assert!(
        agree * 100 >= want.len() * 99,
        "{agree}/{} labels agree",
        want.len()
    );
    let probs = outputs["output_probability"]["data"].as_array().unwrap();
    for (g, w) in probs
        .iter()
        .zip(&split.reference["output_probability"].data)
    {
        assert!((g.as_f64().unwrap() - w).abs() < 1e-2, "{g} vs {w}");
    }
}
