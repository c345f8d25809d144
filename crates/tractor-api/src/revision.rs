//! The model revision: a stable hash of what determines the served artifact (model source + optimize recipe).
//!
//! Serving-only fields (replicas, resources, batching, pod overrides), Job sizing and autoscaling never
//! change it, so editing them rolls pods without re-running the optimize Job.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::{
    EvalMetric, InputOverride, ModelDeploymentSpec, ModelFormat, Precision, Pruning,
};

/// Hex characters kept from the digest: 40 bits is plenty per ModelDeployment and fits a label value.
const REVISION_LEN: usize = 10;

/// Exactly the inputs of the artifact, in a fixed field order. Adding a field here changes every revision,
/// which restarts every optimize Job: only do it when the artifact really depends on the new field.
#[derive(Serialize)]
struct RevisionInputs<'a> {
    uri: &'a str,
    sha256: Option<&'a str>,
    format: Option<ModelFormat>,
    inputs: &'a [InputOverride],
    precision: Precision,
    pruning: Option<&'a Pruning>,
    evaluation: Option<EvaluationInputs<'a>>,
}

#[derive(Serialize)]
struct EvaluationInputs<'a> {
    dataset: &'a str,
    metric: EvalMetric,
    min_score: Option<f64>,
    max_regression: Option<f64>,
}

/// The revision of a spec: 10 lowercase hex characters.
pub fn revision(spec: &ModelDeploymentSpec) -> String {
    let inputs = RevisionInputs {
        uri: &spec.model.uri,
        sha256: spec.model.sha256.as_deref(),
        format: spec.model.format,
        inputs: &spec.model.inputs,
        precision: spec.optimize.precision,
        pruning: spec.optimize.pruning.as_ref(),
        evaluation: spec.optimize.evaluation.as_ref().map(|e| EvaluationInputs {
            dataset: &e.dataset,
            metric: e.metric,
            min_score: e.min_score,
            max_regression: e.max_regression,
        }),
    };
    // Serializing plain structs, strings, options and floats to JSON cannot fail.
    let bytes = serde_json::to_vec(&inputs).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(digest)[..REVISION_LEN].to_owned()
}

/// What the shared optimize cache is keyed by: the source's bytes (its pinned digest, not its URI) and the
/// recipe. Version 1; bump it when the artifact comes to depend on something else.
#[derive(Serialize)]
struct CacheInputs<'a> {
    version: u32,
    sha256: String,
    format: Option<ModelFormat>,
    inputs: &'a [InputOverride],
    precision: Precision,
    pruning: Option<&'a Pruning>,
}

/// The key of this spec's optimize result in the shared cache (64 lowercase hex): equal for every
/// ModelDeployment of the same pinned bytes and recipe, whatever the URI, so N of them cost one optimize.
/// `None`, never cached, where the result is not a function of the key: a source without a pinned `sha256`, or
/// an evaluation (its labelled set has no pinned digest, and the gate's outcome depends on it).
pub fn cache_key(spec: &ModelDeploymentSpec) -> Option<String> {
    let sha256 = spec.model.sha256.as_deref()?;
    if spec.optimize.evaluation.is_some() {
        return None;
    }
    let inputs = CacheInputs {
        version: 1,
        sha256: sha256.trim_start_matches("sha256:").to_ascii_lowercase(),
        // What the run will take the format to be: a declared one, else the file name's (the bytes decide
        // only when neither says; equal bytes decide alike).
        format: spec
            .model
            .format
            .or_else(|| ModelFormat::from_file_name(&spec.model.uri)),
        inputs: &spec.model.inputs,
        precision: spec.optimize.precision,
        pruning: spec.optimize.pruning.as_ref(),
    };
    // Serializing plain structs, strings, options and floats to JSON cannot fail.
    let bytes = serde_json::to_vec(&inputs).unwrap_or_default();
    Some(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Batching, Evaluation, ModelSource};

    fn spec() -> ModelDeploymentSpec {
        serde_yaml::from_str(
            "model: {uri: 'https://models.example.com/digits.onnx', sha256: '0000000000000000000000000000000000000000000000000000000000000000'}",
        )
        .expect("valid spec")
    }

    #[test]
    fn revision_is_stable_and_short() {
        let r = revision(&spec());
        assert_eq!(r.len(), REVISION_LEN);
        assert!(
            r.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Pinned: a change in this value restarts every user's optimize Job on upgrade.
        assert_eq!(r, revision(&spec()));
        assert_eq!(
            r, "6d0ed087de",
            "revision hash changed; only acceptable with a migration note"
        );
    }

    #[test]
    fn serving_only_fields_do_not_change_revision() {
        let base = revision(&spec());
        let mut s = spec();
        s.serving.replicas = Some(7);
        s.serving.threads = Some(4);
        s.serving.batching = Some(Batching {
            max_batch_size: 32,
            max_delay_micros: 100,
        });
        s.optimize.active_deadline_seconds = 60;
        s.optimize.backoff_limit = 3;
        s.rollout.rollback_on_accuracy_drop = true;
        assert_eq!(revision(&s), base);
    }

    /// Same bytes and recipe share a key whatever the URI; any recipe change, no pin or an evaluation do not.
    #[test]
    fn cache_key_follows_the_bytes_and_the_recipe() {
        let key = cache_key(&spec()).expect("a pinned source without evaluation is cached");
        assert_eq!(key.len(), 64);
        let mut moved = spec();
        moved.model.uri = "https://mirror.example.org/models/digits.onnx".into();
        moved.model.sha256 = Some(format!("sha256:{}", "0".repeat(64)));
        moved.serving.replicas = Some(9);
        assert_eq!(cache_key(&moved).as_deref(), Some(key.as_str()));
        let mut int8 = spec();
        int8.optimize.precision = Precision::Int8;
        assert_ne!(cache_key(&int8).as_deref(), Some(key.as_str()));
        let mut unpinned = spec();
        unpinned.model.sha256 = None;
        assert_eq!(cache_key(&unpinned), None);
        let mut evaluated = spec();
        evaluated.optimize.evaluation = Some(Evaluation {
            dataset: "https://d/x.npz".into(),
            metric: EvalMetric::Accuracy,
            min_score: None,
            max_regression: None,
        });
        assert_eq!(cache_key(&evaluated), None);
    }

    #[test]
    fn source_and_recipe_change_revision() {
        let base = revision(&spec());
        type Change = Box<dyn Fn(&mut ModelDeploymentSpec)>;
        let changes: Vec<Change> = vec![
            Box::new(|s| s.model.uri.push_str("?v=2")),
            Box::new(|s| s.model.sha256 = Some("1".repeat(64))),
            Box::new(|s| s.model.format = Some(ModelFormat::Onnx)),
            Box::new(|s| s.optimize.precision = Precision::Int8),
            Box::new(|s| s.optimize.pruning = Some(Pruning { sparsity: 0.5 })),
            Box::new(|s| {
                s.optimize.evaluation = Some(Evaluation {
                    dataset: "https://d/x.npz".into(),
                    metric: EvalMetric::F1,
                    min_score: None,
                    max_regression: Some(0.01),
                })
            }),
            Box::new(|s| {
                s.model = ModelSource {
                    uri: "s3://b/k.onnx".into(),
                    ..Default::default()
                }
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut s = spec();
            change(&mut s);
            assert_ne!(revision(&s), base, "change {i} must give a new revision");
        }
    }
}
