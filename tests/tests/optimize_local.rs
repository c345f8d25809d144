//! `tractor optimize` from a local file: every fixture at every precision, determinism, the report, the gate.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use tractor_api::Precision;
use tractor_api::report::OptimizeReport;
use tractor_e2e::optimize::{Run, files_in, fixtures, optimize, sha256};
use tractor_e2e::serve::Split;

const PRECISIONS: [&str; 3] = ["f32", "f16", "int8"];

/// Each fixture and the precision its int8 run ends at behind a 0.02 accuracy gate. dense's labels are its own
/// f32 argmax on Gaussian noise, so some rows sit closer to a tie than int8's weight error: 4 of its 64 flip.
const FIXTURES: [(&str, &str); 3] = [
    ("digits_mlp", "int8"),
    ("breast_cancer_logreg", "int8"),
    ("dense", "f16"),
];

fn model(name: &str) -> String {
    fixtures()
        .join(format!("{name}.onnx"))
        .display()
        .to_string()
}

fn eval(name: &str) -> String {
    fixtures()
        .join(format!("{name}_test.npz"))
        .display()
        .to_string()
}

#[test]
fn f32_artifact_report_and_nothing_else_in_out() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let src = model("digits_mlp");
    let digest = sha256(Path::new(&src))?;
    let run = optimize(
        &out,
        &["--source", &src, "--sha256", &digest, "--precision", "f32"],
        &[],
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = &run.report;
    assert_eq!(files_in(&out), vec!["model.nnef.tgz".to_owned()]);
    let artifact = out.join("model.nnef.tgz");
    assert_eq!(
        report["artifactDigest"],
        format!("sha256:{}", sha256(&artifact)?).as_str()
    );
    assert_eq!(report["sourceDigest"], format!("sha256:{digest}").as_str());
    assert_eq!(report["sizeBytes"], std::fs::metadata(&artifact)?.len());
    assert_eq!(report["precision"], "f32");
    assert_eq!(report["format"], "onnx");
    assert_eq!(report["inputs"][0]["name"], "X");
    assert_eq!(report["inputs"][0]["datatype"], "FP32");
    assert_eq!(report["inputs"][0]["shape"], serde_json::json!([-1, 64]));
    let outputs: Vec<&str> = report["outputs"]
        .as_array()
        .expect("present")
        .iter()
        .map(|o| o["name"].as_str().expect("present"))
        .collect();
    assert_eq!(outputs, ["label", "probabilities"]);
    assert!(report.get("reason").is_none());
    Ok(())
}

#[test]
fn same_source_and_recipe_give_identical_bytes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for (name, recipe) in [
        ("digits_mlp", vec!["--precision", "f32"]),
        ("digits_mlp", vec!["--precision", "f16"]),
        (
            "dense",
            vec!["--precision", "int8", "--prune-sparsity", "0.5"],
        ),
    ] {
        let mut digests = Vec::new();
        for attempt in 0..2 {
            let out = tmp
                .path()
                .join(format!("{name}-{}-{attempt}", recipe.join("")));
            let src = model(name);
            let mut args = vec!["--source", src.as_str()];
            args.extend(recipe.iter().copied());
            let run = optimize(&out, &args, &[])?;
            assert_eq!(run.code, 0, "{}", run.stderr);
            digests.push((
                std::fs::read(out.join("model.nnef.tgz"))?,
                run.report["artifactDigest"].clone(),
            ));
        }
        assert!(
            digests[0].0 == digests[1].0,
            "{name} {recipe:?}: bytes differ"
        );
        assert_eq!(digests[0].1, digests[1].1);
    }
    Ok(())
}

