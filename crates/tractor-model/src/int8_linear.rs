//! `Int8Linear`: the integer dense layer (`tractor-int8`) as a tract op, and the load-time rewrite that serves an
//! int8 artifact's matmuls with it instead of the f32 weights [`crate::dequant::DequantI8`] used to fold into.
//!
//! Why at load and not in the artifact: the archive format stays what it was (int8 weights and per-channel scales
//! behind `tractor_dequant_i8`), so artifacts written before this serve faster without being rebuilt, and the
//! optimize step, which reads every candidate back through the same registry and declutters it, gates and times
//! exactly the arithmetic the server will run. The rewrite runs inside decluttering ([`DequantI8`]'s `declutter`),
//! the one step both the server's loader and the optimize step's reload take.
//!
//! What it takes: a constant int8 weight of rank 2 feeding one f32 `EinSum` `x[.., k] · W[k, n] → y[.., n]` (either
//! orientation of `W`, any number of leading row axes, flattened to `rows × k` at run time). Anything else (a weight
//! read by two matmuls, batch axes in the weight, a contraction that is not `x`'s last axis, f16 inputs) keeps the
//! old path: the weights fold into an f32 constant and tract runs them. A bias `Add` right after is absorbed into
//! the op ([`Int8Linear`]'s `declutter`), so the epilogue adds it while the tile is in registers.
//!
//! Which weights: [`scheme_for`] reads the stored integers. Weights the optimize step quantized to 7 bits (every
//! value in -63..=63) run on the faster 7-bit kernel ([`Scheme::U7`]); 8-bit weights on [`Scheme::I8`]. Both are
//! exact repackings of what the artifact holds, so the accuracy the gate measured is the accuracy served.

use std::fmt;

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::math::Add;
use tractor_int8::{Kernel, PackedWeights, Scheme};

/// `y = x · Wᵀ + bias` over the last axis of `x`, with `W` packed int8 and `x` quantized per row at run time.
#[derive(Clone)]
pub struct Int8Linear {
    /// The packed weights, shared by every plan (batch bucket) built from the same loaded model.
    w: Arc<PackedWeights>,
    /// One value per output channel.
    bias: Option<Arc<[f32]>>,
    /// Picked once, when the op is built: the CPU does not change under a loaded model.
    kernel: Kernel,
}

impl Int8Linear {
    /// A layer with `w` and no bias, on the fastest kernel this CPU runs.
    pub fn new(w: PackedWeights) -> Int8Linear {
        Int8Linear {
            w: Arc::new(w),
            bias: None,
            kernel: Kernel::detect(),
        }
    }

    /// The packed weights.
    pub fn weights(&self) -> &PackedWeights {
        &self.w
    }

    /// The bias, once a following `Add` has been absorbed.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The integer kernel that runs it.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
}

// By hand: the derived Debug would print every packed weight into tract's error messages and dumps.
impl fmt::Debug for Int8Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Int8Linear({}×{} {:?}, {:?}, {})",
            self.w.n(),
            self.w.k(),
            self.w.scheme(),
            self.kernel,
            if self.bias.is_some() {
                "bias"
            } else {
                "no bias"
            }
        )
    }
}

// Equal when they share the same weights and bias (tract compares ops to merge identical nodes); comparing the
// packed bytes would cost a pass over the weights for an answer that is, in practice, always "not the same layer".
impl PartialEq for Int8Linear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.w, &other.w)
            && match (&self.bias, &other.bias) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.kernel == other.kernel
    }
}

impl Eq for Int8Linear {}

