//! The children of a ModelDeployment, pure: one builder per object, from the validated spec to the object
//! to apply.
//!
//! How a serving pod gets its artifact: with no artifact store configured, an init container re-derives it
//! from the source with the recipe the optimize Job recorded (`tractor optimize` is deterministic for a fixed
//! precision), and the server refuses to start unless the bytes hash to `status.model.artifactDigest`. So a
//! pod serves exactly what the Job evaluated, or nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};
use tractor_api::names::{self, ARTIFACT_FILE, GRPC_PORT, HTTP_PORT, SERVER_CONTAINER};
use tractor_api::{
    Delivery, DeliveryMode, Endpoints, EvaluationRequest, ModelDeployment, ModelStatus,
    OptimizeRequest, Precision,
};

use crate::validate::{Location, Validated};

/// Where a `configmap://` or `pvc://` model source is mounted, read-only.
const SOURCE_DIR: &str = "/var/run/tractor/source";
/// Where a `configmap://` or `pvc://` evaluation set is mounted, read-only.
const DATASET_DIR: &str = "/var/run/tractor/dataset";
/// Scratch folder the artifact is written to (an emptyDir: the root filesystem is read-only).
const ARTIFACT_DIR: &str = "/var/lib/tractor/model";
const TLS_DIR: &str = "/var/run/tractor/tls";
const AUTH_DIR: &str = "/var/run/tractor/auth";
/// Non-root user of every tractor container (the distroless `nonroot` uid).
const RUN_AS: i64 = 65532;
/// How long a serving pod keeps answering after SIGTERM (not Ready, so its endpoint goes). kube-proxy on every
/// node still routes new connections to it until it has synced the endpoint change (a second or two on a
/// loaded node); a server that stopped at once lost those requests at every scale-in and canary step
/// (seen as connect timeouts through the Service). Well inside the 30 s termination grace period.
const DRAIN_DELAY_MILLIS: u64 = 5_000;

/// Operator settings the builders need.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Image with the `tractor` binary, for Jobs and serving pods.
    pub image: String,
    /// Where Jobs publish artifacts and pods fetch them; `None`: pods re-derive them.
    pub artifact_store: Option<ArtifactStore>,
}

/// The operator's artifact store (`--artifact-store` and its settings).
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactStore {
    /// `s3://bucket/prefix`, no trailing slash.
    pub uri: String,
    /// S3 endpoint URL.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Bucket in the path rather than the host name.
    pub path_style: bool,
    /// Name of the Secret with the store's keys, in each model namespace.
    pub secret: String,
}

impl ArtifactStore {
    /// The environment that reaches the store ([`names::store_env`]); the keys are references to the
    /// namespace's Secret, never copies.
    fn env(&self) -> Vec<EnvVar> {
        use names::store_env;
        let mut vars = vec![];
        if let Some(endpoint) = &self.endpoint {
            vars.push(env(store_env::ENDPOINT, endpoint.clone()));
        }
        if let Some(region) = &self.region {
            vars.push(env(store_env::REGION, region.clone()));
        }
        vars.extend([
            env(store_env::PATH_STYLE, self.path_style.to_string()),
            secret_env(store_env::ACCESS_KEY_ID, &self.secret, "AWS_ACCESS_KEY_ID"),
            secret_env(
                store_env::SECRET_ACCESS_KEY,
                &self.secret,
                "AWS_SECRET_ACCESS_KEY",
            ),
        ]);
        vars
    }
}

/// The store a Job of this namespace publishes to: the operator's, where the namespace holds its Secret (a
/// Job referencing a missing Secret would never start).
pub fn publishing_store<'a>(
    config: &'a BuildConfig,
    secret: Option<&Result<bool, String>>,
) -> Option<&'a ArtifactStore> {
    config
        .artifact_store
        .as_ref()
        .filter(|_| matches!(secret, Some(Ok(true))))
}

/// How serving pods of `model` get their artifact: downloaded from the store when the operator has one, the
/// namespace holds its Secret and the Job published this artifact; otherwise re-derived, and the message
/// says what keeps the store out.
pub fn delivery(
    model: &ModelStatus,
    config: &BuildConfig,
    namespace: &str,
    secret: Option<&Result<bool, String>>,
) -> Delivery {
    let rederive = |message: String| Delivery {
        mode: DeliveryMode::Rederive,
        message,
    };
    let Some(store) = &config.artifact_store else {
        return rederive(
            "no artifact store (the operator's --artifact-store): each pod re-derives the artifact from the source"
                .to_owned(),
        );
    };
    match (secret, &model.artifact_uri) {
        (Some(Ok(false)), _) => rederive(format!(
            "Secret {} not found in namespace {namespace}: each pod re-derives the artifact; create it with the \
             store's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to use {}",
            store.secret, store.uri
        )),
        (Some(Err(why)), _) => rederive(format!(
            "cannot read Secret {} in namespace {namespace} ({why}): each pod re-derives the artifact",
            store.secret
        )),
        (_, None) => rederive(format!(
            "the optimize Job did not publish this artifact to {}: each pod re-derives it",
            store.uri
        )),
        (_, Some(uri)) => Delivery {
            mode: DeliveryMode::ArtifactStore,
            message: format!("pods download {uri}"),
        },
    }
}

/// Name of the optimize Job of a revision.
pub fn job_name(md_name: &str, revision: &str) -> String {
    format!("{md_name}-{revision}")
}

fn owner(md: &ModelDeployment) -> Option<OwnerReference> {
    md.controller_owner_ref(&())
}

