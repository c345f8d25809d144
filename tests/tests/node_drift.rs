//! Input drift on real pods: the chart's operator in-cluster, two replicas on the real node, traffic through the
//! model's Service, and the verdict read from what Prometheus scraped of the pods' drift gauges.
//!
//! The model is `drift_logreg` (8 synthetic features): its optimize Job records the reference from a 2,000-row
//! evaluation set, and the client serves a held-out split of the same distribution. Held-out traffic keeps every
//! feature's score under the threshold; the same rows with feature 3 offset by two standard deviations turn
//! `Degraded` with reason `InputDrift` naming `X[3]`; held-out traffic again clears it once the pods' windows
//! have slid past the shifted rows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tractor_e2e::cluster::{TestNamespace, wait_for};
use tractor_e2e::modeldeployment::{apply_as_is, get};
use tractor_e2e::node::{
    NODE_WAIT, model_configmap, operator, pods_summary, real_node, restricted_namespace,
    service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::scale::{condition, events};
use tractor_e2e::serve::Split;

/// The fixture: model, evaluation set (the reference) and held-out split.
const FIXTURE: &str = "drift_logreg";
/// The feature the shifted traffic moves, and its name in the metrics and the status.
const SHIFTED: usize = 3;
const SHIFTED_NAME: &str = "X[3]";
/// PSI threshold of the spec.
const THRESHOLD: f64 = 0.2;
/// Rows per request and requests per second: ~100 rows/s, so a 20 s window holds ~2,000 rows over both pods.
const ROWS_PER_REQUEST: usize = 5;
const RATE: f64 = 20.0;

fn md(ns: &TestNamespace, sha: &str) -> Value {
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "drift", "namespace": ns.name()},
        "spec": {
            "model": {"uri": format!("configmap://drift-model/{FIXTURE}.onnx"), "sha256": sha},
            "optimize": {
                "precision": "f32",
                "evaluation": {
                    "dataset": format!("configmap://drift-data/{FIXTURE}_eval.npz"),
                    "metric": "accuracy",
                },
            },
            "serving": {"replicas": 2},
            "monitoring": {
                "drift": {"threshold": THRESHOLD, "interval": "5s", "window": "20s", "minRows": 200},
            },
        },
    })
}

