//! Metric-gated canaries on real signals: real `tractor serve` processes stand for the stable and the canary
//! pods (scraped by the cluster's Prometheus under the labels those pods would have), labelled traffic with
//! real ground-truth feedback goes to both, and the operator runs as a process on the local control plane.
//! A model trained on shuffled labels is rolled back on accuracy, a slow one (a long batching delay) on
//! latency, and a good one is promoted.

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

fn template_revision(ns: &TestNamespace, deployment: &str) -> Result<Option<String>> {
    let d = ns.kubectl_json(&["get", "deployment", deployment])?;
    Ok(
        d["spec"]["template"]["metadata"]["labels"]["serving.tractor.dev/revision"]
            .as_str()
            .map(str::to_owned),
    )
}

fn exists(ns: &TestNamespace, deployment: &str) -> Result<bool> {
    Ok(ns
        .kubectl_output(&["get", "deployment", deployment], None)?
        .status
        .success())
}

/// What happened to the canary.
#[derive(Debug, PartialEq)]
enum Outcome {
    Promoted,
    RolledBack,
}

/// Serves revision 1 from the good model, then rolls out revision 2 as a canary served by `canary_model`
/// (with `canary_args`), both under real load and feedback, and waits for the outcome.
fn run(
    scenario: &str,
    canary_model: &str,
    canary_args: &[&str],
    analysis: Value,
) -> Result<(TestNamespace, Operator, Outcome, String, String)> {
    let c = cluster()?;
    c.install_crd()?;
    let ns = c.namespace(scenario)?;
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
    let op = Operator::spawn(c, ns.name(), &["--prometheus-url", &c.prometheus_url()])?;
    op.wait_ready()?;
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
    let first = get(&ns, "digits")?["status"]["revision"]["current"]
        .as_str()
        .context("revision 1")?
        .to_owned();
    let first_job = wait_for_new_job(&ns, "digits", &[])?;

    // Revision 2 comes as a canary once optimized.
    apply(
        &ns,
        &canary_md(&ns, "https://models.example.com/digits/v2.onnx", analysis),
    )?;
    let job = wait_for_new_job(&ns, "digits", &[first_job])?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    let second = wait_for(DEFAULT_WAIT, "a canary in status", || {
        let s = get(&ns, "digits")?;
        let r = &s["status"]["revision"];
        Ok(r["canary"].as_str().map(str::to_owned).filter(|c| {
            *c != first && r["canaryWeight"] == 50 && r["stable"].as_str() == Some(&first)
        }))
    })?;
    ensure!(exists(&ns, "digits-canary")?, "the canary Deployment");
    ensure!(template_revision(&ns, "digits-canary")?.as_deref() == Some(second.as_str()));
    ensure!(
        template_revision(&ns, "digits")?.as_deref() == Some(first.as_str()),
        "the stable Deployment keeps revision 1 during the canary"
    );
    let s = get(&ns, "digits")?;
    ensure!(
        condition(&ns, "digits", "Ready")?["reason"] == "CanaryAnalysis",
        "Ready during the canary: {}",
        s["status"]["conditions"]
    );

    let outcome = wait_for(
        DEFAULT_WAIT + Duration::from_secs(60),
        "promotion or rollback",
        || {
            let s = get(&ns, "digits")?;
            let r = &s["status"]["revision"];
            if r["failed"].as_str() == Some(second.as_str()) {
                return Ok(Some(Outcome::RolledBack));
            }
            if r["stable"].as_str() == Some(second.as_str())
                && condition(&ns, "digits", "Ready")?["status"] == "True"
            {
                return Ok(Some(Outcome::Promoted));
            }
            Ok(None)
        },
    )?;
    eprintln!(
        "{scenario}: {outcome:?}; status {}",
        get(&ns, "digits")?["status"]
    );
    Ok((ns, op, outcome, first, second))
}

/// After a rollback: the canary is gone, the stable revision serves and says so, and the reason names `signal`.
fn assert_rolled_back(ns: &TestNamespace, first: &str, second: &str, signal: &str) -> Result<()> {
    let s = get(ns, "digits")?;
    let stalled = condition(ns, "digits", "Stalled")?;
    ensure!(
        stalled["status"] == "True" && stalled["reason"] == "RolledBack",
        "Stalled: {stalled}"
    );
    let message = stalled["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains(signal) && message.contains(second),
        "the reason names {signal} and the revision: {message}"
    );
    ensure!(condition(ns, "digits", "Ready")?["status"] == "False");
    ensure!(condition(ns, "digits", "ModelReady")?["status"] == "True");
    ensure!(s["status"]["phase"] == "Failed");
    ensure!(
        s["status"]["model"]["revision"].as_str() == Some(first),
        "status.model names what serves: {}",
        s["status"]["model"]
    );
    ensure!(s["status"]["revision"]["canary"].is_null());
    wait_for(DEFAULT_WAIT, "the canary Deployment gone", || {
        Ok((!exists(ns, "digits-canary")?).then_some(()))
    })?;
    ensure!(template_revision(ns, "digits")?.as_deref() == Some(first));
    let d = ns.kubectl_json(&["get", "deployment", "digits"])?;
    ensure!(
        d["spec"]["replicas"] == 2,
        "the stable side is back to full size"
    );
    ensure!(
        events(ns, "digits", "RolledBack")?.len() == 1,
        "one RolledBack event"
    );
    Ok(())
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
    assert_rolled_back(&ns, &first, &second, "accuracy")
}

#[test]
fn a_canary_with_a_long_batching_delay_is_rolled_back_on_latency() -> Result<()> {
    let (ns, _op, outcome, first, second) = run(
        "canary-slow",
        "digits_mlp.onnx",
        &["--max-batch-size", "64", "--max-delay-micros", "250000"],
        json!({"maxLatencyMillis": 100, "failureLimit": 0}),
    )?;
    ensure!(outcome == Outcome::RolledBack);
    assert_rolled_back(&ns, &first, &second, "latency")
}

#[test]
fn a_good_canary_is_promoted() -> Result<()> {
    let (ns, _op, outcome, _first, second) = run(
        "canary-good",
        "digits_mlp.onnx",
        &[],
        json!({"minAccuracy": 0.8, "maxErrorRate": 0.05, "failureLimit": 1}),
    )?;
    ensure!(outcome == Outcome::Promoted);
    ensure!(template_revision(&ns, "digits")?.as_deref() == Some(second.as_str()));
    ensure!(
        events(&ns, "digits", "Promoted")?.len() == 1,
        "one Promoted event"
    );
    // The canary Deployment goes once the stable one has rolled out to revision 2 (KWOK pods roll fast).
    wait_for(DEFAULT_WAIT, "the canary Deployment gone", || {
        Ok((!exists(&ns, "digits-canary")?).then_some(()))
    })?;
    let s = get(&ns, "digits")?;
    ensure!(s["status"]["model"]["revision"].as_str() == Some(second.as_str()));
    ensure!(s["status"]["revision"]["canary"].is_null());
    ensure!(s["status"]["revision"]["failed"].is_null());
    Ok(())
}

/// `<name>-canary` can be another ModelDeployment's own Deployment: the canary is refused with a reason, and
/// that Deployment is neither taken over nor deleted.
#[test]
fn a_canary_never_takes_over_a_namesake_deployment() -> Result<()> {
    let c = cluster()?;
    c.install_crd()?;
    let ns = c.namespace("canary-name")?;
    let op = Operator::spawn(c, ns.name(), &[])?;
    op.wait_ready()?;
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
        let c = condition(&ns, "digits", "Stalled")?;
        Ok((c["status"] == "True").then_some(c))
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
