//! `kubectl apply -k manifests/` installs what the chart does (namespace held to Pod Security restricted, CRD,
//! RBAC, operator): the operator Deployment becomes Available, its ServiceAccount can reconcile a model, and
//! `kubectl delete -k manifests/ -l app.kubernetes.io/part-of=tractor` removes everything but the CRD.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{cluster, condition_is, crd_name, repo_root};
use tractor_e2e::install::{ServiceAccountKubeconfig, ensure_nothing_left, reconcile_example};
use tractor_e2e::operator::Operator;

/// The namespace and names `manifests/` installs into (release "tractor" of the chart).
const NAMESPACE: &str = "tractor-system";
const NAME: &str = "tractor";
const PART_OF: &str = "app.kubernetes.io/part-of=tractor";

#[test]
fn kubectl_apply_k_installs_and_deletes_cleanly() -> Result<()> {
    let c = cluster()?;
    let dir = repo_root().join("manifests");
    let dir = dir.to_string_lossy();
    let applied = c.kubectl_output(&["apply", "-k", &dir], None)?;
    let stderr = String::from_utf8_lossy(&applied.stderr);
    ensure!(
        applied.status.success(),
        "kubectl apply -k failed: {stderr}"
    );
    ensure!(!stderr.contains("PodSecurity"), "apply warned: {stderr}");
    c.kubectl(&[
        "rollout",
        "status",
        "deployment",
        NAME,
        "-n",
        NAMESPACE,
        "--timeout=120s",
    ])?;
    let ns = c.kubectl_json(&["get", "namespace", NAMESPACE])?;
    ensure!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted");
    let dep = c.kubectl_json(&["get", "deployment", NAME, "-n", NAMESPACE])?;
    ensure!(condition_is(&dep, "Available", "True"), "{}", dep["status"]);
    let crd = c.kubectl_json(&["get", "crd", &crd_name()?])?;
    ensure!(condition_is(&crd, "Established", "True"));

    let models = c.namespace("inst-kust-md")?;
    let kubeconfig = ServiceAccountKubeconfig::new(c, NAMESPACE, NAME)?;
    {
        let op = Operator::spawn_as(kubeconfig.path(), models.name(), &[])?;
        op.wait_ready()?;
        reconcile_example(&models, "digits")?;
    }

    // No drift: the live objects are what the files say, and applying again writes no new spec.
    let generation = |d: &serde_json::Value| d["metadata"]["generation"].clone();
    let diff = c.kubectl_output(&["diff", "-k", &dir], None)?;
    ensure!(
        diff.status.success() && diff.stdout.is_empty(),
        "kubectl diff -k is not empty:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    c.kubectl(&["apply", "-k", &dir])?;
    let after = c.kubectl_json(&["get", "deployment", NAME, "-n", NAMESPACE])?;
    ensure!(
        generation(&after) == generation(&dep),
        "a second apply changed the Deployment"
    );

    c.kubectl(&[
        "delete",
        "-k",
        &dir,
        "-l",
        PART_OF,
        "--wait=true",
        "--timeout=120s",
    ])?;
    ensure_nothing_left(c, NAMESPACE, "app.kubernetes.io/instance=tractor")?;
    let gone = c.kubectl_output(&["get", "namespace", NAMESPACE], None)?;
    ensure!(!gone.status.success(), "namespace {NAMESPACE} left behind");
    c.kubectl(&["get", "crd", &crd_name()?])?;
    models.kubectl(&["get", "mdep", "digits"])?;
    Ok(())
}
