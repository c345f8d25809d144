//! The tree ensemble in NNEF artifacts: the flat node array as named tensors of the `tractor_ml_tree_ensemble`
//! primitive (see [`crate::register`]), and back.

use tract_nnef::internal::*;

use super::{Aggregate, Classes, Ensemble, Mode, Node, PostTransform, TreeEnsemble, Walk};
use crate::register::Predictor;

impl Aggregate {
    fn as_str(self) -> &'static str {
        match self {
            Aggregate::Sum => "SUM",
            Aggregate::Average => "AVERAGE",
            Aggregate::Min => "MIN",
            Aggregate::Max => "MAX",
        }
    }
}

impl PostTransform {
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

impl Ensemble {
    fn to_tensors(&self) -> TractResult<Vec<(&'static str, Arc<Tensor>)>> {
        let mut ints = Vec::with_capacity(self.nodes.len() * 4);
        let mut thresholds = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            ints.extend([
                node.feature as i32,
                node.a as i32,
                node.b as i32,
                node.mode as i32 | ((node.nan_true as i32) << 8),
            ]);
            thresholds.push(node.threshold);
        }
        let i32s = |values: &[u32]| values.iter().map(|value| *value as i32).collect::<Vec<_>>();
        let (labels, binary, positive) = match &self.classes {
            Some(classes) => (
                classes.labels.clone(),
                classes.binary as i32,
                classes.all_positive as i32,
            ),
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
            .map(|(record, threshold)| {
                Ok(Node {
                    feature: record[0] as u32,
                    threshold,
                    a: record[1] as u32,
                    b: record[2] as u32,
                    mode: Mode::from_u8((record[3] & 0xff) as u8)?,
                    nan_true: record[3] >> 8 != 0,
                })
            })
            .collect::<TractResult<Vec<_>>>()?;
        let u32s = |name: &str| -> TractResult<Vec<u32>> {
            Ok(get(name)?
                .try_as_plain_ram()?
                .as_slice::<i32>()?
                .iter()
                .map(|value| *value as u32)
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

impl Predictor for TreeEnsemble {
    const NNEF_ID: &'static str = "tractor_ml_tree_ensemble";
    const TENSORS: &'static [&'static str] = &[
        "nodes",
        "thresholds",
        "roots",
        "weight_targets",
        "weight_values",
        "base_values",
        "labels",
        "shape",
    ];
    const STRINGS: [&'static str; 2] = ["aggregate", "post_transform"];

    fn is_classifier(&self) -> bool {
        self.ensemble.is_classifier()
    }

    fn n_scores(&self) -> usize {
        self.ensemble.n_targets
    }

    fn to_tensors(&self) -> TractResult<Vec<(&'static str, Arc<Tensor>)>> {
        self.ensemble.to_tensors()
    }

    fn strings(&self) -> [&'static str; 2] {
        [
            self.ensemble.aggregate.as_str(),
            self.ensemble.post.as_str(),
        ]
    }

    fn from_nnef(
        tensor: &dyn Fn(&str) -> TractResult<Arc<Tensor>>,
        [aggregate, post]: [&str; 2],
    ) -> TractResult<TreeEnsemble> {
        let mut ensemble = Ensemble::from_tensors(tensor)?;
        ensemble.aggregate = Aggregate::parse(aggregate)?;
        ensemble.post = PostTransform::parse(post)?;
        Ok(TreeEnsemble {
            ensemble: Arc::new(ensemble),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tree::tests::stumps;

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
}
