//! The small preprocessing ops of ai.onnx.ml (ONNX Operators-ml.md): `Binarizer` (opset 1), `Imputer` (opset 1),
//! `OneHotEncoder` (opset 1, integer categories), `LabelEncoder` (opsets 2–4, numeric keys and values) and
//! `FeatureVectorizer` (opset 1). Each is wired as tract core ops (comparisons, casts, selects, sums, concat), so it
//! runs over the whole batch, optimizes and serializes to NNEF like any arithmetic. Where the spec leaves a case
//! open, onnxruntime decides: a float fed to OneHotEncoder is truncated to an integer, a LabelEncoder miss gives the
//! default, an unknown category gives a row of zeros.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::array::{Slice, TypedConcat};
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::cast::cast;
use tract_nnef::tract_core::ops::change_axes::{AxisOp, wire_with_rank_broadcast};
use tract_nnef::tract_core::ops::logic::{Iff, comp_eq, comp_gt};
use tract_nnef::tract_core::ops::math;
use tract_nnef::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity,
};

use super::{attr_f32s, attr_i64s};

/// `x` as `dt`, through a cast only when needed.
fn as_type(
    model: &mut TypedModel,
    name: String,
    x: OutletId,
    dt: DatumType,
) -> TractResult<OutletId> {
    if model.outlet_fact(x)?.datum_type == dt {
        Ok(x)
    } else {
        Ok(model.wire_node(name, cast(dt), &[x])?[0])
    }
}

/// Compare every element of `x` with each of `keys`: `[..., K]` booleans.
fn matches(
    prefix: &str,
    model: &mut TypedModel,
    x: OutletId,
    keys: Tensor,
) -> TractResult<OutletId> {
    let rank = model.outlet_fact(x)?.rank();
    let expanded = model.wire_node(format!("{prefix}.expand"), AxisOp::Add(rank), &[x])?[0];
    let keys = model.add_const(format!("{prefix}.keys"), keys)?;
    Ok(wire_with_rank_broadcast(
        format!("{prefix}.eq"),
        model,
        TypedBinOp(comp_eq(), None),
        &[expanded, keys],
    )?[0])
}

// ---------------------------------------------------------------- Binarizer

#[derive(Debug, Clone)]
pub(crate) struct Binarizer {
    threshold: f32,
}

