//! Explain: every attribution of a few digits equals occlusion recomputed by the test from the server's own
//! predictions on rows it occludes itself, for the default baseline and class and for explicit ones; the
//! class and score explained are onnxruntime's; a bad baseline is a JSON 400.

#![allow(clippy::unwrap_used)]

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, Split, argmax};

/// How far an attribution may be from the test's own occlusion. Both are differences of two f32
/// probabilities, but the server computes them in batches of different sizes (explain's expanded batch,
/// the test's one request), where tract may pick other kernels and summation orders: each probability can
/// be off by a few rounding steps of the logits behind it (2e-7 measured). 1e-5 leaves a margin of fifty
/// and stays a hundred times below what another baseline, class or sign changes in the rows checked.
const TOLERANCE: f64 = 1e-5;

/// Classes of the digits model.
const CLASSES: usize = 10;

fn request(split: &Split, rows: &[Vec<f32>], parameters: Option<Value>) -> Value {
    let data: Vec<f32> = rows.concat();
    let mut body = json!({"id": "why", "inputs": [{"name": split.input, "shape": [rows.len(), split.features], "datatype": "FP32", "data": data}]});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    body
}

/// The server's probabilities for `rows`, from `/infer`.
fn predict(c: &Client, serve: &Serve, split: &Split, rows: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let resp: Value = c
        .post(serve.model_url("/infer"))
        .json(&request(split, rows, None))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let out = resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap_or_else(|| panic!("no probabilities in {resp}"));
    assert_eq!(out["shape"], json!([rows.len(), CLASSES]));
    out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect::<Vec<_>>()
        .chunks(CLASSES)
        .map(<[f64]>::to_vec)
        .collect()
}

/// Explain split rows `rows` with `parameters`; check every attribution against occlusion recomputed from
/// `/infer` with `baseline` and the class `target` picks from onnxruntime's scores. Returns the largest
/// difference seen.
fn check_occlusion(
    client: &Client,
    serve: &Serve,
    split: &Split,
    rows: &[usize],
    parameters: Option<Value>,
    baseline: f32,
    target: impl Fn(&[f64]) -> usize,
) -> f64 {
    let originals: Vec<Vec<f32>> = rows.iter().map(|i| split.row(*i).to_vec()).collect();
    let resp = client
        .post(serve.model_url("/explain"))
        .json(&request(split, &originals, parameters))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
    let explanation: Value = resp.json().unwrap();
    assert_eq!(explanation["method"], "occlusion");
    assert_eq!(explanation["id"], "why");
    assert_eq!(explanation["output"], "probabilities");
    assert_eq!(
        explanation["baseline"],
        json!(vec![baseline; split.features])
    );
    let explanations = explanation["explanations"].as_array().unwrap();
    assert_eq!(explanations.len(), rows.len());

    // Every row with one feature set to the baseline, in one request after the originals.
    let mut occluded = originals.clone();
    for row in &originals {
        for feature in 0..split.features {
            let mut occluded_row = row.clone();
            occluded_row[feature] = baseline;
            occluded.push(occluded_row);
        }
    }
    let predicted = predict(client, serve, split, &occluded);
    let reference = &split.reference["probabilities"].data;
    let mut largest = 0f64;
    for (position, (row, ex)) in rows.iter().zip(explanations).enumerate() {
        let onnxruntime = &reference[row * CLASSES..(row + 1) * CLASSES];
        let class = target(onnxruntime);
        assert_eq!(ex["target"], class, "row {row}");
        let score = ex["score"].as_f64().unwrap();
        assert!(
            (score - onnxruntime[class]).abs() < 1e-4,
            "row {row}: score {score}, onnxruntime {}",
            onnxruntime[class]
        );
        let original = predicted[position][class];
        let attributions = ex["attributions"].as_array().unwrap();
        assert_eq!(attributions.len(), split.features, "row {row}");
        for (feature, attribution) in attributions.iter().enumerate() {
            let attribution = attribution.as_f64().unwrap();
            let without = predicted[rows.len() + position * split.features + feature][class];
            let want = original - without;
            largest = largest.max((attribution - want).abs());
            assert!(
                (attribution - want).abs() <= TOLERANCE,
                "row {row} feature {feature}: attribution {attribution}, occlusion by the test {want} (score {original} - {without})"
            );
        }
        assert!(
            attributions
                .iter()
                .any(|a| a.as_f64().unwrap().abs() > 1e-3),
            "row {row}: no feature matters"
        );
    }
    largest
}

#[test]
fn explain_attributions_match_occlusion_recomputed_by_the_test() {
    let serve = Serve::start("digits_mlp.onnx", "digits", &[]).unwrap();
    let client = Client::new();
    let split = Split::load("digits_mlp").unwrap();

    // Defaults: baseline 0, the predicted class. Rows whose prediction is not saturated, so that single
    // pixels move it by up to 1e-1 and a wrong definition cannot hide under the tolerance.
    let defaults = check_occlusion(&client, &serve, &split, &[0, 4, 5], None, 0.0, argmax);
    // A baseline of one grey level and onnxruntime's runner-up class as the target.
    let runner_up = |scores: &[f64]| {
        let best = argmax(scores);
        (0..scores.len())
            .filter(|k| *k != best)
            .max_by(|a, b| scores[*a].total_cmp(&scores[*b]))
            .unwrap()
    };
    let target = runner_up(&split.reference["probabilities"].data[..CLASSES]);
    let explicit = check_occlusion(
        &client,
        &serve,
        &split,
        &[0],
        Some(json!({"baseline": 0.5, "target": target})),
        0.5,
        runner_up,
    );
    println!(
        "largest |attribution - occlusion by the test|: {defaults:.2e} (defaults), {explicit:.2e} (baseline 0.5, class {target})"
    );

    // A bad baseline is a JSON 400.
    let body = json!({"parameters": {"baseline": [1, 2]}, "inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(0)}]});
    let resp = client
        .post(serve.model_url("/explain"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.json::<Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("baseline")
    );
}