#[test]
fn every_fixture_at_every_precision() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for (name, int8_ends_at) in FIXTURES {
        let (src, data) = (model(name), eval(name));
        // Built as asked, with the labelled set for the drift reference only (no gate): what a serving pod
        // re-derives from the recorded precision.
        let mut built = BTreeMap::new();
        for precision in PRECISIONS {
            let out = tmp.path().join(format!("{name}-{precision}-asked"));
            let run = optimize(
                &out,
                &[
                    "--source",
                    &src,
                    "--precision",
                    precision,
                    "--reference-data",
                    &data,
                    "--metric",
                    "accuracy",
                ],
                &[],
            )?;
            assert_eq!(run.code, 0, "{name} {precision}: {}", run.stderr);
            let report = &run.report;
            assert_eq!(report["precision"], precision, "{name}: {report}");
            assert_eq!(
                report["message"],
                format!("{precision} as requested"),
                "{report}"
            );
            assert!(report.get("baselineScore").is_none(), "{report}");
            built.insert(
                precision,
                (
                    report["artifactDigest"]
                        .as_str()
                        .expect("present")
                        .to_owned(),
                    report["sizeBytes"].as_i64().expect("present"),
                ),
            );
        }
        let mut baseline = None;
        for precision in PRECISIONS {
            let out = tmp.path().join(format!("{name}-{precision}-gated"));
            let run = optimize(
                &out,
                &[
                    "--source",
                    &src,
                    "--precision",
                    precision,
                    "--eval-data",
                    &data,
                    "--metric",
                    "accuracy",
                    "--max-regression",
                    "0.02",
                ],
                &[],
            )?;
            assert_eq!(run.code, 0, "{name} {precision}: {}", run.stderr);
            let report = &run.report;
            eprintln!("{name} {precision}: {report}");
            let chosen = if precision == "int8" {
                int8_ends_at
            } else {
                precision
            };
            assert_eq!(report["precision"], chosen, "{name} {precision}: {report}");
            assert_eq!(report["metric"], "accuracy");
            // The gate picks among the artifacts as asked; it never changes their bytes.
            assert_eq!(
                report["artifactDigest"].as_str(),
                Some(built[chosen].0.as_str()),
                "{name} {precision}: {report}"
            );
            let base = report["baselineScore"].as_f64().expect("present");
            assert_eq!(*baseline.get_or_insert(base), base, "{name}: {report}");
            let opt = report["optimizedScore"].as_f64().expect("present");
            assert!(base - opt <= 0.02 + 1e-9, "{name} {precision}: {report}");
            if chosen == "f32" {
                assert_eq!(opt, base, "{name}: the f32 artifact is the model itself");
            }
            let table = report["candidates"].as_array().expect("present");
            let (last, refused) = table.split_last().expect("one candidate at least");
            assert_eq!(last["precision"], chosen, "{report}");
            assert_eq!(last["passed"], true, "{report}");
            assert_eq!(last["score"].as_f64(), Some(opt), "{report}");
            for candidate in refused {
                assert_eq!(candidate["passed"], false, "{report}");
                let score = candidate["score"].as_f64().expect("present");
                assert!(
                    base - score > 0.02,
                    "{name}: refused within the gate: {report}"
                );
            }
            let failed: Vec<&str> = refused
                .iter()
                .map(|c| c["precision"].as_str().expect("present"))
                .collect();
            let message = if failed.is_empty() {
                format!("{precision} as requested")
            } else {
                format!(
                    "fell back from {precision} to {chosen}; failed the accuracy gate: {}",
                    failed.join(", ")
                )
            };
            assert_eq!(report["message"], message.as_str(), "{name} {precision}");
        }
        let size = |p: &str| built[p].1;
        eprintln!(
            "{name} archives: f32 {}, f16 {}, int8 {} bytes",
            size("f32"),
            size("f16"),
            size("int8")
        );
        if name == "breast_cancer_logreg" {
            // Its one weight tensor has 60 entries, below the 256 the int8 pass touches: int8 leaves it as it is.
            assert_eq!(built["int8"], built["f32"], "{name}");
            assert!(size("f16") < size("f32"), "{name}: {built:?}");
        } else {
            // Weights are nearly all of the archive: f16 halves them, int8 stores one byte each (plus a scale
            // per output channel).
            assert!(size("f16") * 10 < size("f32") * 6, "{name}: {built:?}");
            assert!(size("int8") * 10 < size("f32") * 4, "{name}: {built:?}");
            assert!(size("int8") < size("f16"), "{name}: {built:?}");
        }
    }
    Ok(())
}

