//! On the real node, through the chart's operator: three replicas behind the model's Service, 1,000 labelled
//! requests and their feedback (by receipt) both sent through the Service on fresh connections. Every item is
//! counted, on whichever replica it lands (the summaries name none unknown). After the first half, feedback is
//! scored on more than one replica and the per-revision accuracy Prometheus adds up from the replicas'
//! confusion counters equals the offline accuracy exactly. Then one replica is sent 50 items directly (so it
//! holds rows no scrape has seen) and force-deleted: over all 1,000, Prometheus misses exactly what that
//! replica counted after its last scrape, and nothing else. A regressor (two replicas) likewise: the MAE and RMSE
//! Prometheus computes from the replicas' error sums equal the offline figures on the same requests.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::cluster::wait_for;
use tractor_e2e::modeldeployment::apply_as_is;
use tractor_e2e::node::{
    NODE_WAIT, apply_digits, infer_body, model_configmap, operator, programmed_endpoints,
    ready_server_pods, real_node, restricted_namespace, service_url, wait_model_ready,
    wait_serving,
};
use tractor_e2e::serve::Split;
use tractor_serve::receipt::{Predicted, Receipt};

const REQUESTS: usize = 1000;
/// Feedback items per call, each call on a new connection, so they spread over the replicas.
const BATCH: usize = 50;

/// Waits until 3 serving pods are Ready and kube-proxy spreads new connections to the Service over exactly
/// those 3: on a loaded node its rules lag the EndpointSlices by seconds, and until then every connection may
/// reach the first pod.
fn wait_spread(ns: &tractor_e2e::cluster::TestNamespace) -> Result<()> {
    wait_for(NODE_WAIT, "3 ready serving pods behind the Service", || {
        let mut ips: Vec<String> = ready_server_pods(ns, "digits")?
            .into_iter()
            .map(|(_, ip, _)| ip)
            .collect();
        ips.sort();
        Ok(
            (ips.len() == 3 && programmed_endpoints(ns.name(), "digits", "http")? == ips)
                .then_some(()),
        )
    })
}

