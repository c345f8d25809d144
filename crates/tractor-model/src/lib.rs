//! Everything about a model file: load (ONNX, NNEF, TensorFlow Lite, frozen TensorFlow), digest check, signature,
//! and a batched runner.
//!
//! The ai.onnx.ml operators the loader registers live in `tractor-onnx-ml`; the optimizer (fetch, passes,
//! evaluation) in `tractor-optimize`, so the server depends on neither object stores nor labelled sets.
//!
//! The lifecycle is visible in the types, as in tract: [`load`] gives a decluttered [`Model`] with its
//! [`Signature`]; [`Model::runner`] optimizes it once per batch-size bucket into a shared [`Runner`] (the bucket
//! plans hold one copy of the weights they pack alike);
//! each worker thread opens a [`Session`] that keeps one reusable run state per bucket.

pub mod datatype;
mod declared;
pub mod dequant;
pub mod drift;
mod formats;
pub mod int8_linear;
pub mod loader;
mod runner;
mod tensorflow;
pub mod tflite;
pub mod timings;

pub use datatype::DatatypeExt;
pub use runner::{DEFAULT_EXTRA_WEIGHT_BYTES, Runner, Session};
pub use timings::{LoadTimings, PlanTiming};
/// tract's tensor type, re-exported so callers need no direct tract dependency.
pub use tract_onnx::prelude::{Datum, DatumType, Tensor, f16};
/// The API's tensor datatype and model format, re-exported: one definition each, in `tractor-api`.
pub use tractor_api::{Datatype, ModelFormat};
/// The inference thread budget lives with the ops that split a batch across threads.
pub use tractor_onnx_ml::threads::{set_threads, threads};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

/// Failures of this crate, named for the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be read (for its digest).
    #[error("reading {path}: {source}")]
    ReadModel {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's sha256 is not the one the deployment pinned.
    #[error("sha256 mismatch for {path}: expected {expected}, found {found}")]
    VerifyDigest {
        /// The file.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes on disk.
        found: String,
    },
    /// tract could not parse or type the model.
    #[error("loading model {path}: {message}")]
    LoadModel {
        /// The file.
        path: PathBuf,
        /// Why, as the optimize report says it (an op tract lacks, a broken file, declared inputs that disagree).
        reason: tractor_api::report::FailureReason,
        /// tract's error chain, flattened (tract errors are anyhow errors, not `std::error::Error`).
        message: String,
    },
    /// The model has an input or output this server cannot describe (e.g. a string tensor).
    #[error("unsupported signature: {0}")]
    Signature(String),
    /// Building an optimized plan failed.
    #[error("optimizing model for batch {batch}: {message}")]
    Optimize {
        /// The batch-size bucket.
        batch: usize,
        /// tract's error chain.
        message: String,
    },
    /// Running the model failed.
    #[error("running model: {0}")]
    Run(String),
    /// The inputs given do not match the signature.
    #[error("{0}")]
    BadInput(String),
}

impl Error {
    /// A short, bounded category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadModel { .. } => "read",
            Error::VerifyDigest { .. } => "digest",
            Error::LoadModel { .. } => "load",
            Error::Signature(_) => "signature",
            Error::Optimize { .. } => "optimize",
            Error::Run(_) => "run",
            Error::BadInput(_) => "bad_input",
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn flat(e: &TractError) -> String {
    format!("{e:#}")
}

/// The format a local model path's name implies: its suffix as for a uri ([`ModelFormat::from_file_name`]), else a
/// folder or any `.nnef`, `.tgz` or `.tar` name is NNEF, and anything else ONNX. Lenient where the spec is strict,
/// because `tractor serve` is handed artifacts and fixtures, not user uris. [`load`] goes by the bytes, where they
/// tell.
pub fn format_of_path(path: &Path) -> ModelFormat {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    ModelFormat::from_file_name(&name).unwrap_or_else(|| {
        if path.is_dir()
            || name.contains(".nnef")
            || name.ends_with(".tgz")
            || name.ends_with(".tar")
        {
            ModelFormat::Nnef
        } else {
            ModelFormat::Onnx
        }
    })
}

/// The platform string of V2 model metadata.
pub fn platform(format: ModelFormat) -> &'static str {
    match format {
        ModelFormat::Onnx => "tract_onnx",
        ModelFormat::Nnef => "tract_nnef",
        ModelFormat::Tflite => "tract_tflite",
        ModelFormat::Tensorflow => "tract_tensorflow",
    }
}

