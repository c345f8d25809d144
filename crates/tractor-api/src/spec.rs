//! `ModelDeployment.spec`: what users write. Schema defaults and CEL rules live on the types, so the API
//! server refuses a bad spec at `kubectl apply` and stores exactly what the operator will read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, ResourceRequirements, Toleration,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::schema;
use crate::status::ModelDeploymentStatus;

/// A trained model served, monitored and autoscaled by tractor.
///
/// Example:
/// ```yaml
/// apiVersion: serving.tractor.dev/v1alpha1
/// kind: ModelDeployment
/// metadata: {name: digits}
/// spec:
///   model:
///     uri: https://models.example.com/digits.onnx
///     sha256: 3f2a...
///   serving: {replicas: 2}
/// ```
// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "serving.tractor.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    singular = "modeldeployment",
    shortname = "mdep",
    category = "tractor",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "A trained model served, monitored and autoscaled by tractor: the model is validated and optimized in a Job, then served by replica pods behind a Service named like this resource.",
    scale(
        spec_replicas_path = ".spec.serving.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "ready replicas"
    ),
    printcolumn(
        name = "Precision",
        type_ = "string",
        json_path = ".status.model.precision"
    ),
    printcolumn(
        name = "Accuracy",
        type_ = "number",
        json_path = ".status.model.scores.optimized",
        description = "score of the served model on the evaluation set"
    ),
    printcolumn(
        name = "P95",
        type_ = "number",
        json_path = ".status.metrics.latencyP95Millis",
        description = "p95 request latency in milliseconds"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = Rule::new("self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
    .message("metadata.name must be a DNS-1035 label of at most 52 characters: it names the Service, and with the revision the Jobs").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!(has(self.serving) && has(self.serving.replicas) && has(self.autoscaling))")
    .message("spec.serving.replicas and spec.autoscaling are exclusive: the autoscaler owns the replica count").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.rollout) || !has(self.rollout.rollbackOnAccuracyDrop) || !self.rollout.rollbackOnAccuracyDrop || (has(self.autoscaling) && self.autoscaling.metrics.exists(m, m.type == 'Accuracy')) || (has(self.rollout.canary) && has(self.rollout.canary.analysis) && has(self.rollout.canary.analysis.minAccuracy))")
    .message("rollout.rollbackOnAccuracyDrop needs an accuracy floor: an Accuracy autoscaling metric or rollout.canary.analysis.minAccuracy"))]
#[x_kube(validation = Rule::new("!has(self.monitoring) || !has(self.monitoring.drift) || (has(self.optimize) && has(self.optimize.evaluation))")
    .message("monitoring.drift needs optimize.evaluation: its dataset is the reference the served inputs are compared with").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// Where the trained model comes from and how to verify it.
    pub model: ModelSource,
    /// How the model is validated, made smaller and faster, and evaluated before it is served.
    #[serde(default)]
    pub optimize: Optimize,
    /// The replica pods that serve the model.
    #[serde(default)]
    pub serving: Serving,
    /// Replica count driven by Prometheus latency, throughput and accuracy signals. Exclusive with
    /// `serving.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// How a new model revision replaces the serving one.
    #[serde(default)]
    pub rollout: Rollout,
    /// Watching what the model is asked: input drift against the optimize step's reference, and payload logs
    /// for offline evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
}

