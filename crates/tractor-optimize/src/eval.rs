//! Labelled sets and the scores the accuracy gate compares.
//!
//! The labelled set format is one `.npz` file (numpy's `np.savez`) with two arrays:
//! - `x`: the model's first input, shape `[rows, ...features]`, any numeric dtype (cast to the input's type);
//! - `y`: one label per row: integer class ids for classifiers, numbers (or `[rows, k]`) for regressions.
//!
//! A classifier's prediction is the argmax of its first float output with more than one column (probabilities or
//! logits), else its first integer output (a label); a regression's is its first float output, flattened. A model
//! with neither class scores nor a label is a regression whatever the metric.

use std::path::Path;

use tract_nnef::internal::*;
use tractor_api::EvalMetric;

use super::graph::Exec;
use super::{OptError, Reason};

/// A labelled set, in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Inputs, `[rows, ...]`.
    pub x: Tensor,
    /// Labels, flattened to f64 (class ids or targets), `rows * k` values.
    pub y: Vec<f64>,
}

fn invalid(message: impl Into<String>) -> OptError {
    OptError::new(Reason::InvalidDataset, message)
}

/// Read a labelled `.npz` file (arrays `x` and `y`).
pub fn load_npz(path: &Path) -> Result<Dataset, OptError> {
    let mut npz = npyz::npz::NpzArchive::open(path)
        .map_err(|e| invalid(format!("{}: not an .npz file: {e}", path.display())))?;
    let x = read_array(&mut npz, "x")?;
    let y = read_array(&mut npz, "y")?;
    let rows = x.shape().first().copied().unwrap_or(0);
    let y = values::<f64>(&y).map_err(|e| invalid(format!("y: {e}")))?;
    if rows == 0 || y.is_empty() || y.len() % rows != 0 {
        return Err(invalid(format!(
            "x has {rows} rows but y has {} values",
            y.len()
        )));
    }
    Ok(Dataset { x, y })
}

fn read_array(
    npz: &mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
    name: &str,
) -> Result<Tensor, OptError> {
    let npy = npz
        .by_name(name)
        .map_err(|error| invalid(format!("reading array {name}: {error}")))?
        .ok_or_else(|| invalid(format!("the .npz has no array named {name:?}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|dim| *dim as usize).collect();
    let bad = |error: std::io::Error| invalid(format!("array {name}: {error}"));
    let dtype = npy.dtype();
    let descr = match &dtype {
        npyz::DType::Plain(plain) => plain.to_string(),
        _ => {
            return Err(invalid(format!(
                "array {name}: structured dtypes are not supported"
            )));
        }
    };
    // The type string is numpy's ("<f4", "<i8", "|u1", ...): kind letter and byte size after the order mark.
    let kind = &descr[1..];
    let tensor = match kind {
        "f4" => Tensor::from_shape(&shape, &npy.into_vec::<f32>().map_err(bad)?),
        "f8" => Tensor::from_shape(&shape, &npy.into_vec::<f64>().map_err(bad)?),
        "i8" => Tensor::from_shape(&shape, &npy.into_vec::<i64>().map_err(bad)?),
        "i4" => Tensor::from_shape(&shape, &npy.into_vec::<i32>().map_err(bad)?),
        "u1" => Tensor::from_shape(&shape, &npy.into_vec::<u8>().map_err(bad)?),
        "b1" => Tensor::from_shape(
            &shape,
            &npy.into_vec::<bool>()
                .map_err(bad)?
                .into_iter()
                .map(u8::from)
                .collect::<Vec<_>>(),
        ),
        other => {
            return Err(invalid(format!(
                "array {name}: dtype {other} is not supported"
            )));
        }
    }
    .map_err(|error| invalid(format!("array {name}: {error}")))?;
    Ok(tensor)
}

/// The tensor's values, cast to `T`, in row-major order.
pub fn values<T: Datum>(t: &Tensor) -> TractResult<Vec<T>> {
    let cast = t.cast_to::<T>()?;
    let view = cast.try_as_plain_ram()?;
    Ok(view.as_slice::<T>()?.to_vec())
}

/// What a model predicts for a batch: a class id per row, or values per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Class ids.
    Classes(Vec<i64>),
    /// Regression values, `rows * k`, with `rows`.
    Values(Vec<f64>, usize),
}

/// Pick the output that carries the prediction (see the module docs) and turn it into [`Predictions`].
pub fn predictions(outputs: &[Tensor], regression: bool) -> Result<Predictions, OptError> {
    let is_float = |output: &Tensor| output.datum_type().is_float();
    if regression {
        let output = outputs
            .iter()
            .find(|output| is_float(output))
            .ok_or_else(|| invalid("a regression metric needs a float output"))?;
        let rows = output.shape().first().copied().unwrap_or(1);
        let data = values::<f64>(output).map_err(|error| invalid(error.to_string()))?;
        return Ok(Predictions::Values(data, rows));
    }
    if let Some(output) = outputs
        .iter()
        .find(|output| is_float(output) && output.rank() == 2 && output.shape()[1] > 1)
    {
        let data = output
            .cast_to::<f32>()
            .map_err(|error| invalid(error.to_string()))?;
        let data = data
            .to_plain_array_view::<f32>()
            .map_err(|error| invalid(error.to_string()))?;
        let classes = data
            .outer_iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |best, (class, score)| {
                        if *score > best.1 {
                            (class, *score)
                        } else {
                            best
                        }
                    })
                    .0 as i64
            })
            .collect();
        return Ok(Predictions::Classes(classes));
    }
    if let Some(output) = outputs
        .iter()
        .find(|output| output.datum_type().is_integer())
    {
        let data = values::<i64>(output).map_err(|error| invalid(error.to_string()))?;
        return Ok(Predictions::Classes(data));
    }
    // Neither class scores nor a label: a regressor (a tree ensemble or SVM regressor gives `[N, 1]`), compared on
    // its values even when the metric asked is a classification one (the calibration sample has no labels).
    if let Some(output) = outputs.iter().find(|output| is_float(output)) {
        let rows = output.shape().first().copied().unwrap_or(1);
        let data = values::<f64>(output).map_err(|error| invalid(error.to_string()))?;
        return Ok(Predictions::Values(data, rows));
    }
    Err(invalid(
        "cannot tell the prediction from the outputs (no class scores, no integer label, no float value)",
    ))
}

