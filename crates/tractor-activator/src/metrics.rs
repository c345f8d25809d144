//! The activator's metrics, registered with their help text; names and label keys are spelled once, in
//! [`tractor_api::metrics`].
//!
//! `namespace` and `model` name ModelDeployments, as the server's `model` label does; they are empty for
//! requests that name no model, so a scan of random hosts adds no series.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tractor_api::metrics::{
    ACTIVATOR_HELD, ACTIVATOR_HOLD_SECONDS, ACTIVATOR_REQUESTS, ACTIVATOR_WAKE_SIGNALS, MODEL,
    NAMESPACE, OUTCOME,
};

use crate::route::ModelKey;

// From a forward to a warm pod (under a millisecond) to a cold start at the default hold timeout (30 s).
const HOLD_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];

/// The activator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// Requests held now, per model.
    pub(crate) held: IntGaugeVec,
    wakes: IntCounterVec,
    hold_seconds: Histogram,
}

impl Metrics {
    /// Registers every metric in a registry of its own.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                ACTIVATOR_REQUESTS,
                "Requests the activator answered, by outcome.",
            ),
            &[NAMESPACE, MODEL, OUTCOME],
        )?;
        let held = IntGaugeVec::new(
            Opts::new(
                ACTIVATOR_HELD,
                "Requests held now, waiting for the model's first ready pod.",
            ),
            &[NAMESPACE, MODEL],
        )?;
        let wakes = IntCounterVec::new(
            Opts::new(
                ACTIVATOR_WAKE_SIGNALS,
                "Wake annotations written to ModelDeployments.",
            ),
            &[NAMESPACE, MODEL],
        )?;
        let hold_seconds = Histogram::with_opts(
            HistogramOpts::new(
                ACTIVATOR_HOLD_SECONDS,
                "Seconds from a request's arrival to its forward to a ready pod.",
            )
            .buckets(HOLD_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(held.clone()))?;
        registry.register(Box::new(wakes.clone()))?;
        registry.register(Box::new(hold_seconds.clone()))?;
        Ok(Self {
            registry,
            requests,
            held,
            wakes,
            hold_seconds,
        })
    }

    /// Counts one answered request; `model` is `None` when the host named none.
    pub fn request(&self, model: Option<&ModelKey>, outcome: &str) {
        let (namespace, name) = model.map_or(("", ""), |model| (&*model.namespace, &*model.name));
        self.requests
            .with_label_values(&[namespace, name, outcome])
            .inc();
    }

    /// How many requests for `model` ended with `outcome`.
    pub fn requests(&self, model: Option<&ModelKey>, outcome: &str) -> u64 {
        let (namespace, name) = model.map_or(("", ""), |model| (&*model.namespace, &*model.name));
        self.requests
            .with_label_values(&[namespace, name, outcome])
            .get()
    }

    /// Requests held now for `model`.
    pub fn held(&self, model: &ModelKey) -> i64 {
        self.held
            .with_label_values(&[&model.namespace, &model.name])
            .get()
    }

    /// Counts one wake signal for `model`.
    pub fn wake(&self, model: &ModelKey) {
        self.wakes
            .with_label_values(&[&model.namespace, &model.name])
            .inc();
    }

    /// Wake signals written for `model`.
    pub fn wakes(&self, model: &ModelKey) -> u64 {
        self.wakes
            .with_label_values(&[&model.namespace, &model.name])
            .get()
    }

    /// Records the time from arrival to forward.
    pub fn hold_seconds(&self, seconds: f64) {
        self.hold_seconds.observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_renders_under_its_contract_name() {
        let metrics = Metrics::new().expect("metrics");
        let model = ModelKey::new("ns", "m");
        metrics.request(Some(&model), tractor_api::metrics::OUTCOME_FORWARDED);
        metrics.request(None, tractor_api::metrics::OUTCOME_UNKNOWN_MODEL);
        metrics.held.with_label_values(&["ns", "m"]).set(2);
        metrics.wake(&model);
        metrics.hold_seconds(0.5);
        let text = metrics.render().expect("render");
        for line in [
            r#"tractor_activator_requests_total{model="m",namespace="ns",outcome="forwarded"} 1"#,
            r#"tractor_activator_requests_total{model="",namespace="",outcome="unknown_model"} 1"#,
            r#"tractor_activator_held_requests{model="m",namespace="ns"} 2"#,
            r#"tractor_activator_wake_signals_total{model="m",namespace="ns"} 1"#,
            "tractor_activator_hold_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
