//! Quantized matrix products for the `cpu-q8` backend: weights of every block type the GGUF
//! reader dequantizes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; not the
//! float ones) are repacked at load into blocks of 32 small integers q with an f32 scale d and,
//! for the types with one, an f32 offset b (`repack.rs`, which says how each type maps), so that
//! every weight q·d + b is `gguf::dequantize`'s, bit for bit (tested; `QMatrix::row` gives it
//! back). Activations are quantized per 32-value block to int8 with one f32 scale (llama.cpp's
//! Q8_1 idea), and each block's dot product is an integer sum:
//!
//!   Σ_i w_i·x_i ≈ d_w·d_x·Σ_i q_w,i·q_x,i + b_w·s_x
//!
//! where s_x = d_x·Σ_i q_x,i (Q4_0: b_w = −8·d_w; Q8_0, Q5_0, Q6_K, Q3_K: no offset). Q6_K,
//! Q3_K and Q2_K scale (and Q2_K offsets) every 16 weights: their blocks hold two scales, one
//! for each half of the 32 activations, and Q2_K's offsets multiply the activations' sums per
//! half block. The error against f32 is the activations' rounding (≤ d_x/2 per value); against
//! the dequantized weights times the same quantized activations, only f32 rounding (tested to
//! 10⁻⁶ of Σ|w·x|).
//!
//! Three layouts ([`Layout`]), one loop each in every kernel: Q4 types as nibbles, the others
//! as i8 — per weight, with the f32 scales and offsets:
//!
//! | type | layout | bytes per weight here | in the file |
//! |---|---|---|---|
//! | Q4_0, Q4_1, Q4_K | nibbles, d and b per 32 | 0.75 | 0.5625, 0.625, 0.5625 |
//! | Q8_0, Q5_0 | i8, d per 32 | 1.125 | 1.0625, 0.6875 |
//! | Q5_1, Q5_K | i8, d and b per 32 | 1.25 | 0.75, 0.6875 |
//! | Q6_K, Q3_K | i8, d per 16 | 1.25 | 0.8203, 0.4297 |
//! | Q2_K | i8, d and b per 16 | 1.5 | 0.3281 |
//!
//! Unpacked at load rather than in the kernels (llama.cpp's way, which keeps the file's bytes):
//! the K-quants' packed 6-bit scales and the fifth and sixth bits are undone once, not in every
//! product; three layouts need three loops per kernel where the packed types would need one per
//! type (seven more, each in plain Rust, AVX2 and SIMD128, each to be kept bit-identical); and
//! the activations keep one 32-value quantization for every type (llama.cpp multiplies the
//! K-quants with Q8_K, 256 values to a scale). The price is memory: up to twice the file's bytes
//! for the 5- and 6-bit types (Q2_K and Q3_K more), still a third or less of the f32 fallback's
//! 4 bytes a weight. Five bits kept as nibbles plus a 32-bit mask (0.75 bytes a Q5_0 weight)
//! were tried and dropped: unpacking the mask made Q5_0 products 60% slower in cache and
//! decode's layers 12% slower, since a one-token product is bound less by its reads than by
//! one dependent f32 add per block and lane group (about 1 ns), which the bytes' reads match.
//!
//! Gemma 3 270M (q4_k_m: Q5_0, Q4_K and Q6_K layers, a Q8_0 head), one thread of the 2-core
//! AMD EPYC (AVX2) the benches run on: the 18 layers' decode products take 4.3 ms here, 11.5 ms
//! as the f32 fallback they had before (`tests::decode_products`); `gqa-lab bench --backend
//! cpu-q8` at context 128 went from 48 to 86 tokens/s decoding and from 133 to 276 prefilling.
//! In WebAssembly (SIMD128, node, one thread; `tests/wasm_cpu.rs` pointed at Gemma, 64 tokens
//! prefilled, 32 decoded): from 40 to 52 tokens/s decoding and from 112 to 156 prefilling.
//!
//! Written by hand: the crates that multiply GGUF blocks (candle, ggml bindings) are large or
//! need a C toolchain. The kernel is plain Rust (`row_dot_plain`, the reference), with an
//! AVX2 version chosen at run time on x86_64 (`rows_dot_avx2`; the only `unsafe` of the crate:
//! calling it after the CPU check) and a SIMD128 one chosen at build time for wasm32
//! (`simd128.rs`). The plain loop stays scalar at x86-64's SSE2 baseline (about 8 ns a block of
//! 32, AVX2 about 1): no formulation tried vectorizes there; built for SSE4.1 it does (4 ns).
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

