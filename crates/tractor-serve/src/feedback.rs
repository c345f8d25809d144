//! Ground-truth feedback: predictions kept for a bounded window (count and age), matched with true
//! labels sent later, and rolling accuracy and macro precision, recall and F1 over the labelled window.
//!
//! Body of `POST /v2/models/{m}/feedback`:
//! `{"feedback": [{"receipt": "v1:digits:3f9a1c0b7e:1765000000:3", "label": 3}, {"id": "req-2", "label": [0, 1]}]}`.
//! A `receipt` is the `tractor_receipt` parameter of an earlier infer response: any replica scores it, so
//! feedback sent through a Service counts wherever it lands. An `id` is the `id` of an earlier infer request,
//! known only to the replica that answered it (and forgotten on restart). `label` is the true class (a
//! regressor's true value, by receipt only), or one per row for a request of several rows. An id takes feedback once (a repeat counts as `unknown_id`);
//! a receipt carries no server state, so a receipt sent twice counts twice, like a label sent twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::receipt::{Predicted, Receipt};

/// One `{receipt, label}` or `{id, label}` pair.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    /// The infer request's id.
    #[serde(default)]
    pub id: Option<String>,
    /// The infer response's receipt.
    #[serde(default)]
    pub receipt: Option<String>,
    /// The true class, or one per row.
    pub label: Labels,
}

/// A label or one per row: a class for a classifier, a value for a regressor.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    /// A single-row request's class or value.
    One(f64),
    /// One class or value per row.
    Rows(Vec<f64>),
}

/// The feedback body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// Pairs, at most [`MAX_ITEMS`] per call.
    pub feedback: Vec<FeedbackItem>,
}

impl FeedbackRequest {
    /// `Err` names the first item that gives neither or both of `id` and `receipt`.
    pub fn validate(&self) -> Result<(), String> {
        match self
            .feedback
            .iter()
            .position(|i| i.id.is_some() == i.receipt.is_some())
        {
            Some(ix) => Err(format!(
                "feedback item {ix}: give either `id` or `receipt` ({} given)",
                if self.feedback[ix].id.is_some() {
                    "both"
                } else {
                    "neither"
                }
            )),
            None => Ok(()),
        }
    }
}

/// Most pairs accepted in one call (the body limit bounds it too).
pub const MAX_ITEMS: usize = 10_000;
/// Most unknown ids and refused receipts a summary names.
pub const MAX_NAMED: usize = 100;

/// One labelled row, for the per-revision counters; `revision` is the one that predicted (the receipt's, or
/// this server's for an id).
#[derive(Debug, Clone, PartialEq)]
pub enum Labelled {
    /// A classifier's row.
    Class {
        /// The predicting revision.
        revision: Option<String>,
        /// The predicted class.
        predicted: i64,
        /// The true class.
        label: i64,
    },
    /// A regressor's row.
    Value {
        /// The predicting revision.
        revision: Option<String>,
        /// The predicted value.
        predicted: f64,
        /// The true value.
        label: f64,
    },
}

/// What a feedback call did, and the scores after it.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct FeedbackSummary {
    /// Rows whose prediction was right.
    pub correct: u64,
    /// Rows whose prediction was wrong.
    pub incorrect: u64,
    /// Pairs whose id is unknown, expired or already labelled, whose receipt is malformed or another model's,
    /// or whose row count differs.
    pub unknown_id: u64,
    /// Which ones (at most [`MAX_NAMED`]): the id, or `receipt <n>` (the item's index) and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
    /// Rows of a regressor scored (their errors go to the regression counters, not to right or wrong).
    #[serde(skip_serializing_if = "is_zero")]
    pub regression_rows: u64,
    /// Scores over the window.
    pub scores: Scores,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Rolling scores over the labelled window; `None` when it is empty.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Scores {
    /// Labelled rows in the window.
    pub window: usize,
    /// Fraction correct.
    pub accuracy: Option<f64>,
    /// Macro precision over classes predicted or true in the window.
    pub precision: Option<f64>,
    /// Macro recall.
    pub recall: Option<f64>,
    /// Macro F1 (mean of per-class F1).
    pub f1: Option<f64>,
}

