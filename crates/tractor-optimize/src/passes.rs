//! Model rewrites: f32→f16 (tract's translator, keeping f32 inputs and outputs), per-channel int8 weights
//! (stored as int8; the server runs their matmuls on its integer kernel), and magnitude pruning.

use tract_nnef::internal::*;
use tract_nnef::tract_core::floats::FloatPrecisionTranslator;
use tract_nnef::tract_core::ops::cast::cast;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::konst::Const;
use tract_nnef::tract_core::ops::source::TypedSource;
use tract_nnef::tract_core::transform::ModelTransform;
use tractor_model::dequant::DequantI8;

use super::{OptError, Reason};

/// Weights smaller than this stay as they are: biases and tiny tensors gain nothing and lose accuracy first.
const MIN_WEIGHT_ELEMENTS: usize = 256;

fn internal(e: &TractError) -> OptError {
    OptError::new(Reason::Internal, format!("{e:#}"))
}

/// The weight tensors the passes touch: f32 constants of rank 2 or more, large enough to matter.
fn weight_nodes(model: &TypedModel) -> Vec<usize> {
    model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Const>().is_some_and(|k| {
                let v = k.val();
                v.datum_type() == f32::datum_type()
                    && v.rank() >= 2
                    && v.len() >= MIN_WEIGHT_ELEMENTS
                    && v.is_plain_ram()
            })
        })
        .map(|n| n.id)
        .collect()
}

/// f32 → f16 everywhere inside the model, with f32 inputs and outputs kept so clients see the same signature.
pub fn to_f16(model: &TypedModel) -> Result<TypedModel, OptError> {
    let mut half = FloatPrecisionTranslator::new(f32::datum_type(), f16::datum_type())
        .transform_into(model.clone())
        .map_err(|error| internal(&error))?;
    // The translator turns f32 sources into f16 ones; put f32 sources back in front, cast once.
    for (ix, input) in half.inputs.clone().into_iter().enumerate() {
        let fact = half
            .outlet_fact(input)
            .map_err(|error| internal(&error))?
            .clone();
        if fact.datum_type != f16::datum_type() {
            continue;
        }
        let original = model
            .outlet_fact(model.inputs[ix])
            .map_err(|error| internal(&error))?
            .clone();
        let name = half.node(input.node).name.clone();
        // Retype the source in place and rewire its consumers through one cast: the graph keeps its input names.
        let node = input.node;
        let consumers = half.nodes[node].outputs[0].successors.clone();
        half.nodes[node].op = Box::new(TypedSource::new(original.clone()));
        half.nodes[node].outputs[0].fact = original;
        half.nodes[node].outputs[0].successors.clear();
        let casted = half
            .wire_node(format!("{name}.to_f16"), cast(f16::datum_type()), &[input])
            .map_err(|error| internal(&error))?[0];
        for inlet in consumers {
            half.add_edge(casted, inlet)
                .map_err(|error| internal(&error))?;
        }
    }
    // Cast float outputs back to f32.
    let outputs = half.outputs.clone();
    for (ix, output) in outputs.into_iter().enumerate() {
        let fact = half.outlet_fact(output).map_err(|error| internal(&error))?;
        if fact.datum_type == f16::datum_type() {
            // NNEF names outputs after their nodes: the cast takes over the name clients know.
            let label = half.outlet_label(output).map(|text| text.to_owned());
            let name = half.node(output.node).name.clone();
            half.node_mut(output.node).name = format!("{name}.f16");
            let casted = half
                .wire_node(name, cast(f32::datum_type()), &[output])
                .map_err(|error| internal(&error))?[0];
            half.outputs[ix] = casted;
            if let Some(label) = label {
                half.set_outlet_label(casted, label)
                    .map_err(|error| internal(&error))?;
            }
        }
    }
    let half = half.into_compact().map_err(|error| internal(&error))?;
    // Declutter folds the translator's "f32 const + cast" pairs into f16 constants: half the artifact size.
    half.into_decluttered().map_err(|error| internal(&error))
}

