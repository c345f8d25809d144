//! The model revision this process serves, named on every REST and gRPC response so a client behind a Service
//! can tell which revision's pod answered (stable or canary).

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderName, HeaderValue, Response};
use tower::util::MapResponseLayer;
use tractor_api::names::HEADER_REVISION;

/// Longest Kubernetes label value: the revision comes from the pod's `serving.tractor.dev/revision` label.
const MAX_LEN: usize = 63;

/// A revision, checked once at start-up: Kubernetes label-value syntax (alphanumerics, `-`, `_`, `.`; starting
/// and ending alphanumeric; at most 63 characters). That makes it a valid header value, gRPC metadata value and
/// Prometheus label value, so naming it never fails later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    text: String,
    header: HeaderValue,
}

impl Revision {
    /// The revision as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The revision as a header value.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Revision {
    type Err = String;

    fn from_str(s: &str) -> Result<Revision, String> {
        let inner_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        let ends_ok = s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric());
        if s.len() > MAX_LEN || !ends_ok || !s.chars().all(inner_ok) {
            return Err(format!(
                "revision '{s}' is not a Kubernetes label value: 1 to {MAX_LEN} characters out of \
                 [A-Za-z0-9-_.], starting and ending with a letter or digit"
            ));
        }
        let header = HeaderValue::from_str(s).map_err(|e| format!("revision '{s}': {e}"))?;
        Ok(Revision {
            text: s.to_owned(),
            header,
        })
    }
}

/// A layer that puts [`HEADER_REVISION`] on every response of the service it wraps, errors and fallbacks
/// included; `None` leaves responses as they are. Used on the REST router and on the gRPC server, where
/// response headers are the call's response metadata (for an error too: a trailers-only response carries its
/// status in the headers). `B` is the wrapped service's response body.
pub fn layer<B>(
    revision: Option<&Revision>,
) -> MapResponseLayer<impl Fn(Response<B>) -> Response<B> + Clone + Send + Sync + 'static> {
    let name = HeaderName::from_static(HEADER_REVISION);
    let value = revision.map(|r| r.header().clone());
    MapResponseLayer::new(move |mut response: Response<B>| {
        if let Some(value) = &value {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_label_values() {
        for ok in [
            "3f9a1c0b7e",
            "v2",
            "a",
            "canary-1.2_b",
            &"a".repeat(MAX_LEN),
        ] {
            let r: Revision = ok.parse().expect(ok);
            assert_eq!(r.as_str(), ok);
            assert_eq!(r.header().to_str().ok(), Some(ok));
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a b",
            "a\nb",
            "é",
            "a/b",
            &"a".repeat(MAX_LEN + 1),
        ] {
            assert!(bad.parse::<Revision>().is_err(), "{bad:?} accepted");
        }
    }
}