#[test]
fn quantization_that_costs_accuracy_falls_back_to_f32_and_says_why() -> Result<()> {
    let split = Split::load("fine_margins")?;
    assert!(split.rows() >= 1000, "{} rows", split.rows());
    let tmp = tempfile::tempdir()?;
    let (src, data) = (model("fine_margins"), eval("fine_margins"));
    let asked = optimize(
        &tmp.path().join("f32-asked"),
        &[
            "--source",
            &src,
            "--precision",
            "f32",
            "--reference-data",
            &data,
            "--metric",
            "accuracy",
        ],
        &[],
    )?;
    assert_eq!(asked.code, 0, "{}", asked.stderr);
    for (precision, tried, message) in [
        (
            "int8",
            vec!["int8", "f16", "f32"],
            "fell back from int8 to f32; failed the accuracy gate: int8, f16",
        ),
        (
            "f16",
            vec!["f16", "f32"],
            "fell back from f16 to f32; failed the accuracy gate: f16",
        ),
        (
            "auto",
            vec!["f32", "f16", "int8"],
            "auto chose f32: the only candidate passing the accuracy gate; failed the accuracy gate: f16, int8",
        ),
    ] {
        let out = tmp.path().join(precision);
        // No --max-regression: the default gate, as a spec with an evaluation and no maxRegression gets.
        let run = optimize(
            &out,
            &[
                "--source",
                &src,
                "--precision",
                precision,
                "--eval-data",
                &data,
                "--metric",
                "accuracy",
            ],
            &[],
        )?;
        assert_eq!(run.code, 0, "{precision}: {}", run.stderr);
        let report = &run.report;
        eprintln!("fine_margins {precision}: {report}");
        assert_eq!(report["precision"], "f32", "{precision}: {report}");
        assert_eq!(report["baselineScore"], 1.0, "{report}");
        assert_eq!(report["optimizedScore"], 1.0, "{report}");
        // What serving pods re-derive from the recorded precision, so what is served.
        assert_eq!(
            report["artifactDigest"], asked.report["artifactDigest"],
            "{report}"
        );
        let table = report["candidates"].as_array().expect("present");
        let order: Vec<&str> = table
            .iter()
            .map(|c| c["precision"].as_str().expect("present"))
            .collect();
        assert_eq!(order, tried, "{report}");
        for candidate in table {
            let score = candidate["score"].as_f64().expect("present");
            if candidate["precision"] == "f32" {
                assert_eq!(
                    (candidate["passed"].as_bool(), score),
                    (Some(true), 1.0),
                    "{report}"
                );
            } else {
                // The class offsets are finer than f16's and int8's steps: most decisions flip, not a few.
                assert_eq!(candidate["passed"], false, "{report}");
                assert!(score < 0.5, "{}: {score}", candidate["precision"]);
            }
        }
        // The operator turns the report into status.model with this same mapping.
        let status = serde_json::from_value::<OptimizeReport>(report.clone())?.model_status();
        assert_eq!(status.precision, Some(Precision::F32));
        assert_eq!(status.message.as_deref(), Some(message), "{precision}");
    }
    Ok(())
}

#[test]
fn auto_times_candidates_and_records_the_table() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let (src, data) = (model("dense"), eval("dense"));
    let run = optimize(
        &out,
        &["--source", &src, "--eval-data", &data, "--metric", "f1"],
        &[],
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = &run.report;
    let table = report["candidates"].as_array().expect("present");
    assert_eq!(table.len(), 3, "{report}");
    let chosen = report["precision"].as_str().expect("present");
    assert_ne!(chosen, "auto");
    let fastest = table
        .iter()
        .filter(|c| c["passed"] == true)
        .min_by(|left, right| {
            left["latencyMicros"]
                .as_f64()
                .expect("present")
                .total_cmp(&right["latencyMicros"].as_f64().expect("present"))
        })
        .expect("present");
    // The fastest wins, unless a candidate within the noise margin of it won the tie-break (the `choose` module's
    // table tests hold the rule); either way the message says which.
    let message = report["message"].as_str().expect("present");
    assert!(
        message.starts_with(&format!("auto chose {chosen}: ")),
        "{message}"
    );
    if fastest["precision"] != chosen {
        // A tie won on score or size, or the winner was faster beyond the margin at a later batch size.
        let fastest = fastest["precision"].as_str().expect("present");
        assert!(message.contains("noise margin"), "{message}");
        assert!(
            message.contains(&format!("fastest {fastest}"))
                || message.contains(&format!("faster than {fastest}")),
            "{message}"
        );
    } else {
        assert!(
            message.contains("faster than") || message.contains("noise margin"),
            "{message}"
        );
    }
    Ok(())
}

#[test]
fn auto_without_labels_uses_calibration_agreement() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let src = model("digits_mlp");
    let run = optimize(&out, &["--source", &src, "--precision", "auto"], &[])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = &run.report;
    assert!(r.get("baselineScore").is_none());
    for c in r["candidates"].as_array().expect("present") {
        // The score column is the agreement with f32 on the calibration sample.
        let agreement = c["score"].as_f64().expect("present");
        assert_eq!(c["passed"], agreement >= 0.99, "{c}");
    }
    assert!(
        r["message"]
            .as_str()
            .expect("present")
            .contains("calibration")
    );
    Ok(())
}

