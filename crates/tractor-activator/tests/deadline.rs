//! A held request that sees no ready pod by its deadline is answered 504 with JSON, on time; a client that
//! goes away frees its place in the queue.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{http1, model, post_to, start, wait_for};
use tokio::io::AsyncWriteExt;
use tractor_activator::proxy::Ports;
use tractor_activator::targets::HoldSettings;

/// What a deadline may overrun by on a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_held_request_is_answered_504_with_json_at_its_models_hold_timeout() {
    let hold_timeout = Duration::from_millis(300);
    let mut harness = start(
        &[model()],
        Ports { http: 1, grpc: 1 },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    harness.targets.set_hold_settings(HashMap::from([(
        model(),
        HoldSettings {
            max_held: None,
            hold_timeout: Some(hold_timeout),
        },
    )]));
    let started = Instant::now();
    let answer = post_to(
        &http1(),
        harness.http,
        "digits.team-a",
        "/v2/models/digits/infer",
        "{}",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 504, "{answer:?}");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "model team-a/digits had no ready pod within 300ms"})
    );
    assert!(
        took >= hold_timeout,
        "answered after {took:?}, before the deadline"
    );
    assert!(took < hold_timeout + SLACK, "answered after {took:?}");
    assert_eq!(harness.metrics.requests(Some(&model()), "timeout"), 1);
    assert_eq!(harness.metrics.held(&model()), 0);
    assert_eq!(
        harness.wakes.recv().await,
        Some(model()),
        "it was signalled while held"
    );
    harness.shut_down();
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_place_in_the_queue() {
    let mut harness = start(
        &[model()],
        Ports { http: 1, grpc: 1 },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    harness.targets.set_hold_settings(HashMap::from([(
        model(),
        HoldSettings {
            max_held: Some(1),
            hold_timeout: None,
        },
    )]));
    // A raw connection, so the test decides exactly when the client goes.
    let mut client = tokio::net::TcpStream::connect(harness.http)
        .await
        .expect("connect");
    client
        .write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: digits.team-a\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    wait_for("the request to be held", || {
        harness.metrics.held(&model()) == 1
    })
    .await;
    let full = post_to(
        &http1(),
        harness.http,
        "digits.team-a",
        "/v2/models/digits/infer",
        "{}",
    )
    .await;
    assert_eq!(full.status, 503, "the one place is taken: {full:?}");
    drop(client);
    wait_for("the place to be freed", || {
        harness.metrics.held(&model()) == 0
    })
    .await;
    // Room again: the next request is held, not refused.
    let next = tokio::spawn({
        let addr = harness.http;
        async move {
            post_to(
                &http1(),
                addr,
                "digits.team-a",
                "/v2/models/digits/infer",
                "{}",
            )
            .await
        }
    });
    wait_for("the next request to be held", || {
        harness.metrics.held(&model()) == 1
    })
    .await;
    next.abort();
    harness.shut_down();
}
