//! TensorFlow Lite and frozen TensorFlow models (tests/fixtures/make_tf_models.py: Keras MLP and CNN on digits,
//! float and int8 through TFLite's own post-training quantization, the MLP as a frozen graph): each optimizes with
//! `tractor optimize` and serves with `tractor serve`, giving the framework's own interpreter's answers on the whole
//! 540-row test split; operators tract lacks are refused by name; `tractor inspect` lists the source's ops.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::optimize::{files_in, fixtures, optimize};
use tractor_e2e::paths::tractor_binary;
use tractor_e2e::serve::{Serve, Split, argmax};

/// Float models: every probability within this of the interpreter's (absolute; they lie in [0, 1]). tract and
/// TFLite sum the same products in another order, which moves an f32 probability by ~1e-7.
const FLOAT_TOLERANCE: f64 = 1e-5;

/// int8 models: the output is int8 dequantized with TFLite's softmax output scale of 1/256, so one quantization
/// step is 1/256; tract rounds its requantization as TFLite does up to ties, which may move a value by one step.
const INT8_TOLERANCE: f64 = 1.0 / 256.0 + 1e-6;

/// Least share of rows whose argmax must equal the interpreter's (the bar); near-ties are not excused.
const ARGMAX_AGREEMENT: f64 = 0.995;

/// The fixture's file, by its format's suffix.
fn source(name: &str) -> String {
    let suffix = if name.starts_with("digits_tf_") {
        "pb"
    } else {
        "tflite"
    };
    fixtures()
        .join(format!("{name}.{suffix}"))
        .display()
        .to_string()
}

/// Optimize fixture `name` at f32 into `dir`, checking the format the report names; the artifact's path.
fn artifact(name: &str, format: &str, dir: &Path) -> String {
    let out = dir.join(name);
    let run = optimize(
        &out,
        &["--source", &source(name), "--precision", "f32"],
        &[],
    )
    .unwrap();
    assert_eq!(run.code, 0, "{name}: {}\n{}", run.report, run.stderr);
    assert_eq!(run.report["format"], format, "{name}: {}", run.report);
    out.join("model.nnef.tgz").display().to_string()
}

/// The input's shape per row, from the fixture's JSON (`shape`, beside what [`Split`] reads).
fn row_shape(name: &str) -> Vec<usize> {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}_test.json"))).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(value["shape"].clone()).unwrap()
}

/// Serve `model` and send the whole split as one FP32 request (`batch`: all rows at once, else one row per
/// request, for a model that serves batch 1); the one output's values, flat, and its datatype.
fn infer(model: &str, name: &str, split: &Split, batch: bool) -> (Vec<f64>, String) {
    let serve = Serve::start(model, name, &["--max-batch-size", "64"]).unwrap();
    let client = Client::new();
    let shape = row_shape(name);
    let per_request = if batch { split.rows() } else { 1 };
    let mut values = Vec::new();
    let mut datatype = String::new();
    for first in (0..split.rows()).step_by(per_request) {
        let rows = per_request.min(split.rows() - first);
        let mut dims = vec![rows];
        dims.extend(&shape);
        let data = &split.x[first * split.features..(first + rows) * split.features];
        let body = json!({"inputs": [{"name": split.input, "shape": dims, "datatype": "FP32", "data": data}]});
        let resp: Value = client
            .post(serve.model_url("/infer"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let outputs = resp["outputs"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {resp}"));
        assert_eq!(outputs.len(), 1, "{name}: {resp}");
        let want_name = split.reference.keys().next().unwrap();
        assert_eq!(outputs[0]["name"], json!(want_name), "{name}: {resp}");
        datatype = outputs[0]["datatype"].as_str().unwrap().to_owned();
        values.extend(
            outputs[0]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap()),
        );
    }
    (values, datatype)
}

/// What the comparison with the interpreter measured.
#[derive(Debug)]
struct Measured {
    max_abs: f64,
    agree: usize,
    rows: usize,
}

/// Compare served probabilities with the interpreter's: every value within `tolerance`, argmax on at least
/// [`ARGMAX_AGREEMENT`] of the rows.
fn compare(name: &str, split: &Split, got: &[f64], tolerance: f64) -> Measured {
    let (_, reference) = split.reference.iter().next().unwrap();
    assert_eq!(got.len(), reference.data.len(), "{name}: values");
    let cols = reference.shape[1];
    let max_abs = got
        .iter()
        .zip(&reference.data)
        .map(|(served, want)| (served - want).abs())
        .fold(0.0, f64::max);
    let agree = got
        .chunks(cols)
        .zip(reference.data.chunks(cols))
        .filter(|(served, want)| argmax(served) == argmax(want))
        .count();
    let measured = Measured {
        max_abs,
        agree,
        rows: split.rows(),
    };
    eprintln!(
        "{name}: max |tractor - interpreter| {:e}, argmax agrees on {}/{} rows",
        measured.max_abs, measured.agree, measured.rows
    );
    assert!(
        max_abs <= tolerance,
        "{name}: max |tractor - interpreter| {max_abs:e} > {tolerance:e}"
    );
    assert!(
        agree as f64 >= ARGMAX_AGREEMENT * split.rows() as f64,
        "{name}: argmax agrees on {agree} of {} rows",
        split.rows()
    );
    measured
}

#[test]
fn tflite_and_tensorflow_fixtures_serve_the_interpreters_answers() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, format, tolerance) in [
        ("digits_tflite_mlp", "tflite", FLOAT_TOLERANCE),
        ("digits_tflite_cnn", "tflite", FLOAT_TOLERANCE),
        ("digits_tflite_mlp_int8", "tflite", INT8_TOLERANCE),
        ("digits_tflite_cnn_int8", "tflite", INT8_TOLERANCE),
        ("digits_tf_mlp", "tensorflow", FLOAT_TOLERANCE),
    ] {
        let model = artifact(name, format, tmp.path());
        let split = Split::load(name).unwrap();
        assert!(split.rows() >= 500, "{name}: a real test split");
        let (got, datatype) = infer(&model, name, &split, true);
        // int8 models take and give FP32: tractor (de)quantizes with the model's own parameters.
        assert_eq!(datatype, "FP32", "{name}");
        compare(name, &split, &got, tolerance);
    }
}

