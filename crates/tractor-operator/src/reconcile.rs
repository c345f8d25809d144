//! The reconcile pipeline: validate (pure) → optimize Job state → build children (pure) → apply → status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};
use tractor_api::conditions::{self, reason};
use tractor_api::names::{self, FIELD_MANAGER};
use tractor_api::report::{FailureReason, OptimizeReport};
use tractor_api::{ModelDeployment, ModelDeploymentStatus, ModelStatus, Phase, RevisionStatus};

use crate::autoscaler::{self, Autoscaler, Evaluation, Outcome};
use crate::build::{self, BuildConfig};
use crate::error::{Error, call, is_not_found};
use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::rbac::{self, Request};
use crate::rollout;
use crate::validate::{Validated, validate};

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// Builder settings (image).
    pub build: BuildConfig,
    /// Event recorder (one per operator; repeats of a message fold into one Event).
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// The autoscaler and its Prometheus client.
    pub autoscaler: Autoscaler,
    /// Canary analysis pacing.
    pub rollouts: crate::rollout::Rollouts,
    /// The status this operator last wrote, newer than the store's until the watch delivers it.
    pub written: crate::fresh::Written,
    /// Consecutive failed reconciles per object, for [`error_policy`]'s backoff.
    pub failures: crate::backoff::Failures,
}

/// `namespace/name`, the key of per-object state.
fn object_key(md: &ModelDeployment) -> String {
    format!(
        "{}/{}",
        md.metadata.namespace.as_deref().unwrap_or_default(),
        md.metadata.name.as_deref().unwrap_or_default()
    )
}

/// How long a Job may be complete without its report before the revision is marked failed. The kubelet
/// writes the termination message before the Job controller can see the pod succeed, so this only covers
/// a container that exited 0 without writing one.
const REPORT_GRACE: Duration = Duration::from_secs(60);
/// Requeue when all is well: watches bring changes; this only heals missed events.
const HEALTHY_REQUEUE: Duration = Duration::from_secs(300);

/// Where the optimize step stands for the revision the spec asks for.
enum ModelState {
    /// The current revision's artifact is known.
    Ready(ModelStatus),
    /// The Job is running (or about to).
    Optimizing,
    /// The Job failed; not retried until the spec changes.
    Failed { reason: String, message: String },
}

/// Reconciles one ModelDeployment.
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut timer = ctx.metrics.start();
    // Children carry owner references: deletion cascades without a finalizer.
    if md.metadata.deletion_timestamp.is_some() {
        ctx.written.forget(&md);
        ctx.failures.reset(&object_key(&md));
        timer.ok();
        return Ok(Action::await_change());
    }
    let md = ctx.written.latest(md);
    let action = apply(&md, &ctx).await?;
    ctx.failures.reset(&object_key(&md));
    timer.ok();
    Ok(action)
}

/// Failures back off per object: transient ones exponentially with jitter up to [`crate::backoff::CAP`],
/// counted from this object's last success; an API refusal of what the spec builds waits for a change.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&md);
    let failures = ctx.failures.record(&key);
    let category = error.category();
    ctx.metrics.failed(category);
    match crate::backoff::retry(category, failures, crate::backoff::jitter(&key, failures)) {
        crate::backoff::Retry::After(delay) => {
            warn!(%error, failures, retry_in_secs = delay.as_secs_f64(), "reconcile failed");
            Action::requeue(delay)
        }
        crate::backoff::Retry::OnChange => {
            warn!(%error, failures, "reconcile failed; retried when the object changes");
            Action::await_change()
        }
    }
}

