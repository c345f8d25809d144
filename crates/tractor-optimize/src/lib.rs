//! `tractor optimize`: fetch a model, verify it, convert it to tract's NNEF archive, try f32/f16/int8 (and pruning),
//! gate each candidate on accuracy, and write the chosen one atomically with a compact JSON report.
//!
//! What tract 0.23 can do shapes the candidates (measured, see the issue): f16 is tract's own f32→f16 translation,
//! kept only where it is faster; int8 stores matmul weights per output channel as int8 (a ~4× smaller artifact)
//! and the server runs those matmuls on an integer kernel of our own (`tractor-int8`: u8 activations quantized per
//! row at run time × 7-bit weights, accumulated in i32), because tract's own int8 paths are slower than f32 on
//! x86-64 without VNNI. Matmuls that kernel cannot take (and every other op) stay f32. Every candidate is read back
//! through the server's loader, so the gate measures the integer path that will be served. Pruning zeroes the
//! smallest weights; tract runs dense kernels, so it gains size (the archive compresses better), not speed. `auto`
//! keeps the fastest candidate that passes the gate, timings within a noise margin counting as equal (the
//! [`choose`] module's rule), so candidates a timing cannot tell apart are decided by score and size, the same way
//! every run.
//!
//! Determinism: the archive is tract's deterministic tar (fixed mtime, sorted entries) in a gzip with a fixed
//! header; passes are pure functions of the weights. A fixed precision without a labelled set is built exactly as
//! asked, with no gate: that is how serving pods re-derive the artifact the optimize Job already gated and recorded.
//! With an artifact store (`--publish`), the Job publishes the artifact by digest and pods fetch it instead
//! ([`artifact`]).
//!
//! With a labelled set, the artifact also carries the reference statistics the server measures drift against
//! (quantile bins of the first input's features; the labels' distribution, which served predictions are compared
//! with), as the first entry of its tar ([`tractor_model::drift`]). They are a function of the labelled set alone,
//! not of any candidate's outputs (which may differ in a near-tie row from one CPU to another), and covered by the
//! artifact's digest. Without one, the artifact has none. A re-derivation is given the same set as `reference`
//! (no gate) and so writes the same bytes.

pub mod artifact;
mod choose;
mod eval;
pub mod fetch;
mod graph;
mod inspect;
mod passes;
mod progress;
mod reference;

pub use artifact::{FetchArgs, run_fetch};
pub use eval::Dataset;
pub use inspect::{InspectArgs, inspect};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tract_nnef::internal::*;
use tractor_api::report::{Candidate, FailureReason, OptimizeReport};
use tractor_api::{
    Datatype, EvalMetric, EvaluationRequest, OptimizeRequest, Precision, TensorSignature,
};

/// The failure codes of the report, shared with the operator.
pub type Reason = FailureReason;

/// A failed step: the report's reason code and a message for humans. The one error type of this crate: the reason
/// code is its category.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OptError {
    /// The report's reason code.
    pub reason: Reason,
    /// What failed and, where it helps, how to fix it.
    pub message: String,
}

impl OptError {
    /// A failure with its code.
    pub fn new(reason: Reason, message: impl Into<String>) -> OptError {
        OptError {
            reason,
            message: message.into(),
        }
    }
}

impl From<tractor_model::Error> for OptError {
    /// A load that failed keeps the reason the loader gave it, and its message without the path (the report
    /// names the source).
    fn from(e: tractor_model::Error) -> OptError {
        match e {
            tractor_model::Error::LoadModel {
                reason, message, ..
            } => OptError::new(reason, message),
            other => OptError::new(Reason::Internal, other.to_string()),
        }
    }
}

