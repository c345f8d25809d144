//! Observe, the first stage of a reconcile: everything read for one ModelDeployment (its children, the optimize
//! Job and its report, Prometheus signals) gathered into one [`Observed`] value. Every read has a timeout.
//!
//! What is read depends only on the spec and the recorded status, never on a decision: [`crate::decide`]
//! gets the whole picture and reads nothing itself.
#![allow(clippy::disallowed_methods)] // reads through `kube::Api` belong here (and in `apply`)

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tractor_api::report::OptimizeReport;
use tractor_api::{ModelDeployment, ModelDeploymentStatus, PrometheusSource};
use tractor_api::{metrics, names};

use crate::autoscaler::{self, Memory, Reads};
use crate::canary::{self, Accuracy, Signals};
use crate::children;
use crate::context::Context;
use crate::drift::{self, DriftReads};
use crate::error::{Error, call};
use crate::object_key;
use crate::prom::{self, Selector, Server};
use crate::rbac::{self, Request};
use crate::rollout::{self, AnalysisReads, Previous};
use crate::validate::{Invalid, Validated, validate};

/// What one reconcile saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The spec checked, or why it cannot be served.
    pub spec: Result<Validated, Invalid>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as last written (the newer of the watch's copy and this operator's last write).
    pub status: ModelDeploymentStatus,
    /// The current revision's optimize Job, when the status does not already settle the model.
    pub job: Option<JobSeen>,
    /// The serving Deployment `<name>`.
    pub stable: Option<Deployment>,
    /// The canary Deployment `<name>-canary`.
    pub canary: Option<Deployment>,
    /// Content hashes of the live Service, PodDisruptionBudget and NetworkPolicy (absent or unhashed: `None`).
    pub front: Front,
    /// The ServiceMonitor kind and its live hash, where the cluster serves the kind.
    pub monitor: Option<MonitorSeen>,
    /// The autoscaler's memory and, when an evaluation is due, what Prometheus gave.
    pub autoscaling: Option<AutoscalingSeen>,
    /// A canary analysis' reads, when one is due.
    pub analysis: Option<AnalysisSeen>,
    /// The revision an accuracy rollback returns to, looked up when an evaluation that could ask for one runs.
    pub previous: Option<Previous>,
    /// Whether the artifact store's Secret exists in the namespace (`None`: the operator has no store);
    /// `Err` says why it could not be read.
    pub store_secret: Option<Result<bool, String>>,
    /// Serving pods whose init container failed, read only while a serving Deployment misses replicas.
    pub pod_failures: Vec<PodFailure>,
    /// With `autoscaling.scaleToZero`: the activator and the Service's EndpointSlices.
    pub zero: Option<ZeroSeen>,
    /// With `monitoring.drift`, when a read is due and something serves: the serving revision's drift scores.
    pub drift: Option<Result<DriftReads, String>>,
    /// When this was observed.
    pub now: Timestamp,
}

/// The optimize Job of the current revision.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSeen {
    /// The Job (`None`: not created yet).
    pub job: Option<Job>,
    /// The report its newest finished container wrote, once the Job has finished.
    pub report: Option<OptimizeReport>,
    /// The shared optimize cache's report for this spec's bytes and recipe, looked up (in the operator's
    /// artifact store) only while no Job exists: a hit means no Job runs.
    pub cached: Option<OptimizeReport>,
}

/// A serving pod that cannot start because its init container (`tractor fetch`, or `tractor optimize` when pods
/// re-derive) failed.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFailure {
    /// The pod's name.
    pub pod: String,
    /// Its revision label.
    pub revision: String,
    /// The init container's name.
    pub container: String,
    /// The reason code its termination message gives (`DigestMismatch`, `FetchFailed`, ...), else the kubelet's
    /// (`OOMKilled`, `Error`).
    pub reason: String,
    /// Its termination message's `message` (the digests compared, the uri), or the whole message when it is not
    /// one of tractor's JSON lines.
    pub message: String,
}