#[test]
fn a_tflite_file_serves_as_it_is_with_a_batch_and_its_notes() {
    // Straight from the .tflite, no optimize: the server's loader is the same one.
    let name = "digits_tflite_cnn_int8";
    let model = source(name);
    let split = Split::load(name).unwrap();
    let serve = Serve::start(&model, name, &[]).unwrap();
    let meta: Value = Client::new()
        .get(serve.model_url(""))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["platform"], "tract_tflite", "{meta}");
    // The file's batch of 1 became a free batch: the graph wires with it and rows stay independent.
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 8, 8, 1]), "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    let notes = meta["parameters"]["notes"].to_string();
    assert!(notes.contains("served as FP32"), "{meta}");
    drop(serve);
    let (got, _) = infer(&model, name, &split, true);
    compare(name, &split, &got, INT8_TOLERANCE);
}

#[test]
fn unsupported_tflite_ops_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, ops) in [
        // The converter's default for a quantized model: float edges through QUANTIZE and DEQUANTIZE.
        (
            "digits_tflite_mlp_int8_float_io",
            &["DEQUANTIZE", "QUANTIZE"][..],
        ),
        // A CNN converted with a free batch: its Flatten packs the dynamic shape.
        ("digits_tflite_cnn_any_batch", &["PACK"][..]),
    ] {
        let out = tmp.path().join(name);
        let run = optimize(&out, &["--source", &source(name)], &[]).unwrap();
        assert_ne!(run.code, 0, "{name}: {}", run.report);
        assert_eq!(
            run.reason(),
            Some("UnsupportedOp"),
            "{name}: {}",
            run.report
        );
        let message = run.report["message"].as_str().unwrap();
        let named = format!("tract cannot run TensorFlow Lite op(s): {}", ops.join(", "));
        assert!(message.contains(&named), "{name}: {message}");
        assert!(files_in(&out).is_empty(), "{name}: {:?}", files_in(&out));
    }
}

#[test]
fn a_declared_format_that_the_bytes_deny_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = optimize(
        &tmp.path().join("out"),
        &["--source", &source("digits_tf_mlp"), "--format", "tflite"],
        &[],
    )
    .unwrap();
    assert_eq!(run.reason(), Some("InvalidModel"), "{}", run.report);
    let message = run.report["message"].as_str().unwrap();
    assert!(
        message
            .contains("model.format is tflite, but the file is not a TensorFlow Lite flatbuffer"),
        "{message}"
    );
}

/// `tractor inspect FILE`'s JSON.
fn inspect(file: &str) -> Value {
    let out = Command::new(tractor_binary().unwrap())
        .arg("inspect")
        .arg(file)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sourceOps` as (op, count, support).
fn source_ops(report: &Value) -> Vec<(String, u64, String)> {
    report["sourceOps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            (
                op["op"].as_str().unwrap().to_owned(),
                op["count"].as_u64().unwrap(),
                op["support"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn inspect_lists_the_sources_operators_and_who_runs_them() {
    let report = inspect(&source("digits_tflite_cnn"));
    assert_eq!(report["format"], "tflite", "{report}");
    let tract = |op: &str, count: u64| (op.to_owned(), count, "tract".to_owned());
    assert_eq!(
        source_ops(&report),
        [
            tract("CONV_2D", 2),
            tract("FULLY_CONNECTED", 1),
            tract("MAX_POOL_2D", 1),
            tract("RESHAPE", 1),
            tract("SOFTMAX", 1),
        ],
        "{report}"
    );
    let report = inspect(&source("digits_tf_mlp"));
    assert_eq!(report["format"], "tensorflow", "{report}");
    let ops = source_ops(&report);
    for op in ["MatMul", "BiasAdd", "Relu", "Softmax", "Placeholder"] {
        assert!(
            ops.iter()
                .any(|(name, _, support)| name == op && support == "tract"),
            "{op}: {ops:?}"
        );
    }
    assert_eq!(report["inputs"][0]["name"], "pixels", "{report}");
    assert_eq!(report["inputs"][0]["shape"], json!([-1, 64]), "{report}");
}

#[test]
fn an_int8_model_optimizes_with_auto_as_it_is() {
    // `auto` (the default) builds no f16 or int8-weight candidate from a model that is integer-quantized already.
    let tmp = tempfile::tempdir().unwrap();
    let name = "digits_tflite_cnn_int8";
    let out = tmp.path().join(name);
    let run = optimize(&out, &["--source", &source(name)], &[]).unwrap();
    assert_eq!(run.code, 0, "{}\n{}", run.report, run.stderr);
    assert_eq!(run.report["precision"], "f32", "{}", run.report);
    assert!(
        run.stderr
            .contains("the model is integer-quantized already"),
        "{}",
        run.stderr
    );
    let model = out.join("model.nnef.tgz").display().to_string();
    let split = Split::load(name).unwrap();
    let (got, _) = infer(&model, name, &split, true);
    compare(name, &split, &got, INT8_TOLERANCE);
}
