//! Holding: admission into a model's bounded hold queue, waiting for its first ready pod, and the debounced
//! wake signal. No Kubernetes here: readiness arrives on a `watch`, the signal goes to a [`WakeSignal`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::route::ModelKey;
use crate::targets::Pods;

/// Where demand for a model goes: the ModelDeployment's wake annotation in a cluster, a recorder in tests.
/// Called at most once a second per model; must not block (spawn the I/O).
pub trait WakeSignal: Send + Sync + 'static {
    /// Tells the operator that `model` has a request waiting.
    fn wake(&self, model: &ModelKey);
}

/// Per-model counts of held requests, bounded by each model's `maxHeldRequests`.
#[derive(Debug)]
pub struct Holds {
    counts: Mutex<HashMap<ModelKey, usize>>,
    metrics: Metrics,
}

/// A held request's place in its model's queue; dropping it (answered, timed out, or the client gone) frees it.
#[derive(Debug)]
pub struct Slot {
    holds: Arc<Holds>,
    model: ModelKey,
}

impl Holds {
    /// No request held.
    pub fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::default(),
            metrics,
        })
    }

    /// A place in `model`'s queue, or `None` when `max` requests are held already.
    pub fn admit(self: &Arc<Self>, model: &ModelKey, max: usize) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(model.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        self.set_gauge(model, *count);
        Some(Slot {
            holds: Arc::clone(self),
            model: model.clone(),
        })
    }

    /// Requests held now for `model`.
    pub fn held(&self, model: &ModelKey) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .copied()
            .unwrap_or(0)
    }

    fn set_gauge(&self, model: &ModelKey, count: usize) {
        self.metrics
            .held
            .with_label_values(&[&model.namespace, &model.name])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .holds
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let left = match counts.get_mut(&self.model) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count
            }
            None => 0,
        };
        if left == 0 {
            counts.remove(&self.model);
        }
        self.holds.set_gauge(&self.model, left);
    }
}

/// Why a held request stopped waiting without a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unready {
    /// The deadline passed.
    Deadline,
    /// The view of the cluster went away (shutting down).
    Closed,
}

/// Waits until `ready` lists a pod or `deadline` passes; returns at once when a pod is listed already.
pub async fn wait_ready(
    ready: &mut watch::Receiver<Pods>,
    deadline: Instant,
) -> Result<(), Unready> {
    match tokio::time::timeout_at(deadline, ready.wait_for(|pods| !pods.is_empty())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Unready::Closed),
        Err(_) => Err(Unready::Deadline),
    }
}

/// At most one wake signal per model per this long, per activator replica: a burst of a hundred held
/// requests patches the ModelDeployment once, not a hundred times.
pub const WAKE_INTERVAL: Duration = Duration::from_secs(1);

/// What to do with a demand for a model, given its last signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeDecision {
    /// Signal now: the first demand, or the last signal is an interval old.
    Now,
    /// Signal at this time, when the interval since the last one is up: demand is never lost, only merged.
    At(Instant),
    /// A signal is scheduled already; this demand rides on it.
    Merged,
}

/// The debounce state of one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastWake {
    /// When the last signal went.
    pub sent: Instant,
    /// Whether a later one is scheduled.
    pub scheduled: bool,
}

/// Debounce: the first demand signals at once; demand within [`WAKE_INTERVAL`] of a signal is merged into one
/// signal at the end of the interval.
pub fn decide_wake(last: Option<LastWake>, now: Instant) -> WakeDecision {
    match last {
        None => WakeDecision::Now,
        Some(last) if last.scheduled => WakeDecision::Merged,
        Some(last) if now.duration_since(last.sent) >= WAKE_INTERVAL => WakeDecision::Now,
        Some(last) => WakeDecision::At(last.sent + WAKE_INTERVAL),
    }
}

/// The debounced wake signal of every model.
pub struct Wakes {
    signal: Arc<dyn WakeSignal>,
    last: Mutex<HashMap<ModelKey, LastWake>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Wakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakes").finish_non_exhaustive()
    }
}

