//! Table tests of [`super::decide`]: one situation per test, an `Observed` built by hand, the whole `Plan`
//! compared.

use super::*;

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, GroupVersionKind};
use tractor_api::conditions::{
    AVAILABLE, DEGRADED, MODEL_READY, READY, RECONCILING, SCALING_ACTIVE, STALLED,
};
use tractor_api::{
    AnalysisVerdict, CanaryAnalysisStatus, Delivery, DeliveryMode, MetricSnapshot, ModelDeployment,
    ModelFormat, ModelStatus, Phase, Precision, RevisionStatus,
};

use crate::autoscaler::Reads;
use crate::canary::Signals;
use crate::observe::{AnalysisSeen, AutoscalingSeen, Front, MonitorSeen};
use crate::validate::validate;

/// `assert_eq!` of two plans, part by part first, so that a failure shows which part differs.
macro_rules! assert_plan {
    ($got:expr, $want:expr $(,)?) => {
        assert_plan!($got, $want, "")
    };
    ($got:expr, $want:expr, $($case:tt)+) => {{
        let got: &Plan = &$got;
        let want: &Plan = &$want;
        let case = format!($($case)+);
        assert_eq!(got.writes, want.writes, "writes {case}");
        assert_eq!(got.events, want.events, "events {case}");
        if let (Some(g), Some(w)) = (&got.status, &want.status) {
            assert_eq!(g.conditions, w.conditions, "status.conditions {case}");
            assert_eq!(g.revision, w.revision, "status.revision {case}");
        }
        assert_eq!(got.status, want.status, "status {case}");
        assert_eq!(got.autoscaler, want.autoscaler, "autoscaler {case}");
        assert_eq!(got.evaluation, want.evaluation, "evaluation {case}");
        assert_eq!(got.requeue, want.requeue, "requeue {case}");
        assert_eq!(got, want, "{case}");
    }};
}

/// The observed clock, in seconds.
const NOW: i64 = 1_800_000_000;
/// `metadata.generation` of every spec here.
const GEN: i64 = 3;
/// How long before [`NOW`] the conditions of an observed status were written.
const BEFORE: i64 = 600;

const PLAIN: &str = "serving: {replicas: 2}";
const CANARY: &str = "serving: {replicas: 4}
rollout:
  strategy: Canary
  canary:
    steps: [{weight: 25, pause: 30s}, {weight: 50, pause: 60s}]
    analysis: {maxErrorRate: 0.05, failureLimit: 1}";
const AUTOSCALED: &str = "autoscaling:
  maxReplicas: 10
  interval: 15s
  metrics: [{type: Latency, latency: {targetMillis: 50}}]";
const ACCURACY_GUARD: &str = "autoscaling:
  maxReplicas: 10
  metrics: [{type: Accuracy, accuracy: {min: 0.9, window: 1m}}]
rollout: {rollbackOnAccuracyDrop: true}";

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("a valid time")
}

