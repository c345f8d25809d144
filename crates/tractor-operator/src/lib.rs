//! The tractor operator: watches ModelDeployments and reconciles each into an optimize Job, a serving
//! Deployment, a Service, a PodDisruptionBudget and a NetworkPolicy, with a truthful status.

pub mod admin;
pub mod apply;
pub mod autoscaler;
pub mod backoff;
pub mod canary;
pub mod children;
pub mod clock;
pub mod context;
pub mod decide;
pub mod drift;
pub mod error;
pub mod events;
pub mod hpa;
pub mod latest;
pub mod leader;
pub mod metrics;
pub mod monitor;
pub mod observe;
pub mod prom;
pub mod rbac;
pub mod reconcile;
pub mod rollout;
pub mod status;
pub mod validate;
pub mod zero;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Config, ResourceExt};
use tracing::{error, info};
use tractor_api::ModelDeployment;

use crate::children::{BuildConfig, managed_selector};
use crate::context::Context;
use crate::reconcile::{error_policy, reconcile};

/// How long the start-up list may take before the operator says the API server does not answer.
const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconciles running at once.
const RECONCILE_CONCURRENCY: u16 = 16;

/// `tractor operator` flags; each has an environment fallback.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "TRACTOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image for optimize Jobs and serving pods (default: the operator's own, from `TRACTOR_IMAGE`).
    #[arg(long, env = "TRACTOR_IMAGE", default_value = "tractor:dev")]
    pub image: String,
    /// Prometheus base URL for autoscaling and canary analysis.
    #[arg(long, env = "TRACTOR_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Act only while holding the `tractor-operator` Lease, so several replicas can run.
    #[arg(long, env = "TRACTOR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace from `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_namespace: String,
    /// Address of `/live`, `/ready` and `/metrics`.
    #[arg(long, env = "TRACTOR_ADMIN_ADDR", default_value = "0.0.0.0:8090")]
    pub admin_addr: SocketAddr,
    /// Artifact store, `s3://bucket/prefix`: optimize Jobs publish artifacts there by digest and serving pods
    /// download them instead of re-deriving them. Unset: every pod re-derives its artifact from the source.
    #[arg(long, env = "TRACTOR_ARTIFACT_STORE", value_parser = parse_store_uri)]
    pub artifact_store: Option<String>,
    /// The artifact store's S3 endpoint URL (unset: AWS's).
    #[arg(long, env = "TRACTOR_ARTIFACT_STORE_ENDPOINT")]
    pub artifact_store_endpoint: Option<String>,
    /// The artifact store's region.
    #[arg(long, env = "TRACTOR_ARTIFACT_STORE_REGION")]
    pub artifact_store_region: Option<String>,
    /// Address the store's bucket in the path (`endpoint/bucket/key`), as MinIO and SeaweedFS expect.
    #[arg(long, env = "TRACTOR_ARTIFACT_STORE_PATH_STYLE")]
    pub artifact_store_path_style: bool,
    /// Name of the Secret, in each model namespace, holding the store's `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` for Jobs and pods there. A namespace without it re-derives artifacts.
    #[arg(
        long,
        env = "TRACTOR_ARTIFACT_STORE_SECRET",
        default_value = "tractor-artifact-store"
    )]
    pub artifact_store_secret: String,
    /// The activator's Service as `namespace/name` (the chart sets it): models with
    /// `autoscaling.scaleToZero` lead their Service to its pods while at zero. Unset: no model goes to zero.
    #[arg(long, env = "TRACTOR_ACTIVATOR_SERVICE", value_parser = parse_service_ref)]
    pub activator_service: Option<(String, String)>,
}

fn parse_service_ref(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("`{text}` is not namespace/name")),
    }
}

