//! The cluster hosts in-cluster clients as a user's cluster does: a pod on the real node, under a
//! ServiceAccount of its own, reads a ModelDeployment through `https://kubernetes.default.svc` (cluster DNS,
//! the `kubernetes` Service's endpoint, the API server's certificate verified against the pod's CA bundle,
//! its token) and calls the model by the `status.url` it read there (`http://NAME.NS.svc:8080/...`), with
//! the operator itself in-cluster. A ServiceAccount without the Role is refused by the same path.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tractor_e2e::cluster::{TestNamespace, wait_for};
use tractor_e2e::modeldeployment::get;
use tractor_e2e::node::{
    NODE_WAIT, apply_digits, infer_body, operator, real_node, restricted_namespace,
    wait_model_ready,
};
use tractor_e2e::serve::Split;

/// The test client image `cluster.sh node-up` imports: static kubectl and busybox (`CLIENT_IMAGE` in
/// tests/cluster/node/node.sh).
const CLIENT_IMAGE: &str = "localhost/tractor-client:1";

/// Runs `script` with `sh -c` in a restricted pod under ServiceAccount `sa` and returns its exit code and
/// log once it has finished.
fn run_client(ns: &TestNamespace, name: &str, sa: &str, script: &str) -> Result<(i64, String)> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns.name()},
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "client",
                "image": CLIENT_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                // kubectl keeps a discovery cache under $HOME.
                "env": [{"name": "HOME", "value": "/tmp"}],
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": true,
                },
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    });
    ns.kubectl_with_stdin(&["apply", "-f", "-"], Some(&pod.to_string()))?;
    let done = wait_for(NODE_WAIT, &format!("pod {name} finished"), || {
        let pod = ns.kubectl_json(&["get", "pod", name])?;
        let phase = pod["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(pod))
    })?;
    let code = done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
        .as_i64()
        .context("no exit code")?;
    let log = ns.kubectl(&["logs", name])?;
    Ok((code, log))
}

/// The client's script: the model's URL from the API by the in-cluster name, then its metadata and one
/// inference from that URL.
fn script(ns: &str, body: &Value) -> String {
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    format!(
        "set -e\n\
         url=$(kubectl --server=https://kubernetes.default.svc --certificate-authority={sa}/ca.crt \
           --token=\"$(cat {sa}/token)\" -n {ns} get modeldeployment digits -o 'jsonpath={{.status.url}}')\n\
         echo \"url=$url\"\n\
         echo \"metadata=$(wget -qO- \"$url\")\"\n\
         echo \"infer=$(wget -qO- --header 'Content-Type: application/json' --post-data '{body}' \"$url/infer\")\"\n"
    )
}

/// The value of `key=` in the client's log.
fn field<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
}

#[test]
fn a_pod_reads_the_api_by_its_service_name_and_calls_the_model_by_its_status_url() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-incluster")?;
    let _op = operator(cluster, &ns)?;
    apply_digits(&ns, "digits", 1)?;
    wait_model_ready(&ns, "digits")?;
    let status_url = get(&ns, "digits")?["status"]["url"]
        .as_str()
        .context("status.url")?
        .to_owned();

    // A reader that may get ModelDeployments in this namespace, and one that may not.
    ns.kubectl(&["create", "serviceaccount", "reader"])?;
    ns.kubectl(&["create", "serviceaccount", "stranger"])?;
    ns.kubectl(&[
        "create",
        "role",
        "mdep-reader",
        "--verb=get",
        "--resource=modeldeployments.serving.tractor.dev",
    ])?;
    ns.kubectl(&[
        "create",
        "rolebinding",
        "mdep-reader",
        "--role=mdep-reader",
        &format!("--serviceaccount={}:reader", ns.name()),
    ])?;
    let split = Split::load("digits_mlp")?;
    let body = infer_body(&split, 0..1);
    let (code, log) = run_client(&ns, "reader", "reader", &script(ns.name(), &body))?;
    eprintln!("{log}");
    ensure!(code == 0, "the client failed ({code}):\n{log}");
    ensure!(
        field(&log, "url") == Some(status_url.as_str()),
        "read {:?}, status.url is {status_url}",
        field(&log, "url")
    );
    let metadata: Value = serde_json::from_str(field(&log, "metadata").unwrap_or_default())
        .with_context(|| format!("metadata is not JSON:\n{log}"))?;
    ensure!(metadata["name"] == "digits", "{metadata}");
    let infer: Value = serde_json::from_str(field(&log, "infer").unwrap_or_default())
        .with_context(|| format!("the inference answer is not JSON:\n{log}"))?;
    let expected = split
        .reference_argmax("probabilities")
        .context("no reference")?[0];
    let probs: Vec<f64> = infer["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "probabilities"))
        .and_then(|o| o["data"].as_array())
        .context("no probabilities")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    ensure!(
        tractor_e2e::serve::argmax(&probs) == expected,
        "the model answered {probs:?}, onnxruntime's class is {expected}"
    );

    // Same path, no Role: the API server refuses the token's identity, so authentication worked and RBAC
    // decided.
    let (code, log) = run_client(&ns, "stranger", "stranger", &script(ns.name(), &body))?;
    ensure!(
        code != 0,
        "a ServiceAccount without the Role read the model:\n{log}"
    );
    ensure!(
        log.contains("forbidden")
            && log.contains(&format!("system:serviceaccount:{}:stranger", ns.name())),
        "expected a 403 naming the ServiceAccount:\n{log}"
    );
    Ok(())
}
