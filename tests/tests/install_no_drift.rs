//! No GitOps drift: once a ModelDeployment is Ready, `kubectl diff` of the file that was applied is empty and a
//! server-side apply dry run of it changes nothing (the API server's defaults and the operator's status
//! writes never touch what the user owns).

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::{cluster, on_kwok, repo_root};
use tractor_e2e::install::reconcile_example;
use tractor_e2e::modeldeployment::get;
use tractor_e2e::operator::Operator;

#[test]
fn applied_example_shows_no_drift_after_ready() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("inst-drift")?;
    let _op = Operator::start(cluster, ns.name())?;
    reconcile_example(&ns, "digits")?;

    // The file as applied (apply_example sets name and namespace, and puts the pods on KWOK).
    let path = repo_root().join("manifests/examples/minimal.yaml");
    let mut md: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    md["metadata"] = serde_json::json!({"name": "digits", "namespace": ns.name()});
    on_kwok(&mut md);
    let file = md.to_string();

    let diff = ns.kubectl_output(&["diff", "-f", "-"], Some(&file))?;
    ensure!(
        diff.status.success() && diff.stdout.is_empty(),
        "kubectl diff after Ready is not empty ({}):\n{}{}",
        diff.status,
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    let live = get(&ns, "digits")?;
    let dry = ns.kubectl_with_stdin(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "json",
        ],
        Some(&file),
    )?;
    let dry: serde_json::Value = serde_json::from_str(&dry).context("dry-run output")?;
    for field in ["spec", "status"] {
        ensure!(
            dry[field] == live[field],
            "a server-side apply dry run would change .{field}:\nlive: {}\ndry:  {}",
            live[field],
            dry[field]
        );
    }
    // kubectl's own bookkeeping annotation is rewritten by any apply; the user's metadata must stay.
    let user_annotations = |object: &serde_json::Value| {
        let mut annotations = object["metadata"]["annotations"].clone();
        if let Some(map) = annotations.as_object_mut() {
            map.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        annotations
    };
    ensure!(
        user_annotations(&dry) == user_annotations(&live),
        "a server-side apply dry run would change annotations: {} -> {}",
        live["metadata"]["annotations"],
        dry["metadata"]["annotations"]
    );
    for field in ["generation", "labels"] {
        ensure!(
            dry["metadata"][field] == live["metadata"][field],
            "a server-side apply dry run would change .metadata.{field}"
        );
    }
    Ok(())
}