impl Op for Int8Linear {
    fn name(&self) -> StaticName {
        "TractorInt8Linear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}×{} weights {:?}, kernel {:?}, {}",
            self.w.n(),
            self.w.k(),
            self.w.scheme(),
            self.kernel,
            if self.bias.is_some() {
                "bias fused"
            } else {
                "no bias"
            }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Linear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (k, n) = (self.w.k(), self.w.n());
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&k),
            "Int8Linear takes rows of {k}, got shape {shape:?}"
        );
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let mut out_shape = shape.to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = n;
        }
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        {
            let input = x.try_as_plain_ram()?;
            let mut output = out.try_as_plain_ram_mut()?;
            tractor_int8::linear(
                input.as_slice::<f32>()?,
                rows,
                &self.w,
                self.bias.as_deref(),
                output.as_slice_mut::<f32>()?,
                self.kernel,
            )?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

/// Axis labels for the row axes; the feature axes take labels after them.
const ROW_LABELS: &str = "abcdefghijklmnopqrstuvwx";

impl TypedOp for Int8Linear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            x.datum_type == f32::datum_type(),
            "Int8Linear takes f32, got {:?}",
            x.datum_type
        );
        let rank = x.rank();
        ensure!(
            rank >= 1 && x.shape[rank - 1] == self.w.k().to_dim(),
            "Int8Linear takes rows of {}, got {:?}",
            self.w.k(),
            x.shape
        );
        let mut shape: TVec<TDim> = x.shape.iter().cloned().collect();
        shape[rank - 1] = self.w.n().to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        // Row axes pass through; the feature axis (k in, n out) is not the same axis on both sides.
        let rows = inputs[0].rank().saturating_sub(1);
        if rows > ROW_LABELS.len() {
            return AxesMapping::disconnected(inputs, outputs);
        }
        let labels = &ROW_LABELS[..rows];
        AxesMapping::from_strs(&[format!("{labels}y")], &[format!("{labels}z")])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let x = inputs[0];
        let rows: TDim = x.shape.iter().take(x.rank().saturating_sub(1)).product();
        Ok(tvec!((
            Cost::FMA(i8::datum_type()),
            rows * self.w.k() * self.w.n()
        )))
    }

    /// Absorbs the bias `Add` that follows (a constant with one value per output channel), so the epilogue adds it.
    fn declutter(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.bias.is_some() || model.outputs.contains(&OutletId::new(node.id, 0)) {
            return Ok(None);
        }
        let [successor] = &*node.outputs[0].successors else {
            return Ok(None);
        };
        let add = model.node(successor.node);
        let is_add = add
            .op_as::<TypedBinOp>()
            .is_some_and(|op| op.0.is::<Add>() && op.1.is_none_or(|dt| dt == f32::datum_type()));
        if !is_add || add.inputs.len() != 2 {
            return Ok(None);
        }
        let other = add.inputs[1 - successor.slot];
        let Some(bias) = model.outlet_fact(other)?.konst.clone() else {
            return Ok(None);
        };
        let ours = model.outlet_fact(node.id.into())?;
        let channels = self.w.n();
        // One value per output channel, broadcast along every row axis, and no axis the layer's output lacks.
        let per_channel = bias.datum_type() == f32::datum_type()
            && bias.rank() <= ours.rank()
            && bias.shape().last() == Some(&channels)
            && bias.shape()[..bias.rank() - 1].iter().all(|d| *d == 1)
            && model.outlet_fact(add.id.into())?.shape == ours.shape;
        if !per_channel {
            return Ok(None);
        }
        let values: Arc<[f32]> = bias.try_as_plain_ram()?.as_slice::<f32>()?.into();
        let fused = Int8Linear {
            bias: Some(values),
            ..self.clone()
        };
        let mut patch = TypedModelPatch::new("int8 linear absorbs its bias");
        let input = patch.tap_model(model, node.inputs[0])?;
        let out = patch.wire_node(&add.name, fused, &[input])?[0];
        patch.shunt_outside(model, add.id.into(), out)?;
        Ok(Some(patch))
    }

    as_op!();
}

/// Largest stored magnitude of a 7-bit weight (`-63..=63`).
pub const MAX_7BIT: i8 = 63;

/// The kernel scheme that holds `q` exactly: the 7-bit one when every value fits in 7 bits (the optimize step
/// stored them so), else the 8-bit one.
pub fn scheme_for(q: &Tensor) -> TractResult<Scheme> {
    let narrow = q
        .to_plain_array_view::<i8>()?
        .iter()
        .all(|v| v.unsigned_abs() <= MAX_7BIT.unsigned_abs());
    // U7 over I7: the same 7-bit values, and its widening step needs no multiply (1.85× against I7's 1.77× of tract
    // f32 in `bench_linear` on Zen 2, batch 32).
    Ok(if narrow { Scheme::U7 } else { Scheme::I8 })
}

