//! Start-up cost and throughput of a served model: load and runner-build time, RSS, rows/s at batch 1 and max batch.
//!
//! Usage: `bench_load [--max-batch N] [--seconds S] [--extra-mib N] [--fixtures DIR] [--model PATH]...`. Without
//! `--model` it measures a generated 100 MB f32 MLP (25 M parameters, Gemm and MatMul layers, symbolic batch), a
//! generated CNN and two fixtures (`dense`, `pinned_batch_cnn`, from `--fixtures`, default the repository's
//! `tests/fixtures`). `--max-batch` defaults to `tractor serve --max-batch-size`'s default (32); `--extra-mib`
//! builds the runner with `runner_with_extra_weights` (default: `runner`).
//! Each model is measured in a child process (this binary with `--one PATH`), so RSS and its high-water mark are
//! that model's alone. "RSS after start" is measured as `tractor serve` leaves it: runner built, model dropped,
//! one batch-1 warm-up run. Prints a markdown table and writes it to `$CARGO_TARGET_DIR/bench-load/report.md`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use serde_json::{Value, json};
use tract_onnx::pb;
use tractor_model::{Datatype, DatatypeExt, Tensor};

/// `tractor serve --max-batch-size`'s default.
const SERVE_MAX_BATCH: usize = 32;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut max_batch = SERVE_MAX_BATCH;
    let mut seconds = 1.5f64;
    let mut models = Vec::new();
    let mut one = None;
    let mut extra_mib: Option<usize> = None;
    let mut fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-batch" => max_batch = args.next().context("--max-batch N")?.parse()?,
            "--seconds" => seconds = args.next().context("--seconds S")?.parse()?,
            "--model" => models.push(PathBuf::from(args.next().context("--model PATH")?)),
            "--one" => one = Some(PathBuf::from(args.next().context("--one PATH")?)),
            "--extra-mib" => extra_mib = Some(args.next().context("--extra-mib N")?.parse()?),
            "--fixtures" => fixtures = PathBuf::from(args.next().context("--fixtures DIR")?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    if let Some(path) = one {
        println!("{}", measure(&path, max_batch, seconds, extra_mib)?);
        return Ok(());
    }
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    if models.is_empty() {
        let mlp = dir.join("mlp_100mb.onnx");
        if !mlp.exists() {
            write_model(&mlp, big_mlp())?;
        }
        let cnn = dir.join("cnn_small.onnx");
        if !cnn.exists() {
            write_model(&cnn, small_cnn())?;
        }
        models = vec![
            mlp,
            cnn,
            fixtures.join("dense.onnx"),
            fixtures.join("pinned_batch_cnn.onnx"),
        ];
    }
    let mut rows = Vec::new();
    for model in &models {
        let mut child = std::process::Command::new(std::env::current_exe()?);
        if let Some(mib) = extra_mib {
            child.args(["--extra-mib", &mib.to_string()]);
        }
        let out = child
            .args(["--one", &model.to_string_lossy()])
            .args(["--max-batch", &max_batch.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout)?;
        eprintln!("{line}");
        rows.push(line);
    }
    let report = table(&rows, max_batch);
    print!("{report}");
    let path = dir.join("report.md");
    std::fs::write(&path, &report)?;
    eprintln!("written to {}", path.display());
    Ok(())
}

/// `$CARGO_TARGET_DIR/bench-load`, else next to the `target` folder this example runs from.
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            // target/release/examples/bench_load
            Some(exe.parent()?.parent()?.parent()?.to_owned())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench-load")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn table(rows: &[Value], max_batch: usize) -> String {
    let mut text = format!(
        "| model | MiB | load s | build s | buckets | RSS load | HWM load | RSS start | HWM start | rows/s b1 | rows/s b{max_batch} | RSS after runs |\n\
         |---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for row in rows {
        text += &format!(
            "| {} | {:.1} | {:.3} | {:.3} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            row["model"].as_str().unwrap_or("?"),
            row["artifact_mib"].as_f64().unwrap_or(0.0),
            row["load_s"].as_f64().unwrap_or(0.0),
            row["build_s"].as_f64().unwrap_or(0.0),
            row["buckets"],
            row["rss_load_mib"].as_f64().unwrap_or(0.0),
            row["hwm_load_mib"].as_f64().unwrap_or(0.0),
            row["rss_start_mib"].as_f64().unwrap_or(0.0),
            row["hwm_start_mib"].as_f64().unwrap_or(0.0),
            row["rows_s_1"].as_f64().unwrap_or(0.0),
            row["rows_s_max"].as_f64().unwrap_or(0.0),
            row["rss_runs_mib"].as_f64().unwrap_or(0.0),
        );
    }
    text += "\nRSS/HWM in MiB (VmRSS/VmHWM). start = runner built, model dropped, one batch-1 warm-up run (as `tractor serve`).\n";
    let phases: Vec<String> = rows
        .iter()
        .filter(|row| row["phases"].is_object())
        .map(|row| {
            format!(
                "- {}: {}",
                row["model"].as_str().unwrap_or("?"),
                row["phases"]
            )
        })
        .collect();
    if !phases.is_empty() {
        text += "\nPhases (seconds):\n";
        text += &phases.join("\n");
        text += "\n";
    }
    text
}

