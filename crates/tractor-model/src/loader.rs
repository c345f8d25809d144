//! One loader for `tractor optimize` and `tractor serve`: an ONNX file, an NNEF archive, a TensorFlow Lite
//! flatbuffer or a frozen TensorFlow graph into a decluttered typed model, telling unsupported ops from broken
//! files, with declared inputs checked and fixed in.

use std::path::Path;
use std::time::{Duration, Instant};

use tract_nnef::internal::*;
use tract_onnx::prelude::{Framework, InferenceFact, InferenceModel, InferenceModelExt};
use tractor_api::report::FailureReason as Reason;

use crate::{Error, Result};

/// Why loading failed, before [`load_declared`] names the file: the optimize report's reason code and a message.
struct Failure {
    reason: Reason,
    message: String,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// The tract NNEF framework with every extension the artifact may need (core ops, ONNX-specific ops, tractor's
/// ai.onnx.ml ops).
pub fn nnef() -> tract_nnef::framework::Nnef {
    use tract_onnx::WithOnnx;
    tract_nnef::nnef()
        .with_onnx()
        .with_registry(tractor_onnx_ml::nnef_registry())
        .with_registry(crate::dequant::nnef_registry())
}

/// The model property under which the loader leaves notes for people (e.g. a ZipMap it removed); it travels in
/// the NNEF artifact, so the server can show it in the model's metadata.
pub const NOTES_PROPERTY: &str = "tractor_notes";

/// The notes a loaded model carries (a rank-1 string tensor under [`NOTES_PROPERTY`]).
pub fn notes(model: &TypedModel) -> Vec<String> {
    model
        .properties
        .get(NOTES_PROPERTY)
        .and_then(|t| {
            t.try_as_plain_ram()
                .and_then(|v| v.as_slice::<String>().map(<[String]>::to_vec))
                .ok()
        })
        .unwrap_or_default()
}

fn flat(e: &TractError) -> String {
    format!("{e:#}")
}

/// One operator type of a TensorFlow Lite or TensorFlow source, and whether tract translates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOp {
    /// The source's name for it (`FULLY_CONNECTED`, `MatMul`; `CUSTOM:<code>` for a TFLite custom operator).
    pub op: String,
    /// Nodes of that type.
    pub count: usize,
    /// Whether tract translates it; a model with any that is not is refused with `UnsupportedOp`.
    pub supported: bool,
}

/// The operator types of a TensorFlow Lite file or a frozen TensorFlow graph, with who runs each (for `tractor
/// inspect`); `None` for the formats whose ops are listed elsewhere (ONNX: `tractor-onnx-ml`) or not at all.
pub fn source_ops(path: &Path, format: tractor_api::ModelFormat) -> Result<Option<Vec<SourceOp>>> {
    let invalid = |message: String| Error::LoadModel {
        path: path.to_owned(),
        reason: Reason::InvalidModel,
        message,
    };
    match format {
        tractor_api::ModelFormat::Tflite => {
            let bytes = std::fs::read(path).map_err(|source| Error::ReadModel {
                path: path.to_owned(),
                source,
            })?;
            crate::tflite::source_ops(&bytes).map(Some).map_err(invalid)
        }
        tractor_api::ModelFormat::Tensorflow => {
            let framework = tract_tensorflow::tensorflow();
            let graph = framework
                .proto_model_for_path(path)
                .map_err(|error| invalid(flat(&error)))?;
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for node in &graph.node {
                *counts.entry(node.op.as_str()).or_insert(0) += 1;
            }
            Ok(Some(
                counts
                    .into_iter()
                    .map(|(op, count)| SourceOp {
                        op: op.to_owned(),
                        count,
                        supported: framework.op_register.0.contains_key(op),
                    })
                    .collect(),
            ))
        }
        tractor_api::ModelFormat::Onnx | tractor_api::ModelFormat::Nnef => Ok(None),
    }
}

/// Load a model file into a decluttered typed model; `UnsupportedOp` names the op tract lacks.
pub fn load(path: &Path) -> Result<(TypedModel, tractor_api::ModelFormat)> {
    load_declared(path, None, &[])
}

/// [`load`], with how long parsing and decluttering took (for [`crate::LoadTimings`]).
pub(crate) fn load_timed(path: &Path) -> Result<(TypedModel, tractor_api::ModelFormat, Phases)> {
    let mut phases = Phases::default();
    let (model, format) =
        read_declared(path, None, &[], &mut phases).map_err(|failure| Error::LoadModel {
            path: path.to_owned(),
            reason: failure.reason,
            message: failure.message,
        })?;
    Ok((model, format, phases))
}

