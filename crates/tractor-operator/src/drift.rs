//! Input drift, judged without labels: when a read of the serving revision's drift scores is due, and the
//! verdict (pure) from what Prometheus gave.
//!
//! Each serving pod scores its own sliding window against the reference the optimize step recorded
//! (`tractor_model_input_drift`, one series per feature); the operator weighs the pods' scores by the rows each
//! window holds, so a pod that served little counts little. A read that cannot judge (too few rows, no scores,
//! Prometheus unreadable) keeps the last verdict: no evidence is neither drift nor its absence.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tractor_api::{DriftMonitoring, DriftStatus, FeatureDrift};

/// Features listed in `status.drift.features`: enough to see the shape of a shift, few enough to read.
pub const LISTED_FEATURES: usize = 5;
/// Drifted features named in the `Degraded` message.
const NAMED_FEATURES: usize = 3;

/// What Prometheus gave for one revision.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftReads {
    /// Rows in the pods' windows, all together.
    pub rows: f64,
    /// Each feature's weighted score.
    pub features: Vec<(String, f64)>,
    /// The predictions' weighted score, when the pods export one.
    pub prediction: Option<f64>,
}

/// How long until the next read is due; `None` when due now. The last read's time is in the status, so an
/// operator restart does not read early.
pub fn not_due(
    old: Option<&DriftStatus>,
    spec: &DriftMonitoring,
    now: Timestamp,
) -> Option<Duration> {
    let last = old?.evaluated_at.as_ref()?.0;
    let every = spec.interval.as_std();
    let since = now.duration_since(last).as_secs_f64().max(0.0);
    let left = every.as_secs_f64() - since;
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

/// One read's outcome: the status to write, and the verdict for `Degraded` when the read could judge.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// `status.drift` after this read.
    pub status: DriftStatus,
    /// `Some((drifted, message))` when judged; `None` keeps the last verdict.
    pub verdict: Option<(bool, String)>,
}

/// Judges one read. Pure.
pub fn judge(
    spec: &DriftMonitoring,
    reads: &Result<DriftReads, String>,
    old: Option<&DriftStatus>,
    now: &Time,
) -> Judged {
    let kept = |message: String| {
        let mut status = old.cloned().unwrap_or_default();
        status.evaluated_at = Some(now.clone());
        status.message = Some(message);
        Judged {
            status,
            verdict: None,
        }
    };
    let reads = match reads {
        Ok(reads) => reads,
        Err(why) => return kept(format!("drift not judged: {why}")),
    };
    let rows = reads.rows.max(0.0).round() as i64;
    if rows < i64::from(spec.min_rows) {
        let mut judged = kept(format!(
            "drift not judged: the serving pods' windows hold {rows} row(s), fewer than minRows {}",
            spec.min_rows
        ));
        judged.status.rows = Some(rows);
        return judged;
    }
    let mut ranked = reads.features.clone();
    // Highest first; a tie in score lists features by name, so the same read writes the same status.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let drifted: Vec<&(String, f64)> = ranked
        .iter()
        .filter(|(_, score)| *score > spec.threshold)
        .collect();
    let message = if drifted.is_empty() {
        match ranked.first() {
            Some((feature, score)) => format!(
                "no input drift over {rows} rows: highest {feature} PSI {score:.3}, threshold {}",
                spec.threshold
            ),
            None => format!("no input drift over {rows} rows: no feature scored"),
        }
    } else {
        let named: Vec<String> = drifted
            .iter()
            .take(NAMED_FEATURES)
            .map(|(feature, score)| format!("{feature} PSI {score:.3}"))
            .collect();
        let more = drifted.len().saturating_sub(NAMED_FEATURES);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "input drift over {rows} rows: {}{more} above the threshold {}",
            named.join(", "),
            spec.threshold
        )
    };
    let status = DriftStatus {
        evaluated_at: Some(now.clone()),
        rows: Some(rows),
        drifted: Some(!drifted.is_empty()),
        features: ranked
            .iter()
            .take(LISTED_FEATURES)
            .map(|(feature, score)| FeatureDrift {
                feature: feature.clone(),
                score: round4(*score),
            })
            .collect(),
        prediction_score: reads.prediction.map(round4),
        message: Some(message.clone()),
    };
    Judged {
        status,
        verdict: Some((!drifted.is_empty(), message)),
    }
}

