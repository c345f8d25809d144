//! `precision: auto`'s rule: which measured candidate wins and why, as a pure function of the measured figures.
//!
//! The rule: among the candidates that pass the gate, the fastest at the deciding (first) batch size wins, except
//! that candidates within the noise margin of it at every batch size timed count as equally fast; among those, the
//! higher score wins, then the smaller artifact, then the first in a fixed precision order. "At every batch size":
//! a candidate as fast at batch 1 but much slower at batch 32 (f16 on a CPU without f16 arithmetic) does not win a
//! tie on its smaller artifact. And among the tied, one that another beats beyond the noise at some batch size and
//! loses to at none drops out: a small model whose batch-1 time is overhead times int8 and f32 alike there, but
//! int8's integer kernel is clearly faster at batch 32, and which of the two the noise put first at batch 1 must
//! not decide between "int8 is faster" and "f32 scores a row better". Two candidates whose speed differs by less
//! than a timing can tell apart at every batch size are thus decided by figures that do not move between runs, and
//! the same spec gives the same choice.

use std::time::Duration;

use tractor_api::Precision;

/// Latencies this close to the fastest's (as a fraction of it) count as a tie. Medians of the same model timed
/// twice on one idle machine differ by a few percent, and by more under a busy neighbour; 10 % is above that
/// noise and well below the gains a real speed-up brings (f16 or int8 compute: 1.5× and more), so it hides
/// noise without hiding a gain worth an accuracy risk.
pub const NOISE_MARGIN: f64 = 0.10;

/// The last tie-break, when speed, score and size are all equal: the most exact arithmetic first.
const ORDER: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Int8];

/// Scores closer than this are equal: scores are fractions of rows or averages over them, so a real difference
/// is at least one row in the set (1e-6 even at a million rows), and anything smaller is float rounding.
const SCORE_EPSILON: f64 = 1e-9;

/// One candidate as the rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Its precision.
    pub precision: Precision,
    /// Built from pruned weights (named in the message only).
    pub pruned: bool,
    /// Whether it passed the accuracy gate; the others never win.
    pub passed: bool,
    /// Its timings, one per batch size, the same batch sizes for every candidate; the first decides.
    pub timings: Vec<Timed>,
    /// Score on the labelled set, or agreement with f32 without one.
    pub score: f64,
    /// Size of its artifact.
    pub bytes: usize,
}

/// One timing of a candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    /// The batch size.
    pub batch: usize,
    /// Median latency of one run.
    pub latency: Duration,
    /// Half the interquartile range of the timed runs: how far this median could move on a rerun.
    pub spread: Duration,
}

/// What the rule is told besides the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Fraction of the fastest latency within which candidates tie ([`NOISE_MARGIN`] in production).
    pub margin: f64,
    /// Whether a higher score is better (false for mae and rmse on a labelled set).
    pub higher_is_better: bool,
    /// The gate's name, for the message.
    pub gate: &'static str,
}

/// The winner and why it won, in words for `status.model.message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Index of the winner in the candidates given.
    pub winner: usize,
    /// Why it won.
    pub why: String,
}

