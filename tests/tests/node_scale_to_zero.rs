//! On the real node, with the chart's operator and activator (two replicas, their own ServiceAccount): a
//! ModelDeployment with `minReplicas: 0` and `scaleToZero.idleAfter: 20s` goes to zero once Prometheus has
//! scraped no request for 20 s: its Deployment at 0 replicas, no serving pod, Ready and Available true with
//! reason `ScaledToZero`, phase `ScaledToZero` (`kubectl wait --for=condition=Ready` returns, kstatus says
//! Current and the chart's Argo CD check Healthy), and its Service's only EndpointSlice the operator's, listing
//! exactly the activator's pods. Then, through the Service's ClusterIP, a burst of 50 concurrent REST requests
//! and 10 concurrent gRPC requests: every one is answered 200 / OK with the probabilities onnxruntime gives for
//! its row (1e-5 relative), the model is back on its pods (the Service selects them, the activator's slice is
//! gone), `status.scaleToZero.wokeAt` is set and a `Waking` Event says why. The first answer's latency from
//! zero is printed (`first answer from zero`).
//!
//! The second test holds requests it cannot answer: a ResourceQuota of zero pods keeps the woken model from
//! getting one. With `maxHeldRequests: 2`, of 12 concurrent requests at least 8 are answered 503 with
//! `Retry-After` and a JSON `error`, every one sooner than the first held request's answer; the held ones get 504
//! with a JSON `error` within `holdTimeout` + 1 s. Then one activator replica's process is killed (SIGKILL through
//! containerd: a pod deletion would let it finish its held requests, which is not what a crash does) once its
//! metrics show it holds a request: of 8 concurrent clients at least one sees its connection cut, and every one
//! has its answer (503, 504) or error within `holdTimeout` + 1 s. The other replica never restarted; once the
//! quota is gone the model wakes, and 10 new requests are all answered with onnxruntime's probabilities.
//!
//! The third test sends a request the moment it sees the Deployment scaled to 0 (its last pod may still be
//! draining): it is answered 200 with onnxruntime's probabilities.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::cluster::{TestNamespace, condition_is, wait_for};
use tractor_e2e::install::health;
use tractor_e2e::modeldeployment::{apply_as_is, get};
use tractor_e2e::node::{
    NODE_WAIT, infer_body, kill_container, model_configmap, real_node, restricted_namespace,
    service_url, wait_model_ready,
};
use tractor_e2e::operator::Operator;
use tractor_e2e::serve::Split;
use tractor_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use tractor_serve::grpc::proto::model_infer_request::InferInputTensor;
use tractor_serve::grpc::proto::{InferTensorContents, ModelInferRequest};

/// Relative agreement with onnxruntime's probabilities (f32 arithmetic in a different order).
const RELATIVE: f64 = 1e-5;
/// Absolute slack under it, for probabilities near zero.
const ABSOLUTE: f64 = 1e-7;
/// Concurrent REST requests in the burst from zero.
const REST_BURST: usize = 50;
/// Concurrent gRPC requests in the burst from zero.
const GRPC_BURST: usize = 10;

fn scale_to_zero_model(ns: &TestNamespace, sha: &str, zero: Value) -> Result<()> {
    let md = json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": ns.name()},
        "spec": {
            "model": {"uri": "configmap://digits-model/digits_mlp.onnx", "sha256": sha},
            "optimize": {"precision": "f32"},
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 2,
                "interval": "5s",
                "scaleToZero": zero,
                "metrics": [{"type": "Throughput", "throughput": {"targetPerReplica": 100}}],
            },
        },
    });
    apply_as_is(ns, &md)?;
    Ok(())
}

/// Ready pod IPs of the chart's activator in `ns`.
fn activator_ips(ns: &TestNamespace) -> Result<Vec<String>> {
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tractor-activator",
    ])?;
    let mut ips: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            pod["metadata"]["deletionTimestamp"].is_null() && condition_is(pod, "Ready", "True")
        })
        .filter_map(|pod| pod["status"]["podIP"].as_str().map(str::to_owned))
        .collect();
    ips.sort();
    Ok(ips)
}

/// The Service's EndpointSlices: (name, managed-by, addresses of ready endpoints).
fn slices(ns: &TestNamespace, service: &str) -> Result<Vec<(String, String, Vec<String>)>> {
    let list = ns.kubectl_json(&[
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|slice| {
            let mut addresses: Vec<String> = slice["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["conditions"]["ready"] != false)
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            addresses.sort();
            (
                slice["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                addresses,
            )
        })
        .collect())
}

fn server_pods(ns: &TestNamespace) -> Result<usize> {
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "serving.tractor.dev/model=digits,serving.tractor.dev/component=server",
    ])?;
    Ok(pods["items"].as_array().map_or(0, Vec::len))
}

