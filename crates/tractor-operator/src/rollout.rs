//! Canary rollouts, pure: from what was observed, the canary's next state, the writes that carry it out and
//! what the status says about it. The state machine itself is [`crate::canary`]'s; the reads are
//! [`crate::observe`]'s. Traffic follows pods: both Deployments sit behind the one Service.
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
//! - The canary's progress (step, its start, failed analyses, the last verdict) lives in `status.revision`,
//!   so a restarted operator resumes where the last one was.

use std::time::Duration;

use crate::events::{Event, EventType};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tractor_api::conditions::{self, reason};
use tractor_api::names;
use tractor_api::{
    AnalysisVerdict, Canary, CanaryAnalysisStatus, ModelDeploymentStatus, ModelStatus, Phase,
    RolloutStrategy,
};

use crate::canary::{self, Signals, State, Verdict};
use crate::children::{self, BuildConfig};
use crate::validate::Validated;

/// Shortest and longest time between two analyses of one canary.
const ANALYSIS_MIN: Duration = Duration::from_secs(2);
const ANALYSIS_MAX: Duration = Duration::from_secs(15);

/// The canary part of the spec, when the rollout strategy is `Canary`.
pub fn canary_spec(validated: &Validated) -> Option<&Canary> {
    let rollout = &validated.md.spec.rollout;
    (rollout.strategy == RolloutStrategy::Canary)
        .then_some(rollout.canary.as_ref())
        .flatten()
}

/// How often a canary is analysed: a third of its shortest pause, within [2 s, 15 s].
pub fn analysis_interval(spec: &Canary) -> Duration {
    canary::pauses(spec)
        .into_iter()
        .map(|p| Duration::from_secs_f64(p / 3.0))
        .min()
        .unwrap_or(ANALYSIS_MAX)
        .clamp(ANALYSIS_MIN, ANALYSIS_MAX)
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
pub fn rolled_out(d: &Deployment, revision: &str) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    children::served_revision(d).as_deref() == Some(revision)
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

/// True when the ModelDeployment with `uid` owns `d`.
pub fn owned(uid: Option<&String>, d: &Deployment) -> bool {
    d.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == uid)
}

/// The earlier revision an accuracy rollback returns to: the pod template the serving Deployment's newest
/// other ReplicaSet remembers (as `kubectl rollout undo` finds it), with that revision's model annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Previous {
    /// Its revision.
    pub revision: String,
    /// Its pod template, without the ReplicaSet's own `pod-template-hash` label.
    pub template: PodTemplateSpec,
    /// Its model annotation (a [`ModelStatus`] as JSON).
    pub model: Option<String>,
}

/// Finds [`Previous`] among `sets` for the serving Deployment `stable`, which serves `revision`.
pub fn previous(stable: &Deployment, sets: &[ReplicaSet], revision: &str) -> Option<Previous> {
    let uid = stable.metadata.uid.as_ref();
    let number = |rs: &ReplicaSet| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let previous = sets
        .iter()
        .filter(|rs| rs.owner_references().iter().any(|o| Some(&o.uid) == uid))
        .filter(|rs| template_revision(rs).is_some_and(|r| r != revision))
        .max_by_key(|rs| number(rs))?;
    let mut template = previous.spec.as_ref()?.template.clone()?;
    // The ReplicaSet's own label; the Deployment controller adds it again.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    Some(Previous {
        revision: template_revision(previous)?,
        template,
        model: previous.annotations().get(names::ANNOTATION_MODEL).cloned(),
    })
}

fn template_revision(rs: &ReplicaSet) -> Option<String> {
    children::template_revision(rs.spec.as_ref()?.template.as_ref()?)
}

/// One analysis' reads: canary requests per second, the canary's signals and the stable revision's; `Err`
/// says why Prometheus could not be read.
pub type AnalysisReads = Result<(f64, Signals, Signals), String>;

/// What one reconcile does about a canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The state after this reconcile's transition.
    pub state: State,
    /// The revision the stable Deployment serves.
    pub stable_revision: String,
    /// The canary's weight in percent.
    pub weight: i32,
    /// What the last analysis found (this reconcile's, or the one before that still stands).
    pub analysis: Option<CanaryAnalysisStatus>,
    /// Objects to apply: the canary Deployment while it progresses, the re-templated stable one on promotion.
    pub apply: Vec<Deployment>,
    /// The stable Deployment's new replica count, when it changes.
    pub scale_stable: Option<i32>,
    /// Remove the canary Deployment (its uid).
    pub delete_canary: Option<String>,
    /// Events to publish.
    pub events: Vec<Event>,
    /// When to look again.
    pub requeue: Duration,
}

