//! The metrics contract between `tractor serve` and the operator: every name the server exports and the
//! operator's PromQL reads, with their label keys and shared label values; the only place they are spelled.
//!
//! The operator's own metrics (`tractor_operator_*`) are not here: only the operator exports and reads them.
//! Labels are bounded: `model` is one per process, the rest take a handful of values each.

/// `tractor_inference_requests_total{model,protocol,code}`: inference requests answered.
pub const REQUESTS_TOTAL: &str = "tractor_inference_requests_total";
/// `tractor_inference_request_duration_seconds{model,protocol}`: end to end, parse to last byte built. The
/// operator reads its `_bucket` series for latency and its `_count` series to tell an idle model.
pub const REQUEST_DURATION: &str = "tractor_inference_request_duration_seconds";
/// `tractor_inference_queue_duration_seconds{model}`: time a request waited for a batch slot.
pub const QUEUE_DURATION: &str = "tractor_inference_queue_duration_seconds";
/// `tractor_inference_compute_duration_seconds{model}`: time tract ran one (merged) batch.
pub const COMPUTE_DURATION: &str = "tractor_inference_compute_duration_seconds";
/// `tractor_inference_batch_size{model}`: rows per merged batch.
pub const BATCH_SIZE: &str = "tractor_inference_batch_size";
/// `tractor_inference_in_flight{model}`: requests accepted and not yet answered.
pub const IN_FLIGHT: &str = "tractor_inference_in_flight";
/// `tractor_model_feedback_total{model,result}`: feedback pairs by outcome ([`CORRECT`], [`INCORRECT`],
/// [`UNKNOWN_ID`]).
pub const FEEDBACK_TOTAL: &str = "tractor_model_feedback_total";
/// `tractor_model_predictions_labelled_total{model,revision,true_class,predicted_class,result}`: labelled rows,
/// by the revision that predicted them: a confusion matrix Prometheus can add up across replicas and restarts.
/// `result` ([`CORRECT`]|[`INCORRECT`]) follows from the two classes, so it adds no series. Per revision R:
/// accuracy `sum(P{revision="R",result="correct"}) / sum(P{revision="R"})`; macro precision
/// `avg(sum by (predicted_class) (P{revision="R",result="correct"}) / sum by (predicted_class) (P{revision="R"}))`
/// and recall the same by `true_class` (classes never predicted, or never true, are left out).
pub const PREDICTIONS_LABELLED: &str = "tractor_model_predictions_labelled_total";
/// `tractor_model_regression_labelled_total{model,revision}`: a regressor's labelled rows, by predicting revision.
pub const REGRESSION_LABELLED: &str = "tractor_model_regression_labelled_total";
/// `tractor_model_regression_abs_error_sum{model,revision}`: sum of |predicted - true| over those rows. Per
/// revision R: MAE `sum(A{revision="R"}) / sum(N{revision="R"})`.
pub const REGRESSION_ABS_ERROR: &str = "tractor_model_regression_abs_error_sum";
/// `tractor_model_regression_squared_error_sum{model,revision}`: sum of (predicted - true)² over those rows.
/// Per revision R: RMSE `sqrt(sum(S{revision="R"}) / sum(N{revision="R"}))`.
pub const REGRESSION_SQUARED_ERROR: &str = "tractor_model_regression_squared_error_sum";
/// `tractor_model_accuracy{model}`: accuracy over the feedback window.
pub const ACCURACY: &str = "tractor_model_accuracy";
/// `tractor_model_precision{model}`: macro-averaged precision over the feedback window.
pub const PRECISION: &str = "tractor_model_precision";
/// `tractor_model_recall{model}`: macro-averaged recall over the feedback window.
pub const RECALL: &str = "tractor_model_recall";
/// `tractor_model_f1{model}`: macro-averaged F1 over the feedback window.
pub const F1: &str = "tractor_model_f1";
/// `tractor_model_feedback_window{model}`: labelled predictions the scores are computed on; the operator
/// weighs each pod's [`ACCURACY`] by it.
pub const FEEDBACK_WINDOW: &str = "tractor_model_feedback_window";
/// `tractor_model_info{model,platform,sha256,revision}`: always 1; carries the model's identity. `revision` is
/// the pod's model revision (`--revision`), empty when not told: one value per process, so bounded. Present
/// from the first scrape, before any request has created the other series, so the operator reads an idle
/// model as 0 rather than as no data.
pub const MODEL_INFO: &str = "tractor_model_info";
/// `process_cpu_seconds_total{model}`: CPU time of the whole server process, user and system. The name every
/// Prometheus client library gives it, with the model label so the operator's `Cpu` scaling metric selects it
/// like the others.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// `process_resident_memory_bytes{model}`: resident memory of the server process, read at each scrape; the
/// name every Prometheus client library gives it.
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// `tractor_model_load_seconds{model,phase}`: where the server's start went, set once when it becomes ready, by
/// [`PHASE`]: [`PHASE_LOAD`], [`PHASE_OPTIMIZE`], [`PHASE_WARM_UP`] and [`PHASE_TOTAL`].
pub const MODEL_LOAD_SECONDS: &str = "tractor_model_load_seconds";