/// Waits until the model is at zero as a user sees it, and returns the activator's addresses.
fn wait_at_zero(ns: &TestNamespace) -> Result<Vec<String>> {
    wait_for(
        Duration::from_secs(180),
        "digits at zero behind the activator",
        || {
            let md = get(ns, "digits")?;
            let ready = md["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|condition| {
                    condition["type"] == "Ready"
                        && condition["status"] == "True"
                        && condition["reason"] == "ScaledToZero"
                });
            let replicas =
                ns.kubectl_json(&["get", "deployment", "digits"])?["spec"]["replicas"].clone();
            if !(ready && md["status"]["phase"] == "ScaledToZero" && replicas == 0)
                || server_pods(ns)? > 0
            {
                return Ok(None);
            }
            let activator = activator_ips(ns)?;
            let found = slices(ns, "digits")?;
            Ok((found.len() == 1
                && found[0].0 == "digits-activator"
                && found[0].1 == "operator.serving.tractor.dev"
                && found[0].2 == activator
                && activator.len() == 2)
                .then_some(activator))
        },
    )
    .with_context(|| {
        format!(
            "status: {}\nslices: {:?}\nactivator: {:?}\nservice: {}\nserver pods: {:?}",
            get(ns, "digits")
                .map(|md| md["status"].clone())
                .unwrap_or_default(),
            slices(ns, "digits"),
            activator_ips(ns),
            ns.kubectl_json(&["get", "service", "digits"])
                .map(|s| s["spec"].clone())
                .unwrap_or_default(),
            server_pods(ns),
        )
    })
}

fn close(got: &[f64], want: &[f64]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= RELATIVE * w.abs() + ABSOLUTE)
}

/// One REST infer of row `row`: (status, latency, probabilities when 200, the body, the Retry-After header).
struct Answer {
    status: u16,
    took: Duration,
    body: Value,
    retry_after: Option<String>,
}

fn post_row(url: &str, split: &Split, row: usize, timeout: Duration) -> Result<Answer> {
    let client = Client::builder().timeout(timeout).build()?;
    let started = Instant::now();
    let resp = client
        .post(format!("{url}/v2/models/digits/infer"))
        .json(&infer_body(split, row..row + 1))
        .send()?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = resp.json().context("answer is not JSON")?;
    Ok(Answer {
        status,
        took: started.elapsed(),
        body,
        retry_after,
    })
}

