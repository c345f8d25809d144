//! The autoscaler: every `spec.autoscaling.interval` it reads the ModelDeployment's signals from Prometheus,
//! turns them into a replica count with the HPA's rules ([`crate::hpa`]) and reports what it saw.
//!
//! Fail-safe: when Prometheus cannot be read (down, erroring, no data, NaN) it holds the current count,
//! says why in `ScalingActive=False`, and never scales down for lack of data. What it remembers between
//! evaluations (past recommendations and scale events, how long accuracy has been low) lives in memory, as
//! the HPA's does; a restarted operator starts a fresh scale-down window instead of acting at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use k8s_openapi::api::core::v1::{ResourceRequirements, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tractor_api::{
    Autoscaling, MetricSnapshot, MetricSpec, MetricType, ModelDeploymentStatus, PrometheusSource,
};

use crate::hpa::{self, Bounds, Hold, Limit};
use crate::prom::{self, QueryError, Selector, Server};
use crate::validate::Validated;

/// Shortest rate window: Prometheus needs at least two samples in it, and scrapes every 5-30 s.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(20);
/// Rate windows span this many intervals, so one slow scrape does not swing the signal.
const RATE_WINDOW_INTERVALS: u32 = 4;
/// Upper bound on one Prometheus query; the interval may be shorter, which shortens it further.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The interval of a spec (a value the schema refused cannot reach here; 15 s otherwise).
pub fn interval(a: &Autoscaling) -> Duration {
    Some(a.interval.as_std())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(15))
}

/// The rate window for an interval.
pub fn rate_window(interval: Duration) -> Duration {
    interval
        .saturating_mul(RATE_WINDOW_INTERVALS)
        .max(MIN_RATE_WINDOW)
}

/// What the autoscaler remembers about one ModelDeployment between evaluations. [`crate::decide`] gets a copy
/// and hands back the next one; nothing else writes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    /// The HPA's recommendations and scale events.
    pub history: Option<hpa::History>,
    /// When the last evaluation ran (seconds on the operator's clock).
    pub last_eval: Option<f64>,
    /// Since when online accuracy has been under its floor.
    pub accuracy_low_since: Option<f64>,
}

/// The autoscaler's I/O side: a Prometheus client and the per-ModelDeployment [`Memory`].
pub struct Autoscaler {
    prometheus: prom::Client,
    default_url: Option<String>,
    memory: Mutex<HashMap<String, Memory>>,
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The replica count to set (equal to the current one when nothing changes).
    pub replicas: i32,
    /// The count before this evaluation.
    pub previous: i32,
    /// `ScalingActive`: status, reason, message.
    pub active: (bool, &'static str, String),
    /// What was read.
    pub snapshot: MetricSnapshot,
    /// `Degraded` from the accuracy floor: `Some((true, message))` when below it for the window,
    /// `Some((false, ..))` when above it, `None` when unknown or not configured.
    pub degraded: Option<(bool, String)>,
    /// Why the count changed, for the event.
    pub why: String,
    /// Time until the next evaluation.
    pub next_in: Duration,
}

impl Outcome {
    /// True when the count changes.
    pub fn scaled(&self) -> bool {
        self.replicas != self.previous
    }

    /// The `tractor_operator_autoscaler_evaluations_total` result label.
    pub fn result(&self) -> &'static str {
        if self.scaled() {
            "scaled"
        } else if self.active.0 {
            "unchanged"
        } else {
            "held"
        }
    }
}

/// Time left until the next evaluation is due; `None` when one is due now.
pub fn not_due(memory: &Memory, every: Duration, now: f64) -> Option<Duration> {
    let since = now - memory.last_eval?;
    // A little slack: a requeue that fires a few milliseconds early still evaluates.
    (since + 0.05 < every.as_secs_f64())
        .then(|| Duration::from_secs_f64(every.as_secs_f64() - since))
}

