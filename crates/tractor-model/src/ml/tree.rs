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

use tract_nnef::internal::*;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::infer::InferenceOp;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity, expand,
};

use super::{attr_f32s, attr_i64s, attr_opt_f32s, attr_strs, reject_double_attrs};

mod v5;

/// Name of the NNEF primitive the artifact stores the op as.
const NNEF_ID: &str = "tractor_ml_tree_ensemble";

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

impl Aggregate {
    fn parse(s: &str) -> TractResult<Aggregate> {
        Ok(match s {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => bail!("unsupported aggregate_function {other:?}"),
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Aggregate::Sum => "SUM",
            Aggregate::Average => "AVERAGE",
            Aggregate::Min => "MIN",
            Aggregate::Max => "MAX",
        }
    }
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PostTransform::None => "NONE",
            PostTransform::Logistic => "LOGISTIC",
            PostTransform::Softmax => "SOFTMAX",
            PostTransform::SoftmaxZero => "SOFTMAX_ZERO",
            PostTransform::Probit => "PROBIT",
        }
    }
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

/// Fewest (tree, row) walks worth a helper thread of their own (some 30 µs of work, against a few µs to wake a
/// pooled helper and hand it rows).
const WALKS_PER_THREAD: usize = 4096;

/// How many (tree, row) walks go in lockstep.
const LANES: usize = 8;

/// The walk's mode parameter when branch nodes differ in their comparison.
const MIXED: u8 = u8::MAX;

/// The top bit of [`Step::feature`].
const NAN_TRUE: u32 = 1 << 31;

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

impl Walk {
    fn new(nodes: &[Node], roots: &[u32], targets: &[u32], values: &[f32]) -> Walk {
        let steps = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if n.mode == Mode::Leaf {
                    Step {
                        feature: 0,
                        threshold: 0.0,
                        next: [i as u32; 2],
                    }
                } else {
                    Step {
                        feature: n.feature | if n.nan_true { NAN_TRUE } else { 0 },
                        threshold: n.threshold,
                        next: [n.b, n.a],
                    }
                }
            })
            .collect();
        // Children come after their parents (checked), so one backward pass gives every node's height.
        let mut height = vec![0u32; nodes.len()];
        for (i, n) in nodes.iter().enumerate().rev() {
            if n.mode != Mode::Leaf {
                height[i] = 1 + height[n.a as usize].max(height[n.b as usize]);
            }
        }
        let mut modes = nodes.iter().map(|n| n.mode).filter(|m| *m != Mode::Leaf);
        let first = modes.next();
        let mode = if modes.all(|m| Some(m) == first) {
            first.or(Some(Mode::Leq))
        } else {
            None
        };
        Walk {
            steps,
            depths: roots.iter().map(|r| height[*r as usize]).collect(),
            mode,
            nan_true: nodes.iter().any(|n| n.nan_true && n.mode != Mode::Leaf),
            single: nodes
                .iter()
                .all(|n| n.mode != Mode::Leaf || n.b == n.a + 1)
                .then(|| {
                    nodes
                        .iter()
                        .map(|n| match n.mode {
                            Mode::Leaf => (targets[n.a as usize], values[n.a as usize]),
                            _ => (0, 0.0),
                        })
                        .collect()
                }),
        }
    }
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

fn probit(p: f32) -> f32 {
    // onnxruntime's erfinv approximation (Winitzki), so probit scores match it to the float.
    let x = 2.0 * p - 1.0;
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let y = (1.0 - x) * (1.0 + x);
    let l = y.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * l;
    let v2 = 1.0 / 0.147 * l;
    let v3 = -v + (v * v - v2).sqrt();
    std::f32::consts::SQRT_2 * sgn * v3.sqrt()
}

fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