/// The source of the trained model.
///
/// Example:
/// ```yaml
/// uri: s3://models/fraud/v3/model.onnx
/// sha256: 9b74c9897bac770ffc029102a200c5de9b74c9897bac770ffc029102a200c5de
/// s3: {endpoint: "http://minio.storage:9000", region: us-east-1, secretRef: {name: s3-creds}}
/// ```
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!self.uri.startsWith('http://') || has(self.sha256)")
    .message("a plain http:// model uri needs sha256: nothing else protects it in transit").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!self.uri.startsWith('s3://') || (has(self.s3) && (has(self.s3.endpoint) || has(self.s3.region)))")
    .message("an s3:// model uri needs s3.endpoint or s3.region").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("has(self.format) || self.uri.matches('(?i)\\\\.(onnx|nnef|nnef\\\\.tar|nnef\\\\.tgz|nnef\\\\.tar\\\\.gz|tflite|pb)([?#].*)?$')")
    .message("model.format is required when the uri does not end in .onnx, .nnef, .nnef.tar, .nnef.tgz, .tflite or .pb").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(oldSelf.format) || self.uri != oldSelf.uri || (has(self.format) && self.format == oldSelf.format)")
    .message("model.format is immutable while model.uri stays the same: the bytes at one uri have one format"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// Location of the model file. Schemes: `https://`, `http://` (only with `sha256`), `s3://bucket/key`,
    /// `pvc://claim/path/in/volume` and `configmap://name/key` (mounted read-only into the pods).
    #[schemars(regex(
        pattern = r"^(https?://[^\s]+|s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/[^\s]+|pvc://[a-z0-9]([a-z0-9.\-]*[a-z0-9])?/[^\s]+|configmap://[a-z0-9]([a-z0-9.\-]*[a-z0-9])?/[-._a-zA-Z0-9]+)$"
    ))]
    #[schemars(length(max = 2048))]
    pub uri: String,
    /// Expected SHA-256 of the model file, 64 lowercase hex digits. The optimize Job refuses a file that does
    /// not match (`DigestMismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
    /// File format. When set, the optimize Job loads the file as this format only: an ONNX file declared `nnef`
    /// (or an NNEF archive declared `onnx`, or a file that is not TensorFlow Lite declared `tflite`) fails it
    /// with `InvalidModel`. When unset, the uri must end in `.onnx`, `.nnef`, `.nnef.tar`, `.nnef.tgz`,
    /// `.tflite` or `.pb`, and the Job tells the format from the file's bytes (and, between the two protobuf
    /// formats, from its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    /// Connection to an S3-compatible store, for `s3://` uris.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Connection>,
    /// Declared inputs, for models exported without full shapes or types. The optimize Job checks each
    /// against the model (an unknown name, another datatype, rank or fixed size fails it with `InputMismatch`
    /// naming the first disagreement) and fixes it into an ONNX model: the declared datatype and sizes, `-1`
    /// free. NNEF files carry their own types, so there the declarations are only checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub inputs: Vec<InputOverride>,
}

/// A model file format tractor can load.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// ONNX protobuf (`.onnx`).
    Onnx,
    /// NNEF as written by tract (`.nnef.tar`, `.nnef.tgz` or a folder).
    Nnef,
    /// TensorFlow Lite flatbuffer (`.tflite`), float or integer-quantized (int8 inputs and outputs are served
    /// as float, quantized with the model's own scale and zero point).
    Tflite,
    /// Frozen TensorFlow graph: a `GraphDef` protobuf with its variables folded into constants (`.pb`).
    Tensorflow,
}

/// Connection to an S3-compatible object store.
///
/// Example: `{endpoint: "https://s3.eu-west-1.amazonaws.com", region: eu-west-1, secretRef: {name: s3}}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Connection {
    /// Endpoint URL of the store, e.g. `http://seaweedfs.storage:8333`. Unset means AWS for `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: Option<String>,
    /// Region of the bucket, e.g. `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// Secret in the same namespace with the keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. It is
    /// passed to the optimize Job as environment variables and never copied into other objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Address the bucket as `endpoint/bucket/key` instead of `bucket.endpoint/key` (default true, as most
    /// self-hosted stores need).
    #[serde(default = "schema::default_true")]
    pub path_style: bool,
}

/// Override of one model input's declared type and shape.
///
/// Example: `{name: input, datatype: FP32, shape: [-1, 64]}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InputOverride {
    /// Input name as in the model graph.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Element type, in Open Inference Protocol names.
    pub datatype: Datatype,
    /// Dimensions; `-1` marks a free dimension (usually the batch).
    #[schemars(length(min = 0, max = 8))]
    #[schemars(inner(range(min = -1)))]
    pub shape: Vec<i64>,
}

