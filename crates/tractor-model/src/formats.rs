//! Which format a model file is: what its first bytes say, checked against what the spec declares.

use std::io::Read;
use std::path::Path;

use tractor_api::ModelFormat;

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bytes {
    /// A folder, a gzip stream or a tar archive: NNEF as tract writes it.
    Nnef,
    /// A flatbuffer with TensorFlow Lite's file identifier.
    Tflite,
    /// Anything else, which the loaders read as a protobuf: ONNX or a TensorFlow `GraphDef`. Protobufs do not
    /// name their schema, so the guess here is the name's suffix, else the first field (below).
    Protobuf(ModelFormat),
}

/// Read enough of `path` to tell its format.
pub(crate) fn sniff(path: &Path) -> Bytes {
    if path.is_dir() {
        return Bytes::Nnef;
    }
    let mut head = [0u8; 262];
    let len = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut head))
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    classify(&head[..len], &name)
}

/// [`sniff`] on bytes already read: the file's first up to 262 bytes and its name.
pub(crate) fn classify(head: &[u8], name: &str) -> Bytes {
    // gzip magic, or the ustar magic at offset 257 of a tar header.
    if head.starts_with(&[0x1f, 0x8b]) || head.get(257..262) == Some(b"ustar") {
        return Bytes::Nnef;
    }
    // A flatbuffer's file identifier follows its 4-byte root offset.
    if head.get(4..8) == Some(b"TFL3") {
        return Bytes::Tflite;
    }
    match ModelFormat::from_file_name(name) {
        Some(format @ (ModelFormat::Onnx | ModelFormat::Tensorflow)) => Bytes::Protobuf(format),
        // ONNX writes `ir_version` (field 1, a varint: tag 0x08) first; a GraphDef opens with its nodes (field
        // 1, length-delimited: tag 0x0a).
        _ if head.first() == Some(&0x0a) => Bytes::Protobuf(ModelFormat::Tensorflow),
        _ => Bytes::Protobuf(ModelFormat::Onnx),
    }
}

