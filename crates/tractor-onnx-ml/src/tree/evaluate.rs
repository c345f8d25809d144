//! Running a parsed ensemble: the lockstep walk over the flat node array, the split across helper threads, and the
//! aggregation and post-transforms that turn leaf weights into scores and labels, as onnxruntime computes them.

use tract_nnef::internal::*;

use super::{Aggregate, Classes, Ensemble, Mode, Node, PostTransform, Step, Walk};

/// Fewest (tree, row) walks worth a helper thread of their own (some 30 µs of work, against a few µs to wake a
/// pooled helper and hand it rows).
const WALKS_PER_THREAD: usize = 4096;

/// How many (tree, row) walks go in lockstep.
const LANES: usize = 8;

/// The walk's mode parameter when branch nodes differ in their comparison.
const MIXED: u8 = u8::MAX;

/// The top bit of [`Step::feature`].
const NAN_TRUE: u32 = 1 << 31;

impl Walk {
    pub(super) fn new(nodes: &[Node], roots: &[u32], targets: &[u32], values: &[f32]) -> Walk {
        let steps = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                if node.mode == Mode::Leaf {
                    Step {
                        feature: 0,
                        threshold: 0.0,
                        next: [index as u32; 2],
                    }
                } else {
                    Step {
                        feature: node.feature | if node.nan_true { NAN_TRUE } else { 0 },
                        threshold: node.threshold,
                        next: [node.b, node.a],
                    }
                }
            })
            .collect();
        // Children come after their parents (checked), so one backward pass gives every node's height.
        let mut height = vec![0u32; nodes.len()];
        for (index, node) in nodes.iter().enumerate().rev() {
            if node.mode != Mode::Leaf {
                height[index] = 1 + height[node.a as usize].max(height[node.b as usize]);
            }
        }
        let mut modes = nodes
            .iter()
            .map(|node| node.mode)
            .filter(|node_mode| *node_mode != Mode::Leaf);
        let first = modes.next();
        let mode = if modes.all(|node_mode| Some(node_mode) == first) {
            first.or(Some(Mode::Leq))
        } else {
            None
        };
        Walk {
            steps,
            depths: roots.iter().map(|root| height[*root as usize]).collect(),
            mode,
            nan_true: nodes
                .iter()
                .any(|node| node.nan_true && node.mode != Mode::Leaf),
            single: nodes
                .iter()
                .all(|node| node.mode != Mode::Leaf || node.b == node.a + 1)
                .then(|| {
                    nodes
                        .iter()
                        .map(|node| match node.mode {
                            Mode::Leaf => (targets[node.a as usize], values[node.a as usize]),
                            _ => (0, 0.0),
                        })
                        .collect()
                }),
        }
    }
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
    /// Scores (and labels for a classifier) of `rows` rows of `n_features`-or-more features each.
    pub fn eval(
        self: &Arc<Self>,
        input: &[f32],
        width: usize,
    ) -> TractResult<(Vec<f32>, Vec<i64>)> {
        ensure!(
            width >= self.n_features,
            "the trees read feature {} but rows have {width}",
            self.n_features.saturating_sub(1)
        );
        let rows = input.len().checked_div(width).unwrap_or(0);
        let targets = self.n_targets;
        let mut scores = vec![0f32; rows * targets];
        let mut has = vec![false; rows * targets];
        let input = &input[..rows * width];
        // Rows split across threads when each gets enough walks to pay for handing them over; a row's sums do
        // not depend on the split, so the outputs are the same for any thread count.
        let wanted = rows
            .min(rows * self.roots.len() / WALKS_PER_THREAD)
            .saturating_sub(1);
        let claim = crate::threads::Claim::new(wanted);
        self.accumulate_split(input, width, &mut scores, &mut has, claim.helpers());
        drop(claim);
        let mut out = vec![0f32; rows * targets];
        let mut labels = Vec::with_capacity(if self.classes.is_some() { rows } else { 0 });
        for row in 0..rows {
            let row_scores = &mut scores[row * targets..(row + 1) * targets];
            let row_has = &mut has[row * targets..(row + 1) * targets];
            let row_out = &mut out[row * targets..(row + 1) * targets];
            match &self.classes {
                None => self.finish_regression(row_scores, row_out),
                Some(classes) => {
                    labels.push(self.finish_classification(classes, row_scores, row_has, row_out))
                }
            }
        }
        Ok((out, labels))
    }

    /// [`Self::accumulate`] on the caller and up to `helpers` helper threads, rows handed out in chunks.
    fn accumulate_split(
        self: &Arc<Self>,
        input: &[f32],
        width: usize,
        scores: &mut [f32],
        has: &mut [bool],
        helpers: usize,
    ) {
        let rows = input.len().checked_div(width).unwrap_or(0);
        let targets = self.n_targets;
        if helpers == 0 || rows == 0 {
            self.accumulate(input, width, scores, has);
            return;
        }
        // Chunks from a shared queue, so a helper that starts late takes less. Each is summed into buffers of
        // its own and copied out once: chunks' edges share cache lines (a regressor's 32-row chunk of `has` is
        // half a line), and writing them leaf by leaf from two threads made two threads slower than one. The
        // rows are copied so that helpers need not borrow them: some 30 KB at batch 256, about a microsecond.
        let chunk = rows.div_ceil(4 * (helpers + 1)).max(LANES);
        let rows_x: Arc<[f32]> = input.into();
        let me = Arc::clone(self);
        let parts = crate::threads::split(helpers, rows.div_ceil(chunk), move |part| {
            let input =
                &rows_x[part * chunk * width..((part + 1) * chunk * width).min(rows_x.len())];
            let len = input.len() / width * me.n_targets;
            let (mut part_scores, mut part_has) = (vec![0f32; len], vec![false; len]);
            me.accumulate(input, width, &mut part_scores, &mut part_has);
            (part_scores, part_has)
        });
        for ((part_scores, part_has), (to_s, to_h)) in parts.iter().zip(
            scores
                .chunks_mut(chunk * targets)
                .zip(has.chunks_mut(chunk * targets)),
        ) {
            to_s.copy_from_slice(part_scores);
            to_h.copy_from_slice(part_has);
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
        input: &[f32],
        width: usize,
        scores: &mut [f32],
        has: &mut [bool],
    ) {
        let rows = input.len().checked_div(width).unwrap_or(0);
        let total = rows * self.roots.len();
        if rows >= LANES {
            // Enough rows to fill the lanes from one tree at a time.
            for (&root, &steps) in self.roots.iter().zip(&self.walk.depths) {
                for start in (0..rows).step_by(LANES) {
                    let count = LANES.min(rows - start);
                    // Spare lanes of a tree's last block repeat its last row and are not counted.
                    let off = std::array::from_fn(|lane| (start + lane.min(count - 1)) * width);
                    let leaves = self.walk_lanes::<M, NAN>(input, [root; LANES], off, steps);
                    for (lane, leaf) in leaves.iter().take(count).enumerate() {
                        self.add_leaf(*leaf, start + lane, scores, has);
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
            for lane in 0..count {
                at[lane] = self.roots[tree];
                off[lane] = row * width;
                lane_row[lane] = row;
                steps = steps.max(self.walk.depths[tree]);
                row += 1;
                if row == rows {
                    row = 0;
                    tree += 1;
                }
            }
            // Spare lanes of the last group repeat lane 0's walk and are not counted.
            for lane in count..LANES {
                at[lane] = at[0];
                off[lane] = off[0];
            }
            let leaves = self.walk_lanes::<M, NAN>(input, at, off, steps);
            for lane in 0..count {
                self.add_leaf(leaves[lane], lane_row[lane], scores, has);
            }
            done += count;
        }
    }

    /// `steps` steps of every lane from node `at` on the row at offset `off`: each lane ends on its leaf.
    #[inline(always)]
    fn walk_lanes<const M: u8, const NAN: bool>(
        &self,
        input: &[f32],
        mut at: [u32; LANES],
        off: [usize; LANES],
        steps: u32,
    ) -> [u32; LANES] {
        let walk_steps = &self.walk.steps;
        for _ in 0..steps {
            for lane in 0..LANES {
                let step = walk_steps[at[lane] as usize];
                let value = input[off[lane] + (step.feature & !NAN_TRUE) as usize];
                let mode = match M {
                    1 => Mode::Leq,
                    2 => Mode::Lt,
                    3 => Mode::Gte,
                    4 => Mode::Gt,
                    _ => self.nodes[at[lane] as usize].mode,
                };
                let mut go = match mode {
                    Mode::Leaf => false,
                    Mode::Leq => value <= step.threshold,
                    Mode::Lt => value < step.threshold,
                    Mode::Gte => value >= step.threshold,
                    Mode::Gt => value > step.threshold,
                    Mode::Eq => value == step.threshold,
                    Mode::Neq => value != step.threshold,
                };
                if NAN {
                    go |= (step.feature & NAN_TRUE != 0) & value.is_nan();
                }
                at[lane] = step.next[go as usize];
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
        classes: &Classes,
        scores: &mut [f32],
        has: &mut [bool],
        out: &mut [f32],
    ) -> i64 {
        let bases = &self.base_values;
        if self.n_targets > 2 {
            for (target, base) in bases.iter().enumerate().take(self.n_targets) {
                scores[target] += base;
                has[target] = true;
            }
            let mut best: Option<usize> = None;
            for target in 0..self.n_targets {
                if has[target]
                    && best.is_none_or(|best_so_far| scores[target] > scores[best_so_far])
                {
                    best = Some(target);
                }
            }
            self.transform(scores);
            out.copy_from_slice(scores);
            return classes.labels[best.unwrap_or(0)];
        }
        // Two classes: onnxruntime's conventions, case by case.
        let mut len = 2;
        if bases.len() == 2 {
            if has[1] {
                scores[1] = bases[1] + scores[0]; // onnxruntime reads class 0's sum as the margin and ignores base_values[0]
                scores[0] = -scores[1];
            } else {
                scores[1] += bases[1];
                scores[0] += bases[0];
            }
        } else {
            if bases.len() == 1 {
                scores[0] += bases[0];
            }
            if !has[1] {
                len = 1;
            }
        }
        let pos = if len == 2 && has[1] {
            scores[1]
        } else if has[0] || len == 1 {
            scores[0]
        } else {
            0.0
        };
        // Which second score to write when only one was computed (onnxruntime's add_second_class).
        let (label, second) = if classes.binary {
            if classes.all_positive {
                if pos > 0.5 {
                    (classes.labels[1], 0)
                } else {
                    (classes.labels[0], 1)
                }
            } else if pos > 0.0 {
                (classes.labels[1], 2)
            } else {
                (classes.labels[0], 3)
            }
        } else {
            (
                if pos > 0.0 { 1 } else { 0 },
                if bases.is_empty() { 3 } else { -1 },
            )
        };
        if len == 2 {
            self.transform(scores);
            out.copy_from_slice(scores);
        } else if self.post == PostTransform::Probit {
            out[0] = probit(scores[0]);
        } else {
            let value = scores[0];
            match second {
                0 | 1 => {
                    out[0] = 1.0 - value;
                    out[1] = value;
                }
                2 | 3 if self.post == PostTransform::Logistic => {
                    out[0] = logistic(-value);
                    out[1] = logistic(value);
                }
                2 | 3 => {
                    out[0] = -value;
                    out[1] = value;
                }
                _ => out[0] = value,
            }
        }
        label
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tree::tests::stumps;

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

    /// The spec's loop, one row and one tree at a time, as the reference for the lockstep walk.
    fn reference(ensemble: &Ensemble, input: &[f32], width: usize) -> (Vec<f32>, Vec<bool>) {
        let rows = input.len() / width;
        let targets = ensemble.n_targets;
        let mut scores = vec![0f32; rows * targets];
        let mut has = vec![false; rows * targets];
        for row_index in 0..rows {
            let row = &input[row_index * width..(row_index + 1) * width];
            for &root in &ensemble.roots {
                let mut node = &ensemble.nodes[root as usize];
                while node.mode != Mode::Leaf {
                    let (value, th) = (row[node.feature as usize], node.threshold);
                    let go = match node.mode {
                        Mode::Leaf => false,
                        Mode::Leq => value <= th,
                        Mode::Lt => value < th,
                        Mode::Gte => value >= th,
                        Mode::Gt => value > th,
                        Mode::Eq => value == th,
                        Mode::Neq => value != th,
                    } || (node.nan_true && value.is_nan());
                    node = &ensemble.nodes[if go { node.a } else { node.b } as usize];
                }
                for weight in node.a as usize..node.b as usize {
                    let slot = row_index * targets + ensemble.weight_targets[weight] as usize;
                    scores[slot] =
                        ensemble.fold(scores[slot], has[slot], ensemble.weight_values[weight]);
                    has[slot] = true;
                }
            }
        }
        (scores, has)
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
            ensemble: &mut Ensemble,
            features: u32,
            modes: &[Mode],
            nan: bool,
            per_leaf: usize,
        ) -> u32 {
            let at = ensemble.nodes.len() as u32;
            if depth == 0 || (depth < 6 && rng.below(4) == 0) {
                let weights = ensemble.weight_values.len() as u32;
                for _ in 0..per_leaf {
                    ensemble
                        .weight_targets
                        .push(rng.below(ensemble.n_targets) as u32);
                    ensemble.weight_values.push(rng.unit() - 0.5);
                }
                ensemble.nodes.push(Node {
                    feature: 0,
                    threshold: 0.0,
                    a: weights,
                    b: ensemble.weight_values.len() as u32,
                    mode: Mode::Leaf,
                    nan_true: false,
                });
                return at;
            }
            ensemble.nodes.push(Node {
                feature: rng.below(features as usize) as u32,
                // Thresholds on a coarse grid, so EQ and NEQ nodes meet equal features.
                threshold: rng.below(8) as f32 / 8.0,
                a: 0,
                b: 0,
                mode: modes[rng.below(modes.len())],
                nan_true: nan && rng.below(2) == 0,
            });
            let true_child = grow(rng, depth - 1, ensemble, features, modes, nan, per_leaf);
            let false_child = grow(rng, depth - 1, ensemble, features, modes, nan, per_leaf);
            ensemble.nodes[at as usize].a = true_child;
            ensemble.nodes[at as usize].b = false_child;
            at
        }
        let mut ensemble = Ensemble {
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
            let root = grow(rng, depth, &mut ensemble, features, modes, nan, per_leaf);
            ensemble.roots.push(root);
        }
        ensemble.ready().unwrap()
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
            let ensemble = Arc::new(random_forest(
                &mut rng, 37, 5, modes, nan, targets, per_leaf, aggregate,
            ));
            assert_eq!(ensemble.walk.single.is_some(), per_leaf == 1);
            assert_eq!(ensemble.walk.mode.is_some(), modes.len() == 1);
            assert_eq!(ensemble.walk.nan_true, nan);
            let width = 6;
            for rows in [1, 3, 8, 13, 300] {
                let input: Vec<f32> = (0..rows * width)
                    .map(|_| match rng.below(10) {
                        0 if nan => f32::NAN,
                        1 => rng.below(8) as f32 / 8.0,
                        _ => rng.unit(),
                    })
                    .collect();
                let (want_s, want_h) = reference(&ensemble, &input, width);
                for helpers in [0, 1, 3] {
                    let mut scores = vec![0f32; rows * targets];
                    let mut has = vec![false; rows * targets];
                    ensemble.accumulate_split(&input, width, &mut scores, &mut has, helpers);
                    let bits = |values: &[f32]| {
                        values
                            .iter()
                            .map(|value| value.to_bits())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        bits(&scores),
                        bits(&want_s),
                        "{modes:?} nan={nan} rows={rows} helpers={helpers}"
                    );
                    assert_eq!(has, want_h);
                }
            }
        }
    }
}