/// The candidate `auto` serves (see the module docs), or `None` when none passes the gate.
pub fn choose(candidates: &[Measured], rule: &Rule) -> Option<Choice> {
    let passing: Vec<usize> = (0..candidates.len())
        .filter(|ix| candidates[*ix].passed)
        .collect();
    let fastest = *passing
        .iter()
        .min_by(|left, right| by_latency(&candidates[**left], &candidates[**right]))?;
    if passing.len() == 1 {
        return Some(Choice {
            winner: fastest,
            why: format!("the only candidate passing {}", rule.gate),
        });
    }
    let quickest = &candidates[fastest];
    // The first timing of `candidate` that is slower than `reference`'s beyond the noise, if any: beyond the stated
    // margin and beyond the two timings' combined spread (where the run was noisier than the margin).
    let slower_than = |candidate: &Measured, reference: &Measured| {
        candidate
            .timings
            .iter()
            .zip(&reference.timings)
            .position(|(own, best)| {
                let gap = own.latency.saturating_sub(best.latency);
                // In whole nanoseconds, so a gap exactly at the margin is a tie whatever the float rounding.
                gap > best.latency.mul_f64(rule.margin) && gap > own.spread + best.spread
            })
    };
    let tied: Vec<usize> = passing
        .iter()
        .copied()
        .filter(|ix| slower_than(&candidates[*ix], quickest).is_none())
        .collect();
    // Out of the tie: a candidate another tied one beats beyond the noise at some batch size and loses to at none.
    // Per batch size "beyond the noise" is transitive, so with two batch sizes someone is always left; the guard
    // keeps the tie whole should more batch sizes ever leave no one.
    let beaten = |ix: usize| {
        tied.iter().any(|&other| {
            other != ix
                && slower_than(&candidates[ix], &candidates[other]).is_some()
                && slower_than(&candidates[other], &candidates[ix]).is_none()
        })
    };
    let unbeaten: Vec<usize> = tied.iter().copied().filter(|ix| !beaten(*ix)).collect();
    let ties = if unbeaten.is_empty() { tied } else { unbeaten };
    let margin = percent(rule.margin);
    let deciding = deciding(quickest);
    if let [winner] = ties[..] {
        let best = &candidates[winner];
        // Who it beat: the next fastest at the deciding batch size, or, when it won by a later batch size, the one
        // that was fastest at the deciding one.
        let next = if winner == fastest {
            passing
                .iter()
                .copied()
                .filter(|ix| *ix != fastest)
                .min_by(|left, right| by_latency(&candidates[*left], &candidates[*right]))?
        } else {
            fastest
        };
        let runner_up = &candidates[next];
        let at = slower_than(runner_up, best).unwrap_or(0);
        let (own, theirs) = (best.timings.get(at)?, runner_up.timings.get(at)?);
        let mut why = format!(
            "{:.2}× faster than {} (the next fastest passing {}) at batch {} ({} vs {}), beyond the {margin} noise \
             margin",
            ratio(theirs.latency, own.latency),
            label(runner_up),
            rule.gate,
            own.batch,
            micros(own.latency),
            micros(theirs.latency),
        );
        if at > 0 {
            let first = self::deciding(best);
            why.push_str(&format!(
                " (within it at batch {}, where {} takes {})",
                first.batch,
                label(best),
                micros(first.latency),
            ));
        }
        return Some(Choice { winner, why });
    }
    let winner = *ties.iter().max_by(|left, right| {
        let (left, right) = (&candidates[**left], &candidates[**right]);
        compare_scores(left.score, right.score, rule.higher_is_better)
            .then(right.bytes.cmp(&left.bytes))
            .then(order(right.precision).cmp(&order(left.precision)))
    })?;
    let best = &candidates[winner];
    let rivals: Vec<&Measured> = ties
        .iter()
        .filter(|ix| **ix != winner)
        .map(|ix| &candidates[*ix])
        .collect();
    let names: Vec<String> = sorted_labels(candidates, &ties);
    let batches: Vec<String> = quickest
        .timings
        .iter()
        .map(|timed| timed.batch.to_string())
        .collect();
    let mut why = format!(
        "{} pass {} and are within the {margin} noise margin at batch {} (or their timings' spread; fastest {} at {} \
         at batch {})",
        join(&names),
        rule.gate,
        join(&batches),
        label(quickest),
        micros(deciding.latency),
        deciding.batch,
    );
    let score_ties: Vec<&&Measured> = rivals
        .iter()
        .filter(|rival| (rival.score - best.score).abs() <= SCORE_EPSILON)
        .collect();
    if score_ties.is_empty() {
        let second = rivals
            .iter()
            .max_by(|left, right| compare_scores(left.score, right.score, rule.higher_is_better))?;
        why.push_str(&format!(
            "; {} scores better ({} vs {})",
            label(best),
            score(best.score),
            score(second.score),
        ));
        return Some(Choice { winner, why });
    }
    let size_ties: Vec<&&&Measured> = score_ties
        .iter()
        .filter(|rival| rival.bytes == best.bytes)
        .collect();
    let equal_scores = if rivals.len() == score_ties.len() {
        format!("; equal scores ({})", score(best.score))
    } else {
        format!(
            "; {} scores best ({}), tied with {}",
            label(best),
            score(best.score),
            join(
                &score_ties
                    .iter()
                    .map(|rival| label(rival))
                    .collect::<Vec<_>>()
            ),
        )
    };
    why.push_str(&equal_scores);
    if size_ties.is_empty() {
        let second = score_ties.iter().min_by_key(|rival| rival.bytes)?;
        why.push_str(&format!(
            "; {}'s artifact is smaller ({} vs {} bytes)",
            label(best),
            best.bytes,
            second.bytes,
        ));
    } else {
        why.push_str(&format!(
            "; equal sizes; {} comes first in the fixed order f32, f16, int8",
            label(best)
        ));
    }
    Some(Choice { winner, why })
}

