//! Open Inference Protocol (V2) over REST with axum: health, metadata, infer (JSON and the binary
//! tensor extension), feedback, explain and `/metrics`. Every rejection is `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::codec;
use crate::feedback::{FeedbackRequest, MAX_ITEMS};
use crate::payload_log::{Capture, PROTOCOL_REST};
use crate::revision;
use crate::server::{InferError, Server};

/// Header of the binary tensor extension: length of the JSON part of the body.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Server-wide settings of the REST front end.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Bearer token required on model routes, when set.
    pub auth_token: Option<String>,
}

#[derive(Clone)]
struct AppState {
    server: Arc<Server>,
    config: Arc<RestConfig>,
}

/// A rejection: status and message, rendered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        let status = match &e {
            InferError::BadRequest(_) => StatusCode::BAD_REQUEST,
            InferError::UnknownModel(_) => StatusCode::NOT_FOUND,
            InferError::Overloaded | InferError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            InferError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The REST application. With a revision, every response names it ([`revision::layer`]).
pub fn app(server: Arc<Server>, config: RestConfig) -> Router {
    let stamp = revision::layer::<Body>(server.revision.as_ref());
    let state = AppState {
        server,
        config: Arc::new(config),
    };
    let models = Router::new()
        .route("/v2/models/{m}", get(model_metadata))
        .route("/v2/models/{m}/versions/{v}", get(model_metadata_v))
        .route("/v2/models/{m}/ready", get(model_ready))
        .route("/v2/models/{m}/versions/{v}/ready", get(model_ready_v))
        .route("/v2/models/{m}/infer", post(infer))
        .route("/v2/models/{m}/versions/{v}/infer", post(infer_v))
        .route("/v2/models/{m}/feedback", post(feedback))
        .route("/v2/models/{m}/explain", post(explain))
        .route("/v2", get(server_metadata))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(server_ready))
        .route("/metrics", get(metrics))
        .merge(models)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        })
        // Last, so it wraps every route, the fallbacks and the auth rejections alike.
        .layer(stamp)
        .with_state(state)
}

async fn auth(State(st): State<AppState>, req: axum::extract::Request, next: Next) -> Response {
    if let Some(token) = &st.config.auth_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn server_ready(State(st): State<AppState>) -> Response {
    let ready = st.server.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.server.metrics.render(),
    )
        .into_response()
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "tractor",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "feedback", "explain"],
    }))
    .into_response()
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t).map_err(|e| bad(e.body_text()))
}

fn metadata(st: &AppState, m: &str, v: Option<&str>) -> Result<Response, ApiError> {
    st.server.check_model(m, v)?;
    let s = &st.server;
    let mut body = json!({
        "name": s.name,
        "versions": [s.version],
        "platform": s.platform,
        "inputs": s.signature.inputs,
        "outputs": s.signature.outputs,
    });
    // What the loader changed (a ZipMap served as its probability tensor) and the revision served travel as
    // metadata parameters: the V2 schema has no field for them, and `versions` stays `["1"]` for clients' URLs.
    let mut parameters = serde_json::Map::new();
    if !s.signature.notes.is_empty() {
        parameters.insert("notes".into(), json!(s.signature.notes));
    }
    if let Some(r) = &s.revision {
        parameters.insert("revision".into(), json!(r.as_str()));
    }
    if !parameters.is_empty() {
        body["parameters"] = parameters.into();
    }
    Ok(axum::Json(body).into_response())
}

async fn model_metadata(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    metadata(&st, &path(p)?, None)
}

async fn model_metadata_v(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (m, v) = path(p)?;
    metadata(&st, &m, Some(&v))
}

fn ready(st: &AppState, m: &str, v: Option<&str>) -> Result<Response, ApiError> {
    st.server.check_model(m, v)?;
    let ready = st.server.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, axum::Json(json!({ "name": m, "ready": ready }))).into_response())
}

async fn model_ready(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    ready(&st, &path(p)?, None)
}

async fn model_ready_v(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (m, v) = path(p)?;
    ready(&st, &m, Some(&v))
}