impl Wakes {
    /// Signals through `signal`.
    pub fn new(signal: Arc<dyn WakeSignal>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            signal,
            last: Mutex::default(),
            metrics,
        })
    }

    /// Records demand for `model`: signals now, or schedules one signal at the end of the interval.
    pub fn demand(self: &Arc<Self>, model: &ModelKey) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        // Entries older than the interval decide nothing (they mean `Now`); dropping them bounds the map.
        last.retain(|_, wake| wake.scheduled || now.duration_since(wake.sent) < WAKE_INTERVAL);
        match decide_wake(last.get(model).copied(), now) {
            WakeDecision::Now => {
                last.insert(
                    model.clone(),
                    LastWake {
                        sent: now,
                        scheduled: false,
                    },
                );
                drop(last);
                self.send(model);
            }
            WakeDecision::At(when) => {
                if let Some(wake) = last.get_mut(model) {
                    wake.scheduled = true;
                }
                drop(last);
                let wakes = Arc::clone(self);
                let model = model.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(when).await;
                    wakes
                        .last
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            model.clone(),
                            LastWake {
                                sent: Instant::now(),
                                scheduled: false,
                            },
                        );
                    wakes.send(&model);
                });
            }
            WakeDecision::Merged => {}
        }
    }

    fn send(&self, model: &ModelKey) {
        tracing::info!(model = %model, "requests held: waking the model");
        self.metrics.wake(model);
        self.signal.wake(model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelKey {
        ModelKey::new("ns", "m")
    }

    #[test]
    fn the_queue_is_bounded_per_model_and_a_dropped_slot_frees_its_place() {
        let metrics = Metrics::new().expect("metrics");
        let holds = Holds::new(metrics.clone());
        let first = holds.admit(&model(), 2).expect("first");
        let second = holds.admit(&model(), 2).expect("second");
        assert!(holds.admit(&model(), 2).is_none(), "a third over max 2");
        assert!(
            holds.admit(&ModelKey::new("ns", "other"), 2).is_some(),
            "queues are per model"
        );
        assert_eq!(metrics.held(&model()), 2);
        drop(first);
        assert_eq!(holds.held(&model()), 1);
        assert_eq!(metrics.held(&model()), 1);
        let third = holds.admit(&model(), 2).expect("room again");
        drop((second, third));
        assert_eq!(holds.held(&model()), 0);
        assert_eq!(metrics.held(&model()), 0);
    }

    #[test]
    fn a_zero_sized_queue_admits_nothing() {
        let holds = Holds::new(Metrics::new().expect("metrics"));
        assert!(holds.admit(&model(), 0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_returns_when_a_pod_turns_ready_and_not_before() {
        let (sender, mut ready) = watch::channel(Pods::from([]));
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiting = tokio::spawn(async move { wait_ready(&mut ready, deadline).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        sender.send_replace(Pods::from(["10.0.0.1".parse().expect("ip")]));
        assert_eq!(waiting.await.expect("join"), Ok(()));
        assert!(Instant::now() < deadline, "woken by the pod, not the clock");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_deadline() {
        let (_sender, mut ready) = watch::channel(Pods::from([]));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        assert_eq!(
            wait_ready(&mut ready, deadline).await,
            Err(Unready::Deadline)
        );
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_ready_already_means_no_wait() {
        let (_sender, mut ready) = watch::channel(Pods::from(["10.0.0.1".parse().expect("ip")]));
        let start = Instant::now();
        assert_eq!(
            wait_ready(&mut ready, start + Duration::from_secs(3)).await,
            Ok(())
        );
        assert_eq!(Instant::now(), start);
    }

    #[test]
    fn wakes_are_debounced_but_never_delayed_or_lost() {
        let start = Instant::now();
        let sent = |at: u64, scheduled| {
            Some(LastWake {
                sent: start + Duration::from_millis(at),
                scheduled,
            })
        };
        let at = |ms: u64| start + Duration::from_millis(ms);
        let cases = [
            (None, at(0), WakeDecision::Now),
            (sent(0, false), at(300), WakeDecision::At(at(1000))),
            (sent(0, true), at(300), WakeDecision::Merged),
            (sent(0, false), at(1000), WakeDecision::Now),
            (sent(0, false), at(5000), WakeDecision::Now),
        ];
        for (last, now, want) in cases {
            assert_eq!(decide_wake(last, now), want, "{last:?} at {now:?}");
        }
    }

    struct Recorder(tokio::sync::mpsc::UnboundedSender<Instant>);

    impl WakeSignal for Recorder {
        fn wake(&self, _: &ModelKey) {
            let _ = self.0.send(Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_signals_once_at_once_and_once_more_a_second_later() {
        let (sender, mut signals) = tokio::sync::mpsc::unbounded_channel();
        let metrics = Metrics::new().expect("metrics");
        let wakes = Wakes::new(Arc::new(Recorder(sender)), metrics.clone());
        let start = Instant::now();
        for _ in 0..50 {
            wakes.demand(&model());
        }
        assert_eq!(signals.try_recv(), Ok(start), "the first at once");
        assert!(signals.try_recv().is_err(), "the rest merged");
        // Paused time: the timeout's clock only advances when every task waits, so this waits on the signal.
        let merged = tokio::time::timeout(Duration::from_secs(5), signals.recv()).await;
        assert_eq!(
            merged,
            Ok(Some(start + WAKE_INTERVAL)),
            "one interval later"
        );
        assert_eq!(metrics.wakes(&model()), 2);
        wakes.demand(&model());
        assert!(
            signals.try_recv().is_err(),
            "within the interval of the merged one"
        );
    }
}
