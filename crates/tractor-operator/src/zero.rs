//! Scale to zero, the pure decision: whether a model goes to zero replicas, wakes, or serves, and what its
//! Service leads to meanwhile (its pods, or the activator that holds requests). [`crate::decide`] calls it;
//! it reads nothing and keeps no clock.
//!
//! The order of every switch is what keeps a request from being refused. Going to zero, the Service leaves its
//! pods for the activator in the same reconcile that scales the Deployment to 0, and its writes come first, so
//! a request that arrives while the last pod drains is held. Waking, the Service selects the pods again only
//! once one is ready, and the activator's EndpointSlice stays until the endpoints controller lists a ready pod,
//! so there is never a moment with nothing behind the Service.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tractor_api::conditions::reason;
use tractor_api::{Endpoints, ScaleToZero, ScaleToZeroStatus};

/// How soon to look again while the model is at zero or waking: the wake annotation and the pods' readiness
/// arrive through watches; this only covers a missed event.
const WAKING_REQUEUE: Duration = Duration::from_secs(5);

/// What one reconcile knows about a scale-to-zero model.
#[derive(Clone, Debug, PartialEq)]
pub struct Input<'a> {
    /// The spec's settings.
    pub spec: &'a ScaleToZero,
    /// When this was observed.
    pub now: Timestamp,
    /// The serving Deployment's `spec.replicas` (0 when it does not exist yet).
    pub replicas: i32,
    /// Its ready pods.
    pub ready_replicas: i32,
    /// What the status recorded last time.
    pub status: Option<&'a ScaleToZeroStatus>,
    /// The latest demand the activator signalled (its annotation on the ModelDeployment).
    pub wake: Option<Timestamp>,
    /// Requests answered over the last `idleAfter`, when the autoscaler read Prometheus in this reconcile;
    /// `Err` when it could not.
    pub idle: Option<Result<f64, String>>,
    /// Since when the current revision has served with every replica ready (`None`: it is not, e.g. rolling
    /// out, or a canary is in progress).
    pub serving_since: Option<Timestamp>,
    /// The activator's ready addresses (empty: none, or no activator installed).
    pub activator: &'a [String],
    /// Ready endpoints the endpoints controller lists for the Service (its pods).
    pub ready_pod_endpoints: usize,
}

/// What the model's replica count and Service become.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The replica count to set, overriding the autoscaler's; `None` leaves it to the autoscaler.
    pub replicas: Option<i32>,
    /// What the Service selects: with `Pods` it has its selector; with `Activator` none.
    pub endpoints: Endpoints,
    /// Whether the activator's EndpointSlice exists (written with the activator's addresses) after this.
    pub activator_slice: bool,
    /// Whether the endpoints controller's slices are deleted: a Service without a selector keeps the last
    /// ones that controller wrote, naming pods that are gone.
    pub delete_pod_slices: bool,
    /// The new `status.scaleToZero`.
    pub status: ScaleToZeroStatus,
    /// At zero on purpose: Ready and Available with reason `ScaledToZero`.
    pub at_zero: bool,
    /// A Normal Event: its reason and note.
    pub event: Option<(&'static str, String)>,
    /// How soon to look again.
    pub requeue: Option<Duration>,
}