/// The loader's share of [`crate::LoadTimings`].
#[derive(Debug, Default)]
pub(crate) struct Phases {
    /// Reading and parsing the file.
    pub(crate) parse: Duration,
    /// Declaring inputs, typing and decluttering.
    pub(crate) declutter: Duration,
}

/// [`load`] as `spec.model` declares it: a `format` is loaded as that format (an ONNX file declared NNEF is
/// refused, not loaded anyway; only between the two protobuf formats, ONNX and TensorFlow, can bytes not tell), and
/// declared `inputs` are checked against the model's own (refused with `InputMismatch` naming the first
/// disagreement) and, for ONNX and TensorFlow, fixed into it: type and fixed sizes as declared, `-1` free. NNEF
/// and TensorFlow Lite files carry their own types, so there they are checked only.
pub fn load_declared(
    path: &Path,
    format: Option<tractor_api::ModelFormat>,
    declared: &[tractor_api::InputOverride],
) -> Result<(TypedModel, tractor_api::ModelFormat)> {
    read_declared(path, format, declared, &mut Phases::default()).map_err(|failure| {
        Error::LoadModel {
            path: path.to_owned(),
            reason: failure.reason,
            message: failure.message,
        }
    })
}

/// [`load_declared`] before the error names the file.
fn read_declared(
    path: &Path,
    format: Option<tractor_api::ModelFormat>,
    declared: &[tractor_api::InputOverride],
    phases: &mut Phases,
) -> Result<(TypedModel, tractor_api::ModelFormat), Failure> {
    use tractor_api::ModelFormat;
    let invalid = |message: String| Failure::new(Reason::InvalidModel, message);
    let format = crate::formats::pick(format, crate::formats::sniff(path)).map_err(invalid)?;
    if format == ModelFormat::Nnef {
        let start = Instant::now();
        let parsed = nnef()
            .model_for_path(path)
            .map_err(|error| classify(&error))?;
        phases.parse = start.elapsed();
        let start = Instant::now();
        let model = parsed
            .into_decluttered()
            .map_err(|error| classify(&error))?;
        phases.declutter = start.elapsed();
        crate::declared::check(declared, &typed_inputs(&model))
            .map_err(|message| Failure::new(Reason::InputMismatch, message))?;
        return Ok((model, ModelFormat::Nnef));
    }
    if format == ModelFormat::Tflite {
        return read_tflite(path, declared, phases).map(|model| (model, ModelFormat::Tflite));
    }
    let start = Instant::now();
    let mut inference = if format == ModelFormat::Tensorflow {
        read_tensorflow(path)?
    } else {
        tractor_onnx_ml::onnx()
            .model_for_path(path)
            .map_err(|error| {
                invalid(format!(
                    "not a loadable ONNX or NNEF model: {}",
                    flat(&error)
                ))
            })?
    };
    phases.parse = start.elapsed();
    let start = Instant::now();
    declare_onnx_inputs(&mut inference, declared)?;
    // Exporters (skl2onnx, torch without dynamic_axes names) often leave the batch axis unnamed; tract needs a
    // symbol there to type the graph, and a symbolic batch is what lets the server merge requests.
    let batch = inference.symbols.sym("N");
    for ix in 0..inference.inputs.len() {
        let mut fact = inference
            .input_fact(ix)
            .map_err(|error| invalid(flat(&error)))?
            .clone();
        if !fact.shape.is_open()
            && fact
                .shape
                .dim(0)
                .is_some_and(|first_dim| first_dim == Default::default())
        {
            fact.shape.set_dim(0, batch.to_dim());
            inference
                .set_input_fact(ix, fact)
                .map_err(|error| invalid(flat(&error)))?;
        }
    }
    // tract parses unknown ops into placeholders; name them instead of failing later with a shape error.
    let mut missing: Vec<String> = inference
        .nodes()
        .iter()
        .filter_map(|node| {
            let name = node.op.name();
            name.strip_prefix("Unimplemented(")
                .map(|op| op.trim_end_matches(')').to_owned())
        })
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(Failure::new(
            Reason::UnsupportedOp,
            match format {
                tractor_api::ModelFormat::Tensorflow => {
                    format!("tract cannot run TensorFlow op(s): {}", missing.join(", "))
                }
                _ => format!("tract cannot run op(s): {}", missing.join(", ")),
            },
        ));
    }
    let input_names: Vec<String> = inference
        .inputs
        .iter()
        .map(|outlet_id| {
            inference
                .outlet_label(*outlet_id)
                .unwrap_or(&inference.node(outlet_id.node).name)
                .to_owned()
        })
        .collect();
    let output_names: Vec<Option<String>> = inference
        .outputs
        .iter()
        .map(|outlet_id| inference.outlet_label(*outlet_id).map(str::to_owned))
        .collect();
    let mut notes = Vec::new();
    if inference
        .nodes()
        .iter()
        .any(|node| node.op.name() == "ZipMap")
    {
        notes.push(tractor_onnx_ml::ZIPMAP_NOTE.to_owned());
    }
    let mut model = type_with_batch(inference, &batch, &mut notes)?;
    // Declutter may fold an input's first op (a Cast) into the source and rename it; clients know the ONNX name.
    for (ix, name) in input_names.into_iter().enumerate() {
        if let Some(input) = model.inputs.get(ix).copied() {
            model.node_mut(input.node).name = name.clone();
            model
                .set_outlet_label(input, name)
                .map_err(|error| Failure::new(Reason::Internal, flat(&error)))?;
        }
    }
    // An op that forwards its input (a removed ZipMap) leaves the producer's name on the output; clients know
    // the graph's output names.
    for (ix, name) in output_names.into_iter().enumerate() {
        if let (Some(name), Some(outlet)) = (name, model.outputs.get(ix).copied()) {
            model
                .set_outlet_label(outlet, name)
                .map_err(|error| Failure::new(Reason::Internal, flat(&error)))?;
        }
    }
    if !notes.is_empty() {
        model
            .properties
            .insert(NOTES_PROPERTY.to_owned(), rctensor1(&notes));
    }
    let model = integer_outputs(model)?;
    phases.declutter = start.elapsed();
    Ok((model, format))
}

