//! The autoscaler: every `spec.autoscaling.interval` it reads the ModelDeployment's signals from Prometheus,
//! turns them into a replica count with the HPA's rules ([`crate::hpa`]) and reports what it saw.
//!
//! Fail-safe: when Prometheus cannot be read (down, erroring, no data, NaN) it holds the current count,
//! says why in `ScalingActive=False`, and never scales down for lack of data. What it remembers between
//! evaluations (past recommendations and scale events, how long accuracy has been low) lives in memory, as
//! the HPA's does; a restarted operator starts a fresh scale-down window instead of acting at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{ResourceRequirements, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use tractor_api::{
    Autoscaling, MetricSnapshot, MetricSpec, MetricType, ModelDeploymentStatus, PrometheusSource,
};

use crate::error::call;
use crate::hpa::{self, Bounds, Hold, Limit};
use crate::prom::{self, QueryError, Selector, Server};
use crate::rbac;
use crate::validate::Validated;

/// Shortest rate window: Prometheus needs at least two samples in it, and scrapes every 5-30 s.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(20);
/// Rate windows span this many intervals, so one slow scrape does not swing the signal.
const RATE_WINDOW_INTERVALS: u32 = 4;
/// Upper bound on one Prometheus query; the interval may be shorter, which shortens it further.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses the API's durations (`500ms`, `15s`, `1.5m`, `1h30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0_f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, secs) = if rest.starts_with("ms") {
            ("ms", 0.001)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else {
            return None;
        };
        rest = &rest[unit.len()..];
        total += number * secs;
    }
    Duration::try_from_secs_f64(total).ok()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The interval of a spec (a value the schema refused cannot reach here; 15 s otherwise).
pub fn interval(a: &Autoscaling) -> Duration {
    parse_duration(&a.interval)
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(15))
}

/// The rate window for an interval.
pub fn rate_window(interval: Duration) -> Duration {
    (interval * RATE_WINDOW_INTERVALS).max(MIN_RATE_WINDOW)
}

/// Per-ModelDeployment memory.
#[derive(Debug, Default)]
struct Memory {
    history: Option<hpa::History>,
    last_eval: Option<f64>,
    accuracy_low_since: Option<f64>,
}

/// The autoscaler of one operator: a Prometheus client and what it remembers per ModelDeployment.
pub struct Autoscaler {
    prometheus: prom::Client,
    default_url: Option<String>,
    memory: Mutex<HashMap<String, Memory>>,
}

/// What one call to [`Autoscaler::evaluate`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// The interval has not passed since the last evaluation.
    NotDue {
        /// Time until the next one.
        next_in: Duration,
    },
    /// An evaluation ran.
    Done(Box<Outcome>),
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
}

