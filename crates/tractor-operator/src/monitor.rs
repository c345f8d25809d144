//! The ServiceMonitor of each ModelDeployment, for clusters that run the Prometheus Operator: written only where
//! its CRD (`monitoring.coreos.com/v1`) is served, found by discovery and cached, so other clusters need neither
//! the CRD nor any RBAC for it. Pods also carry `prometheus.io/*` annotations for plain Kubernetes discovery.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::pinned_kind;

use tractor_api::names;

use crate::validate::Validated;

/// The ServiceMonitor kind the Prometheus Operator serves.
pub const GROUP: &str = "monitoring.coreos.com";
/// Its version.
pub const VERSION: &str = "v1";
/// Its kind.
pub const KIND: &str = "ServiceMonitor";

/// How long a discovery answer is trusted: installing the Prometheus Operator later is picked up within this.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// Scrape interval written into each ServiceMonitor; matches the autoscaler's default interval.
const SCRAPE_INTERVAL: &str = "15s";

/// The operator's one discovery cache.
pub fn shared() -> &'static Discovery {
    static SHARED: std::sync::OnceLock<Discovery> = std::sync::OnceLock::new();
    SHARED.get_or_init(Discovery::default)
}

/// Whether the ServiceMonitor CRD is served, asked of the API server at most once per [`DISCOVERY_TTL`].
#[derive(Default)]
pub struct Discovery {
    cached: Mutex<Option<(Instant, Option<ApiResource>)>>,
}

impl Discovery {
    /// The ServiceMonitor resource when the cluster serves it.
    pub async fn service_monitor(&self, client: &kube::Client) -> Option<ApiResource> {
        if let Ok(guard) = self.cached.lock()
            && let Some((at, found)) = guard.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return found.clone();
        }
        let gvk = GroupVersionKind::gvk(GROUP, VERSION, KIND);
        let found =
            match tokio::time::timeout(Duration::from_secs(10), pinned_kind(client, &gvk)).await {
                Ok(Ok((ar, _caps))) => Some(ar),
                // Absent (404) is the common case; other failures are retried after the TTL as well.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "no ServiceMonitor kind served");
                    None
                }
                Err(_) => None,
            };
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some((Instant::now(), found.clone()));
        }
        found
    }
}

/// The ServiceMonitor for `v`: scrapes `/metrics` on the Service's `http` port of the serving pods. Pure.
pub fn service_monitor(validated: &Validated, ar: &ApiResource) -> DynamicObject {
    let mut labels = names::common_labels(&validated.name, &validated.revision);
    labels.insert(
        names::LABEL_COMPONENT.to_owned(),
        names::COMPONENT_SERVER.to_owned(),
    );
    let selector = crate::children::server_selector(&validated.name);
    let tls = validated.md.spec.serving.tls.as_ref();
    let mut endpoint = serde_json::json!({
        "port": "http",
        "path": "/metrics",
        "interval": SCRAPE_INTERVAL,
        "scheme": if tls.is_some() { "https" } else { "http" },
    });
    if let Some(tls) = tls {
        // The serving certificate is issued for the Service's DNS name; its CA travels in the same Secret
        // (`ca.crt`, as cert-manager writes it).
        endpoint["tlsConfig"] = serde_json::json!({
            "serverName": format!("{}.{}.svc", validated.name, validated.namespace),
            "ca": {"secret": {"name": tls.secret_ref.name, "key": "ca.crt"}},
        });
    }
    let mut object = DynamicObject::new(&validated.name, ar).within(&validated.namespace);
    object.metadata.labels = Some(labels);
    object.metadata.owner_references = validated.md.controller_owner_ref(&()).map(|o| vec![o]);
    object.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": selector},
            "endpoints": [endpoint],
        }
    });
    object
}