fn ago(secs: i64) -> Time {
    Time(Timestamp::from_second(NOW - secs).expect("a valid time"))
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

fn config() -> BuildConfig {
    BuildConfig {
        image: "tractor:dev".into(),
        artifact_store: None,
    }
}

fn model_deployment(uri: &str, rest: &str) -> ModelDeployment {
    let rest: String = rest.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!(
        "apiVersion: serving.tractor.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: digits, namespace: ns, uid: uid-1, generation: {GEN}}}
spec:
  model: {{uri: \"{uri}\"}}
{rest}"
    );
    serde_yaml::from_str(&yaml).expect("a ModelDeployment")
}

/// `digits` serving `digits-<version>.onnx`; `rest` is the rest of its spec, as YAML.
fn spec(version: &str, rest: &str) -> Validated {
    let uri = format!("https://models.example.com/digits-{version}.onnx");
    validate(&model_deployment(&uri, rest)).expect("a servable spec")
}

fn digest(v: &Validated) -> String {
    format!("sha256:{:0<64}", v.revision)
}

/// What the optimize Job of `v`'s revision reports on success.
fn report(v: &Validated) -> OptimizeReport {
    OptimizeReport {
        source_digest: Some(format!("sha256:{}", "1".repeat(64))),
        artifact_digest: Some(digest(v)),
        size_bytes: Some(81_234),
        format: Some(ModelFormat::Onnx),
        precision: Some(Precision::F16),
        ..OptimizeReport::default()
    }
}

/// `status.model` for `v`'s revision, as [`report`] describes it.
fn model(v: &Validated) -> ModelStatus {
    ModelStatus {
        revision: Some(v.revision.clone()),
        source_digest: Some(format!("sha256:{}", "1".repeat(64))),
        artifact_digest: Some(digest(v)),
        format: Some(ModelFormat::Onnx),
        precision: Some(Precision::F16),
        size_bytes: Some(81_234),
        // What decide records without an artifact store.
        delivery: Some(Delivery {
            mode: DeliveryMode::Rederive,
            message: "no artifact store (the operator's --artifact-store): each pod re-derives the artifact from the source".into(),
        }),
        ..ModelStatus::default()
    }
}

/// `v`'s optimize Job; `finished` is a condition type that became true that many seconds ago.
fn job(v: &Validated, finished: Option<(&str, i64)>) -> Job {
    let mut job = children::optimize_job(v, &config(), None);
    job.status = Some(JobStatus {
        active: finished.is_none().then_some(1),
        conditions: finished.map(|(type_, ago_secs)| {
            vec![JobCondition {
                type_: type_.into(),
                status: "True".into(),
                last_transition_time: Some(ago(ago_secs)),
                reason: (type_ == "Failed").then(|| "BackoffLimitExceeded".into()),
                message: (type_ == "Failed")
                    .then(|| "Job has reached the specified backoff limit".into()),
                ..JobCondition::default()
            }]
        }),
        ..JobStatus::default()
    });
    job
}

fn job_seen(job: Option<Job>, report: Option<OptimizeReport>) -> Option<JobSeen> {
    Some(JobSeen {
        job,
        report,
        cached: None,
    })
}

/// `object` as applied: carrying its content hash.
fn hash_of<K: serde::Serialize + kube::Resource>(object: K) -> Option<String> {
    children::spec_hash(&children::with_spec_hash(object)).map(str::to_owned)
}

/// The live front children of `v`, as last applied.
fn steady_front(v: &Validated) -> Front {
    Front {
        service: hash_of(children::service(v, tractor_api::Endpoints::Pods)),
        pod_disruption_budget: hash_of(children::pod_disruption_budget(v)),
        network_policy: hash_of(children::network_policy(v)),
    }
}

/// The applies of `v`'s front children.
fn front_writes(v: &Validated) -> Vec<Write> {
    vec![
        Write::Apply(Box::new(Child::Service(children::with_spec_hash(
            children::service(v, tractor_api::Endpoints::Pods),
        )))),
        Write::Apply(Box::new(Child::PodDisruptionBudget(
            children::with_spec_hash(children::pod_disruption_budget(v)),
        ))),
        Write::Apply(Box::new(Child::NetworkPolicy(children::with_spec_hash(
            children::network_policy(v),
        )))),
    ]
}

fn apply_deployment(d: Deployment) -> Write {
    Write::Apply(Box::new(Child::Deployment(children::with_spec_hash(d))))
}

/// `d` as the API server returns it once applied: hashed, generation 1 observed, `ready` of its pods on its
/// template and available.
fn live(d: Deployment, uid: &str, ready: i32) -> Deployment {
    let mut d = children::with_spec_hash(d);
    d.metadata.uid = Some(uid.into());
    d.metadata.generation = Some(1);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(want),
        updated_replicas: Some(want),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        ..DeploymentStatus::default()
    });
    d
}

/// The stable Deployment `digits`, built from `v` for `v`'s model, rolled out with `replicas` pods.
fn stable_on(v: &Validated, replicas: i32) -> Deployment {
    live(
        children::deployment(v, &model(v), &config(), replicas),
        "stable-uid",
        replicas,
    )
}

/// The canary Deployment `digits-canary` of `v` with `replicas` pods, `ready` of them available.
fn canary_on(v: &Validated, replicas: i32, ready: i32) -> Deployment {
    live(
        children::canary_deployment(v, &model(v), &config(), replicas),
        "canary-uid",
        ready,
    )
}

/// What one reconcile of `v` sees: `status`, steady front children, nothing else.
fn observed(v: &Validated, status: &ModelDeploymentStatus) -> Observed {
    // observe reads the spec and the status from the same (newest) copy of the object.
    let mut v = v.clone();
    v.md.status = Some(status.clone());
    Observed {
        front: steady_front(&v),
        spec: Ok(v),
        generation: Some(GEN),
        status: status.clone(),
        job: None,
        stable: None,
        canary: None,
        monitor: None,
        autoscaling: None,
        analysis: None,
        previous: None,
        store_secret: None,
        pod_failures: vec![],
        zero: None,
        drift: None,
        now: now(),
    }
}

fn event(type_: EventType, why: &str, note: impl Into<String>, action: &str) -> Event {
    Event {
        type_,
        reason: why.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    }
}

/// Sets a condition stamped `at` (its earlier transition time kept where its status did not change).
fn cond(
    s: &mut ModelDeploymentStatus,
    at: &Time,
    t: &str,
    ok: bool,
    why: &str,
    message: impl Into<String>,
) {
    conditions::set(
        &mut s.conditions,
        conditions::new(t, ok, why, message, Some(GEN), at.clone()),
    );
}

/// Sets a condition as this reconcile does.
fn set(s: &mut ModelDeploymentStatus, t: &str, ok: bool, why: &str, message: impl Into<String>) {
    cond(s, &Time(now()), t, ok, why, message);
}

fn base(v: &Validated) -> ModelDeploymentStatus {
    ModelDeploymentStatus {
        observed_generation: Some(GEN),
        selector: Some(
            "serving.tractor.dev/component=server,serving.tractor.dev/model=digits".into(),
        ),
        url: Some("http://digits.ns.svc:8080/v2/models/digits".into()),
        revision: Some(RevisionStatus {
            current: Some(v.revision.clone()),
            ..RevisionStatus::default()
        }),
        ..ModelDeploymentStatus::default()
    }
}

fn revision(s: &mut ModelDeploymentStatus) -> &mut RevisionStatus {
    s.revision.get_or_insert_with(RevisionStatus::default)
}

fn optimized(v: &Validated) -> String {
    format!("revision {} optimized: f16", v.revision)
}

fn not_configured(s: &mut ModelDeploymentStatus, at: &Time) {
    cond(
        s,
        at,
        SCALING_ACTIVE,
        false,
        reason::NOT_CONFIGURED,
        "spec.autoscaling is not set",
    );
    cond(s, at, DEGRADED, false, reason::HEALTHY, "");
}

/// The first revision of `v` optimizing, nothing serving.
fn first_optimizing(v: &Validated, at: &Time) -> ModelDeploymentStatus {
    let mut s = base(v);
    s.phase = Some(Phase::Optimizing);
    s.replicas = Some(0);
    s.ready_replicas = Some(0);
    let words = format!("optimizing revision {}", v.revision);
    cond(&mut s, at, READY, false, reason::OPTIMIZING, words.clone());
    cond(&mut s, at, RECONCILING, true, reason::OPTIMIZING, words);
    cond(
        &mut s,
        at,
        MODEL_READY,
        false,
        reason::OPTIMIZING,
        format!("optimize Job digits-{} is running", v.revision),
    );
    cond(
        &mut s,
        at,
        AVAILABLE,
        false,
        reason::OPTIMIZING,
        "no model has been optimized yet",
    );
    not_configured(&mut s, at);
    s
}

/// `v`'s revision served and rolled out on `n` pods.
fn ready_on(v: &Validated, n: i32) -> ModelDeploymentStatus {
    let at = &ago(BEFORE);
    let mut s = base(v);
    s.phase = Some(Phase::Ready);
    s.model = Some(model(v));
    s.replicas = Some(n);
    s.ready_replicas = Some(n);
    revision(&mut s).stable = Some(v.revision.clone());
    let ready = format!("{n}/{n} replicas ready");
    cond(&mut s, at, READY, true, reason::AVAILABLE, ready.clone());
    cond(&mut s, at, RECONCILING, false, reason::RECONCILED, "");
    cond(
        &mut s,
        at,
        MODEL_READY,
        true,
        reason::OPTIMIZED,
        optimized(v),
    );
    cond(&mut s, at, AVAILABLE, true, reason::AVAILABLE, ready);
    not_configured(&mut s, at);
    s
}

/// [`ready_on`] with the autoscaler at `n` replicas for a while.
fn autoscaled(mut s: ModelDeploymentStatus, n: i32, why: &str) -> ModelDeploymentStatus {
    s.desired_replicas = Some(n);
    s.metrics = Some(snapshot(40.0, ago(15)));
    cond(
        &mut s,
        &ago(BEFORE),
        SCALING_ACTIVE,
        true,
        reason::SCALING,
        why,
    );
    s
}

/// `new`'s revision optimizing while `old`'s serves on `n` pods.
fn optimizing_over(new: &Validated, old: &Validated, n: i32) -> ModelDeploymentStatus {
    let at = &ago(BEFORE);
    let mut s = base(new);
    s.phase = Some(Phase::Optimizing);
    s.model = Some(model(old));
    s.replicas = Some(n);
    s.ready_replicas = Some(n);
    revision(&mut s).stable = Some(old.revision.clone());
    let words = format!("optimizing revision {}", new.revision);
    cond(&mut s, at, READY, false, reason::OPTIMIZING, words.clone());
    cond(&mut s, at, RECONCILING, true, reason::OPTIMIZING, words);
    cond(
        &mut s,
        at,
        MODEL_READY,
        false,
        reason::OPTIMIZING,
        format!("optimize Job digits-{} is running", new.revision),
    );
    cond(
        &mut s,
        at,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        format!("{n}/{n} replicas ready"),
    );
    not_configured(&mut s, at);
    s
}

/// `validated`'s revision optimized and its Deployment written; `ready` of `desired` pods ready; `stable`
/// rolled out last.
fn rolling_out(
    validated: &Validated,
    stable: Option<&str>,
    ready: i32,
    desired: i32,
) -> ModelDeploymentStatus {
    let at = &ago(BEFORE);
    let mut status = base(validated);
    status.phase = Some(Phase::RollingOut);
    status.model = Some(model(validated));
    status.replicas = Some(ready);
    status.ready_replicas = Some(ready);
    revision(&mut status).stable = stable.map(str::to_owned);
    let words = format!(
        "rolling out revision {}: {ready}/{desired} replicas ready",
        validated.revision
    );
    cond(
        &mut status,
        at,
        READY,
        false,
        reason::ROLLING_OUT,
        words.clone(),
    );
    cond(
        &mut status,
        at,
        RECONCILING,
        true,
        reason::ROLLING_OUT,
        words,
    );
    cond(
        &mut status,
        at,
        MODEL_READY,
        true,
        reason::OPTIMIZED,
        optimized(validated),
    );
    let pods = format!("{ready}/{desired} replicas ready");
    if ready > 0 {
        cond(&mut status, at, AVAILABLE, true, reason::AVAILABLE, pods);
    } else {
        cond(
            &mut status,
            at,
            AVAILABLE,
            false,
            reason::REPLICAS_UNAVAILABLE,
            pods,
        );
    }
    not_configured(&mut status, at);
    status
}

/// The Reconciling/Ready message of a canary of `v` at `step` (0-based).
fn canary_words(v: &Validated, step: usize, failures: i32, words: &str) -> String {
    let weight = [25, 50][step];
    format!(
        "canary revision {} at step {}/2, weight {weight}%, {failures} failed analyses; {words}",
        v.revision,
        step + 1
    )
}

/// A canary of `new` beside the stable `old` (of 4 pods) at `step`, begun `started` seconds ago; `pods` are
/// the stable's ready pods, the canary's pods and its ready ones.
fn canary_status(
    new: &Validated,
    old: &Validated,
    step: usize,
    started: i64,
    words: &str,
    (stable_ready, canary_pods, canary_ready): (i32, i32, i32),
) -> ModelDeploymentStatus {
    let at = &ago(BEFORE);
    let mut status = base(new);
    status.phase = Some(Phase::RollingOut);
    status.model = Some(model(new));
    status.replicas = Some(stable_ready + canary_pods);
    status.ready_replicas = Some(stable_ready + canary_ready);
    *revision(&mut status) = RevisionStatus {
        current: Some(new.revision.clone()),
        stable: Some(old.revision.clone()),
        canary: Some(new.revision.clone()),
        canary_weight: Some([25, 50][step]),
        canary_step: Some(step as i32),
        canary_step_started: Some(ago(started)),
        canary_step_passed: Some(false),
        canary_failures: Some(0),
        ..RevisionStatus::default()
    };
    let words = canary_words(new, step, 0, words);
    cond(
        &mut status,
        at,
        READY,
        false,
        reason::CANARY_ANALYSIS,
        words.clone(),
    );
    cond(
        &mut status,
        at,
        RECONCILING,
        true,
        reason::CANARY_ANALYSIS,
        words,
    );
    cond(
        &mut status,
        at,
        MODEL_READY,
        true,
        reason::OPTIMIZED,
        optimized(new),
    );
    cond(
        &mut status,
        at,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        format!("{stable_ready}/4 replicas ready"),
    );
    not_configured(&mut status, at);
    status
}

/// The failure of `validated`'s revision written into `status` at `at`, as the status renders it. `serving`: a
/// Deployment exists, so the previous revision keeps serving.
fn fail(
    status: &mut ModelDeploymentStatus,
    validated: &Validated,
    failure: &RevisionFailure,
    serving: bool,
    at: &Time,
) {
    let revision_status = revision(status);
    revision_status.failed = Some(validated.revision.clone());
    revision_status.failure = Some(failure.clone());
    status.phase = Some(Phase::Failed);
    let why = failure.reason.as_str();
    let rolled_back = why == reason::ROLLED_BACK || why == reason::ACCURACY_ROLLBACK;
    let prefix = if rolled_back {
        format!("revision {} rolled back: ", validated.revision)
    } else {
        // A rolled-back revision's model was optimized well: ModelReady keeps saying so.
        cond(status, at, MODEL_READY, false, why, failure.message.clone());
        format!("optimize failed for revision {}: ", validated.revision)
    };
    cond(
        status,
        at,
        STALLED,
        true,
        why,
        format!("{prefix}{}", failure.message),
    );
    let reconciling = if rolled_back {
        why
    } else {
        reason::OPTIMIZE_FAILED
    };
    cond(status, at, RECONCILING, false, reconciling, "");
    let suffix = if serving {
        "; the previous revision keeps serving"
    } else {
        ""
    };
    cond(
        status,
        at,
        READY,
        false,
        why,
        format!("{prefix}{}{suffix}", failure.message),
    );
}

fn snapshot(p95: f64, at: Time) -> MetricSnapshot {
    MetricSnapshot {
        time: Some(at),
        latency_p95_millis: Some(p95),
        requests_per_second: Some(40.0),
        error_rate: Some(0.0),
        accuracy: None,
    }
}

fn memory(last_eval_ago: i64) -> Memory {
    Memory {
        history: None,
        last_eval: Some((NOW - last_eval_ago) as f64),
        accuracy_low_since: None,
    }
}

/// What the autoscaler of `v` remembers after evaluating `reads` at [`NOW`] from `before` with `current`
/// replicas (its own arithmetic is [`crate::autoscaler`]'s and [`crate::hpa`]'s to test).
fn remembered(
    v: &Validated,
    before: &Memory,
    current: i32,
    reads: &Result<Reads, String>,
) -> Memory {
    let a = v.md.spec.autoscaling.as_ref().expect("autoscaling");
    let mut memory = before.clone();
    autoscaler::evaluate(a, current, 1.0, reads, &mut memory, NOW as f64);
    memory
}

fn analysis(reads: Result<(f64, Signals, Signals), String>) -> Option<AnalysisSeen> {
    Some(AnalysisSeen {
        window: "40s".into(),
        reads,
    })
}

fn signals(error_rate: f64) -> Signals {
    Signals {
        latency_p95_millis: Some(12.0),
        error_rate: Some(error_rate),
        accuracy: None,
    }
}

// --- 1-4: the optimize Job ---------------------------------------------------------------------------------

#[test]
fn first_reconcile_creates_the_job_and_the_front_children() {
    let v1 = spec("v1", PLAIN);
    let mut seen = observed(&v1, &ModelDeploymentStatus::default());
    seen.front = Front::default();
    seen.job = job_seen(None, None);
    let mut writes = vec![Write::CreateJob(Box::new(children::optimize_job(
        &v1,
        &config(),
        None,
    )))];
    writes.extend(front_writes(&v1));
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes,
            events: vec![],
            status: Some(first_optimizing(&v1, &Time(now()))),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(30),
        }
    );
}