/// A frozen TensorFlow graph as an inference model, typed on from there as ONNX is. TensorFlow keeps a `NoOp`
/// for control dependencies that nothing reads; tract would take it for an output, so the outputs are the nodes
/// nothing reads that compute something.
fn read_tensorflow(path: &Path) -> Result<InferenceModel, Failure> {
    let framework = tract_tensorflow::tensorflow();
    let mut graph = framework.proto_model_for_path(path).map_err(|error| {
        Failure::new(
            Reason::InvalidModel,
            format!("not a loadable frozen TensorFlow graph: {}", flat(&error)),
        )
    })?;
    crate::tensorflow::complete_constants(&mut graph);
    let mut model = framework
        .model_for_proto_model(&graph)
        .map_err(|error| classify(&error))?;
    let outputs: Vec<OutletId> = model
        .outputs
        .iter()
        .copied()
        .filter(|outlet| {
            let node = model.node(outlet.node);
            !graph.node.iter().any(|proto| {
                proto.name == node.name && matches!(proto.op.as_str(), "NoOp" | "Const")
            })
        })
        .collect();
    let internal = |error: TractError| Failure::new(Reason::Internal, flat(&error));
    model.select_output_outlets(&outputs).map_err(internal)?;
    // Clients know an output by its node's name (`Identity`), which decluttering would drop with the node.
    for outlet in outputs {
        let name = model.node(outlet.node).name.clone();
        model.set_outlet_label(outlet, name).map_err(internal)?;
    }
    Ok(model)
}