/// `tractor optimize`: the request as one JSON value (`--request`, as the operator's Job passes it) or as
/// individual flags (by hand), plus the options that are the command line's own. Every flag has an environment
/// fallback.
#[derive(clap::Args, Debug, Clone)]
pub struct OptimizeArgs {
    /// The whole request as JSON, as the operator's Job and serving pods pass it
    /// (`{"source":"m.onnx","out":"out","precision":"auto"}`): instead of --source, --out and the flags that
    /// describe the model and its evaluation. Unknown fields are ignored.
    #[arg(
        long,
        env = "TRACTOR_REQUEST",
        value_parser = parse_request,
        conflicts_with_all = REQUEST_FLAGS
    )]
    pub request: Option<OptimizeRequest>,
    /// The model: `https://...`, `http://...` (needs --sha256), `s3://bucket/key`, or a local file or NNEF folder.
    #[arg(long, env = "TRACTOR_SOURCE", required_unless_present = "request")]
    pub source: Option<String>,
    /// Expected sha256 of the source bytes (hex, optionally prefixed `sha256:`).
    #[arg(long, env = "TRACTOR_SHA256")]
    pub sha256: Option<String>,
    /// The source's format (`onnx`, `nnef`, `tflite` or `tensorflow`), as `spec.model.format` declares it; unset:
    /// told from the bytes.
    #[arg(long, env = "TRACTOR_FORMAT", value_parser = parse_format)]
    pub format: Option<tractor_api::ModelFormat>,
    /// `spec.model.inputs` as JSON (`[{"name":"x","datatype":"FP32","shape":[-1,64]}]`): checked against the
    /// model, refused with `InputMismatch` when they disagree, and fixed into an ONNX model's inputs.
    #[arg(long, env = "TRACTOR_INPUTS", value_parser = parse_inputs)]
    pub inputs: Option<DeclaredInputs>,
    /// Folder to write the artifact (`model.nnef.tgz`) to; created if missing.
    #[arg(long, env = "TRACTOR_OUT", required_unless_present = "request")]
    pub out: Option<String>,
    /// Numeric precision of the artifact.
    #[arg(long, env = "TRACTOR_PRECISION", value_parser = precision_parser(), default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// Fraction of each weight tensor to zero, smallest magnitudes first, in [0, 0.95].
    #[arg(long, env = "TRACTOR_PRUNE_SPARSITY")]
    pub prune_sparsity: Option<f64>,
    /// Labelled set: an `.npz` with arrays `x` (inputs) and `y` (labels), by path or URI like --source.
    #[arg(long, env = "TRACTOR_EVAL_DATA")]
    pub eval_data: Option<String>,
    /// Metric of the evaluation.
    #[arg(long, env = "TRACTOR_METRIC", value_parser = metric_parser(), default_value = "accuracy")]
    pub metric: EvalMetric,
    /// Lowest acceptable score (highest for mae/rmse).
    #[arg(long, env = "TRACTOR_MIN_SCORE")]
    pub min_score: Option<f64>,
    /// Largest acceptable loss against the f32 baseline, in metric units (default 0.01; for mae/rmse 1 % of the
    /// baseline).
    #[arg(long, env = "TRACTOR_MAX_REGRESSION")]
    pub max_regression: Option<f64>,
    /// Labelled set read only for the drift reference the artifact carries, with --metric telling classes from
    /// values; no gate. How a serving pod re-derives an artifact built with --eval-data. Ignored with --eval-data.
    #[arg(long, env = "TRACTOR_REFERENCE_DATA")]
    pub reference_data: Option<String>,
    /// Artifact store, `s3://bucket/prefix`: publish the verified artifact at `prefix/sha256/<hex>` and its report
    /// at `prefix/sha256/<hex>.report.json`, once (an object already there at the same size is kept). Settings
    /// from TRACTOR_STORE_*, else AWS_*. A store that cannot be reached or refuses fails the run with
    /// `ArtifactStoreUnavailable` (the artifact in --out is still written).
    #[arg(long, env = "TRACTOR_PUBLISH")]
    pub publish: Option<String>,
    /// Also upload the artifact to `s3://bucket/key`.
    #[arg(long, env = "TRACTOR_UPLOAD")]
    pub upload: Option<String>,
    /// Write the JSON report here (and to /dev/termination-log when it is writable).
    #[arg(long, env = "TRACTOR_REPORT")]
    pub report: Option<PathBuf>,
    /// Batch sizes `auto` times candidates at; the first decides which is fastest, and a candidate counts as
    /// tied with it only when within the noise margin at every one.
    #[arg(
        long,
        env = "TRACTOR_BATCH_SIZES",
        value_delimiter = ',',
        default_value = "1,32"
    )]
    pub batch_sizes: Vec<usize>,
}

/// The flags `--request` stands for: giving one of them beside it (on the command line or in the environment)
/// is refused rather than one of the two silently ignored. Defaults (`--precision auto`, `--metric accuracy`)
/// are no conflict.
const REQUEST_FLAGS: [&str; 13] = [
    "source",
    "sha256",
    "format",
    "inputs",
    "out",
    "precision",
    "prune_sparsity",
    "eval_data",
    "metric",
    "min_score",
    "max_regression",
    "reference_data",
    "publish",
];

/// What a run does besides its request: they concern this process (where its report goes, what it uploads, how
/// long it times), not the artifact, so the operator never sends them.
#[derive(Debug, Clone)]
struct RunOptions {
    upload: Option<String>,
    report: Option<PathBuf>,
    batch_sizes: Vec<usize>,
}

impl OptimizeArgs {
    /// The one request these arguments make (`--request` as given, or built from the individual flags) and the
    /// command line's own options, so the pipeline reads one type whichever way it was asked.
    fn into_parts(self) -> (Result<OptimizeRequest, OptError>, RunOptions) {
        // Destructured in full: a new flag must be placed in the request or the options, never dropped.
        let OptimizeArgs {
            request,
            source,
            sha256,
            format,
            inputs,
            out,
            precision,
            prune_sparsity,
            eval_data,
            metric,
            min_score,
            max_regression,
            reference_data,
            publish,
            upload,
            report,
            batch_sizes,
        } = self;
        let options = RunOptions {
            upload,
            report,
            batch_sizes,
        };
        let request = match (request, source, out) {
            (Some(request), _, _) => Ok(request),
            (None, Some(source), Some(out)) => Ok(OptimizeRequest {
                source,
                sha256,
                format,
                inputs: inputs.map(|declared| declared.0).unwrap_or_default(),
                out,
                precision,
                prune_sparsity,
                // As before the request existed: --metric, --min-score and --max-regression mean nothing
                // without a labelled set.
                evaluation: eval_data.map(|data| EvaluationRequest {
                    data,
                    metric,
                    min_score,
                    max_regression,
                }),
                reference: reference_data.map(|data| EvaluationRequest {
                    data,
                    metric,
                    min_score: None,
                    max_regression: None,
                }),
                publish,
                // The shared cache is the operator's: a run by hand publishes without recording an entry.
                cache_key: None,
            }),
            // clap refuses this; only arguments built by hand get here.
            (None, _, _) => Err(OptError::new(
                Reason::Internal,
                "tractor optimize needs --request, or --source and --out",
            )),
        };
        (request, options)
    }
}

/// The `--inputs` flag: `spec.model.inputs`, in the CRD's own JSON form.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredInputs(pub Vec<tractor_api::InputOverride>);

fn parse_inputs(s: &str) -> Result<DeclaredInputs, String> {
    serde_json::from_str(s)
        .map(DeclaredInputs)
        .map_err(|e| format!("not a JSON list of {{name, datatype, shape}}: {e}"))
}

fn parse_request(s: &str) -> Result<OptimizeRequest, String> {
    OptimizeRequest::from_json(s).map_err(|error| format!("not an optimize request: {error}"))
}