/// Bounds of both windows.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    /// Predictions (and labelled outcomes) kept, at most.
    pub max_count: usize,
    /// Predictions (and outcomes) older than this are dropped.
    pub max_age: Duration,
}

/// Predictions awaiting labels and the labelled outcomes.
#[derive(Debug)]
pub struct Feedback {
    config: WindowConfig,
    pending: HashMap<String, (Instant, Vec<i64>)>,
    order: VecDeque<(Instant, String)>,
    outcomes: VecDeque<(Instant, i64, i64)>,
}

impl Feedback {
    /// An empty store.
    pub fn new(config: WindowConfig) -> Feedback {
        Feedback {
            config,
            pending: HashMap::new(),
            order: VecDeque::new(),
            outcomes: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        let max_age = self.config.max_age;
        let old = |t: &Instant| now.saturating_duration_since(*t) > max_age;
        while let Some((t, id)) = self.order.front() {
            if self.order.len() > self.config.max_count || old(t) {
                // Only remove the entry if it is this one (an id reused later has a newer time).
                if self.pending.get(id).is_some_and(|(pt, _)| pt == t) {
                    self.pending.remove(id);
                }
                self.order.pop_front();
            } else {
                break;
            }
        }
        while let Some((t, _, _)) = self.outcomes.front() {
            if self.outcomes.len() > self.config.max_count || old(t) {
                self.outcomes.pop_front();
            } else {
                break;
            }
        }
    }

    /// Remember the predicted class of each row of request `id`.
    pub fn record(&mut self, id: &str, predicted: Vec<i64>, now: Instant) {
        self.pending.insert(id.to_owned(), (now, predicted));
        self.order.push_back((now, id.to_owned()));
        self.expire(now);
    }

    /// Match labels with predictions (by id from memory, or from receipts of `model`); returns the counts and
    /// the scores after, and each labelled row. Only rows predicted by `revision` (this server's) enter the
    /// rolling window, so its scores stay this revision's wherever the feedback came from.
    pub fn apply(
        &mut self,
        items: Vec<FeedbackItem>,
        model: &str,
        revision: Option<&str>,
        now: Instant,
    ) -> (FeedbackSummary, Vec<Labelled>) {
        self.expire(now);
        let mut summary = FeedbackSummary::default();
        let mut labelled = Vec::new();
        let refuse = |summary: &mut FeedbackSummary, what: String| {
            summary.unknown_id += 1;
            if summary.unknown.len() < MAX_NAMED {
                summary.unknown.push(what);
            }
        };
        for (ix, item) in items.into_iter().enumerate() {
            let labels = match item.label {
                Labels::One(l) => vec![l],
                Labels::Rows(v) => v,
            };
            let (predicted, by) = match (&item.receipt, &item.id) {
                (Some(text), _) => match Receipt::parse(text) {
                    Ok(receipt) if receipt.model != model => {
                        refuse(
                            &mut summary,
                            format!("receipt {ix}: model `{}`, not `{model}`", receipt.model),
                        );
                        continue;
                    }
                    Ok(receipt) => (receipt.predicted, receipt.revision),
                    Err(why) => {
                        refuse(&mut summary, format!("receipt {ix}: {why}"));
                        continue;
                    }
                },
                (None, Some(id)) => match self.pending.get(id) {
                    Some((_, classes)) if classes.len() == labels.len() => {
                        let classes = self.pending.remove(id).map(|(_, p)| p).unwrap_or_default();
                        (Predicted::Classes(classes), revision.map(str::to_owned))
                    }
                    _ => {
                        refuse(&mut summary, id.clone());
                        continue;
                    }
                },
                (None, None) => {
                    refuse(&mut summary, format!("item {ix}: no id or receipt"));
                    continue;
                }
            };
            if predicted.len() != labels.len() {
                refuse(
                    &mut summary,
                    format!(
                        "receipt {ix}: {} rows predicted, {} labels",
                        predicted.len(),
                        labels.len()
                    ),
                );
                continue;
            }
            let own = by.as_deref() == revision;
            match predicted {
                Predicted::Classes(classes) => {
                    for (class, label) in classes.into_iter().zip(labels) {
                        // A label that is not a whole number is no class: it counts as wrong.
                        let label = if label.fract() == 0.0 {
                            label as i64
                        } else {
                            i64::MIN
                        };
                        if class == label {
                            summary.correct += 1
                        } else {
                            summary.incorrect += 1
                        }
                        if own {
                            self.outcomes.push_back((now, class, label));
                        }
                        labelled.push(Labelled::Class {
                            revision: by.clone(),
                            predicted: class,
                            label,
                        });
                    }
                }
                Predicted::Values(values) => {
                    for (value, label) in values.into_iter().zip(labels) {
                        summary.regression_rows += 1;
                        labelled.push(Labelled::Value {
                            revision: by.clone(),
                            predicted: value,
                            label,
                        });
                    }
                }
            }
        }
        self.expire(now);
        summary.scores = self.scores();
        (summary, labelled)
    }

    /// Scores over the labelled window as it is now.
    pub fn scores(&self) -> Scores {
        let window = self.outcomes.len();
        if window == 0 {
            return Scores::default();
        }
        // Per class: (true positives, predicted count, true count).
        let mut per: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
        let mut correct = 0u64;
        for (_, predicted, label) in &self.outcomes {
            per.entry(*predicted).or_default().1 += 1;
            per.entry(*label).or_default().2 += 1;
            if predicted == label {
                correct += 1;
                per.entry(*predicted).or_default().0 += 1;
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let classes = per.len() as f64;
        let (mut p_sum, mut r_sum, mut f_sum) = (0.0, 0.0, 0.0);
        for (tp, pred, truth) in per.values() {
            let precision = ratio(*tp, *pred);
            let recall = ratio(*tp, *truth);
            p_sum += precision;
            r_sum += recall;
            f_sum += if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
        }
        Scores {
            window,
            accuracy: Some(correct as f64 / window as f64),
            precision: Some(p_sum / classes),
            recall: Some(r_sum / classes),
            f1: Some(f_sum / classes),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(id: &str, label: Labels) -> FeedbackItem {
        FeedbackItem {
            id: Some(id.into()),
            receipt: None,
            label,
        }
    }

    fn receipt(text: &str, label: Labels) -> FeedbackItem {
        FeedbackItem {
            id: None,
            receipt: Some(text.into()),
            label,
        }
    }

    #[test]
    fn matches_counts_and_scores() {
        let now = Instant::now();
        let mut feedback = Feedback::new(WindowConfig {
            max_count: 100,
            max_age: Duration::from_secs(60),
        });
        feedback.record("a", vec![1], now);
        feedback.record("b", vec![0, 1], now);
        let (summary, labelled) = feedback.apply(
            vec![
                item("a", Labels::One(1.0)),
                item("b", Labels::Rows(vec![1.0, 1.0])),
                item("a", Labels::One(1.0)),
                item("zz", Labels::One(0.0)),
            ],
            "m",
            Some("r1"),
            now,
        );
        assert_eq!(
            (summary.correct, summary.incorrect, summary.unknown_id),
            (2, 1, 2)
        );
        assert_eq!(summary.unknown, ["a", "zz"]);
        assert_eq!(labelled.len(), 3);
        assert!(labelled.iter().all(
            |l| matches!(l, Labelled::Class { revision, .. } if revision.as_deref() == Some("r1"))
        ));
        assert_eq!(summary.scores.window, 3);
        assert!((summary.scores.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // class 0: tp 0, predicted 1, true 0 -> p 0, r 0; class 1: tp 2, predicted 2, true 3 -> p 1, r 2/3.
        assert!((summary.scores.precision.unwrap() - 0.5).abs() < 1e-12);
        assert!((summary.scores.recall.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn window_is_bounded_by_count_and_age() {
        let t0 = Instant::now();
        let mut f = Feedback::new(WindowConfig {
            max_count: 2,
            max_age: Duration::from_secs(10),
        });
        f.record("a", vec![1], t0);
        f.record("b", vec![1], t0);
        f.record("c", vec![1], t0);
        assert_eq!(f.pending.len(), 2, "oldest prediction evicted by count");
        let (s, _) = f.apply(vec![item("a", Labels::One(1.0))], "m", None, t0);
        assert_eq!(s.unknown_id, 1);
        let (s, _) = f.apply(
            vec![item("b", Labels::One(1.0))],
            "m",
            None,
            t0 + Duration::from_secs(11),
        );
        assert_eq!(s.unknown_id, 1, "expired by age");
        assert_eq!(f.pending.len(), 0);
    }

    /// A receipt is scored with no memory of the request; the window keeps only this revision's rows.
    #[test]
    fn receipts_count_on_any_replica() {
        let now = Instant::now();
        let mut feedback = Feedback::new(WindowConfig {
            max_count: 100,
            max_age: Duration::from_secs(60),
        });
        let (summary, labelled) = feedback.apply(
            vec![
                receipt("v1:m:r1:5:3", Labels::One(3.0)),
                receipt("v1:m:r0:5:1,2", Labels::Rows(vec![1.0, 0.0])),
                receipt("v1:other:r1:5:3", Labels::One(3.0)),
                receipt("v1:m:r1:5:3,3", Labels::One(3.0)),
                receipt("garbage", Labels::One(3.0)),
            ],
            "m",
            Some("r1"),
            now,
        );
        assert_eq!(
            (summary.correct, summary.incorrect, summary.unknown_id),
            (2, 1, 3)
        );
        assert_eq!(
            summary.unknown,
            [
                "receipt 2: model `other`, not `m`",
                "receipt 3: 2 rows predicted, 1 labels",
                "receipt 4: a receipt has five `:`-separated parts",
            ]
        );
        let by: Vec<(Option<&str>, i64, i64)> = labelled
            .iter()
            .filter_map(|l| match l {
                Labelled::Class {
                    revision,
                    predicted,
                    label,
                } => Some((revision.as_deref(), *predicted, *label)),
                Labelled::Value { .. } => None,
            })
            .collect();
        assert_eq!(
            by,
            [(Some("r1"), 3, 3), (Some("r0"), 1, 1), (Some("r0"), 2, 0)]
        );
        // Only r1's row is in this r1 server's window.
        assert_eq!(summary.scores.window, 1);
    }

    #[test]
    fn items_give_id_or_receipt() {
        let req = |items: Vec<FeedbackItem>| FeedbackRequest { feedback: items };
        assert_eq!(req(vec![item("a", Labels::One(1.0))]).validate(), Ok(()));
        let both = FeedbackItem {
            id: Some("a".into()),
            receipt: Some("v1:m:r:1:1".into()),
            label: Labels::One(1.0),
        };
        let neither = FeedbackItem {
            id: None,
            receipt: None,
            label: Labels::One(1.0),
        };
        assert_eq!(
            req(vec![item("a", Labels::One(1.0)), both]).validate(),
            Err("feedback item 1: give either `id` or `receipt` (both given)".to_owned())
        );
        assert_eq!(
            req(vec![neither]).validate(),
            Err("feedback item 0: give either `id` or `receipt` (neither given)".to_owned())
        );
    }

    /// A regressor's receipt carries values; its rows are scored as errors, not as right or wrong.
    #[test]
    fn a_regressors_receipt_counts_its_values() {
        let now = Instant::now();
        let mut feedback = Feedback::new(WindowConfig {
            max_count: 100,
            max_age: Duration::from_secs(60),
        });
        let (summary, labelled) = feedback.apply(
            vec![receipt("v1:m:r1:5:r=2.5,10", Labels::Rows(vec![3.0, 7.0]))],
            "m",
            Some("r1"),
            now,
        );
        assert_eq!(
            (
                summary.correct,
                summary.incorrect,
                summary.unknown_id,
                summary.regression_rows
            ),
            (0, 0, 0, 2)
        );
        assert_eq!(
            labelled,
            [
                Labelled::Value {
                    revision: Some("r1".into()),
                    predicted: 2.5,
                    label: 3.0
                },
                Labelled::Value {
                    revision: Some("r1".into()),
                    predicted: 10.0,
                    label: 7.0
                },
            ]
        );
    }
}
