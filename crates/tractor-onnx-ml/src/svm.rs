//! Support vector machines: ai.onnx.ml `SVMClassifier` and `SVMRegressor` (opset 1, ONNX Operators-ml.md), in
//! libsvm's layout (one-vs-one classifiers, support vectors grouped by class) and liblinear's (coefficients only),
//! with onnxruntime's conventions where the spec is silent: which scores a classifier returns (the pairwise
//! decision values without probabilities, both classes' for a binary one), the vote that picks the label, and
//! Platt scaling plus Wu–Lin–Weng coupling when `prob_a`/`prob_b` are given.

use tract_nnef::internal::*;
use tract_onnx::pb::NodeProto;

use super::register::{OnnxPredictor, Predictor};
use super::tree::PostTransform;
use super::{attr_f32s, attr_i64s, reject_double_attrs};

/// The kernel between an input row and a support vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Linear,
    Poly,
    Rbf,
    Sigmoid,
}

impl Kernel {
    fn parse(s: &str) -> TractResult<Kernel> {
        Ok(match s {
            "LINEAR" => Kernel::Linear,
            "POLY" => Kernel::Poly,
            "RBF" => Kernel::Rbf,
            "SIGMOID" => Kernel::Sigmoid,
            other => bail!("unsupported kernel_type {other:?}"),
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Kernel::Linear => "LINEAR",
            Kernel::Poly => "POLY",
            Kernel::Rbf => "RBF",
            Kernel::Sigmoid => "SIGMOID",
        }
    }
}

/// A parsed SVM.
#[derive(Debug, Clone, PartialEq)]
pub struct Svm {
    kernel: Kernel,
    gamma: f32,
    coef0: f32,
    degree: f32,
    /// `[vectors, features]`, empty in liblinear mode.
    support_vectors: Vec<f32>,
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    vectors_per_class: Vec<usize>,
    features: usize,
    post: PostTransform,
    /// Class labels for a classifier, `None` for a regressor.
    labels: Option<Vec<i64>>,
    one_class: bool,
}

fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

impl Svm {
    fn vectors(&self) -> usize {
        self.vectors_per_class.iter().sum()
    }

    fn is_svc(&self) -> bool {
        !self.support_vectors.is_empty()
    }

    /// Number of score columns.
    fn scores(&self) -> usize {
        match &self.labels {
            None => 1,
            Some(l) => {
                let c = l.len();
                if self.is_svc() && self.prob_a.is_empty() {
                    if c > 2 { c * (c - 1) / 2 } else { 2 }
                } else {
                    c
                }
            }
        }
    }

    /// Parse a classifier's (`classifier`) or regressor's attributes.
    pub fn from_onnx(node: &NodeProto, classifier: bool) -> TractResult<Svm> {
        reject_double_attrs(node)?;
        let kernel = Kernel::parse(
            &node
                .get_attr_opt::<String>("kernel_type")?
                .unwrap_or_else(|| "LINEAR".into()),
        )?;
        let params = attr_f32s(node, "kernel_params")?;
        let (gamma, coef0, degree) = match params.as_slice() {
            [] => (0.0, 0.0, 0.0),
            [gamma_param, coef0_param, degree_param, ..] => {
                (*gamma_param, *coef0_param, *degree_param)
            }
            _ => bail!("kernel_params needs gamma, coef0 and degree"),
        };
        let support_vectors = attr_f32s(node, "support_vectors")?;
        let coefficients = attr_f32s(node, "coefficients")?;
        let rho = attr_f32s(node, "rho")?;
        ensure!(!coefficients.is_empty(), "coefficients are empty");
        ensure!(!rho.is_empty(), "rho is empty");
        let post = PostTransform::parse(
            &node
                .get_attr_opt::<String>("post_transform")?
                .unwrap_or_else(|| "NONE".into()),
        )?;
        let mut svm = Svm {
            kernel,
            gamma,
            coef0,
            degree,
            support_vectors,
            coefficients,
            rho,
            prob_a: attr_f32s(node, "prob_a")?,
            prob_b: attr_f32s(node, "prob_b")?,
            vectors_per_class: vec![],
            features: 0,
            post,
            labels: None,
            one_class: false,
        };
        if classifier {
            let labels = attr_i64s(node, "classlabels_ints")?;
            ensure!(
                !labels.is_empty(),
                "string class labels are not supported: export the classifier with integer labels"
            );
            svm.vectors_per_class = attr_i64s(node, "vectors_per_class")?
                .into_iter()
                .map(|count| {
                    usize::try_from(count).map_err(|_| format_err!("negative vectors_per_class"))
                })
                .collect::<TractResult<_>>()?;
            let count: usize = svm.vectors_per_class.iter().sum();
            if let Some(features) = svm.support_vectors.len().checked_div(count) {
                ensure!(
                    svm.vectors_per_class.len() == labels.len(),
                    "vectors_per_class and class labels differ"
                );
                svm.features = features;
            } else {
                svm.support_vectors.clear();
                svm.kernel = Kernel::Linear;
                svm.features = svm.coefficients.len() / labels.len();
            }
            svm.labels = Some(labels);
        } else {
            let count: i64 = node.get_attr_opt("n_supports")?.unwrap_or(0);
            ensure!(count >= 0, "negative n_supports");
            svm.one_class = node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0;
            if count > 0 {
                svm.features = svm.support_vectors.len() / count as usize;
                svm.vectors_per_class = vec![count as usize];
            } else {
                svm.support_vectors.clear();
                svm.kernel = Kernel::Linear;
                svm.features = svm.coefficients.len();
            }
        }
        svm.check()?;
        Ok(svm)
    }

