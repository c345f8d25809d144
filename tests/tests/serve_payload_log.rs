//! Payload logging: `tractor serve --log-url` POSTs each sampled call as two CloudEvents (request, response) in
//! `application/cloudevents-batch+json` batches to an HTTP sink on loopback, whose content matches what was sent
//! and answered over REST and gRPC; a sink that accepts connections and never answers costs no request its answer,
//! and `tractor_payload_log_records_total` accounts for every record; a bad URL stops the server at start-up.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tractor_api::metrics::{LOG_QUEUE_FULL, LOG_SENT, LOG_SINK_ERROR, OUTCOME};
use tractor_e2e::serve::{Serve, Split, metric};
use tractor_e2e::sink::Sink;
use tractor_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use tractor_serve::grpc::proto::model_infer_request::InferInputTensor;
use tractor_serve::grpc::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use tractor_serve::payload_log::{
    BATCH_CONTENT_TYPE, EXT_CODE, EXT_INFERENCE_ID, EXT_MODEL, EXT_PROTOCOL, TYPE_REQUEST,
    TYPE_RESPONSE,
};

/// Calls per protocol.
const CALLS: usize = 12;
/// The CloudEvents `source` the test passes, as the operator would.
const SOURCE: &str = "/apis/serving.tractor.dev/v1alpha1/namespaces/test/modeldeployments/digits";
/// Long enough for any batch on a loaded CI machine; the waits end as soon as their condition holds.
const WAIT: Duration = Duration::from_secs(60);

/// `tractor_payload_log_records_total` of `outcome`.
fn records(serve: &Serve, outcome: &str) -> anyhow::Result<f64> {
    let text = serve.metrics()?;
    metric(
        &text,
        "tractor_payload_log_records_total",
        &[("model", "digits"), (OUTCOME, outcome)],
    )
    .with_context(|| format!("no {outcome} series in\n{text}"))
}

