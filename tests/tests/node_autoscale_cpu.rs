//! On the real node: the minimal autoscaling spec (`{minReplicas: 1, maxReplicas: 2}`, no metrics) is accepted
//! with the HPA's default, CPU at 80 % of the server container's request, and scales out on the CPU that the
//! servers' own `process_cpu_seconds_total`, scraped by the cluster's Prometheus, shows under load through the
//! Service. The `Scaling` event names the CPU signal.

use std::time::Duration;

use anyhow::{Result, ensure};
use reqwest::blocking::Client;
use serde_json::json;
use tractor_e2e::cluster::wait_for;
use tractor_e2e::modeldeployment::apply_as_is;
use tractor_e2e::node::{
    NODE_WAIT, infer_argmax, model_configmap, ready_server_pods, real_node, restricted_namespace,
    service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{Load, events};
use tractor_e2e::serve::Split;

/// A request small enough that a few dozen requests a second use several times it: the load must exceed
/// 80 % of it on one replica, whatever this machine's speed.
const CPU_REQUEST: &str = "5m";

#[test]
fn the_minimal_autoscaling_spec_scales_on_cpu() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-cpu")?;
    let _op = Operator::start(cluster, ns.name())?;
    let sha = model_configmap(&ns, "digits-model", "digits_mlp.onnx")?;
    let md = json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": "configmap://digits-model/digits_mlp.onnx", "sha256": sha},
            "optimize": {"precision": "f32"},
            "serving": {"resources": {"requests": {"cpu": CPU_REQUEST}}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        },
    });
    apply_as_is(&ns, &md)?;
    // The API server filled in the default metric: what `kubectl get -o yaml` and a GitOps diff show.
    let stored = tractor_e2e::modeldeployment::get(&ns, "digits")?;
    ensure!(
        stored["spec"]["autoscaling"]["metrics"]
            == json!([{"type": "Cpu", "cpu": {"targetUtilizationPercent": 80}}]),
        "defaulted autoscaling: {}",
        stored["spec"]["autoscaling"]
    );
    wait_model_ready(&ns, "digits")?;

    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    let client = Client::builder().timeout(Duration::from_secs(5)).build()?;
    wait_serving("an answer through the ClusterIP", || {
        infer_argmax(&client, &url, "digits", &split, 0..1)
    })?;
    let load = Load::start(
        format!("{url}/v2/models/digits/infer"),
        40.0,
        0.0,
        Duration::from_secs(1),
    )?;
    wait_for(NODE_WAIT, "desiredReplicas 2", || {
        let md = tractor_e2e::modeldeployment::get(&ns, "digits")?;
        Ok((md["status"]["desiredReplicas"] == 2).then_some(()))
    })?;
    let decided_after = load.started.elapsed();
    wait_for(NODE_WAIT, "2 serving pods Ready", || {
        Ok((ready_server_pods(&ns, "digits")?.len() == 2).then_some(()))
    })?;
    let scaling = events(&ns, "digits", "Scaling")?;
    let notes: Vec<&str> = scaling
        .iter()
        .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
        .collect();
    ensure!(
        notes
            .iter()
            .any(|n| n.contains("CPU") && n.contains("against 80 %")),
        "no Scaling event names the CPU signal: {notes:?}"
    );
    let md = tractor_e2e::modeldeployment::get(&ns, "digits")?;
    println!(
        "node autoscale cpu: -> desiredReplicas 2 in {:.1} s; {} requests; events {notes:?}; snapshot {}",
        decided_after.as_secs_f64(),
        load.sent(),
        md["status"]["metrics"]
    );
    Ok(())
}