#[test]
fn every_metric_scores_the_digits_model() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for metric in ["accuracy", "f1", "precision", "recall"] {
        let out = tmp.path().join(metric);
        let (src, data) = (model("digits_mlp"), eval("digits_mlp"));
        let run = optimize(
            &out,
            &[
                "--source",
                &src,
                "--precision",
                "f32",
                "--eval-data",
                &data,
                "--metric",
                metric,
                "--min-score",
                "0.9",
            ],
            &[],
        )?;
        assert_eq!(run.code, 0, "{metric}: {}", run.stderr);
        let score = run.report["baselineScore"].as_f64().expect("present");
        assert!((0.9..=1.0).contains(&score), "{metric}: {score}");
        assert_eq!(run.report["metric"], metric);
    }
    Ok(())
}

#[test]
fn pruning_keeps_accuracy_and_shrinks_the_archive() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, data) = (model("digits_mlp"), eval("digits_mlp"));
    let mut sizes = Vec::new();
    for sparsity in ["0", "0.3"] {
        let out = tmp.path().join(sparsity);
        let run = optimize(
            &out,
            &[
                "--source",
                &src,
                "--precision",
                "f32",
                "--prune-sparsity",
                sparsity,
                "--eval-data",
                &data,
                "--max-regression",
                "0.05",
            ],
            &[],
        )?;
        assert_eq!(run.code, 0, "{sparsity}: {}", run.stderr);
        eprintln!("sparsity {sparsity}: {}", run.report);
        sizes.push(run.report["sizeBytes"].as_i64().expect("present"));
    }
    assert!(sizes[1] < sizes[0], "{sizes:?}");
    Ok(())
}

#[test]
fn pruning_that_costs_accuracy_is_refused_and_the_unpruned_model_served() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, data) = (model("fine_margins"), eval("fine_margins"));
    let run_at = |sparsity: &str, gated: bool| -> Result<Run> {
        let mut args = vec![
            "--source",
            &src,
            "--precision",
            "f32",
            "--prune-sparsity",
            sparsity,
        ];
        if gated {
            args.extend(["--eval-data", &data]);
        }
        optimize(&tmp.path().join(format!("{sparsity}-{gated}")), &args, &[])
    };
    // The same recipe without pruning passes: what the refusal below blames is the pruning.
    let unpruned = run_at("0", true)?;
    assert_eq!(unpruned.code, 0, "{}", unpruned.stderr);
    assert_eq!(
        unpruned.report["optimizedScore"], 1.0,
        "{}",
        unpruned.report
    );

    // Half the weights zeroed takes the eight features with the smallest base, and their class offsets.
    let run = run_at("0.5", true)?;
    let report_json = &run.report;
    eprintln!("fine_margins pruned to 0.5: {report_json}");
    assert_eq!(run.code, 0, "{report_json}\n{}", run.stderr);
    assert_eq!(report_json["pruningRefused"], true, "{report_json}");
    assert_eq!(report_json["baselineScore"], 1.0, "{report_json}");
    assert_eq!(report_json["optimizedScore"], 1.0, "{report_json}");
    // The artifact is the unpruned one, byte for byte: what serving pods re-derive without pruning.
    assert_eq!(
        report_json["artifactDigest"], unpruned.report["artifactDigest"],
        "{report_json}"
    );
    // The pruned candidate failed and the unpruned one passed, both in the table.
    let table: Vec<(bool, bool)> = report_json["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["pruned"] == true, c["passed"] == true))
        .collect();
    assert_eq!(table, [(true, false), (false, true)], "{report_json}");
    // The operator reads the report as this type and copies this message to status.model.message.
    let report: OptimizeReport = serde_json::from_value(report_json.clone())?;
    let status = report.model_status();
    assert!(status.pruning_refused);
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with(
            "pruning to 0.5 refused: the best pruned candidate scored 0.3350 against 1.0000"
        ),
        "{message}"
    );
    assert!(message.ends_with("; f32 as requested"), "{message}");
    // Ungated (how serving pods build), pruning is applied as asked: a different artifact.
    let rederived = run_at("0.5", false)?;
    assert_eq!(rederived.code, 0, "{}", rederived.stderr);
    assert_ne!(
        rederived.report["artifactDigest"], report_json["artifactDigest"],
        "pruning changed nothing"
    );
    Ok(())
}
