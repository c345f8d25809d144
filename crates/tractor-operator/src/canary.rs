//! The canary state machine, pure: which step a canary is on, when it moves to the next, when it is
//! promoted and when it is rolled back, from the spec's steps and analysis and what Prometheus showed.
//!
//! Traffic follows replicas: the stable and canary Deployments sit behind the one Service, so the canary's
//! share of requests is its share of ready pods. [`split`] turns a step's weight into replica counts; the
//! granularity is one pod (with 4 replicas the shares are 25 % steps), and a canary always gets at least
//! one pod while the stable keeps at least one.

use tractor_api::{Canary, CanaryAnalysis};

/// Where a canary stands. Times are seconds on the caller's clock.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// No canary: the stable revision serves everything.
    Stable,
    /// A canary is on `step`.
    Progressing {
        /// The canary revision.
        revision: String,
        /// Index into the steps.
        step: usize,
        /// When the step began.
        since: f64,
        /// Failed analyses so far (all steps together).
        failures: i32,
        /// Whether an analysis passed during this step: a step never completes on no evidence.
        passed: bool,
    },
    /// The canary passed every step: it becomes the stable revision.
    Promoted {
        /// The promoted revision.
        revision: String,
    },
    /// The canary failed: it is removed and not retried until the spec changes.
    RolledBack {
        /// The failed revision.
        revision: String,
        /// Why, for the status and the event.
        reason: String,
    },
}

/// What analysis read for the canary (and the stable revision, to compare): p95 ms, error share, accuracy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    /// p95 latency, milliseconds.
    pub latency_p95_millis: Option<f64>,
    /// Share of failed requests.
    pub error_rate: Option<f64>,
    /// Online accuracy.
    pub accuracy: Option<f64>,
}

/// One analysis' verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every limit met.
    Pass,
    /// A limit broken: which and by how much.
    Fail(String),
    /// A limit could not be checked (no data yet): neither pass nor failure.
    Inconclusive(String),
}

/// Checks the canary's signals against the limits. With the stable revision's figures at hand, an error
/// rate or latency limit is also broken when the canary is clearly worse than stable (twice the error
/// rate above 1 %, or 1.5 times the p95 and slower by a tenth of the latency limit); accuracy below
/// stable's by more than 0.05 fails too.
pub fn analyse(limits: Option<&CanaryAnalysis>, canary: &Signals, stable: &Signals) -> Verdict {
    let Some(l) = limits else {
        return Verdict::Pass;
    };
    let mut missing = vec![];
    let mut check = |name: &str, value: Option<f64>, limit: Option<f64>, higher_is_worse: bool| {
        let limit = limit?;
        match value {
            None => {
                missing.push(name.to_owned());
                None
            }
            Some(v) if higher_is_worse && v > limit => {
                Some(format!("{name} {v:.4} above the limit {limit}"))
            }
            Some(v) if !higher_is_worse && v < limit => {
                Some(format!("{name} {v:.4} below the limit {limit}"))
            }
            Some(_) => None,
        }
    };
    let broken = [
        check(
            "p95 latency (ms)",
            canary.latency_p95_millis,
            l.max_latency_millis,
            true,
        ),
        check("error rate", canary.error_rate, l.max_error_rate, true),
        check("accuracy", canary.accuracy, l.min_accuracy, false),
    ];
    if let Some(why) = broken.into_iter().flatten().next() {
        return Verdict::Fail(why);
    }
    // Relative checks only where a limit of that kind is set, so a user opts in per signal.
    if l.max_error_rate.is_some()
        && let (Some(c), Some(s)) = (canary.error_rate, stable.error_rate)
        && c > 0.01
        && c > 2.0 * s
    {
        return Verdict::Fail(format!(
            "error rate {c:.4} more than twice the stable revision's {s:.4}"
        ));
    }
    // A p95 of a millisecond or two moves by half between two histogram buckets' interpolation alone: the
    // canary must also be slower by a tenth of the user's own limit to count as clearly worse (seen on real
    // pods: 1.6 ms against 1.0 ms rolled back a good canary).
    if let Some(limit) = l.max_latency_millis
        && let (Some(c), Some(s)) = (canary.latency_p95_millis, stable.latency_p95_millis)
        && s > 0.0
        && c > 1.5 * s
        && c - s > 0.1 * limit
    {
        return Verdict::Fail(format!(
            "p95 latency {c:.1} ms more than 1.5 times the stable revision's {s:.1} ms"
        ));
    }
    if l.min_accuracy.is_some()
        && let (Some(c), Some(s)) = (canary.accuracy, stable.accuracy)
        && c + 0.05 < s
    {
        return Verdict::Fail(format!(
            "accuracy {c:.4} more than 0.05 below the stable revision's {s:.4}"
        ));
    }
    if missing.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Inconclusive(format!("no data yet for {}", missing.join(", ")))
    }
}

