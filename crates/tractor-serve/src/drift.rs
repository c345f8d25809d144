//! Streaming drift: what the server answers, binned against the artifact's reference statistics over a sliding
//! window, and scored as PSI per input feature and for the predictions at scrape time.
//!
//! The window is a ring of [`SLOTS`] time slots of `window / SLOTS` each; a slot is cleared when time comes back
//! round to it, so the scores cover the last window to within one slot. Each slot holds one count per feature
//! and reference bin, and one per prediction bin: memory is features × bins × slots, whatever the traffic. A
//! request's rows are binned before the lock (O(features × log bins) per row); under it, counters are added.
//! The format, the bins and the PSI are [`tractor_model::drift`]'s, shared with `tractor optimize`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use tractor_api::metrics::{
    DRIFT_WINDOW_ROWS, FEATURE, INPUT_DRIFT, MODEL, PREDICTION_DRIFT, REVISION,
};
use tractor_model::ModelFormat;
use tractor_model::drift::{self, FeatureKind, PredictionReference, Reference};

/// Time slots in the window: the window slides by a tenth of itself.
pub const SLOTS: usize = 10;

/// The window for the model at `model` (loaded as `format`): `None`, with a log line saying why, when drift is
/// off (`window` 0), the artifact is not NNEF or carries no reference statistics, or they cannot be read (then
/// the model is served all the same).
pub fn start(model: &Path, format: ModelFormat, window: Duration) -> Option<Arc<Drift>> {
    if window.is_zero() {
        tracing::info!("drift window 0: no drift gauges");
        return None;
    }
    if format != ModelFormat::Nnef {
        tracing::info!("a {format:?} model carries no reference statistics: no drift gauges");
        return None;
    }
    match drift::read_reference(model) {
        Ok(Some(reference)) => {
            tracing::info!(
                features = reference.features.len(),
                reference_rows = reference.rows,
                predictions = reference.predictions.is_some(),
                window_secs = window.as_secs_f64(),
                "drift measured against the artifact's reference statistics"
            );
            Drift::new(reference, window, Instant::now()).map(Arc::new)
        }
        Ok(None) => {
            tracing::info!(
                "the artifact has no reference statistics (optimized without a labelled set): no drift gauges"
            );
            None
        }
        Err(error) => {
            tracing::warn!("reading the artifact's reference statistics: {error}; no drift gauges");
            None
        }
    }
}

/// One request's rows (and predictions), binned: what the window adds under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binned {
    rows: u64,
    /// Per row, per feature: the index into a slot's flat feature counts.
    features: Vec<u32>,
    /// Per row: the prediction bin; empty when the predictions could not be binned.
    predictions: Vec<u32>,
}

/// The scores of the window now.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Rows in the window.
    pub rows: u64,
    /// PSI per feature, in the reference's order, with its name; empty when the window holds no rows.
    pub features: Vec<(String, f64)>,
    /// PSI of the predictions; `None` when the window holds no binned prediction.
    pub prediction: Option<f64>,
}

#[derive(Debug, Clone)]
struct Slot {
    /// Which slot of time (`elapsed / slot length`) the counts are for; `None` before first use.
    number: Option<u64>,
    rows: u64,
    features: Vec<u64>,
    predictions: Vec<u64>,
}

impl Slot {
    fn clear(&mut self, number: u64) {
        self.number = Some(number);
        self.rows = 0;
        self.features.fill(0);
        self.predictions.fill(0);
    }
}

/// The reference of the served artifact and the window of what was served.
#[derive(Debug)]
pub struct Drift {
    reference: Reference,
    /// Where each feature's bins start in a slot's flat counts (one more entry: the total).
    offsets: Vec<usize>,
    /// Each feature's reference shares, flat like the counts.
    expected: Vec<f64>,
    /// The predictions' reference shares (with a classifier's "other" bin).
    expected_predictions: Vec<f64>,
    slot: Duration,
    origin: Instant,
    slots: Mutex<Vec<Slot>>,
}

