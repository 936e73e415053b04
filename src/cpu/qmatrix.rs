//! Quantized matrix products for the `cpu-q8` backend: weights stay in their GGUF blocks
//! (Q4_0, Q4_1, Q8_0; ggml-common.h), activations are quantized per 32-value block to int8
//! with one f32 scale (llama.cpp's Q8_1 idea), and each block's dot product is an integer sum:
//!
//!   Σ_i w_i·x_i ≈ d_w·d_x·Σ_i q_w,i·q_x,i + b_w·s_x
//!
//! where w = q_w·d_w + b_w (Q4_1: b_w = m; Q4_0: q_w − 8, so b_w = −8·d_w; Q8_0: b_w = 0) and
//! s_x = d_x·Σ_i q_x,i. The error against f32 is the activations' rounding (≤ d_x/2 per value).
//!
//! Written by hand: the crates that multiply GGUF blocks (candle, ggml bindings) are large or
//! need a C toolchain. The kernel is plain Rust (`row_dot_plain`, the reference), with an
//! AVX2 version chosen at run time on x86_64 (`rows_dot_avx2`; the only `unsafe` of the crate:
//! calling it after the CPU check) and a SIMD128 one chosen at build time for wasm32
//! (`simd128.rs`).
//!
//! All three give the same f32, bit for bit (tests: `*_is_the_plain_one_to_the_bit`, the
//! SIMD128 one in node), so the browser's greedy tokens are the native ones: the float order is
//! fixed as AVX2 computes it most cheaply — eight lanes per block, lane k the exact integer sum
//! over activations 4k..4k+3 — and scaled by a multiply and an add, never a fused
//! multiply-add, which WebAssembly lacks (its relaxed-SIMD `madd` may or may not fuse). With
//! fused multiply-adds (and whole-block sums in the plain loop) the kernels agreed only to
//! within 1e-5; without them native decode is as fast and prefill perhaps a few % slower,
//! within the noise (benches/README.md).
//!
//! Prefill multiplies each weight row by several tokens: the kernels take `GROUP` of them at
//! once, loading and unpacking each weight block once for all, each token with its own sums
//! in the order above, so a token's f32 do not depend on its neighbours (tested against the
//! single-token kernels for 1..9 tokens). Against one token at a time: prefill about +25% in
//! wasm (SIMD128, which also widens the activations once, `simd128.rs`) and +16% natively
//! (AVX2, one thread), native decode unchanged (benches/README.md, benches/HISTORY.md).

use crate::gguf::GgmlType;
use half::f16;

/// Values per quantization block.
pub(super) const QK: usize = 32;

/// A `[rows][n_in]` weight matrix from its GGUF blocks: per block the quants as they are
/// (16 bytes of nibbles or 32 × i8) and its scale d and offset b as f32 (converted from f16
/// once, at load), so that a weight is q·d + b. Q8_0 has no offset (b = 0) and stores none,
/// which spares decode 4 of every 40 bytes it reads of the output head.
pub struct QMatrix {
    ty: GgmlType,
    /// Q4_0/Q4_1: `[rows·nb][16]` bytes; Q8_0: `[rows·nb][32]`.
    qs: Vec<u8>,
    d: Vec<f32>, // [rows·nb]
    b: Vec<f32>, // [rows·nb]; empty for Q8_0
    rows: usize,
    n_in: usize,
}

/// Activations `[t][n_in]` quantized per block: `q` int8, `d` the scale and `s` = d·Σq of
/// each block.
pub struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    n_in: usize,
}

impl Q8Rows {
    /// Quantizes `x` (`[t][n_in]`, n_in a multiple of 32): d = max|x|/127 per block.
    pub fn quantize(x: &[f32], n_in: usize) -> Self {
        let blocks = x.len() / QK;
        let (mut q, mut d, mut s) = (
            Vec::with_capacity(x.len()),
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
        );
        for b in x.chunks_exact(QK) {
            let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // A NaN or infinity stays one: a NaN scale makes the block's products NaN (`max`
            // skips NaN, and `NaN as i8` is 0, which would hide damaged weights upstream).
            let finite = b.iter().all(|v| v.is_finite());
            let scale = if finite { amax / 127.0 } else { f32::NAN };
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for &v in b {
                let qi = (v * inv).round() as i8;
                sum += qi as i32;
                q.push(qi);
            }
            d.push(scale);
            s.push(scale * sum as f32);
        }
        Q8Rows { q, d, s, n_in }
    }