    fn check(&self) -> TractResult<()> {
        ensure!(self.features > 0, "an SVM without features");
        let vectors = self.vectors();
        if self.is_svc() {
            ensure!(
                self.support_vectors.len() == vectors * self.features,
                "support_vectors do not split into {vectors} vectors"
            );
            let classes = self.labels.as_ref().map_or(2, Vec::len);
            ensure!(
                self.coefficients.len() >= (classes - 1) * vectors,
                "coefficients are fewer than (classes - 1) x vectors"
            );
            if self.labels.is_some() {
                ensure!(
                    self.rho.len() >= classes * (classes - 1) / 2,
                    "rho has fewer values than class pairs"
                );
                ensure!(
                    self.prob_a.len() == self.prob_b.len()
                        && (self.prob_a.is_empty()
                            || self.prob_a.len() >= classes * (classes - 1) / 2),
                    "prob_a and prob_b need one value per class pair"
                );
            }
        } else {
            let classes = self.labels.as_ref().map_or(1, Vec::len);
            ensure!(
                self.coefficients.len() >= classes * self.features,
                "coefficients are fewer than classes x features"
            );
        }
        Ok(())
    }

    /// The kernel of `row` with each of `vectors` (`[n, features]`), plus `c` for the dot-product kernels.
    fn kernel_row(&self, row: &[f32], vectors: &[f32], c: f32, out: &mut Vec<f32>) {
        out.clear();
        for sv in vectors.chunks_exact(self.features) {
            let v = match self.kernel {
                Kernel::Rbf => {
                    let d: f32 = row.iter().zip(sv).map(|(a, b)| (a - b) * (a - b)).sum();
                    (-self.gamma * d).exp()
                }
                k => {
                    let dot: f32 = row.iter().zip(sv).map(|(a, b)| a * b).sum();
                    match k {
                        Kernel::Poly => (self.gamma * dot + self.coef0).powf(self.degree),
                        Kernel::Sigmoid => (self.gamma * dot + self.coef0).tanh(),
                        _ => dot + c,
                    }
                }
            };
            out.push(v);
        }
    }

    /// Scores `[rows, scores()]` and labels (classifier only).
    pub fn eval(&self, input: &[f32], width: usize) -> TractResult<(Vec<f32>, Vec<i64>)> {
        ensure!(
            width == self.features,
            "the SVM takes {} features, rows have {width}",
            self.features
        );
        let rows = input.len() / width.max(1);
        let columns = self.scores();
        let mut out = vec![0f32; rows * columns];
        let mut labels = Vec::with_capacity(rows);
        let mut kernels = Vec::new();
        for (row_index, row) in input.chunks_exact(width).enumerate() {
            let out_row = &mut out[row_index * columns..(row_index + 1) * columns];
            match &self.labels {
                None => {
                    let prediction = if self.is_svc() {
                        self.kernel_row(row, &self.support_vectors, 0.0, &mut kernels);
                        kernels
                            .iter()
                            .zip(&self.coefficients)
                            .map(|(kernel, coefficient)| kernel * coefficient)
                            .sum::<f32>()
                            + self.rho[0]
                    } else {
                        self.kernel_row(
                            row,
                            &self.coefficients[..self.features],
                            self.rho[0],
                            &mut kernels,
                        );
                        kernels[0]
                    };
                    out_row[0] = if self.one_class {
                        if prediction > 0.0 { 1.0 } else { -1.0 }
                    } else {
                        prediction
                    };
                }
                Some(class_labels) => {
                    labels.push(self.classify(class_labels, row, &mut kernels, out_row))
                }
            }
        }
        Ok((out, labels))
    }

