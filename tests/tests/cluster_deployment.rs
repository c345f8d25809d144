//! A plain 3-replica Deployment becomes Available on KWOK nodes: scheduler, controllers and KWOK all work.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, condition_is, kwok_deployment, wait_for};

#[test]
fn deployment_of_three_becomes_available_on_kwok_nodes() -> Result<()> {
    let cluster = cluster()?;
    let ns = cluster.namespace("deploy")?;
    // The image is never pulled: KWOK fakes the pod lifecycle.
    ns.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&kwok_deployment(ns.name(), "web", 3).to_string()),
    )?;

    let dep = wait_for(
        DEFAULT_WAIT,
        "deployment/web Available with 3 replicas",
        || {
            let deployment = ns.kubectl_json(&["get", "deployment", "web"])?;
            let ok = condition_is(&deployment, "Available", "True")
                && deployment["status"]["availableReplicas"] == 3;
            Ok(ok.then_some(deployment))
        },
    )?;
    ensure!(
        dep["status"]["readyReplicas"] == 3,
        "readyReplicas: {}",
        dep["status"]
    );

    let pods = ns.kubectl_json(&["get", "pods", "-l", "app=web"])?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    ensure!(items.len() == 3, "expected 3 pods, got {}", items.len());
    for pod in &items {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        ensure!(
            node.starts_with("kwok-node-"),
            "pod scheduled to {node:?}, not a KWOK node"
        );
        ensure!(
            pod["status"]["phase"] == "Running",
            "pod phase {}",
            pod["status"]["phase"]
        );
        ensure!(
            pod["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty()),
            "pod without IP"
        );
    }
    Ok(())
}
