//! The artifact store: `tractor optimize --publish` puts the verified artifact into an S3 bucket under its digest,
//! and `tractor fetch` downloads exactly one digest, checks it and renames it into place for the server.
//!
//! Layout under the store `s3://bucket/prefix`: the artifact at `prefix/sha256/<hex>`, its report at
//! `prefix/sha256/<hex>.report.json`, uploads in flight at `prefix/tmp/<hex>-<pid>-<nanos>`. A key names its bytes,
//! so an object is written once: a run that finds it (at the same size) uploads nothing, and two runs racing write
//! the same bytes. An object appears whole or not at all: it is uploaded to a temporary key, copied to its final
//! key and the temporary key deleted. A plain copy, not `copy_if_not_exists`: object_store supports that on S3
//! only with a store-specific setting (a header, a multipart upload or DynamoDB), and losing a race to identical
//! bytes is harmless.
//!
//! The client, its settings and the cache's layout are `tractor_store`'s: the `TRACTOR_STORE_*` variables when any
//! is set, so a Job can read its source from one S3 store (the `AWS_*` variables) and publish to another; else the
//! `AWS_*` variables.

use std::io::Write;
use std::path::{Path, PathBuf};

use object_store::aws::AmazonS3;
use object_store::{ObjectMeta, ObjectStore, PutPayload};
use serde_json::json;
use sha2::{Digest, Sha256};
use tractor_api::ModelUri;
use tractor_api::names::ARTIFACT_FILE;

use crate::fetch::{self, Source};
use crate::{OptError, Reason, progress};

/// Scheme of an artifact store.
const S3_SCHEME: &str = "s3://";
/// Folder of the published objects, named for the digest algorithm so another one could sit beside it.
const DIGEST_DIR: &str = "sha256";
/// Folder of uploads in flight.
const TEMP_DIR: &str = "tmp";
/// Suffix of an artifact's report beside it.
const REPORT_SUFFIX: &str = ".report.json";

/// An artifact store, `s3://bucket/prefix` (the prefix may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactStore {
    bucket: String,
    /// Without leading or trailing `/`.
    prefix: String,
}

impl std::fmt::Display for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{S3_SCHEME}{}", self.bucket)
        } else {
            write!(f, "{S3_SCHEME}{}/{}", self.bucket, self.prefix)
        }
    }
}

