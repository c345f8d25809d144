//! Activation quantization at run time: each row to 7-bit unsigned values (0..=127) with its own scale and zero
//! point.
//!
//! Per row and at run time rather than calibrated ahead: it needs no calibration set, a row's range is exactly
//! covered (no clipping of an unusual input), and it costs one pass over `rows × k` against the GEMM's
//! `rows × k × n`. The range always includes 0, so 0 is exactly representable (ReLU's zeros and the padding stay 0).

use crate::pack::KSTEP;
use crate::{Error, check_len};

/// Largest quantized activation: 7 bits, so that `vpmaddubsw`'s i16 pair sums cannot saturate.
pub const MAX_ACTIVATION: i32 = 127;

/// Rows of activations quantized to 0..=127: `x ≈ scale · (a − zero)`, each row padded with zeros to the kernels'
/// step.
#[derive(Clone, Debug)]
pub struct QuantizedRows {
    rows: usize,
    k_padded: usize,
    values: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<i32>,
    sums: Vec<i32>,
}

impl QuantizedRows {
    /// Quantizes `input`, `rows × depth` row-major.
    pub fn quantize(input: &[f32], rows: usize, depth: usize) -> Result<Self, Error> {
        check_len("x", rows * depth, input.len())?;
        let k_padded = depth.div_ceil(KSTEP) * KSTEP;
        let mut values = vec![0u8; rows * k_padded];
        let mut scales = Vec::with_capacity(rows);
        let mut zeros = Vec::with_capacity(rows);
        let mut sums = Vec::with_capacity(rows);
        for row in 0..rows {
            let row_values = &input[row * depth..(row + 1) * depth];
            let (low, high) = row_values
                .iter()
                .fold((0f32, 0f32), |(low, high), &v| (low.min(v), high.max(v)));
            let (scale, zero) = if high > low {
                let scale = (high - low) / MAX_ACTIVATION as f32;
                (
                    scale,
                    (-low / scale).round().clamp(0.0, MAX_ACTIVATION as f32),
                )
            } else {
                (1.0, 0.0)
            };
            let inverse = 1.0 / scale;
            // `+ 0.5` then truncation rounds half up; the clamp before the cast keeps it in range and lets the loop
            // vectorize (no call to `roundf`). The error stays within half a step.
            let bias = zero + 0.5;
            let out = &mut values[row * k_padded..row * k_padded + depth];
            let mut sum = 0i32;
            for (out, &value) in out.iter_mut().zip(row_values) {
                let quantized = (value * inverse + bias).clamp(0.0, MAX_ACTIVATION as f32) as u8;
                *out = quantized;
                sum += i32::from(quantized);
            }
            scales.push(scale);
            zeros.push(zero as i32);
            sums.push(sum);
        }
        Ok(Self {
            rows,
            k_padded,
            values,
            scales,
            zeros,
            sums,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `row`'s quantized values, padded to the kernels' step.
    pub fn row(&self, row: usize) -> &[u8] {
        &self.values[row * self.k_padded..(row + 1) * self.k_padded]
    }

    /// Row length including the padding.
    pub(crate) fn k_padded(&self) -> usize {
        self.k_padded
    }

    /// Row `row`'s scale.
    pub fn scale(&self, row: usize) -> f32 {
        self.scales[row]
    }

    /// Row `row`'s zero point.
    pub fn zero(&self, row: usize) -> i32 {
        self.zeros[row]
    }

    /// Σ of row `row`'s quantized values (for the offset weights' correction).
    pub(crate) fn sum(&self, row: usize) -> i32 {
        self.sums[row]
    }
}
