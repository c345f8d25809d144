//! Forwarding a buffered request to a model's ready pods: HTTP/1.1 to the REST port, h2c to the gRPC port,
//! round-robin, retried on another (or the same) pod while connections are refused, up to the deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderName, HeaderValue, TE};
use http::{HeaderMap, Request, Response, Version, request};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::hold::{self, Unready};
use crate::reply::{Protocol, grpc_timeout_value};
use crate::targets::Pods;

/// A pod on the cluster network accepts in milliseconds; a pod IP that is gone (deleted, not yet out of the
/// view) black-holes the SYN, and this bounds the time lost to it before the next pod is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait after every ready pod refused: a server's port may open a moment after its pod turned Ready.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
/// Longest wait between rounds of refusals.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Idle connections to pods are kept this long: a woken model's pods serve the next burst too.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Connection-specific headers (RFC 9110 7.6.1), never forwarded; HTTP/2 refuses most of them. `te` is
/// handled apart: `te: trailers` is how a gRPC client says it reads trailers.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// The ports the pods serve on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// REST ([`tractor_api::names::HTTP_PORT`]).
    pub http: u16,
    /// gRPC ([`tractor_api::names::GRPC_PORT`]).
    pub grpc: u16,
}

impl Default for Ports {
    fn default() -> Self {
        let port = |port: i32| u16::try_from(port).unwrap_or_default();
        Self {
            http: port(tractor_api::names::HTTP_PORT),
            grpc: port(tractor_api::names::GRPC_PORT),
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ForwardError {
    /// No pod took the request before the deadline.
    Deadline,
    /// The view of the cluster went away.
    Closed,
    /// A pod failed after the request was sent; it may have acted on it, so it is not retried.
    Upstream(hyper_util::client::legacy::Error),
}

/// A pod's response and when its request was sent.
#[derive(Debug)]
pub struct Forwarded {
    /// Status, headers, body and trailers, streamed as the pod sends them.
    pub response: Response<Incoming>,
    /// When the request that got it was sent.
    pub sent: Instant,
}

/// The two pooled clients and the round-robin cursor.
#[derive(Debug)]
pub struct Proxy {
    http1: Client<HttpConnector, Full<Bytes>>,
    http2: Client<HttpConnector, Full<Bytes>>,
    ports: Ports,
    next: AtomicUsize,
}

impl Proxy {
    /// Clients for pods serving on `ports`.
    pub fn new(ports: Ports) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE);
        let http1 = builder.build(connector.clone());
        builder.http2_only(true).timer(TokioTimer::new());
        let http2 = builder.build(connector);
        Self {
            http1,
            http2,
            ports,
            next: AtomicUsize::new(0),
        }
    }

    /// Sends the request to one of `ready`'s pods, waiting for one while there is none, and trying the next
    /// while they refuse connections, until `deadline`. `client_deadline`, a gRPC client's own, is passed on
    /// as what is left of it.
    pub async fn forward(
        &self,
        protocol: Protocol,
        ready: &mut watch::Receiver<Pods>,
        parts: &request::Parts,
        body: Bytes,
        deadline: Instant,
        client_deadline: Option<Instant>,
    ) -> Result<Forwarded, ForwardError> {
        let (client, port) = match protocol {
            Protocol::Http => (&self.http1, self.ports.http),
            Protocol::Grpc => (&self.http2, self.ports.grpc),
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            hold::wait_ready(ready, deadline)
                .await
                .map_err(|unready| match unready {
                    Unready::Deadline => ForwardError::Deadline,
                    Unready::Closed => ForwardError::Closed,
                })?;
            let pods = ready.borrow_and_update().clone();
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            for offset in 0..pods.len() {
                let pod = SocketAddr::new(pods[(first + offset) % pods.len()], port);
                let request = outgoing(protocol, parts, body.clone(), pod, client_deadline);
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => return Ok(Forwarded { response, sent }),
                    Err(error) if error.is_connect() => {
                        debug!(%pod, error = %error, "the pod refused the connection; trying the next");
                    }
                    Err(error) => return Err(ForwardError::Upstream(error)),
                }
                if Instant::now() >= deadline {
                    return Err(ForwardError::Deadline);
                }
            }
            // Every ready pod refused: wait for the set to change or for a short, growing backoff.
            let retry = tokio::time::sleep_until(deadline.min(Instant::now() + backoff));
            tokio::select! {
                _ = ready.changed() => {}
                () = retry => {}
            }
            if Instant::now() >= deadline {
                return Err(ForwardError::Deadline);
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The request as sent to `pod`: same method, path, query, headers (less hop-by-hop ones) and body. REST goes as
/// HTTP/1.1 with the client's host; gRPC as HTTP/2, whose `:authority` is the pod, with what is left of the
/// client's deadline.
fn outgoing(
    protocol: Protocol,
    parts: &request::Parts,
    body: Bytes,
    pod: SocketAddr,
    client_deadline: Option<Instant>,
) -> Request<Full<Bytes>> {
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    // A `SocketAddr` and an origin-form path always make a valid URI; the fallback is never taken.
    *request.uri_mut() = format!("http://{pod}{path}").parse().unwrap_or_default();
    let mut headers = forward_headers(&parts.headers);
    match protocol {
        Protocol::Http => {
            *request.version_mut() = Version::HTTP_11;
            // An HTTP/2 request on the HTTP listener has no Host: its `:authority` plays that part.
            if !headers.contains_key(HOST)
                && let Some(authority) = parts.uri.authority()
                && let Ok(host) = HeaderValue::from_str(authority.as_str())
            {
                headers.insert(HOST, host);
            }
        }
        Protocol::Grpc => {
            *request.version_mut() = Version::HTTP_2;
            headers.remove(HOST);
            if let Some(client_deadline) = client_deadline {
                let left = client_deadline.saturating_duration_since(Instant::now());
                headers.insert("grpc-timeout", grpc_timeout_value(left));
            }
        }
    }
    *request.headers_mut() = headers;
    request
}

/// `headers` without the connection-specific ones: the fixed list, those the `Connection` header names, and
/// `te` unless it is `trailers`.
pub fn forward_headers(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let hop_by_hop = HOP_BY_HOP.contains(&name.as_str()) || named.contains(name);
        let te_other_than_trailers =
            name == TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers");
        if !hop_by_hop && !te_other_than_trailers {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A pod's response with connection-specific headers dropped (an HTTP/1.1 pod's `transfer-encoding` would
/// break an HTTP/2 client), everything else (status, headers, body, trailers) as it comes.
pub fn backward(response: Response<Incoming>) -> Response<Incoming> {
    let (mut parts, body) = response.into_parts();
    parts.headers = forward_headers(&parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_and_te_trailers_goes_on() {
        let cases = [
            (
                headers(&[
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("grpc-timeout", "5S"),
                ]),
                headers(&[
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("grpc-timeout", "5S"),
                ]),
            ),
            (
                headers(&[
                    ("connection", "keep-alive, x-private"),
                    ("keep-alive", "timeout=5"),
                    ("x-private", "1"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                    ("te", "gzip"),
                    ("host", "m.ns"),
                    ("authorization", "Bearer t"),
                    ("x-keep", "a"),
                    ("x-keep", "b"),
                ]),
                headers(&[
                    ("host", "m.ns"),
                    ("authorization", "Bearer t"),
                    ("x-keep", "a"),
                    ("x-keep", "b"),
                ]),
            ),
        ];
        for (given, want) in cases {
            assert_eq!(forward_headers(&given), want, "{given:?}");
        }
    }

    fn parts(uri: &str, pairs: &[(&'static str, &'static str)]) -> request::Parts {
        let mut request = Request::post(uri).body(()).expect("request");
        *request.headers_mut() = headers(pairs);
        request.into_parts().0
    }

    #[tokio::test(start_paused = true)]
    async fn rest_goes_as_http1_with_the_clients_host_and_grpc_as_h2_with_the_time_left() {
        let pod: SocketAddr = "10.0.0.7:8080".parse().expect("addr");
        let rest = outgoing(
            Protocol::Http,
            &parts(
                "/v2/models/m/infer?x=1",
                &[("host", "m.ns:8080"), ("connection", "close")],
            ),
            Bytes::from_static(b"{}"),
            pod,
            None,
        );
        assert_eq!(rest.uri(), "http://10.0.0.7:8080/v2/models/m/infer?x=1");
        assert_eq!(rest.version(), Version::HTTP_11);
        assert_eq!(rest.method(), "POST");
        assert_eq!(rest.headers(), &headers(&[("host", "m.ns:8080")]));

        let h2_on_rest = outgoing(
            Protocol::Http,
            &parts("http://m.ns:8080/v2/health/ready", &[]),
            Bytes::new(),
            pod,
            None,
        );
        assert_eq!(h2_on_rest.headers()[HOST], "m.ns:8080");

        let grpc = outgoing(
            Protocol::Grpc,
            &parts(
                "http://m.ns:8081/inference.GRPCInferenceService/ModelInfer",
                &[
                    ("te", "trailers"),
                    ("grpc-timeout", "10S"),
                    ("host", "m.ns"),
                ],
            ),
            Bytes::new(),
            "10.0.0.7:8081".parse().expect("addr"),
            Some(Instant::now() + Duration::from_millis(2500)),
        );
        assert_eq!(
            grpc.uri(),
            "http://10.0.0.7:8081/inference.GRPCInferenceService/ModelInfer"
        );
        assert_eq!(grpc.version(), Version::HTTP_2);
        assert_eq!(
            grpc.headers(),
            &headers(&[("te", "trailers"), ("grpc-timeout", "2500m")])
        );
    }

    #[test]
    fn default_ports_are_the_servers() {
        assert_eq!(
            Ports::default(),
            Ports {
                http: 8080,
                grpc: 8081
            }
        );
    }
}
