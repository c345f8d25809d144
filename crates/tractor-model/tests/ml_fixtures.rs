//! Every tabular fixture (tests/fixtures/make_tabular_models.py) loads through tractor's ONNX loader and gives
//! onnxruntime's outputs on its whole test split, batched and row by row.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use tractor_model::Tensor;

/// Fixtures whose every op tractor runs.
const FIXTURES: &[&str] = &[
    "breast_cancer_pipeline",
    "diabetes_gbr",
    "diabetes_rf",
    "iris_rf",
    "breast_cancer_lgbm",
    "iris_svc",
    "diabetes_svr",
    "iris_encoders",
    // XGBoost through onnxmltools; references from xgboost's own predict (tests/fixtures/make_tf_models.py).
    "breast_cancer_xgb",
    "diabetes_xgb",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// `|got - want| <= 1e-5 * max(|want|, 1)`: relative, with an absolute floor for scores near zero.
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

fn check(name: &str) {
    let split: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}_test.json"))).unwrap(),
    )
    .unwrap();
    let features = split["features"].as_u64().unwrap() as usize;
    let data: Vec<f32> = split["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap() as f32)
        .collect();
    let rows = data.len() / features;
    let model = tractor_model::load(&fixtures().join(format!("{name}.onnx")), None)
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    let runner = model.runner(256).unwrap();
    let mut session = runner.session();
    let input = Tensor::from_shape(&[rows, features], &data).unwrap();
    let outputs = session.run(vec![input]).unwrap();
    let names: Vec<String> = model
        .signature()
        .outputs
        .iter()
        .map(|output| output.name.clone())
        .collect();
    let reference = split["reference"].as_object().unwrap();
    assert_eq!(
        names.iter().collect::<std::collections::BTreeSet<_>>(),
        reference.keys().collect(),
        "{name}: output names"
    );
    for (out_name, got) in names.iter().zip(outputs) {
        let want = &reference[out_name];
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.shape(), shape, "{name}/{out_name}: shape");
        let got = got.cast_to::<f64>().unwrap();
        let got = got.try_as_plain_ram().unwrap();
        let got = got.as_slice::<f64>().unwrap();
        let want: Vec<f64> = want["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap())
            .collect();
        let bad: Vec<_> = got
            .iter()
            .zip(&want)
            .enumerate()
            .filter(|(_, (got_value, want_value))| !close(**got_value, **want_value))
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "{name}/{out_name}: (index, (tract, onnxruntime)) {bad:?}"
        );
    }
}

#[test]
fn tabular_fixtures_match_onnxruntime() {
    for name in FIXTURES {
        check(name);
    }
}
