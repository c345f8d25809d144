//! `tractor optimize` from a local HTTP server (Python's http.server): digest required, unreachable and 404 fail.

use anyhow::Result;
use tractor_e2e::optimize::{files_in, fixtures, free_port, http_server, optimize, sha256};

#[test]
fn http_source_with_digest_gives_the_same_artifact_as_the_file() -> Result<()> {
    let server = http_server(&fixtures())?;
    let tmp = tempfile::tempdir()?;
    let digest = sha256(&fixtures().join("digits_mlp.onnx"))?;
    let url = format!("http://127.0.0.1:{}/digits_mlp.onnx", server.port);
    let data = format!("http://127.0.0.1:{}/digits_mlp_test.npz", server.port);
    let remote = optimize(
        &tmp.path().join("http"),
        &[
            "--source",
            &url,
            "--sha256",
            &digest,
            "--precision",
            "f16",
            "--eval-data",
            &data,
        ],
        &[],
    )?;
    assert_eq!(remote.code, 0, "{}", remote.stderr);
    let local_src = fixtures().join("digits_mlp.onnx").display().to_string();
    // The same labelled set, read for the drift reference only (as a pod re-derives): it is in the artifact.
    let local_data = fixtures().join("digits_mlp_test.npz").display().to_string();
    let local = optimize(
        &tmp.path().join("local"),
        &[
            "--source",
            &local_src,
            "--precision",
            "f16",
            "--reference-data",
            &local_data,
        ],
        &[],
    )?;
    assert_eq!(local.code, 0, "{}", local.stderr);
    assert_eq!(
        remote.report["artifactDigest"],
        local.report["artifactDigest"]
    );
    assert_eq!(
        remote.report["sourceDigest"],
        format!("sha256:{digest}").as_str()
    );
    assert!(remote.report["optimizedScore"].as_f64().expect("present") > 0.9);
    Ok(())
}

#[test]
fn plain_http_without_digest_is_refused() -> Result<()> {
    let server = http_server(&fixtures())?;
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let url = format!("http://127.0.0.1:{}/digits_mlp.onnx", server.port);
    let run = optimize(&out, &["--source", &url], &[])?;
    assert_ne!(run.code, 0);
    assert_eq!(run.reason(), Some("FetchFailed"));
    assert!(
        run.report["message"]
            .as_str()
            .expect("present")
            .contains("--sha256")
    );
    assert!(files_in(&out).is_empty());
    Ok(())
}

#[test]
fn unreachable_and_missing_urls_fail_to_fetch() -> Result<()> {
    let server = http_server(&fixtures())?;
    let tmp = tempfile::tempdir()?;
    let digest = "0".repeat(64);
    let closed = free_port()?;
    for (i, url) in [
        format!("http://127.0.0.1:{closed}/model.onnx"),
        format!("http://127.0.0.1:{}/no-such-model.onnx", server.port),
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("out{i}"));
        let run = optimize(&out, &["--source", url, "--sha256", &digest], &[])?;
        assert_ne!(run.code, 0);
        assert_eq!(run.reason(), Some("FetchFailed"), "{url}: {}", run.report);
        assert!(files_in(&out).is_empty());
    }
    Ok(())
}
