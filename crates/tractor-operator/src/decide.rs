//! Decide, the pure middle of a reconcile: `(Observed, settings) -> Plan`. Where the model stands, what the
//! autoscaler sets, where a canary goes, whether an accuracy rollback happens, which children to write and
//! delete, the Events, the new status and when to look again. No I/O and no clock: the time is the observed
//! one, so the same `Observed` always gives the same `Plan`.

use std::time::Duration;

use crate::events::{Event, EventType};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject};
use tractor_api::conditions::{self, reason};
use tractor_api::names;
use tractor_api::report::{FailureReason, OptimizeReport};
use tractor_api::{DriftStatus, Endpoints, ModelDeploymentStatus, RevisionFailure};

use crate::autoscaler::{self, Memory, Outcome};
use crate::children::{self, BuildConfig};
use crate::drift;
use crate::observe::{JobSeen, Observed};
use crate::rollout::{self, Previous};
use crate::status::{self, ModelState, Served};
use crate::validate::Validated;
use crate::zero;

/// How long a Job may be complete without its report before the revision is marked failed. The kubelet
/// writes the termination message before the Job controller can see the pod succeed, so this only covers
/// a container that exited 0 without writing one.
const REPORT_GRACE: Duration = Duration::from_secs(60);
/// Requeue when all is well: watches bring changes; this only heals missed events.
const HEALTHY_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while an optimize Job runs: its completion arrives through the Job watch; this covers the report.
const OPTIMIZING_REQUEUE: Duration = Duration::from_secs(30);
/// Requeue while a rollout progresses: Deployment status changes wake us; this covers a stuck watch.
const ROLLING_OUT_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue while a finished Job's report is awaited.
const REPORT_REQUEUE: Duration = Duration::from_secs(3);

/// Everything one reconcile does, in the order [`crate::apply`] carries it out.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Writes to the cluster.
    pub writes: Vec<Write>,
    /// Events to publish (best effort).
    pub events: Vec<Event>,
    /// The new status; `None` when it did not change.
    pub status: Option<ModelDeploymentStatus>,
    /// What the autoscaler remembers from now on.
    pub autoscaler: Remember,
    /// The autoscaler's evaluation in this reconcile, for the log and the metric.
    pub evaluation: Option<Outcome>,
    /// When to reconcile again without a change; `None` waits for one.
    pub requeue: Option<Duration>,
}

/// The autoscaler memory after a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Remember {
    /// Unchanged.
    Keep,
    /// Replaced by this.
    Store(Memory),
    /// Dropped: autoscaling is off.
    Forget,
}

/// One write.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Create the current revision's optimize Job (its template is immutable: created once, never applied).
    CreateJob(Box<Job>),
    /// Server-side apply a child (already carrying its content hash).
    Apply(Box<Child>),
    /// Server-side apply the ServiceMonitor; best effort (the kind is optional).
    ServiceMonitor {
        /// The object.
        object: Box<DynamicObject>,
        /// Its kind as observe discovered it.
        resource: ApiResource,
    },
    /// Set a Deployment's replica count, leaving its template alone.
    Scale {
        /// The Deployment.
        deployment: String,
        /// The count.
        replicas: i32,
    },
    /// Put the serving Deployment back on an earlier revision's pod template.
    RollBack(Box<Previous>),
    /// Delete the canary Deployment with this uid (a namesake created since stays).
    DeleteCanary {
        /// The uid the deletion is conditional on.
        uid: String,
    },
    /// Delete these EndpointSlices of the ModelDeployment's Service.
    DeleteEndpointSlices {
        /// Their names.
        names: Vec<String>,
    },
    /// Delete what names a Service's pods once it has no selector: its Endpoints object (the endpoints
    /// controller leaves it, and the mirroring controller would copy it into a slice naming pods long gone),
    /// then these slices.
    DeletePodEndpoints {
        /// The slices' names.
        slices: Vec<String>,
    },
    /// Delete optimize Jobs of revisions other than these.
    PruneJobs {
        /// Revisions whose Jobs stay.
        keep: Vec<String>,
    },
}

