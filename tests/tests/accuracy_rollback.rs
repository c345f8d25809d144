//! `rollbackOnAccuracyDrop` on real signals: revision 2 rolls out in place, then its online accuracy (a real
//! `tractor serve` process with the shuffled-labels model, fed the true labels as feedback, scraped by the
//! cluster's Prometheus as the pod would be) stays below the floor for the window, and the chart's operator,
//! in-cluster, returns the Deployment to revision 1's pod template and says why.
//!
//! A stand-in for the serving pods (processes on this machine, KWOK pods, hand-registered scrape targets),
//! kept for what only it reaches: servers not told their revision export no per-revision counters, so the
//! operator falls back to the pods' window gauges, and this is the test of that fallback. The path users take
//! (real pods, feedback by receipt through the Service) is `node_accuracy_rollback.rs`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tractor_e2e::cluster::{DEFAULT_WAIT, TestNamespace, cluster, wait_for};
use tractor_e2e::modeldeployment::{
    apply, finish_job_with_report, get, success_report, wait_for_new_job,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{
    FeedbackLoad, ScrapeTargets, addr, apply_and_serve, condition, events, pod_labels, pod_name,
};
use tractor_e2e::serve::Serve;

fn md(ns: &TestNamespace, uri: &str) -> Value {
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {
                "uri": uri,
                "sha256": "5f8e2b6c1d0a9f7e3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809112",
            },
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

fn template_revision(ns: &TestNamespace) -> Result<Option<String>> {
    let d = ns.kubectl_json(&["get", "deployment", "digits"])?;
    Ok(
        d["spec"]["template"]["metadata"]["labels"]["serving.tractor.dev/revision"]
            .as_str()
            .map(str::to_owned),
    )
}

#[test]
fn accuracy_below_the_floor_returns_to_the_last_stable_revision() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("acc-rollback")?;
    let good = Serve::start("digits_mlp.onnx", "digits", &[])?;
    let bad = Serve::start("digits_mlp_shuffled.onnx", "digits", &[])?;
    let _good_load = FeedbackLoad::start(&good, 4, Duration::from_millis(100))?;
    let _bad_load = FeedbackLoad::start(&bad, 4, Duration::from_millis(100))?;
    // Revision 1's pod is the good server.
    let good_target = ScrapeTargets::write(
        &ScrapeTargets::shared_dir(),
        &[(addr(&good), pod_labels(ns.name(), &pod_name("digits", 0)))],
    )?;
    // The chart's operator, in-cluster; it reads the cluster's Prometheus like any other signal.
    let _op = Operator::start(cluster, ns.name())?;

    apply_and_serve(&ns, &md(&ns, "https://models.example.com/digits/v1.onnx"))?;
    let first = wait_for(DEFAULT_WAIT, "revision 1 Ready and healthy", || {
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
    })?;
    let first_job = wait_for_new_job(&ns, "digits", &[])?;

    // Revision 2 rolls out in place (RollingUpdate) ...
    apply(&ns, &md(&ns, "https://models.example.com/digits/v2.onnx"))?;
    let job = wait_for_new_job(&ns, "digits", &[first_job])?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    let second = wait_for(DEFAULT_WAIT, "revision 2 stable", || {
        let mdep = get(&ns, "digits")?;
        let revision = &mdep["status"]["revision"];
        Ok(revision["stable"]
            .as_str()
            .filter(|s| *s != first && revision["current"].as_str() == Some(s))
            .map(str::to_owned))
    })?;
    ensure!(template_revision(&ns)?.as_deref() == Some(second.as_str()));

    // ... and its pods turn out to be wrong most of the time.
    drop(good_target);
    let _bad_target = ScrapeTargets::write(
        &ScrapeTargets::shared_dir(),
        &[(addr(&bad), pod_labels(ns.name(), &pod_name("digits", 1)))],
    )?;
    let stalled = wait_for(
        DEFAULT_WAIT + Duration::from_secs(30),
        "the accuracy rollback",
        || {
            let stalled = condition(&ns, "digits", "Stalled")?;
            Ok((stalled["status"] == "True").then_some(stalled))
        },
    )?;
    eprintln!("accuracy rollback: {stalled}");
    ensure!(stalled["reason"] == "AccuracyRollback", "{stalled}");
    let message = stalled["message"].as_str().context("message")?;
    ensure!(
        message.contains(&second) && message.contains(&format!("returned to revision {first}")),
        "{message}"
    );
    ensure!(
        template_revision(&ns)?.as_deref() == Some(first.as_str()),
        "the Deployment runs revision 1's pod template again"
    );
    let mdep = get(&ns, "digits")?;
    ensure!(mdep["status"]["revision"]["failed"].as_str() == Some(second.as_str()));
    ensure!(
        mdep["status"]["model"]["revision"].as_str() == Some(first.as_str()),
        "status.model names what serves: {}",
        mdep["status"]["model"]
    );
    ensure!(condition(&ns, "digits", "Degraded")?["status"] == "True");
    ensure!(events(&ns, "digits", "AccuracyRollback")?.len() == 1);

    // Not retried: once revision 1's pods are back it is the stable revision, and the template stays on it.
    wait_for(DEFAULT_WAIT, "revision 1's pods rolled back in", || {
        let mdep = get(&ns, "digits")?;
        Ok((mdep["status"]["revision"]["stable"].as_str() == Some(first.as_str())).then_some(()))
    })?;
    ensure!(template_revision(&ns)?.as_deref() == Some(first.as_str()));
    Ok(())
}
