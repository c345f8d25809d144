//! Latency of tractor's loader and runner on one model at given batch sizes, as JSON lines for
//! `make bench-optimize` (scripts/bench-optimize.sh compares them with onnxruntime's in the same run).
//!
//! Usage: `bench_trees [--threads N] MODEL.onnx FEATURES BATCH...`; `--threads` sets the inference thread budget
//! (`tractor serve --threads`; default: the available cores). Rows are drawn from a fixed-seed generator in [0, 1) scaled
//! per column by `--scale` (default 1), which only matters for which branches the trees take.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use tractor_model::Tensor;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--threads") {
        anyhow::ensure!(args.len() > 1, "--threads needs a number");
        tractor_model::set_threads(args[1].parse()?);
        args.drain(..2);
    }
    anyhow::ensure!(
        args.len() >= 3,
        "usage: bench_trees [--threads N] MODEL.onnx FEATURES BATCH..."
    );
    let path = std::path::PathBuf::from(&args[0]);
    let features: usize = args[1].parse()?;
    let batches: Vec<usize> = args[2..]
        .iter()
        .map(|arg| arg.parse())
        .collect::<Result<_, _>>()?;
    let x_path = path.with_extension("x.f32");
    // The same rows onnxruntime is timed on, when the script left them next to the model.
    let pool: Vec<f32> = match std::fs::read(&x_path) {
        Ok(bytes) => bytes
            .chunks_exact(4)
            .map(|word| f32::from_le_bytes([word[0], word[1], word[2], word[3]]))
            .collect(),
        Err(_) => {
            let mut state = 0x2545_f491_4f6c_dd1du64;
            (0..features * 1024)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect()
        }
    };
    let model = tractor_model::load(&path, None)?;
    let max = batches.iter().copied().max().unwrap_or(1);
    let runner = model.runner(max)?;
    let mut session = runner.session();
    for batch in batches {
        let rows = pool.len() / features;
        let data: Vec<f32> = (0..batch)
            .flat_map(|row| pool[(row % rows) * features..(row % rows + 1) * features].to_vec())
            .collect();
        let input = Tensor::from_shape(&[batch, features], &data)?;
        session.run(vec![input.clone()])?;
        let mut times = Vec::new();
        let started = Instant::now();
        while times.len() < 20
            || (started.elapsed() < Duration::from_secs(2) && times.len() < 20000)
        {
            let run_start = Instant::now();
            session.run(vec![input.clone()])?;
            times.push(run_start.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "{{\"model\":\"{}\",\"batch\":{batch},\"threads\":{},\"median_us\":{:.2},\"runs\":{}}}",
            path.file_stem().unwrap_or_default().to_string_lossy(),
            tractor_model::threads(),
            median.as_secs_f64() * 1e6,
            times.len()
        );
    }
    Ok(())
}
