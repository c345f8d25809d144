//! Deleting a namespace removes it and everything in it (namespace controller and garbage collector run).

use anyhow::Result;
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, kwok_deployment, unique_name, wait_for};

#[test]
fn deleting_a_namespace_removes_its_objects() -> Result<()> {
    let cluster = cluster()?;
    let name = unique_name("nsdel");
    cluster.kubectl(&["create", "namespace", &name])?;
    cluster.kubectl(&[
        "create",
        "configmap",
        "cm",
        "--from-literal=k=v",
        "-n",
        &name,
    ])?;
    cluster.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&kwok_deployment(&name, "web", 2).to_string()),
    )?;
    // Wait for the deployment's ReplicaSet so the garbage collector has an owner chain to follow.
    wait_for(DEFAULT_WAIT, "a ReplicaSet of deployment/web", || {
        let rs = cluster.kubectl_json(&["get", "replicasets", "-n", &name])?;
        Ok(rs["items"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(()))
    })?;

    cluster.kubectl(&["delete", "namespace", &name, "--wait=false"])?;
    wait_for(DEFAULT_WAIT, &format!("namespace {name} gone"), || {
        let out = cluster.kubectl_output(&["get", "namespace", &name], None)?;
        Ok(
            (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
                .then_some(()),
        )
    })?;
    // With the namespace gone, nothing of it may be left anywhere.
    for kind in ["configmaps", "deployments", "replicasets", "pods"] {
        let left = cluster.kubectl_json(&["get", kind, "-n", &name])?;
        let count = left["items"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            count == 0,
            "{count} {kind} left in deleted namespace {name}"
        );
    }
    Ok(())
}
