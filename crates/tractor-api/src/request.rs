//! The optimize request: everything one `tractor optimize` run is asked to do, as the operator hands it to the Job
//! and the serving pods' init container in one JSON argument (`tractor optimize --request <json>`).
//!
//! One serialized value instead of a command line the operator writes flag by flag and the command parses back:
//! both sides read the same type, so they cannot disagree on a spelling, and a field added here reaches the Job
//! without a new flag.

use serde::{Deserialize, Serialize};

use crate::spec::{EvalMetric, InputOverride, ModelFormat, Precision};

/// What one `tractor optimize` run is asked to do.
///
/// Paths are those the run sees: the operator mounts a `configmap://` or `pvc://` source and writes its mounted
/// path here, so `source` is a local path or a uri the command fetches itself.
///
/// Example, as the Job gets it:
/// ```json
/// {"source":"/var/run/tractor/source/mlp.onnx","sha256":"…","out":"/var/lib/tractor/model","precision":"auto",
///  "evaluation":{"data":"s3://data/digits-test.npz","metric":"accuracy","minScore":0.9}}
/// ```
// Unknown fields are ignored, not refused: an operator newer than its image may add one the older image does
// without, and what that changes is still caught where it matters (pods refuse an artifact whose digest differs).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizeRequest {
    /// The model: `https://...`, `http://...` (needs `sha256`), `s3://bucket/key`, or a local file or NNEF folder.
    pub source: String,
    /// Expected sha256 of the source bytes (hex, optionally prefixed `sha256:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The source's format, as `spec.model.format` declares it; unset: told from the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    /// `spec.model.inputs`: checked against the model and fixed into an ONNX model's inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputOverride>,
    /// Folder the artifact (`model.nnef.tgz`) is written to; created if missing.
    pub out: String,
    /// Numeric precision of the artifact: `auto` times the candidates, a fixed one is built as asked.
    #[serde(default)]
    pub precision: Precision,
    /// Fraction of each weight tensor to zero, smallest magnitudes first, in [0, 0.95]; unset: no pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_sparsity: Option<f64>,
    /// The labelled set and the gate it enforces; unset: candidates are gated on agreement with f32 (or, at a
    /// fixed precision, not at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationRequest>,
    /// A labelled set read only for the drift reference the artifact carries (its `data` and `metric`; no gate):
    /// how a serving pod re-derives, byte for byte, an artifact the Job built with `evaluation`. Ignored when
    /// `evaluation` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<EvaluationRequest>,
    /// Artifact store, `s3://bucket/prefix`: the verified artifact is published there content-addressed, at
    /// `<prefix>/sha256/<hex>`, with its report at `<prefix>/sha256/<hex>.report.json`, so serving pods fetch
    /// exactly that digest (`tractor fetch`) instead of re-deriving it; unset: the artifact stays in `out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// The shared optimize cache's key for this run ([`crate::revision::cache_key`]): with `publish`, a
    /// successful run also records its report at `<prefix>/cache/<key>.json`, where the operator finds it for
    /// the next ModelDeployment of the same pinned bytes and recipe and runs no Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
}

/// The evaluation of an [`OptimizeRequest`]: `spec.optimize.evaluation` with its dataset located.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationRequest {
    /// Labelled set: an `.npz` with arrays `x` (inputs) and `y` (labels), by path or uri like `source`.
    pub data: String,
    /// Score to compute.
    #[serde(default)]
    pub metric: EvalMetric,
    /// Lowest acceptable score (highest for `mae`/`rmse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    /// Largest acceptable loss against the f32 baseline, in metric units (unset: 0.01; for `mae`/`rmse` 1 % of
    /// the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_regression: Option<f64>,
}

impl OptimizeRequest {
    /// The request as compact JSON, the form `--request` takes.
    pub fn to_json(&self) -> String {
        // Strings, numbers and unit enums only (no map keys, no paths): serde_json cannot fail on them.
        serde_json::to_string(self)
            .unwrap_or_else(|error| panic!("an optimize request does not serialize: {error}"))
    }

    /// Parses a request written by [`to_json`](Self::to_json), by an older operator (absent optional fields
    /// take their defaults) or by a newer one (unknown fields are ignored).
    pub fn from_json(text: &str) -> Result<OptimizeRequest, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Datatype;

