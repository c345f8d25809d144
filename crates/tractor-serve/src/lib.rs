//! `tractor serve`: the inference sidecar. Loads one model, verifies its digest, optimizes it once per
//! batch bucket, warms it up, then serves the Open Inference Protocol (V2) over REST (with `/metrics`)
//! and gRPC, batching concurrent requests on dedicated threads, until SIGTERM drains it.

pub mod batcher;
pub mod codec;
pub mod drift;
pub mod feedback;
pub mod grpc;
pub mod metrics;
pub mod payload_log;
pub mod receipt;
pub mod rest;
pub mod revision;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tractor_api::names::{GRPC_PORT, HTTP_PORT};
use tractor_model::DatatypeExt;

/// Command-line flags of `tractor serve`; every flag has an environment fallback.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The model file: `.onnx`, or NNEF (a directory or `.nnef.tgz`).
    #[arg(long, env = "TRACTOR_MODEL")]
    pub model: PathBuf,
    /// The model's name in URLs (`/v2/models/{name}`): the ModelDeployment's name.
    #[arg(long, env = "TRACTOR_MODEL_NAME")]
    pub name: String,
    /// The model revision served (the pod's `serving.tractor.dev/revision` label): named in a `tractor-revision`
    /// header on every REST response and the same gRPC response metadata, in the model metadata's
    /// `parameters.revision` and on `tractor_model_info`. The model version stays `1`.
    #[arg(long, env = "TRACTOR_REVISION")]
    pub revision: Option<revision::Revision>,
    /// Expected sha256 of the model file (hex); the server refuses to start on a mismatch.
    #[arg(long, env = "TRACTOR_MODEL_SHA256")]
    pub sha256: Option<String>,
    /// Address of the REST server (V2, health, `/metrics`).
    #[arg(long, env = "TRACTOR_HTTP_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], HTTP_PORT as u16)))]
    pub http_addr: SocketAddr,
    /// Address of the gRPC server (`inference.GRPCInferenceService`).
    #[arg(long, env = "TRACTOR_GRPC_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], GRPC_PORT as u16)))]
    pub grpc_addr: SocketAddr,
    /// Most rows merged into one model run; 1 turns dynamic batching off.
    #[arg(long, env = "TRACTOR_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
    /// How long a request may wait for others to share its batch. 0 merges only what is already
    /// queued, so batching adds no latency at low load and kicks in as the queue fills.
    #[arg(long, env = "TRACTOR_MAX_DELAY_MICROS", default_value_t = 0)]
    pub max_delay_micros: u64,
    /// Inference threads (default: available cores); also the budget a tree ensemble splits one batch across.
    #[arg(long, env = "TRACTOR_THREADS")]
    pub threads: Option<usize>,
    /// Requests that may wait for a thread; beyond it requests are shed with 503 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "TRACTOR_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Largest request body accepted (413 beyond it), also the gRPC message limit.
    #[arg(long, env = "TRACTOR_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// PEM certificate chain: with `--tls-key`, both ports speak TLS only (HTTPS and gRPC over TLS).
    #[arg(long, env = "TRACTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "TRACTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A file holding a bearer token required on model routes (health and `/metrics` stay open).
    #[arg(long, env = "TRACTOR_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Predictions kept for feedback, and labelled outcomes scored, at most.
    #[arg(long, env = "TRACTOR_FEEDBACK_WINDOW", default_value_t = 100_000)]
    pub feedback_window: usize,
    /// Predictions and outcomes older than this many seconds leave the feedback window.
    #[arg(long, env = "TRACTOR_FEEDBACK_MAX_AGE_SECS", default_value_t = 3600)]
    pub feedback_max_age_secs: u64,
    /// Sliding window, in seconds, over which served rows are compared with the artifact's reference statistics
    /// (`tractor_model_input_drift`, `tractor_model_prediction_drift`); 0 turns drift off. An artifact optimized
    /// without a labelled set has no reference, and exports no drift either way.
    #[arg(long, env = "TRACTOR_DRIFT_WINDOW_SECS", default_value_t = 300)]
    pub drift_window_secs: u64,
    /// After SIGTERM, keep serving (not ready) this long so endpoints drop the pod before it stops accepting.
    #[arg(long, env = "TRACTOR_DRAIN_DELAY_MILLIS", default_value_t = 0)]
    pub drain_delay_millis: u64,
    /// Payload logging: the sink's `http://` or `https://` URL, to which sampled inference requests and responses
    /// are POSTed as CloudEvents batches (`application/cloudevents-batch+json`). Absent: no payload logging.
    #[arg(long, env = "TRACTOR_LOG_URL")]
    pub log_url: Option<payload_log::SinkUrl>,
    /// Share of inference calls logged, from 0 to 1; a call's request and response are sampled together.
    #[arg(long, env = "TRACTOR_LOG_SAMPLE_RATE", default_value = "1.0")]
    pub log_sample_rate: payload_log::SampleRate,
    /// Whether request records carry the input values (`false`: names, datatypes and shapes only).
    #[arg(long, env = "TRACTOR_LOG_INCLUDE_INPUTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_include_inputs: bool,
    /// Largest `data` of one record, in bytes of compact JSON; a record over it is sent without its values and
    /// marked `truncated: true`.
    #[arg(long, env = "TRACTOR_LOG_MAX_BYTES", default_value_t = 65536)]
    pub log_max_bytes: usize,
    /// CloudEvents `source` of the records, a URI-reference (the operator passes the ModelDeployment's API path);
    /// default `/v2/models/<name>`.
    #[arg(long, env = "TRACTOR_LOG_SOURCE")]
    pub log_source: Option<payload_log::LogSource>,
}

