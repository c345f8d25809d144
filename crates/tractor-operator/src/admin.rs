//! The admin port: `/live`, `/ready` (true after the CRD check and the first watch sync, or while a replica
//! stands by for the leader lease) and `/metrics`.

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
    /// Set while this replica has passed the CRD check and waits for the leader lease. A standby is healthy:
    /// were it not Ready, a Deployment of two replicas would never be Available (and `helm install --wait`,
    /// Argo CD and Flux would wait forever), as controller-runtime's followers are Ready too.
    pub standby: Arc<AtomicBool>,
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

/// The `/ready` body of a replica that waits for the leader lease.
pub const STANDBY: &str = "ok: standby, another replica holds the leader lease";

async fn ready(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else if admin.standby.load(Ordering::Acquire) {
        (StatusCode::OK, STANDBY)
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
            standby: Arc::default(),
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
        let body = |response: axum::response::Response| async move {
            let bytes = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            String::from_utf8_lossy(&bytes).into_owned()
        };
        // A standby is Ready, and says it stands by.
        admin.standby.store(true, Ordering::Release);
        let response = app.clone().oneshot(get("/ready")).await.expect("ready");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, STANDBY);
        // The leader, once synced.
        admin.standby.store(false, Ordering::Release);
        admin.ready.store(true, Ordering::Release);
        let response = app.clone().oneshot(get("/ready")).await.expect("ready");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, "ok");
        let metrics = app.oneshot(get("/metrics")).await.expect("metrics");
        assert_eq!(metrics.status(), StatusCode::OK);
    }
}