#[test]
fn feedback_through_the_service_is_counted_on_any_replica() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-feedback")?;
    let _op = operator(cluster, &ns)?;
    apply_digits(&ns, "digits", 3)?;
    wait_model_ready(&ns, "digits")?;
    wait_spread(&ns)?;
    let url = service_url(&ns, "digits")?;
    let split = Split::load("digits_mlp")?;
    // A new connection per call: kube-proxy picks an endpoint per connection.
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()?;
    wait_serving("an answer through the ClusterIP", || {
        let response = client
            .post(format!("{url}/v2/models/digits/infer"))
            .json(&infer_body(&split, 0..1))
            .send()?;
        ensure!(response.status().is_success(), "{}", response.status());
        Ok(())
    })?;

    let mut items = Vec::new();
    let mut correct = 0usize;
    let mut revision = None;
    for request in 0..REQUESTS {
        let row = request % split.rows();
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

    // Prometheus adds the replicas' counters up. `max_over_time` keeps a deleted pod's last scraped values,
    // which an instant `sum` would drop with the pod's series.
    let selector = format!(
        "namespace=\"{}\",model=\"digits\",revision=\"{revision}\"",
        ns.name()
    );
    let value = |q: String| cluster.prometheus_value(&q);
    let scraped = |extra: &str| -> Result<f64> {
        Ok(value(format!(
            "sum(max_over_time(tractor_model_predictions_labelled_total{{{selector}{extra}}}[1h]))"
        ))?
        .unwrap_or(0.0))
    };
    let send = |items: &[Value]| -> Result<(u64, u64)> {
        let (mut right, mut wrong, mut unknown) = (0u64, 0u64, Vec::new());
        for chunk in items.chunks(BATCH) {
            let summary: Value = client
                .post(format!("{url}/v2/models/digits/feedback"))
                .json(&json!({"feedback": chunk}))
                .send()?
                .error_for_status()?
                .json()?;
            right += summary["correct"].as_u64().unwrap_or_default();
            wrong += summary["incorrect"].as_u64().unwrap_or_default();
            if summary["unknown_id"] != 0 {
                unknown.push(summary);
            }
        }
        ensure!(unknown.is_empty(), "feedback not counted: {unknown:?}");
        Ok((right, wrong))
    };
    let half = REQUESTS / 2;
    let offline_right = |rows: std::ops::Range<usize>| {
        items[rows]
            .iter()
            .filter(|item| {
                let text = item["receipt"].as_str().unwrap_or_default();
                text.rsplit(':').next().and_then(|c| c.parse::<i64>().ok())
                    == item["label"].as_i64()
            })
            .count()
    };

    // First half: every item counted, and Prometheus's accuracy equals the offline one exactly.
    let (right1, wrong1) = send(&items[..half])?;
    let correct1 = offline_right(0..half);
    ensure!(
        (right1 as usize, wrong1 as usize) == (correct1, half - correct1),
        "summaries counted {right1} right and {wrong1} wrong; offline {correct1} of {half}"
    );
    wait_for(NODE_WAIT, "Prometheus to hold the first half", || {
        Ok((scraped("")? == half as f64).then_some(()))
    })?;
    let prom_right1 = scraped(",result=\"correct\"")?;
    ensure!(
        prom_right1 / half as f64 == correct1 as f64 / half as f64,
        "Prometheus per-revision accuracy {} ({prom_right1} of {half}), offline {}",
        prom_right1 / half as f64,
        correct1 as f64 / half as f64
    );
    let pods = cluster.prometheus_query(&format!(
        "sum by (pod) (tractor_model_predictions_labelled_total{{{selector}}})"
    ))?;
    ensure!(
        pods.len() >= 2,
        "feedback was scored on {} replica(s) only: {pods:?}",
        pods.len()
    );

    // One replica deleted, with no feedback in flight: what it counted is read from it first, so what
    // Prometheus can lose is exactly what it counted after its last scrape.
    let (victim, ip, _) = ready_server_pods(&ns, "digits")?
        .into_iter()
        .next()
        .context("no serving pod")?;
    let counters = |text: &str, extra: &str| -> f64 {
        text.lines()
            .filter(|line| {
                line.starts_with("tractor_model_predictions_labelled_total{")
                    && line.contains(extra)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Straight to that pod (the one call here that bypasses the Service): rows it holds that no scrape has
    // seen yet, so the deletion below has something to lose.
    let direct = half..half + BATCH;
    let summary: Value = client
        .post(format!("http://{ip}:8080/v2/models/digits/feedback"))
        .json(&json!({"feedback": &items[direct.clone()]}))
        .send()?
        .error_for_status()?
        .json()?;
    ensure!(
        summary["unknown_id"] == 0,
        "feedback not counted: {summary}"
    );
    let text = client
        .get(format!("http://{ip}:8080/metrics"))
        .send()?
        .text()?;
    let (held, held_right) = (counters(&text, ""), counters(&text, "result=\"correct\""));
    // Forced, as a crash would end it: no drain during which Prometheus could scrape it once more.
    ns.kubectl(&[
        "delete",
        "pod",
        &victim,
        "--grace-period=0",
        "--force",
        "--wait=true",
        "--timeout=120s",
    ])?;
    wait_spread(&ns)?;

    // The rest, through the Service as before.
    let (right2, wrong2) = send(&items[direct.end..])?;
    let right2 = right2 + summary["correct"].as_u64().unwrap_or_default();
    let wrong2 = wrong2 + summary["incorrect"].as_u64().unwrap_or_default();
    let correct2 = offline_right(half..REQUESTS);
    ensure!(
        (right2 as usize, wrong2 as usize) == (correct2, REQUESTS - half - correct2),
        "summaries counted {right2} right and {wrong2} wrong; offline {correct2} of {}",
        REQUESTS - half
    );
    ensure!(correct1 + correct2 == correct, "offline counts disagree");
    let others = format!(",pod!=\"{victim}\"");
    wait_for(
        NODE_WAIT,
        "Prometheus to hold every surviving replica's rows",
        || Ok((scraped(&others)? == REQUESTS as f64 - held).then_some(())),
    )?;
    let victim_sel = format!(",pod=\"{victim}\"");
    let (last, last_right) = (
        scraped(&victim_sel)?,
        scraped(&format!("{victim_sel},result=\"correct\""))?,
    );
    let (total, total_right) = (scraped("")?, scraped(",result=\"correct\"")?);
    let (lost, lost_right) = (held - last, held_right - last_right);
    // The bound: Prometheus misses exactly what the deleted replica counted after its last scrape (0 if a
    // scrape caught it while it drained), and nothing else.
    ensure!(
        (0.0..=held).contains(&lost) && (0.0..=lost).contains(&lost_right),
        "deleted replica held {held} ({held_right} right), Prometheus last saw {last} ({last_right})"
    );
    ensure!(
        total + lost == REQUESTS as f64 && total_right + lost_right == correct as f64,
        "Prometheus {total_right}/{total} plus the {lost_right}/{lost} the deleted replica counted after its \
         last scrape is not the offline {correct}/{REQUESTS}"
    );
    let offline = correct as f64 / REQUESTS as f64;
    println!(
        "node feedback: {REQUESTS} requests, offline accuracy {offline}; first half {prom_right1}/{half} in \
         Prometheus on {} replicas; deleted {victim} holding {held}, last scraped {last}: Prometheus \
         {total_right}/{total} = {} (lost {lost})",
        pods.len(),
        total_right / total
    );
    Ok(())
}

#[test]
fn a_regressors_mae_and_rmse_from_prometheus_equal_the_offline_figures() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-feedback-reg")?;
    let _op = operator(cluster, &ns)?;
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
    let rows = items.len() as f64;
    let revision = revision.context("the servers were not told their revision")?;
    let mut scored = 0;
    for chunk in items.chunks(BATCH) {
        let summary: Value = client
            .post(format!("{url}/v2/models/diabetes/feedback"))
            .json(&json!({"feedback": chunk}))
            .send()?
            .error_for_status()?
            .json()?;
        ensure!(
            summary["unknown_id"] == 0,
            "feedback not counted: {summary}"
        );
        scored += summary["regression_rows"].as_u64().unwrap_or_default();
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
    let value = |q: String| cluster.prometheus_value(&q);
    wait_for(NODE_WAIT, "Prometheus to hold every labelled row", || {
        Ok((value(format!(
            "sum(tractor_model_regression_labelled_total{{{selector}}})"
        ))? == Some(rows))
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
    let (offline_mae, offline_rmse) = (abs / rows, (sq / rows).sqrt());
    println!(
        "node feedback regressor: {rows} rows; MAE {mae} (offline {offline_mae}), RMSE {rmse} (offline {offline_rmse})"
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
