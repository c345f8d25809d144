//! Every metric the server exports, registered with its help text and buckets; their names and label keys
//! are spelled once, in [`tractor_api::metrics`], which the operator's queries read too.
//!
//! Labels are bounded: `model` (one per process), `protocol` (`rest`|`grpc`), `code` (an HTTP status or
//! a gRPC code name), `result` (three values). Never a request id or an error's text.

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

// The names and label keys are the contract with the operator's queries; re-exported so that users of the
// server's metrics find them here too.
pub use tractor_api::metrics::*;

/// Largest class with its own `true_class`/`predicted_class` value; the rest are `other`, bounding the series.
pub const MAX_CLASS_LABEL: i64 = 99;

/// Values of the `result` label of [`FEEDBACK_TOTAL`].
pub const RESULTS: [&str; 3] = [CORRECT, INCORRECT, UNKNOWN_ID];

// Latency buckets from 50 µs to 10 s: tract answers small models in tens of microseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The server's metrics, already labelled with the model where the label is fixed.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    model: String,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    /// Queue wait per request.
    pub queue: Histogram,
    /// Compute time per merged batch.
    pub compute: Histogram,
    /// Rows per merged batch.
    pub batch_size: Histogram,
    /// Requests in flight.
    pub in_flight: IntGauge,
    feedback: IntCounterVec,
    labelled: IntCounterVec,
    regression_rows: IntCounterVec,
    regression_abs: CounterVec,
    regression_sq: CounterVec,
    /// Rolling accuracy.
    pub accuracy: Gauge,
    /// Rolling macro precision.
    pub precision: Gauge,
    /// Rolling macro recall.
    pub recall: Gauge,
    /// Rolling macro F1.
    pub f1: Gauge,
    /// Size of the scored window.
    pub window: IntGauge,
    cpu: Counter,
    rss: Gauge,
    load: GaugeVec,
    payload_log: IntCounterVec,
    /// The drift gauges, when the artifact has reference statistics ([`Metrics::with_drift`]).
    drift: Option<crate::drift::DriftGauges>,
}

/// Where a server's start went: the phases [`tractor_api::metrics::MODEL_LOAD_SECONDS`] exports, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StartTimings {
    /// Read, digest check, parse and declutter.
    pub load: f64,
    /// One optimized plan per batch-size bucket.
    pub optimize: f64,
    /// The first inference.
    pub warm_up: f64,
    /// Start of preparation to ready.
    pub total: f64,
}

/// Resident memory of this process in bytes, from `/proc/self/status`; `None` off Linux.
pub fn process_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// CPU seconds this process has used (all threads, user + system), from `/proc/self/stat`; `None` off Linux.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // /proc reports them in USER_HZ, which the kernel fixes at 100 for user space on every architecture.
    Some((utime + stime) / 100.0)
}