/// Decides for one reconcile.
pub fn decide(input: &Input<'_>) -> Outcome {
    let recorded = input.status.cloned().unwrap_or_default();
    let idle_since = recorded.idle_since.as_ref().map(|time| time.0);
    let woke_at = recorded.woke_at.as_ref().map(|time| time.0);
    // At zero: it went idle and nothing woke it since, and the Deployment still says 0.
    let asleep = input.replicas == 0
        && idle_since.is_some_and(|idle| woke_at.is_none_or(|woke| woke < idle));
    let have_activator = !input.activator.is_empty();
    if asleep {
        let demand = input
            .wake
            .filter(|wake| idle_since.is_some_and(|idle| *wake > idle));
        if demand.is_some() || !have_activator {
            // Woken by a held request, or nothing would hold one: either way a pod must come.
            let why = if demand.is_some() {
                "a request is waiting in the activator".to_owned()
            } else {
                "the activator has no ready replica to hold requests".to_owned()
            };
            return Outcome {
                replicas: Some(1),
                endpoints: if have_activator {
                    Endpoints::Activator
                } else {
                    Endpoints::Pods
                },
                activator_slice: have_activator,
                delete_pod_slices: false,
                status: ScaleToZeroStatus {
                    endpoints: Some(if have_activator {
                        Endpoints::Activator
                    } else {
                        Endpoints::Pods
                    }),
                    idle_since: recorded.idle_since.clone(),
                    woke_at: Some(Time(input.now)),
                },
                at_zero: false,
                event: Some((reason::WAKING, format!("waking: {why}; replicas 0 -> 1"))),
                requeue: Some(WAKING_REQUEUE),
            };
        }
        return Outcome {
            replicas: Some(0),
            endpoints: Endpoints::Activator,
            activator_slice: true,
            delete_pod_slices: true,
            status: ScaleToZeroStatus {
                endpoints: Some(Endpoints::Activator),
                ..recorded
            },
            at_zero: true,
            event: None,
            requeue: None,
        };
    }

    // Serving, or waking. The Service goes back to the pods once one is ready; the activator's slice stays
    // until the endpoints controller has listed a ready pod, so the Service is never empty.
    let was_on_activator = recorded.endpoints == Some(Endpoints::Activator);
    let pods_ready = input.ready_replicas > 0;
    let endpoints = if was_on_activator && !pods_ready && have_activator {
        Endpoints::Activator
    } else {
        Endpoints::Pods
    };
    let activator_slice = was_on_activator && have_activator && input.ready_pod_endpoints == 0;
    if endpoints == Endpoints::Pods
        && !activator_slice
        && let Some(why) = idle(input)
    {
        return Outcome {
            replicas: Some(0),
            endpoints: Endpoints::Activator,
            activator_slice: true,
            delete_pod_slices: true,
            status: ScaleToZeroStatus {
                endpoints: Some(Endpoints::Activator),
                idle_since: Some(Time(input.now)),
                woke_at: recorded.woke_at.clone(),
            },
            at_zero: true,
            event: Some((
                reason::SCALED_TO_ZERO,
                format!(
                    "{why}: replicas {} -> 0; the activator holds requests until the model wakes",
                    input.replicas
                ),
            )),
            requeue: None,
        };
    }
    let settling = endpoints == Endpoints::Activator || activator_slice;
    Outcome {
        // Waking: at least the one pod the held requests wait for, whatever the autoscaler last recorded.
        replicas: (input.replicas == 0 && woke_at.is_some()).then_some(1),
        endpoints,
        activator_slice,
        delete_pod_slices: false,
        status: ScaleToZeroStatus {
            endpoints: Some(if activator_slice {
                Endpoints::Activator
            } else {
                endpoints
            }),
            ..recorded
        },
        at_zero: false,
        event: None,
        requeue: settling.then_some(WAKING_REQUEUE),
    }
}

