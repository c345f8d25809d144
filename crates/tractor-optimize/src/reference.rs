//! Reference statistics for drift: recorded from the labelled set (its rows and its labels) and written as the
//! first entry of the artifact's tar. The format, the math and the digest rule are [`tractor_model::drift`]'s;
//! this module only feeds it the optimize step's data.
//!
//! The prediction reference is the labels' distribution, not the chosen candidate's predictions: the artifact's
//! bytes must be a function of the model, the recipe and the labelled set, so that a pod re-deriving it on
//! another CPU (where tract's kernels may round differently and flip a near-tie row's argmax) writes the same
//! digest. Served predictions are compared with the prior the model was evaluated against.

use std::io::Read;

use tract_nnef::internal::*;
use tractor_model::drift::{self, Predicted, Reference};

use super::eval::Dataset;
use super::{OptError, Reason, graph};

fn internal(message: impl Into<String>) -> OptError {
    OptError::new(Reason::Internal, message)
}

/// The reference of `dataset` for the model's first input `input` (of datum type `input_type`): the rows as the
/// server will decode them (cast to the input's type, then to f64), and the labels as class ids, or as values
/// for a `regression` with one target per row.
pub fn record(
    input: &str,
    input_type: DatumType,
    dataset: &Dataset,
    regression: bool,
) -> Result<Reference, OptError> {
    let rows = dataset.x.shape().first().copied().unwrap_or(0);
    let served = dataset.x.cast_to_dt(input_type).map_err(|error| {
        internal(format!(
            "casting the labelled set to {input_type:?}: {error}"
        ))
    })?;
    let values = super::eval::values::<f64>(&served)
        .map_err(|error| internal(format!("the labelled set as f64: {error}")))?;
    let classes: Vec<i64>;
    let predicted = if !regression {
        classes = dataset.y.iter().map(|label| *label as i64).collect();
        Some(Predicted::Classes(&classes))
    } else if dataset.y.len() == rows {
        Some(Predicted::Values(&dataset.y))
    } else {
        // Several targets per row: no prediction bins.
        None
    };
    Reference::build(input, &values, rows, predicted)
        .map_err(|error| OptError::new(Reason::InvalidDataset, error))
}

/// The artifact `bytes` (gzipped tar, as [`graph::archive`] writes it) with `reference` as its first entry,
/// compressed by the same rule; checked to load back as a model and to read back as the same reference.
pub fn into_artifact(bytes: &[u8], reference: &Reference) -> Result<Vec<u8>, OptError> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut tar)
        .map_err(|error| internal(format!("reading the artifact back: {error}")))?;
    let tar = drift::prepend_to_tar(&tar, reference).map_err(internal)?;
    let artifact = graph::gzip_archive(&tar)?;
    // tract skips the entry (it has no loader for .json): the artifact must still load as the model it was.
    graph::reload(&artifact)?;
    match drift::read_from_archive(&artifact[..]).map_err(internal)? {
        Some(read) if read == *reference => Ok(artifact),
        _ => Err(internal(
            "the reference statistics do not read back from the artifact",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A labelled set of integers cast to the model's f32 input: the reference names the input's features and
    /// counts the labels' classes; a regression's targets are binned, several per row are not.
    #[test]
    fn records_the_rows_as_served_and_the_labels() {
        let rows = 20;
        let inputs: Vec<i64> = (0..rows as i64 * 2).collect();
        let dataset = Dataset {
            x: Tensor::from_shape(&[rows, 2], &inputs).expect("tensor"),
            y: (0..rows).map(|i| (i % 2) as f64).collect(),
        };
        let reference = record("X", f32::datum_type(), &dataset, false).expect("recorded");
        assert_eq!(reference.rows, rows);
        let names: Vec<&str> = reference.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["X[0]", "X[1]"]);
        // Column 0 holds 0, 2, .., 38: its first decile edge is the second value.
        assert_eq!(reference.features[0].edges[0], 2.0);
        assert_eq!(
            reference.predictions,
            Some(drift::PredictionReference::Classes {
                classes: vec![0, 1],
                shares: vec![0.5, 0.5],
            })
        );
        let values = record("X", f32::datum_type(), &dataset, true).expect("recorded");
        assert!(matches!(
            values.predictions,
            Some(drift::PredictionReference::Values { .. })
        ));
        let several = Dataset {
            y: vec![0.0; rows * 2],
            ..dataset
        };
        let reference = record("X", f32::datum_type(), &several, true).expect("recorded");
        assert_eq!(reference.predictions, None);
    }
}