/// Read the body up to the limit: 413 beyond it, whatever the Content-Length claimed.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(bad(format!("reading request body: {e}"))),
    }
}

/// Split a body into its JSON header and binary part, per `Inference-Header-Content-Length`.
fn split_body(headers: &HeaderMap, body: &Bytes) -> Result<(Bytes, Bytes), ApiError> {
    match headers.get(HEADER_CONTENT_LENGTH) {
        None => Ok((body.clone(), Bytes::new())),
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    bad("Inference-Header-Content-Length must be a non-negative integer")
                })?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length {n} is larger than the body ({} bytes)",
                    body.len()
                )));
            }
            Ok((body.slice(..n), body.slice(n..)))
        }
    }
}

async fn infer(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match path(p) {
        Ok(m) => run_infer(st, m, None, headers, body).await,
        Err(e) => e.into_response(),
    }
}

async fn infer_v(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match path(p) {
        Ok((m, v)) => run_infer(st, m, Some(v), headers, body).await,
        Err(e) => e.into_response(),
    }
}

async fn run_infer(
    st: AppState,
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let metrics = &st.server.metrics;
    metrics.in_flight.inc();
    let mut capture = st
        .server
        .payload_log
        .as_ref()
        .and_then(|log| log.begin(PROTOCOL_REST));
    let (response, error) = match infer_inner(
        &st,
        &model,
        version.as_deref(),
        &headers,
        body,
        capture.as_mut(),
    )
    .await
    {
        Ok(answer) => (answer, None),
        Err(rejection) => {
            // The message is kept only for a sampled call's response record.
            let error = capture.as_ref().map(|_| rejection.1.clone());
            (rejection.into_response(), error)
        }
    };
    metrics.in_flight.dec();
    metrics.observe_request(
        "rest",
        response.status().as_str(),
        start.elapsed().as_secs_f64(),
    );
    if let Some(capture) = capture {
        capture.finish(response.status().as_str(), error);
    }
    response
}

async fn infer_inner(
    st: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    mut capture: Option<&mut Capture>,
) -> Result<Response, ApiError> {
    let server = &st.server;
    server.check_model(model, version)?;
    let body = read_body(body, st.config.max_body_bytes).await?;
    let (json_part, binary) = split_body(headers, &body)?;
    let decoded =
        codec::decode_rest(&server.signature, &json_part, &binary).map_err(|e| bad(e.0))?;
    if let Some(capture) = capture.as_deref_mut() {
        capture.request(decoded.id.as_deref(), &server.signature, &decoded.inputs);
    }
    let inferred = server
        .infer(decoded.inputs, decoded.rows, decoded.id.as_deref())
        .await?;
    if let Some(capture) = capture {
        capture.response(
            &server.signature,
            decoded.outputs.outputs.iter().map(|(ix, _)| *ix),
            &inferred.outputs,
            inferred.receipt.as_deref(),
        );
    }
    let (header_json, binary_out) = codec::encode_rest(
        &server.name,
        &server.version,
        decoded.id,
        inferred.receipt,
        &server.signature,
        &decoded.outputs,
        &inferred.outputs,
    )
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if binary_out.is_empty() {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            header_json,
        )
            .into_response());
    }
    let json_len = header_json.len();
    let mut all = header_json;
    all.extend_from_slice(&binary_out);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(HEADER_CONTENT_LENGTH),
                HeaderValue::from(json_len),
            ),
        ],
        all,
    )
        .into_response())
}

async fn feedback(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let m = path(p)?;
    st.server.check_model(&m, None)?;
    let body = read_body(body, st.config.max_body_bytes).await?;
    let req: FeedbackRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("malformed feedback JSON: {e}")))?;
    req.validate().map_err(bad)?;
    if req.feedback.len() > MAX_ITEMS {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_ITEMS} feedback pairs per call"),
        ));
    }
    let summary = st.server.feedback(req.feedback)?;
    Ok(axum::Json(summary).into_response())
}