impl Autoscaler {
    /// An autoscaler reading `default_url` unless a spec names its own Prometheus.
    pub fn new(default_url: Option<String>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            prometheus: prom::Client::new(QUERY_TIMEOUT)?,
            default_url,
            memory: Mutex::default(),
        })
    }

    /// A copy of what is remembered about `key` (`namespace/name`).
    pub fn memory(&self, key: &str) -> Memory {
        self.memory
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    }

    /// Replaces what is remembered about `key`; `None` forgets it (deleted, or autoscaling turned off).
    pub fn remember(&self, key: &str, memory: Option<Memory>) {
        if let Ok(mut m) = self.memory.lock() {
            match memory {
                Some(memory) => m.insert(key.to_owned(), memory),
                None => m.remove(key),
            };
        }
    }

    /// Reads every signal of `spec.metrics` from `server`, accuracy for the revision `revision`.
    pub async fn read(
        &self,
        server: &Server,
        validated: &Validated,
        a: &Autoscaling,
        revision: &str,
    ) -> Reads {
        let window = prom::window(rate_window(interval(a)));
        let sel = Selector {
            namespace: validated.namespace.clone(),
            model: validated.name.clone(),
            deployment: None,
            // Accuracy is the stable revision's: what most traffic gets, and what an accuracy rollback
            // judges (during a canary the canary's is the analysis's business).
            revision: Some(revision.to_owned()),
        };
        let mut reads = read_metrics(&self.prometheus, server, &sel, &a.metrics, &window).await;
        if let Some(zero) = &a.scale_to_zero {
            let query = prom::requests_over(&sel, &prom::window(zero.idle_after.as_std()));
            reads.idle = Some(self.prometheus.value(server, &query).await);
        }
        reads
    }
    /// The Prometheus client, shared with canary analysis.
    pub fn prometheus(&self) -> &prom::Client {
        &self.prometheus
    }

    /// The Prometheus to read: the spec's (with the header from `secret`, the Secret it names, as read) or the
    /// operator's flag.
    pub fn server(
        &self,
        source: Option<&PrometheusSource>,
        secret: Option<&Secret>,
    ) -> Result<Server, String> {
        let Some(source) = source else {
            return self
                .default_url
                .clone()
                .map(|url| Server {
                    url,
                    authorization: None,
                })
                .ok_or_else(|| {
                    "holding replicas: no Prometheus to read; set spec.autoscaling.prometheus.url or the operator's --prometheus-url".to_owned()
                });
        };
        let authorization = match (&source.header_secret_ref, secret) {
            (None, _) => None,
            (Some(key_ref), None) => {
                return Err(format!(
                    "holding replicas: Secret {} not found",
                    key_ref.name
                ));
            }
            (Some(key_ref), Some(secret)) => {
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&key_ref.key))
                    .map(|b| b.0.clone())
                    .or_else(|| {
                        secret
                            .string_data
                            .as_ref()
                            .and_then(|d| d.get(&key_ref.key))
                            .map(|s| s.clone().into_bytes())
                    })
                    .ok_or_else(|| {
                        format!(
                            "holding replicas: Secret {} has no key {}",
                            key_ref.name, key_ref.key
                        )
                    })?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    format!(
                        "holding replicas: Secret {} key {} is not text",
                        key_ref.name, key_ref.key
                    )
                })?)
            }
        };
        Ok(Server {
            url: source.url.clone(),
            authorization,
        })
    }
}