impl ArtifactStore {
    /// Parses `s3://bucket/prefix`; a trailing `/` is the same store.
    pub fn parse(uri: &str) -> Result<ArtifactStore, OptError> {
        let refused = |why: &str| {
            OptError::new(
                Reason::ArtifactStoreUnavailable,
                format!("artifact store {uri}: {why}"),
            )
        };
        let rest = uri
            .strip_prefix(S3_SCHEME)
            .ok_or_else(|| refused("expected s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(refused("expected s3://bucket/prefix (no bucket)"));
        }
        let prefix = prefix.trim_matches('/');
        // The key rules object_store enforces (no empty, `.` or `..` segments), checked before any upload.
        object_store::path::Path::parse(prefix).map_err(|error| refused(&error.to_string()))?;
        Ok(ArtifactStore {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// `prefix/rest`, or `rest` under an empty prefix.
    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// Key of the artifact with sha256 `hex`: `prefix/sha256/<hex>`.
    pub fn artifact_key(&self, hex: &str) -> String {
        self.key(&format!("{DIGEST_DIR}/{hex}"))
    }

    /// Key of that artifact's report: `prefix/sha256/<hex>.report.json`.
    pub fn report_key(&self, hex: &str) -> String {
        self.key(&format!("{DIGEST_DIR}/{hex}{REPORT_SUFFIX}"))
    }

    /// Key of the shared optimize cache's entry `key` (a `tractor_api::revision::cache_key`):
    /// `prefix/cache/<key>.json`.
    pub fn cache_entry_key(&self, key: &str) -> String {
        tractor_store::cache_entry(&self.prefix, key)
    }

    /// Folder of uploads in flight: `prefix/tmp/`.
    pub fn temp_prefix(&self) -> String {
        self.key(&format!("{TEMP_DIR}/"))
    }

    /// A key of that folder for one upload of `name` (the hex, or the report's file name), so two Jobs uploading
    /// the same digest never write the same temporary object: the pod's name (`HOSTNAME`; in a container the pid
    /// is often 1 in every pod), the pid and the instant tell uploaders apart, a counter tells one process's
    /// uploads apart.
    fn temp_key(&self, name: &str) -> String {
        static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let upload = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        format!(
            "{}{name}-{host}-{}-{nanos}-{upload}",
            self.temp_prefix(),
            std::process::id()
        )
    }

    /// `s3://bucket/key`.
    pub fn uri_of(&self, key: &str) -> String {
        format!("{S3_SCHEME}{}/{key}", self.bucket)
    }

    /// A failure reaching or writing the store: what was being done and the store's error, with its causes.
    fn unavailable(&self, action: &str, error: &object_store::Error) -> OptError {
        let message = fetch::error_chain(error);
        let denied = if fetch::is_denied(error, &message) {
            "access denied: "
        } else {
            ""
        };
        OptError::new(
            Reason::ArtifactStoreUnavailable,
            format!("artifact store {self}: {denied}{action}: {message}"),
        )
    }
}

/// A client for `bucket` with the artifact store's settings: `TRACTOR_STORE_*`, else a source's `AWS_*`.
fn store_client(bucket: &str) -> object_store::Result<AmazonS3> {
    tractor_store::client(bucket, || fetch::s3_builder(bucket))
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `s3://bucket/prefix/sha256/<hex>`.
    pub uri: String,
    /// False when the store already held the artifact and nothing was uploaded.
    pub uploaded: bool,
}

/// Publish `artifact` (whose sha256 is `hex`) and its report to `store`, each written once (see the module docs).
pub async fn publish(
    store: &ArtifactStore,
    artifact: Vec<u8>,
    hex: &str,
    report: Vec<u8>,
) -> Result<Published, OptError> {
    let client = store_client(&store.bucket)
        .map_err(|error| store.unavailable("configuring the client", &error))?;
    let key = store.artifact_key(hex);
    let uri = store.uri_of(&key);
    let size = artifact.len() as u64;
    // Same key, same size: the same bytes, as far as a HEAD can tell (a digest mismatch at that size is what
    // `tractor fetch` catches).
    let uploaded = put_once(&client, store, &key, hex, artifact.into(), |found| {
        found.size == size
    })
    .await?;
    if uploaded {
        progress("publish", &format!("{uri} ({size} bytes)"));
    } else {
        progress(
            "publish",
            &format!("{uri} already published ({size} bytes): upload skipped"),
        );
    }
    // The report of the run that first published the artifact stays: later runs' differ only in timings.
    let report_key = store.report_key(hex);
    let report_name = format!("{hex}{REPORT_SUFFIX}");
    put_once(
        &client,
        store,
        &report_key,
        &report_name,
        report.into(),
        |_| true,
    )
    .await?;
    Ok(Published { uri, uploaded })
}

/// Record `report` (a successful run's, with its `artifactUri`) as the shared cache's entry `key`, written once
/// like the artifact: the first run's report stays.
pub async fn record_cache(
    store: &ArtifactStore,
    key: &str,
    report: Vec<u8>,
) -> Result<(), OptError> {
    if !tractor_store::valid_cache_key(key) {
        return Err(OptError::new(
            Reason::Internal,
            format!("cache key `{key}` is not 64 lowercase hex characters"),
        ));
    }
    let client = store_client(&store.bucket)
        .map_err(|error| store.unavailable("configuring the client", &error))?;
    let entry = store.cache_entry_key(key);
    let name = format!("cache-{key}.json");
    put_once(&client, store, &entry, &name, report.into(), |_| true).await?;
    progress("publish", &format!("cache entry {}", store.uri_of(&entry)));
    Ok(())
}

/// Write `bytes` at `key` through a temporary key, unless the store already holds an object there that `keep`
/// accepts; returns whether it wrote.
async fn put_once(
    client: &AmazonS3,
    store: &ArtifactStore,
    key: &str,
    name: &str,
    bytes: PutPayload,
    keep: impl Fn(&ObjectMeta) -> bool,
) -> Result<bool, OptError> {
    let location = object_store::path::Path::from(key);
    let uri = store.uri_of(key);
    match client.head(&location).await {
        Ok(found) if keep(&found) => return Ok(false),
        Ok(found) => progress(
            "publish",
            &format!(
                "replacing {uri}: {} bytes, not the {} expected",
                found.size,
                bytes.content_length()
            ),
        ),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return Err(store.unavailable(&format!("looking up {uri}"), &error)),
    }
    let temp_key = store.temp_key(name);
    let temp = object_store::path::Path::from(temp_key.as_str());
    let size = bytes.content_length() as u64;
    client.put(&temp, bytes).await.map_err(|error| {
        store.unavailable(&format!("uploading {}", store.uri_of(&temp_key)), &error)
    })?;
    let copied = client.copy(&temp, &location).await;
    let deleted = client.delete(&temp).await;
    copied.map_err(|error| {
        store.unavailable(
            &format!("copying {} to {uri}", store.uri_of(&temp_key)),
            &error,
        )
    })?;
    if let Err(error) = deleted {
        // The object is published whole; a leftover under tmp/ is litter, not a failure.
        tracing::warn!(
            "artifact store {store}: deleting {}: {}",
            store.uri_of(&temp_key),
            fetch::error_chain(&error)
        );
    }
    // The copy said it succeeded; the size says it copied what was uploaded.
    let written = client
        .head(&location)
        .await
        .map_err(|error| store.unavailable(&format!("checking {uri}"), &error))?;
    if written.size != size {
        return Err(OptError::new(
            Reason::ArtifactStoreUnavailable,
            format!(
                "artifact store {store}: {uri} holds {} bytes after the upload, not {size}",
                written.size
            ),
        ));
    }
    Ok(true)
}

/// `tractor fetch`: download one published artifact by digest, verify it and put it where `tractor serve` reads it.
/// Every flag has an environment fallback.
#[derive(clap::Args, Debug, Clone)]
pub struct FetchArgs {
    /// The artifact: `s3://bucket/prefix/sha256/<hex>` (the store's settings from TRACTOR_STORE_*, else AWS_*),
    /// `https://...`, `http://...`, or a local path.
    #[arg(long, env = "TRACTOR_ARTIFACT_URI")]
    pub uri: String,
    /// The sha256 the artifact must have (hex, optionally prefixed `sha256:`), as the optimize report gives it.
    #[arg(long, env = "TRACTOR_MODEL_SHA256")]
    pub sha256: String,
    /// Folder to write `model.nnef.tgz` to; created if missing.
    #[arg(long, env = "TRACTOR_OUT")]
    pub out: PathBuf,
}

/// Run `tractor fetch`; returns the process exit code: 0 when `<out>/model.nnef.tgz` holds exactly the digest,
/// 1 otherwise (with no `model.nnef.tgz` left). One JSON line on stdout says which; a failure's line also goes to
/// /dev/termination-log when it is writable.
pub fn run_fetch(args: FetchArgs) -> i32 {
    let FetchArgs { uri, sha256, out } = args;
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| OptError::new(Reason::Internal, format!("runtime: {error}")))
        .and_then(|runtime| runtime.block_on(fetch_artifact(&uri, &sha256, &out)));
    crate::progress::finish();
    match fetched {
        Ok(done) => {
            println!(
                "{}",
                json!({
                    "uri": uri,
                    "artifactDigest": format!("sha256:{}", done.hex),
                    "sizeBytes": done.size,
                    "path": done.path,
                })
            );
            0
        }
        Err(error) => {
            tracing::error!(reason = ?error.reason, "{}", error.message);
            let line =
                json!({"uri": uri, "reason": error.reason, "message": error.message}).to_string();
            println!("{line}");
            // The kubelet shows this file as the init container's termination message (`kubectl describe`), where
            // the operator reads the reason to name the pod in a Warning Event.
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open("/dev/termination-log")
            {
                let _ = file.write_all(line.as_bytes());
            }
            1
        }
    }
}

/// What [`fetch_artifact`] put in place.
#[derive(Debug)]
struct Fetched {
    path: PathBuf,
    hex: String,
    size: u64,
}

/// The digest of `--sha256`: 64 lowercase hex digits.
fn expected_digest(sha256: &str) -> Result<String, OptError> {
    let hex = sha256
        .trim()
        .trim_start_matches("sha256:")
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(OptError::new(
            Reason::Internal,
            format!("--sha256 {sha256:?}: expected 64 hex digits, optionally prefixed sha256:"),
        ))
    }
}

/// Download `uri` to `<out>/.model.nnef.tgz.partial`, check its sha256 and rename it to `<out>/model.nnef.tgz`.
async fn fetch_artifact(uri: &str, sha256: &str, out: &Path) -> Result<Fetched, OptError> {
    let expected = expected_digest(sha256)?;
    let local = |what: &str, path: &Path, error: std::io::Error| {
        OptError::new(
            Reason::Internal,
            format!("{what} {}: {error}", path.display()),
        )
    };
    std::fs::create_dir_all(out).map_err(|error| local("creating", out, error))?;
    let target = out.join(ARTIFACT_FILE);
    if target.is_file() {
        let (found, size) =
            file_digest(&target).map_err(|error| local("reading", &target, error))?;
        if found == expected {
            progress(
                "fetch",
                &format!("{} already holds sha256:{found}", target.display()),
            );
            return Ok(Fetched {
                path: target,
                hex: found,
                size,
            });
        }
        // A leftover of another digest must not outlive a failed fetch: the server would find it.
        std::fs::remove_file(&target).map_err(|error| local("removing", &target, error))?;
    }
    let partial = out.join(format!(".{ARTIFACT_FILE}.partial"));
    progress("fetch", uri);
    let downloaded = download(uri, &partial).await;
    let checked = downloaded
        .and_then(|()| file_digest(&partial).map_err(|error| local("reading", &partial, error)));
    let (found, size) = match checked {
        Ok(digest) => digest,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    if found != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(OptError::new(
            Reason::DigestMismatch,
            format!(
                "artifact {uri}: sha256 is {found}, expected {expected}: the object is not the artifact the \
                 optimize Job published; nothing written to {}",
                target.display()
            ),
        ));
    }
    progress("verify", &format!("sha256:{found} ({size} bytes)"));
    std::fs::rename(&partial, &target).map_err(|error| local("renaming to", &target, error))?;
    if let Ok(dir) = std::fs::File::open(out) {
        let _ = dir.sync_all();
    }
    Ok(Fetched {
        path: target,
        hex: found,
        size,
    })
}

/// Write the bytes at `uri` (`s3://`, `http(s)://` or a local path) to `dest`, synced.
async fn download(uri: &str, dest: &Path) -> Result<(), OptError> {
    let failed =
        |message: String| OptError::new(Reason::FetchFailed, format!("fetching {uri}: {message}"));
    let bytes = match Source::parse(uri)? {
        Source::Local(path) => std::fs::read(&path).map_err(|error| failed(error.to_string()))?,
        Source::Remote(ModelUri::Http(url)) => {
            fetch::http_get(&url)
                .await
                .map_err(|(denied, message)| match denied {
                    true => OptError::new(
                        Reason::AccessDenied,
                        format!("fetching {uri}: access denied: {message}"),
                    ),
                    false => failed(message),
                })?
        }
        Source::Remote(ModelUri::S3 { bucket, key }) => {
            let client =
                store_client(&bucket).map_err(|error| failed(fetch::error_chain(&error)))?;
            let location = object_store::path::Path::from(key.as_str());
            let got = client.get(&location).await;
            let bytes = match got {
                Ok(got) => got.bytes().await,
                Err(error) => Err(error),
            };
            bytes
                .map_err(|error| {
                    let message = fetch::error_chain(&error);
                    match (&error, fetch::is_denied(&error, &message)) {
                        (_, true) => OptError::new(
                            Reason::AccessDenied,
                            format!("fetching {uri}: access denied: {message}"),
                        ),
                        (object_store::Error::NotFound { .. }, _) => {
                            failed(format!("not in the store ({message})"))
                        }
                        _ => failed(format!("the store is unreachable or failed: {message}")),
                    }
                })?
                .to_vec()
        }
        // `Source::parse` refuses these schemes; kept total.
        Source::Remote(other) => return Err(failed(format!("cannot fetch {other}"))),
    };
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(dest)?;
        file.write_all(&bytes)?;
        file.sync_all()
    };
    write().map_err(|error| {
        OptError::new(
            Reason::Internal,
            format!("writing {}: {error}", dest.display()),
        )
    })
}

/// Hex sha256 and size of a file, read in chunks.
fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key layout, with and without a prefix and a trailing slash.
    #[test]
    fn keys_follow_the_layout() {
        let hex = "ab".repeat(32);
        let cases = [
            ("s3://models/tractor", "models", "tractor/"),
            ("s3://models/tractor/", "models", "tractor/"),
            ("s3://models/team/tractor//", "models", "team/tractor/"),
            ("s3://models", "models", ""),
            ("s3://models/", "models", ""),
        ];
        for (uri, bucket, prefix) in cases {
            let store = ArtifactStore::parse(uri).expect(uri);
            assert_eq!(store.bucket, bucket, "{uri}");
            assert_eq!(
                store.artifact_key(&hex),
                format!("{prefix}sha256/{hex}"),
                "{uri}"
            );
            assert_eq!(
                store.report_key(&hex),
                format!("{prefix}sha256/{hex}.report.json"),
                "{uri}"
            );
            assert_eq!(store.temp_prefix(), format!("{prefix}tmp/"), "{uri}");
            assert_eq!(
                store.cache_entry_key(&hex),
                format!("{prefix}cache/{hex}.json"),
                "{uri}"
            );
            let temp = store.temp_key(&hex);
            assert!(temp.starts_with(&format!("{prefix}tmp/{hex}-")), "{temp}");
            assert_eq!(
                store.uri_of(&store.artifact_key(&hex)),
                format!("s3://{bucket}/{prefix}sha256/{hex}")
            );
            // Displayed as given, less the trailing slash, so messages name the store the flag named.
            assert_eq!(store.to_string(), uri.trim_end_matches('/'), "{uri}");
        }
    }