/// Run `model` over `x` in chunks and gather its predictions.
pub fn predict(model: &Exec, x: &Tensor, regression: bool) -> Result<Predictions, OptError> {
    const CHUNK: usize = 256;
    let rows = x.shape().first().copied().unwrap_or(0);
    let mut classes = Vec::new();
    let mut values = Vec::new();
    let mut start = 0;
    while start < rows {
        let end = (start + CHUNK).min(rows);
        let chunk = x.slice(0, start, end).map_err(|e| invalid(e.to_string()))?;
        match predictions(&model.run(&chunk)?, regression)? {
            Predictions::Classes(c) => classes.extend(c),
            Predictions::Values(v, _) => values.extend(v),
        }
        start = end;
    }
    Ok(
        if regression || (classes.is_empty() && !values.is_empty()) {
            Predictions::Values(values, rows)
        } else {
            Predictions::Classes(classes)
        },
    )
}

/// Whether a higher score is better for this metric.
pub fn higher_is_better(metric: EvalMetric) -> bool {
    !matches!(metric, EvalMetric::Mae | EvalMetric::Rmse)
}

/// Whether the metric is a regression metric.
pub fn is_regression(metric: EvalMetric) -> bool {
    !higher_is_better(metric)
}

/// Score predictions against labels.
pub fn score(metric: EvalMetric, pred: &Predictions, labels: &[f64]) -> Result<f64, OptError> {
    match (metric, pred) {
        (EvalMetric::Mae | EvalMetric::Rmse, Predictions::Values(predicted, _)) => {
            if predicted.len() != labels.len() {
                return Err(invalid(format!(
                    "the model gives {} values, y has {}",
                    predicted.len(),
                    labels.len()
                )));
            }
            let count = predicted.len().max(1) as f64;
            Ok(if metric == EvalMetric::Mae {
                predicted
                    .iter()
                    .zip(labels)
                    .map(|(estimate, target)| (estimate - target).abs())
                    .sum::<f64>()
                    / count
            } else {
                (predicted
                    .iter()
                    .zip(labels)
                    .map(|(estimate, target)| (estimate - target).powi(2))
                    .sum::<f64>()
                    / count)
                    .sqrt()
            })
        }
        (_, Predictions::Classes(predicted_classes)) => {
            if predicted_classes.len() != labels.len() {
                return Err(invalid(format!(
                    "the model gives {} labels, y has {}",
                    predicted_classes.len(),
                    labels.len()
                )));
            }
            let truth: Vec<i64> = labels.iter().map(|label| label.round() as i64).collect();
            Ok(classification(metric, predicted_classes, &truth))
        }
        _ => Err(invalid("the metric does not fit the model's outputs")),
    }
}