/// A child applied with server-side apply.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // only ever held boxed, in `Write::Apply`
pub enum Child {
    /// The Service.
    Service(Service),
    /// The PodDisruptionBudget.
    PodDisruptionBudget(PodDisruptionBudget),
    /// The NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// A serving Deployment (stable or canary).
    Deployment(Deployment),
    /// The EndpointSlice leading the Service to the activator while the model is at zero.
    EndpointSlice(EndpointSlice),
}

/// Decides what to do about what was observed.
pub fn decide(observed: &Observed, config: &BuildConfig) -> Plan {
    let now = observed.now;
    let time = Time(now);
    let old = &observed.status;
    let validated = match &observed.spec {
        Ok(validated) => validated,
        Err(invalid) => {
            let new = status::invalid(observed.generation, old, invalid, &time);
            return Plan {
                writes: vec![],
                events: status::transitions(old, &new),
                status: changed(old, new),
                autoscaler: Remember::Keep,
                evaluation: None,
                requeue: None,
            };
        }
    };
    let mut writes = vec![];
    let mut events = vec![];

    let (mut state, job_requeue) = model_state(validated, old, observed.job.as_ref(), now);
    let store_secret = observed.store_secret.as_ref();
    if let (ModelState::Optimizing, Some(JobSeen { job: None, .. })) = (&state, &observed.job) {
        writes.push(Write::CreateJob(Box::new(children::optimize_job(
            validated,
            config,
            children::publishing_store(config, store_secret),
        ))));
    }
    // Decided each reconcile: a store Secret created or deleted later moves the pods to or from the store.
    if let ModelState::Ready(model) = &mut state {
        model.delivery = Some(children::delivery(
            model,
            config,
            &validated.namespace,
            store_secret,
        ));
    }
    let mut serving_model = match &state {
        ModelState::Ready(model) => Some((**model).clone()),
        _ => old.model.clone(),
    };

    // The autoscaler decides before the Deployment is built, so the count it picks is the one applied.
    let recorded = children::desired_replicas(&validated.md);
    let (remember, evaluation, next_evaluation) =
        autoscale(validated, observed, serving_model.is_some(), recorded);
    let mut replicas = evaluation
        .as_ref()
        .map_or(recorded, |outcome| outcome.replicas);
    // Scale to zero has the last word on the count: the autoscaler never goes below one replica.
    let zero = scale_to_zero(validated, observed, serving_model.is_some());
    if let Some(count) = zero.as_ref().and_then(|outcome| outcome.replicas) {
        replicas = count;
    }
    let endpoints = zero
        .as_ref()
        .map_or(Endpoints::Pods, |outcome| outcome.endpoints);

    // Front objects exist from the start, so the URL resolves as soon as a pod is ready.
    let front = &observed.front;
    push_changed(
        &mut writes,
        front.service.as_deref(),
        children::service(validated, endpoints),
        Child::Service,
    );
    // After the Service: going to zero, it has left the pods before the activator's slice stands in for
    // them, and both before the Deployment below loses its last pod.
    endpoint_slices(&mut writes, validated, observed, zero.as_ref());
    push_changed(
        &mut writes,
        front.pod_disruption_budget.as_deref(),
        children::pod_disruption_budget(validated),
        Child::PodDisruptionBudget,
    );
    push_changed(
        &mut writes,
        front.network_policy.as_deref(),
        children::network_policy(validated),
        Child::NetworkPolicy,
    );
    if let Some(monitor) = &observed.monitor {
        let desired = children::with_spec_hash(crate::monitor::service_monitor(
            validated,
            &monitor.resource,
        ));
        if monitor.hash.is_none() || monitor.hash.as_deref() != children::spec_hash(&desired) {
            writes.push(Write::ServiceMonitor {
                object: Box::new(desired),
                resource: monitor.resource.clone(),
            });
        }
    }

    // rollbackOnAccuracyDrop: the current revision serves, and its accuracy stayed below the floor for the
    // window. It is marked failed like a rolled-back canary, so it is not tried again until the spec changes.
    if let (ModelState::Ready(_), Some(outcome)) = (&state, &evaluation)
        && validated.md.spec.rollout.rollback_on_accuracy_drop
        && let Some((true, why)) = &outcome.degraded
        && let Some(previous) = &observed.previous
    {
        state = ModelState::Failed(RevisionFailure {
            reason: reason::ACCURACY_ROLLBACK.to_owned(),
            message: format!("{why}; returned to revision {}", previous.revision),
        });
        // What the Deployment serves once the rollback is written.
        serving_model = previous
            .model
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .or(serving_model);
        writes.push(Write::RollBack(Box::new(previous.clone())));
    }

    let stable = observed.stable.as_ref();
    let live_canary = observed.canary.as_ref();
    let mut canary = None;
    let mut pending = false;
    let mut planned_deployment = None;
    match &state {
        ModelState::Ready(model) => {
            let analysis = observed
                .analysis
                .as_ref()
                .map(|seen| (seen.window.as_str(), &seen.reads));
            match rollout::step(
                validated,
                model,
                old,
                stable,
                live_canary,
                analysis,
                config,
                replicas,
                now,
            ) {
                Some(step) => {
                    for deployment in &step.apply {
                        pending |=
                            deployment.metadata.name.as_deref() == Some(validated.name.as_str());
                        push_deployment(
                            &mut writes,
                            validated,
                            deployment.clone(),
                            stable,
                            live_canary,
                        );
                    }
                    if let Some(count) = step.scale_stable {
                        pending = true;
                        writes.push(Write::Scale {
                            deployment: validated.name.clone(),
                            replicas: count,
                        });
                    }
                    if let Some(uid) = &step.delete_canary {
                        writes.push(Write::DeleteCanary { uid: uid.clone() });
                    }
                    events.extend(step.events.iter().cloned());
                    canary = Some(step);
                }
                None => {
                    let desired = children::deployment(validated, model, config, replicas);
                    pending = push_deployment(
                        &mut writes,
                        validated,
                        desired.clone(),
                        stable,
                        live_canary,
                    );
                    planned_deployment = Some(desired);
                    if let Some(uid) =
                        rollout::leftover(validated, stable, live_canary, false, pending)
                    {
                        writes.push(Write::DeleteCanary { uid });
                    }
                }
            }
        }
        // The spec now describes a revision that is not built (yet, or ever): the serving Deployment was
        // rendered from the previous spec's source and must keep it. Only the replica count follows.
        failed_or_optimizing => {
            if let Some(live) = stable
                && live.spec.as_ref().and_then(|spec| spec.replicas) != Some(replicas)
            {
                pending = true;
                writes.push(Write::Scale {
                    deployment: validated.name.clone(),
                    replicas,
                });
            }
            let failed = matches!(failed_or_optimizing, ModelState::Failed(_));
            if let Some(uid) = rollout::leftover(validated, stable, live_canary, failed, pending) {
                writes.push(Write::DeleteCanary { uid });
            }
        }
    }
    if let Some(crate::canary::State::RolledBack { reason: why, .. }) =
        canary.as_ref().map(|step| &step.state)
    {
        state = ModelState::Failed(RevisionFailure {
            reason: reason::ROLLED_BACK.to_owned(),
            message: why.clone(),
        });
    }
    let rolled_back_by_accuracy = writes
        .iter()
        .any(|write| matches!(write, Write::RollBack(_)));
    if matches!(state, ModelState::Failed(_))
        && !rolled_back_by_accuracy
        && let Some(model) = stable.and_then(children::served_model)
    {
        // What the stable Deployment serves, which after a rollback is not the model last optimized.
        serving_model = Some(model);
    }

    // A Deployment about to be created counts as existing, with nothing ready yet.
    let served = Served {
        deployment: stable.or(planned_deployment.as_ref()),
        pending,
    };
    let mut new = status::compute(
        validated,
        old,
        &state,
        serving_model,
        served,
        replicas,
        &time,
    );
    match &canary {
        Some(step) => {
            rollout::record(&mut new, validated, step, stable, live_canary, now);
            // compute judged Ready on the stable Deployment alone and record overrode it: a condition that
            // ends as it began did not transition (else each canary reconcile rewrote the status).
            keep_transition_times(old, &mut new);
        }
        None => rollout::clear(&mut new),
    }
    // Drift is judged on its own interval, with or without autoscaling; Degraded joins both verdicts.
    let drift = drift_check(validated, observed, &time);
    new.drift = drift.as_ref().map(|(status, _)| status.clone());
    status::record_degraded(
        validated,
        &mut new,
        evaluation
            .as_ref()
            .and_then(|outcome| outcome.degraded.as_ref()),
        drift.as_ref().and_then(|(_, verdict)| verdict.as_ref()),
        &time,
    );
    if let Some(outcome) = &evaluation {
        status::record_scaling(validated, &mut new, outcome, &time);
        if outcome.scaled() {
            events.push(Event {
                type_: EventType::Normal,
                reason: reason::SCALING.into(),
                note: Some(format!(
                    "replicas {} -> {}: {}",
                    outcome.previous, outcome.replicas, outcome.why
                )),
                action: "Autoscale".into(),
                secondary: None,
            });
        }
    }
    // After the autoscaler's record: its count is never below one, and scale to zero's is the one applied.
    match &zero {
        Some(outcome) => {
            new.scale_to_zero = Some(outcome.status.clone());
            new.desired_replicas = Some(replicas);
            if outcome.at_zero {
                status::at_zero(validated, old, &mut new, &time);
            }
            if let Some((why, note)) = &outcome.event {
                events.push(Event {
                    type_: EventType::Normal,
                    reason: (*why).into(),
                    note: Some(note.clone()),
                    action: "ScaleToZero".into(),
                    secondary: None,
                });
            }
        }
        None => new.scale_to_zero = None,
    }
    let became_ready = !conditions::is_true(&old.conditions, conditions::READY)
        && conditions::is_true(&new.conditions, conditions::READY);
    if became_ready {
        // Once a revision is stable, optimize Jobs of other revisions are history.
        let mut keep: Vec<String> = new
            .revision
            .iter()
            .flat_map(|revisions| [revisions.current.clone(), revisions.stable.clone()])
            .flatten()
            .collect();
        // Current and stable are one revision once it is promoted.
        keep.dedup();
        writes.push(Write::PruneJobs { keep });
    }
    events.extend(observed.pod_failures.iter().map(pod_start_failed));
    // Condition flips last: they describe the status this plan writes.
    events.extend(status::transitions(old, &new));

    let ready = conditions::is_true(&new.conditions, conditions::READY);
    let after = match (&state, job_requeue) {
        (_, Some(after)) => after,
        (ModelState::Optimizing, None) => OPTIMIZING_REQUEUE,
        // A failed revision stays failed until the spec changes (a watch event): nothing to poll for but the
        // drift check a healthy one gets too.
        (ModelState::Failed(_), None) => HEALTHY_REQUEUE,
        _ if ready => HEALTHY_REQUEUE,
        _ => ROLLING_OUT_REQUEUE,
    };
    // The autoscaler's interval and the canary's pacing are the requeues shorter than minutes.
    let soonest = [
        Some(after),
        next_evaluation,
        canary.as_ref().map(|step| step.requeue),
        zero.as_ref().and_then(|outcome| outcome.requeue),
        next_drift_read(validated, &new, now),
    ]
    .into_iter()
    .flatten()
    .min();
    Plan {
        writes,
        events,
        status: changed(old, new),
        autoscaler: remember,
        evaluation,
        requeue: soonest,
    }
}

