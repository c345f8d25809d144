//! Drift before the labels arrive: `tractor optimize` with a labelled set records reference statistics inside the
//! artifact, the same bytes every run; `tractor serve` on that artifact scores held-out rows as stable on every
//! feature, and the same rows with one feature moved by two standard deviations as drift on that feature first.
//!
//! `drift_logreg` (8 features): 2,000 rows are the labelled set the reference is recorded from
//! (`drift_logreg_eval.npz`), 2,000 others the held-out traffic (`drift_logreg_test.json`); 2,000 rows a side keep
//! PSI's sampling noise (about (bins − 1) · (1/2000 + 1/2000) ≈ 0.01) far below the 0.2 rule of thumb.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::blocking::Client;
use serde_json::json;
use tractor_e2e::optimize::optimize;
use tractor_e2e::serve::{Serve, Split, fixtures, metric};
use tractor_model::drift::{PredictionReference, read_reference};

const MODEL: &str = "drift_logreg";
const NAME: &str = "drift";
const REVISION: &str = "r1";
/// Rows of the labelled set the reference is recorded from.
const REFERENCE_ROWS: usize = 2000;
/// The feature moved in the second phase.
const SHIFTED: usize = 3;
/// Rows per request.
const BATCH: usize = 100;

/// Every `tractor_model_input_drift` of the model at [`REVISION`], by feature.
fn input_drift(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| line.starts_with("tractor_model_input_drift{"))
        .filter(|line| line.contains(&format!("model=\"{NAME}\"")))
        .filter(|line| line.contains(&format!("revision=\"{REVISION}\"")))
        .filter_map(|line| {
            let feature = line.split("feature=\"").nth(1)?.split('"').next()?;
            let value = line.rsplit(' ').next()?.parse().ok()?;
            Some((feature.to_owned(), value))
        })
        .collect()
}

/// Send `rows` (flat, [`BATCH`] rows a request) for inference; every answer must be a 200.
fn send(client: &Client, serve: &Serve, input: &str, features: usize, rows: &[f32]) -> Result<()> {
    for chunk in rows.chunks(BATCH * features) {
        let body = json!({"inputs": [{"name": input, "shape": [chunk.len() / features, features], "datatype": "FP32", "data": chunk}]});
        let response = client.post(serve.model_url("/infer")).json(&body).send()?;
        anyhow::ensure!(
            response.status().is_success(),
            "infer answered {}: {}",
            response.status(),
            response.text()?
        );
    }
    Ok(())
}

/// Scrape `/metrics` until the drift window holds `rows` rows (the counts are taken before each answer, so
/// this holds at once; the wait only bounds a failure).
fn scrape_when_window_holds(serve: &Serve, rows: usize) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = serve.metrics()?;
        let held = metric(
            &text,
            "tractor_model_drift_window_rows",
            &[("model", NAME), ("revision", REVISION)],
        );
        if held == Some(rows as f64) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("the drift window holds {held:?} rows, not {rows}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn held_out_rows_are_stable_and_a_shifted_feature_drifts_first() -> Result<()> {
    let split = Split::load(MODEL)?;
    let features = split.features;
    let tmp = tempfile::tempdir()?;
    let labelled = fixtures().join(format!("{MODEL}_eval.npz"));

    // Two runs, same inputs: byte-identical artifacts, reference included.
    let source = fixtures()
        .join(format!("{MODEL}.onnx"))
        .display()
        .to_string();
    let labelled = labelled.display().to_string();
    let mut artifacts = Vec::new();
    for attempt in 0..2 {
        let out = tmp.path().join(format!("out-{attempt}"));
        let run = optimize(
            &out,
            &[
                "--source",
                &source,
                "--eval-data",
                &labelled,
                "--precision",
                "f32",
            ],
            &[],
        )?;
        assert_eq!(run.code, 0, "{}\n{}", run.report, run.stderr);
        artifacts.push((out.join("model.nnef.tgz"), run.report));
    }
    let bytes: Vec<Vec<u8>> = artifacts
        .iter()
        .map(|(path, _)| std::fs::read(path))
        .collect::<Result<_, _>>()?;
    assert!(bytes[0] == bytes[1], "two runs wrote different artifacts");
    assert_eq!(
        artifacts[0].1["artifactDigest"],
        artifacts[1].1["artifactDigest"]
    );
    let artifact = &artifacts[0].0;

    // The reference is inside the artifact: the first input's 16 features, the labelled rows, the classes.
    let reference = read_reference(artifact)
        .map_err(anyhow::Error::msg)?
        .context("no reference statistics in the artifact")?;
    assert_eq!(reference.rows, REFERENCE_ROWS);
    assert_eq!(reference.input, split.input);
    let names: Vec<String> = (0..features)
        .map(|i| format!("{}[{i}]", split.input))
        .collect();
    let recorded: Vec<&String> = reference.features.iter().map(|f| &f.name).collect();
    assert_eq!(recorded, names.iter().collect::<Vec<_>>());
    assert!(
        matches!(
            reference.predictions,
            Some(PredictionReference::Classes { .. })
        ),
        "{:?}",
        reference.predictions
    );

    let serve = Serve::start(
        &artifact.display().to_string(),
        NAME,
        &["--revision", REVISION],
    )?;
    let client = Client::new();
    // Nothing served yet: an empty window and no scores.
    let text = scrape_when_window_holds(&serve, 0)?;
    assert!(input_drift(&text).is_empty(), "{text}");

    // Held-out rows: every feature stable.
    let held_out = &split.x;
    send(&client, &serve, &split.input, features, held_out)?;
    let text = scrape_when_window_holds(&serve, split.rows())?;
    let stable = input_drift(&text);
    println!("held-out drift: {stable:?}");
    assert_eq!(stable.len(), features, "{text}");
    for (feature, score) in &stable {
        assert!(*score < 0.2, "{feature}: PSI {score} on held-out rows");
    }
    let predictions = metric(
        &text,
        "tractor_model_prediction_drift",
        &[("model", NAME), ("revision", REVISION)],
    )
    .context("no prediction drift")?;
    assert!(predictions < 0.2, "prediction PSI {predictions}");

    // The same rows with one feature moved by two of its standard deviations.
    let column: Vec<f64> = held_out
        .iter()
        .skip(SHIFTED)
        .step_by(features)
        .map(|v| f64::from(*v))
        .collect();
    let mean = column.iter().sum::<f64>() / column.len() as f64;
    let sd = (column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / column.len() as f64).sqrt();
    let shifted: Vec<f32> = held_out
        .iter()
        .enumerate()
        .map(|(index, value)| {
            if index % features == SHIFTED {
                (f64::from(*value) + 2.0 * sd) as f32
            } else {
                *value
            }
        })
        .collect();
    send(&client, &serve, &split.input, features, &shifted)?;
    let text = scrape_when_window_holds(&serve, 2 * split.rows())?;
    let mut drifted = input_drift(&text);
    println!("drift with {}[{SHIFTED}] shifted: {drifted:?}", split.input);
    drifted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (top, score) = &drifted[0];
    assert_eq!(top, &names[SHIFTED], "{drifted:?}");
    assert!(*score > 0.2, "{top}: PSI {score}");
    Ok(())
}
