//! The artifact store's client and the shared optimize cache's layout, in one small crate: the optimize Job writes
//! with it, `tractor fetch` reads with it, and the operator reads the cache with it without linking tract.
//!
//! The store's settings are the `TRACTOR_STORE_*` variables ([`store_env`]) when any is set, so a Job can read its
//! source from one S3 store (the `AWS_*` variables) and publish to another; else the caller's fallback (the `AWS_*`
//! variables, as a source uses them).

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use tractor_api::names::store_env;
use tractor_api::report::OptimizeReport;

/// Retries of one store call: about ten seconds of a store restarting or a connection refused (measured: a closed
/// port fails in 3 to 10 s), where object_store's default (10 retries over up to 3 minutes) would hold a Job that
/// Kubernetes retries with its own back-off, or a reconcile, and hide what is wrong for minutes.
pub fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            base: 3.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
    }
}

/// A client for `bucket` with the store's settings: the `TRACTOR_STORE_*` variables alone when any is set (none of
/// a source's `AWS_*`, its endpoint, keys or session token, may leak into requests to another store), else
/// `fallback`'s builder.
pub fn client(
    bucket: &str,
    fallback: impl FnOnce() -> AmazonS3Builder,
) -> object_store::Result<AmazonS3> {
    let own = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let names = [
        store_env::ENDPOINT,
        store_env::REGION,
        store_env::PATH_STYLE,
        store_env::ACCESS_KEY_ID,
        store_env::SECRET_ACCESS_KEY,
    ];
    let builder = if names.iter().any(|name| own(name).is_some()) {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(own(store_env::REGION).unwrap_or_else(|| "us-east-1".to_owned()));
        if let Some(endpoint) = own(store_env::ENDPOINT) {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some(path_style) = own(store_env::PATH_STYLE) {
            builder =
                builder.with_virtual_hosted_style_request(!path_style.eq_ignore_ascii_case("true"));
        }
        if let Some(key) = own(store_env::ACCESS_KEY_ID) {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = own(store_env::SECRET_ACCESS_KEY) {
            builder = builder.with_secret_access_key(secret);
        }
        builder
    } else {
        fallback()
    };
    builder.with_retry(retry()).build()
}

/// Whether `key` is a cache key as `tractor_api::revision::cache_key` makes them (64 lowercase hex), so it can
/// name an object and nothing else.
pub fn valid_cache_key(key: &str) -> bool {
    key.len() == 64
        && key
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Key of the shared optimize cache's entry `key` under `prefix` (no leading or trailing `/`, maybe empty):
/// `prefix/cache/<key>.json`.
pub fn cache_entry(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        format!("cache/{key}.json")
    } else {
        format!("{prefix}/cache/{key}.json")
    }
}

/// The bucket and prefix of an `s3://bucket/prefix` store; `None` for anything else.
pub fn bucket_and_prefix(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix.trim_matches('/')))
}

/// An error and its causes in one line, each cause once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let words = inner.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        cause = inner.source();
    }
    text
}

/// The shared cache's entry `key` in the store `uri` (`s3://bucket/prefix`), read with the store's settings: the
/// recorded report of a successful run that published its artifact; `None` when there is none. `Err` says why it
/// could not be read; a caller treats that as a miss and optimizes.
pub async fn read_cache(uri: &str, key: &str) -> Result<Option<OptimizeReport>, String> {
    if !valid_cache_key(key) {
        return Err(format!(
            "cache key `{key}` is not 64 lowercase hex characters"
        ));
    }
    let (bucket, prefix) =
        bucket_and_prefix(uri).ok_or_else(|| format!("`{uri}` is not s3://bucket/prefix"))?;
    let client = client(bucket, || {
        AmazonS3Builder::from_env().with_bucket_name(bucket)
    })
    .map_err(|error| error_chain(&error))?;
    let entry = cache_entry(prefix, key);
    let at = format!("s3://{bucket}/{entry}");
    let location = object_store::path::Path::from(entry.as_str());
    let found = match client.get(&location).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(format!("reading {at}: {}", error_chain(&error))),
    };
    let bytes = found
        .bytes()
        .await
        .map_err(|error| format!("reading {at}: {}", error_chain(&error)))?;
    let report: OptimizeReport = serde_json::from_slice(&bytes)
        .map_err(|error| format!("{at} is not an optimize report: {error}"))?;
    Ok(Some(report).filter(|report| report.succeeded() && report.artifact_uri.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only what `cache_key` makes names a cache entry: nothing a path could be smuggled through.
    #[test]
    fn cache_keys_are_64_lowercase_hex() {
        assert!(valid_cache_key(&"0a".repeat(32)));
        for bad in [
            "0a".repeat(31),
            "0A".repeat(32),
            format!("../{}", "0".repeat(61)),
            "g".repeat(64),
        ] {
            assert!(!valid_cache_key(&bad), "{bad}");
        }
    }

    #[test]
    fn entries_and_stores_follow_the_layout() {
        let key = "ab".repeat(32);
        assert_eq!(
            cache_entry("team/tractor", &key),
            format!("team/tractor/cache/{key}.json")
        );
        assert_eq!(cache_entry("", &key), format!("cache/{key}.json"));
        assert_eq!(
            bucket_and_prefix("s3://models/team/tractor/"),
            Some(("models", "team/tractor"))
        );
        assert_eq!(bucket_and_prefix("s3://models"), Some(("models", "")));
        assert_eq!(bucket_and_prefix("s3:///x"), None);
        assert_eq!(bucket_and_prefix("https://models"), None);
    }
}
