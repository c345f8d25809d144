//! The status, pure: rendered from the typed state [`crate::decide`] arrived at, conditions and messages
//! included, and the Events its changes are worth. Nothing here reads a condition's message back.

use crate::events::{Event, EventType};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tractor_api::conditions::{self, reason};
use tractor_api::names;
use tractor_api::{ModelDeploymentStatus, ModelStatus, Phase, RevisionFailure, RevisionStatus};

use crate::autoscaler::{self, Outcome};
use crate::children;
use crate::validate::{Invalid, Validated};

/// Where the optimize step stands for the revision the spec asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelState {
    /// The current revision's artifact is known.
    Ready(Box<ModelStatus>),
    /// The Job is running (or about to).
    Optimizing,
    /// The revision failed (optimize, canary analysis, accuracy rollback); not retried until the spec changes.
    Failed(RevisionFailure),
}

/// The serving Deployment as the status should see it.
#[derive(Clone, Copy, Debug)]
pub struct Served<'a> {
    /// The live Deployment, if there is one.
    pub deployment: Option<&'a Deployment>,
    /// A write to its template or count is planned: it is not rolled out, whatever its status says.
    pub pending: bool,
}

/// The status of a spec that cannot be served.
pub fn invalid(
    generation: Option<i64>,
    old: &ModelDeploymentStatus,
    invalid: &Invalid,
    now: &Time,
) -> ModelDeploymentStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    status.phase = Some(Phase::Failed);
    let message = invalid.to_string();
    for (t, ok, m) in [
        (conditions::STALLED, true, message.as_str()),
        (conditions::READY, false, message.as_str()),
        (conditions::RECONCILING, false, ""),
    ] {
        conditions::set(
            &mut status.conditions,
            conditions::new(t, ok, reason::INVALID_SPEC, m, generation, now.clone()),
        );
    }
    status
}

/// Writes one autoscaler outcome into the status: count, snapshot, `ScalingActive` (its accuracy verdict goes
/// to [`record_degraded`]).
pub fn record_scaling(
    validated: &Validated,
    status: &mut ModelDeploymentStatus,
    outcome: &Outcome,
    now: &Time,
) {
    let generation = validated.md.metadata.generation;
    autoscaler::record(status, outcome, now.clone());
    let (active, why, message) = &outcome.active;
    conditions::set(
        &mut status.conditions,
        conditions::new(
            conditions::SCALING_ACTIVE,
            *active,
            why,
            message.clone(),
            generation,
            now.clone(),
        ),
    );
}

/// Writes `Degraded` from this reconcile's verdicts, each `Some((below or drifted, message))` when judged now.
/// The two signals are kept apart: one judged now, the other's last verdict is read back from the condition
/// (its reason says which held, its message joins their parts with `"; "`, accuracy first), so `Degraded`
/// clears only when neither holds. Neither judged: the condition stays as it is.
pub fn record_degraded(
    validated: &Validated,
    status: &mut ModelDeploymentStatus,
    accuracy: Option<&(bool, String)>,
    drift: Option<&(bool, String)>,
    now: &Time,
) {
    let Some((degraded, why, message)) = degraded(
        conditions::find(&status.conditions, conditions::DEGRADED),
        accuracy,
        drift,
    ) else {
        return;
    };
    conditions::set(
        &mut status.conditions,
        conditions::new(
            conditions::DEGRADED,
            degraded,
            why,
            message,
            validated.md.metadata.generation,
            now.clone(),
        ),
    );
    // The phase was computed from the last Degraded; it follows this one.
    match (degraded, status.phase) {
        (true, Some(Phase::Ready)) => status.phase = Some(Phase::Degraded),
        (false, Some(Phase::Degraded)) => status.phase = Some(Phase::Ready),
        _ => {}
    }
}

