//! Canaries on real pods, the user's path: the chart's operator runs in-cluster under its ServiceAccount, the
//! stable and the canary revision of the digits model are served by real pods on the real node behind the
//! model's Service, the cluster's Prometheus finds them through Kubernetes service discovery, and every
//! request goes through the Service's ClusterIP on a new connection (a kept-alive one would stay on one pod).
//!
//! - During a 50 % step (one stable pod, one canary pod) each response names the revision that answered;
//!   over 400 requests the canary's share is within 3σ of its share of the Service's ready pods. Then the
//!   canary passes its analysis (latency, errors, and accuracy from labels sent through the Service) and is
//!   promoted.
//! - A canary whose pods hold every request for a 250 ms batching window breaks a 100 ms p95 limit and is
//!   rolled back; the stable revision serves throughout.
//! - A canary of the shuffled-labels model, under a `minAccuracy` analysis, is rolled back on its own
//!   accuracy: a client sends requests and then their labels (by receipt) through the Service, so the
//!   feedback lands on either revision's pod, and the per-revision counters Prometheus adds up say whose
//!   predictions were wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_api::names::HEADER_REVISION;
use tractor_e2e::canary::{
    Outcome, assert_rolled_back, current_revision, exists, template_revision, wait_outcome,
};
use tractor_e2e::cluster::{TestNamespace, wait_for};
use tractor_e2e::modeldeployment::{apply_as_is, get};
use tractor_e2e::node::{
    LabelledTraffic, NODE_WAIT, infer_body, operator, programmed_endpoints, ready_server_pods,
    real_node, restricted_namespace, service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{Load, condition, events};
use tractor_e2e::serve::Split;

/// Requests sent one by one during the 50 % step to measure the split.
const SHARE_REQUESTS: usize = 400;

/// The digits MLP from key `key` of ConfigMap `digits-model` (two keys, the same bytes: two revisions of one
/// model), two replicas, rolled out as a one-step 50 % canary held for `pause` under `analysis`; `serving`
/// adds to `spec.serving`.
fn canary_md(
    ns: &TestNamespace,
    key: &str,
    sha: &str,
    pause: &str,
    analysis: Value,
    serving: Value,
) -> Value {
    let mut spec_serving = json!({"replicas": 2});
    if let (Some(base), Some(extra)) = (spec_serving.as_object_mut(), serving.as_object()) {
        base.extend(extra.clone());
    }
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": format!("configmap://digits-model/{key}"), "sha256": sha},
            "optimize": {"precision": "f32"},
            "serving": spec_serving,
            "rollout": {
                "strategy": "Canary",
                "canary": {"steps": [{"weight": 50, "pause": pause}], "analysis": analysis},
            },
        },
    })
}

/// A running scenario: revision 1 Ready and serving, the operator in-cluster, load through the Service.
struct Scenario {
    ns: TestNamespace,
    _op: Operator,
    /// sha256 of `v2.onnx`.
    sha2: String,
    first: String,
    url: String,
    _load: Load,
}

/// Serves revision 1 (`v1.onnx`, the digits MLP) under `analysis`, then keeps 10 requests/s going through the
/// Service. `v2.onnx`, revision 2's model, is the fixture `v2`.
fn serve_first(prefix: &str, analysis: &Value, v2: &str) -> Result<Scenario> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, prefix)?;
    let op = operator(cluster, &ns)?;
    let model = tractor_e2e::paths::fixtures().join("digits_mlp.onnx");
    let model2 = tractor_e2e::paths::fixtures().join(v2);
    ns.kubectl(&[
        "create".as_ref(),
        "configmap".as_ref(),
        "digits-model".as_ref(),
        format!("--from-file=v1.onnx={}", model.display()).as_ref(),
        format!("--from-file=v2.onnx={}", model2.display()).as_ref(),
    ] as &[&std::ffi::OsStr])?;
    let sha = tractor_e2e::optimize::sha256(&model)?;
    let sha2 = tractor_e2e::optimize::sha256(&model2)?;
    apply_as_is(
        &ns,
        &canary_md(&ns, "v1.onnx", &sha, "60s", analysis.clone(), json!({})),
    )?;
    wait_model_ready(&ns, "digits")?;
    ensure!(
        !exists(&ns, "digits-canary")?,
        "no canary for a first revision"
    );
    let first = current_revision(&ns, "digits")?;
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    let client = Client::builder().timeout(Duration::from_secs(5)).build()?;
    wait_serving("an answer through the ClusterIP", || {
        tractor_e2e::node::infer_argmax(&client, &url, "digits", &split, 0..1)
    })?;
    // Latency and error-rate analysis needs requests on both sides: 10/s spread over the Service's pods.
    let load = Load::start_spread(format!("{url}/v2/models/digits/infer"), 10.0)?;
    Ok(Scenario {
        ns,
        _op: op,
        sha2,
        first,
        url,
        _load: load,
    })
}

