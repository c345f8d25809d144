//! XGBoost through onnxmltools (tests/fixtures/make_tf_models.py: a classifier on breast_cancer, a regressor on
//! diabetes): each optimizes with `tractor optimize` and serves with `tractor serve`, giving xgboost's own
//! `predict` and `predict_proba` on the whole test split within 1e-5 relative, and its labels exactly.

#![allow(clippy::unwrap_used)]

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::optimize::{fixtures, optimize};
use tractor_e2e::serve::{Serve, Split};

/// The bar: xgboost's own answers within 1e-5, relative, with an absolute floor of 1e-5 near zero.
const TOLERANCE: f64 = 1e-5;

/// `|got - want| <= tol * max(|want|, 1)`.
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOLERANCE * want.abs().max(1.0)
}

#[test]
fn xgboost_classifier_and_regressor_serve_xgboosts_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["breast_cancer_xgb", "diabetes_xgb"] {
        let out = tmp.path().join(name);
        let src = fixtures().join(format!("{name}.onnx"));
        let run = optimize(
            &out,
            &["--source", src.to_str().unwrap(), "--precision", "f32"],
            &[],
        )
        .unwrap();
        assert_eq!(run.code, 0, "{name}: {}\n{}", run.report, run.stderr);
        let model = out.join("model.nnef.tgz").display().to_string();
        let split = Split::load(name).unwrap();
        let serve = Serve::start(&model, name, &["--max-batch-size", "256"]).unwrap();
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
            .unwrap_or_else(|| panic!("{name}: {resp}"));
        let names: Vec<&str> = outputs
            .iter()
            .map(|output| output["name"].as_str().unwrap())
            .collect();
        let want_names: Vec<&str> = split.reference.keys().map(String::as_str).collect();
        assert_eq!(names, want_names, "{name}: output names");
        let mut worst = 0.0f64;
        for output in outputs {
            let out_name = output["name"].as_str().unwrap();
            let want = &split.reference[out_name];
            assert_eq!(output["shape"], json!(want.shape), "{name}/{out_name}");
            let integer = matches!(output["datatype"].as_str(), Some("INT64" | "INT32"));
            let got: Vec<f64> = output["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let bad: Vec<_> = got
                .iter()
                .zip(&want.data)
                .enumerate()
                .filter(|(_, (served, expected))| {
                    if integer {
                        served != expected
                    } else {
                        !close(**served, **expected)
                    }
                })
                .take(5)
                .collect();
            assert!(
                bad.is_empty(),
                "{name}/{out_name}: (row, (tractor, xgboost)) {bad:?}"
            );
            worst = got
                .iter()
                .zip(&want.data)
                .map(|(served, expected)| (served - expected).abs() / expected.abs().max(1.0))
                .fold(worst, f64::max);
        }
        eprintln!("{name}: largest difference from xgboost {worst:e} (relative, floor 1)");
    }
}