async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let old = md.status.clone().unwrap_or_default();
    let mut v = match validate(md) {
        Ok(v) => v,
        Err(invalid) => {
            let mut status = old.clone();
            status.observed_generation = md.metadata.generation;
            status.phase = Some(Phase::Failed);
            let now = now();
            let g = md.metadata.generation;
            conditions::set(
                &mut status.conditions,
                conditions::new(
                    conditions::STALLED,
                    true,
                    reason::INVALID_SPEC,
                    invalid.to_string(),
                    g,
                    now.clone(),
                ),
            );
            conditions::set(
                &mut status.conditions,
                conditions::new(
                    conditions::READY,
                    false,
                    reason::INVALID_SPEC,
                    invalid.to_string(),
                    g,
                    now.clone(),
                ),
            );
            conditions::set(
                &mut status.conditions,
                conditions::new(
                    conditions::RECONCILING,
                    false,
                    reason::INVALID_SPEC,
                    "",
                    g,
                    now,
                ),
            );
            write_status(md, &old, status, ctx).await?;
            return Ok(Action::await_change());
        }
    };

    let (mut state, requeue) = model_state(&v, &old, ctx).await?;
    let mut serving_model = match &state {
        ModelState::Ready(m) => Some(m.clone()),
        _ => old.model.clone(),
    };

    // The autoscaler decides before the Deployment is built, so the count it picks is the one applied.
    let scaling = autoscale(&v, serving_model.is_some(), ctx).await;
    if let Some(Evaluation::Done(o)) = &scaling {
        v.md.status
            .get_or_insert_with(Default::default)
            .desired_replicas = Some(o.replicas);
    }

    // Front objects exist from the start, so the URL resolves as soon as a pod is ready.
    apply_child(
        ctx,
        &v,
        build::service(&v),
        rbac::GET_SERVICE,
        rbac::APPLY_SERVICE,
    )
    .await?;
    apply_child(
        ctx,
        &v,
        build::pod_disruption_budget(&v),
        rbac::GET_PODDISRUPTIONBUDGET,
        rbac::APPLY_PODDISRUPTIONBUDGET,
    )
    .await?;
    apply_child(
        ctx,
        &v,
        build::network_policy(&v),
        rbac::GET_NETWORKPOLICY,
        rbac::APPLY_NETWORKPOLICY,
    )
    .await?;
    // Optional: a cluster with the Prometheus Operator gets a ServiceMonitor; failing to write it (RBAC not
    // granted for it, say) must not hold up serving.
    if let Err(e) =
        crate::monitor::apply(&ctx.client, crate::monitor::shared(), &v, FIELD_MANAGER).await
    {
        tracing::warn!(error = %e, "ServiceMonitor not applied");
    }
    // rollbackOnAccuracyDrop: the current revision serves, and its accuracy stayed below the floor for the
    // window. It is marked failed like a rolled-back canary, so it is not tried again until the spec changes.
    if let (ModelState::Ready(_), Some(Evaluation::Done(o))) = (&state, &scaling)
        && v.md.spec.rollout.rollback_on_accuracy_drop
        && let Some((true, why)) = &o.degraded
        && let Some(previous) = rollout::return_to_previous(ctx, &v).await?
    {
        info!(name = %v.name, namespace = %v.namespace, %previous, "accuracy rollback");
        state = ModelState::Failed {
            reason: reason::ACCURACY_ROLLBACK.to_owned(),
            message: format!("{why}; returned to revision {previous}"),
        };
    }

    let mut canary = None;
    let deployment = match &state {
        ModelState::Ready(model) => match rollout::progress(&v, model, &old, ctx).await? {
            Some(p) => {
                let stable = p.stable.clone();
                canary = Some(p);
                Some(stable)
            }
            None => {
                let d = apply_child(
                    ctx,
                    &v,
                    build::deployment(&v, model, &ctx.build),
                    rbac::GET_DEPLOYMENT,
                    rbac::APPLY_DEPLOYMENT,
                )
                .await?;
                rollout::tidy(ctx, &v, &old, Some(&d), false).await?;
                Some(d)
            }
        },
        // The spec now describes a revision that is not built (yet, or ever): the serving Deployment was
        // rendered from the previous spec's source and must keep it. Only the replica count follows.
        failed_or_optimizing => {
            let d = keep_serving(&v, ctx).await?;
            let failed = matches!(failed_or_optimizing, ModelState::Failed { .. });
            rollout::tidy(ctx, &v, &old, d.as_ref(), failed).await?;
            d
        }
    };
    if let Some(crate::canary::State::RolledBack { reason: why, .. }) =
        canary.as_ref().map(|p| &p.state)
    {
        state = ModelState::Failed {
            reason: reason::ROLLED_BACK.to_owned(),
            message: why.clone(),
        };
    }
    if matches!(state, ModelState::Failed { .. })
        && let Some(model) = deployment.as_ref().and_then(build::served_model)
    {
        // What the stable Deployment serves, which after a rollback is not the model last optimized.
        serving_model = Some(model);
    }

    let mut status = compute_status(&v, &old, &state, serving_model, deployment.as_ref());
    match &canary {
        Some(p) => rollout::record(&mut status, &v, p),
        None => rollout::clear(&mut status),
    }
    if let Some(Evaluation::Done(o)) = &scaling {
        record_scaling(&v, &mut status, o);
        if o.scaled() {
            let event = Event {
                type_: EventType::Normal,
                reason: reason::SCALING.into(),
                note: Some(format!(
                    "replicas {} -> {}: {}",
                    o.previous, o.replicas, o.why
                )),
                action: "Autoscale".into(),
                secondary: None,
            };
            publish(ctx, md, &event).await;
        }
    }
    let became_ready = !conditions::is_true(&old.conditions, conditions::READY)
        && conditions::is_true(&status.conditions, conditions::READY);
    if became_ready {
        prune_old_jobs(&v, &status, ctx).await?;
    }
    write_status(md, &old, status.clone(), ctx).await?;

    let after = match (&state, requeue) {
        (_, Some(after)) => after,
        (ModelState::Optimizing, None) => Duration::from_secs(30),
        _ if conditions::is_true(&status.conditions, conditions::READY) => HEALTHY_REQUEUE,
        // Rolling out: Deployment status changes wake us; the requeue covers a stuck watch.
        _ => Duration::from_secs(60),
    };
    // The autoscaler's interval is the one requeue shorter than minutes.
    let next_evaluation = match &scaling {
        Some(Evaluation::Done(o)) => Some(o.next_in),
        Some(Evaluation::NotDue { next_in }) => Some(*next_in),
        None => None,
    };
    let next_evaluation = match (&canary, next_evaluation) {
        (Some(p), Some(n)) => Some(p.requeue.min(n)),
        (Some(p), None) => Some(p.requeue),
        (None, n) => n,
    };
    Ok(Action::requeue(
        next_evaluation.map_or(after, |n| n.min(after)),
    ))
}