/// A TensorFlow Lite flatbuffer into a decluttered typed model: operators tract-tflite lacks are refused by name
/// first; int8 inputs and outputs become f32 edges around the model's own (de)quantization; the file's batch of 1
/// becomes the symbol `N` when the graph wires with it and two rows run together give what each gives alone
/// (else the model serves batch 1, and a note says so). Declared inputs are checked, as for NNEF.
fn read_tflite(
    path: &Path,
    declared: &[tractor_api::InputOverride],
    phases: &mut Phases,
) -> Result<TypedModel, Failure> {
    let start = Instant::now();
    let bytes = std::fs::read(path).map_err(|error| {
        Failure::new(
            Reason::InvalidModel,
            format!("reading {}: {error}", path.display()),
        )
    })?;
    let ops = crate::tflite::source_ops(&bytes)
        .map_err(|message| Failure::new(Reason::InvalidModel, message))?;
    let missing: Vec<&str> = ops
        .iter()
        .filter(|op| !op.supported)
        .map(|op| op.op.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Failure::new(
            Reason::UnsupportedOp,
            format!(
                "tract cannot run TensorFlow Lite op(s): {}",
                missing.join(", ")
            ),
        ));
    }
    let declared_types = crate::tflite::quantized_tensors(&bytes)
        .map_err(|error| Failure::new(Reason::InvalidModel, flat(&error)))?;
    let unchecked = crate::tflite::refused(&ops, !declared_types.is_empty());
    if !unchecked.is_empty() {
        return Err(Failure::new(
            Reason::UnsupportedOp,
            format!(
                "tractor runs integer-quantized TensorFlow Lite op(s) {} only; this model also uses {}",
                crate::tflite::QUANTIZED_CHECKED.join(", "),
                unchecked.join(", ")
            ),
        ));
    }
    // The flatbuffer is sound and every op is one tract-tflite knows, so a failure from here on is tract not
    // translating a variant TFLite runs (per-channel weights in FULLY_CONNECTED, a fused activation it lacks):
    // `UnsupportedOp`, naming the operator when tract's error does, with tract's innermost reason.
    let tflite_error = |error: TractError| {
        let message = flat(&error);
        // The last one: `deprecated_builtin_code` comes first in the operator code's Debug text.
        let op = message
            .rsplit_once("builtin_code: ")
            .map(|(_, rest)| rest)
            .and_then(|rest| {
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
            })
            .filter(|name| !name.is_empty());
        let cause = error.root_cause().to_string();
        Failure::new(
            Reason::UnsupportedOp,
            match op {
                Some(op) => {
                    format!("tract cannot run this model's TensorFlow Lite op {op}: {cause}")
                }
                None => format!("tract cannot run this TensorFlow Lite model: {cause}"),
            },
        )
    };
    let parsed = tract_tflite::tflite()
        .model_for_read(&mut bytes.as_slice())
        .map_err(tflite_error)?;
    let (input_names, output_names) = crate::tflite::edge_names(&bytes).map_err(tflite_error)?;
    phases.parse = start.elapsed();
    let start = Instant::now();
    let internal = |error: TractError| Failure::new(Reason::Internal, flat(&error));
    let single =
        crate::tflite::rebuild(&parsed, None, &input_names, &output_names, &declared_types)
            .and_then(|model| model.into_decluttered())
            .map_err(tflite_error)?;
    let mut notes = Vec::new();
    if parsed
        .input_outlets()
        .map_err(internal)?
        .iter()
        .chain(parsed.output_outlets().map_err(internal)?)
        .any(|outlet| {
            parsed
                .outlet_fact(*outlet)
                .is_ok_and(|fact| fact.datum_type.is_quantized())
        })
    {
        notes.push(crate::tflite::QUANTIZED_EDGES_NOTE.to_owned());
    }
    let batched = crate::tflite::rebuild(
        &parsed,
        Some("N"),
        &input_names,
        &output_names,
        &declared_types,
    )
    .and_then(|model| model.into_decluttered())
    .ok()
    .filter(|model| crate::tflite::rows_are_independent(model, &single, "N").unwrap_or(false));
    let mut model = match batched {
        Some(model) => model,
        None => {
            notes.push(
                "the TensorFlow Lite graph has its batch of 1 built in (a shape or an op that mixes rows); \
                 this model serves batch 1 only"
                    .to_owned(),
            );
            single
        }
    };
    if !notes.is_empty() {
        model
            .properties
            .insert(NOTES_PROPERTY.to_owned(), rctensor1(&notes));
    }
    crate::declared::check(declared, &typed_inputs(&model))
        .map_err(|message| Failure::new(Reason::InputMismatch, message))?;
    phases.declutter = start.elapsed();
    Ok(model)
}

/// What a typed (NNEF) model says of its inputs.
fn typed_inputs(model: &TypedModel) -> Vec<crate::declared::ModelInput> {
    model
        .inputs
        .iter()
        .filter_map(|o| {
            let fact = model.outlet_fact(*o).ok()?;
            Some(crate::declared::ModelInput {
                name: model
                    .outlet_label(*o)
                    .unwrap_or(&model.node(o.node).name)
                    .to_owned(),
                datatype: crate::datatype::from_datum(fact.datum_type),
                dims: Some(fact.shape.iter().map(|d| d.to_i64().ok()).collect()),
            })
        })
        .collect()
}

