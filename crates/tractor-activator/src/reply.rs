//! The activator's own answers: every way a request can fail here, as a JSON error on the HTTP listener or a
//! trailers-only gRPC status on the gRPC one, and the `grpc-timeout` header that shortens a gRPC hold.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tractor_api::metrics::{
    OUTCOME_ERROR, OUTCOME_OVERFLOW, OUTCOME_TIMEOUT, OUTCOME_UNKNOWN_MODEL,
};

/// A response body: a pod's, streamed with its trailers, or the activator's own.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Which listener a request came in on, and so how it is forwarded and how errors are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// REST: forwarded over HTTP/1.1 to the pod's HTTP port; errors as JSON.
    Http,
    /// gRPC: forwarded over h2c to the pod's gRPC port; errors as `grpc-status`.
    Grpc,
}

/// gRPC status codes the activator answers with.
pub mod grpc_code {
    /// `INVALID_ARGUMENT`.
    pub const INVALID_ARGUMENT: u8 = 3;
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: u8 = 4;
    /// `NOT_FOUND`.
    pub const NOT_FOUND: u8 = 5;
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    /// `INTERNAL`.
    pub const INTERNAL: u8 = 13;
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: u8 = 14;
}

/// Why the activator answers a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No host, or a bare name several namespaces have.
    BadHost,
    /// The host names no tractor model.
    UnknownModel,
    /// The model's hold queue is full.
    Overflow,
    /// No pod was ready within the deadline.
    Timeout,
    /// The request body is larger than `--max-body-bytes`.
    TooLarge,
    /// The request body could not be read (the client went away mid-body).
    BadBody,
    /// The pod failed after it was sent the request, which may have been acted on: not retried.
    Upstream,
}

impl Failure {
    /// The HTTP status, the gRPC code and the metric outcome.
    pub fn codes(self) -> (StatusCode, u8, &'static str) {
        use grpc_code::*;
        match self {
            Self::BadHost => (
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                OUTCOME_UNKNOWN_MODEL,
            ),
            Self::UnknownModel => (StatusCode::NOT_FOUND, NOT_FOUND, OUTCOME_UNKNOWN_MODEL),
            Self::Overflow => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                OUTCOME_OVERFLOW,
            ),
            Self::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                DEADLINE_EXCEEDED,
                OUTCOME_TIMEOUT,
            ),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                RESOURCE_EXHAUSTED,
                OUTCOME_ERROR,
            ),
            Self::BadBody => (StatusCode::BAD_REQUEST, INTERNAL, OUTCOME_ERROR),
            Self::Upstream => (StatusCode::BAD_GATEWAY, UNAVAILABLE, OUTCOME_ERROR),
        }
    }
}

/// The activator's answer for `failure`: on HTTP, its status with `{"error": message}` (and `Retry-After: 1`
/// on overflow, which clients and proxies read as "soon"); on gRPC, a trailers-only response.
pub fn failure(protocol: Protocol, failure: Failure, message: &str) -> Response<Body> {
    let (status, code, _) = failure.codes();
    let mut response = match protocol {
        Protocol::Http => {
            let body = serde_json::json!({ "error": message }).to_string();
            let mut response = Response::new(full(body.into()));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Protocol::Grpc => grpc_status(code, message),
    };
    if failure == Failure::Overflow {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A trailers-only gRPC response: HTTP 200, the status in the headers and no body, which HTTP/2 sends as one
/// HEADERS frame with END_STREAM, as every gRPC client reads it.
fn grpc_status(code: u8, message: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX` (gRPC's HTTP/2 spec).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A body of the activator's own.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// The deadline a gRPC client sent (`grpc-timeout: 1-8 digits` and a unit, `H M S m u n`), if valid.
pub fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `grpc-timeout` for what is left of a client's deadline once the request has been held: in
/// milliseconds, rounded up, so the pod never sees more time than the client gave nor a zero.
pub fn grpc_timeout_value(left: Duration) -> HeaderValue {
    let millis = left.as_nanos().div_ceil(1_000_000).clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{millis}m")).unwrap_or_else(|_| HeaderValue::from_static("1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_status_code_and_outcome() {
        use grpc_code::*;
        let cases = [
            (Failure::BadHost, 400, INVALID_ARGUMENT, "unknown_model"),
            (Failure::UnknownModel, 404, NOT_FOUND, "unknown_model"),
            (Failure::Overflow, 503, UNAVAILABLE, "overflow"),
            (Failure::Timeout, 504, DEADLINE_EXCEEDED, "timeout"),
            (Failure::TooLarge, 413, RESOURCE_EXHAUSTED, "error"),
            (Failure::BadBody, 400, INTERNAL, "error"),
            (Failure::Upstream, 502, UNAVAILABLE, "error"),
        ];
        for (failure, status, code, outcome) in cases {
            let (got_status, got_code, got_outcome) = failure.codes();
            assert_eq!(
                (got_status.as_u16(), got_code, got_outcome),
                (status, code, outcome),
                "{failure:?}"
            );
        }
    }

    #[tokio::test]
    async fn http_failures_are_json_and_overflow_says_when_to_retry() {
        let response = failure(Protocol::Http, Failure::Overflow, "full \"queue\"");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json, serde_json::json!({"error": "full \"queue\""}));
        let timeout = failure(Protocol::Http, Failure::Timeout, "late");
        assert_eq!(timeout.status(), 504);
        assert!(timeout.headers().get(RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn grpc_failures_are_trailers_only() {
        let response = failure(
            Protocol::Grpc,
            Failure::Timeout,
            "model ns/m had no ready pod within 1s: 100%",
        );
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(response.headers()["grpc-status"], "4");
        assert_eq!(
            response.headers()["grpc-message"],
            "model ns/m had no ready pod within 1s: 100%25"
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(body.is_empty());
    }

    #[test]
    fn messages_are_percent_encoded_outside_printable_ascii() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_the_rest() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("5s", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                grpc_timeout(&HeaderValue::from_static(text)),
                want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_shortened_grpc_timeout_rounds_up_to_milliseconds() {
        let cases = [
            (Duration::from_millis(1500), "1500m"),
            (Duration::from_micros(1), "1m"),
            (Duration::ZERO, "1m"),
            (Duration::from_secs(1_000_000), "99999999m"),
        ];
        for (left, want) in cases {
            assert_eq!(grpc_timeout_value(left), want, "{left:?}");
        }
    }
}
