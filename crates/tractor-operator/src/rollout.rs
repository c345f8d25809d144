//! Canary rollouts inside the reconcile: a second Deployment for the new revision, its share of pods per
//! step, analysis read from Prometheus, and the canary's progress kept in `status.revision` so that a
//! restarted operator resumes where the last one was.
//!
//! The decisions are [`crate::canary`]'s (pure); this module reads the world for it and carries out what it
//! decides. Traffic follows pods: both Deployments sit behind the one Service.
//!
//! - A canary starts when the spec asks for `strategy: Canary`, the new revision's model is optimized and a
//!   stable Deployment serves another revision. The first revision of a resource has nothing to compare
//!   with and rolls out directly.
//! - While it progresses, the stable Deployment keeps its pod template and gives up pods only as the
//!   canary's become ready, so capacity never dips below the desired count.
//! - Analysis runs every few seconds (a third of the shortest pause, between 2 and 15 s) over a rate window
//!   of at least 20 s. No data (no requests reached the canary, no feedback yet, Prometheus unreachable)
//!   neither passes nor fails: the canary waits at its step, and a step completes only after a pass.
//! - Promotion re-templates the stable Deployment to the new revision (a rolling update that never goes
//!   below capacity); the canary Deployment is removed once the stable one has rolled out.
//! - Rollback removes the canary Deployment at once and marks the revision failed until the spec changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use tractor_api::conditions::{self, reason};
use tractor_api::names::FIELD_MANAGER;
use tractor_api::{Canary, ModelDeploymentStatus, ModelStatus, Phase, RolloutStrategy};

use crate::autoscaler;
use crate::build;
use crate::canary::{self, Signals, State, Verdict};
use crate::error::{Error, call, is_not_found};
use crate::prom::{self, Selector};
use crate::rbac;
use crate::reconcile::{Context, apply_child, publish, scale_deployment};
use crate::validate::Validated;

/// Shortest and longest time between two analyses of one canary.
const ANALYSIS_MIN: Duration = Duration::from_secs(2);
const ANALYSIS_MAX: Duration = Duration::from_secs(15);

/// When each canary was last analysed; lost on restart, which only brings the next analysis forward.
#[derive(Default)]
pub struct Rollouts {
    last_analysis: Mutex<HashMap<String, f64>>,
}

/// Seconds after which a canary's analysis clock is dropped.
const FORGET_AFTER: f64 = 3600.0;

impl Rollouts {
    /// True (and remembered) when `every` has passed since the last analysis of `key`.
    fn due(&self, key: &str, now: f64, every: Duration) -> bool {
        let Ok(mut last) = self.last_analysis.lock() else {
            return false;
        };
        match last.get(key) {
            Some(at) if now - at + 0.05 < every.as_secs_f64() => false,
            _ => {
                // Analyses come every 15 s at most: a clock untouched for longer than FORGET_AFTER belongs
                // to a canary that has finished or a ModelDeployment that is gone.
                last.retain(|_, at| now - *at < FORGET_AFTER);
                last.insert(key.to_owned(), now);
                true
            }
        }
    }
}

/// What a canary did in one reconcile.
#[derive(Debug)]
pub struct Progress {
    /// The state after this reconcile's transition.
    pub state: State,
    /// The revision the stable Deployment serves.
    pub stable_revision: String,
    /// The stable Deployment as it now is.
    pub stable: Deployment,
    /// The canary Deployment, while there is one.
    pub canary: Option<Deployment>,
    /// The canary's weight in percent.
    pub weight: i32,
    /// What the last analysis found, for the conditions.
    pub analysis: String,
    /// When to look again.
    pub requeue: Duration,
}

/// The canary part of the spec, when the rollout strategy is `Canary`.
pub fn canary_spec(v: &Validated) -> Option<&Canary> {
    let rollout = &v.md.spec.rollout;
    (rollout.strategy == RolloutStrategy::Canary)
        .then_some(rollout.canary.as_ref())
        .flatten()
}

/// How often a canary is analysed: a third of its shortest pause, within [2 s, 15 s].
pub fn analysis_interval(spec: &Canary) -> Duration {
    canary::pauses(spec, autoscaler::parse_duration)
        .into_iter()
        .map(|p| Duration::from_secs_f64(p / 3.0))
        .min()
        .unwrap_or(ANALYSIS_MAX)
        .clamp(ANALYSIS_MIN, ANALYSIS_MAX)
}

