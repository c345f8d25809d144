//! Payload logging: sampled inference requests and responses as CloudEvents 1.0, batched to an HTTP sink by one
//! background task, so that a slow or dead sink costs the request path nothing but a `try_send`.
//!
//! The request path ([`Logger::begin`], [`Capture`]) decides sampling once per call, clones the tensors it needs
//! (only when sampled, and never values that could not fit in `--log-max-bytes`) and hands the call to a bounded
//! queue with `try_send`: a full queue drops the call and counts it. The [`Worker`] turns calls into events (JSON
//! serialization happens there), batches them and POSTs `application/cloudevents-batch+json` with a timeout; a
//! batch the sink refuses, fails or does not answer in time is dropped and counted. Nothing is retried: a retry
//! would hold memory for a sink that is already behind.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tractor_model::{Datatype, Signature, Tensor};

use crate::codec;
use crate::metrics::{LOG_QUEUE_FULL, LOG_SENT, LOG_SINK_ERROR, Metrics};

/// CloudEvents `specversion` of every record.
pub const SPEC_VERSION: &str = "1.0";
/// CloudEvents `type` of the record of an inference request.
pub const TYPE_REQUEST: &str = "dev.tractor.serving.inference.request";
/// CloudEvents `type` of the record of an inference response (an answer or an error).
pub const TYPE_RESPONSE: &str = "dev.tractor.serving.inference.response";
/// CloudEvents `datacontenttype` of every record: `data` is a JSON object.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// `Content-Type` of a batch POSTed to the sink (the CloudEvents JSON batch format: an array of events).
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Extension attribute linking a request record to its response record: the request's V2 `id` when it has one,
/// else one generated for the call.
pub const EXT_INFERENCE_ID: &str = "inferenceid";
/// Extension attribute: the served model's name (the ModelDeployment's name).
pub const EXT_MODEL: &str = "model";
/// Extension attribute: the model revision this process serves, when told (`--revision`).
pub const EXT_REVISION: &str = "revision";
/// Extension attribute: the protocol of the call, [`PROTOCOL_REST`] or [`PROTOCOL_GRPC`].
pub const EXT_PROTOCOL: &str = "protocol";
/// Extension attribute of a response record: the status of the call, spelled as the `code` label of
/// `tractor_inference_requests_total` (the HTTP status for REST, the gRPC code name for gRPC).
pub const EXT_CODE: &str = "code";
/// Extension attribute, `true` only on a record whose values were left out because its `data` would have
/// serialized to more than `--log-max-bytes`.
pub const EXT_TRUNCATED: &str = "truncated";
/// [`EXT_PROTOCOL`] of a REST call (the same value as the request metrics' `protocol` label).
pub const PROTOCOL_REST: &str = "rest";
/// [`EXT_PROTOCOL`] of a gRPC call (the same value as the request metrics' `protocol` label).
pub const PROTOCOL_GRPC: &str = "grpc";

/// Most records in one POST. 64 records of at most 64 KiB `data` each (the default `--log-max-bytes`) keep one
/// batch body under about 4 MiB, which any collector accepts, while a busy server still sends few requests.
pub const BATCH_RECORDS: usize = 64;
/// How long the first record of a batch waits for company: at low traffic a record reaches the sink within
/// 100 ms; at high traffic batches fill before that.
pub const BATCH_LINGER: Duration = Duration::from_millis(100);
/// Limit on one POST (connect, send, answer). While a POST is pending the queue absorbs new calls; past this the
/// batch is dropped as [`LOG_SINK_ERROR`], so a hanging sink holds at most one batch for 2 s at a time.
pub const POST_TIMEOUT: Duration = Duration::from_secs(2);
/// Calls (two records each) the queue holds. 1024 calls ride out one [`POST_TIMEOUT`] stall at about 500 calls
/// a second, a busy replica, before dropping; with small payloads that is a few MiB.
pub const QUEUE_CALLS: usize = 1024;
/// Bytes of cloned tensor values the queue may hold, whatever the payload size: a call is refused
/// ([`LOG_QUEUE_FULL`]) when others are queued and it would take the total past 64 MiB. One call alone is always
/// accepted, so a large `--log-max-bytes` cannot starve the log.
pub const QUEUE_BYTES: usize = 64 << 20;
/// After SIGTERM, once in-flight requests are answered, how long queued records may take to reach the sink; what
/// is still queued or pending after it is dropped as [`LOG_SINK_ERROR`].
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Fewest JSON bytes one value takes in `data` (a one-digit integer and its comma). A tensor with more than
/// `max_bytes / 2` values cannot fit, so the request path does not clone its values.
const MIN_JSON_BYTES_PER_VALUE: usize = 2;
/// Bookkeeping bytes counted per queued call besides its values (names, shapes, ids).
const CALL_OVERHEAD_BYTES: usize = 512;
/// SplitMix64's increment (2^64 / φ): consecutive states spread over the whole range.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The sink's URL, checked at start-up: `http://` or `https://` (rustls, the platform's web PKI roots) with a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkUrl(reqwest::Url);

impl SinkUrl {
    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for SinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl FromStr for SinkUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<SinkUrl, String> {
        let url = reqwest::Url::parse(s)
            .map_err(|e| format!("payload log URL '{s}' is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "payload log URL '{s}': the scheme must be http or https, not '{}'",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("payload log URL '{s}' has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Credentials in a flag end up in `ps` and the pod spec; a sink needing them belongs behind a proxy.
            return Err(format!(
                "payload log URL '{s}' carries credentials; they are not sent"
            ));
        }
        Ok(SinkUrl(url))
    }
}

/// The share of calls logged, checked at start-up: a finite number in `0..=1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRate(f64);

impl SampleRate {
    /// The rate.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SampleRate {
    type Err = String;

