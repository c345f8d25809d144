//! Reading the opset 1–3 tree ensembles' ONNX attributes (`nodes_*`, `class_*`/`target_*`) into the flat node array,
//! and the ONNX readers of the three tree ensemble ops.

use tract_nnef::internal::*;
use tract_onnx::pb::NodeProto;

use super::{Aggregate, Classes, Ensemble, Mode, Node, PostTransform, TreeEnsemble, Walk};
use crate::register::OnnxPredictor;
use crate::{attr_f32s, attr_i64s, attr_opt_f32s, attr_strs, reject_double_attrs};

impl Mode {
    fn parse(s: &str) -> TractResult<Mode> {
        Ok(match s {
            "LEAF" => Mode::Leaf,
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            other => bail!("unsupported tree node mode {other:?}"),
        })
    }
}

impl Aggregate {
    pub(super) fn parse(s: &str) -> TractResult<Aggregate> {
        Ok(match s {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => bail!("unsupported aggregate_function {other:?}"),
        })
    }
}

impl PostTransform {
    pub(crate) fn parse(s: &str) -> TractResult<PostTransform> {
        Ok(match s {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => bail!("unsupported post_transform {other:?}"),
        })
    }
}

impl Ensemble {
    /// Parse a TreeEnsembleClassifier (`classifier`) or TreeEnsembleRegressor node's attributes.
    pub fn from_onnx(node: &NodeProto, classifier: bool) -> TractResult<Ensemble> {
        reject_double_attrs(node)?;
        let tree_ids = attr_i64s(node, "nodes_treeids")?;
        let node_ids = attr_i64s(node, "nodes_nodeids")?;
        let features = attr_i64s(node, "nodes_featureids")?;
        let thresholds = attr_f32s(node, "nodes_values")?;
        let modes = attr_strs(node, "nodes_modes")?;
        let true_ids = attr_i64s(node, "nodes_truenodeids")?;
        let false_ids = attr_i64s(node, "nodes_falsenodeids")?;
        let nan_true = node
            .get_attr_opt_slice::<i64>("nodes_missing_value_tracks_true")?
            .map(<[i64]>::to_vec)
            .unwrap_or_else(|| vec![0; tree_ids.len()]);
        let node_count = tree_ids.len();
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_values", thresholds.len()),
            ("nodes_modes", modes.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
            ("nodes_missing_value_tracks_true", nan_true.len()),
        ] {
            ensure!(
                len == node_count,
                "{name} has {len} entries, nodes_treeids has {node_count}"
            );
        }
        ensure!(node_count > 0, "a tree ensemble without nodes");
        let prefix = if classifier { "class" } else { "target" };
        let w_tree = attr_i64s(node, &format!("{prefix}_treeids"))?;
        let w_node = attr_i64s(node, &format!("{prefix}_nodeids"))?;
        let w_target = attr_i64s(node, &format!("{prefix}_ids"))?;
        let w_value = attr_f32s(node, &format!("{prefix}_weights"))?;
        ensure!(
            w_node.len() == w_tree.len()
                && w_target.len() == w_tree.len()
                && w_value.len() == w_tree.len(),
            "{prefix}_treeids, _nodeids, _ids and _weights differ in length"
        );

        let (n_targets, classes) = if classifier {
            let labels = match node.get_attr_opt_slice::<i64>("classlabels_int64s")? {
                Some(class_labels) if !class_labels.is_empty() => class_labels.to_vec(),
                _ => bail!(
                    "string class labels are not supported: export the classifier with integer labels"
                ),
            };
            let distinct: std::collections::BTreeSet<i64> = w_target.iter().copied().collect();
            let binary = labels.len() == 2 && distinct.len() == 1;
            let all_positive = w_value.iter().all(|weight| *weight >= 0.0);
            (
                labels.len(),
                Some(Classes {
                    labels,
                    binary,
                    all_positive,
                }),
            )
        } else {
            let targets: i64 = node.get_attr_opt("n_targets")?.unwrap_or(1);
            ensure!(targets >= 1, "n_targets must be at least 1");
            (targets as usize, None)
        };
        for target in &w_target {
            ensure!(
                (0..n_targets as i64).contains(target),
                "leaf weight for target/class {target}, but there are {n_targets}"
            );
        }
        let aggregate = if classifier {
            Aggregate::Sum
        } else {
            Aggregate::parse(
                &node
                    .get_attr_opt::<String>("aggregate_function")?
                    .unwrap_or_else(|| "SUM".into()),
            )?
        };
        let post = PostTransform::parse(
            &node
                .get_attr_opt::<String>("post_transform")?
                .unwrap_or_else(|| "NONE".into()),
        )?;
        let base_values = attr_opt_f32s(node, "base_values")?.unwrap_or_default();

        // Lay the nodes out tree by tree, each tree's nodes in id order, so children are root + id.
        let mut order: Vec<usize> = (0..node_count).collect();
        order.sort_by_key(|&entry| (tree_ids[entry], node_ids[entry]));
        let mut index = std::collections::HashMap::with_capacity(node_count);
        for (pos, &entry) in order.iter().enumerate() {
            ensure!(
                index
                    .insert((tree_ids[entry], node_ids[entry]), pos)
                    .is_none(),
                "node {} of tree {} is defined twice",
                node_ids[entry],
                tree_ids[entry]
            );
        }
        let mut leaf_weights: std::collections::HashMap<(i64, i64), Vec<usize>> =
            std::collections::HashMap::new();
        for entry in 0..w_tree.len() {
            leaf_weights
                .entry((w_tree[entry], w_node[entry]))
                .or_default()
                .push(entry);
        }
        let mut nodes = Vec::with_capacity(node_count);
        let mut roots = Vec::new();
        let mut weight_targets = Vec::with_capacity(w_tree.len());
        let mut weight_values = Vec::with_capacity(w_tree.len());
        let mut n_features = 0usize;
        let mut prev_tree = None;
        for &entry in &order {
            let tree = tree_ids[entry];
            if prev_tree != Some(tree) {
                prev_tree = Some(tree);
                roots.push(nodes.len() as u32);
            }
            let mode = Mode::parse(&modes[entry])?;
            let child = |id: i64, what: &str| -> TractResult<u32> {
                index
                    .get(&(tree, id))
                    .map(|position| *position as u32)
                    .ok_or_else(|| format_err!("tree {tree}: {what} node {id} does not exist"))
            };
            let node = if mode == Mode::Leaf {
                let first_weight = weight_values.len() as u32;
                for &weight in leaf_weights
                    .get(&(tree, node_ids[entry]))
                    .into_iter()
                    .flatten()
                {
                    weight_targets.push(w_target[weight] as u32);
                    weight_values.push(w_value[weight]);
                }
                Node {
                    feature: 0,
                    threshold: 0.0,
                    a: first_weight,
                    b: weight_values.len() as u32,
                    mode,
                    nan_true: false,
                }
            } else {
                ensure!(
                    features[entry] >= 0,
                    "negative feature id {}",
                    features[entry]
                );
                n_features = n_features.max(features[entry] as usize + 1);
                Node {
                    feature: features[entry] as u32,
                    threshold: thresholds[entry],
                    a: child(true_ids[entry], "true")?,
                    b: child(false_ids[entry], "false")?,
                    mode,
                    nan_true: nan_true[entry] != 0,
                }
            };
            nodes.push(node);
        }
        let ensemble = Ensemble {
            nodes,
            roots,
            weight_targets,
            weight_values,
            n_targets,
            n_features,
            aggregate,
            post,
            base_values,
            classes,
            walk: Walk::default(),
        };
        ensemble.ready()
    }
}

/// Reads an ONNX `TreeEnsembleClassifier` node.
pub(crate) fn classifier_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<OnnxPredictor<TreeEnsemble>> {
    Ok(onnx_op(Ensemble::from_onnx(node, true)?))
}

/// Reads an ONNX `TreeEnsemble` node (ai.onnx.ml opset 5).
pub(crate) fn ensemble_onnx(
    ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<OnnxPredictor<TreeEnsemble>> {
    Ok(onnx_op(Ensemble::from_onnx_v5(ctx, node)?))
}

/// Reads an ONNX `TreeEnsembleRegressor` node.
pub(crate) fn regressor_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<OnnxPredictor<TreeEnsemble>> {
    Ok(onnx_op(Ensemble::from_onnx(node, false)?))
}

/// The loader's op for a parsed ensemble, whichever ONNX op it came from.
fn onnx_op(ensemble: Ensemble) -> OnnxPredictor<TreeEnsemble> {
    let ensemble = Arc::new(ensemble);
    OnnxPredictor(TreeEnsemble { ensemble })
}