impl Drift {
    /// A window of `window` over `reference`, starting at `origin`; `None` for a zero window (drift off).
    pub fn new(reference: Reference, window: Duration, origin: Instant) -> Option<Drift> {
        let slot = window / SLOTS as u32;
        if slot.is_zero() {
            return None;
        }
        let mut offsets = Vec::with_capacity(reference.features.len() + 1);
        let mut expected = Vec::new();
        for feature in &reference.features {
            offsets.push(expected.len());
            expected.extend_from_slice(&feature.shares);
        }
        offsets.push(expected.len());
        let expected_predictions = reference
            .predictions
            .as_ref()
            .map(PredictionReference::expected)
            .unwrap_or_default();
        let empty = Slot {
            number: None,
            rows: 0,
            features: vec![0; expected.len()],
            predictions: vec![0; expected_predictions.len()],
        };
        Some(Drift {
            reference,
            offsets,
            expected,
            expected_predictions,
            slot,
            origin,
            slots: Mutex::new(vec![empty; SLOTS]),
        })
    }

    /// The reference the window compares with.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Bin `rows` rows of the first input (`values`, flat, decoded as the codec does); `None` when they are not
    /// rows of the reference's shape.
    pub fn bin_rows(&self, values: &[f64], rows: usize) -> Option<Binned> {
        if rows == 0 || values.is_empty() || !values.len().is_multiple_of(rows) {
            return None;
        }
        let row_elements = values.len() / rows;
        let kind = self.reference.feature_kind;
        if kind == FeatureKind::Elements && row_elements != self.reference.row_elements {
            return None;
        }
        let mut row_features = Vec::with_capacity(kind.count(row_elements));
        let mut features = Vec::with_capacity(rows * self.reference.features.len());
        for row in values.chunks(row_elements) {
            row_features.clear();
            kind.row_features(row, &mut row_features);
            for ((feature, value), offset) in self
                .reference
                .features
                .iter()
                .zip(&row_features)
                .zip(&self.offsets)
            {
                features.push((offset + drift::bin_of(&feature.edges, *value)) as u32);
            }
        }
        Some(Binned {
            rows: rows as u64,
            features,
            predictions: Vec::new(),
        })
    }

    /// Whether the reference bins predictions as classes (else as values, or not at all).
    pub fn bins_classes(&self) -> bool {
        matches!(
            self.reference.predictions,
            Some(PredictionReference::Classes { .. })
        )
    }

    /// Add the predictions of the binned rows: one class or one value per row, as the reference bins them; rows
    /// whose predictions cannot be binned keep none.
    pub fn with_predictions(
        &self,
        mut binned: Binned,
        classes: Option<&[i64]>,
        values: Option<&[f64]>,
    ) -> Binned {
        let Some(reference) = &self.reference.predictions else {
            return binned;
        };
        let rows = binned.rows as usize;
        let bins: Option<Vec<u32>> = match (classes, values) {
            (Some(classes), _) if classes.len() == rows => classes
                .iter()
                .map(|class| reference.class_bin(*class).map(|bin| bin as u32))
                .collect(),
            (_, Some(values)) if values.len() == rows => values
                .iter()
                .map(|value| reference.value_bin(*value).map(|bin| bin as u32))
                .collect(),
            _ => None,
        };
        binned.predictions = bins.unwrap_or_default();
        binned
    }