/// The failure of a serving pod's init container, from its current or last termination with a non-zero exit.
/// Pure, so the pod watch can keep only the pods worth a reconcile.
pub fn pod_failure(pod: &Pod) -> Option<PodFailure> {
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(names::LABEL_COMPONENT).map(String::as_str) != Some(names::COMPONENT_SERVER) {
        return None;
    }
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .find_map(|container| {
            let current = container.state.as_ref().and_then(|s| s.terminated.as_ref());
            let last = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref());
            let terminated = [current, last]
                .into_iter()
                .flatten()
                .find(|terminated| terminated.exit_code != 0)?;
            let text = terminated.message.as_deref().unwrap_or_default().trim();
            #[derive(serde::Deserialize)]
            struct Said {
                reason: Option<String>,
                message: Option<String>,
            }
            let said = serde_json::from_str::<Said>(text).ok();
            let reason = said
                .as_ref()
                .and_then(|said| said.reason.clone())
                .or_else(|| terminated.reason.clone())
                .unwrap_or_else(|| format!("exit code {}", terminated.exit_code));
            let message = said
                .and_then(|said| said.message)
                .unwrap_or_else(|| text.to_owned());
            Some(PodFailure {
                pod: pod.metadata.name.clone().unwrap_or_default(),
                revision: labels
                    .get(names::LABEL_REVISION)
                    .cloned()
                    .unwrap_or_default(),
                container: container.name.clone(),
                reason,
                message,
            })
        })
}

/// Whether a serving Deployment misses replicas, when its pods are worth listing for a failure.
fn misses_replicas(deployment: Option<&Deployment>) -> bool {
    deployment
        .and_then(|found| found.status.as_ref())
        .is_some_and(|status| status.unavailable_replicas.unwrap_or(0) > 0)
}

/// Serving pods of the ModelDeployment whose init container failed.
async fn pod_failures(ctx: &Context, validated: &Validated) -> Result<Vec<PodFailure>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    let selector = children::server_selector_string(&validated.name);
    let list = call(
        rbac::LIST_SERVING_PODS,
        &validated.namespace,
        pods.list(&ListParams::default().labels(&selector)),
    )
    .await?;
    Ok(list.items.iter().filter_map(pod_failure).collect())
}

/// What scale to zero reads besides the autoscaler's signals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZeroSeen {
    /// The activator's ready addresses and ports (no addresses: not installed, not ready, or unreadable).
    pub activator: children::Activator,
    /// Names of the model Service's slices other than the activator's: the endpoints controller's, and the
    /// mirroring controller's copies of the Endpoints object that controller leaves behind without a selector.
    pub pod_slices: Vec<String>,
    /// Ready endpoints in the endpoints controller's slices.
    pub ready_pod_endpoints: usize,
    /// The live activator slice's spec hash: `None` when there is none, `Some(None)` when it is unhashed.
    pub activator_slice: Option<Option<String>>,
}

/// Reads the activator's slices and the model Service's.
async fn zero(ctx: &Context, validated: &Validated) -> Result<ZeroSeen, Error> {
    let by_service =
        |name: &str| ListParams::default().labels(&format!("{}={name}", names::LABEL_SERVICE_NAME));
    let mut seen = ZeroSeen::default();
    if let Some((namespace, name)) = &ctx.activator {
        let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
        // The activator unreadable is the activator absent: the model then never goes to zero, and wakes if it is.
        match call(
            rbac::LIST_ENDPOINTSLICES,
            namespace,
            slices.list(&by_service(name)),
        )
        .await
        {
            Ok(list) => seen.activator = activator_of(&list.items),
            Err(error) => tracing::warn!(%error, "activator's EndpointSlices not read"),
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    let list = call(
        rbac::LIST_ENDPOINTSLICES,
        &validated.namespace,
        slices.list(&by_service(&validated.name)),
    )
    .await?;
    let ours = children::activator_slice_name(&validated.name);
    for slice in &list.items {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let manager = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(names::LABEL_ENDPOINTSLICE_MANAGED_BY))
            .map(String::as_str);
        if name == ours {
            seen.activator_slice = Some(children::spec_hash(slice).map(str::to_owned));
            continue;
        }
        if manager == Some(names::ENDPOINTSLICE_CONTROLLER) {
            seen.ready_pod_endpoints += slice
                .endpoints
                .iter()
                .flatten()
                .filter(|e| ready(e))
                .count();
        }
        // The endpoints controller's, or the mirroring controller's copy of the Endpoints object the
        // endpoints controller left behind when the selector went: both name pods.
        seen.pod_slices.push(name);
    }
    Ok(seen)
}

/// An endpoint kube-proxy sends new connections to (`ready` unset counts as ready, as the API says).
fn ready(endpoint: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|conditions| conditions.ready)
        .unwrap_or(true)
}

