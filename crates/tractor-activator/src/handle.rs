//! One request's path through the activator: route it to a model, buffer its body, forward it at once to a
//! ready pod or hold it (bounded, with a wake signal) until one is ready or its deadline passes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{debug, warn};
use tractor_api::metrics::OUTCOME_FORWARDED;

use crate::hold::{self, Holds, Unready, Wakes};
use crate::metrics::Metrics;
use crate::proxy::{self, ForwardError, Proxy};
use crate::reply::{self, Body, Failure, Protocol};
use crate::route::{ModelKey, RouteError};
use crate::targets::Targets;

/// What a model's ModelDeployment does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Requests held per model (`--default-max-held`).
    pub max_held: usize,
    /// How long a request is held (`--default-hold-timeout`).
    pub hold_timeout: Duration,
    /// Largest request body buffered (`--max-body-bytes`).
    pub max_body_bytes: usize,
}

/// Everything a request needs, shared by all of them.
#[derive(Debug)]
pub struct Shared {
    /// The view of the cluster.
    pub targets: Arc<Targets>,
    /// The metrics.
    pub metrics: Metrics,
    pub(crate) holds: Arc<Holds>,
    pub(crate) wakes: Arc<Wakes>,
    pub(crate) proxy: Proxy,
    pub(crate) defaults: Defaults,
}

/// Answers one request that came in on `protocol`'s listener.
pub async fn handle(
    shared: Arc<Shared>,
    protocol: Protocol,
    request: Request<Incoming>,
) -> Response<Body> {
    let arrived = Instant::now();
    let host = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
        });
    let model = match shared.targets.route(host.as_deref()) {
        Ok(model) => model,
        Err(error) => {
            let failure = match error {
                RouteError::Unknown(_) => Failure::UnknownModel,
                RouteError::NoHost | RouteError::Ambiguous { .. } => Failure::BadHost,
            };
            debug!(host = ?host, error = %error, "no model");
            return answer(&shared, protocol, None, failure, &error.to_string());
        }
    };
    match forward(&shared, protocol, &model, request, arrived).await {
        Ok(response) => {
            shared.metrics.request(Some(&model), OUTCOME_FORWARDED);
            response
        }
        Err((failure, message)) => answer(&shared, protocol, Some(&model), failure, &message),
    }
}

fn answer(
    shared: &Shared,
    protocol: Protocol,
    model: Option<&ModelKey>,
    failure: Failure,
    message: &str,
) -> Response<Body> {
    shared.metrics.request(model, failure.codes().2);
    reply::failure(protocol, failure, message)
}

async fn forward(
    shared: &Shared,
    protocol: Protocol,
    model: &ModelKey,
    request: Request<Incoming>,
    arrived: Instant,
) -> Result<Response<Body>, (Failure, String)> {
    let settings = shared.targets.hold_settings(model);
    let hold_timeout = settings
        .hold_timeout
        .unwrap_or(shared.defaults.hold_timeout);
    let client_timeout = match protocol {
        Protocol::Grpc => request
            .headers()
            .get("grpc-timeout")
            .and_then(reply::grpc_timeout),
        Protocol::Http => None,
    };
    let wait = client_timeout.map_or(hold_timeout, |client| client.min(hold_timeout));
    let deadline = arrived + wait;
    let client_deadline = client_timeout.map(|client| arrived + client);
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, shared.defaults.max_body_bytes).await?;
    let timed_out = || {
        (
            Failure::Timeout,
            format!("model {model} had no ready pod within {}", seconds(wait)),
        )
    };
    // Subscribed before looking, so a pod that turns ready in between is not missed.
    let mut ready = shared.targets.ready_pods(model);
    if ready.borrow_and_update().is_empty() {
        let max_held = settings.max_held.unwrap_or(shared.defaults.max_held);
        let Some(slot) = shared.holds.admit(model, max_held) else {
            return Err((
                Failure::Overflow,
                format!(
                    "model {model} is waking up and {max_held} requests are waiting for it already: retry"
                ),
            ));
        };
        shared.wakes.demand(model);
        debug!(model = %model, held = shared.holds.held(model), "no ready pod: holding the request");
        match hold::wait_ready(&mut ready, deadline).await {
            Ok(()) => {}
            Err(Unready::Deadline) => return Err(timed_out()),
            Err(Unready::Closed) => {
                return Err((
                    Failure::Upstream,
                    "the activator is shutting down".to_owned(),
                ));
            }
        }
        drop(slot);
    }
    match shared
        .proxy
        .forward(
            protocol,
            &mut ready,
            &parts,
            body,
            deadline,
            client_deadline,
        )
        .await
    {
        Ok(forwarded) => {
            shared
                .metrics
                .hold_seconds(forwarded.sent.duration_since(arrived).as_secs_f64());
            Ok(proxy::backward(forwarded.response).map(|body| body.boxed()))
        }
        Err(ForwardError::Deadline) => Err(timed_out()),
        Err(ForwardError::Closed) => Err((
            Failure::Upstream,
            "the activator is shutting down".to_owned(),
        )),
        Err(ForwardError::Upstream(error)) => {
            warn!(model = %model, error = %error, "the pod failed the forwarded request");
            Err((
                Failure::Upstream,
                format!("the pod of model {model} failed the request: {error}"),
            ))
        }
    }
}

/// The whole body, so a refused connection can be retried with it; a declared or actual length over `max`
/// is refused before it is read (declared) or as soon as it passes the limit (actual).
async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    max: usize,
) -> Result<Bytes, (Failure, String)> {
    let too_large = || {
        (
            Failure::TooLarge,
            format!("the request body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err((
            Failure::BadBody,
            format!("reading the request body: {error}"),
        )),
    }
}

/// `30s`, `1.5s`, `250ms`: a deadline as people write it.
fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_read_as_written() {
        for (duration, want) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
        ] {
            assert_eq!(seconds(duration), want);
        }
    }
}
