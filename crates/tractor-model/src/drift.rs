//! Drift before the labels arrive: the reference statistics `tractor optimize` records from its labelled set, and
//! the pure math `tractor optimize` and `tractor serve` both apply to them (row → features, quantile bins, PSI).
//!
//! # Features
//! Only the model's first input has features (the labelled set's `x` is that input). An input with at most
//! [`MAX_ELEMENT_FEATURES`] elements per row gives one feature per element, named `<input>[<i>]` by flat index; a
//! wider one (an image) gives two summary features per row, `<input>:mean` and `<input>:std` (population standard
//! deviation). Values are the input's, decoded to f64 after the cast to the input's datatype, on both sides.
//!
//! # Bins
//! Per feature, the nearest-rank deciles of the labelled set's finite values (`sorted[ceil(k·n/10) − 1]`,
//! k = 1..9), deduplicated: ties and constant features give fewer edges. Edges `e1 < … < ek` make the bins
//! `(-inf, e1], (e1, e2], …, (ek, +inf)`; a NaN counts in the first. Served predictions are compared with the
//! labelled set's labels (the optimize step records the labels, not a candidate's outputs, so the artifact's
//! bytes do not depend on the CPU that built it): a classifier's by class, the labels' classes ascending and one
//! last bin for any other class (reference share 0); a regressor's (one value per row) by the deciles of the
//! targets, like a feature.
//!
//! # Score
//! Population stability index `PSI = Σ_b (p_b − q_b) · ln(p_b / q_b)`, `p` the window's shares, `q` the
//! reference's. Both shares are floored at [`SHARE_FLOOR`] (not renormalised), so an empty bin on either side adds
//! a large but finite term. Rules of thumb: below 0.1 stable, 0.1–0.2 moderate shift, above 0.2 significant.
//!
//! # Format and where it is stored
//! One JSON document, [`Reference`] (`{"version":1,"input":..,"rowElements":..,"featureKind":"elements"|"summary",
//! "rows":..,"features":[{"name","edges","shares"}],"predictions":{"kind":"classes","classes","shares"} |
//! {"kind":"values","edges","shares"}}`), edges as decimal strings that read back bit for bit, shares rounded to
//! 4 decimals (the floor's resolution), serialized by serde in field order: the same labelled set gives the same bytes. It is the **first entry** of the artifact's NNEF tar, named
//! [`REFERENCE_FILE`] (mode 0644, tract's fixed mtime), before tract's own entries, so the server reads one entry
//! and never scans the archive. tract's NNEF loader has no loader for `.json` files and skips them, so the
//! artifact loads as before. Digest rule: none new — the file is inside the archive, so the artifact's sha256
//! (the report's `artifactDigest`, the server's `--sha256`) covers it. An artifact whose first entry is anything
//! else has no reference, and the server exports no drift.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Name of the reference's entry in the artifact's tar (its first entry, when present).
pub const REFERENCE_FILE: &str = "tractor-reference.json";
/// Version of the [`Reference`] format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bins per feature before ties are merged: deciles.
pub const BINS: usize = 10;
/// Widest input (elements per row) whose elements are features one by one; wider ones are summarized per row.
pub const MAX_ELEMENT_FEATURES: usize = 256;
/// Smallest share PSI uses on either side: an empty bin counts as 0.01 % of the rows, so the score stays finite.
pub const SHARE_FLOOR: f64 = 1e-4;
/// Largest reference document read from an artifact; a real one is a few kilobytes (256 features × 10 bins).
const MAX_REFERENCE_BYTES: u64 = 16 << 20;
/// tract's fixed mtime for deterministic archives (1 Jan 1980), used for the reference's entry too.
const ARCHIVE_MTIME: u64 = 315_532_800;
/// Tar's block size.
const BLOCK: usize = 512;

