//! REST requests for a model with no ready pod are held up to its `maxHeldRequests`, the rest refused at once
//! with 503 and `Retry-After`; demand is signalled at once; once a pod is ready every held request gets its
//! answer.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{Answer, echo_backend, http1, model, post_to, raw_h2c, start, wait_for, within};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::BodyExt;
use tractor_activator::proxy::Ports;
use tractor_activator::route::ModelKey;
use tractor_activator::targets::HoldSettings;

const PATH: &str = "/v2/models/digits/infer";

#[tokio::test]
async fn held_requests_are_forwarded_once_a_pod_is_ready_and_the_overflow_is_refused_first() {
    let backend = echo_backend().await;
    let ports = Ports {
        http: backend.port(),
        grpc: 1,
    };
    let mut harness = start(&[model()], ports, common::defaults(Duration::from_secs(30))).await;
    harness.targets.set_hold_settings(HashMap::from([(
        model(),
        HoldSettings {
            max_held: Some(3),
            hold_timeout: None,
        },
    )]));
    let client = http1();
    let mut answers: FuturesUnordered<_> = (0..5)
        .map(|number| {
            let client = client.clone();
            let addr = harness.http;
            async move {
                let body = format!("request {number}");
                (
                    number,
                    post_to(&client, addr, "digits.team-a", PATH, &body).await,
                )
            }
        })
        .collect();

    // Two over the limit of three are answered while the three wait: 503, Retry-After, JSON.
    let mut refused = BTreeSet::new();
    for _ in 0..2 {
        let (number, answer) = within("the overflow answers", answers.next())
            .await
            .expect("an answer");
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.headers["retry-after"], "1");
        assert_eq!(answer.headers["content-type"], "application/json");
        let error = answer.json()["error"]
            .as_str()
            .expect("error text")
            .to_owned();
        assert!(error.contains("team-a/digits"), "{error}");
        refused.insert(number);
    }
    assert_eq!(harness.metrics.held(&model()), 3);
    assert_eq!(harness.metrics.requests(Some(&model()), "overflow"), 2);

    // Demand went out at once, naming the model.
    let woken = within("the wake signal", harness.wakes.recv()).await;
    assert_eq!(woken, Some(model()));

    // A pod turns ready: each held request gets the backend's answer to its own body.
    harness.targets.set_ready_pods(HashMap::from([(
        model(),
        vec!["127.0.0.1".parse().expect("ip")],
    )]));
    let mut forwarded = BTreeSet::new();
    while let Some((number, answer)) = within("the held answers", answers.next()).await {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, format!("backend saw {PATH}: request {number}"));
        forwarded.insert(number);
    }
    assert_eq!(forwarded.len(), 3);
    assert!(forwarded.is_disjoint(&refused));
    assert_eq!(harness.metrics.held(&model()), 0);
    assert_eq!(harness.metrics.requests(Some(&model()), "forwarded"), 3);
    let metrics = harness.metrics.render().expect("render");
    assert!(
        metrics.contains("tractor_activator_hold_seconds_count 3"),
        "{metrics}"
    );
    harness.shut_down();
}

#[tokio::test]
async fn a_model_with_a_ready_pod_is_forwarded_at_once_over_http1_and_h2c_without_a_wake() {
    let backend = echo_backend().await;
    let ports = Ports {
        http: backend.port(),
        grpc: 1,
    };
    let mut harness = start(&[model()], ports, common::defaults(Duration::from_secs(30))).await;
    harness.targets.set_ready_pods(HashMap::from([(
        model(),
        vec!["127.0.0.1".parse().expect("ip")],
    )]));
    // By cluster IP, by bare name and by full DNS name; over HTTP/1.1 and h2c on the same port.
    for host in ["10.96.0.10:8080", "digits"] {
        let answer: Answer = post_to(&http1(), harness.http, host, PATH, "now").await;
        assert_eq!(answer.status, 200, "{host}: {answer:?}");
        assert_eq!(answer.body, format!("backend saw {PATH}: now"));
    }
    let request = http::Request::post(format!("http://digits.team-a.svc.cluster.local:8080{PATH}"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"over h2c",
        )))
        .expect("request");
    let response = within("the h2c answer", raw_h2c(harness.http, request)).await;
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, format!("backend saw {PATH}: over h2c"));
    assert!(
        harness.wakes.try_recv().is_err(),
        "no wake for a model that is up"
    );
    assert_eq!(harness.metrics.requests(Some(&model()), "forwarded"), 3);
    harness.shut_down();
}

#[tokio::test]
async fn hosts_that_name_no_model_or_several_are_refused_with_json() {
    let other = ModelKey::new("team-b", "digits");
    let mut harness = start(
        &[model(), other],
        Ports { http: 1, grpc: 1 },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    let client = http1();
    let unknown = post_to(&client, harness.http, "nope.team-a", PATH, "").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.headers["content-type"], "application/json");
    assert!(
        unknown.json()["error"]
            .as_str()
            .expect("error")
            .contains("nope.team-a")
    );
    let ambiguous = post_to(&client, harness.http, "digits", PATH, "").await;
    assert_eq!(ambiguous.status, 400);
    assert!(
        ambiguous.json()["error"]
            .as_str()
            .expect("error")
            .contains("say <name>.<namespace>"),
        "{ambiguous:?}"
    );
    assert_eq!(harness.metrics.requests(None, "unknown_model"), 2);
    assert!(harness.wakes.try_recv().is_err());
    harness.shut_down();
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_anything_is_held() {
    let mut harness = start(
        &[model()],
        Ports { http: 1, grpc: 1 },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    let large = "x".repeat(2048);
    let answer = post_to(&http1(), harness.http, "digits.team-a", PATH, &large).await;
    assert_eq!(answer.status, 413);
    assert!(
        answer.json()["error"]
            .as_str()
            .expect("error")
            .contains("1024 bytes")
    );
    assert!(harness.wakes.try_recv().is_err());
    wait_for("no request held", || harness.metrics.held(&model()) == 0).await;
    harness.shut_down();
}