/// `status.drift` and the drift verdict: judged when observe read Prometheus, else the last status kept;
/// `None` without `monitoring.drift`.
fn drift_check(
    validated: &Validated,
    observed: &Observed,
    time: &Time,
) -> Option<(DriftStatus, Option<(bool, String)>)> {
    let spec = validated.md.spec.monitoring.as_ref()?.drift.as_ref()?;
    let old = observed.status.drift.as_ref();
    Some(match &observed.drift {
        Some(reads) => {
            let judged = drift::judge(spec, reads, old, time);
            (judged.status, judged.verdict)
        }
        None => (old.cloned().unwrap_or_default(), None),
    })
}

/// When the next drift read is due, while something serves to read.
fn next_drift_read(
    validated: &Validated,
    new: &ModelDeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let spec = validated.md.spec.monitoring.as_ref()?.drift.as_ref()?;
    new.model.as_ref()?;
    Some(drift::not_due(new.drift.as_ref(), spec, now).unwrap_or_else(|| spec.interval.as_std()))
}

/// The Warning about a serving pod that cannot start. Every reconcile that sees it says it again; the recorder
/// folds the repeats into one Event's series.
fn pod_start_failed(failure: &crate::observe::PodFailure) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason::POD_START_FAILED.into(),
        note: Some(format!(
            "pod {} (revision {}) cannot start: init container {} failed ({}): {}; pods already serving keep \
             serving",
            failure.pod, failure.revision, failure.container, failure.reason, failure.message
        )),
        action: "Serve".into(),
        secondary: None,
    }
}