    fn from_str(s: &str) -> Result<SampleRate, String> {
        match s.trim().parse::<f64>() {
            Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(SampleRate(rate)),
            _ => Err(format!(
                "payload log sample rate '{s}' is not a number from 0 to 1"
            )),
        }
    }
}

/// The CloudEvents `source`, checked at start-up: a non-empty URI-reference without spaces or control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSource(String);

impl LogSource {
    /// The default for a model served as `name`: `/v2/models/<name>`, the model's V2 path.
    pub fn for_model(name: &str) -> LogSource {
        LogSource(format!("/v2/models/{name}"))
    }

    /// The source as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LogSource {
    type Err = String;

    fn from_str(s: &str) -> Result<LogSource, String> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "payload log source '{s}' is not a URI-reference: it must be non-empty, without spaces"
            ));
        }
        Ok(LogSource(s.to_owned()))
    }
}

/// What to log and where: the server flags `--log-*`.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The sink.
    pub url: SinkUrl,
    /// The share of calls logged (request and response together).
    pub sample_rate: SampleRate,
    /// Whether request records carry input values.
    pub include_inputs: bool,
    /// Largest serialized `data` of one record with its values.
    pub max_bytes: usize,
    /// CloudEvents `source`.
    pub source: LogSource,
}

/// Who is logging: fixed for the process, written on every record.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The served model's name.
    pub model: String,
    /// The model version answered (`1`).
    pub version: String,
    /// The revision served, when told.
    pub revision: Option<String>,
}

/// Why the payload log could not start.
#[derive(Debug, thiserror::Error)]
#[error("building the payload log's HTTP client: {0}")]
pub struct StartError(#[source] reqwest::Error);

/// Where batches go.
pub trait Sink: Send + Sync + 'static {
    /// POST one batch body; `Ok` only when the sink accepted it (2xx). The caller bounds the time.
    fn post(&self, body: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
}

/// The HTTP sink: one pooled HTTP/1.1 client (rustls for `https://`).
#[derive(Debug)]
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl HttpSink {
    /// A client for `url`.
    pub fn new(url: &SinkUrl) -> Result<HttpSink, StartError> {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .connect_timeout(POST_TIMEOUT)
            // A sink that redirects is misconfigured; following would re-send megabytes.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(StartError)?;
        Ok(HttpSink {
            client,
            url: url.0.clone(),
        })
    }
}

impl Sink for HttpSink {
    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the (small) answer so the connection goes back to the pool.
        let _ = response.bytes().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the sink answered {status}"))
        }
    }
}

/// Unique ids for this process: UUID-shaped, the high half random per process, the low half a counter, so two
/// records never share an id and two processes almost surely never do.
#[derive(Debug)]
struct Ids {
    boot: u64,
    next: AtomicU64,
}

impl Ids {
    fn new(seed: u64) -> Ids {
        // Version 4 in the third group, as consumers that parse ids as UUIDs expect.
        let boot = (splitmix(seed) & !0xF000) | 0x4000;
        Ids {
            boot,
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        // The RFC 4122 variant (10) in the top bits of the counter half; 2^62 ids outlast any process.
        let low = (seq & (u64::MAX >> 2)) | (1 << 63);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            self.boot >> 32,
            (self.boot >> 16) & 0xFFFF,
            self.boot & 0xFFFF,
            low >> 48,
            low & 0xFFFF_FFFF_FFFF
        )
    }
}

/// SplitMix64's output function: a bijection on u64 that spreads any counter into uniform-looking bits.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs between processes and starts: the clock and the pid.
fn process_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ (u64::from(std::process::id()) << 32))
}

/// Sampling: one decision per call, from a lock-free SplitMix64 stream.
#[derive(Debug)]
struct Sampler {
    rate: f64,
    state: AtomicU64,
}

impl Sampler {
    fn new(rate: f64, seed: u64) -> Sampler {
        Sampler {
            rate,
            state: AtomicU64::new(seed),
        }
    }