    fn classify(
        &self,
        labels: &[i64],
        row: &[f32],
        kernels: &mut Vec<f32>,
        out_row: &mut [f32],
    ) -> i64 {
        let classes = labels.len();
        let pairs = classes * (classes - 1) / 2;
        let proba = !self.prob_a.is_empty();
        let mut scores = Vec::with_capacity(pairs.max(classes));
        let mut votes = vec![0usize; classes];
        if self.is_svc() {
            self.kernel_row(row, &self.support_vectors, 0.0, kernels);
            let vectors = self.vectors();
            let start: Vec<usize> = self
                .vectors_per_class
                .iter()
                .scan(0, |acc, count| {
                    let begin = *acc;
                    *acc += count;
                    Some(begin)
                })
                .collect();
            let mut pair = 0;
            for this_class in 0..classes - 1 {
                for other_class in this_class + 1..classes {
                    // this_class's vectors weighted by coefficient row other_class - 1, other_class's by row this_class:
                    // libsvm's one-vs-one layout.
                    let mut sum = 0f64;
                    for vector in 0..self.vectors_per_class[this_class] {
                        sum += (self.coefficients
                            [(other_class - 1) * vectors + start[this_class] + vector]
                            * kernels[start[this_class] + vector])
                            as f64;
                    }
                    for vector in 0..self.vectors_per_class[other_class] {
                        sum += (self.coefficients
                            [this_class * vectors + start[other_class] + vector]
                            * kernels[start[other_class] + vector])
                            as f64;
                    }
                    sum += self.rho[pair] as f64;
                    pair += 1;
                    scores.push(sum as f32);
                    votes[if sum > 0.0 { this_class } else { other_class }] += 1;
                }
            }
        } else {
            self.kernel_row(
                row,
                &self.coefficients[..classes * self.features],
                self.rho[0],
                kernels,
            );
            scores.extend_from_slice(kernels);
        }
        if self.is_svc() && proba {
            scores = self.probabilities(&scores, classes);
        }
        let (best, max_weight) = if self.is_svc() {
            // The first class with the most votes.
            let mut best = 0;
            for (this_class, count) in votes.iter().enumerate() {
                if *count > votes[best] {
                    best = this_class;
                }
            }
            (best, 0.0)
        } else {
            let mut best = 0;
            for (this_class, score) in scores.iter().enumerate() {
                if *score > scores[best] {
                    best = this_class;
                }
            }
            (best, scores[best])
        };
        let label = if pairs == 1 {
            let all_positive = self
                .coefficients
                .iter()
                .all(|coefficient| *coefficient >= 0.0);
            if !proba
                && ((all_positive && max_weight >= 0.5) || (!all_positive && max_weight > 0.0))
            {
                labels[1]
            } else {
                labels[best]
            }
        } else {
            labels[best]
        };
        self.finish_scores(&scores, classes, proba, out_row);
        label
    }

    fn finish_scores(&self, scores: &[f32], classes: usize, proba: bool, out: &mut [f32]) {
        if self.is_svc() && !proba && classes <= 2 {
            // One decision value, written with its opposite as onnxruntime does.
            let value = scores[0];
            if self.post == PostTransform::Probit {
                out[0] = probit(value);
            } else if self.post == PostTransform::None {
                out[0] = -value;
                out[1] = value;
            } else {
                out[0] = 1.0 - value;
                out[1] = value;
            }
            return;
        }
        out.copy_from_slice(&scores[..out.len()]);
        match self.post {
            PostTransform::None => {}
            PostTransform::Logistic => out.iter_mut().for_each(|value| *value = logistic(*value)),
            PostTransform::Probit => out.iter_mut().for_each(|value| *value = probit(*value)),
            PostTransform::Softmax | PostTransform::SoftmaxZero => {
                let zero = self.post == PostTransform::SoftmaxZero;
                let max = out.iter().copied().fold(-f32::MAX, f32::max);
                let scale0 = (-max).exp();
                let mut sum = 0.0;
                for value in out.iter_mut() {
                    if !zero || *value > 1e-7 || *value < -1e-7 {
                        *value = (*value - max).exp();
                        sum += *value;
                    } else {
                        *value *= scale0;
                    }
                }
                out.iter_mut().for_each(|value| *value /= sum);
            }
        }
    }