/// Runs the autoscaler when the spec asks for it and something is serving.
async fn autoscale(v: &Validated, serving: bool, ctx: &Context) -> Option<Evaluation> {
    let Some(a) = &v.md.spec.autoscaling else {
        ctx.autoscaler.forget(v);
        return None;
    };
    if !serving {
        return None;
    }
    let current = build::desired_replicas(&v.md);
    let evaluation = ctx.autoscaler.evaluate(v, a, current, &ctx.client).await;
    if let Evaluation::Done(o) = &evaluation {
        let result = if o.scaled() {
            "scaled"
        } else if o.active.0 {
            "unchanged"
        } else {
            "held"
        };
        ctx.metrics
            .autoscaler_evaluations
            .with_label_values(&[result])
            .inc();
        info!(name = %v.name, namespace = %v.namespace, result, why = %o.why, "autoscaler");
    }
    Some(evaluation)
}

/// Writes one autoscaler outcome into the status: count, snapshot, `ScalingActive`, `Degraded`.
fn record_scaling(v: &Validated, status: &mut ModelDeploymentStatus, o: &Outcome) {
    let g = v.md.metadata.generation;
    autoscaler::record(status, o);
    let (active, r, message) = &o.active;
    conditions::set(
        &mut status.conditions,
        conditions::new(
            conditions::SCALING_ACTIVE,
            *active,
            r,
            message.clone(),
            g,
            now(),
        ),
    );
    match &o.degraded {
        Some((true, message)) => {
            conditions::set(
                &mut status.conditions,
                conditions::new(
                    conditions::DEGRADED,
                    true,
                    reason::ACCURACY_BELOW_FLOOR,
                    message.clone(),
                    g,
                    now(),
                ),
            );
        }
        Some((false, message)) => {
            conditions::set(
                &mut status.conditions,
                conditions::new(
                    conditions::DEGRADED,
                    false,
                    reason::HEALTHY,
                    message.clone(),
                    g,
                    now(),
                ),
            );
        }
        None => {}
    }
    if conditions::is_true(&status.conditions, conditions::DEGRADED)
        && status.phase == Some(Phase::Ready)
    {
        status.phase = Some(Phase::Degraded);
    }
}

