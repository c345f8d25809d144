//! The protocol-independent server: the loaded model, the batcher, readiness, feedback and explain,
//! shared behind an `Arc` by the REST and gRPC front ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};
use tractor_model::{Datatype, Signature, Tensor};

use crate::batcher::{Batcher, SubmitError};
use crate::codec;
use crate::drift::Drift;
use crate::feedback::{Feedback, FeedbackItem, FeedbackSummary, Labelled};
use crate::metrics::Metrics;
use crate::metrics::{CORRECT, INCORRECT, UNKNOWN_ID};
use crate::payload_log::Logger as PayloadLogger;
use crate::receipt::{Predicted, Receipt};
use crate::revision::Revision;

/// Why an inference did not happen; each maps to one HTTP status and one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The request is wrong (400, INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// No such model (404, NOT_FOUND).
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// The queue is full (503, RESOURCE_EXHAUSTED).
    #[error("server overloaded: inference queue is full")]
    Overloaded,
    /// Not ready or shutting down (503, UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The model failed (500, INTERNAL).
    #[error("inference failed: {0}")]
    Internal(String),
}

impl From<codec::BadRequest> for InferError {
    fn from(e: codec::BadRequest) -> Self {
        InferError::BadRequest(e.0)
    }
}

/// The model version every process reports (one version per process; revisions are named apart from it).
pub const VERSION: &str = "1";

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Server {
    /// The served model's name (the ModelDeployment's name).
    pub name: String,
    /// The version reported in metadata (one version per process).
    pub version: String,
    /// The model revision this process serves (its pod's revision label), when told: named on every
    /// response and in the model metadata. Distinct from `version`, which stays `1` for clients' URLs.
    pub revision: Option<Revision>,
    /// `tract_onnx` or `tract_nnef`.
    pub platform: &'static str,
    /// The model file's sha256.
    pub sha256: String,
    /// Inputs and outputs.
    pub signature: Signature,
    /// Metrics.
    pub metrics: Metrics,
    /// The payload log's request-path handle, when `--log-url` is set; the front ends capture sampled calls.
    pub payload_log: Option<PayloadLogger>,
    batcher: Batcher,
    feedback: Mutex<Feedback>,
    /// The drift window, when the artifact has reference statistics.
    drift: Option<std::sync::Arc<Drift>>,
    ready: AtomicBool,
    /// (output index, true when it is a class label rather than scores).
    class_output: Option<(usize, bool)>,
    /// A regressor's output (one float per row), when the model has no class output.
    value_output: Option<usize>,
    /// A float output of rank 2: per-class scores, for explain.
    score_output: Option<usize>,
}

/// An answer: the model's outputs, and for a classifier or a regressor the receipt that lets any replica score
/// feedback on it.
pub struct Inferred {
    /// The outputs, in signature order.
    pub outputs: Vec<Tensor>,
    /// [`Receipt`] text, for the response's `tractor_receipt` parameter.
    pub receipt: Option<String>,
}

/// Most rows one explain call may expand to (rows × (features + 1)).
pub const MAX_EXPLAIN_ROWS: usize = 1 << 16;

impl Server {
    /// Assemble a server; it starts not ready.
    pub fn new(
        name: String,
        platform: &'static str,
        sha256: String,
        signature: Signature,
        metrics: Metrics,
        batcher: Batcher,
        feedback: Feedback,
    ) -> Server {
        let is_int = |d: Datatype| matches!(d, Datatype::Int64 | Datatype::Int32);
        let label = signature
            .outputs
            .iter()
            .position(|o| is_int(o.datatype) && o.shape.len() == 1);
        let score_output = signature
            .outputs
            .iter()
            .position(|o| o.datatype.is_float() && o.shape.len() == 2);
        // One float column (or a float vector) is a regressor's value, not the scores of one class.
        let one_value = |output: &tractor_model::TensorSpec| {
            output.datatype.is_float()
                && (output.shape.len() == 1 || (output.shape.len() == 2 && output.shape[1] == 1))
        };
        let class_output = label.map(|i| (i, true)).or(score_output
            .filter(|i| !one_value(&signature.outputs[*i]))
            .map(|i| (i, false)));
        let value_output = match label {
            Some(_) => None,
            None => signature.outputs.iter().position(one_value),
        };
        Server {
            name,
            version: VERSION.into(),
            revision: None,
            payload_log: None,
            platform,
            sha256,
            signature,
            metrics,
            batcher,
            feedback: Mutex::new(feedback),
            drift: None,
            ready: AtomicBool::new(false),
            class_output,
            value_output,
            score_output,
        }
    }

