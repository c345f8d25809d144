//! Support vector machines: ai.onnx.ml `SVMClassifier` and `SVMRegressor` (opset 1, ONNX Operators-ml.md), in
//! libsvm's layout (one-vs-one classifiers, support vectors grouped by class) and liblinear's (coefficients only),
//! with onnxruntime's conventions where the spec is silent: which scores a classifier returns (the pairwise
//! decision values without probabilities, both classes' for a binary one), the vote that picks the label, and
//! Platt scaling plus Wu–Lin–Weng coupling when `prob_a`/`prob_b` are given.

use tract_nnef::internal::*;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::infer::InferenceOp;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity, expand,
};

use super::tree::PostTransform;
use super::{attr_f32s, attr_i64s, reject_double_attrs};

const NNEF_ID: &str = "tractor_ml_svm";

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
            [g, c, d, ..] => (*g, *c, *d),
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
                .map(|v| usize::try_from(v).map_err(|_| format_err!("negative vectors_per_class")))
                .collect::<TractResult<_>>()?;
            let v: usize = svm.vectors_per_class.iter().sum();
            if let Some(features) = svm.support_vectors.len().checked_div(v) {
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
            let v: i64 = node.get_attr_opt("n_supports")?.unwrap_or(0);
            ensure!(v >= 0, "negative n_supports");
            svm.one_class = node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0;
            if v > 0 {
                svm.features = svm.support_vectors.len() / v as usize;
                svm.vectors_per_class = vec![v as usize];
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
        let v = self.vectors();
        if self.is_svc() {
            ensure!(
                self.support_vectors.len() == v * self.features,
                "support_vectors do not split into {v} vectors"
            );
            let c = self.labels.as_ref().map_or(2, Vec::len);
            ensure!(
                self.coefficients.len() >= (c - 1) * v,
                "coefficients are fewer than (classes - 1) x vectors"
            );
            if self.labels.is_some() {
                ensure!(
                    self.rho.len() >= c * (c - 1) / 2,
                    "rho has fewer values than class pairs"
                );
                ensure!(
                    self.prob_a.len() == self.prob_b.len()
                        && (self.prob_a.is_empty() || self.prob_a.len() >= c * (c - 1) / 2),
                    "prob_a and prob_b need one value per class pair"
                );
            }
        } else {
            let c = self.labels.as_ref().map_or(1, Vec::len);
            ensure!(
                self.coefficients.len() >= c * self.features,
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
    pub fn eval(&self, x: &[f32], width: usize) -> TractResult<(Vec<f32>, Vec<i64>)> {
        ensure!(
            width == self.features,
            "the SVM takes {} features, rows have {width}",
            self.features
        );
        let rows = x.len() / width.max(1);
        let s = self.scores();
        let mut out = vec![0f32; rows * s];
        let mut labels = Vec::with_capacity(rows);
        let mut k = Vec::new();
        for (r, row) in x.chunks_exact(width).enumerate() {
            let o = &mut out[r * s..(r + 1) * s];
            match &self.labels {
                None => {
                    let y = if self.is_svc() {
                        self.kernel_row(row, &self.support_vectors, 0.0, &mut k);
                        k.iter()
                            .zip(&self.coefficients)
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            + self.rho[0]
                    } else {
                        self.kernel_row(
                            row,
                            &self.coefficients[..self.features],
                            self.rho[0],
                            &mut k,
                        );
                        k[0]
                    };
                    o[0] = if self.one_class {
                        if y > 0.0 { 1.0 } else { -1.0 }
                    } else {
                        y
                    };
                }
                Some(l) => labels.push(self.classify(l, row, &mut k, o)),
            }
        }
        Ok((out, labels))
    }

    fn classify(&self, labels: &[i64], row: &[f32], k: &mut Vec<f32>, o: &mut [f32]) -> i64 {
        let c = labels.len();
        let pairs = c * (c - 1) / 2;
        let proba = !self.prob_a.is_empty();
        let mut scores = Vec::with_capacity(pairs.max(c));
        let mut votes = vec![0usize; c];
        if self.is_svc() {
            self.kernel_row(row, &self.support_vectors, 0.0, k);
            let v = self.vectors();
            let start: Vec<usize> = self
                .vectors_per_class
                .iter()
                .scan(0, |acc, n| {
                    let s = *acc;
                    *acc += n;
                    Some(s)
                })
                .collect();
            let mut pair = 0;
            for i in 0..c - 1 {
                for j in i + 1..c {
                    // Class i's vectors weighted by row j-1, class j's by row i: libsvm's one-vs-one layout.
                    let mut sum = 0f64;
                    for m in 0..self.vectors_per_class[i] {
                        sum += (self.coefficients[(j - 1) * v + start[i] + m] * k[start[i] + m])
                            as f64;
                    }
                    for m in 0..self.vectors_per_class[j] {
                        sum += (self.coefficients[i * v + start[j] + m] * k[start[j] + m]) as f64;
                    }
                    sum += self.rho[pair] as f64;
                    pair += 1;
                    scores.push(sum as f32);
                    votes[if sum > 0.0 { i } else { j }] += 1;
                }
            }
        } else {
            self.kernel_row(row, &self.coefficients[..c * self.features], self.rho[0], k);
            scores.extend_from_slice(k);
        }
        if self.is_svc() && proba {
            scores = self.probabilities(&scores, c);
        }
        let (best, max_weight) = if self.is_svc() {
            // The first class with the most votes.
            let mut best = 0;
            for (i, n) in votes.iter().enumerate() {
                if *n > votes[best] {
                    best = i;
                }
            }
            (best, 0.0)
        } else {
            let mut best = 0;
            for (i, v) in scores.iter().enumerate() {
                if *v > scores[best] {
                    best = i;
                }
            }
            (best, scores[best])
        };
        let label = if pairs == 1 {
            let all_positive = self.coefficients.iter().all(|c| *c >= 0.0);
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
        self.finish_scores(&scores, c, proba, o);
        label
    }

    fn finish_scores(&self, scores: &[f32], c: usize, proba: bool, o: &mut [f32]) {
        if self.is_svc() && !proba && c <= 2 {
            // One decision value, written with its opposite as onnxruntime does.
            let v = scores[0];
            if self.post == PostTransform::Probit {
                o[0] = probit(v);
            } else if self.post == PostTransform::None {
                o[0] = -v;
                o[1] = v;
            } else {
                o[0] = 1.0 - v;
                o[1] = v;
            }
            return;
        }
        o.copy_from_slice(&scores[..o.len()]);
        match self.post {
            PostTransform::None => {}
            PostTransform::Logistic => o.iter_mut().for_each(|v| *v = logistic(*v)),
            PostTransform::Probit => o.iter_mut().for_each(|v| *v = probit(*v)),
            PostTransform::Softmax | PostTransform::SoftmaxZero => {
                let zero = self.post == PostTransform::SoftmaxZero;
                let max = o.iter().copied().fold(-f32::MAX, f32::max);
                let scale0 = (-max).exp();
                let mut sum = 0.0;
                for v in o.iter_mut() {
                    if !zero || *v > 1e-7 || *v < -1e-7 {
                        *v = (*v - max).exp();
                        sum += *v;
                    } else {
                        *v *= scale0;
                    }
                }
                o.iter_mut().for_each(|v| *v /= sum);
            }
        }
    }

    /// Platt-scaled pairwise probabilities coupled into one per class (Wu, Lin and Weng 2004, as libsvm does).
    fn probabilities(&self, decisions: &[f32], c: usize) -> Vec<f32> {
        let mut r = vec![0f32; c * c];
        let mut index = 0;
        for i in 0..c - 1 {
            for j in i + 1..c {
                let p = 1.0 - logistic(decisions[index] * self.prob_a[index] + self.prob_b[index]);
                let p = p.clamp(1e-7, 1.0 - 1e-7);
                r[i * c + j] = p;
                r[j * c + i] = 1.0 - p;
                index += 1;
            }
        }
        let mut q = vec![0f32; c * c];
        let mut p = vec![1.0 / c as f32; c];
        for i in 0..c {
            for j in 0..i {
                q[i * c + i] += r[j * c + i] * r[j * c + i];
                q[i * c + j] = q[j * c + i];
            }
            for j in i + 1..c {
                q[i * c + i] += r[j * c + i] * r[j * c + i];
                q[i * c + j] = -r[j * c + i] * r[i * c + j];
            }
        }
        let eps = 0.005 / c as f32;
        let mut qp = vec![0f32; c];
        for _ in 0..100 {
            let mut pqp = 0.0;
            for i in 0..c {
                qp[i] = (0..c).map(|j| q[i * c + j] * p[j]).sum();
                pqp += p[i] * qp[i];
            }
            let max_error = qp.iter().map(|v| (v - pqp).abs()).fold(0.0, f32::max);
            if max_error < eps {
                break;
            }
            for i in 0..c {
                let diff = (-qp[i] + pqp) / q[i * c + i];
                p[i] += diff;
                pqp = (pqp + diff * (diff * q[i * c + i] + 2.0 * qp[i]))
                    / (1.0 + diff)
                    / (1.0 + diff);
                for j in 0..c {
                    qp[j] = (qp[j] + diff * q[i * c + j]) / (1.0 + diff);
                    p[j] /= 1.0 + diff;
                }
            }
        }
        p
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
        let f32s = |n: &str| -> TractResult<Vec<f32>> {
            Ok(get(n)?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let i64s = |n: &str| -> TractResult<Vec<i64>> {
            Ok(get(n)?
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
                .map(|v| v as usize)
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

#[derive(Debug, Clone)]
struct SvmOnnx(SvmOp);

impl Expansion for SvmOnnx {
    fn name(&self) -> StaticName {
        self.0.name()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.svm.labels.is_some() { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        let scores = if self.0.svm.labels.is_some() {
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
        s.equals(&scores.shape[1], self.0.svm.scores().to_dim())?;
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

/// ONNX builder for `SVMClassifier`.
pub fn classifier_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let svm = Arc::new(Svm::from_onnx(node, true)?);
    Ok((expand(SvmOnnx(SvmOp { svm })), vec![]))
}

/// ONNX builder for `SVMRegressor`.
pub fn regressor_onnx(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let svm = Arc::new(Svm::from_onnx(node, false)?);
    Ok((expand(SvmOnnx(SvmOp { svm })), vec![]))
}

const TENSORS: [&str; 9] = [
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

/// Declare the NNEF primitive and its dumper.
pub fn register_nnef(registry: &mut Registry) {
    let mut params = vec![TypeName::Scalar.tensor().named("input")];
    for name in TENSORS {
        params.push(TypeName::Scalar.tensor().named(name));
    }
    params.push(TypeName::String.named("kernel"));
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

fn nnef_dump(ast: &mut IntoAst, node: &TypedNode, op: &SvmOp) -> TractResult<Option<Arc<RValue>>> {
    let mut args = vec![ast.mapping[&node.inputs[0]].clone()];
    for (name, tensor) in op.svm.to_tensors()? {
        args.push(ast.konst_variable(format!("{}_{name}", node.name), &tensor)?);
    }
    Ok(Some(invocation(
        NNEF_ID,
        &args,
        &[
            ("kernel", string(op.svm.kernel.as_str())),
            ("post_transform", string(op.svm.post.as_str())),
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
    let mut svm = Svm::from_tensors(&get)?;
    let kernel: String = invocation.named_arg_as(builder, "kernel")?;
    let post: String = invocation.named_arg_as(builder, "post_transform")?;
    svm.kernel = Kernel::parse(&kernel)?;
    svm.post = PostTransform::parse(&post)?;
    svm.check()?;
    builder.wire(SvmOp { svm: Arc::new(svm) }, &[input])
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
