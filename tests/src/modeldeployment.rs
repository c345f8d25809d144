//! Helpers for ModelDeployment tests on KWOK: apply an example under a new name, and stand in for the
//! optimize container by writing its report into the Job pod's termination message.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cluster::{DEFAULT_WAIT, TestNamespace, on_kwok, repo_root, wait_for};

/// Applies `manifests/examples/<file>` into `ns` as `name`, its pods on the KWOK nodes ([`on_kwok`]: these
/// tests finish the optimize Job themselves), and returns the object applied.
pub fn apply_example(ns: &TestNamespace, file: &str, name: &str) -> Result<Value> {
    let path = repo_root().join("manifests/examples").join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut md: Value = serde_yaml::from_str(&text)?;
    md["metadata"] = json!({"name": name, "namespace": ns.name()});
    on_kwok(&mut md);
    apply(ns, &md)?;
    Ok(md)
}

/// `kubectl apply` of one object (client-side, as most users do); a ModelDeployment's pods are put on the
/// KWOK nodes ([`on_kwok`]), where these tests stand in for the optimize container.
pub fn apply(ns: &TestNamespace, object: &Value) -> Result<String> {
    let mut object = object.clone();
    if object["kind"] == "ModelDeployment" {
        on_kwok(&mut object);
    }
    apply_as_is(ns, &object)
}

/// `kubectl apply` of one object exactly as given: a ModelDeployment's pods land where a user's would (the
/// real node).
pub fn apply_as_is(ns: &TestNamespace, object: &Value) -> Result<String> {
    ns.kubectl_with_stdin(&["apply", "-f", "-"], Some(&object.to_string()))
}

/// Waits for the optimize Job of `md` whose name differs from every name in `except`, and returns its name.
pub fn wait_for_new_job(ns: &TestNamespace, md: &str, except: &[String]) -> Result<String> {
    wait_for(DEFAULT_WAIT, &format!("a new optimize Job of {md}"), || {
        let jobs = ns.kubectl_json(&[
            "get",
            "jobs",
            "-l",
            &format!("serving.tractor.dev/model={md}"),
        ])?;
        Ok(jobs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["metadata"]["name"].as_str())
            .find(|n| !except.iter().any(|e| e == n))
            .map(str::to_owned))
    })
}

/// A successful report, as `tractor optimize` writes it for the digits MLP.
pub fn success_report(precision: &str) -> Value {
    json!({
        "sourceDigest": format!("sha256:{}", "5f".repeat(32)),
        "artifactDigest": format!("sha256:{}", "a1".repeat(32)),
        "sizeBytes": 23456,
        "format": "onnx",
        "precision": precision,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        "metric": "accuracy",
        "baselineScore": 0.972,
        "optimizedScore": 0.969,
    })
}

/// A failure report with a reason code.
pub fn failure_report(reason: &str, message: &str) -> Value {
    json!({"reason": reason, "message": message})
}

/// Waits until KWOK has run the Job's pod to completion, then writes `report` as the optimize container's
/// termination message — what the kubelet does with `/dev/termination-log` on a real node.
pub fn finish_job_with_report(ns: &TestNamespace, job: &str, report: &Value) -> Result<()> {
    let pod = wait_for(
        DEFAULT_WAIT,
        &format!("the pod of Job {job} to finish"),
        || {
            let pods = ns.kubectl_json(&[
                "get",
                "pods",
                "-l",
                &format!("batch.kubernetes.io/job-name={job}"),
            ])?;
            Ok(pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["status"]["phase"] == "Succeeded")
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned)))
        },
    )?;
    let patch = json!({"status": {"containerStatuses": [
        {"name": "optimize", "state": {"terminated": {"message": report.to_string()}}}
    ]}});
    ns.kubectl(&[
        "patch",
        "pod",
        &pod,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

/// The ModelDeployment as JSON.
pub fn get(ns: &TestNamespace, md: &str) -> Result<Value> {
    ns.kubectl_json(&["get", "mdep", md])
}

/// `metadata.resourceVersion` of an object.
pub fn resource_version(ns: &TestNamespace, kind: &str, name: &str) -> Result<String> {
    let obj = ns.kubectl_json(&["get", kind, name])?;
    obj["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
        .context("no resourceVersion")
}

/// Fails unless exactly one optimize Job, Deployment and Service of `md` exist: nothing orphaned or duplicated.
pub fn ensure_one_of_each_child(ns: &TestNamespace, md: &str) -> Result<()> {
    for kind in ["jobs", "deployments", "services"] {
        let names = ns.kubectl(&[
            "get",
            kind,
            "-l",
            &format!("serving.tractor.dev/model={md}"),
            "-o",
            "name",
        ])?;
        anyhow::ensure!(
            names.lines().count() == 1,
            "expected one of {kind} for {md}, found: {names}"
        );
    }
    Ok(())
}