/// The deciding timing: the first; an untimed candidate as if infinitely slow.
fn deciding(candidate: &Measured) -> Timed {
    candidate.timings.first().copied().unwrap_or(Timed {
        batch: 0,
        latency: Duration::MAX,
        spread: Duration::ZERO,
    })
}

/// Faster at the deciding batch size first; equal medians by the fixed order, so the result never depends on the
/// candidates' order.
fn by_latency(left: &Measured, right: &Measured) -> std::cmp::Ordering {
    deciding(left)
        .latency
        .cmp(&deciding(right).latency)
        .then(order(left.precision).cmp(&order(right.precision)))
}

/// `Greater` when `left` is the better score.
fn compare_scores(left: f64, right: f64, higher_is_better: bool) -> std::cmp::Ordering {
    if (left - right).abs() <= SCORE_EPSILON {
        std::cmp::Ordering::Equal
    } else if higher_is_better {
        left.total_cmp(&right)
    } else {
        right.total_cmp(&left)
    }
}

fn order(precision: Precision) -> usize {
    ORDER
        .iter()
        .position(|known| *known == precision)
        .unwrap_or(ORDER.len())
}

fn label(candidate: &Measured) -> String {
    if candidate.pruned {
        format!("{} (pruned)", candidate.precision.as_str())
    } else {
        candidate.precision.as_str().to_owned()
    }
}

/// The labels of `indices`, in the fixed order, so the message reads the same whatever order they were timed in.
fn sorted_labels(candidates: &[Measured], indices: &[usize]) -> Vec<String> {
    let mut sorted: Vec<&Measured> = indices.iter().map(|ix| &candidates[*ix]).collect();
    sorted.sort_by_key(|candidate| order(candidate.precision));
    sorted.into_iter().map(label).collect()
}

/// "f32 and int8", "f32, f16 and int8".
fn join(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn percent(fraction: f64) -> String {
    format!("{} %", (fraction * 100.0).round())
}

fn micros(latency: Duration) -> String {
    let micros = latency.as_secs_f64() * 1e6;
    // Three significant figures or so at every size: a small model's 7 µs and 6.6 µs are worth telling apart.
    if micros >= 10_000.0 {
        format!("{:.1} ms", micros / 1000.0)
    } else if micros >= 100.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{micros:.1} µs")
    }
}

