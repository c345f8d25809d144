//! Integer dense layers (`y = x·Wᵀ + b` with u8 activations × i8 weights accumulated in i32) for x86-64 CPUs with
//! AVX2 but no VNNI, where tract 0.23's own integer path runs at a few percent of its f32 speed.
//!
//! The pieces, in the order a layer uses them:
//! - [`PackedWeights`]: weights quantized per output channel (symmetric, one f32 scale per channel) and packed in the
//!   kernel's panel layout, with per-channel sums for the activation zero-point correction ([`pack`]);
//! - [`QuantizedRows`]: activations quantized per row at run time to 7-bit unsigned values with a zero point
//!   ([`quant`]);
//! - [`accumulate`]: the exact i32 dot products, by the AVX2 kernel when the CPU has it (checked at run time) or the
//!   portable scalar loop, which is also the reference the AVX2 kernel is tested against ([`gemm`]);
//! - [`linear`]: the three steps and the f32 epilogue (per-row × per-channel scale, plus bias).
//!
//! Why 7-bit activations: `vpmaddubsw` multiplies u8 by i8 and adds adjacent pairs into a *saturating* i16. With
//! activations in 0..=127 and weights in -127..=127 a pair is at most 2·127·127 = 32 258 < 32 767, so the sums are
//! exact, never saturated. A row after ReLU is non-negative, so 0..=127 with zero point 0 has the same 128 levels
//! as i8 symmetric would; a signed row gets 128 levels over its own [min, max].
//!
//! Weights come in three [`Scheme`]s, a trade of precision for speed on CPUs whose vector integer multiplies issue
//! on one pipe (Zen 2: going from two to 1.5 multiplies per 32 products measured 1.30× faster, the expected 1.33×): [`Scheme::I8`] (8-bit weights, two multiplies per 32 products) and the 7-bit
//! [`Scheme::I7`] / [`Scheme::U7`] (1.5 and 1 multiplies per 32 products), which add two products in 16 bits before
//! widening. The accuracy gate of `tractor optimize` is what should choose between them.
//!
//! Unsafe code is confined to the [`gemm`] module's AVX2 kernel (SIMD loads and stores, and calling it after
//! detection); the rest of the crate denies it.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod gemm;
pub mod pack;
pub mod quant;

#[cfg(test)]
mod test_support;

pub use gemm::{Kernel, accumulate};
pub use pack::{PackedWeights, Scheme};
pub use quant::QuantizedRows;

/// What went wrong in a call to this crate: always a caller's shape mistake, the arithmetic itself cannot fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A buffer's length does not match the shapes it is used with.
    #[error("{what}: expected {expected} values, got {actual}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// The length the shapes imply.
        expected: usize,
        /// The length given.
        actual: usize,
    },
}

impl Error {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Shape { .. } => "shape",
        }
    }
}

/// Checks that `what` has `expected` values.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected,
            actual,
        })
    }
}