/// The spec's pause of each step, in seconds.
pub fn pauses(canary: &Canary) -> Vec<f64> {
    canary
        .steps
        .iter()
        .map(|s| s.pause.as_std().as_secs_f64())
        .collect()
}

/// One transition. `target` is the revision the spec asks for, `stable` the one serving, `failed` the one
/// already rolled back; `verdict` is this evaluation's analysis of a running canary (`None` when its pods
/// are not ready yet, which neither passes nor fails).
#[allow(clippy::too_many_arguments)]
pub fn next(
    state: &State,
    target: &str,
    stable: Option<&str>,
    failed: Option<&str>,
    canary: &Canary,
    pauses: &[f64],
    verdict: Option<&Verdict>,
    now: f64,
) -> State {
    let failure_limit = canary.analysis.as_ref().map_or(0, |a| a.failure_limit);
    let start = || State::Progressing {
        revision: target.to_owned(),
        step: 0,
        since: now,
        failures: 0,
        passed: false,
    };
    let wanted = stable != Some(target) && failed != Some(target) && stable.is_some();
    match state {
        State::Stable | State::Promoted { .. } | State::RolledBack { .. } => {
            // Done states stay until the spec asks for something new.
            match state {
                State::Promoted { revision } | State::RolledBack { revision, .. }
                    if revision == target =>
                {
                    state.clone()
                }
                _ if wanted => start(),
                _ => State::Stable,
            }
        }
        State::Progressing {
            revision,
            step,
            since,
            failures,
            passed,
        } => {
            if revision != target {
                // The spec moved on mid-canary: this canary is abandoned, the new one (if any) starts over.
                return if wanted { start() } else { State::Stable };
            }
            let (mut failures, mut passed) = (*failures, *passed);
            match verdict {
                Some(Verdict::Fail(why)) => {
                    failures += 1;
                    if failures > failure_limit {
                        return State::RolledBack {
                            revision: revision.clone(),
                            reason: format!(
                                "analysis failed {failures} time(s), over failureLimit {failure_limit}: {why}"
                            ),
                        };
                    }
                }
                Some(Verdict::Pass) => passed = true,
                Some(Verdict::Inconclusive(_)) | None => {}
            }
            let pause = pauses.get(*step).copied().unwrap_or(60.0);
            if passed && now - since >= pause {
                if step + 1 >= canary.steps.len() {
                    return State::Promoted {
                        revision: revision.clone(),
                    };
                }
                return State::Progressing {
                    revision: revision.clone(),
                    step: step + 1,
                    since: now,
                    failures,
                    passed: false,
                };
            }
            State::Progressing {
                revision: revision.clone(),
                step: *step,
                since: *since,
                failures,
                passed,
            }
        }
    }
}

/// The canary's weight in percent for a state (0 when there is no canary, 100 once promoted).
pub fn weight(state: &State, canary: &Canary) -> i32 {
    match state {
        State::Progressing { step, .. } => canary.steps.get(*step).map_or(0, |s| s.weight),
        State::Promoted { .. } => 100,
        State::Stable | State::RolledBack { .. } => 0,
    }
}