    fn sample(&self) -> bool {
        // 0 and 1 are exact: never and always, without drawing.
        if self.rate >= 1.0 {
            return true;
        }
        if self.rate <= 0.0 {
            return false;
        }
        let x = splitmix(self.state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed));
        // The top 53 bits as a uniform number in [0, 1).
        ((x >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < self.rate
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Logger {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Call>,
    sampler: Sampler,
    include_inputs: bool,
    max_bytes: usize,
    queued_bytes: Arc<AtomicUsize>,
    ids: Arc<Ids>,
    metrics: Metrics,
}

/// The queue's consumer: batches calls into events and POSTs them. [`Worker::spawn`] starts it.
pub struct Worker<S> {
    rx: mpsc::Receiver<Call>,
    sink: S,
    encoder: Arc<Encoder>,
    queued_bytes: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl<S> fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("source", &self.encoder.source)
            .field("model", &self.encoder.identity.model)
            .finish()
    }
}

/// Turns calls into the JSON batch body; runs on a blocking thread, so a large batch never holds up the runtime
/// threads that answer requests.
struct Encoder {
    identity: Identity,
    source: LogSource,
    max_bytes: usize,
    ids: Arc<Ids>,
}

/// Build the request path's [`Logger`] and the [`Worker`] that drains its queue into the HTTP sink. Nothing runs
/// until [`Worker::spawn`]; the three outcome series are exported at 0 from here on.
pub fn start(
    config: &LogConfig,
    identity: Identity,
    metrics: &Metrics,
) -> Result<(Logger, Worker<HttpSink>), StartError> {
    let sink = HttpSink::new(&config.url)?;
    Ok(with_sink(config, identity, metrics, sink, QUEUE_CALLS))
}

/// [`start`] with any sink and queue size (tests).
fn with_sink<S: Sink>(
    config: &LogConfig,
    identity: Identity,
    metrics: &Metrics,
    sink: S,
    queue_calls: usize,
) -> (Logger, Worker<S>) {
    let (tx, rx) = mpsc::channel(queue_calls.max(1));
    let seed = process_seed();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    for outcome in [LOG_SENT, LOG_QUEUE_FULL, LOG_SINK_ERROR] {
        metrics.payload_log(outcome, 0);
    }
    let ids = Arc::new(Ids::new(seed));
    let logger = Logger {
        shared: Arc::new(Shared {
            tx,
            sampler: Sampler::new(config.sample_rate.get(), splitmix(seed)),
            include_inputs: config.include_inputs,
            max_bytes: config.max_bytes,
            queued_bytes: Arc::clone(&queued_bytes),
            ids: Arc::clone(&ids),
            metrics: metrics.clone(),
        }),
    };
    let worker = Worker {
        rx,
        sink,
        encoder: Arc::new(Encoder {
            identity,
            source: config.source.clone(),
            max_bytes: config.max_bytes,
            ids,
        }),
        queued_bytes,
        metrics: metrics.clone(),
    };
    (logger, worker)
}

impl Logger {
    /// Start capturing one call, when it is sampled; `protocol` is [`PROTOCOL_REST`] or [`PROTOCOL_GRPC`].
    pub fn begin(&self, protocol: &'static str) -> Option<Capture> {
        if !self.shared.sampler.sample() {
            return None;
        }
        // A queue already full (a sink that hangs) would drop the call at the end: count it now and clone nothing.
        if self.shared.tx.capacity() == 0 {
            self.shared.metrics.payload_log(LOG_QUEUE_FULL, 2);
            return None;
        }
        Some(Capture {
            logger: self.clone(),
            protocol,
            received: SystemTime::now(),
            request_id: None,
            inputs: Vec::new(),
            inputs_truncated: false,
            outputs: Vec::new(),
            outputs_truncated: false,
            receipt: None,
        })
    }

    /// The tensors of one record as the request path keeps them: values cloned only when they are wanted and
    /// could fit in `max_bytes`; the flag says whether they were left out for size.
    fn keep<'a>(
        &self,
        tensors: impl Iterator<Item = (&'a str, Datatype, &'a Tensor)> + Clone,
        with_values: bool,
    ) -> (Vec<Logged>, bool) {
        let values: usize = tensors.clone().map(|(_, _, t)| t.len()).sum();
        let fits = values.saturating_mul(MIN_JSON_BYTES_PER_VALUE) <= self.shared.max_bytes;
        let kept = tensors
            .map(|(name, datatype, tensor)| Logged {
                name: name.to_owned(),
                datatype,
                shape: tensor.shape().to_vec(),
                values: (with_values && fits).then(|| tensor.clone()),
            })
            .collect();
        (kept, with_values && !fits)
    }
}

/// One tensor of a record.
struct Logged {
    name: String,
    datatype: Datatype,
    shape: Vec<usize>,
    /// `None` when the values are not logged (`--log-include-inputs=false` or too large).
    values: Option<Tensor>,
}

impl Logged {
    fn bytes(&self) -> usize {
        self.values
            .as_ref()
            .map_or(0, |t| t.len() * t.datum_type().size_of())
    }

    /// `{name, datatype, shape, data}`, `data` only with values.
    fn to_json(&self, with_values: bool) -> Value {
        let mut tensor = Map::new();
        tensor.insert("name".into(), Value::from(self.name.as_str()));
        tensor.insert("datatype".into(), Value::from(self.datatype.as_str()));
        tensor.insert("shape".into(), Value::from(self.shape.clone()));
        if with_values
            && let Some(values) = &self.values
            && let Ok(data) = codec::tensor_to_json(self.datatype, values)
        {
            tensor.insert("data".into(), Value::from(data));
        }
        Value::Object(tensor)
    }
}

/// One sampled call being captured on the request path; [`Capture::finish`] queues it.
pub struct Capture {
    logger: Logger,
    protocol: &'static str,
    received: SystemTime,
    request_id: Option<String>,
    inputs: Vec<Logged>,
    inputs_truncated: bool,
    outputs: Vec<Logged>,
    outputs_truncated: bool,
    receipt: Option<String>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("protocol", &self.protocol)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// The request's V2 `id`, known before its tensors are decoded (gRPC), so a call refused while decoding is
    /// still linked by it.
    pub fn id(&mut self, id: &str) {
        if !id.is_empty() {
            self.request_id = Some(id.to_owned());
        }
    }

    /// The decoded request: its V2 `id` and its inputs, in signature order.
    pub fn request(&mut self, id: Option<&str>, signature: &Signature, inputs: &[Tensor]) {
        self.request_id = id.map(str::to_owned);
        let tensors = signature
            .inputs
            .iter()
            .zip(inputs)
            .map(|(spec, t)| (spec.name.as_str(), spec.datatype, t));
        let (inputs, truncated) = self.logger.keep(tensors, self.logger.shared.include_inputs);
        self.inputs = inputs;
        self.inputs_truncated = truncated;
    }