    /// Token `tt`'s blocks (`nb` per token).
    fn row(&self, tt: usize, nb: usize) -> Blocks<'_> {
        let blocks = tt * nb..(tt + 1) * nb;
        Blocks {
            q: bytemuck::cast_slice(&self.q[blocks.start * QK..blocks.end * QK]),
            d: &self.d[blocks.clone()],
            b: &self.s[blocks],
        }
    }
}

impl QMatrix {
    /// `bytes` hold `rows · n_in` weights of type `ty` (checked by the GGUF reader); `None`
    /// for types this backend does not multiply in blocks.
    pub fn new(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Self> {
        if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) || rows == 0 {
            return None;
        }
        let bb = ty.block().1 as usize;
        let n_blocks = bytes.len() / bb;
        if !bytes.len().is_multiple_of(bb) || !n_blocks.is_multiple_of(rows) {
            return None;
        }
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (mut qs, mut d, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for blk in bytes.chunks_exact(bb) {
            let dw = half(blk);
            let (bias, quants) = match ty {
                GgmlType::Q4_1 => (half(&blk[2..]), &blk[4..]),
                GgmlType::Q4_0 => (-8.0 * dw, &blk[2..]),
                _ => (0.0, &blk[2..]),
            };
            d.push(dw);
            if ty != GgmlType::Q8_0 {
                b.push(bias);
            }
            qs.extend_from_slice(quants);
        }
        Some(QMatrix {
            ty,
            qs,
            d,
            b,
            rows,
            n_in: n_blocks / rows * QK,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn n_in(&self) -> usize {
        self.n_in
    }

    /// Bytes of quants per block.
    fn qb(&self) -> usize {
        if self.ty == GgmlType::Q8_0 {
            QK
        } else {
            QK / 2
        }
    }

    /// Weight row `o`'s blocks.
    fn row_blocks(&self, o: usize) -> Blocks<'_> {
        let (nb, qb) = (self.n_in / QK, self.qb());
        Blocks {
            q: &self.qs[o * nb * qb..(o + 1) * nb * qb],
            d: &self.d[o * nb..(o + 1) * nb],
            b: self.b.get(o * nb..(o + 1) * nb).unwrap_or(&[]),
        }
    }

    /// Row `o` dequantized (an embedding lookup).
    pub fn row(&self, o: usize) -> Option<Vec<f32>> {
        let nb = self.n_in / QK;
        if o >= self.rows {
            return None;
        }
        let mut out = Vec::with_capacity(self.n_in);
        for blk in o * nb..(o + 1) * nb {
            let q = &self.qs[blk * self.qb()..(blk + 1) * self.qb()];
            let (d, b) = (self.d[blk], self.b.get(blk).copied().unwrap_or(0.0));
            if self.ty == GgmlType::Q8_0 {
                out.extend(q.iter().map(|&v| v as i8 as f32 * d + b));
            } else {
                out.extend(q.iter().map(|&v| (v & 15) as f32 * d + b));
                out.extend(q.iter().map(|&v| (v >> 4) as f32 * d + b));
            }
        }
        Some(out)
    }

    /// `out[t][o] = Σ_i W[o][i]·x[t][i]` for quantized `x` (`[t][n_in]`); out: `[t][rows]`.
    pub fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.n_in, self.n_in, "activation width");
        let t = x.d.len() * QK / self.n_in;
        // A few tasks per thread, each of at least 64 rows: a task costs a few µs to hand
        // out, a 576-wide row about 0.1 µs to compute.
        let per_task = (self.rows / (4 * crate::ops::threads())).max(64);
        crate::ops::by_weight_rows(self.rows, t, per_task, |o0, chunk| {
            rows_dot(self, x, o0, chunk)
        })
    }
}

/// A row's blocks: quants, scales and offsets (none for Q8_0 weights; for activations: i8
/// quants as bytes — for the SIMD128 kernel widened to i16, `simd128::widen` —, d, and
/// s = d·Σq).
pub(super) struct Blocks<'a> {
    pub(super) q: &'a [u8],
    pub(super) d: &'a [f32],
    pub(super) b: &'a [f32],
}