#[cfg(target_arch = "x86_64")]
mod avx2;
mod repack;

#[cfg(target_arch = "x86_64")]
use avx2::rows_dot_avx2;

/// Values per quantization block.
pub(super) const QK: usize = 32;

/// How a matrix's blocks of 32 weights are stored (`repack.rs` says which GGUF type takes
/// which): the kernels have one loop per layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// 16 bytes: weight j (0..15) in the low nibble of byte j, j + 16 in the high; one scale.
    Nibbles,
    /// 32 × i8; one scale.
    Bytes,
    /// 32 × i8; one scale per 16 weights (Q6_K, Q3_K, Q2_K), so two per block: lanes 0..3
    /// (activations 0..15) take the first, lanes 4..7 the second.
    Halves,
}

impl Layout {
    /// Bytes of quants per block.
    pub(super) fn quant_bytes(self) -> usize {
        if self == Layout::Nibbles {
            QK / 2
        } else {
            QK
        }
    }

    /// Scales (and offsets, where the type has them) per block.
    pub(super) fn scales(self) -> usize {
        if self == Layout::Halves {
            2
        } else {
            1
        }
    }
}

/// A `[rows][n_in]` weight matrix from its GGUF blocks, repacked at load into blocks of 32
/// weights (`repack.rs`): small integers q as bytes or nibbles ([`Layout`]), a scale d per 32
/// or 16 weights and, for the types with one, an offset b, all f32, so that a weight is
/// q·d + b exactly as `gguf::dequantize` computes it. The types without offsets (Q8_0, Q5_0,
/// Q6_K, Q3_K) store none, which spares decode 4 of every 40 bytes it reads of the output head.
pub struct QMatrix {
    ty: GgmlType,
    layout: Layout,
    /// `[rows·nb][layout.quant_bytes()]`.
    qs: Vec<u8>,
    d: Vec<f32>, // [rows·nb][layout.scales()]
    b: Vec<f32>, // as `d`, or empty
    rows: usize,
    n_in: usize,
}

/// Activations `[t][n_in]` quantized per block: `q` int8, `d` the scale, `s` = d·Σq of each
/// block and `h` = d·Σq of each half block (16 values; what Q2_K's per-16 offsets multiply).
pub struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    h: Vec<f32>,
    n_in: usize,
}

impl Q8Rows {
    /// Quantizes `x` (`[t][n_in]`, n_in a multiple of 32): d = max|x|/127 per block.
    pub fn quantize(x: &[f32], n_in: usize) -> Self {
        let blocks = x.len() / QK;
        let (mut q, mut d, mut s, mut h) = (
            Vec::with_capacity(x.len()),
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
            Vec::with_capacity(2 * blocks),
        );
        for b in x.chunks_exact(QK) {
            let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // A NaN or infinity stays one: a NaN scale makes the block's products NaN (`max`
            // skips NaN, and `NaN as i8` is 0, which would hide damaged weights upstream).
            let finite = b.iter().all(|v| v.is_finite());
            let scale = if finite { amax / 127.0 } else { f32::NAN };
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sums = [0i32; 2];
            for (j, &v) in b.iter().enumerate() {
                let qi = (v * inv).round() as i8;
                sums[j / (QK / 2)] += qi as i32;
                q.push(qi);
            }
            d.push(scale);
            s.push(scale * (sums[0] + sums[1]) as f32);
            h.extend(sums.map(|v| scale * v as f32));
        }
        Q8Rows { q, d, s, h, n_in }
    }

    /// Token `tt`'s blocks (`nb` per token), with the sums per half block if `per_16`.
    fn row(&self, tt: usize, nb: usize, per_16: bool) -> Blocks<'_> {
        let blocks = tt * nb..(tt + 1) * nb;
        Blocks {
            q: bytemuck::cast_slice(&self.q[blocks.start * QK..blocks.end * QK]),
            d: &self.d[blocks.clone()],
            b: if per_16 {
                &self.h[2 * blocks.start..2 * blocks.end]
            } else {
                &self.s[blocks]
            },
        }
    }
}