/// Poll `/metrics` until `done` holds for (sent, queue_full, sink_error), at most [`WAIT`].
fn wait_counts(
    serve: &Serve,
    done: impl Fn(f64, f64, f64) -> bool,
) -> anyhow::Result<(f64, f64, f64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = (
            records(serve, LOG_SENT)?,
            records(serve, LOG_QUEUE_FULL)?,
            records(serve, LOG_SINK_ERROR)?,
        );
        if done(counts.0, counts.1, counts.2) {
            return Ok(counts);
        }
        if Instant::now() > deadline {
            bail!("payload log counters still at {counts:?} after {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn grpc_request(split: &Split, row: usize, id: &str, features: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "digits".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: split.input.clone(),
            datatype: "FP32".into(),
            shape: vec![1, features as i64],
            contents: Some(InferTensorContents {
                fp32_contents: split.row(row)[..features].to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The outputs of a gRPC answer as the V2 JSON the log writes: `[{name, datatype, shape, data}]`.
fn grpc_outputs(resp: &ModelInferResponse) -> anyhow::Result<Value> {
    let mut outputs = Vec::new();
    for (out, raw) in resp.outputs.iter().zip(&resp.raw_output_contents) {
        let data: Vec<Value> = match out.datatype.as_str() {
            "FP32" => raw
                .chunks_exact(4)
                .map(|b| json!(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            "INT64" => raw
                .chunks_exact(8)
                .map(|b| json!(i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
                .collect(),
            other => bail!("output {} is {other}", out.name),
        };
        outputs.push(
            json!({"name": out.name, "datatype": out.datatype, "shape": out.shape, "data": data}),
        );
    }
    Ok(Value::Array(outputs))
}

/// A row's values as the log writes them (f32 numbers through JSON).
fn row_json(split: &Split, row: usize) -> Value {
    json!(split.row(row))
}

/// `got` equals `want`, numbers compared as the f32 they carry: JSON text parsed back may differ from the
/// f64 written in the last bit, never in the f32 it came from.
fn same_tensors(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => a.as_f64().map(|v| v as f32) == b.as_f64().map(|v| v as f32),
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_tensors(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_tensors(v, w)))
        }
        _ => got == want,
    }
}

fn event<'a>(events: &'a [Value], inference_id: &str, kind: &str) -> anyhow::Result<&'a Value> {
    let mut found = events
        .iter()
        .filter(|e| e[EXT_INFERENCE_ID] == inference_id && e["type"] == kind);
    let first = found
        .next()
        .with_context(|| format!("no {kind} record for {inference_id}"))?;
    ensure!(
        found.next().is_none(),
        "two {kind} records for {inference_id}"
    );
    Ok(first)
}

#[test]
fn each_call_is_logged_as_a_request_and_a_response_matching_what_was_sent_and_answered()
-> anyhow::Result<()> {
    let sink = Sink::start("127.0.0.1", true)?;
    let url = sink.url();
    let mut serve = Serve::start(
        "digits_mlp.onnx",
        "digits",
        &["--log-url", &url, "--log-source", SOURCE],
    )?;
    let split = Split::load("digits_mlp")?;
    let client = Client::new();
    let mut answers = BTreeMap::new();
    for row in 0..CALLS {
        let id = format!("rest-{row}");
        let body = json!({"id": id, "inputs": [{"name": split.input, "shape": [1, split.features], "datatype": "FP32", "data": split.row(row)}]});
        let resp = client.post(serve.model_url("/infer")).json(&body).send()?;
        ensure!(resp.status().is_success(), "{id}: {}", resp.status());
        let answer: Value = resp.json()?;
        answers.insert(id, (row, answer["outputs"].clone()));
    }
    // A call that fails: its response record carries the error and the status.
    let bad = json!({"id": "rest-bad", "inputs": [{"name": split.input, "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let resp = client.post(serve.model_url("/infer")).json(&bad).send()?;
    ensure!(resp.status().as_u16() == 400, "{}", resp.status());
    let bad_error = resp.json::<Value>()?["error"].clone();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bad_grpc_error = rt.block_on(async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", serve.grpc_port))?
            .connect()
            .await?;
        let mut grpc = GrpcInferenceServiceClient::new(channel);
        for row in CALLS..2 * CALLS {
            let id = format!("grpc-{row}");
            let resp = grpc
                .model_infer(grpc_request(&split, row, &id, split.features))
                .await?
                .into_inner();
            answers.insert(id, (row, grpc_outputs(&resp)?));
        }
        let status = grpc
            .model_infer(grpc_request(&split, 0, "grpc-bad", 3))
            .await
            .expect_err("a short row is refused");
        anyhow::Ok(status.message().to_owned())
    })?;
    // Its connection's task lives on this runtime: dropped here, so the connection closes instead of idling
    // unpolled and holding the server's graceful shutdown.
    drop(rt);

    let calls = 2 * CALLS + 2;
    let events = sink.wait_for(2 * calls, WAIT, BATCH_CONTENT_TYPE)?;
    // Exactly: the sink holds every record the server counts as sent, and the server counts one per call side.
    let (sent, full, failed) = wait_counts(&serve, |sent, _, _| sent >= (2 * calls) as f64)?;
    assert_eq!((sent, full, failed), ((2 * calls) as f64, 0.0, 0.0));
    assert_eq!(events.len(), 2 * calls);
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every record has its own id");
    for record in &events {
        assert_eq!(record["specversion"], "1.0", "{record}");
        assert_eq!(record["source"], SOURCE, "{record}");
        assert_eq!(record["datacontenttype"], "application/json", "{record}");
        assert_eq!(record[EXT_MODEL], "digits", "{record}");
        assert!(
            record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{record}"
        );
    }

    for (id, (row, outputs)) in &answers {
        let protocol = if id.starts_with("rest") {
            "rest"
        } else {
            "grpc"
        };
        let request = event(&events, id, TYPE_REQUEST)?;
        assert_eq!(request[EXT_PROTOCOL], protocol, "{request}");
        let sent = json!({"id": id, "inputs": [{"name": split.input, "datatype": "FP32",
            "shape": [1, split.features], "data": row_json(&split, *row)}]});
        assert!(
            same_tensors(&request["data"], &sent),
            "{id}: logged {} sent {sent}",
            request["data"]
        );
        let response = event(&events, id, TYPE_RESPONSE)?;
        assert_eq!(response[EXT_PROTOCOL], protocol, "{response}");
        assert_eq!(
            response[EXT_CODE],
            if protocol == "rest" { "200" } else { "OK" }
        );
        assert_eq!(response["data"]["id"], id.as_str());
        assert_eq!(response["data"]["model_name"], "digits");
        assert!(
            same_tensors(&response["data"]["outputs"], outputs),
            "{id}: logged {} answered {outputs}",
            response["data"]["outputs"]
        );
        assert!(
            response["data"]["parameters"]["tractor_receipt"].is_string(),
            "{response}"
        );
    }
    // The refused calls, found by their status: the gRPC one by the id it sent, the REST one by a generated id
    // (its body never decoded, so its `id` was never read).
    for (protocol, code, error, id) in [
        ("rest", "400", bad_error, None),
        (
            "grpc",
            "INVALID_ARGUMENT",
            json!(bad_grpc_error),
            Some("grpc-bad"),
        ),
    ] {
        let failed: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == TYPE_RESPONSE && e[EXT_CODE] == code)
            .collect();
        let [response] = failed[..] else {
            bail!("{} {protocol} responses with code {code}", failed.len());
        };
        assert_eq!(response[EXT_PROTOCOL], protocol, "{response}");
        assert_eq!(response["data"], json!({"error": error}), "{response}");
        let inference_id = response[EXT_INFERENCE_ID].as_str().context("inferenceid")?;
        if let Some(id) = id {
            assert_eq!(inference_id, id);
        }
        let request = event(&events, inference_id, TYPE_REQUEST)?;
        assert_eq!(request["data"]["inputs"], json!([]), "{request}");
    }

    serve.sigterm()?;
    let status = serve.wait_exit(WAIT)?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn a_sink_that_never_answers_costs_no_answer_and_every_record_is_counted() -> anyhow::Result<()> {
    let sink = Sink::start("127.0.0.1", false)?;
    let url = sink.url();
    let mut serve = Serve::start("digits_mlp.onnx", "digits", &["--log-url", &url])?;
    let split = Split::load("digits_mlp")?;
    let client = Client::new();
    for row in 0..CALLS {
        let body = json!({"inputs": [{"name": split.input, "shape": [1, split.features], "datatype": "FP32", "data": split.row(row)}]});
        let resp = client.post(serve.model_url("/infer")).json(&body).send()?;
        ensure!(resp.status().is_success(), "row {row}: {}", resp.status());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", serve.grpc_port))?
            .connect()
            .await?;
        let mut grpc = GrpcInferenceServiceClient::new(channel);
        for row in 0..CALLS {
            grpc.model_infer(grpc_request(&split, row, "", split.features))
                .await?;
        }
        anyhow::Ok(())
    })?;
    drop(rt);
    let records_logged = (4 * CALLS) as f64;
    let (sent, full, failed) = wait_counts(&serve, |sent, full, failed| {
        sent + full + failed >= records_logged
    })?;
    println!("hanging sink: {sent} sent, {full} queue_full, {failed} sink_error");
    assert_eq!(sent, 0.0);
    assert_eq!(full + failed, records_logged);

    // Records still pending at SIGTERM do not hold the exit past the flush bound.
    let body = json!({"inputs": [{"name": split.input, "shape": [1, split.features], "datatype": "FP32", "data": split.row(0)}]});
    let resp = client.post(serve.model_url("/infer")).json(&body).send()?;
    ensure!(resp.status().is_success(), "{}", resp.status());
    serve.sigterm()?;
    let status = serve.wait_exit(WAIT)?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn a_bad_log_url_stops_the_server_at_start_up() {
    for (url, says) in [
        ("ftp://sink/events", "scheme must be http or https"),
        ("sink:8080", "scheme must be http or https"),
        ("not a url", "is not a URL"),
    ] {
        let error = match Serve::start("digits_mlp.onnx", "digits", &["--log-url", url]) {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(says), "{url}: {error}");
    }
    let error = match Serve::start(
        "digits_mlp.onnx",
        "digits",
        &["--log-url", "http://127.0.0.1:9/", "--log-sample-rate", "2"],
    ) {
        Ok(_) => panic!("sample rate 2 accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("not a number from 0 to 1"), "{error}");
}