/// Tensor element types, named as in the Open Inference Protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// Boolean.
    #[serde(rename = "BOOL")]
    Bool,
    /// Unsigned 8-bit integer.
    #[serde(rename = "UINT8")]
    Uint8,
    /// Unsigned 16-bit integer.
    #[serde(rename = "UINT16")]
    Uint16,
    /// Unsigned 32-bit integer.
    #[serde(rename = "UINT32")]
    Uint32,
    /// Unsigned 64-bit integer.
    #[serde(rename = "UINT64")]
    Uint64,
    /// Signed 8-bit integer.
    #[serde(rename = "INT8")]
    Int8,
    /// Signed 16-bit integer.
    #[serde(rename = "INT16")]
    Int16,
    /// Signed 32-bit integer.
    #[serde(rename = "INT32")]
    Int32,
    /// Signed 64-bit integer.
    #[serde(rename = "INT64")]
    Int64,
    /// IEEE half precision.
    #[serde(rename = "FP16")]
    Fp16,
    /// IEEE single precision.
    #[serde(rename = "FP32")]
    Fp32,
    /// IEEE double precision.
    #[serde(rename = "FP64")]
    Fp64,
    /// Byte strings.
    #[serde(rename = "BYTES")]
    Bytes,
}

impl Datatype {
    /// Every datatype, for tables and tests.
    pub const ALL: [Datatype; 13] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The protocol's spelling (`"FP32"`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Parses the protocol's spelling, case-sensitively (`"FP32"`, not `"fp32"`); `None` for unknown names.
    pub fn parse(s: &str) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element in the binary tensor extension (little-endian, BOOL as one byte); `None` for `BYTES`,
    /// whose elements are length-prefixed.
    pub fn size(self) -> Option<usize> {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => Some(1),
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 => Some(2),
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => Some(4),
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => Some(8),
            Datatype::Bytes => None,
        }
    }

    /// Whether values are floating point (JSON numbers with fractions allowed).
    pub fn is_float(self) -> bool {
        matches!(self, Datatype::Fp16 | Datatype::Fp32 | Datatype::Fp64)
    }
}

impl std::fmt::Display for Datatype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The optimize step: convert, reduce precision, prune and evaluate, gated on accuracy.
///
/// Example:
/// ```yaml
/// precision: auto
/// pruning: {sparsity: 0.5}
/// evaluation: {dataset: "https://data.example.com/digits-test.npz", metric: accuracy, minScore: 0.95, maxRegression: 0.01}
/// ```
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Optimize {
    /// Numeric precision of the served model: `f32`, `f16`, `int8` (int8 weights; matrix multiplications on an
    /// integer kernel) or `auto`, which times every candidate at batch 1 and 32 and serves the fastest one that
    /// passes the accuracy gate; candidates within a 10 % noise margin of each other are decided by score, then
    /// artifact size, so the same spec gives the same choice.
    #[serde(default)]
    pub precision: Precision,
    /// Magnitude pruning of the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning: Option<Pruning>,
    /// Evaluation against a labelled set, and the accuracy gate. Without it, candidates must agree with the f32
    /// model's outputs on a calibration sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// Resources of the optimize Job's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Deadline of the optimize Job, in seconds.
    #[serde(default = "schema::default_optimize_deadline")]
    #[schemars(range(min = 30, max = 86400))]
    pub active_deadline_seconds: i64,
    /// Retries of the optimize Job. A bad model fails the same way every time, hence the low default.
    #[serde(default = "schema::default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
}

impl Default for Optimize {
    fn default() -> Self {
        Self {
            precision: Precision::default(),
            pruning: None,
            evaluation: None,
            resources: None,
            active_deadline_seconds: schema::default_optimize_deadline(),
            backoff_limit: schema::default_backoff_limit(),
        }
    }
}