/// One evaluation, pure: the HPA's arithmetic over `reads` for `current` replicas, updating `memory`. `cpu` is
/// the cores a replica's CPU utilization is measured against.
pub fn evaluate(
    spec: &Autoscaling,
    current: i32,
    cpu: f64,
    reads: &Result<Reads, String>,
    memory: &mut Memory,
    now: f64,
) -> Outcome {
    let every = interval(spec);
    memory.last_eval = Some(now);
    let reads = match reads {
        Ok(found) => found,
        Err(message) => return hold(current, message.clone(), every),
    };
    let snapshot = reads.snapshot.clone();
    let ratios: Vec<Option<f64>> = spec
        .metrics
        .iter()
        .zip(&reads.values)
        .filter(|(metric, _)| metric.type_ != MetricType::Accuracy)
        .map(|(metric, read)| {
            read.as_ref()
                .ok()
                .and_then(|value| ratio(metric, *value, current, cpu))
        })
        .collect();
    let failures: Vec<&QueryError> = spec
        .metrics
        .iter()
        .zip(&reads.values)
        .filter_map(|(metric, read)| {
            read.as_ref()
                .err()
                .filter(|error| stops_scaling(metric, error))
        })
        .collect();
    let degraded = accuracy_verdict(memory, &spec.metrics, reads, now);

    let combined = if ratios.is_empty() {
        // Only an accuracy metric: nothing proposes a count; min/max still hold.
        Ok((current, usize::MAX))
    } else {
        hpa::combine(current, &ratios, spec.tolerance)
    };
    let first_failure = failures
        .first()
        .map(|error| error.to_string())
        .unwrap_or_default();
    let (desired, which) = match combined {
        Ok(found) => found,
        Err(hold) => {
            let why = match hold {
                Hold::NoMetrics => format!("holding {current} replicas: {first_failure}"),
                Hold::PartialMetricsNoScaleUp => format!(
                    "holding {current} replicas: some metrics are unavailable ({first_failure}) and the rest do not ask for more"
                ),
            };
            return Outcome {
                replicas: current,
                previous: current,
                active: (
                    false,
                    tractor_api::conditions::reason::METRICS_UNAVAILABLE,
                    why.clone(),
                ),
                snapshot,
                degraded,
                why,
                next_in: every,
            };
        }
    };
    let bounds = Bounds {
        // Zero is the scale-to-zero decision's alone (it moves the Service to the activator first): the
        // metrics of an idle model would otherwise take its last replica with nothing to hold requests.
        min: spec.min_replicas.max(1),
        max: spec.max_replicas,
        behavior: hpa::Behavior::from_spec(spec.behavior.as_ref()),
    };
    let history = memory
        .history
        .get_or_insert_with(|| hpa::History::seeded(now, current));
    let decision = hpa::decide(history, now, current, desired, &bounds);
    let signal = spec
        .metrics
        .get(which)
        .zip(reads.values.get(which))
        .and_then(|(metric, read)| {
            read.as_ref()
                .ok()
                .map(|value| describe(metric, *value, current, cpu))
        })
        .unwrap_or_else(|| "no scaling metric".to_owned());
    let limit = match decision.limit {
        Limit::DesiredWithinRange => "",
        Limit::ScaleUpLimit => " (limited by the scale-up policies)",
        Limit::TooManyReplicas => " (capped at maxReplicas)",
        Limit::ScaleDownLimit => " (limited by the scale-down policies)",
        Limit::TooFewReplicas => " (floored at minReplicas)",
    };
    let stabilized = if decision.stabilized != desired {
        format!(", stabilized to {} by the window", decision.stabilized)
    } else {
        String::new()
    };
    let why = format!(
        "{signal}: metrics ask for {desired}{stabilized}, setting {}{limit}",
        decision.replicas
    );
    let (active, reason, message) = if failures.is_empty() {
        (true, tractor_api::conditions::reason::SCALING, why.clone())
    } else {
        (
            false,
            tractor_api::conditions::reason::METRICS_UNAVAILABLE,
            format!("{why}; unavailable: {first_failure}"),
        )
    };
    Outcome {
        replicas: decision.replicas,
        previous: current,
        active: (active, reason, message),
        snapshot,
        degraded,
        why,
        next_in: every,
    }
}

fn hold(current: i32, message: String, every: Duration) -> Outcome {
    Outcome {
        replicas: current,
        previous: current,
        active: (
            false,
            tractor_api::conditions::reason::METRICS_UNAVAILABLE,
            message.clone(),
        ),
        snapshot: MetricSnapshot::default(),
        degraded: None,
        why: message,
        next_in: every,
    }
}

