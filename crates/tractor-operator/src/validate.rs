//! The pure first step of a reconcile: everything the builders need, derived once, or a reason the spec
//! cannot be served. The API server already enforced the schema and CEL rules; this checks what they cannot.

use tractor_api::{
    ModelDeployment, ModelFormat, ModelUri, UriError, format_from_name, revision::revision,
};

/// Where a `tractor optimize` run reads a file from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `https://`, `http://` or `s3://`: fetched by the command itself.
    Remote(String),
    /// `configmap://name/key`: mounted read-only.
    ConfigMap {
        /// ConfigMap name.
        name: String,
        /// Key (file name in the mount).
        key: String,
    },
    /// `pvc://claim/path`: mounted read-only.
    Pvc {
        /// PersistentVolumeClaim name.
        claim: String,
        /// Path inside the volume.
        path: String,
    },
}

/// A ModelDeployment checked and enriched for the builders.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The resource as read.
    pub md: ModelDeployment,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The model revision the spec asks for.
    pub revision: String,
    /// Format of the source file.
    pub format: ModelFormat,
    /// Where the model is read from.
    pub source: Location,
    /// Where the labelled set is read from, if any.
    pub dataset: Option<Location>,
}

/// Why a spec cannot be served; reported as `Stalled=True` with reason `InvalidSpec`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    /// The object lacks a name or namespace (never true for objects read from the API server).
    #[error("the object has no name or namespace")]
    Unnamed,
    /// The format could not be derived.
    #[error("cannot tell the model format from {0:?}: set spec.model.format (onnx or nnef)")]
    UnknownFormat(String),
    /// A uri could not be parsed.
    #[error("{0}")]
    BadUri(String),
}

/// Parses a model or dataset uri into where the optimize run reads it from.
pub fn locate(uri: &str) -> Result<Location, Invalid> {
    match ModelUri::parse(uri) {
        Ok(ModelUri::ConfigMap { name, key }) => Ok(Location::ConfigMap { name, key }),
        Ok(ModelUri::Pvc { claim, path }) => Ok(Location::Pvc { claim, path }),
        Err(error @ UriError::MountForm { .. }) => Err(Invalid::BadUri(error.to_string())),
        // A malformed `s3://` (the dataset pattern lets `s3://bucket` through) is the command's to report: it
        // fails the Job with `FetchFailed`, as it always has.
        Ok(ModelUri::Http(_) | ModelUri::S3 { .. })
        | Err(UriError::UnknownScheme(_) | UriError::S3Form(_)) => {
            Ok(Location::Remote(uri.to_owned()))
        }
    }
}

/// Checks a ModelDeployment and derives what the builders need.
pub fn validate(md: &ModelDeployment) -> Result<Validated, Invalid> {
    let name = md.metadata.name.clone().ok_or(Invalid::Unnamed)?;
    let namespace = md.metadata.namespace.clone().ok_or(Invalid::Unnamed)?;
    let model = &md.spec.model;
    let format = model
        .format
        .or_else(|| format_from_name(&model.uri))
        .ok_or_else(|| Invalid::UnknownFormat(model.uri.clone()))?;
    let source = locate(&model.uri)?;
    let dataset = md
        .spec
        .optimize
        .evaluation
        .as_ref()
        .map(|e| locate(&e.dataset))
        .transpose()?;
    Ok(Validated {
        revision: revision(&md.spec),
        md: md.clone(),
        name,
        namespace,
        format,
        source,
        dataset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let cases = [
            (
                "https://h/m.onnx",
                Ok(Location::Remote("https://h/m.onnx".into())),
            ),
            (
                "configmap://cm/model.onnx",
                Ok(Location::ConfigMap {
                    name: "cm".into(),
                    key: "model.onnx".into(),
                }),
            ),
            (
                "pvc://claim/a/b.onnx",
                Ok(Location::Pvc {
                    claim: "claim".into(),
                    path: "a/b.onnx".into(),
                }),
            ),
        ];
        for (uri, want) in cases {
            assert_eq!(locate(uri), want, "{uri}");
        }
        // The command, not the operator, refuses a malformed s3:// uri (a `FetchFailed` Job).
        assert_eq!(
            locate("s3://bucket"),
            Ok(Location::Remote("s3://bucket".into()))
        );
        assert_eq!(
            locate("pvc://claim/../etc/passwd"),
            Err(Invalid::BadUri(
                r#"pvc:// uri "pvc://claim/../etc/passwd" needs the form pvc://NAME/PATH without '..'"#
                    .into()
            ))
        );
        assert!(locate("configmap://cm").is_err());
    }
}
