//! One ModelDeployment through its life on KWOK nodes with the chart's operator in-cluster: optimize Job,
//! report, Deployment and Service, Ready; an idempotent re-apply; `kubectl scale`; a failing revision that
//! leaves the old one serving; deletion that removes every child.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, condition_is, wait_for};
use tractor_e2e::modeldeployment::{
    apply, apply_example, failure_report, finish_job_with_report, get, resource_version,
    success_report, wait_for_new_job,
};
use tractor_e2e::operator::Operator;

const CHILDREN: [&str; 4] = [
    "deployment",
    "service",
    "poddisruptionbudget",
    "networkpolicy",
];

#[test]
fn modeldeployment_lifecycle() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("op-life")?;
    let op = Operator::start(cluster, ns.name())?;

    // Apply: a Job appears and the status says the model is being optimized.
    let md = apply_example(&ns, "minimal.yaml", "digits")?;
    let job = wait_for_new_job(&ns, "digits", &[])?;
    wait_for(DEFAULT_WAIT, "phase Optimizing", || {
        let mdep = get(&ns, "digits")?;
        Ok(
            (mdep["status"]["phase"] == "Optimizing" && condition_is(&mdep, "Reconciling", "True"))
                .then_some(()),
        )
    })?;

    // The Job finishes with a report: model section, children, pods Ready, Ready=True.
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    let mdep = get(&ns, "digits")?;
    ensure!(
        mdep["status"]["model"]["artifactDigest"] == format!("sha256:{}", "a1".repeat(32)),
        "{}",
        mdep["status"]
    );
    ensure!(
        mdep["status"]["phase"] == "Ready",
        "phase {}",
        mdep["status"]["phase"]
    );
    ensure!(mdep["status"]["readyReplicas"] == 1);
    ensure!(mdep["status"]["observedGeneration"] == mdep["metadata"]["generation"]);
    ensure!(
        mdep["status"]["url"] == format!("http://digits.{}.svc:8080/v2/models/digits", ns.name())
    );
    let dep = ns.kubectl_json(&["get", "deployment", "digits"])?;
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    ensure!(
        args.contains(&"a1".repeat(32)),
        "server not pinned to the artifact digest: {args}"
    );
    let svc = ns.kubectl_json(&["get", "service", "digits"])?;
    ensure!(svc["spec"]["ports"].as_array().map(Vec::len) == Some(2));

    // Re-applying the same spec, and a reconcile forced by an annotation, write nothing.
    let versions: Vec<String> = CHILDREN
        .iter()
        .map(|k| resource_version(&ns, k, "digits"))
        .collect::<Result<_>>()?;
    let generation = get(&ns, "digits")?["metadata"]["generation"].clone();
    let writes = op.metric("tractor_operator_status_writes_total")?;
    let applies = op.metric("tractor_operator_child_applies_total")?;
    let reconciles = op.metric("tractor_operator_reconciliations_total")?;
    apply(&ns, &md)?;
    ns.kubectl(&["annotate", "mdep", "digits", "test/touch=1"])?;
    wait_for(DEFAULT_WAIT, "a reconcile after the annotation", || {
        Ok((op.metric("tractor_operator_reconciliations_total")? > reconciles).then_some(()))
    })?;
    ensure!(
        op.metric("tractor_operator_status_writes_total")? == writes,
        "an unchanged object got a status write"
    );
    ensure!(
        op.metric("tractor_operator_child_applies_total")? == applies,
        "an unchanged child was applied again"
    );
    for (kind, before) in CHILDREN.iter().zip(&versions) {
        ensure!(
            &resource_version(&ns, kind, "digits")? == before,
            "{kind} changed on a no-op reconcile"
        );
    }
    ensure!(
        get(&ns, "digits")?["metadata"]["generation"] == generation,
        "re-apply bumped the generation"
    );

    // kubectl scale reaches the Deployment.
    ns.kubectl(&["scale", "mdep/digits", "--replicas=4"])?;
    wait_for(DEFAULT_WAIT, "Deployment scaled to 4", || {
        let deployment = ns.kubectl_json(&["get", "deployment", "digits"])?;
        Ok(
            (deployment["spec"]["replicas"] == 4 && deployment["status"]["readyReplicas"] == 4)
                .then_some(()),
        )
    })?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;

    // A new revision whose Job fails: Stalled with the report's reason, the old Deployment untouched.
    let deployment_version = resource_version(&ns, "deployment", "digits")?;
    let mut changed = md.clone();
    changed["spec"]["model"]["sha256"] = "b2".repeat(32).into();
    changed["spec"]["serving"] = serde_json::json!({"replicas": 4});
    apply(&ns, &changed)?;
    let bad_job = wait_for_new_job(&ns, "digits", &[job])?;
    finish_job_with_report(
        &ns,
        &bad_job,
        &failure_report(
            "DigestMismatch",
            "the file's sha256 is 5f5f…, the spec says b2b2…",
        ),
    )?;
    let stalled = wait_for(DEFAULT_WAIT, "Stalled=True", || {
        let mdep = get(&ns, "digits")?;
        Ok(condition_is(&mdep, "Stalled", "True").then_some(mdep))
    })?;
    let cond = stalled["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Stalled")
        .cloned()
        .unwrap_or_default();
    ensure!(
        cond["reason"] == "DigestMismatch",
        "Stalled reason {}",
        cond["reason"]
    );
    ensure!(stalled["status"]["phase"] == "Failed");
    ensure!(condition_is(&stalled, "Ready", "False"));
    ensure!(
        stalled["status"]["model"]["artifactDigest"] == format!("sha256:{}", "a1".repeat(32)),
        "the served model changed"
    );
    ensure!(
        resource_version(&ns, "deployment", "digits")? == deployment_version,
        "the old revision's Deployment was touched"
    );
    let events = ns.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=DigestMismatch",
        "-o",
        "name",
    ])?;
    ensure!(
        events.lines().count() == 1,
        "expected one DigestMismatch event, got: {events}"
    );
    // Later reconciles keep the message as it was (it used to gain one more prefix on each).
    let before = op.metric("tractor_operator_reconciliations_total")?;
    ns.kubectl(&["label", "mdep/digits", "touch=1", "--overwrite"])?;
    wait_for(DEFAULT_WAIT, "another reconcile", || {
        Ok((op.metric("tractor_operator_reconciliations_total")? > before).then_some(()))
    })?;
    let mdep = get(&ns, "digits")?;
    for kind in ["Stalled", "Ready"] {
        let message = mdep["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            message.matches("optimize failed for revision").count() == 1,
            "{kind} message: {message}"
        );
    }

    // Deleting the resource deletes every child.
    ns.kubectl(&["delete", "mdep", "digits", "--wait=true", "--timeout=60s"])?;
    wait_for(DEFAULT_WAIT, "children garbage-collected", || {
        let left = ns.kubectl(&[
            "get",
            "deployments,services,jobs,poddisruptionbudgets,networkpolicies",
            "-l",
            "serving.tractor.dev/model=digits",
            "-o",
            "name",
        ])?;
        Ok(left.trim().is_empty().then_some(()))
    })?;
    Ok(())
}
