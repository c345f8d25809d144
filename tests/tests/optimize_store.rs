//! The artifact store on a real S3-compatible server (SeaweedFS on loopback): `tractor optimize --publish` writes
//! the artifact once under its digest, with its report and no temporary object left; an identical run uploads
//! nothing; `tractor fetch` downloads exactly that digest (from the store, over HTTP or from a path) and refuses a
//! tampered object; a store that is down fails the run with `ArtifactStoreUnavailable`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;
use tractor_api::names::{ARTIFACT_FILE, store_env};
use tractor_e2e::optimize::{
    S3_ACCESS_KEY, S3_SECRET_KEY, fetch, files_in, fixtures, free_port, http_server, optimize,
    s3_env, s3_keys, s3_put, s3_request, s3_server, sha256,
};

const BUCKET: &str = "artifacts";
/// The store's prefix, two segments deep, given with a trailing slash (the same store as without).
const STORE: &str = "s3://artifacts/team/tractor/";

/// `--publish` run of digits_mlp at a fixed precision (so two runs write the same bytes) into `out`.
fn publish_run(
    out: &Path,
    store: &str,
    env: &[(&str, &str)],
) -> Result<tractor_e2e::optimize::Run> {
    let model = fixtures().join("digits_mlp.onnx");
    optimize(
        out,
        &[
            "--source",
            &model.display().to_string(),
            "--precision",
            "int8",
            "--publish",
            store,
        ],
        env,
    )
}

/// The progress lines (`{"progress":"publish","detail":...}`) of one stage, from a run's stderr.
fn progress_details(stderr: &str, stage: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["progress"] == stage)
        .filter_map(|line| line["detail"].as_str().map(str::to_owned))
        .collect()
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

#[test]
fn publish_once_then_fetch_exactly_that_digest() -> Result<()> {
    let server = s3_server()?;
    s3_put(server.port, BUCKET, None)?;
    let owned_env = s3_env(server.port, S3_SECRET_KEY);
    let env = borrowed(&owned_env);
    let tmp = tempfile::tempdir()?;

    // (a) Published under its digest, with its report, and nothing left under tmp/.
    let first_out = tmp.path().join("first");
    let first = publish_run(&first_out, STORE, &env)?;
    assert_eq!(first.code, 0, "{}\n{}", first.report, first.stderr);
    let artifact = first_out.join(ARTIFACT_FILE);
    let hex = sha256(&artifact)?;
    assert_eq!(first.report["artifactDigest"], format!("sha256:{hex}"));
    let key = format!("team/tractor/sha256/{hex}");
    let uri = format!("s3://{BUCKET}/{key}");
    assert_eq!(first.report["artifactUri"], uri.as_str());
    let object = s3_request(server.port, "GET", &format!("{BUCKET}/{key}"))?;
    assert_eq!(object.status, 200);
    assert!(
        object.body == std::fs::read(&artifact)?,
        "the object differs from {}",
        artifact.display()
    );
    let report_object = s3_request(server.port, "GET", &format!("{BUCKET}/{key}.report.json"))?;
    assert_eq!(report_object.status, 200);
    let published_report: Value = serde_json::from_slice(&report_object.body)?;
    assert_eq!(
        published_report["artifactDigest"],
        first.report["artifactDigest"]
    );
    assert_eq!(published_report["artifactUri"], uri.as_str());
    assert_eq!(published_report["precision"], "int8");
    assert_eq!(
        s3_keys(server.port, BUCKET, "team/tractor/tmp/")?,
        Vec::<String>::new()
    );
    assert_eq!(
        s3_keys(server.port, BUCKET, "team/tractor/")?,
        [key.clone(), format!("{key}.report.json")]
    );
    let published = progress_details(&first.stderr, "publish");
    assert!(
        published
            .iter()
            .any(|detail| detail.starts_with(&uri) && !detail.contains("skipped")),
        "{published:?}"
    );
    let before = s3_request(server.port, "HEAD", &format!("{BUCKET}/{key}"))?;

    // (b) The same run again (the store named without the trailing slash) finds the object and uploads nothing.
    let second = publish_run(
        &tmp.path().join("second"),
        STORE.trim_end_matches('/'),
        &env,
    )?;
    assert_eq!(second.code, 0, "{}\n{}", second.report, second.stderr);
    assert_eq!(second.report["artifactUri"], uri.as_str());
    let skipped = progress_details(&second.stderr, "publish");
    assert!(
        skipped
            .iter()
            .any(|detail| detail.contains("already published") && detail.contains("skipped")),
        "{skipped:?}"
    );
    let after = s3_request(server.port, "HEAD", &format!("{BUCKET}/{key}"))?;
    for header in ["last-modified", "etag", "content-length"] {
        assert_eq!(before.header(header), after.header(header), "{header}");
    }
    assert_eq!(
        s3_keys(server.port, BUCKET, "team/tractor/tmp/")?,
        Vec::<String>::new()
    );

    // (c) Fetched as a serving pod does: the store's own settings, while AWS_* point at a store that is down.
    let pod_env = pod_env(server.port)?;
    let pod_env = borrowed(&pod_env);
    let served = tmp.path().join("served");
    let fetched = fetch(&uri, &hex, &served, &pod_env)?;
    assert_eq!(fetched.code, 0, "{}\n{}", fetched.result, fetched.stderr);
    assert_eq!(files_in(&served), [ARTIFACT_FILE]);
    assert!(std::fs::read(served.join(ARTIFACT_FILE))? == std::fs::read(&artifact)?);
    assert_eq!(fetched.result["artifactDigest"], format!("sha256:{hex}"));
    // The same digest over HTTP and from a path.
    let http = http_server(&first_out)?;
    let from_path = artifact.display().to_string();
    let sources = [
        format!("http://127.0.0.1:{}/{ARTIFACT_FILE}", http.port),
        from_path,
    ];
    for (index, source) in sources.iter().enumerate() {
        let out = tmp.path().join(format!("via-{index}"));
        let again = fetch(source, &format!("sha256:{hex}"), &out, &[])?;
        assert_eq!(
            again.code, 0,
            "{source}: {}\n{}",
            again.result, again.stderr
        );
        assert_eq!(sha256(&out.join(ARTIFACT_FILE))?, hex, "{source}");
    }

    // (d) The object tampered with: refused, naming both digests and the uri, and nothing left to serve.
    let other = fixtures().join("digits_mlp.onnx");
    let other_hex = sha256(&other)?;
    s3_put(server.port, &format!("{BUCKET}/{key}"), Some(&other))?;
    let refused_out = tmp.path().join("refused");
    let refused = fetch(&uri, &hex, &refused_out, &pod_env)?;
    assert_ne!(refused.code, 0, "{}", refused.result);
    assert_eq!(refused.result["reason"], "DigestMismatch");
    let message = refused.result["message"].as_str().context("a message")?;
    for word in [&hex, &other_hex, &uri] {
        assert!(message.contains(word.as_str()), "{message:?} lacks {word}");
        assert!(
            refused.stderr.contains(word.as_str()),
            "stderr lacks {word}"
        );
    }
    assert_eq!(files_in(&refused_out), Vec::<String>::new());
    Ok(())
}