/// How the Stalled and Ready messages of a failed revision begin.
fn stall_prefix(revision: &str, why: &str) -> String {
    if rolled_back(why) {
        format!("revision {revision} rolled back: ")
    } else {
        format!("optimize failed for revision {revision}: ")
    }
}

/// True for the reasons of a revision that optimized well but was rolled back.
fn rolled_back(why: &str) -> bool {
    why == reason::ROLLED_BACK || why == reason::ACCURACY_ROLLBACK
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Finds or starts the optimize Job of the current revision and reads its outcome.
async fn model_state(
    v: &Validated,
    old: &ModelDeploymentStatus,
    ctx: &Context,
) -> Result<(ModelState, Option<Duration>), Error> {
    // Failed first: a rolled-back canary's model was optimized, and must not serve again.
    let revisions = old.revision.clone().unwrap_or_default();
    if revisions.failed.as_deref() == Some(v.revision.as_str()) {
        let stalled = conditions::find(&old.conditions, conditions::STALLED);
        let why = stalled
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| reason::OPTIMIZE_FAILED.to_owned());
        // The condition's message carries the prefix `compute_status` adds; take it off again, or each
        // reconcile would prefix it once more.
        let message = stalled
            .map(|c| {
                let prefix = stall_prefix(&v.revision, &why);
                c.message
                    .strip_prefix(&prefix)
                    .unwrap_or(&c.message)
                    .to_owned()
            })
            .unwrap_or_default();
        return Ok((
            ModelState::Failed {
                reason: why,
                message,
            },
            None,
        ));
    }
    if let Some(model) = old
        .model
        .as_ref()
        .filter(|m| m.revision.as_deref() == Some(v.revision.as_str()))
    {
        return Ok((ModelState::Ready(model.clone()), None));
    }

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let name = build::job_name(&v.name, &v.revision);
    let job = match call(rbac::GET_JOB, &v.namespace, jobs.get_opt(&name)).await? {
        Some(job) => job,
        None => {
            // A Job's pod template is immutable, so it is created once per revision, never re-applied.
            let job = build::optimize_job(v, &ctx.build);
            match call(
                rbac::CREATE_JOB,
                &v.namespace,
                jobs.create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.to_owned()),
                        ..Default::default()
                    },
                    &job,
                ),
            )
            .await
            {
                Ok(job) => {
                    ctx.metrics.child_applies.with_label_values(&["Job"]).inc();
                    info!(job = %name, "started optimize Job");
                    job
                }
                Err(Error::Api {
                    source: kube::Error::Api(s),
                    ..
                }) if s.code == 409 => {
                    return Ok((ModelState::Optimizing, Some(Duration::from_secs(2))));
                }
                Err(e) => return Err(e),
            }
        }
    };
    let job_status = job.status.clone().unwrap_or_default();
    let condition = |t: &str| {
        job_status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
            .cloned()
    };
    let complete = condition("Complete");
    let failed = condition("Failed");
    if complete.is_none() && failed.is_none() {
        return Ok((ModelState::Optimizing, None));
    }
    let report = read_report(v, &name, ctx).await?;
    if let Some(done) = complete {
        return Ok(match report {
            Some(r) if r.succeeded() => {
                let mut model = r.model_status();
                model.revision = Some(v.revision.clone());
                (ModelState::Ready(model), None)
            }
            Some(r) => (failure_state(&r), None),
            None => {
                let since = done
                    .last_transition_time
                    .map(|t| t.0)
                    .unwrap_or_else(Timestamp::now);
                let waited = Timestamp::now().duration_since(since).as_secs_f64();
                if waited < REPORT_GRACE.as_secs_f64() {
                    (ModelState::Optimizing, Some(Duration::from_secs(3)))
                } else {
                    (
                        failure_state(&OptimizeReport::failure(
                            FailureReason::Internal,
                            "the optimize Job completed without writing a report to its termination message",
                        )),
                        None,
                    )
                }
            }
        });
    }
    let failed = failed.unwrap_or_default();
    Ok((
        match report {
            Some(r) if r.reason.is_some() => failure_state(&r),
            _ => ModelState::Failed {
                reason: failed
                    .reason
                    .unwrap_or_else(|| reason::OPTIMIZE_FAILED.to_owned()),
                message: failed
                    .message
                    .unwrap_or_else(|| "the optimize Job failed without a report".to_owned()),
            },
        },
        None,
    ))
}