/// Where the weight's contraction (`k`) and output-channel (`n`) axes are, when `matmul` (an `EinSum` reading its
/// weight at `weight_slot`) is one the integer kernel takes: f32 `x[.., k] · W → y[.., n]` with `W` of rank 2 in
/// either orientation, `x`'s leading axes kept in place as rows. `None` for anything else (see the module docs).
/// The optimize step asks the same question to decide how many bits to store.
pub fn integer_matmul(
    model: &TypedModel,
    matmul: &TypedNode,
    weight_slot: usize,
) -> TractResult<Option<(usize, usize)>> {
    let Some(einsum) = matmul.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || matmul.inputs.len() != 2
        || weight_slot > 1
    {
        return Ok(None);
    }
    let (ws, xs) = (weight_slot, 1 - weight_slot);
    let input_fact = model.outlet_fact(matmul.inputs[xs])?;
    let rank = input_fact.rank();
    if input_fact.datum_type != f32::datum_type()
        || rank == 0
        || einsum.axes.rank(InOut::Out(0)) != rank
        || einsum.axes.rank(InOut::In(ws)) != 2
        || model.outlet_fact(matmul.id.into())?.datum_type != f32::datum_type()
    {
        return Ok(None);
    }
    // Every axis must be a row axis of the input that the output keeps in place, the contraction over the input's
    // last axis, or the output channel the output puts last.
    let (mut k_axis, mut n_axis) = (None, None);
    for axis in einsum.axes.iter_all_axes() {
        match (
            axis.inputs[xs].as_slice(),
            axis.inputs[ws].as_slice(),
            axis.outputs[0].as_slice(),
        ) {
            ([at_x], [at_w], []) if *at_x == rank - 1 && k_axis.is_none() => k_axis = Some(*at_w),
            ([], [at_w], [at_out]) if *at_out == rank - 1 && n_axis.is_none() => {
                n_axis = Some(*at_w)
            }
            ([at_x], [], [at_out]) if at_x == at_out && *at_x < rank - 1 => {}
            _ => return Ok(None),
        }
    }
    Ok(k_axis.zip(n_axis))
}

