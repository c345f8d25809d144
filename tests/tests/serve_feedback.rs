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
    let client = Client::new();
    let split = Split::load("digits_mlp").unwrap();
    let single_rows = 200;
    let mut predicted = Vec::new();
    for row in 0..single_rows {
        let body = json!({"id": format!("req-{row}"), "inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(row)}], "outputs": [{"name": "label"}]});
        let resp: Value = client
            .post(serve.model_url("/infer"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        predicted.push(resp["outputs"][0]["data"][0].as_i64().unwrap());
    }
    // One multi-row request: its feedback is one label per row.
    let rows: Vec<f32> = (single_rows..single_rows + 3)
        .flat_map(|row| split.row(row).to_vec())
        .collect();
    let body = json!({"id": "multi", "inputs": [{"name": split.input, "shape": [3, 64], "datatype": "FP32", "data": rows}], "outputs": [{"name": "label"}]});
    let resp: Value = client
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
            .map(|value| value.as_i64().unwrap()),
    );

    let mut items: Vec<Value> = (0..single_rows)
        .map(|row| json!({"id": format!("req-{row}"), "label": split.y[row]}))
        .collect();
    items.push(json!({"id": "multi", "label": [split.y[single_rows], split.y[single_rows + 1], split.y[single_rows + 2]]}));
    items.push(json!({"id": "never-sent", "label": 1}));
    // Two calls, as a labelling pipeline would send them.
    let second = items.split_off(100);
    let mut totals = (0u64, 0u64, 0u64);
    for batch in [items, second] {
        let resp = client
            .post(serve.model_url("/feedback"))
            .json(&json!({"feedback": batch}))
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
        let summary: Value = resp.json().unwrap();
        totals.0 += summary["correct"].as_u64().unwrap();
        totals.1 += summary["incorrect"].as_u64().unwrap();
        totals.2 += summary["unknown_id"].as_u64().unwrap();
    }
    let expected_correct = predicted
        .iter()
        .zip(&split.y)
        .filter(|(p, y)| p == y)
        .count() as u64;
    assert_eq!(
        totals,
        (
            expected_correct,
            (single_rows as u64 + 3) - expected_correct,
            1
        )
    );
    let accuracy = expected_correct as f64 / (single_rows + 3) as f64;

    let text = client
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
    for name in [
        "tractor_model_precision",
        "tractor_model_recall",
        "tractor_model_f1",
    ] {
        let value = metric(&text, &format!("{name}{{model=\"digits\"}}"));
        assert!(
            (0.0..=1.0).contains(&value) && value > 0.5,
            "{name} = {value}"
        );
    }
    // A repeat of the same id counts as unknown: feedback is taken once per prediction.
    let summary: Value = client
        .post(serve.model_url("/feedback"))
        .json(&json!({"feedback": [{"id": "req-0", "label": 0}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(summary["unknown_id"], 1);
    // A malformed body is a JSON 400.
    let resp = client
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
    let first_replica =
        Serve::start("digits_mlp.onnx", "digits", &["--revision", "3f9a1c0b7e"]).unwrap();
    let second_replica =
        Serve::start("digits_mlp.onnx", "digits", &["--revision", "3f9a1c0b7e"]).unwrap();
    let client = Client::new();
    let split = Split::load("digits_mlp").unwrap();
    let requests = 40;
    let mut items = Vec::new();
    let mut correct = 0;
    for row in 0..requests {
        let body = json!({"inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(row)}], "outputs": [{"name": "label"}]});
        let resp: Value = client
            .post(first_replica.model_url("/infer"))
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
        correct += usize::from(predicted == split.y[row]);
        items.push(json!({"receipt": receipt, "label": split.y[row]}));
    }
    // Another model's receipt and an id only `first_replica` knows are refused by name, not counted.
    items.push(json!({"receipt": "v1:other:3f9a1c0b7e:1:3", "label": 3}));
    items.push(json!({"id": "only-a-knows", "label": 3}));
    let summary: Value = client
        .post(second_replica.model_url("/feedback"))
        .json(&json!({"feedback": items}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(summary["correct"], correct, "{summary}");
    assert_eq!(summary["incorrect"], requests - correct, "{summary}");
    assert_eq!(summary["unknown_id"], 2, "{summary}");
    assert_eq!(
        summary["unknown"],
        json!(["receipt 40: model `other`, not `digits`", "only-a-knows"]),
        "{summary}"
    );
    // The confusion counters on `second_replica` hold every labelled row under the predicting revision.
    let text = second_replica.metrics().unwrap();
    let rows: Vec<(String, f64)> = text
        .lines()
        .filter(|line| line.starts_with("tractor_model_predictions_labelled_total{"))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect();
    let total: f64 = rows.iter().map(|(_, value)| value).sum();
    let right: f64 = rows
        .iter()
        .filter(|(s, _)| s.contains(r#"result="correct""#))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(total, requests as f64, "{rows:?}");
    assert_eq!(right, correct as f64, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(s, _)| s.contains(r#"revision="3f9a1c0b7e""#)),
        "{rows:?}"
    );
    // An item with both an id and a receipt is a JSON 400 naming it.
    let resp = client
        .post(second_replica.model_url("/feedback"))
        .json(&json!({"feedback": [{"id": "x", "receipt": "v1:digits:-:1:3", "label": 3}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().unwrap()["error"],
        "feedback item 0: give either `id` or `receipt` (both given)"
    );
}
