//! The integer GEMM: exact i32 dot products of quantized rows with packed weights, by the AVX2 kernel when the CPU has
//! it or by the portable scalar loop (aarch64 and older x86 take it), with the zero-point and offset corrections.

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2;

use crate::pack::{KSTEP, NB, NR, PackedWeights};
use crate::quant::QuantizedRows;
use crate::{Error, check_len};

/// Which integer kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The portable loop over the packed layout.
    Scalar,
    /// `vpmaddubsw`-based AVX2 kernel; falls back to [`Kernel::Scalar`] on a CPU without AVX2.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if avx2::Avx2::detect().is_some() {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }
}

/// The exact dot products `Σₖ (a − zero) · w` of every row of `rows` with every output channel of `w`, into `out`
/// (`rows × n`, row-major).
pub fn accumulate(
    rows: &QuantizedRows,
    w: &PackedWeights,
    out: &mut [i32],
    kernel: Kernel,
) -> Result<(), Error> {
    check_len("quantized row", w.k_padded(), rows.k_padded())?;
    let n = w.n();
    check_len("out", rows.rows() * n, out.len())?;
    for_each_tile(rows, w, kernel, |row, first, dots| {
        out[row * n + first..row * n + first + dots.len()].copy_from_slice(dots);
    });
    Ok(())
}

/// Runs `kernel` over all rows and panels, handing `sink(row, first channel, dots)` the corrected dot products of one
/// row with up to [`NR`] consecutive channels (fewer in the last panel). The caller has checked the shapes.
pub(crate) fn for_each_tile(
    rows: &QuantizedRows,
    w: &PackedWeights,
    kernel: Kernel,
    mut sink: impl FnMut(usize, usize, &[i32]),
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2
        && let Some(avx2) = avx2::Avx2::detect()
    {
        avx2.run(rows, w, &mut sink);
        return;
    }
    let _ = kernel;
    scalar(rows, w, &mut sink);
}

/// Turns one row's raw sums `Σ a · stored` over a panel into `Σ (a − zero) · w` and hands them to `sink`.
fn finish(
    rows: &QuantizedRows,
    w: &PackedWeights,
    row: usize,
    panel: usize,
    raw: &[i32; NR],
    sink: &mut impl FnMut(usize, usize, &[i32]),
) {
    let first = panel * NR;
    let width = NR.min(w.n() - first);
    // Stored weights are `w + offset`: Σ a · (w + offset) = Σ a · w + offset · Σ a.
    let offset = w.scheme().offset() * rows.sum(row);
    let zero = rows.zero(row);
    let mut dots = [0i32; NR];
    for ((dot, &raw), &sum) in dots
        .iter_mut()
        .zip(raw)
        .zip(&w.sums()[first..first + width])
    {
        *dot = raw - offset - zero * sum;
    }
    sink(row, first, &dots[..width]);
}

/// The portable kernel: the same sums as the AVX2 one, one multiply-add at a time.
fn scalar(rows: &QuantizedRows, w: &PackedWeights, sink: &mut impl FnMut(usize, usize, &[i32])) {
    for panel in 0..w.panels() {
        let blocks = w.panel(panel);
        for row in 0..rows.rows() {
            let a = rows.row(row);
            let mut raw = [0i32; NR];
            for (step, blocks) in blocks.chunks_exact(2 * NB).enumerate() {
                for (quad, blocks) in blocks.chunks_exact(NB).enumerate() {
                    let at = step * KSTEP + quad * 4;
                    let a = &a[at..at + 4];
                    for (block, bytes) in blocks.iter().enumerate() {
                        for (channel, weights) in bytes.chunks_exact(4).enumerate() {
                            let sum: i32 = a
                                .iter()
                                .zip(weights)
                                .map(|(&a, &w)| i32::from(a) * i32::from(w as i8))
                                .sum();
                            raw[block * 8 + channel] += sum;
                        }
                    }
                }
            }
            finish(rows, w, row, panel, &raw, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Scheme;
    use crate::test_support::Rng;

    /// `Σ (a − zero) · w` straight from the definitions, one element at a time: independent of the panel layout's
    /// walk and of the offset correction.
    fn reference(rows: &QuantizedRows, w: &PackedWeights) -> Vec<i32> {
        let mut out = vec![0; rows.rows() * w.n()];
        for row in 0..rows.rows() {
            let a = rows.row(row);
            for j in 0..w.n() {
                out[row * w.n() + j] = (0..w.k())
                    .map(|k| (i32::from(a[k]) - rows.zero(row)) * w.weight(j, k))
                    .sum();
            }
        }
        out
    }

    /// Shapes around the block sizes (NR = 16 channels, 4-row tiles, k steps of 8), rows = 1, and a large k.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 8, 16),
        (1, 2560, 37),
        (3, 7, 5),
        (4, 16, 16),
        (5, 9, 17),
        (7, 33, 31),
        (8, 64, 48),
        (13, 100, 50),
        (32, 257, 129),
        (2, 4099, 20),
    ];

    #[test]
    fn kernels_match_the_reference_bit_for_bit() {
        let mut rng = Rng(0x5eed);
        for &(rows, k, n) in SHAPES {
            // Signed inputs (a zero point) and ReLU-like ones (zero point 0), spread over several magnitudes.
            for signed in [true, false] {
                let x: Vec<f32> = (0..rows * k)
                    .map(|_| {
                        let v = rng.uniform() * 4.0;
                        if signed { v } else { v.max(0.0) }
                    })
                    .collect();
                let weights: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 0.1).collect();
                let quantized = QuantizedRows::quantize(&x, rows, k).expect("shapes match");
                for scheme in [Scheme::I8, Scheme::I7, Scheme::U7] {
                    let w = PackedWeights::pack(&weights, n, k, scheme).expect("shapes match");
                    let expected = reference(&quantized, &w);
                    for kernel in [Kernel::Scalar, Kernel::detect()] {
                        let mut got = vec![0; rows * n];
                        accumulate(&quantized, &w, &mut got, kernel).expect("shapes match");
                        assert_eq!(
                            got, expected,
                            "{kernel:?} {scheme:?} rows {rows} k {k} n {n}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        // Every activation 127 and every weight at the scheme's extreme, same sign: the largest pair sums.
        let (rows, k, n) = (5, 64, 24);
        for sign in [1.0f32, -1.0] {
            let x = vec![1.0; rows * k];
            let weights = vec![sign; n * k];
            let quantized = QuantizedRows::quantize(&x, rows, k).expect("shapes match");
            for scheme in [Scheme::I8, Scheme::I7, Scheme::U7] {
                let w = PackedWeights::pack(&weights, n, k, scheme).expect("shapes match");
                let mut got = vec![0; rows * n];
                accumulate(&quantized, &w, &mut got, Kernel::detect()).expect("shapes match");
                let expected = sign as i32 * 127 * scheme.max_weight() * k as i32;
                assert!(
                    got.iter().all(|&dot| dot == expected),
                    "{scheme:?}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn the_avx2_kernel_is_detected_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            Kernel::detect() == Kernel::Avx2,
            is_x86_feature_detected!("avx2")
        );
    }
}
