//! `tractor optimize` from a real S3-compatible server (SeaweedFS on loopback): fetch, upload, denied credentials.

use anyhow::Result;
use tractor_e2e::optimize::{
    S3_SECRET_KEY, files_in, fixtures, optimize, s3_env, s3_put, s3_server, sha256,
};

#[test]
fn s3_source_upload_and_denied_credentials() -> Result<()> {
    let server = s3_server()?;
    s3_put(server.port, "models", None)?;
    s3_put(
        server.port,
        "models/digits/v1.onnx",
        Some(&fixtures().join("digits_mlp.onnx")),
    )?;
    let tmp = tempfile::tempdir()?;
    let env = s3_env(server.port, S3_SECRET_KEY);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let digest = sha256(&fixtures().join("digits_mlp.onnx"))?;

    // Fetch, optimize, upload the artifact back; then fetch that artifact as an NNEF source.
    let run = optimize(
        &tmp.path().join("a"),
        &[
            "--source",
            "s3://models/digits/v1.onnx",
            "--sha256",
            &digest,
            "--precision",
            "int8",
            "--upload",
            "s3://models/digits/v1.nnef.tgz",
        ],
        &env,
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let artifact = run.report["artifactDigest"]
        .as_str()
        .expect("present")
        .to_owned();
    let again = optimize(
        &tmp.path().join("b"),
        &[
            "--source",
            "s3://models/digits/v1.nnef.tgz",
            "--sha256",
            &artifact,
            "--precision",
            "f32",
        ],
        &env,
    )?;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.report["format"], "nnef");

    // A missing key fails to fetch; a wrong secret is denied.
    let missing = optimize(
        &tmp.path().join("c"),
        &["--source", "s3://models/nope.onnx"],
        &env,
    )?;
    assert_eq!(missing.reason(), Some("FetchFailed"), "{}", missing.report);
    let denied_env = s3_env(server.port, "not-the-secret");
    let denied_env: Vec<(&str, &str)> = denied_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let out = tmp.path().join("d");
    let denied = optimize(
        &out,
        &["--source", "s3://models/digits/v1.onnx"],
        &denied_env,
    )?;
    assert_ne!(denied.code, 0);
    assert_eq!(denied.reason(), Some("AccessDenied"), "{}", denied.report);
    assert!(files_in(&out).is_empty());
    Ok(())
}