/// The axis of a weight that indexes output channels: the one its EinSum consumer keeps in the output.
fn channel_axis(model: &TypedModel, node: usize, rank: usize) -> usize {
    for succ in &model.node(node).outputs[0].successors {
        let consumer = model.node(succ.node);
        if let Some(op) = consumer.op_as::<EinSum>() {
            for axis in op.axes.iter_all_axes() {
                let in_weight = axis.inputs.get(succ.slot).is_some_and(|p| p.len() == 1);
                let in_output = !axis.outputs[0].is_empty();
                let in_others = axis
                    .inputs
                    .iter()
                    .enumerate()
                    .any(|(slot, p)| slot != succ.slot && !p.is_empty());
                if in_weight && in_output && !in_others {
                    return axis.inputs[succ.slot][0];
                }
            }
        }
    }
    rank - 1
}

/// Replace each matmul weight by int8 values and one f32 scale per output channel (symmetric, max-abs), joined by
/// [`DequantI8`], which stays an op in the artifact (one byte per weight on disk, about 4× smaller). When the
/// server loads the artifact, each matmul its integer kernel takes becomes an integer layer
/// ([`tractor_model::int8_linear`]); any other weight folds into an f32 constant and runs as before.
///
/// How many bits: weights the integer kernel will run are stored in 7 bits (-63..=63), the others in 8. On a CPU
/// with AVX2 and no VNNI the 7-bit kernel is 1.25× faster than the 8-bit one (fewer integer multiplies per product,
/// see `tractor-int8`); the accuracy gate measures what the 7 bits cost, on the served path. Why not 8 bits with
/// a fallback: serving pods re-derive the artifact without the labelled set, so the bit width must not depend on
/// it. Biases and other non-matmul constants stay f32: they are small and an int8 bias gains nothing.
pub fn int8_weights(model: &TypedModel) -> Result<TypedModel, OptError> {
    let mut model = model.clone();
    for id in weight_nodes(&model) {
        let node = model.node(id);
        let feeds_matmul = node.outputs[0]
            .successors
            .iter()
            .all(|successor| model.node(successor.node).op_is::<EinSum>());
        let Some(konst) = node.op_as::<Const>().filter(|_| feeds_matmul) else {
            continue;
        };
        let weights = konst.val().clone();
        let name = node.name.clone();
        let levels = match &*node.outputs[0].successors {
            [matmul]
                if tractor_model::int8_linear::integer_matmul(
                    &model,
                    model.node(matmul.node),
                    matmul.slot,
                )
                .map_err(|error| internal(&error))?
                .is_some() =>
            {
                f32::from(tractor_model::int8_linear::MAX_7BIT)
            }
            _ => 127.0,
        };
        let shape = weights.shape().to_vec();
        let axis = channel_axis(&model, id, shape.len());
        let view = weights
            .to_plain_array_view::<f32>()
            .map_err(|error| internal(&error))?;
        let channels = shape[axis];
        let mut scales = vec![0f32; channels];
        for (channel, scale) in scales.iter_mut().enumerate() {
            let lane = view.index_axis(tract_ndarray::Axis(axis), channel);
            let max = lane
                .iter()
                .fold(0f32, |largest, value| largest.max(value.abs()));
            *scale = if max > 0.0 { max / levels } else { 1.0 };
        }
        let mut quantized = tract_ndarray::ArrayD::<i8>::zeros(shape.clone());
        for (ix, value) in view.indexed_iter() {
            let channel_scale = scales[ix[axis]];
            quantized[&ix] = (value / channel_scale).round().clamp(-levels, levels) as i8;
        }
        let mut scale_shape = vec![1usize; shape.len()];
        scale_shape[axis] = channels;
        let scale_t =
            Tensor::from_shape(&scale_shape, &scales).map_err(|error| internal(&error))?;
        let mut patch = TypedModelPatch::default();
        let qw = patch
            .add_const(format!("{name}.q8"), quantized.into_tensor())
            .map_err(|error| internal(&error))?;
        let sw = patch
            .add_const(format!("{name}.scale"), scale_t)
            .map_err(|error| internal(&error))?;
        let out = patch
            .wire_node(format!("{name}.dequant"), DequantI8, &[qw, sw])
            .map_err(|error| internal(&error))?[0];
        patch
            .shunt_outside(&model, OutletId::new(id, 0), out)
            .map_err(|error| internal(&error))?;
        patch.apply(&mut model).map_err(|error| internal(&error))?;
    }
    model.into_compact().map_err(|error| internal(&error))
}