fn key(v: &Validated) -> String {
    format!("{}/{}", v.namespace, v.name)
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

    /// Forgets a ModelDeployment (deleted, or autoscaling turned off).
    pub fn forget(&self, v: &Validated) {
        if let Ok(mut m) = self.memory.lock() {
            m.remove(&key(v));
        }
    }

    /// Evaluates once if the interval has passed; `current` is the replica count in force.
    pub async fn evaluate(
        &self,
        v: &Validated,
        a: &Autoscaling,
        current: i32,
        client: &kube::Client,
    ) -> Evaluation {
        let every = interval(a);
        let now = now_secs();
        let k = key(v);
        {
            let Ok(mut memory) = self.memory.lock() else {
                return Evaluation::NotDue { next_in: every };
            };
            let m = memory.entry(k.clone()).or_default();
            if let Some(last) = m.last_eval {
                let since = now - last;
                // A little slack: a requeue that fires a few milliseconds early still evaluates.
                if since + 0.05 < every.as_secs_f64() {
                    return Evaluation::NotDue {
                        next_in: Duration::from_secs_f64(every.as_secs_f64() - since),
                    };
                }
            }
            m.last_eval = Some(now);
        }

        let server = match self.server(v, a.prometheus.as_ref(), client).await {
            Ok(s) => s,
            Err(message) => return Evaluation::Done(Box::new(self.hold(current, message, every))),
        };
        let window = prom::window(rate_window(every));
        let sel = Selector {
            namespace: v.namespace.clone(),
            model: v.name.clone(),
            deployment: None,
            // Accuracy is the stable revision's: what most traffic gets, and what an accuracy rollback
            // judges (during a canary the canary's is the analysis's business).
            revision: Some(serving_revision(v)),
        };
        let reads = read_metrics(&self.prometheus, &server, &sel, &a.metrics, &window).await;
        let cpu = cpu_cores(v.md.spec.serving.resources.as_ref());
        let snapshot = reads.snapshot.clone();

        let ratios: Vec<Option<f64>> = a
            .metrics
            .iter()
            .zip(&reads.values)
            .filter(|(m, _)| m.type_ != MetricType::Accuracy)
            .map(|(m, r)| {
                r.as_ref()
                    .ok()
                    .and_then(|value| ratio(m, *value, current, cpu))
            })
            .collect();
        let failures: Vec<&QueryError> = a
            .metrics
            .iter()
            .zip(&reads.values)
            .filter_map(|(m, r)| r.as_ref().err().filter(|e| stops_scaling(m, e)))
            .collect();

        let mut memory = match self.memory.lock() {
            Ok(m) => m,
            Err(_) => return Evaluation::NotDue { next_in: every },
        };
        let m = memory.entry(k).or_default();
        let degraded = accuracy_verdict(m, &a.metrics, &reads, now);

        let combined = if ratios.is_empty() {
            // Only an accuracy metric: nothing proposes a count; min/max still hold.
            Ok((current, usize::MAX))
        } else {
            hpa::combine(current, &ratios, a.tolerance)
        };
        let first_failure = failures.first().map(|e| e.to_string()).unwrap_or_default();
        let (desired, which) = match combined {
            Ok(found) => found,
            Err(hold) => {
                let why = match hold {
                    Hold::NoMetrics => format!("holding {current} replicas: {first_failure}"),
                    Hold::PartialMetricsNoScaleUp => format!(
                        "holding {current} replicas: some metrics are unavailable ({first_failure}) and the rest do not ask for more"
                    ),
                };
                return Evaluation::Done(Box::new(Outcome {
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
                }));
            }
        };
        let bounds = Bounds {
            min: a.min_replicas,
            max: a.max_replicas,
            behavior: hpa::Behavior::from_spec(a.behavior.as_ref()),
        };
        let history = m
            .history
            .get_or_insert_with(|| hpa::History::seeded(now, current));
        let decision = hpa::decide(history, now, current, desired, &bounds);
        let signal = a
            .metrics
            .get(which)
            .zip(reads.values.get(which))
            .and_then(|(spec, r)| r.as_ref().ok().map(|v| describe(spec, *v, current, cpu)))
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
        Evaluation::Done(Box::new(Outcome {
            replicas: decision.replicas,
            previous: current,
            active: (active, reason, message),
            snapshot,
            degraded,
            why,
            next_in: every,
        }))
    }

    fn hold(&self, current: i32, message: String, every: Duration) -> Outcome {
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

    /// The Prometheus client, shared with canary analysis.
    pub fn prometheus(&self) -> &prom::Client {
        &self.prometheus
    }

    /// The Prometheus to read: the spec's (with its Secret header) or the operator's flag.
    pub async fn server(
        &self,
        v: &Validated,
        source: Option<&PrometheusSource>,
        client: &kube::Client,
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
        let authorization = match &source.header_secret_ref {
            None => None,
            Some(r) => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &v.namespace);
                let secret = call(rbac::GET_SECRET, &v.namespace, secrets.get_opt(&r.name))
                    .await
                    .map_err(|e| format!("holding replicas: cannot read Secret {}: {e}", r.name))?
                    .ok_or_else(|| format!("holding replicas: Secret {} not found", r.name))?;
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|b| b.0.clone())
                    .or_else(|| {
                        secret
                            .string_data
                            .as_ref()
                            .and_then(|d| d.get(&r.key))
                            .map(|s| s.clone().into_bytes())
                    })
                    .ok_or_else(|| {
                        format!("holding replicas: Secret {} has no key {}", r.name, r.key)
                    })?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    format!(
                        "holding replicas: Secret {} key {} is not text",
                        r.name, r.key
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

/// Values read for one evaluation.
struct Reads {
    /// One per `spec.metrics` entry, in order: CPU in cores (total), latency in ms, throughput in rps (total),
    /// accuracy, custom.
    values: Vec<Result<f64, QueryError>>,
    snapshot: MetricSnapshot,
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
            k8s_openapi::jiff::Timestamp::now(),
        )),
        latency_p95_millis: ok(0).map(|s| round(s * 1000.0)),
        requests_per_second: ok(1).map(round),
        error_rate: ok(2).map(round),
        accuracy: ok(3).map(round),
    };
    Reads { values, snapshot }
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
fn serving_revision(v: &Validated) -> String {
    v.md.status
        .as_ref()
        .and_then(|s| s.revision.as_ref())
        .and_then(|r| r.stable.clone().or_else(|| r.current.clone()))
        .unwrap_or_else(|| v.revision.clone())
}

/// The server container's CPU, in cores, that `Cpu` utilization is a percentage of: its request, else its
/// limit, else one core (with neither, the HPA cannot scale on CPU at all; one core keeps the default
/// metric meaningful for a spec that sets no resources).
fn cpu_cores(resources: Option<&ResourceRequirements>) -> f64 {
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
    let (i, spec) = metrics
        .iter()
        .enumerate()
        .find_map(|(i, m)| m.accuracy.as_ref().map(|a| (i, a)))?;
    let Ok(value) = reads.values.get(i)?.as_ref() else {
        // Unknown (no feedback yet, or Prometheus down): neither degraded nor healthy on no evidence.
        return None;
    };
    let window = parse_duration(&spec.window).unwrap_or(Duration::from_secs(600));
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
pub fn record(status: &mut ModelDeploymentStatus, outcome: &Outcome) {
    status.desired_replicas = Some(outcome.replicas);
    status.metrics = Some(outcome.snapshot.clone());
    if outcome.scaled() {
        status.last_scale_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("15s", Some(15.0)),
            ("500ms", Some(0.5)),
            ("1.5m", Some(90.0)),
            ("1h30m", Some(5400.0)),
            ("2m10s", Some(130.0)),
            ("", None),
            ("10", None),
            ("5d", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).map(|d| d.as_secs_f64()),
                want,
                "{text}"
            );
        }
    }

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
        };
        let mut m = Memory::default();
        assert_eq!(
            accuracy_verdict(&mut m, &metrics, &reads(Ok(0.5)), 0.0),
            None
        );
        assert_eq!(
            accuracy_verdict(&mut m, &metrics, &reads(Ok(0.5)), 30.0),
            None
        );
        // No data in between does not reset the clock, nor decide anything.
        assert_eq!(
            accuracy_verdict(
                &mut m,
                &metrics,
                &reads(Err(QueryError::Empty("q".into()))),
                45.0
            ),
            None
        );
        let got = accuracy_verdict(&mut m, &metrics, &reads(Ok(0.5)), 61.0);
        assert!(
            matches!(got, Some((true, ref msg)) if msg.contains("0.500")),
            "{got:?}"
        );
        // Recovering resets it.
        assert!(matches!(
            accuracy_verdict(&mut m, &metrics, &reads(Ok(0.95)), 70.0),
            Some((false, _))
        ));
        assert_eq!(
            accuracy_verdict(&mut m, &metrics, &reads(Ok(0.5)), 80.0),
            None
        );
    }
}