    /// The answer: the outputs returned to the client (`selected`, indices into the signature's outputs) taken
    /// from `outputs`, and the receipt when there is one.
    pub fn response(
        &mut self,
        signature: &Signature,
        selected: impl Iterator<Item = usize> + Clone,
        outputs: &[Tensor],
        receipt: Option<&str>,
    ) {
        let tensors = selected.filter_map(|ix| {
            let spec = signature.outputs.get(ix)?;
            Some((spec.name.as_str(), spec.datatype, outputs.get(ix)?))
        });
        let (outputs, truncated) = self.logger.keep(tensors, true);
        self.outputs = outputs;
        self.outputs_truncated = truncated;
        self.receipt = receipt.map(str::to_owned);
    }

    /// Queue the call with its status (`code`, spelled as the request metrics' label) and error message, if it
    /// failed. Never waits: a full queue drops the call's two records and counts them as [`LOG_QUEUE_FULL`].
    pub fn finish(self, code: &str, error: Option<String>) {
        let shared = Arc::clone(&self.logger.shared);
        let inference_id = match self.request_id.clone() {
            Some(id) => id,
            None => shared.ids.next(),
        };
        // A failed call has no outputs, whatever was captured before it failed.
        let (outputs, outputs_truncated) = if error.is_some() {
            (Vec::new(), false)
        } else {
            (self.outputs, self.outputs_truncated)
        };
        let call = Call {
            inference_id,
            protocol: self.protocol,
            received: self.received,
            answered: SystemTime::now(),
            request_id: self.request_id,
            inputs: self.inputs,
            inputs_truncated: self.inputs_truncated,
            outputs,
            outputs_truncated,
            receipt: self.receipt,
            code: code.to_owned(),
            error,
        };
        let cost = call.bytes();
        let before = shared.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        if before > 0 && before + cost > QUEUE_BYTES {
            shared.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            shared.metrics.payload_log(LOG_QUEUE_FULL, 2);
            return;
        }
        if shared.tx.try_send(call).is_err() {
            // Full, or closed because the server is stopping: either way the records are dropped, not waited for.
            shared.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            shared.metrics.payload_log(LOG_QUEUE_FULL, 2);
        }
    }
}

/// A captured call in the queue: both records' material, not yet serialized.
struct Call {
    inference_id: String,
    protocol: &'static str,
    received: SystemTime,
    answered: SystemTime,
    request_id: Option<String>,
    inputs: Vec<Logged>,
    inputs_truncated: bool,
    outputs: Vec<Logged>,
    outputs_truncated: bool,
    receipt: Option<String>,
    code: String,
    error: Option<String>,
}

impl Call {
    /// What the call holds, as counted against [`QUEUE_BYTES`].
    fn bytes(&self) -> usize {
        CALL_OVERHEAD_BYTES
            + self
                .inputs
                .iter()
                .chain(&self.outputs)
                .map(Logged::bytes)
                .sum::<usize>()
    }
}

/// Length of a value's compact JSON, without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail; a failure would only make the size 0, never lose the record.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// RFC 3339 UTC time with microseconds, as CloudEvents `time` wants it.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_micros()
    )
}

impl Encoder {
    /// The batch body: a JSON array of two events per call.
    fn body(&self, batch: Vec<Call>) -> Result<Vec<u8>, serde_json::Error> {
        let events: Vec<Value> = batch.into_iter().flat_map(|c| self.events(c)).collect();
        serde_json::to_vec(&events)
    }

    /// The two events of a call: the request record, then the response record.
    fn events(&self, call: Call) -> [Value; 2] {
        let envelope = |kind: &str, time: SystemTime| {
            let mut event = Map::new();
            event.insert("specversion".into(), Value::from(SPEC_VERSION));
            event.insert("id".into(), Value::from(self.ids.next()));
            event.insert("source".into(), Value::from(self.source.as_str()));
            event.insert("type".into(), Value::from(kind));
            event.insert("time".into(), Value::from(rfc3339(time)));
            event.insert("datacontenttype".into(), Value::from(DATA_CONTENT_TYPE));
            event.insert(
                EXT_INFERENCE_ID.into(),
                Value::from(call.inference_id.as_str()),
            );
            event.insert(EXT_MODEL.into(), Value::from(self.identity.model.as_str()));
            if let Some(revision) = &self.identity.revision {
                event.insert(EXT_REVISION.into(), Value::from(revision.as_str()));
            }
            event.insert(EXT_PROTOCOL.into(), Value::from(call.protocol));
            event
        };
        let request_data = |with_values: bool| {
            let mut data = Map::new();
            if let Some(id) = &call.request_id {
                data.insert("id".into(), Value::from(id.as_str()));
            }
            let inputs = call.inputs.iter().map(|t| t.to_json(with_values)).collect();
            data.insert("inputs".into(), Value::Array(inputs));
            Value::Object(data)
        };
        let response_data = |with_values: bool| {
            let mut data = Map::new();
            if let Some(error) = &call.error {
                data.insert("error".into(), Value::from(error.as_str()));
                return Value::Object(data);
            }
            data.insert(
                "model_name".into(),
                Value::from(self.identity.model.as_str()),
            );
            data.insert(
                "model_version".into(),
                Value::from(self.identity.version.as_str()),
            );
            if let Some(id) = &call.request_id {
                data.insert("id".into(), Value::from(id.as_str()));
            }
            if let Some(receipt) = &call.receipt {
                let mut parameters = Map::new();
                parameters.insert(
                    crate::receipt::PARAMETER.into(),
                    Value::from(receipt.as_str()),
                );
                data.insert("parameters".into(), Value::Object(parameters));
            }
            let outputs = call
                .outputs
                .iter()
                .map(|t| t.to_json(with_values))
                .collect();
            data.insert("outputs".into(), Value::Array(outputs));
            Value::Object(data)
        };
        let mut request = envelope(TYPE_REQUEST, call.received);
        self.attach(&mut request, call.inputs_truncated, request_data);
        let mut response = envelope(TYPE_RESPONSE, call.answered);
        response.insert(EXT_CODE.into(), Value::from(call.code.as_str()));
        self.attach(&mut response, call.outputs_truncated, response_data);
        [Value::Object(request), Value::Object(response)]
    }