/// VmRSS and VmHWM of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One model, in this process: everything the table shows, as a JSON object.
fn measure(
    path: &Path,
    max_batch: usize,
    seconds: f64,
    extra_mib: Option<usize>,
) -> anyhow::Result<Value> {
    let artifact = std::fs::metadata(path)?.len();
    let start = Instant::now();
    let model = tractor_model::load(path, None)?;
    let load_s = start.elapsed().as_secs_f64();
    let (rss_load, hwm_load) = memory();
    let start = Instant::now();
    let runner = match extra_mib {
        Some(mib) => model.runner_with_extra_weights(max_batch, mib << 20)?,
        None => model.runner(max_batch)?,
    };
    let build_s = start.elapsed().as_secs_f64();
    let signature = model.signature().clone();
    let phases = phases(&model, &runner);
    drop(model);
    let inputs = |batch: usize| -> anyhow::Result<Vec<Tensor>> {
        signature
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> = spec
                    .shape
                    .iter()
                    .map(|d| if *d < 0 { batch } else { *d as usize })
                    .collect();
                let len: usize = shape.iter().product();
                Ok(if spec.datatype == Datatype::Fp32 {
                    let data: Vec<f32> = (0..len)
                        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                        .collect();
                    Tensor::from_shape(&shape, &data)?
                } else {
                    Tensor::zero_dt(spec.datatype.datum(), &shape)?
                })
            })
            .collect()
    };
    // As `tractor serve` warms up: one batch-1 run through a session it then drops.
    runner.session().run(inputs(1)?)?;
    let (rss_start, hwm_start) = memory();
    let mut session = runner.session();
    let mut throughput = |batch: usize| -> anyhow::Result<f64> {
        let input = inputs(batch)?;
        session.run(input.clone())?;
        let budget = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut runs = 0usize;
        while runs < 3 || start.elapsed() < budget {
            session.run(input.clone())?;
            runs += 1;
        }
        Ok((runs * batch) as f64 / start.elapsed().as_secs_f64())
    };
    let batchable = runner.batchable();
    let rows_s_1 = throughput(1)?;
    let rows_s_max = if batchable {
        throughput(runner.max_batch())?
    } else {
        0.0
    };
    let (rss_runs, _) = memory();
    Ok(json!({
        "model": path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        "artifact_mib": mib(artifact),
        "load_s": load_s,
        "build_s": build_s,
        "buckets": runner.buckets().iter().map(usize::to_string).collect::<Vec<_>>().join(","),
        "rss_load_mib": mib(rss_load),
        "hwm_load_mib": mib(hwm_load),
        "rss_start_mib": mib(rss_start),
        "hwm_start_mib": mib(hwm_start),
        "rows_s_1": rows_s_1,
        "rows_s_max": rows_s_max,
        "rss_runs_mib": mib(rss_runs),
        "phases": phases,
    }))
}

/// The per-phase breakdown tractor-model reports: load phases, then each bucket's optimization (`*` = left out).
fn phases(_model: &tractor_model::Model, runner: &tractor_model::Runner) -> Value {
    let timings = runner.timings();
    let mut phases: serde_json::Map<String, Value> = timings
        .phases()
        .iter()
        .map(|(name, took)| ((*name).to_owned(), json!(round(took.as_secs_f64()))))
        .collect();
    let plans: Vec<String> = timings
        .plans
        .iter()
        .map(|plan| {
            format!(
                "{}{}:{:.3}",
                plan.bucket,
                if plan.kept { "" } else { "*" },
                plan.optimize.as_secs_f64()
            )
        })
        .collect();
    phases.insert("plans".to_owned(), json!(plans.join(" ")));
    Value::Object(phases)
}

fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

// ---- generated models -------------------------------------------------------------------------------------------

/// A deterministic xorshift stream in [-scale, scale).
fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn initializer(name: &str, dims: &[usize], seed: u64) -> pb::TensorProto {
    let len = dims.iter().product();
    // He-like scale on the fan-in keeps activations bounded through the layers.
    let fan_in = dims
        .get(1..)
        .map_or(1, |rest| rest.iter().product::<usize>().max(1));
    let data = values(len, seed, (3.0 / fan_in as f32).sqrt());
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_owned(),
        name: output.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        attribute,
        ..Default::default()
    }
}

