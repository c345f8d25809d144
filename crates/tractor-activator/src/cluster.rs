//! The Kubernetes edge: three reflectors (ModelDeployments, tractor Services, serving pods) that rebuild the
//! [`Targets`] view after every change, and the wake signal as a merge patch of the ModelDeployment.
//!
//! ModelDeployments are read as untyped objects at fixed paths, so an activator older or newer than the CRD
//! still reads the two fields it needs.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};
use tractor_api::names;

use crate::hold::WakeSignal;
use crate::route::{ModelKey, ServiceIndex};
use crate::targets::{HoldSettings, Targets, Watch};

/// Field manager of the wake annotation's merge patch; apart from the operator's, so the two never conflict.
pub const FIELD_MANAGER: &str = "tractor-activator";
/// Every API call has a timeout: a wake patch that hangs is dropped, the next demand sends another.
const PATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The ModelDeployment resource, untyped.
pub fn model_deployments() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(names::GROUP, names::VERSION, "ModelDeployment"),
        "modeldeployments",
    )
}

/// Label selector of the Services the operator manages.
pub fn service_selector() -> String {
    format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::LABEL_MANAGED_BY_VALUE
    )
}

/// Label selector of serving pods.
pub fn pod_selector() -> String {
    format!(
        "{}={},{}={}",
        names::LABEL_MANAGED_BY,
        names::LABEL_MANAGED_BY_VALUE,
        names::LABEL_COMPONENT,
        names::COMPONENT_SERVER
    )
}

/// Runs the three watches until the process ends, rebuilding `targets` after every change and marking each
/// synced after its first full list. Errors are logged and retried with kube's default backoff.
pub async fn watch(client: Client, namespace: Option<String>, targets: Arc<Targets>) {
    let resource = model_deployments();
    let (mds, services, pods): (Api<DynamicObject>, Api<Service>, Api<Pod>) = match &namespace {
        Some(namespace) => (
            Api::namespaced_with(client.clone(), namespace, &resource),
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client, namespace),
        ),
        None => (
            Api::all_with(client.clone(), &resource),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    futures::join!(
        follow(
            mds,
            watcher::Config::default().any_semantic(),
            Writer::new(resource),
            Watch::ModelDeployments,
            Arc::clone(&targets),
            |targets, all| targets.set_hold_settings(hold_settings(all)),
        ),
        follow(
            services,
            watcher::Config::default()
                .labels(&service_selector())
                .any_semantic(),
            Writer::default(),
            Watch::Services,
            Arc::clone(&targets),
            |targets, all| targets.set_services(service_index(all)),
        ),
        follow(
            pods,
            watcher::Config::default()
                .labels(&pod_selector())
                .any_semantic(),
            Writer::default(),
            Watch::Pods,
            targets,
            |targets, all| targets.set_ready_pods(ready_pods(all)),
        ),
    );
}

/// One reflector: after its initial list and after every change, `rebuild` gets every object it holds.
async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    which: Watch,
    targets: Arc<Targets>,
    rebuild: impl Fn(&Targets, &[Arc<K>]),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let store = writer.as_reader();
    let events = reflector::reflector(
        writer,
        watcher::watcher(api, config)
            .default_backoff()
            // Half the memory of each stored object, and nothing here reads it.
            .modify(|object| object.managed_fields_mut().clear()),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::InitDone) => {
                rebuild(&targets, &store.state());
                targets.mark_synced(which);
                info!(watch = ?which, objects = store.len(), "watch synced");
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => rebuild(&targets, &store.state()),
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(error) => warn!(watch = ?which, error = %error, "watch failed; retrying"),
        }
    }
}

/// Each model's ready serving pods: a pod IP, the `Ready` condition true, not being deleted.
pub fn ready_pods(pods: &[Arc<Pod>]) -> HashMap<ModelKey, Vec<IpAddr>> {
    let mut ready: HashMap<ModelKey, Vec<IpAddr>> = HashMap::new();
    for pod in pods {
        if let Some((model, ip)) = ready_pod(pod) {
            ready.entry(model).or_default().push(ip);
        }
    }
    ready
}

