//! `tractor optimize --format/--inputs`, as the Job receives `spec.model.format` and `spec.model.inputs`: a
//! declared format is loaded as such (no sniffing), declared inputs are checked against the model and fix what
//! it leaves free.

use anyhow::Result;
use serde_json::{Value, json};
use tractor_e2e::optimize::{files_in, fixtures, free_features_model, optimize};

/// Runs optimize at f32 (no candidates to time) and returns the report, asserting the exit code matches it.
fn run(out: &std::path::Path, args: &[&str]) -> Result<Value> {
    let mut all = vec!["--precision", "f32"];
    all.extend_from_slice(args);
    let r = optimize(out, &all, &[])?;
    assert_eq!(
        r.code == 0,
        r.reason().is_none(),
        "{}\n{}",
        r.report,
        r.stderr
    );
    if r.code != 0 {
        assert!(
            files_in(out).is_empty(),
            "left in --out: {:?}",
            files_in(out)
        );
    }
    Ok(r.report)
}

fn digits() -> String {
    fixtures().join("digits_mlp.onnx").display().to_string()
}

fn failure(report: &Value) -> (&str, &str) {
    (
        report["reason"].as_str().unwrap_or("(none)"),
        report["message"].as_str().unwrap_or(""),
    )
}

#[test]
fn declared_nnef_on_an_onnx_file_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = digits();
    let r = run(
        &tmp.path().join("out"),
        &["--source", &src, "--format", "nnef"],
    )?;
    let (reason, message) = failure(&r);
    assert_eq!(reason, "InvalidModel", "{r}");
    assert!(
        message.starts_with("model.format is nnef, but the file is neither"),
        "{message}"
    );
    Ok(())
}

#[test]
fn declared_onnx_on_an_nnef_archive_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = digits();
    let first = run(
        &tmp.path().join("nnef"),
        &["--source", &src, "--format", "onnx"],
    )?;
    assert_eq!(first["format"], "onnx", "{first}");
    let archive = tmp.path().join("nnef/model.nnef.tgz");
    assert!(
        archive.is_file(),
        "{:?}",
        files_in(&tmp.path().join("nnef"))
    );
    let archive = archive.display().to_string();
    let r = run(
        &tmp.path().join("out"),
        &["--source", &archive, "--format", "onnx"],
    )?;
    let (reason, message) = failure(&r);
    assert_eq!(reason, "InvalidModel", "{r}");
    assert!(
        message.starts_with("model.format is onnx, but the file is"),
        "{message}"
    );
    // The same archive without a declaration is told from its bytes.
    let sniffed = run(&tmp.path().join("again"), &["--source", &archive])?;
    assert_eq!(sniffed["format"], "nnef", "{sniffed}");
    Ok(())
}

#[test]
fn declared_inputs_that_disagree_are_refused_naming_the_mismatch() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = digits();
    let cases = [
        (
            json!([{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]),
            "input `X` dimension 1: declared 32, the model fixes it at 64",
        ),
        (
            json!([{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]),
            "model.inputs names `pixels`, but the model's inputs are `X`",
        ),
        (
            json!([{"name": "X", "datatype": "INT64", "shape": [-1, 64]}]),
            "input `X`: declared datatype INT64, the model takes FP32",
        ),
    ];
    for (case, (declared, want)) in cases.iter().enumerate() {
        let declared = declared.to_string();
        let report = run(
            &tmp.path().join(format!("out{case}")),
            &["--source", &src, "--inputs", &declared],
        )?;
        let (reason, message) = failure(&report);
        assert_eq!(reason, "InputMismatch", "{declared}: {report}");
        assert!(message.starts_with(want), "{declared}: {message}");
    }
    // Declarations that agree change nothing in what the model takes.
    let agree = json!([{"name": "X", "datatype": "FP32", "shape": [-1, 64]}]).to_string();
    let report = run(
        &tmp.path().join("agree"),
        &["--source", &src, "--inputs", &agree],
    )?;
    assert_eq!(report["inputs"][0]["shape"], json!([-1, 64]), "{report}");
    Ok(())
}

#[test]
fn declared_inputs_fix_what_the_model_leaves_free() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = tmp.path().join("free.onnx");
    free_features_model(&model)?;
    let src = model.display().to_string();
    // Undeclared, the free feature axis cannot be served: the server takes a batch of rows of one width.
    let free = run(&tmp.path().join("free"), &["--source", &src])?;
    assert_eq!(free["inputs"][0]["shape"], json!([-1, -1]), "{free}");
    assert_eq!(
        failure(&free),
        (
            "InvalidModel",
            "input has a non-batch dimension that is not fixed: F"
        ),
        "{free}"
    );
    let declared = json!([{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]).to_string();
    let fixed = run(
        &tmp.path().join("fixed"),
        &["--source", &src, "--inputs", &declared],
    )?;
    assert_eq!(fixed["inputs"][0]["name"], "x", "{fixed}");
    assert_eq!(fixed["inputs"][0]["datatype"], "FP32", "{fixed}");
    assert_eq!(fixed["inputs"][0]["shape"], json!([-1, 4]), "{fixed}");
    assert!(fixed["artifactDigest"].is_string(), "{fixed}");
    Ok(())
}