/// Reads an ONNX `Binarizer` node: `1` where `X > threshold`, else `0`, in X's type.
pub(crate) fn binarizer(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<Binarizer> {
    let threshold = node.get_attr_opt::<f32>("threshold")?.unwrap_or(0.0);
    Ok(Binarizer { threshold })
}

impl Expansion for Binarizer {
    fn name(&self) -> StaticName {
        "Binarizer".into()
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
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        let threshold = tensor0(self.threshold).cast_to_dt(dt)?.into_owned();
        let threshold = model.add_const(format!("{prefix}.threshold"), threshold)?;
        let above = wire_with_rank_broadcast(
            format!("{prefix}.gt"),
            model,
            TypedBinOp(comp_gt(), None),
            &[inputs[0], threshold],
        )?[0];
        model.wire_node(prefix, cast(dt), &[above])
    }
}

// ---------------------------------------------------------------- Imputer

#[derive(Debug, Clone)]
pub(crate) struct Imputer {
    /// One value for all features or one per feature.
    values: Tensor,
    /// The value to replace; NaN for missing values.
    replaced: Tensor,
}

/// Reads an ONNX `Imputer` node.
pub(crate) fn imputer(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<Imputer> {
    let floats = attr_f32s(node, "imputed_value_floats")?;
    let ints = attr_i64s(node, "imputed_value_int64s")?;
    let (values, replaced) = if !floats.is_empty() {
        let r = node
            .get_attr_opt::<f32>("replaced_value_float")?
            .unwrap_or(f32::NAN);
        (tensor1(&floats), tensor0(r))
    } else if !ints.is_empty() {
        let r = node
            .get_attr_opt::<i64>("replaced_value_int64")?
            .unwrap_or(0);
        (tensor1(&ints), tensor0(r))
    } else {
        bail!("Imputer needs imputed_value_floats or imputed_value_int64s");
    };
    Ok(Imputer { values, replaced })
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
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
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let input = inputs[0];
        let fact = model.outlet_fact(input)?.clone();
        let dt = fact.datum_type;
        if let Some(width) = fact.shape.last().and_then(|dim| dim.to_usize().ok()) {
            ensure!(
                self.values.len() == 1 || self.values.len() == width,
                "Imputer has {} values for {width} features",
                self.values.len()
            );
        }
        let missing = if self.replaced.datum_type().is_float()
            && self.replaced.cast_to_scalar::<f32>()?.is_nan()
        {
            model.wire_node(format!("{prefix}.isnan"), math::is_nan(), &[input])?[0]
        } else {
            let replaced = self.replaced.cast_to_dt(dt)?.into_owned();
            let replaced = model.add_const(format!("{prefix}.replaced"), replaced)?;
            wire_with_rank_broadcast(
                format!("{prefix}.eq"),
                model,
                TypedBinOp(comp_eq(), None),
                &[input, replaced],
            )?[0]
        };
        let values = self.values.cast_to_dt(dt)?.into_owned();
        let values = model.add_const(format!("{prefix}.values"), values)?;
        wire_with_rank_broadcast(prefix, model, Iff, &[missing, values, input])
    }
}

// ---------------------------------------------------------------- OneHotEncoder

#[derive(Debug, Clone)]
pub(crate) struct OneHotEncoder {
    categories: Vec<i64>,
}

/// Reads an ONNX `OneHotEncoder` node (integer categories).
pub(crate) fn one_hot_encoder(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<OneHotEncoder> {
    let categories = attr_i64s(node, "cats_int64s")?;
    ensure!(
        !categories.is_empty(),
        "OneHotEncoder with string categories is not supported (string tensors have no OIP numeric form)"
    );
    Ok(OneHotEncoder { categories })
}

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
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
        s.given(&inputs[0].rank, move |s, r| {
            s.equals(&outputs[0].rank, r + 1)
        })?;
        let k = self.categories.len();
        s.given(&inputs[0].shape, move |s, shape| {
            let mut out = shape.clone();
            out.push(k.to_dim());
            s.equals(&outputs[0].shape, out)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = as_type(
            model,
            format!("{prefix}.as_i64"),
            inputs[0],
            i64::datum_type(),
        )?;
        let hits = matches(prefix, model, x, tensor1(&self.categories))?;
        model.wire_node(prefix, cast(f32::datum_type()), &[hits])
    }
}

// ---------------------------------------------------------------- LabelEncoder

#[derive(Debug, Clone)]
pub(crate) struct LabelEncoder {
    keys: Tensor,
    values: Tensor,
    default: Tensor,
}

/// Reads an ONNX `LabelEncoder` node with numeric keys and values (opset 2 attributes or opset 4 tensors).
pub(crate) fn label_encoder(
    ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<LabelEncoder> {
    let strings = [
        "keys_strings",
        "values_strings",
        "classes_strings",
        "default_string",
    ];
    if let Some(attribute) = node
        .attribute
        .iter()
        .find(|attribute| strings.contains(&attribute.name.as_str()))
    {
        bail!(
            "LabelEncoder with strings ({}) is not supported: only numeric keys and values",
            attribute.name
        );
    }
    let tensor_attr = |name: &str| -> TractResult<Option<Tensor>> {
        node.get_attr_opt::<&tract_onnx::pb::TensorProto>(name)?
            .map(|tensor| ctx.load_tensor(tensor))
            .transpose()
    };
    let keys = if let Some(tensor) = tensor_attr("keys_tensor")? {
        tensor
    } else if !attr_i64s(node, "keys_int64s")?.is_empty() {
        tensor1(&attr_i64s(node, "keys_int64s")?)
    } else {
        tensor1(&attr_f32s(node, "keys_floats")?)
    };
    let values = if let Some(tensor) = tensor_attr("values_tensor")? {
        tensor
    } else if !attr_i64s(node, "values_int64s")?.is_empty() {
        tensor1(&attr_i64s(node, "values_int64s")?)
    } else {
        tensor1(&attr_f32s(node, "values_floats")?)
    };
    ensure!(
        keys.len() == values.len() && keys.len() > 0,
        "LabelEncoder needs as many keys as values"
    );
    let default = if let Some(tensor) = tensor_attr("default_tensor")? {
        tensor
            .cast_to_dt(values.datum_type())?
            .into_owned()
            .into_shape(&[])?
    } else if values.datum_type().is_float() {
        tensor0(node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0))
            .cast_to_dt(values.datum_type())?
            .into_owned()
    } else {
        tensor0(node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1))
            .cast_to_dt(values.datum_type())?
            .into_owned()
    };
    Ok(LabelEncoder {
        keys,
        values,
        default,
    })
}

impl Expansion for LabelEncoder {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.values.datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        // y = sum_k [x == key_k] * value_k + (1 - sum_k [x == key_k]) * default; keys are distinct.
        let vt = self.values.datum_type();
        let input = as_type(
            model,
            format!("{prefix}.as_key"),
            inputs[0],
            self.keys.datum_type(),
        )?;
        let rank = model.outlet_fact(input)?.rank();
        let hits = matches(prefix, model, input, self.keys.clone())?;
        let hits = model.wire_node(format!("{prefix}.hits"), cast(vt), &[hits])?[0];
        let values = model.add_const(format!("{prefix}.values"), self.values.clone())?;
        let picked = wire_with_rank_broadcast(
            format!("{prefix}.pick"),
            model,
            math::mul(),
            &[hits, values],
        )?[0];
        let sum =
            |model: &mut TypedModel, name: String, outlet: OutletId| -> TractResult<OutletId> {
                let reduced = model.wire_node(
                    format!("{name}.sum"),
                    Reduce {
                        axes: tvec![rank],
                        reducer: Reducer::Sum,
                    },
                    &[outlet],
                )?[0];
                Ok(model.wire_node(name, AxisOp::Rm(rank), &[reduced])?[0])
            };
        let found_value = sum(model, format!("{prefix}.found_value"), picked)?;
        let found = sum(model, format!("{prefix}.found"), hits)?;
        let one = model.add_const(
            format!("{prefix}.one"),
            tensor0(1i64).cast_to_dt(vt)?.into_owned(),
        )?;
        let missing = wire_with_rank_broadcast(
            format!("{prefix}.missing"),
            model,
            math::sub(),
            &[one, found],
        )?[0];
        let default = model.add_const(format!("{prefix}.default"), self.default.clone())?;
        let fallback = wire_with_rank_broadcast(
            format!("{prefix}.fallback"),
            model,
            math::mul(),
            &[missing, default],
        )?[0];
        wire_with_rank_broadcast(prefix, model, math::add(), &[found_value, fallback])
    }
}