/// The environment a serving pod's fetch step gets from the operator: the store's settings under
/// `TRACTOR_STORE_*`; the `AWS_*` (a source's store) here point at a closed port, so only the former can work.
fn pod_env(port: u16) -> Result<Vec<(String, String)>> {
    let mut env = s3_env(free_port()?, "not-the-secret");
    env.extend([
        (
            store_env::ENDPOINT.to_owned(),
            format!("http://127.0.0.1:{port}"),
        ),
        (store_env::REGION.to_owned(), "us-east-1".to_owned()),
        (store_env::PATH_STYLE.to_owned(), "true".to_owned()),
        (
            store_env::ACCESS_KEY_ID.to_owned(),
            S3_ACCESS_KEY.to_owned(),
        ),
        (
            store_env::SECRET_ACCESS_KEY.to_owned(),
            S3_SECRET_KEY.to_owned(),
        ),
    ]);
    Ok(env)
}

/// A store nobody listens on: the run fails with `ArtifactStoreUnavailable`, naming the store, yet writes the
/// artifact to `out`; fetching from it fails with a message that says the store is unreachable.
#[test]
fn a_store_that_is_down_fails_publish_and_fetch() -> Result<()> {
    let owned_env = s3_env(free_port()?, S3_SECRET_KEY);
    let env = borrowed(&owned_env);
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let run = publish_run(&out, STORE, &env)?;
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(
        run.reason(),
        Some("ArtifactStoreUnavailable"),
        "{}",
        run.report
    );
    let message = run.report["message"].as_str().context("a message")?;
    assert!(
        message.contains("artifact store s3://artifacts/team/tractor:"),
        "{message}"
    );
    assert!(run.report.get("artifactUri").is_none(), "{}", run.report);
    assert_eq!(files_in(&out), [ARTIFACT_FILE]);

    let hex = sha256(&out.join(ARTIFACT_FILE))?;
    let served = tmp.path().join("served");
    let uri = format!("s3://{BUCKET}/team/tractor/sha256/{hex}");
    let fetched = fetch(&uri, &hex, &served, &env)?;
    assert_eq!(fetched.code, 1, "{}", fetched.result);
    assert_eq!(fetched.result["reason"], "FetchFailed");
    let message = fetched.result["message"].as_str().context("a message")?;
    assert!(
        message.contains(&uri) && message.contains("unreachable"),
        "{message}"
    );
    assert_eq!(files_in(&served), Vec::<String>::new());
    Ok(())
}