fn now_secs() -> f64 {
    // Whole seconds: the step start goes through a metav1.Time, which keeps no fraction.
    Timestamp::now().as_second() as f64
}

/// The canary's state as the last status recorded it.
pub fn restore(status: &ModelDeploymentStatus, target: &str) -> State {
    let Some(r) = status.revision.as_ref() else {
        return State::Stable;
    };
    match (&r.canary, &r.canary_step, &r.canary_step_started) {
        (Some(revision), Some(step), Some(since)) if revision == target => State::Progressing {
            revision: revision.clone(),
            step: usize::try_from(*step).unwrap_or(0),
            since: since.0.as_second() as f64,
            failures: r.canary_failures.unwrap_or(0),
            passed: r.canary_step_passed.unwrap_or(false),
        },
        _ => State::Stable,
    }
}

/// True when every pod the Deployment asks for runs `revision` and is available.
fn rolled_out(d: &Deployment, revision: &str) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    build::served_revision(d).as_deref() == Some(revision)
        && s.observed_generation >= d.metadata.generation
        && s.updated_replicas.unwrap_or(0) >= want
        && s.available_replicas.unwrap_or(0) >= want
        && s.replicas.unwrap_or(0) == want
}

fn available(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Runs one step of a canary when one is (or should be) in progress; `None` leaves the rollout to the
/// plain path. `model` is the new revision's optimized model.
pub async fn progress(
    v: &Validated,
    model: &ModelStatus,
    old: &ModelDeploymentStatus,
    ctx: &Context,
) -> Result<Option<Progress>, Error> {
    let Some(spec) = canary_spec(v) else {
        return Ok(None);
    };
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let Some(stable) = call(rbac::GET_DEPLOYMENT, &v.namespace, api.get_opt(&v.name)).await? else {
        return Ok(None);
    };
    let Some(stable_revision) = build::served_revision(&stable) else {
        return Ok(None);
    };
    if stable_revision == v.revision {
        return Ok(None);
    }
    let failed = old.revision.as_ref().and_then(|r| r.failed.clone());
    let now = now_secs();
    let state = restore(old, &v.revision);
    let pauses = canary::pauses(spec, autoscaler::parse_duration);
    let every = analysis_interval(spec);
    let canary_name = build::canary_name(&v.name);
    let live_canary = call(
        rbac::GET_DEPLOYMENT,
        &v.namespace,
        api.get_opt(&canary_name),
    )
    .await?;
    // `<name>-canary` may be another ModelDeployment's own Deployment: never take it over.
    if let Some(other) = &live_canary
        && !owned(v, other)
    {
        let why = format!(
            "the canary needs the Deployment name {canary_name}, which another object owns; rename one of them"
        );
        return Ok(Some(Progress {
            state: State::RolledBack {
                revision: v.revision.clone(),
                reason: why.clone(),
            },
            stable_revision,
            stable,
            canary: None,
            weight: 0,
            analysis: why,
            requeue: ANALYSIS_MAX,
        }));
    }

    let canary_ready = live_canary
        .as_ref()
        .is_some_and(|d| rolled_out(d, &v.revision));
    let key = format!("{}/{}", v.namespace, v.name);
    let verdict = match &state {
        State::Progressing { .. } if canary_ready && ctx.rollouts.due(&key, now, every) => {
            Some(analyse(v, spec, &stable_revision, every, ctx).await)
        }
        _ => None,
    };
    let next = canary::next(
        &state,
        &v.revision,
        Some(&stable_revision),
        failed.as_deref(),
        spec,
        &pauses,
        verdict.as_ref(),
        now,
    );
    let analysis = match &verdict {
        Some(Verdict::Pass) => "the last analysis passed".to_owned(),
        Some(Verdict::Fail(why)) => format!("the last analysis failed: {why}"),
        Some(Verdict::Inconclusive(why)) => format!("the last analysis was inconclusive: {why}"),
        None if !canary_ready => "waiting for the canary's pods".to_owned(),
        // Between analyses the previous finding stands.
        None => old
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::RECONCILING && c.reason == reason::CANARY_ANALYSIS)
            .and_then(|c| c.message.split_once("; ").map(|(_, a)| a.to_owned()))
            .unwrap_or_else(|| "waiting for the first analysis".to_owned()),
    };

    let total = build::desired_replicas(&v.md);
    let weight = canary::weight(&next, spec);
    let (stable_now, canary_now) = match &next {
        State::Progressing { .. } => {
            let (s, c) = canary::split(total, weight);
            let canary = apply_child(
                ctx,
                v,
                build::canary_deployment(v, model, &ctx.build, c),
                rbac::GET_DEPLOYMENT,
                rbac::APPLY_DEPLOYMENT,
            )
            .await?;
            // The stable side gives up a pod only once a canary pod took its place.
            let ready = available(&canary).min(c);
            let stable = scale_deployment(ctx, v, &stable, s.max(total - ready)).await?;
            (stable, Some(canary))
        }
        State::Promoted { .. } => {
            let stable = apply_child(
                ctx,
                v,
                build::deployment(v, model, &ctx.build),
                rbac::GET_DEPLOYMENT,
                rbac::APPLY_DEPLOYMENT,
            )
            .await?;
            let event = Event {
                type_: EventType::Normal,
                reason: reason::PROMOTED.into(),
                note: Some(format!(
                    "canary revision {} passed every step and replaces {stable_revision}",
                    v.revision
                )),
                action: "Rollout".into(),
                secondary: None,
            };
            publish(ctx, &v.md, &event).await;
            (stable, live_canary)
        }
        State::RolledBack { .. } => {
            remove_canary(ctx, v).await?;
            (scale_deployment(ctx, v, &stable, total).await?, None)
        }
        State::Stable => return Ok(None),
    };
    let pause_left = match &next {
        State::Progressing { step, since, .. } => {
            let pause = pauses.get(*step).copied().unwrap_or(60.0);
            Duration::from_secs_f64((since + pause - now).max(1.0))
        }
        _ => every,
    };
    Ok(Some(Progress {
        state: next,
        stable_revision,
        stable: stable_now,
        canary: canary_now,
        weight,
        analysis,
        requeue: every.min(pause_left),
    }))
}

