//! `tractor serve` over REST with a Rust client: metadata, inference on the digits test split against
//! onnxruntime, output selection, id echo, versions, the binary extension and every rejection.

#![allow(clippy::unwrap_used)]

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, Split};

fn infer_body(split: &Split, rows: std::ops::Range<usize>, id: Option<&str>) -> Value {
    let data: Vec<f32> = rows.clone().flat_map(|i| split.row(i).to_vec()).collect();
    let mut b = json!({"inputs": [{"name": split.input, "shape": [rows.len(), split.features], "datatype": "FP32", "data": data}]});
    if let Some(id) = id {
        b["id"] = json!(id);
    }
    b
}

#[test]
fn rest_inference_metadata_and_agreement_with_onnxruntime() {
    let serve = Serve::start("digits_mlp.onnx", "digits", &["--max-batch-size", "64"]).unwrap();
    let client = Client::new();
    let split = Split::load("digits_mlp").unwrap();

    let live: Value = client
        .get(format!("{}/v2/health/live", serve.http))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(live["live"], true);
    let ready: Value = client
        .get(format!("{}/v2/health/ready", serve.http))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["ready"], true);
    let server: Value = client
        .get(format!("{}/v2", serve.http))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(server["name"], "tractor");

    let meta: Value = client
        .get(serve.model_url(""))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["name"], "digits");
    assert_eq!(meta["platform"], "tract_onnx");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": split.input, "datatype": "FP32", "shape": [-1, 64]})
    );
    let outputs: Vec<&str> = meta["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["label", "probabilities"]);
    assert_eq!(
        client
            .get(serve.model_url("/versions/1"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(serve.model_url("/ready"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // The whole test split in requests of 50 rows; every row's argmax must be onnxruntime's.
    let reference = split.reference_argmax("probabilities").unwrap();
    let mut answered = Vec::with_capacity(split.rows());
    for start in (0..split.rows()).step_by(50) {
        let end = (start + 50).min(split.rows());
        let resp: Value = client
            .post(serve.model_url("/infer"))
            .json(&infer_body(&split, start..end, Some("batch")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(resp["id"], "batch");
        assert_eq!(resp["model_name"], "digits");
        let labels = resp["outputs"][0]["data"].as_array().unwrap();
        let probs: Vec<f64> = resp["outputs"][1]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(resp["outputs"][1]["shape"], json!([end - start, 10]));
        for (row_ix, row) in probs.chunks(10).enumerate() {
            let am = tractor_e2e::serve::argmax(row);
            assert_eq!(
                labels[row_ix].as_i64().unwrap() as usize,
                am,
                "label output agrees with argmax"
            );
            answered.push(am);
        }
    }
    let agreement = split
        .argmax_agreement("probabilities", &answered)
        .unwrap_or_else(|e| panic!("digits over REST: {e:#}"));
    let correct = answered
        .iter()
        .zip(&split.y)
        .filter(|(a, y)| **a as i64 == **y)
        .count();
    println!(
        "digits over REST: {agreement}; accuracy {:.4}",
        correct as f64 / split.rows() as f64
    );

    // Output selection, nested data, versioned path, no Content-Type at all.
    let row: Vec<Vec<f32>> = vec![split.row(0).to_vec()];
    let body = json!({"id": "one", "inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": row}], "outputs": [{"name": "label"}]});
    let resp = client
        .post(serve.model_url("/versions/1/infer"))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp: Value = resp.json().unwrap();
    assert_eq!(resp["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(resp["outputs"][0]["name"], "label");
    assert_eq!(
        resp["outputs"][0]["data"][0].as_i64().unwrap() as usize,
        reference[0]
    );

    // Binary extension: input in binary, outputs in binary.
    let header = json!({"inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}], "parameters": {"binary_data_output": true}}).to_string();
    let mut body = header.clone().into_bytes();
    for value in split.row(0) {
        body.extend_from_slice(&value.to_le_bytes());
    }
    let resp = client
        .post(serve.model_url("/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let json_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = resp.bytes().unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 40);
    let label = i64::from_le_bytes(bytes[json_len..json_len + 8].try_into().unwrap());
    assert_eq!(label as usize, reference[0]);
    assert_eq!(bytes.len(), json_len + 48);

    // Metrics carry the model label.
    let text = client
        .get(format!("{}/metrics", serve.http))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "tractor_inference_requests_total",
        "tractor_inference_request_duration_seconds",
        "tractor_inference_queue_duration_seconds",
        "tractor_inference_compute_duration_seconds",
        "tractor_inference_batch_size",
        "tractor_inference_in_flight",
        "tractor_model_info",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        text.contains(
            r#"tractor_inference_requests_total{code="200",model="digits",protocol="rest"}"#
        ),
        "{text}"
    );
}

#[test]
fn rest_rejections_are_json_with_the_right_status() {
    let serve = Serve::start(
        "breast_cancer_logreg.onnx",
        "cancer",
        &["--max-body-bytes", "65536"],
    )
    .unwrap();
    let client = Client::new();
    let ok_row = vec![1.0f32; 30];
    // (what, body, extra header, expected status, text the error must contain)
    type Case<'a> = (
        &'a str,
        String,
        Option<(&'a str, &'a str)>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("malformed JSON", "{not json".into(), None, StatusCode::BAD_REQUEST, "malformed"),
        ("null in FP32", json!({"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": [1, null]}]}).to_string(), None, StatusCode::BAD_REQUEST, ""),
        ("true in FP32", json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": vec![true; 30]}]}).to_string(), None, StatusCode::BAD_REQUEST, "not a FP32"),
        ("wrong datatype", json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "INT32", "data": vec![1; 30]}]}).to_string(), None, StatusCode::BAD_REQUEST, "datatype"),
        ("shape/data mismatch", json!({"inputs": [{"name": "X", "shape": [2, 30], "datatype": "FP32", "data": ok_row}]}).to_string(), None, StatusCode::BAD_REQUEST, "needs 60 values"),
        ("huge claimed shape", json!({"inputs": [{"name": "X", "shape": [100000000000i64, 30], "datatype": "FP32", "data": ok_row}]}).to_string(), None, StatusCode::BAD_REQUEST, "needs"),
        ("wrong feature count", json!({"inputs": [{"name": "X", "shape": [1, 29], "datatype": "FP32", "data": vec![1; 29]}]}).to_string(), None, StatusCode::BAD_REQUEST, "does not match"),
        ("unknown output", json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": ok_row}], "outputs": [{"name": "nope"}]}).to_string(), None, StatusCode::BAD_REQUEST, "unknown output"),
        ("text/plain content type still JSON", json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": ok_row}]}).to_string(), Some(("content-type", "text/plain")), StatusCode::OK, ""),
        ("binary header past body", "{}".into(), Some(("inference-header-content-length", "999")), StatusCode::BAD_REQUEST, "larger than the body"),
        ("over the body limit", format!("[{}]", "1,".repeat(40000)), None, StatusCode::PAYLOAD_TOO_LARGE, "larger than"),
    ];
    let input_name = {
        let meta: Value = client
            .get(serve.model_url(""))
            .send()
            .unwrap()
            .json()
            .unwrap();
        meta["inputs"][0]["name"].as_str().unwrap().to_owned()
    };
    for (what, body, header, status, contains) in cases {
        let body = body.replace("\"X\"", &format!("\"{input_name}\""));
        let mut req = client.post(serve.model_url("/infer")).body(body);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), status, "{what}");
        let reply: Value = resp
            .json()
            .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        if status != StatusCode::OK {
            let msg = reply["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no error field in {reply}"));
            assert!(msg.contains(contains), "{what}: {msg}");
        }
    }
    // Unknown model and version: 404 JSON.
    let body = json!({"inputs": [{"name": input_name, "shape": [1, 30], "datatype": "FP32", "data": ok_row}]});
    for url in [
        format!("{}/v2/models/nope/infer", serve.http),
        serve.model_url("/versions/7/infer"),
    ] {
        let resp = client.post(&url).json(&body).send().unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{url}");
        assert!(resp.json::<Value>().unwrap()["error"].is_string());
    }
    let resp = client
        .get(format!("{}/v2/models/nope", serve.http))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = client.get(serve.model_url("/infer")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.json::<Value>().unwrap()["error"].is_string());
    // The process survived all of it.
    assert_eq!(
        client
            .get(format!("{}/v2/health/live", serve.http))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn rest_bearer_token_is_required_when_configured() {
    let dir = std::env::temp_dir().join(format!("tractor-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let serve = Serve::start(
        "breast_cancer_logreg.onnx",
        "cancer",
        &["--auth-token-file", token_file.to_str().unwrap()],
    )
    .unwrap();
    let client = Client::new();
    let resp = client.get(serve.model_url("")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.json::<Value>().unwrap()["error"].is_string());
    assert_eq!(
        client
            .get(serve.model_url(""))
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client
            .get(serve.model_url(""))
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Probes and metrics stay open so kubelet and Prometheus need no token.
    assert_eq!(
        client
            .get(format!("{}/v2/health/ready", serve.http))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(format!("{}/metrics", serve.http))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let _ = std::fs::remove_dir_all(dir);
}
