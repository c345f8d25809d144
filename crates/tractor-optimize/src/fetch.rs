//! Fetch a model or a labelled set from where a ModelDeployment says it lives: a local path, `http(s)://` or `s3://`.
//!
//! Remote bytes are streamed to a file in a caller-given work folder; the caller checks the digest. S3 settings come
//! from the environment the operator sets from the spec and its Secret (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use tractor_api::{ModelUri, UriError};

use crate::{OptError, Reason};

/// Why a uri with a scheme this command does not fetch (`pvc://` and `configmap://` are mounted by the operator
/// and arrive here as local paths) is refused.
const UNSUPPORTED_SCHEME: &str =
    "unsupported scheme (use https://, http://, s3:// or a local path)";

/// A fetch that failed: network error, 404, timeout, unreadable local file.
fn failed(uri: &str, message: impl std::fmt::Display) -> OptError {
    OptError::new(Reason::FetchFailed, format!("fetching {uri}: {message}"))
}

/// A fetch the server refused the credentials for (HTTP 401/403, S3 access denied); the report tells it apart from
/// an unreachable source.
fn denied(uri: &str, message: impl std::fmt::Display) -> OptError {
    OptError::new(
        Reason::AccessDenied,
        format!("fetching {uri}: access denied: {message}"),
    )
}

/// Where bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on this machine (what `pvc://` and `configmap://` sources become inside a pod).
    Local(PathBuf),
    /// `http://`, `https://` or `s3://bucket/key`, fetched by this command.
    Remote(ModelUri),
}

impl Source {
    /// Parse a URI or a local path.
    pub fn parse(uri: &str) -> Result<Source, OptError> {
        if let Some(path) = uri.strip_prefix("file://") {
            return Ok(Source::Local(PathBuf::from(path)));
        }
        if !uri.contains("://") {
            return Ok(Source::Local(PathBuf::from(uri)));
        }
        match ModelUri::parse(uri) {
            Ok(remote @ (ModelUri::Http(_) | ModelUri::S3 { .. })) => Ok(Source::Remote(remote)),
            Err(error @ UriError::S3Form(_)) => Err(failed(uri, error)),
            Ok(ModelUri::Pvc { .. } | ModelUri::ConfigMap { .. })
            | Err(UriError::UnknownScheme(_) | UriError::MountForm { .. }) => {
                Err(failed(uri, UNSUPPORTED_SCHEME))
            }
        }
    }

    /// Whether the source is reached over plain HTTP, where a digest is the only integrity check.
    pub fn is_plain_http(&self) -> bool {
        matches!(self, Source::Remote(remote) if remote.is_plain_http())
    }

    /// The last path segment, kept so a fetched file has a telling name.
    fn file_name(&self) -> String {
        let raw = match self {
            Source::Local(p) => p.to_string_lossy().into_owned(),
            Source::Remote(ModelUri::Http(u)) => {
                u.split(['?', '#']).next().unwrap_or_default().to_owned()
            }
            Source::Remote(ModelUri::S3 { key, .. }) => key.clone(),
            Source::Remote(other) => other.to_string(),
        };
        raw.rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("source")
            .to_owned()
    }
}

/// Fetch `uri` and return a local path holding its bytes: the path itself for a local source, else a file in `work`.
pub async fn fetch(uri: &str, work: &Path) -> Result<PathBuf, OptError> {
    let source = Source::parse(uri)?;
    let dest = work.join(source.file_name());
    match &source {
        Source::Local(path) => {
            let meta = std::fs::metadata(path).map_err(|error| failed(uri, error))?;
            if meta.is_dir() || meta.is_file() {
                Ok(path.clone())
            } else {
                Err(failed(uri, "not a file or folder"))
            }
        }
        Source::Remote(ModelUri::Http(url)) => {
            let bytes = http_get(url).await.map_err(|(denied, message)| {
                if denied {
                    self::denied(uri, message)
                } else {
                    failed(uri, message)
                }
            })?;
            std::fs::write(&dest, bytes).map_err(|error| failed(uri, error))?;
            Ok(dest)
        }
        Source::Remote(ModelUri::S3 { bucket, key }) => {
            let store = s3_store(bucket).map_err(|error| failed(uri, error))?;
            let got = store
                .get(&object_store::path::Path::from(key.as_str()))
                .await
                .map_err(|error| s3_error(uri, error))?;
            let bytes = got.bytes().await.map_err(|error| s3_error(uri, error))?;
            std::fs::write(&dest, bytes).map_err(|error| failed(uri, error))?;
            Ok(dest)
        }
        // `parse` never gives these; refused as it would refuse them.
        Source::Remote(ModelUri::Pvc { .. } | ModelUri::ConfigMap { .. }) => {
            Err(failed(uri, UNSUPPORTED_SCHEME))
        }
    }
}