fn changed(
    old: &ModelDeploymentStatus,
    new: ModelDeploymentStatus,
) -> Option<ModelDeploymentStatus> {
    (*old != new).then_some(new)
}

/// Gives each condition of `new` whose status is the one it had in `old` its earlier transition time back.
fn keep_transition_times(old: &ModelDeploymentStatus, new: &mut ModelDeploymentStatus) {
    for c in &mut new.conditions {
        if let Some(was) = conditions::find(&old.conditions, &c.type_)
            && was.status == c.status
        {
            c.last_transition_time = was.last_transition_time.clone();
        }
    }
}

/// Adds an apply of a front child unless the live one carries the same content hash.
fn push_changed<K>(writes: &mut Vec<Write>, live: Option<&str>, desired: K, wrap: fn(K) -> Child)
where
    K: serde::Serialize + kube::Resource,
{
    let desired = children::with_spec_hash(desired);
    if live.is_none() || live != children::spec_hash(&desired) {
        writes.push(Write::Apply(Box::new(wrap(desired))));
    }
}

/// Adds an apply of a serving Deployment unless the live one of that name carries the same content hash;
/// true when one was added.
fn push_deployment(
    writes: &mut Vec<Write>,
    validated: &Validated,
    desired: Deployment,
    stable: Option<&Deployment>,
    live_canary: Option<&Deployment>,
) -> bool {
    let desired = children::with_spec_hash(desired);
    let live = if desired.metadata.name.as_deref() == Some(validated.name.as_str()) {
        stable
    } else {
        live_canary
    };
    let live_hash = live.and_then(|d| children::spec_hash(d));
    if live_hash.is_some() && live_hash == children::spec_hash(&desired) {
        return false;
    }
    writes.push(Write::Apply(Box::new(Child::Deployment(desired))));
    true
}

