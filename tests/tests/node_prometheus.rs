//! Prometheus finds the serving pods on the real node through Kubernetes service discovery (their
//! prometheus.io annotations), scrapes them, and `tractor_inference_requests_total` rises with this test's
//! requests, labelled with namespace, pod and model.

use anyhow::{Result, ensure};
use reqwest::blocking::Client;
use serde_json::Value;
use std::time::Duration;
use tractor_e2e::cluster::wait_for;
use tractor_e2e::node::{
    NODE_WAIT, apply_digits, infer_argmax, operator, ready_server_pods, real_node,
    restricted_namespace, wait_model_ready, wait_serving,
};
use tractor_e2e::serve::Split;

/// Requests this test sends once the counter exists.
const REQUESTS: usize = 20;

#[test]
fn prometheus_scrapes_serving_pods_through_kubernetes_sd() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-prom")?;
    let _op = operator(cluster, &ns)?;
    apply_digits(&ns, "digits", 1)?;
    wait_model_ready(&ns, "digits")?;
    let pods = ready_server_pods(&ns, "digits")?;
    ensure!(pods.len() == 1, "one serving pod expected: {pods:?}");
    let (pod, ip, _) = pods[0].clone();

    // The pod is a discovered, healthy target with the namespace and pod labels.
    let targets_url = format!("{}/api/v1/targets?state=active", cluster.prometheus_url());
    let target = wait_for(NODE_WAIT, "the pod's scrape target up", || {
        let body: Value = serde_json::from_str(&cluster.curl(&[&targets_url])?)?;
        Ok(body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|candidate| {
                candidate["labels"]["job"] == "kubernetes-pods"
                    && candidate["labels"]["namespace"] == ns.name()
                    && candidate["labels"]["pod"] == pod.as_str()
                    && candidate["health"] == "up"
            })
            .cloned())
    })?;
    ensure!(
        target["scrapeUrl"] == format!("http://{ip}:8080/metrics"),
        "scrape URL: {}",
        target["scrapeUrl"]
    );

    // One request makes the counter exist; then it must rise by what we send.
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    let split = Split::load("digits_mlp")?;
    let base = format!("http://{ip}:8080");
    wait_serving("a first answer", || {
        infer_argmax(&client, &base, "digits", &split, 0..1)
    })?;
    let query = format!(
        "sum(tractor_inference_requests_total{{namespace=\"{}\",pod=\"{pod}\",model=\"digits\"}})",
        ns.name()
    );
    let value =
        |results: &[Value]| -> Option<f64> { results.first()?["value"][1].as_str()?.parse().ok() };
    let before = wait_for(NODE_WAIT, "the counter scraped", || {
        Ok(value(&cluster.prometheus_query(&query)?).filter(|v| *v >= 1.0))
    })?;
    for row in 0..REQUESTS {
        infer_argmax(&client, &base, "digits", &split, row..row + 1)?;
    }
    let after = wait_for(NODE_WAIT, "the counter to rise by our requests", || {
        Ok(value(&cluster.prometheus_query(&query)?).filter(|v| *v >= before + REQUESTS as f64))
    })?;
    println!(
        "tractor_inference_requests_total for {pod}: {before} -> {after} after {REQUESTS} requests"
    );

    // The series carry the labels the relabelling adds.
    let series = cluster.prometheus_query(&format!(
        "tractor_inference_requests_total{{namespace=\"{}\"}}",
        ns.name()
    ))?;
    ensure!(!series.is_empty(), "no series in the namespace");
    for sample in &series {
        ensure!(
            sample["metric"]["pod"] == pod.as_str(),
            "{}",
            sample["metric"]
        );
        ensure!(
            sample["metric"]["node"] == tractor_e2e::node::REAL_NODE,
            "{}",
            sample["metric"]
        );
    }
    Ok(())
}
