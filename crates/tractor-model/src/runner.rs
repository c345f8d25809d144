//! Optimized plans per batch-size bucket, sharing their packed weights, and per-thread sessions that reuse
//! tract's run state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};
use tract_onnx::tract_core::tract_linalg::mmm::EagerPackedInput;

use crate::{DatatypeExt, Error, LoadTimings, PlanTiming, Result, Signature, flat};

/// Bytes of packed weights the smaller buckets' plans may add to the largest bucket's, unless the caller says
/// otherwise ([`crate::Model::runner_with_extra_weights`]): 32 MiB.
///
/// tract packs a matmul's constant weights for the kernel it picks, and it picks by batch size: on x86-64 with FMA
/// a dense layer gets a 64x1 kernel at batch 1, 40x2 at 2, 24x4 at 4 and 8x8 from 8 up, each with its own packed
/// copy, so six buckets held six copies (653 MB of RSS for a 100 MB model). Plans that pack alike share one copy;
/// a smaller bucket that would add more than this is left out and its batches run padded on the next larger one.
/// Small models keep every bucket; a large dense model keeps the buckets that share the largest one's packing
/// (one copy of its weights, the largest batch as fast as before, small batches padded). A symbolic-batch plan
/// was measured too: one copy as well, but its kernels ran the largest batch 25-50% slower.
pub const DEFAULT_EXTRA_WEIGHT_BYTES: usize = 32 << 20;

/// The model optimized for each batch-size bucket; cheap to clone and share between threads.
#[derive(Clone, Debug)]
pub struct Runner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// (bucket size, plan), ascending. A model without a batch symbol has one entry, keyed by 0.
    plans: Vec<(usize, Arc<TypedSimplePlan>)>,
    batchable: bool,
    signature: Signature,
    timings: LoadTimings,
}

impl Runner {
    pub(crate) fn build(
        typed: &TypedModel,
        batch: Option<Symbol>,
        signature: Signature,
        max_batch: usize,
        mut timings: LoadTimings,
        mut budget: usize,
    ) -> Result<Runner> {
        let mut plans = Vec::new();
        match &batch {
            Some(sym) => {
                let mut buckets: Vec<usize> =
                    std::iter::successors(Some(1usize), |bucket| bucket.checked_mul(2))
                        .take_while(|bucket| *bucket < max_batch)
                        .collect();
                buckets.push(max_batch);
                // Largest first: its weights are the ones every other bucket may share.
                let mut pool = WeightPool::default();
                for bucket in buckets.into_iter().rev() {
                    let start = Instant::now();
                    let opt_err = |error: TractError| Error::Optimize {
                        batch: bucket,
                        message: flat(&error),
                    };
                    let subs = HashMap::from([(sym.clone(), TDim::Val(bucket as i64))]);
                    let mut model = typed
                        .set_symbols(&subs)
                        .and_then(|model| model.into_optimized())
                        .map_err(opt_err)?;
                    let mut trial = pool.clone();
                    let added = trial.share(&mut model);
                    let kept = plans.is_empty() || added <= budget;
                    if kept {
                        if !plans.is_empty() {
                            budget -= added;
                        }
                        pool = trial;
                        plans.push((bucket, model.into_runnable().map_err(opt_err)?));
                    }
                    timings.plans.push(PlanTiming {
                        bucket,
                        optimize: start.elapsed(),
                        kept,
                    });
                    // Smaller batches pick narrower kernels still, so they would not share either: stop paying
                    // for their optimization.
                    if !kept {
                        break;
                    }
                }
                plans.reverse();
            }
            None => {
                let start = Instant::now();
                let plan = typed
                    .clone()
                    .into_optimized()
                    .and_then(|model| model.into_runnable())
                    .map_err(|error| Error::Optimize {
                        batch: 0,
                        message: flat(&error),
                    })?;
                plans.push((0, plan));
                timings.plans.push(PlanTiming {
                    bucket: 0,
                    optimize: start.elapsed(),
                    kept: true,
                });
            }
        }
        Ok(Runner {
            inner: Arc::new(Inner {
                plans,
                batchable: batch.is_some(),
                signature,
                timings,
            }),
        })
    }

    /// How long each start-up phase took: the model's load phases, then each bucket's optimization.
    pub fn timings(&self) -> &LoadTimings {
        &self.inner.timings
    }

    /// Whether requests can be merged along the first axis.
    pub fn batchable(&self) -> bool {
        self.inner.batchable
    }

    /// The largest bucket: the most rows one plan runs at once.
    pub fn max_batch(&self) -> usize {
        self.inner.plans.last().map(|(b, _)| *b).unwrap_or(0).max(1)
    }

