//! On the real node, through the chart's operator: three replicas behind the model's Service, 300 labelled
//! requests and their feedback (by receipt) both sent through the Service on fresh connections. Every item is
//! counted, on whichever replica it lands (the summaries name none unknown), feedback is scored on more than one
//! replica, and the per-revision accuracy Prometheus adds up from the replicas' confusion counters equals the
//! offline accuracy of those predictions exactly. A regressor (two replicas) likewise: the MAE and RMSE
//! Prometheus computes from the replicas' error sums equal the offline figures on the same requests.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::cluster::wait_for;
use tractor_e2e::modeldeployment::apply_as_is;
use tractor_e2e::node::{
    NODE_WAIT, apply_digits, infer_body, model_configmap, operator, ready_server_pods, real_node,
    restricted_namespace, service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::serve::Split;
use tractor_serve::receipt::{Predicted, Receipt};

const REQUESTS: usize = 300;
/// Feedback items per call: ten calls, each on a new connection, so they spread over the replicas.
const BATCH: usize = 30;

#[test]
fn feedback_through_the_service_is_counted_on_any_replica() -> Result<()> {
    let c = real_node()?;
    c.install_crd()?;
    let ns = restricted_namespace(c, "node-feedback")?;
    let _op = operator(c, &ns)?;
    apply_digits(&ns, "digits", 3)?;
    wait_model_ready(&ns, "digits")?;
    wait_for(NODE_WAIT, "3 serving pods Ready", || {
        Ok((ready_server_pods(&ns, "digits")?.len() == 3).then_some(()))
    })?;
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    // A new connection per call: kube-proxy picks an endpoint per connection.
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()?;
    wait_serving("an answer through the ClusterIP", || {
        let r = client
            .post(format!("{url}/v2/models/digits/infer"))
            .json(&infer_body(&split, 0..1))
            .send()?;
        ensure!(r.status().is_success(), "{}", r.status());
        Ok(())
    })?;

    let mut items = Vec::new();
    let mut correct = 0usize;
    let mut revision = None;
    for i in 0..REQUESTS {
        let row = i % split.rows();
        let resp: Value = client
            .post(format!("{url}/v2/models/digits/infer"))
            .json(&infer_body(&split, row..row + 1))
            .send()?
            .error_for_status()?
            .json()?;
        let text = resp["parameters"]["tractor_receipt"]
            .as_str()
            .with_context(|| format!("no receipt: {resp}"))?;
        let receipt = Receipt::parse(text).map_err(anyhow::Error::msg)?;
        let Predicted::Classes(classes) = &receipt.predicted else {
            anyhow::bail!("a classifier's receipt without classes: {text}");
        };
        ensure!(classes.len() == 1, "{text}");
        correct += usize::from(classes[0] == split.y[row]);
        revision = receipt.revision.clone();
        items.push(json!({"receipt": text, "label": split.y[row]}));
    }
    let revision = revision.context("the servers were not told their revision")?;

    let (mut counted_right, mut counted_wrong, mut unknown) = (0u64, 0u64, Vec::new());
    for chunk in items.chunks(BATCH) {
        let s: Value = client
            .post(format!("{url}/v2/models/digits/feedback"))
            .json(&json!({"feedback": chunk}))
            .send()?
            .error_for_status()?
            .json()?;
        counted_right += s["correct"].as_u64().unwrap_or_default();
        counted_wrong += s["incorrect"].as_u64().unwrap_or_default();
        if s["unknown_id"] != 0 {
            unknown.push(s);
        }
    }
    ensure!(unknown.is_empty(), "feedback not counted: {unknown:?}");
    ensure!(
        (counted_right as usize, counted_wrong as usize) == (correct, REQUESTS - correct),
        "summaries counted {counted_right} right and {counted_wrong} wrong; offline {correct} of {REQUESTS}"
    );

    // Prometheus adds the replicas' counters up: wait for a scrape of every replica after the last feedback.
    let selector = format!(
        "namespace=\"{}\",model=\"digits\",revision=\"{revision}\"",
        ns.name()
    );
    let sum = |extra: &str| -> Result<Option<f64>> {
        let q = format!("sum(tractor_model_predictions_labelled_total{{{selector}{extra}}})");
        Ok(c.prometheus_query(&q)?
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    };
    wait_for(NODE_WAIT, "Prometheus to hold every labelled row", || {
        Ok((sum("")? == Some(REQUESTS as f64)).then_some(()))
    })?;
    let right = sum(",result=\"correct\"")?.unwrap_or_default();
    let accuracy = right / REQUESTS as f64;
    let offline = correct as f64 / REQUESTS as f64;
    ensure!(
        accuracy == offline,
        "Prometheus per-revision accuracy {accuracy} ({right} of {REQUESTS}), offline {offline}"
    );
    let pods = c.prometheus_query(&format!(
        "sum by (pod) (tractor_model_predictions_labelled_total{{{selector}}})"
    ))?;
    ensure!(
        pods.len() >= 2,
        "feedback was scored on {} replica(s) only: {pods:?}",
        pods.len()
    );
    println!(
        "node feedback: {REQUESTS} requests, accuracy {accuracy} (offline {offline}); feedback scored on {} replicas: {}",
        pods.len(),
        pods.iter()
            .map(|p| format!("{}={}", p["metric"]["pod"], p["value"][1]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[test]
fn a_regressors_mae_and_rmse_from_prometheus_equal_the_offline_figures() -> Result<()> {
    let c = real_node()?;
    c.install_crd()?;
    let ns = restricted_namespace(c, "node-feedback-reg")?;
    let _op = operator(c, &ns)?;
    let sha = model_configmap(&ns, "diabetes-model", "diabetes_gbr.onnx")?;
    apply_as_is(
        &ns,
        &json!({
            "apiVersion": "serving.tractor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "diabetes", "namespace": ns.name()},
            "spec": {
                "model": {"uri": "configmap://diabetes-model/diabetes_gbr.onnx", "sha256": sha},
                "optimize": {"precision": "f32"},
                "serving": {"replicas": 2},
            },
        }),
    )?;
    wait_model_ready(&ns, "diabetes")?;
    wait_for(NODE_WAIT, "2 serving pods Ready", || {
        Ok((ready_server_pods(&ns, "diabetes")?.len() == 2).then_some(()))
    })?;
    let url = service_url(&ns, "diabetes")?;
    let split = Split::load("diabetes_gbr")?;
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()?;
    let infer = |row: usize| -> Result<String> {
        let resp: Value = client
            .post(format!("{url}/v2/models/diabetes/infer"))
            .json(&infer_body(&split, row..row + 1))
            .send()?
            .error_for_status()?
            .json()?;
        resp["parameters"]["tractor_receipt"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no receipt: {resp}"))
    };
    wait_serving("an answer through the ClusterIP", || infer(0))?;

    let mut items = Vec::new();
    let (mut abs, mut sq, mut revision) = (0.0f64, 0.0f64, None);
    for row in 0..split.rows() {
        let text = infer(row)?;
        let receipt = Receipt::parse(&text).map_err(anyhow::Error::msg)?;
        let Predicted::Values(values) = &receipt.predicted else {
            anyhow::bail!("a regressor's receipt without values: {text}");
        };
        ensure!(values.len() == 1, "{text}");
        let error = values[0] - split.y[row] as f64;
        abs += error.abs();
        sq += error * error;
        revision = receipt.revision.clone();
        items.push(json!({"receipt": text, "label": split.y[row]}));
    }
    let n = items.len() as f64;
    let revision = revision.context("the servers were not told their revision")?;
    let mut scored = 0;
    for chunk in items.chunks(BATCH) {
        let s: Value = client
            .post(format!("{url}/v2/models/diabetes/feedback"))
            .json(&json!({"feedback": chunk}))
            .send()?
            .error_for_status()?
            .json()?;
        ensure!(s["unknown_id"] == 0, "feedback not counted: {s}");
        scored += s["regression_rows"].as_u64().unwrap_or_default();
    }
    ensure!(
        scored == items.len() as u64,
        "{scored} of {} rows scored",
        items.len()
    );

    let selector = format!(
        "namespace=\"{}\",model=\"diabetes\",revision=\"{revision}\"",
        ns.name()
    );
    let value = |q: String| -> Result<Option<f64>> {
        Ok(c.prometheus_query(&q)?
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    };
    wait_for(NODE_WAIT, "Prometheus to hold every labelled row", || {
        Ok((value(format!(
            "sum(tractor_model_regression_labelled_total{{{selector}}})"
        ))? == Some(n))
        .then_some(()))
    })?;
    let mae = value(format!(
        "sum(tractor_model_regression_abs_error_sum{{{selector}}}) / sum(tractor_model_regression_labelled_total{{{selector}}})"
    ))?
    .context("no MAE")?;
    let rmse = value(format!(
        "sqrt(sum(tractor_model_regression_squared_error_sum{{{selector}}}) / sum(tractor_model_regression_labelled_total{{{selector}}}))"
    ))?
    .context("no RMSE")?;
    let (offline_mae, offline_rmse) = (abs / n, (sq / n).sqrt());
    println!(
        "node feedback regressor: {n} rows; MAE {mae} (offline {offline_mae}), RMSE {rmse} (offline {offline_rmse})"
    );
    // The same numbers summed in another order (per replica, then across them): equal to float rounding.
    ensure!(
        ((mae - offline_mae) / offline_mae).abs() < 1e-9,
        "MAE {mae}, offline {offline_mae}"
    );
    ensure!(
        ((rmse - offline_rmse) / offline_rmse).abs() < 1e-9,
        "RMSE {rmse}, offline {offline_rmse}"
    );
    Ok(())
}
