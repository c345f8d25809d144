//! TensorFlow Lite flatbuffers into tract: which operators tract-tflite translates, integer edges served as float,
//! and a symbolic batch where the file's batch of 1 provably is one.

use std::collections::BTreeMap;

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::cast::cast;
use tract_tflite::tflite::{self, BuiltinOperator};

use crate::loader::SourceOp;

/// The builtin operators tract-tflite 0.23.9 translates (its `ops::register_all`; the registry itself is private,
/// and the version is pinned). A model using any other is refused with `UnsupportedOp` naming it, before tract
/// would stop at the first one.
pub const SUPPORTED: [BuiltinOperator; 57] = [
    BuiltinOperator::ABS,
    BuiltinOperator::ADD,
    BuiltinOperator::AVERAGE_POOL_2D,
    BuiltinOperator::BATCH_MATMUL,
    BuiltinOperator::BROADCAST_TO,
    BuiltinOperator::CEIL,
    BuiltinOperator::CONCATENATION,
    BuiltinOperator::CONV_2D,
    BuiltinOperator::COS,
    BuiltinOperator::DEPTHWISE_CONV_2D,
    BuiltinOperator::DIV,
    BuiltinOperator::EQUAL,
    BuiltinOperator::EXP,
    BuiltinOperator::EXPAND_DIMS,
    BuiltinOperator::FLOOR,
    BuiltinOperator::FULLY_CONNECTED,
    BuiltinOperator::GREATER,
    BuiltinOperator::GREATER_EQUAL,
    BuiltinOperator::HARD_SWISH,
    BuiltinOperator::LEAKY_RELU,
    BuiltinOperator::LESS,
    BuiltinOperator::LESS_EQUAL,
    BuiltinOperator::LOG,
    BuiltinOperator::LOGICAL_AND,
    BuiltinOperator::LOGICAL_NOT,
    BuiltinOperator::LOGICAL_OR,
    BuiltinOperator::LOGISTIC,
    BuiltinOperator::MAXIMUM,
    BuiltinOperator::MAX_POOL_2D,
    BuiltinOperator::MEAN,
    BuiltinOperator::MINIMUM,
    BuiltinOperator::MUL,
    BuiltinOperator::NOT_EQUAL,
    BuiltinOperator::PAD,
    BuiltinOperator::PADV2,
    BuiltinOperator::REDUCE_MAX,
    BuiltinOperator::REDUCE_MIN,
    BuiltinOperator::REDUCE_PROD,
    BuiltinOperator::RELU,
    BuiltinOperator::RELU6,
    BuiltinOperator::RESHAPE,
    BuiltinOperator::RESIZE_BILINEAR,
    BuiltinOperator::RESIZE_NEAREST_NEIGHBOR,
    BuiltinOperator::RSQRT,
    BuiltinOperator::SELECT,
    BuiltinOperator::SELECT_V2,
    BuiltinOperator::SHAPE,
    BuiltinOperator::SIN,
    BuiltinOperator::SLICE,
    BuiltinOperator::SOFTMAX,
    BuiltinOperator::SQRT,
    BuiltinOperator::SQUARE,
    BuiltinOperator::SQUEEZE,
    BuiltinOperator::STRIDED_SLICE,
    BuiltinOperator::SUB,
    BuiltinOperator::SUM,
    BuiltinOperator::TANH,
];

/// The operators of an integer-quantized model whose answers are checked against TFLite's interpreter (the digits
/// MLP and CNN fixtures: within one output quantization step): FULLY_CONNECTED, CONV_2D and SOFTMAX run in f32
/// between their own dequantize and quantize (see [`rebuild`]), MAX_POOL_2D and RESHAPE move int8 values as they
/// are. tract's other quantized kernels are not checked, so a quantized model using any other operator is
/// refused, naming it, rather than risk a wrong answer.
pub const QUANTIZED_CHECKED: [&str; 5] = [
    "CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "RESHAPE",
    "SOFTMAX",
];

