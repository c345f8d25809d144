//! Ground-truth feedback: predictions kept for a bounded window (count and age), matched with true
//! labels sent later, and rolling accuracy and macro precision, recall and F1 over the labelled window.
//!
//! Body of `POST /v2/models/{m}/feedback`:
//! `{"feedback": [{"id": "req-1", "label": 3}, {"id": "req-2", "label": [0, 1]}]}`.
//! `id` is the `id` of an earlier infer request; `label` is the true class, or one class per row for a
//! request of several rows. A prediction takes feedback once (a repeat counts as `unknown_id`), so
//! retried feedback cannot inflate the scores.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One `{id, label}` pair.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    /// The infer request's id.
    pub id: String,
    /// The true class, or one per row.
    pub label: Labels,
}

/// A label or one per row.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    /// A single-row request's class.
    One(i64),
    /// One class per row.
    Rows(Vec<i64>),
}

/// The feedback body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// Pairs, at most [`MAX_ITEMS`] per call.
    pub feedback: Vec<FeedbackItem>,
}

/// Most pairs accepted in one call (the body limit bounds it too).
pub const MAX_ITEMS: usize = 10_000;

/// What a feedback call did, and the scores after it.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct FeedbackSummary {
    /// Rows whose prediction was right.
    pub correct: u64,
    /// Rows whose prediction was wrong.
    pub incorrect: u64,
    /// Pairs whose id is unknown, expired, already labelled, or whose row count differs.
    pub unknown_id: u64,
    /// Scores over the window.
    pub scores: Scores,
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

    /// Match labels with predictions; returns the counts and the scores after.
    pub fn apply(&mut self, items: Vec<FeedbackItem>, now: Instant) -> FeedbackSummary {
        self.expire(now);
        let mut s = FeedbackSummary::default();
        for item in items {
            let labels = match item.label {
                Labels::One(l) => vec![l],
                Labels::Rows(v) => v,
            };
            match self.pending.get(&item.id) {
                Some((_, predicted)) if predicted.len() == labels.len() => {
                    if let Some((_, predicted)) = self.pending.remove(&item.id) {
                        for (p, l) in predicted.into_iter().zip(labels) {
                            if p == l {
                                s.correct += 1
                            } else {
                                s.incorrect += 1
                            }
                            self.outcomes.push_back((now, p, l));
                        }
                    }
                }
                _ => s.unknown_id += 1,
            }
        }
        self.expire(now);
        s.scores = self.scores();
        s
    }

    /// Scores over the labelled window as it is now.
    pub fn scores(&self) -> Scores {
        let n = self.outcomes.len();
        if n == 0 {
            return Scores::default();
        }
        // Per class: (true positives, predicted count, true count).
        let mut per: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
        let mut correct = 0u64;
        for (_, p, l) in &self.outcomes {
            per.entry(*p).or_default().1 += 1;
            per.entry(*l).or_default().2 += 1;
            if p == l {
                correct += 1;
                per.entry(*p).or_default().0 += 1;
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let k = per.len() as f64;
        let (mut p_sum, mut r_sum, mut f_sum) = (0.0, 0.0, 0.0);
        for (tp, pred, truth) in per.values() {
            let p = ratio(*tp, *pred);
            let r = ratio(*tp, *truth);
            p_sum += p;
            r_sum += r;
            f_sum += if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            };
        }
        Scores {
            window: n,
            accuracy: Some(correct as f64 / n as f64),
            precision: Some(p_sum / k),
            recall: Some(r_sum / k),
            f1: Some(f_sum / k),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(id: &str, label: Labels) -> FeedbackItem {
        FeedbackItem {
            id: id.into(),
            label,
        }
    }

    #[test]
    fn matches_counts_and_scores() {
        let now = Instant::now();
        let mut f = Feedback::new(WindowConfig {
            max_count: 100,
            max_age: Duration::from_secs(60),
        });
        f.record("a", vec![1], now);
        f.record("b", vec![0, 1], now);
        let s = f.apply(
            vec![
                item("a", Labels::One(1)),
                item("b", Labels::Rows(vec![1, 1])),
                item("a", Labels::One(1)),
                item("zz", Labels::One(0)),
            ],
            now,
        );
        assert_eq!((s.correct, s.incorrect, s.unknown_id), (2, 1, 2));
        assert_eq!(s.scores.window, 3);
        assert!((s.scores.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // class 0: tp 0, predicted 1, true 0 -> p 0, r 0; class 1: tp 2, predicted 2, true 3 -> p 1, r 2/3.
        assert!((s.scores.precision.unwrap() - 0.5).abs() < 1e-12);
        assert!((s.scores.recall.unwrap() - 1.0 / 3.0).abs() < 1e-12);
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
        let s = f.apply(vec![item("a", Labels::One(1))], t0);
        assert_eq!(s.unknown_id, 1);
        let s = f.apply(
            vec![item("b", Labels::One(1))],
            t0 + Duration::from_secs(11),
        );
        assert_eq!(s.unknown_id, 1, "expired by age");
        assert_eq!(f.pending.len(), 0);
    }
}