fn parse_format(s: &str) -> Result<tractor_api::ModelFormat, String> {
    tractor_api::ModelFormat::ALL
        .into_iter()
        .find(|format| format.as_str() == s)
        .ok_or_else(|| {
            let known: Vec<&str> = tractor_api::ModelFormat::ALL
                .map(|format| format.as_str())
                .into();
            format!("unknown format `{s}`: expected one of {}", known.join(", "))
        })
}

/// `--precision`: the spec's spellings, each with the help `tractor optimize --help` lists (the CLI's own words: what
/// the command does, where the CRD's docs say what the served model gets).
fn precision_parser() -> impl clap::builder::TypedValueParser<Value = Precision> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let help = |precision: Precision| match precision {
        Precision::Auto => {
            "Time every candidate; keep the fastest that passes the gate (within 10 % at every batch size: the better score, then the smaller artifact)"
        }
        Precision::F32 => "32-bit floats, as trained",
        Precision::F16 => "16-bit floats",
        Precision::Int8 => "int8 weights (per output channel); matmuls on the integer kernel",
    };
    PossibleValuesParser::new(
        Precision::ALL
            .map(|precision| PossibleValue::new(precision.as_str()).help(help(precision))),
    )
    // The possible values are exactly the spellings, so the lookup always finds one.
    .map(|s| {
        Precision::ALL
            .into_iter()
            .find(|precision| precision.as_str() == s)
            .unwrap_or_default()
    })
}

/// Every metric, in the order `tractor optimize --help` lists them.
const METRICS: [EvalMetric; 6] = [
    EvalMetric::Accuracy,
    EvalMetric::F1,
    EvalMetric::Precision,
    EvalMetric::Recall,
    EvalMetric::Mae,
    EvalMetric::Rmse,
];

/// `--metric`: the spec's (serde's) spellings, each with its help. Written out because clap's possible values
/// are `&'static str`; a test holds them to serde's and the CRD's.
fn metric_parser() -> impl clap::builder::TypedValueParser<Value = EvalMetric> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let spelled = |metric: EvalMetric| match metric {
        EvalMetric::Accuracy => (
            "accuracy",
            "Share of rows whose predicted class is the label",
        ),
        EvalMetric::F1 => ("f1", "Macro-averaged F1"),
        EvalMetric::Precision => ("precision", "Macro-averaged precision"),
        EvalMetric::Recall => ("recall", "Macro-averaged recall"),
        EvalMetric::Mae => ("mae", "Mean absolute error (lower is better)"),
        EvalMetric::Rmse => ("rmse", "Root mean squared error (lower is better)"),
    };
    PossibleValuesParser::new(METRICS.map(|metric| {
        let (spelling, help) = spelled(metric);
        PossibleValue::new(spelling).help(help)
    }))
    // Read back through serde, so a value is what the spec's YAML would have meant by it.
    .map(|s| serde_json::from_value(serde_json::Value::String(s)).unwrap_or_default())
}

/// Lowest argmax agreement (or `1 - relative error` for regressions) with the f32 model on the calibration sample.
pub const MIN_AGREEMENT: f64 = 0.99;
/// Rows of the calibration sample used when no labelled set is given.
const CALIBRATION_ROWS: usize = 256;
/// Timing budget per candidate and batch size: enough for a stable median on small models, short for the Job.
/// Spent in interleaved rounds ([`graph::time_interleaved`]), so a slow spell of the machine falls on every
/// candidate alike rather than on whichever was being timed.
const TIMING_BUDGET: Duration = Duration::from_millis(400);

/// Run the whole optimize step; returns the process exit code (0 on success) after writing the report.
pub fn run(args: OptimizeArgs) -> i32 {
    let started = Instant::now();
    let (request, options) = args.into_parts();
    let mut report = OptimizeReport::default();
    if let Err(error) = request.and_then(|request| pipeline(&request, &options, &mut report)) {
        tracing::error!(reason = ?error.reason, "{}", error.message);
        report.reason = Some(error.reason);
        report.message = error.message;
        report.artifact_digest = None;
        report.artifact_uri = None;
        report.size_bytes = None;
        report.precision = None;
    }
    report.duration_millis = Some(started.elapsed().as_millis() as u64);
    progress::finish();
    let json = report.to_compact_json();
    println!("{json}");
    if let Some(path) = &options.report
        && let Err(error) = write_atomic(path, json.as_bytes())
    {
        tracing::error!("writing the report to {}: {error}", path.display());
        return 2;
    }
    // The kubelet reads this file into the container's termination message, where the operator finds the report.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open("/dev/termination-log")
    {
        let _ = file.write_all(json.as_bytes());
    }
    if report.succeeded() { 0 } else { 1 }
}

/// One candidate's artifact and how it did.
struct Built {
    precision: Precision,
    /// Built from the pruned weights.
    pruned: bool,
    bytes: Vec<u8>,
    score: Option<f64>,
    agreement: f64,
    passed: bool,
    /// Median latency per batch size (`--batch-sizes`, in order); empty when not timed.
    latencies: Vec<Duration>,
    /// Half the interquartile range of the runs behind each median.
    spreads: Vec<Duration>,
    /// The model as served, kept until it is timed (auto only; failed candidates too, for the log).
    served: Option<TypedModel>,
}