    /// Anything but `s3://bucket[/prefix]` is refused with the store's reason, naming the uri.
    #[test]
    fn malformed_stores_are_refused() {
        for uri in [
            "models/tractor",
            "https://h/models",
            "s3://",
            "s3:///tractor",
            "s3://models/a//b",
            "s3://models/a/../b",
        ] {
            let error = ArtifactStore::parse(uri).expect_err(uri);
            assert_eq!(error.reason, Reason::ArtifactStoreUnavailable, "{uri}");
            assert!(error.message.contains(uri), "{uri}: {}", error.message);
        }
    }

    /// Two temporary keys for one digest differ, so two publishers never share one.
    #[test]
    fn temporary_keys_are_unique() {
        let store = ArtifactStore::parse("s3://models/tractor").expect("parses");
        let first = store.temp_key("x");
        assert_ne!(first, store.temp_key("x"));
    }

    #[test]
    fn expected_digests_are_normalized_or_refused() {
        let hex = "AB".repeat(32);
        assert_eq!(expected_digest(&hex).expect("hex"), "ab".repeat(32));
        assert_eq!(
            expected_digest(&format!(" sha256:{hex}\n")).expect("prefixed"),
            "ab".repeat(32)
        );
        for refused in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            assert!(expected_digest(refused).is_err(), "{refused:?}");
        }
    }

    /// A local artifact is copied into place when it has the digest; otherwise nothing is left behind.
    #[test]
    fn fetch_verifies_before_renaming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("artifact");
        std::fs::write(&source, b"artifact bytes").expect("write");
        let hex = hex::encode(Sha256::digest(b"artifact bytes"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let out = dir.path().join("out");
        let uri = source.to_string_lossy().into_owned();

        let fetched = runtime
            .block_on(fetch_artifact(&uri, &hex, &out))
            .expect("fetched");
        assert_eq!(fetched.path, out.join(ARTIFACT_FILE));
        assert_eq!(
            std::fs::read(&fetched.path).expect("read"),
            b"artifact bytes"
        );

        let other = "cd".repeat(32);
        let error = runtime
            .block_on(fetch_artifact(&uri, &other, &out))
            .expect_err("mismatch");
        assert_eq!(error.reason, Reason::DigestMismatch);
        for word in [&hex, &other, &uri] {
            assert!(error.message.contains(word.as_str()), "{}", error.message);
        }
        let left: Vec<_> = std::fs::read_dir(&out)
            .expect("out")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