    /// Put `data` on the event: with its values when they fit in `max_bytes` (compact JSON of the whole `data`
    /// object), else without any values and with `truncated: true`.
    fn attach(
        &self,
        event: &mut Map<String, Value>,
        truncated: bool,
        data: impl Fn(bool) -> Value,
    ) {
        let mut truncated = truncated;
        let mut value = data(!truncated);
        if !truncated && json_len(&value) > self.max_bytes {
            truncated = true;
            value = data(false);
        }
        if truncated {
            event.insert(EXT_TRUNCATED.into(), Value::Bool(true));
        }
        event.insert("data".into(), value);
    }
}

impl<S: Sink> Worker<S> {
    /// Start the worker on the current runtime; the [`Flusher`] stops it.
    pub fn spawn(self) -> Flusher {
        let (stop, stopping) = watch::channel(None);
        let task = tokio::spawn(self.run(stopping));
        Flusher { stop, task }
    }

    /// Take a call off the queue, releasing its bytes.
    fn took(&self, call: Call) -> Call {
        self.queued_bytes.fetch_sub(call.bytes(), Ordering::Relaxed);
        call
    }

    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let batch_calls = (BATCH_RECORDS / 2).max(1);
        'batches: loop {
            let first = tokio::select! {
                biased;
                call = self.rx.recv() => match call {
                    Some(call) => self.took(call),
                    None => break 'batches,
                },
                _ = stop.wait_for(Option::is_some) => break 'batches,
            };
            let mut batch = vec![first];
            let linger = tokio::time::sleep(BATCH_LINGER);
            tokio::pin!(linger);
            let mut stopping = false;
            while batch.len() < batch_calls {
                tokio::select! {
                    biased;
                    call = self.rx.recv() => match call {
                        Some(call) => batch.push(self.took(call)),
                        None => break,
                    },
                    _ = &mut linger => break,
                    _ = stop.wait_for(Option::is_some) => {
                        stopping = true;
                        break;
                    }
                }
            }
            self.send(batch, &mut stop).await;
            if stopping {
                break;
            }
        }
        self.drain(&mut stop, batch_calls).await;
    }

    /// After the stop: refuse new calls, send what is queued until the flush deadline, count the rest as dropped.
    async fn drain(&mut self, stop: &mut watch::Receiver<Option<Instant>>, batch_calls: usize) {
        self.rx.close();
        let deadline = (*stop.borrow()).unwrap_or_else(|| Instant::now() + FLUSH_TIMEOUT);
        loop {
            let mut batch = Vec::new();
            while batch.len() < batch_calls {
                match self.rx.try_recv() {
                    Ok(call) => batch.push(self.took(call)),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                self.metrics
                    .payload_log(LOG_SINK_ERROR, 2 * batch.len() as u64);
                continue;
            }
            self.send(batch, stop).await;
        }
    }

    /// POST one batch within [`POST_TIMEOUT`] (or the flush deadline, when stopping) and count the outcome.
    async fn send(&self, batch: Vec<Call>, stop: &mut watch::Receiver<Option<Instant>>) {
        let records = 2 * batch.len() as u64;
        let encoder = Arc::clone(&self.encoder);
        let body = tokio::task::spawn_blocking(move || encoder.body(batch)).await;
        let sent = match body {
            Ok(Ok(body)) => {
                tokio::select! {
                    result = tokio::time::timeout(POST_TIMEOUT, self.sink.post(body)) => match result {
                        Ok(Ok(())) => true,
                        Ok(Err(error)) => {
                            tracing::debug!(error = %error, records, "payload log sink failed");
                            false
                        }
                        Err(_) => {
                            tracing::debug!(records, "payload log sink timed out");
                            false
                        }
                    },
                    _ = flush_deadline(stop) => false,
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "payload log batch did not serialize");
                false
            }
            Err(error) => {
                tracing::debug!(error = %error, "payload log encoder failed");
                false
            }
        };
        let outcome = if sent { LOG_SENT } else { LOG_SINK_ERROR };
        self.metrics.payload_log(outcome, records);
    }
}