/// Numeric precision of the served model.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The fastest candidate that passes the accuracy gate.
    #[default]
    Auto,
    /// 32-bit floats: the model as trained.
    F32,
    /// 16-bit floats.
    F16,
    /// Integer weights, one byte each with a scale per output channel (about 4x smaller than f32); matrix
    /// multiplications the integer kernel takes run in integers (7-bit weights, activations quantized per row at
    /// run time), everything else in f32.
    Int8,
}

impl Precision {
    /// Every precision, for tables, the command line and tests.
    pub const ALL: [Precision; 4] = [
        Precision::Auto,
        Precision::F32,
        Precision::F16,
        Precision::Int8,
    ];

    /// The spelling in the spec, the report and on the command line (`auto`, `f32`, `f16`, `int8`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Magnitude pruning.
///
/// Example: `{sparsity: 0.5}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pruning {
    /// Fraction of weights set to zero, smallest magnitudes first, in [0, 0.95].
    #[schemars(range(min = 0.0, max = 0.95))]
    pub sparsity: f64,
}

/// Evaluation on a labelled set and the gate it enforces.
///
/// Example: `{dataset: "s3://data/digits-test.npz", metric: f1, minScore: 0.9, maxRegression: 0.01}`
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(self.metric in ['accuracy', 'f1', 'precision', 'recall']) || !has(self.minScore) || (self.minScore >= 0.0 && self.minScore <= 1.0)")
    .message("evaluation.minScore must be in [0, 1] for a classification metric").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!(self.metric in ['accuracy', 'f1', 'precision', 'recall']) || !has(self.maxRegression) || self.maxRegression <= 1.0")
    .message("evaluation.maxRegression must be in [0, 1] for a classification metric").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Labelled set: an `.npz` file with arrays `x` (inputs, batch first) and `y` (labels or targets), at any
    /// uri scheme `model.uri` accepts.
    #[schemars(regex(pattern = r"^(https?|s3|pvc|configmap)://[^\s]+$"))]
    #[schemars(length(max = 2048))]
    pub dataset: String,
    /// Score to compute. Classifiers: `accuracy`, `f1`, `precision`, `recall` (macro averages). Regressors:
    /// `mae`, `rmse` (lower is better).
    #[serde(default)]
    pub metric: EvalMetric,
    /// Lowest acceptable score (highest for `mae`/`rmse`). If even the unoptimized model misses it, the Job
    /// fails with `BelowMinScore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    /// Largest score loss an optimization may cost against the unoptimized model; a candidate that loses more
    /// is refused and a safer one served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_regression: Option<f64>,
}

/// Score computed on the labelled set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EvalMetric {
    /// Share of rows whose argmax matches the label.
    #[default]
    Accuracy,
    /// Macro-averaged F1.
    F1,
    /// Macro-averaged precision.
    Precision,
    /// Macro-averaged recall.
    Recall,
    /// Mean absolute error (regression).
    Mae,
    /// Root mean squared error (regression).
    Rmse,
}

/// The serving pods.
///
/// Example:
/// ```yaml
/// replicas: 2
/// threads: 2
/// batching: {maxBatchSize: 16, maxDelayMicros: 500}
/// resources: {requests: {cpu: 500m, memory: 256Mi}, limits: {memory: 512Mi}}
/// ```
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Serving {
    /// Fixed replica count (default 1). Exclusive with `spec.autoscaling`; `kubectl scale` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Resources of the inference server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Dynamic batching: concurrent requests merged along the batch dimension. Unset means no batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Inference threads per pod (default: the container's CPU limit, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<i32>,
    /// Extra containers in each serving pod (log shippers, proxies, feature transformers). They reach the
    /// server on `localhost:8080` (HTTP) and `localhost:8081` (gRPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(c, c.name != 'server')")
        .message("the container name 'server' is reserved for the inference server").reason(Reason::FieldValueForbidden))]
    pub containers: Vec<Container>,
    /// Overrides of the serving pods' scheduling and identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
    /// TLS for the server's HTTP and gRPC ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Bearer-token authentication for inference requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// Dynamic batching of concurrent requests.