#[test]
fn a_running_job_with_steady_front_children_writes_nothing() {
    let v1 = spec("v1", PLAIN);
    let old = first_optimizing(&v1, &ago(BEFORE));
    let mut seen = observed(&v1, &old);
    seen.job = job_seen(Some(job(&v1, None)), None);
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: None,
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(30),
        }
    );
}

/// A serving pod whose init container refused a tampered artifact is named in a Warning with the init
/// container's own words (both digests); nothing else in the plan changes.
#[test]
fn a_serving_pod_that_cannot_start_is_named_in_a_warning() {
    let v1 = spec("v1", PLAIN);
    let old = first_optimizing(&v1, &ago(BEFORE));
    let mut seen = observed(&v1, &old);
    seen.job = job_seen(Some(job(&v1, None)), None);
    let quiet = decide(&seen, &config());
    let words = "artifact s3://tractor/artifacts/sha256/aa: sha256 is bb, expected aa";
    seen.pod_failures = vec![crate::observe::PodFailure {
        pod: "m-7d9f-x2".into(),
        revision: v1.revision.clone(),
        container: "fetch".into(),
        reason: "DigestMismatch".into(),
        message: words.into(),
    }];
    let plan = decide(&seen, &config());
    assert_eq!(
        plan.events,
        vec![event(
            EventType::Warning,
            reason::POD_START_FAILED,
            format!(
                "pod m-7d9f-x2 (revision {}) cannot start: init container fetch failed (DigestMismatch): {words}; \
                 pods already serving keep serving",
                v1.revision
            ),
            "Serve"
        )]
    );
    assert_eq!(plan.writes, quiet.writes);
    assert_eq!(plan.status, quiet.status);
}

/// The first revision rolls out directly, canary strategy or not: there is nothing to compare it with.
#[test]
fn a_completed_job_with_a_report_makes_the_model_ready_and_applies_the_deployment() {
    for (rest, replicas) in [(PLAIN, 2), (CANARY, 4)] {
        let v1 = spec("v1", rest);
        let old = first_optimizing(&v1, &ago(BEFORE));
        let mut seen = observed(&v1, &old);
        seen.job = job_seen(Some(job(&v1, Some(("Complete", 5)))), Some(report(&v1)));

        let mut want = old.clone();
        want.model = Some(model(&v1));
        want.phase = Some(Phase::RollingOut);
        let words = format!(
            "rolling out revision {}: 0/{replicas} replicas ready",
            v1.revision
        );
        set(&mut want, READY, false, reason::ROLLING_OUT, words.clone());
        set(&mut want, RECONCILING, true, reason::ROLLING_OUT, words);
        set(
            &mut want,
            MODEL_READY,
            true,
            reason::OPTIMIZED,
            optimized(&v1),
        );
        set(
            &mut want,
            AVAILABLE,
            false,
            reason::REPLICAS_UNAVAILABLE,
            format!("0/{replicas} replicas ready"),
        );
        assert_plan!(
            decide(&seen, &config()),
            Plan {
                writes: vec![apply_deployment(children::deployment(
                    &v1,
                    &model(&v1),
                    &config(),
                    replicas
                ))],
                events: vec![event(
                    EventType::Normal,
                    reason::OPTIMIZED,
                    optimized(&v1),
                    "Optimize"
                )],
                status: Some(want),
                autoscaler: Remember::Forget,
                evaluation: None,
                requeue: secs(60),
            },
            "{rest}"
        );
    }
}

/// The shared cache holds this bytes-and-recipe's report: the model is Ready from it, no Job is created, and
/// the Deployment is applied as after a Job.
#[test]
fn a_cache_hit_serves_without_a_job() {
    let v1 = spec("v1", PLAIN);
    let old = first_optimizing(&v1, &ago(BEFORE));
    let mut seen = observed(&v1, &old);
    seen.job = Some(JobSeen {
        job: None,
        report: None,
        cached: Some(report(&v1)),
    });
    let plan = decide(&seen, &config());
    assert!(
        !plan
            .writes
            .iter()
            .any(|write| matches!(write, Write::CreateJob(_))),
        "a cache hit creates no Job: {:?}",
        plan.writes
    );
    let status = plan.status.expect("the status changes");
    let served = status.model.expect("a model");
    assert_eq!(served.revision.as_deref(), Some(v1.revision.as_str()));
    assert_eq!(served.artifact_digest, model(&v1).artifact_digest);
    assert!(
        served
            .message
            .as_deref()
            .is_some_and(|words| words.contains("shared optimize cache")),
        "{:?}",
        served.message
    );
    assert!(
        plan.writes.iter().any(
            |write| matches!(write, Write::Apply(child) if matches!(**child, Child::Deployment(_)))
        ),
        "the Deployment is applied: {:?}",
        plan.writes
    );
    // Without a hit the Job is created, as before.
    seen.job = job_seen(None, None);
    let plan = decide(&seen, &config());
    assert!(
        plan.writes
            .iter()
            .any(|write| matches!(write, Write::CreateJob(_)))
    );
}

#[test]
fn a_completed_job_without_its_report_is_awaited_for_the_grace_then_fails() {
    let v1 = spec("v1", PLAIN);
    let old = first_optimizing(&v1, &ago(BEFORE));

    // Within the grace: still optimizing, looked at again soon.
    let mut seen = observed(&v1, &old);
    seen.job = job_seen(Some(job(&v1, Some(("Complete", 10)))), None);
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: None,
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(3),
        }
    );

    // After it: failed, Internal.
    seen.job = job_seen(Some(job(&v1, Some(("Complete", 61)))), None);
    let failure = RevisionFailure {
        reason: "Internal".into(),
        message: "the optimize Job completed without writing a report to its termination message"
            .into(),
    };
    let mut want = old.clone();
    fail(&mut want, &v1, &failure, false, &Time(now()));
    let stalled = format!(
        "optimize failed for revision {}: {}",
        v1.revision, failure.message
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![event(EventType::Warning, "Internal", stalled, "Optimize")],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(300),
        }
    );
}

// --- 5-6: failed revisions ---------------------------------------------------------------------------------