    /// The same server, naming `revision` on its responses.
    pub fn with_revision(self, revision: Option<Revision>) -> Server {
        Server { revision, ..self }
    }

    /// The same server, counting what it serves in `drift`'s window.
    pub fn with_drift(self, drift: Option<std::sync::Arc<Drift>>) -> Server {
        Server { drift, ..self }
    }

    /// The same server, logging sampled inference calls to `payload_log`.
    pub fn with_payload_log(self, payload_log: Option<PayloadLogger>) -> Server {
        Server {
            payload_log,
            ..self
        }
    }

    /// Whether the model is loaded, warmed up and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Flip readiness (true after warm-up, false on SIGTERM).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst)
    }

    /// Check the model name (and version, when given) of a request.
    pub fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), InferError> {
        if name != self.name {
            return Err(InferError::UnknownModel(name.to_owned()));
        }
        match version {
            Some(v) if v != self.version => {
                Err(InferError::UnknownModel(format!("{name}/versions/{v}")))
            }
            _ => Ok(()),
        }
    }

    /// Run a request through the batcher; records a classifier's predictions for feedback when the request has
    /// an id, and gives a classifier's or a regressor's answer its receipt.
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        id: Option<&str>,
    ) -> Result<Inferred, InferError> {
        self.run(inputs, rows, id, true).await
    }

    /// [`Server::infer`]; `observed`: whether the rows are traffic the drift window counts (explain's occluded
    /// rows are not).
    async fn run(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        id: Option<&str>,
        observed: bool,
    ) -> Result<Inferred, InferError> {
        // Binned before the batcher takes the inputs, outside any lock; counted once the model has answered.
        let drift_rows = match (&self.drift, inputs.first(), self.signature.inputs.first()) {
            (Some(drift), Some(input), Some(spec)) if observed => {
                codec::tensor_to_f64(spec.datatype, input)
                    .ok()
                    .and_then(|values| drift.bin_rows(&values, rows))
            }
            _ => None,
        };
        // No readiness check here: readiness is for probes; during a drain requests still in flight or
        // still routed to this pod are served.
        let rx = self.batcher.submit(inputs, rows).map_err(|e| match e {
            SubmitError::Overloaded => InferError::Overloaded,
            SubmitError::Stopped => InferError::Unavailable(e.to_string()),
        })?;
        let out = rx
            .await
            .map_err(|_| InferError::Unavailable("inference worker stopped".into()))?;
        let out = out.map_err(|e| match e {
            tractor_model::Error::BadInput(m) => InferError::BadRequest(m),
            other => InferError::Internal(other.to_string()),
        })?;
        let classes = self.classes(&out.outputs);
        if let (Some(drift), Some(binned)) = (&self.drift, drift_rows) {
            let binned = if drift.bins_classes() {
                drift.with_predictions(binned, classes.as_deref(), None)
            } else {
                drift.with_predictions(binned, None, self.values(&out.outputs).as_deref())
            };
            drift.record(&binned, Instant::now());
        }
        if let (Some(id), Some(classes)) = (id, &classes)
            && let Ok(mut store) = self.feedback.lock()
        {
            store.record(id, classes.clone(), Instant::now());
        }
        let predicted = match classes {
            Some(c) => Some(Predicted::Classes(c)),
            None => self.values(&out.outputs).map(Predicted::Values),
        };
        let receipt = predicted.map(|predicted| {
            Receipt {
                model: self.name.clone(),
                revision: self.revision.as_ref().map(|r| r.as_str().to_owned()),
                time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                predicted,
            }
            .encode()
        });
        Ok(Inferred {
            outputs: out.outputs,
            receipt,
        })
    }

    /// The predicted class of each row, when the model is a classifier.
    fn classes(&self, outputs: &[Tensor]) -> Option<Vec<i64>> {
        let (ix, is_label) = self.class_output?;
        let t = outputs.get(ix)?;
        let dt = self.signature.outputs[ix].datatype;
        let values = codec::tensor_to_f64(dt, t).ok()?;
        if is_label {
            return Some(values.iter().map(|v| *v as i64).collect());
        }
        let cols = *t.shape().get(1)?;
        if cols == 0 {
            return None;
        }
        Some(values.chunks(cols).map(|row| argmax(row) as i64).collect())
    }

    /// A regressor's value for each row.
    fn values(&self, outputs: &[Tensor]) -> Option<Vec<f64>> {
        let ix = self.value_output?;
        codec::tensor_to_f64(self.signature.outputs[ix].datatype, outputs.get(ix)?).ok()
    }

    /// Apply a batch of feedback pairs and update the gauges.
    pub fn feedback(&self, items: Vec<FeedbackItem>) -> Result<FeedbackSummary, InferError> {
        if self.class_output.is_none() && self.value_output.is_none() {
            return Err(InferError::BadRequest(
                "feedback needs a classifier or a regressor: the model has no label, score or value output"
                    .into(),
            ));
        }
        let revision = self.revision.as_ref().map(|r| r.as_str());
        let (summary, labelled) = self
            .feedback
            .lock()
            .map_err(|_| InferError::Internal("feedback store poisoned".into()))?
            .apply(items, &self.name, revision, Instant::now());
        for row in &labelled {
            match row {
                Labelled::Class {
                    revision,
                    predicted,
                    label,
                } => self.metrics.labelled(
                    revision.as_deref().unwrap_or_default(),
                    *label,
                    *predicted,
                ),
                Labelled::Value {
                    revision,
                    predicted,
                    label,
                } => self.metrics.regressed(
                    revision.as_deref().unwrap_or_default(),
                    *label,
                    *predicted,
                ),
            }
        }
        self.metrics.feedback(CORRECT, summary.correct);
        self.metrics.feedback(INCORRECT, summary.incorrect);
        self.metrics.feedback(UNKNOWN_ID, summary.unknown_id);
        let scores = &summary.scores;
        self.metrics.window.set(scores.window as i64);
        if let (Some(accuracy), Some(precision), Some(recall), Some(f1)) =
            (scores.accuracy, scores.precision, scores.recall, scores.f1)
        {
            self.metrics.accuracy.set(accuracy);
            self.metrics.precision.set(precision);
            self.metrics.recall.set(recall);
            self.metrics.f1.set(f1);
        }
        Ok(summary)
    }

    /// Occlusion attributions: for each row and feature j, score(x) − score(x with feature j set to the
    /// baseline), where score is the target class's output (default: the predicted class). The
    /// expanded batch (rows × (features + 1)) goes through the same batcher as inference.
    pub async fn explain(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        parameters: &Map<String, Value>,
    ) -> Result<Explanation, InferError> {
        let spec = match self.signature.inputs.as_slice() {
            [s] if s.datatype == Datatype::Fp32 && s.shape.len() == 2 && s.shape[0] == -1 => s,
            _ => {
                return Err(InferError::BadRequest(
                    "explain supports models with one FP32 input of shape [-1, features]".into(),
                ));
            }
        };
        let score_ix = self.score_output.ok_or_else(|| {
            InferError::BadRequest("explain needs a float output of shape [-1, classes]".into())
        })?;
        let input_values =
            codec::tensor_to_f64(Datatype::Fp32, &inputs[0]).map_err(InferError::Internal)?;
        let features = inputs[0].shape().get(1).copied().unwrap_or(0);
        if features == 0 || rows == 0 {
            return Err(InferError::BadRequest(format!(
                "input '{}' is empty",
                spec.name
            )));
        }
        let expanded = rows
            .checked_mul(features + 1)
            .filter(|n| *n <= MAX_EXPLAIN_ROWS)
            .ok_or_else(|| {
                InferError::BadRequest(format!(
                    "explain is limited to {MAX_EXPLAIN_ROWS} rows × (features + 1)"
                ))
            })?;
        let baseline: Vec<f64> = match parameters.get("baseline") {
            None => vec![0.0; features],
            Some(Value::Number(n)) => vec![n.as_f64().unwrap_or(0.0); features],
            Some(Value::Array(values))
                if values.len() == features && values.iter().all(Value::is_number) =>
            {
                values.iter().filter_map(Value::as_f64).collect()
            }
            Some(_) => {
                return Err(InferError::BadRequest(format!(
                    "parameter baseline must be a number or an array of {features} numbers"
                )));
            }
        };
        let target = match parameters.get("target") {
            None => None,
            Some(v) => Some(v.as_u64().map(|t| t as usize).ok_or_else(|| {
                InferError::BadRequest("parameter target must be a class index".into())
            })?),
        };
        let mut data: Vec<f32> = Vec::with_capacity(expanded * features);
        for row in input_values.chunks(features) {
            data.extend(row.iter().map(|v| *v as f32));
            for (feature, fill) in baseline.iter().enumerate() {
                data.extend(row.iter().enumerate().map(|(column, value)| {
                    if column == feature {
                        *fill as f32
                    } else {
                        *value as f32
                    }
                }));
            }
        }
        let batch = Tensor::from_shape(&[expanded, features], &data)
            .map_err(|e| InferError::Internal(e.to_string()))?;
        let out = self.run(vec![batch], expanded, None, false).await?.outputs;
        let scores_t = out
            .get(score_ix)
            .ok_or_else(|| InferError::Internal("missing score output".into()))?;
        let classes = scores_t.shape().get(1).copied().unwrap_or(0);
        let scores = codec::tensor_to_f64(self.signature.outputs[score_ix].datatype, scores_t)
            .map_err(InferError::Internal)?;
        let mut explanations = Vec::with_capacity(rows);
        for block in scores.chunks(classes * (features + 1)) {
            let original = &block[..classes];
            let class = target.unwrap_or_else(|| argmax(original));
            if class >= classes {
                return Err(InferError::BadRequest(format!(
                    "target {class} is not below the model's {classes} classes"
                )));
            }
            let score = original[class];
            let attributions = (0..features)
                .map(|j| score - block[(j + 1) * classes + class])
                .collect();
            explanations.push(RowExplanation {
                target: class,
                score,
                attributions,
            });
        }
        Ok(Explanation {
            model_name: self.name.clone(),
            method: "occlusion",
            output: self.signature.outputs[score_ix].name.clone(),
            baseline,
            explanations,
        })
    }
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// The explain response.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The model.
    pub model_name: String,
    /// Always `occlusion`.
    pub method: &'static str,
    /// The output whose scores are attributed.
    pub output: String,
    /// The value each feature was replaced with.
    pub baseline: Vec<f64>,
    /// One per input row.
    pub explanations: Vec<RowExplanation>,
}

/// Attributions for one row.
#[derive(Debug, Serialize)]
pub struct RowExplanation {
    /// The class explained.
    pub target: usize,
    /// Its score on the unmodified row.
    pub score: f64,
    /// Per feature: score drop when that feature alone is set to the baseline.
    pub attributions: Vec<f64>,
}
