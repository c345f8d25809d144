//! `rollbackOnAccuracyDrop` on real pods: two replicas on the real node, the chart's operator in-cluster, and a
//! client that sends requests and then their labels (by receipt) through the model's Service. Revision 2 (the
//! shuffled-labels model) rolls out in place; its per-revision accuracy, which Prometheus adds up from whichever
//! replicas scored the feedback, stays below the floor for the window, and the operator returns the Deployment
//! to revision 1's pod template and says why.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::canary::template_revision;
use tractor_e2e::cluster::{TestNamespace, wait_for};
use tractor_e2e::modeldeployment::{apply_as_is, get};
use tractor_e2e::node::{
    LabelledTraffic, NODE_WAIT, infer_body, model_configmap, operator, pods_summary, real_node,
    restricted_namespace, service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::scale::{condition, events};
use tractor_e2e::serve::Split;

fn md(ns: &TestNamespace, configmap: &str, file: &str, sha: &str) -> Value {
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": format!("configmap://{configmap}/{file}"), "sha256": sha},
            "optimize": {"precision": "f32"},
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 2,
                "interval": "2s",
                "metrics": [{"type": "Accuracy", "accuracy": {"min": 0.8, "window": "6s"}}],
            },
            "rollout": {"rollbackOnAccuracyDrop": true},
        },
    })
}

#[test]
fn accuracy_below_the_floor_on_real_pods_returns_to_the_last_stable_revision() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-accuracy")?;
    let _op = operator(cluster, &ns)?;
    let good_sha = model_configmap(&ns, "digits-v1", "digits_mlp.onnx")?;
    let bad_sha = model_configmap(&ns, "digits-v2", "digits_mlp_shuffled.onnx")?;
    apply_as_is(&ns, &md(&ns, "digits-v1", "digits_mlp.onnx", &good_sha))?;
    wait_model_ready(&ns, "digits")?;
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    let probe = Client::builder().timeout(Duration::from_secs(5)).build()?;
    wait_serving("an answer through the ClusterIP", || {
        let response = probe
            .post(format!("{url}/v2/models/digits/infer"))
            .json(&infer_body(&split, 0..1))
            .send()?;
        ensure!(response.status().is_success(), "{}", response.status());
        Ok(())
    })?;
    // Ten requests a second, each followed by its label: a fresh accuracy at every 2 s evaluation.
    let traffic = LabelledTraffic::start(url, 10.0)?;

    let first = wait_for(
        NODE_WAIT,
        "revision 1 Ready and healthy by its own accuracy",
        || {
            let mdep = get(&ns, "digits")?;
            let healthy = condition(&ns, "digits", "Degraded")?["status"] == "False"
                && mdep["status"]["metrics"]["accuracy"]
                    .as_f64()
                    .is_some_and(|a| a > 0.8);
            let ready = condition(&ns, "digits", "Ready")?["status"] == "True";
            Ok(mdep["status"]["revision"]["stable"]
                .as_str()
                .filter(|_| healthy && ready)
                .map(str::to_owned))
        },
    )
    .with_context(|| pods_summary(&ns))?;

    // Revision 2 rolls out in place; its optimize Job and pods run for real ...
    apply_as_is(
        &ns,
        &md(&ns, "digits-v2", "digits_mlp_shuffled.onnx", &bad_sha),
    )?;
    let second = wait_for(NODE_WAIT, "revision 2 stable", || {
        let mdep = get(&ns, "digits")?;
        let revision = &mdep["status"]["revision"];
        Ok(revision["stable"]
            .as_str()
            .filter(|s| *s != first && revision["current"].as_str() == Some(s))
            .map(str::to_owned))
    })
    .with_context(|| pods_summary(&ns))?;

    // ... and is wrong most of the time, as the labels sent through the Service show.
    let stalled = wait_for(NODE_WAIT, "the accuracy rollback", || {
        let stalled = condition(&ns, "digits", "Stalled")?;
        Ok((stalled["status"] == "True").then_some(stalled))
    })
    .with_context(|| pods_summary(&ns))?;
    let counted = traffic.counted();
    drop(traffic);
    println!("node accuracy rollback: {counted} labelled rows counted; {stalled}");
    ensure!(stalled["reason"] == "AccuracyRollback", "{stalled}");
    let message = stalled["message"].as_str().context("message")?;
    ensure!(
        message.contains(&second) && message.contains(&format!("returned to revision {first}")),
        "{message}"
    );
    ensure!(
        template_revision(&ns, "digits")?.as_deref() == Some(first.as_str()),
        "the Deployment runs revision 1's pod template again"
    );
    let mdep = get(&ns, "digits")?;
    ensure!(mdep["status"]["revision"]["failed"].as_str() == Some(second.as_str()));
    ensure!(events(&ns, "digits", "AccuracyRollback")?.len() == 1);
    // The accuracy that tripped it is revision 2's own, added up from the replicas' counters.
    let query = format!(
        "sum(tractor_model_predictions_labelled_total{{namespace=\"{}\",model=\"digits\",revision=\"{second}\"}})",
        ns.name()
    );
    let labelled = cluster.prometheus_value(&query)?.unwrap_or(0.0);
    ensure!(
        labelled > 0.0,
        "no labelled rows of revision 2 in Prometheus"
    );
    Ok(())
}