/// However the Job fails, the revision's failure is typed in the status and said once.
#[test]
fn job_failures_become_the_typed_failure() {
    let v1 = spec("v1", PLAIN);
    let old = first_optimizing(&v1, &ago(BEFORE));
    let unsupported = OptimizeReport::failure(
        FailureReason::UnsupportedOp,
        "operator Foo is not supported by tract",
    );
    let cases = [
        (
            "Failed with a report: the report's reason",
            "Failed",
            Some(unsupported.clone()),
            ("UnsupportedOp", "operator Foo is not supported by tract"),
        ),
        (
            "Complete with a failed report: the report's reason",
            "Complete",
            Some(OptimizeReport::failure(
                FailureReason::BelowMinScore,
                "accuracy 0.81 is below minScore 0.9",
            )),
            ("BelowMinScore", "accuracy 0.81 is below minScore 0.9"),
        ),
        (
            "Failed without a report: the Job's condition",
            "Failed",
            None,
            (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        ),
        (
            "Failed with a report without a reason: the Job's condition",
            "Failed",
            Some(OptimizeReport::default()),
            (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        ),
    ];
    for (case, finished, report, (why, message)) in cases {
        let mut seen = observed(&v1, &old);
        seen.job = job_seen(Some(job(&v1, Some((finished, 30)))), report);
        let failure = RevisionFailure {
            reason: why.into(),
            message: message.into(),
        };
        let mut want = old.clone();
        fail(&mut want, &v1, &failure, false, &Time(now()));
        assert_plan!(
            decide(&seen, &config()),
            Plan {
                writes: vec![],
                events: vec![event(
                    EventType::Warning,
                    why,
                    format!("optimize failed for revision {}: {message}", v1.revision),
                    "Optimize"
                )],
                status: Some(want),
                autoscaler: Remember::Forget,
                evaluation: None,
                requeue: secs(300),
            },
            "{case}"
        );
    }
}

fn unsupported() -> RevisionFailure {
    RevisionFailure {
        reason: "UnsupportedOp".into(),
        message: "operator Foo is not supported by tract".into(),
    }
}

#[test]
fn a_failed_job_keeps_the_previous_revision_serving_and_only_scales_it() {
    let v1 = spec("v1", PLAIN);
    // The new spec also asks for a third pod.
    let v2 = spec("v2", "serving: {replicas: 3}");
    let old = optimizing_over(&v2, &v1, 2);
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.job = job_seen(
        Some(job(&v2, Some(("Failed", 30)))),
        Some(OptimizeReport::failure(
            FailureReason::UnsupportedOp,
            "operator Foo is not supported by tract",
        )),
    );

    let mut want = old.clone();
    fail(&mut want, &v2, &unsupported(), true, &Time(now()));
    set(
        &mut want,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        "2/3 replicas ready",
    );
    let plan = decide(&seen, &config());
    assert_plan!(
        plan,
        Plan {
            // The template stays v1's: only the count follows the new spec.
            writes: vec![Write::Scale {
                deployment: "digits".into(),
                replicas: 3,
            }],
            // Ready falls for the reason Stalled gives: one Warning, not two.
            events: vec![event(
                EventType::Warning,
                "UnsupportedOp",
                format!(
                    "optimize failed for revision {}: operator Foo is not supported by tract",
                    v2.revision
                ),
                "Optimize"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(300),
        }
    );
    let status = plan.status.expect("a status");
    assert_eq!(status.model, Some(model(&v1)), "v1 still serves");
    assert_eq!(
        status.revision.and_then(|r| r.stable),
        Some(v1.revision.clone())
    );
}

#[test]
fn an_already_failed_revision_stays_failed_with_its_message_prefixed_once() {
    let v1 = spec("v1", PLAIN);
    let v2 = spec("v2", "serving: {replicas: 3}");
    let mut old = optimizing_over(&v2, &v1, 3);
    fail(&mut old, &v2, &unsupported(), true, &ago(BEFORE));
    let mut seen = observed(&v2, &old);
    seen.stable = Some(live(
        children::deployment(&v1, &model(&v1), &config(), 3),
        "stable-uid",
        3,
    ));
    // observe reads no Job for a failed revision.
    let steady = Plan {
        writes: vec![],
        events: vec![],
        status: None,
        autoscaler: Remember::Forget,
        evaluation: None,
        requeue: secs(300),
    };
    assert_plan!(decide(&seen, &config()), steady);

    // Conditions an older operator wrote with the prefix twice are rendered again from the typed failure.
    let once = format!(
        "optimize failed for revision {}: operator Foo is not supported by tract",
        v2.revision
    );
    let twice = format!("optimize failed for revision {}: {once}", v2.revision);
    let mut garbled = old.clone();
    cond(
        &mut garbled,
        &ago(BEFORE),
        STALLED,
        true,
        "UnsupportedOp",
        twice.clone(),
    );
    cond(
        &mut garbled,
        &ago(BEFORE),
        READY,
        false,
        "UnsupportedOp",
        format!("{twice}; the previous revision keeps serving"),
    );
    seen.status = garbled.clone();
    if let Ok(observed_spec) = seen.spec.as_mut() {
        observed_spec.md.status = Some(garbled);
    }
    let plan = decide(&seen, &config());
    assert_plan!(
        plan,
        Plan {
            status: Some(old.clone()),
            ..steady
        }
    );
    let status = plan.status.expect("a status");
    assert_eq!(
        conditions::find(&status.conditions, STALLED).map(|c| c.message.as_str()),
        Some(once.as_str())
    );
}

/// A failure recorded before `status.revision.failure` existed keeps its reason from the Stalled condition.
#[test]
fn a_failure_recorded_without_the_typed_field_keeps_the_stalled_reason() {
    let v1 = spec("v1", PLAIN);
    let mut old = first_optimizing(&v1, &ago(BEFORE));
    fail(&mut old, &v1, &unsupported(), false, &ago(BEFORE));
    revision(&mut old).failure = None;
    let seen = observed(&v1, &old);

    let mut want = old.clone();
    fail(
        &mut want,
        &v1,
        &RevisionFailure {
            reason: "UnsupportedOp".into(),
            message: "the failure was recorded before status.revision.failure existed".into(),
        },
        false,
        &Time(now()),
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(300),
        }
    );
}

// --- 7-8, 25: rolling out and ready ------------------------------------------------------------------------

#[test]
fn ready_and_rolled_out_writes_nothing_not_even_the_status() {
    let v1 = spec("v1", PLAIN);
    let old = ready_on(&v1, 2);
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: None,
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(300),
        }
    );
}

#[test]
fn becoming_ready_prunes_other_jobs_and_says_so() {
    let v1 = spec("v1", PLAIN);
    let old = rolling_out(&v1, None, 0, 2);
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));

    let mut want = old.clone();
    want.phase = Some(Phase::Ready);
    want.replicas = Some(2);
    want.ready_replicas = Some(2);
    revision(&mut want).stable = Some(v1.revision.clone());
    set(
        &mut want,
        READY,
        true,
        reason::AVAILABLE,
        "2/2 replicas ready",
    );
    set(&mut want, RECONCILING, false, reason::RECONCILED, "");
    set(
        &mut want,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        "2/2 replicas ready",
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            // current and stable, the same revision here.
            writes: vec![Write::PruneJobs {
                keep: vec![v1.revision.clone()],
            }],
            events: vec![event(
                EventType::Normal,
                reason::AVAILABLE,
                "2/2 replicas ready",
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(300),
        }
    );
}

#[test]
fn a_spec_change_starts_its_job_while_the_previous_revision_keeps_serving() {
    let v1 = spec("v1", PLAIN);
    let v2 = spec("v2", PLAIN);
    let old = ready_on(&v1, 2);
    let mut seen = observed(&v2, &old);
    seen.front = steady_front(&v1);
    seen.stable = Some(stable_on(&v1, 2));
    seen.job = job_seen(None, None);

    let mut writes = vec![Write::CreateJob(Box::new(children::optimize_job(
        &v2,
        &config(),
        None,
    )))];
    // The front children carry the revision label.
    writes.extend(front_writes(&v2));
    let mut want = old.clone();
    want.phase = Some(Phase::Optimizing);
    revision(&mut want).current = Some(v2.revision.clone());
    let words = format!("optimizing revision {}", v2.revision);
    set(&mut want, READY, false, reason::OPTIMIZING, words.clone());
    set(
        &mut want,
        RECONCILING,
        true,
        reason::OPTIMIZING,
        words.clone(),
    );
    set(
        &mut want,
        MODEL_READY,
        false,
        reason::OPTIMIZING,
        format!("optimize Job digits-{} is running", v2.revision),
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes,
            // A new revision being optimized is the operator at work: Ready falls as a Normal event.
            events: vec![event(
                EventType::Normal,
                reason::OPTIMIZING,
                words,
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(30),
        }
    );
}

#[test]
fn a_new_revision_without_canary_applies_the_deployment_and_is_not_ready_yet() {
    let v1 = spec("v1", PLAIN);
    let v2 = spec("v2", PLAIN);
    let old = optimizing_over(&v2, &v1, 2);
    let mut seen = observed(&v2, &old);
    // Fully rolled out, but on v1's template.
    seen.stable = Some(stable_on(&v1, 2));
    seen.job = job_seen(Some(job(&v2, Some(("Complete", 5)))), Some(report(&v2)));

    let mut want = old.clone();
    want.phase = Some(Phase::RollingOut);
    want.model = Some(model(&v2));
    let words = format!("rolling out revision {}: 2/2 replicas ready", v2.revision);
    set(&mut want, READY, false, reason::ROLLING_OUT, words.clone());
    set(&mut want, RECONCILING, true, reason::ROLLING_OUT, words);
    set(
        &mut want,
        MODEL_READY,
        true,
        reason::OPTIMIZED,
        optimized(&v2),
    );
    let plan = decide(&seen, &config());
    assert_plan!(
        plan,
        Plan {
            writes: vec![apply_deployment(children::deployment(
                &v2,
                &model(&v2),
                &config(),
                2
            ))],
            events: vec![event(
                EventType::Normal,
                reason::OPTIMIZED,
                optimized(&v2),
                "Optimize"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(60),
        }
    );
    let status = plan.status.expect("a status");
    assert!(
        !conditions::is_true(&status.conditions, READY),
        "a Deployment write is pending"
    );
    assert_eq!(
        status.revision.and_then(|r| r.stable),
        Some(v1.revision.clone())
    );
}

// --- 9-15: canary ------------------------------------------------------------------------------------------

#[test]
fn a_canary_starts_beside_the_stable_revision() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let old = optimizing_over(&v2, &v1, 4);
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 4));
    seen.job = job_seen(Some(job(&v2, Some(("Complete", 5)))), Some(report(&v2)));

    let mut want = old.clone();
    want.phase = Some(Phase::RollingOut);
    want.model = Some(model(&v2));
    *revision(&mut want) = RevisionStatus {
        current: Some(v2.revision.clone()),
        stable: Some(v1.revision.clone()),
        canary: Some(v2.revision.clone()),
        canary_weight: Some(25),
        canary_step: Some(0),
        canary_step_started: Some(Time(now())),
        canary_step_passed: Some(false),
        canary_failures: Some(0),
        ..RevisionStatus::default()
    };
    let words = canary_words(&v2, 0, 0, "waiting for the canary's pods");
    set(
        &mut want,
        READY,
        false,
        reason::CANARY_ANALYSIS,
        words.clone(),
    );
    set(&mut want, RECONCILING, true, reason::CANARY_ANALYSIS, words);
    set(
        &mut want,
        MODEL_READY,
        true,
        reason::OPTIMIZED,
        optimized(&v2),
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            // A quarter of 4 pods; the stable keeps its 4 until the canary's pod is ready.
            writes: vec![apply_deployment(children::canary_deployment(
                &v2,
                &model(&v2),
                &config(),
                1
            ))],
            events: vec![event(
                EventType::Normal,
                reason::OPTIMIZED,
                optimized(&v2),
                "Optimize"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            // A third of the shortest pause.
            requeue: secs(10),
        }
    );
}

#[test]
fn a_canary_waiting_for_its_pods_changes_nothing() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let old = canary_status(&v2, &v1, 0, 5, "waiting for the canary's pods", (4, 1, 0));
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 4));
    seen.canary = Some(canary_on(&v2, 1, 0));
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: None,
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(10),
        }
    );
}

