//! The artifact store on the real node, the user's path: the chart's operator runs in-cluster with
//! `artifactStore` pointing at a real SeaweedFS S3 gateway on the cluster's host address (reachable from pods),
//! as a platform team would set it up, and a model team that first forgets the store's Secret:
//!
//! - Without the Secret in the namespace, the model is served by re-deriving (the pods' init container runs
//!   `optimize`), nothing is published, and `status.model.delivery` says `Rederive` and names the Secret.
//! - With the Secret, the next revision's optimize Job publishes the artifact at `<prefix>/sha256/<hex>` (one
//!   object per digest, no temporary object left); the stored bytes hash to `status.model.artifactDigest`; the
//!   serving pods' one init container runs `tractor fetch` of exactly that object and no container of theirs
//!   runs `optimize`; `status.model.delivery` says `ArtifactStore`; and the probabilities through the Service
//!   equal onnxruntime's within 1e-5 relative for the whole test split.
//! - The store down, a new revision's Job fails with `ArtifactStoreUnavailable` in `status.revision.failure`,
//!   and the published revision keeps serving on both pods (Ready at every poll), with the same answers.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::blocking::Client;
use serde_json::Value;
use tractor_e2e::cluster::{Cluster, HOST_IP, TestNamespace, wait_for};
use tractor_e2e::modeldeployment::{apply_as_is, get};
use tractor_e2e::node::{
    NODE_WAIT, apply_digits, infer_argmax, infer_probabilities, ready_server_pods, real_node,
    restricted_namespace, service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::optimize::{
    S3_ACCESS_KEY, S3_SECRET_KEY, Server, s3_keys_at, s3_put_at, s3_request_at, s3_server_at,
    sha256_bytes,
};
use tractor_e2e::scale::events;
use tractor_e2e::serve::Split;

/// The bucket the operator publishes to.
const BUCKET: &str = "models";
/// The Secret the chart's default `artifactStore.secretName` names.
const STORE_SECRET: &str = "tractor-artifact-store";

/// Each container's args, in order.
type ContainerArgs = Vec<Vec<String>>;

/// The args of the init and the main containers of the serving Deployment's pod template.
fn template_args(ns: &TestNamespace, name: &str) -> Result<(ContainerArgs, ContainerArgs)> {
    let deployment = ns.kubectl_json(&["get", "deployment", name])?;
    let spec = &deployment["spec"]["template"]["spec"];
    let args = |containers: &Value| -> ContainerArgs {
        containers
            .as_array()
            .into_iter()
            .flatten()
            .map(|container| {
                container["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|arg| arg.as_str().map(str::to_owned))
                    .collect()
            })
            .collect()
    };
    Ok((args(&spec["initContainers"]), args(&spec["containers"])))
}

/// A SeaweedFS S3 gateway on the cluster's host address, where pods reach it, with the bucket [`BUCKET`].
fn store() -> Result<Server> {
    let store = s3_server_at(HOST_IP)?;
    s3_put_at(HOST_IP, store.port, BUCKET, None)?;
    Ok(store)
}

/// The store's keys as a platform team hands them to a model namespace: the Secret the chart names.
fn create_store_secret(ns: &TestNamespace) -> Result<()> {
    ns.kubectl(&[
        "create",
        "secret",
        "generic",
        STORE_SECRET,
        &format!("--from-literal=AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}"),
        &format!("--from-literal=AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}"),
    ])?;
    Ok(())
}

/// The chart's operator for `ns`, publishing to `store` under the prefix `ns` (each test its own).
fn operator_with_store(
    cluster: &'static Cluster,
    ns: &TestNamespace,
    store: &Server,
) -> Result<Operator> {
    let prefix = ns.name();
    Operator::start_with(
        cluster,
        ns.name(),
        &[
            &format!("artifactStore.uri=s3://{BUCKET}/{prefix}"),
            &format!("artifactStore.endpoint=http://{HOST_IP}:{}", store.port),
            "artifactStore.region=us-east-1",
            "artifactStore.pathStyle=true",
        ],
    )
}

/// Relative tolerance on each served probability against onnxruntime's (both f32; they sum in other orders).
const RELATIVE: f64 = 1e-5;
/// Absolute slack under it, for probabilities near zero, where f32 rounding alone exceeds the relative bound.
const ABSOLUTE: f64 = 1e-7;

/// Every probability of the digits test split through model `name`'s Service equals onnxruntime's within
/// [`RELATIVE`] (and so does every prediction).
fn assert_predictions(client: &Client, url: &str, name: &str, split: &Split) -> Result<()> {
    let reference = &split
        .reference
        .get("probabilities")
        .context("the split's reference outputs")?
        .data;
    wait_serving("an answer through the ClusterIP", || {
        infer_argmax(client, url, name, split, 0..1)
    })?;
    let mut worst = (0.0f64, 0usize);
    for start in (0..split.rows()).step_by(50) {
        let end = (start + 50).min(split.rows());
        let got = infer_probabilities(client, url, name, split, start..end)?;
        for (offset, (served, expected)) in
            got.iter().zip(&reference[start * 10..end * 10]).enumerate()
        {
            let excess = (served - expected).abs() - (RELATIVE * expected.abs() + ABSOLUTE);
            if excess > worst.0 {
                worst = (excess, start * 10 + offset);
            }
        }
    }
    let (excess, at) = worst;
    ensure!(
        excess <= 0.0,
        "probability {at} (row {}) is {excess:e} past the tolerance of onnxruntime's {}",
        at / 10,
        reference[at]
    );
    Ok(())
}

#[test]
fn pods_download_the_published_digest_once_the_namespace_holds_the_secret() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let store = store()?;
    let ns = restricted_namespace(cluster, "node-store")?;
    let prefix = ns.name().to_owned();
    let _op = operator_with_store(cluster, &ns, &store)?;
    // No Secret yet: served by re-deriving, and the status says what is missing.
    let mut spec = apply_digits(&ns, "digits", 2)?;
    let md = wait_model_ready(&ns, "digits")?;
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    let delivery = &md["status"]["model"]["delivery"];
    ensure!(
        delivery["mode"] == "Rederive"
            && delivery["message"]
                .as_str()
                .is_some_and(|message| message.contains(STORE_SECRET)),
        "status.model.delivery: {delivery}"
    );
    let (inits, _) = template_args(&ns, "digits")?;
    ensure!(
        inits.len() == 1 && inits[0].first().map(String::as_str) == Some("optimize"),
        "init containers: {inits:?}"
    );
    let published = s3_keys_at(HOST_IP, store.port, BUCKET, &format!("{prefix}/"))?;
    ensure!(
        published.is_empty(),
        "published without the Secret: {published:?}"
    );

    // The Secret created, and a new revision (the format declared): its Job publishes, its pods download.
    create_store_secret(&ns)?;
    spec["spec"]["model"]["format"] = "onnx".into();
    apply_as_is(&ns, &spec)?;
    let md = wait_for(NODE_WAIT, "the new revision served from the store", || {
        let md = get(&ns, "digits")?;
        let status = &md["status"];
        let current = &status["revision"]["current"];
        let served = status["model"]["revision"] == *current
            && status["model"]["delivery"]["mode"] == "ArtifactStore";
        let deployment = ns.kubectl_json(&["get", "deployment", "digits"])?;
        let rolled_out = deployment["status"]["observedGeneration"]
            == deployment["metadata"]["generation"]
            && deployment["status"]["updatedReplicas"] == 2
            && deployment["status"]["replicas"] == 2
            && deployment["status"]["availableReplicas"] == 2;
        Ok((served && rolled_out).then_some(md))
    })?;

    // Published by digest, and the stored bytes are the artifact the status names.
    let model = &md["status"]["model"];
    let digest = model["artifactDigest"].as_str().unwrap_or_default();
    let hex = digest.trim_start_matches("sha256:");
    let key = format!("{prefix}/sha256/{hex}");
    ensure!(
        model["artifactUri"] == format!("s3://{BUCKET}/{key}"),
        "status.model: {model}"
    );
    let stored = s3_request_at(HOST_IP, store.port, "GET", &format!("{BUCKET}/{key}"))?;
    ensure!(stored.status == 200, "GET {key}: {}", stored.status);
    ensure!(
        sha256_bytes(&stored.body)? == hex,
        "the stored object does not hash to {digest}"
    );
    let keys = s3_keys_at(HOST_IP, store.port, BUCKET, &format!("{prefix}/"))?;
    let artifacts: Vec<&String> = keys
        .iter()
        .filter(|key| key.contains("/sha256/") && !key.ends_with(".json"))
        .collect();
    ensure!(artifacts.len() == 1, "one artifact per digest: {keys:?}");
    ensure!(
        !keys.iter().any(|key| key.contains("/tmp/")),
        "no temporary object left: {keys:?}"
    );

    // The pods fetch exactly that object and never optimize.
    let (inits, mains) = template_args(&ns, "digits")?;
    ensure!(
        inits.len() == 1 && inits[0].first().map(String::as_str) == Some("fetch"),
        "init containers: {inits:?}"
    );
    let uri = format!("s3://{BUCKET}/{key}");
    ensure!(
        inits[0]
            .windows(2)
            .any(|pair| pair[0] == "--uri" && pair[1] == uri)
            && inits[0]
                .windows(2)
                .any(|pair| pair[0] == "--sha256" && pair[1] == hex),
        "fetch args: {:?}",
        inits[0]
    );
    ensure!(
        !inits
            .iter()
            .chain(&mains)
            .flatten()
            .any(|arg| arg == "optimize"),
        "a serving container runs optimize: {inits:?} {mains:?}"
    );
    assert_predictions(&client, &url, "digits", &split)?;

    // The store down: the next revision cannot publish, fails with the reason, and nothing else moves.
    let served = model["revision"].as_str().unwrap_or_default().to_owned();
    let serving = ready_pods(&ns, &["digits"])?;
    ensure!(serving.len() == 2, "serving pods before: {serving:?}");
    drop(store);
    spec["spec"]["optimize"]["precision"] = "f16".into();
    apply_as_is(&ns, &spec)?;
    let failure = wait_for(NODE_WAIT, "the unpublishable revision failed", || {
        let still = ready_pods(&ns, &["digits"])?;
        ensure!(
            serving.iter().all(|pod| still.contains(pod)),
            "a pod already serving stopped being Ready: before {serving:?}, now {still:?}"
        );
        let md = get(&ns, "digits")?;
        let failure = md["status"]["revision"]["failure"].clone();
        Ok((!failure.is_null()).then_some(failure))
    })?;
    ensure!(
        failure["reason"] == "ArtifactStoreUnavailable",
        "status.revision.failure: {failure}"
    );
    let md = get(&ns, "digits")?;
    ensure!(
        md["status"]["model"]["revision"] == served.as_str(),
        "the published revision {served} no longer serves: {}",
        md["status"]["model"]
    );
    let deployment = ns.kubectl_json(&["get", "deployment", "digits"])?;
    ensure!(
        deployment["status"]["availableReplicas"] == 2,
        "the serving pods: {}",
        deployment["status"]
    );
    assert_predictions(&client, &url, "digits", &split)?;
    Ok(())
}

/// The shared optimize cache, on the user's path: with the store's Secret in the namespace (where the operator,
/// installed there, finds its keys too), a first ModelDeployment's Job publishes and records the cache entry;
/// a second ModelDeployment of the same pinned bytes and recipe, from another ConfigMap, becomes Ready with no
/// Job of its own, its pods download the first one's artifact, and they answer as onnxruntime does.
///
/// Then the published object is changed in the store behind tractor's back and the copy scaled to two: the new
/// pod's `fetch` refuses it (its termination message names both digests, and it never becomes Ready), a
/// `PodStartFailed` Warning on the ModelDeployment names the pod and the published digest, and the pods already
/// serving stay Ready throughout (checked at every poll) and keep answering as onnxruntime does.
#[test]
fn a_second_model_deployment_of_the_same_pinned_model_runs_no_job() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let store = store()?;
    let ns = restricted_namespace(cluster, "node-cache")?;
    let prefix = ns.name().to_owned();
    create_store_secret(&ns)?;
    let _op = operator_with_store(cluster, &ns, &store)?;
    apply_digits(&ns, "digits", 1)?;
    let first = wait_model_ready(&ns, "digits")?;
    let keys = s3_keys_at(HOST_IP, store.port, BUCKET, &format!("{prefix}/cache/"))?;
    ensure!(keys.len() == 1, "one cache entry: {keys:?}");

    let mut copy = apply_digits(&ns, "digits-copy", 1)?;
    let second = wait_model_ready(&ns, "digits-copy")?;
    let jobs = ns.kubectl_json(&["get", "jobs", "-l", "serving.tractor.dev/model=digits-copy"])?;
    ensure!(
        jobs["items"].as_array().is_some_and(Vec::is_empty),
        "digits-copy ran a Job: {}",
        jobs["items"]
    );
    let model = &second["status"]["model"];
    ensure!(
        model["artifactDigest"] == first["status"]["model"]["artifactDigest"]
            && model["artifactUri"] == first["status"]["model"]["artifactUri"],
        "the copy serves another artifact: {model}"
    );
    ensure!(
        model["message"]
            .as_str()
            .is_some_and(|message| message.contains("shared optimize cache")),
        "status.model.message: {}",
        model["message"]
    );
    ensure!(
        model["delivery"]["mode"] == "ArtifactStore",
        "status.model.delivery: {}",
        model["delivery"]
    );
    let url = service_url(&ns, "digits-copy")?;
    let split = Split::load("digits_mlp")?;
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    assert_predictions(&client, &url, "digits-copy", &split)?;

    // The object changed after upload, then a scale-out fetches it.
    let digest = model["artifactDigest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let hex = digest.trim_start_matches("sha256:").to_owned();
    let key = format!("{prefix}/sha256/{hex}");
    let tampered = tempfile::NamedTempFile::new()?;
    std::fs::write(tampered.path(), b"not the artifact the Job published")?;
    s3_put_at(
        HOST_IP,
        store.port,
        &format!("{BUCKET}/{key}"),
        Some(tampered.path()),
    )?;
    let serving = ready_pods(&ns, &["digits", "digits-copy"])?;
    ensure!(serving.len() == 2, "serving pods before: {serving:?}");
    copy["spec"]["serving"]["replicas"] = 2.into();
    apply_as_is(&ns, &copy)?;
    let warning = wait_for(
        NODE_WAIT,
        "a PodStartFailed Warning naming the digest",
        || {
            let still = ready_pods(&ns, &["digits", "digits-copy"])?;
            ensure!(
                serving.iter().all(|pod| still.contains(pod)),
                "a pod already serving stopped being Ready: before {serving:?}, now {still:?}"
            );
            Ok(events(&ns, "digits-copy", "PodStartFailed")?
                .into_iter()
                .find(|event| {
                    event["note"]
                        .as_str()
                        .is_some_and(|note| note.contains(&hex))
                }))
        },
    )?;
    let note = warning["note"].as_str().unwrap_or_default();
    ensure!(
        warning["type"] == "Warning" && note.contains("DigestMismatch") && note.contains(&key),
        "the Warning: {warning}"
    );
    let pods = ns.kubectl_json(&["get", "pods", "-l", "serving.tractor.dev/model=digits-copy"])?;
    let refused: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            !serving.contains(
                &pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    ensure!(refused.len() == 1, "one new pod: {}", pods["items"]);
    let fetch = &refused[0]["status"]["initContainerStatuses"][0];
    let terminated = if fetch["state"]["terminated"].is_null() {
        &fetch["lastState"]["terminated"]
    } else {
        &fetch["state"]["terminated"]
    };
    let message = terminated["message"].as_str().unwrap_or_default();
    ensure!(
        terminated["exitCode"] == 1 && message.contains(&hex) && message.contains("DigestMismatch"),
        "the new pod's fetch: {fetch}"
    );
    let refused_name = refused[0]["metadata"]["name"].as_str().unwrap_or("?");
    ensure!(
        note.contains(&format!("pod {refused_name} ")),
        "the Warning names another pod than {refused_name}: {note}"
    );
    let still = ready_pods(&ns, &["digits", "digits-copy"])?;
    ensure!(
        serving.iter().all(|pod| still.contains(pod)),
        "a pod already serving stopped being Ready: before {serving:?}, now {still:?}"
    );
    assert_predictions(&client, &url, "digits-copy", &split)?;
    Ok(())
}

/// Names of the Ready serving pods of `models` (not those on their way out, which stay Ready while they drain).
fn ready_pods(ns: &TestNamespace, models: &[&str]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for model in models {
        names.extend(
            ready_server_pods(ns, model)?
                .into_iter()
                .map(|(pod, _, _)| pod),
        );
    }
    Ok(names)
}
