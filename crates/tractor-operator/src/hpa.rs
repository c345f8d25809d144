//! The HorizontalPodAutoscaler's arithmetic, pure: per-metric proposals with a tolerance, the largest wins,
//! then stabilization windows and rate policies exactly as Kubernetes' `pkg/controller/podautoscaler`
//! applies them, then min/max. Time is passed in (seconds), so every rule is table-tested without a clock.

use tractor_api::{ScalingBehavior, ScalingPolicyType, ScalingRules, SelectPolicy};

/// One rate limit: at most `value` pods (or percent) of change per `period` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Pods or Percent.
    pub kind: ScalingPolicyType,
    /// Amount per period.
    pub value: i32,
    /// Period length, seconds.
    pub period: f64,
}

/// Stabilization and rate limits in one direction, with the HPA's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Stabilization window, seconds.
    pub window: f64,
    /// Which policy wins.
    pub select: SelectPolicy,
    /// Rate limits.
    pub policies: Vec<Policy>,
}

/// Rules in both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    /// Scaling up.
    pub up: Rules,
    /// Scaling down.
    pub down: Rules,
}

impl Behavior {
    /// The HPA's defaults (`autoscaling/v2` `GenerateHPAScaleUpRules`/`GenerateHPAScaleDownRules`): up with no
    /// window, at most +4 pods or +100 % per 15 s, whichever is more; down after 300 s, up to 100 % per 15 s.
    /// Fields left out of `spec` take these defaults one by one, as the HPA's defaulting does.
    pub fn from_spec(spec: Option<&ScalingBehavior>) -> Self {
        let up_default = Rules {
            window: 0.0,
            select: SelectPolicy::Max,
            policies: vec![
                Policy {
                    kind: ScalingPolicyType::Pods,
                    value: 4,
                    period: 15.0,
                },
                Policy {
                    kind: ScalingPolicyType::Percent,
                    value: 100,
                    period: 15.0,
                },
            ],
        };
        let down_default = Rules {
            window: 300.0,
            select: SelectPolicy::Max,
            policies: vec![Policy {
                kind: ScalingPolicyType::Percent,
                value: 100,
                period: 15.0,
            }],
        };
        let merge = |given: Option<&ScalingRules>, default: Rules| -> Rules {
            let Some(given) = given else { return default };
            Rules {
                window: given
                    .stabilization_window_seconds
                    .map_or(default.window, f64::from),
                select: given.select_policy.unwrap_or(default.select),
                policies: if given.policies.is_empty() {
                    default.policies
                } else {
                    given
                        .policies
                        .iter()
                        .map(|p| Policy {
                            kind: p.type_,
                            value: p.value,
                            period: f64::from(p.period_seconds),
                        })
                        .collect()
                },
            }
        };
        Self {
            up: merge(spec.and_then(|s| s.scale_up.as_ref()), up_default),
            down: merge(spec.and_then(|s| s.scale_down.as_ref()), down_default),
        }
    }

    fn longest_period(&self) -> f64 {
        self.up
            .policies
            .iter()
            .chain(&self.down.policies)
            .map(|p| p.period)
            .fold(0.0, f64::max)
    }
}

/// The replica count one metric asks for: unchanged while `ratio` (value / target) is within `tolerance` of
/// 1, else `ceil(current × ratio)`.
pub fn proposal(current: i32, ratio: f64, tolerance: f64) -> i32 {
    if (1.0 - ratio).abs() <= tolerance {
        return current;
    }
    // The epsilon keeps float noise (1.1 × 10 = 11.000000000000002) from adding a pod the HPA's
    // documented arithmetic would not.
    let want = (ratio * f64::from(current) - 1e-9).ceil();
    if want >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        want.max(0.0) as i32
    }
}

/// Why the autoscaler holds instead of deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// No metric could be read.
    NoMetrics,
    /// Some metrics could not be read and the others do not ask for more replicas: scaling down on partial
    /// data could remove capacity the missing signal would have kept.
    PartialMetricsNoScaleUp,
}

