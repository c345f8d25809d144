//! The ai.onnx.ml operators tractor adds to tract's ONNX loader, the NNEF extension that stores them in
//! artifacts, the coverage table generated from both registries, and the inference thread budget the ops that split
//! a batch share.
//!
//! Each op follows the ONNX spec (Operators-ml.md) and, where the spec is silent, onnxruntime's CPU kernels,
//! since those produce the reference outputs users compare against.

mod encoders;
mod feature;
mod register;
mod scaler;
pub mod svm;
pub mod threads;
pub mod tree;
mod zipmap;

use tract_nnef::internal::*;
use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::NodeProto;

use register::{Registration, registrations};
pub use zipmap::ZIPMAP_NOTE;

/// Our ops, replacing tract's of the same name: ONNX op type, reader, and what the coverage table says about it.
const OURS: &[Registration] = registrations! {
    "ArrayFeatureExtractor" => feature::array_feature_extractor,
        "onnxruntime's shapes (tract's drops the axis for a scalar index)";
    "Binarizer" => encoders::binarizer,
        "1 where X > threshold, in X's type";
    "FeatureVectorizer" => encoders::feature_vectorizer,
        "inputs cast to float and concatenated; a wider input is truncated";
    "Imputer" => encoders::imputer,
        "NaN or a given value replaced, one value or one per feature";
    "LabelEncoder" => encoders::label_encoder,
        "numeric keys and values (opsets 2 and 4); strings are refused";
    "OneHotEncoder" => encoders::one_hot_encoder,
        "integer categories; an unknown one gives zeros";
    "Scaler" => scaler::scaler,
        "(X - offset) * scale";
    "SVMClassifier" => svm::classifier_onnx,
        "libsvm and liblinear layouts, all kernels, Platt probabilities; integer class labels";
    "SVMRegressor" => svm::regressor_onnx,
        "libsvm and liblinear layouts, all kernels, one-class";
    "TreeEnsemble" => tree::ensemble_onnx,
        "opset 5; the same evaluator; float32 only; set membership as equality chains";
    "TreeEnsembleClassifier" => tree::classifier_onnx,
        "flat-array evaluator, replaces tract's; integer class labels";
    "TreeEnsembleRegressor" => tree::regressor_onnx,
        "flat-array evaluator; all aggregate and post-transform modes";
    "ZipMap" => zipmap::zipmap,
        "served as the probability tensor that feeds it (a map has no tensor form in OIP)";
};

/// Every operator of the ai.onnx.ml domain (ONNX 1.16), for the coverage table.
const ML_DOMAIN: &[&str] = &[
    "ArrayFeatureExtractor",
    "Binarizer",
    "CastMap",
    "CategoryMapper",
    "DictVectorizer",
    "FeatureVectorizer",
    "Imputer",
    "LabelEncoder",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
    "OneHotEncoder",
    "SVMClassifier",
    "SVMRegressor",
    "Scaler",
    "TreeEnsemble",
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "ZipMap",
];

/// Why an op we do not run is missing, where there is more to say than "not implemented".
const NOT_RUN: &[(&str, &str)] = &[
    ("CastMap", "map input: no tensor form in OIP"),
    ("DictVectorizer", "map input: no tensor form in OIP"),
];

/// tract's ONNX framework with tractor's ops registered (ours replace tract's of the same name).
pub fn onnx() -> tract_onnx::Onnx {
    let mut framework = tract_onnx::onnx();
    register(&mut framework.op_register);
    framework
}

fn register(reg: &mut OnnxOpRegister) {
    for registration in OURS {
        reg.insert(registration.op, registration.build);
    }
}

/// The NNEF extension that stores tractor's typed ops in artifacts.
pub fn nnef_registry() -> Registry {
    let mut registry = Registry::new("tractor_ml")
        .with_doc("Extension `tractor_ml`: tractor's ai.onnx.ml operators (tree ensembles, SVMs).");
    register::register_nnef::<tree::TreeEnsemble>(&mut registry);
    register::register_nnef::<svm::SvmOp>(&mut registry);
    registry
}

/// Who runs an ONNX operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Support {
    /// tractor's own implementation.
    Tractor,
    /// tract-onnx's.
    Tract,
    /// Nobody: a model using it fails to load with `UnsupportedOp`.
    No,
}