fn fixed<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: T,
) -> Result<T, prometheus::Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Register every metric for `model`; `platform`, `sha256` and `revision` go on [`MODEL_INFO`].
    pub fn new(
        model: &str,
        platform: &str,
        sha256: &str,
        revision: Option<&str>,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let model_label = [(MODEL, model)];
        let requests = fixed(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    REQUESTS_TOTAL,
                    "Inference requests answered, by protocol and status code.",
                ),
                &[MODEL, PROTOCOL, CODE],
            )?,
        )?;
        let request_duration = fixed(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    REQUEST_DURATION,
                    "End-to-end inference request duration in seconds.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &[MODEL, PROTOCOL],
            )?,
        )?;
        let hist =
            |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram, prometheus::Error> {
                fixed(
                    &registry,
                    Histogram::with_opts(
                        HistogramOpts::new(name, help)
                            .buckets(buckets.to_vec())
                            .const_labels(
                                model_label
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .collect(),
                            ),
                    )?,
                )
            };
        let queue = hist(
            QUEUE_DURATION,
            "Time requests waited in the batching queue, in seconds.",
            LATENCY_BUCKETS,
        )?;
        let compute = hist(
            COMPUTE_DURATION,
            "Time the model ran one merged batch, in seconds.",
            LATENCY_BUCKETS,
        )?;
        let batch_size = hist(BATCH_SIZE, "Rows per merged batch.", BATCH_BUCKETS)?;
        let labels = || {
            model_label
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let in_flight = fixed(
            &registry,
            IntGauge::with_opts(
                Opts::new(IN_FLIGHT, "Inference requests in flight.").const_labels(labels()),
            )?,
        )?;
        let feedback = fixed(
            &registry,
            IntCounterVec::new(
                Opts::new(FEEDBACK_TOTAL, "Ground-truth feedback pairs, by outcome."),
                &[MODEL, RESULT],
            )?,
        )?;
        let labelled = fixed(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    PREDICTIONS_LABELLED,
                    "Labelled predictions, by the revision that made them, true and predicted class.",
                ),
                &[MODEL, REVISION, TRUE_CLASS, PREDICTED_CLASS, RESULT],
            )?,
        )?;
        let regression_rows = fixed(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    REGRESSION_LABELLED,
                    "A regressor's labelled rows, by the revision that predicted them.",
                ),
                &[MODEL, REVISION],
            )?,
        )?;
        let regression_abs = fixed(
            &registry,
            CounterVec::new(
                Opts::new(
                    REGRESSION_ABS_ERROR,
                    "Sum of absolute errors of a regressor's labelled rows.",
                ),
                &[MODEL, REVISION],
            )?,
        )?;
        let regression_sq = fixed(
            &registry,
            CounterVec::new(
                Opts::new(
                    REGRESSION_SQUARED_ERROR,
                    "Sum of squared errors of a regressor's labelled rows.",
                ),
                &[MODEL, REVISION],
            )?,
        )?;
        let gauge = |name: &str, help: &str| {
            fixed(
                &registry,
                Gauge::with_opts(Opts::new(name, help).const_labels(labels()))?,
            )
        };
        let accuracy = gauge(
            ACCURACY,
            "Accuracy of predictions that received feedback, over the window.",
        )?;
        let precision = gauge(
            PRECISION,
            "Macro-averaged precision over the feedback window.",
        )?;
        let recall = gauge(RECALL, "Macro-averaged recall over the feedback window.")?;
        let f1 = gauge(F1, "Macro-averaged F1 over the feedback window.")?;
        let window = fixed(
            &registry,
            IntGauge::with_opts(
                Opts::new(
                    FEEDBACK_WINDOW,
                    "Labelled predictions in the feedback window.",
                )
                .const_labels(labels()),
            )?,
        )?;
        let cpu = fixed(
            &registry,
            Counter::with_opts(
                Opts::new(
                    PROCESS_CPU,
                    "CPU time of the server process, user and system, in seconds.",
                )
                .const_labels(labels()),
            )?,
        )?;
        let rss = gauge(
            PROCESS_RSS,
            "Resident memory of the server process, in bytes.",
        )?;
        let load = fixed(
            &registry,
            GaugeVec::new(
                Opts::new(
                    MODEL_LOAD_SECONDS,
                    "Seconds the server's start spent per phase, set once when it became ready.",
                )
                .const_labels(labels()),
                &[PHASE],
            )?,
        )?;
        // Series appear only once the payload log starts (`payload_log::start`), so a server without one exports
        // none of them.
        let payload_log = fixed(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    PAYLOAD_LOG_RECORDS,
                    "Payload log records (one per request, one per response), by outcome: sent, or why dropped.",
                ),
                &[MODEL, OUTCOME],
            )?,
        )?;
        let info = fixed(
            &registry,
            GaugeVec::new(
                Opts::new(MODEL_INFO, "The served model; always 1."),
                &[MODEL, PLATFORM, SHA256, REVISION],
            )?,
        )?;
        // An empty label value is no label to Prometheus: a server not told its revision exports none.
        info.with_label_values(&[model, platform, sha256, revision.unwrap_or_default()])
            .set(1.0);
        for result in RESULTS {
            feedback.with_label_values(&[model, result]);
        }
        Ok(Metrics {
            registry,
            model: model.to_owned(),
            requests,
            request_duration,
            queue,
            compute,
            batch_size,
            in_flight,
            feedback,
            labelled,
            regression_rows,
            regression_abs,
            regression_sq,
            accuracy,
            precision,
            recall,
            f1,
            window,
            cpu,
            rss,
            load,
            payload_log,
            drift: None,
        })
    }

    /// The same metrics with the drift gauges ([`INPUT_DRIFT`], [`PREDICTION_DRIFT`], [`DRIFT_WINDOW_ROWS`]) of
    /// `drift`'s window, labelled with `revision` (empty when not told), set at each scrape.
    pub fn with_drift(
        self,
        revision: Option<&str>,
        drift: std::sync::Arc<crate::drift::Drift>,
    ) -> Result<Metrics, prometheus::Error> {
        let gauges = crate::drift::DriftGauges::register(
            &self.registry,
            &self.model,
            revision.unwrap_or_default(),
            drift,
        )?;
        Ok(Metrics {
            drift: Some(gauges),
            ..self
        })
    }

    /// Count `records` payload log records with `outcome` ([`LOG_SENT`], [`LOG_QUEUE_FULL`] or
    /// [`LOG_SINK_ERROR`]); 0 creates the series.
    pub fn payload_log(&self, outcome: &str, records: u64) {
        self.payload_log
            .with_label_values(&[self.model.as_str(), outcome])
            .inc_by(records);
    }

    /// Count one answered request and observe its duration.
    pub fn observe_request(&self, protocol: &str, code: &str, seconds: f64) {
        self.requests
            .with_label_values(&[self.model.as_str(), protocol, code])
            .inc();
        self.request_duration
            .with_label_values(&[self.model.as_str(), protocol])
            .observe(seconds);
    }

    /// Count feedback pairs with one outcome (one of [`RESULTS`]).
    pub fn feedback(&self, result: &str, n: u64) {
        self.feedback
            .with_label_values(&[self.model.as_str(), result])
            .inc_by(n);
    }

    /// Count one labelled row predicted by `revision` (empty when unknown).
    pub fn labelled(&self, revision: &str, label: i64, predicted: i64) {
        let class = |c: i64| {
            if (0..=MAX_CLASS_LABEL).contains(&c) {
                c.to_string()
            } else {
                "other".to_owned()
            }
        };
        let result = if label == predicted {
            CORRECT
        } else {
            INCORRECT
        };
        self.labelled
            .with_label_values(&[
                self.model.as_str(),
                revision,
                &class(label),
                &class(predicted),
                result,
            ])
            .inc();
    }

    /// Count one labelled row of a regressor predicted by `revision` (empty when unknown).
    pub fn regressed(&self, revision: &str, label: f64, predicted: f64) {
        let labels = [self.model.as_str(), revision];
        let error = predicted - label;
        self.regression_rows.with_label_values(&labels).inc();
        self.regression_abs
            .with_label_values(&labels)
            .inc_by(error.abs());
        self.regression_sq
            .with_label_values(&labels)
            .inc_by(error * error);
    }

    /// Record where the start went (once, when the server becomes ready).
    pub fn record_start(&self, timings: &StartTimings) {
        for (phase, seconds) in [
            (PHASE_LOAD, timings.load),
            (PHASE_OPTIMIZE, timings.optimize),
            (PHASE_WARM_UP, timings.warm_up),
            (PHASE_TOTAL, timings.total),
        ] {
            self.load.with_label_values(&[phase]).set(seconds);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(bytes) = process_rss_bytes() {
            self.rss.set(bytes);
        }
        // Scores at scrape time: the window as it is now, however long since the last request.
        if let Some(drift) = &self.drift {
            drift.export(std::time::Instant::now());
        }
        // A counter only moves up: catch it up with the process's clock at each scrape.
        if let Some(now) = process_cpu_seconds() {
            let behind = now - self.cpu.get();
            if behind > 0.0 {
                self.cpu.inc_by(behind);
            }
        }
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a failure would be a metric family bug, so render what we can.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start's phases are exported under their labels, and the resident memory is this process's.
    #[test]
    fn start_phases_and_resident_memory() {
        let metrics = Metrics::new("digits", "tract_onnx", "abc", None).expect("metrics");
        metrics.record_start(&StartTimings {
            load: 0.25,
            optimize: 0.5,
            warm_up: 0.125,
            total: 1.0,
        });
        let text = metrics.render();
        for (phase, value) in [
            ("load", "0.25"),
            ("optimize", "0.5"),
            ("warm_up", "0.125"),
            ("total", "1"),
        ] {
            let line =
                format!(r#"tractor_model_load_seconds{{model="digits",phase="{phase}"}} {value}"#);
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        let rss: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(r#"process_resident_memory_bytes{model="digits"} "#))
            .expect("rss exported")
            .parse()
            .expect("a number");
        // A test binary holds at least a megabyte and, here, far less than a terabyte.
        assert!((1e6..1e12).contains(&rss), "{rss}");
    }

    #[test]
    fn every_name_is_exported_with_the_model_label() {
        let metrics =
            Metrics::new("digits", "tract_onnx", "abc", Some("3f9a1c0b7e")).expect("metrics");
        metrics.observe_request("rest", "200", 0.001);
        metrics.queue.observe(0.0001);
        metrics.compute.observe(0.0001);
        metrics.batch_size.observe(3.0);
        let text = metrics.render();
        for name in [
            REQUESTS_TOTAL,
            REQUEST_DURATION,
            QUEUE_DURATION,
            COMPUTE_DURATION,
            BATCH_SIZE,
            IN_FLIGHT,
            FEEDBACK_TOTAL,
            ACCURACY,
            MODEL_INFO,
            PROCESS_RSS,
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(
            text.contains(
                r#"tractor_inference_requests_total{code="200",model="digits",protocol="rest"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tractor_model_feedback_total{model="digits",result="unknown_id"} 0"#)
        );
        assert!(
            text.contains(
                r#"tractor_model_info{model="digits",platform="tract_onnx",revision="3f9a1c0b7e",sha256="abc"} 1"#
            ),
            "{text}"
        );
    }

    /// The process's CPU clock reaches the counter at each scrape, and the counter never goes back.
    #[test]
    fn process_cpu_counts_this_process() {
        let m = Metrics::new("digits", "tract_onnx", "abc", None).expect("metrics");
        let read = |text: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(r#"process_cpu_seconds_total{model="digits"} "#))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0)
        };
        let first = read(&m.render());
        // Burn CPU until the clock (10 ms ticks) has visibly moved; bounded so a broken reading fails.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while process_cpu_seconds().unwrap_or(0.0) < first + 0.05
            && start.elapsed() < std::time::Duration::from_secs(10)
        {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let second = read(&m.render());
        assert!(
            first >= 0.0,
            "no process_cpu_seconds_total in the first scrape"
        );
        assert!(second >= first + 0.05, "{first} then {second}");
    }

    #[test]
    fn model_info_without_a_revision_has_an_empty_one() {
        let text = Metrics::new("digits", "tract_onnx", "abc", None)
            .expect("metrics")
            .render();
        assert!(
            text.contains(
                r#"tractor_model_info{model="digits",platform="tract_onnx",revision="",sha256="abc"} 1"#
            ),
            "{text}"
        );
    }
}