    /// The bucket sizes, ascending: powers of two below the largest batch and the largest batch, less the smaller
    /// buckets whose packed weights would have cost too much memory (their batches run padded on the next bucket).
    pub fn buckets(&self) -> Vec<usize> {
        self.inner.plans.iter().map(|(b, _)| *b).collect()
    }

    /// The signature the runner checks inputs against.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// A session for one thread: it keeps one run state per bucket, created on first use.
    pub fn session(&self) -> Session {
        Session {
            runner: self.clone(),
            states: (0..self.inner.plans.len()).map(|_| None).collect(),
        }
    }
}

/// Runs the model on one thread, reusing tract's run state between calls (saves allocations per call).
#[derive(Debug)]
pub struct Session {
    runner: Runner,
    states: Vec<Option<TypedSimpleState>>,
}

impl Session {
    /// Run the model on `inputs` (one tensor per signature input, in order, all with the same number of
    /// rows on axis 0 when the model is batchable); returns one tensor per output, with as many rows.
    ///
    /// Batches that fall between buckets are zero-padded up to the next bucket and the padding rows are
    /// cut from the outputs; batches larger than the largest bucket run in chunks.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let sig = &self.runner.inner.signature;
        if inputs.len() != sig.inputs.len() {
            return Err(Error::BadInput(format!(
                "expected {} inputs, got {}",
                sig.inputs.len(),
                inputs.len()
            )));
        }
        for (tensor, spec) in inputs.iter().zip(&sig.inputs) {
            if tensor.datum_type() != spec.datatype.datum() {
                return Err(Error::BadInput(format!(
                    "input {}: expected datatype {}, got {:?}",
                    spec.name,
                    spec.datatype,
                    tensor.datum_type()
                )));
            }
            let ok = tensor.rank() == spec.shape.len()
                && tensor
                    .shape()
                    .iter()
                    .zip(&spec.shape)
                    .all(|(got, want)| *want < 0 || *got as i64 == *want);
            if !ok {
                return Err(Error::BadInput(format!(
                    "input {}: shape {:?} does not match {:?}",
                    spec.name,
                    tensor.shape(),
                    spec.shape
                )));
            }
        }
        if !self.runner.inner.batchable {
            return self.run_plan(0, inputs);
        }
        let rows = inputs
            .first()
            .and_then(|tensor| tensor.shape().first().copied())
            .unwrap_or(0);
        if inputs
            .iter()
            .any(|tensor| tensor.shape().first().copied() != Some(rows))
        {
            return Err(Error::BadInput(
                "inputs disagree on the batch size (axis 0)".into(),
            ));
        }
        let max = self.runner.max_batch();
        if rows <= max {
            return self.run_rows(inputs, rows);
        }
        let mut parts: Vec<Vec<Tensor>> = Vec::new();
        let mut start = 0;
        while start < rows {
            let end = (start + max).min(rows);
            let chunk = inputs
                .iter()
                .map(|tensor| tensor.slice(0, start, end))
                .collect::<TractResult<Vec<_>>>()
                .map_err(|error| Error::Run(flat(&error)))?;
            parts.push(self.run_rows(chunk, end - start)?);
            start = end;
        }
        let outputs = parts.first().map(|part| part.len()).unwrap_or(0);
        (0..outputs)
            .map(|output| {
                let col: Vec<&Tensor> = parts.iter().map(|part| &part[output]).collect();
                Tensor::stack_tensors(0, &col).map_err(|error| Error::Run(flat(&error)))
            })
            .collect()
    }

    fn run_rows(&mut self, inputs: Vec<Tensor>, rows: usize) -> Result<Vec<Tensor>> {
        let plans = &self.runner.inner.plans;
        let ix = plans
            .iter()
            .position(|(size, _)| *size >= rows)
            .unwrap_or(plans.len() - 1);
        let bucket = plans[ix].0;
        let inputs = if bucket > rows {
            inputs
                .into_iter()
                .map(|tensor| {
                    let mut shape = tensor.shape().to_vec();
                    shape[0] = bucket - rows;
                    let pad = Tensor::zero_dt(tensor.datum_type(), &shape)?;
                    Tensor::stack_tensors(0, &[tensor, pad])
                })
                .collect::<TractResult<Vec<_>>>()
                .map_err(|error| Error::Run(flat(&error)))?
        } else {
            inputs
        };
        let outputs = self.run_plan(ix, inputs)?;
        if bucket == rows {
            return Ok(outputs);
        }
        outputs
            .into_iter()
            .map(|tensor| {
                if tensor.rank() > 0 && tensor.shape()[0] == bucket {
                    tensor.slice(0, 0, rows)
                } else {
                    Ok(tensor)
                }
            })
            .collect::<TractResult<Vec<_>>>()
            .map_err(|error| Error::Run(flat(&error)))
    }

    fn run_plan(&mut self, ix: usize, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let run_err = |e: TractError| Error::Run(flat(&e));
        if self.states[ix].is_none() {
            let plan = &self.runner.inner.plans[ix].1;
            self.states[ix] = Some(TypedSimpleState::new(plan).map_err(run_err)?);
        }
        let Some(state) = self.states[ix].as_mut() else {
            return Err(Error::Run("run state missing".into()));
        };
        let outputs = state
            .run(inputs.into_iter().map(TValue::from).collect())
            .map_err(run_err)?;
        Ok(outputs.into_iter().map(|v| v.into_tensor()).collect())
    }
}