/// Applies revision 2 (`v2.onnx`) and waits until its canary pod and a stable pod are both Ready behind the
/// Service at the 50 % step; returns the canary's revision.
fn start_canary(s: &Scenario, pause: &str, analysis: Value, serving: Value) -> Result<String> {
    let ns = &s.ns;
    apply_as_is(
        ns,
        &canary_md(ns, "v2.onnx", &s.sha2, pause, analysis, serving),
    )?;
    let second = wait_for(NODE_WAIT, "a canary at 50 % in status", || {
        let md = get(ns, "digits")?;
        let r = &md["status"]["revision"];
        Ok(r["canary"].as_str().map(str::to_owned).filter(|c| {
            *c != s.first && r["canaryWeight"] == 50 && r["stable"].as_str() == Some(&s.first)
        }))
    })?;
    ensure!(template_revision(ns, "digits-canary")?.as_deref() == Some(second.as_str()));
    ensure!(
        template_revision(ns, "digits")?.as_deref() == Some(s.first.as_str()),
        "the stable Deployment keeps revision 1 during the canary"
    );
    ensure!(
        condition(ns, "digits", "Ready")?["reason"] == "CanaryAnalysis",
        "Ready during the canary: {}",
        condition(ns, "digits", "Ready")?
    );
    Ok(second)
}

/// The Service's ready endpoints per revision (from its EndpointSlices and the pods' labels), and their IPs.
fn ready_endpoints(ns: &TestNamespace) -> Result<(BTreeMap<String, usize>, Vec<String>)> {
    let revisions: BTreeMap<String, String> =
        ns.kubectl_json(&["get", "pods", "-l", "serving.tractor.dev/model=digits"])?["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pod| {
                Some((
                    pod["status"]["podIP"].as_str()?.to_owned(),
                    pod["metadata"]["labels"]["serving.tractor.dev/revision"]
                        .as_str()?
                        .to_owned(),
                ))
            })
            .collect();
    let slices = ns.kubectl_json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=digits",
    ])?;
    let mut out = BTreeMap::new();
    let mut ips = vec![];
    for endpoint in slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
    {
        if endpoint["conditions"]["ready"] != true {
            continue;
        }
        for ip in endpoint["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let rev = revisions
                .get(ip)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            *out.entry(rev).or_default() += 1;
            ips.push(ip.to_owned());
        }
    }
    ips.sort();
    Ok((out, ips))
}

/// The Service's ready endpoints per revision.
fn ready_endpoints_by_revision(ns: &TestNamespace) -> Result<BTreeMap<String, usize>> {
    Ok(ready_endpoints(ns)?.0)
}