/// Reads the canary's and the stable's signals and judges them against the spec's limits.
async fn analyse(
    v: &Validated,
    spec: &Canary,
    stable_revision: &str,
    every: Duration,
    ctx: &Context,
) -> Verdict {
    let Some(limits) = spec.analysis.as_ref() else {
        return Verdict::Pass;
    };
    let source =
        v.md.spec
            .autoscaling
            .as_ref()
            .and_then(|a| a.prometheus.as_ref());
    let server = match ctx.autoscaler.server(v, source, &ctx.client).await {
        Ok(s) => s,
        Err(why) => return Verdict::Inconclusive(format!("Prometheus: {why}")),
    };
    let window = prom::window(autoscaler::rate_window(every));
    let client = ctx.autoscaler.prometheus();
    let read = |deployment: String, revision: &str| {
        let sel = Selector {
            namespace: v.namespace.clone(),
            model: v.name.clone(),
            deployment: Some(deployment),
            revision: Some(revision.to_owned()),
        };
        let server = server.clone();
        let window = window.clone();
        async move {
            let rps = client
                .value(&server, &prom::requests_per_second(&sel, &window))
                .await;
            let signals = Signals {
                latency_p95_millis: client
                    .value(&server, &prom::latency(&sel, 0.95, &window))
                    .await
                    .ok()
                    .map(|s| s * 1000.0),
                error_rate: client
                    .value(&server, &prom::error_rate(&sel, &window))
                    .await
                    .ok(),
                accuracy: client.value(&server, &prom::accuracy(&sel)).await.ok(),
            };
            (rps, signals)
        }
    };
    let (canary_rps, canary) = read(build::canary_name(&v.name), &v.revision).await;
    match canary_rps {
        Err(e) => return Verdict::Inconclusive(format!("Prometheus: {e}")),
        Ok(r) if r <= 0.0 => {
            return Verdict::Inconclusive(format!(
                "no requests reached the canary in the last {window}"
            ));
        }
        Ok(_) => {}
    }
    let (_, stable) = read(v.name.clone(), stable_revision).await;
    let verdict = canary::analyse(Some(limits), &canary, &stable);
    let figures = describe(&canary);
    match verdict {
        Verdict::Pass => Verdict::Pass,
        Verdict::Fail(why) => Verdict::Fail(format!("{why} ({figures})")),
        Verdict::Inconclusive(why) => Verdict::Inconclusive(format!("{why} ({figures})")),
    }
}

fn describe(s: &Signals) -> String {
    let f = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "none".to_owned(), |v| format!("{v:.digits$}"))
    };
    format!(
        "canary p95 {} ms, error rate {}, accuracy {}",
        f(s.latency_p95_millis, 1),
        f(s.error_rate, 4),
        f(s.accuracy, 4)
    )
}