/// Checks the declared inputs against the ONNX graph's input facts, then writes them in: the declared type, the
/// declared fixed sizes, and a symbol for each `-1` (the batch symbol `N` on the first axis, so the server
/// can merge requests; the graph's own symbol, or a fresh one, elsewhere).
fn declare_onnx_inputs(
    inference: &mut InferenceModel,
    declared: &[tractor_api::InputOverride],
) -> Result<(), Failure> {
    use tract_onnx::tract_hir::infer::{DimFact, Factoid, ShapeFactoid};
    if declared.is_empty() {
        return Ok(());
    }
    let internal = |error: TractError| Failure::new(Reason::Internal, flat(&error));
    let mut facts = Vec::new();
    let mut model_inputs = Vec::new();
    for ix in 0..inference.inputs.len() {
        let outlet = inference.inputs[ix];
        let name = inference
            .outlet_label(outlet)
            .unwrap_or(&inference.node(outlet.node).name)
            .to_owned();
        let fact = inference.input_fact(ix).map_err(internal)?.clone();
        let dims = (!fact.shape.is_open()).then(|| {
            fact.shape
                .dims()
                .map(|dim| dim.concretize().and_then(|dim| dim.to_i64().ok()))
                .collect()
        });
        model_inputs.push(crate::declared::ModelInput {
            name: name.clone(),
            datatype: fact
                .datum_type
                .concretize()
                .and_then(crate::datatype::from_datum),
            dims,
        });
        facts.push((name, fact));
    }
    crate::declared::check(declared, &model_inputs)
        .map_err(|message| Failure::new(Reason::InputMismatch, message))?;
    for declaration in declared {
        let Some(ix) = facts.iter().position(|(name, _)| *name == declaration.name) else {
            continue;
        };
        let old = &facts[ix].1;
        let dims: TVec<DimFact> = declaration
            .shape
            .iter()
            .enumerate()
            .map(|(axis, &size)| {
                if size >= 0 {
                    return DimFact::from(size.to_dim());
                }
                if axis == 0 {
                    return DimFact::from(inference.symbols.sym("N").to_dim());
                }
                match old.shape.dim(axis).and_then(|dim| dim.concretize()) {
                    Some(dim) if dim.to_i64().is_err() => DimFact::from(dim),
                    _ => DimFact::from(
                        inference
                            .symbols
                            .sym(&format!("{}_{axis}", declaration.name))
                            .to_dim(),
                    ),
                }
            })
            .collect();
        let dt = crate::declared::datatype(declaration)
            .map(crate::datatype::DatatypeExt::datum)
            .ok_or_else(|| {
                Failure::new(
                    Reason::InputMismatch,
                    format!("input `{}`", declaration.name),
                )
            })?;
        let fact = InferenceFact::dt_shape(dt, ShapeFactoid::closed(dims));
        inference.set_input_fact(ix, fact).map_err(internal)?;
    }
    Ok(())
}

fn type_model(inference: InferenceModel) -> Result<TypedModel, Failure> {
    inference
        .into_typed()
        .and_then(|loaded| loaded.into_decluttered())
        .map_err(|e| classify(&e))
}

/// Reshapes whose target is a constant starting with 1, with the constant node: exporters that trace at batch 1
/// (torch without dynamic axes, the ONNX model zoo's ResNets) leave such a `[1, k]` before the classifier head.
fn batch_one_reshapes(inference: &InferenceModel) -> Vec<(usize, usize)> {
    use tract_nnef::tract_core::ops::konst::Const;
    inference
        .nodes()
        .iter()
        .filter(|n| n.op.name() == "Reshape" && n.inputs.len() == 2)
        .filter_map(|n| {
            let k = inference.node(n.inputs[1].node);
            let v = k.op_as::<Const>()?.val();
            let first = v
                .cast_to::<i64>()
                .ok()?
                .try_as_plain_ram()
                .ok()?
                .as_slice::<i64>()
                .ok()?
                .first()
                .copied();
            // Only a constant no other node reads, so rewriting it changes this Reshape alone.
            let only_reshapes = k.outputs[0]
                .successors
                .iter()
                .all(|s| inference.node(s.node).op.name() == "Reshape");
            (v.rank() == 1 && first == Some(1) && only_reshapes).then_some((n.id, k.id))
        })
        .collect()
}