#[test]
fn a_passed_analysis_after_the_pause_moves_to_the_next_step() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let old = canary_status(&v2, &v1, 0, 40, "waiting for the first analysis", (3, 1, 1));
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 3));
    seen.canary = Some(canary_on(&v2, 1, 1));
    seen.analysis = analysis(Ok((5.0, signals(0.001), signals(0.001))));

    let mut want = old.clone();
    let revision_status = revision(&mut want);
    revision_status.canary_step = Some(1);
    revision_status.canary_weight = Some(50);
    revision_status.canary_step_started = Some(Time(now()));
    revision_status.canary_analysis = Some(CanaryAnalysisStatus {
        verdict: AnalysisVerdict::Passed,
        message: String::new(),
        time: Some(Time(now())),
    });
    let words = canary_words(&v2, 1, 0, "the last analysis passed");
    set(
        &mut want,
        READY,
        false,
        reason::CANARY_ANALYSIS,
        words.clone(),
    );
    set(&mut want, RECONCILING, true, reason::CANARY_ANALYSIS, words);
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            // Half of 4 pods; the stable gives up its third pod only once the second canary pod is ready.
            writes: vec![apply_deployment(children::canary_deployment(
                &v2,
                &model(&v2),
                &config(),
                2
            ))],
            events: vec![],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(10),
        }
    );
}

#[test]
fn analysis_failing_beyond_the_failure_limit_rolls_back() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let mut old = canary_status(&v2, &v1, 1, 20, "the last analysis passed", (2, 2, 2));
    let revision_status = revision(&mut old);
    revision_status.canary_failures = Some(1);
    revision_status.canary_step_passed = Some(true);
    revision_status.canary_analysis = Some(CanaryAnalysisStatus {
        verdict: AnalysisVerdict::Passed,
        message: String::new(),
        time: Some(ago(10)),
    });
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.canary = Some(canary_on(&v2, 2, 2));
    seen.analysis = analysis(Ok((5.0, signals(0.2), signals(0.0))));

    let why = "analysis failed 2 time(s), over failureLimit 1: error rate 0.2000 above the limit 0.05 \
               (canary p95 12.0 ms, error rate 0.2000, accuracy none)";
    let mut want = old.clone();
    want.model = Some(model(&v1));
    *revision(&mut want) = RevisionStatus {
        current: Some(v2.revision.clone()),
        stable: Some(v1.revision.clone()),
        ..RevisionStatus::default()
    };
    want.replicas = Some(2);
    want.ready_replicas = Some(2);
    let failure = RevisionFailure {
        reason: reason::ROLLED_BACK.into(),
        message: why.into(),
    };
    fail(&mut want, &v2, &failure, true, &Time(now()));
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![
                Write::Scale {
                    deployment: "digits".into(),
                    replicas: 4,
                },
                Write::DeleteCanary {
                    uid: "canary-uid".into(),
                },
            ],
            events: vec![event(
                EventType::Warning,
                reason::ROLLED_BACK,
                format!("revision {} rolled back: {why}", v2.revision),
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(10),
        }
    );
}

#[test]
fn an_inconclusive_analysis_holds_the_step_and_says_why() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let old = canary_status(&v2, &v1, 0, 20, "waiting for the first analysis", (3, 1, 1));
    let cases = [
        (
            Ok((0.0, Signals::default(), Signals::default())),
            "no requests reached the canary in the last 40s",
        ),
        (
            Err("Prometheus: connection refused".to_owned()),
            "Prometheus: connection refused",
        ),
    ];
    for (reads, message) in cases {
        let mut seen = observed(&v2, &old);
        seen.stable = Some(stable_on(&v1, 3));
        seen.canary = Some(canary_on(&v2, 1, 1));
        seen.analysis = analysis(reads);

        let mut want = old.clone();
        revision(&mut want).canary_analysis = Some(CanaryAnalysisStatus {
            verdict: AnalysisVerdict::Inconclusive,
            message: message.into(),
            time: Some(Time(now())),
        });
        let words = canary_words(
            &v2,
            0,
            0,
            &format!("the last analysis was inconclusive: {message}"),
        );
        set(
            &mut want,
            READY,
            false,
            reason::CANARY_ANALYSIS,
            words.clone(),
        );
        set(&mut want, RECONCILING, true, reason::CANARY_ANALYSIS, words);
        assert_plan!(
            decide(&seen, &config()),
            Plan {
                writes: vec![],
                events: vec![],
                status: Some(want),
                autoscaler: Remember::Forget,
                evaluation: None,
                // The step's pause ends in 10 s, with the next analysis.
                requeue: secs(10),
            },
            "{message}"
        );
    }
}

#[test]
fn between_analyses_the_typed_finding_stands() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let finding = CanaryAnalysisStatus {
        verdict: AnalysisVerdict::Inconclusive,
        message: "no requests reached the canary in the last 40s".into(),
        time: Some(ago(5)),
    };
    // The conditions say something else (an older operator's words): the typed finding wins.
    let mut old = canary_status(&v2, &v1, 0, 20, "words of an older operator", (3, 1, 1));
    revision(&mut old).canary_analysis = Some(finding.clone());
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 3));
    seen.canary = Some(canary_on(&v2, 1, 1));

    let mut want = old.clone();
    let words = canary_words(
        &v2,
        0,
        0,
        "the last analysis was inconclusive: no requests reached the canary in the last 40s",
    );
    set(
        &mut want,
        READY,
        false,
        reason::CANARY_ANALYSIS,
        words.clone(),
    );
    set(&mut want, RECONCILING, true, reason::CANARY_ANALYSIS, words);
    let plan = decide(&seen, &config());
    assert_plan!(
        plan,
        Plan {
            writes: vec![],
            events: vec![],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(10),
        }
    );
    assert_eq!(
        plan.status
            .and_then(|s| s.revision)
            .and_then(|r| r.canary_analysis),
        Some(finding)
    );
}

#[test]
fn the_last_step_passed_promotes() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let mut old = canary_status(&v2, &v1, 1, 70, "the last analysis passed", (2, 2, 2));
    revision(&mut old).canary_step_passed = Some(true);
    revision(&mut old).canary_analysis = Some(CanaryAnalysisStatus {
        verdict: AnalysisVerdict::Passed,
        message: String::new(),
        time: Some(ago(10)),
    });
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.canary = Some(canary_on(&v2, 2, 2));
    seen.analysis = analysis(Ok((5.0, signals(0.0), signals(0.0))));

    let mut want = old.clone();
    *revision(&mut want) = RevisionStatus {
        current: Some(v2.revision.clone()),
        stable: Some(v1.revision.clone()),
        ..RevisionStatus::default()
    };
    want.replicas = Some(2);
    want.ready_replicas = Some(2);
    let words = format!("rolling out revision {}: 2/4 replicas ready", v2.revision);
    set(&mut want, READY, false, reason::ROLLING_OUT, words.clone());
    set(&mut want, RECONCILING, true, reason::ROLLING_OUT, words);
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            // The stable Deployment takes the new revision with every pod; the canary stays until it has.
            writes: vec![apply_deployment(children::deployment(
                &v2,
                &model(&v2),
                &config(),
                4
            ))],
            events: vec![event(
                EventType::Normal,
                reason::PROMOTED,
                format!(
                    "canary revision {} passed every step and replaces {}",
                    v2.revision, v1.revision
                ),
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(10),
        }
    );
}

fn owned_by_another(mut d: Deployment) -> Deployment {
    d.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "serving.tractor.dev/v1alpha1".into(),
        kind: "ModelDeployment".into(),
        name: "digits-canary".into(),
        uid: "uid-other".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    d
}

const OWNED_ELSEWHERE: &str = "the canary needs the Deployment name digits-canary, which another object \
                               owns; rename one of them";