/// Splits `total` replicas into (stable, canary) for a weight: the canary gets its share rounded to whole
/// pods, at least one, and the stable keeps at least one until the canary is promoted (weight 100).
pub fn split(total: i32, weight: i32) -> (i32, i32) {
    if weight <= 0 {
        return (total, 0);
    }
    if weight >= 100 {
        return (0, total.max(1));
    }
    let total = total.max(2);
    let canary =
        ((f64::from(total) * f64::from(weight) / 100.0).round() as i32).clamp(1, total - 1);
    (total - canary, canary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(analysis: Option<&str>) -> Canary {
        let mut c: Canary =
            serde_yaml::from_str("{steps: [{weight: 25, pause: 30s}, {weight: 50, pause: 60s}]}")
                .expect("canary yaml");
        c.analysis = analysis.map(|a| serde_yaml::from_str(a).expect("analysis yaml"));
        c
    }

    fn progressing(step: usize, since: f64, failures: i32, passed: bool) -> State {
        State::Progressing {
            revision: "new".into(),
            step,
            since,
            failures,
            passed,
        }
    }

    const PAUSES: [f64; 2] = [30.0, 60.0];

    #[test]
    fn every_transition() {
        let c = spec(Some("{maxErrorRate: 0.01, failureLimit: 1}"));
        let fail = Verdict::Fail("error rate 0.2".into());
        let pass = Verdict::Pass;
        let unsure = Verdict::Inconclusive("no data".into());
        let rolled = State::RolledBack {
            revision: "new".into(),
            reason: "x".into(),
        };
        let promoted = State::Promoted {
            revision: "new".into(),
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            State,
            &str,
            Option<&str>,
            Option<&str>,
            Option<&Verdict>,
            f64,
            State,
        )> = vec![
            (
                "same revision: nothing to do",
                State::Stable,
                "old",
                Some("old"),
                None,
                None,
                0.0,
                State::Stable,
            ),
            (
                "first revision: no canary without a stable one",
                State::Stable,
                "new",
                None,
                None,
                None,
                0.0,
                State::Stable,
            ),
            (
                "new revision: step 0 starts",
                State::Stable,
                "new",
                Some("old"),
                None,
                None,
                5.0,
                progressing(0, 5.0, 0, false),
            ),
            (
                "a failed revision is not retried",
                State::Stable,
                "new",
                Some("old"),
                Some("new"),
                None,
                5.0,
                State::Stable,
            ),
            (
                "pods not ready: wait",
                progressing(0, 0.0, 0, false),
                "new",
                Some("old"),
                None,
                None,
                100.0,
                progressing(0, 0.0, 0, false),
            ),
            (
                "pass inside the pause: hold",
                progressing(0, 0.0, 0, false),
                "new",
                Some("old"),
                None,
                Some(&pass),
                10.0,
                progressing(0, 0.0, 0, true),
            ),
            (
                "pause over after a pass: next step",
                progressing(0, 0.0, 0, true),
                "new",
                Some("old"),
                None,
                Some(&pass),
                31.0,
                progressing(1, 31.0, 0, false),
            ),
            (
                "pause over without any pass: hold",
                progressing(0, 0.0, 0, false),
                "new",
                Some("old"),
                None,
                Some(&unsure),
                31.0,
                progressing(0, 0.0, 0, false),
            ),
            (
                "one failure is tolerated",
                progressing(1, 0.0, 0, true),
                "new",
                Some("old"),
                None,
                Some(&fail),
                10.0,
                progressing(1, 0.0, 1, true),
            ),
            (
                "the second failure rolls back",
                progressing(1, 0.0, 1, true),
                "new",
                Some("old"),
                None,
                Some(&fail),
                20.0,
                State::RolledBack {
                    revision: "new".into(),
                    reason: "analysis failed 2 time(s), over failureLimit 1: error rate 0.2".into(),
                },
            ),
            (
                "last step done: promote",
                progressing(1, 0.0, 1, true),
                "new",
                Some("old"),
                None,
                Some(&pass),
                61.0,
                promoted.clone(),
            ),
            (
                "promoted stays promoted",
                promoted.clone(),
                "new",
                Some("new"),
                None,
                None,
                70.0,
                promoted.clone(),
            ),
            (
                "rolled back stays rolled back",
                rolled.clone(),
                "new",
                Some("old"),
                Some("new"),
                None,
                70.0,
                rolled.clone(),
            ),
            (
                "spec changes after a rollback: a new canary",
                rolled.clone(),
                "newer",
                Some("old"),
                Some("new"),
                None,
                80.0,
                State::Progressing {
                    revision: "newer".into(),
                    step: 0,
                    since: 80.0,
                    failures: 0,
                    passed: false,
                },
            ),
            (
                "spec changes mid-canary: start over",
                progressing(1, 0.0, 1, true),
                "newer",
                Some("old"),
                None,
                Some(&pass),
                90.0,
                State::Progressing {
                    revision: "newer".into(),
                    step: 0,
                    since: 90.0,
                    failures: 0,
                    passed: false,
                },
            ),
            (
                "spec returns to stable mid-canary: abandon",
                progressing(1, 0.0, 0, true),
                "old",
                Some("old"),
                None,
                None,
                90.0,
                State::Stable,
            ),
        ];
        for (name, state, target, stable, failed, verdict, now, want) in cases {
            assert_eq!(
                next(&state, target, stable, failed, &c, &PAUSES, verdict, now),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn failure_limit_zero_rolls_back_at_once() {
        let c = spec(Some("{minAccuracy: 0.9, failureLimit: 0}"));
        let got = next(
            &progressing(0, 0.0, 0, false),
            "new",
            Some("old"),
            None,
            &c,
            &PAUSES,
            Some(&Verdict::Fail("accuracy 0.1".into())),
            1.0,
        );
        assert!(matches!(got, State::RolledBack { .. }), "{got:?}");
    }

    #[test]
    fn analysis_limits_and_comparison_with_stable() {
        let limits: CanaryAnalysis =
            serde_yaml::from_str("{maxLatencyMillis: 50, maxErrorRate: 0.05, minAccuracy: 0.9}")
                .expect("yaml");
        let good = Signals {
            latency_p95_millis: Some(10.0),
            error_rate: Some(0.0),
            accuracy: Some(0.95),
        };
        let cases = [
            ("all within", good.clone(), Signals::default(), "pass"),
            (
                "slow",
                Signals {
                    latency_p95_millis: Some(80.0),
                    ..good.clone()
                },
                Signals::default(),
                "fail",
            ),
            (
                "inaccurate",
                Signals {
                    accuracy: Some(0.2),
                    ..good.clone()
                },
                Signals::default(),
                "fail",
            ),
            (
                "erroring",
                Signals {
                    error_rate: Some(0.5),
                    ..good.clone()
                },
                Signals::default(),
                "fail",
            ),
            (
                "no feedback yet",
                Signals {
                    accuracy: None,
                    ..good.clone()
                },
                Signals::default(),
                "inconclusive",
            ),
            (
                "within limits but far slower than stable",
                Signals {
                    latency_p95_millis: Some(40.0),
                    ..good.clone()
                },
                Signals {
                    latency_p95_millis: Some(5.0),
                    ..good.clone()
                },
                "fail",
            ),
            (
                "1.5 times stable but by less than a tenth of the limit: noise",
                Signals {
                    latency_p95_millis: Some(1.6),
                    ..good.clone()
                },
                Signals {
                    latency_p95_millis: Some(1.0),
                    ..good.clone()
                },
                "pass",
            ),
            (
                "within limits but less accurate than stable",
                Signals {
                    accuracy: Some(0.91),
                    ..good.clone()
                },
                Signals {
                    accuracy: Some(0.99),
                    ..good.clone()
                },
                "fail",
            ),
        ];
        for (name, canary, stable, want) in cases {
            let got = match analyse(Some(&limits), &canary, &stable) {
                Verdict::Pass => "pass",
                Verdict::Fail(_) => "fail",
                Verdict::Inconclusive(_) => "inconclusive",
            };
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(
            analyse(None, &Signals::default(), &Signals::default()),
            Verdict::Pass
        );
    }

    #[test]
    fn weights_become_whole_pods() {
        let cases = [
            (4, 25, (3, 1)),
            (4, 50, (2, 2)),
            (4, 10, (3, 1)),
            (10, 10, (9, 1)),
            (1, 50, (1, 1)),
            (3, 90, (1, 2)),
            (5, 0, (5, 0)),
            (5, 100, (0, 5)),
        ];
        for (total, weight, want) in cases {
            assert_eq!(split(total, weight), want, "{total} at {weight} %");
        }
        let c = spec(None);
        assert_eq!(weight(&progressing(1, 0.0, 0, false), &c), 50);
        assert_eq!(weight(&State::Stable, &c), 0);
    }
}