fn ready_pod(pod: &Pod) -> Option<(ModelKey, IpAddr)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let is_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    if !is_ready {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    let model = pod.labels().get(names::LABEL_MODEL)?;
    Some((ModelKey::new(pod.namespace()?, model.clone()), ip))
}

/// The tractor Services by cluster IP and name; headless ones by name only.
pub fn service_index(services: &[Arc<Service>]) -> ServiceIndex {
    let mut index = ServiceIndex::default();
    for service in services {
        let Some(namespace) = service.namespace() else {
            continue;
        };
        let spec = service.spec.as_ref();
        let ips = spec
            .and_then(|spec| spec.cluster_ip.as_deref())
            .into_iter()
            .chain(
                spec.and_then(|spec| spec.cluster_ips.as_deref())
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            )
            .filter_map(|ip| ip.parse::<IpAddr>().ok());
        index.insert(ModelKey::new(namespace, service.name_any()), ips);
    }
    index
}

/// Each ModelDeployment's `spec.autoscaling.scaleToZero.{maxHeldRequests,holdTimeout}`; a missing or
/// unreadable field is `None` (the defaults apply).
pub fn hold_settings(mds: &[Arc<DynamicObject>]) -> HashMap<ModelKey, HoldSettings> {
    mds.iter()
        .filter_map(|md| {
            let model = ModelKey::new(md.namespace()?, md.name_any());
            let scale_to_zero = md.data.pointer("/spec/autoscaling/scaleToZero");
            let max_held = scale_to_zero
                .and_then(|stz| stz.get("maxHeldRequests"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|max| usize::try_from(max).ok());
            let hold_timeout = scale_to_zero
                .and_then(|stz| stz.get("holdTimeout"))
                .and_then(serde_json::Value::as_str)
                .and_then(tractor_api::duration::parse_duration);
            Some((
                model,
                HoldSettings {
                    max_held,
                    hold_timeout,
                },
            ))
        })
        .collect()
}

/// The wake annotation's value at `now`: RFC 3339 in UTC, to the microsecond, as Kubernetes writes `MicroTime`.
pub fn wake_timestamp(now: Timestamp) -> String {
    format!("{now:.6}")
}

/// The JSON merge patch that sets the wake annotation to `timestamp`, leaving every other annotation alone.
pub fn wake_patch(timestamp: &str) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { names::ANNOTATION_WAKE: timestamp } } })
}

/// The wake signal in a cluster: merge-patches the ModelDeployment's wake annotation, in the background.
#[derive(Clone)]
pub struct KubeWake {
    client: Client,
    resource: ApiResource,
}

impl KubeWake {
    /// Patches through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            resource: model_deployments(),
        }
    }
}