    fn full() -> OptimizeRequest {
        OptimizeRequest {
            source: "/var/run/tractor/source/mlp.onnx".to_owned(),
            sha256: Some("ab".repeat(32)),
            format: Some(ModelFormat::Onnx),
            inputs: vec![InputOverride {
                name: "x".to_owned(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 64],
            }],
            out: "/var/lib/tractor/model".to_owned(),
            precision: Precision::Int8,
            prune_sparsity: Some(0.5),
            evaluation: Some(EvaluationRequest {
                data: "s3://data/test.npz".to_owned(),
                metric: EvalMetric::Rmse,
                min_score: Some(0.25),
                max_regression: Some(0.01),
            }),
            reference: None,
            publish: Some("s3://artifacts/tractor".to_owned()),
            cache_key: Some("c".repeat(64)),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let request = full();
        let json = request.to_json();
        assert_eq!(OptimizeRequest::from_json(&json).expect("parses"), request);
        // The spellings the CRD uses, so a request reads like the spec it came from.
        for spelling in [
            r#""format":"onnx""#,
            r#""precision":"int8""#,
            r#""pruneSparsity":0.5"#,
            r#""metric":"rmse""#,
            r#""minScore":0.25"#,
            r#""maxRegression":0.01"#,
            r#""inputs":[{"name":"x","datatype":"FP32","shape":[-1,64]}]"#,
            r#""publish":"s3://artifacts/tractor""#,
        ] {
            assert!(json.contains(spelling), "{spelling} in {json}");
        }
    }

    /// Unset fields are left out, so a minimal request stays minimal (and the Job's args short).
    #[test]
    fn unset_fields_are_left_out() {
        let request = OptimizeRequest {
            source: "m.onnx".to_owned(),
            out: "out".to_owned(),
            ..OptimizeRequest::default()
        };
        assert_eq!(
            request.to_json(),
            r#"{"source":"m.onnx","out":"out","precision":"auto"}"#
        );
    }

    /// A request from an older operator, without the optional fields, parses with their defaults; one from a
    /// newer operator parses with its unknown fields ignored.
    #[test]
    fn older_and_newer_requests_parse() {
        let old = OptimizeRequest::from_json(
            r#"{"source":"m.onnx","out":"out","evaluation":{"data":"d.npz"}}"#,
        )
        .expect("an old request parses");
        assert_eq!(
            old,
            OptimizeRequest {
                source: "m.onnx".to_owned(),
                out: "out".to_owned(),
                precision: Precision::Auto,
                evaluation: Some(EvaluationRequest {
                    data: "d.npz".to_owned(),
                    metric: EvalMetric::Accuracy,
                    ..EvaluationRequest::default()
                }),
                ..OptimizeRequest::default()
            }
        );
        let newer = OptimizeRequest::from_json(
            r#"{"source":"m.onnx","out":"out","calibrationRows":512,"evaluation":{"data":"d.npz","weights":"w"}}"#,
        )
        .expect("a newer request parses");
        assert_eq!(newer, old);
    }

    /// A field of the wrong type, an unknown spelling or a missing required field is refused with a message that
    /// names what was expected and where.
    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let cases = [
            (
                r#"{"source":"m.onnx","out":"out","pruneSparsity":"half"}"#,
                &["invalid type", "\"half\"", "f64", "column"][..],
            ),
            (
                r#"{"source":"m.onnx","out":"out","precision":"fp16"}"#,
                &["unknown variant `fp16`", "`f16`"][..],
            ),
            (
                r#"{"source":"m.onnx","out":"out","evaluation":{"data":"d.npz","metric":"auc"}}"#,
                &["unknown variant `auc`", "`rmse`"][..],
            ),
            (r#"{"out":"out"}"#, &["missing field `source`"][..]),
            (
                r#""m.onnx""#,
                &["invalid type", "expected struct OptimizeRequest"][..],
            ),
        ];
        for (json, words) in cases {
            let message = OptimizeRequest::from_json(json)
                .expect_err(json)
                .to_string();
            for word in words {
                assert!(message.contains(word), "{json}: {message:?} lacks {word:?}");
            }
        }
    }
}
