//! Where a model or a labelled set lives: `spec.model.uri` and `evaluation.dataset` parsed once, and the format
//! a file name implies.
//!
//! The operator (what to mount), `tractor optimize` (what to fetch) and the schema's CEL rules read the same
//! text; parsing it in one place keeps them from disagreeing on what a uri means.

use std::fmt;
use std::str::FromStr;

use crate::spec::ModelFormat;

/// A model or dataset uri, as `spec.model.uri` and `evaluation.dataset` accept it.
///
/// [`Display`](fmt::Display) gives back exactly the text it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelUri {
    /// `https://...` or `http://...`, kept whole: the command fetches it as written.
    Http(String),
    /// `s3://bucket/key`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key (may contain `/`).
        key: String,
    },
    /// `pvc://claim/path`: a file in a PersistentVolumeClaim, mounted read-only.
    Pvc {
        /// PersistentVolumeClaim name.
        claim: String,
        /// Path inside the volume.
        path: String,
    },
    /// `configmap://name/key`: a ConfigMap key, mounted read-only.
    ConfigMap {
        /// ConfigMap name.
        name: String,
        /// Key (file name in the mount).
        key: String,
    },
}

/// Why a text is not a [`ModelUri`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UriError {
    /// No scheme, or one tractor does not read (`ftp://`, `file://`, a local path).
    UnknownScheme(String),
    /// `s3://` without both a bucket and a key.
    S3Form(String),
    /// `pvc://` or `configmap://` without both a NAME and a PATH, or with a `..` segment, which would leave the
    /// mounted volume.
    MountForm {
        /// `pvc` or `configmap`.
        scheme: &'static str,
        /// The text as given.
        uri: String,
    },
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriError::UnknownScheme(uri) => write!(
                f,
                "{uri:?} has no supported scheme (https://, http://, s3://, pvc://, configmap://)"
            ),
            UriError::S3Form(_) => f.write_str("expected s3://bucket/key"),
            // The operator reports this text as the `InvalidSpec` message; e2e tests match it.
            UriError::MountForm { scheme, uri } => write!(
                f,
                "{scheme}:// uri {uri:?} needs the form {scheme}://NAME/PATH without '..'"
            ),
        }
    }
}

impl std::error::Error for UriError {}

impl ModelUri {
    /// Parses a uri; schemes are matched case-sensitively, as the schema's pattern does.
    pub fn parse(uri: &str) -> Result<ModelUri, UriError> {
        if uri.starts_with("https://") || uri.starts_with("http://") {
            Ok(ModelUri::Http(uri.to_owned()))
        } else if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) =
                two_parts(rest, false).ok_or_else(|| UriError::S3Form(uri.into()))?;
            Ok(ModelUri::S3 { bucket, key })
        } else if let Some(rest) = uri.strip_prefix("pvc://") {
            let (claim, path) = two_parts(rest, true).ok_or_else(|| UriError::MountForm {
                scheme: "pvc",
                uri: uri.into(),
            })?;
            Ok(ModelUri::Pvc { claim, path })
        } else if let Some(rest) = uri.strip_prefix("configmap://") {
            let (name, key) = two_parts(rest, true).ok_or_else(|| UriError::MountForm {
                scheme: "configmap",
                uri: uri.into(),
            })?;
            Ok(ModelUri::ConfigMap { name, key })
        } else {
            Err(UriError::UnknownScheme(uri.into()))
        }
    }

    /// Whether it is reached over plain HTTP, where a pinned digest is the only integrity check.
    pub fn is_plain_http(&self) -> bool {
        matches!(self, ModelUri::Http(uri) if uri.starts_with("http://"))
    }

    /// Whether the pods mount it (`pvc://`, `configmap://`) rather than fetch it.
    pub fn is_mounted(&self) -> bool {
        matches!(self, ModelUri::Pvc { .. } | ModelUri::ConfigMap { .. })
    }

    /// The format its name implies, as [`format_from_name`] tells it.
    pub fn format(&self) -> Option<ModelFormat> {
        format_from_name(&self.to_string())
    }
}

/// `NAME/PATH` with both parts non-empty; `mounted` also refuses a `..` path segment.
fn two_parts(rest: &str, mounted: bool) -> Option<(String, String)> {
    let (a, b) = rest.split_once('/')?;
    let escapes = mounted && b.split('/').any(|segment| segment == "..");
    (!a.is_empty() && !b.is_empty() && !escapes).then(|| (a.to_owned(), b.to_owned()))
}

impl FromStr for ModelUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<ModelUri, UriError> {
        ModelUri::parse(s)
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelUri::Http(uri) => f.write_str(uri),
            ModelUri::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            ModelUri::Pvc { claim, path } => write!(f, "pvc://{claim}/{path}"),
            ModelUri::ConfigMap { name, key } => write!(f, "configmap://{name}/{key}"),
        }
    }
}

/// The format a uri's name implies: [`ModelFormat::from_file_name`] of the text before any `?` or `#`, the same
/// rule as the schema's CEL check that makes `model.format` required when the name says nothing.
pub fn format_from_name(uri: &str) -> Option<ModelFormat> {
    ModelFormat::from_file_name(uri.split(['?', '#']).next().unwrap_or(uri))
}