/// A float tensor value with the first axis the symbol `N`.
fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let dim = std::iter::once(Dim::DimParam("N".to_owned()))
        .chain(dims.iter().map(|d| Dim::DimValue(*d as i64)))
        .map(|value| Dimension {
            value: Some(value),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(name: &str, graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        producer_name: "tractor bench_load".to_owned(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: name.to_owned(),
            ..graph
        }),
        ..Default::default()
    }
}

fn write_model(path: &Path, proto: pb::ModelProto) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, proto.encode_to_vec())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// 1024 → 4096 → 4096 → 1024 → 10, ReLU between, softmax on top: 25.2 M f32 parameters (100.7 MB). The first two
/// layers are Gemm with transB=1 (as torch exports Linear), the others MatMul + Add (as the dense fixture).
fn big_mlp() -> pb::ModelProto {
    let dims = [1024usize, 4096, 4096, 1024, 10];
    let mut graph = pb::GraphProto::default();
    let mut prev = "input".to_owned();
    for (layer, pair) in dims.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let (weight, bias, output) = (
            format!("w{layer}"),
            format!("b{layer}"),
            format!("z{layer}"),
        );
        if layer < 2 {
            graph
                .initializer
                .push(initializer(&weight, &[fan_out, fan_in], layer as u64));
            graph
                .initializer
                .push(initializer(&bias, &[fan_out], 100 + layer as u64));
            graph.node.push(node(
                "Gemm",
                &[&prev, &weight, &bias],
                &output,
                vec![int_attr("transB", 1)],
            ));
        } else {
            graph
                .initializer
                .push(initializer(&weight, &[fan_in, fan_out], layer as u64));
            graph
                .initializer
                .push(initializer(&bias, &[fan_out], 100 + layer as u64));
            let mm = format!("mm{layer}");
            graph
                .node
                .push(node("MatMul", &[&prev, &weight], &mm, vec![]));
            graph.node.push(node("Add", &[&mm, &bias], &output, vec![]));
        }
        prev = output;
        if layer + 2 < dims.len() {
            let hidden = format!("h{layer}");
            graph.node.push(node("Relu", &[&prev], &hidden, vec![]));
            prev = hidden;
        }
    }
    graph.node.push(node(
        "Softmax",
        &[&prev],
        "probabilities",
        vec![int_attr("axis", -1)],
    ));
    graph.input.push(value_info("input", &[dims[0]]));
    graph
        .output
        .push(value_info("probabilities", &[dims[dims.len() - 1]]));
    model("mlp_100mb", graph)
}

/// 3×32×32 → conv 32 → conv 64 /2 → conv 64 /2 → global average pool → 10 classes: about 15 M multiply-adds a
/// row, so a plan that is slower on convolutions shows.
fn small_cnn() -> pb::ModelProto {
    let mut graph = pb::GraphProto::default();
    let mut prev = "input".to_owned();
    for (layer, (cin, cout, stride)) in [(3usize, 32usize, 1i64), (32, 64, 2), (64, 64, 2)]
        .into_iter()
        .enumerate()
    {
        let (weight, bias, conv, relu) = (
            format!("cw{layer}"),
            format!("cb{layer}"),
            format!("conv{layer}"),
            format!("relu{layer}"),
        );
        graph
            .initializer
            .push(initializer(&weight, &[cout, cin, 3, 3], 10 + layer as u64));
        graph
            .initializer
            .push(initializer(&bias, &[cout], 20 + layer as u64));
        graph.node.push(node(
            "Conv",
            &[&prev, &weight, &bias],
            &conv,
            vec![
                ints_attr("pads", &[1, 1, 1, 1]),
                ints_attr("strides", &[stride, stride]),
            ],
        ));
        graph.node.push(node("Relu", &[&conv], &relu, vec![]));
        prev = relu;
    }
    graph
        .node
        .push(node("GlobalAveragePool", &[&prev], "pool", vec![]));
    graph.node.push(node(
        "Flatten",
        &["pool"],
        "flat",
        vec![int_attr("axis", 1)],
    ));
    graph.initializer.push(initializer("fc_w", &[10, 64], 30));
    graph.initializer.push(initializer("fc_b", &[10], 31));
    graph.node.push(node(
        "Gemm",
        &["flat", "fc_w", "fc_b"],
        "logits",
        vec![int_attr("transB", 1)],
    ));
    graph.node.push(node(
        "Softmax",
        &["logits"],
        "probabilities",
        vec![int_attr("axis", 1)],
    ));
    graph.input.push(value_info("input", &[3, 32, 32]));
    graph.output.push(value_info("probabilities", &[10]));
    model("cnn_small", graph)
}