/// The weights the plans built so far hold, so a later plan holding equal ones can share them instead.
///
/// Two places hold weights in an optimized tract model: `Const` nodes (biases, and weights no kernel packed) and
/// the packed operands an `OptMatMul` baked in. Weights other optimized ops keep to themselves (some convolution
/// kernels) are not seen here, so they stay one copy per plan, as before.
#[derive(Clone, Default)]
struct WeightPool {
    tensors: Vec<Arc<Tensor>>,
    blobs: Vec<Arc<Blob>>,
}

impl WeightPool {
    /// Point `model`'s weights at equal ones already in the pool and add the others; returns the bytes added.
    fn share(&mut self, model: &mut TypedModel) -> usize {
        let mut added = 0;
        for node in &mut model.nodes {
            if let Some(konst) = node.op_as::<Const>() {
                let tensor = konst.val();
                match self.tensors.iter().find(|held| ***held == **tensor) {
                    Some(held) if !Arc::ptr_eq(held, tensor) => {
                        if let Ok(shared) = Const::new_with_opt_exotic_fact(
                            held.clone(),
                            konst
                                .exotic_fact()
                                .map(tract_onnx::tract_core::dyn_clone::clone_box),
                        ) {
                            // The output fact holds the tensor too.
                            if let Some(output) = node.outputs.first_mut() {
                                output.fact.konst = Some(held.clone());
                            }
                            node.op = Box::new(shared);
                        }
                    }
                    Some(_) => {}
                    None => {
                        added += tensor_bytes(tensor);
                        self.tensors.push(tensor.clone());
                    }
                }
            } else if let Some(matmul) = node.op_as::<OptMatMul>() {
                let mut matmul = matmul.clone();
                let mut changed = false;
                for spec in &mut matmul.micro_ops {
                    let ProtoFusedSpec::AddMatMul {
                        a: left, b: right, ..
                    } = spec
                    else {
                        continue;
                    };
                    for operand in [left, right] {
                        let MatMulOperand::Const(value) = operand else {
                            continue;
                        };
                        let Some(packed) = value.downcast_ref::<EagerPackedInput>() else {
                            continue;
                        };
                        match self.blobs.iter().find(|held| ***held == *packed.packed) {
                            Some(held) if !Arc::ptr_eq(held, &packed.packed) => {
                                let shared = EagerPackedInput {
                                    packed: held.clone(),
                                    ..packed.clone()
                                };
                                *operand = MatMulOperand::Const(Box::new(shared));
                                changed = true;
                            }
                            Some(_) => {}
                            None => {
                                added += packed.packed.as_bytes().len();
                                self.blobs.push(packed.packed.clone());
                            }
                        }
                    }
                }
                if changed {
                    node.op = Box::new(matmul);
                }
            }
        }
        added
    }
}

