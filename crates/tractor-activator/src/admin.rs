//! The admin port: `/healthz` (the process answers), `/readyz` (every watch has synced and no shutdown has
//! begun) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::targets::Targets;

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Synced or not.
    pub targets: Arc<Targets>,
    /// Rendered at `/metrics`.
    pub metrics: Metrics,
    /// Set at SIGTERM: a draining activator takes no new traffic.
    pub stopping: Arc<AtomicBool>,
}

/// The admin router.
pub fn app(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.stopping.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if admin.targets.synced() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced")
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    match admin.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            error.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::targets::Watch;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_only_after_every_watch_synced_and_until_shutdown() {
        let admin = Admin {
            targets: Arc::new(Targets::new()),
            metrics: Metrics::new().expect("metrics"),
            stopping: Arc::default(),
        };
        let app = app(admin.clone());
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        admin.targets.mark_synced(Watch::ModelDeployments);
        admin.targets.mark_synced(Watch::Services);
        assert_eq!(
            get(&app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        admin.targets.mark_synced(Watch::Pods);
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
        admin.stopping.store(true, Ordering::Release);
        assert_eq!(
            get(&app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let metrics = Metrics::new().expect("metrics");
        metrics.wake(&crate::route::ModelKey::new("ns", "m"));
        let app = app(Admin {
            targets: Arc::new(Targets::new()),
            metrics,
            stopping: Arc::default(),
        });
        let (status, text) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(r#"tractor_activator_wake_signals_total{model="m",namespace="ns"} 1"#),
            "{text}"
        );
    }
}