///
/// Example: `{maxBatchSize: 32, maxDelayMicros: 1000}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    /// Largest merged batch.
    #[serde(default = "schema::default_max_batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: i32,
    /// Longest a request waits for others to join its batch, in microseconds.
    #[serde(default = "schema::default_max_delay_micros")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub max_delay_micros: i32,
}

/// Scheduling and identity overrides of the serving pods.
///
/// Example: `{nodeSelector: {pool: inference}, priorityClassName: high, labels: {team: risk}}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the pods run as (default: the namespace's `default`, with no API token mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Extra pod labels. The `app.kubernetes.io/*` and `serving.tractor.dev/*` keys are the operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// TLS for the server.
///
/// Example: `{secretRef: {name: digits-tls}}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) mounted read-only into the serving pods.
    pub secret_ref: LocalObjectReference,
}

/// Bearer-token authentication.
///
/// Example: `{secretRef: {name: digits-token}, key: token}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    /// Secret holding the token clients must send as `Authorization: Bearer <token>`.
    pub secret_ref: LocalObjectReference,
    /// Key of the token in the Secret.
    #[serde(default = "schema::default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Autoscaling from Prometheus signals, with the HPA's rules.
///
/// Example:
/// ```yaml
/// minReplicas: 2
/// maxReplicas: 10
/// metrics:
/// - type: Latency
///   latency: {quantile: 0.95, targetMillis: 50}
/// - type: Throughput
///   throughput: {targetPerReplica: 100}
/// ```
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("self.minReplicas > 0 || has(self.scaleToZero)")
    .message("autoscaling.minReplicas: 0 needs autoscaling.scaleToZero.idleAfter (how long without requests before the last replica goes)")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.scaleToZero) || self.minReplicas == 0")
    .message("autoscaling.scaleToZero goes with minReplicas: 0").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest replicas; 0 (with `scaleToZero`) lets an idle model go to no pods, woken by its first request.
    #[serde(default = "schema::default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// How often the metrics are read and the replica count decided, as a duration (`15s`, `1m`).
    #[serde(default = "schema::default_interval")]
    pub interval: Duration,
    /// Ratio around 1.0 within which no scaling happens, as in the HPA.
    #[serde(default = "schema::default_tolerance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: f64,
    /// Where the metrics are read (default: the operator's `--prometheus-url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// Stabilization windows and rate policies, as in the HPA's `behavior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<ScalingBehavior>,
    /// Going to zero replicas when idle, and back on the first request; required with `minReplicas: 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZero>,
    /// The signals to scale on; each proposes a replica count and the largest wins. Default, as the HPA's:
    /// CPU at 80 % utilization (`[{type: Cpu, cpu: {targetUtilizationPercent: 80}}]`).
    #[serde(default = "schema::default_metrics")]
    #[schemars(length(min = 1, max = 8))]
    pub metrics: Vec<MetricSpec>,
}

/// Scale to zero: with `minReplicas: 0`, a model that served no request for `idleAfter` goes to no pods. Its
/// Service then leads to the activator, which holds requests, wakes the model and forwards them to its first
/// ready pod. Prometheus unreadable means no evidence of idleness, and the model stays up.
///
/// Example: `{idleAfter: 10m, maxHeldRequests: 100, holdTimeout: 30s}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleToZero {
    /// How long without a request before the last replica goes, as a duration (`30s`, `10m`).
    pub idle_after: Duration,
    /// Requests each activator replica holds for this model while it wakes; more are answered 503 with
    /// `Retry-After`.
    #[serde(default = "schema::default_max_held_requests")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_held_requests: i32,
    /// How long a held request waits for a ready pod before it is answered 504 (a gRPC client's shorter
    /// deadline wins).
    #[serde(default = "schema::default_hold_timeout")]
    pub hold_timeout: Duration,
}

