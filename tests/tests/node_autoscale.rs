//! On the real node: an autoscaled ModelDeployment whose serving pods the cluster's Prometheus finds through
//! Kubernetes service discovery (no target is registered by hand). Idle, it holds 1 replica with
//! `ScalingActive=True` (reason Scaling); load through the Service's ClusterIP raises the count to 3, with
//! `ScalingActive` True in every status seen meanwhile and a `Scaling` event; the 3 pods come up Ready and each
//! answers the fixture rows as onnxruntime does.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::cluster::wait_for;
use tractor_e2e::modeldeployment::apply_as_is;
use tractor_e2e::node::{
    NODE_WAIT, infer_argmax, model_configmap, ready_server_pods, real_node, restricted_namespace,
    service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{Load, deployment_replicas, event_count};
use tractor_e2e::serve::Split;

/// Requests per second each replica should carry.
const TARGET: f64 = 5.0;
/// Three replicas' worth.
const RPS: f64 = 15.0;
/// The count that load asks for (and maxReplicas).
const REPLICAS: i64 = 3;

fn scaling_active(md: &Value) -> Option<(String, String)> {
    md["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "ScalingActive")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

#[test]
fn load_through_the_service_scales_real_pods_out() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-autoscale")?;
    // The chart's operator, in-cluster, reading the cluster's Prometheus from its pod.
    let _op = Operator::start(cluster, ns.name())?;
    let sha = model_configmap(&ns, "digits-model", "digits_mlp.onnx")?;
    let md = json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": "configmap://digits-model/digits_mlp.onnx", "sha256": sha},
            "optimize": {"precision": "f32"},
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": REPLICAS,
                "interval": "5s",
                "metrics": [{"type": "Throughput", "throughput": {"targetPerReplica": TARGET}}],
            },
        },
    });
    apply_as_is(&ns, &md)?;
    wait_model_ready(&ns, "digits")?;
    // Idle, scraped through service discovery: one replica, scaling active.
    wait_for(NODE_WAIT, "ScalingActive=True at 1 replica", || {
        let md = tractor_e2e::modeldeployment::get(&ns, "digits")?;
        Ok(
            (scaling_active(&md) == Some(("True".into(), "Scaling".into()))
                && md["status"]["desiredReplicas"] == 1)
                .then_some(()),
        )
    })?;

    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    let client = Client::builder().timeout(Duration::from_secs(5)).build()?;
    wait_serving("an answer through the ClusterIP", || {
        infer_argmax(&client, &url, "digits", &split, 0..1)
    })?;
    let load = Load::start(
        format!("{url}/v2/models/digits/infer"),
        RPS,
        0.0,
        Duration::from_secs(1),
    )?;
    let mut statuses: Vec<(Value, Option<(String, String)>)> = Vec::new();
    wait_for(NODE_WAIT, "desiredReplicas 3", || {
        let md = tractor_e2e::modeldeployment::get(&ns, "digits")?;
        let seen = (md["status"]["desiredReplicas"].clone(), scaling_active(&md));
        if statuses.last() != Some(&seen) {
            statuses.push(seen);
        }
        Ok((md["status"]["desiredReplicas"] == REPLICAS).then_some(()))
    })?;
    let decided_after = load.started.elapsed();
    let pods = wait_for(NODE_WAIT, "3 serving pods Ready", || {
        let pods = ready_server_pods(&ns, "digits")?;
        Ok((pods.len() == REPLICAS as usize).then_some(pods))
    })?;
    let ready_after = load.started.elapsed();
    ensure!(deployment_replicas(&ns, "digits")? == Some(REPLICAS));
    let inactive: Vec<_> = statuses
        .iter()
        .filter(|(_, a)| a.as_ref().map(|(s, _)| s.as_str()) != Some("True"))
        .collect();
    ensure!(
        inactive.is_empty(),
        "ScalingActive not True while scaling: {inactive:?}"
    );
    ensure!(
        event_count(&ns, "digits", "Scaling")? >= 1,
        "no Scaling event"
    );
    // The new pods serve, each asked directly.
    let reference = split
        .reference_argmax("probabilities")
        .context("no reference")?;
    for (name, ip, _) in &pods {
        let got = wait_serving(&format!("pod {name} answering"), || {
            infer_argmax(
                &client,
                &format!("http://{ip}:8080"),
                "digits",
                &split,
                0..10,
            )
        })?;
        ensure!(got == reference[0..10], "pod {name}: {got:?}");
    }
    let md = tractor_e2e::modeldeployment::get(&ns, "digits")?;
    println!(
        "node autoscale: load step -> desiredReplicas {REPLICAS} in {:.1} s, -> {REPLICAS} pods Ready in {:.1} s; \
         snapshot {}; {} requests; statuses seen {statuses:?}",
        decided_after.as_secs_f64(),
        ready_after.as_secs_f64(),
        md["status"]["metrics"],
        load.sent()
    );
    Ok(())
}
