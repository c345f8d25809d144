//! Identity strings of the API: group, label and annotation keys, the field manager, ports, container names.
//!
//! One source of truth: every other crate imports these instead of writing the strings again.

/// API group of the ModelDeployment resource.
pub const GROUP: &str = "serving.tractor.dev";
/// API version of the ModelDeployment resource.
pub const VERSION: &str = "v1alpha1";
/// Field manager for every server-side apply the operator does.
pub const FIELD_MANAGER: &str = "tractor";

/// `app.kubernetes.io/name` on every object the operator creates.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Value of [`LABEL_NAME`]: all model-serving objects share it.
pub const LABEL_NAME_VALUE: &str = "tractor-model";
/// `app.kubernetes.io/instance`: the ModelDeployment's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const LABEL_MANAGED_BY_VALUE: &str = "tractor";
/// `serving.tractor.dev/model`: the ModelDeployment's name (the selector key of its Service).
pub const LABEL_MODEL: &str = "serving.tractor.dev/model";
/// `serving.tractor.dev/revision`: the model revision an object belongs to.
pub const LABEL_REVISION: &str = "serving.tractor.dev/revision";
/// `serving.tractor.dev/component`: `optimize` or `server`, so watches can be narrowed by role.
pub const LABEL_COMPONENT: &str = "serving.tractor.dev/component";

/// Name of the inference server container in serving pods; user containers may not take it.
pub const SERVER_CONTAINER: &str = "server";
/// HTTP port of the server: V2 REST, `/metrics`, health.
pub const HTTP_PORT: i32 = 8080;
/// gRPC port of the server: `inference.GRPCInferenceService`.
pub const GRPC_PORT: i32 = 8081;
/// Response header on every REST answer, and response metadata key on every gRPC answer, naming the revision
/// of the server that answered (its pod's [`LABEL_REVISION`]): behind one Service, the way a client tells a
/// canary pod's answer from a stable one's.
pub const HEADER_REVISION: &str = "tractor-revision";

/// `serving.tractor.dev/spec-hash`: hash of what the operator applied to a child; equal hash, no write.
pub const ANNOTATION_SPEC_HASH: &str = "serving.tractor.dev/spec-hash";
/// `serving.tractor.dev/model`: on a serving Deployment, the JSON `status.model` of the model it serves, so the
/// status can name what serves after a canary is rolled back.
pub const ANNOTATION_MODEL: &str = "serving.tractor.dev/model";
/// `serving.tractor.dev/track`: `canary` on a canary Deployment's pods; keeps its selector off the stable pods.
pub const LABEL_TRACK: &str = "serving.tractor.dev/track";
/// Value of [`LABEL_TRACK`] on canary pods.
pub const TRACK_CANARY: &str = "canary";
/// Suffix of a canary Deployment's name: `<model>-canary`.
pub const CANARY_SUFFIX: &str = "-canary";

/// Component label value of optimize Job pods.
pub const COMPONENT_OPTIMIZE: &str = "optimize";
/// Component label value of serving pods.
pub const COMPONENT_SERVER: &str = "server";
/// Component label value of the EndpointSlice that leads a model's Service to the activator.
pub const COMPONENT_ACTIVATOR: &str = "activator";
/// The label an EndpointSlice names its Service with; kube-proxy routes a Service to every slice carrying it.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label saying which controller manages an EndpointSlice.
pub const LABEL_ENDPOINTSLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Its value on slices the operator writes (the activator's, for models at zero).
pub const ENDPOINTSLICE_MANAGER: &str = "operator.serving.tractor.dev";
/// Its value on slices Kubernetes' endpoints controller writes for a Service's selector.
pub const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// File name `tractor optimize --out DIR` writes the served artifact (tract NNEF archive) to.
pub const ARTIFACT_FILE: &str = "model.nnef.tgz";

/// The labels every object of a ModelDeployment's revision carries, as the architecture contract says.
pub fn common_labels(model: &str, revision: &str) -> std::collections::BTreeMap<String, String> {
    [
        (LABEL_NAME, LABEL_NAME_VALUE),
        (LABEL_INSTANCE, model),
        (LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE),
        (LABEL_MODEL, model),
        (LABEL_REVISION, revision),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Environment variables that reach the artifact store from the optimize Job (publish) and the serving pods'
/// fetch step. Apart from the `AWS_*` a source's own `spec.model.s3` uses, so a Job can read a source from one
/// S3 store and publish to another.
pub mod store_env {
    /// The store's S3 endpoint URL.
    pub const ENDPOINT: &str = "TRACTOR_STORE_ENDPOINT";
    /// The store's region.
    pub const REGION: &str = "TRACTOR_STORE_REGION";
    /// `true` to address the bucket in the path.
    pub const PATH_STYLE: &str = "TRACTOR_STORE_PATH_STYLE";
    /// The access key id, from the store Secret's `AWS_ACCESS_KEY_ID`.
    pub const ACCESS_KEY_ID: &str = "TRACTOR_STORE_ACCESS_KEY_ID";
    /// The secret key, from the store Secret's `AWS_SECRET_ACCESS_KEY`.
    pub const SECRET_ACCESS_KEY: &str = "TRACTOR_STORE_SECRET_ACCESS_KEY";
}

/// `serving.tractor.dev/wake`: set on a ModelDeployment by the activator, by JSON merge patch, to the RFC 3339
/// UTC time (with fractional seconds) it last held a request for the model; a model scaled to zero is woken by
/// a value newer than its scale-down. Each activator replica writes it at most once a second per model.
pub const ANNOTATION_WAKE: &str = "serving.tractor.dev/wake";