/// Accuracy, or macro-averaged precision/recall/F1 over the classes seen in the labels or predictions.
pub fn classification(metric: EvalMetric, pred: &[i64], truth: &[i64]) -> f64 {
    let count = truth.len().max(1) as f64;
    if metric == EvalMetric::Accuracy {
        return pred
            .iter()
            .zip(truth)
            .filter(|(predicted, actual)| predicted == actual)
            .count() as f64
            / count;
    }
    let mut classes: Vec<i64> = pred.iter().chain(truth).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let mut sum = 0.0;
    for class in &classes {
        let tp = pred
            .iter()
            .zip(truth)
            .filter(|(predicted, actual)| *predicted == class && *actual == class)
            .count() as f64;
        let fp = pred
            .iter()
            .zip(truth)
            .filter(|(predicted, actual)| *predicted == class && *actual != class)
            .count() as f64;
        let fne = pred
            .iter()
            .zip(truth)
            .filter(|(predicted, actual)| *predicted != class && *actual == class)
            .count() as f64;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if tp + fne > 0.0 { tp / (tp + fne) } else { 0.0 };
        sum += match metric {
            EvalMetric::Precision => precision,
            EvalMetric::Recall => recall,
            _ if precision + recall > 0.0 => 2.0 * precision * recall / (precision + recall),
            _ => 0.0,
        };
    }
    sum / classes.len().max(1) as f64
}

/// How closely a candidate follows the f32 model on the same inputs: argmax agreement for classifiers, and for
/// regressions `1 - max|a-b| / max|a|` (1.0 is identical).
pub fn agreement(reference: &Predictions, candidate: &Predictions) -> f64 {
    match (reference, candidate) {
        (Predictions::Classes(a), Predictions::Classes(b)) if a.len() == b.len() => {
            a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
        }
        (Predictions::Values(a, _), Predictions::Values(b, _)) if a.len() == b.len() => {
            let scale = a.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
            let err = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
            1.0 - err / scale
        }
        _ => 0.0,
    }
}

/// A deterministic calibration sample when no labelled set is given: `rows` rows drawn from a fixed-seed
/// generator in [0, 1), the range of the usual scaled features.
pub fn calibration_sample(row_shape: &[usize], rows: usize) -> Result<Tensor, OptError> {
    let mut shape = vec![rows];
    shape.extend_from_slice(row_shape);
    let len: usize = shape.iter().product();
    // xorshift64*: fixed seed, so every run (and every re-derivation) sees the same sample.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_shape(&shape, &data).map_err(|e| OptError::new(Reason::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics() {
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 2, 0];
        let acc = classification(EvalMetric::Accuracy, &pred, &truth);
        assert!((acc - 4.0 / 6.0).abs() < 1e-12);
        // per class precision: 0: 1/2, 1: 2/3, 2: 1/1; recall: 1/2, 1, 1/2
        let p = classification(EvalMetric::Precision, &pred, &truth);
        assert!((p - (0.5 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
        let r = classification(EvalMetric::Recall, &pred, &truth);
        assert!((r - (0.5 + 1.0 + 0.5) / 3.0).abs() < 1e-12);
        let f1 = classification(EvalMetric::F1, &pred, &truth);
        let f = |p: f64, r: f64| 2.0 * p * r / (p + r);
        assert!((f1 - (f(0.5, 0.5) + f(2.0 / 3.0, 1.0) + f(1.0, 0.5)) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics() {
        let pred = Predictions::Values(vec![1.0, 2.0, 4.0], 3);
        let y = [1.0, 3.0, 2.0];
        assert!((score(EvalMetric::Mae, &pred, &y).expect("ok") - 1.0).abs() < 1e-12);
        let rmse = score(EvalMetric::Rmse, &pred, &y).expect("ok");
        assert!((rmse - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn agreement_and_calibration_are_deterministic() {
        let a = Predictions::Classes(vec![1, 2, 3, 4]);
        let b = Predictions::Classes(vec![1, 2, 3, 0]);
        assert_eq!(agreement(&a, &b), 0.75);
        let s1 = calibration_sample(&[4], 8).expect("ok");
        let s2 = calibration_sample(&[4], 8).expect("ok");
        assert_eq!(s1, s2);
        assert!(
            values::<f32>(&s1)
                .expect("ok")
                .iter()
                .all(|v| (0.0..1.0).contains(v))
        );
    }
}