#[test]
fn a_canary_name_owned_by_another_object_rolls_back_and_deletes_nothing() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let old = canary_status(&v2, &v1, 0, 20, "waiting for the first analysis", (3, 1, 1));
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 3));
    seen.canary = Some(owned_by_another(canary_on(&v2, 1, 1)));
    seen.analysis = analysis(Ok((5.0, signals(0.0), signals(0.0))));

    let mut want = old.clone();
    want.model = Some(model(&v1));
    *revision(&mut want) = RevisionStatus {
        current: Some(v2.revision.clone()),
        stable: Some(v1.revision.clone()),
        ..RevisionStatus::default()
    };
    want.replicas = Some(3);
    want.ready_replicas = Some(3);
    let failure = RevisionFailure {
        reason: reason::ROLLED_BACK.into(),
        message: OWNED_ELSEWHERE.into(),
    };
    fail(&mut want, &v2, &failure, true, &Time(now()));
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            // The stable gets its pods back; the other object's Deployment is left alone.
            writes: vec![Write::Scale {
                deployment: "digits".into(),
                replicas: 4,
            }],
            events: vec![event(
                EventType::Warning,
                reason::ROLLED_BACK,
                format!("revision {} rolled back: {OWNED_ELSEWHERE}", v2.revision),
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(15),
        }
    );
}

#[test]
fn a_canary_refused_as_its_job_completes_still_says_the_model_is_optimized() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    let old = optimizing_over(&v2, &v1, 4);
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v1, 4));
    seen.canary = Some(owned_by_another(canary_on(&v2, 1, 1)));
    seen.job = job_seen(Some(job(&v2, Some(("Complete", 5)))), Some(report(&v2)));

    let plan = decide(&seen, &config());
    assert_eq!(plan.writes, vec![], "nothing to scale, nothing to delete");
    let status = plan.status.expect("a status");
    let model_ready = conditions::find(&status.conditions, MODEL_READY).expect("ModelReady");
    assert_eq!(
        (model_ready.status.as_str(), model_ready.reason.as_str()),
        ("True", reason::OPTIMIZED),
        "{model_ready:?}"
    );
}

// --- 16-21: the autoscaler ---------------------------------------------------------------------------------

#[test]
fn prometheus_dark_holds_the_count_and_says_why_once() {
    let v1 = spec("v1", AUTOSCALED);
    let old = autoscaled(
        ready_on(&v1, 2),
        2,
        "p95 latency 40.0 ms against 50 ms: metrics ask for 2, setting 2",
    );
    let dark =
        "holding replicas: Prometheus at http://prometheus:9090 is unreachable: connection refused";
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: memory(15),
        reads: Some(Err(dark.into())),
    });

    let mut want = old.clone();
    // Nothing was read: the snapshot is replaced by an empty one, not kept with its older time.
    want.metrics = Some(MetricSnapshot::default());
    set(
        &mut want,
        SCALING_ACTIVE,
        false,
        reason::METRICS_UNAVAILABLE,
        dark,
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![event(
                EventType::Warning,
                reason::METRICS_UNAVAILABLE,
                dark,
                "Autoscale"
            )],
            status: Some(want),
            autoscaler: Remember::Store(Memory {
                last_eval: Some(NOW as f64),
                ..memory(15)
            }),
            evaluation: Some(Outcome {
                replicas: 2,
                previous: 2,
                active: (false, reason::METRICS_UNAVAILABLE, dark.into()),
                snapshot: MetricSnapshot::default(),
                degraded: None,
                why: dark.into(),
                next_in: Duration::from_secs(15),
            }),
            requeue: secs(15),
        }
    );
}

#[test]
fn an_autoscaler_not_due_keeps_its_memory_and_comes_back_when_due() {
    let v1 = spec("v1", AUTOSCALED);
    let old = autoscaled(
        ready_on(&v1, 2),
        2,
        "p95 latency 40.0 ms against 50 ms: metrics ask for 2, setting 2",
    );
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: memory(5),
        reads: None,
    });
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: None,
            autoscaler: Remember::Keep,
            evaluation: None,
            requeue: secs(10),
        }
    );
}

#[test]
fn latency_well_above_target_scales_up_within_the_policy() {
    let v1 = spec("v1", AUTOSCALED);
    let old = autoscaled(
        ready_on(&v1, 2),
        2,
        "p95 latency 40.0 ms against 50 ms: metrics ask for 2, setting 2",
    );
    let reads = Ok(Reads {
        values: vec![Ok(200.0)],
        snapshot: snapshot(200.0, Time(now())),
        idle: None,
    });
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: memory(15),
        reads: Some(reads.clone()),
    });

    // 4 times the target asks for 8; the default policy adds at most 4 pods per 15 s.
    let why = "p95 latency 200.0 ms against 50 ms: metrics ask for 8, setting 6 (limited by the scale-up policies)";
    let mut want = old.clone();
    want.phase = Some(Phase::RollingOut);
    want.desired_replicas = Some(6);
    want.metrics = Some(snapshot(200.0, Time(now())));
    want.last_scale_time = Some(Time(now()));
    let words = format!("rolling out revision {}: 2/6 replicas ready", v1.revision);
    set(&mut want, READY, false, reason::ROLLING_OUT, words.clone());
    set(
        &mut want,
        RECONCILING,
        true,
        reason::ROLLING_OUT,
        words.clone(),
    );
    set(
        &mut want,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        "2/6 replicas ready",
    );
    set(&mut want, SCALING_ACTIVE, true, reason::SCALING, why);
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![apply_deployment(children::deployment(
                &v1,
                &model(&v1),
                &config(),
                6
            ))],
            events: vec![
                event(
                    EventType::Normal,
                    reason::SCALING,
                    format!("replicas 2 -> 6: {why}"),
                    "Autoscale"
                ),
                // Ready falls while the new pods start: expected, so Normal.
                event(EventType::Normal, reason::ROLLING_OUT, words, "Rollout"),
            ],
            status: Some(want),
            autoscaler: Remember::Store(remembered(&v1, &memory(15), 2, &reads)),
            evaluation: Some(Outcome {
                replicas: 6,
                previous: 2,
                active: (true, reason::SCALING, why.into()),
                snapshot: snapshot(200.0, Time(now())),
                degraded: None,
                why: why.into(),
                next_in: Duration::from_secs(15),
            }),
            requeue: secs(15),
        }
    );
}

#[test]
fn a_scale_down_within_the_stabilization_window_is_held() {
    let v1 = spec("v1", AUTOSCALED);
    let old = autoscaled(
        ready_on(&v1, 6),
        6,
        "p95 latency 40.0 ms against 50 ms: metrics ask for 6, setting 6",
    );
    let reads = Ok(Reads {
        values: vec![Ok(10.0)],
        snapshot: snapshot(10.0, Time(now())),
        idle: None,
    });
    // Six pods recommended 100 s ago, inside the default 300 s scale-down window.
    let before = Memory {
        history: Some(crate::hpa::History::seeded((NOW - 100) as f64, 6)),
        ..memory(15)
    };
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 6));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: before.clone(),
        reads: Some(reads.clone()),
    });

    let why = "p95 latency 10.0 ms against 50 ms: metrics ask for 2, stabilized to 6 by the window, setting 6";
    let mut want = old.clone();
    want.metrics = Some(snapshot(10.0, Time(now())));
    set(&mut want, SCALING_ACTIVE, true, reason::SCALING, why);
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: Some(want),
            autoscaler: Remember::Store(remembered(&v1, &before, 6, &reads)),
            evaluation: Some(Outcome {
                replicas: 6,
                previous: 6,
                active: (true, reason::SCALING, why.into()),
                snapshot: snapshot(10.0, Time(now())),
                degraded: None,
                why: why.into(),
                next_in: Duration::from_secs(15),
            }),
            requeue: secs(15),
        }
    );
}