/// The activator's ready IPv4 addresses and its `http` and `grpc` ports, from its Service's slices.
pub fn activator_of(slices: &[EndpointSlice]) -> children::Activator {
    let mut activator = children::Activator::default();
    for slice in slices.iter().filter(|slice| slice.address_type == "IPv4") {
        for port in slice.ports.iter().flatten() {
            match port.name.as_deref() {
                Some("http") => activator.http_port = activator.http_port.or(port.port),
                Some("grpc") => activator.grpc_port = activator.grpc_port.or(port.port),
                _ => {}
            }
        }
        for endpoint in slice.endpoints.iter().flatten().filter(|e| ready(e)) {
            activator
                .addresses
                .extend(endpoint.addresses.iter().cloned());
        }
    }
    activator.addresses.sort();
    activator.addresses.dedup();
    activator
}

/// Spec hashes of the objects in front of the pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Front {
    /// The Service's.
    pub service: Option<String>,
    /// The PodDisruptionBudget's.
    pub pod_disruption_budget: Option<String>,
    /// The NetworkPolicy's.
    pub network_policy: Option<String>,
}

/// The ServiceMonitor kind as discovered and the live object's hash.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorSeen {
    /// The kind's resource.
    pub resource: ApiResource,
    /// The live object's spec hash; `None` when absent, unhashed or unreadable (it is then applied).
    pub hash: Option<String>,
}

/// The autoscaler's input.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalingSeen {
    /// What it remembers.
    pub memory: Memory,
    /// The signals, read only when an evaluation is due; `Err` says why none could be read.
    pub reads: Option<Result<Reads, String>>,
}

/// One canary analysis' reads.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisSeen {
    /// The rate window, as PromQL spells it.
    pub window: String,
    /// Canary requests per second, its signals and the stable revision's; `Err` when Prometheus cannot be read.
    pub reads: AnalysisReads,
}