/// Values read for one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Reads {
    /// One per `spec.metrics` entry, in order: CPU in cores (total), latency in ms, throughput in rps (total),
    /// accuracy, custom.
    pub values: Vec<Result<f64, QueryError>>,
    /// The status snapshot (p95, rps, error rate, accuracy).
    pub snapshot: MetricSnapshot,
    /// With scale to zero: requests answered over the last `idleAfter`, all pods together.
    pub idle: Option<Result<f64, QueryError>>,
}

async fn read_metrics(
    client: &prom::Client,
    server: &Server,
    sel: &Selector,
    metrics: &[MetricSpec],
    window: &str,
) -> Reads {
    let queries: Vec<(String, f64)> = metrics
        .iter()
        .map(|m| match m.type_ {
            MetricType::Cpu => (prom::cpu_seconds_per_second(sel, window), 1.0),
            MetricType::Latency => (
                prom::latency(sel, m.latency.as_ref().map_or(0.95, |l| l.quantile), window),
                1000.0,
            ),
            MetricType::Throughput => (prom::requests_per_second(sel, window), 1.0),
            MetricType::Accuracy => (prom::accuracy(sel), 1.0),
            MetricType::Custom => (
                m.custom
                    .as_ref()
                    .map(|c| c.query.clone())
                    .unwrap_or_default(),
                1.0,
            ),
        })
        .collect();
    let snapshot_queries = [
        prom::latency(sel, 0.95, window),
        prom::requests_per_second(sel, window),
        prom::error_rate(sel, window),
        prom::accuracy(sel),
    ];
    let metric_reads =
        futures::future::join_all(queries.iter().map(|(q, _)| client.value(server, q)));
    let snapshot_reads =
        futures::future::join_all(snapshot_queries.iter().map(|q| client.value(server, q)));
    let (metric_values, snap) = futures::join!(metric_reads, snapshot_reads);
    let values = metric_values
        .into_iter()
        .zip(&queries)
        .map(|(r, (_, scale))| r.map(|v| v * scale))
        .collect();
    let ok = |i: usize| snap.get(i).and_then(|r| r.as_ref().ok().copied());
    let snapshot = MetricSnapshot {
        time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            crate::clock::now(),
        )),
        latency_p95_millis: ok(0).map(|s| round(s * 1000.0)),
        requests_per_second: ok(1).map(round),
        error_rate: ok(2).map(round),
        accuracy: ok(3).map(round),
    };
    Reads {
        values,
        snapshot,
        idle: None,
    }
}

/// Four significant decimals are plenty for a status, and keep it from changing on float noise.
fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Whether a metric's failed read makes scaling inactive. Accuracy never scales, and has no value until
/// labelled feedback arrives: its lack of data is reported by `Degraded` staying unknown, not as
/// `ScalingActive=False` (with a Warning event) on every model that waits for feedback. Prometheus itself
/// unreachable still counts, whatever the metric.
fn stops_scaling(m: &MetricSpec, e: &QueryError) -> bool {
    m.type_ != MetricType::Accuracy || e.is_unavailable()
}

/// The revision the stable Deployment serves, as last recorded in the status (the spec's before the first).
pub fn serving_revision(validated: &Validated) -> String {
    validated
        .md
        .status
        .as_ref()
        .and_then(|s| s.revision.as_ref())
        .and_then(|r| r.stable.clone().or_else(|| r.current.clone()))
        .unwrap_or_else(|| validated.revision.clone())
}

/// The server container's CPU, in cores, that `Cpu` utilization is a percentage of: its request, else its
/// limit, else one core (with neither, the HPA cannot scale on CPU at all; one core keeps the default
/// metric meaningful for a spec that sets no resources).
pub fn cpu_cores(resources: Option<&ResourceRequirements>) -> f64 {
    let cpu = |m: Option<&std::collections::BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get("cpu")).and_then(cores)
    };
    resources
        .and_then(|r| cpu(r.requests.as_ref()).or_else(|| cpu(r.limits.as_ref())))
        .filter(|c| *c > 0.0)
        .unwrap_or(1.0)
}

