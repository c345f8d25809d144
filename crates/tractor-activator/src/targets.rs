//! The in-memory view the request path reads: tractor Services to route by, each model's ready pods (one
//! `watch` per model, so held requests wake on a change instead of polling) and its hold settings.
//!
//! The cluster watches (`cluster.rs`) replace its parts whole after each change; tests fill it by hand.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::route::{ModelKey, RouteError, ServiceIndex, route};

/// A model's ready pods' IPs, sorted.
pub type Pods = Arc<[IpAddr]>;

/// What a ModelDeployment says about holding its requests; `None` where it says nothing (the flags' defaults
/// apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldSettings {
    /// `spec.autoscaling.scaleToZero.maxHeldRequests`.
    pub max_held: Option<usize>,
    /// `spec.autoscaling.scaleToZero.holdTimeout`.
    pub hold_timeout: Option<Duration>,
}

/// The watches whose first sync makes the activator ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// ModelDeployments: hold settings.
    ModelDeployments,
    /// Services: routing.
    Services,
    /// Serving pods: where to forward.
    Pods,
}

/// The activator's view of the cluster; shared by every request.
#[derive(Debug, Default)]
pub struct Targets {
    services: RwLock<ServiceIndex>,
    pods: Mutex<HashMap<ModelKey, watch::Sender<Pods>>>,
    settings: RwLock<HashMap<ModelKey, HoldSettings>>,
    synced: [AtomicBool; 3],
}

impl Targets {
    /// An empty view, not synced.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model `host` names (see [`route`]).
    pub fn route(&self, host: Option<&str>) -> Result<ModelKey, RouteError> {
        route(
            host,
            &self.services.read().unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Replaces the Services.
    pub fn set_services(&self, services: ServiceIndex) {
        *self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner) = services;
    }

    /// Replaces every model's hold settings.
    pub fn set_hold_settings(&self, settings: HashMap<ModelKey, HoldSettings>) {
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// A model's hold settings (all `None` for a model without a ModelDeployment in view).
    pub fn hold_settings(&self, model: &ModelKey) -> HoldSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .copied()
            .unwrap_or_default()
    }

    /// Replaces every model's ready pods; a model left out has none. Only models whose set changed wake their
    /// waiters.
    pub fn set_ready_pods(&self, mut ready: HashMap<ModelKey, Vec<IpAddr>>) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        for (model, sender) in pods.iter() {
            let mut ips = ready.remove(model).unwrap_or_default();
            ips.sort_unstable();
            ips.dedup();
            sender.send_if_modified(|current| {
                let changed = current[..] != ips[..];
                if changed {
                    *current = ips.into();
                }
                changed
            });
        }
        for (model, mut ips) in ready {
            ips.sort_unstable();
            ips.dedup();
            pods.insert(model, watch::Sender::new(ips.into()));
        }
        // A model with no pods and nobody waiting needs no channel; dropping it bounds the map by live models.
        pods.retain(|_, sender| !sender.borrow().is_empty() || sender.receiver_count() > 0);
    }

    /// A model's ready pods, now and as they change.
    pub fn ready_pods(&self, model: &ModelKey) -> watch::Receiver<Pods> {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(model.clone())
            .or_insert_with(|| watch::Sender::new(Pods::from([])))
            .subscribe()
    }

    /// Records that `watch` has listed everything once.
    pub fn mark_synced(&self, watch: Watch) {
        self.synced[watch as usize].store(true, Ordering::Release);
    }

    /// Whether all three watches have listed everything once.
    pub fn synced(&self) -> bool {
        self.synced
            .iter()
            .all(|synced| synced.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[tokio::test]
    async fn a_waiter_sees_pods_arrive_and_unchanged_sets_wake_nobody() {
        let targets = Targets::new();
        let model = ModelKey::new("ns", "m");
        let mut pods = targets.ready_pods(&model);
        assert!(pods.borrow_and_update().is_empty());
        targets.set_ready_pods(HashMap::from([(
            model.clone(),
            vec![ip("10.0.0.2"), ip("10.0.0.1"), ip("10.0.0.2")],
        )]));
        assert!(pods.has_changed().expect("open"));
        assert_eq!(
            &pods.borrow_and_update()[..],
            [ip("10.0.0.1"), ip("10.0.0.2")]
        );
        targets.set_ready_pods(HashMap::from([(
            model.clone(),
            vec![ip("10.0.0.2"), ip("10.0.0.1")],
        )]));
        assert!(!pods.has_changed().expect("open"), "same set, no wake-up");
        targets.set_ready_pods(HashMap::new());
        assert!(pods.has_changed().expect("open"));
        assert!(pods.borrow_and_update().is_empty());
    }

    #[test]
    fn a_model_seen_before_its_first_waiter_starts_with_its_pods() {
        let targets = Targets::new();
        let model = ModelKey::new("ns", "m");
        targets.set_ready_pods(HashMap::from([(model.clone(), vec![ip("10.0.0.1")])]));
        assert_eq!(&targets.ready_pods(&model).borrow()[..], [ip("10.0.0.1")]);
    }

    #[test]
    fn channels_without_pods_or_waiters_are_dropped() {
        let targets = Targets::new();
        let kept = ModelKey::new("ns", "waited-on");
        let _waiter = targets.ready_pods(&kept);
        drop(targets.ready_pods(&ModelKey::new("ns", "forgotten")));
        targets.set_ready_pods(HashMap::new());
        let models: Vec<ModelKey> = targets.pods.lock().expect("lock").keys().cloned().collect();
        assert_eq!(models, vec![kept]);
    }

    #[test]
    fn ready_only_once_every_watch_synced() {
        let targets = Targets::new();
        assert!(!targets.synced());
        targets.mark_synced(Watch::Services);
        targets.mark_synced(Watch::Pods);
        assert!(!targets.synced());
        targets.mark_synced(Watch::ModelDeployments);
        assert!(targets.synced());
    }

    #[test]
    fn settings_default_to_none_for_unknown_models() {
        let targets = Targets::new();
        let model = ModelKey::new("ns", "m");
        let settings = HoldSettings {
            max_held: Some(3),
            hold_timeout: Some(Duration::from_secs(5)),
        };
        targets.set_hold_settings(HashMap::from([(model.clone(), settings)]));
        assert_eq!(targets.hold_settings(&model), settings);
        assert_eq!(
            targets.hold_settings(&ModelKey::new("ns", "other")),
            HoldSettings::default()
        );
    }
}