/// Reads everything one reconcile of `md` needs.
pub async fn observe(md: &ModelDeployment, ctx: &Context) -> Result<Observed, Error> {
    let now = crate::clock::now();
    let status = md.status.clone().unwrap_or_default();
    let spec = validate(md);
    let mut observed = Observed {
        spec: spec.clone(),
        generation: md.metadata.generation,
        status,
        job: None,
        stable: None,
        canary: None,
        front: Front::default(),
        monitor: None,
        autoscaling: None,
        analysis: None,
        previous: None,
        store_secret: None,
        pod_failures: vec![],
        zero: None,
        drift: None,
        now,
    };
    let Ok(validated) = spec else {
        return Ok(observed);
    };
    let status = &observed.status;
    observed.job = job(&validated, status, ctx).await?;
    observed.stable =
        get::<Deployment>(ctx, &validated, &validated.name, rbac::GET_DEPLOYMENT).await?;
    // Always: a canary abandoned mid-way (the spec moved on, or off canaries) stays until the stable Deployment
    // has its pods back, by which time nothing in the status says there was one.
    let name = children::canary_name(&validated.name);
    observed.canary = get::<Deployment>(ctx, &validated, &name, rbac::GET_DEPLOYMENT).await?;
    observed.front = Front {
        service: hash_of::<Service>(ctx, &validated, rbac::GET_SERVICE).await?,
        pod_disruption_budget: hash_of::<PodDisruptionBudget>(
            ctx,
            &validated,
            rbac::GET_PODDISRUPTIONBUDGET,
        )
        .await?,
        network_policy: hash_of::<NetworkPolicy>(ctx, &validated, rbac::GET_NETWORKPOLICY).await?,
    };
    observed.monitor = monitor(ctx, &validated).await;
    observed.store_secret = store_secret(ctx, &validated).await;
    if misses_replicas(observed.stable.as_ref()) || misses_replicas(observed.canary.as_ref()) {
        observed.pod_failures = pod_failures(ctx, &validated).await?;
    }
    if validated
        .md
        .spec
        .autoscaling
        .as_ref()
        .is_some_and(|a| a.scale_to_zero.is_some())
    {
        observed.zero = Some(zero(ctx, &validated).await?);
    }
    let secs = now.as_second() as f64;
    // A Deployment at zero replicas has nothing to measure: Prometheus has no series for it.
    let running = observed
        .stable
        .as_ref()
        .is_some_and(|d| d.spec.as_ref().and_then(|spec| spec.replicas) != Some(0));
    observed.autoscaling = autoscaling(ctx, &validated, running, secs).await;
    observed.analysis = analysis(ctx, &validated, &observed, secs).await;
    observed.drift = drift(ctx, &validated, &observed.status, running, now).await;
    let evaluating = observed
        .autoscaling
        .as_ref()
        .is_some_and(|seen| seen.reads.is_some());
    if evaluating
        && validated.md.spec.rollout.rollback_on_accuracy_drop
        && let Some(stable) = &observed.stable
        && children::served_revision(stable).as_deref() == Some(validated.revision.as_str())
    {
        observed.previous = previous(ctx, &validated, stable).await?;
    }
    Ok(observed)
}

async fn get<K>(
    ctx: &Context,
    validated: &Validated,
    name: &str,
    request: Request,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    call(request, &validated.namespace, api.get_opt(name)).await
}

/// The spec hash of the live child named like the ModelDeployment.
async fn hash_of<K>(
    ctx: &Context,
    validated: &Validated,
    request: Request,
) -> Result<Option<String>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Ok(get::<K>(ctx, validated, &validated.name, request)
        .await?
        .and_then(|live| children::spec_hash(&live).map(str::to_owned)))
}

/// The Job of the current revision and its report, unless the status already says the revision is optimized
/// or failed.
async fn job(
    validated: &Validated,
    status: &ModelDeploymentStatus,
    ctx: &Context,
) -> Result<Option<JobSeen>, Error> {
    let revisions = status.revision.clone().unwrap_or_default();
    let optimized = status
        .model
        .as_ref()
        .is_some_and(|m| m.revision.as_deref() == Some(validated.revision.as_str()));
    if revisions.failed.as_deref() == Some(validated.revision.as_str()) || optimized {
        return Ok(None);
    }
    let name = children::job_name(&validated.name, &validated.revision);
    let job = get::<Job>(ctx, validated, &name, rbac::GET_JOB).await?;
    let finished = job.as_ref().is_some_and(|found| {
        found
            .status
            .iter()
            .flat_map(|status| status.conditions.iter().flatten())
            .any(|condition| {
                (condition.type_ == "Complete" || condition.type_ == "Failed")
                    && condition.status == "True"
            })
    });
    let report = if finished {
        read_report(validated, &name, ctx).await?
    } else {
        None
    };
    let cached = match &job {
        None => cached_report(validated, ctx).await,
        Some(_) => None,
    };
    Ok(Some(JobSeen {
        job,
        report,
        cached,
    }))
}

/// The shared optimize cache's entry for this spec, from the operator's artifact store with the operator's own
/// keys. A store that cannot be read is a miss (logged): the Job then optimizes, as without a cache.
async fn cached_report(validated: &Validated, ctx: &Context) -> Option<OptimizeReport> {
    let store = ctx.build.artifact_store.as_ref()?;
    let key = tractor_api::revision::cache_key(&validated.md.spec)?;
    let read = tokio::time::timeout(
        CACHE_READ_TIMEOUT,
        tractor_store::read_cache(&store.uri, &key),
    )
    .await
    .unwrap_or_else(|_| Err(format!("no answer in {} s", CACHE_READ_TIMEOUT.as_secs())));
    match read {
        Ok(found) => found,
        Err(why) => {
            tracing::warn!(store = %store.uri, key, "shared optimize cache unreadable, optimizing: {why}");
            None
        }
    }
}