/// Combines per-metric readings (`None` = unreadable) into one proposal, the largest, with the HPA's rule
/// for missing metrics. Returns the proposal and the index of the metric that set it.
pub fn combine(current: i32, ratios: &[Option<f64>], tolerance: f64) -> Result<(i32, usize), Hold> {
    let best = ratios
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (proposal(current, r, tolerance), i)))
        .max_by_key(|(p, i)| (*p, std::cmp::Reverse(*i)));
    let missing = ratios.iter().any(Option::is_none);
    match best {
        None => Err(Hold::NoMetrics),
        Some((p, _)) if missing && p <= current => Err(Hold::PartialMetricsNoScaleUp),
        Some(found) => Ok(found),
    }
}

/// What the autoscaler remembers about one ModelDeployment between evaluations (in memory, as the HPA does).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Past unstabilized recommendations: (time, replicas).
    recommendations: Vec<(f64, i32)>,
    /// Past scale-ups: (time, pods added).
    up_events: Vec<(f64, i32)>,
    /// Past scale-downs: (time, pods removed).
    down_events: Vec<(f64, i32)>,
}

impl History {
    /// A history for a ModelDeployment first seen at `now` with `current` replicas. Unlike the HPA, which
    /// starts empty, it records the current count as a recommendation: an operator that restarts must not
    /// scale down before a full window of fresh evidence.
    pub fn seeded(now: f64, current: i32) -> Self {
        Self {
            recommendations: vec![(now, current)],
            ..Self::default()
        }
    }
}

/// Why the decided count differs from (or equals) the stabilized recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Within every bound.
    DesiredWithinRange,
    /// Capped by a scale-up policy.
    ScaleUpLimit,
    /// Capped at maxReplicas.
    TooManyReplicas,
    /// Floored by a scale-down policy.
    ScaleDownLimit,
    /// Floored at minReplicas.
    TooFewReplicas,
}

/// One evaluation's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The replica count to set.
    pub replicas: i32,
    /// The recommendation after the stabilization windows, before rate limits and bounds.
    pub stabilized: i32,
    /// What bounded it.
    pub limit: Limit,
}

/// Bounds and behavior of one autoscaled object.
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    /// minReplicas.
    pub min: i32,
    /// maxReplicas.
    pub max: i32,
    /// Windows and policies.
    pub behavior: Behavior,
}

/// Runs one evaluation: `current` replicas, `desired` from [`combine`], at time `now` (seconds). Records the
/// recommendation and any scale event in `history`.
pub fn decide(history: &mut History, now: f64, current: i32, desired: i32, b: &Bounds) -> Decision {
    let decision = if current > b.max {
        Decision {
            replicas: b.max,
            stabilized: b.max,
            limit: Limit::TooManyReplicas,
        }
    } else if current < b.min {
        Decision {
            replicas: b.min,
            stabilized: b.min,
            limit: Limit::TooFewReplicas,
        }
    } else {
        let stabilized = stabilize(history, now, current, desired, &b.behavior);
        let (replicas, limit) = rate_limit(history, now, current, stabilized, b);
        Decision {
            replicas,
            stabilized,
            limit,
        }
    };
    record_event(history, now, current, decision.replicas, &b.behavior);
    decision
}

/// `stabilizeRecommendationWithBehaviors`: scale up no higher than the lowest recommendation of the up
/// window, down no lower than the highest of the down window.
fn stabilize(
    history: &mut History,
    now: f64,
    current: i32,
    desired: i32,
    behavior: &Behavior,
) -> i32 {
    let up_cutoff = now - behavior.up.window;
    let down_cutoff = now - behavior.down.window;
    let mut up = desired;
    let mut down = desired;
    let mut old = None;
    for (index, (time, rec)) in history.recommendations.iter().enumerate() {
        if *time > up_cutoff {
            up = up.min(*rec);
        }
        if *time > down_cutoff {
            down = down.max(*rec);
        }
        if *time < up_cutoff && *time < down_cutoff {
            old = Some(index);
        }
    }
    let mut recommendation = current;
    if recommendation < up {
        recommendation = up;
    }
    if recommendation > down {
        recommendation = down;
    }
    // Samples older than both windows are reused, as the HPA does, so the list stays short.
    match old {
        Some(index) => history.recommendations[index] = (now, desired),
        None => history.recommendations.push((now, desired)),
    }
    recommendation
}

