//! The AVX2 kernel, the crate's only unsafe code: a tile of [`MR`] rows × [`NR`] channels kept in i32 registers while
//! a weight panel streams through `vpmaddubsw` (u8 activations × i8 weights, pairs summed in i16).
//!
//! Zen 2 (the target without VNNI) issues vector integer multiplies on one pipe only, so the schemes differ in how
//! many multiplies they spend per 32 products: `vpmaddubsw` itself, then `vpmaddwd` by ones to widen to i32
//! ([`Scheme::I8`]: one per `vpmaddubsw`; [`Scheme::I7`]: one per two), or none ([`Scheme::U7`]: mask and shift).

use std::arch::x86_64::{
    __m256i, _mm256_add_epi16, _mm256_add_epi32, _mm256_and_si256, _mm256_loadu_si256,
    _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_set1_epi32,
    _mm256_setzero_si256, _mm256_srli_epi32, _mm256_storeu_si256,
};

use crate::pack::{KSTEP, NB, NR, PackedWeights, Scheme};
use crate::quant::QuantizedRows;

/// Rows per tile: `MR × NB` accumulators, two broadcasts and the constants fill the 16 ymm registers.
const MR: usize = 4;

/// Proof that this CPU has AVX2: only [`Avx2::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

impl Avx2 {
    /// `Some` when the CPU running this has AVX2.
    pub(super) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }

    /// Every tile of `rows × w`, raw sums handed to [`super::finish`].
    pub(super) fn run(
        self,
        rows: &QuantizedRows,
        w: &PackedWeights,
        sink: &mut impl FnMut(usize, usize, &[i32]),
    ) {
        match w.scheme() {
            // SAFETY: `self` exists only when `detect` found AVX2 on this CPU, the one feature `run_scheme` enables.
            Scheme::I8 => unsafe { run_scheme::<I8>(rows, w, sink) },
            // SAFETY: as above.
            Scheme::I7 => unsafe { run_scheme::<I7>(rows, w, sink) },
            // SAFETY: as above.
            Scheme::U7 => unsafe { run_scheme::<U7>(rows, w, sink) },
        }
    }
}

/// [`Scheme::I8`] as a const parameter.
const I8: u8 = 0;
/// [`Scheme::I7`] as a const parameter.
const I7: u8 = 1;
/// [`Scheme::U7`] as a const parameter.
const U7: u8 = 2;

/// Tiles of [`MR`] rows, then the remaining rows one at a time, panel by panel: a panel (`k · NR` bytes, 40 KiB at
/// k = 2560) stays in L2 while every row block reads it.
#[target_feature(enable = "avx2")]
fn run_scheme<const SCHEME: u8>(
    rows: &QuantizedRows,
    w: &PackedWeights,
    sink: &mut impl FnMut(usize, usize, &[i32]),
) {
    let count = rows.rows();
    for panel in 0..w.panels() {
        let blocks = w.panel(panel);
        let mut row = 0;
        while row + MR <= count {
            let a: [&[[u8; 4]]; MR] = std::array::from_fn(|r| rows.row(row + r).as_chunks().0);
            let raw = tile::<MR, SCHEME>(&a, blocks);
            for (r, raw) in raw.iter().enumerate() {
                super::finish(rows, w, row + r, panel, raw, sink);
            }
            row += MR;
        }
        for row in row..count {
            let raw = tile::<1, SCHEME>(&[rows.row(row).as_chunks().0], blocks);
            super::finish(rows, w, row, panel, &raw[0], sink);
        }
    }
}

/// Raw sums `Σ row · stored` of the `M` rows of `rows` (as 4-byte groups) with one panel.
#[target_feature(enable = "avx2")]
fn tile<const M: usize, const SCHEME: u8>(
    rows: &[&[[u8; 4]]; M],
    panel: &[[u8; 32]],
) -> [[i32; NR]; M] {
    let steps = panel.len() / (2 * NB);
    for row in rows {
        assert_eq!(
            row.len(),
            steps * KSTEP / 4,
            "a quantized row is as long as a panel"
        );
    }
    let ones = _mm256_set1_epi16(1);
    let low = _mm256_set1_epi32(0xffff);
    let mut acc = [[_mm256_setzero_si256(); NB]; M];
    for (step, blocks) in panel.chunks_exact(2 * NB).enumerate() {
        let mut w0 = [_mm256_setzero_si256(); NB];
        let mut w1 = [_mm256_setzero_si256(); NB];
        for block in 0..NB {
            w0[block] = load(&blocks[block]);
            w1[block] = load(&blocks[NB + block]);
        }
        for row in 0..M {
            let a0 = _mm256_set1_epi32(i32::from_ne_bytes(rows[row][2 * step]));
            let a1 = _mm256_set1_epi32(i32::from_ne_bytes(rows[row][2 * step + 1]));
            for block in 0..NB {
                // Each i16 lane: a·w + a'·w' for two adjacent k of one channel, at most 2·127·127: never saturated.
                let p0 = _mm256_maddubs_epi16(a0, w0[block]);
                let p1 = _mm256_maddubs_epi16(a1, w1[block]);
                let sum = match SCHEME {
                    I8 => {
                        _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones))
                    }
                    // |p0 + p1| ≤ 4·127·63 = 32 004: exact in i16.
                    I7 => _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones),
                    // 0 ≤ p0 + p1 ≤ 4·127·127 = 64 516: exact in u16; the two u16 of each i32 lane added as i32.
                    _ => {
                        let pair_sums = _mm256_add_epi16(p0, p1);
                        _mm256_add_epi32(
                            _mm256_and_si256(pair_sums, low),
                            _mm256_srli_epi32::<16>(pair_sums),
                        )
                    }
                };
                acc[row][block] = _mm256_add_epi32(acc[row][block], sum);
            }
        }
    }
    let mut out = [[0i32; NR]; M];
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (out, acc) in out.as_chunks_mut::<8>().0.iter_mut().zip(acc) {
            store(out, *acc);
        }
    }
    out
}

/// Loads 32 bytes.
#[target_feature(enable = "avx2")]
fn load(bytes: &[u8; 32]) -> __m256i {
    // SAFETY: `bytes` is 32 readable bytes, and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// Stores the 8 lanes of `v` into `out`.
#[target_feature(enable = "avx2")]
fn store(out: &mut [i32; 8], v: __m256i) {
    // SAFETY: `out` is 8 writable i32 (32 bytes), and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}