fn softmax(row: &mut [f32], zero: bool) {
    let max = row.iter().copied().fold(-f32::MAX, f32::max);
    let mut sum = 0.0f32;
    let scale0 = (-max).exp();
    for v in row.iter_mut() {
        if !zero || *v > 1e-7 || *v < -1e-7 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v *= scale0;
        }
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
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
        let n = tree_ids.len();
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_values", thresholds.len()),
            ("nodes_modes", modes.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
            ("nodes_missing_value_tracks_true", nan_true.len()),
        ] {
            ensure!(len == n, "{name} has {len} entries, nodes_treeids has {n}");
        }
        ensure!(n > 0, "a tree ensemble without nodes");
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
                Some(l) if !l.is_empty() => l.to_vec(),
                _ => bail!(
                    "string class labels are not supported: export the classifier with integer labels"
                ),
            };
            let distinct: std::collections::BTreeSet<i64> = w_target.iter().copied().collect();
            let binary = labels.len() == 2 && distinct.len() == 1;
            let all_positive = w_value.iter().all(|w| *w >= 0.0);
            (
                labels.len(),
                Some(Classes {
                    labels,
                    binary,
                    all_positive,
                }),
            )
        } else {
            let t: i64 = node.get_attr_opt("n_targets")?.unwrap_or(1);
            ensure!(t >= 1, "n_targets must be at least 1");
            (t as usize, None)
        };
        for t in &w_target {
            ensure!(
                (0..n_targets as i64).contains(t),
                "leaf weight for target/class {t}, but there are {n_targets}"
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
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
        let mut index = std::collections::HashMap::with_capacity(n);
        for (pos, &i) in order.iter().enumerate() {
            ensure!(
                index.insert((tree_ids[i], node_ids[i]), pos).is_none(),
                "node {} of tree {} is defined twice",
                node_ids[i],
                tree_ids[i]
            );
        }
        let mut leaf_weights: std::collections::HashMap<(i64, i64), Vec<usize>> =
            std::collections::HashMap::new();
        for i in 0..w_tree.len() {
            leaf_weights
                .entry((w_tree[i], w_node[i]))
                .or_default()
                .push(i);
        }
        let mut nodes = Vec::with_capacity(n);
        let mut roots = Vec::new();
        let mut weight_targets = Vec::with_capacity(w_tree.len());
        let mut weight_values = Vec::with_capacity(w_tree.len());
        let mut n_features = 0usize;
        let mut prev_tree = None;
        for &i in &order {
            let tree = tree_ids[i];
            if prev_tree != Some(tree) {
                prev_tree = Some(tree);
                roots.push(nodes.len() as u32);
            }
            let mode = Mode::parse(&modes[i])?;
            let child = |id: i64, what: &str| -> TractResult<u32> {
                index
                    .get(&(tree, id))
                    .map(|p| *p as u32)
                    .ok_or_else(|| format_err!("tree {tree}: {what} node {id} does not exist"))
            };
            let node = if mode == Mode::Leaf {
                let a = weight_values.len() as u32;
                for &w in leaf_weights.get(&(tree, node_ids[i])).into_iter().flatten() {
                    weight_targets.push(w_target[w] as u32);
                    weight_values.push(w_value[w]);
                }
                Node {
                    feature: 0,
                    threshold: 0.0,
                    a,
                    b: weight_values.len() as u32,
                    mode,
                    nan_true: false,
                }
            } else {
                ensure!(features[i] >= 0, "negative feature id {}", features[i]);
                n_features = n_features.max(features[i] as usize + 1);
                Node {
                    feature: features[i] as u32,
                    threshold: thresholds[i],
                    a: child(true_ids[i], "true")?,
                    b: child(false_ids[i], "false")?,
                    mode,
                    nan_true: nan_true[i] != 0,
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
        let n = self.nodes.len() as u32;
        for (pos, node) in self.nodes.iter().enumerate() {
            if node.mode == Mode::Leaf {
                ensure!(
                    node.a <= node.b && node.b as usize <= self.weight_values.len(),
                    "leaf weights out of range"
                );
            } else {
                // Children after their parent: trees are acyclic and every walk ends at a leaf.
                ensure!(
                    node.a < n && node.b < n && node.a as usize > pos && node.b as usize > pos,
                    "tree node {pos}: children must come after their parent"
                );
                ensure!(
                    (node.feature as usize) < self.n_features,
                    "feature out of range"
                );
            }
        }
        ensure!(self.roots.iter().all(|r| *r < n), "tree root out of range");
        ensure!(
            self.weight_targets.len() == self.weight_values.len()
                && self
                    .weight_targets
                    .iter()
                    .all(|t| (*t as usize) < self.n_targets),
            "leaf weight target out of range"
        );
        if let Some(c) = &self.classes {
            ensure!(
                c.labels.len() == self.n_targets,
                "labels and classes differ"
            );
        }
        Ok(())
    }

    /// Scores (and labels for a classifier) of `rows` rows of `n_features`-or-more features each.
    pub fn eval(self: &Arc<Self>, x: &[f32], width: usize) -> TractResult<(Vec<f32>, Vec<i64>)> {
        ensure!(
            width >= self.n_features,
            "the trees read feature {} but rows have {width}",
            self.n_features.saturating_sub(1)
        );
        let rows = x.len().checked_div(width).unwrap_or(0);
        let t = self.n_targets;
        let mut scores = vec![0f32; rows * t];
        let mut has = vec![false; rows * t];
        let x = &x[..rows * width];
        // Rows split across threads when each gets enough walks to pay for handing them over; a row's sums do
        // not depend on the split, so the outputs are the same for any thread count.
        let wanted = rows
            .min(rows * self.roots.len() / WALKS_PER_THREAD)
            .saturating_sub(1);
        let claim = crate::threads::Claim::new(wanted);
        self.accumulate_split(x, width, &mut scores, &mut has, claim.helpers());
        drop(claim);
        let mut out = vec![0f32; rows * t];
        let mut labels = Vec::with_capacity(if self.classes.is_some() { rows } else { 0 });
        for r in 0..rows {
            let s = &mut scores[r * t..(r + 1) * t];
            let h = &mut has[r * t..(r + 1) * t];
            let o = &mut out[r * t..(r + 1) * t];
            match &self.classes {
                None => self.finish_regression(s, o),
                Some(c) => labels.push(self.finish_classification(c, s, h, o)),
            }
        }
        Ok((out, labels))
    }

    /// [`Self::accumulate`] on the caller and up to `helpers` helper threads, rows handed out in chunks.
    fn accumulate_split(
        self: &Arc<Self>,
        x: &[f32],
        width: usize,
        scores: &mut [f32],
        has: &mut [bool],
        helpers: usize,
    ) {
        let rows = x.len().checked_div(width).unwrap_or(0);
        let t = self.n_targets;
        if helpers == 0 || rows == 0 {
            self.accumulate(x, width, scores, has);
            return;
        }
        // Chunks from a shared queue, so a helper that starts late takes less. Each is summed into buffers of
        // its own and copied out once: chunks' edges share cache lines (a regressor's 32-row chunk of `has` is
        // half a line), and writing them leaf by leaf from two threads made two threads slower than one. The
        // rows are copied so that helpers need not borrow them: some 30 KB at batch 256, about a microsecond.
        let chunk = rows.div_ceil(4 * (helpers + 1)).max(LANES);
        let rows_x: Arc<[f32]> = x.into();
        let me = Arc::clone(self);
        let parts = crate::threads::split(helpers, rows.div_ceil(chunk), move |i| {
            let x = &rows_x[i * chunk * width..((i + 1) * chunk * width).min(rows_x.len())];
            let n = x.len() / width * me.n_targets;
            let (mut s, mut h) = (vec![0f32; n], vec![false; n]);
            me.accumulate(x, width, &mut s, &mut h);
            (s, h)
        });
        for ((s, h), (to_s, to_h)) in parts
            .iter()
            .zip(scores.chunks_mut(chunk * t).zip(has.chunks_mut(chunk * t)))
        {
            to_s.copy_from_slice(s);
            to_h.copy_from_slice(h);
        }
    }

    /// Combine every tree's leaf weights into `scores` (and mark in `has` which targets got one) for the rows of
    /// `x`, with the comparison compiled in when all branch nodes share it.
    fn accumulate(&self, x: &[f32], width: usize, scores: &mut [f32], has: &mut [bool]) {
        macro_rules! go {
            ($m:expr) => {
                if self.walk.nan_true {
                    self.accumulate_with::<{ $m }, true>(x, width, scores, has)
                } else {
                    self.accumulate_with::<{ $m }, false>(x, width, scores, has)
                }
            };
        }
        match self.walk.mode {
            Some(Mode::Leq) => go!(Mode::Leq as u8),
            Some(Mode::Lt) => go!(Mode::Lt as u8),
            Some(Mode::Gte) => go!(Mode::Gte as u8),
            Some(Mode::Gt) => go!(Mode::Gt as u8),
            _ => go!(MIXED),
        }
    }
    /// The (tree, row) pairs in tree-major order, [`LANES`] at a time walked in lockstep: the lanes' loads
    /// overlap instead of each step waiting on the last, and a tree's nodes stay in cache while the rows go by.
    /// Each row still takes its trees in order, so sums round exactly as onnxruntime's do.
    fn accumulate_with<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        width: usize,
        scores: &mut [f32],
        has: &mut [bool],
    ) {
        let rows = x.len().checked_div(width).unwrap_or(0);
        let total = rows * self.roots.len();
        if rows >= LANES {
            // Enough rows to fill the lanes from one tree at a time.
            for (&root, &steps) in self.roots.iter().zip(&self.walk.depths) {
                for start in (0..rows).step_by(LANES) {
                    let count = LANES.min(rows - start);
                    // Spare lanes of a tree's last block repeat its last row and are not counted.
                    let off = std::array::from_fn(|l| (start + l.min(count - 1)) * width);
                    let leaves = self.walk_lanes::<M, NAN>(x, [root; LANES], off, steps);
                    for (l, leaf) in leaves.iter().take(count).enumerate() {
                        self.add_leaf(*leaf, start + l, scores, has);
                    }
                }
            }
            return;
        }
        // Fewer rows than lanes (batch 1 above all): the lanes take several trees at once.
        let (mut tree, mut row, mut done) = (0usize, 0usize, 0usize);
        while done < total {
            let count = LANES.min(total - done);
            let mut at = [0u32; LANES];
            let mut off = [0usize; LANES];
            let mut lane_row = [0usize; LANES];
            let mut steps = 0;
            for l in 0..count {
                at[l] = self.roots[tree];
                off[l] = row * width;
                lane_row[l] = row;
                steps = steps.max(self.walk.depths[tree]);
                row += 1;
                if row == rows {
                    row = 0;
                    tree += 1;
                }
            }
            // Spare lanes of the last group repeat lane 0's walk and are not counted.
            for l in count..LANES {
                at[l] = at[0];
                off[l] = off[0];
            }
            let leaves = self.walk_lanes::<M, NAN>(x, at, off, steps);
            for l in 0..count {
                self.add_leaf(leaves[l], lane_row[l], scores, has);
            }
            done += count;
        }
    }

    /// `steps` steps of every lane from node `at` on the row at offset `off`: each lane ends on its leaf.
    #[inline(always)]
    fn walk_lanes<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        mut at: [u32; LANES],
        off: [usize; LANES],
        steps: u32,
    ) -> [u32; LANES] {
        let s = &self.walk.steps;
        for _ in 0..steps {
            for l in 0..LANES {
                let n = s[at[l] as usize];
                let v = x[off[l] + (n.feature & !NAN_TRUE) as usize];
                let mode = match M {
                    1 => Mode::Leq,
                    2 => Mode::Lt,
                    3 => Mode::Gte,
                    4 => Mode::Gt,
                    _ => self.nodes[at[l] as usize].mode,
                };
                let mut go = match mode {
                    Mode::Leaf => false,
                    Mode::Leq => v <= n.threshold,
                    Mode::Lt => v < n.threshold,
                    Mode::Gte => v >= n.threshold,
                    Mode::Gt => v > n.threshold,
                    Mode::Eq => v == n.threshold,
                    Mode::Neq => v != n.threshold,
                };
                if NAN {
                    go |= (n.feature & NAN_TRUE != 0) & v.is_nan();
                }
                at[l] = n.next[go as usize];
            }
        }
        at
    }

    /// Fold one leaf's weights into row `r`'s scores.
    #[inline(always)]
    fn add_leaf(&self, leaf: u32, r: usize, scores: &mut [f32], has: &mut [bool]) {
        let t = self.n_targets;
        if let Some(single) = &self.walk.single {
            let (k, v) = single[leaf as usize];
            let i = r * t + k as usize;
            scores[i] = self.fold(scores[i], has[i], v);
            has[i] = true;
            return;
        }
        let leaf = &self.nodes[leaf as usize];
        for w in leaf.a as usize..leaf.b as usize {
            let i = r * t + self.weight_targets[w] as usize;
            scores[i] = self.fold(scores[i], has[i], self.weight_values[w]);
            has[i] = true;
        }
    }

    /// A score after one more leaf weight `v`; `has` says whether it already had one.
    #[inline(always)]
    fn fold(&self, score: f32, has: bool, v: f32) -> f32 {
        match self.aggregate {
            Aggregate::Sum | Aggregate::Average => score + v,
            Aggregate::Min if has => score.min(v),
            Aggregate::Max if has => score.max(v),
            Aggregate::Min | Aggregate::Max => v,
        }
    }

    fn finish_regression(&self, s: &mut [f32], o: &mut [f32]) {
        let n_trees = self.roots.len() as f32;
        let use_base = self.base_values.len() == self.n_targets;
        for (k, v) in s.iter_mut().enumerate() {
            if self.aggregate == Aggregate::Average {
                *v /= n_trees;
            }
            if use_base {
                *v += self.base_values[k];
            }
        }
        if self.n_targets == 1 {
            // onnxruntime applies only PROBIT to a single score.
            o[0] = if self.post == PostTransform::Probit {
                probit(s[0])
            } else {
                s[0]
            };
        } else {
            self.transform(s);
            o.copy_from_slice(s);
        }
    }

    fn transform(&self, s: &mut [f32]) {
        match self.post {
            PostTransform::None => {}
            PostTransform::Logistic => s.iter_mut().for_each(|v| *v = logistic(*v)),
            PostTransform::Probit => s.iter_mut().for_each(|v| *v = probit(*v)),
            PostTransform::Softmax => softmax(s, false),
            PostTransform::SoftmaxZero => softmax(s, true),
        }
    }

    fn finish_classification(
        &self,
        c: &Classes,
        s: &mut [f32],
        h: &mut [bool],
        o: &mut [f32],
    ) -> i64 {
        let b = &self.base_values;
        if self.n_targets > 2 {
            for (k, base) in b.iter().enumerate().take(self.n_targets) {
                s[k] += base;
                h[k] = true;
            }
            let mut best: Option<usize> = None;
            for k in 0..self.n_targets {
                if h[k] && best.is_none_or(|m| s[k] > s[m]) {
                    best = Some(k);
                }
            }
            self.transform(s);
            o.copy_from_slice(s);
            return c.labels[best.unwrap_or(0)];
        }
        // Two classes: onnxruntime's conventions, case by case.
        let mut len = 2;
        if b.len() == 2 {
            if h[1] {
                s[1] = b[1] + s[0]; // onnxruntime reads class 0's sum as the margin and ignores base_values[0]
                s[0] = -s[1];
            } else {
                s[1] += b[1];
                s[0] += b[0];
            }
        } else {
            if b.len() == 1 {
                s[0] += b[0];
            }
            if !h[1] {
                len = 1;
            }
        }
        let pos = if len == 2 && h[1] {
            s[1]
        } else if h[0] || len == 1 {
            s[0]
        } else {
            0.0
        };
        // Which second score to write when only one was computed (onnxruntime's add_second_class).
        let (label, second) = if c.binary {
            if c.all_positive {
                if pos > 0.5 {
                    (c.labels[1], 0)
                } else {
                    (c.labels[0], 1)
                }
            } else if pos > 0.0 {
                (c.labels[1], 2)
            } else {
                (c.labels[0], 3)
            }
        } else {
            (
                if pos > 0.0 { 1 } else { 0 },
                if b.is_empty() { 3 } else { -1 },
            )
        };
        if len == 2 {
            self.transform(s);
            o.copy_from_slice(s);
        } else if self.post == PostTransform::Probit {
            o[0] = probit(s[0]);
        } else {
            let v = s[0];
            match second {
                0 | 1 => {
                    o[0] = 1.0 - v;
                    o[1] = v;
                }
                2 | 3 if self.post == PostTransform::Logistic => {
                    o[0] = logistic(-v);
                    o[1] = logistic(v);
                }
                2 | 3 => {
                    o[0] = -v;
                    o[1] = v;
                }
                _ => o[0] = v,
            }
        }
        label
    }

    fn to_tensors(&self) -> TractResult<Vec<(&'static str, Arc<Tensor>)>> {
        let mut ints = Vec::with_capacity(self.nodes.len() * 4);
        let mut thresholds = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            ints.extend([
                n.feature as i32,
                n.a as i32,
                n.b as i32,
                n.mode as i32 | ((n.nan_true as i32) << 8),
            ]);
            thresholds.push(n.threshold);
        }
        let i32s = |v: &[u32]| v.iter().map(|x| *x as i32).collect::<Vec<_>>();
        let (labels, binary, positive) = match &self.classes {
            Some(c) => (c.labels.clone(), c.binary as i32, c.all_positive as i32),
            None => (vec![], 0, 0),
        };
        Ok(vec![
            (
                "nodes",
                tensor1(&ints)
                    .into_shape(&[self.nodes.len(), 4])?
                    .into_arc_tensor(),
            ),
            ("thresholds", rctensor1(&thresholds)),
            ("roots", rctensor1(&i32s(&self.roots))),
            ("weight_targets", rctensor1(&i32s(&self.weight_targets))),
            ("weight_values", rctensor1(&self.weight_values)),
            ("base_values", rctensor1(&self.base_values)),
            ("labels", rctensor1(&labels)),
            (
                "shape",
                rctensor1(&[
                    self.n_targets as i32,
                    self.n_features as i32,
                    self.classes.is_some() as i32,
                    binary,
                    positive,
                ]),
            ),
        ])
    }

    fn from_tensors(get: &dyn Fn(&str) -> TractResult<Arc<Tensor>>) -> TractResult<Ensemble> {
        let ints = get("nodes")?;
        let ints = ints.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        let thresholds = get("thresholds")?;
        let thresholds = thresholds.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(
            ints.len() == thresholds.len() * 4,
            "tree nodes and thresholds differ"
        );
        let nodes = ints
            .chunks(4)
            .zip(thresholds)
            .map(|(c, threshold)| {
                Ok(Node {
                    feature: c[0] as u32,
                    threshold,
                    a: c[1] as u32,
                    b: c[2] as u32,
                    mode: Mode::from_u8((c[3] & 0xff) as u8)?,
                    nan_true: c[3] >> 8 != 0,
                })
            })
            .collect::<TractResult<Vec<_>>>()?;
        let u32s = |name: &str| -> TractResult<Vec<u32>> {
            Ok(get(name)?
                .try_as_plain_ram()?
                .as_slice::<i32>()?
                .iter()
                .map(|v| *v as u32)
                .collect())
        };
        let f32s = |name: &str| -> TractResult<Vec<f32>> {
            Ok(get(name)?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let shape = get("shape")?;
        let shape = shape.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        ensure!(shape.len() == 5, "bad tree ensemble shape record");
        let labels = get("labels")?;
        let labels = labels
            .cast_to::<i64>()?
            .try_as_plain_ram()?
            .as_slice::<i64>()?
            .to_vec();
        let ensemble = Ensemble {
            nodes,
            roots: u32s("roots")?,
            weight_targets: u32s("weight_targets")?,
            weight_values: f32s("weight_values")?,
            n_targets: shape[0] as usize,
            n_features: shape[1] as usize,
            aggregate: Aggregate::Sum,
            post: PostTransform::None,
            base_values: f32s("base_values")?,
            classes: (shape[2] != 0).then_some(Classes {
                labels,
                binary: shape[3] != 0,
                all_positive: shape[4] != 0,
            }),
            walk: Walk::default(),
        };
        ensemble.ready()
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

/// The ONNX-side op: types the outputs, then wires [`TreeEnsemble`].
#[derive(Debug, Clone)]
struct TreeEnsembleOnnx(TreeEnsemble);

impl Expansion for TreeEnsembleOnnx {
    fn name(&self) -> StaticName {
        self.0.name()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.ensemble.is_classifier() {
            2
        } else {
            1
        })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        let t = self.0.ensemble.n_targets;
        let scores = if self.0.ensemble.is_classifier() {
            check_output_arity(outputs, 2)?;
            s.equals(&outputs[0].datum_type, i64::datum_type())?;
            s.equals(&outputs[0].rank, 1)?;
            s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
            &outputs[1]
        } else {
            check_output_arity(outputs, 1)?;
            &outputs[0]
        };
        s.equals(&scores.datum_type, f32::datum_type())?;
        s.equals(&scores.rank, 2)?;
        s.equals(&scores.shape[0], &inputs[0].shape[0])?;
        s.equals(&scores.shape[1], t.to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// ONNX builder for `TreeEnsembleClassifier`.
pub fn classifier_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok(onnx_op(Ensemble::from_onnx(node, true)?))
}

/// ONNX builder for `TreeEnsemble` (ai.onnx.ml opset 5).
pub fn ensemble_onnx(
    ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok(onnx_op(Ensemble::from_onnx_v5(ctx, node)?))
}

/// ONNX builder for `TreeEnsembleRegressor`.
pub fn regressor_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok(onnx_op(Ensemble::from_onnx(node, false)?))
}

/// The loader's op for a parsed ensemble, whichever ONNX op it came from.
fn onnx_op(ensemble: Ensemble) -> (Box<dyn InferenceOp>, Vec<String>) {
    let ensemble = Arc::new(ensemble);
    (expand(TreeEnsembleOnnx(TreeEnsemble { ensemble })), vec![])
}

const TENSORS: [&str; 8] = [
    "nodes",
    "thresholds",
    "roots",
    "weight_targets",
    "weight_values",
    "base_values",
    "labels",
    "shape",
];

/// Declare the NNEF primitive and its dumper.
pub fn register_nnef(registry: &mut Registry) {
    let mut params = vec![TypeName::Scalar.tensor().named("input")];
    for name in TENSORS {
        params.push(TypeName::Scalar.tensor().named(name));
    }
    params.push(TypeName::String.named("aggregate"));
    params.push(TypeName::String.named("post_transform"));
    registry.register_primitive(
        NNEF_ID,
        &params,
        &[
            ("label", TypeName::Integer.tensor()),
            ("scores", TypeName::Scalar.tensor()),
        ],
        nnef_load,
    );
    registry.register_dumper(nnef_dump);
}

fn nnef_dump(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &TreeEnsemble,
) -> TractResult<Option<Arc<RValue>>> {
    let input = ast.mapping[&node.inputs[0]].clone();
    let mut args = vec![input];
    for (name, tensor) in op.ensemble.to_tensors()? {
        args.push(ast.konst_variable(format!("{}_{name}", node.name), &tensor)?);
    }
    Ok(Some(invocation(
        NNEF_ID,
        &args,
        &[
            ("aggregate", string(op.ensemble.aggregate.as_str())),
            ("post_transform", string(op.ensemble.post.as_str())),
        ],
    )))
}

fn nnef_load(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let input = invocation.named_arg_as(builder, "input")?;
    let mut tensors = HashMap::new();
    for name in TENSORS {
        let t: Arc<Tensor> = invocation.named_arg_as(builder, name)?;
        tensors.insert(name, t);
    }
    let get = |name: &str| -> TractResult<Arc<Tensor>> {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| format_err!("missing {name}"))
    };
    let mut ensemble = Ensemble::from_tensors(&get)?;
    let aggregate: String = invocation.named_arg_as(builder, "aggregate")?;
    let post: String = invocation.named_arg_as(builder, "post_transform")?;
    ensemble.aggregate = Aggregate::parse(&aggregate)?;
    ensemble.post = PostTransform::parse(&post)?;
    builder.wire(
        TreeEnsemble {
            ensemble: Arc::new(ensemble),
        },
        &[input],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// One stump per tree on feature 0 at 0.5, leaves given as (left value, right value) per target/class.
    fn stumps(
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
            let r = nodes.len() as u32;
            roots.push(r);
            nodes.push(Node {
                feature: 0,
                threshold: 0.5,
                a: r + 1,
                b: r + 2,
                mode: Mode::Leq,
                nan_true: true,
            });
            for v in [lo, hi] {
                let a = wv.len() as u32;
                wt.push(0);
                wv.push(*v);
                nodes.push(Node {
                    feature: 0,
                    threshold: 0.0,
                    a,
                    b: a + 1,
                    mode: Mode::Leaf,
                    nan_true: false,
                });
            }
        }
        let e = Ensemble {
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
        e.ready().unwrap()
    }

    #[test]
    fn regressor_aggregates_as_the_spec_says() {
        let leaves = [(1.0, 10.0), (3.0, 30.0)];
        let x = [0.0f32, 1.0, f32::NAN];
        for (agg, want) in [
            (Aggregate::Sum, [4.0 + 0.5, 40.5, 4.5]),
            (Aggregate::Average, [2.5, 20.5, 2.5]),
            (Aggregate::Min, [1.5, 10.5, 1.5]),
            (Aggregate::Max, [3.5, 30.5, 3.5]),
        ] {
            let e = stumps(&leaves, 1, agg, PostTransform::None, vec![0.5], None);
            let (s, l) = Arc::new(e).eval(&x, 1).unwrap();
            assert_eq!(s, want, "{agg:?}");
            assert!(l.is_empty());
        }
    }

    #[test]
    fn binary_probability_leaves_give_one_minus_p() {
        let classes = Classes {
            labels: vec![3, 7],
            binary: true,
            all_positive: true,
        };
        let e = stumps(
            &[(0.25, 0.75)],
            2,
            Aggregate::Sum,
            PostTransform::None,
            vec![],
            Some(classes),
        );
        let (s, l) = Arc::new(e).eval(&[0.0, 1.0], 1).unwrap();
        assert_eq!(s, [0.75, 0.25, 0.25, 0.75]);
        assert_eq!(l, [3, 7]);
    }

    #[test]
    fn binary_margins_with_logistic_give_both_probabilities() {
        let classes = Classes {
            labels: vec![0, 1],
            binary: true,
            all_positive: false,
        };
        let e = stumps(
            &[(-1.0, 2.0)],
            2,
            Aggregate::Sum,
            PostTransform::Logistic,
            vec![0.5],
            Some(classes),
        );
        let (s, l) = Arc::new(e).eval(&[0.0, 1.0], 1).unwrap();
        let p = |v: f32| 1.0 / (1.0 + (-v).exp());
        for (got, want) in s.iter().zip([p(0.5), p(-0.5), p(-2.5), p(2.5)]) {
            assert!((got - want).abs() < 1e-6, "{s:?}");
        }
        assert_eq!(l, [0, 1]);
    }

    #[test]
    fn softmax_and_probit_follow_onnxruntime() {
        let mut row = [1.0f32, 2.0, 3.0];
        softmax(&mut row, false);
        let z: f32 = [1f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((row[2] - 3f32.exp() / z).abs() < 1e-6);
        assert!(probit(0.5).abs() < 1e-6);
        assert!((probit(0.975) - 1.959_964).abs() < 5e-3);
    }

    #[test]
    fn nnef_tensors_round_trip() {
        let classes = Classes {
            labels: vec![0, 1],
            binary: true,
            all_positive: true,
        };
        let e = stumps(
            &[(0.1, 0.9), (0.2, 0.8)],
            2,
            Aggregate::Sum,
            PostTransform::None,
            vec![],
            Some(classes),
        );
        let tensors: HashMap<_, _> = e.to_tensors().unwrap().into_iter().collect();
        let mut back = Ensemble::from_tensors(&|n: &str| Ok(tensors[n].clone())).unwrap();
        back.aggregate = e.aggregate;
        back.post = e.post;
        assert_eq!(back, e);
    }

    /// The spec's loop, one row and one tree at a time, as the reference for the lockstep walk.
    fn reference(e: &Ensemble, x: &[f32], width: usize) -> (Vec<f32>, Vec<bool>) {
        let rows = x.len() / width;
        let t = e.n_targets;
        let mut s = vec![0f32; rows * t];
        let mut h = vec![false; rows * t];
        for r in 0..rows {
            let row = &x[r * width..(r + 1) * width];
            for &root in &e.roots {
                let mut n = &e.nodes[root as usize];
                while n.mode != Mode::Leaf {
                    let (v, th) = (row[n.feature as usize], n.threshold);
                    let go = match n.mode {
                        Mode::Leaf => false,
                        Mode::Leq => v <= th,
                        Mode::Lt => v < th,
                        Mode::Gte => v >= th,
                        Mode::Gt => v > th,
                        Mode::Eq => v == th,
                        Mode::Neq => v != th,
                    } || (n.nan_true && v.is_nan());
                    n = &e.nodes[if go { n.a } else { n.b } as usize];
                }
                for w in n.a as usize..n.b as usize {
                    let i = r * t + e.weight_targets[w] as usize;
                    s[i] = e.fold(s[i], h[i], e.weight_values[w]);
                    h[i] = true;
                }
            }
        }
        (s, h)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// Unbalanced random trees over `features` features: children after parents, leaves with `per_leaf`
    /// weights on random targets.
    #[allow(clippy::too_many_arguments)]
    fn random_forest(
        rng: &mut Rng,
        trees: usize,
        features: u32,
        modes: &[Mode],
        nan: bool,
        targets: usize,
        per_leaf: usize,
        aggregate: Aggregate,
    ) -> Ensemble {
        fn grow(
            rng: &mut Rng,
            depth: u32,
            e: &mut Ensemble,
            features: u32,
            modes: &[Mode],
            nan: bool,
            per_leaf: usize,
        ) -> u32 {
            let at = e.nodes.len() as u32;
            if depth == 0 || (depth < 6 && rng.below(4) == 0) {
                let a = e.weight_values.len() as u32;
                for _ in 0..per_leaf {
                    e.weight_targets.push(rng.below(e.n_targets) as u32);
                    e.weight_values.push(rng.unit() - 0.5);
                }
                e.nodes.push(Node {
                    feature: 0,
                    threshold: 0.0,
                    a,
                    b: e.weight_values.len() as u32,
                    mode: Mode::Leaf,
                    nan_true: false,
                });
                return at;
            }
            e.nodes.push(Node {
                feature: rng.below(features as usize) as u32,
                // Thresholds on a coarse grid, so EQ and NEQ nodes meet equal features.
                threshold: rng.below(8) as f32 / 8.0,
                a: 0,
                b: 0,
                mode: modes[rng.below(modes.len())],
                nan_true: nan && rng.below(2) == 0,
            });
            let a = grow(rng, depth - 1, e, features, modes, nan, per_leaf);
            let b = grow(rng, depth - 1, e, features, modes, nan, per_leaf);
            e.nodes[at as usize].a = a;
            e.nodes[at as usize].b = b;
            at
        }
        let mut e = Ensemble {
            nodes: vec![],
            roots: vec![],
            weight_targets: vec![],
            weight_values: vec![],
            n_targets: targets,
            n_features: features as usize,
            aggregate,
            post: PostTransform::None,
            base_values: vec![],
            classes: None,
            walk: Walk::default(),
        };
        for _ in 0..trees {
            let depth = 1 + rng.below(9) as u32;
            let root = grow(rng, depth, &mut e, features, modes, nan, per_leaf);
            e.roots.push(root);
        }
        e.ready().unwrap()
    }

    #[test]
    fn lockstep_walk_matches_the_plain_walk_for_any_batch_and_thread_count() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let all = [
            Mode::Leq,
            Mode::Lt,
            Mode::Gte,
            Mode::Gt,
            Mode::Eq,
            Mode::Neq,
        ];
        let cases: [(&[Mode], bool, usize, usize, Aggregate); 5] = [
            (&[Mode::Leq], false, 1, 1, Aggregate::Sum),
            (&[Mode::Lt], true, 1, 1, Aggregate::Average),
            (&all, true, 3, 2, Aggregate::Sum),
            (&[Mode::Gte], false, 4, 3, Aggregate::Min),
            (&all, false, 2, 1, Aggregate::Max),
        ];
        for (modes, nan, targets, per_leaf, aggregate) in cases {
            let e = Arc::new(random_forest(
                &mut rng, 37, 5, modes, nan, targets, per_leaf, aggregate,
            ));
            assert_eq!(e.walk.single.is_some(), per_leaf == 1);
            assert_eq!(e.walk.mode.is_some(), modes.len() == 1);
            assert_eq!(e.walk.nan_true, nan);
            let width = 6;
            for rows in [1, 3, 8, 13, 300] {
                let x: Vec<f32> = (0..rows * width)
                    .map(|_| match rng.below(10) {
                        0 if nan => f32::NAN,
                        1 => rng.below(8) as f32 / 8.0,
                        _ => rng.unit(),
                    })
                    .collect();
                let (want_s, want_h) = reference(&e, &x, width);
                for helpers in [0, 1, 3] {
                    let mut s = vec![0f32; rows * targets];
                    let mut h = vec![false; rows * targets];
                    e.accumulate_split(&x, width, &mut s, &mut h, helpers);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&s),
                        bits(&want_s),
                        "{modes:?} nan={nan} rows={rows} helpers={helpers}"
                    );
                    assert_eq!(h, want_h);
                }
            }
        }
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