/// Who runs `op` (any domain), from the registries the loader really uses.
pub fn support(op: &str) -> Support {
    if OURS.iter().any(|registration| registration.op == op) {
        Support::Tractor
    } else if tract_onnx::onnx().op_register.0.contains_key(op) {
        Support::Tract
    } else {
        Support::No
    }
}

/// The README's coverage table of the ai.onnx.ml domain, generated from the registries.
pub fn coverage_markdown() -> String {
    let mut out = String::from("| ai.onnx.ml operator | runs on | notes |\n| --- | --- | --- |\n");
    for op in ML_DOMAIN {
        let note = OURS
            .iter()
            .find(|registration| registration.op == *op)
            .map(|registration| registration.note)
            .or_else(|| NOT_RUN.iter().find(|(n, _)| n == op).map(|(_, note)| *note))
            .unwrap_or("");
        let who = match support(op) {
            Support::Tractor => "tractor",
            Support::Tract => "tract",
            Support::No => "**not supported**",
        };
        out.push_str(&format!("| `{op}` | {who} | {note} |\n"));
    }
    let standard = tract_onnx::onnx()
        .op_register
        .0
        .keys()
        .filter(|k| !ML_DOMAIN.contains(&k.as_str()))
        .count();
    out.push_str(&format!(
        "\nOperators of the standard ONNX domain: the {standard} that tract-onnx 0.23.9 registers.\n"
    ));
    out
}

fn attr_i64s(node: &NodeProto, name: &str) -> TractResult<Vec<i64>> {
    Ok(node
        .get_attr_opt_slice::<i64>(name)?
        .map(<[i64]>::to_vec)
        .unwrap_or_default())
}

fn attr_f32s(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    Ok(attr_opt_f32s(node, name)?.unwrap_or_default())
}

fn attr_opt_f32s(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    Ok(node.get_attr_opt_slice::<f32>(name)?.map(<[f32]>::to_vec))
}

fn attr_strs(node: &NodeProto, name: &str) -> TractResult<Vec<String>> {
    Ok(node.get_attr_opt_vec::<String>(name)?.unwrap_or_default())
}

/// The `*_as_tensor` attributes carry double-precision values; computing them in f32 would not match
/// onnxruntime's results, so say so instead.
fn reject_double_attrs(node: &NodeProto) -> TractResult<()> {
    if let Some(a) = node
        .attribute
        .iter()
        .find(|a| a.name.ends_with("_as_tensor"))
    {
        bail!(
            "{}: double-precision attribute {} is not supported (export with float32 inputs)",
            node.op_type,
            a.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_ops_replace_tracts_in_the_loader() {
        let framework = onnx();
        assert!(framework.op_register.0.contains_key("Scaler"));
        assert_eq!(support("TreeEnsembleClassifier"), Support::Tractor);
        assert_eq!(support("LinearClassifier"), Support::Tract);
        assert_eq!(support("DictVectorizer"), Support::No);
    }

    /// The README's table is this module's output: `TRACTOR_UPDATE_COVERAGE=1 cargo test -p tractor-onnx-ml --lib
    /// readme` rewrites it.
    #[test]
    fn readme_coverage_table_is_current() {
        const BEGIN: &str = "<!-- BEGIN ml-coverage: generated, see above; do not edit -->\n";
        const END: &str = "<!-- END ml-coverage -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let start = readme.find(BEGIN).expect("README has the coverage markers") + BEGIN.len();
        let end = readme[start..]
            .find(END)
            .expect("README has the end marker")
            + start;
        let want = coverage_markdown();
        if std::env::var_os("TRACTOR_UPDATE_COVERAGE").is_some() {
            let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
            std::fs::write(&path, updated).expect("writing README.md");
        } else {
            assert_eq!(
                readme[start..end],
                want,
                "README coverage table is stale: run TRACTOR_UPDATE_COVERAGE=1 cargo test -p tractor-onnx-ml --lib readme"
            );
        }
    }

    #[test]
    fn coverage_lists_every_ml_op_once() {
        let table = coverage_markdown();
        for op in ML_DOMAIN {
            assert_eq!(table.matches(&format!("| `{op}` |")).count(), 1, "{op}");
        }
    }
}
