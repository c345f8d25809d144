//! Defaults of the spec, shared by serde and the CRD schema so stored objects and typed reads agree.

use crate::duration::Duration;

pub(crate) fn default_true() -> bool {
    true
}

/// Half an hour: an optimize Job on a large model with `precision: auto` times several candidates.
pub(crate) fn default_optimize_deadline() -> i64 {
    1800
}

pub(crate) fn default_backoff_limit() -> i32 {
    1
}

pub(crate) fn default_max_batch_size() -> i32 {
    8
}

/// 500 µs: small next to a network round trip, long enough to gather a batch under load.
pub(crate) fn default_max_delay_micros() -> i32 {
    500
}

pub(crate) fn default_token_key() -> String {
    "token".to_owned()
}

pub(crate) fn default_min_replicas() -> i32 {
    1
}

/// The HPA's default: CPU at 80 % utilization.
pub(crate) fn default_metrics() -> Vec<crate::spec::MetricSpec> {
    vec![crate::spec::MetricSpec {
        type_: crate::spec::MetricType::Cpu,
        cpu: Some(crate::spec::CpuMetric {
            target_utilization_percent: default_cpu_utilization(),
        }),
        latency: None,
        throughput: None,
        accuracy: None,
        custom: None,
    }]
}

pub(crate) fn default_cpu_utilization() -> i32 {
    80
}

/// The HPA's sync period.
pub(crate) fn default_interval() -> Duration {
    Duration::from_static("15s")
}

/// Requests an activator replica holds per model while it wakes.
pub(crate) fn default_max_held_requests() -> i32 {
    100
}

/// How long a held request waits for the model to wake: a small model's pod is ready in about two seconds,
/// a large one's in well under half a minute.
pub(crate) fn default_hold_timeout() -> Duration {
    Duration::from_static("30s")
}

/// The HPA's `--horizontal-pod-autoscaler-tolerance`.
pub(crate) fn default_tolerance() -> f64 {
    0.1
}

pub(crate) fn default_quantile() -> f64 {
    0.95
}

pub(crate) fn default_accuracy_window() -> Duration {
    Duration::from_static("10m")
}

pub(crate) fn default_pause() -> Duration {
    Duration::from_static("1m")
}

/// One failed check is tolerated: a single noisy scrape should not roll back a good canary.
pub(crate) fn default_failure_limit() -> i32 {
    1
}

/// PSI above which a feature counts as drifted: between the usual "moderate" (0.1) and "major" (0.25) shifts.
pub(crate) fn default_drift_threshold() -> f64 {
    0.2
}

/// How often drift is judged.
pub(crate) fn default_drift_interval() -> Duration {
    Duration::from_static("30s")
}

/// The servers' drift window: long enough for a few hundred rows at modest traffic.
pub(crate) fn default_drift_window() -> Duration {
    Duration::from_static("5m")
}

/// Rows before drift is judged: with ten bins, PSI's noise floor at 100 rows is about 0.09, under the threshold.
pub(crate) fn default_drift_min_rows() -> i32 {
    100
}

/// Payload logging logs every call unless told otherwise.
pub(crate) fn default_log_sample_rate() -> f64 {
    1.0
}

/// A record's data above 64 KiB is sent without its values.
pub(crate) fn default_log_max_bytes() -> i32 {
    65536
}
