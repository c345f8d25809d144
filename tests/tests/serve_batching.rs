//! Dynamic batching: concurrent single-row requests are merged into runs of more than one row (read from
//! `tractor_inference_batch_size` on `/metrics`), and every row still gets its own answer back.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, Split, argmax, metric};
use tractor_serve::metrics::BATCH_SIZE;

/// Concurrent clients, each sending one row at a time.
const CLIENTS: usize = 8;

#[test]
fn concurrent_requests_are_merged_and_split_back() {
    // One inference thread, and the first request of a batch waits up to 20 ms for company: the other
    // clients' requests, sent at the same time, arrive well within it.
    let serve = Serve::start(
        "digits_mlp.onnx",
        "digits",
        &[
            "--threads",
            "1",
            "--max-batch-size",
            "8",
            "--max-delay-micros",
            "20000",
        ],
    )
    .unwrap();
    let split = Split::load("digits_mlp").unwrap();
    let rows = split.rows();
    // Each client sends every CLIENTS-th row from its `first_row` on: every row once, CLIENTS requests in
    // flight at a time.
    let answered: Vec<Vec<(usize, usize)>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|first_row| {
                let (split, url) = (&split, serve.model_url("/infer"));
                scope.spawn(move || {
                    let client = Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    (first_row..rows)
                        .step_by(CLIENTS)
                        .map(|row| {
                            let body = json!({"inputs": [{"name": split.input, "shape": [1, split.features], "datatype": "FP32", "data": split.row(row)}], "outputs": [{"name": "probabilities"}]});
                            let resp = client.post(&url).json(&body).send().unwrap();
                            assert_eq!(resp.status(), 200, "row {row}");
                            let resp: Value = resp.json().unwrap();
                            let out = &resp["outputs"][0];
                            assert_eq!(out["shape"], json!([1, 10]), "row {row}: {out}");
                            let probs: Vec<f64> = out["data"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|v| v.as_f64().unwrap())
                                .collect();
                            (row, argmax(&probs))
                        })
                        .collect()
                })
            })
            .collect();
        clients.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // A row answered with another row's scores would disagree with onnxruntime.
    let agreement = split
        .argmax_agreement_at("probabilities", answered.into_iter().flatten())
        .unwrap_or_else(|e| panic!("batched answers: {e:#}"));
    assert_eq!(agreement.agree + agreement.near_ties, rows, "rows answered");

    // Each batch is observed before its answers are sent, so every answer received is already counted.
    let text = serve.metrics().unwrap();
    let series = |suffix: &str, labels: &[(&str, &str)]| {
        metric(&text, &format!("{BATCH_SIZE}{suffix}"), labels)
            .unwrap_or_else(|| panic!("{BATCH_SIZE}{suffix} {labels:?} not in /metrics:\n{text}"))
    };
    let batches = series("_count", &[]);
    let single = series("_bucket", &[("le", "1")]);
    let batched_rows = series("_sum", &[]);
    let largest = ["1", "2", "4", "8", "16"]
        .into_iter()
        .find(|le| series("_bucket", &[("le", le)]) == batches)
        .unwrap_or("more than 16");
    println!(
        "{rows} requests of one row in {batches} batches, {} of more than one row, at most {largest} rows; {agreement}",
        batches - single
    );
    assert_eq!(
        batched_rows, rows as f64,
        "rows counted in batches vs rows sent"
    );
    assert!(
        batches - single > 0.0,
        "no batch of more than one row formed: {batches} batches, all of one row"
    );
}