fn probabilities(body: &Value) -> Vec<f64> {
    body["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "probabilities"))
        .and_then(|o| o["data"].as_array())
        .map(|d| d.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn reference(split: &Split, row: usize) -> Result<Vec<f64>> {
    let r = split.reference.get("probabilities").context("reference")?;
    Ok(r.data[row * 10..(row + 1) * 10].to_vec())
}

/// One gRPC infer of row `row` on a connection of its own; the probabilities.
async fn grpc_row(target: String, split: &Split, row: usize) -> Result<Vec<f64>> {
    let channel = tonic::transport::Channel::from_shared(target)?
        .timeout(Duration::from_secs(60))
        .connect()
        .await?;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let request = ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: split.input.clone(),
            datatype: "FP32".into(),
            shape: vec![1, split.features as i64],
            contents: Some(InferTensorContents {
                fp32_contents: split.row(row).to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let answer = client.model_infer(request).await?.into_inner();
    let out = answer
        .outputs
        .iter()
        .position(|o| o.name == "probabilities")
        .ok_or_else(|| anyhow!("no probabilities"))?;
    let values: Vec<f64> = match answer.raw_output_contents.get(out) {
        Some(raw) => raw
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        None => answer.outputs[out]
            .contents
            .as_ref()
            .map(|c| c.fp32_contents.iter().map(|v| f64::from(*v)).collect())
            .unwrap_or_default(),
    };
    Ok(values)
}

fn setup(prefix: &str, zero: Value) -> Result<(TestNamespace, Operator, Split)> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, prefix)?;
    let op = Operator::start_with(cluster, ns.name(), &["activator.enabled=true"])?;
    let sha = model_configmap(&ns, "digits-model", "digits_mlp.onnx")?;
    scale_to_zero_model(&ns, &sha, zero)?;
    wait_model_ready(&ns, "digits")?;
    Ok((ns, op, Split::load("digits_mlp")?))
}

#[test]
fn an_idle_model_goes_to_zero_and_a_burst_from_zero_loses_nothing() -> Result<()> {
    let (ns, _op, split) = setup(
        "node-zero",
        json!({"idleAfter": "20s", "holdTimeout": "60s"}),
    )?;
    wait_at_zero(&ns)?;
    // At zero on purpose is healthy and settled to the tools that wait on it.
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=5s",
        "modeldeployment/digits",
    ])?;
    let verdict = health(&ns, "modeldeployment", "digits")?;
    ensure!(
        verdict.kstatus == "Current" && verdict.argo == "Healthy",
        "at zero: {verdict:?}"
    );
    let url = service_url(&ns, "digits")?;
    let grpc = url.replace(":8080", ":8081");

    // Both bursts at once, while the model is at zero.
    let (rest, grpc_answers) = std::thread::scope(|scope| {
        let grpc_calls = scope.spawn(|| -> Result<Vec<Result<Vec<f64>>>> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(async {
                let calls =
                    (0..GRPC_BURST).map(|row| grpc_row(grpc.clone(), &split, REST_BURST + row));
                futures::future::join_all(calls).await
            }))
        });
        let handles: Vec<_> = (0..REST_BURST)
            .map(|row| {
                let (url, split) = (&url, &split);
                scope.spawn(move || post_row(url, split, row, Duration::from_secs(60)))
            })
            .collect();
        let rest = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|_| anyhow!("client thread panicked"))?
            })
            .collect::<Result<Vec<_>>>();
        let grpc_answers = grpc_calls
            .join()
            .map_err(|_| anyhow!("gRPC thread panicked"))?;
        anyhow::Ok((rest?, grpc_answers?))
    })?;
    let first = rest.iter().map(|a| a.took).min().context("no answer")?;
    let last = rest.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "first answer from zero: {:.3} s; last of {REST_BURST}: {:.3} s",
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    for (row, answer) in rest.iter().enumerate() {
        ensure!(
            answer.status == 200,
            "request {row}: {} {}",
            answer.status,
            answer.body
        );
        let got = probabilities(&answer.body);
        ensure!(close(&got, &reference(&split, row)?), "row {row}: {got:?}");
    }
    for (index, answer) in grpc_answers.into_iter().enumerate() {
        let row = REST_BURST + index;
        let got = answer.with_context(|| format!("gRPC request {index}"))?;
        ensure!(
            close(&got, &reference(&split, row)?),
            "gRPC row {row}: {got:?}"
        );
    }

    // Back on its pods: the Service selects them and the activator's slice is gone.
    wait_for(NODE_WAIT, "the Service back on the pods", || {
        let svc = ns.kubectl_json(&["get", "service", "digits"])?;
        let found = slices(&ns, "digits")?;
        Ok((!svc["spec"]["selector"].is_null()
            && !found.is_empty()
            && found
                .iter()
                .all(|s| s.1 == "endpointslice-controller.k8s.io" && !s.2.is_empty()))
        .then_some(()))
    })?;
    let md = get(&ns, "digits")?;
    ensure!(
        !md["status"]["scaleToZero"]["wokeAt"].is_null()
            && md["status"]["scaleToZero"]["endpoints"] == "Pods",
        "status: {}",
        md["status"]["scaleToZero"]
    );
    let events = ns.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=Waking",
        "-o",
        "name",
    ])?;
    ensure!(!events.trim().is_empty(), "no Waking event");
    Ok(())
}