impl WakeSignal for KubeWake {
    fn wake(&self, model: &ModelKey) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &model.namespace, &self.resource);
        let model = model.clone();
        let timestamp = wake_timestamp(Timestamp::now());
        tokio::spawn(async move {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            let patch = Patch::Merge(wake_patch(&timestamp));
            match tokio::time::timeout(PATCH_TIMEOUT, api.patch(&model.name, &params, &patch)).await
            {
                Ok(Ok(_)) => debug!(model = %model, %timestamp, "wake signal written"),
                Ok(Err(error)) => {
                    warn!(model = %model, error = %error, "writing the wake signal failed")
                }
                Err(_) => warn!(model = %model, "writing the wake signal timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(
        name: &str,
        model: Option<&str>,
        ip: Option<&str>,
        ready: &str,
        deleting: bool,
    ) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: model
                    .map(|model| [(names::LABEL_MODEL.to_owned(), model.to_owned())].into()),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        })
    }

    #[test]
    fn only_ready_live_pods_with_an_ip_and_a_model_are_targets() {
        let pods = vec![
            pod("a", Some("m"), Some("10.0.0.1"), "True", false),
            pod("b", Some("m"), Some("10.0.0.2"), "True", false),
            pod("not-ready", Some("m"), Some("10.0.0.3"), "False", false),
            pod("deleting", Some("m"), Some("10.0.0.4"), "True", true),
            pod("no-ip", Some("m"), None, "True", false),
            pod("no-model", None, Some("10.0.0.5"), "True", false),
            pod("other", Some("other"), Some("fd00::6"), "True", false),
        ];
        let mut ready = ready_pods(&pods);
        ready.values_mut().for_each(|ips| ips.sort());
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        assert_eq!(
            ready,
            HashMap::from([
                (
                    ModelKey::new("ns", "m"),
                    vec![ip("10.0.0.1"), ip("10.0.0.2")]
                ),
                (ModelKey::new("ns", "other"), vec![ip("fd00::6")]),
            ])
        );
    }

    #[test]
    fn services_are_indexed_by_every_cluster_ip_and_name() {
        let service = |name: &str, ips: &[&str]| {
            Arc::new(Service {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("ns".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    cluster_ip: ips.first().map(|ip| (*ip).to_owned()),
                    cluster_ips: Some(ips.iter().map(|ip| (*ip).to_owned()).collect()),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            })
        };
        let index = service_index(&[
            service("m", &["10.96.0.1", "fd00::1"]),
            service("headless", &["None"]),
        ]);
        let mut want = ServiceIndex::default();
        want.insert(
            ModelKey::new("ns", "m"),
            [
                "10.96.0.1".parse().expect("ip"),
                "fd00::1".parse().expect("ip"),
            ],
        );
        want.insert(ModelKey::new("ns", "headless"), []);
        assert_eq!(index, want);
    }

    #[test]
    fn hold_settings_are_read_where_the_crd_puts_them() {
        let md = |name: &str, spec: serde_json::Value| {
            let mut object = DynamicObject::new(name, &model_deployments()).within("ns");
            object.data = serde_json::json!({ "spec": spec });
            Arc::new(object)
        };
        let settings = hold_settings(&[
            md(
                "both",
                serde_json::json!({"autoscaling": {"scaleToZero": {"maxHeldRequests": 7, "holdTimeout": "1.5m"}}}),
            ),
            md(
                "none",
                serde_json::json!({"autoscaling": {"minReplicas": 1}}),
            ),
            md(
                "bad",
                serde_json::json!({"autoscaling": {"scaleToZero": {"maxHeldRequests": -1, "holdTimeout": "soon"}}}),
            ),
        ]);
        assert_eq!(
            settings,
            HashMap::from([
                (
                    ModelKey::new("ns", "both"),
                    HoldSettings {
                        max_held: Some(7),
                        hold_timeout: Some(Duration::from_secs(90))
                    }
                ),
                (ModelKey::new("ns", "none"), HoldSettings::default()),
                (ModelKey::new("ns", "bad"), HoldSettings::default()),
            ])
        );
    }

    #[test]
    fn the_wake_patch_sets_one_annotation_to_a_utc_microsecond_timestamp() {
        let now = Timestamp::from_microsecond(1_750_000_000_123_456).expect("timestamp");
        assert_eq!(wake_timestamp(now), "2025-06-15T15:06:40.123456Z");
        let whole = Timestamp::from_second(1_750_000_000).expect("timestamp");
        assert_eq!(wake_timestamp(whole), "2025-06-15T15:06:40.000000Z");
        assert_eq!(
            wake_patch("2025-06-15T15:06:40.123456Z"),
            serde_json::json!({"metadata": {"annotations": {"serving.tractor.dev/wake": "2025-06-15T15:06:40.123456Z"}}})
        );
    }

    #[test]
    fn selectors_narrow_the_watches_to_tractors_objects() {
        assert_eq!(service_selector(), "app.kubernetes.io/managed-by=tractor");
        assert_eq!(
            pod_selector(),
            "app.kubernetes.io/managed-by=tractor,serving.tractor.dev/component=server"
        );
    }
}
