//! `ModelDeployment.status`: what the operator reports, in shapes `kubectl wait`, kstatus and Argo CD read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{Datatype, EvalMetric, ModelFormat, Precision};

/// Observed state of a ModelDeployment.
///
/// Example:
/// ```yaml
/// observedGeneration: 3
/// phase: Ready
/// conditions: [{type: Ready, status: "True", reason: Available, message: "2/2 replicas ready", ...}]
/// replicas: 2
/// readyReplicas: 2
/// url: http://digits.default.svc:8080/v2/models/digits
/// ```
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for humans; conditions are the machine-readable truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, Reconciling, Stalled, ModelReady, Available, ScalingActive and Degraded, in metav1.Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The model being served, as the optimize Job reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelStatus>,
    /// Model revisions: the current target, the last stable one, and a canary in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionStatus>,
    /// Serving pods, all revisions together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Serving pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Replica count the autoscaler decided last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Label selector of the serving pods, in string form (for the `/scale` subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// When the autoscaler last changed the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The last metric values read from Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricSnapshot>,
    /// In-cluster URL of the V2 model endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Scale to zero: where the Service leads, when the model last went idle and last woke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZeroStatus>,
    /// Input drift as last judged, with `monitoring.drift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
}

/// Input drift of the serving revision as last read from Prometheus.
///
/// Example: `{evaluatedAt: "2026-12-05T10:00:00Z", rows: 812, drifted: true, features: [{feature: "x[3]", score: 1.92}], predictionScore: 0.31}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// When drift was last read (or tried); the next read is one `interval` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<Time>,
    /// Rows the scores stand on, all serving pods' windows together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Whether some feature's score is above the threshold; absent while unknown (too few rows, no
    /// reference statistics, Prometheus unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted: Option<bool>,
    /// The highest-scoring features (at most five), highest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureDrift>,
    /// PSI of the predictions against the reference predictions; reported, not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_score: Option<f64>,
    /// What was found, or why nothing could be judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One feature's drift score.
///
/// Example: `{feature: "x[3]", score: 1.92}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDrift {
    /// The feature: `<input>[<index>]`, or `<input>:mean` / `<input>:std` for a summarized input.
    pub feature: String,
    /// Its population stability index over the window.
    pub score: f64,
}

/// Where a model that may scale to zero stands.
///
/// Example: `{endpoints: Activator, idleSince: "2026-12-05T10:00:00Z", wokeAt: "2026-12-05T09:40:12Z"}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleToZeroStatus {
    /// What the Service leads to: the model's pods, or the activator that holds requests while it wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// When the model last went to zero replicas for lack of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Time>,
    /// When a request held by the activator last woke the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woke_at: Option<Time>,
}

/// What a scale-to-zero model's Service leads to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// The serving pods (the Service selects them).
    Pods,
    /// The activator (an EndpointSlice the operator writes), while the model is at zero or waking.
    Activator,
}

/// One word on where a ModelDeployment stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, nothing started yet.
    Pending,
    /// The optimize Job is running.
    Optimizing,
    /// Serving pods of a new revision are rolling out (or a canary is in progress).
    RollingOut,
    /// Serving the current revision with every replica ready.
    Ready,
    /// Idle on purpose: no pods; the first request wakes the model.
    ScaledToZero,
    /// Serving every replica, but `Degraded`: online accuracy below its floor, or inputs drifted.
    Degraded,
    /// Cannot make progress without a spec change (e.g. the optimize Job failed).
    Failed,
}

/// The served model as the optimize Job reported it.
///
/// Example: `{sourceDigest: "sha256:3f2a...", artifactDigest: "sha256:9c1e...", format: nnef, precision: f16, sizeBytes: 81234}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// Model revision this artifact was built for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// SHA-256 of the source model file, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// SHA-256 of the served artifact, `sha256:<hex>`; serving pods refuse any other bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<String>,
    /// Format of the source model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    /// Precision of the served artifact (never `auto`: the choice made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Size of the served artifact in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Model inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSignature>,
    /// Model outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSignature>,
    /// Scores on the evaluation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    /// Why this precision was served (e.g. `int8 lost 0.031 accuracy, over maxRegression 0.01; served f16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `optimize.pruning` cost more accuracy than the gate allows, so the served artifact is unpruned; the
    /// message says by how much.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruning_refused: bool,
    /// Where the optimize Job published the artifact in the operator's artifact store
    /// (`s3://bucket/prefix/sha256/<hex>`); absent when it published none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// How serving pods get the artifact, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