    fn slot_number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        (elapsed / self.slot.as_nanos().max(1)) as u64
    }

    /// Count binned rows at `now`.
    pub fn record(&self, binned: &Binned, now: Instant) {
        let number = self.slot_number(now);
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let slot = &mut slots[(number % SLOTS as u64) as usize];
        match slot.number {
            Some(held) if held == number => {}
            // A request that took its time behind a later one: its slot has left the window already.
            Some(held) if held > number => return,
            _ => slot.clear(number),
        }
        slot.rows += binned.rows;
        for ix in &binned.features {
            if let Some(count) = slot.features.get_mut(*ix as usize) {
                *count += 1;
            }
        }
        for ix in &binned.predictions {
            if let Some(count) = slot.predictions.get_mut(*ix as usize) {
                *count += 1;
            }
        }
    }

    /// The window's scores at `now`: counts summed over the slots still inside it (under the lock), PSI after.
    pub fn scores(&self, now: Instant) -> Scores {
        let number = self.slot_number(now);
        let mut rows = 0;
        let mut features = vec![0u64; self.expected.len()];
        let mut predictions = vec![0u64; self.expected_predictions.len()];
        if let Ok(slots) = self.slots.lock() {
            for slot in slots.iter() {
                let inside = slot
                    .number
                    .is_some_and(|held| held <= number && held + (SLOTS as u64) > number);
                if !inside {
                    continue;
                }
                rows += slot.rows;
                for (sum, count) in features.iter_mut().zip(&slot.features) {
                    *sum += count;
                }
                for (sum, count) in predictions.iter_mut().zip(&slot.predictions) {
                    *sum += count;
                }
            }
        }
        let features = if rows == 0 {
            Vec::new()
        } else {
            self.reference
                .features
                .iter()
                .zip(self.offsets.windows(2))
                .filter_map(|(feature, range)| {
                    let (start, end) = (range[0], range[1]);
                    drift::psi(&self.expected[start..end], &features[start..end])
                        .map(|score| (feature.name.clone(), score))
                })
                .collect()
        };
        Scores {
            rows,
            features,
            prediction: drift::psi(&self.expected_predictions, &predictions),
        }
    }
}

/// The drift gauges, registered beside the server's other metrics and set from the window at each scrape.
#[derive(Debug, Clone)]
pub struct DriftGauges {
    drift: Arc<Drift>,
    model: String,
    revision: String,
    input: GaugeVec,
    prediction: GaugeVec,
    rows: IntGaugeVec,
}

impl DriftGauges {
    /// Register [`INPUT_DRIFT`], [`PREDICTION_DRIFT`] and [`DRIFT_WINDOW_ROWS`] for `model` at `revision` (empty
    /// when the server was not told one).
    pub fn register(
        registry: &Registry,
        model: &str,
        revision: &str,
        drift: Arc<Drift>,
    ) -> Result<DriftGauges, prometheus::Error> {
        let input = GaugeVec::new(
            Opts::new(
                INPUT_DRIFT,
                "Population stability index of one input feature over the drift window, against the reference.",
            ),
            &[MODEL, REVISION, FEATURE],
        )?;
        let prediction = GaugeVec::new(
            Opts::new(
                PREDICTION_DRIFT,
                "Population stability index of the predictions over the drift window, against the reference.",
            ),
            &[MODEL, REVISION],
        )?;
        let rows = IntGaugeVec::new(
            Opts::new(DRIFT_WINDOW_ROWS, "Rows in the drift window."),
            &[MODEL, REVISION],
        )?;
        registry.register(Box::new(input.clone()))?;
        registry.register(Box::new(prediction.clone()))?;
        registry.register(Box::new(rows.clone()))?;
        Ok(DriftGauges {
            drift,
            model: model.to_owned(),
            revision: revision.to_owned(),
            input,
            prediction,
            rows,
        })
    }