fn meta(md: &ModelDeployment, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: md.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: owner(md).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Labels selecting every serving pod of a ModelDeployment, whatever the revision: stable across revisions
/// because a Deployment's selector is immutable.
pub fn server_selector(md_name: &str) -> BTreeMap<String, String> {
    [
        (names::LABEL_MODEL.to_owned(), md_name.to_owned()),
        (
            names::LABEL_COMPONENT.to_owned(),
            names::COMPONENT_SERVER.to_owned(),
        ),
    ]
    .into()
}

/// The selector in string form, as `status.selector` carries it for `/scale`.
pub fn server_selector_string(md_name: &str) -> String {
    server_selector(md_name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(md_name: &str, revision: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = names::common_labels(md_name, revision);
    l.insert(names::LABEL_COMPONENT.to_owned(), component.to_owned());
    l
}

/// Stamps `object` with the hash of its own content, so an unchanged child is recognised without a write.
pub fn with_spec_hash<T: serde::Serialize + Resource>(mut object: T) -> T {
    let bytes = serde_json::to_vec(&object).unwrap_or_default();
    let hash = hex::encode(Sha256::digest(&bytes))[..16].to_owned();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(names::ANNOTATION_SPEC_HASH.to_owned(), hash);
    object
}

/// The hash a child was applied with, if any.
pub fn spec_hash<T: Resource>(object: &T) -> Option<&str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(names::ANNOTATION_SPEC_HASH)
        .map(String::as_str)
}

fn restricted_container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn restricted_pod_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Volumes, mounts and environment a `tractor optimize` run needs to reach its source (and dataset).
#[derive(Default)]
struct SourceAccess {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    env: Vec<EnvVar>,
}

impl SourceAccess {
    /// Mounts a `configmap://` or `pvc://` location and returns the local path the command should read.
    fn locate(&mut self, location: &Location, volume: &str, dir: &str) -> String {
        match location {
            Location::Remote(uri) => uri.clone(),
            Location::ConfigMap { name, key } => {
                self.mount(
                    Volume {
                        name: volume.to_owned(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: name.clone(),
                            ..Default::default()
                        }),
                        ..Volume::default()
                    },
                    dir,
                );
                format!("{dir}/{key}")
            }
            Location::Pvc { claim, path } => {
                self.mount(
                    Volume {
                        name: volume.to_owned(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: claim.clone(),
                            read_only: Some(true),
                        }),
                        ..Volume::default()
                    },
                    dir,
                );
                format!("{dir}/{path}")
            }
        }
    }

    fn mount(&mut self, volume: Volume, dir: &str) {
        self.mounts.push(VolumeMount {
            name: volume.name.clone(),
            mount_path: dir.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        self.volumes.push(volume);
    }
}

/// The `tractor optimize` run and what it needs, for the Job (`evaluate`) or an init container: its args
/// (`optimize --request <json>`) and the volumes and environment that reach its source and dataset.
fn optimize_command(
    validated: &Validated,
    precision: Precision,
    evaluate: bool,
    prune: bool,
    publish: Option<&ArtifactStore>,
) -> (Vec<String>, SourceAccess) {
    let spec = &validated.md.spec;
    let mut access = SourceAccess::default();
    let source = access.locate(&validated.source, "model-source", SOURCE_DIR);
    let evaluation = match (evaluate, &spec.optimize.evaluation, &validated.dataset) {
        (true, Some(evaluation), Some(dataset)) => Some(EvaluationRequest {
            data: access.locate(dataset, "dataset", DATASET_DIR),
            metric: evaluation.metric,
            min_score: evaluation.min_score,
            max_regression: evaluation.max_regression,
        }),
        _ => None,
    };
    // A re-derivation reads the labelled set for the drift reference only (no gate): the artifact's bytes, and
    // so its digest, are then the Job's.
    let reference = match (evaluate, &spec.optimize.evaluation, &validated.dataset) {
        (false, Some(evaluation), Some(dataset)) => Some(EvaluationRequest {
            data: access.locate(dataset, "dataset", DATASET_DIR),
            metric: evaluation.metric,
            min_score: None,
            max_regression: None,
        }),
        _ => None,
    };
    let request = OptimizeRequest {
        source,
        sha256: spec.model.sha256.clone(),
        format: spec.model.format,
        inputs: spec.model.inputs.clone(),
        out: ARTIFACT_DIR.to_owned(),
        precision,
        prune_sparsity: spec
            .optimize
            .pruning
            .as_ref()
            .filter(|_| prune)
            .map(|pruning| pruning.sparsity),
        evaluation,
        reference,
        publish: publish.map(|store| store.uri.clone()),
        // Only the Job records the cache entry (an init container re-deriving publishes nothing).
        cache_key: publish
            .filter(|_| evaluate)
            .and_then(|_| tractor_api::revision::cache_key(spec)),
    };
    if let Some(store) = publish {
        access.env.extend(store.env());
    }
    if let Some(s3) = &spec.model.s3 {
        if let Some(endpoint) = &s3.endpoint {
            access.env.push(env("AWS_ENDPOINT_URL", endpoint.clone()));
        }
        if let Some(region) = &s3.region {
            access.env.push(env("AWS_REGION", region.clone()));
        }
        access.env.push(env(
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
            (!s3.path_style).to_string(),
        ));
        if let Some(secret) = s3.secret_ref.as_ref() {
            // Referenced, never copied: the Secret's values reach only this container's environment.
            access.env.push(secret_env(
                "AWS_ACCESS_KEY_ID",
                &secret.name,
                "AWS_ACCESS_KEY_ID",
            ));
            access.env.push(secret_env(
                "AWS_SECRET_ACCESS_KEY",
                &secret.name,
                "AWS_SECRET_ACCESS_KEY",
            ));
        }
    }
    let args = vec![
        "optimize".to_owned(),
        "--request".to_owned(),
        request.to_json(),
    ];
    (args, access)
}

/// A Secret as a read-only volume named `name`, mounted at `dir`.
fn secret_volume(name: &str, secret: &str, dir: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            ..Default::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: name.to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}

fn artifact_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "artifact".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        VolumeMount {
            name: "artifact".to_owned(),
            mount_path: ARTIFACT_DIR.to_owned(),
            ..VolumeMount::default()
        },
    )
}

/// A writable `/tmp` (an emptyDir): the root filesystem is read-only, and `tractor optimize` works in a
/// temporary folder.
fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    )
}

