//! Explain: occlusion attributions per feature, checked against the method's own definition.

#![allow(clippy::unwrap_used)]

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, Split};

#[test]
fn explain_returns_occlusion_attributions() {
    let serve = Serve::start("digits_mlp.onnx", "digits", &[]).unwrap();
    let c = Client::new();
    let split = Split::load("digits_mlp").unwrap();
    let rows: Vec<f32> = (0..2).flat_map(|i| split.row(i).to_vec()).collect();
    let body = json!({"id": "why", "inputs": [{"name": split.input, "shape": [2, 64], "datatype": "FP32", "data": rows}]});
    let resp = c
        .post(serve.model_url("/explain"))
        .json(&body)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
    let e: Value = resp.json().unwrap();
    assert_eq!(e["method"], "occlusion");
    assert_eq!(e["id"], "why");
    let ex = e["explanations"].as_array().unwrap();
    assert_eq!(ex.len(), 2);
    for (r, row_ex) in ex.iter().enumerate() {
        let attributions: Vec<f64> = row_ex["attributions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(attributions.len(), 64);
        // Occluding a feature that already equals the baseline (0) changes nothing.
        for (j, a) in attributions.iter().enumerate() {
            if split.row(r)[j] == 0.0 {
                assert!(a.abs() < 1e-6, "row {r} feature {j}: {a}");
            }
        }
        assert!(
            attributions.iter().any(|a| a.abs() > 1e-4),
            "some pixel matters"
        );
        // The target is the predicted class, and its score is the model's probability for it.
        let resp: Value = c.post(serve.model_url("/infer")).json(&json!({"inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(r)}]})).send().unwrap().json().unwrap();
        assert_eq!(row_ex["target"], resp["outputs"][0]["data"][0]);
    }
    // A bad baseline is a JSON 400.
    let body = json!({"parameters": {"baseline": [1, 2]}, "inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(0)}]});
    let resp = c
        .post(serve.model_url("/explain"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.json::<Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("baseline")
    );
}