/// A Prometheus server.
///
/// Example: `{url: "http://prometheus.monitoring:9090", headerSecretRef: {name: prom-auth, key: authorization}}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API.
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// Secret key whose value is sent as the `Authorization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_secret_ref: Option<SecretKeyRef>,
}

/// One key of a Secret in the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Scaling behavior in each direction, as `HorizontalPodAutoscaler.spec.behavior`.
///
/// Example: `{scaleDown: {stabilizationWindowSeconds: 600, policies: [{type: Pods, value: 1, periodSeconds: 60}]}}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Rules for scaling up (default: no stabilization; at most double or +4 pods per 15 s, whichever is more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Rules for scaling down (default: 300 s stabilization; up to 100 % per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// Stabilization and rate limits in one direction.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Past recommendations considered, in seconds: scale-down takes the highest of the window, scale-up the lowest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// Which policy wins when several allow different changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    /// Limits on the change per period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub policies: Vec<ScalingPolicy>,
}

/// Which scaling policy applies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// A limit on the replica change over a period.
///
/// Example: `{type: Percent, value: 50, periodSeconds: 60}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// `Pods` (absolute) or `Percent` (of the current replicas).
    #[serde(rename = "type")]
    pub type_: ScalingPolicyType,
    /// Amount of change allowed per period.
    #[schemars(range(min = 1))]
    pub value: i32,
    /// Length of the period in seconds.
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

/// Unit of a scaling policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingPolicyType {
    /// Absolute number of pods.
    Pods,
    /// Percentage of the current replicas.
    Percent,
}

/// One scaling signal: `type` names the member that holds its settings, as in the HPA's metrics.
///
/// Example:
/// ```yaml
/// - type: Latency
///   latency: {quantile: 0.95, targetMillis: 50}
/// - type: Accuracy
///   accuracy: {min: 0.9, window: 10m}
/// ```
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(self.type == 'Latency') == has(self.latency)")
    .message("metric type Latency needs the latency member, and only it"))]
#[x_kube(validation = Rule::new("(self.type == 'Throughput') == has(self.throughput)")
    .message("metric type Throughput needs the throughput member, and only it"))]
#[x_kube(validation = Rule::new("(self.type == 'Accuracy') == has(self.accuracy)")
    .message("metric type Accuracy needs the accuracy member, and only it"))]
#[x_kube(validation = Rule::new("(self.type == 'Custom') == has(self.custom)")
    .message("metric type Custom needs the custom member, and only it"))]
#[x_kube(validation = Rule::new("self.type == 'Cpu' || !has(self.cpu)")
    .message("the cpu member goes with metric type Cpu only"))]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Which signal: `Cpu`, `Latency`, `Throughput`, `Accuracy` or `Custom`.
    #[serde(rename = "type")]
    pub type_: MetricType,
    /// CPU utilization target, for `type: Cpu` (default 80 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuMetric>,
    /// Request latency quantile, for `type: Latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyMetric>,
    /// Requests per second per ready replica, for `type: Throughput`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<ThroughputMetric>,
    /// Online accuracy from ground-truth feedback, for `type: Accuracy`. It never scales; below `min` for
    /// `window` it marks the resource `Degraded` (and rolls back with `rollout.rollbackOnAccuracyDrop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyMetric>,
    /// A PromQL query and its target, for `type: Custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomMetric>,
}

/// Kinds of scaling signal.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// The server container's CPU use against a share of its CPU request, as the HPA's CPU utilization.
    Cpu,
    /// A latency quantile against a target.
    Latency,
    /// Requests per second per replica against a target.
    Throughput,
    /// Online accuracy against a floor.
    Accuracy,
    /// A user PromQL query against a target.
    Custom,
}

/// CPU utilization target: the servers' CPU time per second (their `process_cpu_seconds_total` in
/// Prometheus), averaged over ready replicas, as a percentage of the server container's CPU request. Without a
/// request the CPU limit counts; without either, one core.
///
/// Example: `{targetUtilizationPercent: 70}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuMetric {
    /// Utilization each replica should run at, in percent of its CPU request (above 100 allowed, as in the
    /// HPA, for requests below what a replica may burst to).
    #[serde(default = "schema::default_cpu_utilization")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_utilization_percent: i32,
}