/// How long a cache lookup may hold a reconcile before the Job runs instead.
const CACHE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The report of the Job's newest terminated optimize container, from its termination message.
async fn read_report(
    validated: &Validated,
    job: &str,
    ctx: &Context,
) -> Result<Option<OptimizeReport>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    let list = call(
        rbac::LIST_JOB_PODS,
        &validated.namespace,
        pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))),
    )
    .await?;
    let mut found: Vec<(Option<Timestamp>, OptimizeReport)> = list
        .items
        .iter()
        .flat_map(|pod| {
            pod.status
                .iter()
                .flat_map(|status| status.container_statuses.iter().flatten())
        })
        .filter(|container| container.name == names::COMPONENT_OPTIMIZE)
        .filter_map(|container| container.state.as_ref()?.terminated.clone())
        .filter_map(|terminated| {
            let report =
                serde_json::from_str::<OptimizeReport>(terminated.message.as_deref()?.trim())
                    .ok()?;
            Some((terminated.finished_at.map(|at| at.0), report))
        })
        .collect();
    found.sort_by_key(|(at, _)| *at);
    Ok(found.pop().map(|(_, report)| report))
}

/// The ServiceMonitor kind and the live object's hash. Optional: a failed read leaves it to be applied, and a
/// failure there is logged, never fatal.
async fn monitor(ctx: &Context, validated: &Validated) -> Option<MonitorSeen> {
    let resource = crate::monitor::shared()
        .service_monitor(&ctx.client)
        .await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &validated.namespace, &resource);
    let hash = call(
        rbac::GET_SERVICEMONITOR,
        &validated.namespace,
        api.get_opt(&validated.name),
    )
    .await
    .ok()
    .flatten()
    .and_then(|live| children::spec_hash(&live).map(str::to_owned));
    Some(MonitorSeen { resource, hash })
}

/// The autoscaler's memory, and its reads when an evaluation is due and something serves.
async fn autoscaling(
    ctx: &Context,
    validated: &Validated,
    serving: bool,
    now: f64,
) -> Option<AutoscalingSeen> {
    let spec = validated.md.spec.autoscaling.as_ref()?;
    let memory = ctx.autoscaler.memory(&object_key(&validated.md));
    let due = autoscaler::not_due(&memory, autoscaler::interval(spec), now).is_none();
    let reads = if due && serving {
        let revision = autoscaler::serving_revision(validated);
        Some(
            match prometheus(ctx, validated, spec.prometheus.as_ref()).await {
                Ok(server) => Ok(ctx
                    .autoscaler
                    .read(&server, validated, spec, &revision)
                    .await),
                Err(why) => Err(why),
            },
        )
    } else {
        None
    };
    Some(AutoscalingSeen { memory, reads })
}

