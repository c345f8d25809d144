//! Feature selection: ai.onnx.ml `ArrayFeatureExtractor` (opset 1, ONNX Operators-ml.md) with onnxruntime's
//! shapes, which tract's gets wrong for the scalar indices skl2onnx emits after an SVC: the output is always
//! `X.shape[:-1] + [number of indices]` (`[1, k]` for a rank-1 X), indices read flattened.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::array::Gather;
use tract_nnef::tract_core::ops::change_axes::AxisOp;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity,
};

#[derive(Debug, Clone)]
pub(crate) struct ArrayFeatureExtractor;

/// Reads an ONNX `ArrayFeatureExtractor` node.
pub(crate) fn array_feature_extractor(
    _ctx: &tract_onnx::model::ParsingContext,
    _node: &NodeProto,
) -> TractResult<ArrayFeatureExtractor> {
    Ok(ArrayFeatureExtractor)
}

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, indices| {
            let k: TDim = indices.iter().product();
            let mut shape: TVec<TDim> = if x.len() <= 1 {
                tvec![1.to_dim()]
            } else {
                x[..x.len() - 1].into()
            };
            shape.push(k);
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut input = inputs[0];
        if model.outlet_fact(input)?.rank() == 1 {
            input = model.wire_node(format!("{prefix}.row"), AxisOp::Add(0), &[input])?[0];
        }
        let fact = model.outlet_fact(inputs[1])?.clone();
        let mut indices = inputs[1];
        if let Some(constant) = &fact.konst {
            let flat = constant
                .clone()
                .into_tensor()
                .into_shape(&[constant.len()])?;
            indices = model.add_const(format!("{prefix}.indices"), flat)?;
        } else {
            match fact.rank() {
                0 => {
                    indices =
                        model.wire_node(format!("{prefix}.indices"), AxisOp::Add(0), &[indices])?[0]
                }
                1 => {}
                // skl2onnx's classifiers map `ArgMax(keepdims)` ([N, 1]) to labels this way; indices read flattened.
                _ => {
                    let flat = tvec![fact.shape.volume()];
                    indices = model.wire_node(
                        format!("{prefix}.indices"),
                        AxisOp::Reshape(0, fact.shape.to_tvec(), flat),
                        &[indices],
                    )?[0]
                }
            }
        }
        let axis = model.outlet_fact(input)?.rank() - 1;
        model.wire_node(
            prefix,
            Gather {
                axis,
                output_type: None,
            },
            &[input, indices],
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(x: Tensor, indices: Tensor) -> Tensor {
        let mut model = TypedModel::default();
        let xs = model.add_source("x", f32::fact(x.shape())).unwrap();
        let i = model.add_const("i", indices).unwrap();
        let y = ArrayFeatureExtractor
            .wire("afe", &mut model, &[xs, i])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec!(x.into_tvalue()))
            .unwrap();
        out[0].clone().into_tensor()
    }

    #[test]
    fn scalar_index_keeps_the_last_axis() {
        let y = run(tensor2(&[[1f32, 2., 3.], [4., 5., 6.]]), tensor0(2i64));
        assert_eq!(y, tensor2(&[[3f32], [6.]]));
    }

    #[test]
    fn rank1_input_gives_one_row() {
        let y = run(tensor1(&[1f32, 2., 3.]), tensor1(&[2i64, 0]));
        assert_eq!(y, tensor2(&[[3f32, 1.]]));
    }
}
