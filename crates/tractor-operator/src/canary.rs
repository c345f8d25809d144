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
    /// Online accuracy, with the labelled predictions it stands on.
    pub accuracy: Option<Accuracy>,
}

/// How many standard errors wide an accuracy bound is. Analyses repeat every evaluation over counters that
/// only grow, so the same canary is judged many times: a bound missed once in ~740 looks (one-sided) keeps a
/// good canary from being rolled back on a few unlucky early labels (seen on real pods: 0.94 over a handful of
/// labels against stable's 0.99, the same model).
const BOUND_Z: f64 = 3.0;

/// Online accuracy as counted from feedback: the share of labelled predictions that were right, and how
/// many there were.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    /// Share of labelled predictions that were right, in [0, 1].
    pub share: f64,
    /// Labelled predictions counted (Prometheus sums, so not always whole).
    pub labelled: f64,
}

impl Accuracy {
    /// The Wilson score interval of the share at [`BOUND_Z`]: (0, 1) with nothing labelled, narrowing as
    /// labels come in. Wilson rather than share ± z·se because it stays inside [0, 1] and is honest near
    /// 0 and 1, where a good model's accuracy sits.
    pub fn bounds(&self) -> (f64, f64) {
        let n = self.labelled;
        if n <= 0.0 || !n.is_finite() {
            return (0.0, 1.0);
        }
        let p = self.share.clamp(0.0, 1.0);
        let z2 = BOUND_Z * BOUND_Z;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = BOUND_Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
        // The interval always holds the share; the clamps only mend rounding at 0 and 1.
        ((centre - half).clamp(0.0, p), (centre + half).clamp(p, 1.0))
    }

    /// The share and its count, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{:.4} over {:.0} labelled prediction(s)",
            self.share, self.labelled
        )
    }
}

/// One analysis' verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every limit met.
    Pass,
    /// A limit broken: which and by how much.
    Fail(String),
    /// A limit could not be checked (no data yet, or too few labels to tell accuracy from its limit):
    /// neither pass nor failure.
    Inconclusive(String),
}