/// What the spec, the live Deployments and this reconcile's analysis (if one ran) mean for the canary;
/// `None` leaves the rollout to the plain path. `model` is the new revision's optimized model and `total`
/// the replica count in force.
#[allow(clippy::too_many_arguments)]
pub fn step(
    validated: &Validated,
    model: &ModelStatus,
    status: &ModelDeploymentStatus,
    stable: Option<&Deployment>,
    live_canary: Option<&Deployment>,
    analysis: Option<(&str, &AnalysisReads)>,
    config: &BuildConfig,
    total: i32,
    now: Timestamp,
) -> Option<Step> {
    let spec = canary_spec(validated)?;
    let stable = stable?;
    let stable_revision = children::served_revision(stable)?;
    if stable_revision == validated.revision {
        return None;
    }
    let secs = now.as_second() as f64;
    let failed = status
        .revision
        .as_ref()
        .and_then(|revisions| revisions.failed.clone());
    let state = restore(status, &validated.revision);
    let pauses = canary::pauses(spec);
    let every = analysis_interval(spec);
    let stable_replicas = stable.spec.as_ref().and_then(|spec| spec.replicas);
    // `<name>-canary` may be another ModelDeployment's own Deployment: never take it over.
    if let Some(other) = live_canary
        && !owned(validated.md.metadata.uid.as_ref(), other)
    {
        let why = format!(
            "the canary needs the Deployment name {}, which another object owns; rename one of them",
            children::canary_name(&validated.name)
        );
        return Some(Step {
            state: State::RolledBack {
                revision: validated.revision.clone(),
                reason: why.clone(),
            },
            stable_revision,
            weight: 0,
            analysis: None,
            apply: vec![],
            scale_stable: (stable_replicas != Some(total)).then_some(total),
            delete_canary: None,
            events: vec![],
            requeue: ANALYSIS_MAX,
        });
    }
    let verdict = analysis.map(|(window, reads)| verdict(spec, window, reads));
    let next = canary::next(
        &state,
        &validated.revision,
        Some(&stable_revision),
        failed.as_deref(),
        spec,
        &pauses,
        verdict.as_ref(),
        secs,
    );
    let canary_ready = live_canary.is_some_and(|canary| rolled_out(canary, &validated.revision));
    let analysis = match &verdict {
        Some(found) => Some(record_verdict(found, now)),
        // Between analyses the previous finding stands, unless the pods it was about are gone.
        None if canary_ready => status
            .revision
            .as_ref()
            .and_then(|revisions| revisions.canary_analysis.clone()),
        None => None,
    };
    let weight = canary::weight(&next, spec);
    let mut step = Step {
        state: next.clone(),
        stable_revision: stable_revision.clone(),
        weight,
        analysis,
        apply: vec![],
        scale_stable: None,
        delete_canary: None,
        events: vec![],
        requeue: every,
    };
    let scale = |replicas: i32| (stable_replicas != Some(replicas)).then_some(replicas);
    match &next {
        State::Progressing {
            step: at, since, ..
        } => {
            let (stable_share, canary_share) = canary::split(total, weight);
            step.apply.push(children::canary_deployment(
                validated,
                model,
                config,
                canary_share,
            ));
            // The stable side gives up a pod only once a canary pod took its place.
            let ready = live_canary.map_or(0, available).min(canary_share);
            step.scale_stable = scale(stable_share.max(total - ready));
            let pause = pauses.get(*at).copied().unwrap_or(60.0);
            step.requeue = every.min(Duration::from_secs_f64((since + pause - secs).max(1.0)));
        }
        State::Promoted { .. } => {
            step.apply
                .push(children::deployment(validated, model, config, total));
            step.events.push(Event {
                type_: EventType::Normal,
                reason: reason::PROMOTED.into(),
                note: Some(format!(
                    "canary revision {} passed every step and replaces {stable_revision}",
                    validated.revision
                )),
                action: "Rollout".into(),
                secondary: None,
            });
        }
        State::RolledBack { .. } => {
            step.delete_canary = live_canary.and_then(|canary| canary.metadata.uid.clone());
            step.scale_stable = scale(total);
        }
        State::Stable => return None,
    }
    Some(step)
}

/// Outside a canary: a leftover canary Deployment goes once the stable one serves every desired pod (after a
/// promotion, or a canary abandoned for a newer spec), or at once when the revision it ran has failed.
/// `pending` says a write to the stable Deployment is planned: it has not got its pods back yet. Returns the
/// uid to delete.
pub fn leftover(
    validated: &Validated,
    stable: Option<&Deployment>,
    live_canary: Option<&Deployment>,
    failed: bool,
    pending: bool,
) -> Option<String> {
    let canary = live_canary.filter(|d| owned(validated.md.metadata.uid.as_ref(), d))?;
    let settled = !pending
        && stable.is_some_and(|d| children::served_revision(d).is_some_and(|r| rolled_out(d, &r)));
    (failed || settled)
        .then(|| canary.metadata.uid.clone())
        .flatten()
}

