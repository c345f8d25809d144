//! Pod Security "restricted": in a namespace that enforces it, the chart's operator pod and every pod the
//! operator creates for a model (optimize Job, serving pods with TLS and token Secrets mounted) are admitted,
//! and the server gets `--tls-cert`, `--tls-key` and `--auth-token-file` from the spec's Secret references.

use anyhow::{Context, Result, ensure};
use serde_json::json;
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, wait_for};
use tractor_e2e::install::fullname;
use tractor_e2e::modeldeployment::{
    apply, finish_job_with_report, success_report, wait_for_new_job,
};
use tractor_e2e::operator::Operator;

#[test]
fn operator_and_model_pods_pass_restricted() -> Result<()> {
    let cluster = cluster()?;
    let ns = cluster.namespace("inst-psa")?;
    ns.kubectl(&[
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ])?;
    // Enforcement is on: a pod that breaks the profile is refused.
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}});
    let refused = ns.kubectl_output(&["apply", "-f", "-"], Some(&bad.to_string()))?;
    ensure!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("violates PodSecurity"),
        "a privileged pod was not refused: {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The chart's operator pod, admitted and running.
    let op = Operator::start(cluster, ns.name())?;
    let out = &op.release().context("the chart's release")?.output;
    ensure!(
        !out.stderr.contains("PodSecurity"),
        "install warned: {}",
        out.stderr
    );
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={}", ns.name()),
    ])?;
    ensure!(
        pods["items"].as_array().map(Vec::len) == Some(1),
        "operator pod not admitted: {pods}"
    );
    ns.kubectl(&["get", "deployment", &fullname(ns.name())])?;

    // A model with TLS and a token: its Job pod and serving pods.
    for (secret, data) in [
        (
            "digits-tls",
            vec!["--from-literal=tls.crt=cert", "--from-literal=tls.key=key"],
        ),
        ("digits-token", vec!["--from-literal=token=s3cret"]),
    ] {
        let mut args = vec!["create", "secret", "generic", secret];
        args.extend(data);
        ns.kubectl(&args)?;
    }
    let md = json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": "https://models.example.com/digits/mlp.onnx", "sha256": "5f".repeat(32)},
            "serving": {
                "replicas": 2,
                "tls": {"secretRef": {"name": "digits-tls"}},
                "auth": {"secretRef": {"name": "digits-token"}, "key": "token"},
            },
        },
    });
    let warned = apply(&ns, &md)?;
    ensure!(!warned.contains("PodSecurity"), "{warned}");
    let job = wait_for_new_job(&ns, "digits", &[])?;
    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    let serving = wait_for(DEFAULT_WAIT, "two serving pods", || {
        let pods = ns.kubectl_json(&[
            "get",
            "pods",
            "-l",
            "serving.tractor.dev/model=digits,serving.tractor.dev/component=server",
        ])?;
        Ok((pods["items"].as_array().map(Vec::len) == Some(2)).then_some(pods))
    })?;
    // Nothing refused along the way: no FailedCreate from the Job or ReplicaSet controllers.
    let events = ns.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=FailedCreate",
        "-o",
        "name",
    ])?;
    ensure!(events.trim().is_empty(), "pods were refused: {events}");

    // TLS and token reach the server from the Secrets, by file.
    let pod = &serving["items"][0]["spec"];
    let server = &pod["containers"][0];
    let args: Vec<&str> = server["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .and_then(|i| args.get(i + 1))
            .copied()
    };
    ensure!(
        flag("--tls-cert") == Some("/var/run/tractor/tls/tls.crt"),
        "{args:?}"
    );
    ensure!(
        flag("--tls-key") == Some("/var/run/tractor/tls/tls.key"),
        "{args:?}"
    );
    ensure!(
        flag("--auth-token-file") == Some("/var/run/tractor/auth/token"),
        "{args:?}"
    );
    let volumes = pod["volumes"].to_string();
    ensure!(
        volumes.contains("\"secretName\":\"digits-tls\"")
            && volumes.contains("\"secretName\":\"digits-token\""),
        "{volumes}"
    );
    ensure!(server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS");
    let mounts = server["volumeMounts"].to_string();
    ensure!(mounts.contains("/var/run/tractor/tls") && mounts.contains("/var/run/tractor/auth"));
    ensure!(
        !server["env"].to_string().contains("s3cret"),
        "the token was copied into the spec"
    );
    drop(op);
    Ok(())
}
