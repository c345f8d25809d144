//! ai.onnx.ml opset 5 `TreeEnsemble` (ONNX Operators-ml.md; onnx's reference evaluator,
//! `onnx/reference/ops/aionnxml/op_tree_ensemble.py`, where the text is silent), read into the same flat node
//! array as the opset 1–3 ops, so it runs on the same walk.
//!
//! The layout differs from opset 3: interior nodes (`nodes_*`) and leaves (`leaf_*`, one target and weight each)
//! are separate arrays, a child is an index into one or the other (`nodes_trueleafs`/`nodes_falseleafs`), trees
//! start at `tree_roots`, modes and thresholds are tensors, and enums are integers. `BRANCH_MEMBER` (feature in a
//! set, the sets listed in `membership_values` delimited by NaN) becomes a chain of `BRANCH_EQ` tests that all
//! send a member to the same true subtree, so the walk needs no new comparison. Float32 models only: thresholds
//! and weights in double or half precision are refused with a message, as the opset 3 doubles are.
//!
//! Where the reference evaluator and onnxruntime's opset 3 regressor differ, this follows onnxruntime (whose
//! opset 5 kernel, from 1.20, maps onto the opset 3 one): `post_transform` is applied (the reference ignores
//! it), and a target that no tree of a row reaches scores 0 under MIN and MAX (the reference leaves the
//! largest or smallest float).

use tract_nnef::internal::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{NodeProto, TensorProto};

use super::{Aggregate, Ensemble, Mode, Node, PostTransform, Walk};
use crate::attr_i64s;

/// A child as the attributes name it.
#[derive(Debug, Clone, Copy)]
enum Child {
    Interior(usize),
    Leaf(usize),
}

/// The opset 5 attributes, checked for length and type.
struct Attrs {
    splits: Vec<f32>,
    features: Vec<i64>,
    modes: Vec<u8>,
    true_ids: Vec<i64>,
    false_ids: Vec<i64>,
    true_leaf: Vec<i64>,
    false_leaf: Vec<i64>,
    nan_true: Vec<i64>,
    leaf_targets: Vec<i64>,
    leaf_weights: Vec<f32>,
    roots: Vec<i64>,
    /// Each `BRANCH_MEMBER` node's set, by node index.
    sets: Vec<Vec<f32>>,
}

/// Opset 5's mode number for `BRANCH_MEMBER`; 0 (`BRANCH_LEQ`) to 5 (`BRANCH_NEQ`) are [`Mode`]'s branch
/// modes in the same order, one below their `Mode` number (0 there is the leaf).
const MEMBER: u8 = 6;