/// Type the model with its batch symbolic. A Reshape to a constant `[1, ...]` pins the batch to 1: when that 1 is
/// provably the batch axis (no other -1 or 0 in the shape, and with -1 in its place the graph types with every
/// output's first axis the batch symbol) the constant is rewritten; otherwise the model is typed at batch 1 and
/// serves batch 1 only. Either way a note says which Reshape and what was done.
fn type_with_batch(
    inference: InferenceModel,
    batch: &Symbol,
    notes: &mut Vec<String>,
) -> Result<TypedModel, Failure> {
    use tract_nnef::tract_core::ops::konst::Const;
    let pinned = batch_one_reshapes(&inference);
    if pinned.is_empty() {
        return type_model(inference);
    }
    let names = pinned
        .iter()
        .map(|(node_id, _)| inference.node(*node_id).name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let mut rewritten = inference.clone();
    let mut provable = true;
    for (_, konst) in &pinned {
        let Some(mut shape) = rewritten
            .node(*konst)
            .op_as::<Const>()
            .and_then(|constant| {
                constant
                    .val()
                    .cast_to::<i64>()
                    .ok()
                    .map(|cast| cast.into_owned())
            })
        else {
            provable = false;
            break;
        };
        let Ok(dims) = shape
            .try_as_plain_ram_mut()
            .and_then(|mut view| Ok(view.as_slice_mut::<i64>()?.to_vec()))
        else {
            provable = false;
            break;
        };
        if dims[1..].iter().any(|dim| *dim <= 0) {
            provable = false;
            break;
        }
        let mut dims = dims;
        dims[0] = -1;
        shape = tensor1(&dims);
        let node = rewritten.node_mut(*konst);
        match Const::new(shape.clone().into_arc_tensor()) {
            Ok(op) => node.op = Box::new(op),
            Err(_) => {
                provable = false;
                break;
            }
        }
        node.outputs[0].fact = InferenceFact::from(shape);
    }
    if provable && let Ok(model) = type_model(rewritten) {
        let batched = model.outputs.iter().all(|outlet| {
            model
                .outlet_fact(*outlet)
                .is_ok_and(|output_fact| output_fact.shape.iter().next() == Some(&batch.to_dim()))
        });
        if batched {
            notes.push(format!(
                "Reshape {names} had a fixed batch of 1 in its constant shape; rewritten to the symbolic batch"
            ));
            return Ok(model);
        }
    }
    use tract_onnx::tract_hir::infer::Factoid;
    let mut one = inference;
    for ix in 0..one.inputs.len() {
        let mut fact = one
            .input_fact(ix)
            .map_err(|error| classify(&error))?
            .clone();
        if fact
            .shape
            .dim(0)
            .and_then(|dim| dim.concretize())
            .is_some_and(|dim| dim.to_i64().is_err())
        {
            fact.shape.set_dim(0, 1.to_dim());
            one.set_input_fact(ix, fact)
                .map_err(|error| classify(&error))?;
        }
    }
    notes.push(format!(
        "Reshape {names} has a constant shape [1, ...] that is not provably the batch axis; this model serves batch 1 only"
    ));
    type_model(one)
}

/// tract types some integer outputs (class labels picked by ArgMax, shapes) as its symbolic `TDim`; clients and
/// the NNEF archive need plain int64, so cast those, keeping the output's name.
fn integer_outputs(mut model: TypedModel) -> Result<TypedModel, Failure> {
    let internal = |e: TractError| Failure::new(Reason::Internal, flat(&e));
    for ix in 0..model.outputs.len() {
        let outlet = model.outputs[ix];
        if model.outlet_fact(outlet).map_err(internal)?.datum_type != DatumType::TDim {
            continue;
        }
        let label = model.outlet_label(outlet).map(str::to_owned);
        let name = model.node(outlet.node).name.clone();
        model.node_mut(outlet.node).name = format!("{name}.tdim");
        let casted = model
            .wire_node(
                name,
                tract_nnef::tract_core::ops::cast::cast(i64::datum_type()),
                &[outlet],
            )
            .map_err(internal)?[0];
        model.outputs[ix] = casted;
        if let Some(label) = label {
            model.set_outlet_label(casted, label).map_err(internal)?;
        }
    }
    model.into_compact().map_err(internal)
}

fn classify(e: &TractError) -> Failure {
    let message = flat(e);
    if message.contains("Unimplemented") || message.contains("not supported") {
        Failure::new(Reason::UnsupportedOp, message)
    } else {
        Failure::new(Reason::InvalidModel, message)
    }
}
