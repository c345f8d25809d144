//! `make bench-serve`: raw tract in-process versus `tractor serve` over loopback (REST JSON, REST
//! binary, gRPC) at batch 1, concurrency 1, 8 and 64, dynamic batching on and off, with RSS.
//!
//! Writes a Markdown report and a JSON file of the same figures. Machines are noisy, so it reports
//! ratios measured within one run and asserts nothing about time.
//!
//! `cargo run --release -p tractor-serve --example bench_serve -- --bin target/release/tractor --out DIR`

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tractor_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use tractor_serve::grpc::proto::{ModelInferRequest, model_infer_request::InferInputTensor};

const CONCURRENCY: [usize; 3] = [1, 8, 64];

struct Args {
    bin: PathBuf,
    out: PathBuf,
    seconds: f64,
    models: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/tractor"),
        out: PathBuf::from("target/bench-serve"),
        seconds: 2.0,
        models: vec!["digits_mlp".into(), "dense".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--bin" => a.bin = v.into(),
            "--out" => a.out = v.into(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            "--models" => a.models = v.split(',').map(str::to_owned).collect(),
            _ => panic!("unknown flag {k}"),
        }
    }
    a
}

#[derive(Debug, Clone, serde::Serialize)]
struct Cell {
    p50_us: f64,
    p99_us: f64,
    throughput_rows_per_s: f64,
    requests: usize,
    errors: usize,
}

fn summarize(mut lat: Vec<Duration>, rows: usize, elapsed: Duration, errors: usize) -> Cell {
    lat.sort();
    let q = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
        }
    };
    Cell {
        p50_us: q(0.5),
        p99_us: q(0.99),
        throughput_rows_per_s: (lat.len() * rows) as f64 / elapsed.as_secs_f64(),
        requests: lat.len(),
        errors,
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn first_rows(model: &str, rows: usize) -> (String, usize, Vec<f32>) {
    let split: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{model}_test.json"))).unwrap(),
    )
    .unwrap();
    let f = split["features"].as_u64().unwrap() as usize;
    let x: Vec<f32> = split["x"]
        .as_array()
        .unwrap()
        .iter()
        .take(f * rows)
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let x = x.iter().cycle().take(f * rows).copied().collect();
    (split["input"].as_str().unwrap().to_owned(), f, x)
}

/// Raw tract: the same runner the server uses, called directly on this thread.
fn raw(model: &str, seconds: f64) -> (Cell, Vec<(usize, f64)>) {
    let m = tractor_model::load(&fixtures().join(format!("{model}.onnx")), None).unwrap();
    let runner = m.runner(64).unwrap();
    let mut session = runner.session();
    let (_, f, x) = first_rows(model, 64);
    let input =
        |rows: usize| tractor_model::Tensor::from_shape(&[rows, f], &x[..rows * f]).unwrap();
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let t = input(1);
        let s = Instant::now();
        session.run(vec![t]).unwrap();
        lat.push(s.elapsed());
    }
    let one = summarize(lat, 1, start.elapsed(), 0);
    let mut batched = Vec::new();
    for rows in [8, 32, 64] {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed().as_secs_f64() < seconds / 2.0 {
            session.run(vec![input(rows)]).unwrap();
            n += rows;
        }
        batched.push((rows, n as f64 / start.elapsed().as_secs_f64()));
    }
    (one, batched)
}

struct Server {
    child: Child,
    http: String,
    grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(bin: &Path, model: &str, max_batch: usize) -> Server {
    let (hp, gp) = (port(), port());
    let child = Command::new(bin)
        .args([
            "serve",
            "--name",
            "bench",
            "--max-batch-size",
            &max_batch.to_string(),
        ])
        .arg("--model")
        .arg(fixtures().join(format!("{model}.onnx")))
        .args([
            "--http-addr",
            &format!("127.0.0.1:{hp}"),
            "--grpc-addr",
            &format!("127.0.0.1:{gp}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server {
        child,
        http: format!("http://127.0.0.1:{hp}"),
        grpc: format!("http://127.0.0.1:{gp}"),
    };
    assert!(wait_ready(&s.http), "server did not become ready");
    s
}

/// Poll readiness for up to a minute.
fn wait_ready(base: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        for _ in 0..1200 {
            if let Ok(r) = c.get(format!("{base}/v2/health/ready")).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    })
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Clone, Copy, Debug)]
enum Proto {
    RestJson,
    RestBinary,
    Grpc,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::RestJson => "rest_json",
            Proto::RestBinary => "rest_binary",
            Proto::Grpc => "grpc",
        }
    }
}

