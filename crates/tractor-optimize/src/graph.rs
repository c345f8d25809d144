//! tract glue for the optimizer: write the deterministic NNEF archive, read it back as the server will, run and
//! time it.

use std::io::Write;
use std::time::{Duration, Instant};

use tract_nnef::internal::*;
use tractor_model::loader::nnef;

use super::{OptError, Reason};

fn flat(e: &TractError) -> String {
    format!("{e:#}")
}

/// The artifact bytes: tract's deterministic tar (fixed mtimes, sorted entries) gzipped with a fixed header.
pub fn archive(model: &TypedModel) -> Result<Vec<u8>, OptError> {
    let tar = nnef()
        .write_to_tar_with_config(model, Vec::new(), false, true)
        .map_err(|e| {
            let m = flat(&e);
            OptError::new(
                Reason::UnsupportedOp,
                format!("cannot write the model as NNEF: {m}"),
            )
        })?;
    gzip_archive(&tar)
}

/// The tar gzipped: compressed, or stored where compression saves less than a tenth.
pub fn gzip_archive(tar: &[u8]) -> Result<Vec<u8>, OptError> {
    let gzip = |level: flate2::Compression| {
        // mtime 0, no file name, fixed OS byte and level: the same tar always gives the same gzip bytes.
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), level);
        gz.write_all(tar)
            .and_then(|_| gz.finish())
            .map_err(|e| OptError::new(Reason::Internal, format!("compressing the artifact: {e}")))
    };
    let packed = gzip(flate2::Compression::fast())?;
    // Dense f32 weights barely compress (a 104 MB MLP: 7 % at the best level), and inflating them was most of such a
    // model's load in the server (300 of 550 ms); an archive that saves less than a tenth is stored instead, which
    // inflates at the speed of a copy. Pruned or quantized weights and small graphs still compress. Decided by
    // the bytes alone, so the artifact stays deterministic.
    if packed.len() as u128 * 10 > tar.len() as u128 * 9 {
        gzip(flate2::Compression::none())
    } else {
        Ok(packed)
    }
}

/// Read an artifact back exactly as the server does (NNEF, decluttered), so what is evaluated is what is served.
pub fn reload(bytes: &[u8]) -> Result<TypedModel, OptError> {
    nnef()
        .model_for_read(&mut &*bytes)
        .and_then(|loaded| loaded.into_decluttered())
        .map_err(|e| {
            OptError::new(
                Reason::Internal,
                format!("the written artifact does not load back: {}", flat(&e)),
            )
        })
}

/// A model optimized for running, with the batch symbol left free.
pub struct Exec {
    plan: Arc<TypedSimplePlan>,
    input_types: Vec<DatumType>,
}

impl Exec {
    /// Optimize `model` for running any batch size.
    pub fn new(model: &TypedModel) -> Result<Exec, OptError> {
        Exec::build(model.clone())
    }

    /// Optimize `model` with its batch fixed to `batch` (the fast path the server takes per bucket).
    pub fn with_batch(model: &TypedModel, batch: usize) -> Result<Exec, OptError> {
        let mut values = HashMap::new();
        for input in &model.inputs {
            let fact = model.outlet_fact(*input).map_err(|e| internal(&e))?;
            if let Some(first) = fact.shape.iter().next() {
                for s in first.symbols() {
                    values.insert(s, TDim::Val(batch as i64));
                }
            }
        }
        let fixed = model.set_symbols(&values).map_err(|e| internal(&e))?;
        Exec::build(fixed)
    }

    fn build(model: TypedModel) -> Result<Exec, OptError> {
        let input_types = model
            .inputs
            .iter()
            .map(|i| model.outlet_fact(*i).map(|f| f.datum_type))
            .collect::<TractResult<Vec<_>>>()
            .map_err(|e| internal(&e))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| internal(&e))?;
        Ok(Exec { plan, input_types })
    }

    /// Run on one batch; the input is cast to the model's input type.
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, OptError> {
        let dt = self
            .input_types
            .first()
            .copied()
            .unwrap_or(f32::datum_type());
        let input = input.cast_to_dt(dt).map_err(|e| internal(&e))?.into_owned();
        let outputs = self.plan.run(tvec!(input.into_tvalue())).map_err(|e| {
            OptError::new(
                Reason::InvalidDataset,
                format!("running the model: {}", flat(&e)),
            )
        })?;
        Ok(outputs.into_iter().map(|t| t.into_tensor()).collect())
    }

    /// Wall time of one run on `input`.
    fn time_one(&self, input: &Tensor) -> Result<Duration, OptError> {
        let started = Instant::now();
        self.run(input)?;
        Ok(started.elapsed())
    }
}

