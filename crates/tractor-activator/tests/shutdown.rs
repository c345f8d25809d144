//! At SIGTERM the activator turns unready and stops accepting, but a request it holds is still forwarded
//! when a pod turns ready; it returns once that request is answered.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{echo_backend, http1, model, post_to, start, wait_for, within};
use tractor_activator::proxy::Ports;
use tractor_activator::targets::Watch;

#[tokio::test]
async fn a_held_request_survives_the_shutdown_and_the_activator_returns_after_it() {
    let backend = echo_backend().await;
    let mut harness = start(
        &[model()],
        Ports {
            http: backend.port(),
            grpc: 1,
        },
        common::defaults(Duration::from_secs(30)),
    )
    .await;
    for watch in [Watch::ModelDeployments, Watch::Services, Watch::Pods] {
        harness.targets.mark_synced(watch);
    }
    let readyz = format!("http://{}/readyz", harness.admin);
    let status =
        |client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>>,
         uri: String| async move {
            client
                .get(uri.parse().expect("uri"))
                .await
                .expect("readyz")
                .status()
        };
    let admin_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    assert_eq!(status(admin_client.clone(), readyz.clone()).await, 200);

    let addr = harness.http;
    let held = tokio::spawn(async move {
        post_to(
            &http1(),
            addr,
            "digits.team-a",
            "/v2/models/digits/infer",
            "held",
        )
        .await
    });
    wait_for("the request to be held", || {
        harness.metrics.held(&model()) == 1
    })
    .await;
    harness.shut_down();
    wait_for("new connections to be refused", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert_eq!(
        status(admin_client, readyz).await,
        503,
        "draining is not ready"
    );
    assert!(!harness.served.is_finished(), "a request is still held");

    harness.targets.set_ready_pods(HashMap::from([(
        model(),
        vec!["127.0.0.1".parse().expect("ip")],
    )]));
    let answer = within("the held answer", held).await.expect("join");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "backend saw /v2/models/digits/infer: held");
    within("the activator to return", &mut harness.served)
        .await
        .expect("join")
        .expect("a clean exit");
}
