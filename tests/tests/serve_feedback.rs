//! Feedback: predictions with ids, true labels sent back in batches, and the accuracy gauge on
//! `/metrics` equal to the accuracy the test computes itself.

#![allow(clippy::unwrap_used)]

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, Split};

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} not in metrics"))
}

#[test]
fn feedback_drives_the_accuracy_gauge() {
    let serve = Serve::start("digits_mlp.onnx", "digits", &[]).unwrap();
    let c = Client::new();
    let split = Split::load("digits_mlp").unwrap();
    let n = 200;
    let mut predicted = Vec::new();
    for i in 0..n {
        let body = json!({"id": format!("req-{i}"), "inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(i)}], "outputs": [{"name": "label"}]});
        let resp: Value = c
            .post(serve.model_url("/infer"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        predicted.push(resp["outputs"][0]["data"][0].as_i64().unwrap());
    }
    // One multi-row request: its feedback is one label per row.
    let rows: Vec<f32> = (n..n + 3).flat_map(|i| split.row(i).to_vec()).collect();
    let body = json!({"id": "multi", "inputs": [{"name": split.input, "shape": [3, 64], "datatype": "FP32", "data": rows}], "outputs": [{"name": "label"}]});
    let resp: Value = c
        .post(serve.model_url("/infer"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    predicted.extend(
        resp["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap()),
    );

    let mut items: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("req-{i}"), "label": split.y[i]}))
        .collect();
    items.push(json!({"id": "multi", "label": [split.y[n], split.y[n + 1], split.y[n + 2]]}));
    items.push(json!({"id": "never-sent", "label": 1}));
    // Two calls, as a labelling pipeline would send them.
    let second = items.split_off(100);
    let mut totals = (0u64, 0u64, 0u64);
    for batch in [items, second] {
        let resp = c
            .post(serve.model_url("/feedback"))
            .json(&json!({"feedback": batch}))
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
        let s: Value = resp.json().unwrap();
        totals.0 += s["correct"].as_u64().unwrap();
        totals.1 += s["incorrect"].as_u64().unwrap();
        totals.2 += s["unknown_id"].as_u64().unwrap();
    }
    let expected_correct = predicted
        .iter()
        .zip(&split.y)
        .filter(|(p, y)| p == y)
        .count() as u64;
    assert_eq!(
        totals,
        (expected_correct, (n as u64 + 3) - expected_correct, 1)
    );
    let accuracy = expected_correct as f64 / (n + 3) as f64;

    let text = c
        .get(format!("{}/metrics", serve.http))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let gauge = metric(&text, r#"tractor_model_accuracy{model="digits"}"#);
    println!("feedback: test-computed accuracy {accuracy:.4}, gauge {gauge:.4}");
    assert!(
        (gauge - accuracy).abs() < 1e-9,
        "gauge {gauge} vs {accuracy}"
    );
    assert_eq!(
        metric(
            &text,
            r#"tractor_model_feedback_total{model="digits",result="correct"}"#
        ) as u64,
        expected_correct
    );
    assert_eq!(
        metric(
            &text,
            r#"tractor_model_feedback_total{model="digits",result="unknown_id"}"#
        ) as u64,
        1
    );
    for m in [
        "tractor_model_precision",
        "tractor_model_recall",
        "tractor_model_f1",
    ] {
        let v = metric(&text, &format!("{m}{{model=\"digits\"}}"));
        assert!((0.0..=1.0).contains(&v) && v > 0.5, "{m} = {v}");
    }
    // A repeat of the same id counts as unknown: feedback is taken once per prediction.
    let s: Value = c
        .post(serve.model_url("/feedback"))
        .json(&json!({"feedback": [{"id": "req-0", "label": 0}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s["unknown_id"], 1);
    // A malformed body is a JSON 400.
    let resp = c
        .post(serve.model_url("/feedback"))
        .body("{\"feedback\": [{\"id\": 1}]}")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().unwrap()["error"].is_string());
}