/// How an input's rows become features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FeatureKind {
    /// One feature per element, `<input>[<i>]`.
    Elements,
    /// Two features per row, `<input>:mean` and `<input>:std`.
    Summary,
}

impl FeatureKind {
    /// The kind for an input with `row_elements` elements per row.
    pub fn for_row(row_elements: usize) -> FeatureKind {
        if row_elements <= MAX_ELEMENT_FEATURES {
            FeatureKind::Elements
        } else {
            FeatureKind::Summary
        }
    }

    /// Features per row of `row_elements` elements.
    pub fn count(self, row_elements: usize) -> usize {
        match self {
            FeatureKind::Elements => row_elements,
            FeatureKind::Summary => 2,
        }
    }

    /// The features' names, in order.
    pub fn names(self, input: &str, row_elements: usize) -> Vec<String> {
        match self {
            FeatureKind::Elements => (0..row_elements).map(|i| format!("{input}[{i}]")).collect(),
            FeatureKind::Summary => vec![format!("{input}:mean"), format!("{input}:std")],
        }
    }

    /// Append one row's features to `out`: its elements, or its mean and population standard deviation.
    pub fn row_features(self, row: &[f64], out: &mut Vec<f64>) {
        match self {
            FeatureKind::Elements => out.extend_from_slice(row),
            FeatureKind::Summary => {
                let n = row.len().max(1) as f64;
                let mean = row.iter().sum::<f64>() / n;
                let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                out.push(mean);
                out.push(variance.sqrt());
            }
        }
    }
}

/// One feature's reference: bin edges and the labelled set's share of rows in each bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// `<input>[<i>]`, `<input>:mean` or `<input>:std`: the `feature` label of its drift gauge.
    pub name: String,
    /// Ascending, distinct bin edges (see the module docs); `edges.len() + 1` bins.
    #[serde(with = "exact")]
    pub edges: Vec<f64>,
    /// Share of the reference rows in each bin.
    pub shares: Vec<f64>,
}

/// The reference distribution served predictions are compared with: the labelled set's labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum PredictionReference {
    /// A classifier: the labels' classes, ascending, and each one's share. Bins are these classes plus one
    /// for any other class, whose reference share is 0.
    Classes {
        /// Class ids, ascending.
        classes: Vec<i64>,
        /// Share of rows labelled as each.
        shares: Vec<f64>,
    },
    /// A regressor with one target per row: bins of the targets, as for a feature.
    Values {
        /// Ascending, distinct bin edges.
        #[serde(with = "exact")]
        edges: Vec<f64>,
        /// Share of rows in each bin.
        shares: Vec<f64>,
    },
}

/// Predictions (the server's window) or labels (the reference, [`Reference::build`]), per row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Predicted<'a> {
    /// One class id per row.
    Classes(&'a [i64]),
    /// One value per row.
    Values(&'a [f64]),
}

/// The reference statistics of one artifact (see the module docs for the format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The model's first input, whose rows the features come from.
    pub input: String,
    /// Elements per row of that input.
    pub row_elements: usize,
    /// How rows become features.
    pub feature_kind: FeatureKind,
    /// Rows of the labelled set.
    pub rows: usize,
    /// One per feature, in [`FeatureKind::names`] order.
    pub features: Vec<Feature>,
    /// What served predictions are compared with: the labels' classes, or one target per row binned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<PredictionReference>,
}