/// Failures that stop the server, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading, verifying or optimizing the model.
    #[error("loading the model: {0}")]
    LoadModel(#[source] tractor_model::Error),
    /// The warm-up inference failed.
    #[error("warm-up inference: {0}")]
    WarmUp(String),
    /// Reading the auth token file.
    #[error("reading the auth token file {path}: {source}")]
    ReadToken {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// Registering metrics.
    #[error("registering metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// Binding a port, starting threads or the runtime.
    #[error("starting: {0}")]
    Start(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[source] tonic::transport::Error),
    /// Starting the payload log (its HTTP client).
    #[error("payload log: {0}")]
    PayloadLog(#[source] payload_log::StartError),
}

impl Error {
    /// A short, bounded category for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::LoadModel(e) => e.category(),
            Error::WarmUp(_) => "warm_up",
            Error::ReadToken { .. } => "auth",
            Error::Tls(_) => "tls",
            Error::Metrics(_) => "metrics",
            Error::Start(_) => "start",
            Error::Grpc(_) => "grpc",
            Error::PayloadLog(_) => "payload_log",
        }
    }
}

/// Everything built before the ports open: the shared server and the front ends' settings.
pub struct Prepared {
    /// The shared server (ready already).
    pub server: Arc<server::Server>,
    /// REST settings.
    pub rest: rest::RestConfig,
    /// TLS for both ports, when configured.
    pub tls: Option<tls::TlsFiles>,
    /// The payload log's background sender, when `--log-url` is set; [`serve`] runs it and flushes it on SIGTERM.
    pub payload_log: Option<payload_log::Worker<payload_log::HttpSink>>,
}

