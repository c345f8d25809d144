//! This crate's int8 `linear` against tract's f32 matmul on the same shapes, in one run: one 2560×2560 layer (+ bias)
//! and the 4-layer dense net (+ bias + ReLU) of `int8_probe`, at batch 1 and 32, single-threaded both. Prints median
//! times, the spread of the per-round medians, the throughput ratio and the largest output difference.
//!
//! Usage: `cargo run --release -p tractor-int8 --features bench --example bench_linear [WIDTH] [ROUNDS]`
//! (pin it with `taskset -c 1` on a shared machine).

use std::time::{Duration, Instant};

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::math::{add, max};
use tractor_int8::{Kernel, PackedWeights, Scheme, linear};

/// Largest weight magnitude, as in `int8_probe`.
const WEIGHT_RANGE: f32 = 0.03;
/// Timing per configuration and round: enough runs for a median at batch 32.
const BUDGET: Duration = Duration::from_millis(700);

/// Uniform weights in ±[`WEIGHT_RANGE`], `k × n` (tract's `bk,kn->bn`), from the same xorshift stream as
/// `int8_probe`.
fn weights(width: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..width * width)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * WEIGHT_RANGE
        })
        .collect()
}

/// The same weights `n × k`, one row per output channel, as [`PackedWeights::pack`] takes them.
fn transpose(kn: &[f32], width: usize) -> Vec<f32> {
    let mut nk = vec![0.0; width * width];
    for k in 0..width {
        for n in 0..width {
            nk[n * width + k] = kn[k * width + n];
        }
    }
    nk
}

/// tract's f32 net: `layers` × (matmul against a constant, + bias, ReLU unless it is a single layer), optimized for
/// `batch` rows and made runnable.
fn tract_plan(
    layers: &[Vec<f32>],
    bias: &[f32],
    width: usize,
    batch: usize,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = TypedModel::default();
    let mut wire = model.add_source("x", f32::fact([batch, width]))?;
    for (layer, kernel) in layers.iter().enumerate() {
        let name = format!("l{layer}");
        let weights = model.add_const(
            format!("{name}.w"),
            Tensor::from_shape(&[width, width], kernel)?,
        )?;
        wire = model.wire_node(
            format!("{name}.mm"),
            EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
            &[wire, weights],
        )?[0];
        let bias = model.add_const(format!("{name}.b"), Tensor::from_shape(&[1, width], bias)?)?;
        wire = model.wire_node(format!("{name}.bias"), add(), &[wire, bias])?[0];
        if layers.len() > 1 {
            let zero = model.add_const(format!("{name}.zero"), tensor2(&[[0f32]]))?;
            wire = model.wire_node(format!("{name}.relu"), max(), &[wire, zero])?[0];
        }
    }
    model.select_output_outlets(&[wire])?;
    let optimized = model.into_optimized()?;
    let mut kernels = std::collections::BTreeSet::new();
    for node in optimized.nodes() {
        for line in node.op.info()? {
            if let Some(at) = line.find(" with [") {
                kernels.insert(line[at + 7..].trim_end_matches(']').to_owned());
            }
        }
    }
    eprintln!("  tract kernels at batch {batch}: {kernels:?}");
    optimized.into_runnable()
}