    /// Set the gauges from the window at `now`: the scores only while it holds rows.
    pub fn export(&self, now: Instant) {
        let scores = self.drift.scores(now);
        let labels = [self.model.as_str(), self.revision.as_str()];
        self.rows.with_label_values(&labels).set(scores.rows as i64);
        if scores.features.is_empty() {
            self.input.reset();
        }
        for (feature, score) in &scores.features {
            self.input
                .with_label_values(&[labels[0], labels[1], feature])
                .set(*score);
        }
        match scores.prediction {
            Some(score) => self.prediction.with_label_values(&labels).set(score),
            None => self.prediction.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tractor_model::drift::Predicted;

    /// Two features over 0..100 (deciles at 10, 20, ..), a classifier predicting 0 or 1 half the time each.
    fn reference() -> Reference {
        let rows = 100;
        let x: Vec<f64> = (0..rows)
            .flat_map(|i| [i as f64 + 1.0, (i % 10) as f64])
            .collect();
        let classes: Vec<i64> = (0..rows as i64).map(|i| i % 2).collect();
        Reference::build("X", &x, rows, Some(Predicted::Classes(&classes))).expect("reference")
    }

    fn at(origin: Instant, secs: u64) -> Instant {
        origin + Duration::from_secs(secs)
    }

    #[test]
    fn rows_like_the_reference_score_zero_and_shifted_ones_drift() {
        let origin = Instant::now();
        let drift = Drift::new(reference(), Duration::from_secs(100), origin).expect("on");
        let same: Vec<f64> = (0..100)
            .flat_map(|i| [i as f64 + 1.0, (i % 10) as f64])
            .collect();
        let classes: Vec<i64> = (0..100).map(|i| i % 2).collect();
        let binned = drift.bin_rows(&same, 100).expect("rows");
        drift.record(
            &drift.with_predictions(binned, Some(&classes), None),
            at(origin, 1),
        );
        let scores = drift.scores(at(origin, 1));
        assert_eq!(scores.rows, 100);
        let names: Vec<&str> = scores
            .features
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["X[0]", "X[1]"]);
        for (name, score) in &scores.features {
            assert!(score.abs() < 1e-9, "{name}: {score}");
        }
        assert!(scores.prediction.expect("predictions").abs() < 1e-9);
        // Feature 0 moved past its top edge on every row; class 7 was never predicted in the reference.
        let shifted: Vec<f64> = (0..100)
            .flat_map(|i| [i as f64 + 1000.0, (i % 10) as f64])
            .collect();
        let binned = drift.bin_rows(&shifted, 100).expect("rows");
        drift.record(
            &drift.with_predictions(binned, Some(&vec![7; 100]), None),
            at(origin, 2),
        );
        let scores = drift.scores(at(origin, 2));
        assert_eq!(scores.rows, 200);
        // Half the window's rows in the top bin (reference share 0.1), 0.05 in each of the nine others.
        let by_hand = (0.55f64 - 0.1) * (0.55f64 / 0.1).ln() + 9.0 * (0.05 - 0.1) * (0.5f64).ln();
        assert!((scores.features[0].1 - by_hand).abs() < 1e-9, "{scores:?}");
        assert!(scores.features[1].1.abs() < 1e-9, "{scores:?}");
        assert!(scores.prediction.expect("predictions") > 1.0, "{scores:?}");
    }

    #[test]
    fn the_window_slides_old_slots_out() {
        let origin = Instant::now();
        // Ten slots of 10 s.
        let drift = Drift::new(reference(), Duration::from_secs(100), origin).expect("on");
        let row = [5.0, 5.0];
        let one = drift.bin_rows(&row, 1).expect("row");
        drift.record(&one, at(origin, 0));
        drift.record(&one, at(origin, 45));
        drift.record(&one, at(origin, 99));
        assert_eq!(drift.scores(at(origin, 99)).rows, 3);
        // At 100 s the first slot (0–10 s) has left; at 150 s the one of 45 s too.
        assert_eq!(drift.scores(at(origin, 100)).rows, 2);
        assert_eq!(drift.scores(at(origin, 150)).rows, 1);
        // The ring reuses the first slot's place for 200–210 s: the old count is gone, the new one counted.
        drift.record(&one, at(origin, 205));
        let scores = drift.scores(at(origin, 205));
        assert_eq!(scores.rows, 1);
        // A late request for a slot already reused is dropped rather than clearing the newer counts.
        drift.record(&one, at(origin, 5));
        assert_eq!(drift.scores(at(origin, 205)).rows, 1);
        // Nothing left: no scores at all.
        let empty = drift.scores(at(origin, 400));
        assert_eq!(empty.rows, 0);
        assert!(empty.features.is_empty());
        assert_eq!(empty.prediction, None);
    }

    #[test]
    fn rows_of_another_shape_are_not_counted_and_a_zero_window_is_off() {
        let origin = Instant::now();
        assert!(Drift::new(reference(), Duration::ZERO, origin).is_none());
        let drift = Drift::new(reference(), Duration::from_secs(10), origin).expect("on");
        assert_eq!(drift.bin_rows(&[1.0, 2.0, 3.0], 1), None);
        assert_eq!(drift.bin_rows(&[1.0, 2.0, 3.0], 2), None);
        assert_eq!(drift.bin_rows(&[], 0), None);
        // Predictions of the wrong count are left out, the rows still counted.
        let binned = drift.bin_rows(&[1.0, 2.0], 1).expect("row");
        let binned = drift.with_predictions(binned, Some(&[0, 1]), None);
        drift.record(&binned, origin);
        let scores = drift.scores(origin);
        assert_eq!(scores.rows, 1);
        assert_eq!(scores.prediction, None);
    }

    #[test]
    fn images_are_binned_by_their_summaries() {
        let width = 300;
        let x: Vec<f64> = (0..20 * width).map(|i| ((i / width) % 4) as f64).collect();
        let reference = Reference::build("img", &x, 20, None).expect("reference");
        let origin = Instant::now();
        let drift = Drift::new(reference, Duration::from_secs(10), origin).expect("on");
        let binned = drift.bin_rows(&x, 20).expect("rows");
        drift.record(&binned, origin);
        let scores = drift.scores(origin);
        let names: Vec<&str> = scores
            .features
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["img:mean", "img:std"]);
        assert!(scores.features.iter().all(|(_, score)| score.abs() < 1e-9));
        // Any width is summarized alike.
        assert!(drift.bin_rows(&vec![1.0; 2 * 500], 2).is_some());
    }