/// How serving pods get their artifact.
///
/// Example: `{mode: ArtifactStore, message: "pods download s3://models/tractor/sha256/9c1e..."}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `ArtifactStore`: pods download the published artifact and never optimize. `Rederive`: each pod
    /// re-runs the optimize step on the source at the chosen precision (no store, or it cannot be used).
    pub mode: DeliveryMode,
    /// Why this mode, in words: the object pods download, or what keeps the store from being used.
    pub message: String,
}

/// The ways serving pods get their artifact.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Download the published artifact by digest.
    ArtifactStore,
    /// Re-derive the artifact from the source.
    Rederive,
}

/// Name, type and shape of one model input or output.
///
/// Example: `{name: input, datatype: FP32, shape: [-1, 64]}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TensorSignature {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Dimensions; `-1` is a free dimension.
    pub shape: Vec<i64>,
}

/// Evaluation scores, unoptimized and served.
///
/// Example: `{metric: accuracy, baseline: 0.972, optimized: 0.969}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scores {
    /// The metric both scores use.
    pub metric: EvalMetric,
    /// Score of the unoptimized (f32) model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// Score of the served artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized: Option<f64>,
}

/// Model revisions in play.
///
/// Example: `{current: 7f3a9c2e1b, stable: 7f3a9c2e1b}` or, mid-canary, `{current: c41d..., stable: 7f3a..., canary: c41d..., canaryWeight: 25, canaryStep: 1}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// Revision the spec asks for (hash of the model source and optimize recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Last revision that was fully rolled out and healthy; rollbacks return here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// Revision under canary analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Percentage of traffic on the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// Index of the canary step in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_step: Option<i32>,
    /// When the canary's current step began; its pause counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_step_started: Option<Time>,
    /// Whether an analysis passed during the current step: a step completes only on evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_step_passed: Option<bool>,
    /// Failed canary analyses so far, all steps together; above `failureLimit` the canary is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_failures: Option<i32>,
    /// A revision that failed (optimize or canary analysis) and is not retried until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Why the revision in `failed` failed; the Stalled and Ready conditions are written from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RevisionFailure>,
    /// What the last analysis of the canary in progress found; kept between analyses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<CanaryAnalysisStatus>,
}

/// Why a revision failed.
///
/// Example: `{reason: AccuracyBelowGate, message: "accuracy 0.81 is below minAccuracy 0.9"}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionFailure {
    /// A CamelCase reason: the optimize report's, `RolledBack` for a failed canary, `AccuracyRollback` for a
    /// revision taken out of service for low online accuracy.
    pub reason: String,
    /// What happened, in words.
    pub message: String,
}

/// One canary analysis' finding.
///
/// Example: `{verdict: Inconclusive, message: "no requests reached the canary in the last 20s", time: "2026-12-05T10:00:00Z"}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysisStatus {
    /// Passed, Failed or Inconclusive (no data yet: neither passes nor fails).
    pub verdict: AnalysisVerdict,
    /// The figures and limits behind the verdict.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the analysis ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// A canary analysis' verdict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisVerdict {
    /// Every limit met.
    Passed,
    /// A limit broken.
    Failed,
    /// A limit could not be checked.
    Inconclusive,
}

/// Last metric values read from Prometheus.
///
/// Example: `{time: "2026-11-27T10:00:00Z", latencyP95Millis: 12.5, requestsPerSecond: 340, errorRate: 0, accuracy: 0.97}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricSnapshot {
    /// When the values were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// p95 request latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_millis: Option<f64>,
    /// Requests per second, all replicas together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Share of failed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Rolling online accuracy from feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}
