//! GitOps health on live objects: Flux's kstatus (sigs.k8s.io/cli-utils, the library Flux runs) and Argo CD's
//! assessment (gitops-engine, plus the chart's Lua check for ModelDeployments run in our gopher-lua harness
//! `tests/gitops-health/`, not in Argo CD itself) say InProgress/Progressing while the model is optimized and
//! while it rolls out, Current/Healthy once Ready, and Failed/Degraded when Stalled.

use anyhow::{Result, ensure};
use serde_json::json;
use tractor_e2e::cluster::{DEFAULT_WAIT, TestNamespace, cluster, wait_for};
use tractor_e2e::install::{Health, health};
use tractor_e2e::modeldeployment::{
    apply, apply_example, failure_report, finish_job_with_report, get, success_report,
    wait_for_new_job,
};
use tractor_e2e::operator::Operator;

fn wait_phase(ns: &TestNamespace, phase: &str) -> Result<()> {
    wait_for(DEFAULT_WAIT, &format!("phase {phase}"), || {
        let md = get(ns, "digits")?;
        Ok((md["status"]["phase"] == phase
            && md["status"]["observedGeneration"] == md["metadata"]["generation"])
            .then_some(()))
    })
}

fn expect(h: &Health, kstatus: &str, argo: &str, what: &str) -> Result<()> {
    ensure!(
        h.kstatus == kstatus && h.argo == argo,
        "{what}: want kstatus {kstatus} / Argo CD {argo}, got {} / {} ({})",
        h.kstatus,
        h.argo,
        h.messages
    );
    Ok(())
}

#[test]
fn kstatus_and_argo_health_follow_each_phase() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("inst-health")?;
    let _op = Operator::start(cluster, ns.name())?;

    // Optimizing.
    let md = apply_example(&ns, "minimal.yaml", "digits")?;
    let job = wait_for_new_job(&ns, "digits", &[])?;
    wait_phase(&ns, "Optimizing")?;
    expect(
        &health(&ns, "mdep", "digits")?,
        "InProgress",
        "Progressing",
        "optimizing",
    )?;

    // Rolling out: the serving pods cannot be scheduled (no node has the label), so the rollout waits.
    let mut pinned = md.clone();
    pinned["spec"]["serving"] =
        json!({"pod": {"nodeSelector": {"tractor.test/no-such-node": "x"}}});
    apply(&ns, &pinned)?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    wait_phase(&ns, "RollingOut")?;
    expect(
        &health(&ns, "mdep", "digits")?,
        "InProgress",
        "Progressing",
        "rolling out",
    )?;
    expect(
        &health(&ns, "deployment", "digits")?,
        "InProgress",
        "Progressing",
        "the serving Deployment while rolling out",
    )?;

    // Ready: the pods can run.
    apply(&ns, &md)?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    expect(
        &health(&ns, "mdep", "digits")?,
        "Current",
        "Healthy",
        "ready",
    )?;
    expect(
        &health(&ns, "deployment", "digits")?,
        "Current",
        "Healthy",
        "the serving Deployment",
    )?;
    expect(
        &health(&ns, "service", "digits")?,
        "Current",
        "Healthy",
        "the Service",
    )?;

    // Stalled: a new revision whose optimize Job fails; the old one keeps serving.
    let mut broken = md.clone();
    broken["spec"]["model"]["sha256"] = "b2".repeat(32).into();
    apply(&ns, &broken)?;
    let job2 = wait_for_new_job(&ns, "digits", std::slice::from_ref(&job))?;
    finish_job_with_report(
        &ns,
        &job2,
        &failure_report("DigestMismatch", "sha256 of the source differs"),
    )?;
    wait_phase(&ns, "Failed")?;
    let stalled_health = health(&ns, "mdep", "digits")?;
    expect(&stalled_health, "Failed", "Degraded", "stalled")?;
    ensure!(
        stalled_health
            .messages
            .contains("sha256 of the source differs"),
        "{}",
        stalled_health.messages
    );
    Ok(())
}