/// Runs each plan makes before it is timed: the first allocates scratch space and faults pages in, the next few
/// let caches and the thread pool settle.
const WARM_UP_RUNS: usize = 3;
/// Rounds the timing budget is cut into: each round times every plan in turn, starting with a different one.
const ROUNDS: usize = 5;
/// Most runs per plan and round: tiny models would otherwise run hundreds of thousands of times for nothing.
const MAX_RUNS_PER_ROUND: usize = 400;

/// One plan's timing: the median run and how far it could move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median wall time of one run.
    pub median: Duration,
    /// Half the interquartile range of the runs.
    pub spread: Duration,
}

/// Time every plan on `input` for about `budget` each, interleaved: after a warm-up, [`ROUNDS`] rounds each give
/// every plan a slice of its budget (at least one run), starting with a different plan each round. Interleaving
/// puts a slow spell of the machine (a neighbour, frequency scaling) on every plan alike instead of on whichever
/// happened to be timed then, which is what made two runs of one spec choose differently.
pub fn time_interleaved(
    plans: &[Exec],
    input: &Tensor,
    budget: Duration,
) -> Result<Vec<Timing>, OptError> {
    for plan in plans {
        for _ in 0..WARM_UP_RUNS {
            plan.run(input)?;
        }
    }
    let slice = budget / ROUNDS as u32;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); plans.len()];
    for round in 0..ROUNDS {
        for offset in 0..plans.len() {
            let ix = (round + offset) % plans.len();
            let started = Instant::now();
            let mut runs = 0;
            while runs == 0 || (started.elapsed() < slice && runs < MAX_RUNS_PER_ROUND) {
                samples[ix].push(plans[ix].time_one(input)?);
                runs += 1;
            }
        }
    }
    Ok(samples.into_iter().map(summarize).collect())
}

/// Median and half the interquartile range of some run times.
fn summarize(mut times: Vec<Duration>) -> Timing {
    times.sort();
    let at = |fraction: f64| {
        times
            .get(((times.len().saturating_sub(1)) as f64 * fraction).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Timing {
        median: at(0.5),
        spread: at(0.75).saturating_sub(at(0.25)) / 2,
    }
}

fn internal(e: &TractError) -> OptError {
    OptError::new(Reason::Internal, flat(e))
}

/// Number of features per row of the first input (its shape without the batch axis), when static.
pub fn row_shape(model: &TypedModel) -> Result<Vec<usize>, OptError> {
    let input = model
        .inputs
        .first()
        .ok_or_else(|| OptError::new(Reason::InvalidModel, "the model has no input"))?;
    let fact = model.outlet_fact(*input).map_err(|e| internal(&e))?;
    fact.shape
        .iter()
        .skip(1)
        .map(|d| {
            d.to_usize().map_err(|_| {
                OptError::new(
                    Reason::InvalidModel,
                    format!("input has a non-batch dimension that is not fixed: {d}"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use std::time::Duration;

    use super::{Timing, gzip_archive, summarize};

    /// The median and the half interquartile range, in any order of runs.
    #[test]
    fn timings_summarize_to_median_and_half_iqr() {
        let micros = |values: &[u64]| values.iter().map(|v| Duration::from_micros(*v)).collect();
        for (runs, median, spread) in [
            (micros(&[50, 10, 30, 20, 40]), 30, 10),
            (micros(&[7]), 7, 0),
            (micros(&[100, 100, 100, 900, 100]), 100, 0),
        ] {
            assert_eq!(
                summarize(runs),
                Timing {
                    median: Duration::from_micros(median),
                    spread: Duration::from_micros(spread),
                }
            );
        }
        assert_eq!(summarize(Vec::new()).median, Duration::ZERO);
    }

    /// Bytes that do not compress (a xorshift stream, like dense f32 mantissas) are stored; zeros (pruned weights)
    /// are compressed; either way the gzip reads back to the same bytes, and the same input gives the same output.
    #[test]
    fn incompressible_archives_are_stored_and_compressible_ones_compressed() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let zeros = vec![0u8; 1 << 20];
        for (bytes, stored) in [(&noise, true), (&zeros, false)] {
            let archive = gzip_archive(bytes).expect("gzip");
            assert_eq!(
                archive.len() > bytes.len(),
                stored,
                "{} bytes gave {}",
                bytes.len(),
                archive.len()
            );
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&archive[..])
                .read_to_end(&mut back)
                .expect("gunzip");
            assert!(back == *bytes);
            assert!(gzip_archive(bytes).expect("gzip") == archive);
        }
    }
}
