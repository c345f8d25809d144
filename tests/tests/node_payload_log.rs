//! Payload logging on real pods: the chart's operator in-cluster turns `monitoring.logging` into the servers'
//! flags; two replicas on the real node answer calls sent through the model's Service, and every call reaches an
//! HTTP sink (this test's, on the cluster's host address, which pods reach over the node's bridge) as a request
//! and a response CloudEvent whose content is what was sent and answered. Prometheus, from what it scraped of
//! the pods, counts every record sent.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tractor_api::metrics::{LOG_SENT, OUTCOME, PAYLOAD_LOG_RECORDS};
use tractor_e2e::cluster::{HOST_IP, TestNamespace, wait_for};
use tractor_e2e::modeldeployment::apply_as_is;
use tractor_e2e::node::{
    NODE_WAIT, infer_body, model_configmap, operator, pods_summary, real_node,
    restricted_namespace, service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::serve::Split;
use tractor_e2e::sink::Sink;
use tractor_serve::payload_log::{
    BATCH_CONTENT_TYPE, EXT_CODE, EXT_INFERENCE_ID, EXT_MODEL, TYPE_REQUEST, TYPE_RESPONSE,
};

/// Calls sent through the Service, each with its own id and row.
const CALLS: usize = 20;

fn md(ns: &TestNamespace, sha: &str, sink: &str) -> Value {
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": "configmap://digits-model/digits_mlp.onnx", "sha256": sha},
            "optimize": {"precision": "f32"},
            "serving": {"replicas": 2},
            "monitoring": {"logging": {"url": sink, "sampleRate": 1.0}},
        },
    })
}

#[test]
fn every_call_through_the_service_reaches_the_sink_as_a_request_and_a_response() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-payload")?;
    let _op = operator(cluster, &ns)?;
    let sink = Sink::start(HOST_IP, true)?;
    let sha = model_configmap(&ns, "digits-model", "digits_mlp.onnx")?;
    apply_as_is(&ns, &md(&ns, &sha, &sink.url()))?;
    wait_model_ready(&ns, "digits")?;
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    // A new connection per call, so kube-proxy spreads them over both replicas.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()?;
    wait_serving("an answer through the ClusterIP", || {
        let response = client
            .post(format!("{url}/v2/models/digits/infer"))
            .json(&json!({"id": "warm-up", "inputs": infer_body(&split, 0..1)["inputs"]}))
            .send()?;
        ensure!(response.status().is_success(), "{}", response.status());
        Ok(())
    })?;
    // Records of the warm-up calls (one per try) arrive too; the test reads its own calls' by id.
    let mut answers = BTreeMap::new();
    for call in 0..CALLS {
        let id = format!("node-{call}");
        let body = json!({"id": id, "inputs": infer_body(&split, call..call + 1)["inputs"]});
        let answer: Value = client
            .post(format!("{url}/v2/models/digits/infer"))
            .json(&body)
            .send()?
            .error_for_status()?
            .json()?;
        answers.insert(id, (body, answer));
    }

    let events = wait_for(NODE_WAIT, "every call's two records at the sink", || {
        let events = sink.wait_for(0, Duration::ZERO, BATCH_CONTENT_TYPE)?;
        let ours = events
            .iter()
            .filter(|event| {
                event[EXT_INFERENCE_ID]
                    .as_str()
                    .is_some_and(|id| answers.contains_key(id))
            })
            .count();
        Ok((ours >= 2 * CALLS).then_some(events))
    })
    .with_context(|| pods_summary(&ns))?;
    let source = format!(
        "/apis/serving.tractor.dev/v1alpha1/namespaces/{}/modeldeployments/digits",
        ns.name()
    );
    for (id, (sent, answered)) in &answers {
        let of = |kind: &str| -> Result<&Value> {
            let found: Vec<&Value> = events
                .iter()
                .filter(|e| e[EXT_INFERENCE_ID] == id.as_str() && e["type"] == kind)
                .collect();
            ensure!(found.len() == 1, "{id}: {} {kind} records", found.len());
            Ok(found[0])
        };
        let request = of(TYPE_REQUEST)?;
        ensure!(request["source"] == source.as_str(), "{request}");
        ensure!(request[EXT_MODEL] == "digits", "{request}");
        let logged = &request["data"]["inputs"][0];
        ensure!(logged["shape"] == json!([1, split.features]), "{logged}");
        let values: Vec<f32> = serde_json::from_value(logged["data"].clone())?;
        let wanted: Vec<f32> = serde_json::from_value(sent["inputs"][0]["data"].clone())?;
        ensure!(values == wanted, "{id}: logged {values:?}, sent {wanted:?}");
        let response = of(TYPE_RESPONSE)?;
        ensure!(response[EXT_CODE] == "200", "{response}");
        ensure!(
            response["data"]["outputs"] == answered["outputs"],
            "{id}: logged {} answered {}",
            response["data"]["outputs"],
            answered["outputs"]
        );
    }

    // What Prometheus scraped of the pods: at least every record of the test's calls sent, none dropped.
    let selector = format!("namespace=\"{}\",model=\"digits\"", ns.name());
    let sent = wait_for(NODE_WAIT, "the sent records in Prometheus", || {
        let sent = cluster
            .prometheus_value(&format!(
                "sum({PAYLOAD_LOG_RECORDS}{{{selector},{OUTCOME}=\"{LOG_SENT}\"}})"
            ))?
            .unwrap_or(0.0);
        Ok((sent >= (2 * CALLS) as f64).then_some(sent))
    })?;
    let dropped = cluster
        .prometheus_value(&format!(
            "sum({PAYLOAD_LOG_RECORDS}{{{selector},{OUTCOME}!=\"{LOG_SENT}\"}})"
        ))?
        .unwrap_or(0.0);
    println!(
        "payload log on the real node: {} events at the sink, {sent} sent per Prometheus, {dropped} dropped",
        events.len()
    );
    ensure!(dropped == 0.0, "{dropped} records dropped");
    Ok(())
}
