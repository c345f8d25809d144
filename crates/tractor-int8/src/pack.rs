//! Weight quantization (symmetric, per output channel) and packing into the panel layout the kernels stream.
//!
//! Layout: output channels in panels of [`NR`], `k` padded to a multiple of [`KSTEP`]. A panel holds, for each
//! step of 8 `k`, two "quads" of 4 `k`, each quad [`NB`] blocks of 32 bytes: 8 channels × 4 consecutive `k`. One
//! 32-byte block is one `vpmaddubsw` operand against a broadcast of the same 4 `k` of one activation row, so the
//! kernel reads each panel front to back exactly once per block of rows. Padding (channels past `n`, `k` past `k`)
//! holds the encoding of weight 0, so it adds nothing to any sum.

use crate::{Error, check_len};

/// 32-byte blocks (8 output channels each) per panel: the AVX2 kernel keeps `MR × NB` i32 accumulators in registers.
pub const NB: usize = 2;
/// Output channels per panel.
pub const NR: usize = 8 * NB;
/// `k` consumed per kernel step: two quads of 4, whose `vpmaddubsw` products the narrow schemes add in 16 bits
/// before widening.
pub const KSTEP: usize = 8;

/// How weights are stored, which decides both their precision and what the kernel does per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Weights in -127..=127. Every `vpmaddubsw` result (pairs of at most 2·127·127) is widened to i32 on its own by
    /// `vpmaddwd` with ones: two multiplies per 32 products.
    I8,
    /// Weights in -63..=63 (7 bits): two `vpmaddubsw` results are added in i16 (at most 4·127·63 = 32 004) before one
    /// `vpmaddwd` widens them: three multiplies per 64 products.
    I7,
    /// Weights in -63..=63 stored offset by 64 (1..=127, all positive): two `vpmaddubsw` results add in u16 (at most
    /// 4·127·127 = 64 516) and are widened by a mask and a shift, no multiply; `64 · Σa` is subtracted at the end.
    U7,
}

impl Scheme {
    /// Largest weight magnitude.
    pub fn max_weight(self) -> i32 {
        match self {
            Scheme::I8 => 127,
            Scheme::I7 | Scheme::U7 => 63,
        }
    }

    /// What is added to each signed weight to get its stored byte (read as `i8` by the kernel).
    pub(crate) fn offset(self) -> i32 {
        match self {
            Scheme::U7 => 64,
            Scheme::I8 | Scheme::I7 => 0,
        }
    }
}

/// A weight matrix `n × k` (one row per output channel, as in `y = x · Wᵀ`), quantized and packed.
#[derive(Clone, Debug)]
pub struct PackedWeights {
    scheme: Scheme,
    k: usize,
    n: usize,
    k_padded: usize,
    /// Panels in order, each `k_padded / KSTEP` steps of `2 · NB` blocks.
    blocks: Vec<[u8; 32]>,
    /// Dequantization scale per output channel.
    scales: Vec<f32>,
    /// Σₖ of the signed quantized weights per output channel, for the activation zero-point correction.
    sums: Vec<i32>,
}

impl PackedWeights {
    /// Quantizes `weights` (`channels × depth`, row-major: row `j` is output channel `j`) with one scale per channel,
    /// the channel's largest magnitude over [`Scheme::max_weight`], and packs them.
    pub fn pack(
        weights: &[f32],
        channels: usize,
        depth: usize,
        scheme: Scheme,
    ) -> Result<Self, Error> {
        check_len("weights", channels * depth, weights.len())?;
        let k_padded = depth.div_ceil(KSTEP) * KSTEP;
        let panels = channels.div_ceil(NR);
        let steps = k_padded / KSTEP;
        let offset = scheme.offset();
        let max = scheme.max_weight() as f32;
        // Every byte starts as the encoding of 0, so the padding needs no further work.
        let mut blocks = vec![[offset as u8; 32]; panels * steps * 2 * NB];
        let mut scales = vec![1.0; channels];
        let mut sums = vec![0; channels];
        for (output_channel, row) in weights
            .chunks_exact(depth.max(1))
            .take(channels)
            .enumerate()
        {
            let largest = row.iter().fold(0f32, |largest, w| largest.max(w.abs()));
            // An all-zero channel keeps scale 1: any scale gives it the exact zeros.
            let scale = if largest > 0.0 { largest / max } else { 1.0 };
            scales[output_channel] = scale;
            let (panel, block, channel) = (
                output_channel / NR,
                (output_channel % NR) / 8,
                output_channel % 8,
            );
            for (kk, &weight) in row.iter().enumerate() {
                let quantized = (weight / scale).round().clamp(-max, max) as i32;
                sums[output_channel] += quantized;
                let (step, quad, lane) = (kk / KSTEP, (kk % KSTEP) / 4, kk % 4);
                let at = ((panel * steps + step) * 2 + quad) * NB + block;
                blocks[at][channel * 4 + lane] = (quantized + offset) as i8 as u8;
            }
        }
        Ok(Self {
            scheme,
            k: depth,
            n: channels,
            k_padded,
            blocks,
            scales,
            sums,
        })
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// How the weights are stored.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `k` rounded up to [`KSTEP`]: the row length the kernels read.
    pub(crate) fn k_padded(&self) -> usize {
        self.k_padded
    }

    /// Dequantization scale per output channel.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Σₖ of the signed quantized weights per output channel.
    pub(crate) fn sums(&self) -> &[i32] {
        &self.sums
    }

    /// Number of panels of [`NR`] channels.
    pub(crate) fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// The blocks of panel `panel`.
    pub(crate) fn panel(&self, panel: usize) -> &[[u8; 32]] {
        let len = self.k_padded / KSTEP * 2 * NB;
        &self.blocks[panel * len..(panel + 1) * len]
    }

    /// The signed quantized weight of channel `j` at `k` (0 in the padding), read back from the packed layout.
    pub fn weight(&self, j: usize, k: usize) -> i32 {
        let steps = self.k_padded / KSTEP;
        let (panel, block, channel) = (j / NR, (j % NR) / 8, j % 8);
        let (step, quad, lane) = (k / KSTEP, (k % KSTEP) / 4, k % 4);
        let at = ((panel * steps + step) * 2 + quad) * NB + block;
        self.blocks[at][channel * 4 + lane] as i8 as i32 - self.scheme.offset()
    }
}