/// One input or output as the Open Inference Protocol describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    /// The tensor's name in the model.
    pub name: String,
    /// Its V2 datatype.
    pub datatype: Datatype,
    /// Its shape; `-1` for a dimension that varies (the batch).
    pub shape: Vec<i64>,
}

/// The inputs and outputs of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// Inputs, in the model's order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in the model's order.
    pub outputs: Vec<TensorSpec>,
    /// What the loader changed that a client should know (e.g. a ZipMap served as its probability tensor).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A loaded, decluttered model, not yet optimized for any batch size.
#[derive(Debug, Clone)]
pub struct Model {
    typed: TypedModel,
    batch: Option<Symbol>,
    signature: Signature,
    format: ModelFormat,
    sha256: String,
    timings: LoadTimings,
}

/// The lowercase hex sha256 of a file (for a directory: not supported, returns an error).
pub fn sha256_file(path: &Path) -> Result<String> {
    let read_err = |source| Error::ReadModel {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Load a model file, checking its sha256 first when one is pinned. The format is what the bytes say (and,
/// between the two protobuf formats, the name), as the loader tells it.
pub fn load(path: &Path, expected_sha256: Option<&str>) -> Result<Model> {
    let mut timings = LoadTimings::default();
    let start = Instant::now();
    let sha256 = if path.is_file() {
        sha256_file(path)?
    } else {
        String::new()
    };
    timings.digest = start.elapsed();
    if let Some(expected) = expected_sha256 {
        let expected = expected.trim().to_lowercase();
        if expected != sha256 {
            return Err(Error::VerifyDigest {
                path: path.to_owned(),
                expected,
                found: sha256,
            });
        }
    }
    // One loader for every format: it names the unnamed batch axis exporters leave (tract cannot type the graph
    // without it), casts TDim outputs to int64, and serves TFLite's int8 edges as float.
    let (typed, format, phases) = loader::load_timed(path)?;
    timings.parse = phases.parse;
    timings.declutter = phases.declutter;
    Model::from_typed(typed, format, sha256, timings)
}

impl Model {
    fn from_typed(
        typed: TypedModel,
        format: ModelFormat,
        sha256: String,
        timings: LoadTimings,
    ) -> Result<Model> {
        let mut batch = None;
        let mut spec = |outlet: OutletId| -> Result<TensorSpec> {
            let node = typed.node(outlet.node);
            let fact = typed
                .outlet_fact(outlet)
                .map_err(|error| Error::Signature(flat(&error)))?;
            let datatype = datatype::from_datum(fact.datum_type).ok_or_else(|| {
                Error::Signature(format!(
                    "{}: datatype {:?} is not supported",
                    node.name, fact.datum_type
                ))
            })?;
            let shape = fact
                .shape
                .iter()
                .enumerate()
                .map(|(axis, dim)| match dim.to_i64() {
                    Ok(size) => size,
                    Err(_) => {
                        // The batch is the symbol on the first axis; others stay variable too.
                        if axis == 0
                            && batch.is_none()
                            && let Some(symbol) = dim.symbols().into_iter().next()
                        {
                            batch = Some(symbol);
                        }
                        -1
                    }
                })
                .collect();
            // ONNX tensor names survive as outlet labels; nodes are named after their first output otherwise.
            let name = typed.outlet_label(outlet).unwrap_or(&node.name).to_owned();
            Ok(TensorSpec {
                name,
                datatype,
                shape,
            })
        };
        let inputs = typed
            .inputs
            .clone()
            .into_iter()
            .map(&mut spec)
            .collect::<Result<Vec<_>>>()?;
        let outputs = typed
            .outputs
            .clone()
            .into_iter()
            .map(&mut spec)
            .collect::<Result<Vec<_>>>()?;
        let notes = loader::notes(&typed);
        Ok(Model {
            typed,
            batch,
            signature: Signature {
                inputs,
                outputs,
                notes,
            },
            format,
            sha256,
            timings,
        })
    }

    /// The model's inputs and outputs.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// What the loader changed or wants people to know (e.g. a ZipMap served as its probability tensor).
    pub fn notes(&self) -> Vec<String> {
        loader::notes(&self.typed)
    }

    /// The format it was loaded from.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// The lowercase hex sha256 of the file (empty for an NNEF directory).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// How long hashing, parsing and decluttering took ([`Runner::timings`] adds the optimization).
    pub fn timings(&self) -> &LoadTimings {
        &self.timings
    }

    /// Whether the first axis of the inputs is a symbolic batch dimension, so requests can be merged.
    pub fn batchable(&self) -> bool {
        self.batch.is_some()
    }

    /// Optimize once per batch-size bucket (powers of two below `max_batch`, and `max_batch`) and return the
    /// shared runner. Bucket plans share the packed weights they have in common; a smaller bucket whose weights
    /// would cost more memory than [`Runner`] allows is left out (see [`Runner::buckets`]).
    ///
    /// Why buckets: a plan optimized for a concrete batch is up to 2× faster than a symbolic one on
    /// convolutions, and tract picks its matmul kernels for the batch it is given.
    pub fn runner(&self, max_batch: usize) -> Result<Runner> {
        self.runner_with_extra_weights(max_batch, DEFAULT_EXTRA_WEIGHT_BYTES)
    }

    /// [`Model::runner`] with its memory bound given: the bytes of packed weights the smaller buckets' plans may
    /// add to the largest bucket's. `0` holds the weights once (a large dense model then runs small batches
    /// padded on a bucket of 8 or so); `usize::MAX` keeps every bucket, each as fast as it can be, at up to one
    /// copy of the weights per bucket.
    pub fn runner_with_extra_weights(
        &self,
        max_batch: usize,
        extra_weight_bytes: usize,
    ) -> Result<Runner> {
        runner::Runner::build(
            &self.typed,
            self.batch.clone(),
            self.signature.clone(),
            max_batch.max(1),
            self.timings.clone(),
            extra_weight_bytes,
        )
    }
}

/// The variables that make every `anyhow` error (tract's error type) capture a backtrace.
pub const BACKTRACE_VARS: [&str; 2] = ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"];

/// Replace this process with itself minus [`BACKTRACE_VARS`], when one of them enables backtraces.
///
/// tract builds `anyhow` errors on some hot paths (shape checks that are expected to fail and are
/// recovered from); with backtraces enabled each of those captures a stack trace, which makes some ops
/// 2.5× slower. std caches the variables on first use and edition 2024 makes `set_var` unsafe (which
/// this workspace forbids), so the clean way out is to `exec` the same binary with the same arguments
/// and a cleaned environment. Returns only if there was nothing to do, or with the exec error.
pub fn reexec_without_backtraces() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let enabled = BACKTRACE_VARS
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| v != "0"));
    if !enabled {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    for k in BACKTRACE_VARS {
        cmd.env_remove(k);
    }
    Err(cmd.exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_of_paths() {
        let cases = [
            ("/m/model.ONNX", ModelFormat::Onnx),
            ("/m/model.nnef.tgz", ModelFormat::Nnef),
            ("/m/model.nnef.tar.gz", ModelFormat::Nnef),
            ("/m/model.tgz", ModelFormat::Nnef),
            ("/m/model.tar", ModelFormat::Nnef),
            ("/m/model.nnef.bak", ModelFormat::Nnef),
            ("/m/model.bin", ModelFormat::Onnx),
            ("/m/digits.tflite", ModelFormat::Tflite),
            ("/m/frozen.pb", ModelFormat::Tensorflow),
        ];
        for (path, want) in cases {
            assert_eq!(format_of_path(Path::new(path)), want, "{path}");
        }
        assert_eq!(format_of_path(&std::env::temp_dir()), ModelFormat::Nnef);
    }
}