fn failure_state(report: &OptimizeReport) -> ModelState {
    let code = report
        .reason
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| reason::OPTIMIZE_FAILED.to_owned());
    ModelState::Failed {
        reason: code,
        message: report.message.clone(),
    }
}

/// The report of the Job's newest terminated optimize container, from its termination message.
async fn read_report(
    v: &Validated,
    job: &str,
    ctx: &Context,
) -> Result<Option<OptimizeReport>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let list = call(
        rbac::LIST_JOB_PODS,
        &v.namespace,
        pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))),
    )
    .await?;
    let mut found: Vec<(Option<Timestamp>, OptimizeReport)> = list
        .items
        .iter()
        .flat_map(|pod| {
            pod.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .filter(|c| c.name == names::COMPONENT_OPTIMIZE)
        .filter_map(|c| c.state.as_ref()?.terminated.clone())
        .filter_map(|t| {
            let report =
                serde_json::from_str::<OptimizeReport>(t.message.as_deref()?.trim()).ok()?;
            Some((t.finished_at.map(|f| f.0), report))
        })
        .collect();
    found.sort_by_key(|(at, _)| *at);
    Ok(found.pop().map(|(_, r)| r))
}

/// Leaves the previous revision's Deployment as it is, except for the replica count.
async fn keep_serving(v: &Validated, ctx: &Context) -> Result<Option<Deployment>, Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let Some(live) = call(rbac::GET_DEPLOYMENT, &v.namespace, api.get_opt(&v.name)).await? else {
        return Ok(None);
    };
    let desired = build::desired_replicas(&v.md);
    Ok(Some(scale_deployment(ctx, v, &live, desired).await?))
}