/// A client sending held-out rows through the Service, each call on a new connection (so kube-proxy spreads them
/// over the replicas); `shift` moves one feature of every row it sends from then on.
struct Traffic {
    stop: Arc<AtomicBool>,
    shift: Arc<Mutex<Option<(usize, f32)>>>,
    answered: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(url: String, split: Arc<Split>) -> Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shift: Arc<Mutex<Option<(usize, f32)>>> = Arc::new(Mutex::new(None));
        let answered = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, shift, answered) = (stop.clone(), shift.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    let moved = *shift.lock().expect("not poisoned");
                    let mut data = Vec::with_capacity(ROWS_PER_REQUEST * split.features);
                    for _ in 0..ROWS_PER_REQUEST {
                        let mut row = split.row(next % split.rows()).to_vec();
                        if let Some((feature, by)) = moved {
                            row[feature] += by;
                        }
                        data.extend(row);
                        next += 1;
                    }
                    let body = json!({"inputs": [{"name": split.input, "datatype": "FP32",
                        "shape": [ROWS_PER_REQUEST, split.features], "data": data}]});
                    let ok = client
                        .post(format!("{url}/v2/models/drift/infer"))
                        .json(&body)
                        .send()
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // Pacing a load generator, not waiting for a condition.
                    std::thread::sleep(Duration::from_secs_f64(1.0 / RATE));
                }
            })
        };
        Ok(Self {
            stop,
            shift,
            answered,
            handle: Some(handle),
        })
    }

    fn shift(&self, by: Option<(usize, f32)>) {
        *self.shift.lock().expect("not poisoned") = by;
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The standard deviation of one feature over the split.
fn std_dev(split: &Split, feature: usize) -> f32 {
    let values: Vec<f64> = (0..split.rows())
        .map(|i| f64::from(split.row(i)[feature]))
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    var.sqrt() as f32
}

/// Each feature's score as Prometheus has it from each pod: (pod, feature, score).
fn scraped_scores(ns: &TestNamespace) -> Result<Vec<(String, String, f64)>> {
    let cluster = real_node()?;
    let query = format!(
        "tractor_model_input_drift{{namespace=\"{}\",model=\"drift\"}}",
        ns.name()
    );
    Ok(cluster
        .prometheus_query(&query)?
        .iter()
        .filter_map(|series| {
            Some((
                series["metric"]["pod"].as_str()?.to_owned(),
                series["metric"]["feature"].as_str()?.to_owned(),
                series["value"][1].as_str()?.parse().ok()?,
            ))
        })
        .collect())
}

#[test]
fn drift_on_one_feature_degrades_the_model_by_name_and_clears_when_traffic_is_normal() -> Result<()>
{
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-drift")?;
    let _op = operator(cluster, &ns)?;
    let sha = model_configmap(&ns, "drift-model", &format!("{FIXTURE}.onnx"))?;
    model_configmap(&ns, "drift-data", &format!("{FIXTURE}_eval.npz"))?;
    apply_as_is(&ns, &md(&ns, &sha))?;
    wait_model_ready(&ns, "drift")?;
    let url = service_url(&ns, "drift")?;
    let split = Arc::new(Split::load(FIXTURE)?);
    let probe = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    wait_serving("an answer through the ClusterIP", || {
        let body = json!({"inputs": [{"name": split.input, "datatype": "FP32",
            "shape": [1, split.features], "data": split.row(0)}]});
        let response = probe
            .post(format!("{url}/v2/models/drift/infer"))
            .json(&body)
            .send()?;
        ensure!(response.status().is_success(), "{}", response.status());
        Ok(())
    })?;
    let traffic = Traffic::start(url, split.clone())?;

    // Held-out traffic: judged, not drifted, every score under the threshold (the status' and each pod's).
    let steady = wait_for(NODE_WAIT, "drift judged on held-out traffic", || {
        let drift = get(&ns, "drift")?["status"]["drift"].clone();
        Ok((drift["drifted"] == false).then_some(drift))
    })
    .with_context(|| pods_summary(&ns))?;
    println!("held-out traffic: {steady}");
    ensure!(condition(&ns, "drift", "Degraded")?["status"] == "False");
    let listed = steady["features"].as_array().context("features")?;
    ensure!(!listed.is_empty(), "{steady}");
    for feature in listed {
        let score = feature["score"].as_f64().context("score")?;
        ensure!(score < THRESHOLD, "{feature} on held-out traffic");
    }
    // The operator may judge on one pod's window before Prometheus has scraped the other's first scores.
    let scores = wait_for(
        NODE_WAIT,
        "both replicas' drift scores in Prometheus",
        || {
            let scores = scraped_scores(&ns)?;
            let pods: std::collections::BTreeSet<&str> =
                scores.iter().map(|(pod, _, _)| pod.as_str()).collect();
            Ok((pods.len() == 2).then_some(scores))
        },
    )?;
    ensure!(
        scores.iter().all(|(_, _, score)| *score < THRESHOLD),
        "a pod's score over the threshold on held-out traffic: {scores:?}"
    );

    // Feature 3 offset by two standard deviations: Degraded, InputDrift, naming it first.
    let by = 2.0 * std_dev(&split, SHIFTED);
    let shifted_at = Instant::now();
    traffic.shift(Some((SHIFTED, by)));
    let degraded = wait_for(NODE_WAIT, "Degraded with InputDrift", || {
        let degraded = condition(&ns, "drift", "Degraded")?;
        Ok((degraded["status"] == "True").then_some(degraded))
    })
    .with_context(|| pods_summary(&ns))?;
    let took = shifted_at.elapsed();
    println!(
        "drift seen {:.1} s after the shift (interval 5 s, window 20 s): {degraded}",
        took.as_secs_f64()
    );
    ensure!(degraded["reason"] == "InputDrift", "{degraded}");
    let message = degraded["message"].as_str().context("message")?;
    ensure!(
        message.contains("input drift over") && message.contains(&format!("{SHIFTED_NAME} PSI")),
        "{message}"
    );
    let mdep = get(&ns, "drift")?;
    ensure!(mdep["status"]["phase"] == "Degraded", "{}", mdep["status"]);
    let drift = &mdep["status"]["drift"];
    ensure!(drift["features"][0]["feature"] == SHIFTED_NAME, "{drift}");
    ensure!(
        drift["features"][1]["score"]
            .as_f64()
            .is_some_and(|s| s < THRESHOLD),
        "only the shifted feature drifted: {drift}"
    );
    ensure!(
        events(&ns, "drift", "InputDrift")?.len() == 1,
        "one Warning"
    );

    // Normal traffic again: Degraded clears once the windows hold held-out rows only.
    traffic.shift(None);
    let cleared = wait_for(NODE_WAIT, "Degraded cleared", || {
        let degraded = condition(&ns, "drift", "Degraded")?;
        Ok((degraded["status"] == "False").then_some(degraded))
    })
    .with_context(|| pods_summary(&ns))?;
    ensure!(cleared["reason"] == "Healthy", "{cleared}");
    ensure!(get(&ns, "drift")?["status"]["phase"] == "Ready");
    let answered = traffic.answered.load(Ordering::Relaxed);
    drop(traffic);
    println!("drift test: {answered} requests answered through the Service; cleared: {cleared}");
    Ok(())
}
