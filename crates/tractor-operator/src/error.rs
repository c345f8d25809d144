//! The operator's one error type: variants named for the action that failed, each with a bounded
//! `category()` for metric labels and event reasons.

/// What a reconcile can fail with. Transient: retried with backoff per object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} failed: {source}")]
    Api {
        /// What was being done, e.g. `apply Deployment`.
        action: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A Kubernetes API call did not answer in time.
    #[error("{action} timed out after {secs} s")]
    Timeout {
        /// What was being done.
        action: &'static str,
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

/// Runs an API call under the operator's per-call timeout, naming the action for errors.
pub async fn call<T>(
    action: &'static str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    const SECS: u64 = 15;
    match tokio::time::timeout(std::time::Duration::from_secs(SECS), fut).await {
        Ok(r) => r.map_err(|source| Error::Api { action, source }),
        Err(_) => Err(Error::Timeout { action, secs: SECS }),
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
    /// ModelDeployments cannot be listed: usually the CRD is not installed.
    #[error(
        "cannot list ModelDeployments ({0}); is the CRD installed? `tractor crd | kubectl apply --server-side -f -`"
    )]
    CrdMissing(#[source] kube::Error),
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
