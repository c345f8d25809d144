//! ai.onnx.ml `Scaler` (opset 1, ONNX Operators-ml.md): `Y = (X - offset) * scale`, offset and scale of one
//! value or one per feature, output float. Wired as tract's own Sub and Mul, so it optimizes and serializes
//! like any arithmetic.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::{cast::cast, math};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity,
};

use super::attr_f32s;

#[derive(Debug, Clone)]
pub(crate) struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

/// Reads an ONNX `Scaler` node.
pub(crate) fn scaler(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<Scaler> {
    let mut offset = attr_f32s(node, "offset")?;
    let mut scale = attr_f32s(node, "scale")?;
    // The spec gives no defaults; onnxruntime reads a missing one as identity.
    if offset.is_empty() {
        offset.push(0.0);
    }
    if scale.is_empty() {
        scale.push(1.0);
    }
    Ok(Scaler { offset, scale })
}

/// A constant of one value or `[1, C]`, to broadcast over `[N, C]`.
fn per_feature(v: &[f32], rank: usize) -> TractResult<Tensor> {
    let mut shape = vec![1usize; rank.max(1)];
    if v.len() > 1 {
        *shape.last_mut().unwrap_or(&mut 0) = v.len();
    }
    tensor1(v).into_shape(&shape)
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        let rank = fact.rank();
        if let Some(width) = fact.shape.last().and_then(|d| d.to_usize().ok()) {
            for (name, v) in [("offset", &self.offset), ("scale", &self.scale)] {
                ensure!(
                    v.len() == 1 || v.len() == width,
                    "Scaler {name} has {} values for {width} features",
                    v.len()
                );
            }
        }
        let mut x = inputs[0];
        if fact.datum_type != f32::datum_type() {
            x = model.wire_node(format!("{prefix}.cast"), cast(f32::datum_type()), &[x])?[0];
        }
        let offset =
            model.add_const(format!("{prefix}.offset"), per_feature(&self.offset, rank)?)?;
        let scale = model.add_const(format!("{prefix}.scale"), per_feature(&self.scale, rank)?)?;
        let centered = model.wire_node(format!("{prefix}.sub"), math::sub(), &[x, offset])?[0];
        model.wire_node(prefix, math::mul(), &[centered, scale])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tract_onnx::tract_hir::internal::Expansion;

    #[test]
    fn scales_per_feature_as_the_spec_says() {
        let op = Scaler {
            offset: vec![1.0, -2.0],
            scale: vec![0.5, 3.0],
        };
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 2])).unwrap();
        let y = op.wire("scaler", &mut model, &[x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec!(tensor2(&[[3f32, 0.0], [1.0, 1.0]]).into_tvalue()))
            .unwrap();
        // (3-1)*0.5, (0+2)*3; (1-1)*0.5, (1+2)*3
        assert_eq!(*out[0], tensor2(&[[1f32, 6.0], [0.0, 9.0]]));
    }
}
