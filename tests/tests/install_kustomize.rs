//! `kubectl apply -k` of an overlay on `manifests/` that only sets the image, as a user pins theirs, installs
//! what the chart does (namespace held to Pod Security restricted, CRD, RBAC, operator): the operator pod
//! runs on the real node and reconciles a model in another namespace with its own ServiceAccount, and
//! `kubectl delete -k ... -l app.kubernetes.io/part-of=tractor` removes everything but the CRD.

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::{cluster, condition_is, crd_name, repo_root};
use tractor_e2e::install::{ensure_nothing_left, reconcile_example};
use tractor_e2e::node::{E2E_IMAGE, real_node};

/// The namespace and names `manifests/` installs into (release "tractor" of the chart).
const NAMESPACE: &str = "tractor-system";
const NAME: &str = "tractor";
const PART_OF: &str = "app.kubernetes.io/part-of=tractor";

#[test]
fn kubectl_apply_k_installs_and_deletes_cleanly() -> Result<()> {
    let cluster = cluster()?;
    real_node()?;
    let overlay = tempfile::tempdir()?;
    let (name, tag) = E2E_IMAGE.rsplit_once(':').context("image tag")?;
    // kustomize takes a base only by a relative path: up from the overlay to /, then down to manifests/.
    let up = "../".repeat(overlay.path().components().count() - 1);
    let base = repo_root().join("manifests");
    let base = base.to_string_lossy();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{up}{}]\n\
             images: [{{name: tractor, newName: {name}, newTag: {tag}}}]\n",
            base.trim_start_matches('/')
        ),
    )?;
    let dir = overlay.path().to_string_lossy();
    let applied = cluster.kubectl_output(&["apply", "-k", &dir], None)?;
    let stderr = String::from_utf8_lossy(&applied.stderr);
    ensure!(
        applied.status.success(),
        "kubectl apply -k failed: {stderr}"
    );
    ensure!(!stderr.contains("PodSecurity"), "apply warned: {stderr}");
    cluster.kubectl(&[
        "rollout",
        "status",
        "deployment",
        NAME,
        "-n",
        NAMESPACE,
        "--timeout=120s",
    ])?;
    let ns = cluster.kubectl_json(&["get", "namespace", NAMESPACE])?;
    ensure!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted");
    let dep = cluster.kubectl_json(&["get", "deployment", NAME, "-n", NAMESPACE])?;
    ensure!(condition_is(&dep, "Available", "True"), "{}", dep["status"]);
    let crd = cluster.kubectl_json(&["get", "crd", &crd_name()?])?;
    ensure!(condition_is(&crd, "Established", "True"));

    let models = cluster.namespace("inst-kust-md")?;
    reconcile_example(&models, "digits")?;

    // No drift: the live objects are what the files say, and applying again writes no new spec.
    let generation = |d: &serde_json::Value| d["metadata"]["generation"].clone();
    let diff = cluster.kubectl_output(&["diff", "-k", &dir], None)?;
    ensure!(
        diff.status.success() && diff.stdout.is_empty(),
        "kubectl diff -k is not empty:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    cluster.kubectl(&["apply", "-k", &dir])?;
    let after = cluster.kubectl_json(&["get", "deployment", NAME, "-n", NAMESPACE])?;
    ensure!(
        generation(&after) == generation(&dep),
        "a second apply changed the Deployment"
    );

    cluster.kubectl(&[
        "delete",
        "-k",
        &dir,
        "-l",
        PART_OF,
        "--wait=true",
        "--timeout=120s",
    ])?;
    ensure_nothing_left(cluster, NAMESPACE, "app.kubernetes.io/instance=tractor")?;
    let gone = cluster.kubectl_output(&["get", "namespace", NAMESPACE], None)?;
    ensure!(!gone.status.success(), "namespace {NAMESPACE} left behind");
    cluster.kubectl(&["get", "crd", &crd_name()?])?;
    models.kubectl(&["get", "mdep", "digits"])?;
    Ok(())
}
