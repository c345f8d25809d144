//! `TractorDequantI8`: int8 weights times a per-channel f32 scale, kept as an op in the artifact so the weights
//! stay one byte each on disk; when a loader declutters the model, each matmul it feeds becomes an integer
//! [`crate::int8_linear::Int8Linear`], and any other use folds into an f32 constant.
//!
//! Why an op of our own: a plain `cast` + `mul` on constants is constant-folded by tract before the NNEF writer
//! sees it, which stored the weights as f32 again (no size gain). This op refuses evaluation outside a plan, so
//! nothing folds it before it is written, and its `declutter` replaces or folds it once the archive is read back.

use tract_nnef::internal::*;

/// The op's name in NNEF graphs (extension `tractor_quant`).
const NNEF_ID: &str = "tractor_dequant_i8";

/// `out[i] = q[i] as f32 * scale[i]` with `scale` broadcast (one value per output channel).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DequantI8;

impl Op for DequantI8 {
    fn name(&self) -> StaticName {
        "TractorDequantI8".into()
    }
    op_as_typed_op!();
}

impl EvalOp for DequantI8 {
    // Not evaluable out of a plan: that is what keeps tract's const folding from writing f32 weights.
    not_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, scale) = args_2!(inputs);
        Ok(tvec!(dequantize(&q, &scale)?.into_tvalue()))
    }
}

/// `q · scale` as f32, `scale` broadcast along `q`.
pub(crate) fn dequantize(q: &Tensor, scale: &Tensor) -> TractResult<Tensor> {
    let q = q.to_plain_array_view::<i8>()?;
    let scale = scale.to_plain_array_view::<f32>()?;
    let scale = scale.broadcast(q.shape()).ok_or_else(|| {
        format_err!(
            "scale {:?} does not broadcast to {:?}",
            scale.shape(),
            q.shape()
        )
    })?;
    let mut out = tract_ndarray::ArrayD::<f32>::zeros(q.shape());
    tract_ndarray::Zip::from(&mut out)
        .and(&q)
        .and(&scale)
        .for_each(|o, q, s| *o = f32::from(*q) * s);
    Ok(out.into_tensor())
}

impl TypedOp for DequantI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == i8::datum_type(),
            "quantized weights must be i8"
        );
        ensure!(
            inputs[1].datum_type == f32::datum_type(),
            "scales must be f32"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn declutter(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        let (Some(q), Some(scale)) = (
            model.outlet_fact(node.inputs[0])?.konst.clone(),
            model.outlet_fact(node.inputs[1])?.konst.clone(),
        ) else {
            return Ok(None);
        };
        // A matmul the integer kernel takes runs on it; anything else keeps f32 weights, as before.
        if let Some(patch) = crate::int8_linear::replace_matmul(model, node, &q, &scale)? {
            return Ok(Some(patch));
        }
        let weights = dequantize(&q, &scale)?;
        let mut patch = TypedModelPatch::default();
        let folded = patch.add_const(&node.name, weights)?;
        patch.shunt_outside(model, node.id.into(), folded)?;
        Ok(Some(patch))
    }

    as_op!();
}

/// The NNEF extension that stores [`DequantI8`] in artifacts.
pub fn nnef_registry() -> tract_nnef::internal::Registry {
    let mut registry = tract_nnef::internal::Registry::new("tractor_quant").with_doc(
        "Extension `tractor_quant`: int8 weights with per-channel f32 scales, run on the integer kernel or dequantized at load.",
    );
    registry.register_primitive(
        NNEF_ID,
        &[
            TypeName::Integer.tensor().named("weights"),
            TypeName::Scalar.tensor().named("scale"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        load,
    );
    registry.register_dumper(dump);
    registry
}

fn dump(ast: &mut IntoAst, node: &TypedNode, _op: &DequantI8) -> TractResult<Option<Arc<RValue>>> {
    let weights = ast.mapping[&node.inputs[0]].clone();
    let scale = ast.mapping[&node.inputs[1]].clone();
    Ok(Some(invocation(NNEF_ID, &[weights, scale], &[])))
}

fn load(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let weights = invocation.named_arg_as(builder, "weights")?;
    let scale = invocation.named_arg_as(builder, "scale")?;
    builder.wire(DequantI8, &[weights, scale])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantizes_per_channel_and_folds_on_declutter() -> TractResult<()> {
        let mut model = TypedModel::default();
        let q = model.add_const("q", tensor2(&[[1i8, -2], [127, 0]]))?;
        let s = model.add_const("s", tensor2(&[[0.5f32, 0.25]]))?;
        let w = model.wire_node("w", DequantI8, &[q, s])?[0];
        // Not folded when wired: this is what keeps the weights int8 in the written archive.
        assert!(model.outlet_fact(w)?.konst.is_none());
        model.select_output_outlets(&[w])?;
        let decluttered = model.into_decluttered()?;
        let out = decluttered.outlet_fact(decluttered.outputs[0])?;
        let folded = out.konst.clone().expect("folded into a constant");
        assert_eq!(*folded, tensor2(&[[0.5f32, -0.5], [63.5, 0.0]]));
        Ok(())
    }
}