impl Reference {
    /// The reference of a labelled set: `data` holds `rows` rows of the first input (flat, row-major, as f64), and
    /// `predicted` the labels per row, as classes or values (ignored when its length is not `rows`).
    pub fn build(
        input: &str,
        data: &[f64],
        rows: usize,
        predicted: Option<Predicted<'_>>,
    ) -> Result<Reference, String> {
        if rows == 0 || data.is_empty() || !data.len().is_multiple_of(rows) {
            return Err(format!(
                "{} values do not make {rows} rows of one input",
                data.len()
            ));
        }
        let row_elements = data.len() / rows;
        let kind = FeatureKind::for_row(row_elements);
        let width = kind.count(row_elements);
        let mut table = Vec::with_capacity(rows * width);
        for row in data.chunks(row_elements) {
            kind.row_features(row, &mut table);
        }
        let features = kind
            .names(input, row_elements)
            .into_iter()
            .enumerate()
            .map(|(column, name)| {
                let values: Vec<f64> = table.iter().skip(column).step_by(width).copied().collect();
                let edges = quantile_edges(&values, BINS);
                let shares = shares_of(&histogram(&edges, &values));
                Feature {
                    name,
                    edges,
                    shares,
                }
            })
            .collect();
        let predictions = match predicted {
            Some(Predicted::Classes(classes)) if classes.len() == rows => {
                let mut seen = classes.to_vec();
                seen.sort_unstable();
                seen.dedup();
                let mut counts = vec![0u64; seen.len()];
                for class in classes {
                    if let Ok(ix) = seen.binary_search(class) {
                        counts[ix] += 1;
                    }
                }
                Some(PredictionReference::Classes {
                    classes: seen,
                    shares: shares_of(&counts),
                })
            }
            Some(Predicted::Values(values)) if values.len() == rows => {
                let edges = quantile_edges(values, BINS);
                let shares = shares_of(&histogram(&edges, values));
                Some(PredictionReference::Values { edges, shares })
            }
            _ => None,
        };
        Ok(Reference {
            version: FORMAT_VERSION,
            input: input.to_owned(),
            row_elements,
            feature_kind: kind,
            rows,
            features,
            predictions,
        })
    }

    /// The document as stored: compact JSON (it is inside every artifact; `jq` shows it to people), fields in
    /// declaration order, so equal references are equal bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, String> {
        let mut bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parse and check a stored document: its version, and bins and shares that agree (the server indexes by
    /// them).
    pub fn from_json(bytes: &[u8]) -> Result<Reference, String> {
        let reference: Reference = serde_json::from_slice(bytes)
            .map_err(|e| format!("{REFERENCE_FILE} is not a reference: {e}"))?;
        reference.check()?;
        Ok(reference)
    }

    fn check(&self) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "{REFERENCE_FILE} has version {}, this build reads {FORMAT_VERSION}",
                self.version
            ));
        }
        let width = self.feature_kind.count(self.row_elements);
        if self.features.len() != width {
            return Err(format!(
                "{REFERENCE_FILE}: {} features for {width} expected",
                self.features.len()
            ));
        }
        let bins_agree = |edges: &[f64], shares: &[f64]| {
            shares.len() == edges.len() + 1 && edges.windows(2).all(|pair| pair[0] < pair[1])
        };
        if let Some(feature) = self
            .features
            .iter()
            .find(|feature| !bins_agree(&feature.edges, &feature.shares))
        {
            return Err(format!(
                "{REFERENCE_FILE}: feature {} has {} edges and {} shares",
                feature.name,
                feature.edges.len(),
                feature.shares.len()
            ));
        }
        let predictions_agree = match &self.predictions {
            None => true,
            Some(PredictionReference::Classes { classes, shares }) => {
                classes.len() == shares.len() && classes.windows(2).all(|pair| pair[0] < pair[1])
            }
            Some(PredictionReference::Values { edges, shares }) => bins_agree(edges, shares),
        };
        if !predictions_agree {
            return Err(format!(
                "{REFERENCE_FILE}: the predictions' bins and shares disagree"
            ));
        }
        Ok(())
    }
}

impl PredictionReference {
    /// Bins of the predictions: classes plus "other", or value bins.
    pub fn bins(&self) -> usize {
        match self {
            PredictionReference::Classes { classes, .. } => classes.len() + 1,
            PredictionReference::Values { edges, .. } => edges.len() + 1,
        }
    }