impl QMatrix {
    /// `bytes` hold `rows · n_in` weights of type `ty` (checked by the GGUF reader); `None`
    /// for types this backend does not multiply in blocks.
    pub fn new(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Self> {
        let (layout, offsets) = repack::layout(ty)?;
        let (per_block, bb) = ty.block();
        let (per_block, bb) = (per_block as usize, bb as usize);
        let n_blocks = bytes.len() / bb;
        if rows == 0 || !bytes.len().is_multiple_of(bb) || !n_blocks.is_multiple_of(rows) {
            return None;
        }
        let mut out = repack::Sink::default();
        let n = n_blocks * per_block / QK;
        out.qs.reserve_exact(n * layout.quant_bytes());
        out.d.reserve_exact(n * layout.scales());
        if offsets {
            out.b.reserve_exact(n * layout.scales());
        }
        for blk in bytes.chunks_exact(bb) {
            repack::block(ty, blk, &mut out);
        }
        Some(QMatrix {
            ty,
            layout,
            qs: out.qs,
            d: out.d,
            b: out.b,
            rows,
            n_in: n_blocks / rows * per_block,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn n_in(&self) -> usize {
        self.n_in
    }

    /// Whether the offsets are per 16 weights (Q2_K): they multiply the activations' sums
    /// per half block.
    fn offsets_per_16(&self) -> bool {
        self.layout == Layout::Halves && !self.b.is_empty()
    }

    /// Weight row `o`'s blocks.
    fn row_blocks(&self, o: usize) -> Blocks<'_> {
        let (nb, qb, ns) = (
            self.n_in / QK,
            self.layout.quant_bytes(),
            self.layout.scales(),
        );
        let scales = o * nb * ns..(o + 1) * nb * ns;
        Blocks {
            q: &self.qs[o * nb * qb..(o + 1) * nb * qb],
            d: &self.d[scales.clone()],
            b: self.b.get(scales).unwrap_or(&[]),
        }
    }

    /// Row `o` dequantized (an embedding lookup): `gguf::dequantize`'s f32, bit for bit,
    /// signed zeros included (so Q4_0 as (q − 8)·d and Q5_0 with its + 0.0, as it computes
    /// them).
    pub fn row(&self, o: usize) -> Option<Vec<f32>> {
        if o >= self.rows {
            return None;
        }
        let w = self.row_blocks(o);
        let (qb, ns) = (self.layout.quant_bytes(), self.layout.scales());
        let mut out = Vec::with_capacity(self.n_in);
        for (i, q) in w.q.chunks_exact(qb).enumerate() {
            for j in 0..QK {
                let s = i * ns + j * ns / QK;
                let (q, d) = (self.layout.weight(q, j) as f32, w.d[s]);
                out.push(match (self.ty, w.b.get(s)) {
                    (GgmlType::Q4_0, _) => (q - 8.0) * d,
                    (GgmlType::Q5_0, _) => q * d + 0.0,
                    (_, Some(b)) => q * d + b,
                    (_, None) => q * d,
                });
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

impl Layout {
    /// Weight j (0..32) of a block's quants `q`.
    #[inline(always)]
    fn weight(self, q: &[u8], j: usize) -> i32 {
        match (self, j < QK / 2) {
            (Layout::Nibbles, true) => (q[j] & 15) as i32,
            (Layout::Nibbles, false) => (q[j - QK / 2] >> 4) as i32,
            _ => q[j] as i8 as i32,
        }
    }
}

/// A row's blocks: quants, scales and offsets (for weights: as [`QMatrix`] keeps them, no
/// offsets for the types without; for activations: i8 quants as bytes — for the SIMD128
/// kernel widened to i16, `simd128::widen` —, d, and the sums s = d·Σq per block or, against
/// Q2_K's offsets per 16 weights, per half block).
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
    let per_16 = m.offsets_per_16();
    let xs: Vec<Blocks<'_>> = (0..x.d.len() / nb)
        .map(|tt| x.row(tt, nb, per_16))
        .collect();
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use super::simd128::{row_dot, widen};
        // SIMD128 reads the activations widened to i16 (`widen`): once here for all the rows.
        let wide = widen(&x.q);
        let wide: &[u8] = bytemuck::cast_slice(&wide);
        let xs: Vec<Blocks<'_>> = (xs.iter().zip(wide.chunks_exact(2 * m.n_in)))
            .map(|(x, q)| Blocks { q, d: x.d, b: x.b })
            .collect();
        let one = |l, w: &Blocks<'_>, x: &Blocks<'_>| row_dot::<1>(l, w, [x])[0];
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
        |l, w, xs| xs.map(|x| row_dot_plain(l, w, x)),
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
    group: impl Fn(Layout, &Blocks<'_>, [&Blocks<'_>; GROUP]) -> [f32; GROUP],
    one: impl Fn(Layout, &Blocks<'_>, &Blocks<'_>) -> f32,
) {
    for (r, row_out) in out.chunks_mut(xs.len()).enumerate() {
        let w = m.row_blocks(first + r);
        let mut ys = row_out.chunks_exact_mut(GROUP);
        let mut xg = xs.chunks_exact(GROUP);
        for (y, xg) in (&mut ys).zip(&mut xg) {
            y.copy_from_slice(&group(m.layout, &w, std::array::from_fn(|k| &xg[k])));
        }
        for (y, xr) in ys.into_remainder().iter_mut().zip(xg.remainder()) {
            *y = one(m.layout, &w, xr);
        }
    }
}

/// Running f32 sums of a row's dot product: lane k takes activations 4k..4k+3 of each block.
pub(super) const LANES: usize = 8;

/// One weight row · one quantized activation row: Σ_blocks d_w·d_x·Σq_w·q_x + Σ b_w·s_x.
///
/// Every kernel computes exactly this, so that they all give the same f32 (the browser's greedy
/// tokens are then the native ones): per block, eight integer sums, lane k = Σ q_w·q_x over
/// activations 4k..4k+3 (exact); lane k's f32 sum grows by `(lane as f32)·(d_w·d_x)`, rounded
/// after the product and after the sum (no fused multiply-add: WebAssembly has none that is
/// deterministic), d_w the block's scale or, for [`Layout::Halves`], lanes 0..3 the first
/// half's and 4..7 the second's; then [`finish`].
fn row_dot_plain(layout: Layout, w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    let (qb, ns) = (layout.quant_bytes(), layout.scales());
    let mut acc = [0.0f32; LANES];
    for (i, (wq, xq)) in w.q.chunks_exact(qb).zip(x.q.chunks_exact(QK)).enumerate() {
        let wq: [i32; QK] = std::array::from_fn(|j| layout.weight(wq, j));
        let dx = x.d[i];
        for (k, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * k..4 * k + 4).map(|j| wq[j] * xq[j] as i8 as i32).sum();
            *a += lane as f32 * (w.d[i * ns + k * ns / LANES] * dx);
        }
    }
    finish(acc, w, x)
}

/// The end of every kernel: `(acc_0 + acc_4) + (acc_1 + acc_5) + …` summed in order, plus
/// [`offsets`].
#[inline(always)]
pub(super) fn finish(acc: [f32; LANES], w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    end(acc, offsets(w, x))
}

/// Σ b_w·s_x over the blocks (or half blocks) in order, from −0.0 (as `Iterator::sum` does, so
/// that a row without offsets adds nothing, not even to a zero's sign). The AVX2 kernel sums
/// them in the same order as it goes, beside the lanes.
#[inline(always)]
fn offsets(w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    w.b.iter().zip(x.b).fold(-0.0, |a, (b, s)| a + b * s)
}

/// The lanes summed as [`finish`] says, plus the offsets' sum.
#[inline(always)]
fn end(acc: [f32; LANES], offsets: f32) -> f32 {
    let half: [f32; LANES / 2] = std::array::from_fn(|k| acc[k] + acc[k + LANES / 2]);
    half.iter().sum::<f32>() + offsets
}

#[cfg(test)]
pub(super) mod tests;