    /// Platt-scaled pairwise probabilities coupled into one per class (Wu, Lin and Weng 2004, as libsvm does).
    fn probabilities(&self, decisions: &[f32], classes: usize) -> Vec<f32> {
        let mut pairwise = vec![0f32; classes * classes];
        let mut index = 0;
        for row in 0..classes - 1 {
            for column in row + 1..classes {
                let pair_probability =
                    1.0 - logistic(decisions[index] * self.prob_a[index] + self.prob_b[index]);
                let pair_probability = pair_probability.clamp(1e-7, 1.0 - 1e-7);
                pairwise[row * classes + column] = pair_probability;
                pairwise[column * classes + row] = 1.0 - pair_probability;
                index += 1;
            }
        }
        let mut q_matrix = vec![0f32; classes * classes];
        let mut estimates = vec![1.0 / classes as f32; classes];
        for row in 0..classes {
            for column in 0..row {
                q_matrix[row * classes + row] +=
                    pairwise[column * classes + row] * pairwise[column * classes + row];
                q_matrix[row * classes + column] = q_matrix[column * classes + row];
            }
            for column in row + 1..classes {
                q_matrix[row * classes + row] +=
                    pairwise[column * classes + row] * pairwise[column * classes + row];
                q_matrix[row * classes + column] =
                    -pairwise[column * classes + row] * pairwise[row * classes + column];
            }
        }
        let eps = 0.005 / classes as f32;
        let mut qp = vec![0f32; classes];
        for _ in 0..100 {
            let mut pqp = 0.0;
            for row in 0..classes {
                qp[row] = (0..classes)
                    .map(|column| q_matrix[row * classes + column] * estimates[column])
                    .sum();
                pqp += estimates[row] * qp[row];
            }
            let max_error = qp
                .iter()
                .map(|value| (value - pqp).abs())
                .fold(0.0, f32::max);
            if max_error < eps {
                break;
            }
            for row in 0..classes {
                let diff = (-qp[row] + pqp) / q_matrix[row * classes + row];
                estimates[row] += diff;
                pqp = (pqp + diff * (diff * q_matrix[row * classes + row] + 2.0 * qp[row]))
                    / (1.0 + diff)
                    / (1.0 + diff);
                for column in 0..classes {
                    qp[column] =
                        (qp[column] + diff * q_matrix[row * classes + column]) / (1.0 + diff);
                    estimates[column] /= 1.0 + diff;
                }
            }
        }
        estimates
    }

    fn to_tensors(&self) -> TractResult<Vec<(&'static str, Arc<Tensor>)>> {
        let ints = |v: &[usize]| v.iter().map(|x| *x as i64).collect::<Vec<_>>();
        Ok(vec![
            ("support_vectors", rctensor1(&self.support_vectors)),
            ("coefficients", rctensor1(&self.coefficients)),
            ("rho", rctensor1(&self.rho)),
            ("prob_a", rctensor1(&self.prob_a)),
            ("prob_b", rctensor1(&self.prob_b)),
            (
                "vectors_per_class",
                rctensor1(&ints(&self.vectors_per_class)),
            ),
            ("labels", rctensor1(self.labels.as_deref().unwrap_or(&[]))),
            ("params", rctensor1(&[self.gamma, self.coef0, self.degree])),
            (
                "shape",
                rctensor1(&[
                    self.features as i64,
                    self.labels.is_some() as i64,
                    self.one_class as i64,
                ]),
            ),
        ])
    }