    /// The reference share of each of [`PredictionReference::bins`].
    pub fn expected(&self) -> Vec<f64> {
        match self {
            PredictionReference::Classes { shares, .. } => {
                shares.iter().copied().chain([0.0]).collect()
            }
            PredictionReference::Values { shares, .. } => shares.clone(),
        }
    }

    /// The bin of one class prediction (`None` for a regressor's reference).
    pub fn class_bin(&self, class: i64) -> Option<usize> {
        match self {
            PredictionReference::Classes { classes, .. } => {
                Some(classes.binary_search(&class).unwrap_or(classes.len()))
            }
            PredictionReference::Values { .. } => None,
        }
    }

    /// The bin of one value prediction (`None` for a classifier's reference).
    pub fn value_bin(&self, value: f64) -> Option<usize> {
        match self {
            PredictionReference::Values { edges, .. } => Some(bin_of(edges, value)),
            PredictionReference::Classes { .. } => None,
        }
    }
}

/// Bin edges as decimal strings (`"0.1"`, Rust's shortest round-trip form), read back with Rust's correctly rounded
/// parser: serde_json reads a 17-digit number to within one unit in the last place, and an edge one unit off
/// would move a value equal to it into the next bin, the server binning otherwise than the optimize step did.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        edges: &[f64],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(edges.iter().map(|edge| edge.to_string()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|edge| {
                edge.parse::<f64>()
                    .ok()
                    .filter(|edge| edge.is_finite())
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("edge {edge:?} is not a finite number"))
                    })
            })
            .collect()
    }
}

/// Nearest-rank quantile edges cutting `values` into `bins` bins, deduplicated (see the module docs); NaNs and
/// infinities are left out. No finite value gives no edge: one bin.
pub fn quantile_edges(values: &[f64], bins: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() || bins < 2 {
        return Vec::new();
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mut edges: Vec<f64> = Vec::with_capacity(bins - 1);
    for k in 1..bins {
        // ceil(k·n / bins) − 1, in integers: the k-th nearest-rank quantile.
        let rank = (k * n).div_ceil(bins).max(1) - 1;
        // -0.0 and 0.0 are one edge; written as 0.0 so equal data give equal bytes.
        let edge = sorted[rank.min(n - 1)] + 0.0;
        if edges.last() != Some(&edge) {
            edges.push(edge);
        }
    }
    edges
}

/// The bin of `value` among `edges`: the number of edges below it, so `(e_{i-1}, e_i]` is bin `i`.
pub fn bin_of(edges: &[f64], value: f64) -> usize {
    edges.partition_point(|edge| *edge < value)
}

/// Rows of `values` in each of the `edges.len() + 1` bins.
pub fn histogram(edges: &[f64], values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; edges.len() + 1];
    for value in values {
        counts[bin_of(edges, *value)] += 1;
    }
    counts
}

/// Counts as shares of their total, rounded to 4 decimals, the resolution of [`SHARE_FLOOR`] (all zeros for no
/// rows).
pub fn shares_of(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|count| {
            if total == 0 {
                0.0
            } else {
                (*count as f64 / total as f64 * 1e4).round() / 1e4
            }
        })
        .collect()
}

/// PSI of the window's `counts` against the reference's `expected` shares, bin by bin, both floored at
/// [`SHARE_FLOOR`]; `None` when the window is empty or the bins disagree.
pub fn psi(expected: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || expected.len() != counts.len() {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(counts)
            .map(|(reference, count)| {
                let q = reference.max(SHARE_FLOOR);
                let p = (*count as f64 / total as f64).max(SHARE_FLOOR);
                (p - q) * (p / q).ln()
            })
            .sum(),
    )
}