/// Latency quantile target.
///
/// Example: `{quantile: 0.95, targetMillis: 50}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyMetric {
    /// Quantile of `tractor_inference_request_duration_seconds`, in (0, 1).
    #[serde(default = "schema::default_quantile")]
    #[schemars(range(min = 0.01, max = 0.999))]
    pub quantile: f64,
    /// Target latency of that quantile, in milliseconds.
    #[schemars(range(min = 0.001))]
    pub target_millis: f64,
}

/// Throughput target.
///
/// Example: `{targetPerReplica: 100}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputMetric {
    /// Requests per second each ready replica should carry.
    #[schemars(range(min = 0.001))]
    pub target_per_replica: f64,
}

/// Online accuracy floor.
///
/// Example: `{min: 0.9, window: 10m}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccuracyMetric {
    /// Lowest acceptable rolling accuracy, in [0, 1].
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min: f64,
    /// How long accuracy must stay below `min` before the resource is `Degraded`, as a duration.
    #[serde(default = "schema::default_accuracy_window")]
    pub window: Duration,
}

/// A user-defined PromQL signal.
///
/// Example: `{query: "sum(rate(my_queue_depth[1m]))", target: 10}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetric {
    /// PromQL instant query returning one sample; its value is compared with `target`.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Value per replica at which the current replica count is right.
    #[schemars(range(min = 0.000001))]
    pub target: f64,
}

/// Monitoring beyond the scaling signals.
///
/// Example:
/// ```yaml
/// drift: {threshold: 0.2, interval: 30s, window: 5m}
/// logging: {url: "http://sink.monitoring:8080/", sampleRate: 0.1}
/// ```
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Input drift: each serving pod scores what it served over a sliding window against the reference bins
    /// the optimize step recorded from `optimize.evaluation.dataset` (no dataset, no reference, no drift); the
    /// operator reads the scores from Prometheus and marks the resource `Degraded` with reason `InputDrift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftMonitoring>,
    /// Payload logging: request and response records sent as CloudEvents to an HTTP sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<PayloadLogging>,
}

/// Input drift, judged without labels. Each feature's score is its population stability index (PSI) over the
/// window against the reference: `Σ (p − q)·ln(p/q)` over the reference's decile bins (below 0.1 is commonly
/// read as no shift, above 0.25 as a major one). Pods' scores are weighted by the rows each served.
///
/// Example: `{threshold: 0.2, interval: 30s, window: 5m, minRows: 100}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftMonitoring {
    /// PSI above which a feature counts as drifted; `Degraded` names the worst such features.
    #[serde(default = "schema::default_drift_threshold")]
    #[schemars(range(min = 0.001, max = 100.0))]
    pub threshold: f64,
    /// How often drift is read from Prometheus and judged, with or without autoscaling, as a duration.
    #[serde(default = "schema::default_drift_interval")]
    pub interval: Duration,
    /// How much recent traffic each pod's scores cover (its sliding window), as a duration. Drift clears
    /// about one window after the traffic is back to normal.
    #[serde(default = "schema::default_drift_window")]
    pub window: Duration,
    /// Rows the windows must hold, all pods together, before drift is judged: a PSI over few rows is noise
    /// (about `(bins − 1) / rows` even without drift).
    #[serde(default = "schema::default_drift_min_rows")]
    #[schemars(range(min = 1, max = 100000000))]
    pub min_rows: i32,
}