/// The bytes a constant holds: its elements, or its packed panels.
fn tensor_bytes(tensor: &Tensor) -> usize {
    use tract_onnx::tract_core::tract_linalg::mmm::PackedMatrixStorage;
    if tensor.is_plain() {
        return tensor.len() * tensor.datum_type().size_of();
    }
    tensor
        .try_storage_as::<PackedMatrixStorage>()
        .map(|storage| {
            storage
                .values()
                .iter()
                .filter_map(|value| value.downcast_ref::<EagerPackedInput>())
                .map(|packed| packed.packed.as_bytes().len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> crate::Model {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(format!("{name}.onnx"));
        crate::load(&path, None).unwrap()
    }

    fn runner(model: &crate::Model, max_batch: usize, budget: usize) -> Runner {
        Runner::build(
            &model.typed,
            model.batch.clone(),
            model.signature.clone(),
            max_batch,
            model.timings.clone(),
            budget,
        )
        .unwrap()
    }

    /// Deterministic rows in [-1, 1) shaped like the model's first input, `rows` of them.
    fn rows(model: &crate::Model, rows: usize) -> Tensor {
        let shape: Vec<usize> = model.signature.inputs[0]
            .shape
            .iter()
            .map(|d| if *d < 0 { rows } else { *d as usize })
            .collect();
        let len: usize = shape.iter().product();
        let data: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        Tensor::from_shape(&shape, &data).unwrap()
    }

    fn bits(tensor: &Tensor) -> Vec<u32> {
        let plain = tensor.try_as_plain_ram().unwrap();
        plain
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// Every weight the plans hold: Const tensors and the packed operands OptMatMul baked in.
    fn weights(runner: &Runner) -> (Vec<Arc<Tensor>>, Vec<Arc<Blob>>) {
        let (mut tensors, mut blobs) = (Vec::new(), Vec::new());
        for (_, plan) in &runner.inner.plans {
            for node in &plan.model().nodes {
                if let Some(konst) = node.op_as::<Const>() {
                    tensors.push(konst.val().clone());
                }
                if let Some(matmul) = node.op_as::<OptMatMul>() {
                    for spec in &matmul.micro_ops {
                        if let ProtoFusedSpec::AddMatMul { a, b, .. } = spec {
                            for operand in [a, b] {
                                if let MatMulOperand::Const(value) = operand
                                    && let Some(packed) = value.downcast_ref::<EagerPackedInput>()
                                {
                                    blobs.push(packed.packed.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        (tensors, blobs)
    }

    #[test]
    fn bucket_plans_hold_equal_weights_once() {
        for name in ["dense", "digits_mlp", "pinned_batch_cnn"] {
            let model = fixture(name);
            let runner = runner(&model, 32, DEFAULT_EXTRA_WEIGHT_BYTES);
            assert_eq!(
                runner.buckets(),
                [1, 2, 4, 8, 16, 32],
                "{name}: small models keep every bucket"
            );
            let (tensors, blobs) = weights(&runner);
            assert!(!blobs.is_empty(), "{name}: no packed weights found");
            for (ix, first) in tensors.iter().enumerate() {
                for second in &tensors[ix + 1..] {
                    assert_eq!(
                        **first == **second,
                        Arc::ptr_eq(first, second),
                        "{name}: equal constants not shared"
                    );
                }
            }
            for (ix, first) in blobs.iter().enumerate() {
                for second in &blobs[ix + 1..] {
                    assert_eq!(
                        **first == **second,
                        Arc::ptr_eq(first, second),
                        "{name}: equal packed weights not shared"
                    );
                }
            }
            // Every bucket has the same biases, whatever kernels it picked: those at least are shared.
            let distinct = |all: &[Arc<Tensor>]| {
                let mut ptrs: Vec<_> = all.iter().map(Arc::as_ptr).collect();
                ptrs.sort();
                ptrs.dedup();
                ptrs.len()
            };
            assert!(
                distinct(&tensors) < tensors.len(),
                "{name}: no constant shared"
            );
        }
    }

    #[test]
    fn left_out_buckets_give_the_same_bits() {
        for name in ["dense", "pinned_batch_cnn"] {
            let model = fixture(name);
            // Unbounded: a plan for every bucket, as before weights were shared.
            let every = runner(&model, 32, usize::MAX);
            // Nothing beyond the largest bucket's weights: the buckets that pack differently are left out.
            let one_copy = runner(&model, 32, 0);
            assert_eq!(one_copy.max_batch(), 32, "{name}");
            assert!(
                one_copy
                    .buckets()
                    .iter()
                    .all(|b| every.buckets().contains(b)),
                "{name}"
            );
            let kept: Vec<usize> = one_copy
                .timings()
                .plans
                .iter()
                .filter(|plan| plan.kept)
                .map(|plan| plan.bucket)
                .rev()
                .collect();
            assert_eq!(
                kept,
                one_copy.buckets(),
                "{name}: timings list the kept plans"
            );
            let (mut every_session, mut one_copy_session) = (every.session(), one_copy.session());
            for count in (1..=33).chain([70]) {
                let input = rows(&model, count);
                let want = every_session.run(vec![input.clone()]).unwrap();
                let got = one_copy_session.run(vec![input]).unwrap();
                assert_eq!(got.len(), want.len());
                for (got, want) in got.iter().zip(&want) {
                    assert_eq!(got.shape(), want.shape(), "{name}, {count} rows");
                    assert_eq!(
                        bits(got),
                        bits(want),
                        "{name}, {count} rows: outputs differ"
                    );
                }
            }
        }
    }

    #[test]
    fn timings_cover_every_phase() {
        let model = fixture("dense");
        let runner = model.runner(8).unwrap();
        let timings = runner.timings();
        assert!(timings.parse > std::time::Duration::ZERO);
        assert_eq!(timings.digest, model.timings().digest);
        let buckets: Vec<usize> = timings.plans.iter().map(|plan| plan.bucket).collect();
        assert_eq!(buckets, [8, 4, 2, 1], "largest first");
        assert_eq!(timings.optimize(), timings.phases()[3].1);
        assert!(timings.total() >= timings.optimize());
    }
}