/// The autoscaler's part: what it remembers next, this reconcile's evaluation if one ran, and the time to
/// the next one.
fn autoscale(
    validated: &Validated,
    observed: &Observed,
    serving: bool,
    current: i32,
) -> (Remember, Option<Outcome>, Option<Duration>) {
    let Some(spec) = &validated.md.spec.autoscaling else {
        return (Remember::Forget, None, None);
    };
    let Some(seen) = &observed.autoscaling else {
        return (Remember::Keep, None, None);
    };
    let secs = observed.now.as_second() as f64;
    let every = autoscaler::interval(spec);
    match &seen.reads {
        Some(reads) if serving => {
            let mut memory = seen.memory.clone();
            let cpu = autoscaler::cpu_cores(validated.md.spec.serving.resources.as_ref());
            let outcome = autoscaler::evaluate(spec, current, cpu, reads, &mut memory, secs);
            let next = outcome.next_in;
            (Remember::Store(memory), Some(outcome), Some(next))
        }
        _ => (
            Remember::Keep,
            None,
            autoscaler::not_due(&seen.memory, every, secs),
        ),
    }
}

/// Scale to zero's decision, for a spec that asks for it once a model has been built.
fn scale_to_zero(validated: &Validated, observed: &Observed, built: bool) -> Option<zero::Outcome> {
    let spec = validated
        .md
        .spec
        .autoscaling
        .as_ref()?
        .scale_to_zero
        .as_ref()?;
    let seen = observed.zero.as_ref()?;
    if !built {
        return None;
    }
    let old = &observed.status;
    let stable = observed.stable.as_ref();
    let replicas = stable.map_or(0, |live| {
        live.spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1)
    });
    let ready_replicas = stable
        .and_then(|live| live.status.as_ref())
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0);
    let wake = validated
        .md
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(names::ANNOTATION_WAKE))
        .and_then(|text| text.parse::<Timestamp>().ok());
    let idle = observed
        .autoscaling
        .as_ref()
        .and_then(|seen| seen.reads.as_ref())
        .and_then(|reads| match reads {
            Ok(found) => found
                .idle
                .as_ref()
                .map(|read| read.as_ref().copied().map_err(|error| error.to_string())),
            Err(why) => Some(Err(why.clone())),
        });
    // Serving in full, with no canary: since the later of Ready turning true and the last wake.
    let woke_at = old
        .scale_to_zero
        .as_ref()
        .and_then(|recorded| recorded.woke_at.as_ref())
        .map(|time| time.0);
    let serving_since = conditions::find(&old.conditions, conditions::READY)
        .filter(|ready| ready.status == conditions::status::TRUE && observed.canary.is_none())
        .map(|ready| ready.last_transition_time.0)
        .map(|since| woke_at.map_or(since, |woke| woke.max(since)));
    Some(zero::decide(&zero::Input {
        spec,
        now: observed.now,
        replicas,
        ready_replicas,
        status: old.scale_to_zero.as_ref(),
        wake,
        idle,
        serving_since,
        activator: &seen.activator.addresses,
        ready_pod_endpoints: seen.ready_pod_endpoints,
    }))
}

