//! ai.onnx.ml `ZipMap` (opset 1, ONNX Operators-ml.md) turns a `[N, C]` probability tensor into a sequence of
//! maps, which the Open Inference Protocol cannot carry. skl2onnx puts one after every classifier by default,
//! so instead of refusing those models we serve the tensor that feeds it, under the ZipMap's output name, and
//! the loader records [`ZIPMAP_NOTE`] in the model's properties so metadata and `tractor inspect` say so.

use tract_nnef::internal::*;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity,
};

/// What a model that ended in ZipMap is told (no quotes or newlines: it is written into NNEF as a literal).
pub const ZIPMAP_NOTE: &str = "ZipMap removed: its output is served as the [N, classes] probability tensor that \
fed it, columns in class-label order; to export exactly this model, convert with the skl2onnx option zipmap=False";

#[derive(Debug, Clone)]
pub(crate) struct ZipMap;

/// Reads an ONNX `ZipMap` node.
pub(crate) fn zipmap(
    _ctx: &tract_onnx::model::ParsingContext,
    _node: &NodeProto,
) -> TractResult<ZipMap> {
    Ok(ZipMap)
}

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        _prefix: &str,
        _model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        Ok(inputs.into())
    }
}