#[test]
fn a_canary_gets_its_pod_share_of_service_traffic_and_is_promoted() -> Result<()> {
    let analysis = json!({"maxLatencyMillis": 1000, "maxErrorRate": 0.05, "minAccuracy": 0.8, "failureLimit": 1});
    let scenario = serve_first("node-canary-good", &analysis, "digits_mlp.onnx")?;
    let ns = &scenario.ns;
    // Labels for the accuracy gate, by receipt through the Service (a second client: the share below counts
    // only its own requests).
    let _labelled = LabelledTraffic::start(scenario.url.clone(), 5.0)?;
    // A long pause: the split is measured while the step holds.
    let second = start_canary(&scenario, "90s", analysis, json!({}))?;
    // One ready endpoint per revision, and kube-proxy spreading new connections over exactly those two: it
    // lags behind the EndpointSlice on a loaded node, and until then the stable pod that scaled in (still
    // draining) gets a third of the connections.
    let (endpoints, ips) = wait_for(
        NODE_WAIT,
        "one ready endpoint per revision, programmed",
        || {
            let (by_revision, ips) = ready_endpoints(ns)?;
            let one_each = by_revision.get(&scenario.first) == Some(&1)
                && by_revision.get(&second) == Some(&1)
                && by_revision.len() == 2;
            Ok(
                (one_each && programmed_endpoints(ns.name(), "digits", "http")? == ips)
                    .then_some((by_revision, ips)),
            )
        },
    )?;

    // Each request on a new connection, so kube-proxy picks an endpoint for each.
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()?;
    let split = Split::load("digits_mlp")?;
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for request in 0..SHARE_REQUESTS {
        let resp = client
            .post(format!("{}/v2/models/digits/infer", scenario.url))
            .json(&infer_body(
                &split,
                request % split.rows()..request % split.rows() + 1,
            ))
            .send()?;
        ensure!(
            resp.status().is_success(),
            "request {request}: {}",
            resp.status()
        );
        let revision = resp
            .headers()
            .get(HEADER_REVISION)
            .and_then(|v| v.to_str().ok())
            .context("response without the revision header")?
            .to_owned();
        *answered.entry(revision).or_default() += 1;
    }
    // The split held while we measured: still one stable and one canary endpoint, programmed, at 50 %.
    ensure!(
        ready_endpoints_by_revision(ns)? == endpoints,
        "the endpoints changed during the measurement: {endpoints:?} -> {:?}",
        ready_endpoints_by_revision(ns)?
    );
    ensure!(
        programmed_endpoints(ns.name(), "digits", "http")? == ips,
        "kube-proxy's endpoints changed during the measurement"
    );
    ensure!(get(ns, "digits")?["status"]["revision"]["canaryWeight"] == 50);
    let requests = SHARE_REQUESTS as f64;
    let canary = *answered.get(&second).unwrap_or(&0) as f64;
    let stable = *answered.get(&scenario.first).unwrap_or(&0) as f64;
    ensure!(
        canary + stable == requests,
        "answers from revisions other than the two: {answered:?}"
    );
    let expected_share = 0.5; // one canary pod of two ready endpoints
    let sigma = (requests * expected_share * (1.0 - expected_share)).sqrt();
    eprintln!(
        "traffic share during the 50 % step: canary {canary}/{requests} ({:.1} %), stable {stable}; expected {} ± {:.1} (3σ)",
        100.0 * canary / requests,
        requests * expected_share,
        3.0 * sigma
    );
    ensure!(
        (canary - requests * expected_share).abs() <= 3.0 * sigma,
        "canary share {canary}/{requests} is outside 3σ of {}",
        requests * expected_share
    );

    ensure!(
        wait_outcome(ns, "digits", &second, NODE_WAIT)? == Outcome::Promoted,
        "the canary was rolled back: {}",
        get(ns, "digits")?["status"]
    );
    ensure!(template_revision(ns, "digits")?.as_deref() == Some(second.as_str()));
    ensure!(
        events(ns, "digits", "Promoted")?.len() == 1,
        "one Promoted event"
    );
    wait_for(NODE_WAIT, "the canary Deployment gone", || {
        Ok((!exists(ns, "digits-canary")?).then_some(()))
    })?;
    let md = get(ns, "digits")?;
    ensure!(md["status"]["model"]["revision"].as_str() == Some(second.as_str()));
    ensure!(md["status"]["revision"]["canary"].is_null());
    ensure!(md["status"]["revision"]["failed"].is_null());
    // Revision 2 serves on both pods now.
    wait_for(NODE_WAIT, "two ready pods of revision 2", || {
        let by_revision = ready_endpoints_by_revision(ns)?;
        Ok((by_revision.get(&second) == Some(&2) && by_revision.len() == 1).then_some(()))
    })?;
    ensure!(ready_server_pods(ns, "digits")?.len() == 2);
    Ok(())
}

#[test]
fn a_canary_with_a_long_batching_delay_is_rolled_back_on_latency() -> Result<()> {
    let analysis = json!({"maxLatencyMillis": 100, "failureLimit": 0});
    let s = serve_first("node-canary-slow", &analysis, "digits_mlp.onnx")?;
    let ns = &s.ns;
    let second = start_canary(
        &s,
        "60s",
        analysis,
        json!({"batching": {"maxBatchSize": 64, "maxDelayMicros": 250000}}),
    )?;
    ensure!(
        wait_outcome(ns, "digits", &second, NODE_WAIT)? == Outcome::RolledBack,
        "the slow canary was promoted: {}",
        get(ns, "digits")?["status"]
    );
    assert_rolled_back(ns, &s.first, &second, "latency", 2)?;
    // Only revision 1 answers through the Service again.
    wait_for(NODE_WAIT, "two ready pods of revision 1", || {
        let e = ready_endpoints_by_revision(ns)?;
        Ok((e.get(&s.first) == Some(&2) && e.len() == 1).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_canary_of_a_worse_model_is_rolled_back_on_its_accuracy_from_feedback_through_the_service()
-> Result<()> {
    let analysis = json!({"minAccuracy": 0.8, "failureLimit": 0});
    let s = serve_first("node-canary-acc", &analysis, "digits_mlp_shuffled.onnx")?;
    let ns = &s.ns;
    let labelled = LabelledTraffic::start(s.url.clone(), 10.0)?;
    let second = start_canary(&s, "60s", analysis, json!({}))?;
    ensure!(
        wait_outcome(ns, "digits", &second, NODE_WAIT)? == Outcome::RolledBack,
        "the shuffled-labels canary was promoted: {}",
        get(ns, "digits")?["status"]
    );
    println!(
        "node canary accuracy: {} labelled rows counted; {}",
        labelled.counted(),
        condition(ns, "digits", "Stalled")?
    );
    assert_rolled_back(ns, &s.first, &second, "accuracy", 2)?;
    Ok(())
}
