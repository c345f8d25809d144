//! What every reconcile shares: the API client, the builders' settings, the event recorder, metrics, and the
//! little the operator keeps in memory between reconciles (autoscaler history, analysis pacing, its own last
//! writes, failure counts).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::autoscaler::Autoscaler;
use crate::backoff::Failures;
use crate::children::BuildConfig;
use crate::events::Recorder;
use crate::latest::Written;
use crate::metrics::Metrics;

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// Builder settings (image).
    pub build: BuildConfig,
    /// Event recorder (one per operator; repeats of a message fold into one Event).
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// The autoscaler's Prometheus client and memory.
    pub autoscaler: Autoscaler,
    /// Canary analysis pacing.
    pub rollouts: Rollouts,
    /// The ModelDeployments this operator last wrote, newer than the store's until the watch delivers them.
    pub written: Written,
    /// Consecutive failed reconciles per object, for the error policy's backoff.
    pub failures: Failures,
    /// The activator's Service (`namespace`, `name`), when one is installed: models that scale to zero lead
    /// their Service to its pods.
    pub activator: Option<(String, String)>,
}

/// When each canary was last analysed; lost on restart, which only brings the next analysis forward.
#[derive(Default)]
pub struct Rollouts {
    last_analysis: Mutex<HashMap<String, f64>>,
}

/// Seconds after which a canary's analysis clock is dropped.
const FORGET_AFTER: f64 = 3600.0;

impl Rollouts {
    /// True (and remembered) when `every` has passed since the last analysis of `key`.
    pub fn due(&self, key: &str, now: f64, every: Duration) -> bool {
        let Ok(mut last) = self.last_analysis.lock() else {
            return false;
        };
        match last.get(key) {
            Some(at) if now - at + 0.05 < every.as_secs_f64() => false,
            _ => {
                // Analyses come every 15 s at most: a clock untouched for longer than FORGET_AFTER belongs
                // to a canary that has finished or a ModelDeployment that is gone.
                last.retain(|_, at| now - *at < FORGET_AFTER);
                last.insert(key.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyses_are_paced() {
        let r = Rollouts::default();
        let every = Duration::from_secs(5);
        assert!(r.due("a", 100.0, every));
        assert!(!r.due("a", 103.0, every));
        assert!(r.due("b", 103.0, every), "each canary has its own clock");
        assert!(r.due("a", 105.0, every));
        assert!(r.due("c", 105.0 + FORGET_AFTER, every));
        let clocks = r.last_analysis.lock().map(|l| l.len()).unwrap_or_default();
        assert_eq!(clocks, 1, "finished canaries' clocks are forgotten");
    }
}