/// A CPU quantity in cores: `500m`, `2`, `1.5`; `None` for anything else.
fn cores(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => s.parse().ok(),
    }
}

fn cpu_target_percent(m: &MetricSpec) -> f64 {
    f64::from(m.cpu.as_ref().map_or(80, |c| c.target_utilization_percent))
}

/// value / target for one scaling metric (`None` for accuracy, which never scales). `cpu` is the cores
/// each replica's utilization is measured against.
fn ratio(m: &MetricSpec, value: f64, current: i32, cpu: f64) -> Option<f64> {
    let per_replica = |total: f64| total / f64::from(current.max(1));
    match m.type_ {
        MetricType::Cpu => Some(per_replica(value) / cpu * 100.0 / cpu_target_percent(m)),
        MetricType::Latency => m.latency.as_ref().map(|l| value / l.target_millis),
        MetricType::Throughput => m
            .throughput
            .as_ref()
            .map(|t| per_replica(value) / t.target_per_replica),
        MetricType::Custom => m.custom.as_ref().map(|c| per_replica(value) / c.target),
        MetricType::Accuracy => None,
    }
}

fn describe(m: &MetricSpec, value: f64, current: i32, cpu: f64) -> String {
    match m.type_ {
        MetricType::Cpu => format!(
            "CPU {:.0} % of {} cores per replica against {} %",
            value / f64::from(current.max(1)) / cpu * 100.0,
            cpu,
            cpu_target_percent(m)
        ),
        MetricType::Latency => format!(
            "p{} latency {:.1} ms against {} ms",
            m.latency.as_ref().map_or(95.0, |l| l.quantile * 100.0),
            value,
            m.latency.as_ref().map_or(0.0, |l| l.target_millis)
        ),
        MetricType::Throughput => format!(
            "{:.2} requests/s per replica against {}",
            value / f64::from(current.max(1)),
            m.throughput.as_ref().map_or(0.0, |t| t.target_per_replica)
        ),
        MetricType::Custom => format!(
            "custom metric {:.3} per replica against {}",
            value / f64::from(current.max(1)),
            m.custom.as_ref().map_or(0.0, |c| c.target)
        ),
        MetricType::Accuracy => format!("accuracy {value:.3}"),
    }
}

/// Tracks how long online accuracy has been under its floor; `Degraded` once that lasts the window.
fn accuracy_verdict(
    memory: &mut Memory,
    metrics: &[MetricSpec],
    reads: &Reads,
    now: f64,
) -> Option<(bool, String)> {
    let (index, spec) = metrics
        .iter()
        .enumerate()
        .find_map(|(i, m)| m.accuracy.as_ref().map(|a| (i, a)))?;
    let Ok(value) = reads.values.get(index)?.as_ref() else {
        // Unknown (no feedback yet, or Prometheus down): neither degraded nor healthy on no evidence.
        return None;
    };
    let window = spec.window.as_std();
    if *value >= spec.min {
        memory.accuracy_low_since = None;
        return Some((
            false,
            format!("online accuracy {value:.3} meets the floor {}", spec.min),
        ));
    }
    let since = *memory.accuracy_low_since.get_or_insert(now);
    let below = now - since;
    if below >= window.as_secs_f64() {
        Some((
            true,
            format!(
                "online accuracy {value:.3} has been below the floor {} for {:.0} s (window {})",
                spec.min, below, spec.window
            ),
        ))
    } else {
        None
    }
}

