//! Feedback: predictions with ids, true labels sent back in batches, and the accuracy gauge on
//! `/metrics` equal to the accuracy the test computes itself. Receipts: an answer's `tractor_receipt`, sent
//! with its label to another server process of the same model (another replica), is counted there under the
//! revision that predicted it, in the per-revision confusion counters.

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

/// Two processes stand in for two replicas: the point is that the second never saw the request.
#[test]
fn a_receipt_counts_on_a_replica_that_never_saw_the_request() {
    let a = Serve::start("digits_mlp.onnx", "digits", &["--revision", "3f9a1c0b7e"]).unwrap();
    let b = Serve::start("digits_mlp.onnx", "digits", &["--revision", "3f9a1c0b7e"]).unwrap();
    let c = Client::new();
    let split = Split::load("digits_mlp").unwrap();
    let n = 40;
    let mut items = Vec::new();
    let mut correct = 0;
    for i in 0..n {
        let body = json!({"inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(i)}], "outputs": [{"name": "label"}]});
        let resp: Value = c
            .post(a.model_url("/infer"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let predicted = resp["outputs"][0]["data"][0].as_i64().unwrap();
        let receipt = resp["parameters"]["tractor_receipt"]
            .as_str()
            .unwrap_or_else(|| panic!("no receipt: {resp}"))
            .to_owned();
        assert!(
            receipt.starts_with("v1:digits:3f9a1c0b7e:")
                && receipt.ends_with(&format!(":{predicted}")),
            "{receipt}"
        );
        correct += usize::from(predicted == split.y[i]);
        items.push(json!({"receipt": receipt, "label": split.y[i]}));
    }
    // Another model's receipt and an id only `a` knows are refused by name, not counted.
    items.push(json!({"receipt": "v1:other:3f9a1c0b7e:1:3", "label": 3}));
    items.push(json!({"id": "only-a-knows", "label": 3}));
    let s: Value = c
        .post(b.model_url("/feedback"))
        .json(&json!({"feedback": items}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s["correct"], correct, "{s}");
    assert_eq!(s["incorrect"], n - correct, "{s}");
    assert_eq!(s["unknown_id"], 2, "{s}");
    assert_eq!(
        s["unknown"],
        json!(["receipt 40: model `other`, not `digits`", "only-a-knows"]),
        "{s}"
    );
    // The confusion counters on `b` hold every labelled row under the predicting revision.
    let text = b.metrics().unwrap();
    let rows: Vec<(String, f64)> = text
        .lines()
        .filter(|l| l.starts_with("tractor_model_predictions_labelled_total{"))
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), v.parse().unwrap())
        })
        .collect();
    let total: f64 = rows.iter().map(|(_, v)| v).sum();
    let right: f64 = rows
        .iter()
        .filter(|(s, _)| s.contains(r#"result="correct""#))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, n as f64, "{rows:?}");
    assert_eq!(right, correct as f64, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(s, _)| s.contains(r#"revision="3f9a1c0b7e""#)),
        "{rows:?}"
    );
    // An item with both an id and a receipt is a JSON 400 naming it.
    let resp = c
        .post(b.model_url("/feedback"))
        .json(&json!({"feedback": [{"id": "x", "receipt": "v1:digits:-:1:3", "label": 3}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().unwrap()["error"],
        "feedback item 0: give either `id` or `receipt` (both given)"
    );
}