fn pipeline(
    request: &OptimizeRequest,
    options: &RunOptions,
    report: &mut OptimizeReport,
) -> Result<(), OptError> {
    let sparsity = request.prune_sparsity.unwrap_or(0.0);
    if !(0.0..=0.95).contains(&sparsity) {
        return Err(OptError::new(
            Reason::Internal,
            format!("--prune-sparsity must be in [0, 0.95], got {sparsity}"),
        ));
    }
    // Checked before the work, so a malformed store costs no optimization.
    let store = request
        .publish
        .as_deref()
        .map(artifact::ArtifactStore::parse)
        .transpose()?;
    let out = Path::new(&request.out);
    std::fs::create_dir_all(out).map_err(|error| {
        OptError::new(
            Reason::Internal,
            format!("creating {}: {error}", out.display()),
        )
    })?;
    let work = tempfile::tempdir()
        .map_err(|error| OptError::new(Reason::Internal, format!("work folder: {error}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| OptError::new(Reason::Internal, format!("runtime: {error}")))?;

    // 1. Fetch and verify.
    let source = fetch::Source::parse(&request.source)?;
    let expected = request
        .sha256
        .as_deref()
        .map(|digest| digest.trim().trim_start_matches("sha256:").to_lowercase());
    if source.is_plain_http() && expected.is_none() {
        return Err(OptError::new(
            Reason::FetchFailed,
            "an http:// source needs --sha256: plain HTTP has no other integrity check",
        ));
    }
    progress("fetch", &request.source);
    let path = rt.block_on(fetch::fetch(&request.source, work.path()))?;
    if path.is_file() {
        let found = sha256_file(&path)?;
        report.source_digest = Some(format!("sha256:{found}"));
        if let Some(expected) = &expected
            && *expected != found
        {
            return Err(OptError::new(
                Reason::DigestMismatch,
                format!("source sha256 is {found}, expected {expected}"),
            ));
        }
    } else if expected.is_some() {
        return Err(OptError::new(
            Reason::DigestMismatch,
            "--sha256 pins a file, but the source is a folder",
        ));
    }

    // 2. Convert.
    progress("load", &path.display().to_string());
    // f32 weights even from an int8 artifact: the model is written back as NNEF, which the integer layer has no
    // form in, and every candidate is built from f32 weights.
    let (model, format) = tractor_model::int8_linear::folding_to_f32(|| {
        tractor_model::loader::load_declared(&path, request.format, &request.inputs)
    })?;
    report.format = Some(format);
    let (inputs, outputs) = signature(&model)?;
    report.inputs = inputs;
    report.outputs = outputs;

    // 3. What to measure candidates on.
    let evaluation = request.evaluation.as_ref();
    // Without a labelled set the metric scores nothing; the default only fills the gate's field.
    let metric = evaluation.map_or_else(EvalMetric::default, |evaluation| evaluation.metric);
    let min_score = evaluation.and_then(|evaluation| evaluation.min_score);
    let regression = eval::is_regression(metric);
    let labelled = |uri: &str| -> Result<eval::Dataset, OptError> {
        progress("dataset", uri);
        let dir = work.path().join("dataset");
        std::fs::create_dir_all(&dir)
            .map_err(|error| OptError::new(Reason::Internal, error.to_string()))?;
        let local = rt.block_on(fetch::fetch(uri, &dir)).map_err(|error| {
            OptError::new(error.reason, format!("labelled set: {}", error.message))
        })?;
        eval::load_npz(&local)
    };
    let dataset = evaluation
        .map(|evaluation| labelled(&evaluation.data))
        .transpose()?;
    // The drift reference's labelled set: the evaluation's, or (re-deriving without a gate) the request's.
    let reference_set = match (&dataset, &request.reference) {
        (None, Some(reference)) => Some((
            labelled(&reference.data)?,
            eval::is_regression(reference.metric),
        )),
        _ => None,
    };
    let sample = match &dataset {
        Some(labelled) => labelled.x.clone(),
        None => eval::calibration_sample(&graph::row_shape(&model)?, CALIBRATION_ROWS)?,
    };
    let baseline = graph::Exec::new(&model)?;
    let reference = eval::predict(&baseline, &sample, regression && dataset.is_some())?;
    let regression_ref = regression && dataset.is_some();
    if let Some(labelled) = &dataset {
        let score = eval::score(metric, &reference, &labelled.y)?;
        report.metric = Some(metric);
        report.baseline_score = Some(round6(score));
        if let Some(min) = min_score
            && !meets_min(metric, score, min)
        {
            return Err(OptError::new(
                Reason::BelowMinScore,
                format!(
                    "the unoptimized model scores {score:.4} {metric:?}, below the minimum {min}"
                ),
            ));
        }
    }

    // 4. Candidates: from the pruned weights when pruning is asked for; when none of those passes the gate,
    // pruning is refused and the candidates are built again from the unpruned weights.
    let requested = request.precision;
    let order = match requested {
        Precision::Auto => vec![Precision::F32, Precision::F16, Precision::Int8],
        Precision::Int8 => vec![Precision::Int8, Precision::F16, Precision::F32],
        Precision::F16 => vec![Precision::F16, Precision::F32],
        Precision::F32 => vec![Precision::F32],
    };
    // A fixed precision without a labelled set is a re-derivation (or an explicit order): build it as asked.
    let gated = requested == Precision::Auto || dataset.is_some();
    let timed = requested == Precision::Auto;
    let gate = Gate {
        gated,
        regression,
        baseline: report.baseline_score,
        max_regression: evaluation.and_then(|evaluation| evaluation.max_regression),
        min_score,
        metric,
    };
    let measure = |base: &TypedModel, pruned: bool| -> Result<Vec<Built>, OptError> {
        let mut built: Vec<Built> = Vec::new();
        for &precision in &order {
            progress("candidate", &format!("{precision:?}"));
            let candidate = match precision {
                // An integer-quantized source (TFLite int8) is served as it is: f32 is the model itself.
                Precision::F16 | Precision::Int8
                    if tractor_model::tflite::is_integer_quantized(base) =>
                {
                    Err(OptError::new(
                        Reason::Internal,
                        "the model is integer-quantized already",
                    ))
                }
                Precision::F16 => passes::to_f16(base),
                Precision::Int8 => passes::int8_weights(base),
                _ => Ok(base.clone()),
            };
            let candidate = match candidate {
                Ok(rewritten) => rewritten,
                Err(error) if precision != Precision::F32 => {
                    tracing::warn!("{precision:?} candidate dropped: {}", error.message);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let bytes = graph::archive(&candidate)?;
            let served = graph::reload(&bytes)?;
            let runnable = graph::Exec::new(&served)?;
            let pred = eval::predict(&runnable, &sample, regression_ref)?;
            let agreement = eval::agreement(&reference, &pred);
            let score = match &dataset {
                Some(labelled) => Some(eval::score(metric, &pred, &labelled.y)?),
                None => None,
            };
            let passed = gate.passes(score, agreement);
            let stop = !timed && passed;
            built.push(Built {
                precision,
                pruned,
                bytes,
                score,
                agreement,
                passed,
                latencies: Vec::new(),
                spreads: Vec::new(),
                // Timed once every candidate is built, side by side (see TIMING_BUDGET).
                // Failed candidates too: the log then says what speed the gate turned down.
                served: timed.then_some(served),
            });
            if stop {
                break; // fixed precision: the first that passes in the int8 → f16 → f32 chain
            }
        }
        Ok(built)
    };
    let mut built = if sparsity > 0.0 {
        let (pruned, achieved) = passes::prune(&model, sparsity)?;
        progress(
            "prune",
            &format!("{:.1}% of weights are zero", achieved * 100.0),
        );
        measure(&pruned, true)?
    } else {
        measure(&model, false)?
    };
    let mut refused = None;
    if sparsity > 0.0 && gated && !built.iter().any(|measured| measured.passed) {
        let best = built
            .iter()
            .map(|measured| measured.score.unwrap_or(measured.agreement))
            .fold(f64::NAN, f64::max);
        progress("prune", "refused: no pruned candidate passes the gate");
        refused = Some(format!(
            "pruning to {sparsity} refused: the best pruned candidate scored {best:.4} against {}, beyond the gate; \
             serving the unpruned weights",
            report.baseline_score.map_or_else(
                || "f32's answers".to_owned(),
                |measured| format!("{measured:.4}")
            )
        ));
        built.extend(measure(&model, false)?);
    }
    if timed {
        time_candidates(&mut built, &sample, &options.batch_sizes)?;
    }
    for measured in &built {
        tracing::info!(
            precision = ?measured.precision, pruned = measured.pruned, size = measured.bytes.len(),
            agreement = measured.agreement, score = measured.score, passed = measured.passed,
            latencies_micros = ?measured.latencies.iter().map(|latency| latency.as_micros()).collect::<Vec<_>>(),
            spreads_micros = ?measured.spreads.iter().map(|spread| spread.as_micros()).collect::<Vec<_>>(),
            "candidate measured"
        );
    }

    // 5. Choose: auto by its rule (the `choose` module), a fixed precision the first that passes in its chain.
    let higher_is_better = dataset.is_none() || eval::higher_is_better(metric);
    let (chosen, why) = if timed {
        let rule = choose::Rule {
            margin: choose::NOISE_MARGIN,
            higher_is_better,
            gate: gate_name(dataset.is_some()),
        };
        let figures: Vec<choose::Measured> = built
            .iter()
            .map(|measured| figures(measured, &options.batch_sizes))
            .collect();
        match choose::choose(&figures, &rule) {
            Some(choice) => (Some(&built[choice.winner]), choice.why),
            None => (None, String::new()),
        }
    } else {
        (built.iter().find(|measured| measured.passed), String::new())
    };
    let Some(chosen) = chosen else {
        let why = match &refused {
            Some(refusal) => {
                format!("{refusal}, but no unpruned candidate passes the accuracy gate either")
            }
            None => "no candidate passes the accuracy gate".to_owned(),
        };
        return Err(OptError::new(Reason::BelowMinScore, why));
    };
    report.candidates = built
        .iter()
        .map(|measured| Candidate {
            precision: measured.precision,
            latency_micros: measured
                .latencies
                .first()
                .map(|labelled| round6(labelled.as_secs_f64() * 1e6)),
            score: Some(round6(measured.score.unwrap_or(measured.agreement))),
            passed: measured.passed,
            pruned: measured.pruned,
        })
        .collect();
    let unpruned: Vec<&Built> = built
        .iter()
        .filter(|measured| measured.pruned == chosen.pruned)
        .collect();
    report.message = explain(requested, chosen, &unpruned, dataset.is_some(), &why);
    if let Some(refusal) = refused {
        report.pruning_refused = true;
        report.message = format!("{refusal}; {}", report.message);
    }

    // 6. With a labelled set, the reference statistics drift is measured against go inside the artifact (the
    // `tractor_model::drift` module docs): its digest covers them.
    let reference_from = match (&dataset, &reference_set) {
        (Some(labelled), _) => Some((labelled, regression)),
        (None, Some((labelled, regression))) => Some((labelled, *regression)),
        (None, None) => None,
    };
    let bytes = match reference_from {
        Some((labelled, regression)) => {
            let input = report
                .inputs
                .first()
                .map_or("input", |input| input.name.as_str());
            let input_type = model
                .inputs
                .first()
                .map(|outlet| model.outlet_fact(*outlet).map(|fact| fact.datum_type))
                .transpose()
                .map_err(|error| OptError::new(Reason::Internal, format!("{error:#}")))?
                .unwrap_or(f32::datum_type());
            let recorded = reference::record(input, input_type, labelled, regression)?;
            progress(
                "reference",
                &format!(
                    "{} features, {} rows, {} bins, {}",
                    recorded.features.len(),
                    recorded.rows,
                    recorded
                        .features
                        .iter()
                        .map(|feature| feature.shares.len())
                        .sum::<usize>(),
                    if recorded.predictions.is_some() {
                        "with label bins"
                    } else {
                        "no label bins"
                    }
                ),
            );
            std::borrow::Cow::<[u8]>::Owned(reference::into_artifact(&chosen.bytes, &recorded)?)
        }
        None => std::borrow::Cow::Borrowed(chosen.bytes.as_slice()),
    };

    // 7. Write, atomically.
    let artifact = out.join(tractor_api::names::ARTIFACT_FILE);
    write_atomic(&artifact, &bytes).map_err(|error| {
        OptError::new(
            Reason::Internal,
            format!("writing {}: {error}", artifact.display()),
        )
    })?;
    let artifact_hex = hex::encode(Sha256::digest(&bytes));
    report.artifact_digest = Some(format!("sha256:{artifact_hex}"));
    report.size_bytes = Some(bytes.len() as i64);
    report.precision = Some(chosen.precision);
    report.optimized_score = chosen.score.map(round6);
    if let Some(uri) = &options.upload {
        progress("upload", uri);
        rt.block_on(fetch::upload(uri, &artifact))?;
    }
    if let Some(store) = &store {
        // The file as written, checked again: the store gets exactly what `out` holds.
        let written = std::fs::read(&artifact).map_err(|error| {
            OptError::new(
                Reason::Internal,
                format!("reading {}: {error}", artifact.display()),
            )
        })?;
        let found = hex::encode(Sha256::digest(&written));
        if found != artifact_hex {
            return Err(OptError::new(
                Reason::Internal,
                format!(
                    "{} reads back with sha256 {found}, not the {artifact_hex} written",
                    artifact.display()
                ),
            ));
        }
        report.artifact_uri = Some(store.uri_of(&store.artifact_key(&artifact_hex)));
        // The report as the store keeps it beside the artifact: this one, less the run's total time.
        let published_report = serde_json::to_vec(&*report)
            .map_err(|error| OptError::new(Reason::Internal, format!("report as JSON: {error}")))?;
        rt.block_on(artifact::publish(
            store,
            written,
            &artifact_hex,
            published_report.clone(),
        ))?;
        if let Some(key) = &request.cache_key {
            rt.block_on(artifact::record_cache(store, key, published_report))?;
        }
    }
    Ok(())
}

/// The accuracy gate one candidate must pass.
struct Gate {
    /// Whether there is a gate at all (a fixed precision without a labelled set is built as asked).
    gated: bool,
    regression: bool,
    baseline: Option<f64>,
    max_regression: Option<f64>,
    min_score: Option<f64>,
    metric: EvalMetric,
}

impl Gate {
    /// Whether a candidate with this score (on the labelled set) or agreement (with f32) passes.
    fn passes(&self, score: Option<f64>, agreement: f64) -> bool {
        if !self.gated {
            return true;
        }
        match (score, self.baseline) {
            (Some(s), Some(b)) => {
                let max = self.max_regression.unwrap_or(if self.regression {
                    0.01 * b.abs()
                } else {
                    0.01
                });
                let loss = if self.regression { s - b } else { b - s };
                loss <= max + 1e-9 && self.min_score.is_none_or(|m| meets_min(self.metric, s, m))
            }
            _ => agreement >= MIN_AGREEMENT,
        }
    }
}

/// Time every candidate built, at each batch size, interleaved ([`graph::time_interleaved`]), and free the
/// served models.
fn time_candidates(
    built: &mut [Built],
    sample: &Tensor,
    batch_sizes: &[usize],
) -> Result<(), OptError> {
    let timed: Vec<usize> = (0..built.len())
        .filter(|ix| built[*ix].served.is_some())
        .collect();
    for &batch_size in batch_sizes {
        progress("timing", &format!("batch {batch_size}"));
        let input = batch_of(sample, batch_size)?;
        let plans = timed
            .iter()
            .filter_map(|ix| built[*ix].served.as_ref())
            .map(|served| graph::Exec::with_batch(served, batch_size))
            .collect::<Result<Vec<_>, _>>()?;
        let timings = graph::time_interleaved(&plans, &input, TIMING_BUDGET)?;
        for (ix, timing) in timed.iter().zip(timings) {
            built[*ix].latencies.push(timing.median);
            built[*ix].spreads.push(timing.spread);
        }
    }
    for measured in built.iter_mut() {
        measured.served = None;
    }
    Ok(())
}

/// A built candidate as `auto`'s rule sees it: its timings at each batch size (the first decides), score, size.
fn figures(measured: &Built, batch_sizes: &[usize]) -> choose::Measured {
    choose::Measured {
        precision: measured.precision,
        pruned: measured.pruned,
        // Only candidates that passed compete; those that failed are timed for the log alone.
        passed: measured.passed && !measured.latencies.is_empty(),
        timings: batch_sizes
            .iter()
            .zip(measured.latencies.iter().zip(&measured.spreads))
            .map(|(batch, (latency, spread))| choose::Timed {
                batch: *batch,
                latency: *latency,
                spread: *spread,
            })
            .collect(),
        score: measured.score.unwrap_or(measured.agreement),
        bytes: measured.bytes.len(),
    }
}

/// The gate's name in messages.
fn gate_name(labelled: bool) -> &'static str {
    if labelled {
        "the accuracy gate"
    } else {
        "the calibration agreement gate"
    }
}

/// `status.model.message`: what was chosen and why (`why` is auto's reason), and which candidates failed the gate.
fn explain(
    requested: Precision,
    chosen: &Built,
    built: &[&Built],
    labelled: bool,
    why: &str,
) -> String {
    let gate = gate_name(labelled);
    let failed: Vec<String> = built
        .iter()
        .filter(|b| !b.passed)
        .map(|b| format!("{:?}", b.precision).to_lowercase())
        .collect();
    let failed = if failed.is_empty() {
        String::new()
    } else {
        format!("; failed {gate}: {}", failed.join(", "))
    };
    let p = format!("{:?}", chosen.precision).to_lowercase();
    match requested {
        Precision::Auto => format!("auto chose {p}: {why}{failed}"),
        r if r == chosen.precision => format!("{p} as requested{failed}"),
        r => format!(
            "fell back from {} to {p}{failed}",
            format!("{r:?}").to_lowercase()
        ),
    }
}

fn meets_min(metric: EvalMetric, score: f64, min: f64) -> bool {
    if eval::higher_is_better(metric) {
        score >= min
    } else {
        score <= min
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// `rows` rows taken from the sample, repeating it when it is shorter.
fn batch_of(sample: &Tensor, rows: usize) -> Result<Tensor, OptError> {
    let have = sample.shape().first().copied().unwrap_or(0).max(1);
    let mut parts = Vec::new();
    let mut left = rows;
    while left > 0 {
        let n = left.min(have);
        parts.push(
            sample
                .slice(0, 0, n)
                .map_err(|e| OptError::new(Reason::Internal, e.to_string()))?,
        );
        left -= n;
    }
    Tensor::stack_tensors(0, &parts).map_err(|e| OptError::new(Reason::Internal, e.to_string()))
}

fn progress(stage: &str, what: &str) {
    progress::step(stage, what);
    tracing::debug!(stage, "{what}");
}

fn sha256_file(path: &Path) -> Result<String, OptError> {
    let bytes = std::fs::read(path).map_err(|e| {
        OptError::new(
            Reason::FetchFailed,
            format!("reading {}: {e}", path.display()),
        )
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Write to a temporary name in the same folder, fsync, rename: readers see the whole file or none.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tractor-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // tempfile creates 0600; the server container may run as another user than the optimize Job.
    tmp.as_file().set_permissions(
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The model's inputs and outputs as the report describes them.
fn signature(model: &TypedModel) -> Result<(Vec<TensorSignature>, Vec<TensorSignature>), OptError> {
    let spec = |outlet: &OutletId| -> Result<TensorSignature, OptError> {
        let fact = model
            .outlet_fact(*outlet)
            .map_err(|e| OptError::new(Reason::InvalidModel, format!("{e:#}")))?;
        let node = model.node(outlet.node);
        let name = model.outlet_label(*outlet).unwrap_or(&node.name).to_owned();
        let datatype = datatype(fact.datum_type).ok_or_else(|| {
            OptError::new(
                Reason::UnsupportedOp,
                format!("{name}: datatype {:?} cannot be served", fact.datum_type),
            )
        })?;
        let shape = fact
            .shape
            .iter()
            .map(|d| d.to_i64().unwrap_or(-1))
            .collect();
        Ok(TensorSignature {
            name,
            datatype,
            shape,
        })
    };
    Ok((
        model.inputs.iter().map(spec).collect::<Result<_, _>>()?,
        model.outputs.iter().map(spec).collect::<Result<_, _>>()?,
    ))
}

/// V2 datatype of a tract datum type, for the report: tract's strings are `BYTES`, which the report shows and the
/// server then refuses.
pub fn datatype(dt: DatumType) -> Option<Datatype> {
    use tractor_model::DatatypeExt;
    Datatype::ALL.into_iter().find(|d| d.datum() == dt)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;
    use tractor_api::{Datatype, InputOverride, ModelFormat};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OptimizeArgs,
    }

    fn parse_alone(args: &[&str]) -> Result<OptimizeArgs, clap::Error> {
        Cli::try_parse_from(["optimize"].iter().chain(args)).map(|cli| cli.args)
    }

    fn parse(extra: &[&str]) -> Result<OptimizeArgs, clap::Error> {
        let base = ["--source", "m.onnx", "--out", "out"];
        parse_alone(&base.iter().chain(extra).copied().collect::<Vec<_>>())
    }

    /// The request and options a command line makes; panics where clap or the conversion refuses it.
    fn parts(args: &[&str]) -> (OptimizeRequest, RunOptions) {
        let (request, options) = parse_alone(args).expect("parses").into_parts();
        (request.expect("a request"), options)
    }

    /// `--precision`, `--format` and `--metric` take exactly the spec's spellings.
    #[test]
    fn flags_take_the_spec_spellings() {
        assert_eq!(parse(&[]).expect("defaults").precision, Precision::Auto);
        assert_eq!(parse(&[]).expect("defaults").metric, EvalMetric::Accuracy);
        for precision in Precision::ALL {
            let args = parse(&["--precision", precision.as_str()]).expect("precision");
            assert_eq!(args.precision, precision);
        }
        for format in ModelFormat::ALL {
            let args = parse(&["--format", format.as_str()]).expect("format");
            assert_eq!(args.format, Some(format));
        }
        for metric in METRICS {
            let spelling = serde_json::to_value(metric).expect("serializes");
            let spelling = spelling.as_str().expect("a string");
            let args = parse(&["--metric", spelling]).expect("metric");
            assert_eq!(args.metric, metric, "{spelling}");
        }
        for refused in [
            ["--precision", "AUTO"],
            ["--precision", "fp16"],
            ["--format", "ONNX"],
            ["--metric", "Accuracy"],
            ["--metric", "auc"],
        ] {
            assert!(parse(&refused).is_err(), "{refused:?}");
        }
    }

    /// `--metric` accepts every metric the CRD accepts, so a spec the API server admits is one the command runs.
    #[test]
    fn metric_flag_takes_every_metric_the_crd_takes() {
        let crd = tractor_api::crd();
        let mut schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|schema| schema.open_api_v3_schema.as_ref())
            .expect("a schema");
        for field in ["spec", "optimize", "evaluation", "metric"] {
            schema = &schema.properties.as_ref().expect("properties")[field];
        }
        let spellings: Vec<String> = schema
            .enum_
            .iter()
            .flatten()
            .filter_map(|value| value.0.as_str().map(str::to_owned))
            .collect();
        assert_eq!(spellings.len(), METRICS.len(), "{spellings:?}");
        for spelling in &spellings {
            let args = parse(&["--metric", spelling]).expect("metric");
            assert_eq!(
                serde_json::to_value(args.metric).expect("serializes"),
                spelling.as_str(),
            );
        }
    }

    /// The flags and `--request` are two spellings of one request: the pipeline cannot tell which it was given.
    #[test]
    fn flags_and_request_make_the_same_request() {
        let options = [
            "--upload",
            "s3://bucket/model.nnef.tgz",
            "--report",
            "report.json",
            "--batch-sizes",
            "1,8",
        ];
        let sha256 = "ab".repeat(32);
        let flags = [
            "--source",
            "m.onnx",
            "--sha256",
            &sha256,
            "--format",
            "onnx",
            "--inputs",
            r#"[{"name":"x","datatype":"FP32","shape":[-1,64]}]"#,
            "--out",
            "out",
            "--precision",
            "int8",
            "--prune-sparsity",
            "0.5",
            "--eval-data",
            "d.npz",
            "--metric",
            "rmse",
            "--min-score",
            "0.25",
            "--max-regression",
            "0.02",
            "--publish",
            "s3://artifacts/tractor",
        ];
        let (from_flags, flag_options) = parts(&[&flags[..], &options[..]].concat());
        let expected = OptimizeRequest {
            source: "m.onnx".to_owned(),
            sha256: Some(sha256.clone()),
            format: Some(ModelFormat::Onnx),
            inputs: vec![InputOverride {
                name: "x".to_owned(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 64],
            }],
            out: "out".to_owned(),
            precision: Precision::Int8,
            prune_sparsity: Some(0.5),
            evaluation: Some(EvaluationRequest {
                data: "d.npz".to_owned(),
                metric: EvalMetric::Rmse,
                min_score: Some(0.25),
                max_regression: Some(0.02),
            }),
            reference: None,
            publish: Some("s3://artifacts/tractor".to_owned()),
            cache_key: None,
        };
        assert_eq!(from_flags, expected);
        let json = expected.to_json();
        let (from_request, request_options) =
            parts(&[&["--request", &json][..], &options[..]].concat());
        assert_eq!(from_request, expected);
        for run_options in [flag_options, request_options] {
            assert_eq!(
                run_options.upload.as_deref(),
                Some("s3://bucket/model.nnef.tgz")
            );
            assert_eq!(run_options.report, Some(PathBuf::from("report.json")));
            assert_eq!(run_options.batch_sizes, [1, 8]);
        }
    }

    /// By hand, the evaluation flags mean nothing without a labelled set, as before the request existed.
    #[test]
    fn evaluation_flags_without_a_labelled_set_ask_for_no_evaluation() {
        let (request, options) =
            parts(&["--source", "m.onnx", "--out", "out", "--min-score", "0.9"]);
        assert_eq!(
            request,
            OptimizeRequest {
                source: "m.onnx".to_owned(),
                out: "out".to_owned(),
                ..OptimizeRequest::default()
            }
        );
        assert_eq!(options.batch_sizes, [1, 32]);
    }

    /// `--request` stands for --source, --out and the flags describing the model and its evaluation: it needs none
    /// of them, and refuses each, so neither is silently ignored.
    #[test]
    fn request_replaces_the_flags_it_stands_for() {
        let json = r#"{"source":"m.onnx","out":"out"}"#;
        let (request, _) = parts(&["--request", json]);
        assert_eq!(request.source, "m.onnx");
        assert_eq!(request.precision, Precision::Auto);
        let values = [
            ("--source", "other.onnx"),
            ("--sha256", "00"),
            ("--format", "onnx"),
            ("--inputs", "[]"),
            ("--out", "elsewhere"),
            ("--precision", "auto"),
            ("--prune-sparsity", "0.5"),
            ("--eval-data", "d.npz"),
            ("--metric", "accuracy"),
            ("--min-score", "0.9"),
            ("--max-regression", "0.01"),
            ("--reference-data", "d.npz"),
            ("--publish", "s3://artifacts/tractor"),
        ];
        assert_eq!(values.len(), REQUEST_FLAGS.len());
        for (flag, value) in values {
            let error = parse_alone(&["--request", json, flag, value]).expect_err(flag);
            assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{flag}: {error}");
        }
        for flag in ["--source", "--out"] {
            let without: Vec<&str> = ["--source", "m.onnx", "--out", "out"]
                .chunks(2)
                .filter(|pair| pair[0] != flag)
                .flatten()
                .copied()
                .collect();
            let error = parse_alone(&without).expect_err(flag);
            assert_eq!(
                error.kind(),
                ErrorKind::MissingRequiredArgument,
                "{flag}: {error}"
            );
        }
    }

    /// A malformed request is refused by clap, naming the flag and what is wrong with the JSON.
    #[test]
    fn a_malformed_request_is_refused_with_the_reason() {
        let error = parse_alone(&[
            "--request",
            r#"{"source":"m.onnx","out":"out","pruneSparsity":"half"}"#,
        ])
        .expect_err("a string sparsity")
        .to_string();
        for word in [
            "--request",
            "not an optimize request",
            "invalid type",
            "f64",
        ] {
            assert!(error.contains(word), "{error:?} lacks {word:?}");
        }
    }
}