/// A canary analysis' reads, when a canary is in progress, its pods are ready and its analysis is due.
async fn analysis(
    ctx: &Context,
    validated: &Validated,
    observed: &Observed,
    now: f64,
) -> Option<AnalysisSeen> {
    let spec = rollout::canary_spec(validated)?;
    let stable_revision = children::served_revision(observed.stable.as_ref()?)?;
    let progressing = matches!(
        rollout::restore(&observed.status, &validated.revision),
        canary::State::Progressing { .. }
    );
    let ready = observed
        .canary
        .as_ref()
        .is_some_and(|canary| rollout::rolled_out(canary, &validated.revision));
    let every = rollout::analysis_interval(spec);
    if !(progressing && ready && ctx.rollouts.due(&object_key(&validated.md), now, every)) {
        return None;
    }
    let window = prom::window(autoscaler::rate_window(every));
    if spec.analysis.is_none() {
        // Nothing to read: every analysis passes.
        return Some(AnalysisSeen {
            window,
            reads: Ok((0.0, Signals::default(), Signals::default())),
        });
    }
    let server = match spec_prometheus(ctx, validated).await {
        Ok(server) => server,
        Err(why) => {
            return Some(AnalysisSeen {
                window,
                reads: Err(format!("Prometheus: {why}")),
            });
        }
    };
    let client = ctx.autoscaler.prometheus();
    let read = |deployment: String, revision: String| {
        let sel = Selector {
            namespace: validated.namespace.clone(),
            model: validated.name.clone(),
            deployment: Some(deployment),
            revision: Some(revision),
        };
        let (server, window) = (server.clone(), window.clone());
        async move {
            let value = |query: String| {
                let server = server.clone();
                async move { client.value(&server, &query).await }
            };
            let rps = value(prom::requests_per_second(&sel, &window)).await;
            let signals = Signals {
                latency_p95_millis: value(prom::latency(&sel, 0.95, &window))
                    .await
                    .ok()
                    .map(|seconds| seconds * 1000.0),
                error_rate: value(prom::error_rate(&sel, &window)).await.ok(),
                accuracy: match (
                    value(prom::accuracy(&sel)).await,
                    value(prom::labelled(&sel)).await,
                ) {
                    (Ok(share), Ok(labelled)) => Some(Accuracy { share, labelled }),
                    _ => None,
                },
            };
            (rps, signals)
        }
    };
    let (canary_rps, canary) = read(
        children::canary_name(&validated.name),
        validated.revision.clone(),
    )
    .await;
    let reads = match canary_rps {
        Err(error) => Err(format!("Prometheus: {error}")),
        // Nothing to compare: the verdict is inconclusive without the stable revision's figures.
        Ok(rps) if rps <= 0.0 => Ok((rps, canary, Signals::default())),
        Ok(rps) => {
            let (_, stable) = read(validated.name.clone(), stable_revision).await;
            Ok((rps, canary, stable))
        }
    };
    Some(AnalysisSeen { window, reads })
}

/// The serving revision's drift scores, when `monitoring.drift` asks, a read is due and something serves.
async fn drift(
    ctx: &Context,
    validated: &Validated,
    status: &ModelDeploymentStatus,
    serving: bool,
    now: Timestamp,
) -> Option<Result<DriftReads, String>> {
    let spec = validated.md.spec.monitoring.as_ref()?.drift.as_ref()?;
    if !serving || drift::not_due(status.drift.as_ref(), spec, now).is_some() {
        return None;
    }
    let server = match spec_prometheus(ctx, validated).await {
        Ok(server) => server,
        Err(why) => return Some(Err(format!("Prometheus: {why}"))),
    };
    let sel = Selector {
        namespace: validated.namespace.clone(),
        model: validated.name.clone(),
        deployment: None,
        revision: Some(autoscaler::serving_revision(validated)),
    };
    let client = ctx.autoscaler.prometheus();
    let rows = match client.value(&server, &prom::drift_rows(&sel)).await {
        Ok(rows) => rows,
        Err(prom::QueryError::Empty(_)) => {
            return Some(Err(format!(
                "no drift scores for revision {}: its pods export them once they serve rows, and only with \
                 a reference (optimize.evaluation.dataset)",
                sel.revision.as_deref().unwrap_or_default()
            )));
        }
        Err(error) => return Some(Err(format!("Prometheus: {error}"))),
    };
    let features = match client
        .values_by(&server, &prom::input_drift(&sel), metrics::FEATURE)
        .await
    {
        Ok(features) => features,
        // No rows yet in any window: nothing scored.
        Err(prom::QueryError::Empty(_)) => vec![],
        Err(error) => return Some(Err(format!("Prometheus: {error}"))),
    };
    let prediction = client
        .value(&server, &prom::prediction_drift(&sel))
        .await
        .ok();
    Some(Ok(DriftReads {
        rows,
        features,
        prediction,
    }))
}

