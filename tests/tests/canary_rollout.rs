//! Canary edge cases on KWOK. Latency rollback and promotion run on real pods in `node_canary.rs`; here:
//!
//! - Accuracy rollback, with a stand-in: real `tractor serve` processes on this machine stand for the stable
//!   and the canary pods (scraped by the cluster's Prometheus under the labels those pods would have) and
//!   get labelled traffic with ground-truth feedback directly. They are not told their revision, so they
//!   export no per-revision counters and the operator falls back to the pods' window gauges: this is that
//!   fallback's test. The path users take (real pods, labels by receipt through the Service) is in
//!   `node_canary.rs`. The operator is the chart's, in-cluster; the pods it creates are KWOK's.
//! - A canary Deployment name taken by another ModelDeployment is refused.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use tractor_e2e::canary::{
    Outcome, assert_rolled_back, current_revision, exists, template_revision, wait_outcome,
};
use tractor_e2e::cluster::{DEFAULT_WAIT, TestNamespace, cluster, wait_for};
use tractor_e2e::modeldeployment::{
    apply, finish_job_with_report, get, success_report, wait_for_new_job,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{
    FeedbackLoad, ScrapeTargets, addr, apply_and_serve, condition, pod_labels, pod_name,
};
use tractor_e2e::serve::Serve;

/// The minimal example's model at `uri`, two replicas, rolled out as a one-step canary under `analysis`.
fn canary_md(ns: &TestNamespace, uri: &str, analysis: Value) -> Value {
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {
                "uri": uri,
                "sha256": "5f8e2b6c1d0a9f7e3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809112",
            },
            "serving": {"replicas": 2},
            "rollout": {
                "strategy": "Canary",
                "canary": {"steps": [{"weight": 50, "pause": "8s"}], "analysis": analysis},
            },
        },
    })
}

/// Serves revision 1 from the good model, then rolls out revision 2 as a canary served by `canary_model`
/// (with `canary_args`), both under real load and feedback, and waits for the outcome. The operator is a
/// process: see the module's doc.
fn run(
    scenario: &str,
    canary_model: &str,
    canary_args: &[&str],
    analysis: Value,
) -> Result<(TestNamespace, Operator, Outcome, String, String)> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace(scenario)?;
    let stable = Serve::start("digits_mlp.onnx", "digits", &[])?;
    let canary = Serve::start(canary_model, "digits", canary_args)?;
    let _targets = ScrapeTargets::write(
        &ScrapeTargets::shared_dir(),
        &[
            (addr(&stable), pod_labels(ns.name(), &pod_name("digits", 0))),
            (
                addr(&canary),
                pod_labels(ns.name(), &pod_name("digits-canary", 0)),
            ),
        ],
    )?;
    // The chart's operator, in-cluster; it reads the cluster's Prometheus like any other signal.
    let op = Operator::start(cluster, ns.name())?;
    let _stable_load = FeedbackLoad::start(&stable, 1, Duration::from_millis(125))?;
    let _canary_load = FeedbackLoad::start(&canary, 1, Duration::from_millis(125))?;

    // Revision 1 has nothing to compare with: it rolls out directly.
    let v1 = canary_md(
        &ns,
        "https://models.example.com/digits/v1.onnx",
        analysis.clone(),
    );
    apply_and_serve(&ns, &v1)?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    ensure!(
        !exists(&ns, "digits-canary")?,
        "no canary for a first revision"
    );
    let first = current_revision(&ns, "digits")?;
    let first_job = wait_for_new_job(&ns, "digits", &[])?;

    // Revision 2 comes as a canary once optimized.
    apply(
        &ns,
        &canary_md(&ns, "https://models.example.com/digits/v2.onnx", analysis),
    )?;
    let job = wait_for_new_job(&ns, "digits", &[first_job])?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    let second = wait_for(DEFAULT_WAIT, "a canary in status", || {
        let mdep = get(&ns, "digits")?;
        let revision = &mdep["status"]["revision"];
        Ok(revision["canary"]
            .as_str()
            .map(str::to_owned)
            .filter(|canary_revision| {
                *canary_revision != first
                    && revision["canaryWeight"] == 50
                    && revision["stable"].as_str() == Some(&first)
            }))
    })?;
    ensure!(exists(&ns, "digits-canary")?, "the canary Deployment");
    ensure!(template_revision(&ns, "digits-canary")?.as_deref() == Some(second.as_str()));
    ensure!(
        template_revision(&ns, "digits")?.as_deref() == Some(first.as_str()),
        "the stable Deployment keeps revision 1 during the canary"
    );
    let mdep = get(&ns, "digits")?;
    ensure!(
        condition(&ns, "digits", "Ready")?["reason"] == "CanaryAnalysis",
        "Ready during the canary: {}",
        mdep["status"]["conditions"]
    );

    let outcome = wait_outcome(
        &ns,
        "digits",
        &second,
        DEFAULT_WAIT + Duration::from_secs(60),
    )?;
    eprintln!(
        "{scenario}: {outcome:?}; status {}",
        get(&ns, "digits")?["status"]
    );
    Ok((ns, op, outcome, first, second))
}

#[test]
fn a_canary_trained_on_shuffled_labels_is_rolled_back_on_accuracy() -> Result<()> {
    let (ns, _op, outcome, first, second) = run(
        "canary-acc",
        "digits_mlp_shuffled.onnx",
        &[],
        json!({"minAccuracy": 0.8, "failureLimit": 0}),
    )?;
    ensure!(outcome == Outcome::RolledBack);
    assert_rolled_back(&ns, &first, &second, "accuracy", 2)
}

/// `<name>-canary` can be another ModelDeployment's own Deployment: the canary is refused with a reason, and
/// that Deployment is neither taken over nor deleted.
#[test]
fn a_canary_never_takes_over_a_namesake_deployment() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("canary-name")?;
    let _op = Operator::start(cluster, ns.name())?;
    // The namesake: a ModelDeployment called digits-canary, serving.
    let mut other = canary_md(&ns, "https://models.example.com/other.onnx", json!({}));
    other["metadata"]["name"] = json!("digits-canary");
    apply_and_serve(&ns, &other)?;
    let owner = |ns: &TestNamespace| -> Result<Value> {
        Ok(ns.kubectl_json(&["get", "deployment", "digits-canary"])?["metadata"]["ownerReferences"][0]["name"].clone())
    };
    ensure!(owner(&ns)? == "digits-canary");

    apply_and_serve(
        &ns,
        &canary_md(&ns, "https://models.example.com/digits/v1.onnx", json!({})),
    )?;
    let first_job = wait_for_new_job(&ns, "digits", &[])?;
    apply(
        &ns,
        &canary_md(&ns, "https://models.example.com/digits/v2.onnx", json!({})),
    )?;
    let job = wait_for_new_job(&ns, "digits", &[first_job])?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    let stalled = wait_for(DEFAULT_WAIT, "the canary refused", || {
        let stalled = condition(&ns, "digits", "Stalled")?;
        Ok((stalled["status"] == "True").then_some(stalled))
    })?;
    ensure!(
        stalled["reason"] == "RolledBack"
            && stalled["message"]
                .as_str()
                .is_some_and(|m| m.contains("another object owns")),
        "{stalled}"
    );
    ensure!(
        owner(&ns)? == "digits-canary",
        "the namesake keeps its owner"
    );
    ensure!(
        template_revision(&ns, "digits-canary")?
            == get(&ns, "digits-canary")?["status"]["revision"]["current"]
                .as_str()
                .map(str::to_owned),
        "the namesake still runs its own revision"
    );
    Ok(())
}