/// `tar` with the reference's entry put first (see the module docs): the bytes tract wrote follow unchanged.
pub fn prepend_to_tar(tar: &[u8], reference: &Reference) -> Result<Vec<u8>, String> {
    let json = reference.to_json()?;
    let mut header = tar::Header::new_gnu();
    header
        .set_path(REFERENCE_FILE)
        .map_err(|e| format!("naming {REFERENCE_FILE}: {e}"))?;
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(ARCHIVE_MTIME);
    header.set_cksum();
    let padding = (BLOCK - json.len() % BLOCK) % BLOCK;
    let mut out = Vec::with_capacity(BLOCK + json.len() + padding + tar.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&json);
    out.resize(out.len() + padding, 0);
    out.extend_from_slice(tar);
    Ok(out)
}

/// The reference in an NNEF archive (tar, or gzipped tar) read from `reader`: its first entry, when that is
/// [`REFERENCE_FILE`]. Reads that entry only.
pub fn read_from_archive(reader: impl Read) -> Result<Option<Reference>, String> {
    let mut reader = std::io::BufReader::new(reader);
    let gzipped = std::io::BufRead::fill_buf(&mut reader)
        .map_err(|e| format!("reading the archive: {e}"))?
        .starts_with(&[0x1f, 0x8b]);
    if gzipped {
        first_entry(flate2::read::GzDecoder::new(reader))
    } else {
        first_entry(reader)
    }
}