/// Tokens whose products with one weight row a kernel computes together: each weight block is
/// loaded and unpacked once for all of them (prefill), each token keeping its own sums in
/// [`row_dot_plain`]'s order, so the f32 are the single-token ones. The tokens left over
/// (and decode's one) go one at a time.
pub(super) const GROUP: usize = 4;

/// `out[(o - first)·t + tt]` = W[o]·x[tt] for the weight rows from `first` that `out` covers
/// (`[rows][t]`). The kernel is chosen at build time for wasm32 with SIMD128, at run time on
/// x86_64 (AVX2); all of them give the same f32 ([`row_dot_plain`] says how).
fn rows_dot(m: &QMatrix, x: &Q8Rows, first: usize, out: &mut [f32]) {
    let nb = m.n_in / QK;
    let xs: Vec<Blocks<'_>> = (0..x.d.len() / nb).map(|tt| x.row(tt, nb)).collect();
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use super::simd128::{row_dot, widen};
        // SIMD128 reads the activations widened to i16 (`widen`): once here for all the rows.
        let wide = widen(&x.q);
        let wide: &[u8] = bytemuck::cast_slice(&wide);
        let xs: Vec<Blocks<'_>> = (xs.iter().zip(wide.chunks_exact(2 * m.n_in)))
            .map(|(x, q)| Blocks { q, d: x.d, b: x.b })
            .collect();
        let one = |i, w: &Blocks<'_>, x: &Blocks<'_>| row_dot::<1>(i, w, [x])[0];
        return rows_dot_with(m, &xs, first, out, row_dot::<GROUP>, one);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), all that `rows_dot_avx2` needs.
        return unsafe { rows_dot_avx2(m, &xs, first, out) };
    }
    #[allow(unreachable_code)] // wasm32 with SIMD128 returned above
    rows_dot_with(
        m,
        &xs,
        first,
        out,
        |i, w, xs| xs.map(|x| row_dot_plain(i, w, x)),
        row_dot_plain,
    )
}

/// [`rows_dot`] on the tokens `xs` with the kernels given: `group` for [`GROUP`] tokens at a
/// time, `one` for the rest.
#[inline(always)]
pub(super) fn rows_dot_with(
    m: &QMatrix,
    xs: &[Blocks<'_>],
    first: usize,
    out: &mut [f32],
    group: impl Fn(bool, &Blocks<'_>, [&Blocks<'_>; GROUP]) -> [f32; GROUP],
    one: impl Fn(bool, &Blocks<'_>, &Blocks<'_>) -> f32,
) {
    let int8 = m.ty == GgmlType::Q8_0;
    for (r, row_out) in out.chunks_mut(xs.len()).enumerate() {
        let w = m.row_blocks(first + r);
        let mut ys = row_out.chunks_exact_mut(GROUP);
        let mut xg = xs.chunks_exact(GROUP);
        for (y, xg) in (&mut ys).zip(&mut xg) {
            y.copy_from_slice(&group(int8, &w, std::array::from_fn(|k| &xg[k])));
        }
        for (y, xr) in ys.into_remainder().iter_mut().zip(xg.remainder()) {
            *y = one(int8, &w, xr);
        }
    }
}

/// Running f32 sums of a row's dot product: lane k takes activations 4k..4k+3 of each block.
pub(super) const LANES: usize = 8;