/// Sets the serving Deployment's replica count, leaving its template alone; no write when it already has it.
pub(crate) async fn scale_deployment(
    ctx: &Context,
    v: &Validated,
    live: &Deployment,
    replicas: i32,
) -> Result<Deployment, Error> {
    if live.spec.as_ref().and_then(|s| s.replicas) == Some(replicas) {
        return Ok(live.clone());
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patched = call(
        rbac::SCALE_DEPLOYMENT,
        &v.namespace,
        api.patch(&v.name, &params, &Patch::Merge(&patch)),
    )
    .await?;
    ctx.metrics
        .child_applies
        .with_label_values(&["Deployment"])
        .inc();
    Ok(patched)
}

/// Publishes an event about the ModelDeployment. Events are best effort: losing one must not fail the
/// reconcile.
pub(crate) async fn publish(ctx: &Context, md: &ModelDeployment, event: &Event) {
    if let Err(e) = ctx.recorder.publish(event, &md.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// Server-side applies a child unless the live one already carries the same content hash: a steady state
/// sends no writes at all. `get` and `apply` are the child kind's two requests.
pub(crate) async fn apply_child<K>(
    ctx: &Context,
    v: &Validated,
    desired: K,
    get: Request,
    apply: Request,
) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let desired = build::with_spec_hash(desired);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let name = desired.name_any();
    if let Some(live) = call(get, &v.namespace, api.get_opt(&name)).await?
        && build::spec_hash(&live).is_some()
        && build::spec_hash(&live) == build::spec_hash(&desired)
    {
        return Ok(live);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = call(
        apply,
        &v.namespace,
        api.patch(&name, &params, &Patch::Apply(&desired)),
    )
    .await?;
    ctx.metrics
        .child_applies
        .with_label_values(&[&K::kind(&())])
        .inc();
    Ok(applied)
}

/// The truthful status for what was just observed. Pure.
fn compute_status(
    v: &Validated,
    old: &ModelDeploymentStatus,
    state: &ModelState,
    serving_model: Option<ModelStatus>,
    deployment: Option<&Deployment>,
) -> ModelDeploymentStatus {
    let g = v.md.metadata.generation;
    let now = now();
    let mut status = old.clone();
    status.observed_generation = g;
    status.selector = Some(build::server_selector_string(&v.name));
    status.url = Some(format!(
        "http://{name}.{ns}.svc:{port}/v2/models/{name}",
        name = v.name,
        ns = v.namespace,
        port = names::HTTP_PORT
    ));
    status.model = serving_model.clone();

    let desired = build::desired_replicas(&v.md);
    let d_status = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let d_generation = deployment.and_then(|d| d.metadata.generation);
    status.replicas = Some(d_status.replicas.unwrap_or(0));
    status.ready_replicas = Some(d_status.ready_replicas.unwrap_or(0));
    let serving_revision = serving_model.as_ref().and_then(|m| m.revision.clone());
    let rolled_out = deployment.is_some()
        && d_status.observed_generation >= d_generation
        && d_status.updated_replicas.unwrap_or(0) == desired
        && d_status.replicas.unwrap_or(0) == desired
        && d_status.available_replicas.unwrap_or(0) == desired;
    let available = d_status.available_replicas.unwrap_or(0) >= desired.min(1)
        && deployment.is_some()
        && desired > 0
        || (desired == 0 && deployment.is_some());

    let mut revision = old.revision.clone().unwrap_or_default();
    revision.current = Some(v.revision.clone());
    let (model_ready, stalled) = match state {
        ModelState::Ready(_) => {
            revision.failed = None;
            (true, None)
        }
        ModelState::Optimizing => (false, None),
        ModelState::Failed { reason, message } => {
            revision.failed = Some(v.revision.clone());
            (false, Some((reason.clone(), message.clone())))
        }
    };
    if rolled_out {
        revision.stable = serving_revision.clone();
    }
    status.revision = Some(RevisionStatus { ..revision });

    let set = |status: &mut ModelDeploymentStatus, t: &str, ok: bool, r: &str, m: String| {
        conditions::set(
            &mut status.conditions,
            conditions::new(t, ok, r, m, g, now.clone()),
        );
    };
    match state {
        ModelState::Ready(m) => set(
            &mut status,
            conditions::MODEL_READY,
            true,
            reason::OPTIMIZED,
            format!(
                "revision {} optimized: {}",
                v.revision,
                m.precision
                    .and_then(|p| serde_json::to_value(p).ok())
                    .and_then(|p| p.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "f32".into())
            ),
        ),
        ModelState::Optimizing => set(
            &mut status,
            conditions::MODEL_READY,
            false,
            reason::OPTIMIZING,
            format!(
                "optimize Job {} is running",
                build::job_name(&v.name, &v.revision)
            ),
        ),
        // A rolled-back revision's model was optimized well; ModelReady keeps saying so.
        ModelState::Failed { reason: r, .. } if rolled_back(r) => {}
        ModelState::Failed { reason: r, message } => set(
            &mut status,
            conditions::MODEL_READY,
            false,
            r,
            message.clone(),
        ),
    }
    let ready_count = d_status.ready_replicas.unwrap_or(0);
    if deployment.is_some() {
        set(
            &mut status,
            conditions::AVAILABLE,
            available,
            if available {
                reason::AVAILABLE
            } else {
                reason::REPLICAS_UNAVAILABLE
            },
            format!("{ready_count}/{desired} replicas ready"),
        );
    } else {
        set(
            &mut status,
            conditions::AVAILABLE,
            false,
            reason::OPTIMIZING,
            "no model has been optimized yet".to_owned(),
        );
    }
    let ready =
        model_ready && rolled_out && serving_revision.as_deref() == Some(v.revision.as_str());
    match &stalled {
        Some((r, m)) => {
            set(
                &mut status,
                conditions::STALLED,
                true,
                r,
                format!("{}{m}", stall_prefix(&v.revision, r)),
            );
            set(
                &mut status,
                conditions::RECONCILING,
                false,
                if rolled_back(r) {
                    r
                } else {
                    reason::OPTIMIZE_FAILED
                },
                String::new(),
            );
            let serving = if deployment.is_some() {
                "; the previous revision keeps serving"
            } else {
                ""
            };
            set(
                &mut status,
                conditions::READY,
                false,
                r,
                format!("{}{m}{serving}", stall_prefix(&v.revision, r)),
            );
        }
        None => {
            conditions::remove(&mut status.conditions, conditions::STALLED);
            let (r, m) = if ready {
                (reason::RECONCILED, String::new())
            } else if !model_ready {
                (
                    reason::OPTIMIZING,
                    format!("optimizing revision {}", v.revision),
                )
            } else {
                (
                    reason::ROLLING_OUT,
                    format!(
                        "rolling out revision {}: {ready_count}/{desired} replicas ready",
                        v.revision
                    ),
                )
            };
            set(&mut status, conditions::RECONCILING, !ready, r, m.clone());
            set(
                &mut status,
                conditions::READY,
                ready,
                if ready { reason::AVAILABLE } else { r },
                if ready {
                    format!("{ready_count}/{desired} replicas ready")
                } else {
                    m
                },
            );
        }
    }
    if conditions::find(&status.conditions, conditions::DEGRADED).is_none() {
        set(
            &mut status,
            conditions::DEGRADED,
            false,
            reason::HEALTHY,
            String::new(),
        );
    }
    if v.md.spec.autoscaling.is_none() {
        set(
            &mut status,
            conditions::SCALING_ACTIVE,
            false,
            reason::NOT_CONFIGURED,
            "spec.autoscaling is not set".to_owned(),
        );
    }
    status.phase = Some(if stalled.is_some() {
        Phase::Failed
    } else if ready {
        Phase::Ready
    } else if !model_ready {
        Phase::Optimizing
    } else {
        Phase::RollingOut
    });
    status
}

/// Patches the status subresource only when something changed, and records transitions as events.
async fn write_status(
    md: &ModelDeployment,
    old: &ModelDeploymentStatus,
    new: ModelDeploymentStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if *old == new {
        return Ok(());
    }
    for event in transitions(old, &new) {
        publish(ctx, md, &event).await;
    }
    let namespace = md.namespace().unwrap_or_default();
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", names::GROUP, names::VERSION),
        "kind": "ModelDeployment",
        "status": new,
    });
    match call(
        rbac::PATCH_STATUS,
        &namespace,
        api.patch_status(
            &md.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        ),
    )
    .await
    {
        Ok(written) => ctx.written.remember(written),
        // Deleted while we reconciled: nothing left to report on.
        Err(Error::Api { source, .. }) if is_not_found(&source) => return Ok(()),
        Err(e) => return Err(e),
    }
    ctx.metrics.status_writes.inc();
    Ok(())
}

/// Events for condition flips: one per transition, never per reconcile.
fn transitions(old: &ModelDeploymentStatus, new: &ModelDeploymentStatus) -> Vec<Event> {
    let flipped = |t: &str| {
        let was = conditions::is_true(&old.conditions, t);
        let is = conditions::is_true(&new.conditions, t);
        (was != is)
            .then(|| conditions::find(&new.conditions, t).cloned())
            .flatten()
    };
    let mut events = vec![];
    if let Some(c) = flipped(conditions::STALLED).filter(|c| c.status == conditions::status::TRUE) {
        let action = if rolled_back(&c.reason) {
            "Rollout"
        } else {
            "Optimize"
        };
        events.push(Event {
            type_: EventType::Warning,
            reason: c.reason,
            note: Some(c.message),
            action: action.into(),
            secondary: None,
        });
    }
    if let Some(c) =
        flipped(conditions::MODEL_READY).filter(|c| c.status == conditions::status::TRUE)
    {
        events.push(Event {
            type_: EventType::Normal,
            reason: c.reason,
            note: Some(c.message),
            action: "Optimize".into(),
            secondary: None,
        });
    }
    // Ready falling for the reason Stalled just gave (a rollback, a failed optimize) is the same occurrence:
    // one Event, the Stalled one, not two with near-identical messages.
    if let Some(c) =
        flipped(conditions::READY).filter(|c| !events.iter().any(|e| e.reason == c.reason))
    {
        // A canary starting is the rollout working, not a warning.
        let type_ = if c.status == conditions::status::TRUE || c.reason == reason::CANARY_ANALYSIS {
            EventType::Normal
        } else {
            EventType::Warning
        };
        events.push(Event {
            type_,
            reason: c.reason,
            note: Some(c.message),
            action: "Rollout".into(),
            secondary: None,
        });
    }
    // ScalingActive: one event when metrics become unreadable, one when they come back.
    let old_scaling = conditions::find(&old.conditions, conditions::SCALING_ACTIVE);
    if let Some(c) = conditions::find(&new.conditions, conditions::SCALING_ACTIVE) {
        let changed = old_scaling.map(|o| (&o.status, &o.reason)) != Some((&c.status, &c.reason));
        let about_metrics = c.reason == reason::METRICS_UNAVAILABLE
            || old_scaling.is_some_and(|o| o.reason == reason::METRICS_UNAVAILABLE);
        if changed && about_metrics {
            events.push(Event {
                type_: if c.status == conditions::status::TRUE {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: c.reason.clone(),
                note: Some(c.message.clone()),
                action: "Autoscale".into(),
                secondary: None,
            });
        }
    }
    if let Some(c) = flipped(conditions::DEGRADED).filter(|c| c.status == conditions::status::TRUE)
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: c.reason,
            note: Some(c.message),
            action: "Analyze".into(),
            secondary: None,
        });
    }
    events
}