/// The `tractor_activator_held_requests` the activator pod at `ip` reports, all models together.
fn held_on(ip: &str) -> Result<f64> {
    let text = Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?
        .get(format!("http://{ip}:8090/metrics"))
        .send()?
        .text()?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("tractor_activator_held_requests"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// `count` concurrent requests of rows 0.., each with how long it took (measured in its own thread, so a
/// transport error is timed too).
fn burst(url: &str, split: &Split, count: usize) -> Vec<(Duration, Result<Answer>)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|row| {
                scope.spawn(move || {
                    let started = Instant::now();
                    let answer = post_row(url, split, row, Duration::from_secs(30));
                    (started.elapsed(), answer)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("client thread"))
            .collect()
    })
}

#[test]
fn a_full_queue_answers_503_at_once_and_a_killed_activator_fails_only_its_own_requests()
-> Result<()> {
    let hold = Duration::from_secs(8);
    let slack = Duration::from_secs(1);
    let (ns, _op, split) = setup(
        "node-zero-hold",
        json!({"idleAfter": "20s", "maxHeldRequests": 2, "holdTimeout": "8s"}),
    )?;
    wait_at_zero(&ns)?;
    let url = service_url(&ns, "digits")?;
    // Nothing can wake: the woken Deployment gets no pod.
    ns.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
                    "spec": {"hard": {"pods": "0"}}})
            .to_string(),
        ),
    )?;

    // Two replicas hold two each: of twelve, at least eight overflow, and each overflow is answered before any
    // held request is (those wait the whole hold, nothing being able to wake).
    let mut overflow_latest = Duration::ZERO;
    let mut held_earliest = Duration::MAX;
    let (mut overflowed, mut held) = (0, 0);
    for (took, answer) in burst(&url, &split, 12) {
        let answer = answer.map_err(|e| anyhow!("{e:#}"))?;
        ensure!(
            answer.body["error"].is_string(),
            "no JSON error: {}",
            answer.body
        );
        match answer.status {
            503 => {
                ensure!(answer.retry_after.is_some(), "503 without Retry-After");
                overflow_latest = overflow_latest.max(took);
                overflowed += 1;
            }
            504 => {
                ensure!(took <= hold + slack, "held {took:?}");
                held_earliest = held_earliest.min(took);
                held += 1;
            }
            other => bail!("status {other}: {}", answer.body),
        }
    }
    ensure!(
        overflowed >= 8 && held >= 1,
        "{overflowed} overflowed, {held} held"
    );
    ensure!(
        overflow_latest < held_earliest,
        "an overflow 503 took {overflow_latest:?}, the first held answer {held_earliest:?}"
    );

    // A replica killed while it holds requests: its clients get a transport error, the other's their 504, all
    // within the hold and a second.
    let activators = activator_ips(&ns)?;
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tractor-activator",
    ])?;
    let (victim, victim_ip) = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|pod| {
            Some((
                pod["metadata"]["name"].as_str()?.to_owned(),
                pod["status"]["podIP"].as_str()?.to_owned(),
            ))
        })
        .context("an activator pod")?;
    ensure!(
        activators.contains(&victim_ip) && activators.len() == 2,
        "{activators:?}"
    );
    let cluster = real_node()?;
    let answers = std::thread::scope(|scope| -> Result<Vec<(Duration, Result<Answer>)>> {
        let clients = scope.spawn(|| burst(&url, &split, 8));
        wait_for(
            Duration::from_secs(5),
            "a request held by the victim",
            || Ok((held_on(&victim_ip)? >= 1.0).then_some(())),
        )?;
        kill_container(cluster, &ns, &victim, "activator")?;
        clients
            .join()
            .map_err(|_| anyhow!("client thread panicked"))
    })?;
    let mut cut = 0;
    for (took, answer) in &answers {
        ensure!(
            *took <= hold + slack,
            "an answer took {took:?}: {:?}",
            answer.as_ref().map(|a| a.status)
        );
        match answer {
            Err(_) => cut += 1,
            Ok(answer) => ensure!(
                matches!(answer.status, 503 | 504) && answer.body["error"].is_string(),
                "{} {}",
                answer.status,
                answer.body
            ),
        }
    }
    ensure!(
        cut >= 1,
        "no client of the killed replica saw its connection cut"
    );

    // The replica left never restarted; the quota gone, the held requests' demand wakes the model, and new
    // requests are all answered with the model's probabilities.
    let survivor = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tractor-activator",
    ])?;
    for pod in survivor["items"].as_array().into_iter().flatten() {
        if pod["metadata"]["name"] != victim.as_str() {
            ensure!(
                pod["status"]["containerStatuses"][0]["restartCount"] == 0,
                "{}",
                pod["status"]
            );
        }
    }
    ns.kubectl(&["delete", "resourcequota", "no-pods"])?;
    wait_for(NODE_WAIT, "the model woken", || {
        let md = get(&ns, "digits")?;
        Ok((md["status"]["readyReplicas"].as_i64() >= Some(1)).then_some(()))
    })?;
    for (row, (_, answer)) in burst(&url, &split, 10).into_iter().enumerate() {
        let answer = answer.map_err(|e| anyhow!("request {row}: {e:#}"))?;
        ensure!(
            answer.status == 200,
            "request {row}: {} {}",
            answer.status,
            answer.body
        );
        ensure!(
            close(&probabilities(&answer.body), &reference(&split, row)?),
            "row {row}"
        );
    }
    Ok(())
}

/// A request sent as soon as the Deployment is at 0 replicas is answered: by the draining pod, or held by the
/// activator until the model wakes again.
#[test]
fn a_request_arriving_during_scale_down_is_answered() -> Result<()> {
    let (ns, _op, split) = setup(
        "node-zero-down",
        json!({"idleAfter": "20s", "holdTimeout": "60s"}),
    )?;
    let url = service_url(&ns, "digits")?;
    let mut pod_left = false;
    wait_for(
        Duration::from_secs(180),
        "the Deployment scaled to 0",
        || {
            let deployment = ns.kubectl_json(&["get", "deployment", "digits"])?;
            if deployment["spec"]["replicas"] != 0 {
                return Ok(None);
            }
            pod_left = server_pods(&ns)? > 0;
            Ok(Some(()))
        },
    )?;
    let answer = post_row(&url, &split, 7, Duration::from_secs(60))?;
    eprintln!(
        "request during scale-down (a serving pod still there: {pod_left}): {} in {:.3} s",
        answer.status,
        answer.took.as_secs_f64()
    );
    ensure!(answer.status == 200, "{} {}", answer.status, answer.body);
    ensure!(
        close(&probabilities(&answer.body), &reference(&split, 7)?),
        "{}",
        answer.body
    );
    Ok(())
}
