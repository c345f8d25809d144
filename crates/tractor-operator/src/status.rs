//! The status, pure: rendered from the typed state [`crate::decide`] arrived at, conditions and messages
//! included, and the Events its changes are worth. Nothing here reads a condition's message back.

use crate::events::{Event, EventType};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
    Ready(ModelStatus),
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

/// Writes one autoscaler outcome into the status: count, snapshot, `ScalingActive`, `Degraded`.
pub fn record_scaling(v: &Validated, status: &mut ModelDeploymentStatus, o: &Outcome, now: &Time) {
    let g = v.md.metadata.generation;
    autoscaler::record(status, o, now.clone());
    let (active, r, message) = &o.active;
    conditions::set(
        &mut status.conditions,
        conditions::new(
            conditions::SCALING_ACTIVE,
            *active,
            r,
            message.clone(),
            g,
            now.clone(),
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
                    now.clone(),
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
                    now.clone(),
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
pub fn rolled_back(why: &str) -> bool {
    why == reason::ROLLED_BACK || why == reason::ACCURACY_ROLLBACK
}

/// The truthful status for what was just observed. Pure.
pub fn compute(
    v: &Validated,
    old: &ModelDeploymentStatus,
    state: &ModelState,
    serving_model: Option<ModelStatus>,
    deployment: Served<'_>,
    replicas: i32,
    now: &Time,
) -> ModelDeploymentStatus {
    let g = v.md.metadata.generation;
    let Served {
        deployment,
        pending,
    } = deployment;
    let exists = deployment.is_some() || pending;
    let mut status = old.clone();
    status.observed_generation = g;
    status.selector = Some(children::server_selector_string(&v.name));
    status.url = Some(format!(
        "http://{name}.{ns}.svc:{port}/v2/models/{name}",
        name = v.name,
        ns = v.namespace,
        port = names::HTTP_PORT
    ));
    status.model = serving_model.clone();

    let desired = replicas;
    let d_status = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let d_generation = deployment.and_then(|d| d.metadata.generation);
    status.replicas = Some(d_status.replicas.unwrap_or(0));
    status.ready_replicas = Some(d_status.ready_replicas.unwrap_or(0));
    let serving_revision = serving_model.as_ref().and_then(|m| m.revision.clone());
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
    revision.current = Some(v.revision.clone());
    let (model_ready, stalled) = match state {
        ModelState::Ready(_) => {
            revision.failed = None;
            revision.failure = None;
            (true, None)
        }
        ModelState::Optimizing => (false, None),
        ModelState::Failed(failure) => {
            revision.failed = Some(v.revision.clone());
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
                children::job_name(&v.name, &v.revision)
            ),
        ),
        // A rolled-back revision's model was optimized well; ModelReady keeps saying so.
        ModelState::Failed(f) if rolled_back(&f.reason) => {
            // Refused in the reconcile its Job completed in, it never said so yet.
            if !conditions::is_true(&status.conditions, conditions::MODEL_READY) {
                set(
                    &mut status,
                    conditions::MODEL_READY,
                    true,
                    reason::OPTIMIZED,
                    format!("revision {} optimized", v.revision),
                );
            }
        }
        ModelState::Failed(f) => set(
            &mut status,
            conditions::MODEL_READY,
            false,
            &f.reason,
            f.message.clone(),
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
            let serving = if exists {
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

/// Events for condition flips: one per transition, never per reconcile.
pub fn transitions(old: &ModelDeploymentStatus, new: &ModelDeploymentStatus) -> Vec<Event> {
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