/// Checks the canary's signals against the limits. With the stable revision's figures at hand, an error
/// rate or latency limit is also broken when the canary is clearly worse than stable (twice the error
/// rate above 1 %, or 1.5 times the p95 and slower by a tenth of the latency limit). Accuracy is a count of
/// labels, so it is judged on its bounds ([`Accuracy::bounds`]): below `minAccuracy` fails only when even
/// the upper bound is, passes only when the lower bound reaches it, and is inconclusive in between; and
/// the canary fails against stable only when its upper bound is more than 0.05 below stable's lower bound.
pub fn analyse(limits: Option<&CanaryAnalysis>, canary: &Signals, stable: &Signals) -> Verdict {
    let Some(limits) = limits else {
        return Verdict::Pass;
    };
    let mut unsure = vec![];
    let mut check = |name: &str, value: Option<f64>, limit: Option<f64>| {
        let limit = limit?;
        match value {
            None => {
                unsure.push(format!("no data yet for {name}"));
                None
            }
            Some(v) if v > limit => Some(format!("{name} {v:.4} above the limit {limit}")),
            Some(_) => None,
        }
    };
    let broken = [
        check(
            "p95 latency (ms)",
            canary.latency_p95_millis,
            limits.max_latency_millis,
        ),
        check("error rate", canary.error_rate, limits.max_error_rate),
    ];
    if let Some(why) = broken.into_iter().flatten().next() {
        return Verdict::Fail(why);
    }
    if let Some(limit) = limits.min_accuracy {
        match canary.accuracy {
            None => unsure.push("no data yet for accuracy".to_owned()),
            Some(accuracy) => {
                let (lower, upper) = accuracy.bounds();
                if upper < limit {
                    return Verdict::Fail(format!(
                        "accuracy {} below the limit {limit} (at most {upper:.4} at {BOUND_Z}σ)",
                        accuracy.describe()
                    ));
                }
                if lower < limit {
                    unsure.push(format!(
                        "accuracy {} too few to tell from the limit {limit} (at least {lower:.4} at {BOUND_Z}σ)",
                        accuracy.describe()
                    ));
                }
            }
        }
    }
    // Relative checks only where a limit of that kind is set, so a user opts in per signal.
    if limits.max_error_rate.is_some()
        && let (Some(canary_rate), Some(stable_rate)) = (canary.error_rate, stable.error_rate)
        && canary_rate > 0.01
        && canary_rate > 2.0 * stable_rate
    {
        return Verdict::Fail(format!(
            "error rate {canary_rate:.4} more than twice the stable revision's {stable_rate:.4}"
        ));
    }
    // A p95 of a millisecond or two moves by half between two histogram buckets' interpolation alone: the
    // canary must also be slower by a tenth of the user's own limit to count as clearly worse (seen on real
    // pods: 1.6 ms against 1.0 ms rolled back a good canary).
    if let Some(limit) = limits.max_latency_millis
        && let (Some(canary_p95), Some(stable_p95)) =
            (canary.latency_p95_millis, stable.latency_p95_millis)
        && stable_p95 > 0.0
        && canary_p95 > 1.5 * stable_p95
        && canary_p95 - stable_p95 > 0.1 * limit
    {
        return Verdict::Fail(format!(
            "p95 latency {canary_p95:.1} ms more than 1.5 times the stable revision's {stable_p95:.1} ms"
        ));
    }
    if limits.min_accuracy.is_some()
        && let (Some(canary_accuracy), Some(stable_accuracy)) = (canary.accuracy, stable.accuracy)
        && canary_accuracy.bounds().1 + 0.05 < stable_accuracy.bounds().0
    {
        return Verdict::Fail(format!(
            "accuracy {} more than 0.05 below the stable revision's {} (at {BOUND_Z}σ)",
            canary_accuracy.describe(),
            stable_accuracy.describe()
        ));
    }
    if unsure.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Inconclusive(unsure.join("; "))
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
        let canary = spec(Some("{maxErrorRate: 0.01, failureLimit: 1}"));
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
                next(
                    &state, target, stable, failed, &canary, &PAUSES, verdict, now
                ),
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
            accuracy: Some(Accuracy {
                share: 0.95,
                labelled: 1000.0,
            }),
        };
        let accuracy = |share: f64, labelled: f64| Some(Accuracy { share, labelled });
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
                    accuracy: accuracy(0.2, 1000.0),
                    ..good.clone()
                },
                Signals::default(),
                "fail",
            ),
            (
                "inaccurate on few labels, but clearly so",
                Signals {
                    accuracy: accuracy(0.1, 10.0),
                    ..good.clone()
                },
                Signals::default(),
                "fail",
            ),
            (
                "above the limit on too few labels to tell",
                Signals {
                    accuracy: accuracy(0.95, 20.0),
                    ..good.clone()
                },
                Signals::default(),
                "inconclusive",
            ),
            (
                "below the limit on too few labels to tell",
                Signals {
                    accuracy: accuracy(0.85, 20.0),
                    ..good.clone()
                },
                Signals::default(),
                "inconclusive",
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
                    accuracy: accuracy(0.91, 5000.0),
                    ..good.clone()
                },
                Signals {
                    accuracy: accuracy(0.99, 5000.0),
                    ..good.clone()
                },
                "fail",
            ),
            (
                "the same model, a few unlucky early labels: not yet worse than stable",
                Signals {
                    accuracy: accuracy(0.9386, 30.0),
                    ..good.clone()
                },
                Signals {
                    accuracy: accuracy(0.9926, 600.0),
                    ..good.clone()
                },
                "inconclusive",
            ),
            (
                "the same model, enough labels: passes",
                Signals {
                    accuracy: accuracy(0.97, 400.0),
                    ..good.clone()
                },
                Signals {
                    accuracy: accuracy(0.99, 2000.0),
                    ..good.clone()
                },
                "pass",
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

    /// The bounds hold the share, stay in [0, 1], span everything with no labels, and narrow as labels
    /// come in.
    #[test]
    fn accuracy_bounds_narrow_with_labels() {
        let none = Accuracy {
            share: 0.0,
            labelled: 0.0,
        };
        assert_eq!(none.bounds(), (0.0, 1.0));
        let mut last_width = 1.0;
        for labelled in [10.0, 100.0, 1000.0, 10000.0] {
            for share in [0.0, 0.5, 0.97, 1.0] {
                let (lower, upper) = Accuracy { share, labelled }.bounds();
                assert!(
                    (0.0..=share).contains(&lower) && (share..=1.0).contains(&upper),
                    "{share} over {labelled}: ({lower}, {upper})"
                );
            }
            let (lower, upper) = Accuracy {
                share: 0.97,
                labelled,
            }
            .bounds();
            assert!(upper - lower < last_width, "{labelled}");
            last_width = upper - lower;
        }
        // 0.97 over 10 000 labels: a band about a percentage point wide.
        assert!(last_width < 0.011, "{last_width}");
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