/// Judges one analysis' reads against the spec's limits.
fn verdict(spec: &Canary, window: &str, reads: &AnalysisReads) -> Verdict {
    let Some(limits) = spec.analysis.as_ref() else {
        return Verdict::Pass;
    };
    let (canary, stable) = match reads {
        Err(why) => return Verdict::Inconclusive(why.clone()),
        Ok((rps, _, _)) if *rps <= 0.0 => {
            return Verdict::Inconclusive(format!(
                "no requests reached the canary in the last {window}"
            ));
        }
        Ok((_, canary, stable)) => (canary, stable),
    };
    let figures = describe(canary);
    match canary::analyse(Some(limits), canary, stable) {
        Verdict::Pass => Verdict::Pass,
        Verdict::Fail(why) => Verdict::Fail(format!("{why} ({figures})")),
        Verdict::Inconclusive(why) => Verdict::Inconclusive(format!("{why} ({figures})")),
    }
}

fn record_verdict(verdict: &Verdict, now: Timestamp) -> CanaryAnalysisStatus {
    let (verdict, message) = match verdict {
        Verdict::Pass => (AnalysisVerdict::Passed, String::new()),
        Verdict::Fail(why) => (AnalysisVerdict::Failed, why.clone()),
        Verdict::Inconclusive(why) => (AnalysisVerdict::Inconclusive, why.clone()),
    };
    CanaryAnalysisStatus {
        verdict,
        message,
        time: Some(Time(now)),
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
        s.accuracy
            .map_or_else(|| "none".to_owned(), |a| a.describe())
    )
}

/// The last analysis in words, for the conditions.
fn analysis_words(analysis: Option<&CanaryAnalysisStatus>, canary_ready: bool) -> String {
    match analysis {
        None if !canary_ready => "waiting for the canary's pods".to_owned(),
        None => "waiting for the first analysis".to_owned(),
        Some(a) => match a.verdict {
            AnalysisVerdict::Passed => "the last analysis passed".to_owned(),
            AnalysisVerdict::Failed => format!("the last analysis failed: {}", a.message),
            AnalysisVerdict::Inconclusive => {
                format!("the last analysis was inconclusive: {}", a.message)
            }
        },
    }
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
        r.canary_analysis = None;
    }
}

/// Writes a canary's progress into the status: revisions, weight, step, the replica counts of both
/// Deployments, and the conditions that say a canary is under analysis.
pub fn record(
    status: &mut ModelDeploymentStatus,
    validated: &Validated,
    step: &Step,
    stable: Option<&Deployment>,
    live_canary: Option<&Deployment>,
    now: Timestamp,
) {
    let generation = validated.md.metadata.generation;
    clear(status);
    let mut revisions = status.revision.clone().unwrap_or_default();
    revisions.stable = Some(step.stable_revision.clone());
    let State::Progressing {
        revision,
        step: at,
        since,
        failures,
        passed,
    } = &step.state
    else {
        status.revision = Some(revisions);
        return;
    };
    revisions.canary = Some(revision.clone());
    revisions.canary_weight = Some(step.weight);
    revisions.canary_step = i32::try_from(*at).ok();
    revisions.canary_step_started = Timestamp::from_second(*since as i64).ok().map(Time);
    revisions.canary_step_passed = Some(*passed);
    revisions.canary_failures = Some(*failures);
    revisions.canary_analysis = step.analysis.clone();
    status.revision = Some(revisions);

    let count =
        |deployment: Option<&Deployment>,
         field: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
            deployment
                .and_then(|live| live.status.as_ref())
                .and_then(field)
                .unwrap_or(0)
        };
    status.replicas = Some(
        count(stable, |counts| counts.replicas) + count(live_canary, |counts| counts.replicas),
    );
    status.ready_replicas = Some(
        count(stable, |counts| counts.ready_replicas)
            + count(live_canary, |counts| counts.ready_replicas),
    );
    let steps = validated
        .md
        .spec
        .rollout
        .canary
        .as_ref()
        .map_or(0, |canary| canary.steps.len());
    let canary_ready = live_canary.is_some_and(|canary| rolled_out(canary, revision));
    let message = format!(
        "canary revision {revision} at step {}/{steps}, weight {}%, {failures} failed analyses; {}",
        at + 1,
        step.weight,
        analysis_words(step.analysis.as_ref(), canary_ready)
    );
    for kind in [conditions::RECONCILING, conditions::READY] {
        conditions::set(
            &mut status.conditions,
            conditions::new(
                kind,
                kind == conditions::RECONCILING,
                reason::CANARY_ANALYSIS,
                message.clone(),
                generation,
                Time(now),
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
}