/// Label `model`: the served model's name, which the operator sets to the ModelDeployment's name.
pub const MODEL: &str = "model";
/// Label `revision`: the model revision that made a prediction (on [`MODEL_INFO`], the pod's own).
pub const REVISION: &str = "revision";
/// Label `code`: an HTTP status (`200`, `503`) or a gRPC code name (`OK`, `UNAVAILABLE`).
pub const CODE: &str = "code";
/// Label `protocol`: `rest` or `grpc`.
pub const PROTOCOL: &str = "protocol";
/// Label `result`: what a feedback pair or labelled row came to.
pub const RESULT: &str = "result";
/// Label `true_class`: the class feedback says was right.
pub const TRUE_CLASS: &str = "true_class";
/// Label `predicted_class`: the class the model predicted.
pub const PREDICTED_CLASS: &str = "predicted_class";
/// Label `platform` of [`MODEL_INFO`]: the model's format, as the Open Inference Protocol names it.
pub const PLATFORM: &str = "platform";
/// Label `sha256` of [`MODEL_INFO`]: digest of the served model file.
pub const SHA256: &str = "sha256";

/// Label `phase` of [`MODEL_LOAD_SECONDS`].
pub const PHASE: &str = "phase";
/// [`PHASE`]: read the artifact, check its digest, parse and declutter it.
pub const PHASE_LOAD: &str = "load";
/// [`PHASE`]: optimize one plan per batch-size bucket.
pub const PHASE_OPTIMIZE: &str = "optimize";
/// [`PHASE`]: the first inference, which pays tract's lazy initialisation.
pub const PHASE_WARM_UP: &str = "warm_up";
/// [`PHASE`]: from the start of preparation to ready, the phases and what lies between them.
pub const PHASE_TOTAL: &str = "total";

/// `tractor_model_input_drift{model,revision,feature}`: population stability index (PSI) of one input
/// feature over the server's drift window, against the reference bins the optimize step recorded from its
/// labelled set. Exported only while the window holds rows; the operator weighs each pod's score by its
/// [`DRIFT_WINDOW_ROWS`]. `feature` is bounded by the model's input width (or two summary features for images).
pub const INPUT_DRIFT: &str = "tractor_model_input_drift";
/// `tractor_model_prediction_drift{model,revision}`: PSI of the predictions over the drift window against the
/// reference predictions' distribution (classes for a classifier, bins of the output for a regression).
pub const PREDICTION_DRIFT: &str = "tractor_model_prediction_drift";
/// `tractor_model_drift_window_rows{model,revision}`: rows the drift scores are computed on now.
pub const DRIFT_WINDOW_ROWS: &str = "tractor_model_drift_window_rows";
/// Label `feature` of [`INPUT_DRIFT`]: `<input>[<index>]` for a tabular or vector input, `<input>:mean` and
/// `<input>:std` for an input summarized per row.
pub const FEATURE: &str = "feature";
/// `tractor_payload_log_records_total{model,outcome}`: payload log records (one per request, one per response)
/// by [`OUTCOME`]: [`LOG_SENT`] or a reason it was dropped. Dropping never waits on the sink.
pub const PAYLOAD_LOG_RECORDS: &str = "tractor_payload_log_records_total";
/// [`OUTCOME`] of [`PAYLOAD_LOG_RECORDS`]: accepted by the sink (2xx).
pub const LOG_SENT: &str = "sent";
/// [`OUTCOME`] of [`PAYLOAD_LOG_RECORDS`]: dropped because the bounded queue to the sink was full.
pub const LOG_QUEUE_FULL: &str = "queue_full";
/// [`OUTCOME`] of [`PAYLOAD_LOG_RECORDS`]: dropped because the sink refused, failed or timed out.
pub const LOG_SINK_ERROR: &str = "sink_error";
/// [`RESULT`] of a prediction that matched its label.
pub const CORRECT: &str = "correct";
/// [`RESULT`] of a prediction that did not match its label.
pub const INCORRECT: &str = "incorrect";
/// [`RESULT`] of feedback for a prediction id the server does not know (expired or never made).
pub const UNKNOWN_ID: &str = "unknown_id";

/// `tractor_activator_requests_total{namespace,model,outcome}`: requests the activator answered, by
/// [`OUTCOME`]. `namespace` and `model` are empty for [`OUTCOME_UNKNOWN_MODEL`], so unknown hosts add no series.
pub const ACTIVATOR_REQUESTS: &str = "tractor_activator_requests_total";
/// `tractor_activator_held_requests{namespace,model}`: requests held now, waiting for the model's first ready pod.
pub const ACTIVATOR_HELD: &str = "tractor_activator_held_requests";
/// `tractor_activator_wake_signals_total{namespace,model}`: wake annotations the activator wrote (or tried to).
pub const ACTIVATOR_WAKE_SIGNALS: &str = "tractor_activator_wake_signals_total";
/// `tractor_activator_hold_seconds`: from a request's arrival at the activator to its forward to a ready pod.
pub const ACTIVATOR_HOLD_SECONDS: &str = "tractor_activator_hold_seconds";
/// Label `namespace`: the ModelDeployment's namespace, on the activator's metrics.
pub const NAMESPACE: &str = "namespace";
/// Label `outcome` of [`ACTIVATOR_REQUESTS`] and [`PAYLOAD_LOG_RECORDS`].
pub const OUTCOME: &str = "outcome";
/// [`OUTCOME`]: forwarded to a ready pod (whatever the pod answered).
pub const OUTCOME_FORWARDED: &str = "forwarded";
/// [`OUTCOME`]: the model's hold queue was full; answered 503 with `Retry-After`.
pub const OUTCOME_OVERFLOW: &str = "overflow";
/// [`OUTCOME`]: no pod was ready within the hold deadline; answered 504.
pub const OUTCOME_TIMEOUT: &str = "timeout";
/// [`OUTCOME`]: the request could not be forwarded (body too large or unreadable, the pod failed mid-request).
pub const OUTCOME_ERROR: &str = "error";
/// [`OUTCOME`]: the host names no tractor model, or several; answered 404 or 400.
pub const OUTCOME_UNKNOWN_MODEL: &str = "unknown_model";