fn first_entry(reader: impl Read) -> Result<Option<Reference>, String> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| format!("reading the archive: {e}"))?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
    let is_reference = entry
        .path()
        .map(|path| path.as_os_str() == REFERENCE_FILE)
        .unwrap_or(false);
    if !is_reference {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    entry
        .take(MAX_REFERENCE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {REFERENCE_FILE}: {e}"))?;
    Reference::from_json(&bytes).map(Some)
}

/// The reference of an NNEF artifact at `path`: the first entry of a `.nnef.tgz`/`.nnef.tar`, or
/// [`REFERENCE_FILE`] in an NNEF folder; `None` when it has none.
pub fn read_reference(path: &Path) -> Result<Option<Reference>, String> {
    if path.is_dir() {
        let file = path.join(REFERENCE_FILE);
        return match std::fs::read(&file) {
            Ok(bytes) => Reference::from_json(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", file.display())),
        };
    }
    let file = std::fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    read_from_archive(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_nearest_rank_deciles_deduplicated() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let cases: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
            ("1..10", ten.clone(), (1..=9).map(f64::from).collect()),
            (
                "100..1, any order",
                hundred,
                (1..=9).map(|k| f64::from(k * 10)).collect(),
            ),
            ("constant", vec![3.5; 50], vec![3.5]),
            (
                "binary, 70 % zeros",
                [vec![0.0; 7], vec![1.0; 3]].concat(),
                vec![0.0, 1.0],
            ),
            ("one value", vec![2.0], vec![2.0]),
            ("none finite", vec![f64::NAN, f64::INFINITY], vec![]),
            ("signed zeros", vec![-0.0, 0.0, -0.0], vec![0.0]),
        ];
        for (what, values, want) in cases {
            let edges = quantile_edges(&values, BINS);
            assert_eq!(edges, want, "{what}");
            assert!(edges.windows(2).all(|pair| pair[0] < pair[1]), "{what}");
            // Deterministic: the same values in another order give the same edges.
            let mut reversed = values.clone();
            reversed.reverse();
            assert_eq!(quantile_edges(&reversed, BINS), edges, "{what}");
        }
    }

    #[test]
    fn bins_are_left_open_right_closed() {
        let edges = [1.0, 2.0, 3.0];
        for (value, bin) in [
            (f64::NEG_INFINITY, 0),
            (0.5, 0),
            (1.0, 0),
            (1.5, 1),
            (2.0, 1),
            (3.0, 2),
            (3.1, 3),
            (f64::INFINITY, 3),
            (f64::NAN, 0),
        ] {
            assert_eq!(bin_of(&edges, value), bin, "{value}");
        }
        assert_eq!(bin_of(&[], 42.0), 0);
    }

    #[test]
    fn a_constant_feature_has_one_edge_and_all_rows_in_its_first_bin() {
        let x = vec![7.0; 20];
        let reference = Reference::build("x", &x, 20, None).expect("built");
        assert_eq!(reference.features.len(), 1);
        assert_eq!(reference.features[0].edges, [7.0]);
        assert_eq!(reference.features[0].shares, [1.0, 0.0]);
        // The same value scores 0; anything above it is drift.
        assert!(psi(&reference.features[0].shares, &[5, 0]).expect("rows") < 1e-12);
        assert!(psi(&reference.features[0].shares, &[0, 5]).expect("rows") > 1.0);
    }

    #[test]
    fn psi_of_identical_shares_is_zero_and_of_a_shift_the_hand_computed_value() {
        let expected = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&expected, &[10, 10, 10, 10]).expect("rows").abs() < 1e-12);
        assert!(psi(&expected, &[1, 1, 1, 1]).expect("rows").abs() < 1e-12);
        // Half the rows moved from the first bin to the last: p = (0, .25, .25, .5), floored to 1e-4.
        let shifted = psi(&expected, &[0, 1, 1, 2]).expect("rows");
        let by_hand = (1e-4 - 0.25) * (1e-4f64 / 0.25).ln() + (0.5 - 0.25) * (2.0f64).ln();
        assert!((shifted - by_hand).abs() < 1e-12, "{shifted} vs {by_hand}");
        assert!((by_hand - 2.1285).abs() < 1e-4, "{by_hand}");
        // A bin empty in the reference and taken in the window: the floor keeps it finite.
        let new_bin = psi(&[0.5, 0.5, 0.0], &[1, 1, 2]).expect("rows");
        let by_hand = 2.0 * (0.25 - 0.5) * (0.5f64).ln() + (0.5 - 1e-4) * (0.5f64 / 1e-4).ln();
        assert!((new_bin - by_hand).abs() < 1e-12, "{new_bin} vs {by_hand}");
        assert_eq!(psi(&expected, &[0, 0, 0, 0]), None);
        assert_eq!(psi(&expected, &[1, 1]), None);
    }

    #[test]
    fn wide_inputs_are_summarized_per_row() {
        let width = MAX_ELEMENT_FEATURES + 1;
        assert_eq!(
            FeatureKind::for_row(MAX_ELEMENT_FEATURES),
            FeatureKind::Elements
        );
        assert_eq!(FeatureKind::for_row(width), FeatureKind::Summary);
        let mut out = Vec::new();
        FeatureKind::Summary.row_features(&[1.0, 3.0, 1.0, 3.0], &mut out);
        assert_eq!(out, [2.0, 1.0]);
        out.clear();
        FeatureKind::Elements.row_features(&[1.0, 3.0], &mut out);
        assert_eq!(out, [1.0, 3.0]);
        let rows: Vec<f64> = (0..3 * width).map(|i| (i % 7) as f64).collect();
        let reference = Reference::build("image", &rows, 3, None).expect("built");
        assert_eq!(reference.feature_kind, FeatureKind::Summary);
        assert_eq!(reference.row_elements, width);
        let names: Vec<&str> = reference.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["image:mean", "image:std"]);
        assert_eq!(
            FeatureKind::Elements.names("x", 3),
            ["x[0]", "x[1]", "x[2]"]
        );
    }

    #[test]
    fn the_reference_is_deterministic_and_reads_back_from_the_archive() {
        let rows = 40;
        let data: Vec<f64> = (0..rows * 3)
            .map(|i| ((i * 37) % 101) as f64 / 7.0)
            .collect();
        let classes: Vec<i64> = (0..rows as i64).map(|i| i % 3 * 2).collect();
        let build = || {
            Reference::build("X", &data, rows, Some(Predicted::Classes(&classes))).expect("built")
        };
        let reference = build();
        assert_eq!(reference.to_json(), build().to_json());
        assert_eq!(
            reference.predictions,
            Some(PredictionReference::Classes {
                classes: vec![0, 2, 4],
                shares: vec![0.35, 0.325, 0.325],
            })
        );
        let shares: f64 = reference.features[0].shares.iter().sum();
        assert!((shares - 1.0).abs() < 1e-5, "{shares}");
        // A tar of one other entry, as tract writes it; the reference goes first and reads back.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "graph.nnef", &b"abc"[..])
            .expect("appended");
        let tract_tar = builder.into_inner().expect("tar");
        let tar = prepend_to_tar(&tract_tar, &reference).expect("prepended");
        assert!(tar.len().is_multiple_of(BLOCK));
        assert_eq!(
            read_from_archive(&tar[..]).expect("read"),
            Some(reference.clone())
        );
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .expect("entries")
            .map(|entry| {
                entry
                    .expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, [REFERENCE_FILE, "graph.nnef"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        let tgz = gz.finish().expect("gzip");
        assert_eq!(read_from_archive(&tgz[..]).expect("read"), Some(reference));
        // tract's tar alone has none.
        assert_eq!(read_from_archive(&tract_tar[..]).expect("read"), None);
    }

    /// Edges that are f32 data as f64 (17 significant digits) read back bit for bit.
    #[test]
    fn edges_read_back_bit_for_bit() {
        let x: Vec<f64> = (0..1000)
            .map(|i| f64::from(i as f32 * 0.001_234_5_f32 + 1e-7))
            .collect();
        let reference =
            Reference::build("X", &x, 1000, Some(Predicted::Values(&x))).expect("built");
        let read = Reference::from_json(&reference.to_json().expect("json")).expect("read");
        let bits = |r: &Reference| -> Vec<u64> {
            r.features[0]
                .edges
                .iter()
                .map(|edge| edge.to_bits())
                .collect()
        };
        assert_eq!(bits(&read), bits(&reference));
        assert_eq!(read, reference);
        let json = String::from_utf8(reference.to_json().expect("json")).expect("utf-8");
        assert!(
            json.contains(&format!("\"{}\"", reference.features[0].edges[0])),
            "{json}"
        );
        assert!(
            Reference::from_json(json.replace("\"edges\":[\"", "\"edges\":[\"x").as_bytes())
                .is_err()
        );
    }

    #[test]
    fn a_reference_whose_bins_disagree_is_refused() {
        let mut reference = Reference::build("X", &[1.0, 2.0, 3.0], 3, None).expect("built");
        reference.features[0].shares.pop();
        let json = reference.to_json().expect("json");
        assert!(Reference::from_json(&json).is_err());
        let mut future = Reference::build("X", &[1.0, 2.0, 3.0], 3, None).expect("built");
        future.version = FORMAT_VERSION + 1;
        assert!(Reference::from_json(&future.to_json().expect("json")).is_err());
    }

    #[test]
    fn regression_predictions_are_binned_like_a_feature() {
        let values: Vec<f64> = (0..20).map(f64::from).collect();
        let x = vec![0.0; 20];
        let reference =
            Reference::build("X", &x, 20, Some(Predicted::Values(&values))).expect("built");
        let Some(PredictionReference::Values { edges, shares }) = &reference.predictions else {
            panic!("values expected: {:?}", reference.predictions);
        };
        assert_eq!(edges.len(), 9);
        assert_eq!(shares, &vec![0.1; 10]);
        let predictions = reference.predictions.as_ref().expect("predictions");
        assert_eq!(predictions.value_bin(-5.0), Some(0));
        assert_eq!(predictions.value_bin(100.0), Some(9));
        assert_eq!(predictions.class_bin(1), None);
        // A mismatched length records no predictions.
        let short = Reference::build("X", &x, 20, Some(Predicted::Values(&values[..3])));
        assert_eq!(short.expect("built").predictions, None);
    }
}
