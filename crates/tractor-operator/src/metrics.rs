//! Operator metrics (`tractor_operator_*`): the one place their names and labels are defined. Labels are
//! bounded: results and error categories, never object names.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Reconcile counters and timings.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    /// Status writes, to prove a steady state writes nothing.
    pub status_writes: prometheus::IntCounter,
    /// Child applies that were needed (content changed), by kind.
    pub child_applies: IntCounterVec,
    /// Autoscaler evaluations, by result (scaled, unchanged, held).
    pub autoscaler_evaluations: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "tractor_operator_reconciliations_total",
                "Reconciles, by result (ok, error).",
            ),
            &["result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "tractor_operator_reconcile_errors_total",
                "Failed reconciles, by error category.",
            ),
            &["category"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tractor_operator_reconcile_duration_seconds",
                "Reconcile wall time, by result.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
            ]),
            &["result"],
        )?;
        let in_flight = IntGauge::new(
            "tractor_operator_reconciles_in_flight",
            "Reconciles running now.",
        )?;
        let status_writes = prometheus::IntCounter::new(
            "tractor_operator_status_writes_total",
            "Status patches sent.",
        )?;
        let child_applies = IntCounterVec::new(
            Opts::new(
                "tractor_operator_child_applies_total",
                "Server-side applies of children, by kind.",
            ),
            &["kind"],
        )?;
        let autoscaler_evaluations = IntCounterVec::new(
            Opts::new(
                "tractor_operator_autoscaler_evaluations_total",
                "Autoscaler evaluations, by result: scaled, unchanged, held (metrics unavailable).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(autoscaler_evaluations.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(child_applies.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            failures,
            duration,
            in_flight,
            status_writes,
            child_applies,
            autoscaler_evaluations,
        })
    }

    /// Marks a reconcile started; the guard records it when dropped.
    pub fn start(&self) -> ReconcileTimer<'_> {
        self.in_flight.inc();
        ReconcileTimer {
            metrics: self,
            start: std::time::Instant::now(),
            result: "error",
        }
    }

    /// Counts a failed reconcile by category.
    pub fn failed(&self, category: &str) {
        self.failures.with_label_values(&[category]).inc();
    }
}

/// Records one reconcile's outcome and duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: std::time::Instant,
    result: &'static str,
}

impl ReconcileTimer<'_> {
    /// Marks the reconcile successful.
    pub fn ok(&mut self) {
        self.result = "ok";
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics
            .reconciles
            .with_label_values(&[self.result])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[self.result])
            .observe(self.start.elapsed().as_secs_f64());
    }
}