thread_local! {
    /// Set while [`folding_to_f32`] runs: loads on this thread keep the old f32 fold.
    static FOLD_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `load` with the rewrite off on this thread (tract declutters on the calling thread), so an int8 artifact
/// loads with f32 weights. For a model that will be written back as NNEF (the optimize step's source, when it is an
/// int8 artifact already): [`Int8Linear`] has no NNEF form, and the candidates are built from f32 weights anyway.
pub fn folding_to_f32<T>(load: impl FnOnce() -> T) -> T {
    let before = FOLD_ONLY.with(|fold| fold.replace(true));
    let loaded = load();
    FOLD_ONLY.with(|fold| fold.set(before));
    loaded
}

/// The patch that serves `dequant` (a [`crate::dequant::DequantI8`] node of constant weights `quantized` and `scale`)
/// and the one `EinSum` it feeds with an [`Int8Linear`], or `None` when that matmul is not one the integer kernel
/// takes ([`integer_matmul`]); the caller then folds the weights into f32 as before.
pub(crate) fn replace_matmul(
    model: &TypedModel,
    dequant: &TypedNode,
    quantized: &Tensor,
    scale: &Tensor,
) -> TractResult<Option<TypedModelPatch>> {
    if FOLD_ONLY.with(std::cell::Cell::get) {
        return Ok(None);
    }
    let [consumer] = &*dequant.outputs[0].successors else {
        return Ok(None);
    };
    if quantized.rank() != 2
        || quantized.datum_type() != i8::datum_type()
        || model.outputs.contains(&OutletId::new(dequant.id, 0))
    {
        return Ok(None);
    }
    let matmul = model.node(consumer.node);
    let Some((k_axis, n_axis)) = integer_matmul(model, matmul, consumer.slot)? else {
        return Ok(None);
    };
    let xs = 1 - consumer.slot;
    let input_fact = model.outlet_fact(matmul.inputs[xs])?;
    let rank = input_fact.rank();
    let (depth, channels) = (quantized.shape()[k_axis], quantized.shape()[n_axis]);
    if depth == 0 || channels == 0 || input_fact.shape[rank - 1] != depth.to_dim() {
        return Ok(None);
    }
    let weights = crate::dequant::dequantize(quantized, scale)?;
    let weights = weights
        .to_plain_array_view::<f32>()?
        .into_dimensionality::<tract_ndarray::Ix2>()?;
    // `PackedWeights` takes one row per output channel (`channels × depth`); a logical-order walk of the (possibly
    // transposed) view gives exactly that.
    let weights = if n_axis == 0 {
        weights
    } else {
        weights.reversed_axes()
    };
    let rows: Vec<f32> = weights.iter().copied().collect();
    // Quantizing `quantized · scale` per channel again gives back `quantized` and `scale`: the channel's largest
    // value is its largest stored integer (127, or 63 for 7-bit weights) times its scale.
    let packed = PackedWeights::pack(&rows, channels, depth, scheme_for(quantized)?)?;
    let mut patch = TypedModelPatch::new("int8 matmul on the integer kernel");
    let input = patch.tap_model(model, matmul.inputs[xs])?;
    let out = patch.wire_node(&matmul.name, Int8Linear::new(packed), &[input])?[0];
    patch.shunt_outside(model, matmul.id.into(), out)?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::DequantI8;
    use tract_nnef::tract_core::floats::FloatPrecisionTranslator;
    use tract_nnef::tract_core::ops::konst::Const;
    use tract_nnef::tract_core::ops::math::{add, max};
    use tract_nnef::tract_core::transform::ModelTransform;

    /// Features in, hidden units, classes out: a small MLP, large enough that every layer has full panels and a tail.
    const DIMS: [usize; 3] = [64, 48, 10];

    /// Deterministic values in [-1, 1) (xorshift).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// How a layer's weights are stored.
    #[derive(Clone, Copy, PartialEq)]
    enum Weights {
        F32,
        /// Per output channel, symmetric, to this largest integer (127 or 63), behind `DequantI8`: what the optimize
        /// step's int8 pass writes.
        Quantized(f32),
    }

    /// `64 → 48 → 10`, ReLU between, a bias after each matmul. The first layer's weights are `k × n`
    /// (`bk,kn->bn`, as ONNX MatMul gives), the second's `n × k` (`bk,nk->bn`, as Gemm with transB gives).
    fn mlp(weights: Weights) -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let batch = model.symbols.sym("N");
        let mut wire = model.add_source("x", f32::fact([batch.to_dim(), DIMS[0].to_dim()]))?;
        for layer in 0..2 {
            let (depth, channels) = (DIMS[layer], DIMS[layer + 1]);
            let transposed = layer == 1;
            // Row-major `channels × depth`, one row per output channel, scaled like He initialisation.
            let nk: Vec<f32> = values(channels * depth, 7 + layer as u64)
                .into_iter()
                .map(|v| v * (2.0 / depth as f32).sqrt())
                .collect();
            let stored: Vec<f32> = if transposed {
                nk.clone()
            } else {
                (0..depth * channels)
                    .map(|ix| nk[(ix % channels) * depth + ix / channels])
                    .collect()
            };
            let shape = if transposed {
                [channels, depth]
            } else {
                [depth, channels]
            };
            let name = format!("l{layer}");
            let weight = match weights {
                Weights::F32 => {
                    model.add_const(format!("{name}.w"), Tensor::from_shape(&shape, &stored)?)?
                }
                Weights::Quantized(levels) => {
                    let scales: Vec<f32> = nk
                        .chunks(depth)
                        .map(|row| row.iter().fold(0f32, |m, v| m.max(v.abs())) / levels)
                        .collect();
                    let channel = |ix: usize| {
                        if transposed {
                            ix / depth
                        } else {
                            ix % channels
                        }
                    };
                    let quantized: Vec<i8> = stored
                        .iter()
                        .enumerate()
                        .map(|(ix, v)| (v / scales[channel(ix)]).round() as i8)
                        .collect();
                    let scale_shape = if transposed {
                        [channels, 1]
                    } else {
                        [1, channels]
                    };
                    let quantized = model
                        .add_const(format!("{name}.q"), Tensor::from_shape(&shape, &quantized)?)?;
                    let scale = model.add_const(
                        format!("{name}.scale"),
                        Tensor::from_shape(&scale_shape, &scales)?,
                    )?;
                    model.wire_node(format!("{name}.dequant"), DequantI8, &[quantized, scale])?[0]
                }
            };
            let expr = if transposed { "bk,nk->bn" } else { "bk,kn->bn" };
            wire = model.wire_node(
                format!("{name}.mm"),
                EinSum::new(expr.parse()?, f32::datum_type()),
                &[wire, weight],
            )?[0];
            let bias = model.add_const(
                format!("{name}.b"),
                Tensor::from_shape(&[1, channels], &values(channels, 31 + layer as u64))?,
            )?;
            wire = model.wire_node(format!("{name}.bias"), add(), &[wire, bias])?[0];
            if layer == 0 {
                let zero = model.add_const(format!("{name}.zero"), tensor2(&[[0f32]]))?;
                wire = model.wire_node(format!("{name}.relu"), max(), &[wire, zero])?[0];
            }
        }
        model.select_output_outlets(&[wire])?;
        Ok(model)
    }

    /// `model` written as an NNEF archive and read back as the server reads it.
    fn served(model: &TypedModel) -> TractResult<TypedModel> {
        let nnef = crate::loader::nnef();
        let tar = nnef.write_to_tar(model, Vec::new())?;
        nnef.model_for_read(&mut tar.as_slice())?.into_decluttered()
    }

    fn run(model: &TypedModel, x: &Tensor) -> TractResult<Vec<f32>> {
        let plan = model.clone().into_optimized()?.into_runnable()?;
        let out = plan.run(tvec!(x.clone().into_tvalue()))?.remove(0);
        Ok(out.to_plain_array_view::<f32>()?.iter().copied().collect())
    }

    fn layers(model: &TypedModel) -> Vec<&Int8Linear> {
        model
            .nodes()
            .iter()
            .filter_map(|node| node.op_as::<Int8Linear>())
            .collect()
    }

    fn count<O: TypedOp>(model: &TypedModel) -> usize {
        model
            .nodes()
            .iter()
            .filter(|node| node.op_is::<O>())
            .count()
    }

    fn input(rows: usize) -> TractResult<Tensor> {
        // Like scaled pixels: mostly in [0, 1], some negative, so the per-row zero point is exercised.
        let x: Vec<f32> = values(rows * DIMS[0], 3)
            .into_iter()
            .map(|v| v * 0.8 + 0.3)
            .collect();
        Tensor::from_shape(&[rows, DIMS[0]], &x)
    }

    /// The largest difference between two outputs, as a fraction of the largest output.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let error = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        error / spread
    }

    #[test]
    fn an_int8_artifact_serves_its_matmuls_on_the_integer_kernel() -> TractResult<()> {
        let int8 = served(&mlp(Weights::Quantized(127.0))?)?;
        let found = layers(&int8);
        assert_eq!(found.len(), 2, "{int8}");
        for layer in &found {
            assert_eq!(layer.weights().scheme(), Scheme::I8);
            assert!(
                layer.bias().is_some(),
                "the bias Add is absorbed: {layer:?}"
            );
        }
        assert_eq!(count::<EinSum>(&int8), 0);
        assert_eq!(count::<DequantI8>(&int8), 0);
        assert_eq!(
            count::<TypedBinOp>(&int8),
            1,
            "only the ReLU is left: {int8}"
        );
        let (depth, channels) = (found[0].weights().k(), found[0].weights().n());
        assert_eq!((depth, channels), (DIMS[0], DIMS[1]));
        // Within the quantization error of f32, at batch 1 and 17, optimized as the server optimizes it.
        let f32_model = mlp(Weights::F32)?.into_decluttered()?;
        for rows in [1, 17] {
            let batch = input(rows)?;
            let error = relative_error(&run(&int8, &batch)?, &run(&f32_model, &batch)?);
            assert!(
                error < 0.03,
                "batch {rows}: error {error} of the largest output"
            );
        }
        Ok(())
    }

    #[test]
    fn the_served_model_runs_through_the_batched_runner() -> anyhow::Result<()> {
        let path = std::env::temp_dir().join(format!(
            "tractor-int8-linear-{}.nnef.tar",
            std::process::id()
        ));
        let tar =
            crate::loader::nnef().write_to_tar(&mlp(Weights::Quantized(127.0))?, Vec::new())?;
        std::fs::write(&path, tar)?;
        let loaded = crate::load(&path, None);
        std::fs::remove_file(&path)?;
        let model = loaded?;
        let runner = model.runner(8)?;
        let mut session = runner.session();
        let x = input(5)?;
        let got = session.run(vec![x.clone()])?.remove(0);
        let want = run(&mlp(Weights::F32)?.into_decluttered()?, &x)?;
        let got: Vec<f32> = got.to_plain_array_view::<f32>()?.iter().copied().collect();
        assert!(relative_error(&got, &want) < 0.03);
        Ok(())
    }

    #[test]
    fn seven_bit_weights_run_on_the_seven_bit_kernel_exactly_as_stored() -> TractResult<()> {
        let stored = mlp(Weights::Quantized(63.0))?;
        let int8 = served(&stored)?;
        let found = layers(&int8);
        assert_eq!(found.len(), 2);
        assert!(
            found
                .iter()
                .all(|layer| layer.weights().scheme() == Scheme::U7)
        );
        // The packed integers are the stored ones: repacking loses nothing.
        let quantized = stored
            .nodes()
            .iter()
            .find(|node| node.name == "l0.q")
            .and_then(|node| node.op_as::<Const>())
            .map(|konst| konst.val().clone())
            .expect("the first layer's weights");
        let quantized = quantized.to_plain_array_view::<i8>()?;
        let packed = found
            .iter()
            .find(|layer| layer.weights().k() == DIMS[0])
            .expect("the first layer");
        for ((feature, channel), value) in
            quantized.indexed_iter().map(|(ix, v)| ((ix[0], ix[1]), *v))
        {
            assert_eq!(packed.weights().weight(channel, feature), i32::from(value));
        }
        let batch = input(9)?;
        let error = relative_error(&run(&int8, &batch)?, &run(&mlp(Weights::F32)?, &batch)?);
        assert!(error < 0.05, "error {error} of the largest output");
        Ok(())
    }

    /// The optimize step's source load: an int8 artifact comes back with f32 weights (it is written as NNEF
    /// again, and the integer layer has no NNEF form), and the rewrite is back on afterwards.
    #[test]
    fn folding_to_f32_keeps_an_int8_artifact_writable() -> TractResult<()> {
        let folded = folding_to_f32(|| served(&mlp(Weights::Quantized(127.0))?))?;
        assert_eq!(layers(&folded).len(), 0, "{folded}");
        assert_eq!(count::<DequantI8>(&folded), 0);
        assert_eq!(count::<EinSum>(&folded), 2);
        crate::loader::nnef().write_to_tar(&folded, Vec::new())?;
        assert_eq!(layers(&served(&mlp(Weights::Quantized(127.0))?)?).len(), 2);
        Ok(())
    }

    #[test]
    fn f32_and_f16_artifacts_are_untouched() -> TractResult<()> {
        let f32_model = served(&mlp(Weights::F32)?.into_decluttered()?)?;
        assert_eq!(layers(&f32_model).len(), 0);
        assert_eq!(count::<EinSum>(&f32_model), 2);
        let f16_model = FloatPrecisionTranslator::new(f32::datum_type(), f16::datum_type())
            .transform_into(mlp(Weights::F32)?.into_decluttered()?)?
            .into_decluttered()?;
        let f16_model = served(&f16_model)?;
        assert_eq!(layers(&f16_model).len(), 0);
        assert_eq!(count::<EinSum>(&f16_model), 2);
        Ok(())
    }

    #[test]
    fn matmuls_the_kernel_cannot_take_keep_the_f32_fold() -> TractResult<()> {
        // One int8 weight read by two matmuls, and one contracted over the input's first axis: both fold to f32.
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact([4, 4]))?;
        let quantized = model.add_const(
            "q",
            Tensor::from_shape(
                &[4, 4],
                &[1i8, -2, 3, 127, 5, 6, -7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            )?,
        )?;
        let scale = model.add_const("s", tensor2(&[[0.5f32, 0.25, 1.0, 0.125]]))?;
        let weight = model.wire_node("w", DequantI8, &[quantized, scale])?[0];
        let first = model.wire_node(
            "a",
            EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
            &[source, weight],
        )?[0];
        let second = model.wire_node(
            "b",
            EinSum::new("bk,kn->bn".parse()?, f32::datum_type()),
            &[first, weight],
        )?[0];
        let q2 = model.add_const("q2", Tensor::from_shape(&[4, 4], &[1i8; 16])?)?;
        let w2 = model.wire_node("w2", DequantI8, &[q2, scale])?[0];
        let transposed = model.wire_node(
            "c",
            EinSum::new("kb,kn->bn".parse()?, f32::datum_type()),
            &[second, w2],
        )?[0];
        model.select_output_outlets(&[transposed])?;
        let decluttered = model.into_decluttered()?;
        assert_eq!(layers(&decluttered).len(), 0, "{decluttered}");
        assert_eq!(
            count::<DequantI8>(&decluttered),
            0,
            "folded to f32 constants"
        );
        Ok(())
    }
}
