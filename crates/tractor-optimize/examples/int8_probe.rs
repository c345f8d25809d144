//! tract's own integer path against f32 on a dense net (4 × 2560×2560 by default), batch 1 and 32: the evidence
//! behind int8 running on `tractor-int8`'s kernel rather than tract's. Prints the kernel tract picks for each matmul, the median times and the
//! largest output difference. Usage: `int8_probe [WIDTH]`.
//!
//! The int8 net is what an integer rewrite of each layer would be: activations quantized to i8
//! (`QuantizeLinearI8`), an `EinSum` over i8 × i8 accumulating in i32 (tract-linalg's i8i8 packing), the i32
//! result cast to f32 and scaled per output channel.

use std::time::{Duration, Instant};

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::cast::cast;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::math::{add, max, mul};
use tract_nnef::tract_core::ops::quant::quantize_linear_i8;

/// Hidden layers of the net.
const LAYERS: usize = 4;
/// Largest weight magnitude (the weights are uniform in ±this): the int8 weight scale is this / 127.
const WEIGHT_RANGE: f32 = 0.03;
/// Scale of the quantized activations (largest activation / 127 for the probe's inputs).
const ACTIVATION_SCALE: f32 = 0.05;
/// Timing per configuration: enough runs for a median at batch 32.
const BUDGET: Duration = Duration::from_secs(1);

/// Uniform weights in ±[`WEIGHT_RANGE`], from a xorshift stream (the same every run).
fn weights(width: usize, seed: u64) -> TractResult<Tensor> {
    let mut state = seed | 1;
    let values: Vec<f32> = (0..width * width)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * WEIGHT_RANGE
        })
        .collect();
    Tensor::from_shape(&[width, width], &values)
}

/// The net, f32 or with every matmul on tract's integer path.
fn build(width: usize, int8: bool) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let batch = model.symbols.sym("N");
    let mut wire = model.add_source("x", f32::fact([batch.to_dim(), width.to_dim()]))?;
    for layer in 0..LAYERS {
        let kernel = weights(width, layer as u64 + 7)?;
        let name = format!("l{layer}");
        if int8 {
            let weight_scale = WEIGHT_RANGE / 127.0;
            let quantized = kernel
                .to_plain_array_view::<f32>()?
                .mapv(|value| (value / weight_scale).round().clamp(-127.0, 127.0) as i8);
            let weights = model.add_const(format!("{name}.w"), quantized.into_tensor())?;
            let activations = model.wire_node(
                format!("{name}.qx"),
                quantize_linear_i8(1.0 / ACTIVATION_SCALE, 0),
                &[wire],
            )?[0];
            let sums = model.wire_node(
                format!("{name}.mm"),
                EinSum::new("bk,kn->bn".parse()?, i32::datum_type()),
                &[activations, weights],
            )?[0];
            let sums = model.wire_node(format!("{name}.f"), cast(f32::datum_type()), &[sums])?[0];
            let scale = model.add_const(
                format!("{name}.s"),
                Tensor::from_shape(&[1, width], &vec![ACTIVATION_SCALE * weight_scale; width])?,
            )?;
            wire = model.wire_node(format!("{name}.deq"), mul(), &[sums, scale])?[0];
        } else {
            let weights = model.add_const(format!("{name}.w"), kernel)?;
            wire = model.wire_node(
                format!("{name}.mm"),
                EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
                &[wire, weights],
            )?[0];
        }
        let bias = model.add_const(
            format!("{name}.b"),
            Tensor::from_shape(&[1, width], &vec![0.01f32; width])?,
        )?;
        wire = model.wire_node(format!("{name}.bias"), add(), &[wire, bias])?[0];
        let zero = model.add_const(format!("{name}.zero"), tensor2(&[[0f32]]))?;
        wire = model.wire_node(format!("{name}.relu"), max(), &[wire, zero])?[0];
    }
    model.select_output_outlets(&[wire])?;
    Ok(model)
}

/// Optimize for `batch`, print the kernels tract chose, and return the median run and the output.
fn time(model: &TypedModel, batch: usize, width: usize) -> TractResult<(Duration, Tensor)> {
    let symbol = model.symbols.sym("N");
    let fixed = model.set_symbols(&HashMap::from([(symbol, TDim::Val(batch as i64))]))?;
    let optimized = fixed.into_optimized()?;
    let mut kernels = std::collections::BTreeSet::new();
    for node in optimized.nodes() {
        for line in node.op.info()? {
            if let Some(at) = line.find(" with [") {
                kernels.insert(line[at + 7..].trim_end_matches(']').to_owned());
            }
        }
    }
    eprintln!("  batch {batch}: kernels {kernels:?}");
    let plan = optimized.into_runnable()?;
    let values: Vec<f32> = (0..batch * width)
        .map(|ix| ((ix % 97) as f32 / 97.0) - 0.3)
        .collect();
    let input = Tensor::from_shape(&[batch, width], &values)?;
    let output = plan.run(tvec!(input.clone().into_tvalue()))?[0]
        .clone()
        .into_tensor();
    let mut times = vec![];
    let started = Instant::now();
    while times.len() < 5 || started.elapsed() < BUDGET {
        let run = Instant::now();
        plan.run(tvec!(input.clone().into_tvalue()))?;
        times.push(run.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], output))
}

fn main() -> TractResult<()> {
    let width: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 2560,
    };
    println!("tract int8 probe: {LAYERS} × {width}×{width} dense layers");
    let float = build(width, false)?;
    let integer = build(width, true)?;
    for batch in [1, 32] {
        eprintln!("f32:");
        let (float_time, float_out) = time(&float, batch, width)?;
        eprintln!("int8:");
        let (int_time, int_out) = time(&integer, batch, width)?;
        let float_out = float_out.to_plain_array_view::<f32>()?.to_owned();
        let int_out = int_out.to_plain_array_view::<f32>()?.to_owned();
        let error = (&float_out - &int_out)
            .iter()
            .fold(0f32, |largest, diff| largest.max(diff.abs()));
        let magnitude = float_out
            .iter()
            .fold(0f32, |largest, value| largest.max(value.abs()));
        println!(
            "batch {batch}: f32 {float_time:?}, tract int8 {int_time:?}: int8 is {:.2}× f32's throughput \
             (largest output difference {error:.4} of {magnitude:.4})",
            float_time.as_secs_f64() / int_time.as_secs_f64()
        );
    }
    Ok(())
}