/// One weight row · one quantized activation row: Σ_blocks d_w·d_x·Σq_w·q_x + b_w·s_x.
/// `int8`: Q8_0 weights, else 4-bit (byte j holds weight j low, j + 16 high).
///
/// Every kernel computes exactly this, so that they all give the same f32 (the browser's greedy
/// tokens are then the native ones): per block, eight integer sums, lane k = Σ q_w·q_x over
/// activations 4k..4k+3 (exact); lane k's f32 sum grows by `(lane as f32)·(d_w·d_x)`, rounded
/// after the product and after the sum (no fused multiply-add: WebAssembly has none that is
/// deterministic); then [`finish`].
fn row_dot_plain(int8: bool, w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    let qb = if int8 { QK } else { QK / 2 };
    let mut acc = [0.0f32; LANES];
    for (i, (wq, xq)) in w.q.chunks_exact(qb).zip(x.q.chunks_exact(QK)).enumerate() {
        let weight = |j: usize| match (int8, j < QK / 2) {
            (true, _) => wq[j] as i8 as i32,
            (false, true) => (wq[j] & 15) as i32,
            (false, false) => (wq[j - QK / 2] >> 4) as i32,
        };
        let dd = w.d[i] * x.d[i];
        for (k, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * k..4 * k + 4)
                .map(|j| weight(j) * xq[j] as i8 as i32)
                .sum();
            *a += lane as f32 * dd;
        }
    }
    finish(acc, w, x)
}

/// The end of every kernel: `(acc_0 + acc_4) + (acc_1 + acc_5) + …` summed in order, then
/// Σ b_w·s_x over the blocks in order.
#[inline(always)]
pub(super) fn finish(acc: [f32; LANES], w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    let half: [f32; LANES / 2] = std::array::from_fn(|k| acc[k] + acc[k + LANES / 2]);
    let bias: f32 = w.b.iter().zip(x.b).map(|(b, s)| b * s).sum();
    half.iter().sum::<f32>() + bias
}

/// [`rows_dot`] compiled for AVX2, with [`row_dot_avx2`] inlined into its loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_dot_avx2(m: &QMatrix, xs: &[Blocks<'_>], first: usize, out: &mut [f32]) {
    let one = |i, w: &Blocks<'_>, x: &Blocks<'_>| row_dot_avx2::<1>(i, w, [x])[0];
    rows_dot_with(
        m,
        xs,
        first,
        out,
        |i, w, xs| row_dot_avx2::<GROUP>(i, w, xs),
        one,
    )
}

/// [`row_dot_plain`] with AVX2 for `N` tokens at once (each weight block loaded and
/// unpacked once for all of them): per block, 32 products u8·i8 summed in pairs (`maddubs`), then in
/// fours (`madd`): lane k of the 256-bit result is activations 4k..4k+3 (llama.cpp's
/// approach); scaled in f32 lanes with a multiply and an add, one sum per token.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn row_dot_avx2<const N: usize>(int8: bool, w: &Blocks<'_>, xs: [&Blocks<'_>; N]) -> [f32; N] {
    use bytemuck::pod_read_unaligned as load;
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let low = _mm_set1_epi8(0x0F);
    // A token's sums grow by (the 8 lane sums of a block's pairs, as f32) · d_w·d_x.
    let scaled = |pairs: __m256i, dd: f32, acc: __m256| {
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        _mm256_add_ps(acc, _mm256_mul_ps(sums, _mm256_set1_ps(dd)))
    };
    let mut acc = [_mm256_setzero_ps(); N];
    // Each token's blocks, walked along with the weight's (no index to check).
    let mut xb = xs.map(|x| x.q.chunks_exact(QK).zip(x.d));
    if int8 {
        for (wq, &dw) in w.q.chunks_exact(QK).zip(w.d) {
            let wv: __m256i = load(wq);
            // |w| · (x with w's sign): maddubs wants its first operand unsigned.
            let abs = _mm256_sign_epi8(wv, wv);
            for (a, b) in acc.iter_mut().zip(&mut xb) {
                let Some((xq, &dx)) = b.next() else { continue };
                let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(load(xq), wv));
                *a = scaled(pairs, dw * dx, *a);
            }
        }
    } else {
        for (wq, &dw) in w.q.chunks_exact(QK / 2).zip(w.d) {
            let raw: __m128i = load(wq);
            let lo = _mm_and_si128(raw, low);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
            let wv = _mm256_set_m128i(hi, lo);
            for (a, b) in acc.iter_mut().zip(&mut xb) {
                let Some((xq, &dx)) = b.next() else { continue };
                *a = scaled(_mm256_maddubs_epi16(wv, load(xq)), dw * dx, *a);
            }
        }
    }
    std::array::from_fn(|k| finish(bytemuck::cast(acc[k]), w, xs[k]))
}

#[cfg(test)]
pub(super) mod tests;