/// The format to load a file as: the declared one when the bytes allow it (a declaration is never overridden
/// by a guess, and never followed where the bytes prove it wrong), else what the bytes say. The error is the
/// `InvalidModel` message.
pub(crate) fn pick(declared: Option<ModelFormat>, bytes: Bytes) -> Result<ModelFormat, String> {
    let found = match bytes {
        Bytes::Nnef => ModelFormat::Nnef,
        Bytes::Tflite => ModelFormat::Tflite,
        Bytes::Protobuf(guess) => guess,
    };
    let Some(declared) = declared else {
        return Ok(found);
    };
    let fits = match declared {
        ModelFormat::Nnef => bytes == Bytes::Nnef,
        ModelFormat::Tflite => bytes == Bytes::Tflite,
        ModelFormat::Onnx | ModelFormat::Tensorflow => matches!(bytes, Bytes::Protobuf(_)),
    };
    if fits {
        return Ok(declared);
    }
    let is_not = match declared {
        ModelFormat::Nnef => "neither an NNEF folder nor a tar/gzip archive",
        ModelFormat::Tflite => "not a TensorFlow Lite flatbuffer (no TFL3 identifier)",
        ModelFormat::Onnx | ModelFormat::Tensorflow if bytes == Bytes::Nnef => {
            "a folder or a tar/gzip archive"
        }
        ModelFormat::Onnx | ModelFormat::Tensorflow => "a TensorFlow Lite flatbuffer",
    };
    let looks_like = match found {
        ModelFormat::Nnef => "NNEF?",
        ModelFormat::Tflite => "TensorFlow Lite?",
        ModelFormat::Onnx => "an ONNX file?",
        ModelFormat::Tensorflow => "a TensorFlow graph?",
    };
    Err(format!(
        "model.format is {declared}, but the file is {is_not} ({looks_like} set format: {found} or leave format unset)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_header() -> Vec<u8> {
        let mut head = vec![0u8; 262];
        head[257..262].copy_from_slice(b"ustar");
        head
    }

    #[test]
    fn bytes_and_names_tell_the_format() {
        let tflite = [0x1c, 0, 0, 0, b'T', b'F', b'L', b'3', 0, 0];
        let onnx = [0x08, 0x07, 0x12, 0x07];
        let graph_def = [0x0a, 0x2f, 0x0a, 0x06];
        let cases: [(&[u8], &str, Bytes); 9] = [
            (&[0x1f, 0x8b, 8, 0], "model.onnx", Bytes::Nnef),
            (&tar_header(), "model.bin", Bytes::Nnef),
            (&tflite, "model.bin", Bytes::Tflite),
            // The bytes win over a misleading name: a flatbuffer is not a protobuf.
            (&tflite, "model.onnx", Bytes::Tflite),
            (&onnx, "model.onnx", Bytes::Protobuf(ModelFormat::Onnx)),
            (&onnx, "model", Bytes::Protobuf(ModelFormat::Onnx)),
            (
                &graph_def,
                "frozen",
                Bytes::Protobuf(ModelFormat::Tensorflow),
            ),
            // Between protobufs the name decides when it says something.
            (&graph_def, "model.onnx", Bytes::Protobuf(ModelFormat::Onnx)),
            (
                &onnx,
                "saved_model.PB",
                Bytes::Protobuf(ModelFormat::Tensorflow),
            ),
        ];
        for (head, name, want) in cases {
            assert_eq!(classify(head, name), want, "{name} {:x?}", &head[..4]);
        }
        assert_eq!(classify(&[], "empty"), Bytes::Protobuf(ModelFormat::Onnx));
        assert_eq!(sniff(&std::env::temp_dir()), Bytes::Nnef);
    }

    #[test]
    fn a_declared_format_is_kept_or_refused_never_overridden() {
        use ModelFormat::{Nnef, Onnx, Tensorflow, Tflite};
        let onnx_bytes = Bytes::Protobuf(Onnx);
        let graph_bytes = Bytes::Protobuf(Tensorflow);
        let cases = [
            (None, Bytes::Nnef, Ok(Nnef)),
            (None, Bytes::Tflite, Ok(Tflite)),
            (None, onnx_bytes, Ok(Onnx)),
            (None, graph_bytes, Ok(Tensorflow)),
            (Some(Onnx), graph_bytes, Ok(Onnx)),
            (Some(Tensorflow), onnx_bytes, Ok(Tensorflow)),
            (Some(Nnef), Bytes::Nnef, Ok(Nnef)),
            (Some(Tflite), Bytes::Tflite, Ok(Tflite)),
            (
                Some(Nnef),
                onnx_bytes,
                Err(
                    "model.format is nnef, but the file is neither an NNEF folder nor a tar/gzip archive (an ONNX file? set format: onnx or leave format unset)",
                ),
            ),
            (
                Some(Nnef),
                Bytes::Tflite,
                Err(
                    "model.format is nnef, but the file is neither an NNEF folder nor a tar/gzip archive (TensorFlow Lite? set format: tflite or leave format unset)",
                ),
            ),
            (
                Some(Onnx),
                Bytes::Nnef,
                Err(
                    "model.format is onnx, but the file is a folder or a tar/gzip archive (NNEF? set format: nnef or leave format unset)",
                ),
            ),
            (
                Some(Tflite),
                graph_bytes,
                Err(
                    "model.format is tflite, but the file is not a TensorFlow Lite flatbuffer (no TFL3 identifier) (a TensorFlow graph? set format: tensorflow or leave format unset)",
                ),
            ),
            (
                Some(Onnx),
                Bytes::Tflite,
                Err(
                    "model.format is onnx, but the file is a TensorFlow Lite flatbuffer (TensorFlow Lite? set format: tflite or leave format unset)",
                ),
            ),
            (
                Some(Tensorflow),
                Bytes::Tflite,
                Err(
                    "model.format is tensorflow, but the file is a TensorFlow Lite flatbuffer (TensorFlow Lite? set format: tflite or leave format unset)",
                ),
            ),
            (
                Some(Tflite),
                Bytes::Nnef,
                Err(
                    "model.format is tflite, but the file is not a TensorFlow Lite flatbuffer (no TFL3 identifier) (NNEF? set format: nnef or leave format unset)",
                ),
            ),
        ];
        for (declared, bytes, want) in cases {
            match (pick(declared, bytes), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{declared:?} {bytes:?}"),
                (Err(message), Err(want)) => assert_eq!(message, want),
                (got, want) => panic!("{declared:?} {bytes:?}: {got:?}, want {want:?}"),
            }
        }
    }
}
