//! Frozen TensorFlow graphs before tract reads them: constants written in TensorFlow's short form made whole.

use tract_tensorflow::tfpb::tensorflow::attr_value::Value;
use tract_tensorflow::tfpb::tensorflow::{DataType, GraphDef, TensorProto};

/// TensorFlow writes a constant's values as a repeated field that may stop early: the last value repeats to the
/// tensor's size, and a tensor of zeros (a `0.0` scalar, as Keras' Rescaling leaves) has no value at all.
/// tract-tensorflow 0.23.9 takes one value or all of them and fails on the rest with a shape error, so the fields
/// are completed here, as TensorFlow's own reader (`MakeNdarray`) completes them.
pub(crate) fn complete_constants(graph: &mut GraphDef) {
    for node in graph.node.iter_mut().filter(|node| node.op == "Const") {
        if let Some(Value::Tensor(tensor)) = node
            .attr
            .get_mut("value")
            .and_then(|attr| attr.value.as_mut())
        {
            complete(tensor);
        }
    }
}

/// One constant's values completed to its size; a tensor given as raw bytes, or of a shape with an unknown
/// size, is left alone.
fn complete(tensor: &mut TensorProto) {
    if !tensor.tensor_content.is_empty() {
        return;
    }
    let Some(shape) = &tensor.tensor_shape else {
        return;
    };
    let Ok(len) = shape
        .dim
        .iter()
        .map(|dim| usize::try_from(dim.size))
        .product::<Result<usize, _>>()
    else {
        return;
    };
    let dtype = tensor.dtype;
    if dtype == DataType::DtFloat as i32 {
        fill(&mut tensor.float_val, len);
    } else if dtype == DataType::DtDouble as i32 {
        fill(&mut tensor.double_val, len);
    } else if dtype == DataType::DtInt32 as i32 {
        fill(&mut tensor.int_val, len);
    } else if dtype == DataType::DtInt64 as i32 {
        fill(&mut tensor.int64_val, len);
    }
}

/// `values` repeated to `len` by its last value, or zeros when empty; one value stays one (tract fills from it).
fn fill<T: Copy + Default>(values: &mut Vec<T>, len: usize) {
    if values.len() == 1 || values.len() >= len {
        return;
    }
    let last = values.last().copied().unwrap_or_default();
    values.resize(len, last);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_repeated_fields_are_completed_as_tensorflow_reads_them() {
        let cases: [(Vec<f32>, usize, Vec<f32>); 5] = [
            (vec![], 1, vec![0.0]),
            (vec![], 3, vec![0.0; 3]),
            (vec![2.5], 4, vec![2.5]),
            (vec![1.0, 2.0], 4, vec![1.0, 2.0, 2.0, 2.0]),
            (vec![1.0, 2.0, 3.0], 3, vec![1.0, 2.0, 3.0]),
        ];
        for (given, len, want) in cases {
            let mut values = given.clone();
            fill(&mut values, len);
            assert_eq!(values, want, "{given:?} to {len}");
        }
    }
}