/// True when this ModelDeployment owns `d`.
fn owned(v: &Validated, d: &Deployment) -> bool {
    d.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == v.md.metadata.uid.as_ref())
}

/// Deletes this ModelDeployment's canary Deployment if there is one (a same-named one it does not own stays).
pub async fn remove_canary(ctx: &Context, v: &Validated) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let name = build::canary_name(&v.name);
    let Some(live) = call(rbac::GET_DEPLOYMENT, &v.namespace, api.get_opt(&name)).await? else {
        return Ok(());
    };
    if !owned(v, &live) {
        return Ok(());
    }
    let mut params = DeleteParams::background();
    // Exactly the one looked at, not a namesake created since.
    params.preconditions = Some(kube::api::Preconditions {
        uid: live.metadata.uid.clone(),
        resource_version: None,
    });
    match call(
        rbac::DELETE_DEPLOYMENT,
        &v.namespace,
        api.delete(&name, &params),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(Error::Api { source, .. }) if is_not_found(&source) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Outside a canary: a leftover canary Deployment goes once the stable one serves every desired pod (after a
/// promotion), or at once when the revision it ran has failed.
/// Only resources that ask for canaries, or were in one, are looked at: a steady state reads nothing more.
pub async fn tidy(
    ctx: &Context,
    v: &Validated,
    old: &ModelDeploymentStatus,
    stable: Option<&Deployment>,
    now: bool,
) -> Result<(), Error> {
    let was_canary = old.revision.as_ref().is_some_and(|r| r.canary.is_some());
    if canary_spec(v).is_none() && !was_canary {
        return Ok(());
    }
    let settled =
        stable.is_some_and(|d| build::served_revision(d).is_some_and(|r| rolled_out(d, &r)));
    if now || settled {
        remove_canary(ctx, v).await?;
    }
    Ok(())
}

/// `rollbackOnAccuracyDrop`: puts the serving Deployment back on the pod template of the newest earlier
/// revision its ReplicaSets remember (as `kubectl rollout undo` would), with that revision's model annotation.
/// Returns the revision it returned to; `None` when the Deployment does not serve the current revision yet
/// or no earlier one is remembered.
pub async fn return_to_previous(ctx: &Context, v: &Validated) -> Result<Option<String>, Error> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::ResourceExt;
    use kube::api::ListParams;
    use tractor_api::names;

    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let Some(live) = call(rbac::GET_DEPLOYMENT, &v.namespace, api.get_opt(&v.name)).await? else {
        return Ok(None);
    };
    if build::served_revision(&live).as_deref() != Some(v.revision.as_str()) {
        return Ok(None);
    }
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let list = call(
        rbac::LIST_REPLICASETS,
        &v.namespace,
        sets.list(&ListParams::default().labels(&build::server_selector_string(&v.name))),
    )
    .await?;
    let uid = live.metadata.uid.clone();
    let number = |rs: &ReplicaSet| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let template_revision = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()?
            .template
            .as_ref()?
            .metadata
            .as_ref()?
            .labels
            .as_ref()?
            .get(names::LABEL_REVISION)
            .cloned()
    };
    let Some(previous) = list
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter(|rs| template_revision(rs).is_some_and(|r| r != v.revision))
        .max_by_key(number)
    else {
        return Ok(None);
    };
    let Some(revision) = template_revision(&previous) else {
        return Ok(None);
    };
    let Some(mut template) = previous.spec.and_then(|s| s.template) else {
        return Ok(None);
    };
    // The ReplicaSet's own label; the Deployment controller adds it again.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    let model = previous
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_MODEL))
        .cloned();
    let patch = serde_json::json!({
        "metadata": {"annotations": {
            names::ANNOTATION_MODEL: model,
            // Whatever is applied next must be written, not matched against this hash.
            names::ANNOTATION_SPEC_HASH: null,
        }},
        "spec": {"template": template},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    call(
        rbac::ROLL_BACK_DEPLOYMENT,
        &v.namespace,
        api.patch(&v.name, &params, &Patch::Merge(&patch)),
    )
    .await?;
    ctx.metrics
        .child_applies
        .with_label_values(&["Deployment"])
        .inc();
    Ok(Some(revision))
}

/// Takes the canary fields out of the status: no canary is in progress.
pub fn clear(status: &mut ModelDeploymentStatus) {
    if let Some(r) = status.revision.as_mut() {
        r.canary = None;
        r.canary_weight = None;
        r.canary_step = None;
        r.canary_step_started = None;
        r.canary_step_passed = None;
        r.canary_failures = None;
    }
}

/// Writes a canary's progress into the status: revisions, weight, step, the replica counts of both
/// Deployments, and the conditions that say a canary is under analysis.
pub fn record(status: &mut ModelDeploymentStatus, v: &Validated, p: &Progress) {
    let g = v.md.metadata.generation;
    let now = Time(Timestamp::now());
    clear(status);
    let mut r = status.revision.clone().unwrap_or_default();
    r.stable = Some(p.stable_revision.clone());
    let State::Progressing {
        revision,
        step,
        since,
        failures,
        passed,
    } = &p.state
    else {
        status.revision = Some(r);
        return;
    };
    r.canary = Some(revision.clone());
    r.canary_weight = Some(p.weight);
    r.canary_step = i32::try_from(*step).ok();
    r.canary_step_started = Timestamp::from_second(*since as i64).ok().map(Time);
    r.canary_step_passed = Some(*passed);
    r.canary_failures = Some(*failures);
    status.revision = Some(r);

    let count =
        |d: Option<&Deployment>,
         f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
            d.and_then(|d| d.status.as_ref()).and_then(f).unwrap_or(0)
        };
    status.replicas =
        Some(count(Some(&p.stable), |s| s.replicas) + count(p.canary.as_ref(), |s| s.replicas));
    status.ready_replicas = Some(
        count(Some(&p.stable), |s| s.ready_replicas)
            + count(p.canary.as_ref(), |s| s.ready_replicas),
    );
    let steps =
        v.md.spec
            .rollout
            .canary
            .as_ref()
            .map_or(0, |c| c.steps.len());
    let message = format!(
        "canary revision {revision} at step {}/{steps}, weight {}%, {failures} failed analyses; {}",
        step + 1,
        p.weight,
        p.analysis
    );
    for t in [conditions::RECONCILING, conditions::READY] {
        conditions::set(
            &mut status.conditions,
            conditions::new(
                t,
                t == conditions::RECONCILING,
                reason::CANARY_ANALYSIS,
                message.clone(),
                g,
                now.clone(),
            ),
        );
    }
    conditions::remove(&mut status.conditions, conditions::STALLED);
    if status.phase != Some(Phase::Degraded) {
        status.phase = Some(Phase::RollingOut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tractor_api::RevisionStatus;

    fn canary(pauses: &[&str]) -> Canary {
        let steps: Vec<String> = pauses
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{{weight: {}, pause: {p}}}", 10 * (i + 1)))
            .collect();
        serde_yaml::from_str(&format!("{{steps: [{}]}}", steps.join(","))).expect("yaml")
    }

    #[test]
    fn analysis_interval_is_a_third_of_the_shortest_pause_within_bounds() {
        assert_eq!(
            analysis_interval(&canary(&["30s", "9s"])),
            Duration::from_secs(3)
        );
        assert_eq!(analysis_interval(&canary(&["1s"])), ANALYSIS_MIN);
        assert_eq!(analysis_interval(&canary(&["10m"])), ANALYSIS_MAX);
    }

    #[test]
    fn state_survives_the_status_round_trip() {
        let since = 1_795_000_000.0;
        let state = State::Progressing {
            revision: "abc".into(),
            step: 1,
            since,
            failures: 2,
            passed: true,
        };
        let mut status = ModelDeploymentStatus {
            revision: Some(RevisionStatus {
                canary: Some("abc".into()),
                canary_step: Some(1),
                canary_step_started: Timestamp::from_second(since as i64).ok().map(Time),
                canary_failures: Some(2),
                canary_step_passed: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(restore(&status, "abc"), state);
        // Another revision asked for: the recorded canary is not this one's.
        assert_eq!(restore(&status, "def"), State::Stable);
        status.revision = None;
        assert_eq!(restore(&status, "abc"), State::Stable);
    }

    #[test]
    fn analyses_are_paced() {
        let r = Rollouts::default();
        let every = Duration::from_secs(5);
        assert!(r.due("a", 100.0, every));
        assert!(!r.due("a", 103.0, every));
        assert!(r.due("b", 103.0, every), "each canary has its own clock");
        assert!(r.due("a", 105.0, every));
        assert!(r.due("c", 105.0 + FORGET_AFTER, every));
        let clocks = r.last_analysis.lock().map(|l| l.len()).unwrap_or_default();
        assert_eq!(clocks, 1, "finished canaries' clocks are forgotten");
    }
}
