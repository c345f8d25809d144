//! `tractor inspect MODEL`: signature, op histogram, parameter count, size and a FLOPs estimate, as JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use tract_nnef::internal::*;
use tractor_api::{ModelFormat, TensorSignature};
use tractor_model::loader;

use super::{OptError, signature};

/// `tractor inspect`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// An ONNX file, an NNEF archive (`.nnef.tgz`, `.nnef.tar`) or folder, a TensorFlow Lite file (`.tflite`) or a
    /// frozen TensorFlow graph (`.pb`).
    #[arg(env = "TRACTOR_MODEL")]
    pub model: PathBuf,
}

/// What `tractor inspect` prints.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// The file.
    pub path: String,
    /// Its format.
    pub format: ModelFormat,
    /// File size in bytes (0 for a folder).
    pub size_bytes: u64,
    /// `sha256:<hex>` of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Inputs.
    pub inputs: Vec<TensorSignature>,
    /// Outputs.
    pub outputs: Vec<TensorSignature>,
    /// Nodes of the decluttered model by op name.
    pub ops: BTreeMap<String, usize>,
    /// Number of values in constant tensors (weights and biases), by datum type.
    pub parameters: BTreeMap<String, usize>,
    /// Floating-point operations of one run at batch 1 (2 per multiply-add), as tract's cost model counts them.
    pub flops_batch1: u64,
    /// The source's operators (ONNX, TensorFlow Lite, TensorFlow; not NNEF) and who runs each: tractor, tract, or
    /// no one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ops: Vec<SourceOp>,
    /// What the loader changed or wants you to know, e.g. a ZipMap it serves as its probability tensor.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One operator type of a source: ONNX (`domain.OpType`), TensorFlow Lite (`FULLY_CONNECTED`) or TensorFlow
/// (`MatMul`).
#[derive(Serialize, Debug)]
pub struct SourceOp {
    /// `domain.OpType` (no domain for the standard one).
    pub op: String,
    /// Nodes of that type.
    pub count: usize,
    /// Who runs it.
    pub support: tractor_onnx_ml::Support,
}

/// The operator types of an ONNX file and who runs each.
pub fn source_ops(path: &std::path::Path) -> Result<Vec<SourceOp>, OptError> {
    use tract_onnx::prelude::Framework;
    let proto = tractor_onnx_ml::onnx()
        .proto_model_for_path(path)
        .map_err(|e| {
            OptError::new(
                super::Reason::InvalidModel,
                format!("not a loadable ONNX model: {e:#}"),
            )
        })?;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for node in proto.graph.iter().flat_map(|g| g.node.iter()) {
        *counts
            .entry((node.domain.clone(), node.op_type.clone()))
            .or_insert(0) += 1;
    }
    Ok(counts
        .into_iter()
        .map(|((domain, op), count)| SourceOp {
            support: tractor_onnx_ml::support(&op),
            op: if domain.is_empty() || domain == "ai.onnx" {
                op
            } else {
                format!("{domain}.{op}")
            },
            count,
        })
        .collect())
}

impl Inspection {
    /// Pretty JSON, for people and for `jq`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Inspect a model file.
pub fn inspect(args: &InspectArgs) -> Result<Inspection, OptError> {
    let path = &args.model;
    let (model, format) = loader::load(path)?;
    let source_ops = match format {
        ModelFormat::Onnx => source_ops(path)?,
        ModelFormat::Tflite | ModelFormat::Tensorflow => loader::source_ops(path, format)?
            .unwrap_or_default()
            .into_iter()
            .map(|op| SourceOp {
                op: op.op,
                count: op.count,
                support: if op.supported {
                    tractor_onnx_ml::Support::Tract
                } else {
                    tractor_onnx_ml::Support::No
                },
            })
            .collect(),
        ModelFormat::Nnef => Vec::new(),
    };
    let mut warnings = loader::notes(&model);
    if warnings
        .iter()
        .any(|warning| warning == tractor_onnx_ml::ZIPMAP_NOTE)
    {
        tracing::warn!("{}", tractor_onnx_ml::ZIPMAP_NOTE);
    }
    warnings.sort();
    let (inputs, outputs) = signature(&model)?;
    let mut ops = BTreeMap::new();
    let mut parameters = BTreeMap::new();
    for node in model.nodes() {
        *ops.entry(node.op.name().to_string()).or_insert(0) += 1;
        if let Some(constant) = node.op_as::<tract_nnef::tract_core::ops::konst::Const>() {
            *parameters
                .entry(format!("{:?}", constant.val().datum_type()).to_lowercase())
                .or_insert(0) += constant.val().len();
        }
    }
    let size_bytes = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
    let sha256 = if path.is_file() {
        super::sha256_file(path)
            .ok()
            .map(|hash| format!("sha256:{hash}"))
    } else {
        None
    };
    Ok(Inspection {
        path: path.display().to_string(),
        format,
        size_bytes,
        sha256,
        inputs,
        outputs,
        ops,
        parameters,
        flops_batch1: flops_at_batch1(&model).unwrap_or(0),
        source_ops,
        warnings,
    })
}

/// Sum tract's per-node cost estimates with every symbol set to 1.
fn flops_at_batch1(model: &TypedModel) -> TractResult<u64> {
    let mut values = HashMap::new();
    for node in model.nodes() {
        for o in &node.outputs {
            for d in o.fact.shape.iter() {
                for s in d.symbols() {
                    values.insert(s, TDim::Val(1));
                }
            }
        }
    }
    let model = model.set_symbols(&values)?;
    let mut flops = 0u64;
    for node in model.nodes() {
        let facts = model.node_input_facts(node.id)?;
        for (cost, count) in node.op.cost(&facts)? {
            let n = count.to_i64().unwrap_or(0).max(0) as u64;
            flops += match cost {
                Cost::FMA(_) => 2 * n,
                Cost::Params(_) | Cost::Custom(..) => 0,
                _ => n,
            };
        }
    }
    Ok(flops)
}