/// Writes an outcome into the status being built.
pub fn record(status: &mut ModelDeploymentStatus, outcome: &Outcome, now: Time) {
    status.desired_replicas = Some(outcome.replicas);
    status.metrics = Some(outcome.snapshot.clone());
    if outcome.scaled() {
        status.last_scale_time = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_windows_cover_several_intervals_and_two_scrapes() {
        assert_eq!(
            rate_window(Duration::from_secs(15)),
            Duration::from_secs(60)
        );
        assert_eq!(rate_window(Duration::from_secs(2)), MIN_RATE_WINDOW);
    }

    fn metric(yaml: &str) -> MetricSpec {
        serde_yaml::from_str(yaml).expect("metric yaml")
    }

    #[test]
    fn ratios_per_signal() {
        let latency = metric("{type: Latency, latency: {quantile: 0.95, targetMillis: 50}}");
        assert_eq!(ratio(&latency, 100.0, 3, 1.0), Some(2.0));
        // Throughput is per replica: 40 rps over 4 replicas against 5 each.
        let rps = metric("{type: Throughput, throughput: {targetPerReplica: 5}}");
        assert_eq!(ratio(&rps, 40.0, 4, 1.0), Some(2.0));
        let custom = metric("{type: Custom, custom: {query: 'sum(x)', target: 10}}");
        assert_eq!(ratio(&custom, 30.0, 3, 1.0), Some(1.0));
        let accuracy = metric("{type: Accuracy, accuracy: {min: 0.9, window: 1m}}");
        assert_eq!(ratio(&accuracy, 0.5, 3, 1.0), None);
        // CPU is per replica and per requested core: 1.6 cores over 2 replicas of 500m is 160 %, twice 80 %.
        let cpu = metric("{type: Cpu, cpu: {targetUtilizationPercent: 80}}");
        assert_eq!(ratio(&cpu, 1.6, 2, 0.5), Some(2.0));
        // Without the member, the HPA's 80 %: 0.4 of one core is half of it.
        let cpu_default = metric("{type: Cpu}");
        assert_eq!(ratio(&cpu_default, 0.4, 1, 1.0), Some(0.5));
    }

    #[test]
    fn accuracy_without_feedback_does_not_stop_scaling() {
        let accuracy = metric("{type: Accuracy, accuracy: {min: 0.9, window: 1m}}");
        let rps = metric("{type: Throughput, throughput: {targetPerReplica: 5}}");
        let nan = QueryError::NotANumber {
            query: "q".into(),
            value: "NaN".into(),
        };
        let empty = QueryError::Empty("q".into());
        let down = QueryError::Unreachable {
            url: "http://p".into(),
            detail: "connection refused".into(),
        };
        assert!(!stops_scaling(&accuracy, &nan));
        assert!(!stops_scaling(&accuracy, &empty));
        assert!(stops_scaling(&accuracy, &down));
        for e in [&nan, &empty, &down] {
            assert!(stops_scaling(&rps, e), "{e}");
        }
    }

    #[test]
    fn accuracy_degrades_only_after_the_window() {
        let metrics = vec![metric("{type: Accuracy, accuracy: {min: 0.9, window: 1m}}")];
        let reads = |v: Result<f64, QueryError>| Reads {
            values: vec![v],
            snapshot: MetricSnapshot::default(),
            idle: None,
        };
        let mut memory = Memory::default();
        assert_eq!(
            accuracy_verdict(&mut memory, &metrics, &reads(Ok(0.5)), 0.0),
            None
        );
        assert_eq!(
            accuracy_verdict(&mut memory, &metrics, &reads(Ok(0.5)), 30.0),
            None
        );
        // No data in between does not reset the clock, nor decide anything.
        assert_eq!(
            accuracy_verdict(
                &mut memory,
                &metrics,
                &reads(Err(QueryError::Empty("q".into()))),
                45.0
            ),
            None
        );
        let got = accuracy_verdict(&mut memory, &metrics, &reads(Ok(0.5)), 61.0);
        assert!(
            matches!(got, Some((true, ref msg)) if msg.contains("0.500")),
            "{got:?}"
        );
        // Recovering resets it.
        assert!(matches!(
            accuracy_verdict(&mut memory, &metrics, &reads(Ok(0.95)), 70.0),
            Some((false, _))
        ));
        assert_eq!(
            accuracy_verdict(&mut memory, &metrics, &reads(Ok(0.5)), 80.0),
            None
        );
    }
}
