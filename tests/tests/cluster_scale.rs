//! `kubectl scale` works on a ModelDeployment (the CRD has a scale subresource).

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, crd_document, wait_for, yaml_files};

#[test]
fn kubectl_scale_sets_the_replicas() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("scale")?;

    // Any valid example will do; it is renamed to `x` and put into this test's namespace.
    let mut mdep = first_example_modeldeployment()?;
    mdep["metadata"] = serde_json::json!({"name": "x", "namespace": ns.name()});
    ns.kubectl_with_stdin(&["apply", "-f", "-"], Some(&mdep.to_string()))?;

    ns.kubectl(&["scale", "mdep/x", "--replicas=3"])?;

    let crd = crd_document()?;
    let versions = crd["spec"]["versions"]
        .as_array()
        .context("CRD without versions")?;
    let storage = versions
        .iter()
        .find(|v| v["storage"] == true)
        .context("no storage version")?;
    let spec_path = storage["subresources"]["scale"]["specReplicasPath"]
        .as_str()
        .context("the CRD has no scale subresource")?;
    wait_for(DEFAULT_WAIT, "the scale to reach the spec", || {
        let obj = ns.kubectl_json(&["get", "mdep", "x"])?;
        Ok((json_path(&obj, spec_path) == Some(&Value::from(3))).then_some(()))
    })?;
    let scale = ns.kubectl_json(&["get", "mdep", "x", "--subresource=scale"])?;
    ensure!(
        scale["spec"]["replicas"] == 3,
        "scale subresource says {}",
        scale["spec"]
    );
    Ok(())
}

fn first_example_modeldeployment() -> Result<Value> {
    for f in yaml_files("manifests/examples")? {
        let text = std::fs::read_to_string(&f)?;
        for doc in text.split("\n---") {
            let v: Value = serde_yaml::from_str(doc)?;
            if v["kind"] == "ModelDeployment" {
                return Ok(v);
            }
        }
    }
    anyhow::bail!("no ModelDeployment in manifests/examples")
}

/// Follows a `.a.b.c` path as used by `specReplicasPath`.
fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(v, |v, k| v.get(k))
}
