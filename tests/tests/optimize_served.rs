//! What `tractor optimize` claims is what `tractor serve` delivers: for each precision, the artifact is served
//! and its accuracy over the labelled split, measured through the REST API, equals the report's score; and the
//! int8 artifact really is about 4× smaller than the f32 one.

use anyhow::{Context, Result};
use serde_json::json;
use tractor_e2e::optimize::{fixtures, optimize};
use tractor_e2e::serve::{Serve, Split};

/// Accuracy of the served model over the whole split, from the `label` output of one batched request.
fn served_accuracy(serve: &Serve, split: &Split) -> Result<f64> {
    let body = json!({
        "inputs": [{"name": split.input, "datatype": "FP32", "shape": [split.rows(), split.features], "data": split.x}],
        "outputs": [{"name": "label"}],
    });
    let resp: serde_json::Value = reqwest::blocking::Client::new()
        .post(serve.model_url("/infer"))
        .json(&body)
        .send()?
        .error_for_status()?
        .json()?;
    let labels: Vec<i64> = resp["outputs"][0]["data"]
        .as_array()
        .context("label data")?
        .iter()
        .filter_map(serde_json::Value::as_i64)
        .collect();
    assert_eq!(labels.len(), split.rows(), "{resp}");
    let right = labels.iter().zip(&split.y).filter(|(a, b)| a == b).count();
    Ok(right as f64 / split.rows() as f64)
}

#[test]
fn each_precision_serves_the_score_its_report_claims() -> Result<()> {
    let split = Split::load("digits_mlp")?;
    let source = fixtures().join("digits_mlp.onnx").display().to_string();
    let eval = fixtures().join("digits_mlp_test.npz").display().to_string();
    let tmp = tempfile::tempdir()?;
    let mut sizes = Vec::new();
    for precision in ["f32", "f16", "int8"] {
        let out = tmp.path().join(precision);
        let run = optimize(
            &out,
            &[
                "--source",
                &source,
                "--precision",
                precision,
                "--eval-data",
                &eval,
            ],
            &[],
        )?;
        assert_eq!(run.code, 0, "{precision}: {}", run.stderr);
        let report = &run.report;
        assert_eq!(
            report["precision"], precision,
            "{precision} fell back: {report}"
        );
        let claimed = report["optimizedScore"]
            .as_f64()
            .context("optimizedScore")?;
        let artifact = out.join("model.nnef.tgz");
        let serve = Serve::start(&artifact.display().to_string(), "digits", &[])?;
        let measured = served_accuracy(&serve, &split)?;
        eprintln!(
            "digits {precision}: {} bytes, report {claimed}, served {measured:.6}",
            report["sizeBytes"]
        );
        // The report rounds to six decimals.
        assert!(
            (measured - claimed).abs() < 1e-6,
            "{precision}: served accuracy {measured} but the report claims {claimed}"
        );
        sizes.push(report["sizeBytes"].as_f64().context("sizeBytes")?);
    }
    // The drift reference rides in every artifact built with a labelled set (the same few kilobytes in each):
    // the weights' shrinking is measured without it.
    let bare = optimize(
        &tmp.path().join("f32-bare"),
        &["--source", &source, "--precision", "f32"],
        &[],
    )?;
    assert_eq!(bare.code, 0, "{}", bare.stderr);
    let reference = sizes[0] - bare.report["sizeBytes"].as_f64().context("sizeBytes")?;
    assert!(
        reference > 0.0,
        "the drift reference adds bytes: {reference}"
    );
    let [f32_size, f16_size, int8_size] =
        [sizes[0], sizes[1], sizes[2]].map(|size| size - reference);
    assert!(
        f16_size < 0.6 * f32_size,
        "f16 {f16_size} vs f32 {f32_size}"
    );
    assert!(
        int8_size < 0.4 * f32_size,
        "int8 {int8_size} vs f32 {f32_size}"
    );
    Ok(())
}

#[test]
fn progress_is_one_json_object_per_line_off_a_terminal() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = fixtures()
        .join("breast_cancer_logreg.onnx")
        .display()
        .to_string();
    let run = optimize(
        &tmp.path().join("out"),
        &["--source", &source, "--precision", "auto"],
        &[],
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let steps: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("progress").is_some())
        .collect();
    let stages: Vec<&str> = steps
        .iter()
        .filter_map(|v| v["progress"].as_str())
        .collect();
    assert_eq!(stages.first(), Some(&"fetch"), "{}", run.stderr);
    assert!(stages.contains(&"load"), "{stages:?}");
    // auto builds every candidate: f32, f16 and int8.
    assert_eq!(
        stages.iter().filter(|s| **s == "candidate").count(),
        3,
        "{stages:?}"
    );
    assert!(
        steps.iter().all(|v| v["elapsedMillis"].is_u64()),
        "{steps:?}"
    );
    Ok(())
}