// ---------------------------------------------------------------- FeatureVectorizer

#[derive(Debug, Clone)]
pub(crate) struct FeatureVectorizer {
    dims: Vec<usize>,
}

/// Reads an ONNX `FeatureVectorizer` node.
pub(crate) fn feature_vectorizer(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<FeatureVectorizer> {
    let dims = attr_i64s(node, "inputdimensions")?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format_err!("negative inputdimensions")))
        .collect::<TractResult<Vec<_>>>()?;
    ensure!(
        dims.len() == node.input.len(),
        "FeatureVectorizer has {} inputs and {} inputdimensions",
        node.input.len(),
        dims.len()
    );
    Ok(FeatureVectorizer { dims })
}

impl Expansion for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "FeatureVectorizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.dims.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(
            &outputs[0].shape[1],
            self.dims.iter().sum::<usize>().to_dim(),
        )
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut parts = tvec![];
        for (ix, (input, dim)) in inputs.iter().zip(&self.dims).enumerate() {
            let mut part = as_type(
                model,
                format!("{prefix}.{ix}.as_f32"),
                *input,
                f32::datum_type(),
            )?;
            if model.outlet_fact(part)?.rank() == 1 {
                part =
                    model.wire_node(format!("{prefix}.{ix}.column"), AxisOp::Add(1), &[part])?[0];
            }
            let width = model.outlet_fact(part)?.shape[1].to_usize()?;
            if width > *dim {
                part = model.wire_node(
                    format!("{prefix}.{ix}.truncate"),
                    Slice {
                        axis: 1,
                        start: 0.to_dim(),
                        end: dim.to_dim(),
                    },
                    &[part],
                )?[0];
            } else if width < *dim {
                bail!(
                    "FeatureVectorizer input {ix} has {width} columns, fewer than its {dim} inputdimensions"
                );
            }
            parts.push(part);
        }
        model.wire_node(prefix, TypedConcat { axis: 1 }, &parts)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(op: &dyn Expansion, inputs: Vec<Tensor>) -> Tensor {
        let mut model = TypedModel::default();
        let sources: Vec<OutletId> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                model
                    .add_source(format!("x{i}"), TypedFact::shape_and_dt_of(t))
                    .unwrap()
            })
            .collect();
        let y = op.wire("op", &mut model, &sources).unwrap();
        model.select_output_outlets(&y).unwrap();
        let out = model
            .into_runnable()
            .unwrap()
            .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
            .unwrap();
        out[0].clone().into_tensor()
    }

    #[test]
    fn binarizer_is_strictly_greater() {
        let y = run(
            &Binarizer { threshold: 0.5 },
            vec![tensor2(&[[0.5f32, 0.6, -1.0]])],
        );
        assert_eq!(y, tensor2(&[[0f32, 1.0, 0.0]]));
    }

    #[test]
    fn imputer_replaces_nan_per_feature_or_a_given_value() {
        let op = Imputer {
            values: tensor1(&[10f32, 20.0]),
            replaced: tensor0(f32::NAN),
        };
        let y = run(&op, vec![tensor2(&[[f32::NAN, 1.0], [2.0, f32::NAN]])]);
        assert_eq!(y, tensor2(&[[10f32, 1.0], [2.0, 20.0]]));
        let op = Imputer {
            values: tensor1(&[7i64]),
            replaced: tensor0(-1i64),
        };
        let y = run(&op, vec![tensor2(&[[-1i64, 3], [4, -1]])]);
        assert_eq!(y, tensor2(&[[7i64, 3], [4, 7]]));
    }

    #[test]
    fn one_hot_appends_an_axis_and_zeros_unknowns() {
        let op = OneHotEncoder {
            categories: vec![1, 5, 9],
        };
        let y = run(&op, vec![tensor2(&[[5f32], [2.0]])]);
        assert_eq!(y, tensor3(&[[[0f32, 1.0, 0.0]], [[0.0, 0.0, 0.0]]]));
    }

    #[test]
    fn label_encoder_maps_numbers_with_a_default() {
        let op = LabelEncoder {
            keys: tensor1(&[3i64, 7]),
            values: tensor1(&[0.5f32, 1.5]),
            default: tensor0(-2f32),
        };
        let y = run(&op, vec![tensor1(&[7i64, 3, 4])]);
        assert_eq!(y, tensor1(&[1.5f32, 0.5, -2.0]));
    }

    #[test]
    fn feature_vectorizer_concatenates_and_truncates() {
        let op = FeatureVectorizer { dims: vec![1, 2] };
        let y = run(
            &op,
            vec![
                tensor1(&[1i64, 2]),
                tensor2(&[[3f32, 4.0, 9.0], [5.0, 6.0, 9.0]]),
            ],
        );
        assert_eq!(y, tensor2(&[[1f32, 3.0, 4.0], [2.0, 5.0, 6.0]]));
    }
}