/// This crate's net: `linear` per layer, ReLU between layers (not after a single layer).
fn int8_net(
    layers: &[PackedWeights],
    bias: &[f32],
    x: &[f32],
    batch: usize,
    width: usize,
) -> TractResult<Vec<f32>> {
    let mut input = x.to_vec();
    let mut output = vec![0.0; batch * width];
    for w in layers {
        linear(&input, batch, w, Some(bias), &mut output, Kernel::detect())?;
        if layers.len() > 1 {
            output.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        std::mem::swap(&mut input, &mut output);
    }
    Ok(input)
}

/// Median time of `run` over [`BUDGET`] (at least 5 runs).
fn median(mut run: impl FnMut() -> TractResult<()>) -> TractResult<Duration> {
    let mut times = vec![];
    let started = Instant::now();
    while times.len() < 5 || started.elapsed() < BUDGET {
        let at = Instant::now();
        run()?;
        times.push(at.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Median of the round medians, the best (smallest) round median, and their spread (max − min) relative to the
/// median. Noise from other processes only adds time, so the best round is the other honest estimate.
fn summarize(mut rounds: Vec<Duration>) -> (Duration, Duration, f64) {
    rounds.sort();
    let mid = rounds[rounds.len() / 2];
    let spread = (rounds[rounds.len() - 1] - rounds[0]).as_secs_f64() / mid.as_secs_f64();
    (mid, rounds[0], spread)
}

fn largest_difference(a: &[f32], b: &[f32]) -> (f32, f32) {
    let diff = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let magnitude = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    (diff, magnitude)
}

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let width: usize = args.next().map_or(Ok(2560), |arg| arg.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |arg| arg.parse())?;
    println!(
        "int8 linear vs tract f32, {width}×{width}, kernel {:?}, {rounds} rounds of {BUDGET:?} each",
        Kernel::detect()
    );
    let kn: Vec<Vec<f32>> = (0..4).map(|layer| weights(width, layer + 7)).collect();
    let bias = vec![0.01f32; width];
    let schemes = [Scheme::I8, Scheme::I7, Scheme::U7];
    let packed: Vec<Vec<PackedWeights>> = schemes
        .iter()
        .map(|&scheme| {
            kn.iter()
                .map(|kn| PackedWeights::pack(&transpose(kn, width), width, width, scheme))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;
    println!(
        "| shape | batch | tract f32 | {} |",
        schemes
            .map(|s| format!("int8 {s:?} (ratio, max diff / max abs y)"))
            .join(" | ")
    );
    for (label, layers) in [("1 layer", 1), ("4 layers + ReLU", 4)] {
        for batch in [1, 32] {
            let plan = tract_plan(&kn[..layers], &bias, width, batch)?;
            let activations: Vec<f32> = (0..batch * width)
                .map(|ix| ((ix % 97) as f32 / 97.0) - 0.3)
                .collect();
            let input = Tensor::from_shape(&[batch, width], &activations)?;
            let reference = plan.run(tvec!(input.clone().into_tvalue()))?[0]
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect::<Vec<f32>>();
            let mut tract_rounds = vec![];
            let mut int8_rounds = vec![vec![]; schemes.len()];
            // Rounds alternate the contenders so that a noisy neighbour hits them alike.
            for _ in 0..rounds {
                tract_rounds.push(median(|| {
                    plan.run(tvec!(input.clone().into_tvalue()))?;
                    Ok(())
                })?);
                for (times, layers_packed) in int8_rounds.iter_mut().zip(&packed) {
                    let net = &layers_packed[..layers];
                    times.push(median(|| {
                        int8_net(net, &bias, &activations, batch, width).map(drop)
                    })?);
                }
            }
            let (tract_time, tract_best, tract_spread) = summarize(tract_rounds);
            let mut cells = vec![];
            for (times, layers_packed) in int8_rounds.into_iter().zip(&packed) {
                let (time, best, spread) = summarize(times);
                let out = int8_net(&layers_packed[..layers], &bias, &activations, batch, width)?;
                let (diff, magnitude) = largest_difference(&out, &reference);
                cells.push(format!(
                    "{:.3} ms ±{:.0}% ({:.2}×, best {:.2}×, {diff:.4} / {magnitude:.3})",
                    time.as_secs_f64() * 1e3,
                    spread * 100.0,
                    tract_time.as_secs_f64() / time.as_secs_f64(),
                    tract_best.as_secs_f64() / best.as_secs_f64()
                ));
            }
            println!(
                "| {label} | {batch} | {:.3} ms ±{:.0}% | {} |",
                tract_time.as_secs_f64() * 1e3,
                tract_spread * 100.0,
                cells.join(" | ")
            );
        }
    }
    println!(
        "(±: spread of the per-round medians, max − min, relative to their median; ratio: tract time / int8 time on the \
         median rounds, best: on the fastest rounds)"
    );
    Ok(())
}
