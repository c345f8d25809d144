//! The autoscaler's fail-safe: the test runs its own Prometheus (never the shared one) and stops it while
//! the model is scaled out and the load is gone. The count is held — no scale-down for lack of data, even
//! with no scale-down window — `ScalingActive=False` says why, and the outage is one Warning event.
//! Restarted, Prometheus shows the idle load and scaling resumes.
//!
//! The operator is a process (under a token of the chart's ServiceAccount): the test must stop and restart
//! its own Prometheus on loopback, which only a process on this machine reaches.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::json;
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, wait_for};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{
    Load, OwnPrometheus, addr, apply_and_serve, autoscaled, condition, deployment_replicas,
    evaluated, event_count, events, pod_labels, pod_name,
};
use tractor_e2e::serve::Serve;

const HELD: &str = "tractor_operator_autoscaler_evaluations_total{result=\"held\"}";
const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";

fn desired(ns: &tractor_e2e::cluster::TestNamespace) -> Result<Option<i64>> {
    Ok(evaluated(ns, "digits")?.map(|e| e.desired))
}

#[test]
fn prometheus_down_holds_replicas_and_restarted_resumes_scaling() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("scale-down")?;
    let serve = Serve::start("digits_mlp.onnx", "digits", &[])?;
    let mut prometheus =
        OwnPrometheus::start(&[(addr(&serve), pod_labels(ns.name(), &pod_name("digits", 0)))])?;
    // Scraped before the autoscaler first asks, so the only holds are the outage's.
    prometheus.wait_scraped(ns.name())?;
    let op = Operator::spawn(cluster, ns.name(), &["--prometheus-url", &prometheus.url()])?;
    op.wait_ready()?;
    let md = autoscaled(
        &ns,
        "digits",
        json!({
            "minReplicas": 1,
            "maxReplicas": 6,
            "interval": "2s",
            // No window: only the fail-safe can keep the count up once the load is gone.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
            "metrics": [{"type": "Throughput", "throughput": {"targetPerReplica": 5}}],
        }),
    );
    apply_and_serve(&ns, &md)?;

    let mut load = Load::start(serve.model_url("/infer"), 15.0, 0.0, Duration::from_secs(1))?;
    wait_for(DEFAULT_WAIT, "desiredReplicas 3", || {
        Ok((desired(&ns)? == Some(3)).then_some(()))
    })?;
    ensure!(condition(&ns, "digits", "ScalingActive")?["status"] == "True");
    // Normally 0; a query that timed out on a loaded machine would have been reported already.
    let reported = event_count(&ns, "digits", METRICS_UNAVAILABLE)?;

    // Prometheus goes dark and the load stops: a naive autoscaler would read "nothing" as "idle".
    prometheus.stop()?;
    load.stop();
    let cond = wait_for(DEFAULT_WAIT, "ScalingActive=False", || {
        let scaling_active = condition(&ns, "digits", "ScalingActive")?;
        Ok((scaling_active["status"] == "False").then_some(scaling_active))
    })?;
    ensure!(cond["reason"] == METRICS_UNAVAILABLE, "{cond}");
    let message = cond["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("unreachable") && message.contains("holding 3 replicas"),
        "{message}"
    );
    // Several more evaluations, all held.
    let held = op.metric(HELD)?;
    wait_for(DEFAULT_WAIT, "three more held evaluations", || {
        Ok((op.metric(HELD)? >= held + 3.0).then_some(()))
    })?;
    ensure!(desired(&ns)? == Some(3), "replicas moved without data");
    ensure!(deployment_replicas(&ns, "digits")? == Some(3));
    wait_for(DEFAULT_WAIT, "the MetricsUnavailable event", || {
        Ok((event_count(&ns, "digits", METRICS_UNAVAILABLE)? > reported).then_some(()))
    })?;
    let warnings = events(&ns, "digits", METRICS_UNAVAILABLE)?;
    ensure!(
        event_count(&ns, "digits", METRICS_UNAVAILABLE)? == reported + 1
            && warnings.iter().all(|w| w["type"] == "Warning"),
        "one Warning event expected for the outage: {warnings:?}"
    );
    // A repeat keeps the first occurrence's note, so the outage's own words are there when it was the first.
    if reported == 0 {
        ensure!(
            warnings[0]["note"]
                .as_str()
                .is_some_and(|n| n.contains("unreachable")),
            "{warnings:?}"
        );
    }

    // Back: the idle load is visible again and the count falls to the minimum.
    prometheus.restart()?;
    wait_for(DEFAULT_WAIT, "ScalingActive=True", || {
        Ok((condition(&ns, "digits", "ScalingActive")?["status"] == "True").then_some(()))
    })?;
    wait_for(DEFAULT_WAIT, "desiredReplicas 1", || {
        Ok((desired(&ns)? == Some(1)).then_some(()))
    })?;
    wait_for(DEFAULT_WAIT, "the Deployment at 1", || {
        Ok((deployment_replicas(&ns, "digits")? == Some(1)).then_some(()))
    })?;
    ensure!(
        event_count(&ns, "digits", METRICS_UNAVAILABLE)? == reported + 1,
        "the outage was reported more than once: {:?}",
        events(&ns, "digits", METRICS_UNAVAILABLE)?
    );
    Ok(())
}
