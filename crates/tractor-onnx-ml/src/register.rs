//! How an operator is registered with tract, written once: a [`Registration`] row per ONNX op type (the
//! [`registrations!`] table builds each row's builder), and, for the ops that store their parameters as tensors of an
//! NNEF primitive (tree ensembles, SVMs), the [`Predictor`] trait that [`OnnxPredictor`] and [`register_nnef`] turn
//! into an ONNX expansion and an NNEF primitive with its dumper and loader.

use tract_nnef::internal::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::infer::InferenceOp;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity,
};

/// Builds the tract op of one ONNX node (tract's `OpBuilder`).
pub(crate) type Builder =
    fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// One ai.onnx.ml operator tractor runs: its ONNX op type, the builder tract's loader calls for its nodes, and what
/// the coverage table says about it.
pub(crate) struct Registration {
    /// The ONNX op type.
    pub(crate) op: &'static str,
    /// Reads one node into a tract op.
    pub(crate) build: Builder,
    /// The coverage table's note.
    pub(crate) note: &'static str,
}

/// The registration table: `"OpType" => reader, "note";` per operator, where `reader(ctx, node)` parses the node's
/// attributes into a tract `Expansion`; the macro wraps it into the [`Builder`] tract's loader calls.
macro_rules! registrations {
    ($($op:literal => $read:path, $note:literal;)+) => {
        &[$(
            $crate::register::Registration {
                op: $op,
                build: |ctx, node| {
                    let op = $read(ctx, node)?;
                    Ok((tract_onnx::tract_hir::internal::expand(op), vec![]))
                },
                note: $note,
            },
        )+]
    };
}
pub(crate) use registrations;

/// A typed op that predicts from `[N, features]` rows (labels then scores for a classifier, scores for a
/// regressor) and stores its parameters as named tensors and two string attributes of one NNEF primitive.
/// What differs between the tree ensemble and the SVM is here; [`OnnxPredictor`] and [`register_nnef`] do the rest.
pub(crate) trait Predictor: TypedOp + Clone {
    /// The NNEF primitive's name.
    const NNEF_ID: &'static str;
    /// The parameter tensors' names, in the primitive's order.
    const TENSORS: &'static [&'static str];
    /// The two string attributes' names.
    const STRINGS: [&'static str; 2];

    /// Whether the op returns labels before its scores.
    fn is_classifier(&self) -> bool;

    /// Number of score columns.
    fn n_scores(&self) -> usize;

    /// The parameter tensors, named as in [`Self::TENSORS`].
    fn to_tensors(&self) -> TractResult<Vec<(&'static str, Arc<Tensor>)>>;

    /// The string attributes' values, in [`Self::STRINGS`]' order.
    fn strings(&self) -> [&'static str; 2];

    /// The op back from its tensors (`tensor(name)`) and string attributes.
    fn from_nnef(
        tensor: &dyn Fn(&str) -> TractResult<Arc<Tensor>>,
        strings: [&str; 2],
    ) -> TractResult<Self>;
}

/// The ONNX-side op of a [`Predictor`]: types the outputs, then wires the typed op.
#[derive(Debug, Clone)]
pub(crate) struct OnnxPredictor<P>(pub(crate) P);

impl<P: Predictor> Expansion for OnnxPredictor<P> {
    fn name(&self) -> StaticName {
        self.0.name()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.is_classifier() { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        let scores = if self.0.is_classifier() {
            check_output_arity(outputs, 2)?;
            s.equals(&outputs[0].datum_type, i64::datum_type())?;
            s.equals(&outputs[0].rank, 1)?;
            s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
            &outputs[1]
        } else {
            check_output_arity(outputs, 1)?;
            &outputs[0]
        };
        s.equals(&scores.datum_type, f32::datum_type())?;
        s.equals(&scores.rank, 2)?;
        s.equals(&scores.shape[0], &inputs[0].shape[0])?;
        s.equals(&scores.shape[1], self.0.n_scores().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// Declare `P`'s NNEF primitive (input, parameter tensors, string attributes; outputs label and scores), its dumper
/// and its loader.
pub(crate) fn register_nnef<P: Predictor>(registry: &mut Registry) {
    let mut params = vec![TypeName::Scalar.tensor().named("input")];
    for name in P::TENSORS {
        params.push(TypeName::Scalar.tensor().named(*name));
    }
    for name in P::STRINGS {
        params.push(TypeName::String.named(name));
    }
    registry.register_primitive(
        P::NNEF_ID,
        &params,
        &[
            ("label", TypeName::Integer.tensor()),
            ("scores", TypeName::Scalar.tensor()),
        ],
        nnef_load::<P>,
    );
    registry.register_dumper(nnef_dump::<P>);
}

fn nnef_dump<P: Predictor>(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &P,
) -> TractResult<Option<Arc<RValue>>> {
    let mut args = vec![ast.mapping[&node.inputs[0]].clone()];
    for (name, tensor) in op.to_tensors()? {
        args.push(ast.konst_variable(format!("{}_{name}", node.name), &tensor)?);
    }
    let [first, second] = P::STRINGS;
    let [first_value, second_value] = op.strings();
    Ok(Some(invocation(
        P::NNEF_ID,
        &args,
        &[(first, string(first_value)), (second, string(second_value))],
    )))
}

fn nnef_load<P: Predictor>(
    builder: &mut ModelBuilder,
    invocation: &ResolvedInvocation,
) -> TractResult<Value> {
    let input = invocation.named_arg_as(builder, "input")?;
    let mut tensors = HashMap::new();
    for name in P::TENSORS {
        let tensor: Arc<Tensor> = invocation.named_arg_as(builder, name)?;
        tensors.insert(*name, tensor);
    }
    let tensor = |name: &str| -> TractResult<Arc<Tensor>> {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| format_err!("missing {name}"))
    };
    let [first, second] = P::STRINGS;
    let first: String = invocation.named_arg_as(builder, first)?;
    let second: String = invocation.named_arg_as(builder, second)?;
    let op = P::from_nnef(&tensor, [&first, &second])?;
    builder.wire(op, &[input])
}