/// Resolves at the flush deadline once one is set; never while the server runs.
async fn flush_deadline(stop: &mut watch::Receiver<Option<Instant>>) {
    let deadline = match stop.wait_for(Option::is_some).await {
        Ok(deadline) => *deadline,
        Err(_) => None,
    };
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Stops the [`Worker`] on shutdown, giving queued records a bounded time to reach the sink.
#[derive(Debug)]
pub struct Flusher {
    stop: watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    /// Stop batching, send what is queued until `bound` has passed, then return (at most `bound` and a little).
    pub async fn flush(self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let _ = self.stop.send(Some(deadline));
        // The worker honours the deadline itself; the margin only guards against a bug keeping it busy.
        let mut task = self.task;
        if tokio::time::timeout_at(deadline + Duration::from_millis(100), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;
    use tractor_model::TensorSpec;

    use super::*;

    /// What the test sink does with a batch.
    #[derive(Clone, Copy)]
    enum Answer {
        Accept,
        Refuse,
        Hang,
    }

    /// A sink that hands every batch it is given to the test, then answers as told.
    struct TestSink {
        batches: mpsc::UnboundedSender<Vec<Value>>,
        answer: Answer,
    }

    impl Sink for TestSink {
        async fn post(&self, body: Vec<u8>) -> Result<(), String> {
            let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
            let _ = self.batches.send(batch);
            match self.answer {
                Answer::Accept => Ok(()),
                Answer::Refuse => Err("503".into()),
                Answer::Hang => std::future::pending().await,
            }
        }
    }

    fn signature() -> Signature {
        let spec = |name: &str, datatype, shape: &[i64]| TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        };
        Signature {
            inputs: vec![spec("x", Datatype::Fp32, &[-1, 3])],
            outputs: vec![
                spec("label", Datatype::Int64, &[-1]),
                spec("probabilities", Datatype::Fp32, &[-1, 2]),
            ],
            notes: vec![],
        }
    }

    fn config(sample_rate: f64, include_inputs: bool, max_bytes: usize) -> LogConfig {
        LogConfig {
            url: "http://127.0.0.1:9/log".parse().unwrap(),
            sample_rate: SampleRate(sample_rate),
            include_inputs,
            max_bytes,
            source: "/apis/serving.tractor.dev/v1alpha1/namespaces/ns/modeldeployments/digits"
                .parse()
                .unwrap(),
        }
    }

    fn identity() -> Identity {
        Identity {
            model: "digits".into(),
            version: "1".into(),
            revision: Some("3f9a1c0b7e".into()),
        }
    }

    struct Harness {
        logger: Logger,
        worker: Option<Worker<TestSink>>,
        batches: mpsc::UnboundedReceiver<Vec<Value>>,
        metrics: Metrics,
    }

    fn harness(config: &LogConfig, answer: Answer, queue_calls: usize) -> Harness {
        let metrics = Metrics::new("digits", "tract_onnx", "abc", None).unwrap();
        let (tx, batches) = mpsc::unbounded_channel();
        let sink = TestSink {
            batches: tx,
            answer,
        };
        let (logger, worker) = with_sink(config, identity(), &metrics, sink, queue_calls);
        Harness {
            logger,
            worker: Some(worker),
            batches,
            metrics,
        }
    }

    fn counted(metrics: &Metrics, outcome: &str) -> u64 {
        let prefix =
            format!(r#"tractor_payload_log_records_total{{model="digits",outcome="{outcome}"}} "#);
        let text = metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{prefix} not in {text}"))
            .parse()
            .unwrap()
    }

    /// One answered call of `rows` rows through the capture API, as the front ends drive it.
    fn call(logger: &Logger, id: Option<&str>, rows: usize, failed: Option<&str>) {
        let Some(mut capture) = logger.begin(PROTOCOL_REST) else {
            return;
        };
        let values: Vec<f32> = (0..rows * 3).map(|v| v as f32 + 0.5).collect();
        let input = Tensor::from_shape(&[rows, 3], &values).unwrap();
        capture.request(id, &signature(), &[input]);
        if let Some(error) = failed {
            capture.finish("400", Some(error.into()));
            return;
        }
        let labels: Vec<i64> = (0..rows as i64).collect();
        let probabilities: Vec<f32> = (0..rows).flat_map(|_| [0.25f32, 0.75]).collect();
        let outputs = [
            Tensor::from_shape(&[rows], &labels).unwrap(),
            Tensor::from_shape(&[rows, 2], &probabilities).unwrap(),
        ];
        capture.response(&signature(), [0, 1].into_iter(), &outputs, Some("receipt"));
        capture.finish("200", None);
    }

    /// Batches until `records` records have arrived.
    async fn receive(
        batches: &mut mpsc::UnboundedReceiver<Vec<Value>>,
        records: usize,
    ) -> Vec<Vec<Value>> {
        let mut got = Vec::new();
        let mut seen = 0;
        while seen < records {
            let batch = batches.recv().await.unwrap();
            seen += batch.len();
            got.push(batch);
        }
        got
    }

    #[test]
    fn flags_are_checked_at_start_up() {
        for good in [
            "http://sink:8080/events",
            "https://logs.example.com",
            "http://127.0.0.1:9",
        ] {
            assert!(good.parse::<SinkUrl>().is_ok(), "{good} refused");
        }
        for bad in [
            "",
            "sink:8080",
            "ftp://sink/",
            "file:///tmp/x",
            "http://",
            "http://u:p@sink/",
        ] {
            assert!(bad.parse::<SinkUrl>().is_err(), "{bad} accepted");
        }
        for good in ["0", "1", "0.25", "1.0"] {
            assert!(good.parse::<SampleRate>().is_ok(), "{good} refused");
        }
        for bad in ["-0.1", "1.01", "NaN", "inf", "half", ""] {
            assert!(bad.parse::<SampleRate>().is_err(), "{bad} accepted");
        }
        assert!(
            "/apis/x/namespaces/ns/modeldeployments/m"
                .parse::<LogSource>()
                .is_ok()
        );
        assert!("urn:tractor:m".parse::<LogSource>().is_ok());
        for bad in ["", "a b", "a\nb"] {
            assert!(bad.parse::<LogSource>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(LogSource::for_model("digits").as_str(), "/v2/models/digits");
    }

    #[test]
    fn sampling_is_exact_at_0_and_1_and_proportional_between() {
        let n = 100_000;
        let share = |rate: f64| {
            let sampler = Sampler::new(rate, 42);
            (0..n).filter(|_| sampler.sample()).count() as f64 / n as f64
        };
        assert_eq!(share(0.0), 0.0);
        assert_eq!(share(1.0), 1.0);
        for rate in [0.01, 0.25, 0.5, 0.9] {
            // 100 000 draws: the standard deviation is at most 0.0016, so 0.01 is over six of them.
            assert!((share(rate) - rate).abs() < 0.01, "{rate}: {}", share(rate));
        }
    }

    #[test]
    fn ids_are_unique_and_uuid_shaped() {
        let ids = Ids::new(7);
        let all: Vec<String> = (0..1000).map(|_| ids.next()).collect();
        let unique: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for id in &all[..3] {
            let groups: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
            assert_eq!(&id[14..15], "4", "{id}: version 4");
            assert!(
                matches!(&id[19..20], "8" | "9" | "a" | "b"),
                "{id}: variant"
            );
        }
        assert_ne!(Ids::new(1).next(), Ids::new(2).next());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let at = |secs: u64, micros: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_becomes_a_request_and_a_response_event() {
        let mut log = harness(&config(1.0, true, 65536), Answer::Accept, 16);
        let _flusher = log.worker.take().unwrap().spawn();
        call(&log.logger, Some("req-1"), 2, None);
        let batch = receive(&mut log.batches, 2).await.concat();
        let [request, response] = &batch[..] else {
            panic!("{batch:?}")
        };
        let source = "/apis/serving.tractor.dev/v1alpha1/namespaces/ns/modeldeployments/digits";
        for (event, kind) in [(request, TYPE_REQUEST), (response, TYPE_RESPONSE)] {
            assert_eq!(event["specversion"], "1.0");
            assert_eq!(event["type"], kind);
            assert_eq!(event["source"], source);
            assert_eq!(event["datacontenttype"], "application/json");
            assert_eq!(event[EXT_INFERENCE_ID], "req-1");
            assert_eq!(event[EXT_MODEL], "digits");
            assert_eq!(event[EXT_REVISION], "3f9a1c0b7e");
            assert_eq!(event[EXT_PROTOCOL], "rest");
            assert!(event.get(EXT_TRUNCATED).is_none(), "{event}");
            let time = event["time"].as_str().unwrap();
            assert!(time.ends_with('Z') && time.len() == 27, "{time}");
        }
        assert_ne!(request["id"], response["id"]);
        assert!(request.get(EXT_CODE).is_none());
        assert_eq!(response[EXT_CODE], "200");
        assert_eq!(
            request["data"],
            json!({"id": "req-1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                "data": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]}]})
        );
        assert_eq!(
            response["data"],
            json!({"model_name": "digits", "model_version": "1", "id": "req-1",
                "parameters": {"tractor_receipt": "receipt"},
                "outputs": [
                    {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [2, 2],
                        "data": [0.25, 0.75, 0.25, 0.75]}]})
        );
        assert_eq!(counted(&log.metrics, LOG_SENT), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_id_gets_one_and_a_failed_call_logs_its_error() {
        let mut log = harness(&config(1.0, true, 65536), Answer::Accept, 16);
        let _flusher = log.worker.take().unwrap().spawn();
        call(
            &log.logger,
            None,
            1,
            Some("input 'x': shape [1, 3] needs 3 values, got 2"),
        );
        let batch = receive(&mut log.batches, 2).await.concat();
        let inference_id = batch[0][EXT_INFERENCE_ID].as_str().unwrap();
        assert_eq!(inference_id.len(), 36, "{inference_id}");
        assert_eq!(batch[1][EXT_INFERENCE_ID], inference_id);
        assert!(batch[0]["data"].get("id").is_none());
        assert_eq!(batch[1][EXT_CODE], "400");
        assert_eq!(
            batch[1]["data"],
            json!({"error": "input 'x': shape [1, 3] needs 3 values, got 2"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_inputs_the_request_keeps_names_datatypes_and_shapes() {
        let mut log = harness(&config(1.0, false, 65536), Answer::Accept, 16);
        let _flusher = log.worker.take().unwrap().spawn();
        call(&log.logger, Some("a"), 2, None);
        let batch = receive(&mut log.batches, 2).await.concat();
        assert_eq!(
            batch[0]["data"],
            json!({"id": "a", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3]}]})
        );
        assert!(
            batch[0].get(EXT_TRUNCATED).is_none(),
            "left out by choice, not for size"
        );
        assert_eq!(batch[1]["data"]["outputs"][0]["data"], json!([0, 1]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_over_max_bytes_is_sent_without_values_and_marked_truncated() {
        // The request's data with values is about 100 bytes of JSON, the response's about 250: a limit of 150
        // truncates the response only, found by serializing (both pass the request path's bound of 2 bytes a value).
        let mut log = harness(&config(1.0, true, 150), Answer::Accept, 16);
        let _flusher = log.worker.take().unwrap().spawn();
        call(&log.logger, Some("a"), 2, None);
        // 40 rows: 120 input values cannot fit in 150 bytes, so they are not even cloned.
        call(&log.logger, Some("b"), 40, None);
        let batch = receive(&mut log.batches, 4).await.concat();
        let by = |id: &str, kind: &str| {
            batch
                .iter()
                .find(|e| e[EXT_INFERENCE_ID] == id && e["type"] == kind)
                .unwrap()
                .clone()
        };
        let small_request = by("a", TYPE_REQUEST);
        assert!(
            small_request.get(EXT_TRUNCATED).is_none(),
            "{small_request}"
        );
        assert!(small_request["data"]["inputs"][0].get("data").is_some());
        let response = by("a", TYPE_RESPONSE);
        assert_eq!(response[EXT_TRUNCATED], true, "{response}");
        assert_eq!(
            response["data"]["outputs"],
            json!([{"name": "label", "datatype": "INT64", "shape": [2]},
                {"name": "probabilities", "datatype": "FP32", "shape": [2, 2]}])
        );
        assert_eq!(response["data"]["parameters"]["tractor_receipt"], "receipt");
        let big = by("b", TYPE_REQUEST);
        assert_eq!(big[EXT_TRUNCATED], true, "{big}");
        assert_eq!(
            big["data"],
            json!({"id": "b", "inputs": [{"name": "x", "datatype": "FP32", "shape": [40, 3]}]})
        );
        // The sizes the test relies on.
        assert!(json_len(&small_request["data"]) <= 150);
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_batched_by_count_and_by_time() {
        let mut log = harness(&config(1.0, true, 65536), Answer::Accept, 1024);
        // Queued before the worker runs: they leave in full batches of BATCH_RECORDS.
        for i in 0..100 {
            call(&log.logger, Some(&format!("r{i}")), 1, None);
        }
        let flusher = log.worker.take().unwrap().spawn();
        let sizes: Vec<usize> = receive(&mut log.batches, 200)
            .await
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [64, 64, 64, 8]);
        // A lone call waits BATCH_LINGER for company, then goes alone.
        let before = Instant::now();
        call(&log.logger, Some("alone"), 1, None);
        let batch = receive(&mut log.batches, 2).await;
        assert_eq!(batch.concat().len(), 2);
        assert_eq!(before.elapsed(), BATCH_LINGER);
        assert_eq!(counted(&log.metrics, LOG_SENT), 202);
        flusher.flush(FLUSH_TIMEOUT).await;
        assert_eq!(counted(&log.metrics, LOG_QUEUE_FULL), 0);
        assert_eq!(counted(&log.metrics, LOG_SINK_ERROR), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let log = harness(&config(1.0, true, 65536), Answer::Accept, 4);
        for i in 0..10 {
            call(&log.logger, Some(&format!("r{i}")), 1, None);
        }
        // No worker yet: 4 calls wait, 6 were dropped at once, two records each.
        assert_eq!(counted(&log.metrics, LOG_QUEUE_FULL), 12);
        assert_eq!(counted(&log.metrics, LOG_SENT), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_budget_refuses_a_call_only_behind_others() {
        let log = harness(&config(1.0, true, usize::MAX), Answer::Accept, 16);
        // 28 bytes of values a row (3 FP32 in, one INT64 and 2 FP32 out): each call holds 0.7 × QUEUE_BYTES, so
        // the first, alone, is accepted and the second would pass the budget.
        let rows = QUEUE_BYTES / 40;
        for _ in 0..2 {
            call(&log.logger, None, rows, None);
        }
        assert_eq!(counted(&log.metrics, LOG_QUEUE_FULL), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_or_hanging_sink_drops_batches_and_counts_them() {
        for answer in [Answer::Refuse, Answer::Hang] {
            let mut log = harness(&config(1.0, true, 65536), answer, 8);
            let flusher = log.worker.take().unwrap().spawn();
            for i in 0..40 {
                call(&log.logger, Some(&format!("r{i}")), 1, None);
                // Let the worker take what is queued, as the request path's neighbours would.
                tokio::task::yield_now().await;
            }
            flusher.flush(FLUSH_TIMEOUT).await;
            let (sent, full, failed) = (
                counted(&log.metrics, LOG_SENT),
                counted(&log.metrics, LOG_QUEUE_FULL),
                counted(&log.metrics, LOG_SINK_ERROR),
            );
            assert_eq!(sent, 0);
            assert!(failed > 0);
            assert_eq!(full + failed, 80, "every record counted once");
            let _ = log.batches.try_recv();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn flush_sends_what_is_queued_and_then_refuses() {
        let mut log = harness(&config(1.0, true, 65536), Answer::Accept, 64);
        let flusher = log.worker.take().unwrap().spawn();
        for i in 0..5 {
            call(&log.logger, Some(&format!("r{i}")), 1, None);
        }
        // Stopped before the linger: the flush sends them at once.
        let started = Instant::now();
        flusher.flush(FLUSH_TIMEOUT).await;
        assert!(started.elapsed() < BATCH_LINGER);
        assert_eq!(receive(&mut log.batches, 10).await.concat().len(), 10);
        assert_eq!(counted(&log.metrics, LOG_SENT), 10);
        call(&log.logger, Some("late"), 1, None);
        assert_eq!(counted(&log.metrics, LOG_QUEUE_FULL), 2);
    }

    #[test]
    fn sampling_0_logs_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let log = harness(&config(0.0, true, 65536), Answer::Accept, 4);
            for _ in 0..100 {
                assert!(log.logger.begin(PROTOCOL_GRPC).is_none());
            }
            assert_eq!(counted(&log.metrics, LOG_QUEUE_FULL), 0);
        });
    }

    /// The real HTTP sink against an axum server on loopback: the batch content type and body, and a refusal.
    #[tokio::test]
    async fn the_http_sink_posts_a_cloudevents_batch() {
        use axum::http::{HeaderMap, StatusCode};
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let app = axum::Router::new()
            .route(
                "/ok",
                axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
                    let tx = tx.clone();
                    async move {
                        let kind = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send((kind, body.to_vec()));
                        StatusCode::ACCEPTED
                    }
                }),
            )
            .route(
                "/refuse",
                axum::routing::post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sink = HttpSink::new(&format!("http://{addr}/ok").parse().unwrap()).unwrap();
        sink.post(b"[]".to_vec()).await.unwrap();
        let (kind, body) = rx.recv().await.unwrap();
        assert_eq!(kind, BATCH_CONTENT_TYPE);
        assert_eq!(body, b"[]");
        let refusing = HttpSink::new(&format!("http://{addr}/refuse").parse().unwrap()).unwrap();
        let error = refusing.post(b"[]".to_vec()).await.unwrap_err();
        assert!(error.contains("503"), "{error}");
    }
}
