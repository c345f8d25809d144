//! Tree ensembles: ai.onnx.ml `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (opset 1–3, ONNX
//! Operators-ml.md) and `TreeEnsemble` (opset 5, read in [`v5`]), evaluated over one flat node array, with
//! onnxruntime's conventions where the spec is silent (which classes count as scored, the binary one-class
//! layout, base values with two classes).
//!
//! tract's own classifier finds each tree's leaf by a linear skip and is 50–1000× slower than onnxruntime; this
//! one is registered in its place. Its walk: 16-byte nodes whose leaves point to themselves, so every walk takes
//! its tree's depth in steps with no branch on the node kind or the comparison (the child is indexed by the
//! outcome); eight (tree, row) walks in lockstep, so their loads overlap; tree by tree over the rows, so a tree
//! stays in cache; and, with fewer rows than lanes (batch 1), several trees of a row at once.
//!
//! Threads: a batch with enough walks is split by rows across helper threads from the process's inference thread
//! budget ([`crate::threads`]: `tractor serve --threads`, default the available cores). The caller counts against
//! the budget, so concurrent batches on a busy server run one thread each; it takes chunks itself and never waits
//! for a helper to wake ([`crate::threads::split`]). Each row sums its trees in tree order on whichever thread
//! takes it, so the outputs do not depend on the split and match onnxruntime's rounding.
//!
//! The code is split by role: `parse` reads the ONNX attributes, `evaluate` walks the trees, `nnef` stores the
//! ensemble in artifacts and reads it back, and `v5` reads opset 5's layout.

use tract_nnef::internal::*;

mod evaluate;
mod nnef;
mod parse;
mod v5;

pub(crate) use parse::{classifier_onnx, ensemble_onnx, regressor_onnx};

/// How a branch node compares the feature with its threshold; `true` goes to the true child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Leaf = 0,
    Leq = 1,
    Lt = 2,
    Gte = 3,
    Gt = 4,
    Eq = 5,
    Neq = 6,
}

impl Mode {
    fn from_u8(v: u8) -> TractResult<Mode> {
        [
            Mode::Leaf,
            Mode::Leq,
            Mode::Lt,
            Mode::Gte,
            Mode::Gt,
            Mode::Eq,
            Mode::Neq,
        ]
        .get(v as usize)
        .copied()
        .ok_or_else(|| format_err!("bad tree node mode {v}"))
    }
}

/// How the leaf values of the trees combine per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Sum (the classifier's only mode).
    Sum,
    /// Sum divided by the number of trees.
    Average,
    /// Smallest leaf value.
    Min,
    /// Largest leaf value.
    Max,
}

/// What is applied to the aggregated scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    /// Nothing.
    None,
    /// 1 / (1 + e^-x) per score.
    Logistic,
    /// Softmax over the scores of a row.
    Softmax,
    /// Softmax that leaves zero scores at (almost) zero.
    SoftmaxZero,
    /// The inverse of the normal CDF per score.
    Probit,
}

/// One node. A branch holds its feature, threshold and the two child indices (absolute in the flat array); a
/// leaf holds the range of its weights in `[a, b)` of the weight arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    feature: u32,
    threshold: f32,
    a: u32,
    b: u32,
    mode: Mode,
    nan_true: bool,
}

/// One node as the walk reads it, 16 bytes. A leaf points to itself on both sides, so a fixed number of steps
/// (the tree's depth) lands every row on its leaf without a branch on the node kind.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Step {
    /// Feature index; the top bit set when a NaN feature goes to the true child.
    feature: u32,
    threshold: f32,
    /// `[false child, true child]`, indexed by the comparison's outcome.
    next: [u32; 2],
}

/// The nodes as the walk reads them, derived from [`Ensemble::nodes`].
#[derive(Debug, Clone, PartialEq, Default)]
struct Walk {
    steps: Vec<Step>,
    /// The longest root-to-leaf path of each tree, in steps.
    depths: Vec<u32>,
    /// The comparison every branch node makes, when they all make the same one (sklearn: LEQ, LightGBM and
    /// XGBoost: LT), so the walk compiles it in; `None` reads each node's mode.
    mode: Option<Mode>,
    /// Whether any node sends a NaN feature to its true child; without, the walk skips the NaN test.
    nan_true: bool,
    /// When every leaf has exactly one weight (regressors with one target, binary classifiers), its target and
    /// value by node index, read without going through the weight ranges.
    single: Option<Vec<(u32, f32)>>,
}

/// The leaf-class layout of a classifier, as onnxruntime decides it from the weights.
#[derive(Debug, Clone, PartialEq)]
struct Classes {
    labels: Vec<i64>,
    /// Two labels, but leaf weights for one class only: the other class's score is derived.
    binary: bool,
    /// No negative leaf weight: the one score is a probability (derived class = 1 - p).
    all_positive: bool,
}

/// A parsed tree ensemble, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    weight_targets: Vec<u32>,
    weight_values: Vec<f32>,
    n_targets: usize,
    n_features: usize,
    aggregate: Aggregate,
    post: PostTransform,
    base_values: Vec<f32>,
    classes: Option<Classes>,
    walk: Walk,
}

impl Ensemble {
    /// Number of score columns (targets or classes).
    pub fn n_targets(&self) -> usize {
        self.n_targets
    }