async fn explain(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = path(p)?;
    let s = &st.server;
    s.check_model(&m, None)?;
    let body = read_body(body, st.config.max_body_bytes).await?;
    let (json_part, binary) = split_body(&headers, &body)?;
    let decoded = codec::decode_rest(&s.signature, &json_part, &binary).map_err(|e| bad(e.0))?;
    let mut e = serde_json::to_value(
        s.explain(decoded.inputs, decoded.rows, &decoded.parameters)
            .await?,
    )
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let (Some(id), Some(obj)) = (decoded.id, e.as_object_mut()) {
        obj.insert("id".into(), json!(id));
    }
    Ok(axum::Json(e).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt;
    use tractor_api::names::HEADER_REVISION;

    use super::*;
    use crate::testing::{self, MODEL};

    const REVISION: &str = "3f9a1c0b7e";

    fn router(revision: Option<&str>) -> Router {
        let prepared = testing::prepared(revision);
        app(prepared.server, prepared.rest)
    }

    fn infer_body() -> String {
        json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": testing::row()}]})
            .to_string()
    }

    fn post(uri: &str, body: String) -> Request<Body> {
        Request::post(uri).body(Body::from(body)).expect("request")
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).expect("request")
    }

    /// Status, revision header and JSON body of one request through the router.
    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
        let res = app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let revision = res
            .headers()
            .get(HEADER_REVISION)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, revision, json)
    }

    #[tokio::test]
    async fn every_response_names_the_configured_revision() {
        let app = router(Some(REVISION));
        let cases = [
            (
                "infer",
                post(&format!("/v2/models/{MODEL}/infer"), infer_body()),
                StatusCode::OK,
            ),
            (
                "infer, version 1",
                post(
                    &format!("/v2/models/{MODEL}/versions/1/infer"),
                    infer_body(),
                ),
                StatusCode::OK,
            ),
            (
                "malformed infer body",
                post(&format!("/v2/models/{MODEL}/infer"), "{".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                "unknown model",
                post("/v2/models/nope/infer", infer_body()),
                StatusCode::NOT_FOUND,
            ),
            ("unknown route", get("/nope"), StatusCode::NOT_FOUND),
            (
                "wrong method",
                get(&format!("/v2/models/{MODEL}/infer")),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            ("liveness", get("/v2/health/live"), StatusCode::OK),
            ("readiness", get("/v2/health/ready"), StatusCode::OK),
            ("metrics", get("/metrics"), StatusCode::OK),
        ];
        for (case, req, want) in cases {
            let (status, revision, body) = call(&app, req).await;
            assert_eq!(status, want, "{case}: {body}");
            assert_eq!(revision.as_deref(), Some(REVISION), "{case}");
        }
    }

    #[tokio::test]
    async fn metadata_names_the_revision_and_keeps_version_1() {
        let app = router(Some(REVISION));
        for uri in [
            format!("/v2/models/{MODEL}"),
            format!("/v2/models/{MODEL}/versions/1"),
        ] {
            let (status, revision, meta) = call(&app, get(&uri)).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {meta}");
            assert_eq!(revision.as_deref(), Some(REVISION));
            assert_eq!(meta["versions"], json!(["1"]), "{meta}");
            assert_eq!(meta["parameters"]["revision"], json!(REVISION), "{meta}");
        }
        let (_, _, infer) = call(
            &app,
            post(&format!("/v2/models/{MODEL}/infer"), infer_body()),
        )
        .await;
        assert_eq!(infer["model_version"], json!("1"), "{infer}");
        let (status, _, _) = call(
            &app,
            get(&format!("/v2/models/{MODEL}/versions/{REVISION}")),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the revision is no version");
    }

    #[tokio::test]
    async fn without_a_revision_no_response_names_one() {
        let app = router(None);
        let cases = [
            post(&format!("/v2/models/{MODEL}/infer"), infer_body()),
            post("/v2/models/nope/infer", infer_body()),
            get(&format!("/v2/models/{MODEL}")),
        ];
        for req in cases {
            let uri = req.uri().clone();
            let (status, revision, body) = call(&app, req).await;
            assert_eq!(revision, None, "{uri} ({status})");
            assert!(
                body.get("parameters")
                    .is_none_or(|p| p.get("revision").is_none()),
                "{uri}: {body}"
            );
        }
    }
}