/// Payload logging: each sampled call gives two CloudEvents 1.0 records (types
/// `dev.tractor.serving.inference.request` and `.response`), sent in batches (`application/cloudevents-batch+json`)
/// by a background task. The queue to the sink is bounded: a slow or dead sink drops records (counted in
/// `tractor_payload_log_records_total`) and never slows inference.
///
/// Example: `{url: "http://sink.monitoring:8080/", sampleRate: 0.1, includeInputs: true, maxBytes: 65536}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PayloadLogging {
    /// The sink's URL (`http://` or `https://`).
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub url: String,
    /// Share of calls logged, in [0, 1]; a call's request and response are logged together or not at all.
    #[serde(default = "schema::default_log_sample_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
    /// Whether request records carry the input values (false: names, datatypes and shapes only).
    #[serde(default = "schema::default_true")]
    pub include_inputs: bool,
    /// Largest `data` of one record in bytes; a larger one is sent without its values, marked truncated.
    #[serde(default = "schema::default_log_max_bytes")]
    #[schemars(range(min = 256, max = 16777216))]
    pub max_bytes: i32,
}

/// How a new revision replaces the serving one.
///
/// Example:
/// ```yaml
/// strategy: Canary
/// canary:
///   steps: [{weight: 10, pause: 2m}, {weight: 50, pause: 5m}]
///   analysis: {maxLatencyMillis: 80, maxErrorRate: 0.01, minAccuracy: 0.9}
/// ```
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.strategy != 'Canary' || has(self.canary)")
    .message("rollout.strategy Canary needs rollout.canary").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `RollingUpdate` replaces pods in place; `Canary` shifts traffic step by step under analysis.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Canary steps and analysis, for `strategy: Canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Return to the last stable revision when online accuracy stays below its floor.
    #[serde(default)]
    pub rollback_on_accuracy_drop: bool,
}

/// Rollout strategy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RolloutStrategy {
    /// Replace pods in place, as a Deployment does.
    #[default]
    RollingUpdate,
    /// A second Deployment takes a growing share of traffic while analysis watches it.
    Canary,
}

/// Canary steps and analysis.
///
/// Example: `{steps: [{weight: 20, pause: 1m}, {weight: 60, pause: 2m}], analysis: {maxErrorRate: 0.01}}`
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Traffic shares to go through, strictly rising; after the last step the canary is promoted.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(validation = Rule::new("self.map(s, s.weight).isSorted() && self.all(s, self.exists_one(t, t.weight == s.weight))")
        .message("canary step weights must rise strictly").reason(Reason::FieldValueInvalid))]
    pub steps: Vec<CanaryStep>,
    /// Limits the canary is held to at every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
}

/// One canary step.
///
/// Example: `{weight: 25, pause: 5m}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percentage of traffic (and replicas) on the canary, in [1, 100].
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// How long the step holds under analysis before the next, as a duration.
    #[serde(default = "schema::default_pause")]
    pub pause: Duration,
}

/// Canary analysis limits, checked every step.
///
/// Example: `{maxLatencyMillis: 100, maxErrorRate: 0.01, minAccuracy: 0.92, failureLimit: 2}`
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Highest acceptable p95 latency of the canary, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub max_latency_millis: Option<f64>,
    /// Highest acceptable share of failed requests, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,
    /// Lowest acceptable online accuracy from feedback, in [0, 1]. Judged on the canary's labelled
    /// predictions counted so far, at 3σ (Wilson interval): the analysis fails when even the top of the
    /// interval is below this, passes when its bottom reaches it, and waits for more labels in between.
    /// Set, it also fails a canary whose accuracy is more than 0.05 below the stable revision's at the same
    /// confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_accuracy: Option<f64>,
    /// Failed checks tolerated before the canary is rolled back.
    #[serde(default = "schema::default_failure_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is what the CLI, the report and the V2 protocol print; it must be serde's spelling.
    #[test]
    fn names_are_the_serde_names() {
        for d in Datatype::ALL {
            assert_eq!(serde_json::to_value(d).expect("serializes"), d.as_str());
            assert_eq!(Datatype::parse(d.as_str()), Some(d));
        }
        assert_eq!(Datatype::parse("fp32"), None);
        for p in Precision::ALL {
            assert_eq!(serde_json::to_value(p).expect("serializes"), p.as_str());
        }
    }
}