/// Load, verify, optimize and warm up the model; returns a ready server.
pub fn prepare(args: &ServeArgs) -> Result<Prepared, Error> {
    let started = Instant::now();
    let ServeArgs {
        model,
        name,
        revision,
        sha256,
        http_addr: _,
        grpc_addr: _,
        max_batch_size,
        max_delay_micros,
        threads,
        queue_capacity,
        max_body_bytes,
        tls_cert,
        tls_key,
        auth_token_file,
        feedback_window,
        feedback_max_age_secs,
        drift_window_secs,
        drain_delay_millis: _,
        log_url,
        log_sample_rate,
        log_include_inputs,
        log_max_bytes,
        log_source,
    } = args;
    // Checked before the model loads, so a bad Secret fails fast with the file named.
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(tls::TlsFiles::load(cert, key)?),
        _ => None,
    };
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // The same budget bounds the ops that split a batch across threads (tree ensembles), before anything runs.
    tractor_model::set_threads(threads);
    let loading = Instant::now();
    let loaded = tractor_model::load(model, sha256.as_deref()).map_err(Error::LoadModel)?;
    let load = loading.elapsed();
    let runner = loaded.runner(*max_batch_size).map_err(Error::LoadModel)?;
    let optimize = loading.elapsed() - load;
    let signature = loaded.signature().clone();
    let buckets = runner.buckets();

    // Warm-up: one zero input through a session, so the first request pays no lazy initialisation.
    let zeros = signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|d| if *d < 0 { 1 } else { *d as usize })
                .collect();
            tractor_model::Tensor::zero_dt(spec.datatype.datum(), &shape)
                .map_err(|e| Error::WarmUp(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    runner
        .session()
        .run(zeros)
        .map_err(|e| Error::WarmUp(e.to_string()))?;
    let warm_up = loading.elapsed() - load - optimize;

    let metrics = metrics::Metrics::new(
        name,
        tractor_model::platform(loaded.format()),
        loaded.sha256(),
        revision.as_ref().map(revision::Revision::as_str),
    )
    .map_err(Error::Metrics)?;
    // Drift against the artifact's reference statistics, when it has them; set up before the metrics are shared,
    // so every copy renders the drift gauges.
    let drift = drift::start(
        model,
        loaded.format(),
        Duration::from_secs(*drift_window_secs),
    );
    let metrics = match &drift {
        Some(drift) => metrics
            .with_drift(
                revision.as_ref().map(revision::Revision::as_str),
                Arc::clone(drift),
            )
            .map_err(Error::Metrics)?,
        None => metrics,
    };
    let config = batcher::BatchConfig {
        threads,
        max_batch_size: *max_batch_size,
        max_delay: Duration::from_micros(*max_delay_micros),
        queue_capacity: *queue_capacity,
    };
    let batcher = batcher::Batcher::start(runner, config, metrics.clone()).map_err(Error::Start)?;
    let start_metrics = metrics.clone();
    let feedback = feedback::Feedback::new(feedback::WindowConfig {
        max_count: *feedback_window,
        max_age: Duration::from_secs(*feedback_max_age_secs),
    });
    let (payload_logger, payload_log) = match log_url {
        None => (None, None),
        Some(url) => {
            let config = payload_log::LogConfig {
                url: url.clone(),
                sample_rate: *log_sample_rate,
                include_inputs: *log_include_inputs,
                max_bytes: *log_max_bytes,
                source: log_source
                    .clone()
                    .unwrap_or_else(|| payload_log::LogSource::for_model(name)),
            };
            let identity = payload_log::Identity {
                model: name.clone(),
                version: server::VERSION.to_owned(),
                revision: revision.as_ref().map(|r| r.as_str().to_owned()),
            };
            let (logger, worker) =
                payload_log::start(&config, identity, &metrics).map_err(Error::PayloadLog)?;
            tracing::info!(url = %config.url, sample_rate = %config.sample_rate, include_inputs = config.include_inputs, max_bytes = config.max_bytes, source = %config.source, "payload logging on");
            (Some(logger), Some(worker))
        }
    };
    let server = Arc::new(
        server::Server::new(
            name.clone(),
            tractor_model::platform(loaded.format()),
            loaded.sha256().to_owned(),
            signature,
            metrics,
            batcher,
            feedback,
        )
        .with_revision(revision.clone())
        .with_drift(drift)
        .with_payload_log(payload_logger),
    );
    let auth_token = match auth_token_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| Error::ReadToken {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
    };
    let timings = metrics::StartTimings {
        load: load.as_secs_f64(),
        optimize: optimize.as_secs_f64(),
        warm_up: warm_up.as_secs_f64(),
        total: started.elapsed().as_secs_f64(),
    };
    start_metrics.record_start(&timings);
    // One line that says where the start went, for `kubectl logs`.
    tracing::info!(
        model = %model.display(),
        sha256 = loaded.sha256(),
        buckets = ?buckets,
        load_ms = %format!("{:.1}", timings.load * 1e3),
        optimize_ms = %format!("{:.1}", timings.optimize * 1e3),
        warm_up_ms = %format!("{:.1}", timings.warm_up * 1e3),
        ready_ms = %format!("{:.1}", timings.total * 1e3),
        rss_mib = %metrics::process_rss_bytes()
            .map_or_else(|| "unknown".to_owned(), |bytes| format!("{:.1}", bytes / (1024.0 * 1024.0))),
        "model ready"
    );
    server.set_ready(true);
    Ok(Prepared {
        server,
        rest: rest::RestConfig {
            max_body_bytes: *max_body_bytes,
            auth_token,
        },
        tls,
        payload_log,
    })
}

/// Run `tractor serve` to completion: serve until SIGTERM or SIGINT, then drain and return.
///
/// Backtraces: if `RUST_BACKTRACE`/`RUST_LIB_BACKTRACE` enable them, the process first re-executes
/// itself without them (see [`tractor_model::reexec_without_backtraces`]), since tract is up to 2.5×
/// slower when every internal error captures a backtrace.
pub fn run(args: ServeArgs) -> Result<(), Error> {
    tractor_model::reexec_without_backtraces().map_err(Error::Start)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A subscriber may already be installed by the binary; then that one is used.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let prepared = prepare(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tractor-io")
        .build()
        .map_err(Error::Start)?;
    runtime.block_on(serve(
        prepared,
        args.http_addr,
        args.grpc_addr,
        Duration::from_millis(args.drain_delay_millis),
    ))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Serve REST and gRPC until a shutdown signal; then readiness goes false, in-flight requests finish,
/// and both servers stop.
pub async fn serve(
    prepared: Prepared,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    drain_delay: Duration,
) -> Result<(), Error> {
    let Prepared {
        server,
        rest,
        tls,
        payload_log,
    } = prepared;
    // Started here, on the serving runtime; its queue exists since `prepare`, so nothing is lost before.
    let payload_log = payload_log.map(payload_log::Worker::spawn);
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(Error::Start)?;
    let grpc = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(Error::Start)?;
    tracing::info!(http = %http_addr, grpc = %grpc_addr, tls = tls.is_some(), model = %server.name, revision = server.revision.as_ref().map(revision::Revision::as_str), "serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let app = rest::app(Arc::clone(&server), rest.clone());
    let http_task = match &tls {
        None => {
            // Small request/response pairs: Nagle's algorithm with delayed ACKs would add tens of milliseconds.
            let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(
                axum::serve(http, app)
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            )
        }
        Some(files) => {
            let http = tls::TlsListener::new(http, files.rest_config()).map_err(Error::Start)?;
            tokio::spawn(
                axum::serve(http, app)
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            )
        }
    };
    let grpc_task = tokio::spawn(grpc::serve(
        Arc::clone(&server),
        grpc,
        grpc::GrpcConfig {
            max_message_bytes: rest.max_body_bytes,
            auth_token: rest.auth_token.clone(),
            identity: tls.as_ref().map(tls::TlsFiles::grpc_identity),
        },
        stopped(stop_rx.clone()),
    ));
    shutdown_signal().await;
    tracing::info!("shutdown signal: readiness off, draining in-flight requests");
    server.set_ready(false);
    tokio::time::sleep(drain_delay).await;
    let _ = stop_tx.send(true);
    let http_result = http_task.await;
    let grpc_result = grpc_task.await;
    // Every answered call is queued by now: give the records a short, bounded time to reach the sink.
    if let Some(payload_log) = payload_log {
        payload_log.flush(payload_log::FLUSH_TIMEOUT).await;
    }
    if let Ok(Err(source)) = http_result {
        return Err(Error::Start(source));
    }
    if let Ok(Err(source)) = grpc_result {
        return Err(Error::Grpc(source));
    }
    tracing::info!("drained; exiting");
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small real server for the front ends' tests: the logistic regression fixture, one thread, no batching.

    use clap::Parser;

    use super::{Prepared, ServeArgs, prepare};

    /// Name the fixture is served under.
    pub const MODEL: &str = "logreg";

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// A ready server, parsed from the command line as `tractor serve` would be, told `revision` when given.
    pub fn prepared(revision: Option<&str>) -> Prepared {
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/breast_cancer_logreg.onnx");
        let mut argv = vec![
            "serve".to_owned(),
            "--model".to_owned(),
            model.display().to_string(),
            "--name".to_owned(),
            MODEL.to_owned(),
            "--threads".to_owned(),
            "1".to_owned(),
            "--max-batch-size".to_owned(),
            "1".to_owned(),
        ];
        if let Some(r) = revision {
            argv.extend(["--revision".to_owned(), r.to_owned()]);
        }
        let cli = Cli::try_parse_from(argv).expect("serve args");
        prepare(&cli.serve).expect("prepared server")
    }

    /// One row of the fixture's 30 FP32 features.
    pub fn row() -> Vec<f32> {
        vec![0.5; 30]
    }

    #[test]
    fn a_revision_that_is_no_label_value_is_refused_at_the_command_line() {
        fn argv(revision: &str) -> [&str; 7] {
            [
                "serve",
                "--model",
                "m.onnx",
                "--name",
                MODEL,
                "--revision",
                revision,
            ]
        }
        assert!(Cli::try_parse_from(argv("3f9a1c0b7e")).is_ok());
        for bad in ["", "a b", "canary/1", "x\r\ninjected: 1"] {
            assert!(Cli::try_parse_from(argv(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