    /// Whether the op also returns a label.
    pub fn is_classifier(&self) -> bool {
        self.classes.is_some()
    }

    /// Check, then derive the walk's layout.
    fn ready(mut self) -> TractResult<Ensemble> {
        self.check()?;
        self.walk = Walk::new(
            &self.nodes,
            &self.roots,
            &self.weight_targets,
            &self.weight_values,
        );
        Ok(self)
    }

    /// Every index in range and every walk finite, so `eval` cannot panic or loop on a hostile file.
    fn check(&self) -> TractResult<()> {
        let node_count = self.nodes.len() as u32;
        for (pos, node) in self.nodes.iter().enumerate() {
            if node.mode == Mode::Leaf {
                ensure!(
                    node.a <= node.b && node.b as usize <= self.weight_values.len(),
                    "leaf weights out of range"
                );
            } else {
                // Children after their parent: trees are acyclic and every walk ends at a leaf.
                ensure!(
                    node.a < node_count
                        && node.b < node_count
                        && node.a as usize > pos
                        && node.b as usize > pos,
                    "tree node {pos}: children must come after their parent"
                );
                ensure!(
                    (node.feature as usize) < self.n_features,
                    "feature out of range"
                );
            }
        }
        ensure!(
            self.roots.iter().all(|root| *root < node_count),
            "tree root out of range"
        );
        ensure!(
            self.weight_targets.len() == self.weight_values.len()
                && self
                    .weight_targets
                    .iter()
                    .all(|target| (*target as usize) < self.n_targets),
            "leaf weight target out of range"
        );
        if let Some(classes) = &self.classes {
            ensure!(
                classes.labels.len() == self.n_targets,
                "labels and classes differ"
            );
        }
        Ok(())
    }
}

/// The typed op: input `[N, F]` (any numeric type, read as f32); outputs `[N]` labels (int64, classifier
/// only) then `[N, targets]` f32 scores.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    /// The trees.
    pub ensemble: Arc<Ensemble>,
}

impl PartialEq for TreeEnsemble {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ensemble, &other.ensemble) || self.ensemble == other.ensemble
    }
}

// tract merges equal ops; thresholds are never NaN (a NaN threshold compares false either way), so the derived
// float comparison is an equivalence here.
impl Eq for TreeEnsemble {}

impl Op for TreeEnsemble {
    fn name(&self) -> StaticName {
        if self.ensemble.is_classifier() {
            "TractorTreeEnsembleClassifier".into()
        } else {
            "TractorTreeEnsembleRegressor".into()
        }
    }
    op_as_typed_op!();
}

impl EvalOp for TreeEnsemble {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let shape = input.shape();
        let (rows, width) = match shape.len() {
            1 => (1, shape[0]),
            2 => (shape[0], shape[1]),
            r => bail!("a tree ensemble takes [N, features], got rank {r}"),
        };
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let (scores, labels) = self.ensemble.eval(x, width)?;
        let scores = tensor1(&scores).into_shape(&[rows, self.ensemble.n_targets])?;
        if self.ensemble.is_classifier() {
            Ok(tvec!(tensor1(&labels).into_tvalue(), scores.into_tvalue()))
        } else {
            Ok(tvec!(scores.into_tvalue()))
        }
    }
}

impl TypedOp for TreeEnsemble {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = if inputs[0].rank() == 2 {
            inputs[0].shape[0].clone()
        } else {
            1.to_dim()
        };
        let scores = f32::fact([n.clone(), self.ensemble.n_targets.to_dim()]);
        if self.ensemble.is_classifier() {
            Ok(tvec!(i64::fact([n]), scores))
        } else {
            Ok(tvec!(scores))
        }
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!())
    }

    as_op!();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// One stump per tree on feature 0 at 0.5, leaves given as (left value, right value) per target/class.
    pub(super) fn stumps(
        leaves: &[(f32, f32)],
        targets: usize,
        aggregate: Aggregate,
        post: PostTransform,
        base: Vec<f32>,
        classes: Option<Classes>,
    ) -> Ensemble {
        let mut nodes = vec![];
        let mut roots = vec![];
        let mut wt = vec![];
        let mut wv = vec![];
        for (lo, hi) in leaves {
            let root = nodes.len() as u32;
            roots.push(root);
            nodes.push(Node {
                feature: 0,
                threshold: 0.5,
                a: root + 1,
                b: root + 2,
                mode: Mode::Leq,
                nan_true: true,
            });
            for value in [lo, hi] {
                let weight = wv.len() as u32;
                wt.push(0);
                wv.push(*value);
                nodes.push(Node {
                    feature: 0,
                    threshold: 0.0,
                    a: weight,
                    b: weight + 1,
                    mode: Mode::Leaf,
                    nan_true: false,
                });
            }
        }
        let ensemble = Ensemble {
            nodes,
            roots,
            weight_targets: wt,
            weight_values: wv,
            n_targets: targets,
            n_features: 1,
            aggregate,
            post,
            base_values: base,
            classes,
            walk: Walk::default(),
        };
        ensemble.ready().unwrap()
    }

    #[test]
    fn a_cycle_is_refused() {
        let mut e = stumps(
            &[(1.0, 2.0)],
            1,
            Aggregate::Sum,
            PostTransform::None,
            vec![],
            None,
        );
        e.nodes[0].a = 0;
        assert!(e.check().is_err());
    }
}
