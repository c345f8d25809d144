//! Dynamic batching: a bounded queue, worker threads off the async runtime that merge concurrent
//! requests along axis 0 up to a row limit or a delay, run them through tract and split the results.

use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tractor_model::{Runner, Session, Tensor};

use crate::metrics::Metrics;

/// How requests are merged and how much may wait.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Inference threads, each with its own tract run states.
    pub threads: usize,
    /// Most rows merged into one run; 1 turns batching off.
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for company.
    pub max_delay: Duration,
    /// Requests that may wait in the queue; beyond it requests are shed.
    pub queue_capacity: usize,
}

/// What one request gets back.
#[derive(Debug)]
pub struct BatchOutput {
    /// Its outputs, its own rows only.
    pub outputs: Vec<Tensor>,
    /// Rows in the merged run it was part of.
    pub batch_rows: usize,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: shed load (HTTP 503, gRPC RESOURCE_EXHAUSTED).
    #[error("server overloaded: inference queue is full")]
    Overloaded,
    /// The workers are gone (shutting down).
    #[error("server is shutting down")]
    Stopped,
}

type Reply = oneshot::Sender<Result<BatchOutput, tractor_model::Error>>;

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    enqueued: Instant,
    reply: Reply,
}

/// Handle to the queue; dropping every clone lets the workers finish the queue and exit.
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    workers: Arc<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Batcher {
    /// Start `config.threads` workers on `runner`.
    pub fn start(
        runner: Runner,
        config: BatchConfig,
        metrics: Metrics,
    ) -> std::io::Result<Batcher> {
        let (tx, rx) = sync_channel::<Job>(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let max_rows = if runner.batchable() {
            config.max_batch_size.max(1)
        } else {
            1
        };
        let mut workers = Vec::new();
        for i in 0..config.threads.max(1) {
            let rx = Arc::clone(&rx);
            let session = runner.session();
            let metrics = metrics.clone();
            let delay = config.max_delay;
            workers.push(
                std::thread::Builder::new()
                    .name(format!("tractor-infer-{i}"))
                    .spawn(move || worker(rx, session, max_rows, delay, metrics))?,
            );
        }
        Ok(Batcher {
            tx,
            workers: Arc::new(workers),
        })
    }

    /// Queue one request of `rows` rows; the receiver yields its outputs.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
    ) -> Result<oneshot::Receiver<Result<BatchOutput, tractor_model::Error>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job {
            inputs,
            rows,
            enqueued: Instant::now(),
            reply,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }
}

fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            x.datum_type() == y.datum_type() && x.shape().get(1..) == y.shape().get(1..)
        })
}

/// Take the next batch: block for one job, then gather more until the row limit or the deadline.
/// Returns the batch and a job that did not fit (run on its own right after).
fn gather(
    rx: &Mutex<Receiver<Job>>,
    max_rows: usize,
    delay: Duration,
) -> Option<(Vec<Job>, Option<Job>)> {
    let rx = rx.lock().ok()?;
    let first = rx.recv().ok()?;
    let mut rows = first.rows;
    let mut jobs = vec![first];
    let mut leftover = None;
    let deadline = jobs[0].enqueued + delay;
    while rows < max_rows {
        let next = match rx.try_recv() {
            Ok(j) => j,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if rows + next.rows > max_rows || !compatible(&jobs[0], &next) {
            leftover = Some(next);
            break;
        }
        rows += next.rows;
        jobs.push(next);
    }
    Some((jobs, leftover))
}

fn worker(
    rx: Arc<Mutex<Receiver<Job>>>,
    mut session: Session,
    max_rows: usize,
    delay: Duration,
    metrics: Metrics,
) {
    while let Some((jobs, leftover)) = gather(&rx, max_rows, delay) {
        run_batch(&mut session, jobs, &metrics);
        if let Some(job) = leftover {
            run_batch(&mut session, vec![job], &metrics);
        }
    }
}

fn run_batch(session: &mut Session, jobs: Vec<Job>, metrics: &Metrics) {
    // A client that went away (timeout, disconnect) does not cost compute.
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    let start = Instant::now();
    for job in &jobs {
        metrics.queue.observe((start - job.enqueued).as_secs_f64());
    }
    let total: usize = jobs.iter().map(|j| j.rows).sum();
    metrics.batch_size.observe(total as f64);
    if jobs.len() == 1 {
        let mut jobs = jobs;
        let Some(job) = jobs.pop() else { return };
        let result = session.run(job.inputs);
        metrics.compute.observe(start.elapsed().as_secs_f64());
        let _ = job.reply.send(result.map(|outputs| BatchOutput {
            outputs,
            batch_rows: total,
        }));
        return;
    }
    let n_inputs = jobs[0].inputs.len();
    let merged: Result<Vec<Tensor>, String> = (0..n_inputs)
        .map(|input_index| {
            let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[input_index]).collect();
            Tensor::stack_tensors(0, &parts).map_err(|e| format!("{e:#}"))
        })
        .collect();
    let result = merged
        .map_err(tractor_model::Error::Run)
        .and_then(|m| session.run(m));
    metrics.compute.observe(start.elapsed().as_secs_f64());
    match result {
        Err(error) => {
            let msg = error.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(tractor_model::Error::Run(msg.clone())));
            }
        }
        Ok(outputs) => {
            let mut offset = 0;
            for job in jobs {
                let mine: Result<Vec<Tensor>, _> = outputs
                    .iter()
                    .map(|output| {
                        if output.rank() > 0 && output.shape()[0] == total {
                            output.slice(0, offset, offset + job.rows)
                        } else {
                            Ok(output.clone())
                        }
                    })
                    .collect();
                offset += job.rows;
                let _ = job.reply.send(
                    mine.map(|outputs| BatchOutput {
                        outputs,
                        batch_rows: total,
                    })
                    .map_err(|e| tractor_model::Error::Run(format!("{e:#}"))),
                );
            }
        }
    }
}