/// Upload a finished artifact to `s3://bucket/key` (the only upload target: HTTP has no standard write).
pub async fn upload(uri: &str, file: &Path) -> Result<(), OptError> {
    let Source::Remote(ModelUri::S3 { bucket, key }) = Source::parse(uri)? else {
        return Err(failed(uri, "uploads go to s3://bucket/key only"));
    };
    let bytes = std::fs::read(file).map_err(|e| failed(uri, e))?;
    let store = s3_store(&bucket).map_err(|e| failed(uri, e))?;
    store
        .put(&object_store::path::Path::from(key.as_str()), bytes.into())
        .await
        .map_err(|e| s3_error(uri, e))?;
    Ok(())
}

/// GET with timeouts; the error says whether the server denied access.
pub(crate) async fn http_get(url: &str) -> Result<Vec<u8>, (bool, String)> {
    // Bounded: a Job that hangs on a dead server is worse than one that fails and retries.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| (false, e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| (false, error_chain(&e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err((true, format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err((false, format!("HTTP {status}")));
    }
    let body = resp.bytes().await.map_err(|e| (false, error_chain(&e)))?;
    Ok(body.to_vec())
}

pub(crate) use tractor_store::error_chain;

/// The store for one bucket, configured from the environment.
fn s3_store(bucket: &str) -> object_store::Result<AmazonS3> {
    s3_builder(bucket).build()
}

/// The settings of the store for one bucket, from the `AWS_*` environment; the artifact store adds its own.
pub(crate) fn s3_builder(bucket: &str) -> AmazonS3Builder {
    // from_env reads AWS_ENDPOINT_URL, AWS_REGION, the keys and AWS_VIRTUAL_HOSTED_STYLE_REQUEST.
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        // In-cluster stores (SeaweedFS, Ceph) are often plain HTTP; the endpoint is the operator's choice.
        builder = builder
            .with_endpoint(&endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    builder
}

fn s3_error(uri: &str, e: object_store::Error) -> OptError {
    let message = error_chain(&e);
    if is_denied(&e, &message) {
        self::denied(uri, message)
    } else {
        failed(uri, message)
    }
}

/// Whether an S3 error (with its `message`, the [`error_chain`]) is the store refusing the credentials rather than
/// a missing object or an unreachable store.
pub(crate) fn is_denied(e: &object_store::Error, message: &str) -> bool {
    matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || [
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "403 Forbidden",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            Source::parse("s3://models/digits/v1.onnx").expect("ok"),
            Source::Remote(ModelUri::S3 {
                bucket: "models".into(),
                key: "digits/v1.onnx".into()
            })
        );
        let message = |uri: &str| Source::parse(uri).expect_err(uri).message;
        assert_eq!(
            message("s3://models"),
            "fetching s3://models: expected s3://bucket/key"
        );
        for uri in [
            "ftp://x/y",
            "pvc://claim/m.onnx",
            "configmap://cm",
            "HTTPS://h/m.onnx",
        ] {
            assert_eq!(
                message(uri),
                format!(
                    "fetching {uri}: unsupported scheme (use https://, http://, s3:// or a local path)"
                )
            );
        }
        assert_eq!(
            Source::parse("file:///var/run/m.onnx").expect("ok"),
            Source::Local("/var/run/m.onnx".into())
        );
        assert!(
            Source::parse("http://h/m.onnx")
                .expect("ok")
                .is_plain_http()
        );
        assert!(
            !Source::parse("https://h/m.onnx")
                .expect("ok")
                .is_plain_http()
        );
        assert_eq!(
            Source::parse("/var/run/m.onnx").expect("ok"),
            Source::Local("/var/run/m.onnx".into())
        );
        assert_eq!(
            Source::parse("https://h/a/m.onnx?x=1")
                .expect("ok")
                .file_name(),
            "m.onnx"
        );
    }
}