/// `out = input · Wᵀ + bias` for `input` of `rows × weights.k()` and `out` of `rows × weights.n()`, both row-major
/// f32, through the integer path: quantize each row of `input`, accumulate u8 × i8 in i32 with `kernel`, scale each
/// result by its row's and channel's scales and add the bias (one per output channel, or none).
pub fn linear(
    input: &[f32],
    rows: usize,
    weights: &PackedWeights,
    bias: Option<&[f32]>,
    out: &mut [f32],
    kernel: Kernel,
) -> Result<(), Error> {
    let channels = weights.n();
    check_len("x", rows * weights.k(), input.len())?;
    check_len("out", rows * channels, out.len())?;
    if let Some(bias) = bias {
        check_len("bias", channels, bias.len())?;
    }
    let quantized = QuantizedRows::quantize(input, rows, weights.k())?;
    let scales = weights.scales();
    gemm::for_each_tile(&quantized, weights, kernel, |row, first, dots| {
        let row_scale = quantized.scale(row);
        let at = row * channels + first;
        let out = &mut out[at..at + dots.len()];
        let scales = &scales[first..first + dots.len()];
        match bias {
            Some(bias) => {
                let bias = &bias[first..first + dots.len()];
                for (((out, &dot), &scale), &bias) in out.iter_mut().zip(dots).zip(scales).zip(bias)
                {
                    *out = dot as f32 * (row_scale * scale) + bias;
                }
            }
            None => {
                for ((out, &dot), &scale) in out.iter_mut().zip(dots).zip(scales) {
                    *out = dot as f32 * (row_scale * scale);
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Rng;

    /// f32 `x · Wᵀ + b`, accumulated in f64 so that the comparison measures quantization only.
    fn matmul(
        x: &[f32],
        rows: usize,
        weights: &[f32],
        n: usize,
        k: usize,
        bias: &[f32],
    ) -> Vec<f32> {
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|kk| f64::from(x[r * k + kk]) * f64::from(weights[j * k + kk]))
                    .sum();
                out[r * n + j] = (dot + f64::from(bias[j])) as f32;
            }
        }
        out
    }

    #[test]
    fn linear_is_within_the_quantization_bound_of_f32() {
        let mut rng = Rng(7);
        for &(rows, k, n) in &[(1, 2560, 40), (5, 300, 17), (32, 129, 33)] {
            let input: Vec<f32> = (0..rows * k).map(|_| rng.uniform() * 3.0).collect();
            let weights: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 0.05).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            let expected = matmul(&input, rows, &weights, n, k, &bias);
            for scheme in [Scheme::I8, Scheme::I7, Scheme::U7] {
                let packed = PackedWeights::pack(&weights, n, k, scheme).expect("shapes match");
                let quantized = QuantizedRows::quantize(&input, rows, k).expect("shapes match");
                for kernel in [Kernel::Scalar, Kernel::detect()] {
                    let mut out = vec![0.0; rows * n];
                    linear(&input, rows, &packed, Some(&bias), &mut out, kernel)
                        .expect("shapes match");
                    for row in 0..rows {
                        let sa = quantized.scale(row);
                        for channel in 0..n {
                            let sw = packed.scales()[channel];
                            // |x − x̂| ≤ sa/2 and |w − ŵ| ≤ sw/2, so |Σ x·w − Σ x̂·ŵ| ≤ Σ (|x|·sw/2 + |ŵ|·sa/2);
                            // plus f32 rounding of the epilogue, relative to Σ |x·w|.
                            let bound: f32 = (0..k)
                                .map(|kk| {
                                    let (xv, wv) = (input[row * k + kk], weights[channel * k + kk]);
                                    xv.abs() * sw / 2.0
                                        + (wv.abs() + sw / 2.0) * sa / 2.0
                                        + 1e-5 * (xv * wv).abs()
                                })
                                .sum();
                            let (got, want) = (out[row * n + channel], expected[row * n + channel]);
                            assert!(
                                (got - want).abs() <= bound + 1e-5,
                                "{scheme:?} {kernel:?} ({rows}, {k}, {n}) [{row}, {channel}]: {got} vs {want}, bound {bound}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_error_is_far_below_the_worst_case_bound_on_random_data() {
        // The bound above is a worst case; random rounding errors cancel, so the typical error is ~√k smaller. This
        // guards against a systematically wrong scale or zero point, which the bound is too loose to catch.
        let (rows, k, n) = (8, 1024, 64);
        let mut rng = Rng(11);
        let x: Vec<f32> = (0..rows * k).map(|_| rng.uniform().max(0.0)).collect();
        let weights: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 0.03).collect();
        let bias = vec![0.0; n];
        let expected = matmul(&x, rows, &weights, n, k, &bias);
        let spread = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let w = PackedWeights::pack(&weights, n, k, Scheme::I8).expect("shapes match");
        let mut out = vec![0.0; rows * n];
        linear(&x, rows, &w, None, &mut out, Kernel::detect()).expect("shapes match");
        let error = out
            .iter()
            .zip(&expected)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            error < 0.02 * spread,
            "largest error {error} of outputs up to {spread}"
        );
    }

    #[test]
    fn shapes_are_checked() {
        let w = PackedWeights::pack(&[0.0; 6], 2, 3, Scheme::I8).expect("shapes match");
        let mut out = [0.0; 2];
        let error = linear(&[0.0; 4], 1, &w, None, &mut out, Kernel::Scalar)
            .expect_err("x is 1 × 4, not 1 × 3");
        assert_eq!(error.category(), "shape");
        assert!(PackedWeights::pack(&[0.0; 5], 2, 3, Scheme::I8).is_err());
    }
}