/// `--artifact-store`: an `s3://bucket[/prefix]` URI.
fn parse_store_uri(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{text}` is not s3://bucket/prefix"))?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(format!(
            "`{text}` names no bucket: expected s3://bucket/prefix"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// Runs the operator until SIGTERM/ctrl-c (or loss of leadership).
pub async fn run(args: OperatorArgs) -> Result<(), error::StartError> {
    let OperatorArgs {
        namespace,
        image,
        prometheus_url,
        leader_elect,
        leader_namespace,
        admin_addr,
        artifact_store,
        artifact_store_endpoint,
        artifact_store_region,
        artifact_store_path_style,
        artifact_store_secret,
        activator_service,
    } = args;
    let artifact_store = artifact_store.map(|uri| children::ArtifactStore {
        uri,
        endpoint: artifact_store_endpoint,
        region: artifact_store_region,
        path_style: artifact_store_path_style,
        secret: artifact_store_secret,
    });
    let autoscaler =
        autoscaler::Autoscaler::new(prometheus_url).map_err(error::StartError::PrometheusClient)?;
    // The config is kept for the API server's URL: "cannot connect to URL" is the first thing to tell a user
    // whose API server is unreachable.
    let config = Config::infer()
        .await
        .map_err(|e| error::StartError::Client(kube::Error::InferConfig(e)))?;
    let api_url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(error::StartError::Client)?;
    let metrics = metrics::Metrics::new().map_err(error::StartError::Metrics)?;
    let admin_state = admin::Admin {
        ready: Arc::default(),
        standby: Arc::default(),
        metrics: metrics.clone(),
    };
    let listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| error::StartError::Bind(admin_addr, e))?;
    info!(%admin_addr, "admin server listening");
    let admin_router_state = admin_state.clone();
    tokio::spawn(async move {
        if let Err(serve_error) = axum::serve(listener, admin::router(admin_router_state)).await {
            error!(error = %serve_error, "admin server stopped");
        }
    });

    let mds: Api<ModelDeployment> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Start-up check: an unreachable API server, a missing CRD or a missing permission is a clear error, not
    // an endless watch retry.
    #[allow(clippy::disallowed_methods)] // before any reconcile: the one read outside `observe`
    let first = tokio::time::timeout(
        STARTUP_CHECK_TIMEOUT,
        mds.list(&ListParams::default().limit(1)),
    )
    .await
    .map_err(|_| {
        error::StartError::StartupTimeout(api_url.clone(), STARTUP_CHECK_TIMEOUT.as_secs())
    })?;
    if let Err(list_error) = first {
        rbac::LIST_MODELDEPLOYMENTS.log_if_forbidden(namespace.as_deref(), &list_error);
        return Err(error::StartError::from_list(list_error, &api_url));
    }

    let elector = leader_elect.then(|| {
        // The pid keeps two replicas on one host (or a restarted container) from sharing an identity.
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "tractor".to_owned());
        let identity = format!("{host}-{}", std::process::id());
        leader::Elector::new(
            client.clone(),
            &leader_namespace,
            rbac::LEADER_LEASE,
            identity,
        )
    });
    if let Some(elector) = &elector {
        admin_state.standby.store(true, Ordering::Release);
        elector
            .acquire()
            .await
            .map_err(error::StartError::Election)?;
        admin_state.standby.store(false, Ordering::Release);
        info!("leader lease acquired");
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        build: BuildConfig {
            image,
            artifact_store,
        },
        recorder: events::Recorder::new(client.clone(), "tractor", std::env::var("POD_NAME").ok()),
        metrics,
        autoscaler,
        rollouts: Default::default(),
        written: Default::default(),
        failures: Default::default(),
        activator: activator_service.clone(),
    });
    let children = watcher::Config::default().labels(&managed_selector());
    // Metadata only: a child's change matters as a trigger, its content is read in the reconcile.
    type Meta<K> = Api<PartialObjectMeta<K>>;
    let api_for = |client: &Client| -> (Meta<Deployment>, Meta<Job>, Meta<Service>) {
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        }
    };
    let (deployments, jobs, services) = api_for(&client);
    let pods: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let slices: Api<PartialObjectMeta<EndpointSlice>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // The store keeps every ModelDeployment in memory: without managedFields it is about half the size.
    let (store, writer) = reflector::store();
    let (slice_store, activator_store) = (store.clone(), store.clone());
    // No activator: a stream that never yields, so the controller's shape does not depend on the flag.
    let activator_slices = match &activator_service {
        Some((activator_namespace, activator_name)) => watcher::watcher(
            Api::<PartialObjectMeta<EndpointSlice>>::namespaced(
                client.clone(),
                activator_namespace,
            ),
            watcher::Config::default().labels(&format!(
                "{}={activator_name}",
                tractor_api::names::LABEL_SERVICE_NAME
            )),
        )
        .inspect_err(log_forbidden(
            rbac::LIST_ENDPOINTSLICES,
            rbac::WATCH_ENDPOINTSLICES,
            Some(activator_namespace.clone()),
        ))
        .touched_objects()
        .boxed(),
        None => futures::stream::pending().boxed(),
    };
    let watched = reflector::reflector(
        writer,
        watcher::watcher(mds, watcher::Config::default().any_semantic())
            .inspect_err(log_forbidden(
                rbac::LIST_MODELDEPLOYMENTS,
                rbac::WATCH_MODELDEPLOYMENTS,
                namespace.clone(),
            ))
            .default_backoff()
            .modify(|md| md.managed_fields_mut().clear()),
    )
    .applied_objects();
    // Owned watches as `Controller::owns` builds them, each tagged so a 403 is logged with its resource: the
    // controller's own error stream does not say which watch failed.
    let owned = |list, watch| log_forbidden(list, watch, namespace.clone());
    let controller = Controller::for_stream(watched, store.clone())
        .owns_stream(
            watcher::watcher(deployments, children.clone())
                .inspect_err(owned(rbac::LIST_DEPLOYMENTS, rbac::WATCH_DEPLOYMENTS))
                .touched_objects(),
        )
        .owns_stream(
            watcher::watcher(jobs, children.clone())
                .inspect_err(owned(rbac::LIST_JOBS, rbac::WATCH_JOBS))
                .touched_objects(),
        )
        .owns_stream(
            watcher::watcher(services, children.clone())
                .inspect_err(owned(rbac::LIST_SERVICES, rbac::WATCH_SERVICES))
                .touched_objects(),
        )
        // Pods belong to ReplicaSets, and a pod whose init container fails changes no Deployment status: only a
        // pod watch sees a tampered artifact refused. Only those pods wake their model.
        .watches_stream(
            watcher::watcher(pods, children)
                .inspect_err(owned(rbac::LIST_PODS, rbac::WATCH_PODS))
                .touched_objects(),
            |pod: Pod| {
                observe::pod_failure(&pod).and_then(|_| {
                    let model = pod.labels().get(tractor_api::names::LABEL_MODEL)?;
                    Some(
                        reflector::ObjectRef::<ModelDeployment>::new(model)
                            .within(&pod.namespace()?),
                    )
                })
            },
        )
        // Scale to zero: a model's slices (the endpoints controller copies the Service's labels onto its own)
        // say when a woken model's pods are listed, so the activator's slice can go.
        .watches_stream(
            watcher::watcher(
                slices,
                watcher::Config::default().labels(&managed_selector()),
            )
            .inspect_err(owned(rbac::LIST_ENDPOINTSLICES, rbac::WATCH_ENDPOINTSLICES))
            .touched_objects(),
            move |slice: PartialObjectMeta<EndpointSlice>| {
                let model = slice.labels().get(tractor_api::names::LABEL_MODEL)?;
                let key =
                    reflector::ObjectRef::<ModelDeployment>::new(model).within(&slice.namespace()?);
                scales_to_zero(&slice_store, &key).then_some(key)
            },
        )
        // The activator's own slices: a replica gone or added changes every model at zero's slice at once.
        .watches_stream(
            activator_slices,
            move |_: PartialObjectMeta<EndpointSlice>| {
                activator_store
                    .state()
                    .into_iter()
                    .filter(|md| {
                        md.spec
                            .autoscaling
                            .as_ref()
                            .is_some_and(|a| a.scale_to_zero.is_some())
                    })
                    .map(|md| reflector::ObjectRef::from_obj(&*md))
                    .collect::<Vec<_>>()
            },
        )
        // Bounded: at start-up every object is due at once, and each reconcile holds a few children in
        // memory; 16 keeps the peak small without slowing a 1000-object start (the API server is the limit).
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        .shutdown_on_signal();
    let ready = admin_state.ready.clone();
    tokio::spawn(async move {
        // Re-armed every second: a waiter registered while the controller's own runner also waits was
        // seen never to be woken, while a fresh wait on an initialised store returns at once.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    ready.store(true, Ordering::Release);
                    info!("first watch sync done: ready");
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    });
    let run = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            // A forbidden call was logged where it was made (by `error::call` or the watch that made it);
            // watch errors repeat at every backoff step, so the rest stays at debug.
            if let Err(loop_error) = result {
                tracing::debug!(error = %loop_error, "reconcile loop");
            }
        });
    match &elector {
        Some(elector) => {
            tokio::select! {
                () = run => {}
                () = elector.hold() => {
                    error!("lost leadership: exiting so a follower takes over");
                    return Err(error::StartError::LostLeadership);
                }
            }
        }
        None => run.await,
    }
    info!("operator stopped");
    Ok(())
}

/// Whether the ModelDeployment `key` names (as the store holds it) may scale to zero.
fn scales_to_zero(
    store: &reflector::Store<ModelDeployment>,
    key: &reflector::ObjectRef<ModelDeployment>,
) -> bool {
    store.get(key).is_some_and(|md| {
        md.spec
            .autoscaling
            .as_ref()
            .is_some_and(|a| a.scale_to_zero.is_some())
    })
}

/// `namespace/name`, the key of what the operator keeps per object.
pub fn object_key(md: &ModelDeployment) -> String {
    format!(
        "{}/{}",
        md.metadata.namespace.as_deref().unwrap_or_default(),
        md.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Logs a watch's 403 as [`rbac::FORBIDDEN_LOG`]: `list` for its initial list, `watch` for the rest.
fn log_forbidden(
    list: rbac::Request,
    watch: rbac::Request,
    namespace: Option<String>,
) -> impl FnMut(&watcher::Error) + Send + 'static {
    move |e| {
        if let Some(f) = rbac::watch_forbidden(&list, &watch, namespace.as_deref(), e) {
            f.log();
        }
    }
}