fn change_in_period(events: &[(f64, i32)], now: f64, period: f64) -> i32 {
    let cutoff = now - period;
    events
        .iter()
        .filter(|(t, _)| *t > cutoff)
        .map(|(_, n)| n)
        .sum()
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(h: &History, now: f64, current: i32, rules: &Rules) -> i32 {
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i64::MAX, i64::min),
        SelectPolicy::Max => (i64::MIN, i64::max),
    };
    for p in &rules.policies {
        let start = i64::from(current) - i64::from(change_in_period(&h.up_events, now, p.period))
            + i64::from(change_in_period(&h.down_events, now, p.period));
        let proposed = match p.kind {
            ScalingPolicyType::Pods => start + i64::from(p.value),
            // Rounded up so a small percentage of a small count still lets one pod through.
            ScalingPolicyType::Percent => {
                (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
            }
        };
        result = pick(result, proposed);
    }
    result.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `calculateScaleDownLimitWithBehaviors`.
fn scale_down_limit(h: &History, now: f64, current: i32, rules: &Rules) -> i32 {
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i64::MIN, i64::max),
        SelectPolicy::Max => (i64::MAX, i64::min),
    };
    for p in &rules.policies {
        let start = i64::from(current) - i64::from(change_in_period(&h.up_events, now, p.period))
            + i64::from(change_in_period(&h.down_events, now, p.period));
        let proposed = match p.kind {
            ScalingPolicyType::Pods => start - i64::from(p.value),
            // Truncated, as the HPA's int32 conversion does.
            ScalingPolicyType::Percent => {
                (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64
            }
        };
        result = pick(result, proposed);
    }
    result.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `convertDesiredReplicasWithBehaviorRate`: rate policies, then min/max.
fn rate_limit(h: &History, now: f64, current: i32, desired: i32, b: &Bounds) -> (i32, Limit) {
    if desired > current {
        let up = scale_up_limit(h, now, current, &b.behavior.up).max(current);
        let (allowed, limit) = if b.max > up {
            (up, Limit::ScaleUpLimit)
        } else {
            (b.max, Limit::TooManyReplicas)
        };
        if desired > allowed {
            return (allowed, limit);
        }
    } else if desired < current {
        let down = scale_down_limit(h, now, current, &b.behavior.down).min(current);
        let (allowed, limit) = if b.min < down {
            (down, Limit::ScaleDownLimit)
        } else {
            (b.min, Limit::TooFewReplicas)
        };
        if desired < allowed {
            return (allowed, limit);
        }
    }
    (desired, Limit::DesiredWithinRange)
}

/// `storeScaleEvent`: remembers the change for the rate policies and forgets events older than the longest
/// policy period.
fn record_event(h: &mut History, now: f64, from: i32, to: i32, behavior: &Behavior) {
    let keep = now - behavior.longest_period();
    h.up_events.retain(|(t, _)| *t > keep);
    h.down_events.retain(|(t, _)| *t > keep);
    if to > from {
        h.up_events.push((now, to - from));
    } else if to < from {
        h.down_events.push((now, from - to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tractor_api::ScalingPolicy;

    fn bounds(min: i32, max: i32, behavior: Option<&ScalingBehavior>) -> Bounds {
        Bounds {
            min,
            max,
            behavior: Behavior::from_spec(behavior),
        }
    }

    /// The HPA docs' algorithm section: 200m against 100m doubles, 50m halves, within 10 % nothing moves.
    #[test]
    fn proposals_follow_the_documented_ratio_and_tolerance() {
        let cases = [
            // (current, value, target, tolerance, want)
            (3, 200.0, 100.0, 0.1, 6),
            (4, 50.0, 100.0, 0.1, 2),
            (10, 109.0, 100.0, 0.1, 10),
            (10, 91.0, 100.0, 0.1, 10),
            (10, 111.0, 100.0, 0.1, 12),
            (10, 89.0, 100.0, 0.1, 9),
            (10, 109.0, 100.0, 0.05, 11),
            (1, 0.0, 100.0, 0.1, 0),
            (3, 150.0, 100.0, 0.0, 5),
            (7, 1e12, 1.0, 0.1, i32::MAX),
        ];
        for (current, value, target, tol, want) in cases {
            assert_eq!(
                proposal(current, value / target, tol),
                want,
                "{current} replicas at {value}/{target}, tolerance {tol}"
            );
        }
    }

    #[test]
    fn the_largest_proposal_wins_and_missing_metrics_never_scale_down() {
        type Case<'a> = (&'a [Option<f64>], Result<(i32, usize), Hold>);
        let cases: [Case; 6] = [
            (&[Some(2.0), Some(1.5)], Ok((8, 0))),
            (&[Some(0.5), Some(1.5)], Ok((6, 1))),
            (&[None, None], Err(Hold::NoMetrics)),
            (&[], Err(Hold::NoMetrics)),
            // Missing data may not justify going down (or staying, which would hide the gap)…
            (&[None, Some(0.5)], Err(Hold::PartialMetricsNoScaleUp)),
            // …but what is readable may still ask for more.
            (&[None, Some(2.0)], Ok((8, 1))),
        ];
        for (ratios, want) in cases {
            assert_eq!(combine(4, ratios, 0.1), want, "{ratios:?}");
        }
    }

    #[test]
    fn defaults_are_the_hpa_defaults_and_fields_default_one_by_one() {
        let d = Behavior::from_spec(None);
        assert_eq!(d.up.window, 0.0);
        assert_eq!(d.down.window, 300.0);
        assert_eq!(d.up.policies.len(), 2);
        assert_eq!(d.down.policies[0].value, 100);
        let spec = ScalingBehavior {
            scale_up: None,
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(20),
                select_policy: None,
                policies: vec![],
            }),
        };
        let b = Behavior::from_spec(Some(&spec));
        assert_eq!(b.down.window, 20.0);
        assert_eq!(b.down.policies, d.down.policies);
        assert_eq!(b.up, d.up);
    }

    /// Default scale-up: from 1 to a wish of 10 the first step is max(1 + 4, 1 × 2) = 5, then the +4 pods
    /// of the 15 s period are used up until the period passes.
    #[test]
    fn default_scale_up_is_double_or_four_pods_per_fifteen_seconds() {
        let b = bounds(1, 20, None);
        let mut h = History::default();
        let d = decide(&mut h, 0.0, 1, 10, &b);
        assert_eq!((d.replicas, d.limit), (5, Limit::ScaleUpLimit));
        // Same period: the period started at 1, so at most 1 + 4 = 5 (or 2): no further growth.
        let d = decide(&mut h, 5.0, 5, 10, &b);
        assert_eq!(d.replicas, 5);
        // A new period: 5 → max(9, 10) = 10.
        let d = decide(&mut h, 16.0, 5, 10, &b);
        assert_eq!((d.replicas, d.limit), (10, Limit::DesiredWithinRange));
        // Past maxReplicas: capped, and said so.
        let d = decide(&mut h, 40.0, 10, 30, &b);
        assert_eq!((d.replicas, d.limit), (20, Limit::TooManyReplicas));
    }

    /// Default scale-down: the highest recommendation of the last 300 s holds the count up.
    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let b = bounds(1, 10, None);
        let mut h = History::default();
        assert_eq!(decide(&mut h, 0.0, 5, 5, &b).replicas, 5);
        assert_eq!(decide(&mut h, 60.0, 5, 2, &b).replicas, 5);
        assert_eq!(decide(&mut h, 299.0, 5, 2, &b).replicas, 5);
        // The recommendation of 5 at t=0 leaves the window: the highest left is 2.
        let d = decide(&mut h, 301.0, 5, 2, &b);
        assert_eq!((d.replicas, d.stabilized), (2, 2));
        // Below minReplicas: floored.
        let d = decide(&mut h, 700.0, 2, 0, &b);
        assert_eq!((d.replicas, d.limit), (1, Limit::TooFewReplicas));
    }

    #[test]
    fn a_scale_up_window_takes_the_lowest_recent_recommendation() {
        let spec = ScalingBehavior {
            scale_up: Some(ScalingRules {
                stabilization_window_seconds: Some(60),
                ..ScalingRules::default()
            }),
            scale_down: None,
        };
        let b = bounds(1, 10, Some(&spec));
        let mut h = History::default();
        assert_eq!(decide(&mut h, 0.0, 2, 2, &b).replicas, 2);
        // A spike is not enough while the window still remembers 2.
        assert_eq!(decide(&mut h, 30.0, 2, 6, &b).replicas, 2);
        // Sustained: once 2 has aged out, the lowest in the window is 6.
        assert_eq!(decide(&mut h, 61.0, 2, 6, &b).replicas, 6);
    }

    /// The HPA docs' scale-down policy example: `Pods 4/60s` and `Percent 10/60s`, `selectPolicy` Max: from 80
    /// the first step removes 8 (10 %), from 72 again 8 (7.2 rounded up), and below 40 pods the Pods policy
    /// allows more, so 4 at a time.
    #[test]
    fn documented_scale_down_policies() {
        let spec = ScalingBehavior {
            scale_up: None,
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: None,
                policies: vec![
                    ScalingPolicy {
                        type_: ScalingPolicyType::Pods,
                        value: 4,
                        period_seconds: 60,
                    },
                    ScalingPolicy {
                        type_: ScalingPolicyType::Percent,
                        value: 10,
                        period_seconds: 60,
                    },
                ],
            }),
        };
        let scale_bounds = bounds(1, 100, Some(&spec));
        let mut history = History::default();
        let decision = decide(&mut history, 0.0, 80, 10, &scale_bounds);
        assert_eq!(
            (decision.replicas, decision.limit),
            (72, Limit::ScaleDownLimit)
        );
        // Within the same minute nothing more may go.
        assert_eq!(
            decide(&mut history, 30.0, 72, 10, &scale_bounds).replicas,
            72
        );
        assert_eq!(
            decide(&mut history, 61.0, 72, 10, &scale_bounds).replicas,
            64
        );
        let mut now = 61.0;
        let mut current = 64;
        while current > 40 {
            now += 61.0;
            current = decide(&mut history, now, current, 10, &scale_bounds).replicas;
        }
        now += 61.0;
        let decision = decide(&mut history, now, 30, 10, &scale_bounds);
        assert_eq!(
            decision.replicas, 26,
            "below 40, 4 pods (Pods policy) beat 10 % = 3"
        );
        // selectPolicy Min picks the smaller change instead.
        let mut min_spec = spec.clone();
        if let Some(rules) = min_spec.scale_down.as_mut() {
            rules.select_policy = Some(SelectPolicy::Min);
        }
        let scale_bounds = bounds(1, 100, Some(&min_spec));
        let decision = decide(&mut History::default(), 0.0, 80, 10, &scale_bounds);
        assert_eq!(decision.replicas, 76, "Pods 4 is the smaller change at 80");
    }

    #[test]
    fn disabled_direction_never_moves() {
        let spec = ScalingBehavior {
            scale_up: None,
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: Some(SelectPolicy::Disabled),
                policies: vec![],
            }),
        };
        let b = bounds(1, 10, Some(&spec));
        let mut h = History::default();
        assert_eq!(decide(&mut h, 0.0, 6, 1, &b).replicas, 6);
        assert_eq!(decide(&mut h, 1000.0, 6, 1, &b).replicas, 6);
        assert_eq!(decide(&mut h, 1001.0, 6, 9, &b).replicas, 9);
    }

    #[test]
    fn out_of_bounds_counts_return_to_the_bounds_first() {
        let b = bounds(2, 5, None);
        assert_eq!(decide(&mut History::default(), 0.0, 9, 9, &b).replicas, 5);
        assert_eq!(decide(&mut History::default(), 0.0, 1, 1, &b).replicas, 2);
    }

    #[test]
    fn a_seeded_history_holds_a_restarted_operator_for_a_full_window() {
        let b = bounds(1, 10, None);
        let mut h = History::seeded(0.0, 6);
        assert_eq!(decide(&mut h, 15.0, 6, 1, &b).replicas, 6);
        assert_eq!(decide(&mut h, 301.0, 6, 1, &b).replicas, 1);
    }
}