impl ModelFormat {
    /// Every format, for tables and tests.
    pub const ALL: [ModelFormat; 4] = [
        ModelFormat::Onnx,
        ModelFormat::Nnef,
        ModelFormat::Tflite,
        ModelFormat::Tensorflow,
    ];

    /// The spelling in the spec and on the command line (`onnx`, `nnef`, `tflite`, `tensorflow`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Nnef => "nnef",
            ModelFormat::Tflite => "tflite",
            ModelFormat::Tensorflow => "tensorflow",
        }
    }

    /// The format a file name's suffix implies, case-insensitively: `.onnx`; `.nnef`, `.nnef.tar`, `.nnef.tgz`,
    /// `.nnef.tar.gz`; `.tflite`; `.pb` (a frozen TensorFlow graph); `None` when the suffix says nothing. The
    /// schema's CEL rule that makes `model.format` required lists the same suffixes.
    pub fn from_file_name(name: &str) -> Option<ModelFormat> {
        let name = name.to_ascii_lowercase();
        if name.ends_with(".onnx") {
            Some(ModelFormat::Onnx)
        } else if [".nnef", ".nnef.tar", ".nnef.tgz", ".nnef.tar.gz"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        {
            Some(ModelFormat::Nnef)
        } else if name.ends_with(".tflite") {
            Some(ModelFormat::Tflite)
        } else if name.ends_with(".pb") {
            Some(ModelFormat::Tensorflow)
        } else {
            None
        }
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_gives_back_the_text() {
        let cases = [
            (
                "https://h/a/m.onnx?x=1",
                ModelUri::Http("https://h/a/m.onnx?x=1".into()),
            ),
            ("http://h/m.onnx", ModelUri::Http("http://h/m.onnx".into())),
            (
                "s3://models/digits/v1.onnx",
                ModelUri::S3 {
                    bucket: "models".into(),
                    key: "digits/v1.onnx".into(),
                },
            ),
            (
                "s3://b/a/../k.onnx",
                ModelUri::S3 {
                    bucket: "b".into(),
                    key: "a/../k.onnx".into(),
                },
            ),
            (
                "pvc://claim/a/b.onnx",
                ModelUri::Pvc {
                    claim: "claim".into(),
                    path: "a/b.onnx".into(),
                },
            ),
            (
                "configmap://cm/model.onnx",
                ModelUri::ConfigMap {
                    name: "cm".into(),
                    key: "model.onnx".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let got: ModelUri = text.parse().expect(text);
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
        }
    }

    #[test]
    fn refuses_malformed_uris() {
        assert_eq!(
            ModelUri::parse("s3://models"),
            Err(UriError::S3Form("s3://models".into()))
        );
        assert_eq!(
            ModelUri::parse("s3://models/").map(|_| ()),
            Err(UriError::S3Form("s3://models/".into()))
        );
        assert!(matches!(
            ModelUri::parse("ftp://x/y"),
            Err(UriError::UnknownScheme(_))
        ));
        assert!(matches!(
            ModelUri::parse("/var/m.onnx"),
            Err(UriError::UnknownScheme(_))
        ));
        assert!(matches!(
            ModelUri::parse("HTTPS://h/m.onnx"),
            Err(UriError::UnknownScheme(_))
        ));
        assert!(ModelUri::parse("configmap://cm").is_err());
        let escape = ModelUri::parse("pvc://claim/../etc/passwd").expect_err("..");
        assert_eq!(
            escape.to_string(),
            r#"pvc:// uri "pvc://claim/../etc/passwd" needs the form pvc://NAME/PATH without '..'"#
        );
    }

    #[test]
    fn plain_http_and_mounts() {
        let parse = |s: &str| ModelUri::parse(s).expect(s);
        assert!(parse("http://h/m.onnx").is_plain_http());
        assert!(!parse("https://h/m.onnx").is_plain_http());
        assert!(parse("pvc://c/m.onnx").is_mounted());
        assert!(parse("configmap://c/m.onnx").is_mounted());
        assert!(!parse("s3://b/m.onnx").is_mounted());
    }

    #[test]
    fn formats_from_names() {
        let cases = [
            ("s3://b/k/model.ONNX", Some(ModelFormat::Onnx)),
            ("https://h/m.nnef.tgz?sig=1", Some(ModelFormat::Nnef)),
            ("https://h/m.nnef#frag", Some(ModelFormat::Nnef)),
            ("pvc://c/m.nnef.tar", Some(ModelFormat::Nnef)),
            ("pvc://c/m.nnef.tar.gz", Some(ModelFormat::Nnef)),
            ("s3://b/digits.TFLite?v=2", Some(ModelFormat::Tflite)),
            ("https://h/frozen_graph.pb", Some(ModelFormat::Tensorflow)),
            ("https://h/model.pbtxt", None),
            ("https://h/model.tflite.bak", None),
            ("https://h/model.bin", None),
            ("https://h/model.tgz", None),
        ];
        for (uri, want) in cases {
            assert_eq!(format_from_name(uri), want, "{uri}");
        }
        assert_eq!(
            ModelUri::parse("configmap://cm/m.onnx")
                .expect("ok")
                .format(),
            Some(ModelFormat::Onnx)
        );
    }

    #[test]
    fn format_names_are_the_serde_names() {
        for format in ModelFormat::ALL {
            assert_eq!(
                serde_json::to_value(format).expect("serializes"),
                format.as_str()
            );
        }
    }
}