/// Whether the artifact store's Secret exists in the model's namespace. Its metadata only: the operator never
/// holds the store's credentials, which reach the Job and pods as environment references.
async fn store_secret(ctx: &Context, validated: &Validated) -> Option<Result<bool, String>> {
    let store = ctx.build.artifact_store.as_ref()?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    let found = call(
        rbac::GET_SECRET,
        &validated.namespace,
        api.get_metadata_opt(&store.secret),
    )
    .await;
    Some(
        found
            .map(|meta| meta.is_some())
            .map_err(|error| error.to_string()),
    )
}

/// The Prometheus the canary analysis and the drift check read: the autoscaler's (`autoscaling.prometheus`, else
/// the operator's `--prometheus-url`).
async fn spec_prometheus(ctx: &Context, validated: &Validated) -> Result<Server, String> {
    let source = validated
        .md
        .spec
        .autoscaling
        .as_ref()
        .and_then(|autoscaling| autoscaling.prometheus.as_ref());
    prometheus(ctx, validated, source).await
}

/// The Prometheus a spec reads, with the Secret its header comes from.
async fn prometheus(
    ctx: &Context,
    validated: &Validated,
    source: Option<&PrometheusSource>,
) -> Result<Server, String> {
    let secret = match source.and_then(|s| s.header_secret_ref.as_ref()) {
        None => None,
        Some(r) => get::<Secret>(ctx, validated, &r.name, rbac::GET_SECRET)
            .await
            .map_err(|e| format!("holding replicas: cannot read Secret {}: {e}", r.name))?,
    };
    ctx.autoscaler.server(source, secret.as_ref())
}

/// The newest earlier revision the serving Deployment's ReplicaSets remember.
async fn previous(
    ctx: &Context,
    validated: &Validated,
    stable: &Deployment,
) -> Result<Option<Previous>, Error> {
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    let list = call(
        rbac::LIST_REPLICASETS,
        &validated.namespace,
        sets.list(
            &ListParams::default().labels(&children::server_selector_string(&validated.name)),
        ),
    )
    .await?;
    Ok(rollout::previous(stable, &list.items, &validated.revision))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(component: &str, init: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("m-1".into()),
                labels: Some(
                    [
                        (names::LABEL_COMPONENT.to_owned(), component.to_owned()),
                        (names::LABEL_REVISION.to_owned(), "r1".to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                init_container_statuses: Some(init),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn terminated(exit_code: i32, message: &str, last: bool) -> ContainerStatus {
        let state = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: Some(message.into()),
                reason: Some("Error".into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        let (state, last_state) = if last {
            (None, Some(state))
        } else {
            (Some(state), None)
        };
        ContainerStatus {
            name: "fetch".into(),
            state,
            last_state,
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn init_container_failures_are_read_from_the_termination_message() {
        let json = r#"{"uri":"s3://b/sha256/aa","reason":"DigestMismatch","message":"sha256 is bb, expected aa"}"#;
        let cases = [
            // (component, init status, want (reason, message))
            (
                names::COMPONENT_SERVER,
                terminated(1, json, false),
                Some(("DigestMismatch", "sha256 is bb, expected aa")),
            ),
            // Crash-looping: the last termination says why while the container waits to restart.
            (
                names::COMPONENT_SERVER,
                terminated(1, json, true),
                Some(("DigestMismatch", "sha256 is bb, expected aa")),
            ),
            // Not one of tractor's lines: the kubelet's reason and the text as it is.
            (
                names::COMPONENT_SERVER,
                terminated(137, "killed", false),
                Some(("Error", "killed")),
            ),
            (names::COMPONENT_SERVER, terminated(0, json, false), None),
            (names::COMPONENT_OPTIMIZE, terminated(1, json, false), None),
        ];
        for (component, status, want) in cases {
            let got = pod_failure(&pod(component, vec![status.clone()]));
            assert_eq!(
                got.as_ref()
                    .map(|failure| (failure.reason.as_str(), failure.message.as_str())),
                want,
                "{component} {status:?}"
            );
            if let Some(failure) = got {
                assert_eq!(
                    (
                        failure.pod.as_str(),
                        failure.revision.as_str(),
                        failure.container.as_str()
                    ),
                    ("m-1", "r1", "fetch")
                );
            }
        }
    }
}