    #[test]
    fn the_gauges_follow_the_window() {
        let origin = Instant::now();
        let drift = Arc::new(Drift::new(reference(), Duration::from_secs(10), origin).expect("on"));
        let registry = Registry::new();
        let gauges =
            DriftGauges::register(&registry, "m", "r1", Arc::clone(&drift)).expect("registered");
        let text = |now| {
            gauges.export(now);
            let mut buf = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut buf,
            )
            .expect("encoded");
            String::from_utf8(buf).expect("utf-8")
        };
        let empty = text(origin);
        assert!(
            empty.contains(r#"tractor_model_drift_window_rows{model="m",revision="r1"} 0"#),
            "{empty}"
        );
        assert!(!empty.contains(INPUT_DRIFT), "{empty}");
        assert!(!empty.contains(PREDICTION_DRIFT), "{empty}");
        let binned = drift.bin_rows(&[5.0, 5.0], 1).expect("row");
        drift.record(&drift.with_predictions(binned, Some(&[1]), None), origin);
        let full = text(origin);
        assert!(
            full.contains(r#"tractor_model_drift_window_rows{model="m",revision="r1"} 1"#),
            "{full}"
        );
        assert!(
            full.contains(r#"tractor_model_input_drift{feature="X[1]",model="m",revision="r1"} "#),
            "{full}"
        );
        assert!(
            full.contains(r#"tractor_model_prediction_drift{model="m",revision="r1"} "#),
            "{full}"
        );
        // Once the rows leave the window, the scores go with them.
        let later = text(origin + Duration::from_secs(30));
        assert!(!later.contains(INPUT_DRIFT), "{later}");
        assert!(!later.contains(PREDICTION_DRIFT), "{later}");
    }
}