/// Why the model may go to zero now, if it may: fresh evidence of no request for `idleAfter`, a revision that
/// has served that long, no demand from the activator in that time, and an activator to hold the next request.
fn idle(input: &Input<'_>) -> Option<String> {
    let window = input.spec.idle_after.as_std();
    let quiet_since = input.now.checked_sub(window).ok()?;
    let requests = input.idle.as_ref()?.as_ref().ok()?;
    let served_long_enough = input
        .serving_since
        .is_some_and(|since| since <= quiet_since);
    let no_demand = input.wake.is_none_or(|wake| wake <= quiet_since);
    (*requests < 0.5 && served_long_enough && no_demand && !input.activator.is_empty()).then(|| {
        format!(
            "no request for {} (Prometheus: {requests} over the window)",
            input.spec.idle_after.as_str()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-05T12:00:00Z";

    fn at(offset_secs: i64) -> Timestamp {
        let now: Timestamp = NOW.parse().expect("time");
        now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(offset_secs))
            .expect("time")
    }

    fn spec() -> ScaleToZero {
        serde_yaml::from_str("{idleAfter: 60s}").expect("spec")
    }

    fn activator() -> Vec<String> {
        vec!["10.0.0.7".to_owned(), "10.0.0.8".to_owned()]
    }

    /// A model that has served one replica for ten minutes, idle per Prometheus.
    fn serving<'a>(spec: &'a ScaleToZero, activator: &'a [String]) -> Input<'a> {
        Input {
            spec,
            now: at(0),
            replicas: 1,
            ready_replicas: 1,
            status: None,
            wake: None,
            idle: Some(Ok(0.0)),
            serving_since: Some(at(-600)),
            activator,
            ready_pod_endpoints: 1,
        }
    }

    #[test]
    fn an_idle_model_goes_to_zero_behind_the_activator_first() {
        let spec = spec();
        let addresses = activator();
        let out = decide(&serving(&spec, &addresses));
        assert_eq!(out.replicas, Some(0));
        assert_eq!(out.endpoints, Endpoints::Activator);
        assert!(out.activator_slice && out.delete_pod_slices && out.at_zero);
        assert_eq!(out.status.idle_since, Some(Time(at(0))));
        let (why, note) = out.event.expect("event");
        assert_eq!(why, reason::SCALED_TO_ZERO);
        assert!(note.contains("no request for 60s"), "{note}");
    }

    #[test]
    fn no_fresh_evidence_of_idleness_keeps_the_model_up() {
        let spec = spec();
        let addresses = activator();
        let none: [String; 0] = [];
        type Change = fn(&mut Input<'_>);
        let cases: [(&str, Change); 7] = [
            ("requests came in", |input| input.idle = Some(Ok(3.0))),
            ("Prometheus dark", |input| {
                input.idle = Some(Err("unreachable".into()))
            }),
            ("no read this reconcile", |input| input.idle = None),
            ("served less than idleAfter", |input| {
                input.serving_since = Some(at(-30))
            }),
            ("not fully serving (rolling out, canary)", |input| {
                input.serving_since = None
            }),
            ("the activator asked recently", |input| {
                input.wake = Some(at(-10))
            }),
            ("no activator to hold requests", |_| {}),
        ];
        for (case, change) in cases {
            let mut input = serving(&spec, &addresses);
            if case.starts_with("no activator") {
                input.activator = &none;
            }
            change(&mut input);
            let out = decide(&input);
            assert_eq!(out.replicas, None, "{case}");
            assert_eq!(out.endpoints, Endpoints::Pods, "{case}");
            assert!(!out.at_zero && out.event.is_none(), "{case}");
        }
    }

    fn asleep<'a>(
        spec: &'a ScaleToZero,
        activator: &'a [String],
        status: &'a ScaleToZeroStatus,
    ) -> Input<'a> {
        Input {
            replicas: 0,
            ready_replicas: 0,
            status: Some(status),
            idle: None,
            serving_since: None,
            ready_pod_endpoints: 0,
            ..serving(spec, activator)
        }
    }

    fn slept_at(offset: i64) -> ScaleToZeroStatus {
        ScaleToZeroStatus {
            endpoints: Some(Endpoints::Activator),
            idle_since: Some(Time(at(offset))),
            woke_at: None,
        }
    }

    #[test]
    fn at_zero_it_stays_until_the_activator_signals_demand() {
        let spec = spec();
        let addresses = activator();
        let status = slept_at(-300);
        let mut input = asleep(&spec, &addresses, &status);
        // A signal older than the sleep is the one that woke it last time.
        input.wake = Some(at(-400));
        let out = decide(&input);
        assert_eq!(out.replicas, Some(0));
        assert!(out.at_zero && out.activator_slice && out.event.is_none());
        assert_eq!(out.endpoints, Endpoints::Activator);

        input.wake = Some(at(-1));
        let out = decide(&input);
        assert_eq!(out.replicas, Some(1));
        assert!(!out.at_zero);
        // Still the activator until a pod is ready: it holds the requests meanwhile.
        assert_eq!(out.endpoints, Endpoints::Activator);
        assert!(out.activator_slice && !out.delete_pod_slices);
        assert_eq!(out.status.woke_at, Some(Time(at(0))));
        assert_eq!(out.event.expect("event").0, reason::WAKING);
    }

    #[test]
    fn at_zero_without_an_activator_the_model_comes_back_to_its_pods() {
        let spec = spec();
        let none: [String; 0] = [];
        let status = slept_at(-300);
        let out = decide(&asleep(&spec, &none, &status));
        assert_eq!(out.replicas, Some(1));
        assert_eq!(out.endpoints, Endpoints::Pods);
        assert!(!out.activator_slice);
    }

    #[test]
    fn waking_returns_to_the_pods_in_two_steps() {
        let spec = spec();
        let addresses = activator();
        let status = ScaleToZeroStatus {
            woke_at: Some(Time(at(-2))),
            ..slept_at(-300)
        };
        let mut input = asleep(&spec, &addresses, &status);
        input.replicas = 1;
        // No pod ready: the activator keeps the Service.
        let out = decide(&input);
        assert_eq!(
            (out.endpoints, out.activator_slice),
            (Endpoints::Activator, true)
        );
        assert_eq!(out.replicas, None);
        assert!(out.requeue.is_some());
        // A pod ready: the Service selects pods, the activator's slice stays until the controller lists it.
        input.ready_replicas = 1;
        let out = decide(&input);
        assert_eq!(
            (out.endpoints, out.activator_slice),
            (Endpoints::Pods, true)
        );
        // Listed: the activator's slice goes.
        input.ready_pod_endpoints = 1;
        let out = decide(&input);
        assert_eq!(
            (out.endpoints, out.activator_slice),
            (Endpoints::Pods, false)
        );
        assert_eq!(out.status.endpoints, Some(Endpoints::Pods));
        assert!(out.requeue.is_none() && !out.at_zero);
    }

    #[test]
    fn a_waking_deployment_still_at_zero_is_scaled_to_one() {
        let spec = spec();
        let addresses = activator();
        let status = ScaleToZeroStatus {
            woke_at: Some(Time(at(-1))),
            ..slept_at(-300)
        };
        let out = decide(&asleep(&spec, &addresses, &status));
        assert_eq!(out.replicas, Some(1));
    }
}