impl Attrs {
    fn read(ctx: &ParsingContext, node: &NodeProto) -> TractResult<Attrs> {
        let tensor = |name: &str| -> TractResult<Option<Tensor>> {
            node.get_attr_opt::<&TensorProto>(name)?
                .map(|proto| ctx.load_tensor(proto))
                .transpose()
        };
        let floats = |name: &str| -> TractResult<Option<Vec<f32>>> {
            let Some(loaded) = tensor(name)? else {
                return Ok(None);
            };
            ensure!(
                loaded.datum_type() == f32::datum_type(),
                "TreeEnsemble: {name} is {:?}; only float32 tree ensembles are supported (export with float32 \
                 inputs)",
                loaded.datum_type()
            );
            Ok(Some(loaded.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
        };
        let splits = floats("nodes_splits")?.context("TreeEnsemble without nodes_splits")?;
        let leaf_weights = floats("leaf_weights")?.context("TreeEnsemble without leaf_weights")?;
        let modes = tensor("nodes_modes")?.context("TreeEnsemble without nodes_modes")?;
        let modes = modes.cast_to::<i64>()?;
        let modes = modes
            .try_as_plain_ram()?
            .as_slice::<i64>()?
            .iter()
            .map(|mode| {
                u8::try_from(*mode)
                    .ok()
                    .filter(|mode| *mode <= MEMBER)
                    .ok_or_else(|| format_err!("TreeEnsemble: unknown node mode {mode}"))
            })
            .collect::<TractResult<Vec<u8>>>()?;
        let features = attr_i64s(node, "nodes_featureids")?;
        let node_count = features.len();
        let nan_true = match node.get_attr_opt_slice::<i64>("nodes_missing_value_tracks_true")? {
            Some(tracks) => tracks.to_vec(),
            None => vec![0; node_count],
        };
        let attrs = Attrs {
            splits,
            modes,
            true_ids: attr_i64s(node, "nodes_truenodeids")?,
            false_ids: attr_i64s(node, "nodes_falsenodeids")?,
            true_leaf: attr_i64s(node, "nodes_trueleafs")?,
            false_leaf: attr_i64s(node, "nodes_falseleafs")?,
            nan_true,
            leaf_targets: attr_i64s(node, "leaf_targetids")?,
            leaf_weights,
            roots: attr_i64s(node, "tree_roots")?,
            features,
            sets: vec![],
        };
        for (name, len) in [
            ("nodes_splits", attrs.splits.len()),
            ("nodes_modes", attrs.modes.len()),
            ("nodes_truenodeids", attrs.true_ids.len()),
            ("nodes_falsenodeids", attrs.false_ids.len()),
            ("nodes_trueleafs", attrs.true_leaf.len()),
            ("nodes_falseleafs", attrs.false_leaf.len()),
            ("nodes_missing_value_tracks_true", attrs.nan_true.len()),
        ] {
            ensure!(
                len == node_count,
                "TreeEnsemble: {name} has {len} entries, nodes_featureids has {node_count}"
            );
        }
        ensure!(
            attrs.leaf_targets.len() == attrs.leaf_weights.len(),
            "TreeEnsemble: leaf_targetids has {} entries, leaf_weights has {}",
            attrs.leaf_targets.len(),
            attrs.leaf_weights.len()
        );
        ensure!(
            !attrs.roots.is_empty() && node_count > 0,
            "TreeEnsemble without trees"
        );
        let members = floats("membership_values")?.unwrap_or_default();
        Ok(Attrs {
            sets: attrs.member_sets(&members)?,
            ..attrs
        })
    }

    /// The NaN-delimited sets, given to the `BRANCH_MEMBER` nodes in node order.
    fn member_sets(&self, members: &[f32]) -> TractResult<Vec<Vec<f32>>> {
        let mut lists = members.split(|v| v.is_nan());
        let mut sets = vec![vec![]; self.modes.len()];
        for (i, _) in self.modes.iter().enumerate().filter(|(_, m)| **m == MEMBER) {
            sets[i] = lists
                .next()
                .with_context(|| {
                    format!("TreeEnsemble: membership_values has no set for BRANCH_MEMBER node {i}")
                })?
                .to_vec();
        }
        Ok(sets)
    }

    fn child(&self, id: i64, leaf: i64) -> TractResult<Child> {
        let (len, what) = if leaf != 0 {
            (self.leaf_weights.len(), "leaf")
        } else {
            (self.modes.len(), "node")
        };
        let i = usize::try_from(id)
            .ok()
            .filter(|i| *i < len)
            .ok_or_else(|| format_err!("TreeEnsemble: {what} {id} does not exist"))?;
        Ok(if leaf != 0 {
            Child::Leaf(i)
        } else {
            Child::Interior(i)
        })
    }
}

/// A flat-array slot waiting for a child's position: (node, true side).
type Slot = (usize, bool);

impl Ensemble {
    /// Parse an opset 5 `TreeEnsemble` node.
    pub fn from_onnx_v5(ctx: &ParsingContext, node: &NodeProto) -> TractResult<Ensemble> {
        let attrs = Attrs::read(ctx, node)?;
        let n_targets = match node.get_attr_opt::<i64>("n_targets")? {
            Some(target) => usize::try_from(target)
                .ok()
                .filter(|target| *target >= 1)
                .ok_or_else(|| format_err!("TreeEnsemble: n_targets must be at least 1"))?,
            None => attrs
                .leaf_targets
                .iter()
                .max()
                .map_or(1, |target| *target as usize + 1),
        };
        for target in &attrs.leaf_targets {
            ensure!(
                (0..n_targets as i64).contains(target),
                "TreeEnsemble: a leaf for target {target}, but there are {n_targets}"
            );
        }
        let aggregate = match node.get_attr_opt::<i64>("aggregate_function")?.unwrap_or(1) {
            0 => Aggregate::Average,
            1 => Aggregate::Sum,
            2 => Aggregate::Min,
            3 => Aggregate::Max,
            other => bail!("TreeEnsemble: unknown aggregate_function {other}"),
        };
        let post = match node.get_attr_opt::<i64>("post_transform")?.unwrap_or(0) {
            0 => PostTransform::None,
            1 => PostTransform::Softmax,
            2 => PostTransform::Logistic,
            3 => PostTransform::SoftmaxZero,
            4 => PostTransform::Probit,
            other => bail!("TreeEnsemble: unknown post_transform {other}"),
        };

        // Each tree laid out from its root, a node before its children (the walk's invariant). A child named
        // by two parents (a member chain's true side; a leaf both sides of a one-leaf tree) is laid out once
        // per naming, except a member chain's, which all its tests share; the limit stops a file whose
        // interior nodes are shared or cyclic from growing the array without end.
        let member_nodes: usize = attrs.sets.iter().map(Vec::len).sum();
        let limit =
            2 * (attrs.modes.len() + attrs.leaf_weights.len() + member_nodes) + attrs.roots.len();
        let mut nodes: Vec<Node> = Vec::new();
        let mut weight_targets = Vec::new();
        let mut weight_values = Vec::new();
        let mut roots = Vec::with_capacity(attrs.roots.len());
        let mut n_features = 0usize;
        for &root in &attrs.roots {
            roots.push(nodes.len() as u32);
            let mut todo: Vec<(Child, Vec<Slot>)> = vec![(attrs.child(root, 0)?, vec![])];
            while let Some((child, slots)) = todo.pop() {
                ensure!(
                    nodes.len() < limit,
                    "TreeEnsemble: the trees' nodes are shared between branches or form a cycle"
                );
                let at = nodes.len() as u32;
                for &(parent, side) in &slots {
                    let parent_node = &mut nodes[parent];
                    if side {
                        parent_node.a = at
                    } else {
                        parent_node.b = at
                    }
                }
                let interior = match child {
                    Child::Leaf(leaf) => {
                        let weight = weight_values.len() as u32;
                        weight_targets.push(attrs.leaf_targets[leaf] as u32);
                        weight_values.push(attrs.leaf_weights[leaf]);
                        nodes.push(Node {
                            feature: 0,
                            threshold: 0.0,
                            a: weight,
                            b: weight + 1,
                            mode: Mode::Leaf,
                            nan_true: false,
                        });
                        continue;
                    }
                    Child::Interior(interior) => interior,
                };
                ensure!(
                    attrs.features[interior] >= 0,
                    "TreeEnsemble: negative feature id {}",
                    attrs.features[interior]
                );
                let feature = attrs.features[interior] as usize;
                n_features = n_features.max(feature + 1);
                let test = |mode, threshold| Node {
                    feature: feature as u32,
                    threshold,
                    a: 0,
                    b: 0,
                    mode,
                    nan_true: attrs.nan_true[interior] != 0,
                };
                let true_child =
                    attrs.child(attrs.true_ids[interior], attrs.true_leaf[interior])?;
                let false_child =
                    attrs.child(attrs.false_ids[interior], attrs.false_leaf[interior])?;
                if attrs.modes[interior] == MEMBER {
                    // One equality test per member, each false side the next test, the last's the false child.
                    let first = nodes.len();
                    for (position, &member) in attrs.sets[interior].iter().enumerate() {
                        let mut member_test = test(Mode::Eq, member);
                        member_test.b = (first + position + 1) as u32;
                        nodes.push(member_test);
                    }
                    if nodes.len() == first {
                        // An empty set: nothing is a member, every row goes to the false side. A parent's
                        // slot waits for that side, laid out where this node would have been.
                        todo.push((false_child, slots));
                        continue;
                    }
                    let last = nodes.len() - 1;
                    todo.push((false_child, vec![(last, false)]));
                    todo.push((
                        true_child,
                        (first..=last).map(|position| (position, true)).collect(),
                    ));
                } else {
                    let me = nodes.len();
                    nodes.push(test(
                        Mode::from_u8(attrs.modes[interior] + 1)?,
                        attrs.splits[interior],
                    ));
                    todo.push((false_child, vec![(me, false)]));
                    todo.push((true_child, vec![(me, true)]));
                }
            }
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
            base_values: vec![],
            classes: None,
            walk: Walk::default(),
        };
        ensemble.ready()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tract_nnef::internal::Framework;
    use tract_onnx::pb::{AttributeProto, ModelProto};

    /// The iris opset 5 fixture (tests/fixtures/make_tabular_models.py), its TreeEnsemble changed by `edit`;
    /// the error loading it, or `None` when it loads.
    fn load_edited(edit: impl FnOnce(&mut Vec<AttributeProto>)) -> Option<String> {
        let framework = crate::onnx();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/iris_trees_v5.onnx");
        let mut proto: ModelProto = framework.proto_model_for_path(&path).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        edit(&mut graph.node[0].attribute);
        framework
            .model_for_proto_model(&proto)
            .err()
            .map(|e| format!("{e:?}"))
    }

    fn attr<'a>(attrs: &'a mut [AttributeProto], name: &str) -> &'a mut AttributeProto {
        attrs.iter_mut().find(|a| a.name == name).unwrap()
    }

    #[test]
    fn the_fixture_loads() {
        assert_eq!(load_edited(|_| ()), None);
    }

    #[test]
    fn a_child_that_leads_back_is_refused() {
        let err = load_edited(|a| {
            // Node 1's true side back to node 0, the first tree's root: a cycle.
            attr(a, "nodes_truenodeids").ints[1] = 0;
            attr(a, "nodes_trueleafs").ints[1] = 0;
        })
        .expect("a cyclic tree loaded");
        assert!(err.contains("form a cycle"), "{err}");
    }

    #[test]
    fn double_thresholds_are_refused_with_the_reason() {
        let err = load_edited(|a| {
            let t = attr(a, "nodes_splits").t.as_mut().unwrap();
            let values: Vec<f32> = t
                .raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            t.raw_data = values
                .iter()
                .flat_map(|v| f64::from(*v).to_le_bytes())
                .collect();
            t.data_type = tract_onnx::pb::tensor_proto::DataType::Double as i32;
        })
        .expect("double thresholds loaded");
        assert!(err.contains("only float32 tree ensembles"), "{err}");
    }

    #[test]
    fn member_nodes_without_their_sets_are_refused() {
        let err = load_edited(|a| a.retain(|a| a.name != "membership_values"))
            .expect("BRANCH_MEMBER without sets loaded");
        assert!(err.contains("membership_values has no set"), "{err}");
    }

    #[test]
    fn an_unknown_mode_is_refused() {
        let err = load_edited(|a| {
            attr(a, "nodes_modes").t.as_mut().unwrap().raw_data[0] = 7;
        })
        .expect("mode 7 loaded");
        assert!(err.contains("unknown node mode 7"), "{err}");
    }
}
