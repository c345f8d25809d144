//! Optimized plans per batch-size bucket, and per-thread sessions that reuse tract's run state.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::{DatatypeExt, Error, Result, Signature, flat};

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
}

impl Runner {
    pub(crate) fn build(
        typed: &TypedModel,
        batch: Option<Symbol>,
        signature: Signature,
        max_batch: usize,
    ) -> Result<Runner> {
        let mut plans = Vec::new();
        match &batch {
            Some(sym) => {
                let mut buckets: Vec<usize> =
                    std::iter::successors(Some(1usize), |bucket| bucket.checked_mul(2))
                        .take_while(|bucket| *bucket < max_batch)
                        .collect();
                buckets.push(max_batch);
                for bucket in buckets {
                    let opt_err = |error: TractError| Error::Optimize {
                        batch: bucket,
                        message: flat(&error),
                    };
                    let subs = HashMap::from([(sym.clone(), TDim::Val(bucket as i64))]);
                    let plan = typed
                        .set_symbols(&subs)
                        .and_then(|model| model.into_optimized())
                        .and_then(|model| model.into_runnable())
                        .map_err(opt_err)?;
                    plans.push((bucket, plan));
                }
            }
            None => {
                let plan = typed
                    .clone()
                    .into_optimized()
                    .and_then(|model| model.into_runnable())
                    .map_err(|error| Error::Optimize {
                        batch: 0,
                        message: flat(&error),
                    })?;
                plans.push((0, plan));
            }
        }
        Ok(Runner {
            inner: Arc::new(Inner {
                plans,
                batchable: batch.is_some(),
                signature,
            }),
        })
    }

    /// Whether requests can be merged along the first axis.
    pub fn batchable(&self) -> bool {
        self.inner.batchable
    }

    /// The largest bucket: the most rows one plan runs at once.
    pub fn max_batch(&self) -> usize {
        self.inner.plans.last().map(|(b, _)| *b).unwrap_or(0).max(1)
    }

    /// The bucket sizes, ascending.
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
