//! The TensorFlow Lite and frozen TensorFlow fixtures (tests/fixtures/make_tf_models.py) load through tractor's one
//! loader and give their framework's outputs on the whole digits test split, batched, as loaded and through the NNEF
//! artifact; the refused ones name their ops.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use tract_nnef::internal::*;
use tractor_model::{Datatype, ModelFormat};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The largest |tractor - framework| over every value, and the rows whose argmax agree.
fn run(file: &str, name: &str, through_nnef: bool) -> (f64, usize, usize) {
    let split: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}_test.json"))).unwrap(),
    )
    .unwrap();
    let row_shape: Vec<usize> = serde_json::from_value(split["shape"].clone()).unwrap();
    let data: Vec<f32> = split["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap() as f32)
        .collect();
    let rows = data.len() / row_shape.iter().product::<usize>();
    let loaded = tractor_model::load(&fixtures().join(file), None)
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    let model = if through_nnef {
        // What optimize writes and serve loads: the NNEF artifact of the loaded model.
        let (typed, _) = tractor_model::loader::load(&fixtures().join(file)).unwrap();
        let dir =
            std::env::temp_dir().join(format!("tractor-tf-fixtures-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        tractor_model::loader::nnef()
            .write_to_dir(&typed, &dir)
            .unwrap();
        let back =
            tractor_model::load(&dir, None).unwrap_or_else(|error| panic!("{name}: {error}"));
        std::fs::remove_dir_all(&dir).unwrap();
        back
    } else {
        loaded
    };
    assert!(model.batchable(), "{name}: {:?}", model.signature());
    assert_eq!(
        model.signature().inputs[0].datatype,
        Datatype::Fp32,
        "{name}"
    );
    let mut shape = vec![rows];
    shape.extend(&row_shape);
    let runner = model.runner(64).unwrap();
    let mut session = runner.session();
    let outputs = session
        .run(vec![Tensor::from_shape(&shape, &data).unwrap()])
        .unwrap();
    let (out_name, want) = split["reference"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(model.signature().outputs[0].name, *out_name, "{name}");
    let got = outputs[0].cast_to::<f64>().unwrap();
    let got = got
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f64>()
        .unwrap()
        .to_vec();
    let want: Vec<f64> = want["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{name}");
    let max_abs = got
        .iter()
        .zip(&want)
        .map(|(left, right)| (left - right).abs())
        .fold(0.0, f64::max);
    let argmax = |row: &[f64]| {
        row.iter().enumerate().fold(
            0,
            |best, (at, value)| if *value > row[best] { at } else { best },
        )
    };
    let agree = got
        .chunks(10)
        .zip(want.chunks(10))
        .filter(|(left, right)| argmax(left) == argmax(right))
        .count();
    (max_abs, agree, rows)
}

#[test]
fn fixtures_give_their_frameworks_outputs() {
    for (file, format, tolerance) in [
        ("digits_tflite_mlp.tflite", ModelFormat::Tflite, 1e-5),
        ("digits_tflite_cnn.tflite", ModelFormat::Tflite, 1e-5),
        // One step of the int8 softmax output (scale 1/256).
        (
            "digits_tflite_mlp_int8.tflite",
            ModelFormat::Tflite,
            1.0 / 256.0 + 1e-6,
        ),
        (
            "digits_tflite_cnn_int8.tflite",
            ModelFormat::Tflite,
            1.0 / 256.0 + 1e-6,
        ),
        ("digits_tf_mlp.pb", ModelFormat::Tensorflow, 1e-5),
    ] {
        let name = file.split('.').next().unwrap();
        let model = tractor_model::load(&fixtures().join(file), None).unwrap();
        assert_eq!(model.format(), format, "{name}");
        for through_nnef in [false, true] {
            let (max_abs, agree, rows) = run(file, name, through_nnef);
            eprintln!(
                "{name} (through NNEF: {through_nnef}): max |diff| {max_abs:e}, argmax agrees on {agree}/{rows}"
            );
            assert!(max_abs <= tolerance, "{name}: max |diff| {max_abs:e}");
            assert!(agree * 1000 >= rows * 995, "{name}: {agree}/{rows}");
        }
    }
}

#[test]
fn missing_tflite_ops_are_named() {
    for (file, named) in [
        (
            "digits_tflite_mlp_int8_float_io.tflite",
            "tract cannot run TensorFlow Lite op(s): DEQUANTIZE, QUANTIZE",
        ),
        (
            "digits_tflite_cnn_any_batch.tflite",
            "tract cannot run TensorFlow Lite op(s): PACK",
        ),
        // tract-tflite's quantized FULLY_CONNECTED takes one weight scale; the converter's default has one per
        // output channel.
        (
            "digits_tflite_mlp_int8_per_channel.tflite",
            "tract cannot run this model's TensorFlow Lite op FULLY_CONNECTED: Condition failed: \
             `shapes.iter().enumerate().all(|(ix, fact)| fact.len() ==\nself.axes.rank(InOut::In(ix)))`",
        ),
    ] {
        let error = tractor_model::load(&fixtures().join(file), None).unwrap_err();
        match &error {
            tractor_model::Error::LoadModel {
                reason, message, ..
            } => {
                assert_eq!(
                    *reason,
                    tractor_api::report::FailureReason::UnsupportedOp,
                    "{file}"
                );
                assert_eq!(message, named, "{file}");
            }
            other => panic!("{file}: {other}"),
        }
    }
}
