//! gRPC through the activator: forwarded over h2c with `te: trailers`, the body and the trailers (where gRPC
//! keeps its status) intact; held until a pod is ready (and retried while its port still refuses); refused
//! with trailers-only statuses a tonic client reads; a client's shorter `grpc-timeout` wins.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{model, raw_h2c, start, within};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tractor_activator::proxy::Ports;

/// One empty gRPC message: not compressed, length zero.
const EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// A gRPC backend on `listener` (h2c): `/test.Echo/Ok` answers the request's body back with trailers
/// `grpc-status: 0` and `x-trailer: kept`; anything else `grpc-status: 5` in trailers after a header-only start.
/// Every request's headers go to `seen`.
fn serve_backend(listener: tokio::net::TcpListener, seen: mpsc::UnboundedSender<HeaderMap>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let _ = seen.send(request.headers().clone());
                    let ok = request.uri().path() == "/test.Echo/Ok";
                    let body = request.into_body().collect().await?.to_bytes();
                    let mut trailers = HeaderMap::new();
                    let mut frames = Vec::new();
                    if ok {
                        frames.push(Ok::<_, Infallible>(Frame::data(body)));
                        trailers.insert("grpc-status", "0".parse().expect("value"));
                        trailers.insert("x-trailer", "kept".parse().expect("value"));
                    } else {
                        trailers.insert("grpc-status", "5".parse().expect("value"));
                        trailers.insert("grpc-message", "nothing here".parse().expect("value"));
                    }
                    frames.push(Ok(Frame::trailers(trailers)));
                    let response = Response::builder()
                        .header("content-type", "application/grpc")
                        .header("x-backend", "yes")
                        .body(StreamBody::new(futures::stream::iter(frames)))
                        .expect("response");
                    Ok::<_, hyper::Error>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
}

/// A tonic client of the activator's gRPC port that names `authority`, as a client of the Service would.
async fn client(activator: SocketAddr, authority: &str) -> Grpc<Channel> {
    let channel = Endpoint::from_shared(format!("http://{activator}"))
        .expect("endpoint")
        .origin(format!("http://{authority}").parse().expect("origin"))
        .connect()
        .await
        .expect("connect");
    Grpc::new(channel)
}

/// Calls `path` with an empty message.
async fn call(
    grpc: &mut Grpc<Channel>,
    path: &'static str,
) -> Result<tonic::Response<()>, tonic::Status> {
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(()),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
}

#[tokio::test]
async fn grpc_is_forwarded_with_its_body_and_trailers_intact() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ports = Ports {
        http: 1,
        grpc: backend.local_addr().expect("addr").port(),
    };
    let (seen, mut backend_saw) = mpsc::unbounded_channel();
    serve_backend(backend, seen);
    let mut harness = start(&[model()], ports, common::defaults(Duration::from_secs(30))).await;
    harness.targets.set_ready_pods(HashMap::from([(
        model(),
        vec!["127.0.0.1".parse().expect("ip")],
    )]));

    // Raw: every frame as the backend sent it.
    let message = Bytes::from_static(&[0, 0, 0, 0, 3, 1, 2, 3]);
    let request = Request::post("http://digits.team-a.svc:8081/test.Echo/Ok")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "20S")
        .body(Full::new(message.clone()))
        .expect("request");
    let response = within("the forwarded call", raw_h2c(harness.grpc, request)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-backend"], "yes");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer"], "kept");
    assert_eq!(collected.to_bytes(), message);
    let headers = within("the backend's view", backend_saw.recv())
        .await
        .expect("headers");
    assert_eq!(headers["te"], "trailers");
    let timeout = headers["grpc-timeout"].to_str().expect("ascii");
    let millis: u64 = timeout.trim_end_matches('m').parse().expect("milliseconds");
    assert!(
        timeout.ends_with('m') && millis <= 20_000 && millis > 10_000,
        "{timeout}"
    );

    // tonic: an OK status read from trailers, and the backend's error status and message.
    let mut grpc = client(harness.grpc, "digits.team-a.svc:8081").await;
    let ok = call(&mut grpc, "/test.Echo/Ok").await.expect("ok");
    assert_eq!(
        ok.metadata()
            .get("x-trailer")
            .map(|value| value.to_str().expect("ascii")),
        Some("kept")
    );
    let failed = call(&mut grpc, "/test.Echo/Fail").await.expect_err("fails");
    assert_eq!(failed.code(), Code::NotFound);
    assert_eq!(failed.message(), "nothing here");
    assert_eq!(harness.metrics.requests(Some(&model()), "forwarded"), 3);
    assert!(
        harness.wakes.try_recv().is_err(),
        "no wake for a model that is up"
    );
    harness.shut_down();
}

#[tokio::test]
async fn a_held_call_is_forwarded_once_the_pod_is_ready_even_if_its_port_opens_later() {
    // A port nothing listens on yet: the pod is Ready a moment before its server accepts.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let mut harness = start(
        &[model()],
        Ports {
            http: 1,
            grpc: port,
        },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    let mut grpc = client(harness.grpc, "digits.team-a").await;
    let held = tokio::spawn(async move { call(&mut grpc, "/test.Echo/Ok").await });
    assert_eq!(
        within("the wake signal", harness.wakes.recv()).await,
        Some(model())
    );
    assert_eq!(harness.metrics.held(&model()), 1);
    harness.targets.set_ready_pods(HashMap::from([(
        model(),
        vec!["127.0.0.1".parse().expect("ip")],
    )]));
    common::wait_for("the held call to leave the queue", || {
        harness.metrics.held(&model()) == 0
    })
    .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let (seen, _backend_saw) = mpsc::unbounded_channel();
    serve_backend(listener, seen);
    let ok = within("the held call", held)
        .await
        .expect("join")
        .expect("ok");
    assert_eq!(
        ok.metadata()
            .get("x-trailer")
            .map(|value| value.to_str().expect("ascii")),
        Some("kept")
    );
    assert_eq!(harness.metrics.requests(Some(&model()), "forwarded"), 1);
    harness.shut_down();
}

#[tokio::test]
async fn the_clients_shorter_deadline_wins_and_refusals_are_grpc_statuses() {
    let mut harness = start(
        &[model()],
        Ports { http: 1, grpc: 1 },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    // Raw h2c, so no client-side timer races the activator's answer.
    let request = Request::post("http://digits.team-a:8081/test.Echo/Ok")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(Full::new(Bytes::from_static(&EMPTY_MESSAGE)))
        .expect("request");
    let started = Instant::now();
    let response = within("the deadline answer", raw_h2c(harness.grpc, request)).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    assert_eq!(
        response.headers()["grpc-message"],
        "model team-a/digits had no ready pod within 300ms"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(harness.metrics.requests(Some(&model()), "timeout"), 1);

    let mut unknown = client(harness.grpc, "nope.team-a").await;
    let status = call(&mut unknown, "/test.Echo/Ok")
        .await
        .expect_err("no such model");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("nope.team-a"), "{status:?}");
    harness.shut_down();
}
