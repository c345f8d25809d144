//! On the real node: the optimize Job really runs `tractor optimize` in a pod and its termination-message
//! report reaches the status; the serving pod loads the artifact and answers through the Service's ClusterIP
//! with the predictions onnxruntime gave for the fixture; every pod is admitted by Pod Security `restricted`.

use anyhow::{Result, ensure};
use reqwest::blocking::Client;
use std::time::Duration;
use tractor_e2e::node::{
    REAL_NODE, apply_digits, infer_argmax, operator, real_node, restricted_namespace, service_url,
    wait_model_ready, wait_serving,
};
use tractor_e2e::serve::Split;

#[test]
fn optimize_job_and_serving_pod_run_on_the_real_node() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-serve")?;
    let _op = operator(cluster, &ns)?;
    apply_digits(&ns, "digits", 1)?;
    let md = wait_model_ready(&ns, "digits")?;

    // The report in the status is the one the real Job wrote to /dev/termination-log.
    let model = &md["status"]["model"];
    let digest = model["artifactDigest"].as_str().unwrap_or_default();
    ensure!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "status.model: {model}"
    );
    let jobs = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "serving.tractor.dev/component=optimize",
    ])?;
    let job_pod = jobs["items"]
        .as_array()
        .and_then(|p| p.first())
        .cloned()
        .unwrap_or_default();
    ensure!(
        job_pod["spec"]["nodeName"] == REAL_NODE,
        "optimize pod: {}",
        job_pod["spec"]
    );
    ensure!(
        job_pod["status"]["phase"] == "Succeeded",
        "optimize pod: {}",
        job_pod["status"]
    );
    let message = job_pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        message.contains(digest.trim_start_matches("sha256:")),
        "termination message does not carry the artifact digest {digest}: {message}"
    );

    // Every pod of the namespace ran on the real node under the restricted policy.
    let pods = ns.kubectl_json(&["get", "pods"])?;
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    ensure!(
        pods.len() >= 2,
        "expected the Job's and the server's pods: {pods:?}"
    );
    for pod in &pods {
        ensure!(
            pod["spec"]["nodeName"] == REAL_NODE,
            "{} not on the real node",
            pod["metadata"]["name"]
        );
        ensure!(
            pod["spec"]["securityContext"]["runAsNonRoot"] == true,
            "{}",
            pod["metadata"]["name"]
        );
    }

    // Through the ClusterIP (kube-proxy's rules), the whole test split, against onnxruntime.
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    let reference = split.reference_argmax("probabilities").unwrap_or_default();
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    wait_serving("an answer through the ClusterIP", || {
        infer_argmax(&client, &url, "digits", &split, 0..1)
    })?;
    let mut agree = 0;
    for start in (0..split.rows()).step_by(50) {
        let end = (start + 50).min(split.rows());
        let got = infer_argmax(&client, &url, "digits", &split, start..end)?;
        agree += got
            .iter()
            .zip(&reference[start..end])
            .filter(|(a, b)| a == b)
            .count();
    }
    println!(
        "digits on the real node through {url}: {agree}/{} predictions equal onnxruntime's",
        split.rows()
    );
    ensure!(
        agree == split.rows(),
        "only {agree}/{} predictions equal onnxruntime's",
        split.rows()
    );
    Ok(())
}