/// The operators a model may not use: every one tract-tflite lacks, and, in an integer-quantized model, every one
/// outside [`QUANTIZED_CHECKED`].
pub fn refused(ops: &[SourceOp], quantized: bool) -> Vec<&str> {
    ops.iter()
        .filter(|op| !op.supported || (quantized && !QUANTIZED_CHECKED.contains(&op.op.as_str())))
        .map(|op| op.op.as_str())
        .collect()
}

/// Whether any tensor inside `model` is integer-quantized (a TFLite int8 model): f16 and int8-weight rewrites have
/// nothing to add there, and tract casts neither f16 to a quantized type nor back.
pub fn is_integer_quantized(model: &TypedModel) -> bool {
    model.nodes().iter().any(|node| {
        node.outputs
            .iter()
            .any(|output| output.fact.datum_type.is_quantized())
    })
}

/// The note a model whose integer inputs or outputs are served as float carries. No apostrophe: notes travel in
/// the NNEF artifact's properties, whose string literals tract 0.23.9 cannot read back with one inside.
pub const QUANTIZED_EDGES_NOTE: &str = "integer-quantized inputs and outputs are served as FP32: inputs are quantized \
    and outputs dequantized with the scale and zero point the model declares";

/// The operator types of a TFLite flatbuffer, by name, with their counts and whether tract runs them; the error
/// says why the bytes are not a TFLite model.
pub fn source_ops(bytes: &[u8]) -> Result<Vec<SourceOp>, String> {
    let root = tflite::root_as_model(bytes)
        .map_err(|error| format!("not a TensorFlow Lite flatbuffer: {error}"))?;
    let codes: Vec<(String, bool)> = root
        .operator_codes()
        .map(|codes| codes.iter().map(|code| name_and_support(&code)).collect())
        .unwrap_or_default();
    let mut counts: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for subgraph in root.subgraphs().iter().flat_map(|graphs| graphs.iter()) {
        for operator in subgraph.operators().iter().flat_map(|ops| ops.iter()) {
            let (name, supported) = codes
                .get(operator.opcode_index() as usize)
                .cloned()
                .unwrap_or_else(|| (format!("opcode #{}", operator.opcode_index()), false));
            counts.entry(name).or_insert((0, supported)).0 += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|(op, (count, supported))| SourceOp {
            op,
            count,
            supported,
        })
        .collect())
}

/// An operator code's name and whether tract-tflite translates it. Codes past 127 live in `builtin_code`, the
/// others in the deprecated byte, as TFLite's schema reads them.
fn name_and_support(code: &tflite::OperatorCode) -> (String, bool) {
    let deprecated = code.deprecated_builtin_code() as i32;
    let builtin = if deprecated == BuiltinOperator::PLACEHOLDER_FOR_GREATER_OP_CODES.0 {
        code.builtin_code()
    } else {
        BuiltinOperator(deprecated)
    };
    if builtin == BuiltinOperator::CUSTOM {
        return (
            format!("CUSTOM:{}", code.custom_code().unwrap_or("?")),
            false,
        );
    }
    let name = builtin
        .variant_name()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("BUILTIN_{}", builtin.0));
    (name, SUPPORTED.contains(&builtin))
}

