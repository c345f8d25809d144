//! The operator's one error type: variants named for the action that failed, each with a bounded
//! `category()` for metric labels and event reasons.

use crate::rbac::{self, Request};

/// What a reconcile can fail with. Transient: retried with backoff per object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{request} failed: {source}")]
    Api {
        /// What was being done, e.g. `apply Deployment`.
        request: Request,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A Kubernetes API call did not answer in time.
    #[error("{request} timed out after {secs} s")]
    Timeout {
        /// What was being done.
        request: Request,
        /// The limit that passed.
        secs: u64,
    },
}

impl Error {
    /// A bounded label for metrics: never an object name or an error's text.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "conflict",
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } if s.code == 403 => "forbidden",
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } if s.code == 422 => "invalid",
            Error::Api { .. } => "api",
            Error::Timeout { .. } => "timeout",
        }
    }
}

/// Runs an API call in `namespace` under the operator's per-call timeout, naming the request for errors and
/// logging it as [`rbac::FORBIDDEN_LOG`] when the API server forbids it.
pub async fn call<T>(
    request: Request,
    namespace: &str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    const SECS: u64 = 15;
    match tokio::time::timeout(std::time::Duration::from_secs(SECS), fut).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(source)) => {
            request.log_if_forbidden(Some(namespace), &source);
            Err(Error::Api { request, source })
        }
        Err(_) => Err(Error::Timeout {
            request,
            secs: SECS,
        }),
    }
}

/// True when an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Why the operator could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable kubeconfig or in-cluster config.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The admin port is taken.
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, #[source] std::io::Error),
    /// The API server cannot be reached at all: nothing answered, so nothing is known about the CRD.
    #[error(
        "cannot connect to the Kubernetes API server at {url} ({source}); is it up, and reachable from here (in a \
         pod: does the `kubernetes` Service have endpoints)?"
    )]
    ApiUnreachable {
        /// The API server's URL from the client configuration.
        url: String,
        /// The transport error.
        #[source]
        source: kube::Error,
    },
    /// The start-up list got no answer in time.
    #[error(
        "the Kubernetes API server at {0} did not answer the start-up list of ModelDeployments within {1} s"
    )]
    StartupTimeout(String, u64),
    /// The API server does not serve ModelDeployments (404): the CRD is not installed.
    #[error(
        "cannot list ModelDeployments ({0}); is the CRD installed? `tractor crd | kubectl apply --server-side -f -`"
    )]
    CrdMissing(#[source] kube::Error),
    /// The API server forbids a call the operator needs: its RBAC lacks a rule.
    #[error(
        "the operator may not {verb} {resource} ({source}); its Role or ClusterRole must grant it (charts/tractor \
         grants what crates/tractor-operator/src/rbac.rs lists)"
    )]
    Forbidden {
        /// The RBAC verb refused.
        verb: &'static str,
        /// The resource, `plural.group` as `kubectl auth can-i` takes it.
        resource: String,
        /// The API server's 403.
        #[source]
        source: kube::Error,
    },
    /// ModelDeployments cannot be listed for another reason the API server gave.
    #[error("cannot list ModelDeployments: {0}")]
    ListModelDeployments(#[source] kube::Error),
    /// The Prometheus HTTP client could not be built (no TLS roots).
    #[error("cannot build the Prometheus client: {0}")]
    PrometheusClient(#[source] reqwest::Error),
    /// Leader election failed.
    #[error("leader election failed: {0}")]
    Election(#[source] Error),
    /// Another replica took the lease.
    #[error("lost leadership")]
    LostLeadership,
}

impl StartError {
    /// Why the start-up list of ModelDeployments failed, from its error: no connection to the API server at
    /// `url` is not a missing CRD (404), and neither is a missing permission (403).
    pub fn from_list(e: kube::Error, url: &str) -> StartError {
        match &e {
            kube::Error::Api(s) if s.code == 404 => StartError::CrdMissing(e),
            kube::Error::Api(s) if s.code == 403 => {
                let r = rbac::LIST_MODELDEPLOYMENTS;
                StartError::Forbidden {
                    verb: r.verb,
                    resource: format!("{}.{}", r.on.resource, r.on.group),
                    source: e,
                }
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => StartError::ApiUnreachable {
                url: url.to_owned(),
                source: e,
            },
            _ => StartError::ListModelDeployments(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "")
                .with_code(code)
                .boxed(),
        )
    }

    fn refused() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[test]
    fn a_failed_start_up_list_is_told_apart() {
        let url = "https://10.96.0.1/";
        let cases: Vec<(kube::Error, &str, &str)> = vec![
            (
                refused(),
                "ApiUnreachable",
                "cannot connect to the Kubernetes API server at https://10.96.0.1/",
            ),
            (api(404), "CrdMissing", "is the CRD installed?"),
            (
                api(403),
                "Forbidden",
                "may not list modeldeployments.serving.tractor.dev",
            ),
            (
                api(500),
                "ListModelDeployments",
                "cannot list ModelDeployments: ",
            ),
            (
                kube::Error::LinesCodecMaxLineLengthExceeded,
                "ListModelDeployments",
                "cannot list ModelDeployments: ",
            ),
        ];
        for (error, variant, text) in cases {
            let shown = format!("{error}");
            let got = StartError::from_list(error, url);
            let debug = format!("{got:?}");
            assert!(debug.starts_with(variant), "{shown}: {debug}");
            let message = got.to_string();
            assert!(message.contains(text), "{shown}: {message}");
            if variant != "CrdMissing" {
                assert!(!message.contains("CRD"), "{shown}: {message}");
            }
        }
    }
}
