//! Activations quantized as ggml's `block_q8_K` (`quantize_row_q8_K_ref`, ggml-quants.c), the
//! form the K-quant super-blocks multiply: per 256 values one f32 scale d, 256 × i8 and the
//! 16 sums of each 16 quants (`bsums`, i16), which the products need for the weights' minimums
//! and offsets.
//!
//! Per block: `max` is the value of largest magnitude (the first, with its sign), the quants
//! are q = nearest(x·(−127/max)) (ties to even, ggml's `nearest_int`) clamped to 127, and
//! d = 1/(−127/max): the value of largest magnitude becomes −127, its negation 127. A block of
//! zeros has d = 0 and q = 0. A block with a NaN or an infinity gets d = NaN (and q = 0), so
//! that its products are NaN, as `Q8Rows` does: hiding it as 0 would hide damaged weights
//! upstream.
//!
//! −127, not the −128 of ggml's first Q8_K: ggml changed to −127 for
//! its IQ2 kernels, and it is what llama.cpp runs, whose greedy ids the model tests hold us to.
//! On Gemma 3's fixtures (`tests/gemma.rs`, 6 prompts × 12 tokens) −128 left llama.cpp's ids
//! at near-ties in three prompts' first steps (38 of 72 tokens compared, under the test's two
//! thirds); −127 in one prompt's third step and another's twelfth (61 of 72; the repacked
//! K-quants with 32-value activations gave 60). The kernels take either: activations are
//! multiplied as signed bytes against unsigned weights (`maddubs`), never negated.

use crate::gguf::QK_K;

/// Sums per block: one per 16 values.
pub(super) const BSUMS: usize = QK_K / 16;

/// Activations `[t][n_in]` quantized per 256 values (n_in a multiple of 256).
pub struct Q8KRows {
    pub(super) q: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) bsums: Vec<i16>,
    pub(super) n_in: usize,
}

impl Q8KRows {
    /// Quantizes `x` (`[t][n_in]`) block by block as the module says.
    pub fn quantize(x: &[f32], n_in: usize) -> Self {
        assert!(
            n_in.is_multiple_of(QK_K) && x.len().is_multiple_of(n_in.max(1)),
            "activations of {} values in rows of {n_in}",
            x.len()
        );
        let blocks = x.len() / QK_K;
        let mut out = Q8KRows {
            q: Vec::with_capacity(x.len()),
            d: Vec::with_capacity(blocks),
            bsums: Vec::with_capacity(blocks * BSUMS),
            n_in,
        };
        for b in x.chunks_exact(QK_K) {
            let (d, q) = quantize_block(b);
            out.d.push(d);
            out.bsums.extend(
                q.chunks_exact(16)
                    .map(|c| c.iter().map(|&v| v as i16).sum::<i16>()),
            );
            out.q.extend_from_slice(&q);
        }
        out
    }

    /// Tokens held.
    pub(super) fn tokens(&self) -> usize {
        self.q.len() / self.n_in.max(1)
    }

    /// Token `tt`'s blocks, its quants as `q` (the i8 quants, or a kernel's form of them, as
    /// many elements to a block).
    pub(super) fn row<'a, Q>(&'a self, tt: usize, q: &'a [Q]) -> XRow<'a, Q> {
        let nb = self.n_in / QK_K;
        let blocks = tt * nb..(tt + 1) * nb;
        let per = q.len() / self.d.len().max(1);
        XRow {
            q: &q[blocks.start * per..blocks.end * per],
            per,
            d: &self.d[blocks.clone()],
            bsums: &self.bsums[blocks.start * BSUMS..blocks.end * BSUMS],
        }
    }
}

/// One block: its scale d and quants.
fn quantize_block(b: &[f32]) -> (f32, [i8; QK_K]) {
    let mut q = [0i8; QK_K];
    // Both scans without an early exit, so that they vectorize.
    if !b.iter().fold(true, |all, v| all & v.is_finite()) {
        return (f32::NAN, q);
    }
    let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // The first value of that magnitude, with its sign.
    let Some(&max) = b.iter().find(|v| v.abs() == amax).filter(|_| amax > 0.0) else {
        return (0.0, q);
    };
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(b) {
        // ggml's `nearest_int`: adding 1.5·2²³ leaves x·iscale rounded to the nearest integer
        // (ties to even, by the f32 add itself) in the low mantissa bits, exactly for
        // |x·iscale| < 2²², here ≤ 127 up to rounding; `round_ties_even` would be a libm call
        // per value at x86-64's baseline. The clamp is ggml's, a safeguard.
        let bits = (v * iscale + 12_582_912.0).to_bits() as i32;
        *q = ((bits & 0x007f_ffff) - 0x0040_0000).clamp(-128, 127) as i8;
    }
    (1.0 / iscale, q)
}

/// A token's quantized activations as a kernel reads them: `q` its quants (i8, or the
/// kernel's own form of them, `per` to a block), `d` and `bsums` as [`Q8KRows`] holds them.
pub(super) struct XRow<'a, Q> {
    pub(super) q: &'a [Q],
    pub(super) per: usize,
    pub(super) d: &'a [f32],
    pub(super) bsums: &'a [i16],
}

/// Block `i` of `N` tokens' [`XRow`]s, as a kernel reads a super-block's activations.
#[derive(Clone, Copy)]
pub(super) struct XBlocks<'a, 'r, Q, const N: usize> {
    pub(super) rows: [&'r XRow<'a, Q>; N],
    pub(super) i: usize,
}

impl<'a, Q, const N: usize> XBlocks<'a, '_, Q, N> {
    /// Token `t`'s quants.
    #[inline(always)]
    pub(super) fn q(&self, t: usize) -> &'a [Q] {
        let x = self.rows[t];
        &x.q[self.i * x.per..(self.i + 1) * x.per]
    }

    /// Token `t`'s 16 sums.
    #[inline(always)]
    pub(super) fn bsums(&self, t: usize) -> &'a [i16] {
        &self.rows[t].bsums[self.i * BSUMS..(self.i + 1) * BSUMS]
    }
}