fn score(value: f64) -> String {
    format!("{value:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const F32: Precision = Precision::F32;
    const F16: Precision = Precision::F16;
    const INT8: Precision = Precision::Int8;

    /// A passing candidate timed at batch 1 only: precision, median and spread (µs), score, size (bytes).
    fn measured(
        precision: Precision,
        micros: u64,
        spread: u64,
        score: f64,
        bytes: usize,
    ) -> Measured {
        Measured {
            precision,
            pruned: false,
            passed: true,
            timings: vec![timed(1, micros, spread)],
            score,
            bytes,
        }
    }

    fn timed(batch: usize, micros: u64, spread: u64) -> Timed {
        Timed {
            batch,
            latency: Duration::from_micros(micros),
            spread: Duration::from_micros(spread),
        }
    }

    /// The same, timed at batch 1 and 32: medians (µs) at each, a spread of 1 % of each.
    fn at_1_and_32(precision: Precision, micros: [u64; 2], score: f64, bytes: usize) -> Measured {
        Measured {
            timings: vec![
                timed(1, micros[0], micros[0] / 100),
                timed(32, micros[1], micros[1] / 100),
            ],
            ..measured(precision, 0, 0, score, bytes)
        }
    }

    /// [`at_1_and_32`] in nanoseconds, for a small model's few microseconds.
    fn nanos_at_1_and_32(
        precision: Precision,
        nanos: [u64; 2],
        score: f64,
        bytes: usize,
    ) -> Measured {
        let timed = |batch: usize, nanos: u64| Timed {
            batch,
            latency: Duration::from_nanos(nanos),
            spread: Duration::from_nanos(nanos / 100),
        };
        Measured {
            timings: vec![timed(1, nanos[0]), timed(32, nanos[1])],
            ..measured(precision, 0, 0, score, bytes)
        }
    }

    fn failed(candidate: Measured) -> Measured {
        Measured {
            passed: false,
            ..candidate
        }
    }

    fn rule(higher_is_better: bool) -> Rule {
        Rule {
            margin: NOISE_MARGIN,
            higher_is_better,
            gate: "the accuracy gate",
        }
    }

    /// A table row: name, candidates, whether a higher score is better, the expected winner, words of its message.
    type Case = (
        &'static str,
        Vec<Measured>,
        bool,
        Precision,
        &'static [&'static str],
    );

    /// The rule, case by case: injected latencies, scores and sizes, the winner, and words the message must hold.
    #[test]
    fn fastest_within_the_gate_ties_broken_by_score_then_size_then_order() {
        let cases: Vec<Case> = vec![
            (
                "a clear winner: int8 twice as fast",
                vec![
                    measured(F32, 2000, 10, 0.97, 4000),
                    measured(F16, 1900, 10, 0.97, 2000),
                    measured(INT8, 1000, 10, 0.965, 1000),
                ],
                true,
                INT8,
                &[
                    "1.90× faster than f16 (the next fastest passing the accuracy gate) at batch 1",
                    "beyond the 10 % noise margin",
                ],
            ),
            (
                "the demo's case: weight-only int8 times like f32; equal scores, int8 is smaller",
                vec![
                    measured(F32, 1000, 10, 0.9722, 20_000),
                    measured(F16, 1500, 10, 0.9722, 11_000),
                    measured(INT8, 1040, 10, 0.9722, 6_000),
                ],
                true,
                INT8,
                &[
                    "f32 and int8 pass the accuracy gate and are within the 10 % noise margin",
                    "equal scores (0.9722)",
                    "int8's artifact is smaller (6000 vs 20000 bytes)",
                ],
            ),
            (
                "the same, timings the other way round: the same choice",
                vec![
                    measured(F32, 1040, 10, 0.9722, 20_000),
                    measured(F16, 1500, 10, 0.9722, 11_000),
                    measured(INT8, 1000, 10, 0.9722, 6_000),
                ],
                true,
                INT8,
                &[
                    "f32 and int8 pass the accuracy gate and are within the 10 % noise margin",
                    "fastest int8",
                ],
            ),
            (
                "tied on speed, f32 scores higher",
                vec![
                    measured(F32, 1000, 10, 0.9722, 20_000),
                    measured(INT8, 960, 10, 0.9694, 6_000),
                ],
                true,
                F32,
                &["f32 scores better (0.9722 vs 0.9694)"],
            ),
            (
                "a regression metric: the lower error wins the tie",
                vec![
                    measured(F32, 1000, 10, 0.20, 20_000),
                    measured(F16, 990, 10, 0.25, 11_000),
                ],
                false,
                F32,
                &["f32 scores better (0.2000 vs 0.2500)"],
            ),
            (
                "just beyond the margin: the faster wins despite a lower score",
                vec![
                    measured(F32, 1000, 10, 0.9722, 20_000),
                    measured(INT8, 880, 10, 0.9700, 6_000),
                ],
                true,
                INT8,
                &["1.14× faster than f32 (the next fastest passing the accuracy gate)"],
            ),
            (
                "exactly at the margin is a tie",
                vec![
                    measured(F32, 1100, 0, 0.9722, 20_000),
                    measured(INT8, 1000, 0, 0.9700, 6_000),
                ],
                true,
                F32,
                &["within the 10 % noise margin", "f32 scores better"],
            ),
            (
                "beyond the margin but within the timings' spread is a tie",
                vec![
                    measured(F32, 1300, 150, 0.9722, 20_000),
                    measured(INT8, 1000, 150, 0.9700, 6_000),
                ],
                true,
                F32,
                &["or their timings' spread", "f32 scores better"],
            ),
            (
                "a faster candidate that failed the gate never wins",
                vec![
                    measured(F32, 2000, 10, 1.0, 20_000),
                    failed(measured(INT8, 500, 10, 0.4, 6_000)),
                ],
                true,
                F32,
                &["the only candidate passing the accuracy gate"],
            ),
            (
                "three-way tie on speed and score: smallest artifact",
                vec![
                    measured(F32, 1000, 10, 0.95, 20_000),
                    measured(F16, 1020, 10, 0.95, 11_000),
                    measured(INT8, 1050, 10, 0.95, 6_000),
                ],
                true,
                INT8,
                &[
                    "f32, f16 and int8 pass the accuracy gate and are within",
                    "int8's artifact is smaller (6000 vs 11000 bytes)",
                ],
            ),
            (
                "equal in everything: the fixed order, f32 first",
                vec![
                    measured(INT8, 1000, 10, 0.95, 6_000),
                    measured(F32, 1000, 10, 0.95, 6_000),
                ],
                true,
                F32,
                &["equal sizes; f32 comes first in the fixed order"],
            ),
            (
                "the best score among three ties, one rival with the same score: size between those two",
                vec![
                    measured(F32, 1000, 10, 0.95, 20_000),
                    measured(F16, 1010, 10, 0.94, 11_000),
                    measured(INT8, 1020, 10, 0.95, 6_000),
                ],
                true,
                INT8,
                &[
                    "int8 scores best (0.9500), tied with f32",
                    "int8's artifact is smaller (6000 vs 20000 bytes)",
                ],
            ),
            (
                "dense25m on an AVX2 CPU: f16 ties f32 at batch 1 but is 1.55× slower at batch 32, so no tie",
                vec![
                    at_1_and_32(F32, [10_266, 38_044], 1.0, 105_031_347),
                    at_1_and_32(F16, [10_346, 58_929], 1.0, 52_522_597),
                ],
                true,
                F32,
                &[
                    "1.55× faster than f16 (the next fastest passing the accuracy gate) at batch 32 (38.0 ms vs 58.9 ms)",
                    "within it at batch 1, where f32 takes 10.3 ms",
                ],
            ),
            (
                "weight-only int8 ties f32 at both batch sizes: decided by size",
                vec![
                    at_1_and_32(F32, [10_266, 38_044], 1.0, 105_031_347),
                    at_1_and_32(F16, [10_346, 58_929], 1.0, 52_522_597),
                    at_1_and_32(INT8, [10_400, 37_000], 1.0, 26_346_056),
                ],
                true,
                INT8,
                &[
                    "f32 and int8 pass the accuracy gate and are within the 10 % noise margin at batch 1 and 32",
                    "fastest f32 at 10.3 ms at batch 1",
                    "int8's artifact is smaller",
                ],
            ),
            (
                "faster at the deciding batch beyond the margin wins, whatever the other batch says",
                vec![
                    at_1_and_32(F32, [2_000, 30_000], 1.0, 100),
                    at_1_and_32(INT8, [1_000, 40_000], 1.0, 25),
                ],
                true,
                INT8,
                &["2.00× faster than f32 (the next fastest passing the accuracy gate) at batch 1"],
            ),
            (
                "a small model: int8 ties f32 at batch 1 (overhead) and is 1.6× faster at 32; f32 first at batch 1 and \
                 a row better: int8 still wins, on batch 32",
                vec![
                    nanos_at_1_and_32(F32, [6_000, 34_000], 0.9933, 19_420),
                    nanos_at_1_and_32(F16, [7_000, 36_000], 0.9933, 10_007),
                    nanos_at_1_and_32(INT8, [6_200, 21_000], 0.9928, 6_515),
                ],
                true,
                INT8,
                &[
                    "1.62× faster than f32 (the next fastest passing the accuracy gate) at batch 32 (21.0 µs vs 34.0 µs)",
                    "within it at batch 1, where int8 takes 6.2 µs",
                ],
            ),
            (
                "the same with int8 first at batch 1: the same choice",
                vec![
                    nanos_at_1_and_32(F32, [6_300, 34_000], 0.9933, 19_420),
                    nanos_at_1_and_32(INT8, [6_000, 21_000], 0.9928, 6_515),
                ],
                true,
                INT8,
                &["1.62× faster than f32 (the next fastest passing the accuracy gate) at batch 32"],
            ),
            (
                "int8 compute on the dense net: faster at both batch sizes, the accuracy gate passed",
                vec![
                    at_1_and_32(F32, [12_223, 53_159], 1.0, 105_031_347),
                    at_1_and_32(F16, [9_476, 50_503], 1.0, 52_522_597),
                    at_1_and_32(INT8, [4_100, 30_000], 0.995, 26_346_056),
                ],
                true,
                INT8,
                &["2.31× faster than f16 (the next fastest passing the accuracy gate) at batch 1"],
            ),
            (
                "a slower candidate outside the margin plays no part in the tie",
                vec![
                    measured(F32, 1000, 10, 0.95, 20_000),
                    measured(F16, 5000, 10, 0.99, 11_000),
                    measured(INT8, 1050, 10, 0.94, 6_000),
                ],
                true,
                F32,
                &[
                    "f32 and int8 pass the accuracy gate and are within",
                    "f32 scores better (0.9500 vs 0.9400)",
                ],
            ),
        ];
        for (name, candidates, higher_is_better, expected, words) in cases {
            let choice = choose(&candidates, &rule(higher_is_better)).expect(name);
            assert_eq!(
                candidates[choice.winner].precision, expected,
                "{name}: {choice:?}"
            );
            for word in words {
                assert!(
                    choice.why.contains(word),
                    "{name}: {:?} lacks {word:?}",
                    choice.why
                );
            }
            // A pure function of the figures: the order they come in changes nothing.
            let mut reversed = candidates.clone();
            reversed.reverse();
            let again = choose(&reversed, &rule(higher_is_better)).expect(name);
            assert_eq!(
                reversed[again.winner].precision, expected,
                "{name} reversed"
            );
            assert_eq!(again.why, choice.why, "{name} reversed");
        }
    }

    /// Nothing passes: no choice (the pipeline reports `BelowMinScore`).
    #[test]
    fn nothing_passing_is_no_choice() {
        let candidates = [
            failed(measured(F32, 1000, 10, 0.5, 20_000)),
            failed(measured(INT8, 500, 10, 0.4, 6_000)),
        ];
        assert_eq!(choose(&candidates, &rule(true)), None);
        assert_eq!(choose(&[], &rule(true)), None);
    }

    /// Timing noise inside the margin never changes the choice: int8 at ±9 % of f32, either side, in every
    /// combination, picks the same winner.
    #[test]
    fn noise_inside_the_margin_never_flips_the_choice() {
        let mut winners = std::collections::BTreeSet::new();
        for f32_micros in [950, 1000, 1040] {
            for int8_micros in [955, 1000, 1035] {
                let candidates = [
                    measured(F32, f32_micros, 5, 0.9722, 20_000),
                    measured(INT8, int8_micros, 5, 0.9722, 6_000),
                ];
                let choice = choose(&candidates, &rule(true)).expect("a choice");
                winners.insert(candidates[choice.winner].precision.as_str());
            }
        }
        assert_eq!(winners.into_iter().collect::<Vec<_>>(), ["int8"]);
    }

    /// Latencies read at about three significant figures, from a tiny model's microseconds to a large one's
    /// milliseconds.
    #[test]
    fn latencies_read_at_their_scale() {
        for (nanos, text) in [
            (6_600, "6.6 µs"),
            (99_940, "99.9 µs"),
            (1_000_000, "1000 µs"),
            (10_266_045, "10.3 ms"),
        ] {
            assert_eq!(micros(Duration::from_nanos(nanos)), text);
        }
    }

    /// Pruned candidates are named as such.
    #[test]
    fn pruned_candidates_are_named() {
        let candidates = [
            Measured {
                pruned: true,
                ..measured(F32, 2000, 10, 0.95, 20_000)
            },
            Measured {
                pruned: true,
                ..measured(INT8, 1000, 10, 0.95, 6_000)
            },
        ];
        let choice = choose(&candidates, &rule(true)).expect("a choice");
        assert!(
            choice
                .why
                .contains("faster than f32 (pruned) (the next fastest"),
            "{}",
            choice.why
        );
    }
}