/// The names TFLite gives the main subgraph's inputs and outputs, in order.
pub(crate) fn edge_names(bytes: &[u8]) -> TractResult<(Vec<String>, Vec<String>)> {
    let root = tflite::root_as_model(bytes)?;
    let main = root
        .subgraphs()
        .and_then(|graphs| graphs.iter().next())
        .context("no subgraph in the TFLite model")?;
    let tensors = main.tensors().context("no tensors in the TFLite model")?;
    let names = |ids: Vec<i32>| -> Vec<String> {
        ids.into_iter()
            .map(|id| {
                tensors
                    .get(id as usize)
                    .name()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let inputs = main
        .inputs()
        .map(|ids| ids.iter().collect())
        .unwrap_or_default();
    let outputs = main
        .outputs()
        .map(|ids| ids.iter().collect())
        .unwrap_or_default();
    Ok((names(inputs), names(outputs)))
}

/// The datum type the file declares for each per-tensor-quantized tensor, by tensor name (tract-tflite names the
/// node that computes a tensor after it). Per-channel tensors are weights, constants that need no check.
pub(crate) fn quantized_tensors(bytes: &[u8]) -> TractResult<HashMap<String, DatumType>> {
    let root = tflite::root_as_model(bytes)?;
    let mut declared = HashMap::new();
    for subgraph in root.subgraphs().iter().flat_map(|graphs| graphs.iter()) {
        for tensor in subgraph.tensors().iter().flat_map(|tensors| tensors.iter()) {
            let Some(quantization) = tensor.quantization() else {
                continue;
            };
            let (Some(scales), Some(zero_points)) =
                (quantization.scale(), quantization.zero_point())
            else {
                continue;
            };
            let datum_type = match tensor.type_() {
                tflite::TensorType::INT8 => i8::datum_type(),
                tflite::TensorType::UINT8 => u8::datum_type(),
                tflite::TensorType::INT32 => i32::datum_type(),
                _ => continue,
            };
            if scales.len() == 1 && zero_points.len() == 1 {
                let params = QParams::ZpScale {
                    zero_point: zero_points.get(0) as i32,
                    scale: scales.get(0),
                };
                declared.insert(
                    tensor.name().unwrap_or_default().to_owned(),
                    datum_type.quantize(params),
                );
            }
        }
    }
    Ok(declared)
}

/// `model` rebuilt node by node: each quantized input fed as f32 and quantized with the model's own scale and
/// zero point, each quantized output dequantized likewise, every input's first axis `batch` when given, and the
/// inputs and outputs labelled with TFLite's names. Ops whose shapes are baked in for a batch of 1 fail to wire
/// on a symbolic batch: the caller then rebuilds at the file's batch.
///
/// A quantized FULLY_CONNECTED or convolution is computed in f32 (see [`float_fully_connected`], [`float_conv`]),
/// and a quantized SOFTMAX too,
/// between dequantize and quantize: tract-tflite 0.23.9 gives it its input's scale and zero point, not the
/// output's the file declares (TFLite's 1/256 and -128), so its probabilities came out on a grid 50 times coarser.
/// Every other computed tensor's quantization must be the one the file declares (`declared`, by name); a
/// disagreement refuses the model ("Unsupported", so `UnsupportedOp`) rather than serve a wrong answer.
pub(crate) fn rebuild(
    model: &TypedModel,
    batch: Option<&str>,
    input_names: &[String],
    output_names: &[String],
    declared: &HashMap<String, DatumType>,
) -> TractResult<TypedModel> {
    use tract_nnef::tract_core::ops::konst::Const;
    use tract_nnef::tract_core::ops::nn::Softmax;
    let mut out = TypedModel::default();
    let batch = batch.map(|name| out.symbols.sym(name));
    let mut mapping: HashMap<OutletId, OutletId> = HashMap::new();
    for node_id in model.eval_order()? {
        let node = model.node(node_id);
        let outlet = OutletId::new(node_id, 0);
        if let Some(ix) = model.inputs.iter().position(|input| *input == outlet) {
            let fact = model.outlet_fact(outlet)?;
            let mut shape: TVec<TDim> = fact.shape.to_tvec();
            if let (Some(batch), Some(first)) = (&batch, shape.first_mut()) {
                ensure!(
                    first.is_one(),
                    "input {} has batch {first}, not 1",
                    node.name
                );
                *first = batch.to_dim();
            }
            let name = input_names.get(ix).cloned().unwrap_or(node.name.clone());
            let wire = if fact.datum_type.is_quantized() {
                let source = out.add_source(&name, f32::fact(&shape))?;
                out.wire_node(format!("{name}.quantize"), cast(fact.datum_type), &[source])?[0]
            } else {
                out.add_source(&name, fact.datum_type.fact(&shape))?
            };
            mapping.insert(outlet, wire);
            continue;
        }
        let inputs: TVec<OutletId> = node
            .inputs
            .iter()
            .map(|input| mapping.get(input).copied())
            .collect::<Option<_>>()
            .context("an input wired before its producer")?;
        if let Some(wire) = float_conv(model, node, &inputs, &mut out)? {
            mapping.insert(outlet, wire);
            continue;
        }
        if let Some(wire) = float_fully_connected(model, node, &inputs, &mut out)? {
            mapping.insert(outlet, wire);
            continue;
        }
        let want = declared.get(&node.name).copied();
        if let (Some(softmax), Some(want)) = (node.op_as::<Softmax>(), want)
            && softmax.quant_output_dt.is_some()
        {
            let prefix = &node.name;
            let input = out.wire_node(
                format!("{prefix}.input_f32"),
                cast(f32::datum_type()),
                &inputs,
            )?;
            let float = Softmax {
                quant_output_dt: None,
                ..softmax.clone()
            };
            let probabilities = out.wire_node(format!("{prefix}.f32"), float, &input)?;
            let wire = out.wire_node(prefix, cast(want), &probabilities)?[0];
            mapping.insert(outlet, wire);
            continue;
        }
        let wires = out.wire_node(&node.name, node.op.clone(), &inputs)?;
        if let (Some(want), Some(wire)) = (want, wires.first())
            && !node.op_is::<Const>()
        {
            let got = out.outlet_fact(*wire)?.datum_type;
            if got.is_quantized() && got != want {
                bail!(
                    "Unsupported: tract computes {} as {got:?}, the model declares {want:?}",
                    node.name
                );
            }
        }
        for (ix, wire) in wires.into_iter().enumerate() {
            mapping.insert(OutletId::new(node_id, ix), wire);
        }
    }
    let mut outputs = Vec::new();
    for (ix, outlet) in model.outputs.iter().enumerate() {
        let mut wire = *mapping
            .get(outlet)
            .context("an output that was never wired")?;
        let name = output_names
            .get(ix)
            .cloned()
            .unwrap_or_else(|| model.node(outlet.node).name.clone());
        if out.outlet_fact(wire)?.datum_type.is_quantized() {
            // The served output takes the tensor's name; its quantized producer gives it up, or the NNEF
            // artifact would hold two variables of that name.
            let producer = out.node_mut(wire.node);
            producer.name = format!("{}.quantized", producer.name);
            wire = out.wire_node(
                format!("{name}.dequantize"),
                cast(f32::datum_type()),
                &[wire],
            )?[0];
        }
        out.set_outlet_label(wire, name)?;
        outputs.push(wire);
    }
    out.select_output_outlets(&outputs)?;
    for (ix, name) in input_names.iter().enumerate() {
        if let Some(input) = out.inputs.get(ix).copied() {
            out.set_outlet_label(input, name.clone())?;
        }
    }
    Ok(out)
}

/// Whether `batched` (a symbolic first axis `batch`) computes each row as `single` (the file's batch of 1) does:
/// two different rows run together must give what each gives alone. The rows are a fixed ramp and its reverse, so
/// a graph that mixes rows (a reduction or reshape across the batch) gives itself away.
pub(crate) fn rows_are_independent(
    batched: &TypedModel,
    single: &TypedModel,
    batch: &str,
) -> TractResult<bool> {
    let symbol = batched.symbols.sym(batch);
    let two = batched.set_symbols(&HashMap::from([(symbol, TDim::Val(2))]))?;
    let two = two.into_runnable()?;
    let one = single.clone().into_runnable()?;
    let mut pair: TVec<TValue> = tvec!();
    let mut firsts: TVec<TValue> = tvec!();
    let mut seconds: TVec<TValue> = tvec!();
    for input in &single.inputs {
        let fact = single.outlet_fact(*input)?;
        let shape: Vec<usize> = fact
            .shape
            .as_concrete()
            .context("an input without a concrete shape")?
            .to_vec();
        let len: usize = shape.iter().product();
        let ramp: Vec<f32> = (0..len).map(|at| probe_value(at, len)).collect();
        let reverse: Vec<f32> = ramp.iter().rev().copied().collect();
        let row = |values: &[f32]| -> TractResult<Tensor> {
            tract_ndarray::ArrayD::from_shape_vec(shape.clone(), values.to_vec())?
                .into_tensor()
                .cast_to_dt(fact.datum_type.unquantized())
                .map(|cow| cow.into_owned())
        };
        let (first, second) = (row(&ramp)?, row(&reverse)?);
        pair.push(Tensor::stack_tensors(0, &[first.clone(), second.clone()])?.into_tvalue());
        firsts.push(first.into_tvalue());
        seconds.push(second.into_tvalue());
    }
    let together = two.run(pair)?;
    let alone = [one.run(firsts)?, one.run(seconds)?];
    for (output, got) in together.iter().enumerate() {
        let got = got.cast_to::<f32>()?;
        let got = got.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let mut want = Vec::new();
        for run in &alone {
            let value = run[output].cast_to::<f32>()?;
            want.extend_from_slice(value.try_as_plain_ram()?.as_slice::<f32>()?);
        }
        let close = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(left, right)| (left - right).abs() <= 1e-4 * right.abs().max(1.0));
        if !close {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A probe row's value at `at` of `len`: spread over [0, 16], the range of small images and most scaled features,
/// and never two rows alike.
fn probe_value(at: usize, len: usize) -> f32 {
    16.0 * ((at * 7919) % len.max(1)) as f32 / len.max(1) as f32
}

/// A quantized FULLY_CONNECTED (tract-tflite's 9-input `BI,OI,O,,,,,,->BO` EinSum) wired as f32 arithmetic between
/// a dequantized input and a quantized output: tract 0.23.9's quantized EinSum gives zeros for TFLite's int8 dense
/// layers, and reads their int32 bias as already scaled. The weights and bias are dequantized here, once, as TFLite
/// defines them (weight `(q - zero) * scale` per output channel, bias `q * input_scale * weight_scale`); the sum
/// of products is exact in f32 at these sizes, so the requantized result is TFLite's but for a tie rounded the
/// other way (one step). `None` for any other node. Any other quantized EinSum is refused, never run.
fn float_fully_connected(
    model: &TypedModel,
    node: &TypedNode,
    inputs: &[OutletId],
    out: &mut TypedModel,
) -> TractResult<Option<OutletId>> {
    use tract_nnef::tract_core::ops::einsum::EinSum;
    use tract_nnef::tract_core::ops::math::add;
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let Some(output_type) = einsum.q_params else {
        return Ok(None);
    };
    ensure!(
        einsum.axes.to_string() == "BI,OI,O,,,,,,->BO" && node.inputs.len() == 9,
        "Unsupported: quantized EinSum {} ({}) other than FULLY_CONNECTED's",
        node.name,
        einsum.axes
    );
    let konst = |slot: usize| -> TractResult<Arc<Tensor>> {
        model
            .outlet_fact(node.inputs[slot])?
            .konst
            .clone()
            .with_context(|| {
                format!(
                    "Unsupported: {} has a non-constant input #{slot}",
                    node.name
                )
            })
    };
    let floats = |slot: usize| -> TractResult<Vec<f32>> {
        let value = konst(slot)?.cast_to::<f32>()?.into_owned();
        Ok(value.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    };
    // Raw integers: a quantized tensor cast to i32 keeps its stored values.
    let raw = |slot: usize| -> TractResult<(Vec<usize>, Vec<i32>)> {
        let value = konst(slot)?;
        let shape = value.shape().to_vec();
        let ints = value.cast_to::<i32>()?.into_owned();
        Ok((shape, ints.try_as_plain_ram()?.as_slice::<i32>()?.to_vec()))
    };
    let (weight_shape, weights) = raw(1)?;
    let (_, bias) = raw(2)?;
    let (input_zero, input_scale) = (floats(3)?, floats(4)?);
    let (weight_zero, weight_scale) = (floats(5)?, floats(6)?);
    let [outs, ins] = weight_shape[..] else {
        bail!(
            "Unsupported: {} has weights of shape {weight_shape:?}",
            node.name
        );
    };
    // One value for the tensor, or one per output channel.
    let per_channel =
        |values: &[f32], channel: usize| values.get(channel).or(values.first()).copied();
    let input_type = model.outlet_fact(node.inputs[0])?.datum_type;
    ensure!(
        input_type.zp_scale() == (input_zero[0] as i32, input_scale[0]),
        "Unsupported: {} reads its input with other quantization parameters than it has",
        node.name
    );
    let mut dense = Vec::with_capacity(weights.len());
    let mut offsets = Vec::with_capacity(outs);
    for channel in 0..outs {
        let zero = per_channel(&weight_zero, channel).context("no weight zero point")?;
        let scale = per_channel(&weight_scale, channel).context("no weight scale")?;
        for value in &weights[channel * ins..(channel + 1) * ins] {
            dense.push((*value as f32 - zero) * scale);
        }
        offsets.push(bias.get(channel).copied().unwrap_or(0) as f32 * input_scale[0] * scale);
    }
    let prefix = &node.name;
    let input = out.wire_node(
        format!("{prefix}.input_f32"),
        cast(f32::datum_type()),
        &inputs[..1],
    )?;
    let dense = out.add_const(
        format!("{prefix}.weights"),
        tensor1(&dense).into_shape(&[outs, ins])?,
    )?;
    let product = out.wire_node(
        format!("{prefix}.f32"),
        EinSum::new("BI,OI->BO".parse()?, f32::datum_type()),
        &[input[0], dense],
    )?;
    let offsets = out.add_const(
        format!("{prefix}.bias"),
        tensor1(&offsets).into_shape(&[1, outs])?,
    )?;
    let biased = out.wire_node(format!("{prefix}.biased"), add(), &[product[0], offsets])?;
    Ok(Some(out.wire_node(prefix, cast(output_type), &biased)?[0]))
}

/// The value at `outlet` when it is a constant, looking through the Cast tract-tflite puts on a convolution's
/// int32 bias.
fn constant(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Arc<Tensor>>> {
    use tract_nnef::tract_core::ops::cast::Cast;
    let fact = model.outlet_fact(outlet)?;
    if let Some(value) = &fact.konst {
        return Ok(Some(value.clone()));
    }
    let node = model.node(outlet.node);
    match (node.op_as::<Cast>(), node.inputs.first()) {
        (Some(cast_op), Some(input)) => match &model.outlet_fact(*input)?.konst {
            Some(value) => Ok(Some(
                value.cast_to_dt(cast_op.to)?.into_owned().into_arc_tensor(),
            )),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// A quantized convolution (CONV_2D, DEPTHWISE_CONV_2D: tract's Conv with `q_params`) wired as an f32 Conv between
/// a dequantized input and a quantized output, its weights and bias dequantized here as TFLite defines them
/// (per output channel). tract 0.23.9 runs the quantized Conv right as loaded, but its NNEF artifact reads back
/// wrong (probabilities off by up to 0.99 on the digits CNN), and the artifact is what serves. `None` for any other
/// node.
fn float_conv(
    model: &TypedModel,
    node: &TypedNode,
    inputs: &[OutletId],
    out: &mut TypedModel,
) -> TractResult<Option<OutletId>> {
    use tract_nnef::tract_core::ops::cnn::Conv;
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let Some(output_type) = conv.q_params else {
        return Ok(None);
    };
    ensure!(
        node.inputs.len() == 9 && output_type.is_quantized(),
        "Unsupported: quantized convolution {} with {} inputs and output {output_type:?}",
        node.name,
        node.inputs.len()
    );
    let konst = |slot: usize| -> TractResult<Arc<Tensor>> {
        constant(model, node.inputs[slot])?.with_context(|| {
            format!(
                "Unsupported: {} has a non-constant input #{slot}",
                node.name
            )
        })
    };
    let floats = |slot: usize| -> TractResult<Vec<f32>> {
        let value = konst(slot)?.cast_to::<f32>()?.into_owned();
        Ok(value.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    };
    let kernel = konst(1)?;
    let shape = kernel.shape().to_vec();
    let raw = kernel.cast_to::<i32>()?.into_owned();
    let raw = raw.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
    let bias = konst(2)?.cast_to::<i32>()?.into_owned();
    let bias = bias.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
    let (input_zero, input_scale) = (floats(3)?, floats(4)?);
    let (kernel_zero, kernel_scale) = (floats(5)?, floats(6)?);
    let input_type = model.outlet_fact(node.inputs[0])?.datum_type;
    ensure!(
        input_type.zp_scale() == (input_zero[0] as i32, input_scale[0]),
        "Unsupported: {} reads its input with other quantization parameters than it has",
        node.name
    );
    // Per-channel parameters follow the output channels: O of a plain convolution's OHWI kernel, the last axis of
    // a depthwise one's (1, H, W, C).
    let axis = if conv.group == 1 { 0 } else { shape.len() - 1 };
    let channels = shape[axis];
    for values in [&kernel_zero, &kernel_scale] {
        ensure!(
            values.len() == 1 || values.len() == channels,
            "Unsupported: {} has {} quantization parameters for {channels} channels",
            node.name,
            values.len()
        );
    }
    let stride: usize = shape[axis + 1..].iter().product();
    let per_channel = |values: &[f32], channel: usize| {
        values
            .get(channel)
            .or(values.first())
            .copied()
            .unwrap_or(0.0)
    };
    let dense: Vec<f32> = raw
        .iter()
        .enumerate()
        .map(|(at, value)| {
            let channel = (at / stride) % channels;
            (*value as f32 - per_channel(&kernel_zero, channel))
                * per_channel(&kernel_scale, channel)
        })
        .collect();
    let offsets: Vec<f32> = (0..bias.len())
        .map(|channel| bias[channel] as f32 * input_scale[0] * per_channel(&kernel_scale, channel))
        .collect();
    let prefix = &node.name;
    let input = out.wire_node(
        format!("{prefix}.input_f32"),
        cast(f32::datum_type()),
        &inputs[..1],
    )?;
    let dense = out.add_const(
        format!("{prefix}.weights"),
        tensor1(&dense).into_shape(&shape)?,
    )?;
    let offsets = out.add_const(format!("{prefix}.bias"), tensor1(&offsets))?;
    let float = Conv {
        q_params: None,
        ..conv.clone()
    };
    let result = out.wire_node(format!("{prefix}.f32"), float, &[input[0], dense, offsets])?;
    Ok(Some(out.wire_node(prefix, cast(output_type), &result)?[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_ops_are_the_missing_ones_and_unchecked_quantized_ones() {
        let op = |name: &str, supported: bool| SourceOp {
            op: name.to_owned(),
            count: 1,
            supported,
        };
        let ops = [
            op("ADD", true),
            op("CONV_2D", true),
            op("PACK", false),
            op("SOFTMAX", true),
        ];
        let cases: [(bool, &[&str]); 2] = [(false, &["PACK"]), (true, &["ADD", "PACK"])];
        for (quantized, want) in cases {
            assert_eq!(refused(&ops, quantized), want, "quantized: {quantized}");
        }
        // Every checked operator is one tract-tflite translates at all.
        for name in QUANTIZED_CHECKED {
            assert!(
                SUPPORTED
                    .iter()
                    .any(|code| code.variant_name() == Some(name)),
                "{name}"
            );
        }
    }

    /// A one-input model: `[batch, 3]` floats through `wire` (given the model and its source).
    fn model(
        batch: Option<&str>,
        wire: impl Fn(&mut TypedModel, OutletId) -> TractResult<OutletId>,
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let first = match batch {
            Some(name) => model.symbols.sym(name).to_dim(),
            None => 1.to_dim(),
        };
        let source = model
            .add_source("x", f32::fact(&[first, 3.to_dim()]))
            .expect("source");
        let output = wire(&mut model, source).expect("wired");
        model.select_output_outlets(&[output]).expect("outputs");
        model
    }

    #[test]
    fn a_graph_that_mixes_rows_is_caught() {
        use tract_nnef::tract_core::ops::math::mul;
        use tract_nnef::tract_core::ops::nn::{Reduce, Reducer};
        let doubled = |model: &mut TypedModel, source: OutletId| {
            let two = model.add_const("two", tensor2(&[[2f32, 2.0, 2.0]]))?;
            Ok(model.wire_node("doubled", mul(), &[source, two])?[0])
        };
        // Sums over the batch axis: [N, 3] to [1, 3], one row whatever N is.
        let summed = |model: &mut TypedModel, source: OutletId| {
            Ok(model.wire_node("summed", Reduce::new(tvec!(0), Reducer::Sum), &[source])?[0])
        };
        assert!(
            rows_are_independent(&model(Some("N"), doubled), &model(None, doubled), "N")
                .expect("runs")
        );
        assert!(
            !rows_are_independent(&model(Some("N"), summed), &model(None, summed), "N")
                .expect("runs")
        );
    }
}
