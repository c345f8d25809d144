//! Condition types and reasons, and the helpers that keep a condition list truthful without churn.
//!
//! Conditions follow `metav1.Condition`. `lastTransitionTime` moves only when `status` flips, so re-running a
//! reconcile with nothing new writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The model is served by every desired replica of the current revision; `kubectl wait --for=condition=Ready`.
pub const READY: &str = "Ready";
/// The operator is working towards the spec (kstatus reads `Reconciling=True` as InProgress).
pub const RECONCILING: &str = "Reconciling";
/// Progress is impossible without a spec change (kstatus reads `Stalled=True` as Failed).
pub const STALLED: &str = "Stalled";
/// The optimize Job produced an artifact for the current revision.
pub const MODEL_READY: &str = "ModelReady";
/// Enough serving replicas are ready to take traffic.
pub const AVAILABLE: &str = "Available";
/// The autoscaler can read its metrics and is acting on them.
pub const SCALING_ACTIVE: &str = "ScalingActive";
/// Serving, but worse than asked: accuracy below its floor or replicas missing.
pub const DEGRADED: &str = "Degraded";

/// Every condition type, in the order status lists them.
pub const ALL_TYPES: [&str; 7] = [
    READY,
    RECONCILING,
    STALLED,
    MODEL_READY,
    AVAILABLE,
    SCALING_ACTIVE,
    DEGRADED,
];

/// `status` values of a condition.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// Reasons, in CamelCase as metav1.Condition requires. Optimize failure reasons are the report's codes.
pub mod reason {
    /// Waiting for the optimize Job.
    pub const OPTIMIZING: &str = "Optimizing";
    /// The optimize Job succeeded.
    pub const OPTIMIZED: &str = "Optimized";
    /// The optimize Job failed; the report's reason code is in the message.
    pub const OPTIMIZE_FAILED: &str = "OptimizeFailed";
    /// Pods of the current revision are rolling out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Every desired replica is ready.
    pub const AVAILABLE: &str = "Available";
    /// Some replicas are missing.
    pub const REPLICAS_UNAVAILABLE: &str = "ReplicasUnavailable";
    /// The spec asks for something the operator cannot build.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Nothing left to do.
    pub const RECONCILED: &str = "Reconciled";
    /// Online accuracy is below the floor.
    pub const ACCURACY_BELOW_FLOOR: &str = "AccuracyBelowFloor";
    /// Inputs drifted from the reference: some feature's drift score is above `monitoring.drift.threshold`.
    pub const INPUT_DRIFT: &str = "InputDrift";
    /// Both: online accuracy below the floor and inputs drifted.
    pub const ACCURACY_BELOW_FLOOR_AND_INPUT_DRIFT: &str = "AccuracyBelowFloorAndInputDrift";
    /// All signals within limits.
    pub const HEALTHY: &str = "Healthy";
    /// A canary is under analysis.
    pub const CANARY_ANALYSIS: &str = "CanaryAnalysis";
    /// A canary failed its analysis and was removed.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// A canary passed every step and became the stable revision.
    pub const PROMOTED: &str = "Promoted";
    /// Online accuracy stayed below the floor and `rollbackOnAccuracyDrop` returned to the stable revision.
    pub const ACCURACY_ROLLBACK: &str = "AccuracyRollback";
    /// Prometheus could not be read.
    pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
    /// The autoscaler is reading metrics and acting on them.
    pub const SCALING: &str = "Scaling";
    /// Autoscaling is not configured.
    pub const NOT_CONFIGURED: &str = "NotConfigured";
    /// A serving pod's init container failed (an artifact whose digest does not match, a source that cannot be
    /// fetched): the Warning Event names the pod and the init container's own message.
    pub const POD_START_FAILED: &str = "PodStartFailed";
    /// Ready and Available: no pods on purpose, after `scaleToZero.idleAfter` without requests; the activator
    /// holds the first request and wakes the model. Healthy, not progressing.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// An Event: the activator held a request for a model at zero, and it is waking.
    pub const WAKING: &str = "Waking";
}

/// Builds a condition stamped with `now` and the generation it describes.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { status::TRUE } else { status::FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status::TRUE)
}

/// Inserts or replaces a condition by type. The previous `lastTransitionTime` is kept when `status` did not
/// change, so an unchanged condition compares equal and causes no status write. Returns whether anything changed.
pub fn set(conditions: &mut Vec<Condition>, mut next: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == next.type_) {
        Some(existing) => {
            if existing.status == next.status {
                next.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == next {
                return false;
            }
            *existing = next;
        }
        None => conditions.push(next),
    }
    conditions.sort_by_key(|c| {
        ALL_TYPES
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(ALL_TYPES.len())
    });
    true
}

/// Removes a condition by type; returns whether it was there.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn set_keeps_transition_time_when_status_holds() {
        let mut list = vec![];
        assert!(set(
            &mut list,
            new(READY, false, reason::OPTIMIZING, "waiting", Some(1), at(10))
        ));
        // Same status, same everything but the clock: nothing to write.
        assert!(!set(
            &mut list,
            new(READY, false, reason::OPTIMIZING, "waiting", Some(1), at(20))
        ));
        assert_eq!(list[0].last_transition_time, at(10));
        // Same status, new message: written, but the transition time stays.
        assert!(set(
            &mut list,
            new(
                READY,
                false,
                reason::ROLLING_OUT,
                "1/2 ready",
                Some(1),
                at(30)
            )
        ));
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].reason, reason::ROLLING_OUT);
        // Status flips: the transition time moves.
        assert!(set(
            &mut list,
            new(READY, true, reason::AVAILABLE, "2/2 ready", Some(1), at(40))
        ));
        assert_eq!(list[0].last_transition_time, at(40));
        assert!(is_true(&list, READY));
    }

    #[test]
    fn set_orders_by_type_and_remove_works() {
        let mut list = vec![];
        set(
            &mut list,
            new(DEGRADED, false, reason::HEALTHY, "", None, at(1)),
        );
        set(
            &mut list,
            new(MODEL_READY, true, reason::OPTIMIZED, "", None, at(1)),
        );
        set(
            &mut list,
            new(READY, true, reason::AVAILABLE, "", None, at(1)),
        );
        let types: Vec<_> = list.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, MODEL_READY, DEGRADED]);
        assert!(remove(&mut list, MODEL_READY));
        assert!(!remove(&mut list, MODEL_READY));
        assert!(find(&list, MODEL_READY).is_none());
        assert!(!is_true(&list, STALLED));
    }
}