/// Zero the `sparsity` fraction of each weight tensor's entries with the smallest magnitudes (ties broken by
/// position, so the result is deterministic). Returns the model and the fraction of weight entries now zero.
pub fn prune(model: &TypedModel, sparsity: f64) -> Result<(TypedModel, f64), OptError> {
    let mut model = model.clone();
    let (mut zeros, mut total) = (0usize, 0usize);
    for id in weight_nodes(&model) {
        let Some(konst) = model.node(id).op_as::<Const>() else {
            continue;
        };
        let mut w = konst.val().clone().into_tensor();
        let mut view = w.try_as_plain_ram_mut().map_err(|e| internal(&e))?;
        let data: &mut [f32] = view.as_slice_mut::<f32>().map_err(|e| internal(&e))?;
        let k = ((data.len() as f64) * sparsity).floor() as usize;
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.sort_by(|a, b| data[*a].abs().total_cmp(&data[*b].abs()).then(a.cmp(b)));
        for ix in order.into_iter().take(k) {
            data[ix] = 0.0;
        }
        zeros += data.iter().filter(|v| **v == 0.0).count();
        total += data.len();
        let konst = Const::new(w.into_arc_tensor()).map_err(|e| internal(&e))?;
        model.node_mut(id).op = Box::new(konst);
    }
    let achieved = if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    };
    Ok((model, achieved))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest stored integer of each `DequantI8`'s weights, by the weight's name.
    fn largest_stored(model: &TypedModel) -> Vec<(String, i32)> {
        let mut found: Vec<(String, i32)> = model
            .nodes()
            .iter()
            .filter(|node| node.op_is::<DequantI8>())
            .filter_map(|node| {
                let q = model
                    .node(node.inputs[0].node)
                    .op_as::<Const>()?
                    .val()
                    .clone();
                let largest = q
                    .to_plain_array_view::<i8>()
                    .ok()?
                    .iter()
                    .map(|v| i32::from(*v).abs())
                    .max()?;
                Some((node.name.clone(), largest))
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn weights_the_integer_kernel_runs_are_stored_in_seven_bits() -> TractResult<()> {
        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact([4, 32]))?;
        let ramp = |len: usize, shift: f32| -> Vec<f32> {
            (0..len)
                .map(|ix| (ix as f32 * 0.37 + shift).sin())
                .collect()
        };
        // A plain dense layer: the integer kernel takes it.
        let dense = model.add_const("dense", Tensor::from_shape(&[32, 16], &ramp(512, 0.0))?)?;
        let hidden = model.wire_node(
            "mm",
            EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
            &[input, dense],
        )?[0];
        // One weight read by two matmuls: folded to f32 at load, so it keeps 8 bits.
        let shared = model.add_const("shared", Tensor::from_shape(&[16, 16], &ramp(256, 1.0))?)?;
        let first = model.wire_node(
            "a",
            EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
            &[hidden, shared],
        )?[0];
        let second = model.wire_node(
            "b",
            EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
            &[first, shared],
        )?[0];
        model.select_output_outlets(&[second])?;
        let quantized = int8_weights(&model).map_err(|error| format_err!("{}", error.message))?;
        assert_eq!(
            largest_stored(&quantized),
            [
                ("dense.dequant".to_owned(), 63),
                ("shared.dequant".to_owned(), 127)
            ]
        );
        Ok(())
    }
}