    fn from_tensors(get: &dyn Fn(&str) -> TractResult<Arc<Tensor>>) -> TractResult<Svm> {
        let f32s = |name: &str| -> TractResult<Vec<f32>> {
            Ok(get(name)?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let i64s = |name: &str| -> TractResult<Vec<i64>> {
            Ok(get(name)?
                .cast_to::<i64>()?
                .try_as_plain_ram()?
                .as_slice::<i64>()?
                .to_vec())
        };
        let params = f32s("params")?;
        let shape = i64s("shape")?;
        ensure!(params.len() == 3 && shape.len() == 3, "bad SVM record");
        let svm = Svm {
            kernel: Kernel::Linear,
            gamma: params[0],
            coef0: params[1],
            degree: params[2],
            support_vectors: f32s("support_vectors")?,
            coefficients: f32s("coefficients")?,
            rho: f32s("rho")?,
            prob_a: f32s("prob_a")?,
            prob_b: f32s("prob_b")?,
            vectors_per_class: i64s("vectors_per_class")?
                .into_iter()
                .map(|value| value as usize)
                .collect(),
            features: shape[0] as usize,
            post: PostTransform::None,
            labels: (shape[1] != 0).then(|| i64s("labels")).transpose()?,
            one_class: shape[2] != 0,
        };
        Ok(svm)
    }
}

fn probit(p: f32) -> f32 {
    let x = 2.0 * p - 1.0;
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let y = (1.0 - x) * (1.0 + x);
    let l = y.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * l;
    let v2 = 1.0 / 0.147 * l;
    std::f32::consts::SQRT_2 * sgn * (-v + (v * v - v2).sqrt()).sqrt()
}

/// The typed op: input `[N, F]` read as f32; outputs `[N]` labels (classifier only) then `[N, scores]` f32.
#[derive(Debug, Clone)]
pub struct SvmOp {
    /// The machine.
    pub svm: Arc<Svm>,
}

impl PartialEq for SvmOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.svm, &other.svm) || self.svm == other.svm
    }
}

// Parameters are finite numbers from a file; equality of the derived comparison is an equivalence here.
impl Eq for SvmOp {}

impl Op for SvmOp {
    fn name(&self) -> StaticName {
        if self.svm.labels.is_some() {
            "TractorSVMClassifier".into()
        } else {
            "TractorSVMRegressor".into()
        }
    }
    op_as_typed_op!();
}

impl EvalOp for SvmOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let shape = input.shape();
        let (rows, width) = match shape.len() {
            1 => (1, shape[0]),
            2 => (shape[0], shape[1]),
            r => bail!("an SVM takes [N, features], got rank {r}"),
        };
        let x = input.try_as_plain_ram()?;
        let (scores, labels) = self.svm.eval(x.as_slice::<f32>()?, width)?;
        let scores = tensor1(&scores).into_shape(&[rows, self.svm.scores()])?;
        if self.svm.labels.is_some() {
            Ok(tvec!(tensor1(&labels).into_tvalue(), scores.into_tvalue()))
        } else {
            Ok(tvec!(scores.into_tvalue()))
        }
    }
}

impl TypedOp for SvmOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = if inputs[0].rank() == 2 {
            inputs[0].shape[0].clone()
        } else {
            1.to_dim()
        };
        let scores = f32::fact([n.clone(), self.svm.scores().to_dim()]);
        if self.svm.labels.is_some() {
            Ok(tvec!(i64::fact([n]), scores))
        } else {
            Ok(tvec!(scores))
        }
    }

    as_op!();
}

/// Reads an ONNX `SVMClassifier` node.
pub(crate) fn classifier_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<OnnxPredictor<SvmOp>> {
    let svm = Arc::new(Svm::from_onnx(node, true)?);
    Ok(OnnxPredictor(SvmOp { svm }))
}

/// Reads an ONNX `SVMRegressor` node.
pub(crate) fn regressor_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<OnnxPredictor<SvmOp>> {
    let svm = Arc::new(Svm::from_onnx(node, false)?);
    Ok(OnnxPredictor(SvmOp { svm }))
}

