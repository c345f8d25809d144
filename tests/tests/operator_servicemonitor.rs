//! Where the Prometheus Operator's ServiceMonitor kind is served, each ModelDeployment gets one: owned by it,
//! selecting its serving pods' `/metrics` on the `http` port, written once, and collected with it.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, wait_for};
use tractor_e2e::modeldeployment::{
    apply_example, finish_job_with_report, get, resource_version, success_report, wait_for_new_job,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::serve::repo_root;

#[test]
fn service_monitor_follows_its_modeldeployment() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let crd = repo_root().join("tests/specs/crds/servicemonitor.yaml");
    cluster.kubectl(&["apply", "--server-side", "-f", &crd.display().to_string()])?;
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=60s",
    ])?;
    let ns = cluster.namespace("op-smon")?;
    let op = Operator::start(cluster, ns.name())?;

    apply_example(&ns, "minimal.yaml", "digits")?;
    let job = wait_for_new_job(&ns, "digits", &[])?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;

    // Discovery is cached for a minute; the ServiceMonitor appears within that plus a reconcile.
    let smon = wait_for(DEFAULT_WAIT, "ServiceMonitor", || {
        Ok(ns
            .kubectl_json(&["get", "servicemonitors.monitoring.coreos.com", "digits"])
            .ok())
    })?;
    let md = get(&ns, "digits")?;
    let owner = &smon["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "ModelDeployment" && owner["uid"] == md["metadata"]["uid"],
        "{owner}"
    );
    ensure!(owner["controller"] == true, "{owner}");
    let spec = &smon["spec"];
    ensure!(
        spec["selector"]["matchLabels"]["serving.tractor.dev/model"] == "digits",
        "{spec}"
    );
    let endpoint = &spec["endpoints"][0];
    ensure!(
        endpoint["port"] == "http"
            && endpoint["path"] == "/metrics"
            && endpoint["scheme"] == "http",
        "{endpoint}"
    );
    // The selector matches the Service's ports: the Service names its HTTP port `http`.
    let svc = ns.kubectl_json(&["get", "service", "digits"])?;
    ensure!(
        svc["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "http")),
        "{svc}"
    );
    ensure!(
        smon["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tractor",
        "{}",
        smon["metadata"]
    );

    // Steady state: a further reconcile (forced by an annotation) writes nothing. `Ready` is already true, so
    // only the operator's reconcile counter tells that the reconcile happened.
    let rv = resource_version(&ns, "servicemonitors.monitoring.coreos.com", "digits")?;
    let reconciles = op.metric("tractor_operator_reconciliations_total")?;
    ns.kubectl(&["annotate", "mdep", "digits", "test/touch=1"])?;
    wait_for(DEFAULT_WAIT, "a reconcile after the annotation", || {
        Ok((op.metric("tractor_operator_reconciliations_total")? > reconciles).then_some(()))
    })?;
    ensure!(
        rv == resource_version(&ns, "servicemonitors.monitoring.coreos.com", "digits")?,
        "the ServiceMonitor was written again on a no-op reconcile"
    );

    // Deleting the ModelDeployment collects its ServiceMonitor.
    ns.kubectl(&["delete", "mdep/digits", "--wait=true", "--timeout=60s"])?;
    wait_for(DEFAULT_WAIT, "ServiceMonitor collected", || {
        let out = ns.kubectl(&[
            "get",
            "servicemonitors.monitoring.coreos.com",
            "--ignore-not-found",
            "-o",
            "name",
        ])?;
        Ok(out.trim().is_empty().then_some(()))
    })?;
    Ok(())
}