#[test]
fn autoscaling_turned_off_forgets_the_memory_and_returns_to_the_spec_count() {
    let autoscaled_spec = spec("v1", AUTOSCALED);
    let plain_spec = spec("v1", PLAIN);
    assert_eq!(
        plain_spec.revision, autoscaled_spec.revision,
        "autoscaling is no part of the revision"
    );
    let old = autoscaled(
        ready_on(&plain_spec, 3),
        3,
        "p95 latency 40.0 ms against 50 ms: metrics ask for 3, setting 3",
    );
    let mut seen = observed(&plain_spec, &old);
    seen.stable = Some(stable_on(&autoscaled_spec, 3));

    let mut want = old.clone();
    want.phase = Some(Phase::RollingOut);
    let words = format!(
        "rolling out revision {}: 3/2 replicas ready",
        plain_spec.revision
    );
    set(&mut want, READY, false, reason::ROLLING_OUT, words.clone());
    set(
        &mut want,
        RECONCILING,
        true,
        reason::ROLLING_OUT,
        words.clone(),
    );
    set(
        &mut want,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        "3/2 replicas ready",
    );
    set(
        &mut want,
        SCALING_ACTIVE,
        false,
        reason::NOT_CONFIGURED,
        "spec.autoscaling is not set",
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![apply_deployment(children::deployment(
                &plain_spec,
                &model(&plain_spec),
                &config(),
                2
            ))],
            events: vec![event(
                EventType::Normal,
                reason::ROLLING_OUT,
                words,
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(60),
        }
    );
}

#[test]
fn accuracy_below_the_floor_for_the_window_rolls_back_to_the_previous_revision() {
    let v1 = spec("v1", ACCURACY_GUARD);
    let v2 = spec("v2", ACCURACY_GUARD);
    let scaling = "no scaling metric: metrics ask for 2, setting 2";
    let old = autoscaled(ready_on(&v2, 2), 2, scaling);
    let reads = Ok(Reads {
        values: vec![Ok(0.5)],
        snapshot: MetricSnapshot {
            time: Some(Time(now())),
            accuracy: Some(0.5),
            ..MetricSnapshot::default()
        },
        idle: None,
    });
    // Below the floor for 120 s, twice the window.
    let before = Memory {
        accuracy_low_since: Some((NOW - 120) as f64),
        ..memory(15)
    };
    let previous = Previous {
        revision: v1.revision.clone(),
        template: children::deployment(&v1, &model(&v1), &config(), 2)
            .spec
            .expect("a spec")
            .template,
        model: Some(serde_json::to_string(&model(&v1)).expect("json")),
    };
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v2, 2));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: before.clone(),
        reads: Some(reads.clone()),
    });
    seen.previous = Some(previous.clone());

    let low = "online accuracy 0.500 has been below the floor 0.9 for 120 s (window 1m)";
    let failure = RevisionFailure {
        reason: reason::ACCURACY_ROLLBACK.into(),
        message: format!("{low}; returned to revision {}", v1.revision),
    };
    let mut want = old.clone();
    want.model = Some(model(&v1));
    want.metrics = reads.as_ref().ok().map(|r| r.snapshot.clone());
    // Where the rollback returns: v1's revision rolled out before.
    revision(&mut want).stable = Some(v1.revision.clone());
    fail(&mut want, &v2, &failure, true, &Time(now()));
    set(&mut want, DEGRADED, true, reason::ACCURACY_BELOW_FLOOR, low);
    let plan = decide(&seen, &config());
    assert_plan!(
        plan,
        Plan {
            writes: vec![Write::RollBack(Box::new(previous))],
            events: vec![
                // Ready falls for the same reason: no second event for it.
                event(
                    EventType::Warning,
                    reason::ACCURACY_ROLLBACK,
                    format!("revision {} rolled back: {}", v2.revision, failure.message),
                    "Rollout"
                ),
                event(
                    EventType::Warning,
                    reason::ACCURACY_BELOW_FLOOR,
                    low,
                    "Analyze"
                ),
            ],
            status: Some(want),
            autoscaler: Remember::Store(remembered(&v2, &before, 2, &reads)),
            evaluation: Some(Outcome {
                replicas: 2,
                previous: 2,
                active: (true, reason::SCALING, scaling.into()),
                snapshot: reads.as_ref().map(|r| r.snapshot.clone()).expect("reads"),
                degraded: Some((true, low.into())),
                why: scaling.into(),
                next_in: Duration::from_secs(15),
            }),
            requeue: secs(15),
        }
    );
    let status = plan.status.expect("a status");
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(status.model, Some(model(&v1)));
}

/// Accuracy below the floor with nothing to return to, or no rollback asked for: Degraded, and only that.
#[test]
fn accuracy_below_the_floor_without_a_rollback_only_degrades() {
    let no_rollback = "autoscaling:
  maxReplicas: 10
  metrics: [{type: Accuracy, accuracy: {min: 0.9, window: 1m}}]";
    let v1 = spec("v1", ACCURACY_GUARD);
    let previous = Previous {
        revision: v1.revision.clone(),
        template: children::deployment(&v1, &model(&v1), &config(), 2)
            .spec
            .expect("a spec")
            .template,
        model: Some(serde_json::to_string(&model(&v1)).expect("json")),
    };
    let cases = [
        ("no earlier revision", ACCURACY_GUARD, None),
        ("rollbackOnAccuracyDrop off", no_rollback, Some(previous)),
    ];
    for (case, rest, previous) in cases {
        let v2 = spec("v2", rest);
        let scaling = "no scaling metric: metrics ask for 2, setting 2";
        let old = autoscaled(ready_on(&v2, 2), 2, scaling);
        let reads = Ok(Reads {
            values: vec![Ok(0.5)],
            snapshot: MetricSnapshot {
                time: Some(Time(now())),
                accuracy: Some(0.5),
                ..MetricSnapshot::default()
            },
            idle: None,
        });
        let before = Memory {
            accuracy_low_since: Some((NOW - 120) as f64),
            ..memory(15)
        };
        let mut seen = observed(&v2, &old);
        seen.stable = Some(stable_on(&v2, 2));
        seen.autoscaling = Some(AutoscalingSeen {
            memory: before.clone(),
            reads: Some(reads.clone()),
        });
        seen.previous = previous;

        let low = "online accuracy 0.500 has been below the floor 0.9 for 120 s (window 1m)";
        let snapshot = reads.as_ref().map(|r| r.snapshot.clone()).expect("reads");
        let mut want = old.clone();
        want.phase = Some(Phase::Degraded);
        want.metrics = Some(snapshot.clone());
        set(&mut want, DEGRADED, true, reason::ACCURACY_BELOW_FLOOR, low);
        assert_plan!(
            decide(&seen, &config()),
            Plan {
                writes: vec![],
                events: vec![event(
                    EventType::Warning,
                    reason::ACCURACY_BELOW_FLOOR,
                    low,
                    "Analyze"
                )],
                status: Some(want),
                autoscaler: Remember::Store(remembered(&v2, &before, 2, &reads)),
                evaluation: Some(Outcome {
                    replicas: 2,
                    previous: 2,
                    active: (true, reason::SCALING, scaling.into()),
                    snapshot,
                    degraded: Some((true, low.into())),
                    why: scaling.into(),
                    next_in: Duration::from_secs(15),
                }),
                requeue: secs(15),
            },
            "{case}"
        );
    }
}

// --- 22: invalid spec ---------------------------------------------------------------------------------------

#[test]
fn an_invalid_spec_writes_only_its_status_and_waits_for_a_change() {
    let md = model_deployment("https://models.example.com/model.bin", PLAIN);
    let invalid = validate(&md).expect_err("no format to derive");
    let message = "cannot tell the model format from \"https://models.example.com/model.bin\": set \
                   spec.model.format (onnx or nnef)";
    assert_eq!(invalid.to_string(), message);
    let mut seen = Observed {
        spec: Err(invalid),
        generation: Some(GEN),
        status: ModelDeploymentStatus::default(),
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
        now: now(),
    };
    let mut want = ModelDeploymentStatus {
        observed_generation: Some(GEN),
        phase: Some(Phase::Failed),
        ..ModelDeploymentStatus::default()
    };
    set(&mut want, STALLED, true, reason::INVALID_SPEC, message);
    set(&mut want, READY, false, reason::INVALID_SPEC, message);
    set(&mut want, RECONCILING, false, reason::INVALID_SPEC, "");
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![event(
                EventType::Warning,
                reason::INVALID_SPEC,
                message,
                "Optimize"
            )],
            status: Some(want.clone()),
            autoscaler: Remember::Keep,
            evaluation: None,
            requeue: None,
        }
    );

    // Once said, nothing more.
    seen.status = want;
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![],
            events: vec![],
            status: None,
            autoscaler: Remember::Keep,
            evaluation: None,
            requeue: None,
        }
    );
}

// --- 23: leftover canary ------------------------------------------------------------------------------------

#[test]
fn a_leftover_canary_goes_once_the_promoted_stable_has_rolled_out() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    // Right after the promotion: the stable Deployment was re-templated, the canary still runs.
    let old = rolling_out(&v2, Some(&v1.revision), 2, 4);
    let mut seen = observed(&v2, &old);
    seen.stable = Some(stable_on(&v2, 4));
    seen.canary = Some(canary_on(&v2, 2, 2));

    let mut want = old.clone();
    want.phase = Some(Phase::Ready);
    want.replicas = Some(4);
    want.ready_replicas = Some(4);
    revision(&mut want).stable = Some(v2.revision.clone());
    set(
        &mut want,
        READY,
        true,
        reason::AVAILABLE,
        "4/4 replicas ready",
    );
    set(&mut want, RECONCILING, false, reason::RECONCILED, "");
    set(
        &mut want,
        AVAILABLE,
        true,
        reason::AVAILABLE,
        "4/4 replicas ready",
    );
    assert_plan!(
        decide(&seen, &config()),
        Plan {
            writes: vec![
                Write::DeleteCanary {
                    uid: "canary-uid".into(),
                },
                Write::PruneJobs {
                    keep: vec![v2.revision.clone()],
                },
            ],
            events: vec![event(
                EventType::Normal,
                reason::AVAILABLE,
                "4/4 replicas ready",
                "Rollout"
            )],
            status: Some(want),
            autoscaler: Remember::Forget,
            evaluation: None,
            requeue: secs(300),
        }
    );
}

#[test]
fn an_abandoned_canary_stays_until_the_stable_deployment_has_its_pods_back() {
    let v1 = spec("v1", CANARY);
    let v2 = spec("v2", CANARY);
    // Mid-canary, the spec moves on to a third revision, which starts optimizing.
    let v3 = spec("v3", CANARY);
    let old = canary_status(&v2, &v1, 1, 20, "the last analysis passed", (2, 2, 2));
    let mut seen = observed(&v3, &old);
    seen.front = steady_front(&v3);
    seen.stable = Some(stable_on(&v1, 2));
    seen.canary = Some(canary_on(&v2, 2, 2));
    seen.job = job_seen(Some(job(&v3, None)), None);

    let plan = decide(&seen, &config());
    assert_eq!(
        plan.writes,
        vec![Write::Scale {
            deployment: "digits".into(),
            replicas: 4,
        }],
        "the canary's 2 pods serve until the stable has 4 again"
    );
}

// --- 24: ServiceMonitor -------------------------------------------------------------------------------------

