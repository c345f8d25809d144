//! The activator's real listeners on loopback ports, over a view of the cluster the test fills by hand and a
//! wake signal it reads; a REST backend that echoes; clients; and waiting on conditions.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};
use tractor_activator::handle::Defaults;
use tractor_activator::hold::WakeSignal;
use tractor_activator::metrics::Metrics;
use tractor_activator::proxy::Ports;
use tractor_activator::route::{ModelKey, ServiceIndex};
use tractor_activator::targets::Targets;
use tractor_activator::{Activator, Listeners};

/// Longest any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(10);

/// The model the tests hold requests for.
pub fn model() -> ModelKey {
    ModelKey::new("team-a", "digits")
}

/// Records wake signals.
struct Recorder(mpsc::UnboundedSender<ModelKey>);

impl WakeSignal for Recorder {
    fn wake(&self, model: &ModelKey) {
        let _ = self.0.send(model.clone());
    }
}

/// A running activator.
pub struct Harness {
    /// The view the test fills.
    pub targets: Arc<Targets>,
    /// Every wake signal, in order.
    pub wakes: mpsc::UnboundedReceiver<ModelKey>,
    /// The activator's metrics.
    pub metrics: Metrics,
    /// The REST listener.
    pub http: SocketAddr,
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// The serving task: it returns once shut down and drained.
    pub served: tokio::task::JoinHandle<Result<(), tractor_activator::Error>>,
}

impl Harness {
    /// Starts the shutdown, as SIGTERM does.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Defaults as the flags give them, with `hold_timeout`.
pub fn defaults(hold_timeout: Duration) -> Defaults {
    Defaults {
        max_held: 100,
        hold_timeout,
        max_body_bytes: 1024,
    }
}

/// An activator whose Services are `models` (each with a made-up cluster IP) and whose pods serve on `ports`.
pub async fn start(models: &[ModelKey], ports: Ports, defaults: Defaults) -> Harness {
    let targets = Arc::new(Targets::new());
    let mut index = ServiceIndex::default();
    for (number, model) in models.iter().enumerate() {
        let ip = format!("10.96.0.{}", number + 10).parse().expect("ip");
        index.insert(model.clone(), [ip]);
    }
    targets.set_services(index);
    let (sender, wakes) = mpsc::unbounded_channel();
    let activator = Activator::new(
        Arc::clone(&targets),
        Arc::new(Recorder(sender)),
        defaults,
        ports,
    )
    .expect("activator");
    let metrics = activator.metrics().clone();
    let bind = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    };
    let listeners = Listeners {
        http: bind().await,
        grpc: bind().await,
        admin: bind().await,
    };
    let addr = |listener: &tokio::net::TcpListener| listener.local_addr().expect("addr");
    let (http, grpc, admin) = (
        addr(&listeners.http),
        addr(&listeners.grpc),
        addr(&listeners.admin),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(activator.serve(listeners, async {
        let _ = stopped.await;
    }));
    Harness {
        targets,
        wakes,
        metrics,
        http,
        grpc,
        admin,
        stop: Some(stop),
        served,
    }
}

/// A REST backend on a loopback port that answers every POST with `backend saw <path>: <body>`.
pub async fn echo_backend() -> SocketAddr {
    let app = axum::Router::new().route(
        "/{*path}",
        post(|uri: http::Uri, body: Bytes| async move {
            format!(
                "backend saw {}: {}",
                uri.path(),
                String::from_utf8_lossy(&body)
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An HTTP/1.1 client.
pub fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `request` over h2c (HTTP/2 prior knowledge) to `addr`; its URI's authority goes as `:authority`, as
/// a client of the Service would send it.
pub async fn raw_h2c(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    tokio::spawn(connection);
    sender.send_request(request).await.expect("response")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// POSTs `body` to `path` at `addr` with `Host: host`, and reads the answer.
pub async fn post_to(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
    body: &str,
) -> Answer {
    let request = Request::post(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = client.request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Waits for `check` to hold, polling, and fails the test with `what` after [`STEP`].
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let polled = async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(STEP, polled)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// `future`, failing the test with `what` after [`STEP`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
