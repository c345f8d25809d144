//! The admin port: `/live`, `/ready` (true only after the CRD check and the first watch sync) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};

use crate::metrics::Metrics;

/// Shared admin state.
#[derive(Clone)]
pub struct Admin {
    /// Set once the CRD is known installed and the first list of ModelDeployments is in the store.
    pub ready: Arc<AtomicBool>,
    /// Metrics to render.
    pub metrics: Metrics,
}

/// The admin router.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn ready(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the CRD check and the first watch sync",
        )
    }
}

async fn metrics(State(admin): State<Admin>) -> (StatusCode, String) {
    let mut buf = vec![];
    match TextEncoder::new().encode(&admin.metrics.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn ready_tells_the_truth() {
        let admin = Admin {
            ready: Arc::default(),
            metrics: Metrics::new().expect("metrics"),
        };
        let app = router(admin.clone());
        let get = |p: &str| Request::get(p).body(Body::empty()).expect("request");
        assert_eq!(
            app.clone()
                .oneshot(get("/live"))
                .await
                .expect("live")
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            app.clone()
                .oneshot(get("/ready"))
                .await
                .expect("ready")
                .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        admin.ready.store(true, Ordering::Release);
        assert_eq!(
            app.clone()
                .oneshot(get("/ready"))
                .await
                .expect("ready")
                .status(),
            StatusCode::OK
        );
        let metrics = app.oneshot(get("/metrics")).await.expect("metrics");
        assert_eq!(metrics.status(), StatusCode::OK);
    }
}
