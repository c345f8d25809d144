//! `tractor optimize` on bad input: each failure exits non-zero with its reason code and leaves `--out` clean.

use anyhow::Result;
use tractor_e2e::optimize::{files_in, fixtures, optimize, unsupported_op_model};

fn expect_failure(out: &std::path::Path, args: &[&str], reason: &str) -> Result<serde_json::Value> {
    let run = optimize(out, args, &[])?;
    assert_ne!(run.code, 0, "expected {reason}: {}", run.report);
    assert_eq!(run.reason(), Some(reason), "{}\n{}", run.report, run.stderr);
    assert!(run.report.get("artifactDigest").is_none());
    assert!(
        files_in(out).is_empty(),
        "left in --out: {:?}",
        files_in(out)
    );
    Ok(run.report)
}

#[test]
fn truncated_model_is_invalid() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let bytes = std::fs::read(fixtures().join("dense.onnx"))?;
    let cut = tmp.path().join("dense.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
    let src = cut.display().to_string();
    expect_failure(&tmp.path().join("out"), &["--source", &src], "InvalidModel")?;
    Ok(())
}

#[test]
fn wrong_digest_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = fixtures().join("digits_mlp.onnx").display().to_string();
    let wrong = "0".repeat(64);
    let r = expect_failure(
        &tmp.path().join("out"),
        &["--source", &src, "--sha256", &wrong],
        "DigestMismatch",
    )?;
    assert!(
        r["sourceDigest"]
            .as_str()
            .expect("present")
            .starts_with("sha256:")
    );
    Ok(())
}

#[test]
fn unsupported_op_is_named() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("strings.onnx");
    unsupported_op_model(&path)?;
    let src = path.display().to_string();
    let r = expect_failure(
        &tmp.path().join("out"),
        &["--source", &src],
        "UnsupportedOp",
    )?;
    assert!(
        r["message"]
            .as_str()
            .expect("present")
            .contains("StringNormalizer"),
        "{r}"
    );
    Ok(())
}

#[test]
fn missing_local_file_fails_to_fetch() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    expect_failure(
        &tmp.path().join("out"),
        &["--source", "/nonexistent/model.onnx"],
        "FetchFailed",
    )?;
    Ok(())
}

#[test]
fn baseline_below_min_score_fails() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = fixtures().join("digits_mlp.onnx").display().to_string();
    let data = fixtures().join("digits_mlp_test.npz").display().to_string();
    let r = expect_failure(
        &tmp.path().join("out"),
        &[
            "--source",
            &src,
            "--eval-data",
            &data,
            "--min-score",
            "0.9999",
        ],
        "BelowMinScore",
    )?;
    assert!(r["baselineScore"].as_f64().expect("present") < 0.9999);
    Ok(())
}

#[test]
fn dataset_that_does_not_fit_is_invalid() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // The breast_cancer set has 30 features; the digits model takes 64.
    let src = fixtures().join("digits_mlp.onnx").display().to_string();
    let data = fixtures()
        .join("breast_cancer_logreg_test.npz")
        .display()
        .to_string();
    expect_failure(
        &tmp.path().join("out"),
        &["--source", &src, "--eval-data", &data],
        "InvalidDataset",
    )?;
    Ok(())
}