#[test]
fn a_service_monitor_is_applied_when_absent_or_changed_only() {
    let v1 = spec("v1", PLAIN);
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ));
    let desired = children::with_spec_hash(crate::monitor::service_monitor(&v1, &resource));
    let current = children::spec_hash(&desired).map(str::to_owned);
    let cases = [
        ("absent", None, true),
        ("changed", Some("0123456789abcdef".to_owned()), true),
        ("as applied", current, false),
    ];
    for (case, hash, written) in cases {
        let mut seen = observed(&v1, &ready_on(&v1, 2));
        seen.stable = Some(stable_on(&v1, 2));
        seen.monitor = Some(MonitorSeen {
            resource: resource.clone(),
            hash,
        });
        let writes = if written {
            vec![Write::ServiceMonitor {
                object: Box::new(desired.clone()),
                resource: resource.clone(),
            }]
        } else {
            vec![]
        };
        assert_plan!(
            decide(&seen, &config()),
            Plan {
                writes,
                events: vec![],
                status: None,
                autoscaler: Remember::Forget,
                evaluation: None,
                requeue: secs(300),
            },
            "{case}"
        );
    }
}

const SCALES_TO_ZERO: &str = "autoscaling:
  minReplicas: 0
  maxReplicas: 4
  interval: 15s
  scaleToZero: {idleAfter: 60s}
  metrics: [{type: Throughput, throughput: {targetPerReplica: 10}}]";

fn activator() -> children::Activator {
    children::Activator {
        addresses: vec!["10.1.0.7".into(), "10.1.0.8".into()],
        http_port: Some(8080),
        grpc_port: Some(8081),
    }
}

#[test]
fn an_idle_model_leaves_its_pods_for_the_activator_before_its_last_pod_goes() {
    let v1 = spec("v1", SCALES_TO_ZERO);
    let old = autoscaled(ready_on(&v1, 1), 1, "idle");
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 1));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: memory(15),
        reads: Some(Ok(Reads {
            values: vec![Ok(0.0)],
            snapshot: snapshot(0.0, Time(now())),
            idle: Some(Ok(0.0)),
        })),
    });
    seen.zero = Some(crate::observe::ZeroSeen {
        activator: activator(),
        pod_slices: vec!["digits-x7k2p".into()],
        ready_pod_endpoints: 1,
        activator_slice: None,
    });
    let plan = decide(&seen, &config());
    let kinds: Vec<&str> = plan
        .writes
        .iter()
        .map(|write| match write {
            Write::Apply(child) => match &**child {
                Child::Service(service) => {
                    assert!(
                        service
                            .spec
                            .as_ref()
                            .and_then(|s| s.selector.as_ref())
                            .is_none(),
                        "the Service keeps its selector"
                    );
                    "Service"
                }
                Child::EndpointSlice(slice) => {
                    assert_eq!(slice.metadata.name.as_deref(), Some("digits-activator"));
                    assert_eq!(slice.endpoints.as_ref().map(Vec::len), Some(2));
                    "EndpointSlice"
                }
                Child::Deployment(deployment) => {
                    assert_eq!(
                        deployment.spec.as_ref().and_then(|spec| spec.replicas),
                        Some(0)
                    );
                    "Deployment"
                }
                _ => "other",
            },
            Write::DeletePodEndpoints { slices } => {
                assert_eq!(slices, &["digits-x7k2p".to_owned()]);
                "DeletePodEndpoints"
            }
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Service",
            "EndpointSlice",
            "DeletePodEndpoints",
            "Deployment"
        ],
        "{:#?}",
        plan.writes
    );
    let status = plan.status.expect("status");
    let ready = conditions::find(&status.conditions, READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", reason::SCALED_TO_ZERO)
    );
    // Ready all along: only the reason changed, not the transition time.
    assert_eq!(ready.last_transition_time, ago(BEFORE));
    assert_eq!(status.phase, Some(Phase::ScaledToZero));
    assert_eq!(status.desired_replicas, Some(0));
    let zero = status.scale_to_zero.expect("scaleToZero");
    assert_eq!(zero.endpoints, Some(tractor_api::Endpoints::Activator));
    assert_eq!(zero.idle_since, Some(Time(now())));
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == reason::SCALED_TO_ZERO),
        "{:?}",
        plan.events
    );
}

#[test]
fn prometheus_dark_keeps_a_scale_to_zero_model_on_its_pods() {
    let v1 = spec("v1", SCALES_TO_ZERO);
    let old = autoscaled(ready_on(&v1, 1), 1, "idle");
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 1));
    seen.autoscaling = Some(AutoscalingSeen {
        memory: memory(15),
        reads: Some(Err("Prometheus unreachable".into())),
    });
    seen.zero = Some(crate::observe::ZeroSeen {
        activator: activator(),
        pod_slices: vec!["digits-x7k2p".into()],
        ready_pod_endpoints: 1,
        activator_slice: None,
    });
    let plan = decide(&seen, &config());
    assert!(
        plan.writes.iter().all(|write| !matches!(
            write,
            Write::DeletePodEndpoints { .. } | Write::Scale { .. }
        )),
        "{:#?}",
        plan.writes
    );
    let status = plan.status.unwrap_or(old);
    assert_ne!(status.phase, Some(Phase::ScaledToZero));
}

/// `monitoring.drift` with a 30 s interval.
const DRIFT: &str =
    "serving: {replicas: 2}\nmonitoring:\n  drift: {threshold: 0.2, interval: 30s, minRows: 100}";

fn drift_reads(scores: &[(&str, f64)]) -> Option<Result<crate::drift::DriftReads, String>> {
    Some(Ok(crate::drift::DriftReads {
        rows: 500.0,
        features: scores.iter().map(|(f, s)| ((*f).to_owned(), *s)).collect(),
        prediction: Some(0.05),
    }))
}

#[test]
fn input_drift_degrades_a_ready_model_warns_once_and_clears_with_normal_traffic() {
    let v1 = spec("v1", DRIFT);
    let old = ready_on(&v1, 2);
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.drift = drift_reads(&[("x[0]", 0.01), ("x[3]", 1.5)]);
    let plan = decide(&seen, &config());
    let drifted = plan.status.clone().expect("the status changes");
    let condition = conditions::find(&drifted.conditions, DEGRADED).expect("Degraded");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", reason::INPUT_DRIFT)
    );
    assert!(
        condition.message.contains("x[3] PSI 1.500"),
        "{}",
        condition.message
    );
    assert_eq!(drifted.phase, Some(Phase::Degraded));
    let drift = drifted.drift.clone().expect("status.drift");
    assert_eq!(drift.drifted, Some(true));
    assert_eq!(drift.evaluated_at, Some(Time(now())));
    assert_eq!(drift.features[0].feature, "x[3]");
    assert_eq!(plan.writes, vec![], "drift changes no child");
    let warnings: Vec<&Event> = plan
        .events
        .iter()
        .filter(|e| e.reason == reason::INPUT_DRIFT)
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", plan.events);
    assert_eq!(warnings[0].type_, EventType::Warning);
    assert_eq!(plan.requeue, secs(30), "the next read is one interval away");

    // Between reads: nothing read, nothing changes, and the phase stays Degraded.
    let mut between = observed(&v1, &drifted);
    between.stable = Some(stable_on(&v1, 2));
    let plan = decide(&between, &config());
    assert_eq!(plan.status, None);
    assert_eq!(plan.events, vec![]);
    assert_eq!(plan.requeue, secs(30));

    // Normal traffic again: Degraded clears, the phase is Ready, no Warning.
    let mut back = observed(&v1, &drifted);
    back.stable = Some(stable_on(&v1, 2));
    back.drift = drift_reads(&[("x[0]", 0.01), ("x[3]", 0.04)]);
    let plan = decide(&back, &config());
    let healthy = plan.status.expect("the status changes");
    let condition = conditions::find(&healthy.conditions, DEGRADED).expect("Degraded");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", reason::HEALTHY)
    );
    assert_eq!(healthy.phase, Some(Phase::Ready));
    assert_eq!(healthy.drift.and_then(|d| d.drifted), Some(false));
    assert!(
        plan.events.iter().all(|e| e.type_ != EventType::Warning),
        "{:?}",
        plan.events
    );
}

#[test]
fn a_drift_read_that_cannot_judge_keeps_the_verdict_and_says_why() {
    let v1 = spec("v1", DRIFT);
    let mut old = ready_on(&v1, 2);
    old.drift = Some(tractor_api::DriftStatus {
        evaluated_at: Some(ago(60)),
        drifted: Some(false),
        ..tractor_api::DriftStatus::default()
    });
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    seen.drift = Some(Err("Prometheus: unreachable".into()));
    let plan = decide(&seen, &config());
    let new = plan.status.expect("evaluatedAt and the message change");
    let drift = new.drift.expect("status.drift");
    assert_eq!(drift.drifted, Some(false));
    assert_eq!(
        drift.message.as_deref(),
        Some("drift not judged: Prometheus: unreachable")
    );
    assert_eq!(new.conditions, old.conditions, "Degraded is left as it was");
}

#[test]
fn without_monitoring_drift_there_is_no_drift_status() {
    let v1 = spec("v1", PLAIN);
    let mut old = ready_on(&v1, 2);
    old.drift = Some(tractor_api::DriftStatus::default());
    let mut seen = observed(&v1, &old);
    seen.stable = Some(stable_on(&v1, 2));
    let plan = decide(&seen, &config());
    assert_eq!(plan.status.expect("drift is dropped").drift, None);
    assert_eq!(plan.requeue, secs(300));
}