async fn drive(
    proto: Proto,
    server: &Server,
    model: &str,
    concurrency: usize,
    seconds: f64,
) -> Cell {
    let (input, features, row) = first_rows(model, 1);
    let json_body = Arc::new(
        serde_json::to_vec(
            &json!({"inputs": [{"name": input, "shape": [1, features], "datatype": "FP32", "data": row}]}),
        )
        .unwrap(),
    );
    let header = serde_json::to_vec(&json!({"inputs": [{"name": input, "shape": [1, features], "datatype": "FP32", "parameters": {"binary_data_size": features * 4}}], "parameters": {"binary_data_output": true}})).unwrap();
    let header_len = header.len();
    let mut bin = header;
    for value in &row {
        bin.extend_from_slice(&value.to_le_bytes());
    }
    let bin_body = Arc::new(bin);
    let raw: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
    let grpc_req = ModelInferRequest {
        model_name: "bench".into(),
        inputs: vec![InferInputTensor {
            name: input.clone(),
            datatype: "FP32".into(),
            shape: vec![1, features as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    let url = format!("{}/v2/models/bench/infer", server.http);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    // Warm the connections.
    let _ = http.post(&url).body(json_body.to_vec()).send().await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, json_body, bin_body, grpc_req) = (
                http.clone(),
                url.clone(),
                json_body.clone(),
                bin_body.clone(),
                grpc_req.clone(),
            );
            let mut grpc = GrpcInferenceServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ok = match proto {
                        Proto::RestJson => {
                            match http.post(&url).body(json_body.to_vec()).send().await {
                                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                                Err(_) => false,
                            }
                        }
                        Proto::RestBinary => match http
                            .post(&url)
                            .header("Inference-Header-Content-Length", header_len)
                            .body(bin_body.to_vec())
                            .send()
                            .await
                        {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        },
                        Proto::Grpc => grpc.model_infer(grpc_req.clone()).await.is_ok(),
                    };
                    if ok {
                        lat.push(sent.elapsed())
                    } else {
                        errors += 1
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (task_lat, task_errors) = task.await.unwrap();
        lat.extend(task_lat);
        errors += task_errors;
    }
    summarize(lat, 1, start.elapsed(), errors)
}

fn main() {
    let args = args();
    std::fs::create_dir_all(&args.out).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = String::from("# tractor serve benchmark\n\n");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    report += &format!(
        "Machine: {cores} cores; client, server and raw tract share them. Batch 1 requests; latencies in µs; throughput in rows/s. Each cell runs {}s.\n\n",
        args.seconds
    );
    let mut all = serde_json::Map::new();
    for model in &args.models {
        let (raw1, raw_batched) = raw(model, args.seconds);
        let raw_best = raw_batched.iter().map(|(_, t)| *t).fold(0.0, f64::max);
        report += &format!(
            "## {model}\n\nRaw tract in-process: batch 1 p50 {:.1} µs, p99 {:.1} µs, {:.0} rows/s; batched: {}\n\n",
            raw1.p50_us,
            raw1.p99_us,
            raw1.throughput_rows_per_s,
            raw_batched
                .iter()
                .map(|(b, t)| format!("batch {b} {t:.0} rows/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        report += "| batching | protocol | concurrency | p50 µs | p99 µs | rows/s | errors |\n|---|---|---|---|---|---|---|\n";
        let mut cells = serde_json::Map::new();
        let mut rss = Vec::new();
        let mut best_batched_c64: f64 = 0.0;
        let mut rest_c1_p50 = f64::NAN;
        for (label, max_batch) in [("on", 64), ("off", 1)] {
            let server = start(&args.bin, model, max_batch);
            let (idle_rss, _) = rss_kib(server.child.id());
            for proto in [Proto::RestJson, Proto::RestBinary, Proto::Grpc] {
                for concurrency in CONCURRENCY {
                    let cell = rt.block_on(drive(proto, &server, model, concurrency, args.seconds));
                    report += &format!(
                        "| {label} | {} | {concurrency} | {:.1} | {:.1} | {:.0} | {} |\n",
                        proto.name(),
                        cell.p50_us,
                        cell.p99_us,
                        cell.throughput_rows_per_s,
                        cell.errors
                    );
                    if label == "on" && concurrency == 64 {
                        best_batched_c64 = best_batched_c64.max(cell.throughput_rows_per_s);
                    }
                    if label == "on" && concurrency == 1 && matches!(proto, Proto::RestJson) {
                        rest_c1_p50 = cell.p50_us;
                    }
                    cells.insert(
                        format!("batching_{label}/{}/c{concurrency}", proto.name()),
                        serde_json::to_value(&cell).unwrap(),
                    );
                }
            }
            let (_, peak) = rss_kib(server.child.id());
            rss.push((label, idle_rss, peak));
        }
        report += "\n";
        for (label, idle, peak) in &rss {
            report += &format!(
                "RSS with batching {label}: {:.1} MiB after start, {:.1} MiB peak.\n",
                *idle as f64 / 1024.0,
                *peak as f64 / 1024.0
            );
        }
        let overhead = rest_c1_p50 - raw1.p50_us;
        let ratio = best_batched_c64 / raw_best;
        report += &format!(
            "\nREST JSON p50 overhead over raw tract at batch 1: {overhead:.1} µs (target ≤ 100 µs). Best served throughput at concurrency 64 with batching: {best_batched_c64:.0} rows/s = {:.1} % of raw tract's best batched {raw_best:.0} rows/s (target ≥ 90 %).\n\n",
            ratio * 100.0
        );
        all.insert(model.clone(), json!({"raw_batch1": raw1, "raw_batched": raw_batched, "served": cells, "rss_kib": rss, "rest_p50_overhead_us": overhead, "c64_batched_vs_raw_best": ratio}));
    }
    std::fs::write(args.out.join("report.md"), &report).unwrap();
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&Value::Object(all)).unwrap(),
    )
    .unwrap();
    print!("{report}");
}