/// The optimize Job of the current revision. Its report comes back through the container's termination
/// message (`/dev/termination-log`), so the Job needs no API access at all.
/// The optimize Job of the current revision; it publishes the artifact to `publish` when given.
pub fn optimize_job(
    validated: &Validated,
    config: &BuildConfig,
    publish: Option<&ArtifactStore>,
) -> Job {
    let spec = &validated.md.spec;
    let labels = labels(
        &validated.name,
        &validated.revision,
        names::COMPONENT_OPTIMIZE,
    );
    let (args, mut access) =
        optimize_command(validated, spec.optimize.precision, true, true, publish);
    let (artifact, artifact_mount) = artifact_volume();
    let (tmp, tmp_mount) = tmp_volume();
    access.volumes.extend([artifact, tmp]);
    access.mounts.extend([artifact_mount, tmp_mount]);
    // The Job runs where the serving pods run (a tainted GPU pool, the test cluster's real node): the same
    // placement, so a model is optimized on the hardware that will serve it.
    let pod = spec.serving.pod.clone().unwrap_or_default();
    let container = Container {
        name: names::COMPONENT_OPTIMIZE.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args),
        env: (!access.env.is_empty()).then_some(access.env),
        volume_mounts: Some(access.mounts),
        resources: spec.optimize.resources.clone(),
        security_context: Some(restricted_container_context()),
        termination_message_policy: Some("File".to_owned()),
        ..Container::default()
    };
    Job {
        metadata: meta(
            &validated.md,
            job_name(&validated.name, &validated.revision),
            labels.clone(),
        ),
        spec: Some(JobSpec {
            backoff_limit: Some(spec.optimize.backoff_limit),
            active_deadline_seconds: Some(spec.optimize.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_context()),
                    containers: vec![container],
                    volumes: Some(access.volumes),
                    node_selector: (!pod.node_selector.is_empty()).then_some(pod.node_selector),
                    tolerations: (!pod.tolerations.is_empty()).then_some(pod.tolerations),
                    affinity: pod.affinity,
                    priority_class_name: pod.priority_class_name,
                    image_pull_secrets: (!pod.image_pull_secrets.is_empty())
                        .then_some(pod.image_pull_secrets),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// glibc's malloc setting for the server: blocks of 4 MiB and more are mapped on their own and go back to the
/// kernel when freed. Loading a model allocates and frees its weights' size several times over (the archive, the
/// parsed tensors, the packed plans); with glibc's default (a threshold that grows to 32 MiB) those frees stay in
/// the heap, and a 100 MB model's server held about twice its RSS after start (measured by
/// `tractor-model/examples/bench_load.rs`: 225 MiB against 113 MiB with this setting).
pub const MALLOC_MMAP_THRESHOLD: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "4194304");

fn http_probe(path: &str, tls: bool, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            scheme: Some(if tls { "HTTPS" } else { "HTTP" }.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The replica count in force: the spec's, or with autoscaling the last count the autoscaler recorded in the
/// status, within the spec's bounds.
pub fn desired_replicas(md: &ModelDeployment) -> i32 {
    match &md.spec.autoscaling {
        Some(a) => md
            .status
            .as_ref()
            .and_then(|s| s.desired_replicas)
            // A new model starts with a pod even when it may scale to zero: it has to serve before it can idle.
            .unwrap_or(a.min_replicas.max(1))
            .clamp(a.min_replicas, a.max_replicas),
        None => md.spec.serving.replicas.unwrap_or(1),
    }
}

/// The server's flags for `spec.monitoring`: its drift window, and where and how it logs payloads. The
/// CloudEvents `source` names the ModelDeployment as its API path does.
fn monitoring_args(validated: &Validated) -> Vec<String> {
    let mut args = vec![];
    let Some(monitoring) = &validated.md.spec.monitoring else {
        return args;
    };
    if let Some(drift) = &monitoring.drift {
        args.extend([
            "--drift-window-secs".to_owned(),
            drift.window.as_std().as_secs().max(1).to_string(),
        ]);
    }
    if let Some(logging) = &monitoring.logging {
        args.extend([
            "--log-url".to_owned(),
            logging.url.clone(),
            "--log-sample-rate".to_owned(),
            logging.sample_rate.to_string(),
            "--log-include-inputs".to_owned(),
            logging.include_inputs.to_string(),
            "--log-max-bytes".to_owned(),
            logging.max_bytes.to_string(),
            "--log-source".to_owned(),
            format!(
                "/apis/{}/{}/namespaces/{}/modeldeployments/{}",
                names::GROUP,
                names::VERSION,
                validated.namespace,
                validated.name
            ),
        ]);
    }
    args
}

/// The serving Deployment for the model in `model` (the current revision's, or the last good one's while a
/// new revision is optimizing or has failed), with `replicas` pods.
pub fn deployment(
    validated: &Validated,
    model: &ModelStatus,
    config: &BuildConfig,
    replicas: i32,
) -> Deployment {
    let spec = &validated.md.spec;
    let serving = &spec.serving;
    let revision = model
        .revision
        .clone()
        .unwrap_or_else(|| validated.revision.clone());
    let mut pod_labels = serving
        .pod
        .as_ref()
        .map(|p| p.labels.clone())
        .unwrap_or_default();
    // Ours last: a user label must never break the selector or the contract labels.
    pod_labels.extend(labels(&validated.name, &revision, names::COMPONENT_SERVER));
    let mut annotations = serving
        .pod
        .as_ref()
        .map(|p| p.annotations.clone())
        .unwrap_or_default();
    annotations.extend([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    if serving.tls.is_some() {
        annotations.insert("prometheus.io/scheme".to_owned(), "https".to_owned());
    }

    let artifact_hex = model
        .artifact_digest
        .as_deref()
        .map(|digest| digest.trim_start_matches("sha256:").to_owned())
        .unwrap_or_default();
    let downloaded = match (&model.delivery, &model.artifact_uri, &config.artifact_store) {
        (Some(delivery), Some(uri), Some(store))
            if delivery.mode == DeliveryMode::ArtifactStore =>
        {
            Some((uri, store))
        }
        _ => None,
    };
    let (fetch_args, mut access) = match downloaded {
        // Exactly the published digest, checked before it is written where the server reads it.
        Some((uri, store)) => (
            vec![
                "fetch".to_owned(),
                "--uri".to_owned(),
                uri.clone(),
                "--sha256".to_owned(),
                artifact_hex.clone(),
                "--out".to_owned(),
                ARTIFACT_DIR.to_owned(),
            ],
            SourceAccess {
                env: store.env(),
                ..SourceAccess::default()
            },
        ),
        // The pods re-derive exactly what the Job chose: its precision, and no pruning where the gate refused
        // it.
        None => optimize_command(
            validated,
            model.precision.unwrap_or(Precision::F32),
            false,
            !model.pruning_refused,
            None,
        ),
    };
    let (artifact, artifact_mount) = artifact_volume();
    let (tmp, tmp_mount) = tmp_volume();
    access.volumes.extend([artifact, tmp]);

    let mut server_args = vec![
        "serve".to_owned(),
        "--model".to_owned(),
        format!("{ARTIFACT_DIR}/{ARTIFACT_FILE}"),
        "--name".to_owned(),
        validated.name.clone(),
        // The pod's revision label, so every response names the revision that answered (canary traffic split
        // behind one Service). It only changes with that label, so it rolls no pod the label would not.
        "--revision".to_owned(),
        revision.clone(),
        "--sha256".to_owned(),
        artifact_hex,
        "--http-addr".to_owned(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--grpc-addr".to_owned(),
        format!("0.0.0.0:{GRPC_PORT}"),
        "--drain-delay-millis".to_owned(),
        DRAIN_DELAY_MILLIS.to_string(),
    ];
    if let Some(batching) = &serving.batching {
        server_args.extend([
            "--max-batch-size".to_owned(),
            batching.max_batch_size.to_string(),
            "--max-delay-micros".to_owned(),
            batching.max_delay_micros.to_string(),
        ]);
    }
    if let Some(threads) = serving.threads {
        server_args.extend(["--threads".to_owned(), threads.to_string()]);
    }
    server_args.extend(monitoring_args(validated));
    let mut server_mounts = vec![
        VolumeMount {
            read_only: Some(true),
            ..artifact_mount.clone()
        },
        tmp_mount.clone(),
    ];
    if let Some(tls) = &serving.tls {
        let (volume, mount) = secret_volume("tls", &tls.secret_ref.name, TLS_DIR);
        access.volumes.push(volume);
        server_mounts.push(mount);
        server_args.extend([
            "--tls-cert".to_owned(),
            format!("{TLS_DIR}/tls.crt"),
            "--tls-key".to_owned(),
            format!("{TLS_DIR}/tls.key"),
        ]);
    }
    if let Some(auth) = &serving.auth {
        let (volume, mount) = secret_volume("auth", &auth.secret_ref.name, AUTH_DIR);
        access.volumes.push(volume);
        server_mounts.push(mount);
        server_args.extend([
            "--auth-token-file".to_owned(),
            format!("{AUTH_DIR}/{}", auth.key),
        ]);
    }
    let tls = serving.tls.is_some();

    let fetch = Container {
        name: "fetch".to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(fetch_args),
        env: (!access.env.is_empty()).then_some(access.env),
        volume_mounts: Some(
            access
                .mounts
                .into_iter()
                .chain([artifact_mount, tmp_mount])
                .collect(),
        ),
        resources: spec.optimize.resources.clone(),
        security_context: Some(restricted_container_context()),
        ..Container::default()
    };
    let server = Container {
        name: SERVER_CONTAINER.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(server_args),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("grpc".to_owned()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
        ]),
        // The kubelet probes on a ticker from the pod's start, and readiness only after the startup probe passed:
        // each period adds up to itself to pod Ready after the server is. One second, the kubelet's least, for
        // both (a health GET costs the server microseconds); readiness falls after three misses.
        readiness_probe: Some(http_probe("/v2/health/ready", tls, 1, 3)),
        liveness_probe: Some(http_probe("/v2/health/live", tls, 10, 3)),
        // Loading and warming a large model can take a while: liveness waits up to three minutes for it.
        startup_probe: Some(http_probe("/v2/health/live", tls, 1, 180)),
        resources: serving.resources.clone(),
        security_context: Some(restricted_container_context()),
        volume_mounts: Some(server_mounts),
        env: Some(vec![EnvVar {
            name: MALLOC_MMAP_THRESHOLD.0.to_owned(),
            value: Some(MALLOC_MMAP_THRESHOLD.1.to_owned()),
            ..EnvVar::default()
        }]),
        ..Container::default()
    };
    let pod = serving.pod.clone().unwrap_or_default();
    let mut containers = vec![server];
    containers.extend(serving.containers.iter().cloned());

    let mut metadata = meta(
        &validated.md,
        validated.name.clone(),
        labels(&validated.name, &revision, names::COMPONENT_SERVER),
    );
    // What this Deployment serves, so the status can say it even after the spec moved on (a canary rolled back).
    if let Ok(json) = serde_json::to_string(model) {
        metadata.annotations = Some([(names::ANNOTATION_MODEL.to_owned(), json)].into());
    }
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(server_selector(&validated.name)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                // Never below the desired capacity while a new revision comes up.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_owned())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![fetch]),
                    containers,
                    volumes: Some(access.volumes),
                    security_context: Some(restricted_pod_context()),
                    automount_service_account_token: Some(false),
                    node_selector: (!pod.node_selector.is_empty()).then_some(pod.node_selector),
                    tolerations: (!pod.tolerations.is_empty()).then_some(pod.tolerations),
                    affinity: pod.affinity,
                    priority_class_name: pod.priority_class_name,
                    service_account_name: pod.service_account_name,
                    image_pull_secrets: (!pod.image_pull_secrets.is_empty())
                        .then_some(pod.image_pull_secrets),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Watches on children are narrowed to what the operator manages.
pub fn managed_selector() -> String {
    format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::LABEL_MANAGED_BY_VALUE
    )
}

/// The canary Deployment's name: `<model>-canary`.
pub fn canary_name(md_name: &str) -> String {
    format!("{md_name}{}", names::CANARY_SUFFIX)
}

/// The canary Deployment for `model`: the serving Deployment under its own name, with `replicas` pods labelled
/// `track: canary` and a selector that only they match (the stable Deployment's selector is immutable and
/// matches every serving pod, which is harmless: a Deployment only manages the ReplicaSets it owns).
pub fn canary_deployment(
    validated: &Validated,
    model: &ModelStatus,
    config: &BuildConfig,
    replicas: i32,
) -> Deployment {
    let mut canary = deployment(validated, model, config, replicas);
    canary.metadata.name = Some(canary_name(&validated.name));
    let track = (
        names::LABEL_TRACK.to_owned(),
        names::TRACK_CANARY.to_owned(),
    );
    if let Some(spec) = canary.spec.as_mut() {
        spec.selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(track.0.clone(), track.1.clone());
        spec.template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(track.0, track.1);
    }
    canary
}

/// The model a serving Deployment was built for, from its annotation.
pub fn served_model(d: &Deployment) -> Option<ModelStatus> {
    let json = d
        .metadata
        .annotations
        .as_ref()?
        .get(names::ANNOTATION_MODEL)?;
    serde_json::from_str(json).ok()
}

/// The revision a serving Deployment's pods run, from its pod template.
pub fn served_revision(d: &Deployment) -> Option<String> {
    template_revision(&d.spec.as_ref()?.template)
}

/// The revision label of a pod template (a Deployment's, or the one a ReplicaSet remembers).
pub fn template_revision(template: &PodTemplateSpec) -> Option<String> {
    template
        .metadata
        .as_ref()?
        .labels
        .as_ref()?
        .get(names::LABEL_REVISION)
        .cloned()
}

fn serving_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some(
            if name == "grpc" {
                "kubernetes.io/h2c"
            } else {
                "http"
            }
            .to_owned(),
        ),
        ..ServicePort::default()
    }
}

/// The Service: same name as the ModelDeployment, every revision's serving pods behind it. With
/// `Endpoints::Activator` it has no selector: the activator's EndpointSlice ([`activator_slice`]) is what stands
/// behind it while the model is at zero.
pub fn service(validated: &Validated, endpoints: Endpoints) -> Service {
    Service {
        metadata: meta(
            &validated.md,
            validated.name.clone(),
            labels(
                &validated.name,
                &validated.revision,
                names::COMPONENT_SERVER,
            ),
        ),
        spec: Some(ServiceSpec {
            selector: (endpoints == Endpoints::Pods).then(|| server_selector(&validated.name)),
            ports: Some(vec![
                serving_port("http", HTTP_PORT),
                serving_port("grpc", GRPC_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The name of the EndpointSlice that leads a model's Service to the activator (the endpoints controller names
/// its own `<service>-<5 random characters>`, so the two never meet).
pub fn activator_slice_name(md_name: &str) -> String {
    format!("{md_name}-activator")
}

/// The activator's addresses and ports, as its own Service's EndpointSlices list them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activator {
    /// Ready pod addresses (IPv4).
    pub addresses: Vec<String>,
    /// Its `http` port.
    pub http_port: Option<i32>,
    /// Its `grpc` port.
    pub grpc_port: Option<i32>,
}

/// The EndpointSlice that puts the activator behind a model's Service: the Service's `http` and `grpc` ports
/// lead to the activator's.
pub fn activator_slice(validated: &Validated, activator: &Activator) -> EndpointSlice {
    let mut labels = labels(
        &validated.name,
        &validated.revision,
        names::COMPONENT_ACTIVATOR,
    );
    labels.insert(names::LABEL_SERVICE_NAME.to_owned(), validated.name.clone());
    labels.insert(
        names::LABEL_ENDPOINTSLICE_MANAGED_BY.to_owned(),
        names::ENDPOINTSLICE_MANAGER.to_owned(),
    );
    let port = |name: &str, number: Option<i32>| {
        number.map(|number| EndpointPort {
            name: Some(name.to_owned()),
            port: Some(number),
            protocol: Some("TCP".to_owned()),
            app_protocol: None,
        })
    };
    EndpointSlice {
        metadata: meta(&validated.md, activator_slice_name(&validated.name), labels),
        address_type: "IPv4".to_owned(),
        endpoints: Some(
            activator
                .addresses
                .iter()
                .map(|address| Endpoint {
                    addresses: vec![address.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(
            [
                port("http", activator.http_port),
                port("grpc", activator.grpc_port),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
    }
}

/// A PodDisruptionBudget keeping all but one serving pod through voluntary disruptions (with 2+ replicas).
pub fn pod_disruption_budget(validated: &Validated) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(
            &validated.md,
            validated.name.clone(),
            labels(
                &validated.name,
                &validated.revision,
                names::COMPONENT_SERVER,
            ),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(server_selector(&validated.name)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// A NetworkPolicy admitting traffic to the serving pods on the serving ports only.
pub fn network_policy(validated: &Validated) -> NetworkPolicy {
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".to_owned()),
        end_port: None,
    };
    NetworkPolicy {
        metadata: meta(
            &validated.md,
            validated.name.clone(),
            labels(
                &validated.name,
                &validated.revision,
                names::COMPONENT_SERVER,
            ),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(server_selector(&validated.name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![port(HTTP_PORT), port(GRPC_PORT)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate;

    fn md(yaml: &str) -> ModelDeployment {
        let mut md: ModelDeployment = serde_yaml::from_str(yaml).expect("valid yaml");
        md.metadata.namespace = Some("ns".into());
        md.metadata.uid = Some("uid-1".into());
        md
    }

    const CONFIG_MAP_MODEL: &str = r#"
apiVersion: serving.tractor.dev/v1alpha1
kind: ModelDeployment
metadata: {name: digits}
spec:
  model: {uri: "configmap://digits-model/mlp.onnx", sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
  optimize:
    precision: auto
    evaluation: {dataset: "configmap://digits-data/test.npz", metric: accuracy, minScore: 0.9}
  serving:
    replicas: 2
    batching: {maxBatchSize: 16, maxDelayMicros: 200}
    pod:
      labels: {team: risk, "serving.tractor.dev/model": hijack}
      nodeSelector: {pool: gpu}
      tolerations: [{key: pool, operator: Exists, effect: NoSchedule}]
"#;

    fn config() -> BuildConfig {
        BuildConfig {
            image: "tractor:dev".into(),
            artifact_store: None,
        }
    }

    /// The JSON a `tractor optimize` container is given: its args are `optimize --request <json>`, nothing else.
    fn request_arg(container: &Container) -> &str {
        match container.args.as_deref() {
            Some([command, flag, json]) if command == "optimize" && flag == "--request" => json,
            other => panic!("not `optimize --request <json>`: {other:?}"),
        }
    }

    /// The request a `tractor optimize` container runs, parsed back as the command parses it.
    fn request_of(container: &Container) -> OptimizeRequest {
        OptimizeRequest::from_json(request_arg(container)).expect("the request parses")
    }

    /// The optimize Job's container.
    fn job_container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .expect("pod")
            .containers[0]
    }

    /// The serving pods' one init container that runs `tractor optimize` to re-derive the artifact.
    fn init_container(built: &Deployment) -> &Container {
        let pod = built
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .expect("pod");
        let runs: Vec<&Container> = pod
            .init_containers
            .iter()
            .flatten()
            .filter(|container| {
                container
                    .args
                    .as_ref()
                    .and_then(|args| args.first())
                    .map(String::as_str)
                    == Some("optimize")
            })
            .collect();
        assert_eq!(runs.len(), 1, "one init container runs optimize");
        runs[0]
    }

    /// What the serving Deployment records once the Job chose `precision`.
    fn optimized(
        validated: &Validated,
        precision: Precision,
        pruning_refused: bool,
    ) -> ModelStatus {
        ModelStatus {
            revision: Some(validated.revision.clone()),
            artifact_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            precision: Some(precision),
            pruning_refused,
            ..ModelStatus::default()
        }
    }

    fn store_config() -> BuildConfig {
        BuildConfig {
            artifact_store: Some(ArtifactStore {
                uri: "s3://models/tractor".into(),
                endpoint: Some("http://10.250.0.1:8333".into()),
                region: Some("us-east-1".into()),
                path_style: true,
                secret: "tractor-artifact-store".into(),
            }),
            ..config()
        }
    }

    /// Each reason the store is not used is said; only a published artifact in a namespace with the Secret
    /// is downloaded.
    #[test]
    fn delivery_uses_the_store_only_when_everything_is_there() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let published = ModelStatus {
            artifact_uri: Some(format!("s3://models/tractor/sha256/{}", "ab".repeat(32))),
            ..optimized(&validated, Precision::F16, false)
        };
        let unpublished = optimized(&validated, Precision::F16, false);
        let found = Ok(true);
        let missing = Ok(false);
        let forbidden = Err("403 Forbidden".to_owned());
        let cases = [
            (
                &published,
                config(),
                Some(&found),
                DeliveryMode::Rederive,
                "no artifact store",
            ),
            (
                &published,
                store_config(),
                Some(&missing),
                DeliveryMode::Rederive,
                "Secret tractor-artifact-store not found in namespace ml",
            ),
            (
                &published,
                store_config(),
                Some(&forbidden),
                DeliveryMode::Rederive,
                "403 Forbidden",
            ),
            (
                &unpublished,
                store_config(),
                Some(&found),
                DeliveryMode::Rederive,
                "did not publish",
            ),
            (
                &published,
                store_config(),
                Some(&found),
                DeliveryMode::ArtifactStore,
                "pods download s3://models/tractor/sha256/abab",
            ),
        ];
        for (model, config, secret, mode, words) in cases {
            let got = delivery(model, &config, "ml", secret);
            assert_eq!(got.mode, mode, "{got:?}");
            assert!(
                got.message.contains(words),
                "{:?} lacks {words:?}",
                got.message
            );
        }
    }

    /// With the store, the Job publishes to it with the namespace's Secret by reference; without the Secret it
    /// publishes nowhere (a Job referencing a missing Secret would never start).
    #[test]
    fn the_job_publishes_only_where_the_store_secret_exists() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let no_store = config();
        let config = store_config();
        assert_eq!(publishing_store(&config, Some(&Ok(false))), None);
        assert_eq!(publishing_store(&config, Some(&Err("x".into()))), None);
        assert_eq!(publishing_store(&no_store, Some(&Ok(true))), None);
        let store = publishing_store(&config, Some(&Ok(true))).expect("a store");
        let job = optimize_job(&validated, &config, Some(store));
        let container = job_container(&job);
        assert_eq!(
            request_of(container).publish.as_deref(),
            Some("s3://models/tractor")
        );
        let env = container.env.as_deref().expect("env");
        let key = env
            .iter()
            .find(|var| var.name == names::store_env::SECRET_ACCESS_KEY)
            .and_then(|var| var.value_from.as_ref())
            .and_then(|from| from.secret_key_ref.as_ref())
            .expect("the secret key by reference");
        assert_eq!(key.name, "tractor-artifact-store");
        assert_eq!(key.key, "AWS_SECRET_ACCESS_KEY");
        let unpublished = optimize_job(&validated, &config, None);
        assert_eq!(request_of(job_container(&unpublished)).publish, None);
    }

    /// Pods of a published artifact fetch exactly its digest and never run optimize; no source is mounted.
    #[test]
    fn with_the_store_pods_download_the_digest_and_never_optimize() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let config = store_config();
        let uri = format!("s3://models/tractor/sha256/{}", "ab".repeat(32));
        let mut model = ModelStatus {
            artifact_uri: Some(uri.clone()),
            ..optimized(&validated, Precision::F16, false)
        };
        model.delivery = Some(delivery(&model, &config, "ml", Some(&Ok(true))));
        let built = deployment(&validated, &model, &config, 2);
        let pod = built
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .expect("pod");
        let inits = pod.init_containers.as_deref().expect("init containers");
        assert_eq!(inits.len(), 1);
        let hex = "ab".repeat(32);
        let want: Vec<String> = [
            "fetch",
            "--uri",
            &uri,
            "--sha256",
            &hex,
            "--out",
            ARTIFACT_DIR,
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(inits[0].args.as_ref(), Some(&want));
        for container in inits.iter().chain(&pod.containers) {
            let args = container.args.clone().unwrap_or_default();
            assert!(!args.iter().any(|arg| arg == "optimize"), "{args:?}");
        }
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|volume| volume.name.as_str())
            .collect();
        assert!(!volumes.contains(&"model-source"), "{volumes:?}");
        // The same model without the store's go-ahead re-derives, as before.
        model.delivery = Some(delivery(&model, &config, "ml", Some(&Ok(false))));
        let rederived = deployment(&validated, &model, &config, 2);
        assert_eq!(request_of(init_container(&rederived)).publish, None);
    }

    #[test]
    fn job_mounts_configmap_sources_and_runs_optimize() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let job = optimize_job(&validated, &config(), None);
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(format!("digits-{}", validated.revision).as_str())
        );
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        // The mounted paths, not the configmap:// uris: the command reads what the volumes below put there.
        assert_eq!(
            request_of(&pod.containers[0]),
            OptimizeRequest {
                source: "/var/run/tractor/source/mlp.onnx".to_owned(),
                sha256: Some("0".repeat(64)),
                format: None,
                inputs: Vec::new(),
                out: "/var/lib/tractor/model".to_owned(),
                precision: Precision::Auto,
                prune_sparsity: None,
                publish: None,
                cache_key: None,
                evaluation: Some(EvaluationRequest {
                    data: "/var/run/tractor/dataset/test.npz".to_owned(),
                    metric: tractor_api::EvalMetric::Accuracy,
                    min_score: Some(0.9),
                    max_regression: None,
                }),
                reference: None,
            }
        );
        let volumes: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .map(|volume| volume.name.as_str())
            .collect();
        assert_eq!(volumes, ["model-source", "dataset", "artifact", "tmp"]);
        assert_eq!(
            job.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.node_selector.as_ref().map(|n| n["pool"].as_str()),
            Some("gpu"),
            "the Job runs where the serving pods run"
        );
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
    }

    /// Every container that runs `tractor optimize` (the Job, and the serving pods' init container that
    /// re-derives the artifact) loads the source as `spec.model` declares it; without declarations the request
    /// leaves both out, and the command tells the format from the bytes.
    #[test]
    fn declared_format_and_inputs_reach_every_optimize_run() {
        let declared = CONFIG_MAP_MODEL.replace(
            "sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"}",
            "sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", \
             format: onnx, inputs: [{name: x, datatype: FP32, shape: [-1, 64]}]}",
        );
        let optimize_runs = |yaml: &str| -> Vec<String> {
            let validated = validate(&md(yaml)).expect("valid");
            let job = optimize_job(&validated, &config(), None);
            let served = deployment(
                &validated,
                &optimized(&validated, Precision::F32, false),
                &config(),
                desired_replicas(&validated.md),
            );
            [job_container(&job), init_container(&served)]
                .map(|container| request_arg(container).to_owned())
                .to_vec()
        };
        for json in optimize_runs(&declared) {
            let request = OptimizeRequest::from_json(&json).expect("parses");
            assert_eq!(
                request.format,
                Some(tractor_api::ModelFormat::Onnx),
                "{json}"
            );
            assert_eq!(
                request.inputs,
                [tractor_api::InputOverride {
                    name: "x".to_owned(),
                    datatype: tractor_api::Datatype::Fp32,
                    shape: vec![-1, 64],
                }],
                "{json}"
            );
        }
        for json in optimize_runs(CONFIG_MAP_MODEL) {
            assert!(
                !json.contains(r#""format""#) && !json.contains(r#""inputs""#),
                "{json}"
            );
        }
    }

    /// Pods re-derive the artifact the Job gated: pruned as the spec asks, unless the Job refused pruning.
    #[test]
    fn pods_prune_only_what_the_job_kept_pruned() {
        let pruned = CONFIG_MAP_MODEL.replace(
            "    precision: auto\n",
            "    precision: auto\n    pruning: {sparsity: 0.5}\n",
        );
        let validated = validate(&md(&pruned)).expect("valid");
        let job = optimize_job(&validated, &config(), None);
        assert_eq!(request_of(job_container(&job)).prune_sparsity, Some(0.5));
        let init_request = |refused: bool| {
            let served = deployment(
                &validated,
                &optimized(&validated, Precision::F32, refused),
                &config(),
                desired_replicas(&validated.md),
            );
            request_of(init_container(&served))
        };
        assert_eq!(init_request(false).prune_sparsity, Some(0.5));
        assert_eq!(init_request(true).prune_sparsity, None);
    }

    /// The init container asks for what the Job asked for, at the precision the Job chose and without the
    /// evaluation (it builds, it does not gate): `tractor optimize` is deterministic for a fixed precision, so
    /// that is how a pod gets the bytes the Job measured. It mounts no dataset it does not read.
    #[test]
    fn pods_rederive_the_jobs_request_at_its_chosen_precision() {
        let spec = CONFIG_MAP_MODEL
            .replace(
                "    precision: auto\n",
                "    precision: auto\n    pruning: {sparsity: 0.5}\n",
            )
            .replace(
                "sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"}",
                "sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", \
                 format: onnx, inputs: [{name: x, datatype: FP32, shape: [-1, 64]}]}",
            );
        let validated = validate(&md(&spec)).expect("valid");
        let job_request = request_of(job_container(&optimize_job(&validated, &config(), None)));
        assert!(job_request.evaluation.is_some());
        for precision in [Precision::F32, Precision::F16, Precision::Int8] {
            let served = deployment(
                &validated,
                &optimized(&validated, precision, false),
                &config(),
                desired_replicas(&validated.md),
            );
            // The labelled set comes along for the drift reference inside the artifact, without its gate.
            let evaluation = job_request.evaluation.clone().expect("evaluation");
            assert_eq!(
                request_of(init_container(&served)),
                OptimizeRequest {
                    precision,
                    evaluation: None,
                    reference: Some(EvaluationRequest {
                        min_score: None,
                        max_regression: None,
                        ..evaluation
                    }),
                    ..job_request.clone()
                }
            );
            let volumes: Vec<_> = served
                .spec
                .and_then(|spec| spec.template.spec)
                .and_then(|pod| pod.volumes)
                .into_iter()
                .flatten()
                .map(|volume| volume.name)
                .collect();
            assert!(volumes.contains(&"model-source".to_owned()), "{volumes:?}");
            assert!(volumes.contains(&"dataset".to_owned()), "{volumes:?}");
        }
    }

    #[test]
    fn deployment_pins_artifact_and_keeps_contract_labels() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let model = ModelStatus {
            revision: Some(validated.revision.clone()),
            artifact_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            precision: Some(Precision::F16),
            ..ModelStatus::default()
        };
        let built = deployment(
            &validated,
            &model,
            &config(),
            desired_replicas(&validated.md),
        );
        let spec = built.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let template = &spec.template;
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert_eq!(
            labels[names::LABEL_MODEL],
            "digits",
            "user labels must not override ours"
        );
        assert_eq!(labels["team"], "risk");
        assert_eq!(labels[names::LABEL_REVISION], validated.revision);
        let pod = template.spec.as_ref().expect("pod");
        let server = &pod.containers[0];
        let args = server.args.clone().expect("args").join(" ");
        assert!(
            args.contains(&format!("--sha256 {}", "ab".repeat(32))),
            "{args}"
        );
        assert!(args.contains("--max-batch-size 16 --max-delay-micros 200"));
        assert!(
            args.contains(&format!("--revision {}", validated.revision)),
            "{args}"
        );
        let fetch = &pod.init_containers.as_ref().expect("init")[0];
        assert_eq!(
            request_of(fetch).precision,
            Precision::F16,
            "the recorded choice, not auto"
        );
        let sc = server.security_context.as_ref().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            spec.selector.match_labels.as_ref(),
            Some(&server_selector("digits"))
        );
    }

    /// The value after `--revision` in the server container's args.
    fn revision_arg(d: &Deployment) -> Option<String> {
        server_arg(d, "--revision")
    }

    /// The value after `flag` in the server container's args.
    fn server_arg(d: &Deployment, flag: &str) -> Option<String> {
        let args = d
            .spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == SERVER_CONTAINER)?
            .args
            .clone()?;
        let ix = args.iter().position(|a| a == flag)?;
        args.get(ix + 1).cloned()
    }

    #[test]
    fn monitoring_becomes_the_servers_drift_and_logging_flags() {
        let status = ModelStatus {
            revision: Some("r1".to_owned()),
            artifact_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            ..ModelStatus::default()
        };
        let with = |monitoring: &str| {
            let mut md = md(CONFIG_MAP_MODEL);
            md.metadata.namespace = Some("ns".into());
            md.spec.monitoring = serde_yaml::from_str(monitoring).expect("monitoring");
            let validated = validate(&md).expect("valid");
            deployment(&validated, &status, &config(), 2)
        };
        let none = with("null");
        assert_eq!(server_arg(&none, "--drift-window-secs"), None);
        assert_eq!(server_arg(&none, "--log-url"), None);
        let both = with(
            "{drift: {window: 2m}, logging: {url: 'http://sink.ns:8080/', sampleRate: 0.25, includeInputs: false}}",
        );
        let flags = [
            ("--drift-window-secs", "120"),
            ("--log-url", "http://sink.ns:8080/"),
            ("--log-sample-rate", "0.25"),
            ("--log-include-inputs", "false"),
            ("--log-max-bytes", "65536"),
            (
                "--log-source",
                "/apis/serving.tractor.dev/v1alpha1/namespaces/ns/modeldeployments/digits",
            ),
        ];
        for (flag, want) in flags {
            assert_eq!(server_arg(&both, flag).as_deref(), Some(want), "{flag}");
        }
    }

    #[test]
    fn servers_keep_answering_after_sigterm_until_kube_proxy_has_dropped_them() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let status = ModelStatus {
            revision: Some("r1".to_owned()),
            artifact_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            ..ModelStatus::default()
        };
        let built = deployment(
            &validated,
            &status,
            &config(),
            desired_replicas(&validated.md),
        );
        let delay: u64 = server_arg(&built, "--drain-delay-millis")
            .and_then(|s| s.parse().ok())
            .expect("a drain delay");
        let grace = built
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.termination_grace_period_seconds)
            .expect("a grace period");
        assert!(
            delay >= 2_000,
            "{delay} ms is shorter than a kube-proxy sync"
        );
        assert!(
            delay / 1000 < grace as u64 / 2,
            "{delay} ms leaves no time to finish in-flight work in {grace} s"
        );
    }

    #[test]
    fn every_server_is_told_the_revision_of_its_pod_label() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let model = |revision: Option<&str>| ModelStatus {
            revision: revision.map(str::to_owned),
            artifact_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            ..ModelStatus::default()
        };
        // The last good revision still serving while the spec's is new, the spec's own as a canary, and the
        // spec's when the status names none.
        let cases = [
            (
                "stable",
                deployment(
                    &validated,
                    &model(Some("0123456789")),
                    &config(),
                    desired_replicas(&validated.md),
                ),
                "0123456789",
            ),
            (
                "canary",
                canary_deployment(
                    &validated,
                    &model(Some(&validated.revision)),
                    &config(),
                    desired_replicas(&validated.md),
                ),
                validated.revision.as_str(),
            ),
            (
                "no revision in status",
                deployment(
                    &validated,
                    &model(None),
                    &config(),
                    desired_replicas(&validated.md),
                ),
                validated.revision.as_str(),
            ),
        ];
        for (case, built, want) in cases {
            assert_eq!(served_revision(&built).as_deref(), Some(want), "{case}");
            assert_eq!(revision_arg(&built).as_deref(), Some(want), "{case}");
        }
    }

    #[test]
    fn s3_credentials_are_referenced_not_copied() {
        let validated = validate(&md(r#"
apiVersion: serving.tractor.dev/v1alpha1
kind: ModelDeployment
metadata: {name: fraud}
spec:
  model:
    uri: s3://models/fraud.onnx
    s3: {endpoint: "http://store:8333", region: us-east-1, secretRef: {name: creds}}
"#))
        .expect("valid");
        let job = optimize_job(&validated, &config(), None);
        // The uri as written: the command fetches it itself, with the credentials below; nothing is mounted.
        let request = request_of(job_container(&job));
        assert_eq!(request.source, "s3://models/fraud.onnx");
        assert!(!request_arg(job_container(&job)).contains("creds"));
        let env = job
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default();
        let key = env
            .iter()
            .find(|e| e.name == "AWS_SECRET_ACCESS_KEY")
            .expect("secret env");
        assert!(key.value.is_none());
        assert_eq!(
            key.value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
                .map(|s| s.name.as_str()),
            Some("creds")
        );
        assert!(env.iter().any(
            |e| e.name == "AWS_ENDPOINT_URL" && e.value.as_deref() == Some("http://store:8333")
        ));
    }

    #[test]
    fn tls_and_token_reach_the_server_from_the_spec_secrets() {
        let validated = validate(&md(r#"
apiVersion: serving.tractor.dev/v1alpha1
kind: ModelDeployment
metadata: {name: digits}
spec:
  model: {uri: "https://models.example.com/mlp.onnx", sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
  serving:
    tls: {secretRef: {name: digits-tls}}
    auth: {secretRef: {name: digits-token}, key: bearer}
"#))
        .expect("valid");
        let model = ModelStatus {
            revision: Some(validated.revision.clone()),
            artifact_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            ..ModelStatus::default()
        };
        let built = deployment(
            &validated,
            &model,
            &config(),
            desired_replicas(&validated.md),
        );
        let pod = built.spec.and_then(|s| s.template.spec).expect("pod");
        let server = &pod.containers[0];
        let args = server.args.clone().expect("args").join(" ");
        assert!(
            args.contains(
                "--tls-cert /var/run/tractor/tls/tls.crt --tls-key /var/run/tractor/tls/tls.key"
            ),
            "{args}"
        );
        assert!(
            args.contains("--auth-token-file /var/run/tractor/auth/bearer"),
            "{args}"
        );
        let secret_of = |volume: &str| {
            pod.volumes
                .iter()
                .flatten()
                .find(|candidate| candidate.name == volume)
                .and_then(|found| found.secret.as_ref()?.secret_name.clone())
        };
        assert_eq!(secret_of("tls").as_deref(), Some("digits-tls"));
        assert_eq!(secret_of("auth").as_deref(), Some("digits-token"));
        let probe = server
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        assert_eq!(probe.and_then(|h| h.scheme.as_deref()), Some("HTTPS"));
        // Only the server sees the Secrets: the fetch init container mounts neither.
        let fetch = &pod.init_containers.as_ref().expect("init")[0];
        assert!(
            fetch
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "tls" && m.name != "auth")
        );
    }

    #[test]
    fn spec_hash_changes_with_content_only() {
        let validated = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        let a = with_spec_hash(service(&validated, Endpoints::Pods));
        let b = with_spec_hash(service(&validated, Endpoints::Pods));
        assert_eq!(spec_hash(&a), spec_hash(&b));
        let mut other = validate(&md(CONFIG_MAP_MODEL)).expect("valid");
        other.name = "other".into();
        assert_ne!(
            spec_hash(&a),
            spec_hash(&with_spec_hash(service(&other, Endpoints::Pods)))
        );
    }
}