impl Predictor for SvmOp {
    const NNEF_ID: &'static str = "tractor_ml_svm";
    const TENSORS: &'static [&'static str] = &[
        "support_vectors",
        "coefficients",
        "rho",
        "prob_a",
        "prob_b",
        "vectors_per_class",
        "labels",
        "params",
        "shape",
    ];
    const STRINGS: [&'static str; 2] = ["kernel", "post_transform"];

    fn is_classifier(&self) -> bool {
        self.svm.labels.is_some()
    }

    fn n_scores(&self) -> usize {
        self.svm.scores()
    }

    fn to_tensors(&self) -> TractResult<Vec<(&'static str, Arc<Tensor>)>> {
        self.svm.to_tensors()
    }

    fn strings(&self) -> [&'static str; 2] {
        [self.svm.kernel.as_str(), self.svm.post.as_str()]
    }

    fn from_nnef(
        tensor: &dyn Fn(&str) -> TractResult<Arc<Tensor>>,
        [kernel, post]: [&str; 2],
    ) -> TractResult<SvmOp> {
        let mut svm = Svm::from_tensors(tensor)?;
        svm.kernel = Kernel::parse(kernel)?;
        svm.post = PostTransform::parse(post)?;
        svm.check()?;
        Ok(SvmOp { svm: Arc::new(svm) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base(kernel: Kernel, labels: Option<Vec<i64>>) -> Svm {
        Svm {
            kernel,
            gamma: 0.5,
            coef0: 1.0,
            degree: 2.0,
            support_vectors: vec![],
            coefficients: vec![],
            rho: vec![],
            prob_a: vec![],
            prob_b: vec![],
            vectors_per_class: vec![],
            features: 2,
            post: PostTransform::None,
            labels,
            one_class: false,
        }
    }

    #[test]
    fn regressor_kernels_as_the_spec_says() {
        // Two support vectors (1, 0) and (0, 1), coefficients 2 and -1, rho 0.5, input (1, 1).
        for (kernel, k1, k2) in [
            (Kernel::Rbf, (-0.5f32).exp(), (-0.5f32).exp()),
            (Kernel::Linear, 1.0, 1.0),
            (Kernel::Poly, 1.5f32.powi(2), 1.5f32.powi(2)),
            (Kernel::Sigmoid, 1.5f32.tanh(), 1.5f32.tanh()),
        ] {
            let mut svm = base(kernel, None);
            svm.support_vectors = vec![1.0, 0.0, 0.0, 1.0];
            svm.coefficients = vec![2.0, -1.0];
            svm.rho = vec![0.5];
            svm.vectors_per_class = vec![2];
            svm.check().unwrap();
            let (y, _) = svm.eval(&[1.0, 1.0], 2).unwrap();
            assert!(
                (y[0] - (2.0 * k1 - k2 + 0.5)).abs() < 1e-6,
                "{kernel:?} {y:?}"
            );
        }
    }

    #[test]
    fn linear_regressor_and_one_class() {
        let mut svm = base(Kernel::Linear, None);
        svm.coefficients = vec![1.0, -2.0];
        svm.rho = vec![0.25];
        let (y, _) = svm.eval(&[3.0, 1.0], 2).unwrap();
        assert_eq!(y, [1.25]);
        svm.one_class = true;
        let (y, _) = svm.eval(&[3.0, 1.0, 0.0, 1.0], 2).unwrap();
        assert_eq!(y, [1.0, -1.0]);
    }

    #[test]
    fn one_vs_one_votes_pick_the_label() {
        // Three classes, one support vector each, linear kernel; coefficients [classes - 1, vectors].
        let mut svm = base(Kernel::Linear, Some(vec![10, 20, 30]));
        svm.support_vectors = vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0];
        svm.vectors_per_class = vec![1, 1, 1];
        svm.coefficients = vec![1.0, -1.0, -1.0, 1.0, 1.0, -1.0];
        svm.rho = vec![0.0, 0.0, 0.0];
        svm.check().unwrap();
        let (scores, labels) = svm.eval(&[0.0, 2.0], 2).unwrap();
        // kernels: (0, 2, -2). pair 01: c[1][0]*0 + c[0][1]*2 = -2; 02: c[1][0]*0 + c[0][2]*(-2) = 2;
        // 12: c[1][1]*2 + c[1][2]*(-2) = 2 + 2 = 4. Votes: 1 (01), 0 (02), 1 (12) -> class 1.
        assert_eq!(scores, [-2.0, 2.0, 4.0]);
        assert_eq!(labels, [20]);
    }

    #[test]
    fn binary_decision_is_written_with_its_opposite() {
        let mut svm = base(Kernel::Linear, Some(vec![0, 1]));
        svm.support_vectors = vec![1.0, 0.0, 0.0, 1.0];
        svm.vectors_per_class = vec![1, 1];
        svm.coefficients = vec![1.0, -1.0];
        svm.rho = vec![0.5];
        let (scores, labels) = svm.eval(&[2.0, 0.0], 2).unwrap();
        assert_eq!(scores, [-2.5, 2.5]);
        assert_eq!(labels, [0]);
    }

    #[test]
    fn nnef_tensors_round_trip() {
        let mut svm = base(Kernel::Rbf, Some(vec![0, 1]));
        svm.support_vectors = vec![1.0, 0.0, 0.0, 1.0];
        svm.vectors_per_class = vec![1, 1];
        svm.coefficients = vec![1.0, -1.0];
        svm.rho = vec![0.5];
        let tensors: HashMap<_, _> = svm.to_tensors().unwrap().into_iter().collect();
        let mut back = Svm::from_tensors(&|n: &str| Ok(tensors[n].clone())).unwrap();
        back.kernel = svm.kernel;
        assert_eq!(back, svm);
    }
}