/// Four decimals: enough to compare with a threshold, and a status that does not change on noise alone.
fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;
    use tractor_api::duration::Duration as SpecDuration;

    fn spec() -> DriftMonitoring {
        DriftMonitoring {
            threshold: 0.2,
            interval: SpecDuration::from_static("30s"),
            window: SpecDuration::from_static("5m"),
            min_rows: 100,
        }
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid"))
    }

    fn reads(rows: f64, features: &[(&str, f64)]) -> Result<DriftReads, String> {
        Ok(DriftReads {
            rows,
            features: features
                .iter()
                .map(|(f, s)| ((*f).to_owned(), *s))
                .collect(),
            prediction: Some(0.012345),
        })
    }

    /// (case, reads, the last status, verdict, `drifted` written, message start)
    type Case<'a> = (
        &'a str,
        Result<DriftReads, String>,
        Option<&'a DriftStatus>,
        Option<bool>,
        Option<bool>,
        &'a str,
    );

    #[test]
    fn verdicts() {
        let drifted_before = DriftStatus {
            drifted: Some(true),
            features: vec![FeatureDrift {
                feature: "x[3]".into(),
                score: 1.5,
            }],
            ..DriftStatus::default()
        };
        let cases: Vec<Case> = vec![
            (
                "all under the threshold",
                reads(500.0, &[("x[0]", 0.01), ("x[1]", 0.05)]),
                None,
                Some(false),
                Some(false),
                "no input drift over 500 rows: highest x[1] PSI 0.050",
            ),
            (
                "one feature over",
                reads(500.0, &[("x[0]", 0.01), ("x[3]", 1.92)]),
                None,
                Some(true),
                Some(true),
                "input drift over 500 rows: x[3] PSI 1.920 above the threshold 0.2",
            ),
            (
                "exactly at the threshold is not over it",
                reads(500.0, &[("x[0]", 0.2)]),
                None,
                Some(false),
                Some(false),
                "no input drift",
            ),
            (
                "too few rows keeps the last verdict",
                reads(99.0, &[("x[3]", 0.01)]),
                Some(&drifted_before),
                None,
                Some(true),
                "drift not judged: the serving pods' windows hold 99 row(s), fewer than minRows 100",
            ),
            (
                "Prometheus unreadable keeps the last verdict",
                Err("no data for q".into()),
                Some(&drifted_before),
                None,
                Some(true),
                "drift not judged: no data for q",
            ),
            (
                "never judged stays unknown",
                Err("no data for q".into()),
                None,
                None,
                None,
                "drift not judged",
            ),
        ];
        for (case, reads, old, verdict, drifted, message) in cases {
            let judged = judge(&spec(), &reads, old, &at(1000));
            assert_eq!(judged.verdict.as_ref().map(|v| v.0), verdict, "{case}");
            assert_eq!(judged.status.drifted, drifted, "{case}");
            assert_eq!(judged.status.evaluated_at, Some(at(1000)), "{case}");
            let written = judged.status.message.clone().unwrap_or_default();
            assert!(written.starts_with(message), "{case}: {written}");
            if let Some((_, said)) = &judged.verdict {
                assert_eq!(Some(said), judged.status.message.as_ref(), "{case}");
                assert!(
                    !said.contains("; "),
                    "{case}: joins with other verdicts on '; '"
                );
            }
        }
    }

    #[test]
    fn worst_features_first_named_and_listed() {
        let features: Vec<(String, f64)> = (0..8)
            .map(|i| (format!("x[{i}]"), f64::from(i) * 0.1))
            .collect();
        let reads = Ok(DriftReads {
            rows: 1000.0,
            features,
            prediction: None,
        });
        let judged = judge(&spec(), &reads, None, &at(5));
        let listed: Vec<&str> = judged
            .status
            .features
            .iter()
            .map(|f| f.feature.as_str())
            .collect();
        assert_eq!(listed, ["x[7]", "x[6]", "x[5]", "x[4]", "x[3]"]);
        let (drifted, message) = judged.verdict.expect("judged");
        assert!(drifted);
        assert_eq!(
            message,
            "input drift over 1000 rows: x[7] PSI 0.700, x[6] PSI 0.600, x[5] PSI 0.500 and 2 more above the \
             threshold 0.2"
        );
        // The same read in another order writes the same status.
        let mut shuffled = reads.clone().expect("ok");
        shuffled.features.reverse();
        assert_eq!(
            judge(&spec(), &Ok(shuffled), None, &at(5)),
            judge(&spec(), &reads, None, &at(5))
        );
    }

    #[test]
    fn reads_are_due_one_interval_after_the_last() {
        let old = DriftStatus {
            evaluated_at: Some(at(100)),
            ..DriftStatus::default()
        };
        let now = |secs| Timestamp::from_second(secs).expect("valid");
        assert_eq!(not_due(None, &spec(), now(100)), None);
        assert_eq!(
            not_due(Some(&DriftStatus::default()), &spec(), now(100)),
            None
        );
        assert_eq!(
            not_due(Some(&old), &spec(), now(110)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(not_due(Some(&old), &spec(), now(130)), None);
        assert_eq!(not_due(Some(&old), &spec(), now(500)), None);
    }
}