/// The `Degraded` condition's status, reason and message from the last one and this reconcile's verdicts. Pure.
fn degraded(
    last: Option<&Condition>,
    accuracy: Option<&(bool, String)>,
    drift: Option<&(bool, String)>,
) -> Option<(bool, &'static str, String)> {
    if accuracy.is_none() && drift.is_none() {
        return None;
    }
    // What held at the last write: the reason names the signals, the message their parts in that order.
    let held = last
        .filter(|c| c.status == conditions::status::TRUE)
        .map(|condition| {
            let parts: Vec<&str> = condition.message.splitn(2, "; ").collect();
            let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
            match condition.reason.as_str() {
                reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT => (Some(part(0)), Some(part(1))),
                reason::ACCURACY_BELOW_FLOOR => (Some(condition.message.clone()), None),
                reason::INPUT_DRIFT => (None, Some(condition.message.clone())),
                _ => (None, None),
            }
        })
        .unwrap_or((None, None));
    let now_or_held = |verdict: Option<&(bool, String)>, held: Option<String>| match verdict {
        Some((true, message)) => Some(message.clone()),
        Some((false, _)) => None,
        None => held,
    };
    let low = now_or_held(accuracy, held.0);
    let drifted = now_or_held(drift, held.1);
    Some(match (low, drifted) {
        (Some(low), Some(drifted)) => (
            true,
            reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT,
            format!("{low}; {drifted}"),
        ),
        (Some(low), None) => (true, reason::ACCURACY_BELOW_FLOOR, low),
        (None, Some(drifted)) => (true, reason::INPUT_DRIFT, drifted),
        (None, None) => {
            let said: Vec<&str> = [accuracy, drift]
                .into_iter()
                .flatten()
                .map(|(_, message)| message.as_str())
                .collect();
            (false, reason::HEALTHY, said.join("; "))
        }
    })
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
pub fn rolled_back(why: &str) -> bool {
    why == reason::ROLLED_BACK || why == reason::ACCURACY_ROLLBACK
}

/// The truthful status for what was just observed. Pure.
pub fn compute(
    validated: &Validated,
    old: &ModelDeploymentStatus,
    state: &ModelState,
    serving_model: Option<ModelStatus>,
    deployment: Served<'_>,
    replicas: i32,
    now: &Time,
) -> ModelDeploymentStatus {
    let generation = validated.md.metadata.generation;
    let Served {
        deployment,
        pending,
    } = deployment;
    let exists = deployment.is_some() || pending;
    let mut status = old.clone();
    status.observed_generation = generation;
    status.selector = Some(children::server_selector_string(&validated.name));
    status.url = Some(format!(
        "http://{name}.{ns}.svc:{port}/v2/models/{name}",
        name = validated.name,
        ns = validated.namespace,
        port = names::HTTP_PORT
    ));
    status.model = serving_model.clone();

    let desired = replicas;
    let d_status = deployment
        .and_then(|live| live.status.clone())
        .unwrap_or_default();
    let d_generation = deployment.and_then(|live| live.metadata.generation);
    status.replicas = Some(d_status.replicas.unwrap_or(0));
    status.ready_replicas = Some(d_status.ready_replicas.unwrap_or(0));
    let serving_revision = serving_model
        .as_ref()
        .and_then(|model| model.revision.clone());
    let rolled_out = deployment.is_some()
        && !pending
        && d_status.observed_generation >= d_generation
        && d_status.updated_replicas.unwrap_or(0) == desired
        && d_status.replicas.unwrap_or(0) == desired
        && d_status.available_replicas.unwrap_or(0) == desired;
    let available =
        d_status.available_replicas.unwrap_or(0) >= desired.min(1) && exists && desired > 0
            || (desired == 0 && exists);

    let mut revision = old.revision.clone().unwrap_or_default();
    revision.current = Some(validated.revision.clone());
    let (model_ready, stalled) = match state {
        ModelState::Ready(_) => {
            revision.failed = None;
            revision.failure = None;
            (true, None)
        }
        ModelState::Optimizing => (false, None),
        ModelState::Failed(failure) => {
            revision.failed = Some(validated.revision.clone());
            revision.failure = Some(failure.clone());
            (
                false,
                Some((failure.reason.clone(), failure.message.clone())),
            )
        }
    };
    if rolled_out {
        revision.stable = serving_revision.clone();
    }
    status.revision = Some(RevisionStatus { ..revision });

    let set =
        |status: &mut ModelDeploymentStatus, kind: &str, ok: bool, why: &str, text: String| {
            conditions::set(
                &mut status.conditions,
                conditions::new(kind, ok, why, text, generation, now.clone()),
            );
        };
    match state {
        ModelState::Ready(model) => set(
            &mut status,
            conditions::MODEL_READY,
            true,
            reason::OPTIMIZED,
            format!(
                "revision {} optimized: {}",
                validated.revision,
                model
                    .precision
                    .and_then(|precision| serde_json::to_value(precision).ok())
                    .and_then(|precision| precision.as_str().map(str::to_owned))
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
                children::job_name(&validated.name, &validated.revision)
            ),
        ),
        // A rolled-back revision's model was optimized well; ModelReady keeps saying so.
        ModelState::Failed(failure) if rolled_back(&failure.reason) => {
            // Refused in the reconcile its Job completed in, it never said so yet.
            if !conditions::is_true(&status.conditions, conditions::MODEL_READY) {
                set(
                    &mut status,
                    conditions::MODEL_READY,
                    true,
                    reason::OPTIMIZED,
                    format!("revision {} optimized", validated.revision),
                );
            }
        }
        ModelState::Failed(failure) => set(
            &mut status,
            conditions::MODEL_READY,
            false,
            &failure.reason,
            failure.message.clone(),
        ),
    }
    let ready_count = d_status.ready_replicas.unwrap_or(0);
    if exists {
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
    let ready = model_ready
        && rolled_out
        && serving_revision.as_deref() == Some(validated.revision.as_str());
    match &stalled {
        Some((why, text)) => {
            set(
                &mut status,
                conditions::STALLED,
                true,
                why,
                format!("{}{text}", stall_prefix(&validated.revision, why)),
            );
            set(
                &mut status,
                conditions::RECONCILING,
                false,
                if rolled_back(why) {
                    why
                } else {
                    reason::OPTIMIZE_FAILED
                },
                String::new(),
            );
            let serving = if exists {
                "; the previous revision keeps serving"
            } else {
                ""
            };
            set(
                &mut status,
                conditions::READY,
                false,
                why,
                format!("{}{text}{serving}", stall_prefix(&validated.revision, why)),
            );
        }
        None => {
            conditions::remove(&mut status.conditions, conditions::STALLED);
            let (why, text) = if ready {
                (reason::RECONCILED, String::new())
            } else if !model_ready {
                (
                    reason::OPTIMIZING,
                    format!("optimizing revision {}", validated.revision),
                )
            } else {
                (
                    reason::ROLLING_OUT,
                    format!(
                        "rolling out revision {}: {ready_count}/{desired} replicas ready",
                        validated.revision
                    ),
                )
            };
            set(
                &mut status,
                conditions::RECONCILING,
                !ready,
                why,
                text.clone(),
            );
            set(
                &mut status,
                conditions::READY,
                ready,
                if ready { reason::AVAILABLE } else { why },
                if ready {
                    format!("{ready_count}/{desired} replicas ready")
                } else {
                    text
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
    if validated.md.spec.autoscaling.is_none() {
        set(
            &mut status,
            conditions::SCALING_ACTIVE,
            false,
            reason::NOT_CONFIGURED,
            "spec.autoscaling is not set".to_owned(),
        );
    }
    // Degraded is judged every interval, not every reconcile: the phase follows the condition in between.
    let degraded = conditions::is_true(&status.conditions, conditions::DEGRADED);
    status.phase = Some(if stalled.is_some() {
        Phase::Failed
    } else if ready && degraded {
        Phase::Degraded
    } else if ready {
        Phase::Ready
    } else if !model_ready {
        Phase::Optimizing
    } else {
        Phase::RollingOut
    });
    status
}

/// A model at zero on purpose is healthy and settled, as kstatus, Argo CD and `kubectl wait` read it: Ready
/// and Available true with reason `ScaledToZero`, not a rollout short of pods.
pub fn at_zero(
    validated: &Validated,
    old: &ModelDeploymentStatus,
    status: &mut ModelDeploymentStatus,
    now: &Time,
) {
    let generation = validated.md.metadata.generation;
    let text = "no pods after scaleToZero.idleAfter without requests; the activator holds the next request and \
                wakes the model"
        .to_owned();
    for kind in [conditions::READY, conditions::AVAILABLE] {
        // A model that was Ready stays so, since then: only the reason changes. (The status being built may
        // have judged the last pod's scale-down a rollout.)
        let since = conditions::find(&old.conditions, kind)
            .filter(|was| was.status == conditions::status::TRUE)
            .map_or_else(|| now.clone(), |was| was.last_transition_time.clone());
        conditions::remove(&mut status.conditions, kind);
        conditions::set(
            &mut status.conditions,
            conditions::new(
                kind,
                true,
                reason::SCALED_TO_ZERO,
                text.clone(),
                generation,
                since,
            ),
        );
    }
    // Settled, not progressing: kstatus reads Reconciling.
    conditions::set(
        &mut status.conditions,
        conditions::new(
            conditions::RECONCILING,
            false,
            reason::SCALED_TO_ZERO,
            String::new(),
            generation,
            now.clone(),
        ),
    );
    if matches!(status.phase, Some(Phase::Ready | Phase::RollingOut)) {
        status.phase = Some(Phase::ScaledToZero);
    }
}

/// Events for condition flips: one per transition, never per reconcile.
pub fn transitions(old: &ModelDeploymentStatus, new: &ModelDeploymentStatus) -> Vec<Event> {
    let flipped = |kind: &str| {
        let was = conditions::is_true(&old.conditions, kind);
        let is = conditions::is_true(&new.conditions, kind);
        (was != is)
            .then(|| conditions::find(&new.conditions, kind).cloned())
            .flatten()
    };
    let mut events = vec![];
    if let Some(condition) = flipped(conditions::STALLED)
        .filter(|condition| condition.status == conditions::status::TRUE)
    {
        let action = if rolled_back(&condition.reason) {
            "Rollout"
        } else {
            "Optimize"
        };
        events.push(Event {
            type_: EventType::Warning,
            reason: condition.reason,
            note: Some(condition.message),
            action: action.into(),
            secondary: None,
        });
    }
    if let Some(condition) = flipped(conditions::MODEL_READY)
        .filter(|condition| condition.status == conditions::status::TRUE)
    {
        events.push(Event {
            type_: EventType::Normal,
            reason: condition.reason,
            note: Some(condition.message),
            action: "Optimize".into(),
            secondary: None,
        });
    }
    // Ready falling for the reason Stalled just gave (a rollback, a failed optimize) is the same occurrence:
    // one Event, the Stalled one, not two with near-identical messages.
    if let Some(condition) = flipped(conditions::READY)
        .filter(|condition| !events.iter().any(|event| event.reason == condition.reason))
    {
        // A new revision optimizing, pods rolling out after a spec change or a scale-up, a canary starting:
        // the operator doing what it was asked, not a warning. Pods lost or a spec refused are.
        let expected = [
            reason::CANARY_ANALYSIS,
            reason::OPTIMIZING,
            reason::ROLLING_OUT,
        ];
        let type_ = if condition.status == conditions::status::TRUE
            || expected.contains(&condition.reason.as_str())
        {
            EventType::Normal
        } else {
            EventType::Warning
        };
        events.push(Event {
            type_,
            reason: condition.reason,
            note: Some(condition.message),
            action: "Rollout".into(),
            secondary: None,
        });
    }
    // ScalingActive: one event when metrics become unreadable, one when they come back.
    let old_scaling = conditions::find(&old.conditions, conditions::SCALING_ACTIVE);
    if let Some(condition) = conditions::find(&new.conditions, conditions::SCALING_ACTIVE) {
        let changed = old_scaling.map(|before| (&before.status, &before.reason))
            != Some((&condition.status, &condition.reason));
        let about_metrics = condition.reason == reason::METRICS_UNAVAILABLE
            || old_scaling.is_some_and(|before| before.reason == reason::METRICS_UNAVAILABLE);
        if changed && about_metrics {
            events.push(Event {
                type_: if condition.status == conditions::status::TRUE {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: condition.reason.clone(),
                note: Some(condition.message.clone()),
                action: "Autoscale".into(),
                secondary: None,
            });
        }
    }
    // Degraded: a Warning when it turns True, and when a second signal joins (or one of two clears) while it
    // stays True: the reason names which hold.
    let old_degraded = conditions::find(&old.conditions, conditions::DEGRADED)
        .filter(|condition| condition.status == conditions::status::TRUE);
    if let Some(condition) = conditions::find(&new.conditions, conditions::DEGRADED)
        .filter(|condition| condition.status == conditions::status::TRUE)
        .filter(|condition| old_degraded.is_none_or(|before| before.reason != condition.reason))
        .cloned()
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: condition.reason,
            note: Some(condition.message),
            action: "Analyze".into(),
            secondary: None,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

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

    /// A verdict: (below the floor or drifted, message).
    type Verdict = (bool, String);
    /// (case, the last condition, accuracy judged now, drift judged now, the condition wanted)
    type Case<'a> = (
        &'a str,
        Option<&'a Condition>,
        Option<&'a Verdict>,
        Option<&'a Verdict>,
        Option<(bool, &'a str, String)>,
    );

    #[test]
    fn degraded_joins_accuracy_and_drift_and_clears_when_neither_holds() {
        let low = (
            true,
            "online accuracy 0.700 has been below the floor 0.9 for 60 s (window 1m)".to_owned(),
        );
        let fine = (
            false,
            "online accuracy 0.950 meets the floor 0.9".to_owned(),
        );
        let drifted = (
            true,
            "input drift over 500 rows: x[3] PSI 1.920 above the threshold 0.2".to_owned(),
        );
        let steady = (
            false,
            "no input drift over 500 rows: highest x[1] PSI 0.050, threshold 0.2".to_owned(),
        );
        let condition = |reason: &str, message: &str| {
            conditions::new(
                conditions::DEGRADED,
                reason != reason::HEALTHY,
                reason,
                message,
                Some(1),
                Time(Timestamp::UNIX_EPOCH),
            )
        };
        let both_message = format!("{}; {}", low.1, drifted.1);
        let acc = condition(reason::ACCURACY_BELOW_FLOOR, &low.1);
        let dri = condition(reason::INPUT_DRIFT, &drifted.1);
        let both = condition(reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT, &both_message);
        let healthy = condition(reason::HEALTHY, "");
        let cases: Vec<Case> = vec![
            ("nothing judged leaves it", Some(&acc), None, None, None),
            (
                "drift alone",
                Some(&healthy),
                None,
                Some(&drifted),
                Some((true, reason::INPUT_DRIFT, drifted.1.clone())),
            ),
            (
                "drift joins a held accuracy drop",
                Some(&acc),
                None,
                Some(&drifted),
                Some((
                    true,
                    reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT,
                    both_message.clone(),
                )),
            ),
            (
                "accuracy joins held drift",
                Some(&dri),
                Some(&low),
                None,
                Some((
                    true,
                    reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT,
                    both_message.clone(),
                )),
            ),
            (
                "drift clears, accuracy still low",
                Some(&both),
                None,
                Some(&steady),
                Some((true, reason::ACCURACY_BELOW_FLOOR, low.1.clone())),
            ),
            (
                "accuracy recovers, drift still held",
                Some(&both),
                Some(&fine),
                None,
                Some((true, reason::INPUT_DRIFT, drifted.1.clone())),
            ),
            (
                "drift clears alone",
                Some(&dri),
                None,
                Some(&steady),
                Some((false, reason::HEALTHY, steady.1.clone())),
            ),
            (
                "both fine now",
                Some(&both),
                Some(&fine),
                Some(&steady),
                Some((false, reason::HEALTHY, format!("{}; {}", fine.1, steady.1))),
            ),
            (
                "no condition yet",
                None,
                Some(&low),
                None,
                Some((true, reason::ACCURACY_BELOW_FLOOR, low.1.clone())),
            ),
        ];
        for (case, last, accuracy, drift, want) in cases {
            let got = degraded(last, accuracy, drift);
            assert_eq!(
                got.as_ref().map(|(d, r, m)| (*d, *r, m.as_str())),
                want.as_ref().map(|(d, r, m)| (*d, *r, m.as_str())),
                "{case}"
            );
        }
    }

    #[test]
    fn a_second_degraded_signal_is_a_new_warning() {
        let old = with(&[(
            conditions::DEGRADED,
            true,
            reason::ACCURACY_BELOW_FLOOR,
            "low",
        )]);
        let new = with(&[(
            conditions::DEGRADED,
            true,
            reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT,
            "low; drifted",
        )]);
        let events = transitions(&old, &new);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0].reason,
            reason::ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT
        );
        assert!(transitions(&new, &new).is_empty());
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

    /// Ready falling because the operator is doing what it was asked is Normal; pods lost or a spec refused
    /// is a Warning.
    #[test]
    fn ready_falling_is_a_warning_only_when_something_went_wrong() {
        let old = with(&[(conditions::READY, true, reason::AVAILABLE, "serving")]);
        let cases = [
            (reason::OPTIMIZING, EventType::Normal),
            (reason::ROLLING_OUT, EventType::Normal),
            (reason::CANARY_ANALYSIS, EventType::Normal),
            (reason::REPLICAS_UNAVAILABLE, EventType::Warning),
            (reason::INVALID_SPEC, EventType::Warning),
        ];
        for (why, want) in cases {
            let new = with(&[(conditions::READY, false, why, "words")]);
            let types: Vec<_> = transitions(&old, &new)
                .into_iter()
                .map(|event| event.type_)
                .collect();
            assert_eq!(types, [want], "{why}");
        }
    }
}