/// Once a revision is stable, optimize Jobs of other revisions are history.
async fn prune_old_jobs(
    v: &Validated,
    status: &ModelDeploymentStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let keep: Vec<String> = status
        .revision
        .iter()
        .flat_map(|r| [r.current.clone(), r.stable.clone()])
        .flatten()
        .collect();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let selector = format!(
        "{}={},{}={}",
        names::LABEL_MODEL,
        v.name,
        names::LABEL_COMPONENT,
        names::COMPONENT_OPTIMIZE
    );
    let list = call(
        rbac::LIST_JOBS,
        &v.namespace,
        jobs.list(&ListParams::default().labels(&selector)),
    )
    .await?;
    for job in list.items {
        let rev = job
            .labels()
            .get(names::LABEL_REVISION)
            .cloned()
            .unwrap_or_default();
        if !keep.contains(&rev) {
            let dp = kube::api::DeleteParams::background();
            match call(
                rbac::DELETE_JOB,
                &v.namespace,
                jobs.delete(&job.name_any(), &dp),
            )
            .await
            {
                Ok(_) => {}
                Err(Error::Api { source, .. }) if is_not_found(&source) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Watches on children are narrowed to what the operator manages.
pub fn managed_selector() -> String {
    format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::LABEL_MANAGED_BY_VALUE
    )
}

/// Resources watched as owned children.
pub type Children = (Deployment, Job, Service, PodDisruptionBudget, NetworkPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn with(conds: &[(&str, bool, &str, &str)]) -> ModelDeploymentStatus {
        let now = Time(Timestamp::UNIX_EPOCH);
        ModelDeploymentStatus {
            conditions: conds
                .iter()
                .map(|(t, s, r, m)| conditions::new(t, *s, r, *m, Some(1), now.clone()))
                .collect(),
            ..ModelDeploymentStatus::default()
        }
    }

    #[test]
    fn a_rollback_is_one_event_though_stalled_and_ready_both_flip() {
        let old = with(&[
            (conditions::READY, true, "Available", "serving"),
            (conditions::STALLED, false, "Progressing", ""),
        ]);
        let rolled = "revision b rolled back; returned to revision a";
        let new = with(&[
            (
                conditions::READY,
                false,
                reason::ACCURACY_ROLLBACK,
                "revision b rolled back; returned to revision a; the previous revision keeps serving",
            ),
            (conditions::STALLED, true, reason::ACCURACY_ROLLBACK, rolled),
        ]);
        let events = transitions(&old, &new);
        let reasons: Vec<_> = events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, [reason::ACCURACY_ROLLBACK]);
        assert_eq!(events[0].note.as_deref(), Some(rolled));

        // Ready falling for a reason of its own still gets its event.
        let new = with(&[
            (
                conditions::READY,
                false,
                "Unavailable",
                "0 of 1 replicas available",
            ),
            (conditions::STALLED, false, "Progressing", ""),
        ]);
        let reasons: Vec<_> = transitions(&old, &new)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["Unavailable"]);
    }
}