/// The EndpointSlice writes of scale to zero: the activator's slice applied or deleted, and what names pods
/// deleted once the Service has no selector (the endpoints controllers leave it behind).
fn endpoint_slices(
    writes: &mut Vec<Write>,
    validated: &Validated,
    observed: &Observed,
    zero: Option<&zero::Outcome>,
) {
    let Some(seen) = &observed.zero else {
        return;
    };
    if zero.is_some_and(|outcome| outcome.activator_slice) {
        let desired =
            children::with_spec_hash(children::activator_slice(validated, &seen.activator));
        let live = seen.activator_slice.clone().flatten();
        if live.as_deref() != children::spec_hash(&desired) {
            writes.push(Write::Apply(Box::new(Child::EndpointSlice(desired))));
        }
    } else if seen.activator_slice.is_some() {
        writes.push(Write::DeleteEndpointSlices {
            names: vec![children::activator_slice_name(&validated.name)],
        });
    }
    if zero.is_some_and(|outcome| outcome.delete_pod_slices) && !seen.pod_slices.is_empty() {
        writes.push(Write::DeletePodEndpoints {
            slices: seen.pod_slices.clone(),
        });
    }
}

/// Where the optimize step stands for the current revision, and how soon to look again if sooner than usual.
fn model_state(
    validated: &Validated,
    old: &ModelDeploymentStatus,
    job: Option<&JobSeen>,
    now: Timestamp,
) -> (ModelState, Option<Duration>) {
    // Failed first: a rolled-back canary's model was optimized, and must not serve again.
    let revisions = old.revision.clone().unwrap_or_default();
    if revisions.failed.as_deref() == Some(validated.revision.as_str()) {
        let failure = revisions.failure.unwrap_or_else(|| RevisionFailure {
            // Recorded by an operator that kept the reason only in the Stalled condition.
            reason: conditions::find(&old.conditions, conditions::STALLED)
                .map(|stalled| stalled.reason.clone())
                .unwrap_or_else(|| reason::OPTIMIZE_FAILED.to_owned()),
            message: "the failure was recorded before status.revision.failure existed".to_owned(),
        });
        return (ModelState::Failed(failure), None);
    }
    if let Some(model) = old
        .model
        .as_ref()
        .filter(|model| model.revision.as_deref() == Some(validated.revision.as_str()))
    {
        return (ModelState::Ready(Box::new(model.clone())), None);
    }
    // Another ModelDeployment of the same pinned bytes and recipe was optimized: its result, no Job.
    if let Some(cached) = job
        .filter(|seen| seen.job.is_none())
        .and_then(|seen| seen.cached.as_ref())
    {
        let mut model = cached.model_status();
        model.revision = Some(validated.revision.clone());
        model.message = Some(match &model.message {
            Some(words) => format!("{words} (reused from the shared optimize cache: no Job ran)"),
            None => "reused from the shared optimize cache: no Job ran".to_owned(),
        });
        return (ModelState::Ready(Box::new(model)), None);
    }
    let Some((job, report)) = job.and_then(|seen| Some((seen.job.as_ref()?, seen.report.as_ref())))
    else {
        return (ModelState::Optimizing, None);
    };
    let condition = |kind: &str| {
        job.status
            .iter()
            .flat_map(|status| status.conditions.iter().flatten())
            .find(|found| found.type_ == kind && found.status == "True")
            .cloned()
    };
    let (complete, failed) = (condition("Complete"), condition("Failed"));
    if let Some(done) = complete {
        return match report {
            Some(written) if written.succeeded() => {
                let mut model = written.model_status();
                model.revision = Some(validated.revision.clone());
                (ModelState::Ready(Box::new(model)), None)
            }
            Some(written) => (ModelState::Failed(failure_of(written)), None),
            None => {
                let waited = done
                    .last_transition_time
                    .map_or(0.0, |since| now.duration_since(since.0).as_secs_f64());
                if waited < REPORT_GRACE.as_secs_f64() {
                    (ModelState::Optimizing, Some(REPORT_REQUEUE))
                } else {
                    let missing = OptimizeReport::failure(
                        FailureReason::Internal,
                        "the optimize Job completed without writing a report to its termination message",
                    );
                    (ModelState::Failed(failure_of(&missing)), None)
                }
            }
        };
    }
    let Some(failed) = failed else {
        return (ModelState::Optimizing, None);
    };
    let failure = match report {
        Some(written) if written.reason.is_some() => failure_of(written),
        _ => RevisionFailure {
            reason: failed
                .reason
                .unwrap_or_else(|| reason::OPTIMIZE_FAILED.to_owned()),
            message: failed
                .message
                .unwrap_or_else(|| "the optimize Job failed without a report".to_owned()),
        },
    };
    (ModelState::Failed(failure), None)
}

/// A failed report's reason (its CamelCase code) and message.
fn failure_of(report: &OptimizeReport) -> RevisionFailure {
    RevisionFailure {
        reason: report
            .reason
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| reason::OPTIMIZE_FAILED.to_owned()),
        message: report.message.clone(),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
