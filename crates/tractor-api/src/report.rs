//! The optimize report: the contract between `tractor optimize` (which writes it) and the operator (which
//! reads it from the Job container's termination message and turns it into `status.model`).
//!
//! Kept compact: a termination message holds at most 4096 bytes, and the report must fit whole.

use serde::{Deserialize, Serialize};

use crate::spec::{EvalMetric, ModelFormat, Precision};
use crate::status::{ModelStatus, Scores, TensorSignature};

/// Largest report in bytes: the kubelet truncates termination messages beyond this.
pub const MAX_REPORT_BYTES: usize = 4096;

/// Why an optimize run failed. The codes are stable: they become condition messages, events and metric labels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The source could not be fetched (network, 404, timeout).
    FetchFailed,
    /// The fetched bytes do not match `sha256`.
    DigestMismatch,
    /// The store refused the credentials.
    AccessDenied,
    /// The model uses an operator tract cannot run; the message names it.
    UnsupportedOp,
    /// The file is not a loadable model (truncated, not the declared `model.format`, inconsistent shapes).
    InvalidModel,
    /// `model.inputs` disagree with the model (an unknown input, another datatype, rank or size); the message
    /// names the first disagreement.
    InputMismatch,
    /// Even the unoptimized model scores below `minScore`.
    BelowMinScore,
    /// The labelled set could not be read or does not fit the model.
    InvalidDataset,
    /// The artifact store (`publish`) could not be reached or refused the upload; the message names the store and
    /// the error. The artifact is still written to `out`, but the run fails: pods would fetch a digest the store
    /// does not hold.
    ArtifactStoreUnavailable,
    /// Anything else; the message says what.
    Internal,
}

/// One candidate the optimizer measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Precision of the candidate.
    pub precision: Precision,
    /// Median latency at batch 1, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_micros: Option<f64>,
    /// Score on the evaluation set, or agreement with f32 on the calibration sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Whether it passed the accuracy gate.
    pub passed: bool,
    /// Whether it was built from the pruned weights (`--prune-sparsity`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

/// What `tractor optimize` reports, on success and on failure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizeReport {
    /// Failure code; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Human-readable summary (on failure: what failed and how to fix it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `sha256:<hex>` of the source bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// `sha256:<hex>` of the artifact (NNEF archive) written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<String>,
    /// `s3://bucket/prefix/sha256/<hex>`: where the artifact was published in the artifact store (`publish`);
    /// absent when the run publishes nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// Artifact size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Source format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    /// Precision of the artifact: the choice made, never `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Model inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSignature>,
    /// Model outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSignature>,
    /// Metric of the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<EvalMetric>,
    /// Score of the unoptimized model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_score: Option<f64>,
    /// Score of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized_score: Option<f64>,
    /// Pruning was asked for and every pruned candidate failed the accuracy gate: the artifact is built from
    /// the unpruned weights.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruning_refused: bool,
    /// Candidates measured (the table `auto` chose from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// Wall time of the whole run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_millis: Option<u64>,
}

impl OptimizeReport {
    /// A failure report.
    pub fn failure(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason),
            message: message.into(),
            ..Self::default()
        }
    }

    /// True when the run produced an artifact.
    pub fn succeeded(&self) -> bool {
        self.reason.is_none() && self.artifact_digest.is_some()
    }

    /// Compact JSON, cut to fit [`MAX_REPORT_BYTES`]: the candidate table, then the signature, then the message
    /// tail go first, so the reason and digests always survive.
    pub fn to_compact_json(&self) -> String {
        let mut report = self.clone();
        loop {
            let json = serde_json::to_string(&report).unwrap_or_default();
            if json.len() <= MAX_REPORT_BYTES {
                return json;
            }
            if !report.candidates.is_empty() {
                report.candidates.clear();
            } else if !report.inputs.is_empty() || !report.outputs.is_empty() {
                report.inputs.clear();
                report.outputs.clear();
            } else if report.message.len() > 256 {
                let mut cut = 256;
                while !report.message.is_char_boundary(cut) {
                    cut -= 1;
                }
                report.message.truncate(cut);
            } else {
                return json;
            }
        }
    }

    /// The `status.model` section this report describes.
    pub fn model_status(&self) -> ModelStatus {
        ModelStatus {
            revision: None,
            source_digest: self.source_digest.clone(),
            artifact_digest: self.artifact_digest.clone(),
            format: self.format,
            precision: self.precision,
            size_bytes: self.size_bytes,
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            scores: self.metric.map(|metric| Scores {
                metric,
                baseline: self.baseline_score,
                optimized: self.optimized_score,
            }),
            message: (!self.message.is_empty()).then(|| self.message.clone()),
            pruning_refused: self.pruning_refused,
            artifact_uri: self.artifact_uri.clone(),
            // The operator decides delivery, from this uri and its own store settings.
            delivery: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Datatype;

    #[test]
    fn oversized_report_is_cut_keeping_reason_and_digest() {
        let big = OptimizeReport {
            reason: Some(FailureReason::UnsupportedOp),
            message: "x".repeat(10_000),
            artifact_digest: Some(format!("sha256:{}", "a".repeat(64))),
            inputs: vec![
                TensorSignature {
                    name: "i".repeat(500),
                    datatype: Datatype::Fp32,
                    shape: vec![-1, 4]
                };
                20
            ],
            ..OptimizeReport::default()
        };
        let json = big.to_compact_json();
        assert!(json.len() <= MAX_REPORT_BYTES, "{} bytes", json.len());
        let back: OptimizeReport = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.reason, Some(FailureReason::UnsupportedOp));
        assert_eq!(back.artifact_digest, big.artifact_digest);
    }

    #[test]
    fn success_maps_to_model_status() {
        let report = OptimizeReport {
            artifact_digest: Some("sha256:ab".into()),
            artifact_uri: Some("s3://models/tractor/sha256/ab".into()),
            precision: Some(Precision::F16),
            metric: Some(EvalMetric::Accuracy),
            baseline_score: Some(0.97),
            optimized_score: Some(0.969),
            ..OptimizeReport::default()
        };
        assert!(report.succeeded());
        let status = report.model_status();
        assert_eq!(status.precision, Some(Precision::F16));
        assert_eq!(
            status.artifact_uri.as_deref(),
            Some("s3://models/tractor/sha256/ab")
        );
        assert!(
            serde_json::to_string(&report)
                .expect("serializes")
                .contains(r#""artifactUri":"s3://models/tractor/sha256/ab""#)
        );
        assert_eq!(status.scores.expect("scores").optimized, Some(0.969));
        assert!(!OptimizeReport::failure(FailureReason::FetchFailed, "404").succeeded());
        let unavailable = OptimizeReport::failure(FailureReason::ArtifactStoreUnavailable, "down");
        assert!(!unavailable.succeeded());
        assert!(
            unavailable
                .to_compact_json()
                .contains(r#""reason":"ArtifactStoreUnavailable""#)
        );
    }
}
